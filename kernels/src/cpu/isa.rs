//! Which instruction set the kernels use, chosen once per process from CPUID.
//!
//! Levels, best first: AMX-BF16 (Intel matrix tiles), AVX512-BF16 (`vdpbf16ps`), AVX-512F, AVX2+FMA,
//! scalar. Every kernel has a scalar path, so machines without the newer instructions get the same results
//! (within the documented rounding of each path).
//!
//! The environment variable `AMP_ISA` caps the level (`scalar`, `avx2`, `avx512`, `avx512bf16`, `amx`),
//! so every path can be exercised on one machine: `AMP_ISA=avx2 cargo test -p amp-kernels`. Tests can also
//! cap it in-process with [`set_isa_limit`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level. Ordered: a level implies every lower one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no SIMD intrinsics.
    Scalar,
    /// AVX2 and FMA (256-bit).
    Avx2,
    /// AVX-512 Foundation (and BW/VL, which every AVX-512 CPU with F16C conversions here has).
    Avx512,
    /// AVX-512 with the BF16 dot product `vdpbf16ps`.
    Avx512Bf16,
    /// AMX-BF16 tiles (with everything above).
    Amx,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Bf16,
        Isa::Amx,
    ];

    /// The name `AMP_ISA` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Amx => "amx",
        }
    }

    fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == name.trim().to_ascii_lowercase())
    }
}

/// The best level this CPU (and OS) supports, detected once.
pub fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

/// 0 = not yet read from `AMP_ISA`; otherwise the cap + 1.
static LIMIT: AtomicU8 = AtomicU8::new(0);

fn limit() -> Isa {
    match LIMIT.load(Ordering::Relaxed) {
        0 => {
            let cap = std::env::var("AMP_ISA")
                .ok()
                .and_then(|v| Isa::from_name(&v))
                .unwrap_or(Isa::Amx);
            LIMIT.store(cap as u8 + 1, Ordering::Relaxed);
            cap
        }
        n => Isa::ALL[(n - 1) as usize],
    }
}

/// The level kernels use now: the detected level, capped by `AMP_ISA` or [`set_isa_limit`].
#[inline]
pub fn isa() -> Isa {
    detected().min(limit())
}

/// Caps the level for the whole process (tests run every path this way). Returns the previous cap.
pub fn set_isa_limit(cap: Isa) -> Isa {
    let previous = limit();
    LIMIT.store(cap as u8 + 1, Ordering::Relaxed);
    previous
}

/// Whether bf16 products use the AMX tiles.
///
/// AMX is opt-in: set `AMP_AMX=1` (or call [`set_amx_mode`]) on a CPU that has it. The tile kernel has
/// been checked instruction by instruction against the emulation below, but not yet run on AMX hardware,
/// so by default bf16 products use `vdpbf16ps` (AVX512-BF16), which is verified everywhere it exists.
/// `AMP_AMX=emulate` runs the tile kernel with every tile instruction carried out in software (slow; for
/// testing the AMX path on any machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmxMode {
    /// bf16 products use AVX512-BF16 (or lower).
    Off,
    /// bf16 products use the AMX tiles when the CPU has them and the ISA level allows it.
    Hardware,
    /// bf16 products use the AMX kernel with emulated tile instructions, on any CPU.
    Emulated,
}

/// 0 = not yet read from `AMP_AMX`; otherwise the mode + 1.
static AMX_MODE: AtomicU8 = AtomicU8::new(0);

const AMX_MODES: [AmxMode; 3] = [AmxMode::Off, AmxMode::Hardware, AmxMode::Emulated];

/// The current [`AmxMode`] (from `AMP_AMX` on first use: `1`/`on` → hardware, `emulate` → emulated).
pub fn amx_mode() -> AmxMode {
    match AMX_MODE.load(Ordering::Relaxed) {
        0 => {
            let mode = match std::env::var("AMP_AMX").as_deref().map(str::trim) {
                Ok("1" | "on" | "hardware") => AmxMode::Hardware,
                Ok("emulate") => AmxMode::Emulated,
                _ => AmxMode::Off,
            };
            AMX_MODE.store(mode as u8 + 1, Ordering::Relaxed);
            mode
        }
        n => AMX_MODES[(n - 1) as usize],
    }
}

/// Whether this process may use the AMX tiles: asks the OS once (Linux `arch_prctl(ARCH_REQ_XCOMP_PERM)`)
/// and remembers the answer. False on a CPU without AMX.
pub fn amx_permitted() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            detected() >= Isa::Amx && amx::request_permission()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Sets the [`AmxMode`] for the whole process (tests use it). Returns the previous mode.
pub fn set_amx_mode(mode: AmxMode) -> AmxMode {
    let previous = amx_mode();
    AMX_MODE.store(mode as u8 + 1, Ordering::Relaxed);
    previous
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    if !(is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c"))
    {
        return Isa::Scalar;
    }
    let avx512 = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl");
    if !avx512 {
        return Isa::Avx2;
    }
    if !is_x86_feature_detected!("avx512bf16") {
        return Isa::Avx512;
    }
    if amx::available() {
        Isa::Amx
    } else {
        Isa::Avx512Bf16
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Scalar
}

#[cfg(target_arch = "x86_64")]
mod amx {
    //! AMX detection: CPUID says the CPU has the tiles and XCR0 says the OS saves their state; Linux must
    //! also grant this process permission to use them (the `arch_prctl` call, once per process, made only
    //! when the tiles are about to be used: it enlarges every signal frame of the process).

    use std::arch::x86_64::{__cpuid_count, _xgetbv};

    /// Linux `ARCH_REQ_XCOMP_PERM`.
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    /// The XSAVE feature number of the tile data.
    const XFEATURE_XTILEDATA: u64 = 18;
    /// x86_64 Linux system call number of `arch_prctl`.
    const SYS_ARCH_PRCTL: u64 = 158;

    pub fn available() -> bool {
        let leaf7 = __cpuid_count(7, 0);
        let (amx_bf16, amx_tile) = (leaf7.edx >> 22 & 1 == 1, leaf7.edx >> 24 & 1 == 1);
        // OSXSAVE (CPUID.1:ECX bit 27) must be set before XGETBV may run.
        let osxsave = __cpuid_count(1, 0).ecx >> 27 & 1 == 1;
        if !(amx_bf16 && amx_tile && osxsave) {
            return false;
        }
        // SAFETY: OSXSAVE is set, so XGETBV(0) is defined.
        let xcr0 = unsafe { _xgetbv(0) };
        xcr0 >> 17 & 0b11 == 0b11 // the OS saves XTILECFG and XTILEDATA
    }

    #[cfg(target_os = "linux")]
    pub fn request_permission() -> bool {
        // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) only changes this process's
        // permitted XSAVE features.
        unsafe {
            crate::cpu::linux::syscall3(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, 0)
                == 0
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn request_permission() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_lowers_the_level_and_names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        let previous = set_isa_limit(Isa::Scalar);
        assert_eq!(super::isa(), Isa::Scalar);
        set_isa_limit(previous);
        assert!(super::isa() <= detected());
    }
}
