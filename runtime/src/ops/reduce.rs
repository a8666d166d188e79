//! Reductions over dimensions. They accumulate in f32 (f64 for f64) whatever the element type: the sum of
//! 10,000 bf16 ones is computed as 10,000 and rounded once.

use crate::autograd::no_grad;
use crate::element::{Element, Float};
use crate::ops::dispatch::on_device;
use crate::ops::{buffer, output_buffer};
use crate::shape::{Dims, broadcast_shapes, dim_index, numel, resolve_dims};
use crate::tensor::{Storage, Tensor};
use amp_kernels::cpu::{self, Binary, Dim3, Reduce, Unary};
#[cfg(feature = "cuda")]
use amp_kernels::cuda;
use std::sync::Arc;

/// How a reduction over `dims` sees its input, and the shapes of its result.
struct Plan {
    dims: Vec<usize>,
    /// The result with reduced dimensions kept as size 1.
    keep_shape: Vec<usize>,
    /// The result with reduced dimensions removed.
    drop_shape: Vec<usize>,
    /// Number of elements reduced into each output.
    count: usize,
}

impl Plan {
    #[track_caller]
    fn new(op: &str, dims: &impl Dims, shape: &[usize]) -> Self {
        let dims = resolve_dims(op, dims, shape);
        let keep_shape: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(d, &s)| if dims.contains(&d) { 1 } else { s })
            .collect();
        let drop_shape = shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !dims.contains(d))
            .map(|(_, &s)| s)
            .collect();
        let count = dims.iter().map(|&d| shape[d]).product();
        Plan {
            dims,
            keep_shape,
            drop_shape,
            count,
        }
    }

    fn out_shape(&self, keepdim: bool) -> Vec<usize> {
        if keepdim {
            self.keep_shape.clone()
        } else {
            self.drop_shape.clone()
        }
    }
}

impl<E: Float> Tensor<E> {
    /// Runs a reduction kernel over `dims` in one pass: adjacent dimensions are reduced as one; others are
    /// first moved to the end.
    fn reduce_raw<O: Element>(&self, op: Reduce, dims: &[usize]) -> Storage<O> {
        let shape = self.shape();
        let kept: usize = (0..shape.len())
            .filter(|d| !dims.contains(d))
            .map(|d| shape[d])
            .product();
        if dims.is_empty() {
            return on_device!("reduce", [self],
                cpu => {
                    let mut out = output_buffer::<O>(kept);
                    cpu::cast(self.data(), &mut out);
                    out
                },
                cuda [x] => cuda::cast(x, O::DTYPE));
        }
        let (first, last) = (dims[0], dims[dims.len() - 1]);
        if last - first + 1 == dims.len() {
            let layout = Dim3 {
                outer: numel(&shape[..first]),
                size: numel(&shape[first..=last]),
                inner: numel(&shape[last + 1..]),
            };
            return on_device!("reduce", [self],
                cpu => {
                    let mut out = buffer::<O>(kept);
                    cpu::reduce(op, self.data(), &mut out, layout);
                    out
                },
                cuda [x] => cuda::reduce(op, x, layout, O::DTYPE));
        }
        let perm: Vec<usize> = (0..shape.len())
            .filter(|d| !dims.contains(d))
            .chain(dims.iter().copied())
            .collect();
        let layout = Dim3 {
            outer: kept,
            size: dims.iter().map(|&d| shape[d]).product(),
            inner: 1,
        };
        on_device!("reduce", [self],
            cpu => {
                let mut moved = output_buffer::<E>(self.numel());
                cpu::permute(self.data(), shape, &perm, &mut moved);
                let mut out = buffer::<O>(kept);
                cpu::reduce(op, &moved, &mut out, layout);
                out
            },
            cuda [x] => cuda::permute(x, shape, &perm).and_then(|moved| cuda::reduce(op, &moved, layout, O::DTYPE)))
    }

    #[track_caller]
    fn reduce_op(
        &self,
        name: &'static str,
        op: Reduce,
        dims: &impl Dims,
        keepdim: bool,
    ) -> Tensor<E> {
        let plan = Plan::new(name, dims, self.shape());
        if matches!(op, Reduce::Max | Reduce::Min) && plan.count == 0 {
            panic!(
                "{name}: cannot reduce over an empty dimension of shape {:?}",
                self.shape()
            );
        }
        let out = Arc::new(self.reduce_raw::<E>(op, &plan.dims));
        // Sum and mean need only the input's shape; max and min need the input and the result.
        let shape = self.shape().to_vec();
        let saved = matches!(op, Reduce::Max | Reduce::Min).then(|| {
            (
                self.detach(),
                Tensor::from_storage(out.clone(), plan.keep_shape.clone(), None),
            )
        });
        Tensor::record(
            name,
            out,
            plan.out_shape(keepdim),
            &[self.node()],
            move |g, _| {
                let g = g.reshape(&plan.keep_shape);
                let dx = match (op, &saved) {
                    (Reduce::Sum, _) => g.broadcast_to(&shape),
                    (Reduce::Mean, _) => g
                        .map("mean", Unary::DivScalar(plan.count as f64))
                        .broadcast_to(&shape),
                    (Reduce::Max | Reduce::Min, Some((x, out))) => {
                        // The elements equal to the result (or NaN, when the result is NaN) share the
                        // gradient evenly; the count is kept in f32 so many ties stay exact.
                        let hit = x.same_as(out).cast::<E::Compute>();
                        let count = hit.sum_keepdim(plan.dims.clone());
                        let share = g
                            .cast::<E::Compute>()
                            .binary_same(&count, Binary::Div, "div");
                        hit.binary_same(&share, Binary::Mul, "mul").cast::<E>()
                    }
                    (Reduce::Max | Reduce::Min, None) => {
                        unreachable!("max and min save their input")
                    }
                };
                vec![Some(dx.into())]
            },
        )
    }

    /// Sum over `dims` (`..` for all), removing them. Accumulates in f32 (f64 for f64).
    #[track_caller]
    pub fn sum(&self, dims: impl Dims) -> Tensor<E> {
        self.reduce_op("sum", Reduce::Sum, &dims, false)
    }

    /// Sum over `dims`, keeping them as size 1.
    #[track_caller]
    pub fn sum_keepdim(&self, dims: impl Dims) -> Tensor<E> {
        self.reduce_op("sum", Reduce::Sum, &dims, true)
    }

    /// Mean over `dims`, removing them. Accumulates in f32 (f64 for f64).
    #[track_caller]
    pub fn mean(&self, dims: impl Dims) -> Tensor<E> {
        self.reduce_op("mean", Reduce::Mean, &dims, false)
    }

    /// Mean over `dims`, keeping them as size 1.
    #[track_caller]
    pub fn mean_keepdim(&self, dims: impl Dims) -> Tensor<E> {
        self.reduce_op("mean", Reduce::Mean, &dims, true)
    }

    /// Maximum over `dims`, removing them; NaN if any element is NaN. Tied maxima share the gradient.
    #[track_caller]
    pub fn max(&self, dims: impl Dims) -> Tensor<E> {
        self.reduce_op("max", Reduce::Max, &dims, false)
    }

    /// Maximum over `dims`, keeping them as size 1.
    #[track_caller]
    pub fn max_keepdim(&self, dims: impl Dims) -> Tensor<E> {
        self.reduce_op("max", Reduce::Max, &dims, true)
    }

    /// Minimum over `dims`, removing them; NaN if any element is NaN.
    #[track_caller]
    pub fn min(&self, dims: impl Dims) -> Tensor<E> {
        self.reduce_op("min", Reduce::Min, &dims, false)
    }

    /// Minimum over `dims`, keeping them as size 1.
    #[track_caller]
    pub fn min_keepdim(&self, dims: impl Dims) -> Tensor<E> {
        self.reduce_op("min", Reduce::Min, &dims, true)
    }

    #[track_caller]
    fn var_op(&self, dims: &impl Dims, keepdim: bool) -> Tensor<E> {
        let plan = Plan::new("var", dims, self.shape());
        let x = self.cast::<E::Acc>();
        let centered = x.binary_same(&x.mean_keepdim(plan.dims.clone()), Binary::Sub, "var");
        let squares = centered.binary_same(&centered, Binary::Mul, "var");
        let total = squares.reduce_op("var", Reduce::Sum, &plan.dims, keepdim);
        total
            .map("var", Unary::DivScalar(plan.count as f64 - 1.0))
            .cast::<E>()
    }

    /// Unbiased variance (divides by `n - 1`, PyTorch's default) over `dims`, computed in f32 (f64 for
    /// f64).
    #[track_caller]
    pub fn var(&self, dims: impl Dims) -> Tensor<E> {
        self.var_op(&dims, false)
    }

    /// Unbiased variance over `dims`, keeping them as size 1.
    #[track_caller]
    pub fn var_keepdim(&self, dims: impl Dims) -> Tensor<E> {
        self.var_op(&dims, true)
    }

    /// Euclidean (L2) norm over `dims`, computed in f32 (f64 for f64). The gradient at a zero norm is 0.
    #[track_caller]
    pub fn norm(&self, dims: impl Dims) -> Tensor<E> {
        let plan = Plan::new("norm", &dims, self.shape());
        let x = self.detach().cast::<E::Acc>();
        let norm = no_grad(|| {
            x.square()
                .reduce_op("norm", Reduce::Sum, &plan.dims, true)
                .sqrt()
        });
        let out = norm.cast::<E>();
        let out_shape = plan.drop_shape.clone();
        Tensor::record(
            "norm",
            out.storage().clone(),
            out_shape,
            &[self.node()],
            move |g, _| {
                let g = g.reshape(&plan.keep_shape).cast::<E::Acc>();
                let zero = Tensor::<E::Acc>::zeros(Vec::new());
                let scale = g
                    .binary_same(&norm, Binary::Div, "norm")
                    .where_same(&norm.ne(&zero), &zero);
                vec![Some(
                    x.binary_same(&scale, Binary::Mul, "norm")
                        .cast::<E>()
                        .into(),
                )]
            },
        )
    }

    /// Inclusive cumulative sum along `dim`, accumulated in f32 (f64 for f64).
    #[track_caller]
    pub fn cumsum(&self, dim: isize) -> Tensor<E> {
        let d = dim_index("cumsum", dim, self.shape());
        let layout = Dim3::of(self.shape(), d);
        let out = self.cumsum_raw(layout, false);
        Tensor::record(
            "cumsum",
            out.storage().clone(),
            self.shape().to_vec(),
            &[self.node()],
            // d/dx_s of Σ_t g_t·y_t is Σ_{t ≥ s} g_t: a suffix sum, accumulated in f32.
            move |g, _| vec![Some(g.cumsum_raw(layout, true).into())],
        )
    }

    /// Running sums over the middle dimension of `layout` (from the end with `reverse`), no history.
    fn cumsum_raw(&self, layout: Dim3, reverse: bool) -> Tensor<E> {
        let out = on_device!("cumsum", [self],
            cpu => {
                let mut out = output_buffer::<E>(self.numel());
                cpu::cumsum(self.data(), &mut out, layout, reverse);
                out
            },
            cuda [x] => cuda::cumsum(x, layout, reverse));
        Tensor::from_storage(Arc::new(out), self.shape().to_vec(), None)
    }

    /// `ln Σ exp(x)` over `dims`, removing them; stable for large values, computed in f32.
    #[track_caller]
    pub fn logsumexp(&self, dims: impl Dims) -> Tensor<E> {
        self.logsumexp_op(&dims, false)
    }

    /// `ln Σ exp(x)` over `dims`, keeping them as size 1.
    #[track_caller]
    pub fn logsumexp_keepdim(&self, dims: impl Dims) -> Tensor<E> {
        self.logsumexp_op(&dims, true)
    }

    #[track_caller]
    fn logsumexp_op(&self, dims: &impl Dims, keepdim: bool) -> Tensor<E> {
        let plan = Plan::new("logsumexp", dims, self.shape());
        // Move the reduced dimensions to the end so one kernel call sees them as a single row.
        let kept: Vec<usize> = (0..self.rank())
            .filter(|d| !plan.dims.contains(d))
            .collect();
        let perm: Vec<usize> = kept.iter().chain(&plan.dims).copied().collect();
        let rows = Dim3 {
            outer: numel(&plan.keep_shape),
            size: plan.count,
            inner: 1,
        };
        let moved = self.detach().permute(&perm);
        let out = on_device!("logsumexp", [moved],
            cpu => {
                let mut out = buffer::<E>(rows.outer);
                cpu::logsumexp(moved.data(), &mut out, rows);
                out
            },
            cuda [x] => cuda::logsumexp(x, rows, E::DTYPE));
        let out = Arc::new(out);
        let (x, lse) = (
            self.detach(),
            Tensor::from_storage(out.clone(), plan.keep_shape.clone(), None),
        );
        Tensor::record(
            "logsumexp",
            out,
            plan.out_shape(keepdim),
            &[self.node()],
            move |g, _| {
                let g = g.reshape(&plan.keep_shape);
                let p = x.binary_same(&lse, Binary::Sub, "logsumexp").exp();
                vec![Some(p.binary_same(&g, Binary::Mul, "logsumexp").into())]
            },
        )
    }

    #[track_caller]
    fn arg_op(&self, name: &str, max: bool, dim: isize) -> Tensor<i64> {
        let d = dim_index(name, dim, self.shape());
        if self.shape()[d] == 0 {
            panic!(
                "{name}: cannot reduce over an empty dimension of shape {:?}",
                self.shape()
            );
        }
        let layout = Dim3::of(self.shape(), d);
        let out = on_device!(name, [self],
            cpu => {
                let mut out = buffer::<i64>(layout.outer * layout.inner);
                cpu::arg_reduce(max, self.data(), &mut out, layout);
                out
            },
            cuda [x] => cuda::arg_reduce(max, x, layout));
        let shape = self
            .shape()
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != d)
            .map(|(_, &s)| s)
            .collect();
        Tensor::from_storage(Arc::new(out), shape, None)
    }

    /// Index of the (first) maximum along `dim`, which is removed; a NaN counts as the maximum.
    #[track_caller]
    pub fn argmax(&self, dim: isize) -> Tensor<i64> {
        self.arg_op("argmax", true, dim)
    }

    /// Index of the (first) minimum along `dim`, which is removed.
    #[track_caller]
    pub fn argmin(&self, dim: isize) -> Tensor<i64> {
        self.arg_op("argmin", false, dim)
    }

    /// Sums a broadcast gradient back to `shape` (the backward of broadcasting).
    pub(crate) fn sum_to(&self, shape: &[usize]) -> Tensor<E> {
        if self.shape() == shape {
            return self.clone();
        }
        let offset = self.rank() - shape.len();
        let dims: Vec<usize> = (0..self.rank())
            .filter(|&d| d < offset || (shape[d - offset] == 1 && self.shape()[d] != 1))
            .collect();
        let out = self.reduce_raw::<E>(Reduce::Sum, &dims);
        Tensor::from_storage(Arc::new(out), shape.to_vec(), None)
    }
}

impl<E: Float> Tensor<E> {
    /// Cosine similarity along `dim`: `Σ a·b / (max(‖a‖, eps) · max(‖b‖, eps))`, computed in f32, with
    /// broadcasting between `self` and `other`.
    #[track_caller]
    pub fn cosine_similarity(&self, other: &Tensor<E>, dim: isize, eps: f64) -> Tensor<E> {
        let shape = broadcast_shapes("cosine_similarity", self.shape(), other.shape());
        dim_index("cosine_similarity", dim, &shape);
        let (a, b) = (
            self.cast::<E::Acc>().broadcast_to(&shape),
            other.cast::<E::Acc>().broadcast_to(&shape),
        );
        let dot = a.binary_same(&b, Binary::Mul, "cosine_similarity").sum(dim);
        let (na, nb) = (
            a.norm(dim).clamp(eps, f64::INFINITY),
            b.norm(dim).clamp(eps, f64::INFINITY),
        );
        dot.binary_same(
            &na.binary_same(&nb, Binary::Mul, "cosine_similarity"),
            Binary::Div,
            "cosine_similarity",
        )
        .cast::<E>()
    }
}
