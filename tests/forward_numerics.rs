//! Forward values of every op in f32, bf16 and f16 against the f64 result on the same rounded inputs
//! (f64 itself is pinned by the gradient checks and by the hand-computed cases below), plus the
//! accumulation guarantees (bf16/f16 reductions accumulate in f32), type promotion and casts.
//!
//! Tolerances (see `common::Tol`): the base is 1e-5 relative for f32, 1e-3 for f16 and 1e-2 for bf16, a
//! little over one rounding of the result. Ops that round an intermediate to the low type before a
//! further add (bias adds, attention probabilities, affine norms) or whose result cancels partial sums
//! (sums, cumsum, matmul, var, log_softmax) get an absolute part scaled by the size of those
//! intermediates, since their error is relative to them rather than to the result.

mod common;

use amp::{DType, Rng, Tensor, bf16, f16};
use common::{
    ForwardOp, TestFloat, Tol, assert_close_slices, avoid, away_from_zero, base_tol, check_forward,
    check_forward_in, grid, idx, labels, probabilities, randn, spaced, t64, uniform,
};

/// Defines a `#[test]` that runs an op, written once generically over the element type `E`, in f32, bf16
/// and f16 against the f64 result. `inputs` are f64 tensors, rounded to each type first.
macro_rules! forward_test {
    ($(#[$meta:meta])* $name:ident, $inputs:expr, $tol:expr, |$x:ident| $body:expr) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            struct Op;
            impl ForwardOp for Op {
                fn run<E: TestFloat>(&self, $x: &[Tensor<E>]) -> Tensor<E> {
                    $body
                }
            }
            check_forward(stringify!($name), &Op, &$inputs, $tol);
        }
    };
}

/// `values` as a tensor of type `E` (rounded once from f64).
fn tensor<E: TestFloat>(values: &[f64], shape: &[usize]) -> Tensor<E> {
    t64(values, shape).cast::<E>()
}

/// Asserts a result of type `E` against hand-computed values, to `rel` times the type's base tolerance
/// (1e-12 for f64), relative with an absolute floor of the same size.
#[track_caller]
fn assert_hand<E: TestFloat>(t: &Tensor<E>, shape: &[usize], want: &[f64], rel: f64) {
    assert_eq!(t.shape(), shape, "shape in {}", E::DTYPE);
    let tol = base_tol(E::DTYPE) * rel;
    assert_close_slices(
        &t.to_f64().to_vec(),
        want,
        tol,
        tol,
        &format!("hand-computed case in {}", E::DTYPE),
    );
}

/// Runs a generic test body in all four float types.
macro_rules! all_types {
    ($f:ident) => {
        $f::<f64>();
        $f::<f32>();
        $f::<bf16>();
        $f::<f16>();
    };
}

// ----------------------------------------------------------------------------------------------------
// The comparison itself
// ----------------------------------------------------------------------------------------------------

/// The multi-type comparison fails for an op that behaves differently in low precision.
#[test]
fn comparison_detects_a_wrong_low_precision_result() {
    struct Wrong;
    impl ForwardOp for Wrong {
        fn run<E: TestFloat>(&self, x: &[Tensor<E>]) -> Tensor<E> {
            // Off by 2% only outside f64: outside bf16's 1e-2 tolerance.
            let factor = if E::DTYPE == DType::F64 { 1.0 } else { 1.02 };
            &x[0] * factor
        }
    }
    let caught = common::catch_panic(|| {
        check_forward_in::<bf16>("wrong", &Wrong, &[randn([5], 1)], Tol::ROUNDED)
    });
    assert!(caught.message.contains("element"), "{}", caught.message);
}

// ----------------------------------------------------------------------------------------------------
// Elementwise
// ----------------------------------------------------------------------------------------------------

forward_test!(
    /// neg, abs and square on normal inputs.
    fwd_neg_abs_square, [&randn([3, 7], 10) * 3.0], Tol::ROUNDED,
    |x| Tensor::cat(&[x[0].neg(), x[0].abs(), x[0].square()], 0)
);
forward_test!(
    /// exp on inputs up to about ±9 (each result rounded once; e^9 fits f16).
    fwd_exp, [&randn([3, 7], 11) * 3.0], Tol::ROUNDED, |x| x[0].exp()
);
forward_test!(
    /// tanh on normal inputs.
    fwd_tanh, [randn([3, 7], 12)], Tol::ROUNDED, |x| x[0].tanh()
);
forward_test!(
    /// sigmoid on wide inputs (both branches of the stable form).
    fwd_sigmoid, [&randn([3, 7], 13) * 5.0], Tol::ROUNDED, |x| x[0].sigmoid()
);
forward_test!(
    /// silu on normal inputs.
    fwd_silu, [&randn([3, 7], 14) * 3.0], Tol::ROUNDED, |x| x[0].silu()
);
forward_test!(
    /// gelu (exact erf form) on normal inputs.
    fwd_gelu, [&randn([3, 7], 15) * 3.0], Tol::ROUNDED, |x| x[0].gelu()
);
forward_test!(
    /// softplus including inputs beyond its threshold of 20 (f16 can hold them).
    fwd_softplus, [t64(&[-30.0, -5.0, -0.5, 0.0, 0.25, 3.0, 19.0, 21.0, 40.0], [9])],
    Tol::ROUNDED, |x| x[0].softplus()
);
forward_test!(
    /// relu on inputs away from 0.
    fwd_relu, [away_from_zero([17], 0.01, 16)], Tol::EXACT, |x| x[0].relu()
);
forward_test!(
    /// sqrt on positive inputs.
    fwd_sqrt, [uniform([17], 0.1, 9.0, 17)], Tol::ROUNDED, |x| x[0].sqrt()
);
forward_test!(
    /// rsqrt on positive inputs.
    fwd_rsqrt, [uniform([17], 0.1, 9.0, 18)], Tol::ROUNDED, |x| x[0].rsqrt()
);
forward_test!(
    /// reciprocal on inputs away from 0.
    fwd_reciprocal, [away_from_zero([17], 0.1, 19)], Tol::ROUNDED, |x| x[0].reciprocal()
);
forward_test!(
    /// log on positive inputs.
    fwd_log, [uniform([17], 0.1, 9.0, 20)], Tol::ROUNDED, |x| x[0].log()
);
forward_test!(
    /// log1p, including tiny inputs where the naive ln(1+x) loses everything.
    fwd_log1p, [t64(&[-0.9, -1e-4, -3e-7, 1e-8, 2e-5, 0.3, 5.0], [7])],
    Tol::ROUNDED, |x| x[0].log1p()
);
forward_test!(
    /// expm1, including tiny inputs where the naive e^x-1 loses everything.
    fwd_expm1, [t64(&[-3.0, -1e-4, -3e-7, 1e-8, 2e-5, 0.3, 5.0], [7])],
    Tol::ROUNDED, |x| x[0].expm1()
);
forward_test!(
    /// pow with fractional, negative and integer exponents.
    fwd_pow, [uniform([17], 0.2, 4.0, 21)], Tol::ROUNDED,
    |x| &(&x[0].pow(2.5) + &x[0].pow(-1.5)) + &x[0].pow(3.0)
);
forward_test!(
    /// clamp on inputs away from the bounds.
    fwd_clamp, [avoid(&randn([17], 22), &[-0.5, 0.75], 0.01)], Tol::EXACT,
    |x| x[0].clamp(-0.5, 0.75)
);
forward_test!(
    /// Scalar operators on both sides with exactly representable constants.
    fwd_scalar_ops, [away_from_zero([3, 5], 0.25, 23)], Tol::scaled(4.0),
    |x| &(&(&(2.5 - &x[0]) * 0.5) + &(&x[0] / 4.0)) - &(2.0 / &x[0])
);
forward_test!(
    /// Many elements: the parallel, chunked elementwise path (offsets of every chunk).
    fwd_large_elementwise, [randn([40_001], 24)], Tol::ROUNDED, |x| x[0].tanh()
);

// ----------------------------------------------------------------------------------------------------
// Binary ops
// ----------------------------------------------------------------------------------------------------

forward_test!(
    /// add with broadcasting [3,1,5] + [4,1].
    fwd_add, [randn([3, 1, 5], 30), randn([4, 1], 31)], Tol::ROUNDED, |x| &x[0] + &x[1]
);
forward_test!(
    /// sub with broadcasting against a scalar-shaped tensor.
    fwd_sub, [randn([2, 3], 32), randn([], 33)], Tol::ROUNDED, |x| &x[0] - &x[1]
);
forward_test!(
    /// mul with broadcasting [3] * [2,1,3].
    fwd_mul, [randn([3], 34), randn([2, 1, 3], 35)], Tol::ROUNDED, |x| &x[0] * &x[1]
);
forward_test!(
    /// div with broadcasting, denominators away from 0.
    fwd_div, [randn([3, 1, 5], 36), away_from_zero([4, 1], 0.2, 37)], Tol::ROUNDED,
    |x| &x[0] / &x[1]
);
forward_test!(
    /// maximum and minimum with broadcasting (selections: exact).
    fwd_maximum_minimum, [grid([3, 1, 5], 0.05, 38), grid([4, 1], -0.05, 39)], Tol::EXACT,
    |x| Tensor::cat(&[x[0].maximum(&x[1]), x[0].minimum(&x[1])], 0)
);
forward_test!(
    /// where_ with a broadcast condition (a selection: exact).
    fwd_where, [randn([3, 1, 5], 40), randn([4, 5], 41)], Tol::EXACT,
    |x| x[0].where_(&x[0].gt(&x[1]), &x[1])
);

/// Comparisons give the same booleans in every type as in f64 on the same rounded values.
#[test]
fn fwd_comparisons() {
    fn check<E: TestFloat>() {
        let (a, b) = (grid([3, 1, 5], 0.0, 42), grid([4, 5], 0.0, 43));
        let (la, lb) = (a.cast::<E>(), b.cast::<E>());
        let (ea, eb) = (la.to_f64(), lb.to_f64());
        let pairs = [
            (la.eq(&lb), ea.eq(&eb)),
            (la.ne(&lb), ea.ne(&eb)),
            (la.lt(&lb), ea.lt(&eb)),
            (la.le(&lb), ea.le(&eb)),
            (la.gt(&lb), ea.gt(&eb)),
            (la.ge(&lb), ea.ge(&eb)),
        ];
        for (got, want) in pairs {
            assert_eq!(got.shape(), &[3, 4, 5]);
            assert_eq!(got.to_vec(), want.to_vec(), "{}", E::DTYPE);
        }
        // The grid has ties, so the comparisons are also tested where lt and le differ.
        assert!(ea.eq(&eb).to_vec().contains(&true), "no ties in the inputs");
    }
    all_types!(check);
}

/// Hand-computed comparisons: [1, 2, 3] against 2.
#[test]
fn hand_comparisons() {
    let (a, b) = (t64(&[1.0, 2.0, 3.0], [3]), t64(&[2.0], [1]));
    assert_eq!(a.lt(&b).to_vec(), vec![true, false, false]);
    assert_eq!(a.le(&b).to_vec(), vec![true, true, false]);
    assert_eq!(a.eq(&b).to_vec(), vec![false, true, false]);
    assert_eq!(a.ne(&b).to_vec(), vec![true, false, true]);
    assert_eq!(a.gt(&b).to_vec(), vec![false, false, true]);
    assert_eq!(a.ge(&b).to_vec(), vec![false, true, true]);
}

// ----------------------------------------------------------------------------------------------------
// Reductions
// ----------------------------------------------------------------------------------------------------

forward_test!(
    /// sum over all, one, and non-adjacent dims with keepdim (f32 accumulation, one rounding).
    fwd_sum, [randn([3, 4, 5], 50)], Tol::scaled(1.0),
    |x| Tensor::cat(
        &[x[0].sum(..).reshape([1]), x[0].sum(1).flatten(), x[0].sum_keepdim([0, 2]).flatten()],
        0,
    )
);
forward_test!(
    /// mean over all, one, and non-adjacent dims with keepdim.
    fwd_mean, [randn([3, 4, 5], 51)], Tol::scaled(1.0),
    |x| Tensor::cat(
        &[x[0].mean(..).reshape([1]), x[0].mean(-1).flatten(), x[0].mean_keepdim([2, 0]).flatten()],
        0,
    )
);
forward_test!(
    /// max and min over one and non-adjacent dims (selections: exact).
    fwd_max_min, [spaced([3, 4, 5], 52)], Tol::EXACT,
    |x| Tensor::cat(
        &[
            x[0].max(1).flatten(),
            x[0].min([0, 2]).flatten(),
            x[0].max_keepdim(..).flatten(),
            x[0].min_keepdim(-1).flatten(),
        ],
        0,
    )
);
forward_test!(
    /// var over one and non-adjacent dims.
    fwd_var, [randn([3, 4, 5], 53)], Tol::scaled(1.0),
    |x| Tensor::cat(&[x[0].var(1).flatten(), x[0].var_keepdim([0, 2]).flatten()], 0)
);
forward_test!(
    /// norm over one, all and non-adjacent dims.
    fwd_norm, [randn([3, 4, 5], 54)], Tol::ROUNDED,
    |x| Tensor::cat(
        &[x[0].norm(1).flatten(), x[0].norm(..).reshape([1]), x[0].norm([0, 2]).flatten()],
        0,
    )
);
forward_test!(
    /// cumsum along the middle dim (partial sums cancel: error relative to them).
    fwd_cumsum, [randn([3, 17, 5], 55)], Tol::scaled(4.0), |x| x[0].cumsum(1)
);
forward_test!(
    /// logsumexp over one and non-adjacent dims, with inputs large enough to need the max shift.
    fwd_logsumexp, [&randn([3, 4, 5], 56) * 30.0], Tol::scaled(1.0),
    |x| Tensor::cat(&[x[0].logsumexp(1).flatten(), x[0].logsumexp_keepdim([0, 2]).flatten()], 0)
);
forward_test!(
    /// A long reduction (the 8-way unrolled sum) and reductions of many rows.
    fwd_long_sum, [randn([4, 1001], 57)], Tol::scaled(30.0),
    |x| Tensor::cat(&[x[0].sum(1), x[0].mean(0).sum(..).reshape([1])], 0)
);

/// argmax/argmin pick the same (first) index in every type as f64 on the same rounded values.
#[test]
fn fwd_argmax_argmin() {
    fn check<E: TestFloat>() {
        let x = randn([3, 7, 5], 58).cast::<E>();
        let e = x.to_f64();
        for dim in [0, 1, -1] {
            assert_eq!(
                x.argmax(dim).to_vec(),
                e.argmax(dim).to_vec(),
                "{}",
                E::DTYPE
            );
            assert_eq!(
                x.argmin(dim).to_vec(),
                e.argmin(dim).to_vec(),
                "{}",
                E::DTYPE
            );
        }
        assert_eq!(x.argmax(1).shape(), &[3, 5]);
    }
    all_types!(check);
}

/// Hand-computed argmax/argmin: ties resolve to the first index.
#[test]
fn hand_argmax_argmin() {
    let x = t64(&[1.0, 5.0, 5.0, 3.0, 0.0, 5.0], [2, 3]);
    assert_eq!(x.argmax(1).to_vec(), vec![1, 2]);
    assert_eq!(x.argmin(1).to_vec(), vec![0, 1]);
    assert_eq!(x.argmax(0).to_vec(), vec![1, 0, 0]);
    assert_eq!(x.argmin(0).to_vec(), vec![0, 1, 0]);
}

/// Hand-computed reductions: sum, mean, max, min, var, norm, cumsum, logsumexp.
#[test]
fn hand_reductions() {
    fn check<E: TestFloat>() {
        let x = tensor::<E>(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
        assert_hand(&x.sum(..), &[], &[21.0], 1.0);
        assert_hand(&x.sum(0), &[3], &[5.0, 7.0, 9.0], 1.0);
        assert_hand(&x.sum_keepdim(1), &[2, 1], &[6.0, 15.0], 1.0);
        assert_hand(&x.mean(1), &[2], &[2.0, 5.0], 1.0);
        assert_hand(&x.max(0), &[3], &[4.0, 5.0, 6.0], 0.0);
        assert_hand(&x.min(1), &[2], &[1.0, 4.0], 0.0);
        assert_hand(&x.var(1), &[2], &[1.0, 1.0], 1.0);
        assert_hand(&x.var(..), &[], &[3.5], 1.0);
        assert_hand(&x.cumsum(1), &[2, 3], &[1.0, 3.0, 6.0, 4.0, 9.0, 15.0], 1.0);
        assert_hand(&x.cumsum(0), &[2, 3], &[1.0, 2.0, 3.0, 5.0, 7.0, 9.0], 1.0);
        let v = tensor::<E>(&[3.0, 4.0], &[2]);
        assert_hand(&v.norm(..), &[], &[5.0], 1.0);
        let l = tensor::<E>(&[0.0, 2f64.ln(), 3f64.ln()], &[3]);
        assert_hand(&l.logsumexp(0), &[], &[6f64.ln()], 1.0);
    }
    all_types!(check);
}

/// Reductions over an empty dimension: sum is 0, mean is NaN (as documented and as PyTorch), backward works.
#[test]
fn hand_reduce_over_empty_dimension() {
    let e = Tensor::<f64>::zeros([0, 3]);
    assert_values_exact(&e.sum(0), &[3], &[0.0; 3]);
    assert!(e.mean(0).to_vec().iter().all(|v| v.is_nan()));
    assert_values_exact(&e.sum(..), &[], &[0.0]);
    let leaf = e.with_grad();
    let grads = leaf.sum(..).backward();
    assert_eq!(grads.get(&leaf).unwrap().shape(), &[0, 3]);
}

// ----------------------------------------------------------------------------------------------------
// Accumulation in f32 for the 16-bit types
// ----------------------------------------------------------------------------------------------------

/// A bf16 sum of 10,000 ones is bf16(10000), not 256; summed after a cast to f32 it is exactly 10000.
#[test]
fn bf16_sum_of_ten_thousand_ones() {
    // Naive bf16 accumulation would stall at 256, where adding 1 rounds back to 256.
    let ones = Tensor::<bf16>::ones([10_000]);
    let s = ones.sum(..);
    assert_eq!(s.dtype(), DType::BF16);
    assert_eq!(s.item(), bf16::from_f32(10_000.0));
    assert!(s.item().to_f32() > 9_000.0);
    assert_eq!(ones.to_f32().sum(..).item(), 10_000.0);
    // The same along a dimension, with several rows.
    let rows = Tensor::<bf16>::ones([3, 10_000]).sum(1);
    assert_eq!(rows.to_vec(), vec![bf16::from_f32(10_000.0); 3]);
}

/// An f16 sum of 10,000 ones is exactly 10000 (representable in f16; f16 accumulation stalls at 2048).
#[test]
fn f16_sum_of_ten_thousand_ones() {
    let s = Tensor::<f16>::ones([10_000]).sum(..);
    assert_eq!(s.item(), f16::from_f32(10_000.0));
    assert_eq!(s.item().to_f32(), 10_000.0);
    let strided = Tensor::<f16>::ones([10_000, 3]).sum(0);
    assert_eq!(strided.to_vec(), vec![f16::from_f32(10_000.0); 3]);
}

/// The mean of 70,000 ones is exactly 1 in bf16 and in f16 (whose sum would overflow at 65504).
#[test]
fn mean_of_seventy_thousand_ones() {
    assert_eq!(Tensor::<bf16>::ones([70_000]).mean(..).item(), bf16::ONE);
    assert_eq!(Tensor::<f16>::ones([70_000]).mean(..).item(), f16::ONE);
    assert_eq!(
        Tensor::<bf16>::ones([2, 70_000]).mean(-1).to_vec(),
        vec![bf16::ONE; 2]
    );
}

/// cumsum of 1,000 bf16 ones reaches bf16(1000) (a bf16 running sum would stall at 256).
#[test]
fn bf16_cumsum_accumulates_in_f32() {
    let c = Tensor::<bf16>::ones([1_000]).cumsum(0).to_vec();
    assert_eq!(c[999], bf16::from_f32(1_000.0));
    assert_eq!(c[299], bf16::from_f32(300.0));
}

/// bf16 matmul with a long inner dimension accumulates in f32: 1000 products of ones give 1000.
#[test]
fn bf16_matmul_accumulates_in_f32() {
    let a = Tensor::<bf16>::ones([2, 1_000]);
    let b = Tensor::<bf16>::ones([1_000, 3]);
    assert_eq!(a.matmul(&b).to_vec(), vec![bf16::from_f32(1_000.0); 6]);
}

forward_test!(
    /// softmax of width 4096 in each low type matches f64 (a low-precision sum of exps would not).
    fwd_softmax_wide_4096, [&randn([3, 4096], 60) * 2.0], Tol::ROUNDED, |x| x[0].softmax(-1)
);
forward_test!(
    /// layer_norm of width 4096 in each low type matches f64 (low-precision statistics would not).
    fwd_layer_norm_wide_4096, [&(&randn([3, 4096], 61) * 3.0) + 5.0], Tol::scaled(1.0),
    |x| x[0].layer_norm(&[4096], None, None, 1e-5)
);

/// bf16 softmax and layer_norm of width 4096 on offset data (around 100) match f64 to bf16 tolerance.
#[test]
fn bf16_wide_rows_use_f32_statistics() {
    let x = (&randn([2, 4096], 62) + 100.0).to_bf16();
    let e = x.to_f64();
    let tol = base_tol(DType::BF16);
    let (got, want) = (x.softmax(-1), e.softmax(-1));
    assert_close_slices(&got.to_f64().to_vec(), &want.to_vec(), tol, 1e-7, "softmax");
    let total = got.to_f32().sum(-1).to_vec();
    assert!(total.iter().all(|s| (s - 1.0).abs() < 0.01), "{total:?}");
    let (got, want) = (
        x.layer_norm(&[4096], None, None, 1e-5),
        e.layer_norm(&[4096], None, None, 1e-5),
    );
    assert_close_slices(
        &got.to_f64().to_vec(),
        &want.to_vec(),
        tol,
        tol,
        "layer_norm",
    );
}

// ----------------------------------------------------------------------------------------------------
// Softmax, norms, losses
// ----------------------------------------------------------------------------------------------------

forward_test!(
    /// softmax along a middle dim.
    fwd_softmax_middle, [&randn([3, 7, 5], 70) * 3.0], Tol::ROUNDED, |x| x[0].softmax(1)
);
forward_test!(
    /// log_softmax along a middle dim (x - max - ln Σ cancels: error relative to |x|).
    fwd_log_softmax_middle, [&randn([3, 7, 5], 71) * 3.0], Tol::scaled(4.0),
    |x| x[0].log_softmax(1)
);
forward_test!(
    /// layer_norm over two trailing dims with weight and bias (three roundings, the last an add).
    fwd_layer_norm_affine, [randn([2, 3, 5], 72), randn([3, 5], 73), randn([3, 5], 74)],
    Tol::scaled(4.0),
    |x| x[0].layer_norm(&[3, 5], Some(&x[1]), Some(&x[2]), 1e-5)
);
forward_test!(
    /// rms_norm with weight (two roundings of a product).
    fwd_rms_norm, [randn([2, 3, 7], 75), randn([7], 76)], Tol { rel: 2.0, scale: 0.01 },
    |x| x[0].rms_norm(&[7], Some(&x[1]), 1e-6)
);
forward_test!(
    /// group_norm with per-channel weight and bias.
    fwd_group_norm, [randn([2, 6, 3, 2], 77), randn([6], 78), randn([6], 79)],
    Tol::scaled(4.0),
    |x| x[0].group_norm(3, Some(&x[1]), Some(&x[2]), 1e-5)
);
forward_test!(
    /// cross_entropy on 3-D logits (log-probabilities rounded, then averaged).
    fwd_cross_entropy, [&randn([2, 3, 5], 80) * 2.0], Tol { rel: 2.0, scale: 0.01 },
    |x| x[0].cross_entropy(&labels([2, 3], 5, 81))
);
forward_test!(
    /// nll_loss on log-probabilities.
    fwd_nll_loss, [probabilities([7, 5], 82).log()], Tol::ROUNDED,
    |x| x[0].nll_loss(&labels([7], 5, 83))
);
forward_test!(
    /// mse_loss.
    fwd_mse_loss, [randn([3, 7], 84), randn([3, 7], 85)], Tol::ROUNDED,
    |x| x[0].mse_loss(&x[1])
);
forward_test!(
    /// l1_loss.
    fwd_l1_loss, [randn([3, 7], 86), randn([3, 7], 87)], Tol::ROUNDED, |x| x[0].l1_loss(&x[1])
);
forward_test!(
    /// bce_with_logits with soft targets and large logits (terms of size |x| cancel).
    fwd_bce_with_logits, [&randn([3, 7], 88) * 5.0, uniform([3, 7], 0.0, 1.0, 89)],
    Tol::scaled(4.0), |x| x[0].bce_with_logits(&x[1])
);
forward_test!(
    /// binary_cross_entropy on probabilities, including values near 0 and 1.
    fwd_binary_cross_entropy,
    [uniform([3, 7], 0.01, 0.99, 90), uniform([3, 7], 0.0, 1.0, 91)],
    Tol::scaled(1.0), |x| x[0].binary_cross_entropy(&x[1])
);
forward_test!(
    /// kl_div of log-probabilities against probabilities (signed terms cancel).
    fwd_kl_div, [probabilities([3, 7], 92).log(), probabilities([3, 7], 93)],
    Tol::scaled(1.0), |x| x[0].kl_div(&x[1])
);
forward_test!(
    /// cosine_similarity with broadcasting along the last dim.
    fwd_cosine_similarity, [randn([3, 1, 17], 94), randn([4, 17], 95)], Tol::scaled(1.0),
    |x| x[0].cosine_similarity(&x[1], -1, 1e-8)
);

/// Hand-computed softmax and log_softmax of [0, ln 2, ln 3]: [1/6, 2/6, 3/6].
#[test]
fn hand_softmax() {
    fn check<E: TestFloat>() {
        let x = tensor::<E>(&[0.0, 2f64.ln(), 3f64.ln()], &[1, 3]);
        assert_hand(
            &x.softmax(-1),
            &[1, 3],
            &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0],
            1.0,
        );
        let logs = [-(6f64.ln()), (1.0f64 / 3.0).ln(), -(2f64.ln())];
        assert_hand(&x.log_softmax(1), &[1, 3], &logs, 1.0);
        // Along dim 0 of the transpose: the same values.
        assert_hand(
            &x.t().softmax(0),
            &[3, 1],
            &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0],
            1.0,
        );
        // Shifting by 1000 changes nothing (stability).
        let big = tensor::<E>(&[1000.0, 1000.0], &[2]);
        assert_hand(&big.softmax(0), &[2], &[0.5, 0.5], 1.0);
    }
    all_types!(check);
}

/// Hand-computed layer_norm, rms_norm and group_norm.
#[test]
fn hand_norms() {
    fn check<E: TestFloat>() {
        let x = tensor::<E>(&[1.0, 2.0, 3.0, 4.0], &[1, 4]);
        let s = 1.25f64.sqrt();
        let want = [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s];
        assert_hand(&x.layer_norm(&[4], None, None, 0.0), &[1, 4], &want, 1.0);
        let w = tensor::<E>(&[2.0, 2.0, 2.0, 2.0], &[4]);
        let b = tensor::<E>(&[1.0, 1.0, 1.0, 1.0], &[4]);
        let affine = want.map(|v| 2.0 * v + 1.0);
        assert_hand(
            &x.layer_norm(&[4], Some(&w), Some(&b), 0.0),
            &[1, 4],
            &affine,
            2.0,
        );
        let r = tensor::<E>(&[3.0, 4.0], &[2]);
        let rms = 12.5f64.sqrt();
        assert_hand(
            &r.rms_norm(&[2], None, 0.0),
            &[2],
            &[3.0 / rms, 4.0 / rms],
            1.0,
        );
        // group_norm with 2 groups of 2 channels × 1 position: each group is [a, b] -> [-1, 1].
        let g = tensor::<E>(&[1.0, 3.0, 10.0, 20.0], &[1, 4, 1]);
        assert_hand(
            &g.group_norm(2, None, None, 0.0),
            &[1, 4, 1],
            &[-1.0, 1.0, -1.0, 1.0],
            1.0,
        );
    }
    all_types!(check);
}

/// Hand-computed losses: cross_entropy, nll, mse, l1, bce (both forms), kl_div, cosine similarity.
#[test]
fn hand_losses() {
    fn check<E: TestFloat>() {
        let logits = tensor::<E>(
            &[0.0, 2f64.ln(), 3f64.ln(), 0.0, 2f64.ln(), 3f64.ln()],
            &[2, 3],
        );
        let ce = logits.cross_entropy(&idx(&[2, 0], [2]));
        assert_hand(&ce, &[], &[(2f64.ln() + 6f64.ln()) / 2.0], 1.0);
        let nll = tensor::<E>(&[-1.0, -2.0, -3.0, -4.0], &[2, 2]).nll_loss(&idx(&[1, 0], [2]));
        assert_hand(&nll, &[], &[2.5], 1.0);
        let (a, b) = (
            tensor::<E>(&[1.0, 2.0], &[2]),
            tensor::<E>(&[3.0, 5.0], &[2]),
        );
        assert_hand(&a.mse_loss(&b), &[], &[6.5], 1.0);
        assert_hand(&a.l1_loss(&b), &[], &[2.5], 1.0);
        let zeros = tensor::<E>(&[0.0, 0.0], &[2]);
        let t = tensor::<E>(&[1.0, 0.25], &[2]);
        assert_hand(&zeros.bce_with_logits(&t), &[], &[2f64.ln()], 1.0);
        let half = tensor::<E>(&[0.5, 0.5], &[2]);
        assert_hand(&half.binary_cross_entropy(&t), &[], &[2f64.ln()], 1.0);
        // BCE of p = 0 against t = 1 is clamped at 100 (log clamped at -100), as PyTorch.
        let edge = tensor::<E>(&[0.0], &[1]).binary_cross_entropy(&tensor::<E>(&[1.0], &[1]));
        assert_hand(&edge, &[], &[100.0], 1.0);
        let q = tensor::<E>(&[0.25f64.ln(), 0.75f64.ln()], &[2]);
        let kl = (0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln()) / 2.0;
        assert_hand(&q.kl_div(&half), &[], &[kl], 1.0);
        // Zero targets contribute 0 (0·ln 0 = 0).
        let p = tensor::<E>(&[0.0, 1.0], &[2]);
        assert_hand(&q.kl_div(&p), &[], &[-(0.75f64.ln()) / 2.0], 1.0);
        let (u, v) = (
            tensor::<E>(&[1.0, 0.0], &[2]),
            tensor::<E>(&[1.0, 1.0], &[2]),
        );
        let cs = u.cosine_similarity(&v, 0, 1e-8);
        assert_hand(&cs, &[], &[std::f64::consts::FRAC_1_SQRT_2], 1.0);
    }
    all_types!(check);
}

/// Hand-computed unary values: gelu, silu, sigmoid, softplus, tanh, expm1/log1p near zero.
#[test]
fn hand_unary() {
    let x = t64(&[1.0, 0.0, -1.0], [3]);
    assert_hand(
        &x.gelu(),
        &[3],
        &[0.841_344_746_068_542_9, 0.0, -0.158_655_253_931_457_05],
        1.0,
    );
    assert_hand(
        &x.silu(),
        &[3],
        &[0.731_058_578_630_004_9, 0.0, -0.268_941_421_369_995_1],
        1.0,
    );
    assert_hand(
        &x.sigmoid(),
        &[3],
        &[0.731_058_578_630_004_9, 0.5, 0.268_941_421_369_995_1],
        1.0,
    );
    assert_hand(
        &x.softplus(),
        &[3],
        &[1.313_261_687_518_222_8, 2f64.ln(), 0.313_261_687_518_222_8],
        1.0,
    );
    assert_hand(
        &x.tanh(),
        &[3],
        &[0.761_594_155_955_764_9, 0.0, -0.761_594_155_955_764_9],
        1.0,
    );
    let tiny = t64(&[1e-10], [1]);
    assert_hand(&tiny.expm1(), &[1], &[1.000_000_000_05e-10], 1.0);
    assert_hand(&tiny.log1p(), &[1], &[9.999_999_999_5e-11], 1.0);
    let f = Tensor::<f32>::from_vec(vec![1e-6], [1]);
    assert!((f.expm1().item() as f64 - 1.000_000_5e-6).abs() < 2e-13);
}

// ----------------------------------------------------------------------------------------------------
// Matrix products, convolutions, attention
// ----------------------------------------------------------------------------------------------------

forward_test!(
    /// matmul 2-D, with a long inner dim (f32 accumulation; outputs of size √k cancel).
    fwd_matmul_2d, [randn([5, 300], 100), randn([300, 7], 101)], Tol::scaled(20.0),
    |x| x[0].matmul(&x[1])
);
forward_test!(
    /// matmul past the GEMM's row (64) and column (256) blocks.
    fwd_matmul_wide, [randn([65, 20], 99), randn([20, 257], 98)], Tol::scaled(5.0),
    |x| x[0].matmul(&x[1])
);
forward_test!(
    /// matmul with 1-D operands (vector·vector, vector·matrix, matrix·vector).
    fwd_matmul_vectors, [randn([7], 102), randn([7], 103), randn([7, 3], 104), randn([3, 7], 105)],
    Tol::scaled(3.0),
    |x| Tensor::cat(
        &[x[0].matmul(&x[1]).reshape([1]), x[0].matmul(&x[2]), x[3].matmul(&x[1])],
        0,
    )
);
forward_test!(
    /// matmul with broadcast batch dims [2,1,3,4]·[5,4,2] and batched·2-D.
    fwd_matmul_batched, [randn([2, 1, 3, 4], 106), randn([5, 4, 2], 107), randn([4, 3], 108)],
    Tol::scaled(3.0),
    |x| Tensor::cat(&[x[0].matmul(&x[1]).flatten(), x[0].matmul(&x[2]).flatten()], 0)
);
forward_test!(
    /// bmm.
    fwd_bmm, [randn([3, 2, 5], 109), randn([3, 5, 4], 110)], Tol::scaled(3.0),
    |x| x[0].bmm(&x[1])
);
forward_test!(
    /// linear on a 3-D input with bias (the product is rounded before the bias add).
    fwd_linear, [randn([2, 3, 17], 111), randn([4, 17], 112), randn([4], 113)], Tol::scaled(8.0),
    |x| x[0].linear(&x[1], Some(&x[2]))
);
forward_test!(
    /// conv2d with stride 2, padding 1 and bias on odd sizes.
    fwd_conv2d, [randn([2, 3, 7, 5], 114), randn([4, 3, 3, 3], 115), randn([4], 116)],
    Tol::scaled(8.0),
    |x| x[0].conv2d(&x[1], Some(&x[2]), 2, 1)
);
forward_test!(
    /// conv1d with stride 2 and padding 1, no bias.
    fwd_conv1d, [randn([2, 3, 9], 117), randn([4, 3, 3], 118)], Tol::scaled(5.0),
    |x| x[0].conv1d(&x[1], None, 2, 1)
);
forward_test!(
    /// Non-causal attention with lq != lk (probabilities rounded to the type before the product).
    fwd_attention, [randn([2, 3, 8], 119), randn([2, 5, 8], 120), randn([2, 5, 6], 121)],
    Tol::scaled(3.0),
    |x| x[0].attention(&x[1], &x[2], false)
);
forward_test!(
    /// Causal attention.
    fwd_attention_causal,
    [randn([2, 2, 4, 8], 122), randn([2, 2, 4, 8], 123), randn([2, 2, 4, 3], 124)],
    Tol::scaled(3.0),
    |x| x[0].attention(&x[1], &x[2], true)
);

/// Hand-computed matmul of small integer matrices (exact in every type), including 1-D rules.
#[test]
fn hand_matmul() {
    fn check<E: TestFloat>() {
        let a = tensor::<E>(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let b = tensor::<E>(&[5.0, 6.0, 7.0, 8.0], &[2, 2]);
        assert_hand(&a.matmul(&b), &[2, 2], &[19.0, 22.0, 43.0, 50.0], 0.0);
        let v = tensor::<E>(&[1.0, 2.0, 3.0], &[3]);
        let w = tensor::<E>(&[4.0, 5.0, 6.0], &[3]);
        assert_hand(&v.matmul(&w), &[], &[32.0], 0.0);
        let m = tensor::<E>(&[1.0, 0.0, 2.0, 0.0, 1.0, 3.0], &[2, 3]);
        assert_hand(&m.matmul(&v), &[2], &[7.0, 11.0], 0.0);
        assert_hand(
            &tensor::<E>(&[1.0, 1.0], &[2]).matmul(&m),
            &[3],
            &[1.0, 1.0, 5.0],
            0.0,
        );
        let batch = tensor::<E>(&[1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 1.0, 0.0], &[2, 2, 2]);
        assert_hand(
            &batch.matmul(&b),
            &[2, 2, 2],
            &[19.0, 22.0, 43.0, 50.0, 7.0, 8.0, 5.0, 6.0],
            0.0,
        );
        let eye = tensor::<E>(&[1.0, 0.0, 0.0, 1.0], &[2, 2]);
        assert_hand(
            &batch.bmm(&Tensor::stack(&[eye.clone(), eye], 0)),
            &[2, 2, 2],
            &batch.to_f64().to_vec(),
            0.0,
        );
        // linear: x·Wᵀ + b
        let x = tensor::<E>(&[1.0, 2.0], &[1, 2]);
        let wt = tensor::<E>(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]);
        let bias = tensor::<E>(&[0.0, 1.0, 2.0], &[3]);
        assert_hand(&x.linear(&wt, Some(&bias)), &[1, 3], &[1.0, 3.0, 5.0], 0.0);
    }
    all_types!(check);
}

/// Hand-computed conv2d (3×3 image of 1..9, 2×2 ones kernel, with and without stride/padding) and conv1d.
#[test]
fn hand_conv() {
    fn check<E: TestFloat>() {
        let values: Vec<f64> = (1..=9).map(f64::from).collect();
        let x = tensor::<E>(&values, &[1, 1, 3, 3]);
        let k = tensor::<E>(&[1.0; 4], &[1, 1, 2, 2]);
        assert_hand(
            &x.conv2d(&k, None, 1, 0),
            &[1, 1, 2, 2],
            &[12.0, 16.0, 24.0, 28.0],
            0.0,
        );
        let bias = tensor::<E>(&[10.0], &[1]);
        assert_hand(
            &x.conv2d(&k, Some(&bias), 2, 1),
            &[1, 1, 2, 2],
            &[11.0, 15.0, 21.0, 38.0],
            0.0,
        );
        let seq = tensor::<E>(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1, 1, 5]);
        let k1 = tensor::<E>(&[1.0, 0.0, -1.0], &[1, 1, 3]);
        assert_hand(
            &seq.conv1d(&k1, None, 1, 0),
            &[1, 1, 3],
            &[-2.0, -2.0, -2.0],
            0.0,
        );
        assert_hand(
            &seq.conv1d(&k1, None, 2, 1),
            &[1, 1, 3],
            &[-2.0, -2.0, 4.0],
            0.0,
        );
    }
    all_types!(check);
}

/// Hand-computed attention: scores [0, ln 2] weight the values 1:2, and causal masking.
#[test]
fn hand_attention() {
    fn check<E: TestFloat>() {
        // d = 1, so the scale is 1: the scores are q·k = [0, ln 2], probabilities [1/3, 2/3].
        let q = tensor::<E>(&[2f64.ln()], &[1, 1]);
        let k = tensor::<E>(&[0.0, 1.0], &[2, 1]);
        let v = tensor::<E>(&[3.0, 6.0, 30.0, 60.0], &[2, 2]);
        assert_hand(&q.attention(&k, &v, false), &[1, 2], &[21.0, 42.0], 1.0);
        // Causal with two queries: the first sees only key 0, the second both keys.
        let q2 = tensor::<E>(&[5.0, 2f64.ln()], &[2, 1]);
        assert_hand(
            &q2.attention(&k, &v, true),
            &[2, 2],
            &[3.0, 6.0, 21.0, 42.0],
            1.0,
        );
    }
    all_types!(check);
}

// ----------------------------------------------------------------------------------------------------
// Indexing
// ----------------------------------------------------------------------------------------------------

forward_test!(
    /// gather along the middle dim with repeated indices (a selection: exact).
    fwd_gather, [randn([3, 4, 5], 130)], Tol::EXACT, |x| x[0].gather(1, &labels([3, 6, 5], 4, 131))
);
forward_test!(
    /// index_select with repeated indices (exact).
    fwd_index_select, [randn([4, 5, 3], 132)], Tol::EXACT,
    |x| x[0].index_select(1, &idx(&[0, 4, 4, 2, 0], [5]))
);
forward_test!(
    /// embedding with repeated ids (exact).
    fwd_embedding, [randn([7, 3], 133)], Tol::EXACT,
    |x| x[0].embedding(&idx(&[3, 0, 3, 6, 1, 3, 0, 6], [2, 4]))
);
forward_test!(
    /// scatter_add with repeated indices (sums of up to a few values).
    fwd_scatter_add, [randn([3, 4, 5], 134), randn([3, 6, 5], 135)], Tol::scaled(4.0),
    |x| x[0].scatter_add(1, &labels([3, 6, 5], 4, 136), &x[1])
);
forward_test!(
    /// index_add with repeated indices.
    fwd_index_add, [randn([4, 5, 3], 137), randn([4, 6, 3], 138)], Tol::scaled(4.0),
    |x| x[0].index_add(1, &idx(&[0, 4, 4, 2, 0, 4], [6]), &x[1])
);

/// Hand-computed gather, scatter_add, index_select, index_add and embedding.
#[test]
fn hand_indexing() {
    fn check<E: TestFloat>() {
        let x = tensor::<E>(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let g = x.gather(1, &idx(&[0, 0, 1, 0], [2, 2]));
        assert_hand(&g, &[2, 2], &[1.0, 1.0, 4.0, 3.0], 0.0);
        let s = x.scatter_add(
            0,
            &idx(&[1, 1, 1, 0], [2, 2]),
            &tensor::<E>(&[10.0, 20.0, 30.0, 40.0], &[2, 2]),
        );
        assert_hand(&s, &[2, 2], &[1.0, 42.0, 43.0, 24.0], 0.0);
        let sel = x.index_select(0, &idx(&[1, 1, 0], [3]));
        assert_hand(&sel, &[3, 2], &[3.0, 4.0, 3.0, 4.0, 1.0, 2.0], 0.0);
        let added = x.index_add(
            1,
            &idx(&[1, 1], [2]),
            &tensor::<E>(&[10.0, 20.0, 30.0, 40.0], &[2, 2]),
        );
        assert_hand(&added, &[2, 2], &[1.0, 32.0, 3.0, 74.0], 0.0);
        let table = tensor::<E>(&[0.0, 1.0, 10.0, 11.0, 20.0, 21.0], &[3, 2]);
        let e = table.embedding(&idx(&[2, 0, 2], [3]));
        assert_hand(&e, &[3, 2], &[20.0, 21.0, 0.0, 1.0, 20.0, 21.0], 0.0);
        assert_eq!(table.embedding(&idx(&[1, 2], [1, 2])).shape(), &[1, 2, 2]);
    }
    all_types!(check);
}

/// bf16 index_add of 1,000 ones into one slot gives bf16(1000): repeated indices accumulate in f32.
#[test]
fn bf16_index_add_repeated_accumulates_in_f32() {
    let base = Tensor::<bf16>::zeros([1, 2]);
    let ids = Tensor::<i64>::zeros([1_000]);
    let src = Tensor::<bf16>::ones([1_000, 2]);
    let out = base.index_add(0, &ids, &src);
    assert_eq!(out.to_vec(), vec![bf16::from_f32(1_000.0); 2]);
}

/// bf16 scatter_add of 1,000 ones into one slot gives bf16(1000): repeated indices accumulate in f32.
#[test]
fn bf16_scatter_add_repeated_accumulates_in_f32() {
    let base = Tensor::<bf16>::zeros([1, 2]);
    let index = Tensor::<i64>::zeros([1, 1_000]);
    let src = Tensor::<bf16>::ones([1, 1_000]);
    let out = base.scatter_add(1, &index, &src);
    assert_eq!(out.to_vec(), vec![bf16::from_f32(1_000.0), bf16::ZERO]);
}

/// The bf16 embedding gradient of an id used 1,000 times is bf16(1000) (PyTorch accumulates it in f32).
#[test]
fn bf16_embedding_grad_repeated_id_accumulates_in_f32() {
    let table = Tensor::<bf16>::zeros([3, 2]).with_grad();
    let ids = Tensor::<i64>::ones([1_000]);
    let grads = table.embedding(&ids).to_f32().sum(..).backward();
    let g = grads.get(&table).unwrap().to_vec();
    assert_eq!(g[2..4], [bf16::from_f32(1_000.0); 2]);
}

/// The bf16 gather gradient of a position gathered 1,000 times is bf16(1000).
#[test]
fn bf16_gather_grad_repeated_index_accumulates_in_f32() {
    let x = Tensor::<bf16>::zeros([1, 3]).with_grad();
    let index = Tensor::<i64>::zeros([1, 1_000]);
    let grads = x.gather(1, &index).to_f32().sum(..).backward();
    assert_eq!(grads.get(&x).unwrap().to_vec()[0], bf16::from_f32(1_000.0));
}

// ----------------------------------------------------------------------------------------------------
// Shape ops, casts, dropout
// ----------------------------------------------------------------------------------------------------

forward_test!(
    /// reshape, flatten, squeeze, unsqueeze, permute, transpose, t, narrow (pure data movement).
    fwd_shape_ops, [randn([2, 3, 5], 140)], Tol::EXACT,
    |x| {
        let parts = [
            x[0].reshape([5, 6]).flatten(),
            x[0].unsqueeze(1).squeeze(1).flatten(),
            x[0].permute(&[2, 0, 1]).flatten(),
            x[0].transpose(0, 2).flatten(),
            x[0].reshape([6, 5]).t().flatten(),
            x[0].narrow(2, 1, 3).flatten(),
        ];
        Tensor::cat(&parts, 0)
    }
);
forward_test!(
    /// cat, stack and broadcast_to (pure data movement).
    fwd_cat_stack_broadcast, [randn([2, 1, 3], 141), randn([2, 4, 3], 142), randn([3, 1], 143)],
    Tol::EXACT,
    |x| {
        let parts = [
            Tensor::cat(&[&x[0], &x[1], &x[0]], 1).flatten(),
            Tensor::stack(&[&x[0], &x[0]], 1).flatten(),
            x[2].broadcast_to([2, 3, 4]).flatten(),
        ];
        Tensor::cat(&parts, 0)
    }
);

/// Hand-computed shape ops on arange(6).
#[test]
fn hand_shape_ops() {
    let x = Tensor::<f64>::arange(6).reshape([2, 3]);
    assert_values_exact(&x.t(), &[3, 2], &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert_values_exact(&x.narrow(1, 1, 2), &[2, 2], &[1.0, 2.0, 4.0, 5.0]);
    let y = Tensor::<f64>::arange(2).reshape([2, 1]);
    assert_values_exact(
        &Tensor::cat(&[&x, &y], 1),
        &[2, 4],
        &[0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 5.0, 1.0],
    );
    assert_values_exact(
        &Tensor::stack(&[&x, &x], 2),
        &[2, 3, 2],
        &[0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0],
    );
    assert_values_exact(&y.broadcast_to([2, 2]), &[2, 2], &[0.0, 0.0, 1.0, 1.0]);
    let z = Tensor::<f64>::arange(24)
        .reshape([2, 3, 4])
        .permute(&[2, 0, 1]);
    assert_eq!(z.shape(), &[4, 2, 3]);
    assert_eq!(z.to_vec()[..6], [0.0, 4.0, 8.0, 12.0, 16.0, 20.0]);
}

#[track_caller]
fn assert_values_exact(t: &Tensor<f64>, shape: &[usize], want: &[f64]) {
    assert_eq!(t.shape(), shape);
    assert_eq!(t.to_vec(), want);
}

/// dropout with the same seed drops the same elements in every type; p = 0.5 scales by exactly 2.
#[test]
fn fwd_dropout_same_mask_every_type() {
    fn check<E: TestFloat>() {
        let x = randn([3, 7], 150).cast::<E>();
        let got = x.dropout(0.5, &mut Rng::new(9)).to_f64();
        let want = x.to_f64().dropout(0.5, &mut Rng::new(9));
        assert_eq!(got.to_vec(), want.to_vec(), "{}", E::DTYPE);
        let zeros = want.to_vec().iter().filter(|v| **v == 0.0).count();
        assert!((3..=18).contains(&zeros), "{zeros} of 21 dropped");
        let kept: Vec<(f64, f64)> = x
            .to_f64()
            .to_vec()
            .into_iter()
            .zip(want.to_vec())
            .filter(|p| p.1 != 0.0)
            .collect();
        assert!(kept.iter().all(|(a, b)| *b == 2.0 * a));
        // p = 0 is the identity; p = 1 drops everything.
        assert_eq!(x.dropout(0.0, &mut Rng::new(1)).to_vec(), x.to_vec());
        assert!(
            x.dropout(1.0, &mut Rng::new(1))
                .to_f64()
                .to_vec()
                .iter()
                .all(|v| *v == 0.0)
        );
    }
    all_types!(check);
}

/// Float casts round to nearest even like the `half` crate; overflow gives ±inf, NaN stays NaN.
#[test]
fn casts_match_half() {
    let values = [
        0.0f32,
        -0.0,
        1.0,
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        -2.5e-3,
        3.0e38,
        65_519.0,
        65_520.0,
        1e-8,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    let x = Tensor::<f32>::from_vec(values.to_vec(), [values.len()]);
    let b = x.to_bf16().to_vec();
    let h = x.to_f16().to_vec();
    for (i, &v) in values.iter().enumerate() {
        let (wb, wh) = (bf16::from_f32(v), f16::from_f32(v));
        assert!(
            b[i] == wb || (v.is_nan() && b[i].is_nan()),
            "bf16 of {v}: {:?} vs {wb:?}",
            b[i]
        );
        assert!(
            h[i] == wh || (v.is_nan() && h[i].is_nan()),
            "f16 of {v}: {:?} vs {wh:?}",
            h[i]
        );
    }
    assert_eq!(b[3], bf16::ONE, "a tie rounds to even");
    assert_eq!(
        b[4].to_f32(),
        1.0 + 4.0 / 256.0,
        "a tie rounds to even (up)"
    );
    assert_eq!(h[8], f16::INFINITY, "65520 overflows f16");
    assert_eq!(h[7].to_f32(), 65_504.0);
    // Widening is exact and round-trips.
    assert_eq!(x.to_bf16().to_f32().to_bf16().to_vec()[..12], b[..12]);
    let wide = x.to_f16().to_f64().to_vec();
    assert_eq!(wide[3], 1.0 + 1.0 / 256.0);
}

/// f64 -> bf16/f16 rounds once (no double rounding through f32).
#[test]
fn cast_from_f64_rounds_once() {
    // 1 + 2^-8 + 2^-30 is just above the bf16 midpoint between 1 and 1 + 2^-7; via f32 it would become
    // the midpoint exactly and round (to even) down to 1.
    let x = t64(&[1.0 + 2f64.powi(-8) + 2f64.powi(-30)], [1]);
    assert_eq!(x.to_bf16().item().to_f64(), 1.0 + 2f64.powi(-7));
    // The same for f16: 1 + 2^-11 + 2^-40 must round up to 1 + 2^-10.
    let y = t64(&[1.0 + 2f64.powi(-11) + 2f64.powi(-40)], [1]);
    assert_eq!(y.to_f16().item().to_f64(), 1.0 + 2f64.powi(-10));
    assert_eq!(
        t64(&[0.1], [1]).to_f32().item(),
        0.1f32,
        "f64 -> f32 rounds to nearest"
    );
}

/// Casts to and from i64 and bool: floats truncate toward zero; bools become 0/1.
#[test]
fn casts_integer_and_bool() {
    let x = Tensor::<f32>::from_vec(vec![-1.7, -0.2, 0.0, 2.9, 7.0], [5]);
    assert_eq!(x.cast::<i64>().to_vec(), vec![-1, 0, 0, 2, 7]);
    let labels = Tensor::<i64>::from_vec(vec![-3, 0, 5], [3]);
    assert_eq!(labels.to_f32().to_vec(), vec![-3.0, 0.0, 5.0]);
    assert_eq!(
        labels.to_bf16().to_vec(),
        vec![bf16::from_f32(-3.0), bf16::ZERO, bf16::from_f32(5.0)]
    );
    let mask = x.gt(&Tensor::zeros([1]));
    assert_eq!(mask.to_f64().to_vec(), vec![0.0, 0.0, 0.0, 1.0, 1.0]);
    assert_eq!(mask.cast::<f16>().to_vec()[3], f16::ONE);
    // Casting to the same type is the tensor itself.
    assert_eq!(x.cast::<f32>().to_vec(), x.to_vec());
}

// ----------------------------------------------------------------------------------------------------
// Promotion
// ----------------------------------------------------------------------------------------------------

/// bf16 with f32 promotes to f32 (either order, every operator), with the bf16 values widened exactly.
#[test]
fn promotion_bf16_f32_to_f32() {
    let a = Tensor::<bf16>::from_vec(
        vec![
            bf16::from_f32(1.5),
            bf16::from_f32(-2.0),
            bf16::from_f32(1.0 + 1.0 / 128.0),
        ],
        [3],
    );
    let b = Tensor::<f32>::from_vec(vec![0.25, 1e-3, 3.0], [3]);
    let sum: Tensor<f32> = &a + &b;
    assert_eq!(sum.dtype(), DType::F32);
    assert_eq!(
        sum.to_vec(),
        vec![1.75, -2.0 + 1e-3, 1.0 + 1.0 / 128.0 + 3.0]
    );
    let rev: Tensor<f32> = &b - &a;
    assert_eq!(
        rev.to_vec(),
        vec![0.25 - 1.5, 1e-3 + 2.0, 3.0 - (1.0 + 1.0 / 128.0)]
    );
    let prod: Tensor<f32> = a.mul(&b);
    assert_eq!(prod.to_vec(), vec![0.375, -2e-3, 3.0 * (1.0 + 1.0 / 128.0)]);
    let q: Tensor<f32> = &a / &b;
    assert_eq!(q.to_vec()[0], 6.0);
    let m: Tensor<f32> = a.maximum(&b);
    assert_eq!(m.to_vec(), vec![1.5, 1e-3, 3.0]);
    // Broadcasting still applies across types.
    let col = Tensor::<f32>::from_vec(vec![10.0, 20.0], [2, 1]);
    let bc: Tensor<f32> = &a + &col;
    assert_eq!(bc.shape(), &[2, 3]);
    assert_eq!(bc.to_vec()[3], 21.5);
}

/// f16 with f64 promotes to f64; bf16 with f64 too; scalars never change the type.
#[test]
fn promotion_to_f64_and_scalars() {
    let a = Tensor::<f16>::from_vec(vec![f16::from_f32(0.1), f16::from_f32(-3.0)], [2]);
    let b = t64(&[1e-10, 0.5], [2]);
    let sum: Tensor<f64> = &a + &b;
    assert_eq!(sum.dtype(), DType::F64);
    assert_eq!(
        sum.to_vec(),
        vec![f16::from_f32(0.1).to_f64() + 1e-10, -2.5]
    );
    let rev: Tensor<f64> = &b * &a;
    assert_eq!(rev.to_vec()[1], -1.5);
    let c = Tensor::<bf16>::from_vec(vec![bf16::from_f32(2.0)], [1]);
    let d: Tensor<f64> = c.sub(&t64(&[1e-12], [1]));
    assert_eq!(d.item(), 2.0 - 1e-12);
    let e: Tensor<f64> = c.where_(&Tensor::from_vec(vec![false], [1]), &t64(&[0.125], [1]));
    assert_eq!(e.item(), 0.125);
    let scaled: Tensor<bf16> = &c * 0.5;
    assert_eq!(scaled.item(), bf16::ONE);
    let scaled: Tensor<f16> = 3.0f32 - &a;
    assert_eq!(scaled.dtype(), DType::F16);
}
