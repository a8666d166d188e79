//! Elementwise functions of several tensors with numpy broadcasting.

use super::par_chunks_mut;
use crate::{Accum, Elem, Float};

/// How N inputs map onto one output under broadcasting: the output shape and, per input, its element
/// strides over the output's dimensions (0 where the input is broadcast).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broadcast {
    out_shape: Vec<usize>,
    strides: Vec<Vec<usize>>,
    contiguous: Vec<bool>,
}

impl Broadcast {
    /// Lays out `inputs` against `out_shape`. Each input shape must broadcast to `out_shape` (aligned at
    /// the right, each dimension equal or 1); the runtime validates this and names the shapes on failure.
    pub fn new(out_shape: &[usize], inputs: &[&[usize]]) -> Self {
        let rank = out_shape.len();
        let mut strides = Vec::with_capacity(inputs.len());
        let mut contiguous = Vec::with_capacity(inputs.len());
        for shape in inputs {
            assert!(
                shape.len() <= rank,
                "broadcast: input rank {} exceeds output rank {rank}",
                shape.len()
            );
            let offset = rank - shape.len();
            let mut s = vec![0; rank];
            let mut stride = 1;
            for d in (0..shape.len()).rev() {
                let size = shape[d];
                assert!(
                    size == out_shape[offset + d] || size == 1,
                    "broadcast: shape {shape:?} does not broadcast to {out_shape:?}"
                );
                s[offset + d] = if size == 1 { 0 } else { stride };
                stride *= size;
            }
            contiguous.push(shape.iter().product::<usize>() == out_shape.iter().product::<usize>());
            strides.push(s);
        }
        Broadcast {
            out_shape: out_shape.to_vec(),
            strides,
            contiguous,
        }
    }

    /// A layout from explicit per-input strides over `out_shape` (used for permutations).
    pub(crate) fn from_strides(out_shape: &[usize], strides: Vec<Vec<usize>>) -> Self {
        let contiguous = vec![false; strides.len()];
        Broadcast {
            out_shape: out_shape.to_vec(),
            strides,
            contiguous,
        }
    }

    /// The output shape.
    pub fn out_shape(&self) -> &[usize] {
        &self.out_shape
    }

    /// Per input, its element strides over the output's dimensions (0 where it is broadcast).
    pub fn strides(&self) -> &[Vec<usize>] {
        &self.strides
    }

    /// Number of output elements.
    pub fn numel(&self) -> usize {
        self.out_shape.iter().product()
    }

    /// Calls `f(out_index, [input offsets])` for every output element, in order.
    pub(crate) fn for_each<const N: usize>(&self, mut f: impl FnMut(usize, [usize; N])) {
        debug_assert_eq!(self.strides.len(), N);
        let rank = self.out_shape.len();
        let n = self.numel();
        if n == 0 {
            return;
        }
        if self.contiguous.iter().all(|&c| c) {
            for i in 0..n {
                f(i, [i; N]);
            }
            return;
        }
        if rank == 0 {
            f(0, [0; N]);
            return;
        }
        let inner = self.out_shape[rank - 1];
        let inner_strides: [usize; N] = std::array::from_fn(|i| self.strides[i][rank - 1]);
        let mut index = vec![0usize; rank - 1];
        let mut base = [0usize; N];
        let mut out = 0;
        loop {
            for j in 0..inner {
                f(out, std::array::from_fn(|i| base[i] + j * inner_strides[i]));
                out += 1;
            }
            // Advance the odometer over the outer dimensions.
            let mut d = rank - 1;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                index[d] += 1;
                for (b, s) in base.iter_mut().zip(&self.strides) {
                    *b += s[d];
                }
                if index[d] < self.out_shape[d] {
                    break;
                }
                for (b, s) in base.iter_mut().zip(&self.strides) {
                    *b -= s[d] * self.out_shape[d];
                }
                index[d] = 0;
            }
        }
    }

    fn all_contiguous(&self) -> bool {
        self.contiguous.iter().all(|&c| c)
    }

    /// When input `i` reads element `j % p` for output element `j` (its strides are the row-major
    /// strides of some trailing output dimensions and 0 before them), that period `p`: the number of
    /// elements of those trailing dimensions (1 for a single value, the output's length when the input
    /// is contiguous).
    fn period(&self, i: usize) -> Option<usize> {
        let strides = &self.strides[i];
        let mut period = 1;
        let mut d = self.out_shape.len();
        // The trailing run of row-major strides (dimensions of size 1 are transparent).
        while d > 0 && (strides[d - 1] == period || self.out_shape[d - 1] == 1) {
            period *= self.out_shape[d - 1];
            d -= 1;
        }
        let broadcast_before = (0..d).all(|k| strides[k] == 0 || self.out_shape[k] == 1);
        broadcast_before.then_some(period)
    }
}

/// An elementwise arithmetic function of two values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a · b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)`, NaN if either is NaN.
    Maximum,
    /// `min(a, b)`, NaN if either is NaN.
    Minimum,
}

impl Binary {
    /// The function's value.
    #[inline(always)]
    pub fn apply<A: Accum>(self, a: A, b: A) -> A {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Maximum => a.max_nan(b),
            Binary::Minimum => a.min_nan(b),
        }
    }
}

/// `out = op(a, b)` with broadcasting (`layout` built from `[a.shape, b.shape]`), computed in `E::Acc`.
pub fn binary<E: Float>(op: Binary, a: &[E], b: &[E], out: &mut [E], layout: &Broadcast) {
    assert_eq!(
        out.len(),
        layout.numel(),
        "binary {op:?}: output length does not match the layout"
    );
    if layout.all_contiguous() {
        if super::simd::binary(op, a, b, out) {
            return;
        }
        par_chunks_mut(out, |start, out| {
            let end = start + out.len();
            for ((o, &x), &y) in out.iter_mut().zip(&a[start..end]).zip(&b[start..end]) {
                *o = E::from_acc(op.apply(x.to_acc(), y.to_acc()));
            }
        });
        return;
    }
    // One operand repeated along the output (a bias row, a single value) and the other contiguous.
    if let (Some(pa), Some(pb)) = (layout.period(0), layout.period(1))
        && super::simd::binary_periodic(op, a, b, out, pa, pb)
    {
        return;
    }
    layout.for_each(|i, [ia, ib]| out[i] = E::from_acc(op.apply(a[ia].to_acc(), b[ib].to_acc())));
}

/// An elementwise comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
    /// `a < b`
    Lt,
    /// `a <= b`
    Le,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
    /// `a == b`, or both NaN (which of several elements a max or min came from).
    Same,
}

/// `out = a <op> b` with broadcasting. Comparisons with NaN are false (except `Ne`).
pub fn compare<E: Elem>(op: Compare, a: &[E], b: &[E], out: &mut [bool], layout: &Broadcast) {
    assert_eq!(
        out.len(),
        layout.numel(),
        "compare {op:?}: output length does not match the layout"
    );
    layout.for_each(|i, [ia, ib]| {
        let (x, y) = (a[ia], b[ib]);
        out[i] = match op {
            Compare::Eq => x == y,
            Compare::Ne => x != y,
            Compare::Lt => x < y,
            Compare::Le => x <= y,
            Compare::Gt => x > y,
            Compare::Ge => x >= y,
            #[allow(clippy::eq_op)] // x != x is the generic NaN test
            Compare::Same => x == y || (x != x && y != y),
        };
    });
}

/// `out = if cond { a } else { b }` with broadcasting (`layout` built from `[cond, a, b]` shapes).
pub fn select<E: Elem>(cond: &[bool], a: &[E], b: &[E], out: &mut [E], layout: &Broadcast) {
    assert_eq!(
        out.len(),
        layout.numel(),
        "select: output length does not match the layout"
    );
    layout.for_each(|i, [ic, ia, ib]| out[i] = if cond[ic] { a[ia] } else { b[ib] });
}

/// Copies `x` broadcast to the output shape (`layout` built from `[x.shape]`).
pub fn broadcast_copy<E: Elem>(x: &[E], out: &mut [E], layout: &Broadcast) {
    assert_eq!(
        out.len(),
        layout.numel(),
        "broadcast_copy: output length does not match the layout"
    );
    layout.for_each(|i, [ix]| out[i] = x[ix]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_strides_and_order() {
        // a: [2, 1, 3], b: [4, 1] -> out [2, 4, 3]
        let layout = Broadcast::new(&[2, 4, 3], &[&[2, 1, 3], &[4, 1]]);
        let mut seen = vec![];
        layout.for_each(|i, [ia, ib]| seen.push((i, ia, ib)));
        assert_eq!(seen.len(), 24);
        for (i, ia, ib) in seen {
            let (d0, d1, d2) = (i / 12, (i / 3) % 4, i % 3);
            assert_eq!(ia, d0 * 3 + d2);
            assert_eq!(ib, d1);
        }
    }

    #[test]
    fn scalar_output() {
        let layout = Broadcast::new(&[], &[&[], &[]]);
        let mut out = [0.0f32];
        binary(Binary::Sub, &[5.0f32], &[2.0], &mut out, &layout);
        assert_eq!(out, [3.0]);
    }
}
