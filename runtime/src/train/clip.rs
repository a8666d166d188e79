//! Gradient clipping, on unscaled gradients (the loss scaler's [`Unscaled`](super::Unscaled) gives
//! mutable access to them; scaled gradients cannot be clipped).

use crate::autograd::Grads;
use crate::element::{Float, FloatOp};
use crate::tensor::Tensor;

/// The Euclidean norm of all gradients together, accumulated in f64 (NaN or infinity if a gradient is
/// not finite).
pub fn grad_norm(grads: &Grads) -> f64 {
    let mut total = 0.0;
    for (_, g) in grads.iter() {
        total += g.clone().with_float(&mut SumOfSquares);
    }
    total.sqrt()
}

/// Scales all gradients so their joint norm is at most `max_norm` (PyTorch's `clip_grad_norm_`: the
/// factor is `max_norm / (norm + 1e-6)`, applied only when below 1). Returns the norm before clipping.
/// Non-finite gradients are left as they are (the loss scaler skips that step).
#[track_caller]
pub fn clip_grad_norm(grads: &mut Grads, max_norm: f64) -> f64 {
    if !super::at_least(max_norm, 0.0) {
        panic!("clip_grad_norm: max_norm must be >= 0, got {max_norm}");
    }
    let norm = grad_norm(grads);
    let factor = max_norm / (norm + 1e-6);
    if norm.is_finite() && factor < 1.0 {
        for (_, g) in grads.iter_mut() {
            g.with_float(&mut Rescale(factor));
        }
    }
    norm
}

/// Clamps every gradient element into `[-clip, clip]` (PyTorch's `clip_grad_value_`).
#[track_caller]
pub fn clip_grad_value(grads: &mut Grads, clip: f64) {
    if !super::at_least(clip, 0.0) {
        panic!("clip_grad_value: clip must be >= 0, got {clip}");
    }
    for (_, g) in grads.iter_mut() {
        g.with_float(&mut ClampTo(clip));
    }
}

struct SumOfSquares;

impl FloatOp for SumOfSquares {
    type Out = f64;
    fn run<E: Float>(&mut self, t: &mut Tensor<E>) -> f64 {
        let norm = t.to_f64().norm(..).item();
        norm * norm
    }
}

struct Rescale(f64);

impl FloatOp for Rescale {
    type Out = ();
    fn run<E: Float>(&mut self, t: &mut Tensor<E>) {
        *t = &*t * self.0;
    }
}

struct ClampTo(f64);

impl FloatOp for ClampTo {
    type Out = ();
    fn run<E: Float>(&mut self, t: &mut Tensor<E>) {
        *t = t.clamp(-self.0, self.0);
    }
}
