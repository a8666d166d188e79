//! Dropout with a seeded generator.

use crate::element::Float;
use crate::rng::Rng;
use crate::tensor::Tensor;
use amp_kernels::cpu::Unary;

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
        let scale = if p >= 1.0 { 0.0 } else { 1.0 / (1.0 - p) };
        let kept: Vec<bool> = (0..self.numel()).map(|_| rng.uniform() >= p).collect();
        // Scale in f32 and round once (a bf16 mask holding 1/(1-p) would bias every kept value).
        let scaled = self.map("dropout", Unary::MulScalar(scale));
        // The mask is drawn on the host (the same draws on every device) and moved to the input's.
        let mask = Tensor::from_data(kept, self.shape().to_vec())
            .to_device(self.device())
            .unwrap_or_else(|e| panic!("dropout: {e}"));
        scaled.where_same(&mask, &Tensor::zeros(Vec::new()))
    }
}
