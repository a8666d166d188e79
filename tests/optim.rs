//! Optimizers against a straightforward f64 implementation of PyTorch's algorithms, learning-rate
//! schedules (which do not advance on skipped steps), gradient clipping, and optimizer state.

use amp::prelude::*;
use amp::train::{
    Adam, AdamConfig, GradScaler, Optimizer, OptimizerStateError, Schedule, Sgd, SgdConfig,
    clip_grad_norm, clip_grad_value, grad_norm,
};

/// Gradients for a fixed sequence of steps, shared by the optimizer under test and the reference.
fn grad_sequence(steps: usize, n: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(3);
    (0..steps)
        .map(|_| Tensor::<f32>::randn([n], &mut rng).to_vec())
        .collect()
}

/// Runs `opt` over the gradient sequence by backpropagating `Σ w·g` (whose gradient is g).
fn run(opt: &mut dyn Optimizer, w: &Param, grads: &[Vec<f32>]) {
    for g in grads {
        let gt = Tensor::from_vec(g.clone(), [g.len()]);
        let grads = (&w.value() * &gt).sum(..).backward();
        opt.step(&grads);
    }
}

fn close(got: &[f32], want: &[f64], rel: f64) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= rel * w.abs().max(1e-3),
            "element {i}: {g} vs {w}"
        );
    }
}

/// Adam and AdamW (with weight decay) follow PyTorch's update to f32 precision over 20 steps.
#[test]
fn adam_and_adamw_match_the_reference() {
    let grads = grad_sequence(20, 7);
    for decoupled in [false, true] {
        let init: Vec<f32> = (0..7).map(|i| i as f32 * 0.3 - 1.0).collect();
        let w = Param::new(Tensor::from_vec(init.clone(), [7]));
        let config = if decoupled {
            AdamConfig::adamw(0.01, 0.1)
        } else {
            AdamConfig {
                weight_decay: 0.05,
                ..AdamConfig::adam(0.01)
            }
        };
        let mut opt = Adam::new(vec![w.clone()], config.betas(0.8, 0.95).eps(1e-6));
        run(&mut opt, &w, &grads);
        // Reference, in f64.
        let (lr, b1, b2, eps, wd) = (0.01, 0.8, 0.95, 1e-6, if decoupled { 0.1 } else { 0.05 });
        let mut p: Vec<f64> = init.iter().map(|&v| v as f64).collect();
        let (mut m, mut v) = (vec![0.0; 7], vec![0.0; 7]);
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            for i in 0..7 {
                let mut gi = g[i] as f64;
                if decoupled {
                    p[i] *= 1.0 - lr * wd;
                } else {
                    gi += wd * p[i];
                }
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                let denom = (v[i] / (1.0 - b2.powi(t))).sqrt() + eps;
                p[i] -= lr * (m[i] / (1.0 - b1.powi(t))) / denom;
            }
        }
        close(&w.value().to_vec(), &p, 1e-4);
        assert_eq!(opt.steps(), 20);
    }
}

/// SGD with momentum (and with Nesterov) and weight decay follows PyTorch's update.
#[test]
fn sgd_matches_the_reference() {
    let grads = grad_sequence(15, 5);
    for nesterov in [false, true] {
        let init = vec![1.0f32, -0.5, 0.25, 2.0, -3.0];
        let w = Param::new(Tensor::from_vec(init.clone(), [5]));
        let mut config = SgdConfig::new(0.05).momentum(0.9).weight_decay(0.01);
        if nesterov {
            config = config.nesterov();
        }
        let mut opt = Sgd::new(vec![w.clone()], config);
        run(&mut opt, &w, &grads);
        let mut p: Vec<f64> = init.iter().map(|&v| v as f64).collect();
        let mut buf = [0.0; 5];
        for (t, g) in grads.iter().enumerate() {
            for i in 0..5 {
                let gi = g[i] as f64 + 0.01 * p[i];
                buf[i] = if t == 0 { gi } else { 0.9 * buf[i] + gi };
                let d = if nesterov { gi + 0.9 * buf[i] } else { buf[i] };
                p[i] -= 0.05 * d;
            }
        }
        close(&w.value().to_vec(), &p, 1e-5);
    }
}

/// A parameter without a gradient is left alone, and its Adam step count does not advance.
#[test]
fn parameters_without_gradients_are_untouched() {
    let (a, b) = (
        Param::named("a", Tensor::ones([2])),
        Param::named("b", Tensor::ones([2])),
    );
    let mut opt = Adam::new(vec![a.clone(), b.clone()], AdamConfig::adam(0.1));
    let grads = a.value().sum(..).backward();
    opt.step(&grads);
    assert_ne!(a.value().to_vec(), vec![1.0, 1.0]);
    assert_eq!((b.value().to_vec(), b.version()), (vec![1.0, 1.0], 0));
    let state = opt.state();
    assert!(state.tensors.iter().any(|(n, _)| n == "a.exp_avg"));
    assert!(!state.tensors.iter().any(|(n, _)| n.starts_with("b.")));
}

/// Warmup and cosine schedules, and the schedule does not advance on a step the scaler skips.
#[test]
fn schedules_follow_applied_steps_only() {
    let w = Param::new(Tensor::from_vec(vec![1.0f32], [1]));
    let schedule = Schedule::WarmupCosine {
        warmup_steps: 4,
        total_steps: 8,
        min_factor: 0.0,
    };
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::new(1.0).schedule(schedule));
    let mut scaler = GradScaler::new();
    let mut lrs = vec![];
    for g in [1.0f32, 1.0, f32::NAN, 1.0, 1.0, 1.0, 1.0] {
        lrs.push(opt.lr());
        let loss = (&w.value() * &Tensor::from_vec(vec![g], [1])).sum(..);
        let scaled = scaler.scale(&loss).backward();
        let _ = scaler.unscale(scaled).step(&mut opt);
    }
    assert_eq!(
        lrs[..4],
        [0.25, 0.5, 0.75, 0.75],
        "the skipped third step keeps the rate"
    );
    assert_eq!(
        lrs[4..6],
        [1.0, 1.0],
        "warmup ends after 4 applied steps; the decay starts at 1"
    );
    assert!((lrs[6] - 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos())).abs() < 1e-12);
    assert_eq!(opt.steps(), 6);
    assert_eq!(Schedule::LinearWarmup { warmup_steps: 10 }.factor(3), 0.4);
}

/// Clipping by global norm scales all gradients by max/(norm+1e-6); clipping by value clamps.
#[test]
fn clipping() {
    let a = Tensor::<f32>::from_vec(vec![3.0], [1]).with_grad();
    let b = Tensor::<f32>::from_vec(vec![0.0, 4.0], [2]).with_grad();
    let loss = (&a * &Tensor::from_vec(vec![3.0f32], [1])).sum(..)
        + (&b * &Tensor::from_vec(vec![0.0f32, 4.0], [2])).sum(..);
    let mut grads = loss.backward();
    assert!((grad_norm(&grads) - 5.0).abs() < 1e-9);
    let norm = clip_grad_norm(&mut grads, 1.0);
    assert!((norm - 5.0).abs() < 1e-9);
    let factor = (1.0 / (5.0 + 1e-6)) as f32;
    assert_eq!(grads.get(&a).unwrap().to_vec(), vec![3.0 * factor]);
    assert!((grad_norm(&grads) - 1.0).abs() < 1e-5);
    let norm_again = clip_grad_norm(&mut grads, 10.0);
    assert!(
        (norm_again - 1.0).abs() < 1e-5,
        "a norm under the limit is left alone"
    );
    clip_grad_value(&mut grads, 0.5);
    assert_eq!(grads.get(&b).unwrap().to_vec(), vec![0.0, 0.5]);
}

/// Optimizer state round-trips; a state from another kind or another model is rejected, naming why.
#[test]
fn optimizer_state() {
    let w = Param::named("w", Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]));
    let mut opt = Adam::new(vec![w.clone()], AdamConfig::adamw(0.1, 0.01));
    run(&mut opt, &w, &grad_sequence(3, 3));
    let state = opt.state();
    let mut fresh = Adam::new(vec![w.clone()], AdamConfig::adamw(0.1, 0.01));
    fresh.load_state(&state).unwrap();
    assert_eq!(fresh.steps(), 3);
    assert_eq!(format!("{:?}", fresh.state()), format!("{state:?}"));
    let mut sgd = Sgd::new(vec![w.clone()], SgdConfig::new(0.1));
    assert!(matches!(
        sgd.load_state(&state),
        Err(OptimizerStateError::Kind { .. })
    ));
    let other = Param::named("other", Tensor::ones([3]));
    let mut wrong_model = Adam::new(vec![other], AdamConfig::adamw(0.1, 0.01));
    let err = wrong_model.load_state(&state).unwrap_err();
    assert!(
        matches!(err, OptimizerStateError::Unexpected(ref n) if n.starts_with("w.")),
        "{err}"
    );
    let bigger = Param::named("w", Tensor::ones([4]));
    let err = Adam::new(vec![bigger], AdamConfig::adamw(0.1, 0.01))
        .load_state(&state)
        .unwrap_err();
    assert!(matches!(err, OptimizerStateError::Shape { .. }), "{err}");
}

/// Invalid hyperparameters panic with the optimizer's name.
#[test]
#[should_panic(expected = "Sgd: Nesterov momentum requires a momentum and zero dampening")]
fn nesterov_without_momentum() {
    let _ = Sgd::new(vec![], SgdConfig::new(0.1).nesterov());
}
