//! Training checkpoints in the [safetensors](https://github.com/huggingface/safetensors) format: model
//! parameters, optimizer state, loss-scaler state, random generators and free-form metadata in one file
//! that Python's `safetensors.numpy.load_file` reads as it is.
//!
//! A [`Checkpoint`] collects a snapshot and [`save`](Checkpoint::save)s it atomically (temporary file,
//! fsync, rename), so an interrupted save never destroys the last good checkpoint.
//! [`Checkpoint::load`] parses and checks the file without touching any model; the
//! [`LoadedCheckpoint`] it returns restores a model (and optimizer, scaler, generators) only after checking
//! everything, so a mismatched file leaves everything as it was.
//!
//! The format and an example are on [`Checkpoint`].

use super::optimizer::{ByteTensor, Optimizer, OptimizerState, OptimizerStateError};
use super::scaler::{GradScaler, ScalerConfig, ScalerError, ScalerState};
use crate::nn::Module;
use crate::param::Param;
use crate::rng::Rng;
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const VERSION: &str = "1";
const KEY_VERSION: &str = "amp.format_version";
const KEY_KIND: &str = "amp.optimizer.kind";
const KEY_STEPS: &str = "amp.optimizer.steps";
const RESERVED: &str = "amp.";

/// Why a checkpoint could not be saved, read or restored. Nothing was changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file the operation was on.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid safetensors file (truncated, garbage, inconsistent header).
    #[error("not a valid safetensors file: {0}")]
    Format(String),
    /// A tensor (or metadata entry) the operation needs is not in the checkpoint.
    #[error("the checkpoint has no `{0}`")]
    Missing(String),
    /// The checkpoint has a tensor that matches nothing (another model, or an unknown section).
    #[error("the checkpoint has a tensor `{0}` that matches nothing here")]
    UnexpectedTensor(String),
    /// A tensor has the wrong shape.
    #[error("`{name}` has shape {found:?} in the checkpoint, expected {expected:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// The shape needed.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
    },
    /// A tensor has the wrong element type (safetensors names: `F32`, `F16`, `I64`, ...).
    #[error("`{name}` is stored as {found}, expected {expected}")]
    DType {
        /// The tensor.
        name: String,
        /// The type needed.
        expected: String,
        /// The type in the checkpoint.
        found: String,
    },
    /// A tensor holds a value out of range (a negative interval, a flag that is not 0 or 1, ...).
    #[error("`{name}` holds an invalid value: {reason}")]
    Invalid {
        /// The tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A metadata entry is malformed, reserved, or of an unknown format version.
    #[error("metadata `{key}`: {reason}")]
    Metadata {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Two tensors or metadata entries of a checkpoint being saved have the same name.
    #[error("`{0}` is given twice")]
    Duplicate(String),
    /// The optimizer state does not fit the optimizer.
    #[error("optimizer state: {0}")]
    Optimizer(#[from] OptimizerStateError),
    /// The scaler state is invalid or does not fit the scaler.
    #[error("scaler state: {0}")]
    Scaler(#[from] ScalerError),
    /// A parameter's saved value could not be copied to the device its parameter is on.
    #[error("restoring onto a device: {0}")]
    Device(#[from] crate::DeviceError),
}

/// One tensor ready to write: dtype, shape and little-endian bytes.
#[derive(Clone)]
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Raw {
    fn f32(values: &[f32], shape: &[usize]) -> Raw {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Raw {
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            bytes,
        }
    }

    fn i64(value: u32) -> Raw {
        Raw {
            dtype: Dtype::I64,
            shape: vec![1],
            bytes: i64::from(value).to_le_bytes().to_vec(),
        }
    }

    fn u64s(values: &[u64]) -> Raw {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Raw {
            dtype: Dtype::U64,
            shape: vec![values.len()],
            bytes,
        }
    }
}

impl std::fmt::Debug for Raw {
    /// Type and shape only: the bytes of a model would drown everything else.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{:?}", self.dtype, self.shape)
    }
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// A snapshot of a training run in the [safetensors](https://github.com/huggingface/safetensors)
/// format, built with one method per part (each copies the values at the time of the call), then
/// [`save`](Self::save)d atomically. [`Checkpoint::load`] reads it back as a [`LoadedCheckpoint`], which
/// restores a model, optimizer, scaler and generators all together or not at all. Python reads the file
/// with `safetensors.numpy.load_file` or `safe_open`.
///
/// Optimizer buffers are keyed by parameter names, so name the parameters uniquely first
/// ([`Module::name_params`]); two buffers with one name make [`save`](Self::save) fail with
/// [`CheckpointError::Duplicate`].
///
/// # Format
///
/// | tensor                      | dtype | shape          | holds                                       |
/// |-----------------------------|-------|----------------|---------------------------------------------|
/// | `model.<param>`             | F32   | the parameter's| the f32 master weight, by dotted name       |
/// | `optimizer.<buffer>`        | F32   | the buffer's   | [`OptimizerState::tensors`]                 |
/// | `optimizer.<buffer>`        | U8    | the buffer's   | [`OptimizerState::bytes`] (8-bit codes)     |
/// | `scaler.scale`              | F32   | `[1]`          | PyTorch's `scale`                           |
/// | `scaler.growth_factor`      | F32   | `[1]`          | PyTorch's `growth_factor`                   |
/// | `scaler.backoff_factor`     | F32   | `[1]`          | PyTorch's `backoff_factor`                  |
/// | `scaler.growth_interval`    | I64   | `[1]`          | PyTorch's `growth_interval`                 |
/// | `scaler._growth_tracker`    | I64   | `[1]`          | PyTorch's `_growth_tracker`                 |
/// | `scaler.enabled`            | BOOL  | `[1]`          | dynamic (true) or disabled                  |
/// | `scaler.min_scale`          | F32   | `[0]` or `[1]` | the floor; empty for none                   |
/// | `scaler.max_scale`          | F32   | `[0]` or `[1]` | the ceiling; empty for none                 |
/// | `scaler.hysteresis`         | I64   | `[1]`          | non-finite steps in a row to back off       |
/// | `scaler.overflows_in_a_row` | I64   | `[1]`          | non-finite steps in a row so far            |
/// | `rng.<name>`                | U64   | `[6]`          | [`Rng::state`]: 4 words, pending flag, bits |
/// | `rounding.<name>.updates`   | U64   | `[1]`          | stochastic rounding's update counter        |
/// | `rounding.<name>.compensation` | F32 | parameter's  | Kahan compensation (exact in f32)           |
///
/// A generator's last two words are 1 and the pending normal sample's `f64` bits, or 0 and 0.
///
/// | `__metadata__` key    | value                                                           |
/// |-----------------------|-----------------------------------------------------------------|
/// | `amp.format_version`  | `"1"` (a file without it, say from Python, is read as `"1"`)    |
/// | `amp.optimizer.kind`  | [`OptimizerState::kind`], when the file has an optimizer state  |
/// | `amp.optimizer.steps` | [`OptimizerState::steps`], in decimal                           |
/// | any other key         | the user's [`metadata`](Self::metadata) (`amp.*` is reserved)   |
///
/// Every part is optional; the scaler's tensors come all together or not at all. Numbers are
/// little-endian, as safetensors requires. Any other tensor name makes the file invalid.
///
/// # Example
///
/// Save every other step of a training loop, then resume into freshly built objects:
///
/// ```
/// use amp_runtime::nn::{Linear, Module};
/// use amp_runtime::train::{Adam, AdamConfig, Checkpoint, GradScaler};
/// use amp_runtime::{Rng, Tensor};
///
/// # let dir = std::env::temp_dir().join(format!("amp-checkpoint-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("last.safetensors");
/// let model = Linear::new(4, 2, true, &mut Rng::new(1));
/// model.name_params(); // optimizer buffers are keyed by parameter names
/// let mut opt = Adam::new(model.params(), AdamConfig::adam(1e-3));
/// let mut scaler = GradScaler::new();
/// let mut data = Rng::new(0);
/// for step in 1..=4u64 {
///     let x = Tensor::<f32>::randn([8, 4], &mut data);
///     let loss = model.forward(&x).square().mean(..);
///     let scaled = scaler.scale(&loss).backward();
///     scaler.unscale(scaled).step(&mut opt);
///     if step % 2 == 0 {
///         Checkpoint::new()
///             .model(&model)
///             .optimizer(&opt)
///             .scaler(&scaler)
///             .rng("data", &data)
///             .metadata("step", step)
///             .save(&path)?;
///     }
/// }
///
/// // Later (another process): build the same objects, then restore all of them or none.
/// let model2 = Linear::new(4, 2, true, &mut Rng::new(99));
/// model2.name_params();
/// let mut opt2 = Adam::new(model2.params(), AdamConfig::adam(1e-3));
/// let mut scaler2 = GradScaler::new();
/// let mut data2 = Rng::new(99);
/// let ckpt = Checkpoint::load(&path)?;
/// ckpt.restore(&model2, Some(&mut opt2), Some(&mut scaler2), &mut [("data", &mut data2)])?;
/// let start: u64 = ckpt.metadata("step").unwrap().parse()?;
/// assert_eq!(start, 4);
/// assert_eq!(model2.weight.value().to_vec(), model.weight.value().to_vec());
/// assert_eq!(data2.next_u64(), data.next_u64());
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    tensors: Vec<(String, Raw)>,
    /// The user's entries.
    metadata: Vec<(String, String)>,
    /// Kind and steps of each optimizer state added (more than one is an error at save).
    optimizers: Vec<(String, u64)>,
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every parameter of `model` as `model.<dotted name>` (f32), and what a parameter's update
    /// rounding carries between steps (stochastic rounding's counter as `rounding.<name>.updates`, the
    /// Kahan compensation as `rounding.<name>.compensation`), so a resumed `-true` run rounds as the
    /// uninterrupted one would.
    pub fn model(mut self, model: &dyn Module) -> Self {
        for (name, p) in model.named_params() {
            let value = p.value();
            self.tensors.push((
                format!("model.{name}"),
                Raw::f32(&value.to_vec(), value.shape()),
            ));
            if let Some((updates, compensation)) = p.rounding_snapshot() {
                let key = format!("rounding.{name}");
                self.tensors
                    .push((format!("{key}.updates"), Raw::u64s(&[updates])));
                if let Some(c) = compensation {
                    self.tensors
                        .push((format!("{key}.compensation"), Raw::f32(&c, value.shape())));
                }
            }
        }
        self
    }

    /// Adds `optimizer`'s [`state`](Optimizer::state).
    pub fn optimizer(self, optimizer: &dyn Optimizer) -> Self {
        self.optimizer_state(&optimizer.state())
    }

    /// Adds an optimizer state: buffers as `optimizer.<name>`, kind and steps as metadata.
    pub fn optimizer_state(mut self, state: &OptimizerState) -> Self {
        self.optimizers.push((state.kind.clone(), state.steps));
        for (name, t) in &state.tensors {
            self.tensors.push((
                format!("optimizer.{name}"),
                Raw::f32(&t.to_vec(), t.shape()),
            ));
        }
        for (name, b) in &state.bytes {
            let raw = Raw {
                dtype: Dtype::U8,
                shape: b.shape.clone(),
                bytes: b.data.clone(),
            };
            self.tensors.push((format!("optimizer.{name}"), raw));
        }
        self
    }

    /// Adds `scaler`'s [`state_dict`](GradScaler::state_dict).
    pub fn scaler(self, scaler: &GradScaler) -> Self {
        self.scaler_state(&scaler.state_dict())
    }

    /// Adds a scaler state as the `scaler.*` tensors.
    pub fn scaler_state(mut self, s: &ScalerState) -> Self {
        let one = |v: f32| Raw::f32(&[v], &[1]);
        let optional = |v: Option<f32>| v.map_or_else(|| Raw::f32(&[], &[0]), one);
        let bool = Raw {
            dtype: Dtype::BOOL,
            shape: vec![1],
            bytes: vec![u8::from(s.enabled)],
        };
        let entries = [
            ("scale", one(s.scale)),
            ("growth_factor", one(s.growth_factor)),
            ("backoff_factor", one(s.backoff_factor)),
            ("growth_interval", Raw::i64(s.growth_interval)),
            ("_growth_tracker", Raw::i64(s.growth_tracker)),
            ("enabled", bool),
            ("min_scale", optional(s.min_scale)),
            ("max_scale", optional(s.max_scale)),
            ("hysteresis", Raw::i64(s.hysteresis)),
            ("overflows_in_a_row", Raw::i64(s.overflows_in_a_row)),
        ];
        self.tensors
            .extend(entries.map(|(k, raw)| (format!("scaler.{k}"), raw)));
        self
    }

    /// Adds a random generator's [`state`](Rng::state) as `rng.<name>`.
    pub fn rng(mut self, name: &str, rng: &Rng) -> Self {
        let (words, spare) = rng.state();
        let state = [
            words[0],
            words[1],
            words[2],
            words[3],
            u64::from(spare.is_some()),
            spare.unwrap_or(0),
        ];
        self.tensors
            .push((format!("rng.{name}"), Raw::u64s(&state)));
        self
    }

    /// Adds a metadata entry (the precision mode, the global step, ...). Keys starting with `amp.` are
    /// reserved: [`save`](Self::save) refuses them.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Display) -> Self {
        self.metadata.push((key.into(), value.to_string()));
        self
    }

    /// The file's bytes. Fails on duplicate names and reserved metadata keys.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let mut seen = HashSet::new();
        if let Some((name, _)) = self.tensors.iter().find(|(n, _)| !seen.insert(n.as_str())) {
            return Err(CheckpointError::Duplicate(name.clone()));
        }
        let mut metadata = HashMap::from([(KEY_VERSION.to_string(), VERSION.to_string())]);
        match self.optimizers.as_slice() {
            [] => {}
            [(kind, steps)] => {
                metadata.insert(KEY_KIND.into(), kind.clone());
                metadata.insert(KEY_STEPS.into(), steps.to_string());
            }
            [..] => return Err(CheckpointError::Duplicate(KEY_KIND.into())),
        }
        for (key, value) in &self.metadata {
            if key.starts_with(RESERVED) {
                let reason = "keys starting with `amp.` are reserved".into();
                return Err(CheckpointError::Metadata {
                    key: key.clone(),
                    reason,
                });
            }
            if metadata.insert(key.clone(), value.clone()).is_some() {
                return Err(CheckpointError::Duplicate(key.clone()));
            }
        }
        let views = self.tensors.iter().map(|(n, raw)| (n.as_str(), raw));
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| CheckpointError::Format(e.to_string()))
    }

    /// Writes the checkpoint to `path` atomically: to a temporary file in the same directory, synced to
    /// disk, then renamed over `path`. On an error the temporary file is removed and `path` is untouched.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| CheckpointError::Io { path: p, source }
        };
        let Some(file_name) = path.file_name() else {
            return Err(io(path)(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file path",
            )));
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(
            ".{}.{}-{n}.tmp",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io(&tmp));
        drop(file);
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path).map_err(io(path))) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // Make the rename itself durable. Best effort: some file systems cannot sync a directory, and
        // the new checkpoint is in place either way.
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Reads and checks a checkpoint file (format, dtypes, shapes of the fixed-size entries, metadata),
    /// without touching any model.
    pub fn load(path: impl AsRef<Path>) -> Result<LoadedCheckpoint, CheckpointError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// [`load`](Self::load) from bytes in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<LoadedCheckpoint, CheckpointError> {
        let format = |e: safetensors::SafeTensorError| CheckpointError::Format(e.to_string());
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(format)?;
        let file = SafeTensors::deserialize(bytes).map_err(format)?;
        let mut loaded = LoadedCheckpoint::default();
        let (mut kind, mut steps) = (None, None);
        for (key, value) in header.metadata().clone().unwrap_or_default() {
            match key.as_str() {
                KEY_VERSION if value != VERSION => {
                    return Err(CheckpointError::Metadata {
                        key,
                        reason: format!("format version {value:?}, this is {VERSION:?}"),
                    });
                }
                KEY_VERSION => {}
                KEY_KIND => kind = Some(value),
                KEY_STEPS => {
                    let parsed = value
                        .parse::<u64>()
                        .map_err(|e| CheckpointError::Metadata {
                            key,
                            reason: format!("{value:?}: {e}"),
                        })?;
                    steps = Some(parsed);
                }
                _ if key.starts_with(RESERVED) => {
                    return Err(CheckpointError::Metadata {
                        key,
                        reason: "unknown reserved key".into(),
                    });
                }
                _ => {
                    loaded.metadata.insert(key, value);
                }
            }
        }
        let mut views: Vec<(&str, TensorView<'_>)> = file.iter().collect();
        views.sort_by(|a, b| a.0.cmp(b.0)); // errors name the same tensor on every run
        let (mut optimizer, mut optimizer_bytes, mut scaler) =
            (Vec::new(), Vec::new(), BTreeMap::new());
        for (name, view) in views {
            if let Some(param) = name.strip_prefix("model.") {
                loaded
                    .model
                    .insert(param.to_string(), decode_f32(name, &view)?);
            } else if let Some(buffer) = name.strip_prefix("optimizer.") {
                if view.dtype() == Dtype::U8 {
                    let bytes = ByteTensor::new(view.data().to_vec(), view.shape().to_vec());
                    optimizer_bytes.push((buffer.to_string(), bytes));
                } else {
                    optimizer.push((buffer.to_string(), decode_f32(name, &view)?));
                }
            } else if let Some(key) = name.strip_prefix("scaler.") {
                scaler.insert(key, view);
            } else if let Some(entry) = name.strip_prefix("rounding.") {
                if let Some(param) = entry.strip_suffix(".updates") {
                    check_dtype(name, &view, Dtype::U64)?;
                    check_shape(name, &view, &[1])?;
                    let updates = words(&view)[0];
                    loaded.rounding.entry(param.to_string()).or_default().0 = Some(updates);
                } else if let Some(param) = entry.strip_suffix(".compensation") {
                    let values = decode_f32(name, &view)?;
                    loaded.rounding.entry(param.to_string()).or_default().1 = Some(values);
                } else {
                    return Err(CheckpointError::UnexpectedTensor(name.to_string()));
                }
            } else if let Some(rng) = name.strip_prefix("rng.") {
                loaded
                    .rngs
                    .insert(rng.to_string(), decode_rng(name, &view)?);
            } else {
                return Err(CheckpointError::UnexpectedTensor(name.to_string()));
            }
        }
        loaded.optimizer = match (kind, steps) {
            (Some(kind), Some(steps)) => Some(OptimizerState {
                kind,
                steps,
                tensors: optimizer,
                bytes: optimizer_bytes,
            }),
            (Some(_), None) => return Err(CheckpointError::Missing(KEY_STEPS.into())),
            (None, _)
                if steps.is_some() || !optimizer.is_empty() || !optimizer_bytes.is_empty() =>
            {
                return Err(CheckpointError::Missing(KEY_KIND.into()));
            }
            (None, _) => None,
        };
        if !scaler.is_empty() {
            loaded.scaler = Some(decode_scaler(scaler)?);
        }
        Ok(loaded)
    }
}

/// A parameter with its saved update-rounding counter and compensation.
type SavedRounding<'a> = (Param, u64, Option<&'a Tensor<f32>>);

/// A checkpoint read by [`Checkpoint::load`]: checked, and ready to restore into a model, optimizer,
/// scaler and generators.
#[derive(Clone, Debug, Default)]
pub struct LoadedCheckpoint {
    model: BTreeMap<String, Tensor<f32>>,
    optimizer: Option<OptimizerState>,
    scaler: Option<ScalerState>,
    rngs: BTreeMap<String, ([u64; 4], Option<u64>)>,
    metadata: BTreeMap<String, String>,
    /// Per parameter: the update rounding's counter and compensation.
    rounding: BTreeMap<String, (Option<u64>, Option<Tensor<f32>>)>,
}

impl LoadedCheckpoint {
    /// A saved parameter by its dotted name (without the `model.` prefix).
    pub fn param(&self, name: &str) -> Option<&Tensor<f32>> {
        self.model.get(name)
    }

    /// The saved parameters' dotted names, sorted.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.model.keys().map(String::as_str)
    }

    /// The saved optimizer state, if any.
    pub fn optimizer_state(&self) -> Option<&OptimizerState> {
        self.optimizer.as_ref()
    }

    /// The saved scaler state, if any.
    pub fn scaler_state(&self) -> Option<&ScalerState> {
        self.scaler.as_ref()
    }

    /// The generator saved as `name`, continuing where it was.
    pub fn rng(&self, name: &str) -> Option<Rng> {
        self.rngs.get(name).map(|s| Rng::from_state(*s))
    }

    /// A user metadata entry.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// All user metadata (amp's own `amp.*` entries excluded).
    pub fn all_metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Checks that the saved parameters match `model` exactly: every parameter present with its shape,
    /// and no other `model.*` tensor.
    pub fn check_model(&self, model: &dyn Module) -> Result<(), CheckpointError> {
        self.matched_params(model).map(drop)
    }

    /// Sets every parameter of `model` ([`Param::set`], which bumps its version; the value is copied to
    /// the device the parameter is on) after
    /// [checking](Self::check_model) all of them: on an error no parameter changes.
    pub fn restore_model(&self, model: &dyn Module) -> Result<(), CheckpointError> {
        self.restore(model, None, None, &mut [])
    }

    /// Restores a training run: the model's parameters, and the optimizer, scaler and named generators
    /// that are given (`None` or an empty list skips a part; a part that is given must be in the
    /// checkpoint). Everything is checked first (shapes, optimizer kind and buffers, scaler settings,
    /// generator names); on an error nothing changes.
    pub fn restore(
        &self,
        model: &dyn Module,
        optimizer: Option<&mut dyn Optimizer>,
        scaler: Option<&mut GradScaler>,
        rngs: &mut [(&str, &mut Rng)],
    ) -> Result<(), CheckpointError> {
        // Each value goes where its parameter is (as PyTorch's load_state_dict copies into the existing
        // tensors), so a model on a GPU stays there.
        let params = self
            .matched_params(model)?
            .into_iter()
            .map(|(param, value)| {
                let value = value.to_device(param.value().device())?;
                Ok((param, value))
            })
            .collect::<Result<Vec<_>, CheckpointError>>()?;
        let new_scaler = match scaler.as_deref() {
            Some(current) => {
                let state = self
                    .scaler
                    .as_ref()
                    .ok_or_else(|| CheckpointError::Missing("scaler.scale".into()))?;
                let mut restored = current.clone();
                restored.load_state_dict(state)?;
                Some(restored)
            }
            None => None,
        };
        let new_rngs = rngs
            .iter()
            .map(|(name, _)| {
                self.rng(name)
                    .ok_or_else(|| CheckpointError::Missing(format!("rng.{name}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The last check: `load_state` validates everything before it changes anything (its contract).
        if let Some(optimizer) = optimizer {
            let state = self
                .optimizer
                .as_ref()
                .ok_or_else(|| CheckpointError::Missing(KEY_KIND.into()))?;
            optimizer.load_state(state)?;
        }
        let rounding = self.matched_rounding(model)?;
        // Nothing below can fail.
        for (param, value) in params {
            param.set(value);
        }
        for (param, updates, compensation) in rounding {
            param.restore_rounding(updates, compensation.map(|c| c.data()));
        }
        if let (Some(scaler), Some(restored)) = (scaler, new_scaler) {
            *scaler = restored;
        }
        for ((_, rng), restored) in rngs.iter_mut().zip(new_rngs) {
            **rng = restored;
        }
        Ok(())
    }

    /// Each parameter of `model` with a saved rounding state: its counter and compensation, the
    /// compensation's shape checked, no entry left over.
    fn matched_rounding(
        &self,
        model: &dyn Module,
    ) -> Result<Vec<SavedRounding<'_>>, CheckpointError> {
        let named: HashMap<String, Param> = model.named_params().into_iter().collect();
        let mut matched = Vec::new();
        for (name, (updates, compensation)) in &self.rounding {
            let key = format!("rounding.{name}");
            let param = named
                .get(name)
                .ok_or_else(|| CheckpointError::UnexpectedTensor(format!("{key}.updates")))?;
            let updates =
                updates.ok_or_else(|| CheckpointError::Missing(format!("{key}.updates")))?;
            if let Some(c) = compensation
                && c.shape() != param.shape()
            {
                return Err(CheckpointError::Shape {
                    name: format!("{key}.compensation"),
                    expected: param.shape(),
                    found: c.shape().to_vec(),
                });
            }
            matched.push((param.clone(), updates, compensation.as_ref()));
        }
        Ok(matched)
    }

    /// Each parameter of `model` with its saved value, shapes checked, no saved parameter left over.
    fn matched_params(
        &self,
        model: &dyn Module,
    ) -> Result<Vec<(Param, &Tensor<f32>)>, CheckpointError> {
        let named = model.named_params();
        let mut matched = Vec::with_capacity(named.len());
        for (name, param) in &named {
            let saved = self
                .model
                .get(name)
                .ok_or_else(|| CheckpointError::Missing(format!("model.{name}")))?;
            let expected = param.shape();
            if saved.shape() != expected {
                let (name, found) = (format!("model.{name}"), saved.shape().to_vec());
                return Err(CheckpointError::Shape {
                    name,
                    expected,
                    found,
                });
            }
            matched.push((param.clone(), saved));
        }
        let names: HashSet<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        match self.model.keys().find(|k| !names.contains(k.as_str())) {
            Some(extra) => Err(CheckpointError::UnexpectedTensor(format!("model.{extra}"))),
            None => Ok(matched),
        }
    }
}

fn check_dtype(name: &str, view: &TensorView<'_>, expected: Dtype) -> Result<(), CheckpointError> {
    if view.dtype() == expected {
        return Ok(());
    }
    Err(CheckpointError::DType {
        name: name.into(),
        expected: expected.to_string(),
        found: view.dtype().to_string(),
    })
}

fn check_shape(
    name: &str,
    view: &TensorView<'_>,
    expected: &[usize],
) -> Result<(), CheckpointError> {
    if view.shape() == expected {
        return Ok(());
    }
    Err(CheckpointError::Shape {
        name: name.into(),
        expected: expected.to_vec(),
        found: view.shape().to_vec(),
    })
}

/// An F32 tensor (safetensors has checked that the byte count matches the shape).
fn decode_f32(name: &str, view: &TensorView<'_>) -> Result<Tensor<f32>, CheckpointError> {
    check_dtype(name, view, Dtype::F32)?;
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Tensor::from_vec(values, view.shape().to_vec()))
}

fn words(view: &TensorView<'_>) -> Vec<u64> {
    view.data()
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(std::array::from_fn(|i| b[i])))
        .collect()
}

fn decode_rng(
    name: &str,
    view: &TensorView<'_>,
) -> Result<([u64; 4], Option<u64>), CheckpointError> {
    check_dtype(name, view, Dtype::U64)?;
    check_shape(name, view, &[6])?;
    let w = words(view);
    let invalid = |reason: &str| CheckpointError::Invalid {
        name: name.into(),
        reason: reason.into(),
    };
    let state = [w[0], w[1], w[2], w[3]];
    if state == [0; 4] {
        return Err(invalid("the generator state is all zeros"));
    }
    match (w[4], w[5]) {
        (0, 0) => Ok((state, None)),
        (1, bits) => Ok((state, Some(bits))),
        (0, _) => Err(invalid("no pending normal sample, but its bits are not 0")),
        _ => Err(invalid("the pending-normal flag is not 0 or 1")),
    }
}

/// The `scaler.*` tensors (keys without the prefix) being decoded: each taken once, none left over.
struct ScalerViews<'a>(BTreeMap<&'a str, TensorView<'a>>);

impl<'a> ScalerViews<'a> {
    fn take(
        &mut self,
        key: &str,
        dtype: Dtype,
        shapes: &[&[usize]],
    ) -> Result<(String, TensorView<'a>), CheckpointError> {
        let name = format!("scaler.{key}");
        let view = self
            .0
            .remove(key)
            .ok_or_else(|| CheckpointError::Missing(name.clone()))?;
        check_dtype(&name, &view, dtype)?;
        if !shapes.contains(&view.shape()) {
            check_shape(&name, &view, shapes[0])?;
        }
        Ok((name, view))
    }

    /// A one-element F32, or an optional one (`[0]`: none).
    fn float(&mut self, key: &str, optional: bool) -> Result<Option<f32>, CheckpointError> {
        let shapes: &[&[usize]] = if optional { &[&[1], &[0]] } else { &[&[1]] };
        let (name, view) = self.take(key, Dtype::F32, shapes)?;
        Ok(decode_f32(&name, &view)?.to_vec().first().copied())
    }

    /// A one-element I64 that fits a u32.
    fn int(&mut self, key: &str) -> Result<u32, CheckpointError> {
        let (name, view) = self.take(key, Dtype::I64, &[&[1]])?;
        let value = i64::from_le_bytes(std::array::from_fn(|i| view.data()[i]));
        u32::try_from(value).map_err(|_| CheckpointError::Invalid {
            name,
            reason: format!("{value} is not in 0..=2^32-1"),
        })
    }

    fn bool(&mut self, key: &str) -> Result<bool, CheckpointError> {
        let (name, view) = self.take(key, Dtype::BOOL, &[&[1]])?;
        match view.data()[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(CheckpointError::Invalid {
                name,
                reason: format!("a bool holds the byte {b}"),
            }),
        }
    }
}

/// The scaler state from its tensors, checked as `GradScaler::load_state_dict` will check it.
fn decode_scaler(views: BTreeMap<&str, TensorView<'_>>) -> Result<ScalerState, CheckpointError> {
    let mut v = ScalerViews(views);
    let state = ScalerState {
        enabled: v.bool("enabled")?,
        scale: v.float("scale", false)?.unwrap_or_default(),
        growth_factor: v.float("growth_factor", false)?.unwrap_or_default(),
        backoff_factor: v.float("backoff_factor", false)?.unwrap_or_default(),
        growth_interval: v.int("growth_interval")?,
        growth_tracker: v.int("_growth_tracker")?,
        min_scale: v.float("min_scale", true)?,
        max_scale: v.float("max_scale", true)?,
        hysteresis: v.int("hysteresis")?,
        overflows_in_a_row: v.int("overflows_in_a_row")?,
    };
    if let Some(key) = v.0.keys().next() {
        return Err(CheckpointError::UnexpectedTensor(format!("scaler.{key}")));
    }
    if state.enabled {
        let s = &state;
        let config = ScalerConfig {
            init_scale: s.scale,
            growth_factor: s.growth_factor,
            backoff_factor: s.backoff_factor,
            growth_interval: s.growth_interval,
            min_scale: s.min_scale,
            max_scale: s.max_scale,
            hysteresis: s.hysteresis,
        };
        GradScaler::with_config(config)?;
    }
    Ok(state)
}
