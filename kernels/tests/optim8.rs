//! The 8-bit optimizer kernels: bitsandbytes' codebooks, the exact nearest-code search, block-wise
//! quantization against an f64 reference, the fused Adam and momentum steps against unfused
//! implementations written here, and the rounding of updates to bf16 (stochastic, Kahan).

mod common;

use amp_kernels::cpu::{
    self, AdamStep, Codebook, QUANT_BLOCK, Quantized, SgdStep, dequantize_blockwise,
    kahan_round_through, quant_blocks, quantize_blockwise, rounding_bits, stochastic_round_bf16,
};
use amp_kernels::{bf16, f16};
use common::Rng;

/// bitsandbytes' `create_dynamic_map` in f64: the decade means, signed or not, then 0 and 1, sorted.
fn dynamic_map_f64(signed: bool) -> Vec<f64> {
    let mut data = Vec::new();
    for i in 0..7 {
        let items = if signed {
            (1 << i) + 1
        } else {
            (1 << (i + 1)) + 1
        };
        let bound = |k: usize| 0.1 + 0.9 * k as f64 / (items - 1) as f64;
        for k in 0..items - 1 {
            let mean = (bound(k) + bound(k + 1)) / 2.0 * 10f64.powi(i - 6);
            data.push(mean);
            if signed {
                data.push(-mean);
            }
        }
    }
    data.extend([0.0, 1.0]);
    data.sort_by(f64::total_cmp);
    data
}

#[test]
fn codebooks_equal_bitsandbytes_values() {
    let signed = Codebook::signed().values();
    let unsigned = Codebook::unsigned().values();
    let near = |got: f32, want: f64| ((got as f64 - want) / want.abs().max(1e-30)).abs() < 2e-7;
    // Entries listed in the reference notes (computed by bitsandbytes' Python function).
    assert!(near(signed[0], -0.99296875), "{}", signed[0]);
    assert_eq!(signed[127], 0.0);
    assert_eq!(signed[255], 1.0);
    assert!(near(signed[126], -5.5e-7) && near(signed[128], 5.5e-7));
    assert_eq!(unsigned[0], 0.0);
    assert!(near(unsigned[1], 3.25e-7), "{}", unsigned[1]);
    assert!(near(unsigned[253], 0.989453125));
    assert!(near(unsigned[254], 0.996484375));
    assert_eq!(unsigned[255], 1.0);
    // Structure: 256 strictly ascending entries; the signed map's negative end stops short of -1.
    for book in [signed, unsigned] {
        assert!(book.windows(2).all(|w| w[0] < w[1]));
    }
    assert!(signed[0] > -1.0);
    assert_eq!(signed.iter().filter(|v| **v < 0.0).count(), 127);
    assert!(unsigned.iter().all(|v| *v >= 0.0));
    // Every entry against the f64 construction (the f32 one rounds a few times on the way).
    for (signed_map, book) in [(true, signed), (false, unsigned)] {
        for (i, (&got, want)) in book.iter().zip(dynamic_map_f64(signed_map)).enumerate() {
            assert!(
                (got as f64 - want).abs() <= 1e-6 * want.abs(),
                "entry {i}: {got} vs {want}"
            );
        }
    }
    assert!(Codebook::signed().is_signed() && !Codebook::unsigned().is_signed());
}

/// Values spread over every decade of the codebook, both signs, plus the entries themselves and the
/// f32 values next to every midpoint.
fn probe_values(rng: &mut Rng, book: &[f32; 256]) -> Vec<f32> {
    let mut xs: Vec<f32> = (0..20_000)
        .map(|_| {
            let magnitude = 10f64.powf(rng.range(-8.0, 0.0)) as f32;
            if rng.uniform() < 0.5 {
                -magnitude
            } else {
                magnitude
            }
        })
        .collect();
    for w in book.windows(2) {
        let mid = (w[0] + w[1]) * 0.5;
        xs.extend([
            w[0],
            mid,
            f32::from_bits(mid.to_bits() + 1),
            f32::from_bits(mid.to_bits() - 1),
        ]);
    }
    xs.extend([1.0, -1.0, 0.0, -0.0]);
    xs
}

/// The code search is exactly nearest: no entry is closer (in f64) than the one chosen.
#[test]
fn nearest_code_is_exactly_nearest() {
    let mut rng = Rng::new(11);
    for book in [Codebook::signed(), Codebook::unsigned()] {
        let q = book.values();
        for x in probe_values(&mut rng, q) {
            if !book.is_signed() && x < 0.0 {
                continue;
            }
            let code = book.nearest(x) as usize;
            let d = (x as f64 - q[code] as f64).abs();
            let best = q
                .iter()
                .map(|&c| (x as f64 - c as f64).abs())
                .fold(f64::INFINITY, f64::min);
            // Equal up to the f32 rounding of the midpoint the search compares with.
            assert!(
                d <= best + 1e-7 * best.max(1e-30) + f64::from(f32::EPSILON) * x.abs() as f64,
                "x = {x}: code {code} ({}) at {d}, best {best}",
                q[code]
            );
        }
    }
    assert_eq!(Codebook::signed().nearest(f32::NAN), 0);
}

/// The kernels' table-assisted search returns the binary search's code for every input: a sweep over the
/// f32 line from -2 to 2 (every 331st bit pattern), every codebook entry and midpoint with their
/// neighbours, the bin edges (exponent and top-8-mantissa-bit boundaries), zeros, infinities and NaN.
#[test]
fn table_assisted_search_equals_the_binary_search() {
    for book in [Codebook::signed(), Codebook::unsigned()] {
        let check = |x: f32| {
            assert_eq!(
                book.nearest_fast(x),
                book.nearest(x),
                "x = {x:e} ({:#x})",
                x.to_bits()
            );
        };
        for sign in [0u32, 1 << 31] {
            for bits in (0..0x4000_0000u32).step_by(331) {
                check(f32::from_bits(sign | bits));
            }
            // Every bin edge: the first and last value of each (exponent, top 8 mantissa bits).
            for exponent in 95..=128u32 {
                for top in 0..256u32 {
                    let base = sign | (exponent << 23) | (top << 15);
                    for b in [base, base | 0x7FFF, base.wrapping_sub(1), base + 0x8000] {
                        check(f32::from_bits(b));
                    }
                }
            }
        }
        for (i, &v) in book.values().iter().enumerate() {
            let mut probes = vec![v, -v];
            if i < 255 {
                let mid = (v + book.values()[i + 1]) * 0.5;
                probes.extend([mid, -mid]);
            }
            for p in probes {
                for d in -2i32..=2 {
                    check(f32::from_bits(p.to_bits().wrapping_add_signed(d)));
                }
            }
        }
        for x in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            3.0,
            -7.5,
        ] {
            check(x);
        }
    }
}

/// Block-wise quantization in f64: absmax per block, exhaustive nearest entry for `v / absmax`.
fn quantize_f64(values: &[f32], book: &[f32; 256]) -> (Vec<usize>, Vec<f64>) {
    let mut codes = Vec::new();
    let mut absmax = Vec::new();
    for block in values.chunks(QUANT_BLOCK) {
        let a = block.iter().fold(0.0f64, |a, v| a.max((*v as f64).abs()));
        absmax.push(a);
        for &v in block {
            let x = if a == 0.0 { 0.0 } else { v as f64 / a };
            let code = (0..256)
                .min_by(|&i, &j| {
                    let (di, dj) = ((x - book[i] as f64).abs(), (x - book[j] as f64).abs());
                    di.total_cmp(&dj)
                })
                .unwrap();
            codes.push(code);
        }
    }
    (codes, absmax)
}

fn roundtrip_case(name: &str, values: &[f32], book: &Codebook) {
    let n = values.len();
    let (mut codes, mut absmax) = (vec![0u8; n], vec![0.0f32; quant_blocks(n)]);
    quantize_blockwise(
        values,
        book,
        Quantized {
            codes: &mut codes,
            absmax: &mut absmax,
        },
    );
    let mut back = vec![0.0f32; n];
    dequantize_blockwise(&codes, &absmax, book, &mut back);
    let (want_codes, want_absmax) = quantize_f64(values, book.values());
    let q = book.values();
    for (b, (&got, &want)) in absmax.iter().zip(&want_absmax).enumerate() {
        assert_eq!(got as f64, want, "{name}: absmax of block {b}");
    }
    for i in 0..n {
        let (got, want) = (codes[i] as usize, want_codes[i]);
        if got != want {
            // Only a value on the midpoint between the two entries (to f32 precision) may go either way.
            let a = want_absmax[i / QUANT_BLOCK];
            let x = values[i] as f64 / a;
            let mid = (q[got] as f64 + q[want] as f64) / 2.0;
            assert!(
                got.abs_diff(want) == 1
                    && (x - mid).abs() <= 4.0 * f64::from(f32::EPSILON) * mid.abs(),
                "{name}: element {i} ({}) got code {got}, the f64 reference {want}",
                values[i]
            );
        }
        let expected = q[want_codes[i]] as f64 * want_absmax[i / QUANT_BLOCK];
        // Relative, plus two steps of the subnormal range (where f32 has fewer digits).
        assert!(
            (back[i] as f64 - expected).abs()
                <= 1e-6 * expected.abs() + 2.0 * f64::from(f32::from_bits(1)),
            "{name}: element {i} dequantizes to {:e} (code {}), expected {expected:e} (code {})",
            back[i],
            codes[i],
            want_codes[i]
        );
    }
}

#[test]
fn quantization_round_trips_match_an_f64_reference() {
    let mut rng = Rng::new(5);
    let signed = Codebook::signed();
    let unsigned = Codebook::unsigned();
    let normals = |rng: &mut Rng, n: usize, scale: f64| -> Vec<f32> {
        rng.normals(n, scale).iter().map(|&v| v as f32).collect()
    };
    // A partial last block, odd sizes, random values over several scales.
    for n in [1, 3, 255, 256, 257, 3 * 256 + 17] {
        let v = normals(&mut rng, n, 0.01);
        roundtrip_case(&format!("normal n={n}"), &v, signed);
        let sq: Vec<f32> = v.iter().map(|x| x * x).collect();
        roundtrip_case(&format!("squares n={n}"), &sq, unsigned);
    }
    // A block of zeros between two ordinary blocks.
    let mut v = normals(&mut rng, 3 * 256, 1.0);
    v[256..512].fill(0.0);
    roundtrip_case("zero block", &v, signed);
    let (mut codes, mut absmax) = (vec![0u8; v.len()], vec![1.0f32; 3]);
    quantize_blockwise(
        &v,
        unsigned,
        Quantized {
            codes: &mut codes,
            absmax: &mut absmax,
        },
    );
    assert_eq!(absmax[1], 0.0);
    assert!(codes[256..512].iter().all(|&c| c == 0));
    // One huge value: the rest of its block falls below the smallest entry and becomes 0.
    let mut v = normals(&mut rng, 300, 1.0);
    v[17] = 3e37;
    roundtrip_case("huge value", &v, signed);
    // Subnormal magnitudes: the scale is subnormal, the normalized values are not.
    let v: Vec<f32> = normals(&mut rng, 200, 1.0)
        .iter()
        .map(|x| x * 1e-39)
        .collect();
    assert!(v.iter().any(|x| x.is_subnormal()));
    roundtrip_case("subnormal", &v, signed);
    // The largest error is half a gap of the codebook times the block's absmax.
    let v = normals(&mut rng, 1024, 1.0);
    let (mut codes, mut absmax) = (vec![0u8; 1024], vec![0.0f32; 4]);
    quantize_blockwise(
        &v,
        signed,
        Quantized {
            codes: &mut codes,
            absmax: &mut absmax,
        },
    );
    let mut back = vec![0.0f32; 1024];
    dequantize_blockwise(&codes, &absmax, signed, &mut back);
    let gap = signed
        .values()
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0, f32::max);
    for i in 0..1024 {
        assert!((back[i] - v[i]).abs() <= gap / 2.0 * absmax[i / 256] * 1.0001);
    }
}

/// An unfused 8-bit Adam step written from the description: dequantize whole buffers, update element
/// by element, absmax per block, nearest entry by scanning the sorted codebook with a midpoint test
/// (ties to the even index, where bitsandbytes' search ends), then the sign fix.
struct Reference8 {
    w: Vec<f32>,
    m: (Vec<u8>, Vec<f32>),
    v: (Vec<u8>, Vec<f32>),
}

fn scan_nearest(q: &[f32; 256], x: f32) -> u8 {
    if x <= q[0] {
        return 0;
    }
    // The interval (q[i], q[i+1]] holding x.
    let i = (0..255).find(|&i| q[i] < x && x <= q[i + 1]).unwrap_or(255);
    if i == 255 {
        return 255;
    }
    let mid = (q[i] + q[i + 1]) * 0.5;
    let tie = x == mid;
    let code = if x > mid || (tie && i % 2 == 1) {
        i + 1
    } else {
        i
    };
    code as u8
}

fn requantize(values: &[f32], q: &[f32; 256], zero: u8, keep_sign: bool) -> (Vec<u8>, Vec<f32>) {
    let mut codes = Vec::new();
    let mut absmax = Vec::new();
    for block in values.chunks(QUANT_BLOCK) {
        let a = block.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        absmax.push(a);
        for &v in block {
            if a == 0.0 {
                codes.push(zero);
                continue;
            }
            let mut c = scan_nearest(q, v / a);
            if keep_sign
                && (q[c as usize] < 0.0 || q[c as usize].is_sign_negative()) != v.is_sign_negative()
            {
                c = if v > 0.0 { c + 1 } else { c - 1 };
            }
            codes.push(c);
        }
    }
    (codes, absmax)
}

fn dequantize(codes: &[u8], absmax: &[f32], q: &[f32; 256]) -> Vec<f32> {
    codes
        .iter()
        .enumerate()
        .map(|(i, &c)| q[c as usize] * absmax[i / QUANT_BLOCK])
        .collect()
}

impl Reference8 {
    fn adam(&mut self, g: &[f32], hp: &AdamStep) {
        let (q1, q2) = (Codebook::signed().values(), Codebook::unsigned().values());
        let t = hp.step as i32;
        let c1 = 1.0 - hp.beta1.powi(t);
        let c2 = (1.0 - hp.beta2.powi(t)).sqrt();
        let step_size = (-hp.lr * c2 / c1) as f32;
        let eps_hat = (c2 * hp.eps) as f32;
        let (b1, b2) = (hp.beta1 as f32, hp.beta2 as f32);
        let (l2, decay) = if hp.decoupled {
            (0.0f32, (1.0 - hp.lr * hp.weight_decay) as f32)
        } else {
            (hp.weight_decay as f32, 1.0f32)
        };
        let mut m = dequantize(&self.m.0, &self.m.1, q1);
        let mut v = dequantize(&self.v.0, &self.v.1, q2);
        for i in 0..g.len() {
            if g[i].is_nan() || g[i].is_infinite() {
                m[i] = 0.0;
                v[i] = 0.0;
                continue;
            }
            let gi = g[i] + l2 * self.w[i];
            m[i] = m[i] * b1 + (1.0 - b1) * gi;
            v[i] = v[i] * b2 + (1.0 - b2) * gi * gi;
            self.w[i] = (self.w[i] + step_size * (m[i] / (v[i].sqrt() + eps_hat))) * decay;
        }
        self.m = requantize(&m, q1, 127, true);
        self.v = requantize(&v, q2, 0, false);
    }
}

#[test]
fn adam8bit_step_matches_an_unfused_implementation_bit_for_bit() {
    let mut rng = Rng::new(21);
    // Odd sizes, a partial block, and one large enough for several parallel tasks.
    for (n, decoupled) in [
        (1, true),
        (255, false),
        (257, true),
        (1000, true),
        (70_001, false),
    ] {
        let mut w0: Vec<f32> = rng.normals(n, 0.5).iter().map(|&v| v as f32).collect();
        // Block 1 of the larger sizes: zero weights and gradients, so its moments stay zero (the
        // zero-absmax branch, L2 included).
        let zero_block = 256..512;
        if n >= 1000 {
            w0[zero_block.clone()].fill(0.0);
        }
        let blocks = quant_blocks(n);
        let mut w = w0.clone();
        let (mut mc, mut ma) = (vec![127u8; n], vec![0.0f32; blocks]);
        let (mut vc, mut va) = (vec![0u8; n], vec![0.0f32; blocks]);
        let mut reference = Reference8 {
            w: w0,
            m: (mc.clone(), ma.clone()),
            v: (vc.clone(), va.clone()),
        };
        for step in 1..=6u64 {
            // Gradients over many magnitudes, with NaN and infinite elements now and then.
            let mut g: Vec<f32> = (0..n)
                .map(|_| (rng.normal() * 10f64.powf(rng.range(-4.0, 1.0))) as f32)
                .collect();
            if n > 10 {
                g[3] = f32::NAN;
                g[n - 2] = if step % 2 == 0 {
                    f32::INFINITY
                } else {
                    f32::NEG_INFINITY
                };
            }
            if n >= 1000 {
                g[zero_block.clone()].fill(0.0);
                // A single huge value that dwarfs its block once, and a subnormal gradient.
                if step == 2 {
                    g[700] = 3e15;
                }
                g[800] = 1e-40;
            }
            let hp = AdamStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.995,
                eps: 1e-8,
                weight_decay: 0.05,
                decoupled,
                step,
            };
            cpu::adam8bit_step(
                &mut w,
                &g,
                Quantized {
                    codes: &mut mc,
                    absmax: &mut ma,
                },
                Quantized {
                    codes: &mut vc,
                    absmax: &mut va,
                },
                &hp,
            );
            reference.adam(&g, &hp);
            assert_eq!(mc, reference.m.0, "n={n} step {step}: first-moment codes");
            assert_eq!(vc, reference.v.0, "n={n} step {step}: second-moment codes");
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&ma),
                bits(&reference.m.1),
                "n={n} step {step}: absmax1"
            );
            assert_eq!(
                bits(&va),
                bits(&reference.v.1),
                "n={n} step {step}: absmax2"
            );
            assert_eq!(bits(&w), bits(&reference.w), "n={n} step {step}: weights");
            if n > 10 {
                // The NaN element: zero states (its code dequantizes to 0) and an untouched weight.
                assert_eq!(Codebook::signed().value(mc[3]) * ma[0], 0.0);
            }
            if n >= 1000 {
                assert_eq!(
                    (ma[1], va[1]),
                    (0.0, 0.0),
                    "n={n} step {step}: the zero block"
                );
            }
        }
    }
}

#[test]
fn adam8bit_tracks_f32_adam_closely() {
    // 8-bit states are an approximation: after 50 steps the weights stay near f32 Adam's.
    let mut rng = Rng::new(4);
    let n = 4096;
    let w0: Vec<f32> = rng.normals(n, 1.0).iter().map(|&v| v as f32).collect();
    let (mut w8, mut w32) = (w0.clone(), w0.clone());
    let (mut mc, mut ma, mut vc, mut va) =
        (vec![127u8; n], vec![0.0; 16], vec![0u8; n], vec![0.0; 16]);
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    for step in 1..=50 {
        let g: Vec<f32> = w8.iter().map(|&w| w + 0.1 * rng.normal() as f32).collect();
        let hp = AdamStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: true,
            step,
        };
        cpu::adam8bit_step(
            &mut w8,
            &g,
            Quantized {
                codes: &mut mc,
                absmax: &mut ma,
            },
            Quantized {
                codes: &mut vc,
                absmax: &mut va,
            },
            &hp,
        );
        cpu::adam_step(&mut w32, &g, &mut m, &mut v, &hp);
    }
    let moved: f64 = w0
        .iter()
        .zip(&w32)
        .map(|(a, b)| ((a - b) as f64).abs())
        .sum();
    let apart: f64 = w8
        .iter()
        .zip(&w32)
        .map(|(a, b)| ((a - b) as f64).abs())
        .sum();
    assert!(
        apart < 0.05 * moved,
        "8-bit off by {apart}, f32 moved {moved}"
    );
}

#[test]
fn momentum8bit_step_matches_an_unfused_implementation_bit_for_bit() {
    let mut rng = Rng::new(8);
    let q = Codebook::signed().values();
    for (n, nesterov, dampening) in [(7, false, 0.0), (513, true, 0.0), (40_000, false, 0.1)] {
        let mut w: Vec<f32> = rng.normals(n, 1.0).iter().map(|&v| v as f32).collect();
        let mut want_w = w.clone();
        let (mut codes, mut absmax) = (vec![127u8; n], vec![0.0f32; quant_blocks(n)]);
        let mut want = (codes.clone(), absmax.clone());
        let hp = SgdStep {
            lr: 0.05,
            momentum: 0.9,
            dampening,
            weight_decay: 0.01,
            nesterov,
        };
        for step in 0..5 {
            let mut g: Vec<f32> = rng.normals(n, 1.0).iter().map(|&v| v as f32).collect();
            g[n / 2] = f32::NAN;
            cpu::momentum8bit_step(
                &mut w,
                &g,
                Quantized {
                    codes: &mut codes,
                    absmax: &mut absmax,
                },
                step == 0,
                &hp,
            );
            // Reference.
            let mut b = dequantize(&want.0, &want.1, q);
            for i in 0..n {
                if !g[i].is_finite() {
                    b[i] = 0.0;
                    continue;
                }
                let gi = g[i] + 0.01f32 * want_w[i];
                b[i] = if step == 0 {
                    gi
                } else {
                    0.9f32 * b[i] + (1.0 - dampening as f32) * gi
                };
                let d = if nesterov { gi + 0.9f32 * b[i] } else { b[i] };
                want_w[i] -= 0.05f32 * d;
            }
            want = requantize(&b, q, 127, true);
            assert_eq!(codes, want.0, "n={n} step {step}: codes");
            assert_eq!(absmax, want.1, "n={n} step {step}: absmax");
            assert_eq!(w, want_w, "n={n} step {step}: weights");
        }
    }
}

#[test]
#[should_panic(expected = "needs 300 codes and 2 block scales, got 300 and 1")]
fn wrong_state_lengths_panic_with_a_clear_message() {
    let (mut w, g) = (vec![0.0f32; 300], vec![0.0f32; 300]);
    let (mut mc, mut ma, mut vc, mut va) =
        (vec![0u8; 300], vec![0.0; 1], vec![0u8; 300], vec![0.0; 2]);
    let hp = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: true,
        step: 1,
    };
    cpu::adam8bit_step(
        &mut w,
        &g,
        Quantized {
            codes: &mut mc,
            absmax: &mut ma,
        },
        Quantized {
            codes: &mut vc,
            absmax: &mut va,
        },
        &hp,
    );
}

#[test]
fn stochastic_rounding_is_unbiased_and_reproducible() {
    let mut rng = Rng::new(2);
    // Random values, rounded 400 times each: always to one of the two neighbouring bf16 values, and
    // on average to the value itself.
    let values: Vec<f32> = rng.normals(64, 3.0).iter().map(|&v| v as f32).collect();
    let mut sums = vec![0.0f64; 64];
    let reps = 400;
    for counter in 0..reps {
        let mut x = values.clone();
        stochastic_round_bf16(&mut x, 99, counter);
        for (i, (&r, &v)) in x.iter().zip(&values).enumerate() {
            let down = f32::from_bits(v.to_bits() & 0xFFFF_0000);
            let up = f32::from_bits((v.to_bits() & 0xFFFF_0000) + 0x1_0000);
            assert!(r == down || r == up, "{v} rounded to {r}");
            assert_eq!(bf16::from_f32(r).to_f32(), r);
            sums[i] += r as f64;
        }
    }
    for (i, &v) in values.iter().enumerate() {
        let ulp = f32::from_bits((v.to_bits() & 0xFFFF_0000) + 0x1_0000).abs() as f64
            - f32::from_bits(v.to_bits() & 0xFFFF_0000).abs() as f64;
        // Bernoulli mean over 400 draws: 4 standard deviations is at most ulp·4·0.5/20.
        assert!(
            (sums[i] / reps as f64 - v as f64).abs() <= 0.1 * ulp,
            "element {i}"
        );
    }
    // The parallel path (large buffers) draws the same bits as element-by-element rounding.
    let big: Vec<f32> = rng.normals(40_000, 1.0).iter().map(|&v| v as f32).collect();
    let mut a = big.clone();
    stochastic_round_bf16(&mut a, 5, 17);
    for (i, (&r, &v)) in a.iter().zip(&big).enumerate() {
        let bits = v.to_bits();
        let up = rounding_bits(5, 17, i as u64) < (bits & 0xFFFF);
        let want = f32::from_bits((bits & 0xFFFF_0000) + if up { 0x1_0000 } else { 0 });
        assert_eq!(r, want, "element {i}");
    }
    // Another seed or counter draws other bits; NaN and infinities pass through.
    let (mut b, mut c) = (big.clone(), big.clone());
    stochastic_round_bf16(&mut b, 6, 17);
    stochastic_round_bf16(&mut c, 5, 18);
    assert!(a != b && a != c);
    let mut special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    stochastic_round_bf16(&mut special, 1, 1);
    assert!(special[0].is_nan() && special[1] == f32::INFINITY && special[2] == f32::NEG_INFINITY);
}

#[test]
fn kahan_rounding_keeps_small_updates_that_nearest_rounding_loses() {
    let mut rng = Rng::new(9);
    for n in [5usize, 20_000] {
        let start: Vec<f32> = rng
            .normals(n, 1.0)
            .iter()
            .map(|&v| bf16::from_f64(v + 2.0f64.copysign(v)).to_f32())
            .collect();
        let updates: Vec<f32> = rng.normals(n, 1e-4).iter().map(|&v| v as f32).collect();
        let (mut kahan, mut nearest) = (start.clone(), start.clone());
        let mut comp = vec![bf16::ZERO; n];
        let mut exact: Vec<f64> = start.iter().map(|&v| v as f64).collect();
        for _ in 0..300 {
            let old = kahan.clone();
            for i in 0..n {
                kahan[i] += updates[i];
                nearest[i] = bf16::from_f32(nearest[i] + updates[i]).to_f32();
                exact[i] += updates[i] as f64;
            }
            kahan_round_through::<bf16>(&old, &mut kahan, &mut comp);
        }
        let (mut kahan_error, mut held_error, mut nearest_error) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let step = 2.0f64.powi((exact[i].abs().log2().floor() as i32) - 7);
            // Kahan ends within one bf16 step of the exact sum. Stored value plus compensation is
            // closer, but not exact: the compensation is itself bf16 and loses up to 2^-9 of its size
            // (at most half a step) at each of the 300 updates, 0.29 steps in all at worst.
            assert!((kahan[i] as f64 - exact[i]).abs() <= step, "element {i}");
            let held = kahan[i] as f64 + comp[i].to_f64();
            assert!(
                (held - exact[i]).abs() <= 0.3 * step,
                "element {i}: {} + {} vs {} (step {step})",
                kahan[i],
                comp[i],
                exact[i]
            );
            held_error += (held - exact[i]).abs();
            // Round-to-nearest never moved (each update is under half a step).
            assert_eq!(nearest[i], start[i]);
            kahan_error += (kahan[i] as f64 - exact[i]).abs();
            nearest_error += (nearest[i] as f64 - exact[i]).abs();
        }
        // Over all elements, Kahan keeps most of what round-to-nearest loses.
        assert!(
            kahan_error < 0.3 * nearest_error,
            "{kahan_error} vs {nearest_error}"
        );
        assert!(
            held_error < 0.1 * nearest_error,
            "{held_error} vs {nearest_error}"
        );
    }
    // f16 storage works the same way.
    let (mut w, mut c) = ([1.0f32], [f16::ZERO]);
    for _ in 0..1000 {
        let old = w;
        w[0] += 1e-4;
        kahan_round_through::<f16>(&old, &mut w, &mut c);
    }
    assert!((w[0] as f64 + c[0].to_f64() - 1.1).abs() < 1e-4, "{}", w[0]);
}

/// The AVX-512 bodies (full blocks) and the scalar fallback give the same codes, scales and weights,
/// bit for bit, on states that have been through a few steps (on a CPU without AVX-512 both runs take
/// the scalar path).
#[test]
fn vector_and_scalar_paths_agree_bit_for_bit() {
    use amp_kernels::cpu::isa::{Isa, detected, set_isa_limit};
    let mut rng = Rng::new(31);
    let n = 20 * 256 + 77;
    let blocks = quant_blocks(n);
    // Block 2 (elements 512..768) has zero weights and zero gradients, so even the L2 term leaves its
    // moments at zero: the fused kernels' zero-absmax branch.
    let zero_block = 512..768;
    let mut weights: Vec<f32> = rng.normals(n, 1.0).iter().map(|&v| v as f32).collect();
    weights[zero_block.clone()].fill(0.0);
    // A NaN weight makes a NaN moment under Adam's L2 term (a NaN value for the codebook search, whose
    // vector kernels take their exact fallback for it).
    weights[1000] = f32::NAN;
    let grads: Vec<Vec<f32>> = (0..4)
        .map(|s| {
            let mut g: Vec<f32> = (0..n)
                .map(|_| (rng.normal() * 10f64.powf(rng.range(-6.0, 2.0))) as f32)
                .collect();
            g[s * 300] = f32::NAN;
            g[s * 300 + 1] = f32::INFINITY;
            // Signed zeros and magnitudes that round to the zero code: the sign fix's cases.
            g[s * 300 + 2] = -0.0;
            g[s * 300 + 3] = -1e-30;
            g[s * 300 + 4] = 1e-30;
            // A square that overflows: an infinite second-moment absmax, so the block's other values
            // divide to zero and the infinite one to NaN.
            g[5000 + s] = 3e38;
            g[zero_block.clone()].fill(0.0);
            g
        })
        .collect();
    let run = |level: Isa| {
        let previous = set_isa_limit(level);
        let mut w = weights.clone();
        let mut s = (
            vec![127u8; n],
            vec![0.0f32; blocks],
            vec![0u8; n],
            vec![0.0f32; blocks],
        );
        let mut w2 = weights.clone();
        let mut b = (vec![127u8; n], vec![0.0f32; blocks]);
        for (t, g) in grads.iter().enumerate() {
            let hp = AdamStep {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
                decoupled: t % 2 == 0,
                step: t as u64 + 1,
            };
            let (m, v) = (
                Quantized {
                    codes: &mut s.0,
                    absmax: &mut s.1,
                },
                Quantized {
                    codes: &mut s.2,
                    absmax: &mut s.3,
                },
            );
            cpu::adam8bit_step(&mut w, g, m, v, &hp);
            let sgd = SgdStep {
                lr: 0.01,
                momentum: 0.9,
                dampening: 0.0,
                weight_decay: 1e-4,
                nesterov: t == 3,
            };
            let buffer = Quantized {
                codes: &mut b.0,
                absmax: &mut b.1,
            };
            cpu::momentum8bit_step(&mut w2, g, buffer, t == 0, &sgd);
        }
        set_isa_limit(previous);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        (
            bits(&w),
            s.0,
            bits(&s.1),
            s.2,
            bits(&s.3),
            bits(&w2),
            b.0,
            bits(&b.1),
        )
    };
    let scalar = run(Isa::Scalar);
    let vector = run(detected());
    assert!(
        scalar == vector,
        "the vector path differs from the scalar one"
    );
    // The run did exercise the states: non-zero scales and codes other than zero's, and a block whose
    // scales are zero.
    assert!(scalar.2.iter().any(|&a| a != 0) && scalar.1.iter().any(|&c| c != 127));
    assert_eq!((scalar.2[2], scalar.4[2], scalar.7[2]), (0, 0, 0));
}
