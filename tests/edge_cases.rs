//! Edge cases found in review, each pinned by a test: overflow in gradients, broadcasting in composite
//! ops, panic safety of parameter updates, degenerate shapes, low-precision accuracy of losses and
//! reductions, and the scale of dropout.

use amp::prelude::*;

fn f(values: &[f32]) -> Tensor<f32> {
    Tensor::from_vec(values.to_vec(), [values.len()])
}

/// d(a/b)/db stays finite and correct when b² would overflow (f32) or round away (f16).
#[test]
fn division_gradient_does_not_overflow() {
    let b = f(&[1e20]).with_grad();
    let g = (&f(&[1.0]) / &b).sum(..).backward().get(&b).unwrap().item();
    assert!((g / -1e-40 - 1.0).abs() < 1e-3, "{g:e}");
    let b16 = Tensor::<f16>::from_vec(vec![f16::from_f32(300.0)], [1]).with_grad();
    let one = Tensor::<f16>::from_vec(vec![f16::ONE], [1]);
    let g16 = (&one / &b16)
        .sum(..)
        .backward()
        .get(&b16)
        .unwrap()
        .item()
        .to_f64();
    // The result is an f16 subnormal (spacing 6e-8), so it is exact to about 0.3%.
    assert!((g16 / (-1.0 / 90000.0) - 1.0).abs() < 5e-3, "{g16:e}");
}

/// cosine_similarity broadcasts its inputs before taking dot products and norms.
#[test]
fn cosine_similarity_broadcasts_the_reduced_dimension() {
    let a = Tensor::<f32>::ones([2, 1]);
    let b = Tensor::<f32>::ones([1, 3]);
    let c = a.cosine_similarity(&b, 0, 1e-8);
    assert_eq!(c.shape(), &[3]);
    for v in c.to_vec() {
        assert!((v - 1.0).abs() < 1e-6, "{v}");
    }
    let x = Tensor::<f32>::from_vec(vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [2, 3]);
    let y = f(&[1.0, 0.0, 0.0]);
    assert_eq!(x.cosine_similarity(&y, 1, 1e-8).to_vec(), vec![1.0, 0.0]);
}

/// A panicking update leaves a well-formed parameter with a new version and no stale cast.
#[test]
fn panicking_update_keeps_the_parameter_consistent() {
    let p = Param::new(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]));
    let _ = p.get::<bf16>();
    let result = std::panic::catch_unwind(|| {
        p.update(|w| {
            w[0] = 10.0;
            panic!("optimizer bug");
        })
    });
    assert!(result.is_err());
    assert_eq!(p.shape(), vec![2, 3]);
    assert_eq!(p.version(), 1);
    assert!(!p.is_cast_cached::<bf16>());
    assert_eq!(p.get::<bf16>().to_vec()[0], bf16::from_f32(10.0));
}

/// linear with zero input features gives the bias (or zeros) with the right shape.
#[test]
fn linear_with_no_input_features() {
    let x = Tensor::<f32>::zeros([5, 0]);
    let w = Tensor::<f32>::zeros([3, 0]);
    let b = f(&[1.0, 2.0, 3.0]);
    let y = x.linear(&w, Some(&b));
    assert_eq!(y.shape(), &[5, 3]);
    assert_eq!(y.to_vec()[..3], [1.0, 2.0, 3.0]);
}

/// cross_entropy on bf16 logits computes its log-softmax and gradient in f32: the gradient matches the
/// f32 computation on the same (bf16-rounded) logits to bf16 precision.
#[test]
fn bf16_cross_entropy_gradient_is_computed_in_f32() {
    let mut rng = Rng::new(5);
    let logits = Tensor::<bf16>::randn([64, 1000], &mut rng).with_grad();
    let targets = Tensor::<i64>::from_vec((0..64).map(|i| (i * 37) % 1000).collect(), [64]);
    let g = logits
        .cross_entropy(&targets)
        .backward()
        .get(&logits)
        .unwrap();
    let reference = logits.detach().to_f32().with_grad();
    let g32 = reference
        .cross_entropy(&targets)
        .backward()
        .get(&reference)
        .unwrap();
    let worst = g
        .to_vec()
        .iter()
        .zip(g32.to_vec())
        .map(|(a, b)| ((a.to_f32() - b) / b.abs().max(1e-7)).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 0.008, "worst relative error {worst}");
}

/// max routes the gradient to a NaN maximum; many ties in bf16 share it exactly.
#[test]
fn max_gradient_with_nan_and_many_ties() {
    let x = f(&[1.0, f32::NAN, 3.0]).with_grad();
    let g = x.max(..).backward().get(&x).unwrap().to_vec();
    assert_eq!(g, vec![0.0, 1.0, 0.0]);
    let ones = Tensor::<bf16>::ones([1001]).with_grad();
    let g = ones.max(..).to_f32().backward().get(&ones).unwrap();
    let total: f64 = g.to_vec().iter().map(|v| v.to_f64()).sum();
    assert!((total - 1.0).abs() < 2e-3, "{total}");
}

/// pow(0) has gradient 0 everywhere, including at 0.
#[test]
fn pow_zero_gradient_at_zero() {
    let x = f(&[0.0, 2.0]).with_grad();
    let g = x.pow(0.0).sum(..).backward().get(&x).unwrap().to_vec();
    assert_eq!(g, vec![0.0, 0.0]);
}

/// Dropout's kept values are scaled by 1/(1-p) rounded once from f32, so a bf16 tensor keeps its mean.
#[test]
fn dropout_scale_is_unbiased_in_bf16() {
    let x = Tensor::<bf16>::ones([100_000]);
    let y = x.dropout(0.1, &mut Rng::new(3));
    let kept: Vec<f32> = y
        .to_vec()
        .iter()
        .map(|v| v.to_f32())
        .filter(|&v| v != 0.0)
        .collect();
    assert!(
        kept.iter()
            .all(|&v| v == bf16::from_f64(1.0 / 0.9).to_f32())
    );
    let mean = y.to_f32().mean(..).item();
    assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
}

/// narrow with a range whose end overflows usize panics with the op's message, not a slice error.
#[test]
#[should_panic(expected = "narrow: range")]
fn narrow_overflowing_range() {
    let _ = f(&[1.0, 2.0]).narrow(0, usize::MAX, 2);
}

/// conv2d with an empty kernel is rejected.
#[test]
#[should_panic(expected = "conv2d: kernel")]
fn conv2d_empty_kernel() {
    let _ = Tensor::<f32>::ones([1, 1, 3, 3]).conv2d(&Tensor::zeros([1, 1, 0, 2]), None, 1, 0);
}

/// A dimension too large for isize is out of range, not silently the last dimension.
#[test]
#[should_panic(expected = "out of range")]
fn huge_dimension_index() {
    let _ = Tensor::<f32>::ones([2, 3]).sum(usize::MAX);
}
