//! Indexing by integer tensors: gather, scatter_add, index_select, index_add and embedding lookups.
//! Out-of-range indices panic with the op, the index and the bound; nothing is read or written out of
//! bounds.

use crate::autograd::grad_if;
use crate::element::Float;
use crate::ops::buffer;
use crate::ops::dispatch::on_device;
use crate::shape::{dim_index, numel};
use crate::tensor::Tensor;
use amp_kernels::cpu::{self, Dim3, IndexError};
#[cfg(feature = "cuda")]
use amp_kernels::cuda;
use std::sync::Arc;

/// Panics like [`index_panic`] unless every index is in `0..bound`. The CPU kernels check as they go;
/// indices on a device are copied to the host for this check before a kernel uses them.
#[cfg(feature = "cuda")]
#[track_caller]
fn check_on_host(op: &str, index: &Tensor<i64>, bound: usize, dim: usize, shape: &[usize]) {
    if let Some(&bad) = index
        .to_vec()
        .iter()
        .find(|&&i| i < 0 || i as u64 >= bound as u64)
    {
        index_panic(op, IndexError { index: bad, bound }, dim, shape);
    }
}

#[track_caller]
fn index_panic(op: &str, err: IndexError, dim: usize, shape: &[usize]) -> ! {
    panic!(
        "{op}: index {} is out of range for dimension {dim} of size {} (input shape {shape:?})",
        err.index, err.bound
    )
}

/// The dimension a [`Dim3`] splits `shape` around (for error messages).
fn layout_dim(shape: &[usize], layout: Dim3) -> usize {
    (0..shape.len())
        .find(|&d| Dim3::of(shape, d) == layout)
        .unwrap_or(0)
}

impl<E: Float> Tensor<E> {
    #[track_caller]
    fn check_same_but(&self, op: &str, other: &[usize], what: &str, d: usize) {
        let s = self.shape();
        let ok = other.len() == s.len()
            && other
                .iter()
                .zip(s)
                .enumerate()
                .all(|(i, (a, b))| i == d || a == b);
        if !ok {
            panic!(
                "{op}: {what} of shape {other:?} must match the input shape {s:?} except in dimension {d}"
            );
        }
    }

    /// `out[.., t, ..] = self[.., index[.., t, ..], ..]` along `dim`; `index` has the input's shape except
    /// in `dim`.
    #[track_caller]
    pub fn gather(&self, dim: isize, index: &Tensor<i64>) -> Tensor<E> {
        let d = dim_index("gather", dim, self.shape());
        self.check_same_but("gather", index.shape(), "index", d);
        let layout = Dim3::of(self.shape(), d);
        let t = index.shape()[d];
        let out = on_device!("gather", [self, index],
        cpu => {
            let mut out = buffer::<E>(index.numel());
            if let Err(e) = cpu::gather(self.data(), layout, index.data(), t, &mut out) {
                index_panic("gather", e, d, self.shape());
            }
            out
        },
        cuda [x, ix] => {
            check_on_host("gather", index, layout.size, d, self.shape());
            cuda::gather(x, layout, ix, t)
        });
        let (index, shape) = (index.clone(), self.shape().to_vec());
        Tensor::record(
            "gather",
            Arc::new(out),
            index.shape().to_vec(),
            &[self.node()],
            move |g, _| {
                let dx = Tensor::<E>::zeros(shape.clone()).to_device(g.device());
                let dx = dx.unwrap_or_else(|e| panic!("gather backward: {e}"));
                vec![Some(dx.scatter_add_checked(layout, &index, g, t).into())]
            },
        )
    }

    /// A copy of `self` with `src` added at `index` along `dim` (`index` and `src` have one shape, equal to
    /// the input's except in `dim`). Repeated indices accumulate.
    #[track_caller]
    pub fn scatter_add(&self, dim: isize, index: &Tensor<i64>, src: &Tensor<E>) -> Tensor<E> {
        let d = dim_index("scatter_add", dim, self.shape());
        self.check_same_but("scatter_add", index.shape(), "index", d);
        if src.shape() != index.shape() {
            panic!(
                "scatter_add: src of shape {:?} must have the index's shape {:?}",
                src.shape(),
                index.shape()
            );
        }
        let layout = Dim3::of(self.shape(), d);
        let t = index.shape()[d];
        let out = self.detach().scatter_add_checked(layout, index, src, t);
        let index = index.clone();
        Tensor::record(
            "scatter_add",
            out.storage().clone(),
            self.shape().to_vec(),
            &[self.node(), src.node()],
            move |g, needs| {
                vec![
                    grad_if(needs[0], || g.clone()),
                    grad_if(needs[1], || g.gather(d as isize, &index)),
                ]
            },
        )
    }

    /// `self` (no history) plus `src` added at `index` along the middle dimension of `layout`: the
    /// forward of `scatter_add` and the backward of `gather`.
    #[track_caller]
    fn scatter_add_checked(
        self,
        layout: Dim3,
        index: &Tensor<i64>,
        src: &Tensor<E>,
        t: usize,
    ) -> Tensor<E> {
        let shape = self.shape().to_vec();
        let d = layout_dim(&shape, layout);
        let out = on_device!("scatter_add", [self, index, src],
        cpu => {
            // The base's own buffer when nothing else holds it (a fresh zero gradient): no copy.
            let mut out = self.into_vec();
            if let Err(e) = cpu::scatter_add(&mut out, layout, index.data(), src.data(), t) {
                index_panic("scatter_add", e, d, &shape);
            }
            out
        },
        cuda [base, ix, sb] => {
            check_on_host("scatter_add", index, layout.size, d, &shape);
            cuda::scatter_add(base, layout, ix, sb, t)
        });
        Tensor::from_storage(Arc::new(out), shape, None)
    }

    /// `self` (no history) plus the slices of `src` added at `index` along the middle dimension of
    /// `layout`: the forward of `index_add` and the backward of `index_select`.
    #[track_caller]
    fn index_add_checked(self, layout: Dim3, index: &Tensor<i64>, src: &Tensor<E>) -> Tensor<E> {
        let shape = self.shape().to_vec();
        let d = layout_dim(&shape, layout);
        let out = on_device!("index_add", [self, index, src],
        cpu => {
            // The base's own buffer when nothing else holds it (a fresh zero gradient): no copy.
            let mut out = self.into_vec();
            if let Err(e) = cpu::index_add(&mut out, layout, index.data(), src.data()) {
                index_panic("index_add", e, d, &shape);
            }
            out
        },
        cuda [base, ix, sb] => {
            check_on_host("index_add", index, layout.size, d, &shape);
            cuda::index_add(base, layout, ix, sb)
        });
        Tensor::from_storage(Arc::new(out), shape, None)
    }

    /// The slices `index[0], index[1], ...` of `dim` (a 1-D `index`), in that order.
    #[track_caller]
    pub fn index_select(&self, dim: isize, index: &Tensor<i64>) -> Tensor<E> {
        self.index_select_named("index_select", dim, index)
    }

    #[track_caller]
    fn index_select_named(&self, op: &'static str, dim: isize, index: &Tensor<i64>) -> Tensor<E> {
        let d = dim_index(op, dim, self.shape());
        if index.rank() != 1 {
            panic!("{op}: index must be 1-D, got shape {:?}", index.shape());
        }
        let layout = Dim3::of(self.shape(), d);
        let mut shape = self.shape().to_vec();
        shape[d] = index.numel();
        let out = on_device!(op, [self, index],
        cpu => {
            let mut out = buffer::<E>(numel(&shape));
            if let Err(e) = cpu::index_select(self.data(), layout, index.data(), &mut out) {
                index_panic(op, e, d, self.shape());
            }
            out
        },
        cuda [x, ix] => {
            check_on_host(op, index, layout.size, d, self.shape());
            cuda::index_select(x, layout, ix)
        });
        let (index, from) = (index.clone(), self.shape().to_vec());
        Tensor::record(op, Arc::new(out), shape, &[self.node()], move |g, _| {
            let dx = Tensor::<E>::zeros(from.clone()).to_device(g.device());
            let dx = dx.unwrap_or_else(|e| panic!("{op} backward: {e}"));
            vec![Some(dx.index_add_checked(layout, &index, g).into())]
        })
    }

    /// A copy of `self` with slice `t` of `source` added to slice `index[t]` of `dim` (1-D `index`;
    /// `source` has the input's shape with `index.len()` in `dim`). Repeated indices accumulate.
    #[track_caller]
    pub fn index_add(&self, dim: isize, index: &Tensor<i64>, source: &Tensor<E>) -> Tensor<E> {
        let d = dim_index("index_add", dim, self.shape());
        if index.rank() != 1 {
            panic!(
                "index_add: index must be 1-D, got shape {:?}",
                index.shape()
            );
        }
        let mut expected = self.shape().to_vec();
        expected[d] = index.numel();
        if source.shape() != expected.as_slice() {
            panic!(
                "index_add: source of shape {:?} must have shape {expected:?}",
                source.shape()
            );
        }
        let out = self
            .detach()
            .index_add_checked(Dim3::of(self.shape(), d), index, source);
        let index = index.clone();
        Tensor::record(
            "index_add",
            out.storage().clone(),
            self.shape().to_vec(),
            &[self.node(), source.node()],
            move |g, needs| {
                vec![
                    grad_if(needs[0], || g.clone()),
                    grad_if(needs[1], || g.index_select(d as isize, &index)),
                ]
            },
        )
    }

    /// Looks up rows of this `[vocab, dim]` table for each id in `ids` (any shape); the result has shape
    /// `ids.shape() + [dim]`.
    #[track_caller]
    pub fn embedding(&self, ids: &Tensor<i64>) -> Tensor<E> {
        if self.rank() != 2 {
            panic!(
                "embedding: the table must be [vocab, dim], got shape {:?}",
                self.shape()
            );
        }
        let mut shape = ids.shape().to_vec();
        shape.push(self.shape()[1]);
        self.index_select_named("embedding", 0, &ids.flatten())
            .reshape(shape)
    }
}
