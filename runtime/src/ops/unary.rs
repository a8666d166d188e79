//! Elementwise functions of one tensor. All compute in f32 (f64 for f64) and round once.

use crate::element::Float;
use crate::ops::dispatch::on_device;
use crate::ops::output_buffer;
use crate::tensor::Tensor;
use amp_kernels::cpu::{self, Unary};
#[cfg(feature = "cuda")]
use amp_kernels::cuda;
use std::sync::Arc;

impl<E: Float> Tensor<E> {
    /// Applies `op` elementwise and records its derivative.
    pub(crate) fn map(&self, name: &'static str, op: Unary) -> Tensor<E> {
        let out = on_device!(name, [self],
            cpu => {
                let mut out = output_buffer::<E>(self.numel());
                cpu::unary(op, self.data(), &mut out);
                out
            },
            cuda [x] => cuda::unary(op, x, E::DTYPE));
        let y = Tensor::from_storage(Arc::new(out), self.shape().to_vec(), None);
        let x = self.detach();
        Tensor::record(
            name,
            y.storage().clone(),
            self.shape().to_vec(),
            &[self.node()],
            move |g, _| {
                let dx = on_device!(name, [x, y, g],
                    cpu => {
                        let mut dx = output_buffer::<E>(g.numel());
                        cpu::unary_backward(op, x.data(), y.data(), g.data(), &mut dx);
                        dx
                    },
                    cuda [xb, yb, gb] => cuda::unary_backward(op, xb, yb, gb));
                vec![Some(
                    Tensor::from_storage(Arc::new(dx), g.shape().to_vec(), None).into(),
                )]
            },
        )
    }
}

macro_rules! unary_ops {
    ($($(#[$doc:meta])* $name:ident => $op:expr;)*) => {
        impl<E: Float> Tensor<E> {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Tensor<E> {
                    self.map(stringify!($name), $op)
                }
            )*
        }
    };
}

unary_ops! {
    /// `-x`.
    neg => Unary::Neg;
    /// `|x|` (gradient 0 at 0).
    abs => Unary::Abs;
    /// `x²`.
    square => Unary::Square;
    /// `√x`.
    sqrt => Unary::Sqrt;
    /// `1/√x`.
    rsqrt => Unary::Rsqrt;
    /// `1/x`.
    reciprocal => Unary::Reciprocal;
    /// `eˣ`.
    exp => Unary::Exp;
    /// Natural logarithm.
    log => Unary::Log;
    /// `ln(1+x)`, accurate near 0.
    log1p => Unary::Log1p;
    /// `eˣ-1`, accurate near 0.
    expm1 => Unary::Expm1;
    /// `ln(1+eˣ)` (returns `x` above 20, as PyTorch).
    softplus => Unary::Softplus;
    /// `max(x, 0)`.
    relu => Unary::Relu;
    /// GELU with the exact normal CDF, `x·Φ(x)` (PyTorch's default).
    gelu => Unary::Gelu;
    /// `x·σ(x)` (also called swish).
    silu => Unary::Silu;
    /// `1/(1+e⁻ˣ)`.
    sigmoid => Unary::Sigmoid;
    /// Hyperbolic tangent.
    tanh => Unary::Tanh;
}

impl<E: Float> Tensor<E> {
    /// `xᵖ` elementwise.
    pub fn pow(&self, exponent: f64) -> Tensor<E> {
        self.map("pow", Unary::PowScalar(exponent))
    }

    /// Clamps each element into `[min, max]` (gradient 1 inside, 0 outside).
    #[track_caller]
    pub fn clamp(&self, min: f64, max: f64) -> Tensor<E> {
        if min > max {
            panic!("clamp: min {min} is greater than max {max}");
        }
        self.map("clamp", Unary::Clamp(min, max))
    }
}
