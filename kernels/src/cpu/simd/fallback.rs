//! Targets without vector kernels: every entry point declines, so the scalar kernels run.

use super::super::{Binary, Dim3, Reduce, Unary};
use super::{AdamConsts, SgdConsts};
use crate::Elem;

pub(in super::super) fn cast<I: Elem, O: Elem>(_: &[I], _: &mut [O]) -> bool {
    false
}
pub(in super::super) fn round_through<E: Elem>(_: &mut [f32]) -> bool {
    false
}
pub(in super::super) fn unary<I: Elem, O: Elem>(_: Unary, _: &[I], _: &mut [O]) -> bool {
    false
}
pub(in super::super) fn unary_backward<E: Elem>(
    _: Unary,
    _: &[E],
    _: &[E],
    _: &[E],
    _: &mut [E],
) -> bool {
    false
}
pub(in super::super) fn binary<E: Elem>(_: Binary, _: &[E], _: &[E], _: &mut [E]) -> bool {
    false
}
pub(in super::super) fn binary_periodic<E: Elem>(
    _: Binary,
    _: &[E],
    _: &[E],
    _: &mut [E],
    _: usize,
    _: usize,
) -> bool {
    false
}
pub(in super::super) fn reduce<I: Elem, O: Elem>(_: Reduce, _: &[I], _: &mut [O], _: Dim3) -> bool {
    false
}
pub(in super::super) fn logsumexp<I: Elem, O: Elem>(_: &[I], _: &mut [O], _: Dim3) -> bool {
    false
}
pub(in super::super) fn softmax<I: Elem, O: Elem>(_: &[I], _: &mut [O], _: Dim3, _: bool) -> bool {
    false
}
pub(in super::super) fn softmax_backward<E: Elem>(
    _: &[E],
    _: &[E],
    _: &mut [E],
    _: Dim3,
    _: bool,
) -> bool {
    false
}
pub(in super::super) fn layer_norm<I: Elem, O: Elem, A: Elem>(
    _: &[I],
    _: &mut [O],
    _: &mut [A],
    _: &mut [A],
    _: usize,
    _: f64,
) -> bool {
    false
}
pub(in super::super) fn layer_norm_backward<E: Elem, A: Elem>(
    _: &[E],
    _: &[A],
    _: &[A],
    _: &[E],
    _: &mut [E],
    _: usize,
) -> bool {
    false
}
pub(in super::super) fn rms_norm<I: Elem, O: Elem, A: Elem>(
    _: &[I],
    _: &mut [O],
    _: &mut [A],
    _: usize,
    _: f64,
) -> bool {
    false
}
pub(in super::super) fn rms_norm_backward<E: Elem, A: Elem>(
    _: &[E],
    _: &[A],
    _: &[E],
    _: &mut [E],
    _: usize,
) -> bool {
    false
}
pub(in super::super) fn unscale_and_check<E: Elem>(_: &mut [E], _: f64) -> Option<bool> {
    None
}
pub(in super::super) fn adam_step(
    _: &mut [f32],
    _: &[f32],
    _: &mut [f32],
    _: &mut [f32],
    _: AdamConsts,
) -> bool {
    false
}
pub(in super::super) fn sgd_step<'b>(
    _: &mut [f32],
    _: &[f32],
    buffer: Option<&'b mut [f32]>,
    _: SgdConsts,
) -> Result<(), Option<&'b mut [f32]>> {
    Err(buffer)
}
