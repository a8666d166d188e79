//! The digits example's training loop, run briefly: it must learn (loss far below chance, accuracy far
//! above 10%) under the f32, bf16 and f16 policies.

#[path = "../examples/common/mod.rs"]
mod common;

use amp::policy::{Bf16, F16, F32};
use common::digits::load_digits;
use common::mlp::train;

/// Eight epochs of SGD bring the loss from ln 10 ≈ 2.30 to well below 1 under every policy.
#[test]
fn digits_mlp_learns_in_f32_and_bf16_mixed() {
    let data =
        load_digits(common::digits::DEFAULT_PATH).expect("data/digits.csv.gz is in the repository");
    assert_eq!((data.train_y.len(), data.test_y.numel()), (1348, 449));
    let chance = 10f32.ln();
    for run in [train::<F32>, train::<Bf16>, train::<F16>] {
        let run = run(&data, 8, 0.2, 0);
        assert!(
            (run.first_loss - chance).abs() < 0.2,
            "first loss {} should be near chance {chance}",
            run.first_loss
        );
        assert!(
            run.final_loss < 0.6,
            "final loss {} after 8 epochs",
            run.final_loss
        );
        assert!(run.accuracy > 85.0, "test accuracy {}%", run.accuracy);
    }
}

/// A missing data file is an error that names the file, not a panic.
#[test]
fn missing_data_file_is_an_error() {
    let err = load_digits("no/such/digits.csv.gz")
        .err()
        .expect("loading a missing file fails");
    assert!(err.to_string().contains("no/such/digits.csv.gz"), "{err}");
}
