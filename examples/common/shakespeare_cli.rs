//! The command line of the `shakespeare` example (here, so that its test parses the same options).

use super::gpt::GptConfig;
use super::gpt_train::{OptimizerOptions, Sampling, TrainSettings};
use super::optimizers::{OptimizerKind, parse_rounding};
use amp::Device;
use amp::train::Precision;
use clap::Parser;
use std::path::PathBuf;

/// Trains a character-level GPT on Shakespeare, written once with `#[autocast(P)]`, in any precision mode.
#[derive(Parser, Clone, Debug)]
#[command(name = "shakespeare")]
pub struct Args {
    /// Precision mode: 32-true, bf16-mixed, 16-mixed, bf16-true or 16-true (Lightning's names and aliases)
    #[arg(long, default_value = "bf16-mixed")]
    pub precision: Precision,
    /// Train 32-true, bf16-mixed and 16-mixed one after another and compare them
    #[arg(long, conflicts_with_all = ["precision", "resume", "checkpoint"])]
    pub compare: bool,
    /// Train until this step
    #[arg(long, default_value_t = 700)]
    pub steps: u64,
    /// Stop at this step (saving the checkpoint, if asked) as if interrupted; resume later with --resume
    #[arg(long, value_name = "STEP")]
    pub stop_after: Option<u64>,
    /// Evaluate on the validation batches (and save the checkpoint) every this many steps
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    /// Validation batches per evaluation (fixed windows spread over the last 10% of the text)
    #[arg(long, default_value_t = 4)]
    pub eval_batches: usize,
    /// Seeds the initialization, the batches and the sampling
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save a checkpoint here at every evaluation
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Continue training from this checkpoint
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,
    /// Generate this many characters at the end
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Sampling temperature (0: always the most likely character)
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// The text the sample continues
    #[arg(long, default_value = "\n")]
    pub prompt: String,
    /// Where to write the loss curves (SVG)
    #[arg(
        long,
        value_name = "PATH",
        default_value = "target/shakespeare-loss.svg"
    )]
    pub plot: PathBuf,
    /// The text to train on
    #[arg(long, value_name = "PATH", default_value = super::text::SHAKESPEARE_PATH)]
    pub data: PathBuf,
    /// Transformer blocks
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Attention heads per block
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Width of the residual stream
    #[arg(long, default_value_t = 128)]
    pub width: usize,
    /// Characters of context
    #[arg(long, default_value_t = 128)]
    pub context: usize,
    /// Windows per batch
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// AdamW's peak learning rate
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// AdamW's decoupled weight decay
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Steps of learning-rate warmup (then a cosine decay to a tenth at the last step)
    #[arg(long, default_value_t = 20)]
    pub warmup: u64,
    /// The optimizer: adamw, or adamw8bit for 8-bit states (adam and adam8bit take the decay as L2)
    #[arg(long, default_value = "adamw")]
    pub optimizer: OptimizerKind,
    /// How bf16-true and 16-true round weight updates: nearest, stochastic (bf16-true only) or kahan
    #[arg(long, default_value = "nearest")]
    pub rounding: String,
    /// Where to train: cpu, cuda or cuda:N (CUDA needs the `cuda` feature)
    #[arg(long, default_value = "cpu")]
    pub device: Device,
}

impl Args {
    /// The modes to train: the three of `--compare`, or `--precision`.
    pub fn precisions(&self) -> Vec<Precision> {
        if self.compare {
            vec![
                Precision::F32True,
                Precision::Bf16Mixed,
                Precision::F16Mixed,
            ]
        } else {
            vec![self.precision]
        }
    }

    /// The model's sizes for a text of `vocab_size` characters.
    pub fn model(&self, vocab_size: usize) -> GptConfig {
        GptConfig {
            vocab_size,
            context: self.context,
            width: self.width,
            layers: self.layers,
            heads: self.heads,
        }
    }

    /// The optimizer and update rounding (`--rounding stochastic` is seeded with `--seed`).
    pub fn optimizer(&self) -> Result<OptimizerOptions, String> {
        Ok(OptimizerOptions {
            optimizer: self.optimizer,
            rounding: parse_rounding(&self.rounding, self.seed)?,
        })
    }

    /// The training settings.
    pub fn settings(&self) -> TrainSettings {
        TrainSettings {
            batch: self.batch,
            steps: self.steps,
            stop_after: self.stop_after,
            lr: self.lr,
            weight_decay: self.weight_decay,
            warmup: self.warmup,
            clip_norm: 1.0,
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            seed: self.seed,
            checkpoint: self.checkpoint.clone(),
            resume: self.resume.clone(),
            device: self.device,
            sample: self.sample.map(|chars| Sampling {
                prompt: self.prompt.clone(),
                chars,
                temperature: self.temperature,
            }),
            progress: true,
            quiet: false,
        }
    }
}
