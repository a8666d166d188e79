//! The receivers of rewritten calls. Each holds the receiver already at its op class's precision and
//! derefs to it, so ops without tensor arguments (`exp`, `softmax`, `sum`, ...) are the ordinary tensor
//! methods. Ops that take more tensors are defined here: they accept any [`TensorLike`] (a tensor of any
//! float type, a reference, a `Param`) and bring it to the same precision first.

use super::operand::{TensorLike, cast_opt};
use crate::element::{Float, Promote};
use crate::ops::Pair;
use crate::tensor::Tensor;
use amp_kernels::DType;
use amp_kernels::cpu::Binary;
use std::cell::OnceCell;
use std::ops::Deref;

/// A receiver of a low-precision op (matmul, bmm, linear, conv1d, conv2d, attention), cast to the
/// policy's low type `T`.
///
/// An f32 tensor receiver is kept as it is until an op needs its cast: `linear` rounds it inside the
/// GEMM instead (no converted copy of the activation); every other op casts it on first use.
pub struct Low<T: Float> {
    /// The receiver in `T` (filled on first use when `wide` holds the receiver).
    cast: OnceCell<Tensor<T>>,
    /// An f32 receiver whose cast is deferred.
    wide: Option<Tensor<f32>>,
}

impl<T: Float> Low<T> {
    /// Wraps a receiver: one that `linear` can round while packing (an f32 tensor bound for bf16 or
    /// f16) is kept as it is; anything else is cast now (a `Param` through its cast cache).
    pub(crate) fn new<X: TensorLike + ?Sized>(x: &X) -> Self {
        if let Some(wide) = x.deferrable_f32()
            && matches!(T::DTYPE, DType::BF16 | DType::F16)
        {
            return Low {
                cast: OnceCell::new(),
                wide: Some(wide),
            };
        }
        Low {
            cast: OnceCell::from(x.cast_to::<T>()),
            wide: None,
        }
    }

    /// The receiver in `T`.
    fn low(&self) -> &Tensor<T> {
        self.cast.get_or_init(|| {
            self.wide
                .as_ref()
                .expect("a Low holds its cast or its f32 receiver")
                .cast::<T>()
        })
    }
}

impl<T: Float> Deref for Low<T> {
    type Target = Tensor<T>;
    #[inline(always)]
    fn deref(&self) -> &Tensor<T> {
        self.low()
    }
}

/// A receiver of an f32-class op, cast to f32 (`T` is f64 for f64 tensors, which are never cast).
pub struct Full<T: Float>(pub(crate) Tensor<T>);

/// A receiver of a promote- or same-class op, in its own type (a `Param` as its f32 master).
pub struct Keep<E: Float>(pub(crate) Tensor<E>);

macro_rules! deref_to_tensor {
    ($($w:ident),*) => {$(
        impl<T: Float> Deref for $w<T> {
            type Target = Tensor<T>;
            #[inline(always)]
            fn deref(&self) -> &Tensor<T> {
                &self.0
            }
        }
    )*};
}
deref_to_tensor!(Full, Keep);

impl<T: Float> Low<T> {
    /// [`Tensor::matmul`] with `other` cast to `T`.
    #[track_caller]
    pub fn matmul<O: TensorLike + ?Sized>(&self, other: &O) -> Tensor<T> {
        self.low().matmul(&other.cast_to::<T>())
    }

    /// [`Tensor::bmm`] with `other` cast to `T`.
    #[track_caller]
    pub fn bmm<O: TensorLike + ?Sized>(&self, other: &O) -> Tensor<T> {
        self.low().bmm(&other.cast_to::<T>())
    }

    /// [`Tensor::linear`] with weight and bias cast to `T` (a `Param` through its cast cache); an f32
    /// receiver is rounded to `T` inside the GEMM rather than copied.
    #[track_caller]
    pub fn linear<W: TensorLike + ?Sized, B: TensorLike + ?Sized>(
        &self,
        weight: &W,
        bias: Option<&B>,
    ) -> Tensor<T> {
        let (weight, bias) = (weight.cast_to::<T>(), cast_opt::<T, B>(bias));
        match (&self.wide, self.cast.get()) {
            (Some(x), None) => x.linear_in(&weight, bias.as_ref()),
            _ => self.low().linear(&weight, bias.as_ref()),
        }
    }

    /// [`Tensor::conv2d`] with weight and bias cast to `T`.
    #[track_caller]
    pub fn conv2d<W: TensorLike + ?Sized, B: TensorLike + ?Sized>(
        &self,
        weight: &W,
        bias: Option<&B>,
        stride: impl Pair,
        padding: impl Pair,
    ) -> Tensor<T> {
        self.low().conv2d(
            &weight.cast_to::<T>(),
            cast_opt::<T, B>(bias).as_ref(),
            stride,
            padding,
        )
    }

    /// [`Tensor::conv1d`] with weight and bias cast to `T`.
    #[track_caller]
    pub fn conv1d<W: TensorLike + ?Sized, B: TensorLike + ?Sized>(
        &self,
        weight: &W,
        bias: Option<&B>,
        stride: usize,
        padding: usize,
    ) -> Tensor<T> {
        self.low().conv1d(
            &weight.cast_to::<T>(),
            cast_opt::<T, B>(bias).as_ref(),
            stride,
            padding,
        )
    }

    /// [`Tensor::attention`] with keys and values cast to `T` (the softmax runs in f32 inside).
    #[track_caller]
    pub fn attention<K: TensorLike + ?Sized, V: TensorLike + ?Sized>(
        &self,
        key: &K,
        value: &V,
        causal: bool,
    ) -> Tensor<T> {
        self.low()
            .attention(&key.cast_to::<T>(), &value.cast_to::<T>(), causal)
    }
}

/// Ops whose other tensor is cast to the receiver's type `T` (f32-class ops, and every op inside
/// `#[keep_fp32]`).
macro_rules! full_binary {
    ($($(#[$doc:meta])* $name:ident => |$a:ident, $b:ident| $body:expr;)*) => {
        impl<T: Float> Full<T> {
            $(
                $(#[$doc])*
                #[track_caller]
                pub fn $name<O: TensorLike + ?Sized>(&self, other: &O) -> Tensor<T> {
                    // The body is a direct call (not a closure) so `#[track_caller]` reaches the user's line.
                    let ($a, $b) = (&self.0, &other.cast_to::<T>());
                    $body
                }
            )*
        }
    };
}

full_binary! {
    /// [`Tensor::mse_loss`] with the target cast to `T`.
    mse_loss => |x, t| x.mse_loss(t);
    /// [`Tensor::l1_loss`] with the target cast to `T`.
    l1_loss => |x, t| x.l1_loss(t);
    /// [`Tensor::bce_with_logits`] with the target cast to `T`.
    bce_with_logits => |x, t| x.bce_with_logits(t);
    /// [`Tensor::binary_cross_entropy`] with the target cast to `T`.
    binary_cross_entropy => |x, t| x.binary_cross_entropy(t);
    /// [`Tensor::kl_div`] with the target cast to `T`.
    kl_div => |x, t| x.kl_div(t);
    /// Elementwise sum with `other` cast to `T`.
    add => |a, b| a.binary_same(b, Binary::Add, "add");
    /// Elementwise difference with `other` cast to `T`.
    sub => |a, b| a.binary_same(b, Binary::Sub, "sub");
    /// Elementwise product with `other` cast to `T`.
    mul => |a, b| a.binary_same(b, Binary::Mul, "mul");
    /// Elementwise quotient with `other` cast to `T`.
    div => |a, b| a.binary_same(b, Binary::Div, "div");
    /// Elementwise maximum with `other` cast to `T`.
    maximum => |a, b| a.binary_same(b, Binary::Maximum, "maximum");
    /// Elementwise minimum with `other` cast to `T`.
    minimum => |a, b| a.binary_same(b, Binary::Minimum, "minimum");
}

impl<T: Float> Full<T> {
    /// [`Tensor::cosine_similarity`] with `other` cast to `T`.
    #[track_caller]
    pub fn cosine_similarity<O: TensorLike + ?Sized>(
        &self,
        other: &O,
        dim: isize,
        eps: f64,
    ) -> Tensor<T> {
        self.0.cosine_similarity(&other.cast_to::<T>(), dim, eps)
    }

    /// [`Tensor::scatter_add`] with `src` cast to `T`.
    #[track_caller]
    pub fn scatter_add<O: TensorLike + ?Sized>(
        &self,
        dim: isize,
        index: &Tensor<i64>,
        src: &O,
    ) -> Tensor<T> {
        self.0.scatter_add(dim, index, &src.cast_to::<T>())
    }

    /// [`Tensor::index_add`] with `source` cast to `T`.
    #[track_caller]
    pub fn index_add<O: TensorLike + ?Sized>(
        &self,
        dim: isize,
        index: &Tensor<i64>,
        source: &O,
    ) -> Tensor<T> {
        self.0.index_add(dim, index, &source.cast_to::<T>())
    }

    /// [`Tensor::where_`] with `other` cast to `T`.
    #[track_caller]
    pub fn where_<O: TensorLike + ?Sized>(&self, cond: &Tensor<bool>, other: &O) -> Tensor<T> {
        self.0.where_same(cond, &other.cast_to::<T>())
    }

    /// [`Tensor::layer_norm`] with weight and bias cast to `T`.
    #[track_caller]
    pub fn layer_norm<W: TensorLike + ?Sized, B: TensorLike + ?Sized>(
        &self,
        normalized_shape: &[usize],
        weight: Option<&W>,
        bias: Option<&B>,
        eps: f64,
    ) -> Tensor<T> {
        let (w, b) = (cast_opt::<T, W>(weight), cast_opt::<T, B>(bias));
        self.0
            .layer_norm(normalized_shape, w.as_ref(), b.as_ref(), eps)
    }

    /// [`Tensor::rms_norm`] with the weight cast to `T`.
    #[track_caller]
    pub fn rms_norm<W: TensorLike + ?Sized>(
        &self,
        normalized_shape: &[usize],
        weight: Option<&W>,
        eps: f64,
    ) -> Tensor<T> {
        self.0
            .rms_norm(normalized_shape, cast_opt::<T, W>(weight).as_ref(), eps)
    }

    /// [`Tensor::group_norm`] with weight and bias cast to `T`.
    #[track_caller]
    pub fn group_norm<W: TensorLike + ?Sized, B: TensorLike + ?Sized>(
        &self,
        groups: usize,
        weight: Option<&W>,
        bias: Option<&B>,
        eps: f64,
    ) -> Tensor<T> {
        let (w, b) = (cast_opt::<T, W>(weight), cast_opt::<T, B>(bias));
        self.0.group_norm(groups, w.as_ref(), b.as_ref(), eps)
    }
}

/// Promote-class ops: the result has the wider of the two types, as outside autocast; a `Param` operand
/// takes part as its f32 master.
macro_rules! keep_binary {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        impl<E: Float> Keep<E> {
            $(
                $(#[$doc])*
                #[track_caller]
                pub fn $name<O: TensorLike + ?Sized>(&self, other: &O) -> Tensor<<E as Promote<O::Elem>>::Output>
                where
                    E: Promote<O::Elem>,
                {
                    self.0.$name(&other.tensor())
                }
            )*
        }
    };
}

keep_binary! {
    /// [`Tensor::add`] accepting a `Param`.
    add;
    /// [`Tensor::sub`] accepting a `Param`.
    sub;
    /// [`Tensor::mul`] accepting a `Param`.
    mul;
    /// [`Tensor::div`] accepting a `Param`.
    div;
    /// [`Tensor::maximum`] accepting a `Param`.
    maximum;
    /// [`Tensor::minimum`] accepting a `Param`.
    minimum;
}

impl<E: Float> Keep<E> {
    /// [`Tensor::where_`] accepting a `Param`.
    #[track_caller]
    pub fn where_<O: TensorLike + ?Sized>(
        &self,
        cond: &Tensor<bool>,
        other: &O,
    ) -> Tensor<<E as Promote<O::Elem>>::Output>
    where
        E: Promote<O::Elem>,
    {
        self.0.where_(cond, &other.tensor())
    }
}
