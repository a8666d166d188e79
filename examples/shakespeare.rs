//! Trains a character-level GPT on Shakespeare (`data/shakespeare.txt`), a model written once against f32
//! tensors with `#[autocast(P)]` (`examples/common/gpt.rs`), in any of Lightning's precision modes.
//!
//! ```text
//! cargo run --release --example shakespeare               # bf16-mixed, 700 steps: under 2 minutes on 2 cores
//! cargo run --release --example shakespeare -- --compare  # 32-true, bf16-mixed and 16-mixed in turn
//! cargo run --release --example shakespeare -- --precision 16-mixed --sample 400
//! cargo run --release --example shakespeare -- --optimizer adamw8bit       # 8-bit optimizer states
//! cargo run --release --example shakespeare -- --precision bf16-true --rounding stochastic
//! cargo run --release --example shakespeare -- --checkpoint run.safetensors   # stop it (Ctrl-C), then
//! cargo run --release --example shakespeare -- --resume run.safetensors --checkpoint run.safetensors
//! ```
//!
//! The first 90% of the text trains, the last 10% validates. It prints the validation loss every
//! `--eval-every` steps, a summary per mode (tokens/s, losses against the unigram baseline, peak memory,
//! skipped steps, time), and writes the loss curves to an SVG file (`--plot`).

mod common;

use amp::prelude::*;
use amp::train::Precision;
use clap::Parser;
use common::gpt::Gpt;
use common::gpt_train::{RunSummary, check, check_options, train_with};
use common::plot::{Chart, Reference, Series};
use common::shakespeare_cli::Args;
use common::stats::{megabytes, peak_rss_bytes, reset_peak_rss};
use common::text::{Corpus, unigram_entropy};
use std::fmt::{self, Debug, Display};
use std::path::Path;

/// The share of the text that trains; the rest validates.
const TRAIN_FRACTION: f64 = 0.9;

/// An error that ends the program: `main` returning it prints `Error: ` and the message, one line, and
/// exits with status 1.
struct Failure(String);

impl Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let context = args.context;
    let corpus = Corpus::load(&args.data, TRAIN_FRACTION, context + 1)?;
    let config = args.model(corpus.vocab.len());
    if let Device::Cuda(n) = args.device {
        Device::cuda(n)?;
    }
    let settings = args.settings();
    let options = args.optimizer()?;
    for precision in args.precisions() {
        check(precision, &corpus, config, &settings)?;
        check_options(precision, options)?;
    }
    // Output paths are checked before training, so a typo does not cost the run.
    writable(&args.plot)?;
    if let Some(path) = &args.checkpoint {
        writable_dir(path)?;
    }
    let baseline = unigram_entropy(&corpus.train);
    let params = Gpt::<F32>::new(config, &mut Rng::new(0)).num_params();
    println!(
        "{}: {} characters for training, {} for validation, {} distinct",
        args.data.display(),
        corpus.train.len(),
        corpus.valid.len(),
        corpus.vocab.len()
    );
    println!(
        "GPT {config}: {params} parameters; batch {} x {context} characters, {} steps, {} lr {} \
         ({} warmup steps, cosine decay to a tenth), weight decay {}, gradient norm clipped at 1",
        args.batch, args.steps, args.optimizer, args.lr, args.warmup, args.weight_decay
    );
    println!(
        "baseline: unigram entropy of the training text {baseline:.3} nats (a uniform guess: ln {} = {:.3})\n",
        corpus.vocab.len(),
        (corpus.vocab.len() as f64).ln()
    );
    let mut runs = Vec::new();
    for precision in args.precisions() {
        // Buffers pooled by the previous mode would count towards this one's peak.
        amp::empty_cache();
        reset_peak_rss();
        let run = train_with(precision, &corpus, config, &settings, options)?;
        let peak = peak_rss_bytes();
        if let Some(text) = &run.sample {
            println!("\n{precision} sample:\n{}{text}\n", args.prompt);
        }
        runs.push((run, peak));
    }
    print_summary(&runs, baseline);
    let chart = loss_chart(&runs, baseline, &config.to_string());
    std::fs::write(&args.plot, chart.to_svg())
        .map_err(|e| format!("cannot write {}: {e}", args.plot.display()))?;
    println!("loss curves: {}", args.plot.display());
    Ok(())
}

fn print_summary(runs: &[(RunSummary, Option<u64>)], baseline: f64) {
    println!(
        "\n{:<11} {:>7} {:>9} {:>11} {:>11} {:>9} {:>8} {:>7} {:>8} {:>14}",
        "precision",
        "steps",
        "tokens/s",
        "train loss",
        "valid loss",
        "peak RSS",
        "skipped",
        "scale",
        "time",
        "state B/param"
    );
    for (run, peak) in runs {
        let dash = || "-".to_string();
        let rate = run
            .tokens_per_second
            .map_or_else(dash, |r| format!("{r:.0}"));
        let scale = run.loss_scale.map_or_else(dash, |s| s.to_string());
        println!(
            "{:<11} {:>7} {rate:>9} {:>11.4} {:>11.4} {:>9} {:>8} {scale:>7} {:>7.1}s {:>14.2}",
            run.precision.name(),
            format!("{}-{}", run.first_step, run.last_step),
            run.final_train,
            run.final_valid,
            megabytes(*peak),
            run.skipped,
            run.wall.as_secs_f64(),
            run.memory.state_bytes_per_param()
        );
    }
    println!(
        "train loss: the mean of the last evaluation interval; unigram baseline: {baseline:.4} nats"
    );
    for (run, _) in runs {
        let below = baseline - f64::from(run.final_valid);
        println!(
            "{}: validation loss {:.3} is {:.2} nats per character {} the unigram baseline, after {:.0} s",
            run.precision.name(),
            run.final_valid,
            below.abs(),
            if below >= 0.0 { "below" } else { "above" },
            run.wall.as_secs_f64()
        );
    }
}

/// Creates the parent folder of `path` if needed and checks that `path` can be written (it is created
/// empty now and written at the end).
fn writable(path: &Path) -> Result<(), String> {
    writable_dir(path)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Creates the parent folder of `path` if needed (checkpoints are written next to their final path
/// first, then renamed).
fn writable_dir(path: &Path) -> Result<(), String> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the folder {}: {e}", dir.display())),
        None => Ok(()),
    }
}

/// The color of a mode's lines.
fn color(precision: Precision) -> &'static str {
    match precision {
        Precision::F32True | Precision::F64True => "#1f77b4",
        Precision::Bf16Mixed => "#ff7f0e",
        Precision::F16Mixed => "#2ca02c",
        Precision::Bf16True => "#d62728",
        Precision::F16True => "#9467bd",
    }
}

/// Training loss (a 10-step running mean: single batches are noisy) and validation loss of every run.
fn loss_chart(runs: &[(RunSummary, Option<u64>)], baseline: f64, model: &str) -> Chart {
    let mut series = Vec::new();
    for (i, (run, _)) in runs.iter().enumerate() {
        // Modes that agree draw over each other: earlier runs are drawn wider, so each stays visible.
        let width = 1.5 + 1.5 * (runs.len() - 1 - i) as f64;
        let losses: Vec<f64> = run.train_curve.iter().map(|p| f64::from(p.1)).collect();
        let smoothed = run.train_curve.iter().enumerate().map(|(i, &(step, _))| {
            let window = &losses[i.saturating_sub(9)..=i];
            (
                step as f64,
                window.iter().sum::<f64>() / window.len() as f64,
            )
        });
        series.push(Series {
            label: format!("{} train", run.precision),
            color: color(run.precision).into(),
            width,
            dashed: false,
            markers: false,
            points: smoothed.collect(),
        });
        series.push(Series {
            label: format!("{} validation", run.precision),
            color: color(run.precision).into(),
            width,
            dashed: true,
            markers: true,
            points: run
                .valid_curve
                .iter()
                .map(|&(s, l)| (s as f64, f64::from(l)))
                .collect(),
        });
    }
    Chart {
        title: format!("Character-level GPT on Shakespeare ({model})"),
        x_label: "step".into(),
        y_label: "cross-entropy (nats per character)".into(),
        series,
        references: vec![Reference {
            label: format!("unigram baseline {baseline:.3}"),
            y: baseline,
        }],
    }
}
