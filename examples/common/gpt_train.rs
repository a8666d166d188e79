//! Training a [`Gpt`] on a character [`Corpus`] in one precision mode: AdamW (f32 or 8-bit states, see
//! [`train_with`]) through amp's `Trainer`
//! (loss scaling in `"16-mixed"`, gradient clipping), random training batches, a validation loss on fixed
//! batches every few steps, checkpoints that resume bit-identically, a progress bar, and a text sample at
//! the end.

use super::gpt::{Gpt, GptConfig};
use super::optimizers::OptimizerKind;
use super::text::{Batch, Corpus, fixed_batches, random_batch};
use amp::prelude::*;
use amp::train::{
    Checkpoint, Clip, MemoryReport, Optimizer, Precision, Schedule, Trainer, UpdateRounding,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How to train (everything but the model's sizes).
#[derive(Clone, Debug)]
pub struct TrainSettings {
    /// Windows per batch.
    pub batch: usize,
    /// Train until this step (a resumed run counts the steps before the checkpoint); the learning-rate
    /// schedule spans these steps.
    pub steps: u64,
    /// End the run early at this step, as an interruption would (to be resumed later).
    pub stop_after: Option<u64>,
    /// AdamW's peak learning rate.
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Steps of linear warmup; the rate then decays along a cosine to a tenth at `steps`.
    pub warmup: u64,
    /// The largest joint gradient norm (larger gradients are scaled down).
    pub clip_norm: f64,
    /// Evaluate (and save a checkpoint, if asked) every this many steps, and after the last.
    pub eval_every: u64,
    /// Validation batches per evaluation (fixed windows spread over the validation text).
    pub eval_batches: usize,
    /// Seeds the initialization and then the batches.
    pub seed: u64,
    /// Save a checkpoint here at every evaluation.
    pub checkpoint: Option<PathBuf>,
    /// Continue from this checkpoint.
    pub resume: Option<PathBuf>,
    /// Generate text at the end.
    pub sample: Option<Sampling>,
    /// Draw a progress bar (on a terminal); evaluations are printed either way unless `quiet`.
    pub progress: bool,
    /// Print nothing.
    pub quiet: bool,
    /// Where the model, the batches and the computation live (checked by the caller).
    pub device: Device,
}

/// What to generate after training.
#[derive(Clone, Debug)]
pub struct Sampling {
    /// The text the model continues (every character must be in the vocabulary).
    pub prompt: String,
    /// Characters to generate.
    pub chars: usize,
    /// 0 for the most likely character each time; otherwise the softmax temperature.
    pub temperature: f64,
}

/// A training run's results.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The mode it ran in.
    pub precision: Precision,
    /// The step it started from (0, or the checkpoint's step).
    pub first_step: u64,
    /// The step it ended at.
    pub last_step: u64,
    /// The training loss of every step (including those before a resume, from the checkpoint).
    pub train_curve: Vec<(u64, f32)>,
    /// The validation loss at every evaluation (the first at step 0, before training).
    pub valid_curve: Vec<(u64, f32)>,
    /// The mean training loss of the last `eval_every` steps.
    pub final_train: f32,
    /// The last validation loss.
    pub final_valid: f32,
    /// Training tokens per second of training-step time (evaluations and saving excluded); `None` when
    /// no step ran.
    pub tokens_per_second: Option<f64>,
    /// The whole run, evaluations, checkpoints and sampling included.
    pub wall: Duration,
    /// Steps skipped because a gradient was not finite (including those before a resume).
    pub skipped: u64,
    /// The loss scale at the end, when the mode scales the loss.
    pub loss_scale: Option<f32>,
    /// The generated text, when asked for.
    pub sample: Option<String>,
    /// Bytes of weights and optimizer state at the end.
    pub memory: MemoryReport,
}

/// The optimizer and the update rounding of a run.
#[derive(Clone, Copy, Debug)]
pub struct OptimizerOptions {
    /// AdamW by default; AdamW8bit for 8-bit states (its checkpoints hold them in 8 bits).
    pub optimizer: OptimizerKind,
    /// How `"bf16-true"`/`"16-true"` round weight updates (ignored in the modes with f32 weights).
    pub rounding: UpdateRounding,
}

impl Default for OptimizerOptions {
    fn default() -> Self {
        OptimizerOptions {
            optimizer: OptimizerKind::AdamW,
            rounding: UpdateRounding::Nearest,
        }
    }
}

/// Trains a fresh (or resumed) model of `config` on `corpus` in `precision`. Errors are one-line messages:
/// those of [`check`], an unreadable checkpoint, or one from a different model or mode.
pub fn train(
    precision: Precision,
    corpus: &Corpus,
    config: GptConfig,
    settings: &TrainSettings,
) -> Result<RunSummary, String> {
    train_with(
        precision,
        corpus,
        config,
        settings,
        OptimizerOptions::default(),
    )
}

/// [`train`] with another optimizer or update rounding.
pub fn train_with(
    precision: Precision,
    corpus: &Corpus,
    config: GptConfig,
    settings: &TrainSettings,
    options: OptimizerOptions,
) -> Result<RunSummary, String> {
    check(precision, corpus, config, settings)?;
    check_options(precision, options)?;
    amp::dispatch!(precision, P => train_under::<P>(precision, corpus, config, settings, options))
        .map_err(|e| e.to_string())?
}

/// Ok if a run can start: a supported precision, valid sizes, a context shorter than both texts, and a
/// prompt made of the text's characters. ([`train`] checks this first; call it to fail before any
/// output.)
pub fn check(
    precision: Precision,
    corpus: &Corpus,
    config: GptConfig,
    settings: &TrainSettings,
) -> Result<(), String> {
    precision.check_supported().map_err(|e| e.to_string())?;
    config.check()?;
    if settings.batch == 0 || settings.eval_every == 0 || settings.eval_batches == 0 {
        return Err("--batch, --eval-every and --eval-batches must be positive".into());
    }
    if settings.steps == 0 || settings.stop_after == Some(0) {
        return Err("--steps and --stop-after must be positive".into());
    }
    super::optimizers::check_hyperparameters(&[("--lr", settings.lr)], settings.weight_decay)?;
    if corpus.train.len() <= config.context || corpus.valid.len() <= config.context {
        return Err(format!(
            "the context ({}) must be shorter than the training ({}) and validation ({}) texts",
            config.context,
            corpus.train.len(),
            corpus.valid.len()
        ));
    }
    if let Some(sampling) = &settings.sample {
        prompt_ids(corpus, sampling)?;
    }
    Ok(())
}

/// Ok if the update rounding fits the mode: stochastic rounding is for bf16 weights (`bf16-true`), Kahan
/// compensation for half-precision weights (`bf16-true`, `16-true`); in the modes with f32 weights
/// they would do nothing, which is refused rather than ignored.
pub fn check_options(precision: Precision, options: OptimizerOptions) -> Result<(), String> {
    let fits = match options.rounding {
        UpdateRounding::Nearest => true,
        UpdateRounding::Stochastic { .. } => precision == Precision::Bf16True,
        UpdateRounding::Kahan => precision.param_storage() != DType::F32,
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "--rounding {} does not apply to {precision}: stochastic rounding needs bf16-true, Kahan \
             compensation bf16-true or 16-true",
            super::optimizers::rounding_name(options.rounding)
        ))
    }
}

/// What a checkpoint adds to the model, optimizer, scaler and generator state (as metadata).
mod keys {
    pub const STEP: &str = "step";
    pub const SKIPPED: &str = "skipped";
    pub const PRECISION: &str = "precision";
    pub const MODEL: &str = "model";
    /// The characters of the vocabulary in id order: a text with other characters needs another model.
    pub const VOCAB: &str = "vocab";
    pub const TRAIN_CURVE: &str = "train_curve";
    pub const VALID_CURVE: &str = "valid_curve";
    /// The generator that draws the batches.
    pub const DATA_RNG: &str = "data";
    /// The options that shape the rest of the run (schedule, batches, evaluation): a resumed run must
    /// use the same ones to continue as the uninterrupted run would have.
    pub const SETTINGS: &str = "settings";
}

fn train_under<P: Policy>(
    precision: Precision,
    corpus: &Corpus,
    config: GptConfig,
    settings: &TrainSettings,
    options: OptimizerOptions,
) -> Result<RunSummary, String> {
    let start = Instant::now();
    // One generator initializes the model and then draws the batches; checkpoints save its state.
    let mut rng = Rng::new(settings.seed);
    let model = Gpt::<P>::new(config, &mut rng);
    let schedule = Schedule::WarmupCosine {
        warmup_steps: settings.warmup,
        total_steps: settings.steps,
        min_factor: 0.1,
    };
    let optimizer =
        options
            .optimizer
            .build(model.params(), settings.lr, settings.weight_decay, schedule);
    let mut trainer = Trainer::new(precision, optimizer)
        .map_err(|e| e.to_string())?
        .clip(Clip::Norm(settings.clip_norm));
    if options.rounding != UpdateRounding::Nearest {
        trainer = trainer.update_rounding(options.rounding);
    }
    let mut run = RunState {
        step: 0,
        skipped_before: 0,
        train_curve: Vec::new(),
        valid_curve: Vec::new(),
    };
    if let Some(path) = &settings.resume {
        run = resume(
            path,
            precision,
            corpus,
            &run_options(settings, options),
            &model,
            &mut trainer,
            &mut rng,
        )?;
        if run.step >= settings.steps {
            return Err(format!(
                "cannot resume from {}: it is at step {}, and this run ends at --steps {}",
                path.display(),
                run.step,
                settings.steps
            ));
        }
    }
    let first_step = run.step;
    // After a resume, which loads the weights on the host.
    model
        .to_device(settings.device)
        .map_err(|e| e.to_string())?;
    let valid: Vec<Batch> = fixed_batches(
        &corpus.valid,
        settings.eval_batches,
        settings.batch,
        config.context,
    )
    .iter()
    .map(|b| b.to_device(settings.device))
    .collect::<Result<_, _>>()?;
    if run.step == 0 {
        // Where the loss starts (about ln(vocab) for a fresh model): the first point of the curve.
        run.valid_curve.push((0, evaluate(&model, &valid)));
    }
    let bar = progress_bar(precision, settings, first_step);
    let say = |line: String| {
        if !settings.quiet {
            bar.suspend(|| println!("{line}"));
        }
    };
    let tokens_per_step = (settings.batch * config.context) as f64;
    let last_step = settings
        .stop_after
        .map_or(settings.steps, |s| s.min(settings.steps));
    let mut step_time = Duration::ZERO;
    let mut last_valid = run.valid_curve.last().map_or(f32::NAN, |v| v.1);
    while run.step < last_step {
        let batch = random_batch(&corpus.train, settings.batch, config.context, &mut rng)
            .to_device(settings.device)?;
        let began = Instant::now();
        let report = trainer.step(|_| model.loss(&batch.inputs, &batch.targets));
        step_time += began.elapsed();
        run.step += 1;
        run.train_curve.push((run.step, report.loss));
        let skipped = run.skipped_before + trainer.skipped_steps();
        let rate = (run.step - first_step) as f64 * tokens_per_step / step_time.as_secs_f64();
        let scale = trainer
            .scaler
            .is_enabled()
            .then(|| trainer.scaler.scale_factor());
        bar.set_position(run.step);
        bar.set_message(status(Some(report.loss), rate, scale, skipped));
        // Evaluations at the evaluation steps and at the end; a run stopped early (`--stop-after`)
        // also evaluates and saves where it stops, but leaves that point out of the curve, so a resumed
        // run's curve is the uninterrupted run's.
        let scheduled = run.step.is_multiple_of(settings.eval_every) || run.step == settings.steps;
        if scheduled || run.step == last_step {
            let valid_loss = evaluate(&model, &valid);
            if scheduled {
                run.valid_curve.push((run.step, valid_loss));
            }
            last_valid = valid_loss;
            let window = settings.eval_every.min(run.step);
            say(format!(
                "{:>10} step {:>5}: validation {valid_loss:.3}, train {:.3} (last {window} steps), {}",
                precision.name(),
                run.step,
                recent_mean(&run.train_curve, window),
                status(None, rate, scale, skipped),
            ));
            if !valid_loss.is_finite() {
                say(format!(
                    "{:>10} step {:>5}: the validation loss is not finite; the last checkpoint is kept",
                    precision.name(),
                    run.step
                ));
            } else if let Some(path) = &settings.checkpoint {
                let state = Saved {
                    settings: run_options(settings, options),
                    run: &run,
                    skipped,
                    rng: &rng,
                    precision,
                };
                save(path, &model, &trainer, &state, corpus)?;
            }
        }
    }
    bar.finish_and_clear();
    let sample = match &settings.sample {
        None => None,
        Some(s) => Some(generate(&model, corpus, s, settings.seed)?),
    };
    let tokens = (run.step - first_step) as f64 * tokens_per_step;
    Ok(RunSummary {
        precision,
        first_step,
        last_step: run.step,
        final_train: recent_mean(&run.train_curve, settings.eval_every),
        final_valid: last_valid,
        train_curve: run.train_curve,
        valid_curve: run.valid_curve,
        tokens_per_second: (tokens > 0.0).then(|| tokens / step_time.as_secs_f64()),
        wall: start.elapsed(),
        skipped: run.skipped_before + trainer.skipped_steps(),
        loss_scale: trainer
            .scaler
            .is_enabled()
            .then(|| trainer.scaler.scale_factor()),
        sample,
        memory: trainer.memory_report(),
    })
}

/// Where a run stands: the step, the steps skipped before a resume, and the loss curves so far.
struct RunState {
    step: u64,
    skipped_before: u64,
    train_curve: Vec<(u64, f32)>,
    valid_curve: Vec<(u64, f32)>,
}

/// What a checkpoint holds besides the model and the trainer.
struct Saved<'a> {
    /// [`run_options`] of the run.
    settings: String,
    run: &'a RunState,
    /// Skipped steps in all (before and since a resume).
    skipped: u64,
    /// The batch generator.
    rng: &'a Rng,
    precision: Precision,
}

/// Saves everything [`resume`] needs to continue exactly where the run is.
fn save<P: Policy>(
    path: &Path,
    model: &Gpt<P>,
    trainer: &Trainer<Box<dyn Optimizer>>,
    state: &Saved<'_>,
    corpus: &Corpus,
) -> Result<(), String> {
    Checkpoint::new()
        .model(model)
        .optimizer(&trainer.optimizer)
        .scaler(&trainer.scaler)
        .rng(keys::DATA_RNG, state.rng)
        .metadata(keys::STEP, state.run.step)
        .metadata(keys::SKIPPED, state.skipped)
        .metadata(keys::PRECISION, state.precision)
        .metadata(keys::MODEL, model.config())
        .metadata(keys::VOCAB, corpus.vocab.chars())
        .metadata(keys::SETTINGS, &state.settings)
        .metadata(keys::TRAIN_CURVE, format_curve(&state.run.train_curve))
        .metadata(keys::VALID_CURVE, format_curve(&state.run.valid_curve))
        .save(path)
        .map_err(|e| format!("cannot save the checkpoint: {e}"))
}

/// Restores model, optimizer, scaler and batch generator from `path`, after checking that the checkpoint
/// comes from this model and mode; on an error nothing is changed.
fn resume<P: Policy>(
    path: &Path,
    precision: Precision,
    corpus: &Corpus,
    options: &str,
    model: &Gpt<P>,
    trainer: &mut Trainer<Box<dyn Optimizer>>,
    rng: &mut Rng,
) -> Result<RunState, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot resume from {}: {e}", path.display());
    let checkpoint = Checkpoint::load(path).map_err(|e| fail(&e))?;
    let meta = |key: &str| {
        checkpoint
            .metadata(key)
            .ok_or_else(|| fail(&format!("no `{key}` in its metadata")))
    };
    let saved_model = meta(keys::MODEL)?;
    if saved_model != model.config().to_string() {
        let this = model.config();
        return Err(fail(&format!(
            "it holds a different model ({saved_model}; this one is {this})"
        )));
    }
    if meta(keys::VOCAB)? != corpus.vocab.chars() {
        return Err(fail(&"it was trained on a text with other characters"));
    }
    let saved_precision = meta(keys::PRECISION)?;
    if saved_precision != precision.name() {
        return Err(fail(&format!(
            "it was trained in {saved_precision}; resume with --precision {saved_precision}"
        )));
    }
    let saved_options = meta(keys::SETTINGS)?;
    if saved_options != options {
        return Err(fail(&format!(
            "it was trained with {saved_options}; this run has {options}"
        )));
    }
    let number = |key: &str| {
        meta(key)?
            .parse::<u64>()
            .map_err(|e| fail(&format!("metadata `{key}`: {e}")))
    };
    let (step, skipped_before) = (number(keys::STEP)?, number(keys::SKIPPED)?);
    let train_curve =
        parse_curve(meta(keys::TRAIN_CURVE)?).ok_or_else(|| fail(&"bad train_curve"))?;
    let valid_curve =
        parse_curve(meta(keys::VALID_CURVE)?).ok_or_else(|| fail(&"bad valid_curve"))?;
    checkpoint
        .restore(
            model,
            Some(&mut trainer.optimizer),
            Some(&mut trainer.scaler),
            &mut [(keys::DATA_RNG, rng)],
        )
        .map_err(|e| fail(&e))?;
    Ok(RunState {
        step,
        skipped_before,
        train_curve,
        valid_curve,
    })
}

/// The options a resumed run must share with the run it continues (`--steps 700 --warmup 20 ...`): they
/// fix the learning-rate schedule, the batches, the validation windows and how updates are rounded.
fn run_options(settings: &TrainSettings, options: OptimizerOptions) -> String {
    format!(
        "--steps {} --warmup {} --lr {} --weight-decay {} --batch {} --eval-every {} --eval-batches {} \
         --optimizer {} --rounding {}",
        settings.steps,
        settings.warmup,
        settings.lr,
        settings.weight_decay,
        settings.batch,
        settings.eval_every,
        settings.eval_batches,
        options.optimizer,
        super::optimizers::rounding_name(options.rounding)
    )
}

/// The mean loss over `batches`, without recording gradients.
pub fn evaluate<P: Policy>(model: &Gpt<P>, batches: &[Batch]) -> f32 {
    let total: f64 = no_grad(|| {
        batches
            .iter()
            .map(|b| f64::from(model.loss(&b.inputs, &b.targets).item()))
            .sum()
    });
    (total / batches.len() as f64) as f32
}

/// The mean of the last `window` losses of `curve` (NaN when empty).
pub fn recent_mean(curve: &[(u64, f32)], window: u64) -> f32 {
    let recent = &curve[curve.len().saturating_sub(window as usize)..];
    let sum: f64 = recent.iter().map(|&(_, l)| f64::from(l)).sum();
    (sum / recent.len() as f64) as f32
}

fn generate<P: Policy>(
    model: &Gpt<P>,
    corpus: &Corpus,
    sampling: &Sampling,
    seed: u64,
) -> Result<String, String> {
    let prompt = prompt_ids(corpus, sampling)?;
    let mut rng = Rng::new(seed);
    let tokens = model.generate(&prompt, sampling.chars, sampling.temperature, &mut rng);
    Ok(corpus.vocab.decode(&tokens))
}

/// The ids of the prompt's characters; an error if it is empty or has a character the text does not.
fn prompt_ids(corpus: &Corpus, sampling: &Sampling) -> Result<Vec<u32>, String> {
    let prompt = corpus
        .vocab
        .encode(&sampling.prompt)
        .filter(|p| !p.is_empty());
    prompt.ok_or_else(|| {
        format!(
            "the prompt {:?} must be non-empty and use only characters of the text",
            sampling.prompt
        )
    })
}

fn progress_bar(precision: Precision, settings: &TrainSettings, position: u64) -> ProgressBar {
    if !settings.progress || settings.quiet {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{prefix:>10} {bar:24.cyan/blue} {pos:>5}/{len} [{elapsed}<{eta}] {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let bar = ProgressBar::new(settings.steps).with_style(style);
    bar.set_prefix(precision.name());
    bar.set_position(position);
    // After a resume, the estimate must not count the steps done before as done in no time.
    bar.reset_eta();
    bar
}

/// `loss 2.345 | 12.3k tok/s | scale 65536 | 0 skipped` (the loss and scale when given).
fn status(loss: Option<f32>, tokens_per_second: f64, scale: Option<f32>, skipped: u64) -> String {
    let loss = loss.map_or(String::new(), |l| format!("loss {l:.3} | "));
    let scale = scale.map_or(String::new(), |s| format!(" | scale {s}"));
    format!(
        "{loss}{:.1}k tok/s{scale} | {skipped} skipped",
        tokens_per_second / 1e3
    )
}

/// `1:4.35,2:4.21,...` (Rust's shortest round-trip form of each loss).
fn format_curve(curve: &[(u64, f32)]) -> String {
    let points: Vec<String> = curve.iter().map(|(s, l)| format!("{s}:{l}")).collect();
    points.join(",")
}

fn parse_curve(text: &str) -> Option<Vec<(u64, f32)>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|point| {
            let (step, loss) = point.split_once(':')?;
            Some((step.parse().ok()?, loss.parse().ok()?))
        })
        .collect()
}
