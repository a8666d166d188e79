//! The standard training-throughput comparison: an MLP 784-1024-1024-10 (GELU), batch 256, Adam, on
//! random data, in every precision mode; steps per second (median of samples after warm-up) and peak
//! resident memory per mode.
//!
//! ```text
//! cargo run --release --example mlp_bench [-- --samples 9 --steps 20 --warmup 10 --precision bf16-mixed]
//! ```
//!
//! The same setup as the PyTorch measurement in the project's reference numbers: a pool of 16 random
//! batches with random labels, cycled; each mode starts from the same initialization.

mod common;

use amp::prelude::*;
use amp::train::{Adam, AdamConfig, Precision, PrecisionError, Trainer};
use clap::Parser;
use common::mlp::Mlp;
use common::stats::{median, megabytes, peak_rss_bytes, reset_peak_rss};
use std::process::ExitCode;
use std::time::Instant;

/// Measure training steps per second of a 784-1024-1024-10 MLP in each precision mode.
#[derive(Parser)]
struct Args {
    /// Timed samples per mode.
    #[arg(long, default_value_t = 9)]
    samples: usize,
    /// Steps per timed sample.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps before the samples.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Precision modes to measure (repeatable); all five by default.
    #[arg(long)]
    precision: Vec<Precision>,
}

const WIDTHS: [usize; 4] = [784, 1024, 1024, 10];
const BATCH: usize = 256;
/// Floating-point operations of the three GEMMs per layer (forward, input and weight gradients).
const GEMM_FLOPS_PER_STEP: f64 =
    6.0 * BATCH as f64 * (784.0 * 1024.0 + 1024.0 * 1024.0 + 1024.0 * 10.0);

/// One mode's measurement.
struct Measured {
    steps_per_second: f64,
    samples: Vec<f64>,
    peak_rss: Option<u64>,
    final_loss: f32,
    skipped: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.samples == 0 || args.steps == 0 {
        eprintln!("mlp_bench: --samples and --steps must be at least 1");
        return ExitCode::FAILURE;
    }
    let modes = if args.precision.is_empty() {
        vec![
            Precision::F32True,
            Precision::Bf16Mixed,
            Precision::F16Mixed,
            Precision::Bf16True,
            Precision::F16True,
        ]
    } else {
        args.precision.clone()
    };
    println!(
        "MLP 784-1024-1024-10 (GELU), batch {BATCH}, Adam lr 1e-3, {} threads; {} samples of {} steps after {} warm-up steps",
        rayon::current_num_threads(),
        args.samples,
        args.steps,
        args.warmup
    );
    println!(
        "{:<11} {:>9} {:>17} {:>16} {:>12} {:>10} {:>8}",
        "mode",
        "steps/s",
        "samples (min-max)",
        "GEMM GFLOP/s eq",
        "peak memory",
        "last loss",
        "skipped"
    );
    let mut baseline = None;
    for precision in modes {
        let m = match measure(precision, &args) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("mlp_bench: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (lo, hi) = m
            .samples
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let speedup = baseline.map_or(String::new(), |b: f64| {
            format!("  {:.2}x 32-true", m.steps_per_second / b)
        });
        if precision == Precision::F32True {
            baseline = Some(m.steps_per_second);
        }
        println!(
            "{:<11} {:>9.1} {:>8.1} - {:<6.1} {:>16.0} {:>12} {:>10.4} {:>8}{speedup}",
            precision.name(),
            m.steps_per_second,
            lo,
            hi,
            GEMM_FLOPS_PER_STEP * m.steps_per_second / 1e9,
            megabytes(m.peak_rss),
            m.final_loss,
            m.skipped
        );
    }
    ExitCode::SUCCESS
}

fn measure(precision: Precision, args: &Args) -> Result<Measured, PrecisionError> {
    amp::dispatch!(precision, P => measure_under::<P>(precision, args))?
}

fn measure_under<P: Policy>(precision: Precision, args: &Args) -> Result<Measured, PrecisionError> {
    // The buffers the previous mode left in the pool would count towards this mode's peak.
    amp::empty_cache();
    reset_peak_rss();
    let mut rng = Rng::new(0);
    let model = Mlp::<P>::new(&WIDTHS, &mut rng);
    let mut trainer = Trainer::new(precision, Adam::new(model.params(), AdamConfig::adam(1e-3)))?;
    let pool: Vec<(Tensor<f32>, Tensor<i64>)> = (0..16)
        .map(|_| {
            let x = Tensor::<f32>::randn([BATCH, 784], &mut rng);
            let labels = (0..BATCH)
                .map(|_| (rng.uniform() * 10.0) as i64 % 10)
                .collect();
            (x, Tensor::from_vec(labels, [BATCH]))
        })
        .collect();
    let mut next = 0;
    let mut step = |trainer: &mut Trainer<Adam>| {
        let (x, y) = &pool[next % pool.len()];
        next += 1;
        trainer.step(|_| model.loss(x, y)).loss
    };
    for _ in 0..args.warmup {
        step(&mut trainer);
    }
    let mut samples = Vec::with_capacity(args.samples);
    let mut final_loss = f32::NAN;
    for _ in 0..args.samples {
        let start = Instant::now();
        for _ in 0..args.steps {
            final_loss = step(&mut trainer);
        }
        samples.push(args.steps as f64 / start.elapsed().as_secs_f64());
    }
    Ok(Measured {
        steps_per_second: median(&mut samples.clone()),
        samples,
        peak_rss: peak_rss_bytes(),
        final_loss,
        skipped: trainer.skipped_steps(),
    })
}
