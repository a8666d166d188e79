//! The handwritten digits data set (`data/digits.csv.gz`): 1,797 images of 8×8 pixels with values 0..16,
//! one per line as 64 pixel values followed by the label.

use amp::prelude::*;
use std::error::Error;
use std::io::Read;

/// Where the data set lives in the repository.
pub const DEFAULT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz");

/// The data split as the examples use it: rows whose index % 4 == 3 are the test set (449 of 1,797);
/// pixels are scaled to [0, 1].
pub struct Digits {
    pub train_x: Tensor<f32>,
    pub train_y: Vec<i64>,
    pub test_x: Tensor<f32>,
    pub test_y: Tensor<i64>,
}

/// Reads and splits the data set; a missing or malformed file is an error naming the file and line.
pub fn load_digits(path: &str) -> Result<Digits, Box<dyn Error>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?)
        .read_to_string(&mut text)
        .map_err(|e| format!("{path}: {e}"))?;
    let (mut train_x, mut train_y, mut test_x, mut test_y) = (vec![], vec![], vec![], vec![]);
    for (row, line) in text.lines().enumerate() {
        let values: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{path}:{}: {e}", row + 1))?;
        if values.len() != 65 {
            return Err(format!(
                "{path}:{}: expected 64 pixels and a label, got {} values",
                row + 1,
                values.len()
            )
            .into());
        }
        let label = values[64];
        if !(0.0..=9.0).contains(&label) || label.fract() != 0.0 {
            return Err(format!("{path}:{}: the label {label} is not a digit 0-9", row + 1).into());
        }
        if let Some(p) = values[..64].iter().find(|p| !(0.0..=16.0).contains(*p)) {
            return Err(format!("{path}:{}: the pixel value {p} is outside 0-16", row + 1).into());
        }
        let (x, y) = if row % 4 == 3 {
            (&mut test_x, &mut test_y)
        } else {
            (&mut train_x, &mut train_y)
        };
        x.extend(values[..64].iter().map(|p| p / 16.0));
        y.push(label as i64);
    }
    if test_y.is_empty() {
        return Err(format!("{path}: fewer than 4 rows, so no test set").into());
    }
    Ok(Digits {
        train_x: Tensor::from_vec(train_x, [train_y.len(), 64]),
        test_x: Tensor::from_vec(test_x, [test_y.len(), 64]),
        test_y: Tensor::from_vec(test_y.clone(), [test_y.len()]),
        train_y,
    })
}
