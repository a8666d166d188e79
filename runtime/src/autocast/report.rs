//! The precision report: what each `#[autocast]` / `#[keep_fp32]` expansion decided (registered the first
//! time the function runs under each policy), and, with tracing on, the element type each low-precision
//! op actually ran in and whether it ran inside a region.

use crate::element::DType;
use crate::policy::Policy;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::panic::Location;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The class the attribute gave an op (the rows of the policy table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpClass {
    /// Runs in the policy's low type with f32 accumulation (matmul, linear, conv, attention).
    Low,
    /// Runs in f32 (softmax, norms, reductions, losses, ...).
    F32,
    /// Runs in the widest input type (`add`, `where_`, `cat`, ...).
    Promote,
    /// Runs in its input's type (activations, shape ops, ...); rewritten only so a `Param` can be used.
    Same,
    /// Inside `#[keep_fp32]`: runs in f32 whatever its class.
    KeepF32,
    /// An `amp::nn` layer's `forward`, run under the region's policy (what that means is the layer's).
    Layer,
}

impl fmt::Display for OpClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpClass::Low => "low",
            OpClass::F32 => "f32",
            OpClass::Promote => "promote",
            OpClass::Same => "same",
            OpClass::KeepF32 => "keep_fp32",
            OpClass::Layer => "layer",
        })
    }
}

/// One op call the attribute rewrote.
#[derive(Debug)]
pub struct OpSite {
    /// The method name.
    pub op: &'static str,
    /// Its class in this region.
    pub class: OpClass,
    /// Line of the call.
    pub line: u32,
}

/// One function the attribute rewrote (emitted as a `static` by the expansion).
#[derive(Debug)]
pub struct RegionSite {
    /// `module::path::function`.
    pub function: &'static str,
    /// Source file.
    pub file: &'static str,
    /// Line of the function.
    pub line: u32,
    /// The policy as written in the attribute (`"bf16"`, `"P"`, `"keep_fp32"`).
    pub written: &'static str,
    /// Every rewritten op.
    pub ops: &'static [OpSite],
    registered: [AtomicBool; 3],
}

impl RegionSite {
    /// A site description (built by the expansion as a `static`).
    pub const fn new(
        function: &'static str,
        file: &'static str,
        line: u32,
        written: &'static str,
        ops: &'static [OpSite],
    ) -> Self {
        RegionSite {
            function,
            file,
            line,
            written,
            ops,
            registered: [
                AtomicBool::new(false),
                AtomicBool::new(false),
                AtomicBool::new(false),
            ],
        }
    }
}

static REGIONS: Mutex<Vec<(&'static RegionSite, &'static str)>> = Mutex::new(Vec::new());

thread_local! {
    static REGION_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Tracing state: 0 = not yet read from the environment, 1 = off, 2 = on.
static TRACING: AtomicU8 = AtomicU8::new(0);

/// Whether run-time tracing is on: set by the environment variable `AMP_TRACE` (`1`, `true` or `on`) or
/// by [`set_tracing`].
pub fn tracing_enabled() -> bool {
    match TRACING.load(Ordering::Relaxed) {
        0 => {
            let on =
                std::env::var("AMP_TRACE").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "on"));
            TRACING.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        state => state == 2,
    }
}

/// Turns run-time tracing on or off for the whole process (overrides `AMP_TRACE`).
pub fn set_tracing(on: bool) {
    TRACING.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Marks the current thread as inside a region while alive (only counted when tracing).
pub struct RegionGuard {
    counted: bool,
}

impl Drop for RegionGuard {
    fn drop(&mut self) {
        if self.counted {
            REGION_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
}

/// Records `site` for policy `P` the first time it runs.
#[inline]
pub fn register<P: Policy>(site: &'static RegionSite) {
    if !site.registered[P::INDEX].load(Ordering::Relaxed)
        && !site.registered[P::INDEX].swap(true, Ordering::Relaxed)
    {
        REGIONS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((site, P::NAME));
    }
}

/// Called at the top of every rewritten (non-async) function: registers the site for policy `P` the
/// first time, and marks the thread as inside a region for tracing while the guard lives.
#[inline]
pub fn enter<P: Policy>(site: &'static RegionSite) -> RegionGuard {
    register::<P>(site);
    let counted = tracing_enabled();
    if counted {
        REGION_DEPTH.with(|d| d.set(d.get() + 1));
    }
    RegionGuard { counted }
}

/// One traced op call site.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TracedOp {
    /// The op.
    pub op: &'static str,
    /// The element type it ran in.
    pub dtype: DType,
    /// Where it was called (`file:line:column`).
    pub location: String,
    /// Whether it ran inside an `#[autocast]` / `#[keep_fp32]` function.
    pub in_region: bool,
}

static TRACE: Mutex<BTreeMap<TracedOp, u64>> = Mutex::new(BTreeMap::new());

/// Records a low-precision-class op (matmul, linear, conv, attention) when tracing is on.
#[track_caller]
#[inline]
pub(crate) fn trace_low_op(op: &'static str, dtype: DType) {
    if !tracing_enabled() {
        return;
    }
    let location = Location::caller();
    let entry = TracedOp {
        op,
        dtype,
        location: format!(
            "{}:{}:{}",
            location.file(),
            location.line(),
            location.column()
        ),
        in_region: REGION_DEPTH.with(|d| d.get() > 0),
    };
    *TRACE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(entry)
        .or_insert(0) += 1;
}

/// One region in the report.
#[derive(Debug)]
pub struct RegionReport {
    /// What the expansion recorded.
    pub site: &'static RegionSite,
    /// The policy it ran under (`"bf16"`, `"f16"`, `"f32"`).
    pub policy: &'static str,
}

/// What [`report`] returns: the regions that have run and, with tracing on, every low-precision op call
/// site with the type it ran in. `Display` prints it as tables.
#[derive(Debug)]
pub struct Report {
    /// Rewritten functions that have run, per policy, in the order they first ran.
    pub regions: Vec<RegionReport>,
    /// Traced low-precision op sites with their call counts (empty unless tracing is on).
    pub traced: Vec<(TracedOp, u64)>,
    /// Whether tracing was on.
    pub tracing: bool,
}

impl Report {
    /// Traced low-precision ops that ran in f32 (or f64) outside any region: the usual reason a model is
    /// slower than expected under mixed precision.
    pub fn full_precision_outside_regions(&self) -> impl Iterator<Item = &(TracedOp, u64)> {
        self.traced
            .iter()
            .filter(|(t, _)| !t.in_region && matches!(t.dtype, DType::F32 | DType::F64))
    }
}

/// The precision report for the whole program so far.
///
/// ```
/// println!("{}", amp_runtime::autocast::report());
/// ```
pub fn report() -> Report {
    let regions = REGIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|&(site, policy)| RegionReport { site, policy })
        .collect();
    let traced = TRACE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, &v)| (k.clone(), v))
        .collect();
    Report {
        regions,
        traced,
        tracing: tracing_enabled(),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "amp precision report")?;
        if self.regions.is_empty() {
            writeln!(f, "  no #[autocast] or #[keep_fp32] function has run yet")?;
        }
        for r in &self.regions {
            let s = r.site;
            let written = if s.written == r.policy {
                String::new()
            } else {
                format!(" (written {})", s.written)
            };
            writeln!(
                f,
                "\n{} at {}:{}, policy {}{}",
                s.function, s.file, s.line, r.policy, written
            )?;
            if s.ops.is_empty() {
                writeln!(f, "  (no ops rewritten)")?;
                continue;
            }
            writeln!(f, "  {:>6}  {:<22} {:<9} runs in", "line", "op", "class")?;
            for op in s.ops {
                let runs_in = match op.class {
                    OpClass::Low => low_name(r.policy),
                    OpClass::F32 | OpClass::KeepF32 => "f32",
                    OpClass::Promote => "widest input",
                    OpClass::Same => "input type",
                    OpClass::Layer => "per layer",
                };
                writeln!(
                    f,
                    "  {:>6}  {:<22} {:<9} {runs_in}",
                    op.line,
                    op.op,
                    op.class.to_string()
                )?;
            }
        }
        if !self.tracing {
            return writeln!(
                f,
                "\nrun-time tracing is off (set AMP_TRACE=1 to record the type each op ran in)"
            );
        }
        writeln!(f, "\nlow-precision ops traced at run time:")?;
        writeln!(
            f,
            "  {:<10} {:<5} {:<8} {:>8}  call site",
            "op", "type", "region", "calls"
        )?;
        for (t, calls) in &self.traced {
            let flag = if !t.in_region && matches!(t.dtype, DType::F32 | DType::F64) {
                "  <- ran in full precision outside any region"
            } else {
                ""
            };
            let region = if t.in_region { "inside" } else { "outside" };
            writeln!(
                f,
                "  {:<10} {:<5} {:<8} {:>8}  {}{flag}",
                t.op,
                t.dtype.to_string(),
                region,
                calls,
                t.location
            )?;
        }
        Ok(())
    }
}

fn low_name(policy: &str) -> &'static str {
    match policy {
        "bf16" => "bf16",
        "f16" => "f16",
        _ => "f32",
    }
}
