//! The element types kernels work on, and the arithmetic type each one accumulates in.

use half::{bf16, f16};
use std::fmt;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// The run-time name of an element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary64.
    F64,
    /// bfloat16: f32's exponent range, 8 significant bits.
    BF16,
    /// IEEE binary16: 11 significant bits, largest finite value 65504.
    F16,
    /// 64-bit signed integer, for labels and indices.
    I64,
    /// Boolean, for masks and comparisons.
    Bool,
    /// Unsigned byte: the codes of 8-bit optimizer states in device memory (no tensor holds it).
    U8,
}

impl DType {
    /// The short name: `"f32"`, `"f64"`, `"bf16"`, `"f16"`, `"i64"`, `"bool"`, `"u8"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::I64 => "i64",
            DType::Bool => "bool",
            DType::U8 => "u8",
        }
    }

    /// Bytes one element occupies.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::Bool | DType::U8 => 1,
        }
    }

    /// Whether this is one of the floating-point types.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::BF16 | DType::F16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
    impl Sealed for i64 {}
    impl Sealed for bool {}
}

/// Every element type a tensor can hold. Sealed: the set is fixed by the kernels.
pub trait Elem:
    Copy
    + Default
    + PartialEq
    + PartialOrd
    + fmt::Debug
    + Send
    + Sync
    + std::panic::UnwindSafe
    + std::panic::RefUnwindSafe
    + 'static
    + sealed::Sealed
{
    /// The run-time name of this type.
    const DTYPE: DType;
    /// Widens to f64 (exact for every type but large `i64`).
    fn to_f64(self) -> f64;
    /// Rounds an f64 to this type (round to nearest even; integers truncate toward zero).
    fn from_f64(v: f64) -> Self;
    /// Converts to f32 (exact for bf16, f16 and bool).
    fn to_f32(self) -> f32;
    /// Rounds an f32 to this type (round to nearest even, overflow to ±inf, NaN stays NaN).
    fn from_f32(v: f32) -> Self;

    /// Converts to i64 (floats truncate toward zero, saturating; NaN becomes 0).
    fn to_i64(self) -> i64;
    /// Converts from i64 with a single rounding (round to nearest even).
    fn from_i64(v: i64) -> Self;

    /// Converts to another element type with a single rounding: through f32 when the source is exactly
    /// representable in f32 (f32, bf16, f16, bool), through f64 from f64, and directly from i64.
    #[inline(always)]
    fn cast<O: Elem>(self) -> O {
        match Self::DTYPE {
            DType::I64 => O::from_i64(self.to_i64()),
            DType::F64 => O::from_f64(self.to_f64()),
            _ => O::from_f32(self.to_f32()),
        }
    }
}

/// `i` as f64 rounded to odd: exact when it fits in 53 bits, otherwise the neighbour of the two
/// bracketing f64 values whose last significand bit is 1. Rounding that once more to a format of at most
/// 51 significant bits gives the correctly rounded value of `i`.
#[inline(always)]
fn i64_to_f64_round_odd(i: i64) -> f64 {
    let r = i as f64;
    if r as i128 == i as i128 || r.to_bits() & 1 == 1 {
        return r;
    }
    // Inexact and even: step one ulp toward `i` (the bits order magnitudes within a sign).
    let toward_zero = (r as i128).abs() > (i as i128).abs();
    f64::from_bits(if toward_zero {
        r.to_bits() - 1
    } else {
        r.to_bits() + 1
    })
}

/// `v` as f32 rounded to odd (see [`i64_to_f64_round_odd`]): rounding the result to bf16 or f16 gives
/// the correctly rounded value of `v`. (`half`'s own `from_f64` drops the low 32 bits of the significand
/// before rounding, so it rounds twice.)
#[inline(always)]
fn f64_to_f32_round_odd(v: f64) -> f32 {
    let r = v as f32;
    if r as f64 == v || v.is_nan() || r.to_bits() & 1 == 1 {
        return r;
    }
    // Inexact and even (possibly ±0 after underflow or ±inf after overflow): step one ulp toward `v`.
    let toward_zero = (r as f64).abs() > v.abs();
    f32::from_bits(if toward_zero {
        r.to_bits() - 1
    } else {
        r.to_bits() + 1
    })
}

/// The floating-point element types: `f32`, `f64`, [`bf16`] and [`f16`](struct@half::f16). Sealed.
///
/// Arithmetic on a `Float` runs in its [`Float::Acc`] type: f32 for the 32- and 16-bit types, f64 for f64.
/// That is how every reduction, softmax and norm accumulates in f32 even for bf16/f16 inputs.
pub trait Float: Elem {
    /// The type arithmetic on this element runs in.
    type Acc: Accum;
    /// Converts to the accumulation type (exact).
    fn to_acc(self) -> Self::Acc;
    /// Rounds from the accumulation type.
    fn from_acc(v: Self::Acc) -> Self;
    /// Whether the value is neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;
    /// The largest finite value.
    const MAX: Self;
}

/// An arithmetic type: f32 or f64. Kernels compute in it and round once on output.
pub trait Accum:
    Float<Acc = Self>
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
{
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
    /// Negative infinity (the identity of `max`).
    const NEG_INFINITY: Self;
    /// Positive infinity (the identity of `min`).
    const INFINITY: Self;
    /// Converts an f64 constant (rounding).
    fn c(v: f64) -> Self;
    /// `e^x`.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// `ln(1 + x)`, accurate near zero.
    fn ln_1p(self) -> Self;
    /// `e^x - 1`, accurate near zero.
    fn exp_m1(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// `self^p`.
    fn powf(self, p: Self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Error function.
    fn erf(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// The larger value; NaN if either is NaN.
    fn max_nan(self, other: Self) -> Self;
    /// The smaller value; NaN if either is NaN.
    fn min_nan(self, other: Self) -> Self;
}

macro_rules! accum_impl {
    ($t:ty, $erf:path) => {
        impl Accum for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const INFINITY: Self = <$t>::INFINITY;
            #[inline(always)]
            fn c(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline(always)]
            fn exp_m1(self) -> Self {
                <$t>::exp_m1(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn powf(self, p: Self) -> Self {
                <$t>::powf(self, p)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn max_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    <$t>::NAN
                } else {
                    <$t>::max(self, other)
                }
            }
            #[inline(always)]
            fn min_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    <$t>::NAN
                } else {
                    <$t>::min(self, other)
                }
            }
        }
    };
}
accum_impl!(f32, libm::erff);
accum_impl!(f64, libm::erf);

impl Elem for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self as i64
    }
    #[inline(always)]
    fn from_i64(v: i64) -> Self {
        v as f32 // Rust's int-to-float conversion rounds once, to nearest even
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Elem for f64 {
    const DTYPE: DType = DType::F64;
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self as i64
    }
    #[inline(always)]
    fn from_i64(v: i64) -> Self {
        v as f64
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v as f64
    }
}

macro_rules! half_elem {
    ($t:ty, $d:expr) => {
        impl Elem for $t {
            const DTYPE: DType = $d;
            #[inline(always)]
            fn to_i64(self) -> i64 {
                <$t>::to_f32(self) as i64
            }
            #[inline(always)]
            fn from_i64(v: i64) -> Self {
                <Self as Elem>::from_f64(i64_to_f64_round_odd(v))
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                <$t>::to_f64(self)
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                <$t>::from_f32(f64_to_f32_round_odd(v))
            }
            #[inline(always)]
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            #[inline(always)]
            fn from_f32(v: f32) -> Self {
                <$t>::from_f32(v)
            }
        }
        impl Float for $t {
            type Acc = f32;
            const MAX: Self = <$t>::MAX;
            #[inline(always)]
            fn to_acc(self) -> f32 {
                <$t>::to_f32(self)
            }
            #[inline(always)]
            fn from_acc(v: f32) -> Self {
                <$t>::from_f32(v)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}
half_elem!(bf16, DType::BF16);
half_elem!(f16, DType::F16);

macro_rules! native_float {
    ($t:ty) => {
        impl Float for $t {
            type Acc = $t;
            const MAX: Self = <$t>::MAX;
            #[inline(always)]
            fn to_acc(self) -> $t {
                self
            }
            #[inline(always)]
            fn from_acc(v: $t) -> Self {
                v
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}
native_float!(f32);
native_float!(f64);

impl Elem for i64 {
    const DTYPE: DType = DType::I64;
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self
    }
    #[inline(always)]
    fn from_i64(v: i64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    /// Truncates toward zero, saturating; NaN becomes 0 (Rust's `as`).
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as i64
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v as i64
    }
}

impl Elem for bool {
    const DTYPE: DType = DType::Bool;
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self as i64
    }
    #[inline(always)]
    fn from_i64(v: i64) -> Self {
        v != 0
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        if self { 1.0 } else { 0.0 }
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        if self { 1.0 } else { 0.0 }
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v != 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_rounds_once_from_f64() {
        // 1 + 2^-8 + 2^-30 is above the bf16 midpoint 1 + 2^-8, so a single rounding goes up; rounding
        // through f32 first would land exactly on the midpoint and tie to even (down).
        let x = 1.0 + 2f64.powi(-8) + 2f64.powi(-30);
        assert_eq!(x.cast::<bf16>(), <bf16 as Elem>::from_f64(x));
        assert_eq!(x.cast::<bf16>().to_f64(), 1.0 + 2f64.powi(-7));
    }

    #[test]
    fn integer_and_bool_casts() {
        assert_eq!((-2.7f32).cast::<i64>(), -2);
        assert_eq!(f32::NAN.cast::<i64>(), 0);
        assert_eq!(3i64.cast::<bf16>(), bf16::from_f32(3.0));
        assert!(0.5f32.cast::<bool>());
        assert_eq!(true.cast::<f16>(), f16::ONE);
    }
}
