//! Gathers and scatters by integer index. Indices come from data, so they are checked here: every index
//! is validated before anything is written, and a bad one is reported with its value and the bound.

use super::Dim3;
use crate::{Elem, Float};
use std::fmt;

/// An index outside `0..bound`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexError {
    /// The offending index value.
    pub index: i64,
    /// The size of the dimension it indexes.
    pub bound: usize,
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "index {} is out of bounds for a dimension of size {}",
            self.index, self.bound
        )
    }
}

impl std::error::Error for IndexError {}

fn check_all(idx: &[i64], bound: usize) -> Result<(), IndexError> {
    match idx.iter().find(|&&i| i < 0 || i as u64 >= bound as u64) {
        Some(&index) => Err(IndexError { index, bound }),
        None => Ok(()),
    }
}

fn to_acc<E: Float>(values: &[E]) -> Vec<E::Acc> {
    values.iter().map(|v| v.to_acc()).collect()
}

fn store_acc<E: Float>(acc: &[E::Acc], out: &mut [E]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = E::from_acc(a);
    }
}

/// `out[o, t, i] = x[o, idx[o, t, i], i]`: `x` is laid out as `d`; `idx` and `out` as
/// `{ d.outer, idx_size, d.inner }`.
pub fn gather<E: Elem>(
    x: &[E],
    d: Dim3,
    idx: &[i64],
    idx_size: usize,
    out: &mut [E],
) -> Result<(), IndexError> {
    let n = d.outer * idx_size * d.inner;
    assert!(
        x.len() == d.numel() && idx.len() == n && out.len() == n,
        "gather: lengths do not match"
    );
    check_all(idx, d.size)?;
    for o in 0..d.outer {
        for t in 0..idx_size {
            for i in 0..d.inner {
                let k = (o * idx_size + t) * d.inner + i;
                out[k] = x[(o * d.size + idx[k] as usize) * d.inner + i];
            }
        }
    }
    Ok(())
}

/// `out[o, idx[o, t, i], i] += src[o, t, i]`: `out` is laid out as `d`; `idx` and `src` as
/// `{ d.outer, idx_size, d.inner }`. Sums accumulate in `E::Acc` and are rounded once, so a bf16 slot
/// hit a thousand times does not stall at 256.
pub fn scatter_add<E: Float>(
    out: &mut [E],
    d: Dim3,
    idx: &[i64],
    src: &[E],
    idx_size: usize,
) -> Result<(), IndexError> {
    let n = d.outer * idx_size * d.inner;
    assert!(
        out.len() == d.numel() && idx.len() == n && src.len() == n,
        "scatter_add: lengths do not match"
    );
    check_all(idx, d.size)?;
    let mut acc = to_acc(out);
    for o in 0..d.outer {
        for t in 0..idx_size {
            for i in 0..d.inner {
                let k = (o * idx_size + t) * d.inner + i;
                acc[(o * d.size + idx[k] as usize) * d.inner + i] += src[k].to_acc();
            }
        }
    }
    store_acc(&acc, out);
    Ok(())
}

/// `out[o, t, i] = x[o, idx[t], i]`: `x` is laid out as `d`; `out` as `{ d.outer, idx.len(), d.inner }`.
pub fn index_select<E: Elem>(
    x: &[E],
    d: Dim3,
    idx: &[i64],
    out: &mut [E],
) -> Result<(), IndexError> {
    assert!(
        x.len() == d.numel() && out.len() == d.outer * idx.len() * d.inner,
        "index_select: lengths do not match"
    );
    check_all(idx, d.size)?;
    for o in 0..d.outer {
        for (t, &ix) in idx.iter().enumerate() {
            let src = &x[(o * d.size + ix as usize) * d.inner..][..d.inner];
            out[(o * idx.len() + t) * d.inner..][..d.inner].copy_from_slice(src);
        }
    }
    Ok(())
}

/// `out[o, idx[t], i] += src[o, t, i]`: `out` is laid out as `d`; `src` as `{ d.outer, idx.len(), d.inner }`.
/// Sums accumulate in `E::Acc` and are rounded once.
pub fn index_add<E: Float>(
    out: &mut [E],
    d: Dim3,
    idx: &[i64],
    src: &[E],
) -> Result<(), IndexError> {
    assert!(
        out.len() == d.numel() && src.len() == d.outer * idx.len() * d.inner,
        "index_add: lengths do not match"
    );
    check_all(idx, d.size)?;
    let mut acc = to_acc(out);
    for o in 0..d.outer {
        for (t, &ix) in idx.iter().enumerate() {
            let dst = &mut acc[(o * d.size + ix as usize) * d.inner..][..d.inner];
            for (slot, &v) in dst
                .iter_mut()
                .zip(&src[(o * idx.len() + t) * d.inner..][..d.inner])
            {
                *slot += v.to_acc();
            }
        }
    }
    store_acc(&acc, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_index_writes_nothing() {
        let mut out = [1.0f32, 2.0, 3.0];
        let d = Dim3 {
            outer: 1,
            size: 3,
            inner: 1,
        };
        let err = index_add(&mut out, d, &[0, 3], &[10.0, 10.0]).unwrap_err();
        assert_eq!(err, IndexError { index: 3, bound: 3 });
        assert_eq!(out, [1.0, 2.0, 3.0]);
        assert!(
            index_select(
                &[1.0f32],
                Dim3 {
                    outer: 1,
                    size: 1,
                    inner: 1
                },
                &[-1],
                &mut [0.0]
            )
            .is_err()
        );
    }
}
