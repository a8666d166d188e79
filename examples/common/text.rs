//! A character-level corpus: the vocabulary (every distinct character of the text), the text encoded as
//! token ids and split into training and validation parts, random and fixed batches of windows, and the
//! unigram baseline a language model has to beat.

use amp::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// Where the Shakespeare text lives in the repository.
pub const SHAKESPEARE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/shakespeare.txt");

/// The characters of a text, each with an id (its rank in sorted order).
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

impl Vocab {
    /// The vocabulary of every distinct character in `text`.
    pub fn of(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        let ids = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        Vocab { chars, ids }
    }

    /// The number of distinct characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty (only for an empty text).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Every character, in id order.
    pub fn chars(&self) -> String {
        self.chars.iter().collect()
    }

    /// The ids of the characters of `text`; `None` if a character is not in the vocabulary.
    pub fn encode(&self, text: &str) -> Option<Vec<u32>> {
        text.chars().map(|c| self.ids.get(&c).copied()).collect()
    }

    /// The text of `ids` (ids outside the vocabulary become U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&i| self.chars.get(i as usize).copied().unwrap_or('\u{FFFD}'))
            .collect()
    }
}

/// A text split for training: the first `train_fraction` of its characters train, the rest validate.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// Every distinct character of the whole text.
    pub vocab: Vocab,
    /// The training part, as ids.
    pub train: Vec<u32>,
    /// The validation part, as ids.
    pub valid: Vec<u32>,
}

impl Corpus {
    /// Splits `text` at `train_fraction` of its characters. Fails (with a reason) on a text too short to
    /// give both parts at least `min_part` characters.
    pub fn from_text(text: &str, train_fraction: f64, min_part: usize) -> Result<Self, String> {
        let vocab = Vocab::of(text);
        let ids = vocab
            .encode(text)
            .expect("the vocabulary is built from this text");
        let cut = (ids.len() as f64 * train_fraction) as usize;
        if cut < min_part || ids.len() - cut < min_part {
            return Err(format!(
                "the text has {} characters; training and validation need at least {min_part} each",
                ids.len()
            ));
        }
        let valid = ids[cut..].to_vec();
        let mut train = ids;
        train.truncate(cut);
        Ok(Corpus {
            vocab,
            train,
            valid,
        })
    }

    /// Reads a UTF-8 text file and splits it as [`from_text`](Self::from_text); errors name the file.
    pub fn load(path: &Path, train_fraction: f64, min_part: usize) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_text(&text, train_fraction, min_part)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The entropy in nats of the character frequencies of `ids`: the loss of the best model that ignores
/// context. A language model that learned anything beats it.
pub fn unigram_entropy(ids: &[u32]) -> f64 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for &id in ids {
        *counts.entry(id).or_default() += 1;
    }
    let n = ids.len() as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// A batch of windows of the text: `inputs[b, i]` is followed in the text by `targets[b, i]`.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Token ids, `[batch, context]`.
    pub inputs: Tensor<i64>,
    /// The next token after each input, `[batch, context]`.
    pub targets: Tensor<i64>,
}

impl Batch {
    /// The batch on `device`.
    pub fn to_device(&self, device: Device) -> Result<Batch, String> {
        let moved = |t: &Tensor<i64>| t.to_device(device).map_err(|e| e.to_string());
        Ok(Batch {
            inputs: moved(&self.inputs)?,
            targets: moved(&self.targets)?,
        })
    }
}

/// The windows of `context + 1` tokens starting at `starts`, as a batch.
fn windows(ids: &[u32], starts: &[usize], context: usize) -> Batch {
    let mut inputs = Vec::with_capacity(starts.len() * context);
    let mut targets = Vec::with_capacity(starts.len() * context);
    for &s in starts {
        inputs.extend(ids[s..s + context].iter().map(|&t| i64::from(t)));
        targets.extend(ids[s + 1..s + context + 1].iter().map(|&t| i64::from(t)));
    }
    Batch {
        inputs: Tensor::from_vec(inputs, [starts.len(), context]),
        targets: Tensor::from_vec(targets, [starts.len(), context]),
    }
}

/// `batch` windows at uniformly random positions of `ids` (which must be longer than `context`).
pub fn random_batch(ids: &[u32], batch: usize, context: usize, rng: &mut Rng) -> Batch {
    let positions = (ids.len() - context) as u64;
    let starts: Vec<usize> = (0..batch).map(|_| rng.below(positions) as usize).collect();
    windows(ids, &starts, context)
}

/// `count` batches of windows spread evenly over all of `ids`: the same every time, so validation losses
/// of different steps and runs compare.
pub fn fixed_batches(ids: &[u32], count: usize, batch: usize, context: usize) -> Vec<Batch> {
    let n = count * batch;
    let last = ids.len() - context - 1;
    let starts: Vec<usize> = (0..n).map(|i| i * last / (n - 1).max(1)).collect();
    starts
        .chunks(batch)
        .map(|chunk| windows(ids, chunk, context))
        .collect()
}
