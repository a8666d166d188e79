//! Trains an MLP on real handwritten digits (8×8 images, 10 classes) in every precision mode and prints
//! one table: test accuracy, training time, peak memory and skipped steps per mode.
//!
//! ```text
//! cargo run --release --example digits [-- --epochs 40 --lr 1e-3 --seed 0 --precision bf16-mixed]
//! cargo run --release --example digits -- --optimizer adam8bit   # 8-bit optimizer states
//! ```
//!
//! The model (64-256-256-10, GELU) is written once with `#[autocast(P)]` (`examples/common/mlp.rs`);
//! rows whose index % 4 == 3 are the test set, pixels are divided by 16; Adam, batch 64.

mod common;

use amp::Device;
use amp::train::Precision;
use clap::Parser;
use common::digits::load_digits;
use common::mlp::{Config, Options, train_with};
use common::optimizers::{OptimizerKind, check_hyperparameters};
use common::stats::megabytes;
use std::error::Error;
use std::process::ExitCode;

/// Train the digits MLP in every precision mode (or the ones given) and compare them.
#[derive(Parser)]
struct Args {
    /// Passes over the training set.
    #[arg(long, default_value_t = 40)]
    epochs: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed of the initialization and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Precision modes to train (repeatable); all five by default.
    #[arg(long)]
    precision: Vec<Precision>,
    /// The optimizer: adam, adamw, adam8bit or adamw8bit.
    #[arg(long, default_value = "adam")]
    optimizer: OptimizerKind,
    /// Weight decay (L2 for adam and adam8bit, decoupled for the AdamW kinds).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// The data file.
    #[arg(long, default_value = common::digits::DEFAULT_PATH)]
    data: String,
    /// Where to train: cpu, cuda or cuda:N (CUDA needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: Device,
}

/// The modes a run compares by default.
const MODES: [Precision; 5] = [
    Precision::F32True,
    Precision::Bf16Mixed,
    Precision::F16Mixed,
    Precision::Bf16True,
    Precision::F16True,
];

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("digits: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    check_hyperparameters(&[("--lr", args.lr)], args.weight_decay)?;
    if args.epochs == 0 {
        return Err("--epochs must be positive".into());
    }
    let device = match args.device {
        Device::Cuda(n) => Device::cuda(n)?,
        cpu => cpu,
    };
    let data = load_digits(&args.data)?;
    let widths = [64, 256, 256, 10];
    let config = Config {
        epochs: args.epochs,
        batch: 64,
        lr: args.lr,
        seed: args.seed,
    };
    println!(
        "digits: {} training and {} test images, MLP 64-256-256-10 (GELU), {} lr {}, batch {}, {} epochs",
        data.train_y.len(),
        data.test_y.numel(),
        args.optimizer,
        config.lr,
        config.batch,
        config.epochs
    );
    println!(
        "chance level: loss ln 10 = {:.3}, accuracy 10%\n",
        10f32.ln()
    );
    println!(
        "{:<11} {:>10} {:>11} {:>14} {:>11} {:>12} {:>8} {:>12}",
        "mode",
        "first loss",
        "final loss",
        "test accuracy",
        "train time",
        "peak memory",
        "skipped",
        "state B/param"
    );
    let options = Options {
        optimizer: args.optimizer,
        weight_decay: args.weight_decay,
        device,
        ..Options::default()
    };
    let modes = if args.precision.is_empty() {
        MODES.to_vec()
    } else {
        args.precision
    };
    for precision in modes {
        let run = train_with(&data, &widths, precision, config, options)?;
        println!(
            "{:<11} {:>10.3} {:>11.4} {:>13.1}% {:>10.2}s {:>12} {:>8} {:>13.2}",
            precision.name(),
            run.first_loss,
            run.final_loss,
            run.accuracy,
            run.seconds,
            megabytes(run.peak_rss),
            run.skipped_steps,
            run.memory.state_bytes_per_param()
        );
    }
    Ok(())
}
