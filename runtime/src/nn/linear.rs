//! The fully connected layer.

use super::{IsLayer, Layer, Module, join_name};
use crate::element::Float;
use crate::param::Param;
use crate::policy::Policy;
use crate::rng::Rng;
use crate::shape::IntoShape;
use crate::tensor::Tensor;

/// A fully connected layer, `y = x · weightᵀ + bias`, as PyTorch's `nn.Linear`.
///
/// Outside an `#[autocast]` region, [`forward`](Linear::forward) runs in the input's element type. Inside
/// one, `self.fc.forward(&x)` runs under the region's policy ([`Layer`]): input and weights are cast to
/// the policy's low-precision type (`Tensor<f32>` in gives `Tensor<bf16>` out under `bf16`; f64 is never
/// cast), with the weights' casts taken from each [`Param`]'s cast cache.
///
/// ```
/// use amp_runtime::nn::Linear;
/// use amp_runtime::{Rng, Tensor};
///
/// let fc = Linear::new(4, 3, true, &mut Rng::new(0));
/// let y = fc.forward(&Tensor::<f32>::ones([2, 4]));
/// assert_eq!(y.shape(), &[2, 3]);
/// ```
#[derive(Clone, Debug)]
pub struct Linear {
    /// The weight, of shape `[out_features, in_features]` (named `"weight"`).
    pub weight: Param,
    /// The bias, of shape `[out_features]` (named `"bias"`), if the layer has one.
    pub bias: Option<Param>,
}

impl Linear {
    /// A layer from `in_features` to `out_features`, with a bias if `bias` is true. Weight and bias are
    /// drawn from U(-1/√in_features, 1/√in_features), PyTorch's default initialization.
    ///
    /// Panics if either size is zero.
    #[track_caller]
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Self {
        check_positive(
            "Linear::new",
            &[("in_features", in_features), ("out_features", out_features)],
        );
        let bound = 1.0 / (in_features as f64).sqrt();
        let weight = Param::named("weight", uniform([out_features, in_features], bound, rng));
        let bias = bias.then(|| Param::named("bias", uniform([out_features], bound, rng)));
        Linear { weight, bias }
    }

    /// The size of each input sample.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// The size of each output sample.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// `x · weightᵀ + bias` for `x` of shape `[..., in_features]`, in `x`'s element type (the weights'
    /// casts come from their cast caches). The output has shape `[..., out_features]`.
    #[track_caller]
    pub fn forward<E: Float>(&self, x: &Tensor<E>) -> Tensor<E> {
        let bias = self.bias.as_ref().map(Param::get::<E>);
        x.linear(&self.weight.get::<E>(), bias.as_ref())
    }
}

impl Module for Linear {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Param)) {
        f(join_name(prefix, "weight"), &self.weight);
        if let Some(bias) = &self.bias {
            f(join_name(prefix, "bias"), bias);
        }
    }
}

impl IsLayer for Linear {}

/// Under policy `P`: input and weights cast to `E::Low<P>` (`P::Low`, or f64 for f64 input).
impl<E: Float> Layer<Tensor<E>> for Linear {
    type Out<P: Policy> = Tensor<E::Low<P>>;

    #[track_caller]
    fn forward_under<P: Policy>(&self, input: &Tensor<E>) -> Self::Out<P> {
        // An f32 input is rounded while the GEMM packs it (no cast copy of the activation).
        let bias = self.bias.as_ref().map(Param::get::<E::Low<P>>);
        input.linear_in(&self.weight.get::<E::Low<P>>(), bias.as_ref())
    }
}

// Helpers the layers share (kept here, with the first layer that needs them).

/// An f32 tensor drawn from U(-bound, bound).
pub(super) fn uniform(shape: impl IntoShape, bound: f64, rng: &mut Rng) -> Tensor<f32> {
    let shape = shape.into_shape();
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
        .collect();
    Tensor::from_vec(data, shape)
}

/// Panics, naming the constructor and every argument, unless each size is positive.
#[track_caller]
pub(super) fn check_positive(layer: &str, sizes: &[(&str, usize)]) {
    if sizes.iter().any(|&(_, v)| v == 0) {
        let given: Vec<String> = sizes.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        panic!("{layer}: sizes must be positive, got {}", given.join(", "));
    }
}
