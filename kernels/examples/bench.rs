//! The kernels' benchmark: one run measures the register-only peaks of the instructions the kernels use,
//! a STREAM-style triad, and every kernel's throughput, its share of the matching peak, and (with
//! `--features peers`) the ratio to the `gemm` crate. Medians over repeats, measured side by side.
//!
//! ```text
//! cargo run --release -p amp-kernels --example bench --features peers
//! ```

use amp_kernels::cpu::isa::{self, Isa};
use amp_kernels::cpu::{self, AdamStep, GemmSpec, Quantized, gemm_mixed, quant_blocks};
use amp_kernels::{bf16, f16};
use rayon::prelude::*;
use std::time::Instant;

/// Median seconds of `f` over `reps` runs after one warm-up.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// The median of some timings.
fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

#[cfg(target_arch = "x86_64")]
mod peaks {
    //! Register-only loops: 16 independent accumulators, no memory traffic, so the loop runs at the
    //! instruction's throughput.
    use std::arch::asm;

    macro_rules! peak_loop {
        ($name:ident, $feature:literal, $insn:literal, $reg:literal) => {
            #[target_feature(enable = $feature)]
            pub unsafe fn $name(iterations: u64) {
                unsafe {
                    asm!(
                        concat!("vxorps ", $reg, "16, ", $reg, "16, ", $reg, "16"),
                        concat!("vxorps ", $reg, "17, ", $reg, "17, ", $reg, "17"),
                        "2:",
                        concat!($insn, " ", $reg, "0, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "1, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "2, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "3, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "4, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "5, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "6, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "7, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "8, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "9, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "10, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "11, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "12, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "13, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "14, ", $reg, "16, ", $reg, "17"),
                        concat!($insn, " ", $reg, "15, ", $reg, "16, ", $reg, "17"),
                        "dec {n}",
                        "jnz 2b",
                        n = inout(reg) iterations => _,
                        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                        out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                        out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                        out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                        out("zmm16") _, out("zmm17") _,
                        options(nostack, nomem),
                    );
                }
            }
        };
    }

    /// The tile configuration `ldtilecfg` reads: palette 1, eight tiles of 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    /// `tdpbf16ps` on four accumulator tiles from four source tiles, 4 per iteration (16384 flops each).
    pub unsafe fn amx_tiles(iterations: u64) {
        let mut config = TileConfig([0; 64]);
        config.0[0] = 1;
        for t in 0..8 {
            config.0[16 + 2 * t] = 64;
            config.0[48 + t] = 16;
        }
        unsafe {
            asm!(
                "ldtilecfg [{cfg}]",
                "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
                "tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7",
                "2:",
                "tdpbf16ps tmm0, tmm4, tmm5",
                "tdpbf16ps tmm1, tmm4, tmm6",
                "tdpbf16ps tmm2, tmm5, tmm7",
                "tdpbf16ps tmm3, tmm6, tmm7",
                "dec {n}",
                "jnz 2b",
                "tilerelease",
                cfg = in(reg) &config,
                n = inout(reg) iterations => _,
                options(nostack),
            );
        }
    }

    peak_loop!(fma_zmm, "avx512f", "vfmadd231ps", "zmm");
    peak_loop!(dpbf16_zmm, "avx512f,avx512bf16", "vdpbf16ps", "zmm");
    peak_loop!(fma_ymm, "avx2,fma", "vfmadd231ps", "ymm");
}

/// GFLOP/s of a peak loop on every thread: `flops_per_insn` per instruction, 16 per iteration.
#[cfg(target_arch = "x86_64")]
fn peak(flops_per_insn: f64, f: unsafe fn(u64)) -> f64 {
    peak_of(20_000_000, 16.0 * flops_per_insn, f)
}

/// GFLOP/s of `f(iterations)` on every thread, `flops_per_iteration` each.
#[cfg(target_arch = "x86_64")]
fn peak_of(iterations: u64, flops_per_iteration: f64, f: unsafe fn(u64)) -> f64 {
    let threads = rayon::current_num_threads();
    let secs = median_secs(5, || {
        // SAFETY: each loop is called only when the ISA check in `main` found its instructions.
        (0..threads)
            .into_par_iter()
            .for_each(|_| unsafe { f(iterations) });
    });
    threads as f64 * iterations as f64 * flops_per_iteration / secs / 1e9
}

/// STREAM triad `a = b + s·c` on 3 × 64 MiB of f32, in GB/s (3 arrays of traffic, no write-allocate).
fn triad() -> f64 {
    let n = 16 << 20;
    let (b, c) = (vec![1.0f32; n], vec![2.0f32; n]);
    let mut a = vec![0.0f32; n];
    let secs = median_secs(7, || {
        a.par_chunks_mut(1 << 16)
            .zip(b.par_chunks(1 << 16))
            .zip(c.par_chunks(1 << 16))
            .for_each(|((a, b), c)| {
                for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                    *a = b + 3.0 * c;
                }
            })
    });
    3.0 * 4.0 * n as f64 / secs / 1e9
}

struct Row {
    kernel: String,
    value: f64,
    unit: &'static str,
    of_peak: Option<f64>,
    vs_gemm: Option<f64>,
}

/// Repetitions of an n × n × n GEMM: about a quarter second of work at 400 GFLOP/s, 7 to 101 (few runs of
/// a short product are dominated by the host's noise).
fn gemm_reps(n: usize) -> usize {
    ((0.25 * 400e9 / (2.0 * (n as f64).powi(3))) as usize).clamp(7, 101)
}

fn gemm_rate<A: amp_kernels::Float, B: amp_kernels::Float>(n: usize, a: &[A], b: &[B]) -> f64 {
    let spec = GemmSpec::new(n, n, n);
    let mut c = vec![0.0f32; n * n];
    spec.flops() / median_secs(gemm_reps(n), || gemm_mixed(&spec, a, b, &mut c)) / 1e9
}

/// GFLOP/s of our n × n × n GEMM and of the `gemm` crate's on the same operands, as medians of runs that
/// alternate between the two, so that both see the same state of this shared host. Ours accumulates and
/// writes f32; `gemm` writes `T` (for f16, it has no f32-output mixed product).
#[cfg(feature = "peers")]
fn paired_rates<T: amp_kernels::Float>(n: usize, a: &[T], b: &[T], zero: T, one: T) -> (f64, f64) {
    let spec = GemmSpec::new(n, n, n);
    let mut ours_c = vec![0.0f32; n * n];
    let mut peer_c = vec![zero; n * n];
    let threads = rayon::current_num_threads();
    let mut ours = || gemm_mixed(&spec, a, b, &mut ours_c);
    let mut peer = || unsafe {
        // SAFETY: row-major n×n buffers of the right length; strides in elements.
        gemm::gemm(
            n,
            n,
            n,
            peer_c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            n as isize,
            b.as_ptr(),
            1,
            n as isize,
            zero,
            one,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        )
    };
    ours();
    peer();
    let (mut ours_t, mut peer_t) = (Vec::new(), Vec::new());
    for round in 0..gemm_reps(n) {
        let mut pair = [
            (&mut ours as &mut dyn FnMut(), &mut ours_t),
            (&mut peer, &mut peer_t),
        ];
        // Who goes first alternates too, so neither always runs right after the other.
        pair.rotate_left(round % 2);
        for (run, times) in pair {
            let s = Instant::now();
            run();
            times.push(s.elapsed().as_secs_f64());
        }
    }
    (
        spec.flops() / median(ours_t) / 1e9,
        spec.flops() / median(peer_t) / 1e9,
    )
}

fn main() {
    let level = isa::isa();
    let threads = rayon::current_num_threads();
    println!(
        "amp-kernels benchmark: {level:?} path, {threads} threads (RAYON_NUM_THREADS), medians of 5-101 runs; \
         against `gemm`: runs alternating with it\n"
    );
    let mut rows: Vec<Row> = Vec::new();
    let (mut fma_peak, mut bf16_peak) = (None, None);
    #[cfg(target_arch = "x86_64")]
    {
        if level >= Isa::Avx512 {
            let p = peak(32.0, peaks::fma_zmm);
            fma_peak = Some(p);
            rows.push(Row {
                kernel: "peak: vfmadd231ps zmm (f32 FMA)".into(),
                value: p,
                unit: "GFLOP/s",
                of_peak: None,
                vs_gemm: None,
            });
        } else if level >= Isa::Avx2 {
            let p = peak(16.0, peaks::fma_ymm);
            fma_peak = Some(p);
            rows.push(Row {
                kernel: "peak: vfmadd231ps ymm (f32 FMA)".into(),
                value: p,
                unit: "GFLOP/s",
                of_peak: None,
                vs_gemm: None,
            });
        }
        if level >= Isa::Avx512Bf16 {
            let p = peak(64.0, peaks::dpbf16_zmm);
            bf16_peak = Some(p);
            rows.push(Row {
                kernel: "peak: vdpbf16ps zmm (bf16 dot)".into(),
                value: p,
                unit: "GFLOP/s",
                of_peak: None,
                vs_gemm: None,
            });
        }
    }
    let mut amx_peak = None;
    #[cfg(target_arch = "x86_64")]
    if isa::amx_permitted() {
        let p = peak_of(2_000_000, 4.0 * 16384.0, peaks::amx_tiles);
        amx_peak = Some(p);
        rows.push(Row {
            kernel: "peak: tdpbf16ps (AMX-BF16 tiles)".into(),
            value: p,
            unit: "GFLOP/s",
            of_peak: None,
            vs_gemm: None,
        });
    }
    if amx_peak.is_none() {
        println!("(no AMX on this CPU: the AMX-BF16 path and its peak cannot be measured here)\n");
    }
    let stream = triad();
    rows.push(Row {
        kernel: "STREAM triad, 3 x 64 MiB".into(),
        value: stream,
        unit: "GB/s",
        of_peak: None,
        vs_gemm: None,
    });

    for n in [512usize, 1024, 2048] {
        // Two different operands, as in a model's products (a matrix times itself shares cache lines
        // between the operands, which helps `gemm` by 2-3% at n = 1024).
        let a: Vec<f32> = (0..n * n)
            .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let b: Vec<f32> = (0..n * n)
            .map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let (ab, bb): (Vec<bf16>, Vec<bf16>) = (
            a.iter().map(|&v| bf16::from_f32(v)).collect(),
            b.iter().map(|&v| bf16::from_f32(v)).collect(),
        );
        let (ah, bh): (Vec<f16>, Vec<f16>) = (
            a.iter().map(|&v| f16::from_f32(v)).collect(),
            b.iter().map(|&v| f16::from_f32(v)).collect(),
        );
        #[cfg(feature = "peers")]
        let ((f32_rate, peer32), (h, peer16)) = (
            paired_rates(n, &a, &b, 0.0f32, 1.0f32),
            paired_rates(n, &ah, &bh, f16::ZERO, f16::ONE),
        );
        #[cfg(not(feature = "peers"))]
        let ((f32_rate, peer32), (h, peer16)) = (
            (gemm_rate(n, &a, &b), f64::NAN),
            (gemm_rate(n, &ah, &bh), f64::NAN),
        );
        let ratio = |ours: f64, theirs: f64| theirs.is_finite().then(|| ours / theirs);
        let pct = |v: f64, p: Option<f64>| p.map(|p| 100.0 * v / p);
        rows.push(Row {
            kernel: format!("GEMM f32, n = {n}"),
            value: f32_rate,
            unit: "GFLOP/s",
            of_peak: pct(f32_rate, fma_peak),
            vs_gemm: ratio(f32_rate, peer32),
        });
        let bf = gemm_rate(n, &ab, &bb);
        rows.push(Row {
            kernel: format!("GEMM bf16 (f32 acc), n = {n}"),
            value: bf,
            unit: "GFLOP/s",
            of_peak: pct(bf, bf16_peak.or(fma_peak)),
            vs_gemm: None,
        });
        let mixed = gemm_rate(n, &a, &bb);
        rows.push(Row {
            kernel: format!("GEMM f32 x bf16 weight (autocast), n = {n}"),
            value: mixed,
            unit: "GFLOP/s",
            of_peak: pct(mixed, bf16_peak.or(fma_peak)),
            vs_gemm: None,
        });
        if amx_peak.is_some() {
            // The opt-in tile kernel (`AMP_AMX=1`), measured side by side.
            let previous = isa::set_amx_mode(isa::AmxMode::Hardware);
            for (what, rate) in [
                ("GEMM bf16 on AMX tiles", gemm_rate(n, &ab, &bb)),
                ("GEMM f32 x bf16 weight on AMX tiles", gemm_rate(n, &a, &bb)),
            ] {
                rows.push(Row {
                    kernel: format!("{what}, n = {n}"),
                    value: rate,
                    unit: "GFLOP/s",
                    of_peak: pct(rate, amx_peak),
                    vs_gemm: None,
                });
            }
            isa::set_amx_mode(previous);
        }
        rows.push(Row {
            kernel: format!("GEMM f16 (f32 acc), n = {n}"),
            value: h,
            unit: "GFLOP/s",
            of_peak: pct(h, fma_peak),
            vs_gemm: ratio(h, peer16),
        });
    }

    // Bandwidth-bound kernels on 64 MiB of f32 operands.
    let n = 16 << 20;
    let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 1e-3 - 0.5).collect();
    let mut low = vec![bf16::ZERO; n];
    let cast = 6.0 * n as f64 / median_secs(7, || cpu::cast(&x, &mut low)) / 1e9;
    rows.push(Row {
        kernel: "cast f32 -> bf16".into(),
        value: cast,
        unit: "GB/s",
        of_peak: Some(100.0 * cast / stream),
        vs_gemm: None,
    });
    let mut back = vec![0.0f32; n];
    let widen = 6.0 * n as f64 / median_secs(7, || cpu::cast(&low, &mut back)) / 1e9;
    rows.push(Row {
        kernel: "cast bf16 -> f32".into(),
        value: widen,
        unit: "GB/s",
        of_peak: Some(100.0 * widen / stream),
        vs_gemm: None,
    });
    let mut g = x.clone();
    let unscale = 8.0 * n as f64
        / median_secs(7, || {
            std::hint::black_box(cpu::unscale_and_check(&mut g, 1.0));
        })
        / 1e9;
    rows.push(Row {
        kernel: "unscale + inf/NaN check".into(),
        value: unscale,
        unit: "GB/s",
        of_peak: Some(100.0 * unscale / stream),
        vs_gemm: None,
    });
    let (mut p, mut m, mut v) = (x.clone(), vec![0.0f32; n], vec![0.0f32; n]);
    let hp = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        decoupled: true,
        step: 10,
    };
    let adam =
        28.0 * n as f64 / median_secs(7, || cpu::adam_step(&mut p, &x, &mut m, &mut v, &hp)) / 1e9;
    rows.push(Row {
        kernel: "AdamW update (w, g, m, v)".into(),
        value: adam,
        unit: "GB/s",
        of_peak: Some(100.0 * adam / stream),
        vs_gemm: None,
    });
    // 8-bit states: w read and written (8 bytes), g read (4), two codes read and written (4), and two
    // f32 scales per 256 elements.
    let blocks = quant_blocks(n);
    let (mut mc, mut vc) = (vec![127u8; n], vec![0u8; n]);
    let (mut ma, mut va) = (vec![0.0f32; blocks], vec![0.0f32; blocks]);
    let mut p8 = x.clone();
    let bytes = 16.0 * n as f64 + 16.0 * blocks as f64;
    let adam8 = bytes
        / median_secs(7, || {
            let m = Quantized {
                codes: &mut mc,
                absmax: &mut ma,
            };
            let v = Quantized {
                codes: &mut vc,
                absmax: &mut va,
            };
            cpu::adam8bit_step(&mut p8, &x, m, v, &hp)
        })
        / 1e9;
    rows.push(Row {
        kernel: "AdamW 8-bit update (w, g, 8-bit m, v)".into(),
        value: adam8,
        unit: "GB/s",
        of_peak: Some(100.0 * adam8 / stream),
        vs_gemm: None,
    });

    println!(
        "{:<44} {:>10} {:<8} {:>9} {:>9}",
        "kernel", "rate", "unit", "% peak", "vs gemm"
    );
    for r in &rows {
        let peak = r.of_peak.map_or("".to_string(), |p| format!("{p:.0}%"));
        let peer = r.vs_gemm.map_or("".to_string(), |x| format!("{x:.2}x"));
        println!(
            "{:<44} {:>10.1} {:<8} {:>9} {:>9}",
            r.kernel, r.value, r.unit, peak, peer
        );
    }
    println!(
        "\n% peak: GEMMs against the FMA or vdpbf16ps peak above; bandwidth kernels against the triad."
    );
}
