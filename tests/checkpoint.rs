//! Checkpoints: exact round trips, bit-identical resumption of a mixed-precision training run, and
//! corrupt or mismatched files rejected with the right error, leaving the model as it was.

use amp::nn::{Module, join_name};
use amp::train::{
    Adam, AdamConfig, Checkpoint, CheckpointError, GradScaler, Optimizer, OptimizerStateError,
    ScalerConfig, ScalerError, Schedule, Sgd, SgdConfig, StepResult,
};
use amp::{Param, Rng, Tensor, f16};
use std::path::{Path, PathBuf};

/// A two-layer MLP over plain tensor ops; the first product runs in f16 from the cast cache.
struct Mlp {
    w1: Param,
    b1: Param,
    w2: Param,
    b2: Param,
}

impl Mlp {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut p =
            |shape: &[usize]| Param::new(&Tensor::<f32>::randn(shape.to_vec(), &mut rng) * 0.5);
        let mlp = Mlp {
            w1: p(&[4, 8]),
            b1: p(&[8]),
            w2: p(&[8, 3]),
            b2: p(&[3]),
        };
        mlp.name_params();
        mlp
    }

    fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let h = x.to_f16().matmul(&self.w1.get::<f16>()).to_f32() + &self.b1;
        h.relu().matmul(&self.w2.value()) + &self.b2
    }

    /// Every parameter's bits.
    fn values(&self) -> Vec<Vec<u32>> {
        self.params().iter().map(|p| bits(&p.value())).collect()
    }

    /// Every parameter's bits and version, to show that nothing changed.
    fn snapshot(&self) -> (Vec<Vec<u32>>, Vec<u64>) {
        (
            self.values(),
            self.params().iter().map(Param::version).collect(),
        )
    }
}

impl Module for Mlp {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Param)) {
        f(join_name(prefix, "fc1.weight"), &self.w1);
        f(join_name(prefix, "fc1.bias"), &self.b1);
        f(join_name(prefix, "fc2.weight"), &self.w2);
        f(join_name(prefix, "fc2.bias"), &self.b2);
    }
}

/// A model with a different layout, for mismatch tests.
struct Params(Vec<(&'static str, Param)>);

impl Module for Params {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Param)) {
        self.0.iter().for_each(|(n, p)| f(join_name(prefix, n), p));
    }
}

fn bits(t: &Tensor<f32>) -> Vec<u32> {
    t.to_vec().iter().map(|v| v.to_bits()).collect()
}

/// The optimizer's state as comparable bits.
fn opt_bits(opt: &dyn Optimizer) -> (String, u64, Vec<(String, Vec<u32>)>) {
    let s = opt.state();
    (
        s.kind,
        s.steps,
        s.tensors
            .iter()
            .map(|(n, t)| (n.clone(), bits(t)))
            .collect(),
    )
}

/// A fresh directory under the target's temporary folder.
fn dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("checkpoint")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Steps whose loss is multiplied by NaN, forcing a skipped step and a backoff.
const NAN_STEPS: [u64; 2] = [7, 22];

/// Trains `steps` on batches drawn from `data`; returns what each step did.
fn train<O: Optimizer>(
    model: &Mlp,
    opt: &mut O,
    scaler: &mut GradScaler,
    data: &mut Rng,
    steps: std::ops::RangeInclusive<u64>,
) -> Vec<StepResult> {
    let mut results = Vec::new();
    for step in steps {
        let x = Tensor::<f32>::randn([16, 4], data);
        let labels = Tensor::<i64>::from_vec((0..16).map(|_| data.below(3) as i64).collect(), [16]);
        let mut loss = model.forward(&x).cross_entropy(&labels);
        if NAN_STEPS.contains(&step) {
            loss = &loss * f64::NAN;
        }
        let scaled = scaler.scale(&loss).backward();
        results.push(scaler.unscale(scaled).step(opt));
    }
    results
}

fn scaler_config() -> ScalerConfig {
    ScalerConfig {
        init_scale: 1024.0,
        growth_interval: 5,
        ..Default::default()
    }
}

/// Trains 30 steps in one go, and 15 + save + restore into fresh objects + 15; compares the results.
fn check_resume<O: Optimizer>(test: &str, make: impl Fn(&Mlp) -> O) {
    let path = dir(test).join("step15.safetensors");
    let (a, mut data_a) = (Mlp::new(1), Rng::new(42));
    let mut opt_a = make(&a);
    let mut scaler_a = GradScaler::with_config(scaler_config()).unwrap();
    let full = train(&a, &mut opt_a, &mut scaler_a, &mut data_a, 1..=30);

    let (b, mut data_b) = (Mlp::new(1), Rng::new(42));
    let mut opt_b = make(&b);
    let mut scaler_b = GradScaler::with_config(scaler_config()).unwrap();
    train(&b, &mut opt_b, &mut scaler_b, &mut data_b, 1..=15);
    let ckpt = Checkpoint::new()
        .model(&b)
        .optimizer(&opt_b)
        .scaler(&scaler_b)
        .rng("data", &data_b);
    ckpt.metadata("step", 15).save(&path).unwrap();
    drop((b, opt_b, scaler_b, data_b));

    // A fresh process: other initial weights, a default scaler, another seed; all restored.
    let (c, mut data_c, mut scaler_c) = (Mlp::new(2), Rng::new(0), GradScaler::new());
    let mut opt_c = make(&c);
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(loaded.metadata("step"), Some("15"));
    loaded
        .restore(
            &c,
            Some(&mut opt_c),
            Some(&mut scaler_c),
            &mut [("data", &mut data_c)],
        )
        .unwrap();
    let resumed = train(&c, &mut opt_c, &mut scaler_c, &mut data_c, 16..=30);

    assert_eq!(resumed, full[15..], "step results after the resume point");
    assert_eq!(a.values(), c.values(), "parameters after 30 steps");
    assert_eq!(scaler_a.state_dict(), scaler_c.state_dict());
    assert_eq!(opt_bits(&opt_a), opt_bits(&opt_c));
    assert_eq!(data_a.state(), data_c.state());
    // The run exercised the scaler on both sides of the resume point: skips, backoffs and growth.
    for (range, what) in [(0..15, "before"), (15..30, "after")] {
        let run = &full[range];
        assert!(
            run.iter().any(|r| !r.is_applied()),
            "no skipped step {what} the resume point"
        );
        assert!(
            run.iter().any(|r| r.scale_after() > r.scale_before()),
            "no growth {what}"
        );
    }
}

/// Adam with a dynamic scaler (growth every 5 steps, a NaN step on each side) resumes bit-identically.
#[test]
fn resume_with_adam_and_dynamic_scaler_is_bit_identical() {
    check_resume("resume_adam", |m| {
        Adam::new(m.params(), AdamConfig::adam(1e-2))
    });
}

/// SGD with momentum and a warmup schedule (which reads the restored step count) resumes bit-identically.
#[test]
fn resume_with_sgd_momentum_is_bit_identical() {
    let schedule = Schedule::LinearWarmup { warmup_steps: 20 };
    check_resume("resume_sgd", |m| {
        Sgd::new(
            m.params(),
            SgdConfig::new(0.1).momentum(0.9).schedule(schedule),
        )
    });
}

/// Every parameter, optimizer buffer, scaler field (floor, ceiling, hysteresis) and generator returns exactly.
#[test]
fn round_trip_restores_everything_exactly() {
    let path = dir("round_trip").join("ckpt.safetensors");
    let model = Mlp::new(3);
    let mut opt = Adam::new(model.params(), AdamConfig::adamw(1e-2, 0.01));
    let config = ScalerConfig {
        min_scale: Some(4.0),
        max_scale: Some(1e6),
        hysteresis: 2,
        ..scaler_config()
    };
    let mut scaler = GradScaler::with_config(config).unwrap();
    let mut data = Rng::new(5);
    train(&model, &mut opt, &mut scaler, &mut data, 1..=7); // step 7 is a NaN step: one overflow counted
    assert_eq!(scaler.state_dict().overflows_in_a_row, 1);
    data.normal(); // leaves a pending normal sample
    let other = Rng::new(6);
    Checkpoint::new()
        .model(&model)
        .optimizer(&opt)
        .scaler(&scaler)
        .rng("data", &data)
        .rng("other", &other)
        .metadata("precision", "16-mixed")
        .metadata("step", 7)
        .save(&path)
        .unwrap();

    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(
        loaded.param_names().collect::<Vec<_>>(),
        ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    );
    assert_eq!(
        bits(loaded.param("fc1.weight").unwrap()),
        bits(&model.w1.value())
    );
    assert_eq!(loaded.scaler_state(), Some(&scaler.state_dict()));
    assert_eq!(loaded.rng("data").unwrap().state(), data.state());
    assert!(data.state().1.is_some());
    assert_eq!(loaded.metadata("precision"), Some("16-mixed"));
    assert_eq!(
        loaded.all_metadata().len(),
        2,
        "amp's own entries are not user metadata"
    );

    let fresh = Mlp::new(4);
    let mut opt2 = Adam::new(fresh.params(), AdamConfig::adamw(1e-2, 0.01));
    let mut scaler2 = GradScaler::new();
    let (mut data2, mut other2) = (Rng::new(0), Rng::new(0));
    let versions: Vec<u64> = fresh.params().iter().map(Param::version).collect();
    let rngs = &mut [("data", &mut data2), ("other", &mut other2)];
    loaded
        .restore(&fresh, Some(&mut opt2), Some(&mut scaler2), rngs)
        .unwrap();
    assert_eq!(fresh.values(), model.values());
    assert!(
        fresh
            .params()
            .iter()
            .zip(versions)
            .all(|(p, v)| p.version() > v),
        "Param::set bumps versions"
    );
    assert_eq!(opt_bits(&opt2), opt_bits(&opt));
    assert_eq!(scaler2.state_dict(), scaler.state_dict());
    assert_eq!(
        (data2.state(), other2.state()),
        (data.state(), other.state())
    );

    // A disabled scaler (bf16) round-trips too, and only the model can be restored on its own.
    let disabled = Checkpoint::new()
        .model(&model)
        .scaler(&GradScaler::disabled())
        .to_bytes()
        .unwrap();
    let loaded = Checkpoint::from_bytes(&disabled).unwrap();
    assert_eq!(
        loaded.scaler_state(),
        Some(&GradScaler::disabled().state_dict())
    );
    let third = Mlp::new(5);
    loaded.restore_model(&third).unwrap();
    assert_eq!(bits(&third.w2.value()), bits(&model.w2.value()));
}

/// A small valid checkpoint of `Mlp::new(1)` with Adam, scaler and generator state.
fn sample_bytes() -> Vec<u8> {
    let model = Mlp::new(1);
    let mut opt = Adam::new(model.params(), AdamConfig::adam(1e-2));
    let mut scaler = GradScaler::with_config(scaler_config()).unwrap();
    let mut data = Rng::new(1);
    train(&model, &mut opt, &mut scaler, &mut data, 1..=2);
    Checkpoint::new()
        .model(&model)
        .optimizer(&opt)
        .scaler(&scaler)
        .rng("data", &data)
        .to_bytes()
        .unwrap()
}

/// Restores `bytes` into a fresh model, optimizer, scaler and generator, checking that an error
/// changed none of them. Returns the error.
fn restore_err(bytes: &[u8]) -> CheckpointError {
    let model = Mlp::new(9);
    let mut opt = Adam::new(model.params(), AdamConfig::adam(1e-2));
    let mut scaler = GradScaler::new();
    let mut data = Rng::new(9);
    let before = (
        model.snapshot(),
        opt_bits(&opt),
        scaler.state_dict(),
        data.state(),
    );
    let result = Checkpoint::from_bytes(bytes).and_then(|c| {
        c.restore(
            &model,
            Some(&mut opt),
            Some(&mut scaler),
            &mut [("data", &mut data)],
        )
    });
    let after = (
        model.snapshot(),
        opt_bits(&opt),
        scaler.state_dict(),
        data.state(),
    );
    assert_eq!(before, after, "a failed restore changed something");
    result.expect_err("the restore should fail")
}

/// Every truncation of a valid file, on disk and in memory, is a format error.
#[test]
fn truncated_files_are_format_errors() {
    let bytes = sample_bytes();
    for len in 0..bytes.len() {
        let err = restore_err(&bytes[..len]);
        assert!(
            matches!(err, CheckpointError::Format(_)),
            "cut at {len}: {err:?}"
        );
    }
    let path = dir("truncated").join("cut.safetensors");
    for len in [0, 7, 8, 100, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = Checkpoint::load(&path).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Format(_)),
            "cut at {len}: {err}"
        );
    }
    assert!(matches!(
        Checkpoint::load(path.with_extension("none")),
        Err(CheckpointError::Io { .. })
    ));
}

/// Garbage, a header length beyond the file or absurdly large, and a non-JSON header are format errors.
#[test]
fn garbage_and_bad_header_lengths_are_format_errors() {
    let mut rng = Rng::new(11);
    let garbage: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    let mut too_long = 1000u64.to_le_bytes().to_vec();
    too_long.extend(b"{}");
    let mut not_json = 8u64.to_le_bytes().to_vec();
    not_json.extend(b"not json");
    for (what, bytes) in [
        ("garbage", garbage),
        ("header longer than the file", too_long),
        ("huge header length", u64::MAX.to_le_bytes().to_vec()),
        ("non-JSON header", not_json),
    ] {
        let err = restore_err(&bytes);
        assert!(matches!(err, CheckpointError::Format(_)), "{what}: {err:?}");
    }
}

/// Flipping any byte of a valid file never panics; a file that still parses restores or is refused.
#[test]
fn any_single_byte_corruption_never_panics() {
    let bytes = sample_bytes();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x5A;
        let model = Mlp::new(9);
        let before = model.snapshot();
        if let Ok(Err(_)) | Err(_) = Checkpoint::from_bytes(&bad).map(|c| c.restore_model(&model)) {
            assert_eq!(model.snapshot(), before, "byte {i}");
        }
    }
}

/// A checkpoint of a model with a missing, an extra or a reshaped parameter is refused by name.
#[test]
fn mismatched_parameters_are_refused_by_name() {
    let m = Mlp::new(1);
    let p = |shape: &[usize]| Param::new(Tensor::zeros(shape.to_vec()));
    let without_bias = Params(vec![
        ("fc1.weight", m.w1.clone()),
        ("fc2.weight", m.w2.clone()),
        ("fc2.bias", m.b2.clone()),
    ]);
    let with_extra = Params(vec![
        ("fc1.weight", m.w1.clone()),
        ("fc1.bias", m.b1.clone()),
        ("fc2.weight", m.w2.clone()),
        ("fc2.bias", m.b2.clone()),
        ("fc3.weight", p(&[3, 3])),
    ]);
    let reshaped = Params(vec![
        ("fc1.weight", p(&[8, 4])),
        ("fc1.bias", m.b1.clone()),
        ("fc2.weight", m.w2.clone()),
        ("fc2.bias", m.b2.clone()),
    ]);
    let model_only = |model: &dyn Module| Checkpoint::new().model(model).to_bytes().unwrap();
    let restore = |bytes: &[u8]| {
        let model = Mlp::new(9);
        let before = model.snapshot();
        let err = Checkpoint::from_bytes(bytes)
            .unwrap()
            .restore_model(&model)
            .unwrap_err();
        assert_eq!(model.snapshot(), before);
        err
    };
    let err = restore(&model_only(&without_bias));
    assert!(
        matches!(&err, CheckpointError::Missing(n) if n == "model.fc1.bias"),
        "{err}"
    );
    let err = restore(&model_only(&with_extra));
    assert!(
        matches!(&err, CheckpointError::UnexpectedTensor(n) if n == "model.fc3.weight"),
        "{err}"
    );
    let err = restore(&model_only(&reshaped));
    let CheckpointError::Shape {
        name,
        expected,
        found,
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (name.as_str(), expected, found),
        ("model.fc1.weight", vec![4, 8], vec![8, 4])
    );
    assert!(matches!(
        Checkpoint::from_bytes(&model_only(&m))
            .unwrap()
            .check_model(&with_extra),
        Err(CheckpointError::Missing(_))
    ));
}

/// A safetensors file written by hand (as Python would write it): `(name, dtype, shape, bytes)`.
fn handmade(tensors: &[(&str, &str, &[usize], Vec<u8>)], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut header = Vec::new();
    if !metadata.is_empty() {
        let entries: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("\"{k}\":\"{v}\""))
            .collect();
        header.push(format!("\"__metadata__\":{{{}}}", entries.join(",")));
    }
    let mut offset = 0;
    for (name, dtype, shape, data) in tensors {
        let end = offset + data.len();
        header.push(format!("\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{offset},{end}]}}"));
        offset = end;
    }
    let header = format!("{{{}}}", header.join(","));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    tensors.iter().for_each(|t| bytes.extend(&t.3));
    bytes
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A parameter stored as F16 is refused with both dtypes named; the same file in F32 loads.
#[test]
fn wrong_dtype_is_refused() {
    let half: Vec<u8> = [1.0f32, 2.0]
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect();
    let model = Params(vec![("w", Param::new(Tensor::zeros([2])))]);
    let err =
        Checkpoint::from_bytes(&handmade(&[("model.w", "F16", &[2], half)], &[])).unwrap_err();
    let CheckpointError::DType {
        name,
        expected,
        found,
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (name.as_str(), expected.as_str(), found.as_str()),
        ("model.w", "F32", "F16")
    );
    let ok = Checkpoint::from_bytes(&handmade(
        &[("model.w", "F32", &[2], f32_bytes(&[1.0, 2.0]))],
        &[],
    ))
    .unwrap();
    ok.restore_model(&model).unwrap();
    assert_eq!(model.0[0].1.value().to_vec(), [1.0, 2.0]);
}

/// Optimizer state of another kind fails the whole restore; model, optimizer, scaler, rng all unchanged.
#[test]
fn optimizer_of_another_kind_fails_the_whole_restore() {
    let model = Mlp::new(9);
    let mut sgd = Sgd::new(model.params(), SgdConfig::new(0.1).momentum(0.9));
    let mut scaler = GradScaler::new();
    let mut data = Rng::new(9);
    let before = (
        model.snapshot(),
        opt_bits(&sgd),
        scaler.state_dict(),
        data.state(),
    );
    let loaded = Checkpoint::from_bytes(&sample_bytes()).unwrap();
    let err = loaded
        .restore(
            &model,
            Some(&mut sgd),
            Some(&mut scaler),
            &mut [("data", &mut data)],
        )
        .unwrap_err();
    let expected = OptimizerStateError::Kind {
        saved: "adam".into(),
        this: "sgd",
    };
    assert!(
        matches!(&err, CheckpointError::Optimizer(e) if *e == expected),
        "{err}"
    );
    assert_eq!(
        before,
        (
            model.snapshot(),
            opt_bits(&sgd),
            scaler.state_dict(),
            data.state()
        )
    );
}

/// A disabled scaler given a dynamic state, a missing generator or a missing optimizer section fail
/// the restore before anything changes.
#[test]
fn missing_or_incompatible_parts_fail_the_whole_restore() {
    let bytes = sample_bytes();
    let loaded = Checkpoint::from_bytes(&bytes).unwrap();
    let model = Mlp::new(9);
    let mut opt = Adam::new(model.params(), AdamConfig::adam(1e-2));
    let before = (model.snapshot(), opt_bits(&opt));
    let mut disabled = GradScaler::disabled();
    let err = loaded
        .restore(&model, Some(&mut opt), Some(&mut disabled), &mut [])
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::Scaler(ScalerError::Mismatch { .. })),
        "{err}"
    );
    let err = loaded
        .restore(
            &model,
            Some(&mut opt),
            None,
            &mut [("dropout", &mut Rng::new(0))],
        )
        .unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Missing(n) if n == "rng.dropout"),
        "{err}"
    );
    let model_only =
        Checkpoint::from_bytes(&Checkpoint::new().model(&model).to_bytes().unwrap()).unwrap();
    let err = model_only
        .restore(&model, Some(&mut opt), None, &mut [])
        .unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Missing(n) if n == "amp.optimizer.kind"),
        "{err}"
    );
    let err = model_only
        .restore(&model, None, Some(&mut GradScaler::new()), &mut [])
        .unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Missing(n) if n == "scaler.scale"),
        "{err}"
    );
    assert_eq!(before, (model.snapshot(), opt_bits(&opt)));
}

/// Out-of-range scaler and generator values, unknown tensors and bad metadata are refused when read.
#[test]
fn invalid_values_and_metadata_are_refused_when_read() {
    let i64_bytes = |v: i64| v.to_le_bytes().to_vec();
    let scaler = |growth: f32, interval: i64, enabled: u8| {
        let f = |v: f32| f32_bytes(&[v]);
        vec![
            ("scaler.scale", "F32", &[1usize][..], f(1024.0)),
            ("scaler.growth_factor", "F32", &[1], f(growth)),
            ("scaler.backoff_factor", "F32", &[1], f(0.5)),
            ("scaler.growth_interval", "I64", &[1], i64_bytes(interval)),
            ("scaler._growth_tracker", "I64", &[1], i64_bytes(0)),
            ("scaler.enabled", "BOOL", &[1], vec![enabled]),
            ("scaler.min_scale", "F32", &[0], vec![]),
            ("scaler.max_scale", "F32", &[1], f(4096.0)),
            ("scaler.hysteresis", "I64", &[1], i64_bytes(1)),
            ("scaler.overflows_in_a_row", "I64", &[1], i64_bytes(0)),
        ]
    };
    let read = |tensors: &[(&str, &str, &[usize], Vec<u8>)], meta: &[(&str, &str)]| {
        Checkpoint::from_bytes(&handmade(tensors, meta))
    };
    let state = read(&scaler(2.0, 5, 1), &[])
        .unwrap()
        .scaler_state()
        .copied()
        .unwrap();
    assert_eq!(
        (state.growth_interval, state.min_scale, state.max_scale),
        (5, None, Some(4096.0))
    );

    let err = read(&scaler(0.5, 5, 1), &[]).unwrap_err();
    assert!(
        matches!(err, CheckpointError::Scaler(ScalerError::GrowthFactor(_))),
        "{err}"
    );
    let err = read(&scaler(2.0, -1, 1), &[]).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Invalid { name, .. } if name == "scaler.growth_interval"),
        "{err}"
    );
    let err = read(&scaler(2.0, 5, 2), &[]).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Invalid { name, .. } if name == "scaler.enabled"),
        "{err}"
    );
    let err = read(&scaler(2.0, 5, 1)[1..], &[]).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Missing(n) if n == "scaler.scale"),
        "{err}"
    );

    let rng = |flag: u64| {
        [1u64, 2, 3, 4, flag, 0]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    assert!(
        read(&[("rng.data", "U64", &[6], rng(0))], &[])
            .unwrap()
            .rng("data")
            .is_some()
    );
    let err = read(&[("rng.data", "U64", &[6], rng(2))], &[]).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Invalid { name, .. } if name == "rng.data"),
        "{err}"
    );
    let err = read(&[("rng.data", "U64", &[5], rng(0)[..40].to_vec())], &[]).unwrap_err();
    assert!(matches!(err, CheckpointError::Shape { .. }), "{err}");

    let w = || ("model.w", "F32", &[1usize][..], f32_bytes(&[1.0]));
    let err = read(&[w(), ("weights.w", "F32", &[1], f32_bytes(&[1.0]))], &[]).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::UnexpectedTensor(n) if n == "weights.w"),
        "{err}"
    );
    let err = read(&[w()], &[("amp.format_version", "2")]).unwrap_err();
    assert!(matches!(err, CheckpointError::Metadata { .. }), "{err}");
    let err = read(
        &[w()],
        &[
            ("amp.optimizer.kind", "adam"),
            ("amp.optimizer.steps", "-3"),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Metadata { key, .. } if key == "amp.optimizer.steps"),
        "{err}"
    );
    let err = read(
        &[w(), ("optimizer.w.exp_avg", "F32", &[1], f32_bytes(&[0.0]))],
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Missing(n) if n == "amp.optimizer.kind"),
        "{err}"
    );
}

/// Reserved metadata keys and duplicate names are refused at save, and no file is written.
#[test]
fn reserved_and_duplicate_names_are_refused_at_save() {
    let dir = dir("refused");
    let rng = Rng::new(0);
    let model = Mlp::new(1);
    let opt = Adam::new(model.params(), AdamConfig::adam(1e-2));
    let cases = [
        Checkpoint::new().metadata("amp.step", 1),
        Checkpoint::new().metadata("step", 1).metadata("step", 2),
        Checkpoint::new().rng("data", &rng).rng("data", &rng),
        Checkpoint::new().model(&model).model(&model),
        Checkpoint::new().optimizer(&opt).optimizer(&opt),
    ];
    for (i, ckpt) in cases.iter().enumerate() {
        let err = ckpt.save(dir.join("c.safetensors")).unwrap_err();
        let expected = if i == 0 {
            matches!(err, CheckpointError::Metadata { .. })
        } else {
            matches!(err, CheckpointError::Duplicate(_))
        };
        assert!(expected, "case {i}: {err}");
    }
    assert!(entries(&dir).is_empty());
}

/// Saving over an existing checkpoint replaces it and leaves no temporary file behind.
#[test]
fn save_replaces_the_file_and_leaves_no_temporary_files() {
    let dir = dir("atomic");
    let path = dir.join("last.safetensors");
    let model = Mlp::new(1);
    Checkpoint::new()
        .model(&model)
        .metadata("step", 1)
        .save(&path)
        .unwrap();
    model.w1.set(Tensor::ones([4, 8]));
    Checkpoint::new()
        .model(&model)
        .metadata("step", 2)
        .save(&path)
        .unwrap();
    assert_eq!(entries(&dir), ["last.safetensors"]);
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(loaded.metadata("step"), Some("2"));
    assert_eq!(loaded.param("fc1.weight").unwrap().to_vec(), vec![1.0; 32]);
}

/// A failing save (missing directory, target is a directory) is an I/O error naming the path; the
/// last good checkpoint is untouched and no temporary file is left.
#[test]
fn failed_save_keeps_the_last_good_checkpoint() {
    let dir = dir("failed");
    let good = dir.join("good.safetensors");
    Checkpoint::new().model(&Mlp::new(1)).save(&good).unwrap();
    let good_bytes = std::fs::read(&good).unwrap();
    let ckpt = Checkpoint::new().model(&Mlp::new(2));

    let missing_dir = dir.join("no/such/dir/ckpt.safetensors");
    let err = ckpt.save(&missing_dir).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Io { path, .. } if path.starts_with(dir.join("no"))),
        "{err}"
    );

    let occupied = dir.join("occupied");
    std::fs::create_dir_all(occupied.join("inside")).unwrap();
    let err = ckpt.save(&occupied).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Io { path, .. } if *path == occupied),
        "{err}"
    );

    assert_eq!(entries(&dir), ["good.safetensors", "occupied"]);
    assert_eq!(std::fs::read(&good).unwrap(), good_bytes);
}

/// Rounding entries must name a parameter of the model and match its shape; a malformed name, a
/// compensation without its counter, or a wrong dtype is refused, and a failed restore changes nothing.
#[test]
fn rounding_entries_are_checked() {
    let model = Params(vec![("w", Param::new(Tensor::zeros([2])))]);
    let w = ("model.w", "F32", &[2][..], f32_bytes(&[1.0, 2.0]));
    let updates = |name: &'static str| (name, "U64", &[1][..], 7u64.to_le_bytes().to_vec());
    let restore = |tensors: &[(&str, &str, &[usize], Vec<u8>)]| {
        Checkpoint::from_bytes(&handmade(tensors, &[])).and_then(|c| c.restore_model(&model))
    };
    let err = restore(&[w.clone(), updates("rounding.v.updates")]).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::UnexpectedTensor(n) if n == "rounding.v.updates"),
        "{err}"
    );
    let err = restore(&[w.clone(), updates("rounding.w.counter")]).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::UnexpectedTensor(n) if n == "rounding.w.counter"),
        "{err}"
    );
    let compensation = (
        "rounding.w.compensation",
        "F32",
        &[3][..],
        f32_bytes(&[0.0; 3]),
    );
    let err = restore(&[
        w.clone(),
        updates("rounding.w.updates"),
        compensation.clone(),
    ])
    .unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Shape { name, .. } if name == "rounding.w.compensation"),
        "{err}"
    );
    let err = restore(&[w.clone(), compensation]).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Missing(n) if n == "rounding.w.updates"),
        "{err}"
    );
    let wrong = ("rounding.w.updates", "F32", &[1][..], f32_bytes(&[7.0]));
    assert!(matches!(
        restore(&[w.clone(), wrong]),
        Err(CheckpointError::DType { .. })
    ));
    assert_eq!(
        model.0[0].1.value().to_vec(),
        [0.0, 0.0],
        "nothing restored"
    );
    restore(&[w, updates("rounding.w.updates")]).unwrap();
    assert_eq!(model.0[0].1.value().to_vec(), [1.0, 2.0]);
}
