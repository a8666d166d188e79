//! Normalization layers: layer norm and RMS norm.

use super::{IsLayer, Layer, Module, join_name};
use crate::element::Float;
use crate::param::Param;
use crate::policy::Policy;
use crate::shape::IntoShape;
use crate::tensor::Tensor;

/// Layer normalization over the trailing `normalized_shape` dimensions, then `· weight + bias`, as
/// PyTorch's `nn.LayerNorm` (biased variance).
///
/// Outside an `#[autocast]` region, [`forward`](LayerNorm::forward) runs in the input's element type
/// (statistics in f32 for bf16/f16). Inside one, `self.norm.forward(&x)` runs in f32 whatever the policy
/// ([`Layer`]): a bf16 input gives a `Tensor<f32>` (f64 stays f64).
///
/// ```
/// use amp_runtime::nn::LayerNorm;
/// use amp_runtime::Tensor;
///
/// let norm = LayerNorm::new([4], 1e-5, true);
/// let y = norm.forward(&Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0], [1, 4]));
/// assert!(y.mean(..).item().abs() < 1e-6);
/// ```
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// The scale, of shape `normalized_shape` (named `"weight"`), if the layer is elementwise affine.
    pub weight: Option<Param>,
    /// The shift, of shape `normalized_shape` (named `"bias"`), if the layer is elementwise affine.
    pub bias: Option<Param>,
    /// The trailing dimensions each sample is normalized over.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance for numerical stability.
    pub eps: f64,
}

impl LayerNorm {
    /// A layer norm over the trailing dimensions `normalized_shape` (`[d]`, `d` or `vec![h, w]`) with
    /// `eps` added to the variance (PyTorch's default is `1e-5`). With `elementwise_affine` it has a weight
    /// (ones) and a bias (zeros) of shape `normalized_shape`; without, no parameters.
    ///
    /// Panics if `normalized_shape` is empty or has a zero dimension, or if `eps` is negative or not finite.
    #[track_caller]
    pub fn new(normalized_shape: impl IntoShape, eps: f64, elementwise_affine: bool) -> Self {
        let normalized_shape = normalized_shape.into_shape();
        check_norm_args("LayerNorm::new", &normalized_shape, eps);
        let affine = |name: &str, value: f64| {
            Param::named(name, Tensor::full(normalized_shape.clone(), value))
        };
        LayerNorm {
            weight: elementwise_affine.then(|| affine("weight", 1.0)),
            bias: elementwise_affine.then(|| affine("bias", 0.0)),
            normalized_shape,
            eps,
        }
    }

    /// The normalized input, scaled and shifted, in `x`'s element type (statistics in f32 for bf16/f16;
    /// the weights' casts come from their cast caches). `x`'s trailing dimensions must equal
    /// `normalized_shape`.
    #[track_caller]
    pub fn forward<E: Float>(&self, x: &Tensor<E>) -> Tensor<E> {
        let weight = self.weight.as_ref().map(Param::get::<E>);
        let bias = self.bias.as_ref().map(Param::get::<E>);
        x.layer_norm(
            &self.normalized_shape,
            weight.as_ref(),
            bias.as_ref(),
            self.eps,
        )
    }
}

impl Module for LayerNorm {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Param)) {
        if let Some(weight) = &self.weight {
            f(join_name(prefix, "weight"), weight);
        }
        if let Some(bias) = &self.bias {
            f(join_name(prefix, "bias"), bias);
        }
    }
}

impl IsLayer for LayerNorm {}

/// Under any policy: input and weights cast to `E::Compute` (f32, or f64 for f64 input).
impl<E: Float> Layer<Tensor<E>> for LayerNorm {
    type Out<P: Policy> = Tensor<E::Compute>;

    #[track_caller]
    fn forward_under<P: Policy>(&self, input: &Tensor<E>) -> Self::Out<P> {
        self.forward(&input.cast::<E::Compute>())
    }
}

/// RMS normalization over the trailing `normalized_shape` dimensions, `x / √(mean(x²) + eps) · weight`,
/// as PyTorch's `nn.RMSNorm`.
///
/// Outside an `#[autocast]` region, [`forward`](RmsNorm::forward) runs in the input's element type
/// (statistics in f32 for bf16/f16). Inside one, `self.norm.forward(&x)` runs in f32 whatever the policy
/// ([`Layer`]): a bf16 input gives a `Tensor<f32>` (f64 stays f64).
///
/// ```
/// use amp_runtime::nn::RmsNorm;
/// use amp_runtime::Tensor;
///
/// let norm = RmsNorm::new(2, 0.0, true);
/// let y = norm.forward(&Tensor::<f32>::from_vec(vec![3.0, 4.0], [1, 2]));
/// let rms = 12.5f32.sqrt(); // √(mean(x²))
/// for (got, want) in y.to_vec().into_iter().zip([3.0 / rms, 4.0 / rms]) {
///     assert!((got - want).abs() < 1e-6);
/// }
/// ```
#[derive(Clone, Debug)]
pub struct RmsNorm {
    /// The scale, of shape `normalized_shape` (named `"weight"`), if the layer is elementwise affine.
    pub weight: Option<Param>,
    /// The trailing dimensions each sample is normalized over.
    pub normalized_shape: Vec<usize>,
    /// Added to the mean square for numerical stability.
    pub eps: f64,
}

impl RmsNorm {
    /// An RMS norm over the trailing dimensions `normalized_shape` (`[d]`, `d` or `vec![h, w]`) with `eps`
    /// added to the mean square. PyTorch's default `eps` is the machine epsilon of the input type
    /// (`f32::EPSILON as f64` for f32 models); LLaMA-style models use `1e-5` or `1e-6`. With
    /// `elementwise_affine` it has a weight (ones) of shape `normalized_shape`; without, no parameters.
    ///
    /// Panics if `normalized_shape` is empty or has a zero dimension, or if `eps` is negative or not finite.
    #[track_caller]
    pub fn new(normalized_shape: impl IntoShape, eps: f64, elementwise_affine: bool) -> Self {
        let normalized_shape = normalized_shape.into_shape();
        check_norm_args("RmsNorm::new", &normalized_shape, eps);
        RmsNorm {
            weight: elementwise_affine
                .then(|| Param::named("weight", Tensor::ones(normalized_shape.clone()))),
            normalized_shape,
            eps,
        }
    }

    /// The normalized input, scaled, in `x`'s element type (statistics in f32 for bf16/f16; the weight's
    /// cast comes from its cast cache). `x`'s trailing dimensions must equal `normalized_shape`.
    #[track_caller]
    pub fn forward<E: Float>(&self, x: &Tensor<E>) -> Tensor<E> {
        let weight = self.weight.as_ref().map(Param::get::<E>);
        x.rms_norm(&self.normalized_shape, weight.as_ref(), self.eps)
    }
}

impl Module for RmsNorm {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Param)) {
        if let Some(weight) = &self.weight {
            f(join_name(prefix, "weight"), weight);
        }
    }
}

impl IsLayer for RmsNorm {}

/// Under any policy: input and weight cast to `E::Compute` (f32, or f64 for f64 input).
impl<E: Float> Layer<Tensor<E>> for RmsNorm {
    type Out<P: Policy> = Tensor<E::Compute>;

    #[track_caller]
    fn forward_under<P: Policy>(&self, input: &Tensor<E>) -> Self::Out<P> {
        self.forward(&input.cast::<E::Compute>())
    }
}

#[track_caller]
fn check_norm_args(layer: &str, normalized_shape: &[usize], eps: f64) {
    if normalized_shape.is_empty() || normalized_shape.contains(&0) {
        panic!(
            "{layer}: normalized_shape must be non-empty with positive dimensions, got {normalized_shape:?}"
        );
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        panic!("{layer}: eps must be finite and non-negative, got {eps}");
    }
}
