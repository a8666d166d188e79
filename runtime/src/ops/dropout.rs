//! Dropout with a seeded generator.

use crate::element::Float;
use crate::rng::Rng;
use crate::tensor::Tensor;
use amp_kernels::cpu::Binary;

impl<E: Float> Tensor<E> {
    /// Zeroes each element with probability `p` and scales the rest by `1/(1-p)` (inverted dropout), drawing
    /// the mask from `rng` so runs are reproducible. For evaluation, do not call it (or pass `p = 0`).
    #[track_caller]
    pub fn dropout(&self, p: f64, rng: &mut Rng) -> Tensor<E> {
        if !(0.0..=1.0).contains(&p) {
            panic!("dropout: probability {p} is outside [0, 1]");
        }
        if p == 0.0 {
            return self.clone();
        }
        let keep = if p >= 1.0 { 0.0 } else { 1.0 / (1.0 - p) };
        let mask: Vec<E> = (0..self.numel())
            .map(|_| E::from_f64(if rng.uniform() < p { 0.0 } else { keep }))
            .collect();
        self.binary_same(
            &Tensor::from_data(mask, self.shape().to_vec()),
            Binary::Mul,
            "dropout",
        )
    }
}
