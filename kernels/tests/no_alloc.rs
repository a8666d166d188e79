//! After warm-up, a GEMM call allocates nothing: packing and accumulation buffers are per-thread and
//! reused, so a training loop's matmuls cause no allocator traffic and no page faults.

use amp_kernels::cpu::{GemmSpec, gemm, gemm_mixed};
use amp_kernels::{bf16, f16};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts every allocation in the process (all threads, including rayon's workers).
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Ten repeated products of each operand kind allocate nothing after two warm-up calls.
#[test]
fn matmul_in_a_loop_stops_allocating() {
    let (m, n, k) = (300, 520, 600);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
    let ab: Vec<bf16> = b.iter().map(|&v| bf16::from_f32(v)).collect();
    let ah: Vec<f16> = b.iter().map(|&v| f16::from_f32(v)).collect();
    let mut c = vec![0.0f32; m * n];
    let spec = GemmSpec::new(m, n, k);
    let mut run = || {
        gemm(&spec, &a, &b, &mut c);
        gemm_mixed(&spec, &a, &ab, &mut c);
        gemm_mixed(&spec, &a, &ah, &mut c);
    };
    run();
    run();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..10 {
        run();
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 30 warm GEMM calls"
    );
    assert!(c.iter().all(|v| v.is_finite()));
}
