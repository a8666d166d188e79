//! Precision modes by Lightning's names (`precision="bf16-mixed"`) and Apex's opt levels.

use super::scaler::GradScaler;
use crate::element::DType;
use crate::param::Param;
use crate::policy::{self, Policy};
use std::fmt;
use std::str::FromStr;

/// How a model trains: which policy its `#[autocast(P)]` code runs under, what type its parameters are
/// stored in, and whether gradients go through a dynamic loss scaler.
///
/// | mode | policy | parameters | loss scaler |
/// |---|---|---|---|
/// | `"32-true"` | f32 | f32 | none |
/// | `"bf16-mixed"` | bf16 | f32 masters | none (non-finite steps still skipped) |
/// | `"16-mixed"` | f16 | f32 masters | dynamic |
/// | `"bf16-true"` | bf16 | bf16 | none (non-finite steps still skipped) |
/// | `"16-true"` | f16 | f16 | none (non-finite steps still skipped) |
/// | `"64-true"` | — | — | not supported: parameters are f32 masters; use `"32-true"` |
///
/// Aliases, as in Lightning: `16` and `"16"` for `"16-mixed"`, `"bf16"` for `"bf16-mixed"`, `32`/`"32"`,
/// `64`/`"64"`. Apex levels: `"O0"` is `"32-true"`, `"O1"` is `"16-mixed"`, `"O3"` is `"16-true"`, and
/// `"O2"` (f16 model weights for the forward pass, f32 master weights in the optimizer, norms in f32) is
/// what `"16-mixed"` already does here: the forward uses the f16 copies from the parameters' cast cache,
/// the optimizer updates the f32 masters, and norms run in f32. In the `-true` modes the weights are
/// stored in half precision (rounded after every update) while the ops follow the same policy table as
/// the `-mixed` modes, so softmax, norms and losses still run in f32.
///
/// ```
/// use amp_runtime::train::Precision;
/// let p: Precision = "bf16-mixed".parse().unwrap();
/// assert_eq!(p, Precision::Bf16Mixed);
/// assert_eq!(Precision::try_from(16).unwrap(), Precision::F16Mixed);
/// let err = "fp8".parse::<Precision>().unwrap_err();
/// assert!(err.to_string().contains("\"bf16-mixed\""));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// `"64-true"` (parsed so that asking for it gives a clear error).
    F64True,
    /// `"32-true"`: everything in f32.
    F32True,
    /// `"16-mixed"`: f16 autocast, f32 masters, dynamic loss scaling.
    F16Mixed,
    /// `"bf16-mixed"`: bf16 autocast, f32 masters.
    Bf16Mixed,
    /// `"16-true"`: f16 autocast with f16 weights.
    F16True,
    /// `"bf16-true"`: bf16 autocast with bf16 weights.
    Bf16True,
}

/// Every spelling [`Precision`] accepts, for error messages.
pub const ALLOWED_PRECISIONS: &str = "\"64-true\", \"32-true\", \"16-mixed\", \"bf16-mixed\", \"16-true\", \
     \"bf16-true\", 16, \"16\", \"bf16\", 32, \"32\", 64, \"64\", \"O0\", \"O1\", \"O2\", \"O3\"";

/// A precision that cannot be parsed or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrecisionError {
    /// Not a known name.
    #[error("precision {given:?} is invalid; allowed precision values: {ALLOWED_PRECISIONS}")]
    Unknown {
        /// What was given.
        given: String,
    },
    /// Known but not supported by amp.
    #[error("precision \"{mode}\" is not supported: {reason}; use {instead}")]
    Unsupported {
        /// The mode.
        mode: &'static str,
        /// Why not.
        reason: &'static str,
        /// What to use instead.
        instead: &'static str,
    },
}

/// The policy a precision runs model code under (a value standing for a [`Policy`] type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// [`policy::F32`].
    F32,
    /// [`policy::Bf16`].
    Bf16,
    /// [`policy::F16`].
    F16,
}

/// A computation generic over the policy, for [`Precision::dispatch`] (or use the `amp::dispatch!`
/// macro, which writes this for you).
pub trait PolicyFn {
    /// What the computation returns.
    type Output;
    /// Runs under policy `P`.
    fn call<P: Policy>(self) -> Self::Output;
}

impl Precision {
    /// The canonical (Lightning) name.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F64True => "64-true",
            Precision::F32True => "32-true",
            Precision::F16Mixed => "16-mixed",
            Precision::Bf16Mixed => "bf16-mixed",
            Precision::F16True => "16-true",
            Precision::Bf16True => "bf16-true",
        }
    }

    /// Every precision, in Lightning's order.
    pub const ALL: [Precision; 6] = [
        Precision::F64True,
        Precision::F32True,
        Precision::F16Mixed,
        Precision::Bf16Mixed,
        Precision::F16True,
        Precision::Bf16True,
    ];

    /// Ok if amp can train in this mode, otherwise an error saying what to use.
    pub fn check_supported(self) -> Result<(), PrecisionError> {
        match self {
            Precision::F64True => Err(PrecisionError::Unsupported {
                mode: "64-true",
                reason: "parameters are f32 master weights and model code is written against f32 tensors",
                instead: "\"32-true\"",
            }),
            _ => Ok(()),
        }
    }

    /// The policy model code runs under.
    pub fn policy(self) -> Result<PolicyKind, PrecisionError> {
        self.check_supported()?;
        Ok(match self {
            Precision::F32True | Precision::F64True => PolicyKind::F32,
            Precision::Bf16Mixed | Precision::Bf16True => PolicyKind::Bf16,
            Precision::F16Mixed | Precision::F16True => PolicyKind::F16,
        })
    }

    /// The type parameters are stored in.
    pub fn param_storage(self) -> DType {
        match self {
            Precision::F64True => DType::F64,
            Precision::F32True | Precision::F16Mixed | Precision::Bf16Mixed => DType::F32,
            Precision::F16True => DType::F16,
            Precision::Bf16True => DType::BF16,
        }
    }

    /// Whether gradients go through a dynamic loss scaler.
    pub fn uses_loss_scaling(self) -> bool {
        self == Precision::F16Mixed
    }

    /// The scaler this mode trains with: dynamic with PyTorch's defaults for `"16-mixed"`, disabled
    /// (scale 1, non-finite steps skipped) otherwise.
    pub fn scaler(self) -> GradScaler {
        if self.uses_loss_scaling() {
            GradScaler::new()
        } else {
            GradScaler::disabled()
        }
    }

    /// Sets the storage type of `params` for this mode (rounds them to bf16/f16 for the `-true` modes).
    pub fn prepare(self, params: &[Param]) -> Result<(), PrecisionError> {
        self.check_supported()?;
        for p in params {
            p.set_storage(self.param_storage());
        }
        Ok(())
    }

    /// Runs `f` under this mode's policy.
    pub fn dispatch<F: PolicyFn>(self, f: F) -> Result<F::Output, PrecisionError> {
        Ok(match self.policy()? {
            PolicyKind::F32 => f.call::<policy::F32>(),
            PolicyKind::Bf16 => f.call::<policy::Bf16>(),
            PolicyKind::F16 => f.call::<policy::F16>(),
        })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = PrecisionError;

    fn from_str(s: &str) -> Result<Self, PrecisionError> {
        Ok(match s.trim() {
            "64-true" | "64" => Precision::F64True,
            "32-true" | "32" | "O0" => Precision::F32True,
            "16-mixed" | "16" | "O1" | "O2" => Precision::F16Mixed,
            "bf16-mixed" | "bf16" => Precision::Bf16Mixed,
            "16-true" | "O3" => Precision::F16True,
            "bf16-true" => Precision::Bf16True,
            _ => {
                return Err(PrecisionError::Unknown {
                    given: s.to_string(),
                });
            }
        })
    }
}

impl TryFrom<&str> for Precision {
    type Error = PrecisionError;
    fn try_from(s: &str) -> Result<Self, PrecisionError> {
        s.parse()
    }
}

impl TryFrom<u32> for Precision {
    type Error = PrecisionError;
    /// Lightning's integer aliases: 16, 32 and 64.
    fn try_from(bits: u32) -> Result<Self, PrecisionError> {
        match bits {
            16 => Ok(Precision::F16Mixed),
            32 => Ok(Precision::F32True),
            64 => Ok(Precision::F64True),
            other => Err(PrecisionError::Unknown {
                given: other.to_string(),
            }),
        }
    }
}
