//! The 2-D convolution layer.

use super::linear::{check_positive, uniform};
use super::{IsLayer, Layer, Module, join_name};
use crate::element::Float;
use crate::ops::Pair;
use crate::param::Param;
use crate::policy::Policy;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// A 2-D convolution (cross-correlation) over `[n, c, h, w]` inputs, as PyTorch's `nn.Conv2d` without
/// groups or dilation.
///
/// Outside an `#[autocast]` region, [`forward`](Conv2d::forward) runs in the input's element type. Inside
/// one, `self.conv.forward(&x)` runs under the region's policy ([`Layer`]): input and weights are cast to
/// the policy's low-precision type (`Tensor<f32>` in gives `Tensor<bf16>` out under `bf16`; f64 is never
/// cast), with the weights' casts taken from each [`Param`]'s cast cache.
///
/// ```
/// use amp_runtime::nn::Conv2d;
/// use amp_runtime::{Rng, Tensor};
///
/// // 3 → 8 channels, 3×3 kernel, stride 1, padding 1: the spatial size is kept.
/// let conv = Conv2d::new(3, 8, 3, 1, 1, true, &mut Rng::new(0));
/// let y = conv.forward(&Tensor::<f32>::zeros([2, 3, 5, 5]));
/// assert_eq!(y.shape(), &[2, 8, 5, 5]);
/// ```
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// The kernels, of shape `[out_channels, in_channels, kernel_h, kernel_w]` (named `"weight"`).
    pub weight: Param,
    /// The bias, of shape `[out_channels]` (named `"bias"`), if the layer has one.
    pub bias: Option<Param>,
    /// The step between kernel positions, (height, width).
    pub stride: [usize; 2],
    /// The zeros added on each side of the input, (height, width).
    pub padding: [usize; 2],
}

impl Conv2d {
    /// A convolution from `in_channels` to `out_channels` with the given kernel size, stride and padding
    /// (each `3`, `(3, 1)` or `[3, 1]`, height first), with a bias if `bias` is true. Weight and bias are
    /// drawn from U(-b, b) with b = 1/√(in_channels · kernel_h · kernel_w), PyTorch's default
    /// initialization.
    ///
    /// Panics if a channel count, a kernel dimension or a stride is zero.
    #[track_caller]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Pair,
        stride: impl Pair,
        padding: impl Pair,
        bias: bool,
        rng: &mut Rng,
    ) -> Self {
        let [kh, kw] = kernel_size.pair();
        let stride = stride.pair();
        check_positive(
            "Conv2d::new",
            &[
                ("in_channels", in_channels),
                ("out_channels", out_channels),
                ("kernel_h", kh),
                ("kernel_w", kw),
                ("stride_h", stride[0]),
                ("stride_w", stride[1]),
            ],
        );
        let bound = 1.0 / (in_channels as f64 * kh as f64 * kw as f64).sqrt();
        let weight = Param::named(
            "weight",
            uniform([out_channels, in_channels, kh, kw], bound, rng),
        );
        let bias = bias.then(|| Param::named("bias", uniform([out_channels], bound, rng)));
        Conv2d {
            weight,
            bias,
            stride,
            padding: padding.pair(),
        }
    }

    /// The convolution of an `[n, in_channels, h, w]` input, in its element type (accumulating in f32 for
    /// bf16/f16; the weights' casts come from their cast caches). The output has shape
    /// `[n, out_channels, h_out, w_out]`.
    #[track_caller]
    pub fn forward<E: Float>(&self, x: &Tensor<E>) -> Tensor<E> {
        let bias = self.bias.as_ref().map(Param::get::<E>);
        x.conv2d(
            &self.weight.get::<E>(),
            bias.as_ref(),
            self.stride,
            self.padding,
        )
    }
}

impl Module for Conv2d {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Param)) {
        f(join_name(prefix, "weight"), &self.weight);
        if let Some(bias) = &self.bias {
            f(join_name(prefix, "bias"), bias);
        }
    }
}

impl IsLayer for Conv2d {}

/// Under policy `P`: input and weights cast to `E::Low<P>` (`P::Low`, or f64 for f64 input).
impl<E: Float> Layer<Tensor<E>> for Conv2d {
    type Out<P: Policy> = Tensor<E::Low<P>>;

    #[track_caller]
    fn forward_under<P: Policy>(&self, input: &Tensor<E>) -> Self::Out<P> {
        self.forward(&input.cast::<E::Low<P>>())
    }
}
