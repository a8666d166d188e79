//! Matrix multiplication with f32 accumulation (f64 for f64), batched, with transposed operands read
//! through flags (never copied first).
//!
//! One entry point, [`gemm`] (both operands of one type) or [`gemm_mixed`] (an f32 activation with a bf16
//! or f16 weight, converted while packed), picks the fastest path the CPU offers at run time:
//! - bf16: AMX tiles, else AVX512-BF16 `vdpbf16ps`, else f32 FMA on the converted values;
//! - f32 and f16 (converted to f32 while packed, exactly): AVX-512, else AVX2+FMA;
//! - f64, or a CPU without AVX2: the portable [`reference`] kernel.
//!
//! All fast paths share one blocked driver: operands are packed into buffers that are reused across calls
//! (no allocation, hence no page faults, after warm-up; an f32 operand is read in place where packing it
//! would not pay), and output tiles are computed in f32 in parallel across cores.

mod amx;
mod fast;
mod reference;

use crate::cpu::isa::{Isa, isa};
use crate::{DType, Elem, Float};

/// Shape and layout of a (batched) product `C[b] = A[b] · B[b]` (or `C[b] += ...` with `accumulate`).
///
/// `A` is logically `m × k`, stored `m × k` row-major, or `k × m` when `a_trans` (so `A` is the stored
/// matrix transposed). `B` is logically `k × n`, stored `k × n`, or `n × k` when `b_trans`. `C` is `m × n`
/// per batch, batches consecutive. A batch stride of 0 broadcasts that operand over the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmSpec {
    /// Number of independent products.
    pub batch: usize,
    /// Rows of `A` and `C`.
    pub m: usize,
    /// Columns of `B` and `C`.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
    /// `A` is stored transposed (`k × m`).
    pub a_trans: bool,
    /// `B` is stored transposed (`n × k`).
    pub b_trans: bool,
    /// Elements between consecutive `A` matrices (0: the same `A` for every batch).
    pub a_batch_stride: usize,
    /// Elements between consecutive `B` matrices (0: the same `B` for every batch).
    pub b_batch_stride: usize,
    /// Add the product to `C` instead of overwriting it.
    pub accumulate: bool,
}

impl GemmSpec {
    /// A single, untransposed `m × k · k × n` product.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmSpec {
            batch: 1,
            m,
            n,
            k,
            a_trans: false,
            b_trans: false,
            a_batch_stride: m * k,
            b_batch_stride: k * n,
            accumulate: false,
        }
    }

    /// Floating-point operations the product performs (`2·batch·m·n·k`).
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// `a · b`, panicking (naming the op) instead of wrapping on overflow.
fn product(what: &str, factors: &[usize]) -> usize {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .unwrap_or_else(|| panic!("gemm: {what} size {factors:?} overflows usize"))
}

/// Checks the buffer lengths against the spec (sizes that overflow `usize` panic instead of wrapping).
fn validate(spec: &GemmSpec, a_len: usize, b_len: usize, c_len: usize) {
    let GemmSpec { batch, m, n, k, .. } = *spec;
    let c_need = product("C", &[batch, m, n]);
    assert_eq!(
        c_len, c_need,
        "gemm: C has {c_len} elements, expected {batch}×{m}×{n}"
    );
    if batch > 0 {
        let a_need =
            product("A", &[batch - 1, spec.a_batch_stride]).checked_add(product("A", &[m, k]));
        let b_need =
            product("B", &[batch - 1, spec.b_batch_stride]).checked_add(product("B", &[k, n]));
        let (Some(a_need), Some(b_need)) = (a_need, b_need) else {
            panic!("gemm: operand size overflows usize")
        };
        assert!(
            a_len >= a_need && b_len >= b_need,
            "gemm: operands shorter than the spec requires"
        );
    }
}

/// Computes the product described by `spec`, reading `T`, accumulating in f32 (f64 for f64), writing `O`.
pub fn gemm<T: Float, O: Float>(spec: &GemmSpec, a: &[T], b: &[T], c: &mut [O]) {
    gemm_mixed(spec, a, b, c)
}

/// [`gemm`] with operands of different types, the way autocast multiplies an f32 activation by a bf16
/// (or f16) weight: the wider operand is rounded to the narrower type while it is packed (exactly as a
/// separate cast would round it), so no converted copy is ever made. bf16 with f16 is rejected; f64 with
/// anything computes in f64.
#[track_caller]
pub fn gemm_mixed<TA: Float, TB: Float, O: Float>(
    spec: &GemmSpec,
    a: &[TA],
    b: &[TB],
    c: &mut [O],
) {
    validate(spec, a.len(), b.len(), c.len());
    if c.is_empty() {
        return;
    }
    if spec.k == 0 {
        if !spec.accumulate {
            c.fill(O::default());
        }
        return;
    }
    let (ta, tb) = (TA::DTYPE, TB::DTYPE);
    if (ta, tb) == (DType::BF16, DType::F16) || (ta, tb) == (DType::F16, DType::BF16) {
        panic!("gemm: a bf16 operand cannot be multiplied with an f16 one (no common type)");
    }
    if ta == DType::F64 || tb == DType::F64 {
        return reference_mixed::<TA, TB, f64, O>(spec, a, b, c);
    }
    let compute = if ta == DType::BF16 || tb == DType::BF16 {
        DType::BF16
    } else if ta == DType::F16 || tb == DType::F16 {
        DType::F16
    } else {
        DType::F32
    };
    let level = isa();
    if level < Isa::Avx2 || !cfg!(target_arch = "x86_64") {
        return match compute {
            DType::BF16 => reference_mixed::<TA, TB, half::bf16, O>(spec, a, b, c),
            DType::F16 => reference_mixed::<TA, TB, half::f16, O>(spec, a, b, c),
            _ => reference_mixed::<TA, TB, f32, O>(spec, a, b, c),
        };
    }
    fast::gemm(spec, a, b, c, compute, level);
}

/// The reference kernel on operands first converted to the compute type `T` (a copy; only the portable
/// path and f64 take it).
fn reference_mixed<TA: Elem, TB: Elem, T: Float, O: Float>(
    spec: &GemmSpec,
    a: &[TA],
    b: &[TB],
    c: &mut [O],
) {
    if TA::DTYPE == T::DTYPE && TB::DTYPE == T::DTYPE {
        // Same type: view the slices as `T` without copying.
        let a = crate::cpu::same_type_slice::<TA, T>(a);
        let b = crate::cpu::same_type_slice::<TB, T>(b);
        return reference::gemm(spec, a, b, c);
    }
    let a: Vec<T> = a.iter().map(|v| v.cast::<T>()).collect();
    let b: Vec<T> = b.iter().map(|v| v.cast::<T>()).collect();
    reference::gemm(spec, &a, &b, c);
}
