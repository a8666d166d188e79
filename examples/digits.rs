//! Trains a small MLP on real handwritten digits (8×8 images, 10 classes) end to end under each autocast
//! policy, and prints one row per run.
//!
//! ```text
//! cargo run --release --example digits [-- --epochs 50 --lr 0.1 --seed 0]
//! ```
//!
//! The model is written once with `#[autocast(P)]`. Optimization is plain SGD on f32 master weights (the
//! f16 run has no loss scaler yet; this model's gradients do not underflow f16).

mod common;

use amp::policy::{Bf16, F16, F32};
use common::digits::{Digits, load_digits};
use common::mlp::{Run, train};
use std::error::Error;

/// Trains and evaluates under one policy.
type Trainer = fn(&Digits, usize, f32, u64) -> Run;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a value of the right type")),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let epochs = arg(&args, "--epochs", 50usize)?;
    let lr = arg(&args, "--lr", 0.1f32)?;
    let seed = arg(&args, "--seed", 0u64)?;
    let data = load_digits(common::digits::DEFAULT_PATH)?;
    println!(
        "digits: {} training and {} test images, MLP 64-128-10 (GELU), SGD lr {lr}, batch 64, {epochs} epochs",
        data.train_y.len(),
        data.test_y.numel()
    );
    println!(
        "chance level: loss ln 10 = {:.3}, accuracy 10%\n",
        10f32.ln()
    );
    println!(
        "{:<22} {:>11} {:>11} {:>14} {:>9}",
        "precision", "first loss", "final loss", "test accuracy", "time"
    );
    let runs: [(&str, Trainer); 3] = [
        ("f32", train::<F32>),
        ("bf16 autocast", train::<Bf16>),
        ("f16 autocast", train::<F16>),
    ];
    for (name, run) in runs {
        let run = run(&data, epochs, lr, seed);
        println!(
            "{name:<22} {:>11.3} {:>11.3} {:>13.1}% {:>8.2}s",
            run.first_loss, run.final_loss, run.accuracy, run.seconds
        );
    }
    Ok(())
}
