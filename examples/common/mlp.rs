//! The multilayer perceptron of the digits example and the MLP benchmark: written once against f32 tensors
//! with `#[autocast(P)]`, trained in any precision mode by a [`Trainer`] with Adam (or another optimizer
//! of [`OptimizerKind`], and an [`UpdateRounding`] for `"bf16-true"`).

use super::digits::Digits;
use super::optimizers::OptimizerKind;
use super::stats;
use amp::nn::Linear;
use amp::prelude::*;
use amp::train::{MemoryReport, Precision, PrecisionError, Schedule, Trainer, UpdateRounding};
use std::marker::PhantomData;
use std::time::Instant;

/// Linear layers with GELU between them; `P` picks the precision of the forward pass.
#[derive(Module)]
pub struct Mlp<P: Policy> {
    layers: Vec<Linear>,
    _policy: PhantomData<P>,
}

#[autocast(P)]
impl<P: Policy> Mlp<P> {
    /// Layers of the given widths (`[64, 256, 256, 10]`: three layers), PyTorch's initialization.
    pub fn new(widths: &[usize], rng: &mut Rng) -> Self {
        let layers = widths
            .windows(2)
            .map(|w| Linear::new(w[0], w[1], true, rng))
            .collect();
        Mlp {
            layers,
            _policy: PhantomData,
        }
    }

    /// Logits for a batch of inputs. Each `forward` of a layer runs in `P`'s low-precision type (on cached
    /// casts of its f32 weights); GELU stays in that type; the logits are returned as f32.
    pub fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let (first, rest) = self.layers.split_first().expect("at least one layer");
        let mut h = first.forward(x);
        for layer in rest {
            h = layer.forward(&h.gelu());
        }
        h
    }

    /// Mean cross-entropy of the logits against the labels (in f32).
    pub fn loss(&self, x: &Tensor<f32>, y: &Tensor<i64>) -> Tensor<f32> {
        self.forward(x).cross_entropy(y)
    }
}

/// Training settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

/// The optimizer, the update rounding and the device (Adam, round-to-nearest and the CPU by default).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub optimizer: OptimizerKind,
    /// L2 (Adam) or decoupled (AdamW) weight decay.
    pub weight_decay: f64,
    /// How `-true` modes round weight updates (ignored by the modes with f32 weights).
    pub rounding: UpdateRounding,
    /// Where the model, the data and the computation live.
    pub device: Device,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            optimizer: OptimizerKind::Adam,
            weight_decay: 0.0,
            rounding: UpdateRounding::Nearest,
            device: Device::Cpu,
        }
    }
}

/// What one training run reached.
pub struct Run {
    /// Loss of the first batch.
    pub first_loss: f32,
    /// Mean training loss over the last epoch.
    pub final_loss: f32,
    /// Test accuracy in percent.
    pub accuracy: f64,
    /// Training time.
    pub seconds: f64,
    /// Peak resident memory of the process during the run.
    pub peak_rss: Option<u64>,
    /// Optimizer steps skipped because a gradient was not finite (f16 loss scaling).
    pub skipped_steps: u64,
    /// Bytes of weights and optimizer state at the end.
    pub memory: MemoryReport,
}

/// Trains a fresh `widths` MLP on the digits in `precision` (Adam, shuffled batches) and evaluates it on
/// the test set.
pub fn train(
    data: &Digits,
    widths: &[usize],
    precision: Precision,
    config: Config,
) -> Result<Run, PrecisionError> {
    train_with(data, widths, precision, config, Options::default())
}

/// [`train`] with another optimizer or update rounding.
pub fn train_with(
    data: &Digits,
    widths: &[usize],
    precision: Precision,
    config: Config,
    options: Options,
) -> Result<Run, PrecisionError> {
    amp::dispatch!(precision, P => train_under::<P>(data, widths, precision, config, options))?
}

fn train_under<P: Policy>(
    data: &Digits,
    widths: &[usize],
    precision: Precision,
    config: Config,
    options: Options,
) -> Result<Run, PrecisionError> {
    // Buffers pooled by an earlier run would count towards this one's peak.
    amp::empty_cache();
    stats::reset_peak_rss();
    let mut rng = Rng::new(config.seed);
    let model = Mlp::<P>::new(widths, &mut rng);
    let device = options.device;
    // Checked by the caller (`Device::cuda`), so a failure here is a lost device.
    let on_device = |t: &Tensor<f32>| t.to_device(device).expect("the device was checked");
    model.to_device(device).expect("the device was checked");
    let (train_x, test_x) = (on_device(&data.train_x), on_device(&data.test_x));
    let optimizer = options.optimizer.build(
        model.params(),
        config.lr,
        options.weight_decay,
        Schedule::Constant,
    );
    let mut trainer = Trainer::new(precision, optimizer)?;
    if precision.param_storage() != DType::F32 && options.rounding != UpdateRounding::Nearest {
        trainer = trainer.update_rounding(options.rounding);
    }
    let n = data.train_y.len();
    let mut order: Vec<usize> = (0..n).collect();
    let (mut first_loss, mut epoch_loss) = (None, f32::NAN);
    let start = Instant::now();
    for _ in 0..config.epochs {
        rng.shuffle(&mut order);
        let (mut total, mut batches) = (0.0, 0);
        for chunk in order.chunks(config.batch) {
            let index = Tensor::from_vec(chunk.iter().map(|&i| i as i64).collect(), [chunk.len()]);
            let index = index.to_device(device).expect("the device was checked");
            let x = train_x.index_select(0, &index);
            let y = Tensor::from_vec(
                chunk.iter().map(|&i| data.train_y[i]).collect(),
                [chunk.len()],
            )
            .to_device(device)
            .expect("the device was checked");
            let loss = trainer.step(|_| model.loss(&x, &y)).loss;
            total += loss;
            batches += 1;
            first_loss.get_or_insert(loss);
        }
        epoch_loss = total / batches as f32;
    }
    let seconds = start.elapsed().as_secs_f64();
    let predicted = no_grad(|| model.forward(&test_x).argmax(-1));
    let correct = predicted
        .to_device(Device::Cpu)
        .expect("the device was checked")
        .eq(&data.test_y)
        .to_vec()
        .iter()
        .filter(|&&c| c)
        .count();
    Ok(Run {
        first_loss: first_loss.unwrap_or(f32::NAN),
        final_loss: epoch_loss,
        accuracy: 100.0 * correct as f64 / data.test_y.numel() as f64,
        seconds,
        peak_rss: stats::peak_rss_bytes(),
        skipped_steps: trainer.skipped_steps(),
        memory: trainer.memory_report(),
    })
}
