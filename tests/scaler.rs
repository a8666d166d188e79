//! The loss scaler: PyTorch's algorithm and defaults traced step by step (expected values worked out by
//! hand from the algorithm), the options (floor, ceiling, hysteresis, disabled), validation, state, and
//! gradient accumulation.

use amp::prelude::*;
use amp::train::{GradScaler, Optimizer, ScalerConfig, ScalerError, Sgd, SgdConfig, StepResult};

/// A parameter, an optimizer that does not move it (lr 0), and a loss whose gradient is `g`.
struct Rig {
    w: Param,
    opt: Sgd,
}

impl Rig {
    fn new() -> Self {
        let w = Param::named("layer.weight", Tensor::from_vec(vec![1.0f32, 2.0], [2]));
        let opt = Sgd::new(vec![w.clone()], SgdConfig::new(0.0));
        Rig { w, opt }
    }

    /// One scaled step whose gradient is `g` in both elements (inf or NaN to inject an overflow).
    fn step(&mut self, scaler: &mut GradScaler, g: f32) -> StepResult {
        let loss = (&self.w.value() * &Tensor::from_vec(vec![g, 1.0], [2])).sum(..);
        let scaled = scaler.scale(&loss).backward();
        scaler.unscale(scaled).step(&mut self.opt)
    }
}

fn dynamic(config: ScalerConfig) -> GradScaler {
    GradScaler::with_config(config).expect("valid config")
}

/// Defaults: 2^16 to start; 1999 clean steps keep it; the 2000th doubles it and resets the tracker.
#[test]
fn grows_after_2000_clean_steps() {
    let (mut rig, mut s) = (Rig::new(), GradScaler::new());
    assert_eq!(s.scale_factor(), 65536.0);
    for i in 1..2000 {
        assert!(rig.step(&mut s, 1.0).is_applied());
        assert_eq!((s.scale_factor(), s.growth_tracker()), (65536.0, i));
    }
    let r = rig.step(&mut s, 1.0);
    assert_eq!(
        r,
        StepResult::Applied {
            scale_before: 65536.0,
            scale_after: 131072.0
        }
    );
    assert_eq!(s.growth_tracker(), 0);
}

/// An inf or a NaN skips the step, halves the scale and resets the growth tracker; the step result names
/// the parameter.
#[test]
fn backs_off_on_inf_and_nan() {
    let (mut rig, mut s) = (Rig::new(), GradScaler::new());
    for _ in 0..7 {
        rig.step(&mut s, 1.0);
    }
    assert_eq!(s.growth_tracker(), 7);
    let r = rig.step(&mut s, f32::INFINITY);
    assert_eq!(
        r,
        StepResult::Skipped {
            scale_before: 65536.0,
            scale_after: 32768.0,
            first_non_finite: Some("layer.weight".into())
        }
    );
    assert_eq!(s.growth_tracker(), 0);
    let r = rig.step(&mut s, f32::NAN);
    assert!(!r.is_applied());
    assert_eq!((r.scale_before(), r.scale_after()), (32768.0, 16384.0));
    assert!(r.to_string().contains("layer.weight"), "{r}");
}

/// 40 NaN steps in a row: the scale keeps halving, to 2^16·2^-40 = 2^-24, with no floor.
#[test]
fn forty_nan_steps_have_no_floor() {
    let (mut rig, mut s) = (Rig::new(), GradScaler::new());
    for i in 1..=40 {
        assert!(!rig.step(&mut s, f32::NAN).is_applied());
        assert_eq!(s.scale_factor(), 65536.0 * 0.5f32.powi(i));
    }
    assert_eq!(s.scale_factor(), 2f32.powi(-24));
}

/// Growth stops at the largest power of two when the next one would overflow f32.
#[test]
fn growth_stays_finite_near_f32_max() {
    let mut rig = Rig::new();
    let mut s = dynamic(ScalerConfig {
        init_scale: 2f32.powi(126),
        growth_interval: 1,
        ..Default::default()
    });
    // With a scale of 2^126 the scaled gradient itself overflows; use a zero gradient to stay clean.
    rig.step(&mut s, 0.0);
    assert_eq!(s.scale_factor(), 2f32.powi(127));
    rig.step(&mut s, 0.0);
    assert_eq!(
        s.scale_factor(),
        2f32.powi(127),
        "2^128 is inf in f32: keep 2^127"
    );
}

/// Custom factors: ×4 after 3 clean steps, ×0.25 on overflow.
#[test]
fn custom_factors() {
    let mut rig = Rig::new();
    let mut s = dynamic(ScalerConfig {
        init_scale: 16.0,
        growth_factor: 4.0,
        backoff_factor: 0.25,
        growth_interval: 3,
        ..Default::default()
    });
    let mut trace = vec![];
    for g in [1.0, 1.0, 1.0, 1.0, f32::INFINITY, 1.0, 1.0, 1.0] {
        rig.step(&mut s, g);
        trace.push(s.scale_factor());
    }
    assert_eq!(trace, [16.0, 16.0, 64.0, 64.0, 16.0, 16.0, 16.0, 64.0]);
}

/// Hysteresis 2: one overflow skips without backing off; a second in a row backs off; a clean step in
/// between starts the count again.
#[test]
fn hysteresis_delays_backoff() {
    let mut rig = Rig::new();
    let mut s = dynamic(ScalerConfig {
        hysteresis: 2,
        ..Default::default()
    });
    let mut trace = vec![];
    for g in [f32::NAN, 1.0, f32::NAN, f32::NAN, f32::NAN, f32::NAN] {
        let r = rig.step(&mut s, g);
        trace.push((r.is_applied(), s.scale_factor()));
    }
    assert_eq!(
        trace,
        [
            (false, 65536.0),
            (true, 65536.0),
            (false, 65536.0),
            (false, 32768.0),
            (false, 32768.0),
            (false, 16384.0)
        ]
    );
}

/// A floor stops the backoff; a ceiling stops the growth.
#[test]
fn floor_and_ceiling() {
    let mut rig = Rig::new();
    let mut s = dynamic(ScalerConfig {
        init_scale: 4096.0,
        min_scale: Some(1024.0),
        ..Default::default()
    });
    let trace: Vec<f32> = (0..4)
        .map(|_| rig.step(&mut s, f32::NAN).scale_after())
        .collect();
    assert_eq!(trace, [2048.0, 1024.0, 1024.0, 1024.0]);
    let mut s = dynamic(ScalerConfig {
        growth_interval: 1,
        max_scale: Some(100_000.0),
        ..Default::default()
    });
    let trace: Vec<f32> = (0..3)
        .map(|_| rig.step(&mut s, 1.0).scale_after())
        .collect();
    assert_eq!(trace, [100_000.0, 100_000.0, 100_000.0]);
}

/// The disabled scaler (bf16) keeps scale 1, skips non-finite steps by default, and can be told not to.
#[test]
fn disabled_scaler_skips_non_finite_steps_by_default() {
    let mut rig = Rig::new();
    let mut s = GradScaler::disabled();
    assert!(!s.is_enabled());
    assert!(rig.step(&mut s, 1.0).is_applied());
    assert!(!rig.step(&mut s, f32::NAN).is_applied());
    assert_eq!(s.scale_factor(), 1.0);
    let mut permissive = GradScaler::disabled().skip_non_finite(false);
    let before = rig.w.version();
    assert!(rig.step(&mut permissive, f32::NAN).is_applied());
    assert_eq!(rig.w.version(), before + 1, "the optimizer stepped");
}

/// Skipped steps leave the weights bit-identical and do not advance the optimizer or its schedule.
#[test]
fn skipped_steps_change_nothing() {
    let w = Param::new(Tensor::from_vec(vec![1.0f32, -2.0], [2]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::new(0.1).momentum(0.9));
    let mut s = GradScaler::new();
    let step = |g: f32, opt: &mut Sgd, s: &mut GradScaler| {
        let loss = (&w.value() * &Tensor::from_vec(vec![g, g], [2])).sum(..);
        let scaled = s.scale(&loss).backward();
        s.unscale(scaled).step(opt)
    };
    step(1.0, &mut opt, &mut s);
    let (before, version, steps) = (w.value().to_vec(), w.version(), opt.steps());
    assert!(!step(f32::INFINITY, &mut opt, &mut s).is_applied());
    assert_eq!(w.value().to_vec(), before);
    assert_eq!((w.version(), opt.steps()), (version, steps));
}

/// Constructor validation with PyTorch's messages.
#[test]
fn invalid_configs_are_rejected() {
    let bad = |c: ScalerConfig| GradScaler::with_config(c).unwrap_err();
    assert_eq!(
        bad(ScalerConfig {
            growth_factor: 1.0,
            ..Default::default()
        }),
        ScalerError::GrowthFactor(1.0)
    );
    assert_eq!(
        bad(ScalerConfig {
            backoff_factor: 1.0,
            ..Default::default()
        }),
        ScalerError::BackoffFactor(1.0)
    );
    assert_eq!(
        bad(ScalerConfig {
            growth_interval: 0,
            ..Default::default()
        }),
        ScalerError::GrowthInterval
    );
    assert_eq!(
        bad(ScalerConfig {
            init_scale: f32::INFINITY,
            ..Default::default()
        }),
        ScalerError::Scale(f32::INFINITY)
    );
    assert_eq!(
        bad(ScalerConfig {
            hysteresis: 0,
            ..Default::default()
        }),
        ScalerError::Hysteresis
    );
    let err = bad(ScalerConfig {
        min_scale: Some(8.0),
        max_scale: Some(4.0),
        ..Default::default()
    });
    assert_eq!(err, ScalerError::Bounds { min: 8.0, max: 4.0 });
    assert!(
        ScalerError::GrowthFactor(1.0)
            .to_string()
            .contains("must be > 1.0")
    );
    assert!(
        ScalerError::BackoffFactor(1.0)
            .to_string()
            .contains("must be < 1.0")
    );
}

/// The state round-trips into a fresh scaler; a disabled scaler's state does not load into a dynamic one.
#[test]
fn state_round_trip() {
    let mut rig = Rig::new();
    let mut s = dynamic(ScalerConfig {
        growth_interval: 3,
        hysteresis: 2,
        ..Default::default()
    });
    for g in [1.0, 1.0, f32::NAN, 1.0, 1.0, 1.0, 1.0, f32::NAN] {
        rig.step(&mut s, g);
    }
    let state = s.state_dict();
    assert_eq!(
        (state.scale, state.growth_tracker, state.overflows_in_a_row),
        (131072.0, 0, 1)
    );
    let mut fresh = dynamic(ScalerConfig {
        growth_interval: 3,
        hysteresis: 2,
        ..Default::default()
    });
    fresh.load_state_dict(&state).unwrap();
    assert_eq!(fresh, s);
    let mut off = GradScaler::disabled();
    assert!(matches!(
        off.load_state_dict(&state),
        Err(ScalerError::Mismatch { .. })
    ));
}

/// Scaled gradients of micro-batches add up before the single unscale: the result equals the gradient
/// of the summed loss.
#[test]
fn accumulation_adds_scaled_gradients() {
    let w = Param::new(Tensor::from_vec(vec![0.5f32, -1.5, 2.0], [3]));
    let x1 = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]);
    let x2 = Tensor::from_vec(vec![-4.0f32, 0.25, 1.0], [3]);
    let mut s = GradScaler::new();
    let mut acc = s.scale(&(&w.value() * &x1).square().sum(..)).backward();
    acc += s.scale(&(&w.value() * &x2).square().sum(..)).backward();
    assert_eq!(acc.scale(), 65536.0);
    let unscaled = s.unscale(acc);
    let got = unscaled.grads().get(&w).unwrap().to_vec();
    let reference =
        ((&w.value() * &x1).square().sum(..) + (&w.value() * &x2).square().sum(..)).backward();
    let want = reference.get(&w).unwrap().to_vec();
    for (g, e) in got.iter().zip(&want) {
        assert!((g - e).abs() <= 1e-6 * e.abs(), "{g} vs {e}");
    }
    drop(unscaled);
}
