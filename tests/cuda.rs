//! The CUDA backend against the CPU: every op with a device kernel on random inputs of odd shapes, in
//! every float type, forward and backward; the loss scaler's skip; a model trained a few steps on both.
//! They need a GPU (`cargo test --features cuda -- --ignored`, or `scripts/gpu-check.sh`); what runs
//! without one is in `kernels/tests/cuda_build.rs` and the no-device test at the end.
#![cfg(feature = "cuda")]

#[path = "../examples/common/mod.rs"]
mod common;

use amp::prelude::*;
use amp::train::Precision;
use amp::{DeviceError, Element};
use common::digits::load_digits;
use common::mlp::{Config, Options, train_with};

fn gpu() -> Device {
    Device::cuda(0).unwrap_or_else(|e| panic!("these tests need a CUDA device: {e}"))
}

fn on<E: Element>(t: &Tensor<E>, device: Device) -> Tensor<E> {
    t.to_device(device).expect("copy to the device")
}

/// The tolerance of each type's result, relative to the largest magnitude (f32 ~1e-5, f16 ~1e-3,
/// bf16 ~1e-2; the two devices sum in different orders, so both may differ from the exact value).
fn tolerance<E: Element>() -> f64 {
    match E::DTYPE {
        DType::F64 => 1e-12,
        DType::F32 => 2e-5,
        DType::F16 => 2e-3,
        _ => 1.6e-2,
    }
}

#[track_caller]
fn assert_close<E: Float>(what: &str, cpu: &Tensor<E>, cuda: &Tensor<E>) {
    assert_eq!(cuda.device(), gpu(), "{what}: result left the device");
    assert_eq!(cpu.shape(), cuda.shape(), "{what}: shapes differ");
    let (a, b) = (cpu.to_vec(), cuda.to_vec());
    let scale = a.iter().map(|v| v.to_f64().abs()).fold(1e-30, f64::max);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let (x, y) = (x.to_f64(), y.to_f64());
        let same_special = (x.is_nan() && y.is_nan()) || x == y;
        assert!(
            same_special || (x - y).abs() <= tolerance::<E>() * scale.max(x.abs()),
            "{what} ({}): element {i} is {y} on the GPU and {x} on the CPU",
            E::DTYPE
        );
    }
}

/// Runs `f` on CPU inputs and on copies of them on the GPU and compares the results.
fn check<E: Float>(what: &str, inputs: &[Tensor<E>], f: impl Fn(&[Tensor<E>]) -> Tensor<E>) {
    let on_gpu: Vec<Tensor<E>> = inputs.iter().map(|t| on(t, gpu())).collect();
    assert_close(what, &f(inputs), &f(&on_gpu));
}

type UnaryOp<E> = fn(&Tensor<E>) -> Tensor<E>;

fn ops_match_the_cpu<E: Float>() {
    let mut rng = Rng::new(11);
    let x = Tensor::<f32>::randn([7, 33, 17], &mut rng).cast::<E>();
    let y = Tensor::<f32>::randn([33, 1], &mut rng).cast::<E>();
    let positive = Tensor::<f32>::rand([7, 33, 17], &mut rng).cast::<E>();
    let unary: [(&str, UnaryOp<E>); 14] = [
        ("neg", |t| t.neg()),
        ("abs", |t| t.abs()),
        ("exp", |t| t.exp()),
        ("tanh", |t| t.tanh()),
        ("sigmoid", |t| t.sigmoid()),
        ("relu", |t| t.relu()),
        ("gelu", |t| t.gelu()),
        ("silu", |t| t.silu()),
        ("softplus", |t| t.softplus()),
        ("square", |t| t.square()),
        ("add 1.5", |t| t + 1.5),
        ("mul -2", |t| t * -2.0),
        ("clamp", |t| t.clamp(-0.5, 0.7)),
        ("softmax", |t| t.softmax(-1)),
    ];
    for (name, f) in unary {
        check(name, std::slice::from_ref(&x), |t| f(&t[0]));
    }
    check("sqrt, log, rsqrt", std::slice::from_ref(&positive), |t| {
        t[0].sqrt() + t[0].log() + t[0].rsqrt()
    });
    check("broadcast arithmetic", &[x.clone(), y.clone()], |t| {
        (&t[0] + &t[1]) * &t[0] - &t[1] / (t[0].abs() + 1.0)
    });
    check("maximum, where", &[x.clone(), y.clone()], |t| {
        t[0].maximum(&t[1])
            .where_(&t[0].gt(&t[1]), &t[1].broadcast_to(t[0].shape()))
    });
    check("sum, mean, max, min", std::slice::from_ref(&x), |t| {
        let a = t[0].sum(1).reshape([7, 1, 17]);
        let b = t[0].mean(&[0, 2][..]).reshape([1, 33, 1]);
        &a + &b + t[0].max(-1).reshape([7, 33, 1]) - t[0].min(0)
    });
    check(
        "log_softmax dim 0, layer_norm, rms_norm",
        std::slice::from_ref(&x),
        |t| {
            t[0].log_softmax(0)
                + t[0].layer_norm(&[17], None, None, 1e-5)
                + t[0].rms_norm(&[17], None, 1e-5)
        },
    );
    check("permute, narrow, cat", std::slice::from_ref(&x), |t| {
        let p = t[0].permute(&[2, 0, 1]).narrow(1, 2, 3);
        Tensor::cat(&[&p, &p.narrow(2, 0, 5)], 2)
    });
    let a = Tensor::<f32>::randn([3, 31, 100], &mut rng).cast::<E>();
    let b = Tensor::<f32>::randn([100, 15], &mut rng).cast::<E>();
    let c = Tensor::<f32>::randn([3, 15, 257], &mut rng).cast::<E>();
    check("matmul, batched and broadcast", &[a, b, c], |t| {
        t[0].matmul(&t[1]).matmul(&t[2])
    });
}

/// An op of logits, targets and ids.
type IndexingOp<E> = dyn Fn(&Tensor<E>, &Tensor<i64>, &Tensor<i64>) -> Tensor<E>;

fn indexing_ops_match_the_cpu<E: Float>() {
    let mut rng = Rng::new(12);
    let logits = Tensor::<f32>::randn([37, 11], &mut rng).cast::<E>();
    let targets = Tensor::<i64>::from_vec((0..37).map(|i| (i * 7 % 11) as i64).collect(), [37]);
    let ids = Tensor::<i64>::from_vec((0..50).map(|i| (i * 13 % 37) as i64).collect(), [5, 10]);
    let on_gpu = |t: &Tensor<i64>| on(t, gpu());
    let (gt, gi) = (on_gpu(&targets), on_gpu(&ids));
    let both = |what: &str, f: &IndexingOp<E>| {
        let x = logits.with_grad();
        let gx = on(&logits, gpu()).with_grad();
        let (cpu, cuda) = (f(&x, &targets, &ids), f(&gx, &gt, &gi));
        assert_close(what, &cpu, &cuda);
        let probe = Tensor::<f32>::randn(cpu.shape(), &mut Rng::new(1)).cast::<E>();
        let cpu_grad = (&cpu * &probe).sum(..).backward().get(&x).unwrap();
        let cuda_grad = (&cuda * &on(&probe, gpu()))
            .sum(..)
            .backward()
            .get(&gx)
            .unwrap();
        assert_close(&format!("{what} (gradient)"), &cpu_grad, &cuda_grad);
    };
    both("cross_entropy", &|x, t, _| x.cross_entropy(t));
    both("embedding", &|x, _, ids| x.embedding(ids));
    both("gather, scatter_add", &|x, t, _| {
        let picked = x.gather(1, &t.reshape([37, 1]));
        x.scatter_add(1, &t.reshape([37, 1]), &picked)
    });
    both("index_add", &|x, _, ids| {
        let rows = ids.flatten().narrow(0, 0, 20);
        x.index_add(0, &rows, &x.index_select(0, &rows))
    });
    both("cumsum, logsumexp", &|x, _, _| {
        x.cumsum(1) + x.logsumexp_keepdim(1) + x.cumsum(0)
    });
    let cpu = logits.argmax(-1).to_vec();
    assert_eq!(cpu, on(&logits, gpu()).argmax(-1).to_vec(), "argmax");
    let q = Tensor::<f32>::randn([2, 3, 17, 8], &mut rng).cast::<E>();
    let k = Tensor::<f32>::randn([2, 3, 19, 8], &mut rng).cast::<E>();
    let v = Tensor::<f32>::randn([2, 3, 19, 6], &mut rng).cast::<E>();
    check("causal attention", &[q, k, v], |t| {
        t[0].attention(&t[1], &t[2], true)
    });
    let image = Tensor::<f32>::randn([3, 4, 11, 9], &mut rng).cast::<E>();
    let kernel = Tensor::<f32>::randn([5, 4, 3, 3], &mut rng).cast::<E>();
    check("conv2d", &[image, kernel], |t| {
        t[0].conv2d(&t[1], None, 2, 1)
    });
    let dropped = |device: Device| {
        logits
            .to_device(device)
            .unwrap()
            .dropout(0.3, &mut Rng::new(2))
    };
    assert_close("dropout", &dropped(Device::Cpu), &dropped(gpu()));
}

#[test]
#[ignore = "needs a CUDA device"]
fn indexing_losses_attention_and_conv_match_the_cpu() {
    indexing_ops_match_the_cpu::<f32>();
    indexing_ops_match_the_cpu::<bf16>();
    indexing_ops_match_the_cpu::<f16>();
}

/// The digits MLP (Adam, cross-entropy, GELU, the scaler in 16-mixed) trained two epochs on each device:
/// the same first loss, final losses within the modes' tolerance, accuracies within two points.
#[test]
#[ignore = "needs a CUDA device"]
fn digits_training_matches_the_cpu_run() {
    let data = load_digits(common::digits::DEFAULT_PATH).expect("data in the repository");
    let config = Config {
        epochs: 2,
        batch: 64,
        lr: 1e-2,
        seed: 0,
    };
    for (precision, tolerance) in [
        (Precision::F32True, 1e-3),
        (Precision::Bf16Mixed, 3e-2),
        (Precision::F16Mixed, 1e-2),
    ] {
        let run = |device| {
            let options = Options {
                device,
                ..Options::default()
            };
            train_with(&data, &[64, 64, 10], precision, config, options).expect("a supported mode")
        };
        let (cpu, cuda) = (run(Device::Cpu), run(gpu()));
        assert!(
            (cpu.first_loss - cuda.first_loss).abs() <= tolerance * cpu.first_loss,
            "{precision}: first loss {} on the CPU, {} on the GPU",
            cpu.first_loss,
            cuda.first_loss
        );
        assert!(
            (cpu.final_loss - cuda.final_loss).abs() <= 10.0 * tolerance * cpu.final_loss,
            "{precision}: final loss {} on the CPU, {} on the GPU",
            cpu.final_loss,
            cuda.final_loss
        );
        assert!(
            (cpu.accuracy - cuda.accuracy).abs() <= 2.0,
            "{precision}: accuracy {}% on the CPU, {}% on the GPU",
            cpu.accuracy,
            cuda.accuracy
        );
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn ops_match_the_cpu_in_every_float_type() {
    ops_match_the_cpu::<f32>();
    ops_match_the_cpu::<f64>();
    ops_match_the_cpu::<bf16>();
    ops_match_the_cpu::<f16>();
}

#[test]
#[ignore = "needs a CUDA device"]
fn casts_are_bit_exact_with_the_cpu() {
    // Every bf16 and f16 pattern, and 2^20 spread f32 patterns (subnormals, NaN, infinities included).
    let f32s: Vec<f32> = (0..1u32 << 20)
        .map(|i| f32::from_bits(i.wrapping_mul(0x9E37_79B9) ^ (i << 12)))
        .collect();
    let x = Tensor::from_vec(f32s.clone(), [f32s.len()]);
    let g = on(&x, gpu());
    let same_bits = |a: Vec<u64>, b: Vec<u64>, what: &str| {
        let bad = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!(bad, 0, "{what}: {bad} of {} elements differ", a.len());
    };
    let nan_free = |v: &[f32]| v.iter().all(|x| !x.is_nan());
    assert!(!nan_free(&f32s));
    same_bits(
        x.to_bf16()
            .to_vec()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        g.to_bf16()
            .to_vec()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        "f32 -> bf16",
    );
    // f16 NaN payloads may differ (the device writes the canonical NaN); compare the non-NaN ones.
    let finite: Vec<f32> = f32s.iter().copied().filter(|v| !v.is_nan()).collect();
    let xf = Tensor::from_vec(finite.clone(), [finite.len()]);
    same_bits(
        xf.to_f16()
            .to_vec()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        on(&xf, gpu())
            .to_f16()
            .to_vec()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        "f32 -> f16",
    );
    let wide: Vec<f64> = finite.iter().map(|&v| v as f64 * (1.0 + 1e-9)).collect();
    let xd = Tensor::from_vec(wide.clone(), [wide.len()]);
    same_bits(
        xd.to_bf16()
            .to_vec()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        on(&xd, gpu())
            .to_bf16()
            .to_vec()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        "f64 -> bf16 (no double rounding)",
    );
    // Saturating, NaN to 0, truncating toward zero, as Rust's `as`.
    let specials = [
        f32::NAN,
        f32::INFINITY,
        -f32::INFINITY,
        3e19,
        -3e19,
        2.5,
        -2.5,
        1e-30,
    ];
    let specials = Tensor::from_vec(specials.to_vec(), [specials.len()]);
    assert_eq!(
        specials.cast::<i64>().to_vec(),
        on(&specials, gpu()).cast::<i64>().to_vec(),
        "f32 -> i64"
    );
}

#[track_caller]
fn grads_match<E: Float>(cpu: &Tensor<E>, cuda: &Tensor<E>, what: &str) {
    assert_close(what, cpu, cuda);
}

#[test]
#[ignore = "needs a CUDA device"]
fn gradients_match_the_cpu() {
    let mut rng = Rng::new(5);
    let x = Tensor::<f32>::randn([9, 65], &mut rng);
    let w = Tensor::<f32>::randn([33, 65], &mut rng);
    let run = |device: Device| {
        let (x, w) = (on(&x, device).with_grad(), on(&w, device).with_grad());
        let h = x
            .linear(&w, None)
            .gelu()
            .layer_norm(&[33], None, None, 1e-5);
        let loss = (h.softmax(-1) * h.tanh()).sum(..) + h.rms_norm(&[33], None, 1e-5).mean(..);
        let grads = loss.backward();
        (grads.get(&x).unwrap(), grads.get(&w).unwrap(), loss)
    };
    let (cx, cw, cl) = run(Device::Cpu);
    let (gx, gw, gl) = run(gpu());
    grads_match(&cl, &gl, "loss");
    grads_match(&cx, &gx, "d loss / d x");
    grads_match(&cw, &gw, "d loss / d w");
}

/// A small regression model written once with `#[autocast]`, trained on either device.
#[autocast(P)]
fn predict<P: Policy>(x: &Tensor<f32>, w1: &Param, w2: &Param) -> Tensor<f32> {
    let h = x.linear(w1, None).gelu();
    h.linear(w2, None).mse_loss(&x.narrow(1, 0, 4))
}

fn train<P: Policy>(device: Device, steps: usize) -> Vec<f32> {
    let mut rng = Rng::new(3);
    let x = on(&Tensor::<f32>::randn([64, 24], &mut rng), device);
    let w1 = Param::named("w1", Tensor::<f32>::randn([48, 24], &mut rng) * 0.2);
    let w2 = Param::named("w2", Tensor::<f32>::randn([4, 48], &mut rng) * 0.2);
    w1.to_device(device).unwrap();
    w2.to_device(device).unwrap();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let loss = predict::<P>(&x, &w1, &w2);
        losses.push(loss.item());
        let grads = loss.backward();
        for w in [&w1, &w2] {
            let g = grads
                .get(w)
                .unwrap()
                .to_device(Device::Cpu)
                .unwrap()
                .to_vec();
            w.update(|v| v.iter_mut().zip(&g).for_each(|(v, g)| *v -= 0.1 * g));
        }
    }
    losses
}

#[test]
#[ignore = "needs a CUDA device"]
fn training_steps_match_the_cpu_in_f32_and_bf16_mixed() {
    let (cpu, cuda) = (train::<F32>(Device::Cpu, 8), train::<F32>(gpu(), 8));
    for (a, b) in cpu.iter().zip(&cuda) {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs(),
            "f32 losses {cpu:?} vs {cuda:?}"
        );
    }
    let (cpu, cuda) = (train::<Bf16>(Device::Cpu, 8), train::<Bf16>(gpu(), 8));
    assert!(
        cuda.last() < cuda.first(),
        "the loss falls on the GPU: {cuda:?}"
    );
    for (a, b) in cpu.iter().zip(&cuda) {
        assert!(
            (a - b).abs() <= 2e-2 * a.abs(),
            "bf16-mixed losses {cpu:?} vs {cuda:?}"
        );
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn the_scaler_skips_a_step_with_an_infinite_gradient_on_the_device() {
    let w = Param::named("w", Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0], [3]));
    w.to_device(gpu()).unwrap();
    let mut scaler = amp::train::GradScaler::new();
    let scale = scaler.scale_factor() as f64;
    // A finite loss whose gradient overflows f32 once scaled: 1e35 · 65536 = inf.
    let loss = (w.get::<f32>() * 1e35).sum(..);
    let unscaled = scaler.unscale(scaler.scale(&loss).backward());
    assert!(
        unscaled.found_non_finite(),
        "scale {scale}: the overflow is found"
    );
    let w2 = Param::named("w2", Tensor::<f32>::from_vec(vec![1.0, 2.0], [2]));
    w2.to_device(gpu()).unwrap();
    let loss = (w2.get::<f32>() * 3.0).sum(..);
    let unscaled = scaler.unscale(scaler.scale(&loss).backward());
    assert!(!unscaled.found_non_finite());
    let g = unscaled.grads().get(&w2).unwrap();
    assert_eq!(g.device(), gpu());
    assert_eq!(g.to_vec(), vec![3.0, 3.0], "unscaled exactly");
}

/// The Shakespeare GPT (embeddings, causal attention, layer norm, AdamW with clipping and a schedule)
/// trained a few steps on each device: the same losses within the mode's tolerance.
#[test]
#[ignore = "needs a CUDA device"]
fn gpt_training_matches_the_cpu_run() {
    use clap::Parser;
    use common::gpt::GptConfig;
    use common::gpt_train::train;
    use common::shakespeare_cli::Args;
    use common::text::{Corpus, SHAKESPEARE_PATH};
    let corpus = Corpus::load(std::path::Path::new(SHAKESPEARE_PATH), 0.9, 33).unwrap();
    let config = GptConfig {
        vocab_size: corpus.vocab.len(),
        context: 32,
        width: 64,
        layers: 2,
        heads: 2,
    };
    for (precision, tolerance) in [(Precision::F32True, 1e-3), (Precision::Bf16Mixed, 2e-2)] {
        let run = |device| {
            let mut settings = Args::parse_from(["shakespeare"]).settings();
            (settings.batch, settings.steps, settings.warmup) = (8, 6, 2);
            (settings.eval_every, settings.eval_batches) = (3, 1);
            (settings.progress, settings.quiet, settings.device) = (false, true, device);
            train(precision, &corpus, config, &settings).unwrap()
        };
        let (cpu, cuda) = (run(Device::Cpu), run(gpu()));
        for ((step, a), (_, b)) in cpu.train_curve.iter().zip(&cuda.train_curve) {
            assert!(
                (a - b).abs() <= tolerance * a.abs() * (1.0 + *step as f32 / 3.0),
                "{precision}: step {step} loss {a} on the CPU, {b} on the GPU"
            );
        }
    }
}

/// AdamW on weights on the device (moments kept there, the fused kernel) against the CPU: the same
/// weights after a few steps, the same exported state, and a state loaded back continues identically.
#[test]
#[ignore = "needs a CUDA device"]
fn adamw_on_the_device_matches_the_cpu_and_its_state_round_trips() {
    use amp::train::{Adam, AdamConfig, Optimizer};
    let mut rng = Rng::new(8);
    let init = Tensor::<f32>::randn([33, 17], &mut rng);
    let x = Tensor::<f32>::randn([5, 17], &mut rng);
    let run = |device: Device, steps: usize| {
        let w = Param::named("w", init.clone());
        w.to_device(device).unwrap();
        let mut opt = Adam::new(vec![w.clone()], AdamConfig::adamw(1e-2, 0.1));
        let x = on(&x, device);
        for _ in 0..steps {
            let loss = x.linear(&w.get::<f32>(), None).tanh().sum(..);
            opt.step(&loss.backward());
        }
        (w, opt)
    };
    let (cpu_w, cpu_opt) = run(Device::Cpu, 3);
    let (gpu_w, gpu_opt) = run(gpu(), 3);
    assert_close(
        "weights after 3 AdamW steps",
        &cpu_w.value(),
        &gpu_w.value(),
    );
    let (cpu_state, gpu_state) = (cpu_opt.state(), gpu_opt.state());
    for ((name, a), (_, b)) in cpu_state.tensors.iter().zip(&gpu_state.tensors) {
        assert_close(name, a, &on(b, gpu()));
    }
    // A fresh optimizer loading the device run's state continues as the CPU run does.
    let w = Param::named("w", gpu_w.value());
    let mut resumed = Adam::new(vec![w.clone()], AdamConfig::adamw(1e-2, 0.1));
    resumed.load_state(&gpu_state).unwrap();
    let (cpu_w5, _) = run(Device::Cpu, 4);
    let loss = on(&x, gpu()).linear(&w.get::<f32>(), None).tanh().sum(..);
    resumed.step(&loss.backward());
    assert_close("weights after resuming", &cpu_w5.value(), &w.value());
}

/// SGD with Nesterov momentum on weights on the device (buffer kept there) against the CPU.
#[test]
#[ignore = "needs a CUDA device"]
fn sgd_on_the_device_matches_the_cpu() {
    use amp::train::{Optimizer, Sgd, SgdConfig};
    let mut rng = Rng::new(6);
    let init = Tensor::<f32>::randn([21, 13], &mut rng);
    let x = Tensor::<f32>::randn([4, 13], &mut rng);
    let run = |device: Device| {
        let w = Param::named("w", init.clone());
        w.to_device(device).unwrap();
        let config = SgdConfig::new(0.05)
            .momentum(0.9)
            .nesterov()
            .weight_decay(1e-3);
        let mut opt = Sgd::new(vec![w.clone()], config);
        let x = on(&x, device);
        for _ in 0..4 {
            let loss = x.linear(&w.get::<f32>(), None).sigmoid().sum(..);
            opt.step(&loss.backward());
        }
        (w.value(), opt.state())
    };
    let ((cpu_w, cpu_state), (gpu_w, gpu_state)) = (run(Device::Cpu), run(gpu()));
    assert_close("weights after 4 SGD steps", &cpu_w, &gpu_w);
    let (a, b) = (&cpu_state.tensors[0].1, &gpu_state.tensors[0].1);
    assert_close("momentum buffer", a, &on(b, gpu()));
}

/// Weights stored in bf16 or f16 on the device take AdamW's updates with each update rounding there (the
/// fused step, then the rounding kernel): the same weights as on the CPU, the same as runs that move
/// between host and device (so the rounding's counter and compensation carry over both ways), and not
/// those of round-to-nearest (so the mode took effect).
#[test]
#[ignore = "needs a CUDA device"]
fn update_roundings_on_the_device_match_the_cpu() {
    use amp::train::{Adam, AdamConfig, Optimizer, UpdateRounding};
    let mut rng = Rng::new(9);
    let init = Tensor::<f32>::randn([37, 11], &mut rng);
    let x = Tensor::<f32>::randn([6, 11], &mut rng);
    // Devices to train on, step by step.
    let run = |storage: DType, mode: UpdateRounding, devices: &[Device]| {
        let w = Param::named("w", init.clone());
        w.set_storage(storage);
        w.set_update_rounding(mode);
        // A small learning rate: most updates are below half a bf16 step, where the modes differ.
        let mut opt = Adam::new(vec![w.clone()], AdamConfig::adamw(2e-4, 0.0));
        for &device in devices {
            w.to_device(device).unwrap();
            let loss = on(&x, device).linear(&w.get::<f32>(), None).tanh().sum(..);
            opt.step(&loss.backward());
        }
        w.value().to_device(Device::Cpu).unwrap().to_vec()
    };
    // Elements that differ by more than one step of the storage type, and elements that differ at all.
    let differences = |a: &[f32], b: &[f32], step: f32| {
        let far = a
            .iter()
            .zip(b)
            .filter(|(x, y)| (*x - *y).abs() > step * x.abs().max(1e-3))
            .count();
        let any = a.iter().zip(b).filter(|(x, y)| x != y).count();
        (far, any)
    };
    let (cpu, g) = (Device::Cpu, gpu());
    for (storage, mode, step) in [
        (
            DType::BF16,
            UpdateRounding::Stochastic { seed: 7 },
            2f32.powi(-7),
        ),
        (DType::BF16, UpdateRounding::Kahan, 2f32.powi(-7)),
        (DType::F16, UpdateRounding::Kahan, 2f32.powi(-10)),
    ] {
        let what = format!("{storage} storage, {mode:?}");
        let on_cpu = run(storage, mode, &[cpu; 6]);
        let on_gpu = run(storage, mode, &[g; 6]);
        let moved = run(storage, mode, &[g, g, g, cpu, cpu, cpu]);
        let moved_back = run(storage, mode, &[cpu, cpu, g, g, cpu, g]);
        let nearest = run(storage, UpdateRounding::Nearest, &[cpu; 6]);
        let n = on_cpu.len();
        // The forward and backward passes differ in their last bits between CPU and GPU, which can tip
        // a rounding the other way: a few elements may differ by one step of the storage type.
        for (name, other) in [
            ("on the device", &on_gpu),
            ("moved to the CPU", &moved),
            ("moved back and forth", &moved_back),
        ] {
            let (far, any) = differences(&on_cpu, other, step);
            assert!(
                far == 0 && any * 20 <= n,
                "{what}: {name}, {far} of {n} weights differ from the CPU run by more than a step and \
                 {any} at all"
            );
        }
        let (_, changed) = differences(&on_cpu, &nearest, step);
        assert!(
            changed * 4 >= n,
            "{what}: only {changed} of {n} weights differ from round-to-nearest"
        );
    }
}

/// The 8-bit optimizers on weights on the device (states kept there, the fused kernels; a small bias keeps
/// f32 states, also there) against the CPU: close weights and codes after a few steps, and a state saved
/// from the device run continues on the CPU as the CPU run does.
#[test]
#[ignore = "needs a CUDA device"]
fn eight_bit_optimizers_on_the_device_match_the_cpu() {
    use amp::train::{Adam8bit, AdamConfig, Optimizer, OptimizerState, Sgd8bit, SgdConfig};
    let mut rng = Rng::new(12);
    // 4270 elements: 8-bit states with a partial last block. The bias stays below MIN_8BIT_SIZE.
    let (w0, b0) = (
        Tensor::<f32>::randn([70, 61], &mut rng),
        Tensor::<f32>::randn([70], &mut rng),
    );
    let x = Tensor::<f32>::randn([9, 61], &mut rng);
    type Make = fn(Vec<Param>) -> Box<dyn Optimizer>;
    let makers: [(&str, Make); 3] = [
        ("Adam8bit", |ps| {
            let config = AdamConfig {
                weight_decay: 1e-2,
                ..AdamConfig::adam(1e-2)
            };
            Box::new(Adam8bit::new(ps, config))
        }),
        ("AdamW8bit", |ps| {
            Box::new(Adam8bit::new(ps, AdamConfig::adamw(1e-2, 0.1)))
        }),
        ("Sgd8bit", |ps| {
            Box::new(Sgd8bit::new(ps, SgdConfig::new(0.05).momentum(0.9)))
        }),
    ];
    let step = |opt: &mut dyn Optimizer, w: &Param, b: &Param, device: Device| {
        let loss = on(&x, device)
            .linear(&w.get::<f32>(), Some(&b.get::<f32>()))
            .tanh()
            .sum(..);
        opt.step(&loss.backward());
    };
    let run = |make: Make, device: Device, steps: usize| -> (Vec<f32>, OptimizerState) {
        let (w, b) = (Param::named("w", w0.clone()), Param::named("b", b0.clone()));
        w.to_device(device).unwrap();
        b.to_device(device).unwrap();
        let mut opt = make(vec![w.clone(), b.clone()]);
        for _ in 0..steps {
            step(opt.as_mut(), &w, &b, device);
        }
        let mut values = w.value().to_device(Device::Cpu).unwrap().to_vec();
        values.extend(b.value().to_device(Device::Cpu).unwrap().to_vec());
        (values, opt.state())
    };
    for (name, make) in makers {
        let (cpu_w, cpu_state) = run(make, Device::Cpu, 4);
        let (gpu_w, gpu_state) = run(make, gpu(), 4);
        // Gradients differ in their last bits between CPU and GPU, which can move a state to the
        // neighbouring code: compare weights within a small tolerance and codes mostly equal.
        let scale = cpu_w.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (i, (a, b)) in cpu_w.iter().zip(&gpu_w).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "{name}: weight {i} is {b} on the device and {a} on the CPU"
            );
        }
        assert_eq!(
            cpu_state.bytes.len(),
            gpu_state.bytes.len(),
            "{name}: 8-bit states"
        );
        for ((key, a), (_, b)) in cpu_state.bytes.iter().zip(&gpu_state.bytes) {
            let same = a.data.iter().zip(&b.data).filter(|(x, y)| x == y).count();
            assert!(
                same * 100 >= 99 * a.data.len(),
                "{name}: {key}: {same} of {} codes agree",
                a.data.len()
            );
        }
        // The device run's state, loaded into a CPU optimizer, continues as the CPU run does.
        let (w, b) = (Param::named("w", w0.clone()), Param::named("b", b0.clone()));
        let mut resumed = make(vec![w.clone(), b.clone()]);
        let (gpu_w4, _) = run(make, gpu(), 4);
        w.set(Tensor::from_vec(gpu_w4[..w0.numel()].to_vec(), [70, 61]));
        b.set(Tensor::from_vec(gpu_w4[w0.numel()..].to_vec(), [70]));
        resumed.load_state(&gpu_state).unwrap();
        step(resumed.as_mut(), &w, &b, Device::Cpu);
        let (cpu_w5, _) = run(make, Device::Cpu, 5);
        let resumed_w = w.value().to_vec();
        for (i, (a, b)) in cpu_w5.iter().zip(&resumed_w).enumerate() {
            assert!(
                (a - b).abs() <= 2e-4 * scale,
                "{name}: after resuming on the CPU, weight {i} is {b}, and {a} in the CPU run"
            );
        }
    }
}

/// Runs everywhere: a device that is not there is an error naming it, and nothing panics.
#[test]
fn asking_for_a_missing_device_is_an_error() {
    let missing = Device::cuda_count() + 2;
    let err = Device::cuda(missing).expect_err("no such device");
    assert!(matches!(err, DeviceError::Cuda { device: Device::Cuda(n), .. } if n == missing));
    let x = Tensor::<f32>::ones([2]);
    let err = x
        .to_device(Device::Cuda(missing))
        .expect_err("no such device");
    assert!(
        err.to_string().starts_with(&format!("cuda:{missing}: ")),
        "{err}"
    );
    let w = Param::new(x.clone());
    assert!(w.to_device(Device::Cuda(missing)).is_err());
    assert_eq!(
        w.value().device(),
        Device::Cpu,
        "a failed move leaves the parameter where it was"
    );
}
