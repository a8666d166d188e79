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
    if n * size_of::<E>() >= MIN_BYTES {
        let pooled = with_pool(|pool| {
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
        .flatten();
        if let Some(mut v) = pooled {
            v.clear();
            v.resize(n, E::default());
            return *v;
        }
    }
    vec![E::default(); n]
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
