//! The digits example's model and training loop: a 64-128-10 MLP written once against f32 tensors with
//! `#[autocast(P)]`, trained with plain SGD on f32 master weights under any policy.

use super::digits::Digits;
use amp::prelude::*;
use std::marker::PhantomData;
use std::time::Instant;

/// 64 → 128 → 10 with GELU; weights are f32 masters; `P` picks the precision of the forward pass.
pub struct Mlp<P: Policy> {
    w1: Param,
    b1: Param,
    w2: Param,
    b2: Param,
    policy: PhantomData<P>,
}

#[autocast(P)]
impl<P: Policy> Mlp<P> {
    pub fn new(rng: &mut Rng) -> Self {
        // PyTorch's default Linear initialization: U(-1/√fan_in, 1/√fan_in).
        let mut uniform = |name: &str, shape: Vec<usize>, fan_in: usize| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let u = Tensor::<f32>::rand(shape, rng);
            Param::named(name, (u * 2.0 - 1.0) * bound)
        };
        Mlp {
            w1: uniform("w1", vec![128, 64], 64),
            b1: uniform("b1", vec![128], 64),
            w2: uniform("w2", vec![10, 128], 128),
            b2: uniform("b2", vec![10], 128),
            policy: PhantomData,
        }
    }

    pub fn params(&self) -> [&Param; 4] {
        [&self.w1, &self.b1, &self.w2, &self.b2]
    }

    /// Logits: the two matmuls run in `P::Low` on cached low-precision copies of the weights (f32
    /// accumulation); the result is returned as f32.
    pub fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let h = x.linear(&self.w1, Some(&self.b1)).gelu();
        h.linear(&self.w2, Some(&self.b2))
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
}

/// Trains a fresh model with plain SGD (batch 64) under policy `P` and evaluates it on the test set.
pub fn train<P: Policy>(data: &Digits, epochs: usize, lr: f32, seed: u64) -> Run {
    let mut rng = Rng::new(seed);
    let model = Mlp::<P>::new(&mut rng);
    let forward = |x: &Tensor<f32>| model.forward(x);
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
