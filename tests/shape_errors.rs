//! Bad input panics with a message that names the op and the offending shapes (or index and bound), at
//! the caller's line (`#[track_caller]` all the way down).
//!
//! Panics are captured with `common::catch_panic`, which installs a process-wide panic hook once, under a
//! global mutex, and records the message and `PanicHookInfo::location()` of the capturing thread only.

mod common;

use amp::{Rng, Tensor};
use common::{Caught, assert_panics_with, catch_panic, idx, randn};

/// A tensor of zeros with the given shape.
fn z(shape: &[usize]) -> Tensor<f64> {
    Tensor::zeros(shape)
}

// ----------------------------------------------------------------------------------------------------
// Products
// ----------------------------------------------------------------------------------------------------

/// matmul with different inner dimensions names both shapes and both inner sizes.
#[test]
fn matmul_inner_dimension_mismatch() {
    let msg = assert_panics_with(&["matmul", "[2, 3]", "[4, 5]"], || {
        z(&[2, 3]).matmul(&z(&[4, 5]))
    });
    assert!(msg.contains('3') && msg.contains('4'), "{msg}");
    assert_panics_with(&["matmul", "[7]", "[6]"], || z(&[7]).matmul(&z(&[6])));
    assert_panics_with(&["matmul", "[2, 2, 3]", "[2]"], || {
        z(&[2, 2, 3]).matmul(&z(&[2]))
    });
}

/// matmul of a 0-d tensor is rejected with both shapes.
#[test]
fn matmul_scalar_operand() {
    assert_panics_with(&["matmul", "[]", "[3]"], || z(&[]).matmul(&z(&[3])));
}

/// matmul whose batch dimensions cannot broadcast names the operands' full shapes.
#[test]
fn matmul_batch_mismatch_names_operand_shapes() {
    assert_panics_with(&["matmul", "[2, 3, 4]", "[5, 4, 2]"], || {
        z(&[2, 3, 4]).matmul(&z(&[5, 4, 2]))
    });
}

/// matmul whose batch dimensions cannot broadcast panics naming the op and the batch sizes.
#[test]
fn matmul_batch_mismatch() {
    assert_panics_with(&["matmul", "[2]", "[5]", "broadcast"], || {
        z(&[2, 3, 4]).matmul(&z(&[5, 4, 2]))
    });
}

/// bmm requires [b, m, k] and [b, k, n].
#[test]
fn bmm_shape_mismatch() {
    assert_panics_with(&["bmm", "[2, 3, 4]", "[3, 4, 5]"], || {
        z(&[2, 3, 4]).bmm(&z(&[3, 4, 5]))
    });
    assert_panics_with(&["bmm", "[3, 4]"], || z(&[3, 4]).bmm(&z(&[4, 5])));
}

/// linear with a weight whose input size differs names input and weight shapes; a bad bias too.
#[test]
fn linear_weight_mismatch() {
    assert_panics_with(&["linear", "[2, 5]", "[4, 6]"], || {
        z(&[2, 5]).linear(&z(&[4, 6]), None)
    });
    assert_panics_with(&["linear", "bias", "[3]", "[4, 5]"], || {
        z(&[2, 5]).linear(&z(&[4, 5]), Some(&z(&[3])))
    });
}

// ----------------------------------------------------------------------------------------------------
// Elementwise
// ----------------------------------------------------------------------------------------------------

/// add of non-broadcastable shapes names the op and both shapes (method, operator, mixed types).
#[test]
fn add_broadcast_failure() {
    assert_panics_with(&["add", "[2, 3]", "[4]", "broadcast"], || {
        z(&[2, 3]).add(&z(&[4]))
    });
    assert_panics_with(&["add", "[3, 1, 5]", "[4, 2]"], || {
        &z(&[3, 1, 5]) + &z(&[4, 2])
    });
    let low = Tensor::<f32>::zeros([2, 3]);
    assert_panics_with(&["add", "[2, 3]", "[2]"], || &low + &z(&[2]));
}

/// sub, mul, div, maximum and minimum name themselves in broadcast failures.
#[test]
fn other_binary_broadcast_failures() {
    let (a, b) = (z(&[2, 3]), z(&[3, 2]));
    assert_panics_with(&["sub", "[2, 3]", "[3, 2]"], || &a - &b);
    assert_panics_with(&["mul", "[2, 3]", "[3, 2]"], || &a * &b);
    assert_panics_with(&["div", "[2, 3]", "[3, 2]"], || &a / &b);
    assert_panics_with(&["maximum", "[2, 3]", "[3, 2]"], || a.maximum(&b));
    assert_panics_with(&["minimum", "[2, 3]", "[3, 2]"], || a.minimum(&b));
    assert_panics_with(&["lt", "[2, 3]", "[3, 2]"], || a.lt(&b));
    let cond = Tensor::<bool>::zeros([4]);
    assert_panics_with(&["where_", "[4]"], || a.where_(&cond, &a));
}

/// clamp with min > max and dropout with p outside [0, 1] name the op and the values.
#[test]
fn bad_scalar_arguments() {
    assert_panics_with(&["clamp", "2", "1"], || z(&[3]).clamp(2.0, 1.0));
    assert_panics_with(&["dropout", "1.5"], || {
        z(&[3]).dropout(1.5, &mut Rng::new(0))
    });
}

// ----------------------------------------------------------------------------------------------------
// Shape ops
// ----------------------------------------------------------------------------------------------------

/// reshape to a different number of elements names both shapes and sizes.
#[test]
fn reshape_size_mismatch() {
    let msg = assert_panics_with(&["reshape", "[2, 3]", "[4]"], || z(&[2, 3]).reshape([4]));
    assert!(msg.contains('6'), "{msg}");
}

/// cat of tensors that differ outside the cat dimension names both shapes; stack of unequal shapes too.
#[test]
fn cat_and_stack_mismatch() {
    assert_panics_with(&["cat", "[3, 3]", "[2, 3]"], || {
        Tensor::cat(&[z(&[2, 3]), z(&[3, 3])], 1)
    });
    assert_panics_with(&["cat", "[2, 3, 1]", "[2, 3]"], || {
        Tensor::cat(&[z(&[2, 3]), z(&[2, 3, 1])], 0)
    });
    assert_panics_with(&["cat", "at least one"], || {
        Tensor::<f64>::cat::<Tensor<f64>>(&[], 0)
    });
    assert_panics_with(&["stack", "[2, 3]", "[3, 2]"], || {
        Tensor::stack(&[z(&[2, 3]), z(&[3, 2])], 0)
    });
}

/// Dimension arguments out of range name the op, the dimension and the shape.
#[test]
fn dimension_out_of_range() {
    assert_panics_with(&["softmax", "3", "[2, 3]"], || z(&[2, 3]).softmax(3));
    assert_panics_with(&["sum", "-3", "[2, 3]"], || z(&[2, 3]).sum(-3));
    assert_panics_with(&["sum", "repeated"], || z(&[2, 3]).sum([1, -1]));
    assert_panics_with(&["cumsum", "2", "[2, 3]"], || z(&[2, 3]).cumsum(2));
    assert_panics_with(&["transpose", "5"], || z(&[2, 3]).transpose(0, 5));
    assert_panics_with(&["argmax", "2", "[2, 3]"], || z(&[2, 3]).argmax(2));
    assert_panics_with(&["unsqueeze", "4", "[2, 3]"], || z(&[2, 3]).unsqueeze(4));
}

/// squeeze of a non-1 dim, bad permutations, narrow past the end, t of 3-D, broadcast_to a smaller shape.
#[test]
fn other_shape_op_errors() {
    assert_panics_with(&["squeeze", "[2, 3]", "size 3"], || z(&[2, 3]).squeeze(1));
    assert_panics_with(&["permute", "[0, 0]", "[2, 3]"], || {
        z(&[2, 3]).permute(&[0, 0])
    });
    assert_panics_with(&["permute", "[1]"], || z(&[2, 3]).permute(&[1]));
    assert_panics_with(&["narrow", "2..5", "size 3"], || z(&[2, 3]).narrow(1, 2, 3));
    assert_panics_with(&["t", "[2, 3, 4]"], || z(&[2, 3, 4]).t());
    assert_panics_with(&["broadcast_to", "[2, 3]", "[3, 3]"], || {
        z(&[2, 3]).broadcast_to([3, 3])
    });
    assert_panics_with(&["from_vec", "5", "[2, 3]"], || {
        Tensor::<f64>::from_vec(vec![0.0; 5], [2, 3])
    });
    assert_panics_with(&["item", "[2]"], || z(&[2]).item());
}

// ----------------------------------------------------------------------------------------------------
// Losses and indexing
// ----------------------------------------------------------------------------------------------------

/// cross_entropy with a target outside 0..classes names the target value and the class count.
#[test]
fn cross_entropy_target_out_of_range() {
    assert_panics_with(&["cross_entropy", "target 5", "3 classes"], || {
        z(&[2, 3]).cross_entropy(&idx(&[0, 5], [2]))
    });
    assert_panics_with(&["cross_entropy", "target -1", "3 classes"], || {
        z(&[2, 3]).cross_entropy(&idx(&[-1, 0], [2]))
    });
    assert_panics_with(&["nll_loss", "target 3", "3 classes"], || {
        z(&[2, 3]).nll_loss(&idx(&[3, 0], [2]))
    });
}

/// cross_entropy with targets of the wrong shape names both shapes.
#[test]
fn cross_entropy_target_shape() {
    assert_panics_with(&["cross_entropy", "[3]", "[2, 3]"], || {
        z(&[2, 3]).cross_entropy(&idx(&[0, 1, 2], [3]))
    });
}

/// Losses with differently shaped target name the op and both shapes; BCE rejects non-probabilities.
#[test]
fn loss_shape_mismatch() {
    let (a, b) = (z(&[2, 3]), z(&[3, 2]));
    assert_panics_with(&["mse_loss", "[2, 3]", "[3, 2]"], || a.mse_loss(&b));
    assert_panics_with(&["l1_loss", "[2, 3]", "[3, 2]"], || a.l1_loss(&b));
    assert_panics_with(&["bce_with_logits", "[2, 3]", "[3, 2]"], || {
        a.bce_with_logits(&b)
    });
    assert_panics_with(&["kl_div", "[2, 3]", "[3, 2]"], || a.kl_div(&b));
    assert_panics_with(&["binary_cross_entropy", "1.5"], || {
        Tensor::<f64>::full([2], 1.5).binary_cross_entropy(&z(&[2]))
    });
}

/// gather with an index past the dimension names the index and the bound; negative indices too.
#[test]
fn gather_index_out_of_range() {
    assert_panics_with(&["gather", "index 7", "size 4"], || {
        z(&[2, 4]).gather(1, &idx(&[0, 7, 1, 1], [2, 2]))
    });
    assert_panics_with(&["gather", "index -1", "size 4"], || {
        z(&[2, 4]).gather(1, &idx(&[0, -1], [2, 1]))
    });
    assert_panics_with(&["gather", "index", "[2, 4]"], || {
        z(&[2, 4]).gather(1, &idx(&[0, 1, 2], [3, 1]))
    });
}

/// index_select with an index past the dimension names the index and the bound; negative too.
#[test]
fn index_select_index_out_of_range() {
    assert_panics_with(&["index_select", "index 5", "size 3"], || {
        z(&[3, 2]).index_select(0, &idx(&[0, 5], [2]))
    });
    assert_panics_with(&["index_select", "index -2", "size 2"], || {
        z(&[3, 2]).index_select(1, &idx(&[-2], [1]))
    });
}

/// embedding with an id past the vocabulary names the id and the vocabulary size; negative ids too.
#[test]
fn embedding_index_out_of_range() {
    assert_panics_with(&["embedding", "index 9", "size 7"], || {
        z(&[7, 3]).embedding(&idx(&[1, 9], [1, 2]))
    });
    assert_panics_with(&["embedding", "index -1", "size 7"], || {
        z(&[7, 3]).embedding(&idx(&[-1], [1]))
    });
    assert_panics_with(&["embedding", "[7, 3, 1]"], || {
        z(&[7, 3, 1]).embedding(&idx(&[0], [1]))
    });
}

/// scatter_add and index_add with out-of-range or negative indices name the index and the bound.
#[test]
fn scatter_and_index_add_out_of_range() {
    assert_panics_with(&["scatter_add", "index 4", "size 4"], || {
        z(&[2, 4]).scatter_add(1, &idx(&[4, 0], [2, 1]), &z(&[2, 1]))
    });
    assert_panics_with(&["index_add", "index -3", "size 2"], || {
        z(&[2, 4]).index_add(0, &idx(&[-3], [1]), &z(&[1, 4]))
    });
    assert_panics_with(&["index_add", "[1, 4]", "[1, 3]"], || {
        z(&[2, 4]).index_add(0, &idx(&[0], [1]), &z(&[1, 3]))
    });
}

// ----------------------------------------------------------------------------------------------------
// Autograd, convolution, attention, norms
// ----------------------------------------------------------------------------------------------------

/// backward on a non-scalar names the shape; on a tensor without history it explains why.
#[test]
fn backward_errors() {
    let x = randn([2, 3], 1).with_grad();
    assert_panics_with(&["backward", "[2, 3]"], || (&x * 2.0).backward());
    assert_panics_with(&["backward", "does not require a gradient"], || {
        z(&[1]).sum(..).backward()
    });
    assert_panics_with(&["backward_with", "[3]", "[2, 3]"], || {
        (&x * 2.0).backward_with(&z(&[3]))
    });
}

/// conv2d with input and weight channels that differ names both shapes.
#[test]
fn conv2d_channel_mismatch() {
    assert_panics_with(&["conv2d", "[1, 3, 5, 5]", "[4, 2, 3, 3]"], || {
        z(&[1, 3, 5, 5]).conv2d(&z(&[4, 2, 3, 3]), None, 1, 0)
    });
    assert_panics_with(&["conv2d", "bias", "[3]"], || {
        z(&[1, 2, 5, 5]).conv2d(&z(&[4, 2, 3, 3]), Some(&z(&[3])), 1, 0)
    });
    assert_panics_with(&["conv2d", "kernel", "[7, 7]"], || {
        z(&[1, 2, 5, 5]).conv2d(&z(&[4, 2, 7, 7]), None, 1, 0)
    });
    assert_panics_with(&["conv2d", "stride"], || {
        z(&[1, 2, 5, 5]).conv2d(&z(&[4, 2, 3, 3]), None, 0, 0)
    });
}

/// conv1d with mismatched channels names conv1d and the 3-D shapes the caller passed.
#[test]
fn conv1d_channel_mismatch_names_conv1d() {
    assert_panics_with(&["conv1d", "[2, 3, 9]", "[4, 2, 3]"], || {
        z(&[2, 3, 9]).conv1d(&z(&[4, 2, 3]), None, 1, 0)
    });
}

/// conv1d with a non-3-D input names conv1d and both shapes.
#[test]
fn conv1d_rank_mismatch() {
    assert_panics_with(&["conv1d", "[2, 9]", "[4, 2, 3]"], || {
        z(&[2, 9]).conv1d(&z(&[4, 2, 3]), None, 1, 0)
    });
}

/// attention with mismatched feature or sequence dims names the three shapes.
#[test]
fn attention_shape_mismatch() {
    assert_panics_with(
        &["attention", "[2, 3, 4]", "[2, 5, 6]", "[2, 5, 6]"],
        || z(&[2, 3, 4]).attention(&z(&[2, 5, 6]), &z(&[2, 5, 6]), false),
    );
    assert_panics_with(&["attention", "[2, 5, 4]", "[2, 4, 6]"], || {
        z(&[2, 3, 4]).attention(&z(&[2, 5, 4]), &z(&[2, 4, 6]), true)
    });
    assert_panics_with(&["attention", "[3, 3, 4]"], || {
        z(&[2, 3, 4]).attention(&z(&[3, 3, 4]), &z(&[3, 3, 4]), false)
    });
}

/// layer_norm/rms_norm/group_norm reject a non-suffix normalized shape, bad affine shapes, bad groups.
#[test]
fn norm_shape_errors() {
    assert_panics_with(&["layer_norm", "[4]", "[2, 3]"], || {
        z(&[2, 3]).layer_norm(&[4], None, None, 1e-5)
    });
    assert_panics_with(&["layer_norm", "weight", "[2]", "[3]"], || {
        z(&[2, 3]).layer_norm(&[3], Some(&z(&[2])), None, 1e-5)
    });
    assert_panics_with(&["rms_norm", "[3, 2]", "[2, 3]"], || {
        z(&[2, 3]).rms_norm(&[3, 2], None, 1e-5)
    });
    assert_panics_with(&["group_norm", "[2, 6, 3]", "4 groups"], || {
        z(&[2, 6, 3]).group_norm(4, None, None, 1e-5)
    });
    assert_panics_with(&["group_norm", "bias", "[5]"], || {
        z(&[2, 6, 3]).group_norm(3, None, Some(&z(&[5])), 1e-5)
    });
}

// ----------------------------------------------------------------------------------------------------
// Panic locations (#[track_caller])
// ----------------------------------------------------------------------------------------------------

/// Runs `$e` (which must panic) and yields the capture together with the line `$e` is written on.
macro_rules! located {
    ($e:expr) => {
        (catch_panic(|| $e), line!())
    };
}

/// Asserts that a panic was reported at `line` of this file.
#[track_caller]
fn assert_at_caller((caught, line): (Caught, u32)) {
    assert!(
        caught.file.ends_with("tests/shape_errors.rs") && caught.line == line,
        "panic {:?} reported at {}:{}, expected tests/shape_errors.rs:{line}",
        caught.message,
        caught.file,
        caught.line
    );
}

/// Shape panics point at the caller's line in this file, not inside the runtime.
#[test]
fn panic_location_is_the_callers_line() {
    let (a, b) = (z(&[2, 3]), z(&[4, 5]));
    let x = randn([2, 3], 2).with_grad();
    let labels = idx(&[0, 9], [2]);
    let bad = idx(&[0, 9], [2]);
    assert_at_caller(located!(a.matmul(&b)));
    assert_at_caller(located!(a.bmm(&b)));
    assert_at_caller(located!(&a + &b));
    assert_at_caller(located!(a.add(&b)));
    assert_at_caller(located!(a.sub(&b)));
    assert_at_caller(located!(a.maximum(&b)));
    assert_at_caller(located!(a.eq(&b)));
    assert_at_caller(located!(a.linear(&b, None)));
    assert_at_caller(located!(a.reshape([5])));
    assert_at_caller(located!(Tensor::cat(&[&a, &b], 0)));
    assert_at_caller(located!(Tensor::stack(&[&a, &b], 0)));
    assert_at_caller(located!(a.cross_entropy(&labels)));
    assert_at_caller(located!(a.nll_loss(&labels)));
    assert_at_caller(located!(a.gather(1, &idx(&[9, 0, 0, 0, 0, 0], [2, 3]))));
    assert_at_caller(located!(a.index_select(1, &bad)));
    assert_at_caller(located!(a.embedding(&bad)));
    assert_at_caller(located!(a.index_add(1, &bad, &z(&[2, 2]))));
    assert_at_caller(located!(a.scatter_add(
        1,
        &idx(&[9, 0, 0, 0, 0, 0], [2, 3]),
        &a
    )));
    assert_at_caller(located!((&x * 2.0).backward()));
    assert_at_caller(located!(z(&[1, 3, 5, 5]).conv2d(
        &z(&[4, 2, 3, 3]),
        None,
        1,
        0
    )));
    assert_at_caller(located!(z(&[1, 3, 5]).conv1d(&z(&[4, 2, 3]), None, 1, 0)));
    assert_at_caller(located!(a.attention(&b, &b, false)));
    assert_at_caller(located!(a.softmax(2)));
    assert_at_caller(located!(a.log_softmax(-3)));
    assert_at_caller(located!(a.max([0, 0])));
    assert_at_caller(located!(a.cumsum(4)));
    assert_at_caller(located!(a.cosine_similarity(&b, 1, 1e-8)));
    assert_at_caller(located!(a.mse_loss(&b)));
    assert_at_caller(located!(a.layer_norm(&[5], None, None, 1e-5)));
    assert_at_caller(located!(a.group_norm(4, None, None, 1e-5)));
    assert_at_caller(located!(a.squeeze(0)));
    assert_at_caller(located!(a.unsqueeze(7)));
    assert_at_caller(located!(a.permute(&[0])));
    assert_at_caller(located!(a.transpose(0, 3)));
    assert_at_caller(located!(a.narrow(1, 2, 2)));
    assert_at_caller(located!(a.broadcast_to([5, 5])));
    assert_at_caller(located!(a.clamp(1.0, 0.0)));
    assert_at_caller(located!(a.item()));
}

/// argmax/argmin dimension errors point at the caller's line.
#[test]
fn panic_location_of_argmax_argmin() {
    let a = z(&[2, 3]);
    assert_at_caller(located!(a.argmax(2)));
    assert_at_caller(located!(a.argmin(-3)));
}

/// A reduction over an out-of-range dimension points at the caller's line.
#[test]
fn panic_location_of_reduction_dims() {
    let a = z(&[2, 3]);
    assert_at_caller(located!(a.sum(5)));
    assert_at_caller(located!(a.mean_keepdim(-3)));
    assert_at_caller(located!(a.max(2)));
    assert_at_caller(located!(a.var(4)));
    assert_at_caller(located!(a.norm(4)));
    assert_at_caller(located!(a.logsumexp(4)));
}
