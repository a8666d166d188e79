//! Data movement: permutations and row-block copies (the pieces of transpose, cat, narrow and stack).

use super::Broadcast;
use crate::Elem;

/// Writes `x` (shape `shape`) permuted: output dimension `d` is input dimension `perm[d]`.
pub fn permute<E: Elem>(x: &[E], shape: &[usize], perm: &[usize], out: &mut [E]) {
    assert!(
        x.len() == out.len() && perm.len() == shape.len(),
        "permute: lengths do not match"
    );
    let mut in_strides = vec![0; shape.len()];
    let mut s = 1;
    for d in (0..shape.len()).rev() {
        in_strides[d] = s;
        s *= shape[d];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let layout = Broadcast::from_strides(&out_shape, vec![strides]);
    layout.for_each(|i, [ix]| out[i] = x[ix]);
}

/// For each of `rows` rows: `dst[r·dst_row + dst_off ..][..len] = src[r·src_row + src_off ..][..len]`.
///
/// With `src_row = len, src_off = 0` this places a block into a wider row (`cat`, the backward of
/// `narrow`); with `dst_row = len, dst_off = 0` it cuts one out (`narrow`, the backward of `cat`).
#[allow(clippy::too_many_arguments)]
pub fn copy_rows<E: Elem>(
    src: &[E],
    src_row: usize,
    src_off: usize,
    dst: &mut [E],
    dst_row: usize,
    dst_off: usize,
    len: usize,
    rows: usize,
) {
    for r in 0..rows {
        dst[r * dst_row + dst_off..][..len].copy_from_slice(&src[r * src_row + src_off..][..len]);
    }
}
