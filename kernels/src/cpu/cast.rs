//! Element type conversion.

use super::par_chunks_mut;
use crate::Elem;

/// Converts `x` into `out` element by element, rounding once to nearest even (overflow becomes ±inf, NaN
/// stays NaN). From f32, bf16 and f16 sources this is bit-identical to `half`; from f64 and i64 it is
/// correctly rounded (`half`'s own f64 conversion rounds twice). Float to integer truncates toward zero.
pub fn cast<I: Elem, O: Elem>(x: &[I], out: &mut [O]) {
    assert_eq!(x.len(), out.len(), "cast: input and output lengths differ");
    if super::simd::cast(x, out) {
        return;
    }
    par_chunks_mut(out, |start, out| {
        let x = &x[start..start + out.len()];
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v.cast::<O>();
        }
    });
}

/// Rounds each f32 in place to the nearest value of type `E` (nearest even), keeping it stored as f32:
/// how parameters stored in bf16 or f16 keep exactly the values their storage type can hold.
pub fn round_through<E: Elem>(data: &mut [f32]) {
    if super::simd::round_through::<E>(data) {
        return;
    }
    par_chunks_mut(data, |_, chunk| {
        for v in chunk.iter_mut() {
            *v = E::from_f32(*v).to_f32();
        }
    });
}
