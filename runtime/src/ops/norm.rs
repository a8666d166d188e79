//! Normalization layers' functional forms: layer norm, RMS norm and group norm, with statistics in f32
//! (f64 for f64). The affine part (weight, bias) is ordinary broadcast arithmetic.

use crate::device::{Device, Storage};
use crate::element::Float;
use crate::ops::dispatch::{self, on_device};
use crate::ops::{buffer, output_buffer};
use crate::shape::numel;
use crate::tensor::Tensor;
use amp_kernels::cpu::{self, Binary};
#[cfg(feature = "cuda")]
use amp_kernels::cuda;
use std::sync::Arc;

impl<E: Float> Tensor<E> {
    /// Normalizes each row of `cols` elements to zero mean and unit variance (no affine part), or to
    /// unit root mean square without `center`.
    fn normalize_rows(&self, name: &'static str, cols: usize, eps: f64, center: bool) -> Tensor<E> {
        let rows = self.numel() / cols.max(1);
        let stats = |data: Storage<E::Acc>| Tensor::from_storage(Arc::new(data), vec![rows], None);
        // The normalized rows, and each row's mean (with `center`) and 1/std for the backward pass.
        let (out, mean, rstd) = match dispatch::device_of(name, &[self]) {
            Device::Cpu => {
                let mut out = output_buffer::<E>(self.numel());
                let mut rstd = buffer::<E::Acc>(rows);
                let mean = if center {
                    let mut mean = buffer::<E::Acc>(rows);
                    cpu::layer_norm(self.data(), &mut out, &mut mean, &mut rstd, cols, eps);
                    Some(stats(Storage::Cpu(mean)))
                } else {
                    cpu::rms_norm(self.data(), &mut out, &mut rstd, cols, eps);
                    None
                };
                (Storage::Cpu(out), mean, stats(Storage::Cpu(rstd)))
            }
            #[cfg(feature = "cuda")]
            device => {
                let x = self
                    .storage()
                    .buffer()
                    .expect("a tensor on a device has a device buffer");
                if center {
                    let (out, mean, rstd) = dispatch::expect_cuda(
                        name,
                        device,
                        cuda::layer_norm(x, cols, eps, E::DTYPE),
                    );
                    let mean = Some(stats(Storage::cuda(mean)));
                    (Storage::cuda(out), mean, stats(Storage::cuda(rstd)))
                } else {
                    let (out, rstd) =
                        dispatch::expect_cuda(name, device, cuda::rms_norm(x, cols, eps, E::DTYPE));
                    (Storage::cuda(out), None, stats(Storage::cuda(rstd)))
                }
            }
            #[cfg(not(feature = "cuda"))]
            device => unreachable!("{device} tensors cannot exist without the `cuda` feature"),
        };
        let x = self.detach();
        Tensor::record(
            name,
            Arc::new(out),
            self.shape().to_vec(),
            &[self.node()],
            move |g, _| {
                let dx = on_device!(name, [x, rstd, g],
                cpu => {
                    let mut dx = output_buffer::<E>(g.numel());
                    match &mean {
                        Some(mean) => cpu::layer_norm_backward(
                            x.data(), mean.data(), rstd.data(), g.data(), &mut dx, cols,
                        ),
                        None => cpu::rms_norm_backward(x.data(), rstd.data(), g.data(), &mut dx, cols),
                    }
                    dx
                },
                cuda [xb, rb, gb] => {
                    let mean = mean.as_ref().and_then(|m| m.storage().buffer());
                    cuda::norm_backward(xb, mean, rb, gb, cols)
                });
                vec![Some(
                    Tensor::from_storage(Arc::new(dx), g.shape().to_vec(), None).into(),
                )]
            },
        )
    }

    #[track_caller]
    fn check_affine(&self, name: &str, what: &str, param: Option<&Tensor<E>>, expected: &[usize]) {
        if let Some(p) = param
            && p.shape() != expected
        {
            panic!(
                "{name}: {what} of shape {:?} does not match the normalized shape {expected:?}",
                p.shape()
            );
        }
    }

    #[track_caller]
    fn check_normalized_shape(&self, name: &str, normalized_shape: &[usize]) {
        let s = self.shape();
        if normalized_shape.is_empty()
            || normalized_shape.len() > s.len()
            || s[s.len() - normalized_shape.len()..] != *normalized_shape
        {
            panic!(
                "{name}: normalized shape {normalized_shape:?} is not a suffix of the input shape {s:?}"
            );
        }
    }

    /// Layer normalization over the trailing `normalized_shape` dimensions (biased variance, as PyTorch),
    /// then `· weight + bias` when given (both of shape `normalized_shape`).
    #[track_caller]
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor<E>>,
        bias: Option<&Tensor<E>>,
        eps: f64,
    ) -> Tensor<E> {
        self.check_normalized_shape("layer_norm", normalized_shape);
        self.check_affine("layer_norm", "weight", weight, normalized_shape);
        self.check_affine("layer_norm", "bias", bias, normalized_shape);
        let y = self.normalize_rows("layer_norm", numel(normalized_shape), eps, true);
        let y = match weight {
            Some(w) => y.binary_same(w, Binary::Mul, "layer_norm"),
            None => y,
        };
        match bias {
            Some(b) => y.binary_same(b, Binary::Add, "layer_norm"),
            None => y,
        }
    }

    /// RMS normalization over the trailing `normalized_shape` dimensions: `x / √(mean(x²) + eps)`, then
    /// `· weight` when given.
    #[track_caller]
    pub fn rms_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor<E>>,
        eps: f64,
    ) -> Tensor<E> {
        self.check_normalized_shape("rms_norm", normalized_shape);
        self.check_affine("rms_norm", "weight", weight, normalized_shape);
        let y = self.normalize_rows("rms_norm", numel(normalized_shape), eps, false);
        match weight {
            Some(w) => y.binary_same(w, Binary::Mul, "rms_norm"),
            None => y,
        }
    }

    /// Group normalization of an `[n, c, ...]` input: channels split into `groups` groups, each normalized
    /// over its channels and all spatial positions, then `· weight + bias` per channel (shape `[c]`).
    #[track_caller]
    pub fn group_norm(
        &self,
        groups: usize,
        weight: Option<&Tensor<E>>,
        bias: Option<&Tensor<E>>,
        eps: f64,
    ) -> Tensor<E> {
        let s = self.shape();
        if s.len() < 2 || groups == 0 || !s[1].is_multiple_of(groups) {
            panic!(
                "group_norm: input of shape {s:?} needs at least 2 dimensions and channels divisible by {groups} groups"
            );
        }
        let c = s[1];
        self.check_affine("group_norm", "weight", weight, &[c]);
        self.check_affine("group_norm", "bias", bias, &[c]);
        let per_group = self.numel() / (s[0] * groups).max(1);
        let y = self
            .reshape([s[0], groups, per_group])
            .normalize_rows("group_norm", per_group, eps, true)
            .reshape(s);
        // Per-channel affine: [c] viewed as [c, 1, 1, ...] broadcasts over the spatial dimensions.
        let mut channel_shape = vec![c];
        channel_shape.resize(s.len() - 1, 1);
        let y = match weight {
            Some(w) => y.binary_same(&w.reshape(channel_shape.clone()), Binary::Mul, "group_norm"),
            None => y,
        };
        match bias {
            Some(b) => y.binary_same(&b.reshape(channel_shape), Binary::Add, "group_norm"),
            None => y,
        }
    }
}
