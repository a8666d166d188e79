//! The digits example's model and training loop: a 64-128-10 MLP trained with plain SGD on f32 master
//! weights, with the forward pass in f32 or in bf16 mixed precision (written with explicit casts).

use super::digits::Digits;
use amp::prelude::*;
use std::time::Instant;

/// 64 → 128 → 10 with GELU; weights are f32 masters.
pub struct Mlp {
    w1: Param,
    b1: Param,
    w2: Param,
    b2: Param,
}

impl Mlp {
    pub fn new(rng: &mut Rng) -> Self {
        // PyTorch's default Linear initialization: U(-1/√fan_in, 1/√fan_in).
        let mut uniform = |name: &str, shape: [usize; 2], fan_in: usize| {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let u = Tensor::<f32>::rand(shape, rng);
            Param::named(name, (u * 2.0 - 1.0) * bound as f64)
        };
        Mlp {
            w1: uniform("w1", [128, 64], 64),
            b1: Param::named("b1", uniform("", [1, 128], 64).value().reshape([128])),
            w2: uniform("w2", [10, 128], 128),
            b2: Param::named("b2", uniform("", [1, 10], 128).value().reshape([10])),
        }
    }

    pub fn params(&self) -> [&Param; 4] {
        [&self.w1, &self.b1, &self.w2, &self.b2]
    }

    /// Logits in f32, every op in f32.
    pub fn forward_f32(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let h = x.linear(&self.w1.value(), Some(&self.b1.value())).gelu();
        h.linear(&self.w2.value(), Some(&self.b2.value()))
    }

    /// Logits in f32, matmuls in bf16 on the cached bf16 copies of the weights (f32 accumulation).
    pub fn forward_bf16(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let h = x
            .to_bf16()
            .linear(&self.w1.get::<bf16>(), Some(&self.b1.get::<bf16>()))
            .gelu();
        h.linear(&self.w2.get::<bf16>(), Some(&self.b2.get::<bf16>()))
            .to_f32()
    }
}

/// How the forward pass runs.
#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    /// Every op in f32.
    F32,
    /// Matmuls in bf16 (f32 accumulation), everything else in f32.
    Bf16Mixed,
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
}

/// Trains a fresh model with plain SGD (batch 64) and evaluates it on the test set.
pub fn train(mode: Mode, data: &Digits, epochs: usize, lr: f32, seed: u64) -> Run {
    let mut rng = Rng::new(seed);
    let model = Mlp::new(&mut rng);
    let forward = |x: &Tensor<f32>| match mode {
        Mode::F32 => model.forward_f32(x),
        Mode::Bf16Mixed => model.forward_bf16(x),
    };
    let n = data.train_y.len();
    let batch = 64;
    let mut order: Vec<usize> = (0..n).collect();
    let (mut first_loss, mut epoch_loss) = (None, 0.0);
    let start = Instant::now();
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        let (mut total, mut batches) = (0.0, 0);
        for chunk in order.chunks(batch) {
            let index = Tensor::from_vec(chunk.iter().map(|&i| i as i64).collect(), [chunk.len()]);
            let x = data.train_x.index_select(0, &index);
            let y = Tensor::from_vec(
                chunk.iter().map(|&i| data.train_y[i]).collect(),
                [chunk.len()],
            );
            let loss = forward(&x).cross_entropy(&y);
            let grads = loss.backward();
            // Drop the graph before updating, so the weights are updated in place, not copied.
            let loss = loss.item();
            for p in model.params() {
                let g = grads
                    .get(p)
                    .expect("every parameter takes part in the loss")
                    .to_vec();
                p.update(|w| w.iter_mut().zip(&g).for_each(|(w, g)| *w -= lr * g));
            }
            total += loss;
            batches += 1;
            first_loss.get_or_insert(loss);
        }
        epoch_loss = total / batches as f32;
    }
    let seconds = start.elapsed().as_secs_f64();
    let predicted = no_grad(|| forward(&data.test_x).argmax(-1));
    let correct = predicted
        .eq(&data.test_y)
        .to_vec()
        .iter()
        .filter(|&&c| c)
        .count();
    Run {
        first_loss: first_loss.unwrap_or(f32::NAN),
        final_loss: epoch_loss,
        accuracy: 100.0 * correct as f64 / data.test_y.numel() as f64,
        seconds,
    }
}
