//! Inside autocast, an f32 activation meeting a bf16 or f16 weight in `linear` (written as `x.linear(..)`
//! in a region, or through the `Linear` layer) is rounded while the GEMM packs it instead of being cast
//! into a copy first. The result must be the one the explicit cast gives: the output and the weight's
//! gradient bit for bit, and the input's gradient (computed straight into f32 rather than rounded to the
//! low type and widened) at least as close to an f64 reference.

use amp::nn::{Layer, Linear};
use amp::prelude::*;

/// Odd shapes: a batch of 2 × 9 rows, 37 inputs, 19 outputs.
fn inputs(seed: u64) -> (Tensor<f32>, Linear) {
    let mut rng = Rng::new(seed);
    let x = Tensor::<f32>::randn([2, 9, 37], &mut rng).with_grad();
    (x, Linear::new(37, 19, true, &mut rng))
}

#[autocast(P)]
fn fused<P: Policy>(x: &Tensor<f32>, fc: &Linear) -> Tensor<f32> {
    let w = &fc.weight;
    let b = fc.bias.as_ref().expect("with bias");
    let h = x.linear(w, Some(b));
    h.square().sum(..)
}

/// `Σ (x·wᵀ + b)²` with every cast written out (outside any region): product and square in the low
/// type `L` (square keeps its input type), the sum in f32.
fn explicit<L: Float>(x: &Tensor<f32>, fc: &Linear) -> Tensor<f32> {
    let b = fc.bias.as_ref().expect("with bias").get::<L>();
    let h = x.cast::<L>().linear(&fc.weight.get::<L>(), Some(&b));
    h.square().cast::<f32>().sum(..)
}

/// `∂(Σ g ⊙ (x·wᵀ))/∂x = g · w` in f64, on the weight rounded to `L` (what the product multiplies).
fn reference_input_grad<L: Float>(g: &Tensor<L>, fc: &Linear) -> Vec<f64> {
    let w = fc.weight.value().cast::<L>().cast::<f64>();
    g.cast::<f64>().matmul(&w).to_vec()
}

/// Largest |a - b| / (|b| + scale), where `scale` is the reference's largest magnitude / 100 (so that
/// tiny entries do not dominate).
fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())) / 100.0;
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (y.abs() + scale))
        .fold(0.0, f64::max)
}

/// `x · wᵀ` written in a region (no bias: the input's gradient does not depend on it).
#[autocast(bf16)]
fn region_linear_bf16(x: &Tensor<f32>, fc: &Linear) -> Tensor<bf16> {
    x.linear(&fc.weight, None)
}

#[autocast(f16)]
fn region_linear_f16(x: &Tensor<f32>, fc: &Linear) -> Tensor<f16> {
    x.linear(&fc.weight, None)
}

/// The region path and the `Linear` layer path of `x · wᵀ (+ b)` under `P`.
type Paths<L> = [(&'static str, fn(&Tensor<f32>, &Linear) -> Tensor<L>); 2];

fn check<P: Policy<Low = L>, L: Float>(tol: f64, paths: Paths<L>) {
    for seed in [1, 2, 3] {
        let (x, fc) = inputs(seed);
        let got = fused::<P>(&x, &fc);
        let want = explicit::<L>(&x, &fc);
        assert_eq!(got.to_vec(), want.to_vec(), "{}: forward", L::DTYPE);

        let (g_got, g_want) = (got.backward(), want.backward());
        let weight_grad = |g: &Grads| g.get(&fc.weight).expect("weight grad").to_vec();
        assert_eq!(
            weight_grad(&g_got),
            weight_grad(&g_want),
            "{}: weight gradient",
            L::DTYPE
        );

        // The input's gradient for a given upstream gradient: fused, it is accumulated straight into
        // f32 (f32-level error); with explicit casts it is rounded to `L` before being widened.
        let as_f64 =
            |t: Tensor<f32>| -> Vec<f64> { t.to_vec().into_iter().map(f64::from).collect() };
        let h_explicit = x.cast::<L>().linear(&fc.weight.get::<L>(), None);
        let g = Tensor::<f32>::randn(h_explicit.shape(), &mut Rng::new(seed + 100)).cast::<L>();
        let reference = reference_input_grad(&g, &fc);
        let explicit_grad = as_f64(h_explicit.backward_with(&g).get(&x).expect("x grad"));
        let err_explicit = max_rel_err(&explicit_grad, &reference);
        assert!(
            err_explicit <= tol,
            "{}: explicit input gradient error {err_explicit:e}",
            L::DTYPE
        );
        for (path, linear) in paths {
            let h = linear(&x, &fc);
            let fused_grad = as_f64(h.backward_with(&g).get(&x).expect("x grad"));
            let err_fused = max_rel_err(&fused_grad, &reference);
            assert!(
                err_fused <= 1e-5 && err_fused < err_explicit,
                "{} {path}: input gradient error {err_fused:e} (explicit casts: {err_explicit:e})",
                L::DTYPE
            );
        }
    }
}

#[test]
fn bf16_linear_rounds_while_packing() {
    check::<Bf16, bf16>(
        2e-2,
        [
            ("region", region_linear_bf16),
            ("layer", |x, fc| fc.forward_under::<Bf16>(x)),
        ],
    );
}

#[test]
fn f16_linear_rounds_while_packing() {
    check::<F16, f16>(
        2e-3,
        [
            ("region", region_linear_f16),
            ("layer", |x, fc| fc.forward_under::<F16>(x)),
        ],
    );
}

/// The `Linear` layer under a policy takes the same fused path.
#[test]
fn linear_layer_under_a_policy_matches_explicit_casts() {
    let (x, fc) = inputs(7);
    let got: Tensor<bf16> = fc.forward_under::<Bf16>(&x);
    let want = fc.forward(&x.to_bf16());
    assert_eq!(got.to_vec(), want.to_vec());
    let got: Tensor<f16> = fc.forward_under::<F16>(&x);
    let want = fc.forward(&x.to_f16());
    assert_eq!(got.to_vec(), want.to_vec());
}
