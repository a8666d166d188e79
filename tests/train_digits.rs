//! The digits example's training loop, run briefly: it must learn (loss far below chance, accuracy far
//! above 10%) in every precision mode.

#[path = "../examples/common/mod.rs"]
mod common;

use amp::train::Precision;
use common::digits::load_digits;
use common::mlp::{Config, train};

/// Three epochs of Adam (lr 0.01) bring the loss from ln 10 ≈ 2.30 to well below 1 in every precision
/// mode.
#[test]
fn digits_mlp_learns_in_every_mode() {
    let data =
        load_digits(common::digits::DEFAULT_PATH).expect("data/digits.csv.gz is in the repository");
    assert_eq!((data.train_y.len(), data.test_y.numel()), (1348, 449));
    let chance = 10f32.ln();
    let config = Config {
        epochs: 3,
        batch: 64,
        lr: 1e-2,
        seed: 0,
    };
    for precision in [
        Precision::F32True,
        Precision::Bf16Mixed,
        Precision::F16Mixed,
        Precision::Bf16True,
        Precision::F16True,
    ] {
        let run = train(&data, &[64, 64, 10], precision, config).expect("a supported mode");
        assert!(
            (run.first_loss - chance).abs() < 0.2,
            "{precision}: first loss {} should be near chance {chance}",
            run.first_loss
        );
        assert!(
            run.final_loss < 0.6,
            "{precision}: final loss {} after 3 epochs",
            run.final_loss
        );
        assert!(
            run.accuracy > 85.0,
            "{precision}: test accuracy {}%",
            run.accuracy
        );
    }
}

/// Asking for "64-true" is an error that lists the modes, not a panic.
#[test]
fn unsupported_mode_is_an_error() {
    let data = load_digits(common::digits::DEFAULT_PATH).expect("data in the repository");
    let config = Config {
        epochs: 1,
        batch: 64,
        lr: 1e-3,
        seed: 0,
    };
    let err = train(&data, &[64, 10], Precision::F64True, config)
        .err()
        .expect("64-true is not supported");
    assert!(err.to_string().contains("64-true"), "{err}");
}

/// A missing data file is an error that names the file, not a panic.
#[test]
fn missing_data_file_is_an_error() {
    let err = load_digits("no/such/digits.csv.gz")
        .err()
        .expect("loading a missing file fails");
    assert!(err.to_string().contains("no/such/digits.csv.gz"), "{err}");
}

/// Rows with a label that is not a digit, a pixel outside 0-16, or a file too short to have a test set
/// are errors naming the file and the line.
#[test]
fn malformed_data_is_an_error() {
    use std::io::Write;
    let pixels = vec!["3"; 64].join(",");
    let cases = [
        (format!("{pixels},12\n"), ":1: the label 12"),
        (format!("{pixels},-1\n"), ":1: the label -1"),
        (
            format!("{pixels},1\n{},2\n", vec!["17"; 64].join(",")),
            ":2: the pixel value 17",
        ),
        (format!("{pixels},1\n"), "no test set"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path =
            std::env::temp_dir().join(format!("amp-digits-{}-{i}.csv.gz", std::process::id()));
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap();
        let err = load_digits(path.to_str().unwrap())
            .err()
            .map(|e| e.to_string());
        std::fs::remove_file(&path).unwrap();
        let err = err.expect("malformed data is refused");
        assert!(err.contains(expected), "{err}");
    }
}
