//! Softmax and log-softmax along one dimension, computed in f32 (f64 for f64).

use crate::element::Float;
use crate::ops::dispatch::on_device;
use crate::ops::output_buffer;
use crate::shape::dim_index;
use crate::tensor::Tensor;
use amp_kernels::cpu::{self, Dim3};
#[cfg(feature = "cuda")]
use amp_kernels::cuda;
use std::sync::Arc;

impl<E: Float> Tensor<E> {
    /// `exp(x) / Σ exp(x)` along `dim` (`-1` for the last), stable for large values.
    #[track_caller]
    pub fn softmax(&self, dim: isize) -> Tensor<E> {
        self.softmax_op("softmax", dim, false)
    }

    /// `x - ln Σ exp(x)` along `dim`, stable for large values.
    #[track_caller]
    pub fn log_softmax(&self, dim: isize) -> Tensor<E> {
        self.softmax_op("log_softmax", dim, true)
    }

    /// Log-softmax written in the compute type (f32 for bf16/f16): the first half of a loss computed in f32.
    #[track_caller]
    pub(crate) fn log_softmax_compute(&self, dim: isize) -> Tensor<E::Compute> {
        self.softmax_op("log_softmax", dim, true)
    }

    /// Softmax or log-softmax of `E` written as `O`; the backward runs in `O` and casts back to `E`.
    #[track_caller]
    fn softmax_op<O: Float>(&self, name: &'static str, dim: isize, log: bool) -> Tensor<O> {
        let layout = Dim3::of(self.shape(), dim_index(name, dim, self.shape()));
        let out = on_device!(name, [self],
            cpu => {
                let mut out = output_buffer::<O>(self.numel());
                if log {
                    cpu::log_softmax(self.data(), &mut out, layout);
                } else {
                    cpu::softmax(self.data(), &mut out, layout);
                }
                out
            },
            cuda [x] => cuda::softmax(x, layout, O::DTYPE, log));
        let y = Tensor::<O>::from_storage(Arc::new(out), self.shape().to_vec(), None);
        Tensor::record(
            name,
            y.storage().clone(),
            self.shape().to_vec(),
            &[self.node()],
            move |g, _| {
                let dx = on_device!(name, [y, g],
                    cpu => {
                        let mut dx = output_buffer::<O>(g.numel());
                        if log {
                            cpu::log_softmax_backward(y.data(), g.data(), &mut dx, layout);
                        } else {
                            cpu::softmax_backward(y.data(), g.data(), &mut dx, layout);
                        }
                        dx
                    },
                    cuda [yb, gb] => cuda::softmax_backward(yb, gb, layout, log));
                let dx = Tensor::<O>::from_storage(Arc::new(dx), g.shape().to_vec(), None);
                vec![Some(dx.cast::<E>().into())]
            },
        )
    }
}
