//! Element type conversion, the only way precision changes outside autocast.

use crate::autograd::grad_if;
use crate::element::Element;
use crate::ops::dispatch::on_device;
use crate::ops::output_buffer;
use crate::tensor::Tensor;
#[cfg(feature = "cuda")]
use amp_kernels::cuda;
use amp_kernels::{bf16, cpu, f16};
use std::sync::Arc;

impl<E: Element> Tensor<E> {
    /// Converts to element type `O`, rounding once to nearest even (overflow becomes ±inf, NaN stays
    /// NaN; from f32 bit-identical to `half`, from f64 correctly rounded where `half` rounds twice). Between float types the cast is differentiable: its backward casts the
    /// gradient back, so an f32 master weight gets an f32 gradient. Casting to or from `i64`/`bool` ends
    /// the gradient history. Casting to the same type returns the tensor itself (no copy).
    ///
    /// ```
    /// use amp_runtime::{Tensor, bf16};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 1.0 + 1.0 / 256.0, 3.0e38], [3]);
    /// let y = x.cast::<bf16>();
    /// assert_eq!(y.to_vec()[1], bf16::ONE); // a tie rounds to even
    /// assert!(y.to_vec()[2].to_f32().is_finite());
    /// ```
    pub fn cast<O: Element>(&self) -> Tensor<O> {
        if E::DTYPE == O::DTYPE {
            return O::from_any(self.clone().into()).unwrap_or_else(|_| unreachable!("same dtype"));
        }
        let out = on_device!("cast", [self],
            cpu => {
                let mut out = output_buffer::<O>(self.numel());
                cpu::cast(self.data(), &mut out);
                out
            },
            cuda [x] => cuda::cast(x, O::DTYPE));
        let differentiable = E::DTYPE.is_float() && O::DTYPE.is_float();
        let node = if differentiable { self.node() } else { None };
        Tensor::record(
            "cast",
            Arc::new(out),
            self.shape().to_vec(),
            &[node],
            |g, needs| vec![grad_if(needs[0], || g.cast::<E>())],
        )
    }

    /// [`cast`](Self::cast) to f32.
    pub fn to_f32(&self) -> Tensor<f32> {
        self.cast()
    }

    /// [`cast`](Self::cast) to f64.
    pub fn to_f64(&self) -> Tensor<f64> {
        self.cast()
    }

    /// [`cast`](Self::cast) to bf16.
    pub fn to_bf16(&self) -> Tensor<bf16> {
        self.cast()
    }

    /// [`cast`](Self::cast) to f16.
    pub fn to_f16(&self) -> Tensor<f16> {
        self.cast()
    }
}
