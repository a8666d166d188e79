//! Matrix products: `matmul` (numpy/PyTorch rules), `bmm` and `linear`, on the kernels' GEMM with
//! accumulation in f32 (f64 for f64). Transposes in the backward pass are flags, not copies.

use crate::autograd::grad_if;
use crate::device::Storage;
use crate::element::Float;
use crate::ops::dispatch::on_device;
use crate::ops::output_buffer;
use crate::shape::{broadcast_shapes, numel};
use crate::tensor::Tensor;
use amp_kernels::DType;
use amp_kernels::cpu::{self, GemmSpec};
#[cfg(feature = "cuda")]
use amp_kernels::cuda;
use std::sync::Arc;

/// Whether two batch shapes broadcast together (aligned at the right, each dimension equal or 1).
fn batches_broadcast(a: &[usize], b: &[usize]) -> bool {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .all(|(&x, &y)| x == y || x == 1 || y == 1)
}

/// Runs one GEMM into a fresh buffer.
pub(crate) fn gemm_new<T: Float, O: Float>(spec: GemmSpec, a: &[T], b: &[T]) -> Vec<O> {
    gemm_mixed_new(spec, a, b)
}

/// Runs one GEMM of operands of different types into a fresh buffer (the wider operand is rounded to
/// the narrower type while it is packed).
pub(crate) fn gemm_mixed_new<A: Float, B: Float, O: Float>(
    spec: GemmSpec,
    a: &[A],
    b: &[B],
) -> Vec<O> {
    let mut c = output_buffer::<O>(spec.batch * spec.m * spec.n);
    cpu::gemm_mixed(&spec, a, b, &mut c);
    c
}

/// Runs one GEMM of two tensors' data (of possibly different float types) where they are, into fresh
/// storage of `O`.
fn gemm_on<A: Float, B: Float, O: Float>(
    spec: GemmSpec,
    a: &Tensor<A>,
    b: &Tensor<B>,
) -> Storage<O> {
    on_device!("matmul", [a, b],
        cpu => {
            let mut c = output_buffer::<O>(spec.batch * spec.m * spec.n);
            cpu::gemm_mixed(&spec, a.data(), b.data(), &mut c);
            c
        },
        cuda [ab, bb] => cuda::gemm(&spec, ab, bb, O::DTYPE, None))
}

/// A tensor over fresh storage, without history.
fn tensor<E: Float>(data: Storage<E>, shape: Vec<usize>) -> Tensor<E> {
    Tensor::from_storage(Arc::new(data), shape, None)
}

/// Panics (naming the op and the shapes) unless an input `[..., in]`, a weight `[out, in]` and a bias
/// `[out]` fit together.
#[track_caller]
fn check_linear(sx: &[usize], sw: &[usize], bias: Option<&[usize]>) {
    if sw.len() != 2 || sx.is_empty() || sx[sx.len() - 1] != sw[1] {
        panic!(
            "linear: input of shape {sx:?} does not match weight of shape {sw:?} (expected [..., {}] and [out, in])",
            sw.get(1).copied().unwrap_or(0)
        );
    }
    if let Some(b) = bias
        && b != [sw[0]]
    {
        panic!(
            "linear: bias of shape {b:?} does not match weight of shape {sw:?} (expected [{}])",
            sw[0]
        );
    }
}

/// A batched spec: `a` is `m × k` (or stored `k × m` with `a_trans`), `b` is `k × n` (or `n × k`).
pub(crate) fn spec(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    trans: (bool, bool),
    strides: (usize, usize),
) -> GemmSpec {
    GemmSpec {
        batch,
        m,
        n,
        k,
        a_trans: trans.0,
        b_trans: trans.1,
        a_batch_stride: strides.0,
        b_batch_stride: strides.1,
        accumulate: false,
    }
}

impl<E: Float> Tensor<E> {
    /// Matrix product with PyTorch's `matmul` rules: 1-D operands are treated as a row (left) or column
    /// (right) vector and that dimension is removed from the result; dimensions before the last two are
    /// batch dimensions and broadcast. Accumulates in f32 (f64 for f64).
    ///
    /// ```
    /// use amp_runtime::Tensor;
    /// let a = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2]);
    /// let b = Tensor::<f32>::from_vec(vec![1.0, 1.0], [2]);
    /// assert_eq!(a.matmul(&b).to_vec(), vec![3.0, 7.0]);
    /// ```
    #[track_caller]
    pub fn matmul(&self, other: &Tensor<E>) -> Tensor<E> {
        let (sa, sb) = (self.shape(), other.shape());
        if sa.is_empty() || sb.is_empty() {
            panic!(
                "matmul: both operands need at least one dimension, got shapes {sa:?} and {sb:?}"
            );
        }
        let a_lift: Vec<usize> = if sa.len() == 1 {
            vec![1, sa[0]]
        } else {
            sa.to_vec()
        };
        let b_lift: Vec<usize> = if sb.len() == 1 {
            vec![sb[0], 1]
        } else {
            sb.to_vec()
        };
        let (m, k) = (a_lift[a_lift.len() - 2], a_lift[a_lift.len() - 1]);
        let (k2, n) = (b_lift[b_lift.len() - 2], b_lift[b_lift.len() - 1]);
        if k != k2 {
            panic!(
                "matmul: cannot multiply shapes {sa:?} and {sb:?}: inner dimensions {k} and {k2} differ"
            );
        }
        crate::autocast::trace_low_op("matmul", E::DTYPE);
        let (a_batch, b_batch) = (&a_lift[..a_lift.len() - 2], &b_lift[..b_lift.len() - 2]);
        if !batches_broadcast(a_batch, b_batch) {
            panic!(
                "matmul: cannot multiply shapes {sa:?} and {sb:?}: batch dimensions {a_batch:?} and {b_batch:?} do not broadcast"
            );
        }
        let batch_shape = broadcast_shapes("matmul", a_batch, b_batch);
        let batch = numel(&batch_shape);
        // An operand whose batch is smaller than the result's but not 1 is materialized at full size.
        let full = |t: &Tensor<E>, lift: &[usize], rows: usize, cols: usize| {
            let own = numel(&lift[..lift.len() - 2]);
            if own == batch || own == 1 {
                (t.detach(), if own == 1 { 0 } else { rows * cols })
            } else {
                let mut to = batch_shape.clone();
                to.extend([rows, cols]);
                (t.detach().reshape(lift).broadcast_to(to), rows * cols)
            }
        };
        let (a, a_stride) = full(self, &a_lift, m, k);
        let (b, b_stride) = full(other, &b_lift, k, n);

        let forward: Storage<E> = if b_stride == 0 {
            // One weight for every batch: fold the batch into the rows of one product.
            let rows = if a_stride == 0 { m } else { batch * m };
            let c = gemm_on(spec(1, rows, n, k, (false, false), (0, 0)), &a, &b);
            if rows == batch * m {
                c
            } else {
                // Both operands shared by every batch: one product, repeated.
                let one = tensor(c, vec![1, m, n]).broadcast_to([batch, m, n]);
                let storage = one.storage().clone();
                drop(one);
                Arc::try_unwrap(storage).unwrap_or_else(|_| unreachable!("a fresh copy"))
            }
        } else {
            gemm_on(
                spec(batch, m, n, k, (false, false), (a_stride, b_stride)),
                &a,
                &b,
            )
        };
        let mut out_shape = batch_shape.clone();
        if sa.len() > 1 {
            out_shape.push(m);
        }
        if sb.len() > 1 {
            out_shape.push(n);
        }
        let (a_shape, b_shape) = (sa.to_vec(), sb.to_vec());
        Tensor::record(
            "matmul",
            Arc::new(forward),
            out_shape,
            &[self.node(), other.node()],
            move |g, needs| {
                let mut full_a = batch_shape.clone();
                full_a.extend([m, k]);
                let mut full_b = batch_shape.clone();
                full_b.extend([k, n]);
                // dA = dC · Bᵀ, per batch.
                let da = grad_if(needs[0], || {
                    let d: Storage<E> = gemm_on(
                        spec(batch, m, k, n, (false, true), (m * n, b_stride)),
                        g,
                        &b,
                    );
                    tensor(d, full_a.clone()).sum_to(&a_lift).reshape(&a_shape)
                });
                // dB = Aᵀ · dC, folded into one product when B is shared by every batch.
                let db = grad_if(needs[1], || {
                    if b_stride == 0 && a_stride != 0 {
                        let d: Storage<E> =
                            gemm_on(spec(1, k, n, batch * m, (true, false), (0, 0)), &a, g);
                        tensor(d, vec![k, n]).reshape(&b_shape)
                    } else {
                        let d: Storage<E> = gemm_on(
                            spec(batch, k, n, m, (true, false), (a_stride, m * n)),
                            &a,
                            g,
                        );
                        tensor(d, full_b.clone()).sum_to(&b_lift).reshape(&b_shape)
                    }
                });
                vec![da, db]
            },
        )
    }

    /// Batched product of `[b, m, k]` and `[b, k, n]` tensors (no broadcasting).
    #[track_caller]
    pub fn bmm(&self, other: &Tensor<E>) -> Tensor<E> {
        let (sa, sb) = (self.shape(), other.shape());
        if sa.len() != 3 || sb.len() != 3 || sa[0] != sb[0] || sa[2] != sb[1] {
            panic!("bmm: expects shapes [b, m, k] and [b, k, n], got {sa:?} and {sb:?}");
        }
        self.matmul(other)
    }

    /// `x · weightᵀ + bias` for `x` of shape `[..., in]`, `weight` of shape `[out, in]` (PyTorch's layout)
    /// and `bias` of shape `[out]`.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor<E>, bias: Option<&Tensor<E>>) -> Tensor<E> {
        self.linear_mixed(weight, bias)
    }

    /// [`linear`](Tensor::linear) of this input with a weight (and bias) of type `T`, computed in the
    /// narrower of the two types with f32 accumulation, the output in `T`. For an f32 input and a bf16 or
    /// f16 weight this is what `self.cast::<T>().linear(weight, bias)` computes, but the input is rounded
    /// to `T` while the GEMM packs it, so no converted copy of the activation is made, in the forward pass
    /// or for the weight's gradient; the input's gradient is computed from `T` operands straight into the
    /// input's type (the unfused path would round it to `T` first, then widen it).
    #[track_caller]
    pub(crate) fn linear_mixed<T: Float>(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
    ) -> Tensor<T> {
        let (sx, sw) = (self.shape(), weight.shape());
        check_linear(sx, sw, bias.map(Tensor::shape));
        crate::autocast::trace_low_op("linear", T::DTYPE);
        let (out_f, in_f) = (sw[0], sw[1]);
        let rows = numel(&sx[..sx.len() - 1]);
        let y: Storage<T> = gemm_on(
            spec(1, rows, out_f, in_f, (false, true), (0, 0)),
            self,
            weight,
        );
        let mut shape = sx.to_vec();
        *shape.last_mut().expect("checked non-empty") = out_f;
        let (x, w) = (self.detach(), weight.detach());
        let y = Tensor::record(
            "linear",
            Arc::new(y),
            shape,
            &[self.node(), weight.node()],
            move |g: &Tensor<T>, needs| {
                vec![
                    // dX = dY · W, straight into X's type.
                    grad_if(needs[0], || {
                        let d: Storage<E> =
                            gemm_on(spec(1, rows, in_f, out_f, (false, false), (0, 0)), g, &w);
                        tensor(d, x.shape().to_vec())
                    }),
                    // dW = dYᵀ · X, with X rounded to T while packed.
                    grad_if(needs[1], || {
                        let d: Storage<T> =
                            gemm_on(spec(1, out_f, in_f, rows, (true, false), (0, 0)), g, &x);
                        tensor(d, vec![out_f, in_f])
                    }),
                ]
            },
        );
        match bias {
            Some(b) => y.binary_same(b, amp_kernels::cpu::Binary::Add, "linear"),
            None => y,
        }
    }
}

impl<E: Float> Tensor<E> {
    /// `self.cast::<T>().linear(weight, bias)`, except that an f32 input meeting a bf16 or f16 weight is
    /// rounded to `T` inside the GEMM ([`linear_mixed`](Tensor::linear_mixed)) instead of
    /// being copied first. Autocast's `linear` and the [`Linear`](crate::nn::Linear) layer run through it.
    #[track_caller]
    pub(crate) fn linear_in<T: Float>(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
    ) -> Tensor<T> {
        if E::DTYPE == DType::F32 && matches!(T::DTYPE, DType::BF16 | DType::F16) {
            return self.linear_mixed(weight, bias);
        }
        self.cast::<T>().linear(weight, bias)
    }
}
