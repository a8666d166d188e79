//! Shape ops: views that share data (reshape, squeeze, unsqueeze, flatten) and copies that move it
//! (permute, transpose, narrow, cat, stack, broadcast_to). All work for every element type.

use crate::autograd::grad_if;
use crate::device::{Device, Storage};
use crate::element::{AnyTensor, Element};
#[cfg(feature = "cuda")]
use crate::ops::dispatch::expect_cuda;
use crate::ops::dispatch::{Operand, device_of, on_device};
use crate::ops::{buffer, output_buffer};
use crate::shape::{IntoShape, broadcasts_to, dim_index, numel};
use crate::tensor::Tensor;
use amp_kernels::cpu::{self, Broadcast, Dim3};
#[cfg(feature = "cuda")]
use amp_kernels::cuda::{self, DeviceBuffer};
use std::borrow::Borrow;
use std::sync::Arc;

impl<E: Element> Tensor<E> {
    /// The same elements with another shape of the same size (shares the data, no copy).
    ///
    /// ```
    /// use amp_runtime::Tensor;
    /// let x = Tensor::<f32>::arange(6).reshape([2, 3]);
    /// assert_eq!(x.shape(), &[2, 3]);
    /// ```
    #[track_caller]
    pub fn reshape(&self, shape: impl IntoShape) -> Tensor<E> {
        let shape = shape.into_shape();
        if numel(&shape) != self.numel() {
            panic!(
                "reshape: cannot reshape a tensor of shape {:?} ({} elements) into {shape:?} ({} elements)",
                self.shape(),
                self.numel(),
                numel(&shape)
            );
        }
        let from = self.shape().to_vec();
        Tensor::record(
            "reshape",
            self.storage().clone(),
            shape,
            &[self.node()],
            move |g, _| vec![Some(g.reshape(&from).into())],
        )
    }

    /// All elements as a 1-D tensor.
    pub fn flatten(&self) -> Tensor<E> {
        self.reshape([self.numel()])
    }

    /// Removes dimension `dim`, which must have size 1.
    #[track_caller]
    pub fn squeeze(&self, dim: isize) -> Tensor<E> {
        let d = dim_index("squeeze", dim, self.shape());
        if self.shape()[d] != 1 {
            panic!(
                "squeeze: dimension {dim} of shape {:?} has size {}, not 1",
                self.shape(),
                self.shape()[d]
            );
        }
        let mut shape = self.shape().to_vec();
        shape.remove(d);
        self.reshape(shape)
    }

    /// Inserts a dimension of size 1 at position `dim` (`-1` appends).
    #[track_caller]
    pub fn unsqueeze(&self, dim: isize) -> Tensor<E> {
        let rank = self.rank() as isize;
        let d = if dim < 0 { dim + rank + 1 } else { dim };
        if d < 0 || d > rank {
            panic!(
                "unsqueeze: position {dim} is out of range for a tensor of shape {:?}",
                self.shape()
            );
        }
        let mut shape = self.shape().to_vec();
        shape.insert(d as usize, 1);
        self.reshape(shape)
    }

    /// Reorders the dimensions: output dimension `i` is input dimension `perm[i]` (copies the data).
    #[track_caller]
    pub fn permute(&self, perm: &[usize]) -> Tensor<E> {
        let mut seen = vec![false; self.rank()];
        if perm.len() != self.rank()
            || perm
                .iter()
                .any(|&p| p >= self.rank() || std::mem::replace(&mut seen[p], true))
        {
            panic!(
                "permute: {perm:?} is not a permutation of the {} dimensions of shape {:?}",
                self.rank(),
                self.shape()
            );
        }
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        let out = on_device!("permute", [self],
            cpu => {
                let mut out = output_buffer::<E>(self.numel());
                cpu::permute(self.data(), self.shape(), perm, &mut out);
                out
            },
            cuda [x] => cuda::permute(x, self.shape(), perm));
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        Tensor::record(
            "permute",
            Arc::new(out),
            shape,
            &[self.node()],
            move |g, _| vec![Some(g.permute(&inverse).into())],
        )
    }

    /// Swaps two dimensions (copies the data).
    #[track_caller]
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Tensor<E> {
        let (a, b) = (
            dim_index("transpose", dim0, self.shape()),
            dim_index("transpose", dim1, self.shape()),
        );
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// The transpose of a 2-D tensor.
    #[track_caller]
    pub fn t(&self) -> Tensor<E> {
        if self.rank() != 2 {
            panic!("t: expects a 2-D tensor, got shape {:?}", self.shape());
        }
        self.transpose(0, 1)
    }

    /// The slice `start..start + len` along `dim` (copies the data).
    #[track_caller]
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Tensor<E> {
        let d = dim_index("narrow", dim, self.shape());
        let size = self.shape()[d];
        if start.checked_add(len).is_none_or(|end| end > size) {
            panic!(
                "narrow: range {start}..{} exceeds size {size} of dimension {dim} (shape {:?})",
                start.saturating_add(len),
                self.shape()
            );
        }
        let Dim3 { outer, inner, .. } = Dim3::of(self.shape(), d);
        let mut shape = self.shape().to_vec();
        shape[d] = len;
        let n = numel(&shape);
        let out = on_device!("narrow", [self],
        cpu => {
            let mut out = output_buffer::<E>(n);
            cpu::copy_rows(self.data(), size * inner, start * inner, &mut out, len * inner, 0, len * inner, outer);
            out
        },
        cuda [x] => DeviceBuffer::uninit(x.gpu(), E::DTYPE, n).and_then(|mut out| {
            cuda::copy_rows(x, size * inner, start * inner, &mut out, len * inner, 0, len * inner, outer)
                .map(|()| out)
        }));
        let from = self.shape().to_vec();
        Tensor::record(
            "narrow",
            Arc::new(out),
            shape,
            &[self.node()],
            move |g, _| {
                let n = numel(&from);
                let dx = on_device!("narrow", [g],
                cpu => {
                    let mut dx = buffer::<E>(n);
                    cpu::copy_rows(g.data(), len * inner, 0, &mut dx, size * inner, start * inner, len * inner, outer);
                    dx
                },
                cuda [gb] => DeviceBuffer::zeros(gb.gpu(), E::DTYPE, n).and_then(|mut dx| {
                    cuda::copy_rows(gb, len * inner, 0, &mut dx, size * inner, start * inner, len * inner, outer)
                        .map(|()| dx)
                }));
                vec![Some(
                    Tensor::from_storage(Arc::new(dx), from.clone(), None).into(),
                )]
            },
        )
    }

    /// Joins tensors along an existing dimension `dim`; all other dimensions must match.
    ///
    /// ```
    /// use amp_runtime::Tensor;
    /// let a = Tensor::<f32>::zeros([2, 3]);
    /// let b = Tensor::<f32>::ones([2, 1]);
    /// assert_eq!(Tensor::cat(&[a, b], 1).shape(), &[2, 4]);
    /// ```
    #[track_caller]
    pub fn cat<T: Borrow<Tensor<E>>>(tensors: &[T], dim: isize) -> Tensor<E> {
        let Some(first) = tensors.first() else {
            panic!("cat: needs at least one tensor")
        };
        let first = first.borrow();
        let d = dim_index("cat", dim, first.shape());
        for t in tensors {
            let s = t.borrow().shape();
            let compatible = s.len() == first.rank()
                && s.iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (a, b))| i == d || a == b);
            if !compatible {
                panic!(
                    "cat: shape {s:?} does not match {:?} outside dimension {dim}",
                    first.shape()
                );
            }
        }
        let sizes: Vec<usize> = tensors.iter().map(|t| t.borrow().shape()[d]).collect();
        let total: usize = sizes.iter().sum();
        let Dim3 { outer, inner, .. } = Dim3::of(first.shape(), d);
        let mut shape = first.shape().to_vec();
        shape[d] = total;
        let operands: Vec<&dyn Operand> =
            tensors.iter().map(|t| t.borrow() as &dyn Operand).collect();
        let out = match device_of("cat", &operands) {
            Device::Cpu => {
                let mut out = output_buffer::<E>(numel(&shape));
                let mut offset = 0;
                for (t, &len) in tensors.iter().zip(&sizes) {
                    cpu::copy_rows(
                        t.borrow().data(),
                        len * inner,
                        0,
                        &mut out,
                        total * inner,
                        offset * inner,
                        len * inner,
                        outer,
                    );
                    offset += len;
                }
                Storage::Cpu(out)
            }
            #[cfg(feature = "cuda")]
            device => {
                let run = || {
                    let held: Vec<_> = operands
                        .iter()
                        .map(|t| t.buffer_on("cat", device))
                        .collect();
                    let mut out = DeviceBuffer::uninit(held[0].gpu(), E::DTYPE, numel(&shape))?;
                    let mut offset = 0;
                    for (t, &len) in held.iter().zip(&sizes) {
                        cuda::copy_rows(
                            t,
                            len * inner,
                            0,
                            &mut out,
                            total * inner,
                            offset * inner,
                            len * inner,
                            outer,
                        )?;
                        offset += len;
                    }
                    Ok(out)
                };
                Storage::cuda(expect_cuda("cat", device, run()))
            }
            #[cfg(not(feature = "cuda"))]
            device => unreachable!("{device} tensors cannot exist without the `cuda` feature"),
        };
        let nodes: Vec<_> = tensors.iter().map(|t| t.borrow().node()).collect();
        Tensor::record("cat", Arc::new(out), shape, &nodes, move |g, needs| {
            let mut start = 0;
            sizes
                .iter()
                .zip(needs)
                .map(|(&len, &need)| {
                    let piece = grad_if(need, || g.narrow(d as isize, start, len));
                    start += len;
                    piece
                })
                .collect()
        })
    }

    /// Joins tensors of one shape along a new dimension `dim`.
    #[track_caller]
    pub fn stack<T: Borrow<Tensor<E>>>(tensors: &[T], dim: isize) -> Tensor<E> {
        let Some(first) = tensors.first() else {
            panic!("stack: needs at least one tensor")
        };
        let first: &Tensor<E> = first.borrow();
        let shape = first.shape().to_vec();
        for t in tensors {
            let t: &Tensor<E> = t.borrow();
            if t.shape() != shape.as_slice() {
                panic!("stack: shapes {shape:?} and {:?} differ", t.shape());
            }
        }
        let rank = shape.len() as isize + 1;
        let d = if dim < 0 { dim + rank } else { dim };
        if d < 0 || d >= rank {
            panic!("stack: position {dim} is out of range for tensors of shape {shape:?}");
        }
        let lifted: Vec<Tensor<E>> = tensors.iter().map(|t| t.borrow().unsqueeze(d)).collect();
        Tensor::cat(&lifted, d)
    }

    /// Repeats the data to `shape` by numpy broadcasting (copies the data).
    #[track_caller]
    pub fn broadcast_to(&self, shape: impl IntoShape) -> Tensor<E> {
        let shape = shape.into_shape();
        if !broadcasts_to(self.shape(), &shape) {
            panic!(
                "broadcast_to: shape {:?} cannot be broadcast to {shape:?}",
                self.shape()
            );
        }
        if shape == self.shape() {
            return self.clone();
        }
        let layout = Broadcast::new(&shape, &[self.shape()]);
        let out = on_device!("broadcast_to", [self],
            cpu => {
                let mut out = output_buffer::<E>(numel(&shape));
                cpu::broadcast_copy(self.data(), &mut out, &layout);
                out
            },
            cuda [x] => cuda::broadcast_copy(x, &layout));
        let from = self.shape().to_vec();
        Tensor::record(
            "broadcast_to",
            Arc::new(out),
            shape,
            &[self.node()],
            move |g, _| vec![Some(AnyTensor::from(g.clone()).sum_to(&from))],
        )
    }
}
