//! Gradient checks: for every differentiable op, the gradient from `backward()` matches central finite
//! differences in f64 on seeded random inputs with odd shapes, including broadcasting, batched and
//! index-repeating cases. Inputs are kept away from kinks (0 for relu/abs, clamp bounds) and ties (max,
//! min, maximum, minimum) so that the finite differences are valid.

mod common;

use amp::{DType, Rng, Tensor, bf16, f16};
use common::{
    ForwardOp, GradTol, TestFloat, Tol, assert_values, avoid, away_from_zero, check_grad,
    check_grad_in, check_grad_low, check_grad_with, grid, idx, labels, probabilities, randn,
    spaced, t64, uniform,
};

// ----------------------------------------------------------------------------------------------------
// The checker itself
// ----------------------------------------------------------------------------------------------------

/// The checker rejects a wrong gradient: a custom op whose backward is off by a factor must fail.
#[test]
fn checker_detects_a_wrong_gradient() {
    // `x·x` computed as `x.detach()·x` has a gradient of only `x`, half the true `2x`.
    let caught = common::catch_panic(|| {
        check_grad(|x| &x[0].detach() * &x[0], &[randn([5], 1)]);
    });
    assert!(
        caught.message.contains("finite difference"),
        "{}",
        caught.message
    );
}

/// A leaf used twice accumulates both contributions (`x·x + exp(x)`).
#[test]
fn grad_of_reused_leaf_accumulates() {
    check_grad(|x| &(&x[0] * &x[0]) + &x[0].exp(), &[randn([3, 7], 2)]);
}

// ----------------------------------------------------------------------------------------------------
// Elementwise unary ops
// ----------------------------------------------------------------------------------------------------

/// neg, square, exp, tanh, sigmoid, silu, gelu, softplus and expm1 on unrestricted normal inputs.
#[test]
fn grad_unary_smooth() {
    let x = randn([3, 7], 10);
    check_grad(|x| x[0].neg(), std::slice::from_ref(&x));
    check_grad(|x| x[0].square(), std::slice::from_ref(&x));
    check_grad(|x| x[0].exp(), std::slice::from_ref(&x));
    check_grad(|x| x[0].tanh(), std::slice::from_ref(&x));
    check_grad(|x| x[0].sigmoid(), std::slice::from_ref(&x));
    check_grad(|x| x[0].silu(), std::slice::from_ref(&x));
    check_grad(|x| x[0].gelu(), std::slice::from_ref(&x));
    check_grad(|x| x[0].expm1(), std::slice::from_ref(&x));
    check_grad(|x| (&x[0] * 4.0).softplus(), std::slice::from_ref(&x));
}

/// softplus above its threshold of 20 (where it returns x) and on large negative inputs.
#[test]
fn grad_softplus_tails() {
    let x = t64(&[-30.0, -12.5, 21.0, 35.0, 19.5], [5]);
    check_grad(|x| x[0].softplus(), &[x]);
}

/// sqrt, rsqrt, log and fractional powers on positive inputs; log1p above -1.
#[test]
fn grad_unary_positive_domain() {
    let x = uniform([17], 0.5, 3.0, 11);
    check_grad(|x| x[0].sqrt(), std::slice::from_ref(&x));
    check_grad(|x| x[0].rsqrt(), std::slice::from_ref(&x));
    check_grad(|x| x[0].log(), std::slice::from_ref(&x));
    check_grad(|x| x[0].pow(2.5), std::slice::from_ref(&x));
    check_grad(|x| x[0].pow(-1.5), std::slice::from_ref(&x));
    check_grad(|x| x[0].log1p(), &[uniform([7], -0.7, 3.0, 12)]);
}

/// Integer powers on signed inputs (odd power keeps the sign).
#[test]
fn grad_pow_integer_exponent_signed_inputs() {
    let x = randn([2, 7], 13);
    check_grad(|x| x[0].pow(3.0), std::slice::from_ref(&x));
    check_grad(|x| x[0].pow(2.0), std::slice::from_ref(&x));
}

/// abs, relu and reciprocal on inputs at least 0.1 away from 0.
#[test]
fn grad_unary_kinked_away_from_kink() {
    let x = away_from_zero([3, 1, 7], 0.1, 14);
    check_grad(|x| x[0].abs(), std::slice::from_ref(&x));
    check_grad(|x| x[0].relu(), std::slice::from_ref(&x));
    check_grad(|x| x[0].reciprocal(), std::slice::from_ref(&x));
}

/// clamp passes the gradient inside the bounds and blocks it outside (inputs away from the bounds).
#[test]
fn grad_clamp() {
    let x = avoid(&randn([17], 15), &[-0.5, 0.7], 0.05);
    check_grad(|x| x[0].clamp(-0.5, 0.7), &[x]);
}

/// Tensor-scalar operators with the scalar on either side: + - * / and their f32 scalar forms.
#[test]
fn grad_scalar_operators() {
    let x = away_from_zero([3, 5], 0.3, 16);
    check_grad(|x| &x[0] + 2.5, std::slice::from_ref(&x));
    check_grad(|x| 2.5 + &x[0], std::slice::from_ref(&x));
    check_grad(|x| &x[0] - 1.5, std::slice::from_ref(&x));
    check_grad(|x| 1.5 - &x[0], std::slice::from_ref(&x));
    check_grad(|x| &x[0] * -3.0, std::slice::from_ref(&x));
    check_grad(|x| 0.75 * &x[0], std::slice::from_ref(&x));
    check_grad(|x| &x[0] / 4.0, std::slice::from_ref(&x));
    check_grad(|x| 2.0 / &x[0], std::slice::from_ref(&x));
    check_grad(|x| 2.0f32 / x[0].clone(), std::slice::from_ref(&x));
    check_grad(|x| x[0].clone() * 0.5f32, std::slice::from_ref(&x));
    check_grad(|x| -&x[0], std::slice::from_ref(&x));
}

// ----------------------------------------------------------------------------------------------------
// Binary ops with broadcasting
// ----------------------------------------------------------------------------------------------------

/// Shape pairs covering broadcasting: middle and leading 1s, rank differences, scalar-shaped tensors.
fn broadcast_pairs() -> Vec<(Vec<usize>, Vec<usize>)> {
    vec![
        (vec![3, 1, 5], vec![4, 1]),
        (vec![2, 3], vec![2, 3]),
        (vec![], vec![2, 3]),
        (vec![7, 1], vec![]),
        (vec![1], vec![3, 1, 1]),
        (vec![3], vec![2, 1, 3]),
        (vec![1, 4, 1], vec![3, 1, 2]),
    ]
}

/// add, sub and mul (operators and methods) for every broadcast shape pair.
#[test]
fn grad_add_sub_mul_broadcast() {
    for (k, (sa, sb)) in broadcast_pairs().into_iter().enumerate() {
        let (a, b) = (randn(sa, 100 + k as u64), randn(sb, 200 + k as u64));
        let inputs = [a, b];
        check_grad(|x| &x[0] + &x[1], &inputs);
        check_grad(|x| x[0].sub(&x[1]), &inputs);
        check_grad(|x| &x[0] - &x[1], &inputs);
        check_grad(|x| &x[0] * &x[1], &inputs);
        check_grad(|x| x[1].mul(&x[0]), &inputs);
    }
}

/// div (numerator and denominator) for every broadcast shape pair, denominators away from 0.
#[test]
fn grad_div_broadcast() {
    for (k, (sa, sb)) in broadcast_pairs().into_iter().enumerate() {
        let a = randn(sa.clone(), 300 + k as u64);
        let b = away_from_zero(sb.clone(), 0.5, 400 + k as u64);
        check_grad(|x| &x[0] / &x[1], &[a, b]);
        let a = away_from_zero(sa, 0.5, 500 + k as u64);
        let b = randn(sb, 600 + k as u64);
        check_grad(|x| x[1].div(&x[0]), &[a, b]);
    }
}

/// maximum and minimum for every broadcast shape pair, on tie-free grids.
#[test]
fn grad_maximum_minimum_broadcast() {
    for (k, (sa, sb)) in broadcast_pairs().into_iter().enumerate() {
        let a = grid(sa, 0.05, 700 + k as u64);
        let b = grid(sb, -0.05, 800 + k as u64);
        check_grad(|x| x[0].maximum(&x[1]), &[a.clone(), b.clone()]);
        check_grad(|x| x[0].minimum(&x[1]), &[a, b]);
    }
}

/// A tie in maximum/minimum splits the gradient evenly (as PyTorch).
#[test]
fn grad_maximum_tie_splits() {
    let a = t64(&[1.0, 2.0, 3.0], [3]).with_grad();
    let b = t64(&[1.0, 5.0, 0.0], [3]).with_grad();
    let grads = (&a.maximum(&b) * &t64(&[2.0, 3.0, 4.0], [3]))
        .sum(..)
        .backward();
    assert_values(&grads.get(&a).unwrap(), &[3], &[1.0, 0.0, 4.0]);
    assert_values(&grads.get(&b).unwrap(), &[3], &[1.0, 3.0, 0.0]);
}

/// where_ routes the gradient by the (broadcast) condition to both branches.
#[test]
fn grad_where_broadcast() {
    let cond = randn([3, 1, 5], 900).gt(&Tensor::zeros([1]));
    let (a, b) = (randn([4, 1], 901), randn([3, 4, 5], 902));
    check_grad(move |x| x[0].where_(&cond, &x[1]), &[a, b]);
    let cond = randn([2, 3], 903).lt(&Tensor::zeros([]));
    check_grad(
        move |x| x[0].where_(&cond, &x[1]),
        &[randn([], 904), randn([3], 905)],
    );
}

/// Mixed-type arithmetic sends each leaf a gradient of its own type (f32 leaf + f64 leaf).
#[test]
fn grad_promotion_casts_gradient_back() {
    let a = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0], [3]).with_grad();
    let b = t64(&[0.5], [1]).with_grad();
    let z: Tensor<f64> = &a * &b;
    let grads = (&z * &t64(&[1.0, 2.0, 4.0], [3])).sum(..).backward();
    let ga: Tensor<f32> = grads.get(&a).expect("f32 gradient");
    assert_eq!(ga.dtype(), DType::F32);
    assert_eq!(ga.to_vec(), vec![0.5, 1.0, 2.0]);
    assert_values(&grads.get(&b).unwrap(), &[1], &[1.0 + 4.0 + 12.0]);
}

// ----------------------------------------------------------------------------------------------------
// Reductions
// ----------------------------------------------------------------------------------------------------

/// sum and mean over all, one, negative, adjacent and non-adjacent dims, with and without keepdim.
#[test]
fn grad_sum_mean() {
    let x = randn([3, 4, 5], 20);
    let inputs = std::slice::from_ref(&x);
    check_grad(|x| x[0].sum(..), inputs);
    check_grad(|x| x[0].mean(..), inputs);
    check_grad(|x| x[0].sum(1), inputs);
    check_grad(|x| x[0].sum(-1), inputs);
    check_grad(|x| x[0].sum([0, 2]), inputs);
    check_grad(|x| x[0].sum([1, 2]), inputs);
    check_grad(|x| x[0].sum_keepdim([0, 2]), inputs);
    check_grad(|x| x[0].sum_keepdim(0), inputs);
    check_grad(|x| x[0].mean(0), inputs);
    check_grad(|x| x[0].mean([0, 2]), inputs);
    check_grad(|x| x[0].mean_keepdim([2, 0]), inputs);
    check_grad(|x| x[0].mean_keepdim(-2), inputs);
}

/// max and min (tie-free inputs) over all, one, non-adjacent dims, with and without keepdim.
#[test]
fn grad_max_min() {
    let x = spaced([3, 4, 5], 21);
    let inputs = std::slice::from_ref(&x);
    check_grad(|x| x[0].max(..), inputs);
    check_grad(|x| x[0].min(..), inputs);
    check_grad(|x| x[0].max(1), inputs);
    check_grad(|x| x[0].min(-1), inputs);
    check_grad(|x| x[0].max([0, 2]), inputs);
    check_grad(|x| x[0].min([0, 2]), inputs);
    check_grad(|x| x[0].max_keepdim([0, 2]), inputs);
    check_grad(|x| x[0].min_keepdim(1), inputs);
}

/// Tied maxima share the gradient evenly.
#[test]
fn grad_max_ties_share() {
    let x = t64(&[1.0, 3.0, 3.0, 2.0], [4]).with_grad();
    let grads = (&x.max(..) * 6.0).backward();
    assert_values(&grads.get(&x).unwrap(), &[4], &[0.0, 3.0, 3.0, 0.0]);
}

/// Unbiased var over one, all and non-adjacent dims, with keepdim.
#[test]
fn grad_var() {
    let x = randn([3, 4, 5], 22);
    let inputs = std::slice::from_ref(&x);
    check_grad(|x| x[0].var(1), inputs);
    check_grad(|x| x[0].var(..), inputs);
    check_grad(|x| x[0].var([0, 2]), inputs);
    check_grad(|x| x[0].var_keepdim(-1), inputs);
    check_grad(|x| x[0].var_keepdim([0, 2]), inputs);
}

/// L2 norm over one, all and non-adjacent dims.
#[test]
fn grad_norm() {
    let x = randn([3, 4, 5], 23);
    let inputs = std::slice::from_ref(&x);
    check_grad(|x| x[0].norm(..), inputs);
    check_grad(|x| x[0].norm(1), inputs);
    check_grad(|x| x[0].norm(-1), inputs);
    check_grad(|x| x[0].norm([0, 2]), inputs);
}

/// cumsum along first, middle and last dims.
#[test]
fn grad_cumsum() {
    let x = randn([3, 4, 5], 24);
    let inputs = std::slice::from_ref(&x);
    check_grad(|x| x[0].cumsum(1), inputs);
    check_grad(|x| x[0].cumsum(0), inputs);
    check_grad(|x| x[0].cumsum(-1), inputs);
    check_grad(|x| x[0].cumsum(0), &[randn([7], 25)]);
}

/// logsumexp over one, all and non-adjacent dims, with keepdim.
#[test]
fn grad_logsumexp() {
    let x = randn([3, 4, 5], 26);
    let inputs = std::slice::from_ref(&x);
    check_grad(|x| x[0].logsumexp(1), inputs);
    check_grad(|x| x[0].logsumexp(..), inputs);
    check_grad(|x| x[0].logsumexp([0, 2]), inputs);
    check_grad(|x| x[0].logsumexp_keepdim([0, 2]), inputs);
    check_grad(|x| x[0].logsumexp_keepdim(-1), inputs);
}

/// softmax and log_softmax along first, middle and last dims.
#[test]
fn grad_softmax_log_softmax() {
    let x = randn([3, 4, 5], 27);
    let inputs = std::slice::from_ref(&x);
    check_grad(|x| x[0].softmax(1), inputs);
    check_grad(|x| x[0].log_softmax(1), inputs);
    check_grad(|x| x[0].softmax(-1), inputs);
    check_grad(|x| x[0].log_softmax(0), inputs);
}

/// cosine_similarity along the last dim with broadcasting, and along a middle dim.
#[test]
fn grad_cosine_similarity() {
    check_grad(
        |x| x[0].cosine_similarity(&x[1], -1, 1e-8),
        &[randn([3, 1, 5], 28), randn([4, 5], 29)],
    );
    check_grad(
        |x| x[0].cosine_similarity(&x[1], 1, 1e-8),
        &[randn([2, 7, 3], 30), randn([2, 7, 3], 31)],
    );
}

// ----------------------------------------------------------------------------------------------------
// Normalization
// ----------------------------------------------------------------------------------------------------

/// layer_norm over one and two trailing dims, without and with weight and bias.
#[test]
fn grad_layer_norm() {
    let x = randn([2, 3, 5], 40);
    check_grad(
        |x| x[0].layer_norm(&[5], None, None, 1e-5),
        std::slice::from_ref(&x),
    );
    check_grad(
        |x| x[0].layer_norm(&[5], Some(&x[1]), Some(&x[2]), 1e-5),
        &[x.clone(), randn([5], 41), randn([5], 42)],
    );
    check_grad(
        |x| x[0].layer_norm(&[3, 5], Some(&x[1]), Some(&x[2]), 1e-5),
        &[x, randn([3, 5], 43), randn([3, 5], 44)],
    );
}

/// rms_norm over one and two trailing dims, without and with weight.
#[test]
fn grad_rms_norm() {
    let x = randn([2, 3, 7], 45);
    check_grad(
        |x| x[0].rms_norm(&[7], None, 1e-6),
        std::slice::from_ref(&x),
    );
    check_grad(
        |x| x[0].rms_norm(&[7], Some(&x[1]), 1e-6),
        &[x.clone(), randn([7], 46)],
    );
    check_grad(
        |x| x[0].rms_norm(&[3, 7], Some(&x[1]), 1e-6),
        &[x, randn([3, 7], 47)],
    );
}

/// group_norm on 4-D and 3-D inputs, without and with per-channel weight and bias.
#[test]
fn grad_group_norm() {
    let x = randn([2, 6, 3, 2], 48);
    check_grad(
        |x| x[0].group_norm(3, None, None, 1e-5),
        std::slice::from_ref(&x),
    );
    check_grad(
        |x| x[0].group_norm(2, Some(&x[1]), Some(&x[2]), 1e-5),
        &[x, randn([6], 49), randn([6], 50)],
    );
    check_grad(
        |x| x[0].group_norm(1, Some(&x[1]), Some(&x[2]), 1e-5),
        &[randn([3, 4, 5], 51), randn([4], 52), randn([4], 53)],
    );
}

// ----------------------------------------------------------------------------------------------------
// Losses
// ----------------------------------------------------------------------------------------------------

/// cross_entropy on 1-D, 2-D and 3-D logits (with repeated classes among the targets).
#[test]
fn grad_cross_entropy() {
    let targets = labels([7], 5, 60);
    check_grad(move |x| x[0].cross_entropy(&targets), &[randn([7, 5], 61)]);
    let targets = idx(&[0, 2, 2, 1, 0, 0], [2, 3]);
    check_grad(
        move |x| x[0].cross_entropy(&targets),
        &[randn([2, 3, 3], 62)],
    );
    let target = idx(&[4], []);
    check_grad(move |x| x[0].cross_entropy(&target), &[randn([5], 63)]);
}

/// nll_loss on log-probabilities, 2-D and 3-D.
#[test]
fn grad_nll_loss() {
    let targets = labels([7], 5, 63);
    check_grad(
        move |x| x[0].nll_loss(&targets),
        &[probabilities([7, 5], 64).log()],
    );
    let targets = idx(&[1, 1, 0, 3], [2, 2]);
    check_grad(move |x| x[0].nll_loss(&targets), &[randn([2, 2, 4], 65)]);
}

/// mse_loss with respect to input and target.
#[test]
fn grad_mse_loss() {
    check_grad(
        |x| x[0].mse_loss(&x[1]),
        &[randn([3, 7], 66), randn([3, 7], 67)],
    );
}

/// l1_loss with respect to input and target (differences away from 0).
#[test]
fn grad_l1_loss() {
    let target = randn([3, 7], 68);
    let input = &target + &away_from_zero([3, 7], 0.1, 69);
    check_grad(|x| x[0].l1_loss(&x[1]), &[input, target]);
}

/// bce_with_logits with respect to logits and (soft) targets.
#[test]
fn grad_bce_with_logits() {
    check_grad(
        |x| x[0].bce_with_logits(&x[1]),
        &[&randn([3, 7], 70) * 3.0, uniform([3, 7], 0.0, 1.0, 71)],
    );
}

/// binary_cross_entropy with respect to probabilities and (soft) targets.
#[test]
fn grad_binary_cross_entropy() {
    check_grad(
        |x| x[0].binary_cross_entropy(&x[1]),
        &[
            uniform([3, 7], 0.05, 0.95, 72),
            uniform([3, 7], 0.0, 1.0, 73),
        ],
    );
}

/// kl_div with respect to log-probabilities and positive target probabilities.
#[test]
fn grad_kl_div() {
    check_grad(
        |x| x[0].kl_div(&x[1]),
        &[probabilities([3, 7], 74).log(), probabilities([3, 7], 75)],
    );
}

/// kl_div with some zero targets: the input gradient is still right (-t/n, 0 where t = 0).
#[test]
fn grad_kl_div_zero_targets() {
    let target = t64(&[0.0, 0.5, 0.5, 0.25, 0.0, 0.75], [2, 3]);
    check_grad(
        move |x| x[0].kl_div(&target),
        &[probabilities([2, 3], 76).log()],
    );
}

// ----------------------------------------------------------------------------------------------------
// Matrix products
// ----------------------------------------------------------------------------------------------------

/// matmul with PyTorch's rules: vector·vector, vector·matrix, matrix·vector, matrix·matrix.
#[test]
fn grad_matmul_vectors_and_matrices() {
    let mm = |x: &[Tensor<f64>]| x[0].matmul(&x[1]);
    check_grad(mm, &[randn([7], 80), randn([7], 81)]);
    check_grad(mm, &[randn([4], 82), randn([4, 3], 83)]);
    check_grad(mm, &[randn([3, 4], 84), randn([4], 85)]);
    check_grad(mm, &[randn([3, 4], 86), randn([4, 5], 87)]);
    check_grad(mm, &[randn([1, 1], 88), randn([1, 1], 89)]);
}

/// Batched matmul: broadcast batch dims, batched·2-D, 2-D·batched, vector·batched, size-1 batches.
#[test]
fn grad_matmul_batched() {
    let mm = |x: &[Tensor<f64>]| x[0].matmul(&x[1]);
    check_grad(mm, &[randn([2, 1, 3, 4], 90), randn([5, 4, 2], 91)]);
    check_grad(mm, &[randn([5, 3, 4], 92), randn([4, 2], 93)]);
    check_grad(mm, &[randn([3, 4], 94), randn([5, 4, 2], 95)]);
    check_grad(mm, &[randn([4], 96), randn([2, 4, 3], 97)]);
    check_grad(mm, &[randn([2, 3, 4], 98), randn([4], 99)]);
    check_grad(mm, &[randn([1, 3, 4], 100), randn([2, 4, 5], 101)]);
    check_grad(mm, &[randn([2, 3, 4], 102), randn([1, 4, 5], 103)]);
    check_grad(mm, &[randn([3, 1, 2, 3], 104), randn([1, 2, 3, 2], 105)]);
}

/// matmul across the GEMM's blocking sizes: k past 256, m past 64, n past 16 and past 256.
#[test]
fn grad_matmul_tile_boundaries() {
    let mm = |x: &[Tensor<f64>]| x[0].matmul(&x[1]);
    check_grad(mm, &[randn([2, 257], 106), randn([257, 3], 107)]);
    check_grad(mm, &[randn([65, 2], 108), randn([2, 17], 109)]);
    check_grad(mm, &[randn([2, 2], 110), randn([2, 257], 111)]);
}

/// bmm of [b, m, k] and [b, k, n].
#[test]
fn grad_bmm() {
    check_grad(
        |x| x[0].bmm(&x[1]),
        &[randn([3, 2, 5], 106), randn([3, 5, 4], 107)],
    );
}

/// linear on 3-D and 1-D inputs, with and without bias.
#[test]
fn grad_linear() {
    let (x, w, b) = (randn([2, 3, 5], 108), randn([4, 5], 109), randn([4], 110));
    check_grad(|x| x[0].linear(&x[1], None), &[x.clone(), w.clone()]);
    check_grad(
        |x| x[0].linear(&x[1], Some(&x[2])),
        &[x, w.clone(), b.clone()],
    );
    check_grad(
        |x| x[0].linear(&x[1], Some(&x[2])),
        &[randn([5], 111), w, b],
    );
}

// ----------------------------------------------------------------------------------------------------
// Convolutions and attention
// ----------------------------------------------------------------------------------------------------

/// conv2d with stride 2 and padding 1 on odd sizes, with bias.
#[test]
fn grad_conv2d_stride2_pad1() {
    check_grad(
        |x| x[0].conv2d(&x[1], Some(&x[2]), 2, 1),
        &[
            randn([2, 3, 7, 5], 120),
            randn([4, 3, 3, 3], 121),
            randn([4], 122),
        ],
    );
}

/// conv2d with per-dimension stride and padding, a non-square kernel, and no bias.
#[test]
fn grad_conv2d_asymmetric() {
    check_grad(
        |x| x[0].conv2d(&x[1], None, (1, 2), (0, 1)),
        &[randn([1, 2, 5, 6], 123), randn([3, 2, 2, 3], 124)],
    );
}

/// conv1d with stride 2 and padding 1, with and without bias.
#[test]
fn grad_conv1d() {
    let (x, w) = (randn([2, 3, 9], 125), randn([4, 3, 3], 126));
    check_grad(
        |x| x[0].conv1d(&x[1], Some(&x[2]), 2, 1),
        &[x.clone(), w.clone(), randn([4], 127)],
    );
    check_grad(|x| x[0].conv1d(&x[1], None, 1, 0), &[x, w]);
}

/// Non-causal attention with lq != lk and dv != d, with respect to query, key and value.
#[test]
fn grad_attention_non_causal() {
    check_grad(
        |x| x[0].attention(&x[1], &x[2], false),
        &[
            randn([2, 3, 4], 130),
            randn([2, 5, 4], 131),
            randn([2, 5, 6], 132),
        ],
    );
}

/// Causal attention with two leading batch dims.
#[test]
fn grad_attention_causal() {
    check_grad(
        |x| x[0].attention(&x[1], &x[2], true),
        &[
            randn([2, 2, 4, 3], 133),
            randn([2, 2, 4, 3], 134),
            randn([2, 2, 4, 5], 135),
        ],
    );
}

// ----------------------------------------------------------------------------------------------------
// Indexing
// ----------------------------------------------------------------------------------------------------

/// gather along the middle and last dims with repeated indices and a longer index dim.
#[test]
fn grad_gather() {
    let index = labels([3, 6, 5], 4, 140);
    check_grad(move |x| x[0].gather(1, &index), &[randn([3, 4, 5], 141)]);
    let index = idx(&[2, 2, 0, 1, 1, 1], [2, 3]);
    check_grad(move |x| x[0].gather(-1, &index), &[randn([2, 3], 142)]);
}

/// scatter_add with repeated indices, with respect to the input and the source.
#[test]
fn grad_scatter_add() {
    let index = labels([3, 6, 5], 4, 143);
    check_grad(
        move |x| x[0].scatter_add(1, &index, &x[1]),
        &[randn([3, 4, 5], 144), randn([3, 6, 5], 145)],
    );
    let index = idx(&[0, 0, 2, 2, 0, 1], [3, 2]);
    check_grad(
        move |x| x[0].scatter_add(0, &index, &x[1]),
        &[randn([3, 2], 146), randn([3, 2], 147)],
    );
}

/// index_select along the middle dim with repeated indices.
#[test]
fn grad_index_select() {
    let index = idx(&[0, 4, 4, 2, 0], [5]);
    check_grad(
        move |x| x[0].index_select(1, &index),
        &[randn([4, 5, 3], 148)],
    );
    let index = idx(&[2, 2, 2], [3]);
    check_grad(move |x| x[0].index_select(0, &index), &[randn([3, 2], 149)]);
}

/// index_add along the middle dim with repeated indices, with respect to input and source.
#[test]
fn grad_index_add() {
    let index = idx(&[0, 4, 4, 2, 0, 4], [6]);
    check_grad(
        move |x| x[0].index_add(1, &index, &x[1]),
        &[randn([4, 5, 3], 150), randn([4, 6, 3], 151)],
    );
}

/// embedding lookups with repeated ids in a 2-D id tensor.
#[test]
fn grad_embedding() {
    let ids = idx(&[3, 0, 3, 6, 1, 3, 0, 6], [2, 4]);
    check_grad(move |x| x[0].embedding(&ids), &[randn([7, 3], 152)]);
}

// ----------------------------------------------------------------------------------------------------
// Shape ops, casts, dropout
// ----------------------------------------------------------------------------------------------------

/// reshape, flatten, squeeze and unsqueeze (views).
#[test]
fn grad_views() {
    let x = randn([2, 3, 5], 160);
    let inputs = std::slice::from_ref(&x);
    check_grad(|x| x[0].reshape([5, 6]), inputs);
    check_grad(|x| &x[0].reshape([6, 5]) * &randn([6, 5], 161), inputs);
    check_grad(|x| x[0].flatten(), inputs);
    check_grad(|x| x[0].unsqueeze(1), inputs);
    check_grad(|x| x[0].unsqueeze(-1), inputs);
    check_grad(|x| x[0].squeeze(1), &[randn([3, 1, 5], 162)]);
}

/// permute, transpose and t (copies).
#[test]
fn grad_permute_transpose() {
    let x = randn([2, 3, 5], 163);
    let inputs = std::slice::from_ref(&x);
    check_grad(|x| x[0].permute(&[2, 0, 1]), inputs);
    check_grad(|x| x[0].permute(&[1, 2, 0]), inputs);
    check_grad(|x| x[0].transpose(0, 2), inputs);
    check_grad(|x| x[0].transpose(-1, 1), inputs);
    check_grad(|x| x[0].t(), &[randn([3, 5], 164)]);
}

/// narrow along first, middle and last dims.
#[test]
fn grad_narrow() {
    let x = randn([3, 5, 4], 165);
    let inputs = std::slice::from_ref(&x);
    check_grad(|x| x[0].narrow(1, 1, 3), inputs);
    check_grad(|x| x[0].narrow(0, 2, 1), inputs);
    check_grad(|x| x[0].narrow(-1, 0, 2), inputs);
}

/// cat of three tensors along middle and last dims, and stack along a new middle dim.
#[test]
fn grad_cat_stack() {
    check_grad(
        |x| Tensor::cat(x, 1),
        &[
            randn([2, 1, 3], 166),
            randn([2, 4, 3], 167),
            randn([2, 2, 3], 168),
        ],
    );
    check_grad(
        |x| Tensor::cat(&[x[0].clone(), x[1].clone()], -1),
        &[randn([3, 2], 169), randn([3, 5], 170)],
    );
    check_grad(
        |x| Tensor::stack(x, 1),
        &[randn([2, 3], 171), randn([2, 3], 172), randn([2, 3], 173)],
    );
}

/// A tensor that appears twice in cat gets both slices of the gradient.
#[test]
fn grad_cat_same_tensor_twice() {
    check_grad(|x| Tensor::cat(&[&x[0], &x[0]], 0), &[randn([2, 3], 174)]);
}

/// broadcast_to adding leading dims and expanding size-1 dims.
#[test]
fn grad_broadcast_to() {
    check_grad(|x| x[0].broadcast_to([2, 3, 4]), &[randn([3, 1], 175)]);
    check_grad(|x| x[0].broadcast_to([4, 1, 5]), &[randn([], 176)]);
}

/// An f64 -> f32 -> f64 cast chain delivers an f64 gradient: the upstream gradient rounded to f32.
#[test]
fn grad_cast_chain() {
    // Finite differences need a step f32 can resolve, and a tolerance for f32 rounding.
    let x = randn([3, 5], 180);
    let tol = GradTol {
        step: 1e-2,
        rtol: 1e-4,
        atol: 1e-4,
    };
    check_grad_with(
        tol,
        |x| x[0].to_f32().to_f64().square(),
        std::slice::from_ref(&x),
    );
    check_grad_with(
        tol,
        |x| x[0].cast::<f32>().exp().cast::<f64>(),
        std::slice::from_ref(&x),
    );

    let leaf = x.with_grad();
    let weights = randn([3, 5], 181);
    let grads = (&leaf.to_f32().to_f64() * &weights).sum(..).backward();
    let g: Tensor<f64> = grads.get(&leaf).expect("an f64 gradient for the f64 leaf");
    assert_eq!(g.dtype(), DType::F64);
    let want: Vec<f64> = weights.to_vec().iter().map(|&w| w as f32 as f64).collect();
    assert_eq!(g.to_vec(), want);
}

/// Casting through bf16 and f16 also reaches an f64 leaf as f64.
#[test]
fn grad_cast_through_half_types() {
    let leaf = t64(&[0.5, -1.25, 3.0], [3]).with_grad();
    let y = &leaf.to_bf16().to_f64() + &leaf.to_f16().to_f64();
    let grads = (&y * &t64(&[1.0, 2.0, 0.25], [3])).sum(..).backward();
    assert_values(&grads.get(&leaf).unwrap(), &[3], &[2.0, 4.0, 0.5]);
}

/// dropout with a re-seeded Rng: every evaluation draws the same mask, so the gradient is mask/(1-p).
#[test]
fn grad_dropout() {
    let x = randn([3, 7], 190);
    check_grad(
        |x| x[0].dropout(0.3, &mut Rng::new(7)),
        std::slice::from_ref(&x),
    );
    check_grad(|x| x[0].dropout(0.5, &mut Rng::new(8)).tanh(), &[x]);
}

// ----------------------------------------------------------------------------------------------------
// Only some inputs need a gradient
// ----------------------------------------------------------------------------------------------------

/// Ops with one leaf and one constant input: the constant gets nothing, the leaf the right gradient.
#[test]
fn grad_with_constant_operands() {
    let (c35, c45, w) = (randn([3, 5], 200), randn([4, 5], 201), randn([4, 5], 202));
    check_grad(move |x| &x[0] * &c35, &[randn([3, 1], 203)]);
    check_grad(move |x| x[0].matmul(&c45.t()), &[randn([2, 3, 5], 204)]);
    check_grad(move |x| x[0].linear(&w, None), &[randn([3, 5], 205)]);
    let input = randn([2, 3, 7], 206);
    check_grad(
        move |x| input.conv1d(&x[0], None, 2, 1),
        &[randn([4, 3, 3], 207)],
    );
    let middle = randn([2, 2, 3], 208);
    check_grad(
        move |x| Tensor::cat(&[&x[0], &middle, &x[1]], 1),
        &[randn([2, 1, 3], 209), randn([2, 3, 3], 210)],
    );
}

/// Attention with only the value, only the query, or only the key requiring a gradient.
#[test]
fn grad_attention_partial_leaves() {
    let (q, k, v) = (
        randn([2, 3, 4], 211),
        randn([2, 5, 4], 212),
        randn([2, 5, 6], 213),
    );
    let (k1, q1) = (k.clone(), q.clone());
    check_grad(
        move |x| q1.attention(&k1, &x[0], false),
        std::slice::from_ref(&v),
    );
    let (k2, v2) = (k.clone(), v.clone());
    check_grad(
        move |x| x[0].attention(&k2, &v2, true),
        std::slice::from_ref(&q),
    );
    check_grad(move |x| q.attention(&x[0], &v, false), &[k]);
}

// ----------------------------------------------------------------------------------------------------
// Gradients in f32, bf16 and f16
// ----------------------------------------------------------------------------------------------------

/// Defines a `#[test]` comparing an op's gradients in f32, bf16 and f16 with its f64 gradients on the
/// same rounded inputs (`common::check_grad_in`); the op is written once, generic over `E`.
macro_rules! low_grad_test {
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
            check_grad_low(stringify!($name), &Op, &$inputs, $tol);
        }
    };
}

low_grad_test!(
    /// Elementwise derivatives, computed in f32 and rounded once (one input per op: no accumulation).
    // tanh and sigmoid derive from their rounded outputs (1 - y², y(1 - y), as PyTorch), which costs
    // up to one rounding of y in absolute terms: hence the absolute part of the tolerance.
    low_grad_unary, (0..8).map(|k| randn([3, 7], 300 + k)).collect::<Vec<_>>(),
    Tol { rel: 2.0, scale: 1.0 },
    |x| Tensor::cat(
        &[
            x[0].exp(),
            x[1].tanh(),
            x[2].sigmoid(),
            x[3].gelu(),
            x[4].silu(),
            x[5].softplus(),
            x[6].square(),
            &x[7] * 0.5,
        ],
        0,
    )
);
low_grad_test!(
    /// Broadcast binary ops sum their gradients back to each input's shape in f32.
    low_grad_binary_broadcast, [randn([3, 1, 5], 301), away_from_zero([4, 1], 0.5, 302)],
    Tol::scaled(4.0),
    |x| Tensor::cat(&[&x[0] + &x[1], &x[0] * &x[1], &x[0] / &x[1]], 0)
);
low_grad_test!(
    /// Reductions: sum, mean, max, var, norm and logsumexp over non-adjacent dims.
    // logsumexp's backward forms exp(x - lse) from x - lse rounded to the type (as PyTorch), so its
    // relative error grows with |x - lse| (up to about 6 here): hence 4 base tolerances.
    low_grad_reductions, (0..6).map(|k| spaced([3, 4, 5], 310 + k)).collect::<Vec<_>>(),
    Tol { rel: 4.0, scale: 0.01 },
    |x| Tensor::cat(
        &[
            x[0].sum([0, 2]),
            x[1].mean([0, 2]),
            x[2].max([0, 2]),
            x[3].var([0, 2]),
            x[4].norm([0, 2]),
            x[5].logsumexp([0, 2]),
        ],
        0,
    )
);
low_grad_test!(
    /// cumsum along a short middle dim.
    low_grad_cumsum_short, [randn([2, 7, 3], 304)], Tol::scaled(4.0), |x| x[0].cumsum(1)
);
low_grad_test!(
    /// softmax and log_softmax along a middle dim.
    low_grad_softmax, [randn([3, 7, 5], 305), randn([3, 7, 5], 306)], Tol::scaled(1.0),
    |x| Tensor::cat(&[x[0].softmax(1), x[1].log_softmax(1)], 0)
);
low_grad_test!(
    /// layer_norm, rms_norm and group_norm with affine parameters.
    low_grad_norms, [randn([2, 6, 5], 306), randn([5], 307), randn([5], 308), randn([6], 309)],
    Tol::scaled(4.0),
    |x| Tensor::cat(
        &[
            x[0].layer_norm(&[5], Some(&x[1]), Some(&x[2]), 1e-5),
            x[0].rms_norm(&[5], Some(&x[1]), 1e-5),
            x[0].group_norm(3, Some(&x[3]), None, 1e-5),
        ],
        0,
    )
);
low_grad_test!(
    /// Losses with respect to input and target: mse, bce_with_logits, kl_div, cross_entropy.
    low_grad_losses,
    [randn([3, 7], 310), uniform([3, 7], 0.0, 1.0, 311), probabilities([3, 7], 312)],
    Tol::scaled(0.2),
    |x| {
        let targets = idx(&[0, 6, 3], [3]);
        Tensor::stack(
            &[
                x[0].mse_loss(&x[1]),
                x[0].bce_with_logits(&x[1]),
                x[0].log_softmax(-1).kl_div(&x[2]),
                x[0].cross_entropy(&targets),
            ],
            0,
        )
    }
);
low_grad_test!(
    /// Batched matmul with broadcast batch dims, followed by linear with bias.
    low_grad_matmul_linear,
    [randn([2, 1, 3, 4], 340), randn([5, 4, 2], 341), randn([3, 2], 342), randn([3], 343)],
    Tol::scaled(4.0),
    |x| x[0].matmul(&x[1]).linear(&x[2], Some(&x[3]))
);
low_grad_test!(
    /// conv2d with stride 2 and padding 1, with bias.
    low_grad_conv2d, [randn([2, 3, 7, 5], 316), randn([4, 3, 3, 3], 317), randn([4], 318)],
    Tol::scaled(8.0),
    |x| x[0].conv2d(&x[1], Some(&x[2]), 2, 1)
);
low_grad_test!(
    /// Non-causal attention with lq != lk.
    low_grad_attention, [randn([2, 3, 8], 319), randn([2, 5, 8], 320), randn([2, 5, 6], 321)],
    Tol::scaled(4.0),
    |x| x[0].attention(&x[1], &x[2], false)
);
low_grad_test!(
    /// gather, index_select and embedding with a few repeated indices.
    low_grad_indexing, [randn([4, 5], 322)], Tol::scaled(4.0),
    |x| Tensor::cat(
        &[
            x[0].gather(1, &idx(&[0, 0, 4, 1, 1, 1, 2, 3, 3, 4, 4, 0], [4, 3])).flatten(),
            x[0].index_select(1, &idx(&[4, 4, 0], [3])).flatten(),
            x[0].embedding(&idx(&[3, 3, 1], [3])).flatten(),
        ],
        0,
    )
);
low_grad_test!(
    /// Shape ops: permute, narrow, cat with itself, broadcast_to.
    low_grad_shape_ops, [randn([2, 3, 4], 323)], Tol::scaled(2.0),
    |x| Tensor::cat(
        &[
            x[0].permute(&[2, 0, 1]).flatten(),
            x[0].narrow(1, 1, 2).flatten(),
            Tensor::cat(&[&x[0], &x[0]], 2).flatten(),
            x[0].narrow(2, 0, 1).broadcast_to([2, 3, 5]).flatten(),
        ],
        0,
    )
);

/// The bf16 gradient of cumsum over 1000 elements is the reverse cumulative sum 1000, 999, ..., 1.
#[test]
fn low_grad_cumsum_long_bf16() {
    let x = Tensor::<bf16>::zeros([1_000]).with_grad();
    let grads = x.cumsum(0).to_f32().sum(..).backward();
    let got = grads.get(&x).unwrap().to_f64().to_vec();
    let want: Vec<f64> = (0..1_000).map(|i| (1_000 - i) as f64).collect();
    // The last ten (10, 9, ..., 1) are exact in bf16; the rest one rounding (2^-8 relative) away.
    assert_eq!(got[990..], want[990..], "tail of the bf16 cumsum gradient");
    common::assert_close_slices(&got, &want, 1.0 / 256.0, 0.0, "bf16 cumsum gradient");
}

/// The same in f16 and over a middle dim, against the f64 gradient on the same rounded inputs.
#[test]
fn low_grad_cumsum_long() {
    struct Op;
    impl ForwardOp for Op {
        fn run<E: TestFloat>(&self, x: &[Tensor<E>]) -> Tensor<E> {
            x[0].cumsum(1)
        }
    }
    let inputs = [randn([2, 300, 2], 330)];
    check_grad_in::<f16>("cumsum", &Op, &inputs, Tol::scaled(4.0));
    check_grad_in::<bf16>("cumsum", &Op, &inputs, Tol::scaled(4.0));
}
