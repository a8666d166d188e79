//! Reuse of tensor buffers: the buffer of a dropped tensor goes to a per-thread pool, and the next op that
//! needs a buffer of about that size takes it back.
//!
//! Without this, a training step frees and allocates the same large buffers every time, and the system
//! allocator returns them to the OS and gets them back as fresh pages: every first touch is a page fault
//! (measured on the 784-1024-1024-10 MLP: about a fifth of a bf16 training step in the kernel's fault
//! handling). Only buffers of at least [`MIN_BYTES`] are pooled (smaller ones are cheap for the
//! allocator), a buffer is reused only for a request of at least half its capacity, and each thread keeps
//! at most [`MAX_POOLED_BYTES`] in at most [`MAX_POOLED_BUFFERS`] buffers, evicting the oldest first.

use crate::element::Element;
use std::any::{Any, TypeId};
use std::cell::RefCell;

/// Smallest buffer kept for reuse.
const MIN_BYTES: usize = 64 << 10;
/// Most bytes one thread keeps in its pool: past it, the oldest free buffers go back to the allocator
/// (buffers freed recently are the likeliest to be asked for again).
const MAX_POOLED_BYTES: usize = 256 << 20;
/// Most free buffers one thread keeps (each request scans them).
const MAX_POOLED_BUFFERS: usize = 256;

/// A free buffer: its element type, capacity in elements, and the `Vec` itself.
struct Free {
    elem: TypeId,
    capacity: usize,
    bytes: usize,
    buffer: Box<dyn Any>,
}

/// The free buffers of one thread.
struct Pool {
    free: Vec<Free>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { free: Vec::new(), bytes: 0 }) };
}

/// Runs `f` on this thread's pool (`None` while the thread is being torn down or the pool is in use).
fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> Option<R> {
    POOL.try_with(|p| p.try_borrow_mut().ok().map(|mut p| f(&mut p)))
        .ok()
        .flatten()
}

/// A buffer of `n` default elements: a pooled one when one of about that size is free, else a new one.
pub(crate) fn take<E: Element>(n: usize) -> Vec<E> {
    match pooled(n) {
        Some(mut v) => {
            v.fill(E::default());
            v
        }
        None => vec![E::default(); n],
    }
}

/// A buffer of `n` elements whose values are unspecified (those of an earlier tensor, or defaults), for a
/// kernel that writes every element: a pooled buffer is then not zeroed first, which a training step
/// would otherwise pay for on every output (about a twelfth of a bf16 MLP step).
pub(crate) fn take_for_overwrite<E: Element>(n: usize) -> Vec<E> {
    pooled(n).unwrap_or_else(|| vec![E::default(); n])
}

/// A pooled buffer of length `n` (values unspecified), when one of about that size is free.
fn pooled<E: Element>(n: usize) -> Option<Vec<E>> {
    if n * size_of::<E>() < MIN_BYTES {
        return None;
    }
    let mut v = with_pool(|pool| {
        // The smallest free buffer of this type that fits and is not more than twice the request.
        let best = pool
            .free
            .iter()
            .enumerate()
            .filter(|(_, f)| f.elem == TypeId::of::<E>() && (n..=2 * n).contains(&f.capacity))
            .min_by_key(|(_, f)| f.capacity)
            .map(|(i, _)| i)?;
        let free = pool.free.remove(best);
        pool.bytes -= free.bytes;
        free.buffer.downcast::<Vec<E>>().ok()
    })
    .flatten()?;
    // Only the part past the previous length needs values.
    v.truncate(n);
    v.resize(n, E::default());
    Some(*v)
}

/// Gives a dropped tensor's buffer back to this thread's pool (or to the allocator when it is small or
/// the pool is full).
pub(crate) fn give<E: Element>(v: Vec<E>) {
    let bytes = v.capacity() * size_of::<E>();
    if bytes < MIN_BYTES {
        return;
    }
    if bytes > MAX_POOLED_BYTES {
        return;
    }
    // The evicted buffers are freed after the pool is released.
    let _evicted = with_pool(|pool| {
        let mut evicted = Vec::new();
        while pool.bytes + bytes > MAX_POOLED_BYTES || pool.free.len() >= MAX_POOLED_BUFFERS {
            let oldest = pool.free.remove(0);
            pool.bytes -= oldest.bytes;
            evicted.push(oldest);
        }
        pool.bytes += bytes;
        pool.free.push(Free {
            elem: TypeId::of::<E>(),
            capacity: v.capacity(),
            bytes,
            buffer: Box::new(v),
        });
        evicted
    });
}

/// Returns the free tensor buffers this thread keeps for reuse to the allocator, as PyTorch's
/// `torch.cuda.empty_cache()` does for its caching allocator; tensors still alive are not affected.
///
/// Training loops do not need it: the pool holds at most 256 MiB per thread, and reuse is what keeps a
/// step free of page faults. It is for a process that moves on to different work, for example a
/// benchmark that measures the peak memory of one model after another.
///
/// ```
/// use amp_runtime::{Tensor, empty_cache};
/// let big = Tensor::<f32>::zeros([1024, 1024]);
/// drop(big); // its 4 MiB buffer is kept for the next op that needs one
/// empty_cache(); // and now goes back to the allocator
/// ```
pub fn empty_cache() {
    let released = with_pool(|pool| {
        pool.bytes = 0;
        std::mem::take(&mut pool.free)
    });
    // The buffers are freed after the pool is released.
    drop(released);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A freed large buffer comes back for the next request of about its size, zeroed; a request of
    /// another type or of less than half its size does not get it.
    #[test]
    fn large_buffers_are_reused_zeroed() {
        let n = 100_000;
        let mut v = take::<f32>(n);
        v.iter_mut().for_each(|x| *x = 7.0);
        let address = v.as_ptr() as usize;
        give(v);
        let other = take::<i64>(n / 2);
        assert_ne!(other.as_ptr() as usize, address, "another element type");
        let small = take::<f32>(n / 3);
        assert_ne!(
            small.as_ptr() as usize,
            address,
            "less than half the capacity"
        );
        let again = take::<f32>(n - 10);
        assert_eq!(again.as_ptr() as usize, address, "reused");
        assert_eq!(again.len(), n - 10);
        assert!(again.iter().all(|&x| x == 0.0), "zeroed");
    }

    /// After `empty_cache` the pool is empty and a new request gets a fresh buffer.
    #[test]
    fn empty_cache_releases_every_free_buffer() {
        let n = 50_000;
        give(take::<f32>(n));
        give(take::<f64>(n));
        assert!(with_pool(|p| p.free.len()).unwrap() >= 2);
        empty_cache();
        assert_eq!(with_pool(|p| (p.free.len(), p.bytes)), Some((0, 0)));
        let v = take::<f32>(n);
        assert!(v.iter().all(|&x| x == 0.0) && v.len() == n);
    }

    /// Small buffers are left to the allocator, and the pool never holds more than its limits.
    #[test]
    fn the_pool_stays_within_its_limits() {
        give(vec![1.0f32; 16]);
        let held = |f: &dyn Fn(&Pool) -> usize| with_pool(|p| f(p)).unwrap_or(0);
        assert_eq!(
            held(&|p| p.free.iter().filter(|f| f.capacity == 16).count()),
            0
        );
        for _ in 0..2 * MAX_POOLED_BUFFERS {
            give(vec![0f64; MIN_BYTES / 8]);
        }
        assert!(held(&|p| p.free.len()) <= MAX_POOLED_BUFFERS);
        for _ in 0..8 {
            give(vec![0f32; (MAX_POOLED_BYTES / 4) / 4]);
        }
        assert!(held(&|p| p.bytes) <= MAX_POOLED_BYTES);
        let total: usize = held(&|p| p.free.iter().map(|f| f.bytes).sum());
        assert_eq!(
            total,
            held(&|p| p.bytes),
            "the byte count matches the buffers"
        );
    }
}
