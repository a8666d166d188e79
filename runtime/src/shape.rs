//! Shapes, dimension arguments and the checks that turn a shape mistake into a message naming the op.

/// Anything that names a tensor shape: `[2, 3]`, `&[2, 3][..]`, `vec![2, 3]`, or `()` for a scalar.
pub trait IntoShape {
    /// The dimensions, outermost first.
    fn into_shape(self) -> Vec<usize>;
}

impl<const N: usize> IntoShape for [usize; N] {
    fn into_shape(self) -> Vec<usize> {
        self.to_vec()
    }
}
impl IntoShape for &[usize] {
    fn into_shape(self) -> Vec<usize> {
        self.to_vec()
    }
}
impl IntoShape for Vec<usize> {
    fn into_shape(self) -> Vec<usize> {
        self
    }
}
impl IntoShape for &Vec<usize> {
    fn into_shape(self) -> Vec<usize> {
        self.clone()
    }
}
impl IntoShape for () {
    fn into_shape(self) -> Vec<usize> {
        Vec::new()
    }
}
impl IntoShape for usize {
    fn into_shape(self) -> Vec<usize> {
        vec![self]
    }
}

/// The dimensions a reduction runs over: `..` for all of them, one index (`-1` is the last), or a list
/// (`[0, 2]`). Negative indices count from the end, as in PyTorch.
///
/// ```
/// use amp_runtime::Tensor;
/// let x = Tensor::<f32>::ones([2, 3, 4]);
/// assert_eq!(x.sum(..).shape(), &[] as &[usize]);
/// assert_eq!(x.sum(-1).shape(), &[2, 3]);
/// assert_eq!(x.sum([0, 2]).shape(), &[3]);
/// assert_eq!(x.sum_keepdim(1).shape(), &[2, 1, 4]);
/// ```
pub trait Dims {
    /// The dimensions as written (possibly negative).
    fn dims(&self, rank: usize) -> Vec<isize>;
}

impl Dims for std::ops::RangeFull {
    fn dims(&self, rank: usize) -> Vec<isize> {
        (0..rank as isize).collect()
    }
}

macro_rules! dims_int {
    ($($t:ty),*) => {$(
        impl Dims for $t {
            fn dims(&self, _rank: usize) -> Vec<isize> {
                // An index too large for isize is out of range for any tensor; keep it so.
                vec![isize::try_from(*self).unwrap_or(isize::MAX)]
            }
        }
        impl<const N: usize> Dims for [$t; N] {
            fn dims(&self, _rank: usize) -> Vec<isize> {
                self.iter().map(|&d| isize::try_from(d).unwrap_or(isize::MAX)).collect()
            }
        }
        impl Dims for &[$t] {
            fn dims(&self, _rank: usize) -> Vec<isize> {
                self.iter().map(|&d| isize::try_from(d).unwrap_or(isize::MAX)).collect()
            }
        }
        impl Dims for Vec<$t> {
            fn dims(&self, _rank: usize) -> Vec<isize> {
                self.iter().map(|&d| isize::try_from(d).unwrap_or(isize::MAX)).collect()
            }
        }
    )*};
}
dims_int!(i32, i64, isize, usize);

/// Resolves a (possibly negative) dimension index against `rank`, naming `op` on failure.
#[track_caller]
pub(crate) fn dim_index(op: &str, dim: isize, shape: &[usize]) -> usize {
    let rank = shape.len() as isize;
    let d = if dim < 0 { dim + rank } else { dim };
    if d < 0 || d >= rank {
        panic!(
            "{op}: dimension {dim} is out of range for a tensor of shape {shape:?} (rank {rank})"
        );
    }
    d as usize
}

/// Resolves a [`Dims`] argument into sorted, distinct dimension indices.
#[track_caller]
pub(crate) fn resolve_dims(op: &str, dims: &impl Dims, shape: &[usize]) -> Vec<usize> {
    // A loop, not `map`: closures do not forward `#[track_caller]`, and the panic must name the user's line.
    let mut out = Vec::new();
    for d in dims.dims(shape.len()) {
        out.push(dim_index(op, d, shape));
    }
    out.sort_unstable();
    let before = out.len();
    out.dedup();
    if out.len() != before {
        panic!(
            "{op}: a dimension is repeated in {:?}",
            dims.dims(shape.len())
        );
    }
    out
}

/// The numpy broadcast of two shapes, or a panic naming `op` and both shapes.
#[track_caller]
pub(crate) fn broadcast_shapes(op: &str, a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => panic!(
                "{op}: shapes {a:?} and {b:?} cannot be broadcast together (dimension {i} of the result: {da} vs {db})"
            ),
        };
    }
    out
}

/// Whether `from` broadcasts to `to`.
pub(crate) fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == t || f == 1)
}

/// Product of the dimensions.
pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}
