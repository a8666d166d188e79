//! How an updated weight stored in half precision (the `-true` modes) is rounded: to nearest, stochastic
//! rounding, or Kahan-compensated.

use crate::element::DType;
use amp_kernels::cpu::{kahan_round_through, round_through, stochastic_round_bf16};
use amp_kernels::{bf16, f16};

/// How a parameter stored in bf16 or f16 takes an update the optimizer computed in f32.
///
/// In `"bf16-true"` every weight is rounded back to bf16 after each step. Round-to-nearest drops any
/// update smaller than half a bf16 step, about `|w|·2^-9`: with a small learning rate, or late in
/// training when updates are small, the weights stop moving and the loss stalls (the failure of pure-bf16
/// training described by Zamirai et al., *Revisiting BFloat16 Training*). Two remedies, set with
/// [`Trainer::update_rounding`](super::Trainer::update_rounding):
///
/// - [`Stochastic`](Self::Stochastic): round up with probability equal to the remainder, so the stored
///   weight is right *on average*. No memory, one hash per element. Use it for long runs where the noise
///   it adds averages out (most pre-training); bf16 storage only. Reproducible: the random bits depend on
///   the seed, the parameter, how many updates it has had, and the element, not on threads.
/// - [`Kahan`](Self::Kahan): keep what each rounding dropped in a compensation buffer (2 bytes per weight,
///   in the storage type) and add it to the next update, so small updates add up exactly over time. No
///   noise. Use it when updates are tiny compared with the weights (fine-tuning, small learning rates) or
///   when results must not depend on random bits; bf16 and f16.
///
/// Neither is needed with f32 master weights (`"bf16-mixed"`), which keep every update exactly at
/// 2 more bytes per weight than Kahan's buffer. The compensation buffer and the update counter live in
/// the parameter (on its device, for a weight updated there) and are saved in checkpoints, so a resumed
/// run rounds as an uninterrupted one would.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateRounding {
    /// Round to nearest (what a half-precision weight does by itself).
    #[default]
    Nearest,
    /// Stochastic rounding to bf16, seeded.
    Stochastic {
        /// Seeds the random bits (together with the update count and the element index).
        seed: u64,
    },
    /// Kahan-compensated round-to-nearest.
    Kahan,
}

/// A parameter's rounding mode and what it carries between updates.
#[derive(Debug, Default)]
pub(crate) struct RoundingState {
    mode: UpdateRounding,
    /// Rounded updates so far (the stochastic rounding counter).
    updates: u64,
    compensation: Compensation,
}

#[derive(Debug, Default)]
enum Compensation {
    #[default]
    None,
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
    /// On the device of a weight updated there, in the storage type.
    #[cfg(feature = "cuda")]
    Device(amp_kernels::cuda::DeviceBuffer),
}

impl RoundingState {
    /// Sets the mode (dropping any compensation); panics on stochastic rounding to f16.
    #[track_caller]
    pub(crate) fn set(&mut self, mode: UpdateRounding, storage: DType) {
        if matches!(mode, UpdateRounding::Stochastic { .. }) && storage == DType::F16 {
            panic!(
                "stochastic rounding is implemented for bf16 storage (\"bf16-true\"), not f16; use \
                 UpdateRounding::Kahan for \"16-true\""
            );
        }
        *self = RoundingState {
            mode,
            ..RoundingState::default()
        };
    }

    /// The mode.
    pub(crate) fn mode(&self) -> UpdateRounding {
        self.mode
    }

    /// Whether [`round`](Self::round) needs the values before the update.
    pub(crate) fn needs_old(&self, storage: DType) -> bool {
        self.mode == UpdateRounding::Kahan && storage != DType::F32
    }

    /// Rounds updated values `data` to `storage` by the mode (`old`: the values before the update,
    /// given when [`needs_old`](Self::needs_old)).
    pub(crate) fn round(&mut self, old: Option<&[f32]>, data: &mut [f32], storage: DType) {
        #[cfg(feature = "cuda")]
        self.compensation_to_host();
        match (storage, self.mode, old) {
            (DType::BF16, UpdateRounding::Stochastic { seed }, _) => {
                stochastic_round_bf16(data, seed, self.updates);
                self.updates += 1;
            }
            (DType::BF16, UpdateRounding::Kahan, Some(old)) => {
                if !matches!(&self.compensation, Compensation::Bf16(c) if c.len() == data.len()) {
                    self.compensation = Compensation::Bf16(vec![bf16::ZERO; data.len()]);
                }
                if let Compensation::Bf16(c) = &mut self.compensation {
                    kahan_round_through::<bf16>(old, data, c);
                }
            }
            (DType::F16, UpdateRounding::Kahan, Some(old)) => {
                if !matches!(&self.compensation, Compensation::F16(c) if c.len() == data.len()) {
                    self.compensation = Compensation::F16(vec![f16::ZERO; data.len()]);
                }
                if let Compensation::F16(c) = &mut self.compensation {
                    kahan_round_through::<f16>(old, data, c);
                }
            }
            (DType::BF16, ..) => round_through::<bf16>(data),
            (DType::F16, ..) => round_through::<f16>(data),
            _ => {}
        }
    }

    /// Makes what [`round_on_device`](Self::round_on_device) needs on `gpu` for `n` values: the Kahan
    /// compensation, as zeros or moved from the host (or another device). Called before the optimizer
    /// updates a weight, so a device failure here leaves weight and optimizer state untouched.
    #[cfg(feature = "cuda")]
    pub(crate) fn prepare_on_device(
        &mut self,
        gpu: &std::sync::Arc<amp_kernels::cuda::Gpu>,
        n: usize,
        storage: DType,
    ) -> Result<(), amp_kernels::cuda::CudaError> {
        use amp_kernels::cuda::DeviceBuffer;
        if self.mode != UpdateRounding::Kahan || !matches!(storage, DType::BF16 | DType::F16) {
            return Ok(());
        }
        let here = matches!(&self.compensation, Compensation::Device(c)
            if c.len() == n && c.dtype() == storage && c.gpu().ordinal() == gpu.ordinal());
        if !here {
            let values = self.compensation_values().filter(|v| v.len() == n);
            let buffer = match (values, storage) {
                (Some(v), DType::F16) => {
                    let v: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
                    DeviceBuffer::upload(gpu, &v)?
                }
                (Some(v), _) => {
                    let v: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
                    DeviceBuffer::upload(gpu, &v)?
                }
                (None, _) => DeviceBuffer::zeros(gpu, storage, n)?,
            };
            self.compensation = Compensation::Device(buffer);
        }
        Ok(())
    }

    /// Rounds updated values `data` on a device to `storage` by the mode, as [`round`](Self::round) does
    /// on the host (`old`: the values before the update), after
    /// [`prepare_on_device`](Self::prepare_on_device) for the same device and length.
    #[cfg(feature = "cuda")]
    pub(crate) fn round_on_device(
        &mut self,
        old: &amp_kernels::cuda::DeviceBuffer,
        data: &mut amp_kernels::cuda::DeviceBuffer,
        storage: DType,
    ) -> Result<(), amp_kernels::cuda::CudaError> {
        use amp_kernels::cuda;
        match (storage, self.mode) {
            (DType::BF16, UpdateRounding::Stochastic { seed }) => {
                cuda::stochastic_round_bf16(data, seed, self.updates)?;
                self.updates += 1;
            }
            (DType::BF16 | DType::F16, UpdateRounding::Kahan) => {
                let Compensation::Device(c) = &mut self.compensation else {
                    unreachable!("prepare_on_device puts the compensation on the device")
                };
                cuda::kahan_round_through(old, data, c)?;
            }
            (DType::BF16 | DType::F16, _) => {
                *data = cuda::cast(&cuda::cast(data, storage)?, DType::F32)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Brings a compensation kept on a device back to host memory (a weight moved back to the host).
    #[cfg(feature = "cuda")]
    fn compensation_to_host(&mut self) {
        if let Compensation::Device(c) = &self.compensation {
            let values = self.compensation_values().unwrap_or_default();
            self.compensation = match c.dtype() {
                DType::F16 => Compensation::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
                _ => Compensation::Bf16(values.iter().map(|&v| bf16::from_f32(v)).collect()),
            };
        }
    }

    /// The compensation's values (exact in f32), wherever it is; `None` when there is none.
    ///
    /// Panics if the device holding it fails.
    fn compensation_values(&self) -> Option<Vec<f32>> {
        match &self.compensation {
            Compensation::None => None,
            Compensation::Bf16(c) => Some(c.iter().map(|v| v.to_f32()).collect()),
            Compensation::F16(c) => Some(c.iter().map(|v| v.to_f32()).collect()),
            #[cfg(feature = "cuda")]
            Compensation::Device(c) => {
                let values = match c.dtype() {
                    DType::F16 => c
                        .download::<f16>()
                        .map(|v| v.iter().map(|x| x.to_f32()).collect()),
                    _ => c
                        .download::<bf16>()
                        .map(|v| v.iter().map(|x| x.to_f32()).collect()),
                };
                Some(values.unwrap_or_else(|e| {
                    panic!(
                        "update rounding's compensation on cuda:{}: {e}",
                        c.gpu().ordinal()
                    )
                }))
            }
        }
    }

    /// What the mode carries between updates, for a checkpoint: the stochastic rounding counter and the
    /// Kahan compensation (exact in f32). `None` for round-to-nearest, which carries nothing.
    pub(crate) fn snapshot(&self) -> Option<(u64, Option<Vec<f32>>)> {
        if self.mode == UpdateRounding::Nearest {
            return None;
        }
        Some((self.updates, self.compensation_values()))
    }

    /// Restores a [`snapshot`](Self::snapshot) into this (already configured) mode: the counter, and
    /// the compensation rounded to the storage type (exactly: it was saved from that type). Nothing
    /// changes under round-to-nearest.
    pub(crate) fn restore(&mut self, updates: u64, compensation: Option<&[f32]>, storage: DType) {
        if self.mode == UpdateRounding::Nearest {
            return;
        }
        self.updates = updates;
        self.compensation = match (compensation, storage) {
            (Some(c), DType::BF16) => {
                Compensation::Bf16(c.iter().map(|&v| bf16::from_f32(v)).collect())
            }
            (Some(c), DType::F16) => {
                Compensation::F16(c.iter().map(|&v| f16::from_f32(v)).collect())
            }
            _ => Compensation::None,
        };
    }

    /// Bytes of the compensation buffer.
    pub(crate) fn bytes(&self) -> usize {
        match &self.compensation {
            Compensation::None => 0,
            Compensation::Bf16(c) => 2 * c.len(),
            Compensation::F16(c) => 2 * c.len(),
            #[cfg(feature = "cuda")]
            Compensation::Device(c) => 2 * c.len(),
        }
    }
}
