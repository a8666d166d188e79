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

/// Minor page faults of this process so far (field 10 of `/proc/self/stat`), where Linux reports them.
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(7)?.parse().ok()
}

/// Operands for the loops below: an f32 activation, and weights in f32, bf16 and f16.
struct Operands {
    spec: GemmSpec,
    a: Vec<f32>,
    b: Vec<f32>,
    b_bf16: Vec<bf16>,
    b_f16: Vec<f16>,
    c: Vec<f32>,
    c_bf16: Vec<bf16>,
}

impl Operands {
    fn new() -> Self {
        let (m, n, k) = (300, 520, 600);
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
        Operands {
            spec: GemmSpec::new(m, n, k),
            a: (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect(),
            b_bf16: b.iter().map(|&v| bf16::from_f32(v)).collect(),
            b_f16: b.iter().map(|&v| f16::from_f32(v)).collect(),
            b,
            c: vec![0.0; m * n],
            c_bf16: vec![bf16::ZERO; m * n],
        }
    }

    /// One product of each kind: f32, autocast bf16 and f16 weights, and a bf16 output.
    fn run(&mut self) {
        gemm(&self.spec, &self.a, &self.b, &mut self.c);
        gemm_mixed(&self.spec, &self.a, &self.b_bf16, &mut self.c);
        gemm_mixed(&self.spec, &self.a, &self.b_f16, &mut self.c);
        gemm_mixed(&self.spec, &self.a, &self.b_bf16, &mut self.c_bf16);
    }
}

/// Serialises the tests of this file: they share the global allocation counter.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Allocations in `iterations` warm rounds of [`Operands::run`] (after two warm-up rounds), and the
/// fewest minor page faults (where Linux reports them) in any quarter of those rounds. The count is the
/// whole process's, and a busy machine's memory management (reclaim, page migration) can fault in a few
/// pages at any time; a buffer allocated per call would fault on hundreds in every quarter.
fn allocations_in(ops: &mut Operands, iterations: usize) -> (usize, Option<u64>) {
    ops.run();
    ops.run();
    let mut allocations = 0;
    let mut fewest_faults: Option<u64> = None;
    for _ in 0..4 {
        // Reading the fault count allocates, so it stays outside the counted part.
        let faults_before = minor_faults();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..iterations / 4 {
            ops.run();
        }
        allocations += ALLOCATIONS.load(Ordering::Relaxed) - before;
        let faults = minor_faults()
            .zip(faults_before)
            .map(|(after, before)| after - before);
        fewest_faults = match (fewest_faults, faults) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    (allocations, fewest_faults)
}

/// Products called from a thread of the pool (a training loop inside `rayon::scope`, or any caller
/// already on a worker) allocate nothing at all after warm-up, and touch no new memory.
#[test]
fn matmul_in_a_loop_stops_allocating() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut ops = Operands::new();
    let (allocations, faults) = rayon::scope(|_| allocations_in(&mut ops, 25));
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 100 warm GEMM calls"
    );
    // A fresh buffer per call would fault on every one of its pages (hundreds per call); a few faults
    // can come from rayon's worker stacks reaching a new page when work-stealing nests deeper.
    let faults = faults.unwrap_or(0);
    assert!(
        faults <= 8,
        "{faults} minor page faults in 25 warm GEMM calls"
    );
    assert!(ops.c.iter().all(|v| v.is_finite()));
    assert!(ops.c_bf16.iter().all(|v| v.is_finite()));
}

/// Called from outside the pool, each product hands one job to rayon, whose global queue allocates one
/// small block per 63 jobs (and frees the previous one, so the memory is reused): never more, and no
/// page faults once warm.
#[test]
fn matmul_from_outside_the_pool_only_pays_rayons_queue() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut ops = Operands::new();
    let calls = 4 * 100;
    let (allocations, faults) = allocations_in(&mut ops, 100);
    assert!(
        allocations <= calls / 63 + 1,
        "{allocations} allocations in {calls} warm GEMM calls"
    );
    if let Some(faults) = faults {
        assert!(
            faults <= 8,
            "{faults} minor page faults in {} warm GEMM calls",
            calls / 4
        );
    }
}
