//! Elementwise ops on two tensors with numpy broadcasting: arithmetic (promoting to the wider float type),
//! comparisons and `where_`, plus the `+ - * /` operators for tensors and scalars.

use crate::autograd::grad_if;
use crate::element::{AnyTensor, Element, Float, Promote};
use crate::ops::dispatch::on_device;
use crate::ops::output_buffer;
use crate::param::Param;
use crate::shape::{broadcast_shapes, numel};
use crate::tensor::Tensor;
use amp_kernels::cpu::{self, Binary, Broadcast, Compare, Unary};
#[cfg(feature = "cuda")]
use amp_kernels::cuda;
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::sync::Arc;

impl<E: Float> Tensor<E> {
    /// Same-type broadcasting arithmetic, recorded for backward.
    #[track_caller]
    pub(crate) fn binary_same(
        &self,
        other: &Tensor<E>,
        op: Binary,
        name: &'static str,
    ) -> Tensor<E> {
        let shape = broadcast_shapes(name, self.shape(), other.shape());
        let layout = Broadcast::new(&shape, &[self.shape(), other.shape()]);
        let out = on_device!(name, [self, other],
            cpu => {
                let mut out = output_buffer::<E>(numel(&shape));
                cpu::binary(op, self.data(), other.data(), &mut out, &layout);
                out
            },
            cuda [a, b] => cuda::binary(op, a, b, &layout));
        // Add and Sub need only the shapes; the others need the values.
        let (a_shape, b_shape) = (self.shape().to_vec(), other.shape().to_vec());
        let values =
            (!matches!(op, Binary::Add | Binary::Sub)).then(|| (self.detach(), other.detach()));
        Tensor::record(
            name,
            Arc::new(out),
            shape,
            &[self.node(), other.node()],
            move |g, needs| binary_backward(op, g, needs, (&a_shape, &b_shape), values.as_ref()),
        )
    }

    /// `if cond { self } else { other }` for one element type.
    #[track_caller]
    pub(crate) fn where_same(&self, cond: &Tensor<bool>, other: &Tensor<E>) -> Tensor<E> {
        let shape = broadcast_shapes(
            "where_",
            &broadcast_shapes("where_", cond.shape(), self.shape()),
            other.shape(),
        );
        let layout = Broadcast::new(&shape, &[cond.shape(), self.shape(), other.shape()]);
        let out = on_device!("where_", [cond, self, other],
            cpu => {
                let mut out = output_buffer::<E>(numel(&shape));
                cpu::select(cond.data(), self.data(), other.data(), &mut out, &layout);
                out
            },
            cuda [c, a, b] => cuda::select(c, a, b, &layout));
        let (cond, a_shape, b_shape) =
            (cond.clone(), self.shape().to_vec(), other.shape().to_vec());
        Tensor::record(
            "where_",
            Arc::new(out),
            shape,
            &[self.node(), other.node()],
            move |g, needs| {
                let zero = Tensor::<E>::zeros(Vec::new());
                vec![
                    grad_if(needs[0], || g.where_same(&cond, &zero).sum_to(&a_shape)),
                    grad_if(needs[1], || zero.where_same(&cond, g).sum_to(&b_shape)),
                ]
            },
        )
    }
}

/// Gradients of a same-type broadcasting op; `values` holds the inputs for every op but add and sub.
fn binary_backward<E: Float>(
    op: Binary,
    g: &Tensor<E>,
    needs: &[bool],
    (a_shape, b_shape): (&[usize], &[usize]),
    values: Option<&(Tensor<E>, Tensor<E>)>,
) -> Vec<Option<AnyTensor>> {
    let (ga, gb) = match (op, values) {
        (Binary::Add, _) => (
            grad_if(needs[0], || g.sum_to(a_shape)),
            grad_if(needs[1], || g.sum_to(b_shape)),
        ),
        (Binary::Sub, _) => (
            grad_if(needs[0], || g.sum_to(a_shape)),
            grad_if(needs[1], || g.neg().sum_to(b_shape)),
        ),
        (_, None) => unreachable!("the inputs are saved for every op but add and sub"),
        (Binary::Mul, Some((a, b))) => (
            grad_if(needs[0], || {
                g.binary_same(b, Binary::Mul, "mul").sum_to(a_shape)
            }),
            grad_if(needs[1], || {
                g.binary_same(a, Binary::Mul, "mul").sum_to(b_shape)
            }),
        ),
        (Binary::Div, Some((a, b))) => (
            grad_if(needs[0], || {
                g.binary_same(b, Binary::Div, "div").sum_to(a_shape)
            }),
            grad_if(needs[1], || {
                // -(g/b)·(a/b) in the compute type: b² would overflow for large b, and rounding each step
                // in bf16 would lose the rest.
                let (g, a, b) = (
                    g.cast::<E::Compute>(),
                    a.cast::<E::Compute>(),
                    b.cast::<E::Compute>(),
                );
                let ratio = a.binary_same(&b, Binary::Div, "div");
                let d = g
                    .binary_same(&b, Binary::Div, "div")
                    .binary_same(&ratio, Binary::Mul, "mul")
                    .neg();
                d.cast::<E>().sum_to(b_shape)
            }),
        ),
        (Binary::Maximum | Binary::Minimum, Some((a, b))) => {
            // The winner takes the gradient; a tie splits it evenly (as PyTorch).
            let wins = if op == Binary::Maximum {
                a.gt(b)
            } else {
                a.lt(b)
            };
            let ties = a.eq(b);
            let zero = Tensor::<E>::zeros(Vec::new());
            let half_g = g.map("mul", Unary::MulScalar(0.5));
            let ga = g.where_same(&wins, &half_g.where_same(&ties, &zero));
            let gb = g.binary_same(&ga, Binary::Sub, "sub");
            (
                grad_if(needs[0], || ga.sum_to(a_shape)),
                grad_if(needs[1], || gb.sum_to(b_shape)),
            )
        }
    };
    vec![ga, gb]
}

macro_rules! promoting_ops {
    ($($(#[$doc:meta])* $name:ident => $op:expr;)*) => {
        impl<E: Float> Tensor<E> {
            $(
                $(#[$doc])*
                #[track_caller]
                pub fn $name<B: Float>(&self, other: &Tensor<B>) -> Tensor<<E as Promote<B>>::Output>
                where
                    E: Promote<B>,
                {
                    let (a, b) = (self.cast::<<E as Promote<B>>::Output>(), other.cast::<<E as Promote<B>>::Output>());
                    a.binary_same(&b, $op, stringify!($name))
                }
            )*
        }
    };
}

promoting_ops! {
    /// Elementwise `self + other` with broadcasting; mixed float types promote to the wider one.
    add => Binary::Add;
    /// Elementwise `self - other` with broadcasting and promotion.
    sub => Binary::Sub;
    /// Elementwise `self · other` with broadcasting and promotion.
    mul => Binary::Mul;
    /// Elementwise `self / other` with broadcasting and promotion.
    div => Binary::Div;
    /// Elementwise maximum with broadcasting and promotion; NaN if either is NaN.
    maximum => Binary::Maximum;
    /// Elementwise minimum with broadcasting and promotion; NaN if either is NaN.
    minimum => Binary::Minimum;
}

impl<E: Float> Tensor<E> {
    /// `if cond { self } else { other }` elementwise, with broadcasting over all three and promotion of
    /// `self` and `other` to the wider type.
    ///
    /// ```
    /// use amp_runtime::Tensor;
    /// let x = Tensor::<f32>::from_vec(vec![-1.0, 2.0], [2]);
    /// let y = x.where_(&x.gt(&Tensor::zeros([1])), &Tensor::<f32>::zeros([1]));
    /// assert_eq!(y.to_vec(), vec![0.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn where_<B: Float>(
        &self,
        cond: &Tensor<bool>,
        other: &Tensor<B>,
    ) -> Tensor<<E as Promote<B>>::Output>
    where
        E: Promote<B>,
    {
        let (a, b) = (
            self.cast::<<E as Promote<B>>::Output>(),
            other.cast::<<E as Promote<B>>::Output>(),
        );
        a.where_same(cond, &b)
    }
}

macro_rules! comparisons {
    ($($(#[$doc:meta])* $name:ident => $op:expr;)*) => {
        impl<E: Element> Tensor<E> {
            $(
                $(#[$doc])*
                #[track_caller]
                pub fn $name(&self, other: &Tensor<E>) -> Tensor<bool> {
                    let shape = broadcast_shapes(stringify!($name), self.shape(), other.shape());
                    let layout = Broadcast::new(&shape, &[self.shape(), other.shape()]);
                    let out = on_device!(stringify!($name), [self, other],
                        cpu => {
                            let mut out = output_buffer::<bool>(numel(&shape));
                            cpu::compare($op, self.data(), other.data(), &mut out, &layout);
                            out
                        },
                        cuda [a, b] => cuda::compare($op, a, b, &layout));
                    Tensor::from_storage(Arc::new(out), shape, None)
                }
            )*
        }
    };
}

comparisons! {
    /// Elementwise `self == other` with broadcasting.
    eq => Compare::Eq;
    /// Elementwise `self != other` with broadcasting.
    ne => Compare::Ne;
    /// Elementwise `self < other` with broadcasting.
    lt => Compare::Lt;
    /// Elementwise `self <= other` with broadcasting.
    le => Compare::Le;
    /// Elementwise `self > other` with broadcasting.
    gt => Compare::Gt;
    /// Elementwise `self >= other` with broadcasting.
    ge => Compare::Ge;
    /// Elementwise "equal, or both NaN" with broadcasting.
    same_as => Compare::Same;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A plain number that can be combined with a tensor (`&x * 0.5`, `1.0 - &x`). It does not change the
/// tensor's element type, as a Python scalar does not in PyTorch.
pub trait Scalar: Copy + sealed::Sealed {
    /// The value as f64.
    fn to_f64(self) -> f64;
}
impl Scalar for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl Scalar for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

macro_rules! tensor_operator {
    ($trait:ident, $method:ident, $scalar_op:expr, $scalar_left:expr) => {
        impl<A: Float, B: Float> $trait<&Tensor<B>> for &Tensor<A>
        where
            A: Promote<B>,
        {
            type Output = Tensor<<A as Promote<B>>::Output>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<B>) -> Self::Output {
                Tensor::$method(self, rhs)
            }
        }
        impl<A: Float, B: Float> $trait<Tensor<B>> for &Tensor<A>
        where
            A: Promote<B>,
        {
            type Output = Tensor<<A as Promote<B>>::Output>;
            #[track_caller]
            fn $method(self, rhs: Tensor<B>) -> Self::Output {
                Tensor::$method(self, &rhs)
            }
        }
        impl<A: Float, B: Float> $trait<&Tensor<B>> for Tensor<A>
        where
            A: Promote<B>,
        {
            type Output = Tensor<<A as Promote<B>>::Output>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<B>) -> Self::Output {
                Tensor::$method(&self, rhs)
            }
        }
        impl<A: Float, B: Float> $trait<Tensor<B>> for Tensor<A>
        where
            A: Promote<B>,
        {
            type Output = Tensor<<A as Promote<B>>::Output>;
            #[track_caller]
            fn $method(self, rhs: Tensor<B>) -> Self::Output {
                Tensor::$method(&self, &rhs)
            }
        }
        impl<E: Float, S: Scalar> $trait<S> for &Tensor<E> {
            type Output = Tensor<E>;
            fn $method(self, rhs: S) -> Tensor<E> {
                let op: fn(f64) -> Unary = $scalar_op;
                self.map(stringify!($method), op(rhs.to_f64()))
            }
        }
        impl<E: Float, S: Scalar> $trait<S> for Tensor<E> {
            type Output = Tensor<E>;
            fn $method(self, rhs: S) -> Tensor<E> {
                $trait::$method(&self, rhs)
            }
        }
        tensor_operator!(@left $trait, $method, $scalar_left, f32);
        tensor_operator!(@left $trait, $method, $scalar_left, f64);
    };
    (@left $trait:ident, $method:ident, $scalar_left:expr, $s:ty) => {
        impl<E: Float> $trait<&Tensor<E>> for $s {
            type Output = Tensor<E>;
            fn $method(self, rhs: &Tensor<E>) -> Tensor<E> {
                let op: fn(f64) -> Unary = $scalar_left;
                rhs.map(stringify!($method), op(self as f64))
            }
        }
        impl<E: Float> $trait<Tensor<E>> for $s {
            type Output = Tensor<E>;
            fn $method(self, rhs: Tensor<E>) -> Tensor<E> {
                self.$method(&rhs)
            }
        }
    };
}

tensor_operator!(Add, add, Unary::AddScalar, Unary::AddScalar);
tensor_operator!(Sub, sub, |c| Unary::AddScalar(-c), Unary::ScalarSub);
tensor_operator!(Mul, mul, Unary::MulScalar, Unary::MulScalar);
tensor_operator!(Div, div, Unary::DivScalar, Unary::ScalarDiv);

impl<E: Float> Neg for &Tensor<E> {
    type Output = Tensor<E>;
    fn neg(self) -> Tensor<E> {
        Tensor::neg(self)
    }
}

impl<E: Float> Neg for Tensor<E> {
    type Output = Tensor<E>;
    fn neg(self) -> Tensor<E> {
        Tensor::neg(&self)
    }
}

/// `Tensor ⊕ Param` and `Param ⊕ Tensor`: a parameter takes part as its f32 master weight, with the usual
/// promotion (`Tensor<bf16> + &Param` gives `Tensor<f32>`).
macro_rules! param_operator {
    ($trait:ident, $method:ident) => {
        impl<E: Float> $trait<&Param> for &Tensor<E>
        where
            E: Promote<f32>,
        {
            type Output = Tensor<<E as Promote<f32>>::Output>;
            #[track_caller]
            fn $method(self, rhs: &Param) -> Self::Output {
                Tensor::$method(self, &rhs.value())
            }
        }
        impl<E: Float> $trait<&Param> for Tensor<E>
        where
            E: Promote<f32>,
        {
            type Output = Tensor<<E as Promote<f32>>::Output>;
            #[track_caller]
            fn $method(self, rhs: &Param) -> Self::Output {
                Tensor::$method(&self, &rhs.value())
            }
        }
        impl<E: Float> $trait<&Tensor<E>> for &Param
        where
            f32: Promote<E>,
        {
            type Output = Tensor<<f32 as Promote<E>>::Output>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<E>) -> Self::Output {
                Tensor::$method(&self.value(), rhs)
            }
        }
        impl<E: Float> $trait<Tensor<E>> for &Param
        where
            f32: Promote<E>,
        {
            type Output = Tensor<<f32 as Promote<E>>::Output>;
            #[track_caller]
            fn $method(self, rhs: Tensor<E>) -> Self::Output {
                Tensor::$method(&self.value(), &rhs)
            }
        }
    };
}

param_operator!(Add, add);
param_operator!(Sub, sub);
param_operator!(Mul, mul);
param_operator!(Div, div);
