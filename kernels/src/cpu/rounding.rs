//! Rounding f32 weight updates into half-precision storage without losing the small ones: stochastic
//! rounding to bf16 and Kahan-compensated rounding.
//!
//! With round-to-nearest, a weight stored in bf16 does not move when its update is smaller than half a
//! bf16 step (about `|w|·2^-9`): at a small learning rate, training in `"bf16-true"` stalls. Stochastic
//! rounding rounds up with probability equal to the remainder, so updates are kept *on average*; Kahan
//! summation carries the part that was rounded off in a compensation buffer and adds it to the next
//! update, so updates are kept *exactly, eventually*, for 2 more bytes per weight.

use crate::Elem;
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// splitmix64's finalizer: a bijective 64-bit mix with good avalanche.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 16 random bits stochastic rounding uses for element `index` of call `counter` under `seed`: a
/// counter-based hash, so the result does not depend on threads or on the order of evaluation.
#[inline]
pub fn rounding_bits(seed: u64, counter: u64, index: u64) -> u32 {
    let key = mix(seed ^ mix(counter.wrapping_add(0x9e37_79b9_7f4a_7c15)));
    (mix(key.wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15))) >> 48) as u32
}

/// Rounds every element to a bf16 value (kept in f32) stochastically: with `r` the element's
/// [`rounding_bits`] and `low` the 16 bits bf16 drops, the magnitude rounds up when `r < low` and down
/// otherwise, so the expected result is the f32 value itself. NaN and infinities are left as they are.
/// Reproducible: the same `(seed, counter)` gives the same result on any number of threads.
///
/// ```
/// use amp_kernels::cpu::stochastic_round_bf16;
/// let step = 1.0f32 / 128.0; // bf16's spacing just above 1
/// let mut ups = 0;
/// for counter in 0..1000 {
///     let mut x = [1.0 + step / 4.0];
///     stochastic_round_bf16(&mut x, 7, counter);
///     assert!(x[0] == 1.0 || x[0] == 1.0 + step);
///     ups += (x[0] > 1.0) as u32;
/// }
/// assert!((200..300).contains(&ups)); // a quarter of the time
/// ```
pub fn stochastic_round_bf16(values: &mut [f32], seed: u64, counter: u64) {
    let round = |offset: usize, chunk: &mut [f32]| {
        for (i, v) in chunk.iter_mut().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let bits = v.to_bits();
            let (kept, dropped) = (bits & 0xFFFF_0000, bits & 0xFFFF);
            let r = rounding_bits(seed, counter, (offset + i) as u64);
            // Adding one unit of the kept part moves the magnitude up (the sign bit is untouched, and
            // the largest finite bf16 rounds up to infinity, as it would at the rounding boundary).
            *v = f32::from_bits(if r < dropped { kept + 0x1_0000 } else { kept });
        }
    };
    if values.len() < CHUNK {
        round(0, values);
    } else {
        values
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| round(c * CHUNK, chunk));
    }
}

/// Kahan-compensated rounding of an update into storage type `E` (bf16 or f16): `old` holds the stored
/// weights before the update (values of `E`), `new` the f32 weights after it, `compensation` what
/// earlier roundings dropped (zero at the start), stored in `E` itself: 2 bytes per weight. Per element:
///
/// ```text
/// u = (new - old) + compensation
/// new = E(old + u)                     (round to nearest)
/// compensation = E(u - (new - old))    (what this rounding dropped)
/// ```
///
/// The compensation is itself rounded to `E` (as in optimi and torchdistx's `AnyPrecisionAdamW`), so
/// each update loses up to 2^-9 (bf16) of the compensation, which is at most half a weight step: updates
/// much smaller than the weight's step keep most but not all of their effect (about 95% for updates
/// around 100 times smaller than the step, in this crate's tests), instead of none with
/// round-to-nearest.
///
/// ```
/// use amp_kernels::bf16;
/// use amp_kernels::cpu::kahan_round_through;
/// // 500 updates of 1e-3 to a weight of 1.0: each alone is lost to round-to-nearest in bf16, whose
/// // step there is 2^-7.
/// let (mut w, mut c) = ([1.0f32], [bf16::ZERO]);
/// for _ in 0..500 {
///     let old = w;
///     w[0] += 1e-3;
///     kahan_round_through::<bf16>(&old, &mut w, &mut c);
/// }
/// assert!((w[0] - 1.5).abs() <= 1.0 / 128.0);
/// ```
#[track_caller]
pub fn kahan_round_through<E: Elem>(old: &[f32], new: &mut [f32], compensation: &mut [E]) {
    if old.len() != new.len() || compensation.len() != new.len() {
        panic!(
            "kahan_round_through: {} old values, {} new values and {} compensations differ",
            old.len(),
            new.len(),
            compensation.len()
        );
    }
    let round = |v: f32| E::from_f32(v).to_f32();
    let update = |((n, &o), c): ((&mut f32, &f32), &mut E)| {
        let u = (*n - o) + c.to_f32();
        let stored = round(o + u);
        // A non-finite weight stays as the update made it; its compensation is meaningless then.
        *c = E::from_f32(if stored.is_finite() {
            u - (stored - o)
        } else {
            0.0
        });
        *n = stored;
    };
    if new.len() < CHUNK {
        new.iter_mut()
            .zip(old)
            .zip(compensation.iter_mut())
            .for_each(update);
    } else {
        new.par_chunks_mut(CHUNK)
            .zip(old.par_chunks(CHUNK))
            .zip(compensation.par_chunks_mut(CHUNK))
            .for_each(|((n, o), c)| n.iter_mut().zip(o).zip(c.iter_mut()).for_each(update));
    }
}
