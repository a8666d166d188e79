//! Every precision mode trains the same small model, written once with `#[autocast(P)]`, to a loss close to
//! `"32-true"`; and a long `"16-mixed"` run with non-finite gradients injected into 5% of its steps skips
//! exactly those steps without ever letting a NaN reach a weight.

use amp::prelude::*;
use amp::train::{Adam, AdamConfig, GradScaler, Precision, ScalerConfig, Trainer};
use std::marker::PhantomData;

/// A 16-32-4 MLP with GELU.
struct Mlp<P: Policy> {
    w1: Param,
    b1: Param,
    w2: Param,
    policy: PhantomData<P>,
}

#[autocast(P)]
impl<P: Policy> Mlp<P> {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        Mlp {
            w1: Param::named("w1", Tensor::<f32>::randn([32, 16], &mut rng) * 0.25),
            b1: Param::named("b1", Tensor::<f32>::zeros([32])),
            w2: Param::named("w2", Tensor::<f32>::randn([4, 32], &mut rng) * 0.18),
            policy: PhantomData,
        }
    }

    fn params(&self) -> Vec<Param> {
        vec![self.w1.clone(), self.b1.clone(), self.w2.clone()]
    }

    fn loss(&self, x: &Tensor<f32>, y: &Tensor<i64>) -> Tensor<f32> {
        x.linear(&self.w1, Some(&self.b1))
            .gelu()
            .linear(&self.w2, None)
            .cross_entropy(y)
    }
}

/// Four Gaussian blobs in 16 dimensions.
fn data() -> (Tensor<f32>, Tensor<i64>) {
    let mut rng = Rng::new(9);
    let n = 1024;
    let centers = Tensor::<f32>::randn([4, 16], &mut rng) * 0.2;
    let labels: Vec<i64> = (0..n).map(|i| (i % 4) as i64).collect();
    let y = Tensor::from_vec(labels.clone(), [n]);
    let noise = Tensor::<f32>::randn([n, 16], &mut rng);
    let x = centers.index_select(0, &y) + noise;
    (x, y)
}

/// Trains for `steps` full-batch Adam steps in `precision`; returns the final loss and the weights.
fn train(precision: Precision, steps: usize) -> (f32, Vec<f32>) {
    let (x, y) = data();
    amp::dispatch!(precision, P => {
        let model = Mlp::<P>::new(1);
        let mut trainer = Trainer::new(precision, Adam::new(model.params(), AdamConfig::adam(0.01))).unwrap();
        let mut last = f32::NAN;
        for _ in 0..steps {
            last = trainer.step(|_| model.loss(&x, &y)).loss;
        }
        (last, model.w1.value().to_vec())
    })
    .expect("a supported precision")
}

/// The loss after 150 steps in each mode is within the stated tolerance of 32-true: 1% for the -mixed
/// modes (f32 masters), 3% for the -true modes (weights rounded to half precision after every step).
/// Measured: bf16-mixed +0.09%, 16-mixed +0.02%, bf16-true +0.3%, 16-true +0.03%.
#[test]
fn every_mode_trains_close_to_32_true() {
    let (reference, _) = train(Precision::F32True, 150);
    assert!(
        reference < 0.9,
        "32-true itself should learn (chance is ln 4 = 1.39): loss {reference}"
    );
    for (precision, tolerance) in [
        (Precision::Bf16Mixed, 0.01),
        (Precision::F16Mixed, 0.01),
        (Precision::Bf16True, 0.03),
        (Precision::F16True, 0.03),
    ] {
        let (loss, weights) = train(precision, 150);
        let rel = (loss - reference).abs() / reference;
        assert!(
            rel < tolerance,
            "{precision}: loss {loss} vs 32-true {reference} ({:.2}%)",
            rel * 100.0
        );
        if precision.param_storage() == DType::BF16 {
            assert!(
                weights.iter().all(|&w| bf16::from_f32(w).to_f32() == w),
                "bf16-true weights stay bf16"
            );
        }
    }
    let err = Trainer::new(Precision::F64True, Adam::new(vec![], AdamConfig::adam(0.1)))
        .err()
        .unwrap();
    assert!(err.to_string().contains("use \"32-true\""), "{err}");
}

/// 1,000 steps of 16-mixed with a NaN injected into the gradients of 5% of the steps: each injected step
/// is skipped and leaves the weights bit-identical, no NaN ever reaches a weight, and the final loss is
/// within 2% of the same run without injection.
#[test]
fn fault_injection_in_16_mixed() {
    let (x, y) = data();
    let mut injected_steps = Rng::new(77);
    let plan: Vec<bool> = (0..1000).map(|_| injected_steps.uniform() < 0.05).collect();
    let injected = plan.iter().filter(|&&b| b).count();
    assert!(
        (35..=65).contains(&injected),
        "about 5% of 1000 steps: {injected}"
    );
    // The default start (2^16) overflows this model's f16 weight gradients for the first steps (PyTorch
    // skips them the same way); start at 2^10 so every clean step counts. With 50 backoffs the scale
    // would end near 2^-40 and f16 activation gradients would flush to zero; a floor (one of the
    // scaler's options) and a shorter growth interval keep the run trainable.
    let config = ScalerConfig {
        init_scale: 1024.0,
        min_scale: Some(1.0),
        growth_interval: 50,
        ..Default::default()
    };
    let run = |inject: bool| {
        let model = Mlp::<amp::policy::F16>::new(1);
        let optimizer = Adam::new(model.params(), AdamConfig::adam(0.01));
        let mut trainer = Trainer::new(Precision::F16Mixed, optimizer)
            .unwrap()
            .with_scaler(GradScaler::with_config(config).unwrap());
        let mut last = f32::NAN;
        for (step, &poison) in plan.iter().enumerate() {
            let before: Vec<Vec<f32>> = model.params().iter().map(|p| p.value().to_vec()).collect();
            let report = trainer.step(|_| {
                let loss = model.loss(&x, &y);
                if inject && poison {
                    // 0·∞ = NaN in the forward pass: every gradient of w1 becomes NaN.
                    loss + (model.w1.value().sum(..) * 0.0) * f32::INFINITY
                } else {
                    loss
                }
            });
            let after: Vec<Vec<f32>> = model.params().iter().map(|p| p.value().to_vec()).collect();
            assert!(
                after.iter().flatten().all(|w| w.is_finite()),
                "a non-finite value reached a weight at step {step}"
            );
            if inject && poison {
                assert!(
                    !report.result.is_applied(),
                    "injected step {step} was applied"
                );
                assert_eq!(before, after, "skipped step {step} changed the weights");
            } else {
                last = report.loss;
            }
        }
        (last, trainer.skipped_steps())
    };
    let (clean, clean_skipped) = run(false);
    let (poisoned, skipped) = run(true);
    // Growth can still overshoot into an overflow now and then; those steps are skipped too.
    assert!(
        skipped >= injected as u64 && skipped - injected as u64 <= clean_skipped + 5,
        "{skipped} skipped, {injected} injected, {clean_skipped} without injection"
    );
    let rel = (poisoned - clean).abs() / clean;
    assert!(
        rel < 0.02,
        "final loss {poisoned} vs {clean} without injection ({:.2}%)",
        rel * 100.0
    );
}
