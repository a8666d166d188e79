//! `cpu::cast` and the element conversions behind it: an exhaustive check of f32 -> bf16 / f16 over all
//! 2^32 bit patterns against `half`, edge cases with independently derived bits, exact widening, f64 ->
//! bf16 / f16 with a single rounding (against an f64 reference rounding written here), and integer and
//! bool casts.

mod common;

use amp_kernels::cpu;
use amp_kernels::{Elem, bf16, f16};
use common::Rng;
use rayon::prelude::*;
use std::time::Instant;

/// Patterns per parallel work item of the exhaustive sweep.
const CHUNK: u64 = 1 << 20;

/// Casts every f32 bit pattern with `cpu::cast::<f32, H>` and compares its bits with `reference`
/// (NaN included: the result must be NaN and carry the same bits). Returns the first few mismatches.
fn sweep_all_f32<H: Elem>(
    reference: impl Fn(f32) -> H + Sync,
    bits: impl Fn(H) -> u16 + Sync,
    is_nan: impl Fn(H) -> bool + Sync,
) -> Vec<String> {
    (0..(1u64 << 32) / CHUNK)
        .into_par_iter()
        .filter_map(|chunk| {
            let input: Vec<f32> = (chunk * CHUNK..(chunk + 1) * CHUNK)
                .map(|b| f32::from_bits(b as u32))
                .collect();
            let mut out = vec![H::default(); input.len()];
            cpu::cast(&input, &mut out);
            input.iter().zip(&out).find_map(|(&x, &got)| {
                let want = reference(x);
                let ok = bits(got) == bits(want) && is_nan(got) == x.is_nan();
                (!ok).then(|| {
                    format!(
                        "{:#010x} -> {:#06x}, half gives {:#06x}",
                        x.to_bits(),
                        bits(got),
                        bits(want)
                    )
                })
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .take(5)
        .collect()
}

/// All 2^32 f32 bit patterns cast to bf16 are bit-identical to `half::bf16::from_f32`.
#[test]
fn f32_to_bf16_exhaustive_matches_half() {
    let start = Instant::now();
    let bad = sweep_all_f32(
        half::bf16::from_f32,
        |h: bf16| h.to_bits(),
        |h: bf16| h.is_nan(),
    );
    assert!(bad.is_empty(), "f32 -> bf16 mismatches: {bad:?}");
    eprintln!("f32 -> bf16 exhaustive: {:.2?}", start.elapsed());
}

/// All 2^32 f32 bit patterns cast to f16 are bit-identical to `half::f16::from_f32`.
#[test]
fn f32_to_f16_exhaustive_matches_half() {
    let start = Instant::now();
    let bad = sweep_all_f32(
        half::f16::from_f32,
        |h: f16| h.to_bits(),
        |h: f16| h.is_nan(),
    );
    assert!(bad.is_empty(), "f32 -> f16 mismatches: {bad:?}");
    eprintln!("f32 -> f16 exhaustive: {:.2?}", start.elapsed());
}

/// Casts one f32 through `cpu::cast` and returns the bits.
fn bf16_bits(x: f32) -> u16 {
    let mut out = [bf16::ZERO];
    cpu::cast(&[x], &mut out);
    out[0].to_bits()
}

fn f16_bits(x: f32) -> u16 {
    let mut out = [f16::ZERO];
    cpu::cast(&[x], &mut out);
    out[0].to_bits()
}

/// Edge cases with expected bits worked out by hand (not taken from `half`): signed zeros, f32
/// subnormals, the f16 overflow boundary (65504, 65519.99, 65520), f32::MAX, infinities, the bf16
/// overflow midpoint and ties to even.
#[test]
fn edge_cases_by_hand() {
    let cases: [(&str, f32, u16, u16); 20] = [
        // (name, input, bf16 bits, f16 bits)
        ("+0", 0.0, 0x0000, 0x0000),
        ("-0", -0.0, 0x8000, 0x8000),
        ("smallest f32 subnormal", f32::from_bits(1), 0x0000, 0x0000),
        (
            "-smallest f32 subnormal",
            f32::from_bits(0x8000_0001),
            0x8000,
            0x8000,
        ),
        // 0x007FFFFF: the mantissa is all ones, so bf16 rounds up into the smallest normal 2^-126.
        (
            "largest f32 subnormal",
            f32::from_bits(0x007F_FFFF),
            0x0080,
            0x0000,
        ),
        ("smallest f32 normal", f32::MIN_POSITIVE, 0x0080, 0x0000),
        ("65504", 65504.0, 0x4780, 0x7BFF),
        ("65519.99", 65519.99, 0x4780, 0x7BFF),
        ("65520", 65520.0, 0x4780, 0x7C00),
        ("-65520", -65520.0, 0xC780, 0xFC00),
        ("f32::MAX", f32::MAX, 0x7F80, 0x7C00),
        ("+inf", f32::INFINITY, 0x7F80, 0x7C00),
        ("-inf", f32::NEG_INFINITY, 0xFF80, 0xFC00),
        // bf16::MAX is 0x7F7F; the f32 just below the midpoint to 2^128 stays, the midpoint goes to inf.
        (
            "below bf16 overflow midpoint",
            f32::from_bits(0x7F7F_7FFF),
            0x7F7F,
            0x7C00,
        ),
        (
            "bf16 overflow midpoint",
            f32::from_bits(0x7F7F_8000),
            0x7F80,
            0x7C00,
        ),
        // Ties to even: 1 + 2^-8 (bf16) and 1 + 2^-11 (f16) go down, 1 + 3·2^-8 / 1 + 3·2^-11 go up;
        // the bf16 ties are exact in f16 (mantissa 4 and 12 in units of 2^-10).
        ("1 + 2^-8", 1.0 + 1.0 / 256.0, 0x3F80, 0x3C04),
        ("1 + 3·2^-8", 1.0 + 3.0 / 256.0, 0x3F82, 0x3C0C),
        ("1 + 2^-11", 1.0 + 1.0 / 2048.0, 0x3F80, 0x3C00),
        ("1 + 3·2^-11", 1.0 + 3.0 / 2048.0, 0x3F80, 0x3C02),
        (
            "2^-25 (half the smallest f16 subnormal)",
            1.0 / 33_554_432.0,
            0x3300,
            0x0000,
        ),
    ];
    for (name, x, want_bf16, want_f16) in cases {
        assert_eq!(bf16_bits(x), want_bf16, "{name} -> bf16");
        assert_eq!(f16_bits(x), want_f16, "{name} -> f16");
    }
    // Just above half the smallest f16 subnormal rounds up to it; the f16 subnormal range is exact.
    assert_eq!(
        f16_bits(f32::from_bits((1.0f32 / 33_554_432.0).to_bits() + 1)),
        0x0001
    );
    assert_eq!(f16_bits(1.0 / 16_777_216.0), 0x0001);
    assert_eq!(f16_bits(1.0 / 16384.0), 0x0400);
}

/// NaNs with quiet and signalling payloads, both signs, stay NaN with their sign, and match `half`'s bits.
#[test]
fn nan_payloads() {
    for bits in [
        0x7FC0_0000u32,
        0x7F80_0001,
        0x7FA0_0000,
        0x7FBF_FFFF,
        0xFFC0_0001,
        0xFF80_0001,
        0x7FFF_FFFF,
    ] {
        let x = f32::from_bits(bits);
        let (b, h) = (bf16::from_bits(bf16_bits(x)), f16::from_bits(f16_bits(x)));
        assert!(
            b.is_nan() && h.is_nan(),
            "{bits:#010x}: bf16 {:#06x}, f16 {:#06x}",
            b.to_bits(),
            h.to_bits()
        );
        assert_eq!(
            b.is_sign_negative(),
            bits >> 31 == 1,
            "{bits:#010x}: bf16 sign"
        );
        assert_eq!(
            h.is_sign_negative(),
            bits >> 31 == 1,
            "{bits:#010x}: f16 sign"
        );
        assert_eq!(
            b.to_bits(),
            half::bf16::from_f32(x).to_bits(),
            "{bits:#010x}: bf16 bits"
        );
        assert_eq!(
            h.to_bits(),
            half::f16::from_f32(x).to_bits(),
            "{bits:#010x}: f16 bits"
        );
    }
    // The canonical quiet NaN keeps its canonical form.
    assert_eq!(bf16_bits(f32::NAN), 0x7FC0);
    assert_eq!(f16_bits(f32::NAN), 0x7E00);
}

/// The exact value of f16 bits, decoded by hand (sign, 5-bit exponent, 10-bit mantissa).
fn decode_f16(bits: u16) -> f64 {
    let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
    let (exp, man) = (((bits >> 10) & 0x1F) as i32, (bits & 0x3FF) as f64);
    match exp {
        0 => sign * man * 2f64.powi(-24),
        31 if man == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => sign * (1.0 + man / 1024.0) * 2f64.powi(exp - 15),
    }
}

/// Every bf16 and f16 value widens exactly to f32 and f64 (bf16: the bits shifted up by 16; f16: the
/// hand-decoded value) and narrows back to the same bits; NaNs stay NaN.
#[test]
fn half_types_round_trip_exactly() {
    let all_bf16: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    let all_f16: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let (mut wide32, mut wide64) = (vec![0.0f32; 1 << 16], vec![0.0f64; 1 << 16]);
    let (mut back_bf16, mut back_f16) = (vec![bf16::ZERO; 1 << 16], vec![f16::ZERO; 1 << 16]);

    cpu::cast(&all_bf16, &mut wide32);
    cpu::cast(&all_bf16, &mut wide64);
    cpu::cast(&wide32, &mut back_bf16);
    for (i, b) in all_bf16.iter().enumerate() {
        if b.is_nan() {
            assert!(
                wide32[i].is_nan() && wide64[i].is_nan() && back_bf16[i].is_nan(),
                "bf16 NaN {i:#06x}"
            );
            continue;
        }
        assert_eq!(
            wide32[i].to_bits(),
            (i as u32) << 16,
            "bf16 {i:#06x} -> f32"
        );
        assert_eq!(
            wide64[i].to_bits(),
            (wide32[i] as f64).to_bits(),
            "bf16 {i:#06x} -> f64"
        );
        assert_eq!(back_bf16[i].to_bits(), i as u16, "bf16 {i:#06x} round trip");
    }

    cpu::cast(&all_f16, &mut wide32);
    cpu::cast(&all_f16, &mut wide64);
    cpu::cast(&wide64, &mut back_f16);
    for (i, h) in all_f16.iter().enumerate() {
        if h.is_nan() {
            assert!(
                wide32[i].is_nan() && wide64[i].is_nan() && back_f16[i].is_nan(),
                "f16 NaN {i:#06x}"
            );
            continue;
        }
        let want = decode_f16(i as u16);
        assert_eq!(wide64[i].to_bits(), want.to_bits(), "f16 {i:#06x} -> f64");
        assert_eq!(
            (wide32[i] as f64).to_bits(),
            want.to_bits(),
            "f16 {i:#06x} -> f32"
        );
        assert_eq!(
            back_f16[i].to_bits(),
            i as u16,
            "f16 {i:#06x} round trip through f64"
        );
    }
}

/// The IEEE round-to-nearest-even of `v` into a binary format with `p` significant bits, smallest
/// normal exponent `emin` and largest exponent `emax`, computed in f64 by scaling to units of the last
/// place (exact: powers of two) and rounding the integer.
fn round_to_format(v: f64, p: i32, emin: i32, emax: i32) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    let exponent = (((v.to_bits() >> 52) & 0x7FF) as i32 - 1023).max(emin);
    let ulp = 2f64.powi(exponent - (p - 1));
    let rounded = (v / ulp).round_ties_even() * ulp;
    let max = (2.0 - 2f64.powi(1 - p)) * 2f64.powi(emax);
    if rounded.abs() > max {
        f64::INFINITY.copysign(v)
    } else {
        rounded
    }
}

fn bf16_ref(v: f64) -> f64 {
    round_to_format(v, 8, -126, 127)
}

fn f16_ref(v: f64) -> f64 {
    round_to_format(v, 11, -14, 15)
}

/// f64 values that sit exactly on, or one f64 ulp either side of, the midpoint between two neighbouring
/// values of the target format: rounding through f32 first lands on the midpoint and ties wrongly.
fn midpoint_cases(rng: &mut Rng, target: fn(f64) -> f64, max_exp: i32) -> Vec<f64> {
    let mut cases = vec![
        1.0 + 2f64.powi(-8) + 2f64.powi(-30),
        1.0 + 2f64.powi(-11) + 2f64.powi(-40),
    ];
    for _ in 0..20_000 {
        let v = target(
            rng.range(1.0, 2.0) * 2f64.powi(rng.below(2 * max_exp as usize) as i32 - max_exp),
        );
        let sign = if rng.below(2) == 0 { 1.0 } else { -1.0 };
        // The next representable value up: the smallest step that `target` does not round back down.
        let mut step = v * 2f64.powi(-12);
        while target(v + step) == v {
            step *= 2.0;
        }
        let mid = (v + target(v + step)) / 2.0;
        for c in [
            mid,
            mid.next_up(),
            mid.next_down(),
            mid * (1.0 + 2f64.powi(-40)),
        ] {
            cases.push(sign * c);
        }
    }
    cases
}

/// f64 -> bf16 and f64 -> f16 round once: `cpu::cast` and `Elem::from_f64` match the f64 reference on
/// random values across each format's range (subnormals and overflow included) and on midpoint cases.
#[test]
fn f64_to_half_types_round_once() {
    let mut rng = Rng::new(1);
    let mut values: Vec<f64> = (0..200_000)
        .map(|_| {
            let e = rng.below(290) as i32 - 150;
            (if rng.below(2) == 0 { 1.0 } else { -1.0 }) * rng.range(1.0, 2.0) * 2f64.powi(e)
        })
        .collect();
    values.extend(midpoint_cases(&mut rng, bf16_ref, 120));
    values.extend(midpoint_cases(&mut rng, f16_ref, 14));
    values.extend([
        65519.99,
        65520.0,
        65504.0,
        -65520.0,
        1e-300,
        -1e300,
        f64::MAX,
        f64::MIN_POSITIVE,
    ]);
    values.extend([
        2f64.powi(-25),
        2f64.powi(-25).next_up(),
        2f64.powi(-134),
        2f64.powi(-134).next_up(),
    ]);

    let (mut out_bf16, mut out_f16) = (
        vec![bf16::ZERO; values.len()],
        vec![f16::ZERO; values.len()],
    );
    cpu::cast(&values, &mut out_bf16);
    cpu::cast(&values, &mut out_f16);
    for (i, &v) in values.iter().enumerate() {
        let (want_b, want_h) = (bf16_ref(v), f16_ref(v));
        assert_eq!(
            out_bf16[i].to_f64().to_bits(),
            want_b.to_bits(),
            "f64 {v:e} ({:#018x}) -> bf16",
            v.to_bits()
        );
        assert_eq!(
            out_f16[i].to_f64().to_bits(),
            want_h.to_bits(),
            "f64 {v:e} ({:#018x}) -> f16",
            v.to_bits()
        );
        assert_eq!(
            <bf16 as Elem>::from_f64(v),
            out_bf16[i],
            "Elem::from_f64 {v:e} -> bf16"
        );
        assert_eq!(
            <f16 as Elem>::from_f64(v),
            out_f16[i],
            "Elem::from_f64 {v:e} -> f16"
        );
    }
    // Special values.
    let specials = [
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
    ];
    let (mut b, mut h) = ([bf16::ZERO; 6], [f16::ZERO; 6]);
    cpu::cast(&specials, &mut b);
    cpu::cast(&specials, &mut h);
    assert!(b[0].is_nan() && b[1].is_nan() && h[0].is_nan() && h[1].is_nan());
    assert_eq!(
        b[2..].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        [0x7F80, 0xFF80, 0x0000, 0x8000]
    );
    assert_eq!(
        h[2..].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        [0x7C00, 0xFC00, 0x0000, 0x8000]
    );
}

/// f64 -> f32 and f32 -> f64 are Rust's own conversions (round to nearest, exact widening).
#[test]
fn f32_f64_casts() {
    let mut rng = Rng::new(2);
    let values: Vec<f64> = (0..10_000)
        .map(|_| rng.normal() * 2f64.powi(rng.below(200) as i32 - 100))
        .collect();
    let mut narrow = vec![0.0f32; values.len()];
    cpu::cast(&values, &mut narrow);
    let mut wide = vec![0.0f64; values.len()];
    cpu::cast(&narrow, &mut wide);
    for (i, &v) in values.iter().enumerate() {
        assert_eq!(narrow[i].to_bits(), (v as f32).to_bits(), "{v:e} -> f32");
        assert_eq!(wide[i], narrow[i] as f64, "{} -> f64", narrow[i]);
    }
}

/// `i` rounded to `p` significant bits, ties to even, in exact integer arithmetic.
fn round_int(i: i64, p: u32) -> f64 {
    let magnitude = i.unsigned_abs();
    let bits = 64 - magnitude.leading_zeros();
    if bits <= p {
        return i as f64; // exact
    }
    let shift = bits - p;
    let (mut kept, rest, half) = (
        magnitude >> shift,
        magnitude & ((1 << shift) - 1),
        1u64 << (shift - 1),
    );
    if rest > half || (rest == half && kept & 1 == 1) {
        kept += 1;
    }
    let value = kept as f64 * 2f64.powi(shift as i32); // kept has at most p + 1 bits: exact
    if i < 0 { -value } else { value }
}

/// i64 -> float casts round once (also above 2^53, where going through f64 first would round twice),
/// i64 -> i64 is the identity, and i64 -> f16 overflows to inf past 65519.
#[test]
fn integer_casts_round_once() {
    let mut rng = Rng::new(3);
    let mut values: Vec<i64> = vec![
        0,
        1,
        -1,
        65504,
        65519,
        65520,
        -65520,
        1 << 53,
        (1 << 53) + 1,
        i64::MAX,
        i64::MIN,
    ];
    // 2^60 + 2^36 + 1: f32 rounds up to 2^60 + 2^37; via f64 it first becomes the midpoint 2^60 + 2^36,
    // which ties down to 2^60. The same pattern one level down for bf16 (2^60 + 2^52 + 1).
    values.extend([
        (1 << 60) + (1 << 36) + 1,
        (1 << 60) + (1 << 52) + 1,
        -((1 << 60) + (1 << 36) + 1),
    ]);
    for _ in 0..100_000 {
        let shift = rng.below(64) as u32;
        values.push((rng.next_u64() >> shift) as i64 * if rng.below(2) == 0 { 1 } else { -1 });
    }
    let n = values.len();
    let (mut o32, mut o64, mut obf, mut oh, mut oi) = (
        vec![0.0f32; n],
        vec![0.0f64; n],
        vec![bf16::ZERO; n],
        vec![f16::ZERO; n],
        vec![0i64; n],
    );
    cpu::cast(&values, &mut o32);
    cpu::cast(&values, &mut o64);
    cpu::cast(&values, &mut obf);
    cpu::cast(&values, &mut oh);
    cpu::cast(&values, &mut oi);
    for (k, &i) in values.iter().enumerate() {
        assert_eq!(o32[k] as f64, round_int(i, 24), "{i} -> f32");
        assert_eq!(o64[k], round_int(i, 53), "{i} -> f64");
        assert_eq!(obf[k].to_f64(), round_int(i, 8), "{i} -> bf16");
        let h = round_int(i, 11);
        let want_h = if h.abs() > 65504.0 {
            f64::INFINITY.copysign(h)
        } else {
            h
        };
        assert_eq!(oh[k].to_f64(), want_h, "{i} -> f16");
        assert_eq!(oi[k], i, "{i} -> i64");
    }
}

/// Float -> i64 truncates toward zero and saturates (NaN becomes 0); bool <-> numbers use != 0 and 0/1.
#[test]
fn float_to_integer_and_bool() {
    let x = [
        -2.7f32,
        2.7,
        -0.5,
        1e20,
        -1e20,
        f32::NAN,
        f32::INFINITY,
        3.0,
    ];
    let mut out = [0i64; 8];
    cpu::cast(&x, &mut out);
    assert_eq!(out, [-2, 2, 0, i64::MAX, i64::MIN, 0, i64::MAX, 3]);
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut out_b = [0i64; 8];
    cpu::cast(&xb, &mut out_b);
    assert_eq!(out_b[..3], [-2, 2, 0]);

    let mut flags = [false; 5];
    cpu::cast(&[0.0f64, -0.0, 0.5, f64::NAN, -3.0], &mut flags);
    assert_eq!(flags, [false, false, true, true, true]);
    let mut back = [0.0f32; 3];
    cpu::cast(&[true, false, true], &mut back);
    assert_eq!(back, [1.0, 0.0, 1.0]);
    let mut halves = [f16::ZERO; 2];
    cpu::cast(&[true, false], &mut halves);
    assert_eq!(halves, [f16::ONE, f16::ZERO]);
    let mut ints = [0i64; 2];
    cpu::cast(&[true, false], &mut ints);
    assert_eq!(ints, [1, 0]);
}
