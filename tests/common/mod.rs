//! Shared helpers for the facade-level integration tests: seeded input builders that keep values away
//! from kinks and ties, the finite-difference gradient check, the multi-dtype forward comparison, and
//! panic capture (message and location) for the shape-error tests.
//!
//! Every test binary includes this with `mod common;`; not every binary uses every helper.
#![allow(dead_code)]

use amp::{DType, Float, IntoShape, Promote, Rng, Tensor, bf16, f16, no_grad};
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

// ---------------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------------

/// Standard normal values of the given shape, from `seed`.
pub fn randn(shape: impl IntoShape, seed: u64) -> Tensor<f64> {
    Tensor::randn(shape, &mut Rng::new(seed))
}

/// Uniform values in `[lo, hi)`, from `seed`.
pub fn uniform(shape: impl IntoShape, lo: f64, hi: f64, seed: u64) -> Tensor<f64> {
    let shape = shape.into_shape();
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    let data = (0..n).map(|_| lo + (hi - lo) * rng.uniform()).collect();
    Tensor::from_vec(data, shape)
}

/// Normal values pushed at least `margin` away from zero (for abs, relu, reciprocal, division).
pub fn away_from_zero(shape: impl IntoShape, margin: f64, seed: u64) -> Tensor<f64> {
    map_values(&randn(shape, seed), |v| v + margin.copysign(v))
}

/// The values of `t` moved at least `margin` away from every point in `points` (clamp bounds).
pub fn avoid(t: &Tensor<f64>, points: &[f64], margin: f64) -> Tensor<f64> {
    map_values(t, |mut v| {
        for &p in points {
            if (v - p).abs() < margin {
                v = p + margin.copysign(v - p);
            }
        }
        v
    })
}

/// Distinct values (a shuffled grid with spacing 0.1 plus a little jitter), so that max/min reductions
/// have no ties and a finite-difference step cannot change the winner.
pub fn spaced(shape: impl IntoShape, seed: u64) -> Tensor<f64> {
    let shape = shape.into_shape();
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(seed);
    let mut data: Vec<f64> = (0..n)
        .map(|i| (i as f64 - n as f64 / 2.0) * 0.1 + 0.01 * rng.uniform())
        .collect();
    rng.shuffle(&mut data);
    Tensor::from_vec(data, shape)
}

/// Values on the grid `0.2·k + offset` with random integers `k` in `-8..8`. Two tensors with offsets
/// `+0.05` and `-0.05` differ by at least 0.1 at every broadcast pair: no ties for maximum/minimum.
pub fn grid(shape: impl IntoShape, offset: f64, seed: u64) -> Tensor<f64> {
    let shape = shape.into_shape();
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(seed);
    let data = (0..n)
        .map(|_| 0.2 * (rng.below(16) as f64 - 8.0) + offset)
        .collect();
    Tensor::from_vec(data, shape)
}

/// A probability table: each row of the last dimension is a softmax of random logits (built by hand,
/// not with the op under test), strictly inside (0, 1).
pub fn probabilities(shape: impl IntoShape, seed: u64) -> Tensor<f64> {
    let shape = shape.into_shape();
    let last = *shape.last().expect("at least one dimension");
    let logits = randn(shape.clone(), seed).to_vec();
    let mut data = Vec::with_capacity(logits.len());
    for row in logits.chunks(last) {
        let total: f64 = row.iter().map(|v| v.exp()).sum();
        data.extend(row.iter().map(|v| v.exp() / total));
    }
    Tensor::from_vec(data, shape)
}

/// Random class indices in `0..classes`.
pub fn labels(shape: impl IntoShape, classes: usize, seed: u64) -> Tensor<i64> {
    let shape = shape.into_shape();
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(seed);
    let data = (0..n).map(|_| rng.below(classes as u64) as i64).collect();
    Tensor::from_vec(data, shape)
}

/// An i64 tensor from literal values.
pub fn idx(values: &[i64], shape: impl IntoShape) -> Tensor<i64> {
    Tensor::from_vec(values.to_vec(), shape)
}

/// A new f64 tensor with `f` applied to each value of `t` (no autograd, no tensor ops involved).
pub fn map_values(t: &Tensor<f64>, f: impl Fn(f64) -> f64) -> Tensor<f64> {
    Tensor::from_vec(t.to_vec().into_iter().map(f).collect(), t.shape())
}

/// An f64 tensor from literal values.
pub fn t64(values: &[f64], shape: impl IntoShape) -> Tensor<f64> {
    Tensor::from_vec(values.to_vec(), shape)
}

// ---------------------------------------------------------------------------------------------------
// Gradient check
// ---------------------------------------------------------------------------------------------------

/// Step and tolerances of a finite-difference gradient check.
#[derive(Clone, Copy, Debug)]
pub struct GradTol {
    /// Central-difference step.
    pub step: f64,
    /// Relative tolerance (against the larger of the two gradients).
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl GradTol {
    /// Step 1e-6: truncation error ~1e-13, rounding error ~1e-16·|loss|/1e-6 ≈ 1e-9 for our sizes.
    pub const DEFAULT: GradTol = GradTol {
        step: 1e-6,
        rtol: 1e-5,
        atol: 1e-6,
    };
}

/// `Σ out·r` in plain f64 arithmetic (the finite-difference side never uses the ops under test).
fn weighted_sum(out: &Tensor<f64>, r: &[f64]) -> f64 {
    out.to_vec().iter().zip(r).map(|(a, b)| a * b).sum()
}

/// Compares `backward()` with central finite differences for every element of every input.
///
/// The output is reduced to a scalar as `sum(out · r)` with a fixed random `r`, so every output element
/// contributes with its own weight (a plain sum would hide gradients that only need to sum correctly).
#[track_caller]
pub fn check_grad(f: impl Fn(&[Tensor<f64>]) -> Tensor<f64>, inputs: &[Tensor<f64>]) {
    check_grad_with(GradTol::DEFAULT, f, inputs);
}

/// [`check_grad`] with an explicit step and tolerances.
#[track_caller]
pub fn check_grad_with(
    tol: GradTol,
    f: impl Fn(&[Tensor<f64>]) -> Tensor<f64>,
    inputs: &[Tensor<f64>],
) {
    let leaves: Vec<Tensor<f64>> = inputs.iter().map(|x| x.detach().with_grad()).collect();
    let out = f(&leaves);
    assert!(
        out.requires_grad(),
        "the output does not require a gradient"
    );
    let r_data: Vec<f64> = {
        let mut rng = Rng::new(0x5EED_C0DE);
        (0..out.numel()).map(|_| rng.normal()).collect()
    };
    let r = Tensor::from_vec(r_data.clone(), out.shape());
    let loss = (&out * &r).sum(..);
    let grads = loss.backward();

    // Inputs without history: the value must not depend on whether gradients are recorded.
    let plain: Vec<Tensor<f64>> = inputs.iter().map(Tensor::detach).collect();
    let base = no_grad(|| f(&plain));
    assert_eq!(
        base.shape(),
        out.shape(),
        "output shape with and without grad"
    );
    assert_close_slices(
        &out.to_vec(),
        &base.to_vec(),
        1e-12,
        1e-12,
        "forward with grad vs without",
    );

    for (i, leaf) in leaves.iter().enumerate() {
        let analytic = grads
            .get(leaf)
            .unwrap_or_else(|| panic!("input {i}: no gradient"));
        assert_eq!(analytic.dtype(), DType::F64, "input {i}: gradient dtype");
        assert_eq!(
            analytic.shape(),
            inputs[i].shape(),
            "input {i}: gradient shape"
        );
        let analytic = analytic.to_vec();
        let values = inputs[i].to_vec();
        for j in 0..values.len() {
            let eval = |delta: f64| {
                let mut v = values.clone();
                v[j] += delta;
                let mut args = plain.clone();
                args[i] = Tensor::from_vec(v, inputs[i].shape());
                weighted_sum(&no_grad(|| f(&args)), &r_data)
            };
            let numeric = (eval(tol.step) - eval(-tol.step)) / (2.0 * tol.step);
            let a = analytic[j];
            let bound = tol.atol + tol.rtol * a.abs().max(numeric.abs());
            assert!(
                (a - numeric).abs() <= bound,
                "input {i} (shape {:?}), element {j}: analytic {a} vs finite difference {numeric} \
                 (difference {:e} > {bound:e})",
                inputs[i].shape(),
                (a - numeric).abs()
            );
        }
    }
}

/// Asserts `|a - b| <= atol + rtol·|b|` elementwise, naming the first mismatch.
#[track_caller]
pub fn assert_close_slices(got: &[f64], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= atol + rtol * w.abs()
        };
        assert!(
            ok,
            "{what}: element {i}: got {g}, want {w} (difference {:e}, tolerance {:e})",
            (g - w).abs(),
            atol + rtol * w.abs()
        );
    }
}

/// Asserts that a tensor holds `want` (to 1e-12) with the given shape.
#[track_caller]
pub fn assert_values(t: &Tensor<f64>, shape: &[usize], want: &[f64]) {
    assert_eq!(t.shape(), shape, "shape");
    assert_close_slices(&t.to_vec(), want, 1e-12, 1e-12, "values");
}

// ---------------------------------------------------------------------------------------------------
// Forward comparison across element types
// ---------------------------------------------------------------------------------------------------

/// A float type whose same-type arithmetic (`&a + &b`, `where_`, ...) stays in that type: every
/// [`Float`], spelled so generic test code can use the promoting binary ops.
pub trait TestFloat: Float + Promote<Self, Output = Self> {}
impl<T: Float + Promote<T, Output = T>> TestFloat for T {}

/// An op written once, generically, so it can run in every float type.
pub trait ForwardOp {
    /// Runs the op on inputs of element type `E`.
    fn run<E: TestFloat>(&self, x: &[Tensor<E>]) -> Tensor<E>;
}

/// Tolerance of a forward comparison, as multiples of the per-type base tolerance `base`: 1e-3 for f16
/// and 1e-2 for bf16 (about twice the worst relative error of one rounding, 2^-11 and 2^-8), 1e-5 for
/// f32 (well above one rounding, 2^-24, to leave room for f32 libm functions and accumulation order).
/// The bound is `base·rel·|want| + base·scale`.
///
/// `scale` is the magnitude of the values an op cancels or rounds on the way (its partial sums, or an
/// intermediate that is rounded to the low type before a further add): when the result is much smaller
/// than them, its error is relative to them, not to the result.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// Multiple of the base relative tolerance.
    pub rel: f64,
    /// Magnitude that sets the absolute tolerance (`base·scale`).
    pub scale: f64,
}

impl Tol {
    /// One rounding of a result computed in f32: relative, with a small floor for results near zero.
    pub const ROUNDED: Tol = Tol {
        rel: 1.0,
        scale: 0.01,
    };
    /// Ops that only move data: the values must be identical.
    pub const EXACT: Tol = Tol {
        rel: 0.0,
        scale: 0.0,
    };

    /// A rounded result whose error is relative to intermediates of magnitude `scale`.
    pub const fn scaled(scale: f64) -> Tol {
        Tol { rel: 1.0, scale }
    }
}

/// The base relative tolerance of a float type (see [`Tol`]).
pub fn base_tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        DType::F32 => 1e-5,
        DType::F16 => 1e-3,
        DType::BF16 => 1e-2,
        other => panic!("no tolerance for {other}"),
    }
}

/// Runs `op` in f32, bf16 and f16 and compares each with the f64 result on the same (rounded) inputs.
#[track_caller]
pub fn check_forward(name: &str, op: &impl ForwardOp, inputs: &[Tensor<f64>], tol: Tol) {
    check_forward_in::<f32>(name, op, inputs, tol);
    check_forward_in::<bf16>(name, op, inputs, tol);
    check_forward_in::<f16>(name, op, inputs, tol);
}

/// [`check_forward`] for one element type `E`.
#[track_caller]
pub fn check_forward_in<E: TestFloat>(
    name: &str,
    op: &impl ForwardOp,
    inputs: &[Tensor<f64>],
    tol: Tol,
) {
    let low: Vec<Tensor<E>> = inputs.iter().map(|x| x.cast::<E>()).collect();
    let exact: Vec<Tensor<f64>> = low.iter().map(|x| x.to_f64()).collect();
    let want = op.run::<f64>(&exact);
    let got = op.run::<E>(&low);
    assert_eq!(got.shape(), want.shape(), "{name} in {}: shape", E::DTYPE);
    assert_eq!(got.dtype(), E::DTYPE, "{name}: result dtype");
    let base = base_tol(E::DTYPE);
    assert_close_slices(
        &got.to_f64().to_vec(),
        &want.to_vec(),
        base * tol.rel,
        base * tol.scale,
        &format!("{name} in {}", E::DTYPE),
    );
}

/// Compares the gradients of `op` computed in `E` with those computed in f64 on the same rounded
/// inputs, for the loss `sum(out · r)` with weights `r` rounded to `E` (so both runs start from the same
/// upstream gradient). The bound per element is `base·rel·|want| + base·scale`, with `scale` the size of
/// the gradient terms an op accumulates or cancels.
#[track_caller]
pub fn check_grad_in<E: TestFloat>(
    name: &str,
    op: &impl ForwardOp,
    inputs: &[Tensor<f64>],
    tol: Tol,
) {
    let low: Vec<Tensor<E>> = inputs.iter().map(|x| x.cast::<E>().with_grad()).collect();
    let exact: Vec<Tensor<f64>> = low
        .iter()
        .map(|x| x.to_f64().detach().with_grad())
        .collect();
    let want_out = op.run::<f64>(&exact);
    let r: Tensor<f64> = {
        let mut rng = Rng::new(0x5EED_C0DE);
        let data = (0..want_out.numel()).map(|_| rng.normal()).collect();
        Tensor::<f64>::from_vec(data, want_out.shape())
            .cast::<E>()
            .to_f64()
    };
    let want = (&want_out * &r).sum(..).backward();
    let got_out = op.run::<E>(&low);
    let got = (&got_out.to_f64() * &r).sum(..).backward();
    let base = base_tol(E::DTYPE);
    for (i, (l, e)) in low.iter().zip(&exact).enumerate() {
        let g = got
            .get(l)
            .unwrap_or_else(|| panic!("{name} in {}: no gradient for input {i}", E::DTYPE));
        assert_eq!(g.dtype(), E::DTYPE, "{name}: gradient dtype of input {i}");
        let w = want.get(e).expect("f64 gradient");
        assert_close_slices(
            &g.to_f64().to_vec(),
            &w.to_vec(),
            base * tol.rel,
            base * tol.scale,
            &format!("{name} in {}: gradient of input {i}", E::DTYPE),
        );
    }
}

/// [`check_grad_in`] for f32, bf16 and f16.
#[track_caller]
pub fn check_grad_low(name: &str, op: &impl ForwardOp, inputs: &[Tensor<f64>], tol: Tol) {
    check_grad_in::<f32>(name, op, inputs, tol);
    check_grad_in::<bf16>(name, op, inputs, tol);
    check_grad_in::<f16>(name, op, inputs, tol);
}

// ---------------------------------------------------------------------------------------------------
// Panic capture
// ---------------------------------------------------------------------------------------------------

/// What a captured panic said and where it was raised.
#[derive(Clone, Debug)]
pub struct Caught {
    /// The panic message.
    pub message: String,
    /// The file of the panic location (as `PanicHookInfo::location` reports it).
    pub file: String,
    /// The line of the panic location.
    pub line: u32,
}

thread_local! {
    /// `Some` while [`catch_panic`] runs on this thread: the hook stores the panic here.
    static CAPTURE: RefCell<Option<Option<Caught>>> = const { RefCell::new(None) };
}

/// Guards the process-wide panic hook: it is replaced once, under this lock, by a hook that records the
/// panics of threads inside [`catch_panic`] and forwards every other panic to the previous hook (so real
/// test failures still print).
static HOOK_INSTALLED: Mutex<bool> = Mutex::new(false);

fn install_hook() {
    let mut installed = HOOK_INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *installed {
        return;
    }
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let capturing = CAPTURE.with(|c| {
            let mut slot = c.borrow_mut();
            match slot.as_mut() {
                Some(caught) => {
                    let payload = info.payload();
                    let message = if let Some(s) = payload.downcast_ref::<&str>() {
                        s.to_string()
                    } else if let Some(s) = payload.downcast_ref::<String>() {
                        s.clone()
                    } else {
                        String::from("<non-string panic payload>")
                    };
                    let (file, line) = info
                        .location()
                        .map(|l| (l.file().to_string(), l.line()))
                        .unwrap_or_default();
                    *caught = Some(Caught {
                        message,
                        file,
                        line,
                    });
                    true
                }
                None => false,
            }
        });
        if !capturing {
            previous(info);
        }
    }));
    *installed = true;
}

/// Runs `f`, which must panic, and returns the panic's message and location (printing nothing).
#[track_caller]
pub fn catch_panic<R>(f: impl FnOnce() -> R) -> Caught {
    install_hook();
    CAPTURE.with(|c| *c.borrow_mut() = Some(None));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let caught = CAPTURE.with(|c| c.borrow_mut().take()).flatten();
    assert!(result.is_err(), "expected a panic, but the call returned");
    caught.expect("the panic hook recorded the panic")
}

/// Runs `f`, which must panic with a message containing every string in `parts`; returns the message.
#[track_caller]
pub fn assert_panics_with<R>(parts: &[&str], f: impl FnOnce() -> R) -> String {
    let caught = catch_panic(f);
    for part in parts {
        assert!(
            caught.message.contains(part),
            "panic message {:?} does not contain {part:?}",
            caught.message
        );
    }
    caught.message
}
