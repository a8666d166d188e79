//! Element types as the runtime sees them: [`Element`] for everything a tensor holds, [`Float`] for the four
//! floating-point types, [`Promote`] for mixed-type arithmetic, and [`AnyTensor`] for type-erased tensors.

use crate::Tensor;
use crate::policy::Policy;
use half::{bf16, f16};

pub use amp_kernels::DType;

/// Every element type a [`Tensor`] can hold: the four [`Float`]s, `i64` (labels, indices) and `bool`
/// (masks). Sealed.
pub trait Element: amp_kernels::Elem {
    /// Wraps a tensor of this type into an [`AnyTensor`].
    fn into_any(t: Tensor<Self>) -> AnyTensor;
    /// Unwraps an [`AnyTensor`] holding this type, or gives it back unchanged.
    fn from_any(t: AnyTensor) -> Result<Tensor<Self>, AnyTensor>;
    /// Borrows the tensor inside an [`AnyTensor`] holding this type.
    fn any_ref(t: &AnyTensor) -> Option<&Tensor<Self>>;
}

/// The floating-point element types: `f32`, `f64`, [`bf16`] and [`f16`](struct@half::f16). Sealed.
///
/// Arithmetic on a `Float` runs in its accumulation type (f32 for the 32- and 16-bit types, f64 for f64)
/// and rounds once on output, so reductions, softmax and norms of bf16/f16 tensors accumulate in f32.
pub trait Float:
    Element + amp_kernels::Float<Acc = <Self as Float>::Compute> + Promote<Self, Output = Self>
{
    /// The type arithmetic on this element runs in: f32 for f32/bf16/f16, f64 for f64. Under autocast
    /// this is also the type of the f32-class ops.
    type Compute: Float<Compute = <Self as Float>::Compute> + amp_kernels::Accum;
    /// The type a low-precision op (matmul, linear, ...) runs in under policy `P`: `P::Low`, except that
    /// f64 tensors are never cast.
    type Low<P: Policy>: Float;
}

impl Float for f32 {
    type Compute = f32;
    type Low<P: Policy> = P::Low;
}
impl Float for f64 {
    type Compute = f64;
    type Low<P: Policy> = f64;
}
impl Float for bf16 {
    type Compute = f32;
    type Low<P: Policy> = P::Low;
}
impl Float for f16 {
    type Compute = f32;
    type Low<P: Policy> = P::Low;
}

/// A tensor whose element type is known only at run time (gradients, checkpoints, cast caches).
#[derive(Clone, Debug)]
pub enum AnyTensor {
    /// An f32 tensor.
    F32(Tensor<f32>),
    /// An f64 tensor.
    F64(Tensor<f64>),
    /// A bf16 tensor.
    BF16(Tensor<bf16>),
    /// An f16 tensor.
    F16(Tensor<f16>),
    /// An i64 tensor.
    I64(Tensor<i64>),
    /// A bool tensor.
    Bool(Tensor<bool>),
}

macro_rules! element_impl {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            fn into_any(t: Tensor<Self>) -> AnyTensor {
                AnyTensor::$variant(t)
            }
            fn from_any(t: AnyTensor) -> Result<Tensor<Self>, AnyTensor> {
                match t {
                    AnyTensor::$variant(t) => Ok(t),
                    other => Err(other),
                }
            }
            fn any_ref(t: &AnyTensor) -> Option<&Tensor<Self>> {
                match t {
                    AnyTensor::$variant(t) => Some(t),
                    _ => None,
                }
            }
        }
    };
}
element_impl!(f32, F32);
element_impl!(f64, F64);
element_impl!(bf16, BF16);
element_impl!(f16, F16);
element_impl!(i64, I64);
element_impl!(bool, Bool);

/// Runs `$body` with `$t` bound to the typed tensor inside an [`AnyTensor`].
macro_rules! with_any {
    ($any:expr, $t:ident => $body:expr) => {
        match $any {
            AnyTensor::F32($t) => $body,
            AnyTensor::F64($t) => $body,
            AnyTensor::BF16($t) => $body,
            AnyTensor::F16($t) => $body,
            AnyTensor::I64($t) => $body,
            AnyTensor::Bool($t) => $body,
        }
    };
}

impl AnyTensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        with_any!(self, t => t.dtype())
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        with_any!(self, t => t.shape())
    }

    /// The typed tensor, if it holds element type `E`.
    pub fn downcast<E: Element>(self) -> Option<Tensor<E>> {
        E::from_any(self).ok()
    }

    /// Elementwise sum of two tensors of the same float type and shape (gradient accumulation).
    #[track_caller]
    pub(crate) fn add_same(&self, other: &AnyTensor) -> AnyTensor {
        match (self, other) {
            (AnyTensor::F32(a), AnyTensor::F32(b)) => AnyTensor::F32(a.add(b)),
            (AnyTensor::F64(a), AnyTensor::F64(b)) => AnyTensor::F64(a.add(b)),
            (AnyTensor::BF16(a), AnyTensor::BF16(b)) => AnyTensor::BF16(a.add(b)),
            (AnyTensor::F16(a), AnyTensor::F16(b)) => AnyTensor::F16(a.add(b)),
            (a, b) => panic!(
                "cannot accumulate gradients of types {} and {}",
                a.dtype(),
                b.dtype()
            ),
        }
    }
}

impl<E: Element> From<Tensor<E>> for AnyTensor {
    fn from(t: Tensor<E>) -> Self {
        E::into_any(t)
    }
}

/// The result type of an arithmetic op on two float types: the wider one (`bf16` with `f32` gives `f32`,
/// anything with `f64` gives `f64`). `bf16` with `f16` has no common type, so mixing them does not compile:
///
/// ```compile_fail
/// use amp_runtime::{Tensor, bf16, f16};
/// let a = Tensor::<bf16>::ones([2]);
/// let b = Tensor::<f16>::ones([2]);
/// let _ = &a + &b; // error: `bf16: Promote<f16>` is not satisfied
/// ```
pub trait Promote<B: Float> {
    /// The wider of the two types.
    type Output: Float;
}

macro_rules! promote {
    ($($a:ty, $b:ty => $o:ty;)*) => { $(impl Promote<$b> for $a { type Output = $o; })* };
}
promote! {
    f64, f64 => f64; bf16, bf16 => bf16; f16, f16 => f16;
    bf16, f32 => f32; f16, f32 => f32;
    f32, f64 => f64; f64, f32 => f64; bf16, f64 => f64; f64, bf16 => f64; f16, f64 => f64; f64, f16 => f64;
}

/// The types a policy may use for its low-precision ops: f32, bf16 and f16. `f32` with any of them gives
/// `f32`, through one generic impl, so that generic code (`#[autocast(P)]`) may add an f32 tensor and a
/// `Tensor<P::Low>` without naming the policy.
pub trait LowFloat: Float<Compute = f32> + Promote<f32, Output = f32> {}

impl LowFloat for f32 {}
impl LowFloat for bf16 {}
impl LowFloat for f16 {}

impl<L: LowFloat> Promote<L> for f32 {
    type Output = f32;
}

impl AnyTensor {
    /// Sums a broadcast gradient back to `shape` (float tensors only: only they carry gradients).
    pub(crate) fn sum_to(&self, shape: &[usize]) -> AnyTensor {
        match self {
            AnyTensor::F32(t) => t.sum_to(shape).into(),
            AnyTensor::F64(t) => t.sum_to(shape).into(),
            AnyTensor::BF16(t) => t.sum_to(shape).into(),
            AnyTensor::F16(t) => t.sum_to(shape).into(),
            other => unreachable!("{} tensors carry no gradient", other.dtype()),
        }
    }
}

/// An operation on a float tensor of any type, applied to the tensor inside an [`AnyTensor`].
pub(crate) trait FloatOp {
    /// The result.
    type Out;
    /// Runs on a typed tensor.
    fn run<E: Float>(&mut self, t: &mut Tensor<E>) -> Self::Out;
}

impl AnyTensor {
    /// Runs `op` on the float tensor inside (panics for integer and bool tensors, which never carry
    /// gradients).
    pub(crate) fn with_float<O: FloatOp>(&mut self, op: &mut O) -> O::Out {
        match self {
            AnyTensor::F32(t) => op.run(t),
            AnyTensor::F64(t) => op.run(t),
            AnyTensor::BF16(t) => op.run(t),
            AnyTensor::F16(t) => op.run(t),
            other => unreachable!("{} tensors carry no gradient", other.dtype()),
        }
    }
}
