//! Trains a small MLP on real handwritten digits (8×8 images, 10 classes) end to end, once in f32 and once
//! in bf16 mixed precision, and prints one row per run.
//!
//! ```text
//! cargo run --release --example digits [-- --epochs 50 --lr 0.1 --seed 0]
//! ```
//!
//! The mixed-precision forward pass is written with explicit casts here; the `#[autocast(bf16)]` attribute
//! will write it from the f32 version. Optimization is plain SGD on f32 master weights.

mod common;

use common::digits::load_digits;
use common::mlp::{Mode, train};
use std::error::Error;

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
    for (name, mode) in [
        ("32-true", Mode::F32),
        ("bf16-mixed (by hand)", Mode::Bf16Mixed),
    ] {
        let run = train(mode, &data, epochs, lr, seed);
        println!(
            "{name:<22} {:>11.3} {:>11.3} {:>13.1}% {:>8.2}s",
            run.first_loss, run.final_loss, run.accuracy, run.seconds
        );
    }
    Ok(())
}
