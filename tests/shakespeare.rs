//! The `shakespeare` example's code, run in small: a tiny GPT learns from the real text in two modes, a
//! checkpointed run resumes bit-identically, a checkpoint of another model is refused, and so are
//! precision names that are wrong or unsupported.

#[path = "../examples/common/mod.rs"]
mod common;

use amp::train::Precision;
use amp::train::UpdateRounding;
use clap::Parser;
use common::gpt::GptConfig;
use common::gpt_train::{OptimizerOptions, RunSummary, TrainSettings, train, train_with};
use common::plot::{Chart, Reference, Series};
use common::shakespeare_cli::Args;
use common::text::{Corpus, SHAKESPEARE_PATH, unigram_entropy};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| Corpus::load(Path::new(SHAKESPEARE_PATH), 0.9, 64).unwrap())
}

fn tiny_model() -> GptConfig {
    GptConfig {
        vocab_size: corpus().vocab.len(),
        context: 32,
        width: 64,
        layers: 2,
        heads: 2,
    }
}

/// The example's settings, shrunk: a higher learning rate suits the tiny model and the short run.
fn tiny_settings(steps: u64) -> TrainSettings {
    let mut settings = Args::parse_from(["shakespeare"]).settings();
    settings.batch = 16;
    settings.steps = steps;
    settings.lr = 5e-3;
    settings.warmup = 3;
    settings.eval_every = 10;
    settings.eval_batches = 2;
    settings.progress = false;
    settings.quiet = true;
    settings
}

/// A file name in the system's temporary directory, unique to this process and test.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("amp-shakespeare-{}-{name}", std::process::id()))
}

fn run(precision: Precision, settings: &TrainSettings) -> RunSummary {
    train(precision, corpus(), tiny_model(), settings).unwrap()
}

/// 40 steps take the loss from about ln 76 = 4.33 (a uniform guess) to more than a nat below it and
/// below the unigram baseline (3.305 nats: the model uses context), in bf16-mixed and in 16-mixed (which
/// runs through the loss scaler). Measured (train / validation): bf16-mixed 2.98 / 3.16, 16-mixed
/// 2.93 / 3.07; over seeds 1-3 the validation loss is 2.85-2.91.
#[test]
fn a_tiny_gpt_learns_in_two_modes() {
    let uniform = (corpus().vocab.len() as f32).ln();
    assert_eq!(corpus().vocab.len(), 76);
    let unigram = unigram_entropy(&corpus().train) as f32;
    assert!((unigram - 3.305).abs() < 0.001, "unigram entropy {unigram}");
    for precision in [Precision::Bf16Mixed, Precision::F16Mixed] {
        let run = run(precision, &tiny_settings(40));
        let first = run.train_curve[0].1;
        assert!(
            (first - uniform).abs() < 0.3,
            "{precision}: first loss {first}"
        );
        assert!(
            run.final_train < first - 1.0 && run.final_valid < uniform - 1.0,
            "{precision}: loss {first} -> train {} / validation {}",
            run.final_train,
            run.final_valid
        );
        assert!(
            run.final_valid < unigram,
            "{precision}: validation {} above the unigram baseline {unigram}",
            run.final_valid
        );
        assert_eq!((run.first_step, run.last_step), (0, 40));
        assert_eq!(run.valid_curve.len(), 5); // steps 0, 10, 20, 30, 40
        // The scaler starts at 2^16, as PyTorch's, and backs off when a gradient overflows f16.
        assert_eq!(run.loss_scale.is_some(), precision == Precision::F16Mixed);
        assert!(
            run.skipped <= 3,
            "{precision}: {} steps skipped",
            run.skipped
        );
    }
}

/// A run stopped at step 8 with a checkpoint and resumed from it continues exactly as the run that was
/// never stopped: every training and validation loss is bit-identical (model, AdamW moments, loss
/// scaler, batch generator and step counter all come back).
#[test]
fn a_resumed_run_continues_bit_identically() {
    let path = temp_path("resume.safetensors");
    let mut settings = tiny_settings(12);
    settings.eval_every = 4;
    let uninterrupted = run(Precision::F16Mixed, &settings);

    // Stopped at an evaluation step, and between two (where the stopped run saves without adding a
    // point to the validation curve).
    for stop in [8, 6] {
        let mut first = settings.clone();
        first.stop_after = Some(stop);
        first.checkpoint = Some(path.clone());
        let stopped = run(Precision::F16Mixed, &first);
        assert_eq!(stopped.last_step, stop);

        let mut second = settings.clone();
        second.resume = Some(path.clone());
        let resumed = run(Precision::F16Mixed, &second);
        std::fs::remove_file(&path).unwrap();
        assert_eq!((resumed.first_step, resumed.last_step), (stop, 12));
        assert_eq!(
            resumed.train_curve, uninterrupted.train_curve,
            "stop {stop}"
        );
        assert_eq!(
            resumed.valid_curve, uninterrupted.valid_curve,
            "stop {stop}"
        );
        assert_eq!(resumed.loss_scale, uninterrupted.loss_scale);
    }
}

/// bf16-true with stochastic rounding or Kahan-compensated updates also resumes bit-identically: the
/// rounding counter and the compensation buffers are in the checkpoint.
#[test]
fn a_resumed_bf16_true_run_with_stochastic_or_kahan_rounding_continues_bit_identically() {
    for (label, rounding) in [
        ("stochastic", UpdateRounding::Stochastic { seed: 5 }),
        ("kahan", UpdateRounding::Kahan),
    ] {
        let path = temp_path(&format!("resume-{label}.safetensors"));
        let options = OptimizerOptions {
            rounding,
            ..OptimizerOptions::default()
        };
        let train = |settings: &TrainSettings| {
            train_with(
                Precision::Bf16True,
                corpus(),
                tiny_model(),
                settings,
                options,
            )
            .unwrap()
        };
        let mut settings = tiny_settings(10);
        settings.eval_every = 3;
        let uninterrupted = train(&settings);
        let mut first = settings.clone();
        first.stop_after = Some(6);
        first.checkpoint = Some(path.clone());
        train(&first);
        let mut second = settings.clone();
        second.resume = Some(path.clone());
        let resumed = train(&second);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(resumed.train_curve, uninterrupted.train_curve, "{label}");
        assert_eq!(resumed.valid_curve, uninterrupted.valid_curve, "{label}");
    }
}

/// A resumed run must keep the options that shape the rest of the run (here the learning rate and the
/// step count), and must have steps left to train; the errors say which options differ.
#[test]
fn a_resume_with_other_options_is_refused() {
    let path = temp_path("options.safetensors");
    let mut settings = tiny_settings(4);
    settings.eval_every = 2;
    settings.checkpoint = Some(path.clone());
    run(Precision::Bf16Mixed, &settings);

    let mut resume = tiny_settings(4);
    resume.eval_every = 2;
    resume.resume = Some(path.clone());
    resume.lr = 1e-3;
    let err = train(Precision::Bf16Mixed, corpus(), tiny_model(), &resume).unwrap_err();
    assert!(
        err.contains("--lr 0.005") && err.contains("--lr 0.001"),
        "{err}"
    );
    resume.lr = settings.lr;
    let err = train(Precision::Bf16Mixed, corpus(), tiny_model(), &resume).unwrap_err();
    assert!(
        err.contains("at step 4") && err.contains("--steps 4"),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
}

/// Bad numbers on the command line are one-line errors before anything runs.
#[test]
fn bad_training_options_are_refused() {
    for (change, expected) in [
        (
            &(|s: &mut TrainSettings| s.lr = f64::NAN) as &dyn Fn(&mut TrainSettings),
            "--lr",
        ),
        (&|s: &mut TrainSettings| s.lr = -1.0, "--lr"),
        (
            &|s: &mut TrainSettings| s.weight_decay = -0.1,
            "--weight-decay",
        ),
        (&|s: &mut TrainSettings| s.steps = 0, "--steps"),
        (
            &|s: &mut TrainSettings| s.stop_after = Some(0),
            "--stop-after",
        ),
    ] {
        let mut settings = tiny_settings(4);
        change(&mut settings);
        let err = train(Precision::Bf16Mixed, corpus(), tiny_model(), &settings).unwrap_err();
        assert!(err.contains(expected) && !err.contains('\n'), "{err}");
    }
    // Update rounding that a mode cannot use is refused, not ignored.
    for (precision, rounding) in [
        (Precision::F16True, UpdateRounding::Stochastic { seed: 0 }),
        (Precision::Bf16Mixed, UpdateRounding::Kahan),
    ] {
        let options = OptimizerOptions {
            rounding,
            ..OptimizerOptions::default()
        };
        let err = train_with(
            precision,
            corpus(),
            tiny_model(),
            &tiny_settings(4),
            options,
        )
        .unwrap_err();
        assert!(
            err.contains("--rounding") && err.contains(precision.name()),
            "{err}"
        );
    }
}

/// Resuming from a checkpoint of a wider model, of another mode, from a missing file or from a file
/// that is not a checkpoint is a one-line error that says why, not a panic.
#[test]
fn a_checkpoint_of_another_model_or_mode_is_refused() {
    let path = temp_path("other.safetensors");
    let mut settings = tiny_settings(2);
    settings.checkpoint = Some(path.clone());
    run(Precision::Bf16Mixed, &settings);

    let mut resume = tiny_settings(4);
    resume.resume = Some(path.clone());
    let wider = GptConfig {
        width: 96,
        ..tiny_model()
    };
    let err = train(Precision::Bf16Mixed, corpus(), wider, &resume).unwrap_err();
    assert!(
        err.contains("different model") && err.contains("width=64"),
        "{err}"
    );
    let err = train(Precision::F16Mixed, corpus(), tiny_model(), &resume).unwrap_err();
    assert!(err.contains("--precision bf16-mixed"), "{err}");
    std::fs::remove_file(&path).unwrap();

    resume.resume = Some(temp_path("missing.safetensors"));
    let err = train(Precision::Bf16Mixed, corpus(), tiny_model(), &resume).unwrap_err();
    assert!(err.starts_with("cannot resume from"), "{err}");
    assert!(!err.contains('\n'), "{err}");

    let garbage = temp_path("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    resume.resume = Some(garbage.clone());
    let err = train(Precision::Bf16Mixed, corpus(), tiny_model(), &resume).unwrap_err();
    std::fs::remove_file(&garbage).unwrap();
    assert!(err.contains("not a valid safetensors file"), "{err}");
}

/// Every mode name parses; a misspelled one is rejected by the command line with the allowed names, and
/// `64-true` (a known name amp cannot train in) is an error when the run starts.
#[test]
fn precision_names_are_checked() {
    for name in [
        "32-true",
        "bf16-mixed",
        "16-mixed",
        "bf16-true",
        "16-true",
        "bf16",
    ] {
        let args = Args::try_parse_from(["shakespeare", "--precision", name]).unwrap();
        assert_eq!(args.precisions(), [name.parse::<Precision>().unwrap()]);
    }
    let err = Args::try_parse_from(["shakespeare", "--precision", "fp16"]).unwrap_err();
    assert!(err.to_string().contains("\"bf16-mixed\""), "{err}");
    let err = train(
        Precision::F64True,
        corpus(),
        tiny_model(),
        &tiny_settings(1),
    )
    .unwrap_err();
    assert!(err.contains("use \"32-true\""), "{err}");
    let args = Args::try_parse_from(["shakespeare", "--compare"]).unwrap();
    assert_eq!(args.precisions().len(), 3);
    assert!(Args::try_parse_from(["shakespeare", "--compare", "--precision", "16-mixed"]).is_err());
}

/// A missing data file is an error naming the file.
#[test]
fn a_missing_text_is_an_error() {
    let err = Corpus::load(Path::new("no/such/file.txt"), 0.9, 64).unwrap_err();
    assert!(err.contains("no/such/file.txt"), "{err}");
}

/// The chart is one SVG document with a polyline per series, the legend's labels and the reference line.
#[test]
fn the_loss_chart_is_an_svg_with_every_series() {
    let chart = Chart {
        title: "loss".into(),
        x_label: "step".into(),
        y_label: "nats".into(),
        series: vec![
            Series {
                label: "train".into(),
                color: "#123456".into(),
                width: 1.5,
                dashed: false,
                markers: false,
                points: vec![(0.0, 4.3), (1.0, f64::NAN), (2.0, 2.5)],
            },
            Series {
                label: "a < b".into(),
                color: "red".into(),
                width: 1.5,
                dashed: true,
                markers: true,
                points: vec![(0.0, 4.0), (2.0, 2.7)],
            },
        ],
        references: vec![Reference {
            label: "unigram".into(),
            y: 3.3,
        }],
    };
    let svg = chart.to_svg();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert_eq!(svg.matches("<circle").count(), 2); // the markers of the second series
    assert!(svg.contains("a &lt; b") && svg.contains("unigram") && !svg.contains("NaN"));
}
