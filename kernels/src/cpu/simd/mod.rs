//! Vectorized kernels behind the scalar ones, chosen at run time from [`isa()`](super::isa::isa).
//!
//! Each scalar kernel in `cpu` asks the matching function here first (`if simd::cast(x, out) { return; }`).
//! A function here returns `false` when it has no fast path for the level, the element types or the
//! layout; the scalar code then runs as before and stays the reference. What is vectorized:
//!
//! | kernel | f32, bf16, f16 (f32 arithmetic) | levels |
//! | --- | --- | --- |
//! | `cast`, `round_through` | every pair of the three types | AVX2, AVX-512 |
//! | `unary` | arithmetic, `Sqrt`, `Rsqrt`, `Exp`, `Log`, `Log1p`, activations | AVX2, AVX-512 |
//! | `unary_backward` | the activations, `Exp`, `Log`, roots, reciprocal, scalar ops | AVX2, AVX-512 |
//! | `binary` | contiguous, or one operand a repeated row (a bias) or a single value | AVX2, AVX-512 |
//! | `reduce` | every op, `inner == 1` (rows) and `inner > 1` (across columns) | AVX2, AVX-512 |
//! | `logsumexp`, softmax forward and backward | `inner == 1` | AVX2, AVX-512 |
//! | layer norm, RMS norm, forward and backward | every row length | AVX2, AVX-512 |
//! | `unscale_and_check`, `adam_step`, `sgd_step` | fused, one pass | AVX2, AVX-512 |
//! | `adam8bit_step`, `momentum8bit_step` | full 256-element blocks (f32 weights) | AVX-512 |
//!
//! `f64` and the integer types always take the scalar path. The `Avx512Bf16` and `Amx` levels run the
//! AVX-512 code: f32 → bf16 rounds with integer AVX-512 instructions, because `vcvtneps2bf16` flushes
//! subnormal inputs to zero (`half` rounds them), and a bandwidth-bound cast gains nothing from the single
//! instruction.
//!
//! Results: where the scalar kernel does one IEEE operation per step, the vector kernel does the same
//! operations in the same order, so the results are bit-identical (casts, `+ - × ÷ √`, ReLU, the optimizer
//! steps, unscaling, and every reduction across columns). Sums along a row are added in a different order
//! (16 or 8 lanes, then a tree), and the transcendental functions are the polynomial approximations of
//! [`math`], a few f32 ulps from the libm functions the scalar path calls.
//!
//! How the code is organized (x86_64 only; elsewhere every entry point returns `false`):
//! - `Simd` is an instruction set seen as f32 vectors: [`avx512::Avx512`] (16 lanes) and [`avx2::Avx2`]
//!   (8 lanes). A value of either type exists only after the CPU check, so its methods are safe to call.
//! - A kernel is a `Kernel` value (its slices and parameters) whose body, written once with
//!   `simd_kernel!`, becomes one `#[target_feature]` method per level; `run` picks the method. The helpers
//!   the bodies call (`map1`, `exp`, the `Simd` methods) are `#[inline(always)]`, so each kernel compiles
//!   to one loop with the level's features.
//! - Rayon splits the work *outside* the target-feature functions: closures do not inherit the features
//!   of the function they are written in once they are handed to another thread.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod elementwise;
#[cfg(target_arch = "x86_64")]
mod math;
#[cfg(target_arch = "x86_64")]
mod optim;
#[cfg(target_arch = "x86_64")]
pub(super) mod optim8;
#[cfg(target_arch = "x86_64")]
mod rows;

#[cfg(target_arch = "x86_64")]
pub(super) use elementwise::{binary, binary_periodic, cast, round_through, unary, unary_backward};
#[cfg(target_arch = "x86_64")]
pub(super) use optim::{adam_step, sgd_step, unscale_and_check};
#[cfg(target_arch = "x86_64")]
pub(super) use rows::{
    layer_norm, layer_norm_backward, logsumexp, reduce, rms_norm, rms_norm_backward, softmax,
    softmax_backward,
};

/// Adam's per-step constants in f32, as the scalar `adam_step` derives them.
#[derive(Clone, Copy)]
pub(crate) struct AdamConsts {
    pub(crate) beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) eps: f32,
    pub(crate) step_size: f32,
    pub(crate) inv_bias2_sqrt: f32,
    /// Adam's L2 term added to the gradient (0 for AdamW).
    pub(crate) l2: f32,
    /// AdamW's decay factor applied to the weight (1 for Adam).
    pub(crate) decay: f32,
}

/// SGD's per-step constants in f32, as the scalar `sgd_step` derives them.
#[derive(Clone, Copy)]
pub(super) struct SgdConsts {
    pub(super) lr: f32,
    pub(super) weight_decay: f32,
    pub(super) momentum: f32,
    pub(super) dampening: f32,
    pub(super) nesterov: bool,
    /// The momentum buffer is uninitialized: it becomes the gradient.
    pub(super) first_step: bool,
}

#[cfg(not(target_arch = "x86_64"))]
mod fallback;
#[cfg(not(target_arch = "x86_64"))]
pub(super) use fallback::*;

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::*;

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The pieces every x86 kernel shares: the `Simd` trait, element loading, dispatch, type views.

    use super::super::isa::{Isa, isa};
    pub(crate) use super::avx2::Avx2;
    pub(crate) use super::avx512::Avx512;
    use crate::{DType, Elem, bf16, f16};
    use half::slice::HalfFloatSliceExt;

    /// An instruction set seen as vectors of f32 lanes, with the operations the kernels need.
    ///
    /// Semantics follow the x86 instructions: `min`/`max` return the *second* operand when either is NaN
    /// (callers that must propagate NaN test for it); comparisons are ordered (false with NaN) except
    /// `is_nan`. Loads and stores take slices of at least `LANES` elements and panic on shorter ones.
    pub(crate) trait Simd: Copy {
        /// f32 lanes per vector.
        const LANES: usize;
        /// A vector of f32.
        type V: Copy;
        /// A vector of i32 / u32 (the same bits as `V`).
        type U: Copy;
        /// A per-lane predicate.
        type M: Copy;

        fn splat(self, v: f32) -> Self::V;
        fn load(self, x: &[f32]) -> Self::V;
        fn store(self, v: Self::V, out: &mut [f32]);
        /// Widens bf16 bits (exact).
        fn load_bf16(self, x: &[u16]) -> Self::V;
        /// Rounds to bf16 as `half::bf16::from_f32` does (nearest even, NaN → quiet NaN).
        fn store_bf16(self, v: Self::V, out: &mut [u16]);
        /// Widens f16 bits (exact).
        fn load_f16(self, x: &[u16]) -> Self::V;
        /// Rounds to f16 as `half::f16::from_f32` does (IEEE nearest even).
        fn store_f16(self, v: Self::V, out: &mut [u16]);
        /// `v` rounded to the nearest bf16, kept in f32.
        fn round_bf16(self, v: Self::V) -> Self::V;
        /// `v` rounded to the nearest f16, kept in f32.
        fn round_f16(self, v: Self::V) -> Self::V;

        fn add(self, a: Self::V, b: Self::V) -> Self::V;
        fn sub(self, a: Self::V, b: Self::V) -> Self::V;
        fn mul(self, a: Self::V, b: Self::V) -> Self::V;
        fn div(self, a: Self::V, b: Self::V) -> Self::V;
        /// `a·b + c`, rounded once.
        fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        /// `c - a·b`, rounded once.
        fn neg_mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        fn sqrt(self, a: Self::V) -> Self::V;
        /// x86 `min`: `b` when either operand is NaN.
        fn min(self, a: Self::V, b: Self::V) -> Self::V;
        /// x86 `max`: `b` when either operand is NaN.
        fn max(self, a: Self::V, b: Self::V) -> Self::V;
        fn abs(self, a: Self::V) -> Self::V;
        fn neg(self, a: Self::V) -> Self::V;
        fn or(self, a: Self::V, b: Self::V) -> Self::V;
        /// The sign bit of `a`, the rest zero.
        fn sign(self, a: Self::V) -> Self::V;
        /// Rounds to the nearest integer (ties to even).
        fn round(self, a: Self::V) -> Self::V;

        fn lt(self, a: Self::V, b: Self::V) -> Self::M;
        fn gt(self, a: Self::V, b: Self::V) -> Self::M;
        fn ge(self, a: Self::V, b: Self::V) -> Self::M;
        fn eq(self, a: Self::V, b: Self::V) -> Self::M;
        fn is_nan(self, a: Self::V) -> Self::M;
        /// `t` where `m` holds, else `f`.
        fn select(self, m: Self::M, t: Self::V, f: Self::V) -> Self::V;
        fn mask_or(self, a: Self::M, b: Self::M) -> Self::M;
        fn any(self, m: Self::M) -> bool;

        fn as_int(self, a: Self::V) -> Self::U;
        fn as_float(self, a: Self::U) -> Self::V;
        fn splat_u(self, v: i32) -> Self::U;
        fn add_u(self, a: Self::U, b: Self::U) -> Self::U;
        fn sub_u(self, a: Self::U, b: Self::U) -> Self::U;
        fn and_u(self, a: Self::U, b: Self::U) -> Self::U;
        fn or_u(self, a: Self::U, b: Self::U) -> Self::U;
        fn shl<const N: u32>(self, a: Self::U) -> Self::U;
        /// Arithmetic (sign-extending) right shift.
        fn sra<const N: u32>(self, a: Self::U) -> Self::U;
        /// Converts integer-valued lanes to i32 (exact for them).
        fn to_int(self, a: Self::V) -> Self::U;
        fn to_float(self, a: Self::U) -> Self::V;

        /// Sum of the lanes (a fixed tree).
        fn reduce_add(self, a: Self::V) -> f32;
        /// x86 `max` of the lanes (no NaN lanes expected).
        fn reduce_max(self, a: Self::V) -> f32;
        /// x86 `min` of the lanes (no NaN lanes expected).
        fn reduce_min(self, a: Self::V) -> f32;
    }

    /// The element types vector kernels read and write: f32 as is, bf16 and f16 widened exactly on load
    /// and rounded once (as `half`) on store.
    pub(crate) trait Lane: Elem {
        fn load<S: Simd>(s: S, x: &[Self]) -> S::V;
        fn store<S: Simd>(s: S, v: S::V, out: &mut [Self]);
    }

    impl Lane for f32 {
        #[inline(always)]
        fn load<S: Simd>(s: S, x: &[f32]) -> S::V {
            s.load(x)
        }
        #[inline(always)]
        fn store<S: Simd>(s: S, v: S::V, out: &mut [f32]) {
            s.store(v, out)
        }
    }

    impl Lane for bf16 {
        #[inline(always)]
        fn load<S: Simd>(s: S, x: &[bf16]) -> S::V {
            s.load_bf16(x.reinterpret_cast())
        }
        #[inline(always)]
        fn store<S: Simd>(s: S, v: S::V, out: &mut [bf16]) {
            s.store_bf16(v, out.reinterpret_cast_mut())
        }
    }

    impl Lane for f16 {
        #[inline(always)]
        fn load<S: Simd>(s: S, x: &[f16]) -> S::V {
            s.load_f16(x.reinterpret_cast())
        }
        #[inline(always)]
        fn store<S: Simd>(s: S, v: S::V, out: &mut [f16]) {
            s.store_f16(v, out.reinterpret_cast_mut())
        }
    }

    /// The widest vector: buffers for partial vectors are this long.
    pub(crate) const MAX_LANES: usize = 16;

    /// Loads the first `x.len() < LANES` elements, the other lanes set to `fill` (0 for sums, -inf for
    /// maxima, ...). Goes through a stack buffer, so it costs a few cycles once per row.
    #[inline(always)]
    pub(crate) fn load_part<S: Simd, T: Lane>(s: S, x: &[T], fill: f32) -> S::V {
        let mut buf = [T::from_f32(fill); MAX_LANES];
        buf[..x.len()].copy_from_slice(x);
        T::load(s, &buf[..S::LANES])
    }

    /// Stores the first `out.len() < LANES` lanes of `v`.
    #[inline(always)]
    pub(crate) fn store_part<S: Simd, T: Lane>(s: S, v: S::V, out: &mut [T]) {
        let mut buf = [T::default(); MAX_LANES];
        T::store(s, v, &mut buf[..S::LANES]);
        let n = out.len();
        out.copy_from_slice(&buf[..n]);
    }

    /// `c0 + c1·x + c2·x² + …` by Horner's rule with fused multiply-adds (coefficients lowest first).
    #[inline(always)]
    pub(crate) fn poly<S: Simd, const N: usize>(s: S, x: S::V, c: &[f32; N]) -> S::V {
        let mut acc = s.splat(c[N - 1]);
        for &k in c[..N - 1].iter().rev() {
            acc = s.mul_add(acc, x, s.splat(k));
        }
        acc
    }

    /// A kernel ready to run: its slices and parameters, and its body compiled once per instruction set.
    /// Implemented with [`simd_kernel!`], never by hand.
    pub(crate) trait Kernel {
        type Output;
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C.
        unsafe fn exec_avx2(self) -> Self::Output;
        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C.
        unsafe fn exec_avx512(self) -> Self::Output;
    }

    /// Implements [`Kernel`] from one body: `fn exec(this, s: S) { .. }` is pasted into two
    /// `#[target_feature]` methods, with `s` the [`Avx2`] or [`Avx512`] token and `S` its type.
    ///
    /// Why a macro and not a generic method: closures do not inherit target features from a generic
    /// function that is merely inlined into a `#[target_feature]` one. A closure such as `|v| exp(s, v)`
    /// written in a generic body is compiled without AVX, every intrinsic in it becomes an out-of-line
    /// call, and the kernel runs ten times slower than scalar code. Written *in* a `#[target_feature]`
    /// function, the closure inherits the features and everything inlines into one loop.
    macro_rules! simd_kernel {
        (
            impl[$($g:tt)*] $ty:ty => $out:ty;
            fn exec($this:ident, $s:ident: $S:ident) $body:block
        ) => {
            impl<$($g)*> $crate::cpu::simd::Kernel for $ty {
                type Output = $out;
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn exec_avx2(self) -> $out {
                    #[allow(dead_code)]
                    type $S = $crate::cpu::simd::Avx2;
                    // SAFETY: the caller guarantees AVX2, FMA and F16C.
                    let $s = unsafe { $S::new() };
                    let $this = self;
                    $body
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
                unsafe fn exec_avx512(self) -> $out {
                    #[allow(dead_code)]
                    type $S = $crate::cpu::simd::Avx512;
                    // SAFETY: the caller guarantees AVX-512 F/BW/VL, AVX2, FMA and F16C.
                    let $s = unsafe { $S::new() };
                    let $this = self;
                    $body
                }
            }
        };
    }
    pub(crate) use simd_kernel;

    /// The vector level to use now, or `None` for the scalar path.
    #[inline]
    pub(crate) fn level() -> Option<Isa> {
        match isa() {
            Isa::Scalar => None,
            level => Some(level),
        }
    }

    /// Runs `k` with the instruction set of `level` (which `isa()` reported, so the CPU has it).
    #[inline]
    pub(crate) fn run<K: Kernel>(level: Isa, k: K) -> K::Output {
        match level {
            Isa::Scalar => unreachable!("the scalar level has no vector kernels"),
            // SAFETY: `isa()` returned at least Avx2, which it does only when CPUID reports AVX2, FMA
            // and F16C.
            Isa::Avx2 => unsafe { k.exec_avx2() },
            // SAFETY: `isa()` returned at least Avx512, which it does only when CPUID reports AVX-512
            // F/BW/VL besides AVX2, FMA and F16C.
            Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => unsafe { k.exec_avx512() },
        }
    }

    /// A slice of one of the vector element types, seen with its concrete type.
    pub(crate) enum View<'a> {
        F32(&'a [f32]),
        Bf16(&'a [bf16]),
        F16(&'a [f16]),
    }

    /// The mutable counterpart of [`View`].
    pub(crate) enum ViewMut<'a> {
        F32(&'a mut [f32]),
        Bf16(&'a mut [bf16]),
        F16(&'a mut [f16]),
    }

    /// `x` as its concrete type when that is f32, bf16 or f16.
    #[inline]
    pub(crate) fn view<T: Elem>(x: &[T]) -> Option<View<'_>> {
        let (p, n) = (x.as_ptr(), x.len());
        // SAFETY: `Elem` is sealed and each `DTYPE` belongs to exactly one type, so `T` *is* the type
        // cast to; the pointer and length come from a live slice borrowed for the result's lifetime.
        unsafe {
            Some(match T::DTYPE {
                DType::F32 => View::F32(std::slice::from_raw_parts(p.cast(), n)),
                DType::BF16 => View::Bf16(std::slice::from_raw_parts(p.cast(), n)),
                DType::F16 => View::F16(std::slice::from_raw_parts(p.cast(), n)),
                _ => return None,
            })
        }
    }

    /// `x` as its concrete type when that is f32, bf16 or f16.
    #[inline]
    pub(crate) fn view_mut<T: Elem>(x: &mut [T]) -> Option<ViewMut<'_>> {
        let (p, n) = (x.as_mut_ptr(), x.len());
        // SAFETY: as in `view`; the mutable borrow of `x` is moved into the result.
        unsafe {
            Some(match T::DTYPE {
                DType::F32 => ViewMut::F32(std::slice::from_raw_parts_mut(p.cast(), n)),
                DType::BF16 => ViewMut::Bf16(std::slice::from_raw_parts_mut(p.cast(), n)),
                DType::F16 => ViewMut::F16(std::slice::from_raw_parts_mut(p.cast(), n)),
                _ => return None,
            })
        }
    }

    /// `x` as `&[f32]` when `T` is f32 (the accumulation-type slices of norms).
    #[inline]
    pub(crate) fn as_f32<T: Elem>(x: &[T]) -> Option<&[f32]> {
        match view(x)? {
            View::F32(x) => Some(x),
            _ => None,
        }
    }

    /// `x` as `&mut [f32]` when `T` is f32.
    #[inline]
    pub(crate) fn as_f32_mut<T: Elem>(x: &mut [T]) -> Option<&mut [f32]> {
        match view_mut(x)? {
            ViewMut::F32(x) => Some(x),
            _ => None,
        }
    }

    /// Calls `$body` with `$x` bound to the concrete slice of a [`View`] (one expansion per type).
    macro_rules! with_view {
        ($v:expr, |$x:ident| $body:expr) => {
            match $v {
                $crate::cpu::simd::View::F32($x) => $body,
                $crate::cpu::simd::View::Bf16($x) => $body,
                $crate::cpu::simd::View::F16($x) => $body,
            }
        };
    }

    /// Like [`with_view`] for a [`ViewMut`].
    macro_rules! with_view_mut {
        ($v:expr, |$x:ident| $body:expr) => {
            match $v {
                $crate::cpu::simd::ViewMut::F32($x) => $body,
                $crate::cpu::simd::ViewMut::Bf16($x) => $body,
                $crate::cpu::simd::ViewMut::F16($x) => $body,
            }
        };
    }
    pub(crate) use {with_view, with_view_mut};
}
