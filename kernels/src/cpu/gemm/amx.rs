//! The AMX-BF16 microkernel: a 32 × 32 f32 block of C held in four 16 × 16 accumulator tiles, fed by two
//! A tiles (16 rows × 16 bf16 pairs each) and two B tiles (16 pair-rows × 16 columns) per 32 values of k.
//!
//! The kernel is written once against [`Tiles`], the five tile instructions it uses. [`Hardware`] issues
//! them (`ldtilecfg`, `tilezero`, `tileloadd`, `tdpbf16ps`, `tilestored`); [`Emulated`] carries them out
//! in software with the same operand layout and arithmetic, so the packing, addressing and blocking
//! around the instructions are tested on any machine.
//!
//! Operand layouts (from the driver's packing): A is packed one row after another (`steps` pair-words
//! per row, a multiple of 16), which is the layout a tile row load wants; B is packed in panels of 32
//! columns, step by step (`b[s·32 + j]` = the pair (B[2s, j], B[2s+1, j])), which is exactly a B tile
//! row of 16 pair-words at stride 128 bytes.

/// Pair-words of k per tile load (16 words = 32 bf16 values = 64 bytes per row).
pub(super) const TILE_STEPS: usize = 16;

/// The tile instructions the kernel uses. Tile numbers are const parameters because the hardware
/// encodes them in the instruction.
pub(super) trait Tiles {
    /// Zeroes tile `T`.
    ///
    /// # Safety
    /// Tiles must be configured (see [`Hardware::configure`]).
    unsafe fn zero<const T: u8>(&mut self);
    /// Loads 16 rows of 64 bytes into tile `T`, row `r` from `base + r·stride`.
    ///
    /// # Safety
    /// Every row must be readable.
    unsafe fn load<const T: u8>(&mut self, base: *const u8, stride: usize);
    /// Stores tile `T`'s 16 rows of 64 bytes, row `r` at `base + r·stride`.
    ///
    /// # Safety
    /// Every row must be writable.
    unsafe fn store<const T: u8>(&mut self, base: *mut u8, stride: usize);
    /// `tdpbf16ps`: `C[m][n] += A[m].pair[k] · B[k].pair[n]` summed over the 16 pairs k, in f32, for the
    /// f32 tile `C`, the bf16-pair tiles `A` (rows m) and `B` (rows k).
    ///
    /// # Safety
    /// Tiles must be configured and loaded.
    unsafe fn dot<const C: u8, const A: u8, const B: u8>(&mut self);
}

/// `c[r·ldc + j] (+)= Σ_s pair(a[r·steps + s]) · pair(b[s·32 + j])` for r, j < 32: the 32 × 32 block
/// of C at `c` (row stride `ldc` f32 values) from A rows packed `steps` words apart and a 32-column B
/// panel.
///
/// # Safety
/// `steps` is a multiple of [`TILE_STEPS`]; `a` holds 32 rows of `steps` words, `b` holds `steps` rows
/// of 32 words, `c` is readable and writable for 32 rows of 32 values at stride `ldc`; tiles are
/// configured.
pub(super) unsafe fn kernel_32x32<U: Tiles>(
    tiles: &mut U,
    steps: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    debug_assert_eq!(steps % TILE_STEPS, 0);
    let c_stride = ldc * 4;
    // Accumulators: tile 0 = rows 0-15 × columns 0-15, 1 = rows 0-15 × 16-31, 2 = rows 16-31 × 0-15,
    // 3 = rows 16-31 × 16-31.
    let c_at = |row: usize, col: usize| unsafe { c.add(row * ldc + col).cast::<u8>() };
    unsafe {
        if add {
            tiles.load::<0>(c_at(0, 0), c_stride);
            tiles.load::<1>(c_at(0, 16), c_stride);
            tiles.load::<2>(c_at(16, 0), c_stride);
            tiles.load::<3>(c_at(16, 16), c_stride);
        } else {
            tiles.zero::<0>();
            tiles.zero::<1>();
            tiles.zero::<2>();
            tiles.zero::<3>();
        }
        let a_stride = steps * 4;
        for s0 in (0..steps).step_by(TILE_STEPS) {
            tiles.load::<4>(a.add(s0).cast(), a_stride);
            tiles.load::<5>(a.add(16 * steps + s0).cast(), a_stride);
            tiles.load::<6>(b.add(s0 * 32).cast(), 128);
            tiles.load::<7>(b.add(s0 * 32 + 16).cast(), 128);
            tiles.dot::<0, 4, 6>();
            tiles.dot::<1, 4, 7>();
            tiles.dot::<2, 5, 6>();
            tiles.dot::<3, 5, 7>();
        }
        tiles.store::<0>(c_at(0, 0), c_stride);
        tiles.store::<1>(c_at(0, 16), c_stride);
        tiles.store::<2>(c_at(16, 0), c_stride);
        tiles.store::<3>(c_at(16, 16), c_stride);
    }
}

/// The tile unit itself (x86_64 with AMX-BF16, permission granted by the OS; see `isa`).
pub(super) struct Hardware;

/// The tile configuration `ldtilecfg` reads: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl Hardware {
    /// Loads the tile configuration on this thread (before any other tile instruction).
    ///
    /// # Safety
    /// The CPU must have AMX and the process must hold the permission to use it.
    #[cfg(target_arch = "x86_64")]
    pub(super) unsafe fn configure() {
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            config.bytes_per_row[t] = 64;
            config.rows[t] = 16;
        }
        // SAFETY: the caller guarantees AMX; the configuration is a valid palette-1 layout.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly));
        }
    }

    /// Returns the tiles to their initial state, so the OS need not save them on a context switch.
    ///
    /// # Safety
    /// As [`configure`](Hardware::configure).
    #[cfg(target_arch = "x86_64")]
    pub(super) unsafe fn release() {
        // SAFETY: the caller guarantees AMX.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

#[cfg(target_arch = "x86_64")]
impl Tiles for Hardware {
    #[inline(always)]
    unsafe fn zero<const T: u8>(&mut self) {
        unsafe { std::arch::asm!("tilezero tmm{t}", t = const T, options(nostack, nomem)) };
    }

    #[inline(always)]
    unsafe fn load<const T: u8>(&mut self, base: *const u8, stride: usize) {
        unsafe {
            std::arch::asm!(
                "tileloadd tmm{t}, [{base} + {stride}*1]",
                t = const T,
                base = in(reg) base,
                stride = in(reg) stride,
                options(nostack, readonly),
            )
        };
    }

    #[inline(always)]
    unsafe fn store<const T: u8>(&mut self, base: *mut u8, stride: usize) {
        unsafe {
            std::arch::asm!(
                "tilestored [{base} + {stride}*1], tmm{t}",
                t = const T,
                base = in(reg) base,
                stride = in(reg) stride,
                options(nostack),
            )
        };
    }

    #[inline(always)]
    unsafe fn dot<const C: u8, const A: u8, const B: u8>(&mut self) {
        unsafe {
            std::arch::asm!(
                "tdpbf16ps tmm{c}, tmm{a}, tmm{b}",
                c = const C,
                a = const A,
                b = const B,
                options(nostack, nomem),
            )
        };
    }
}

/// The eight tiles in memory, each 16 rows of 16 32-bit words, operated on as the instructions define.
pub(super) struct Emulated {
    tiles: [[[u32; 16]; 16]; 8],
}

impl Emulated {
    pub(super) fn new() -> Self {
        Emulated {
            tiles: [[[0; 16]; 16]; 8],
        }
    }
}

/// The f32 value of the low (`half` 0) or high (`half` 1) bf16 of a pair-word; subnormal bf16 inputs
/// count as zero, as `tdpbf16ps` treats them.
fn pair_half(word: u32, half: u32) -> f32 {
    let bits = (word >> (16 * half)) & 0xffff;
    if bits & 0x7f80 == 0 {
        return if bits & 0x8000 != 0 { -0.0 } else { 0.0 };
    }
    f32::from_bits(bits << 16)
}

impl Tiles for Emulated {
    unsafe fn zero<const T: u8>(&mut self) {
        self.tiles[T as usize] = [[0; 16]; 16];
    }

    unsafe fn load<const T: u8>(&mut self, base: *const u8, stride: usize) {
        for (r, row) in self.tiles[T as usize].iter_mut().enumerate() {
            for (w, word) in row.iter_mut().enumerate() {
                // SAFETY: the caller guarantees 16 readable rows of 64 bytes.
                *word = unsafe { base.add(r * stride + 4 * w).cast::<u32>().read_unaligned() };
            }
        }
    }

    unsafe fn store<const T: u8>(&mut self, base: *mut u8, stride: usize) {
        for (r, row) in self.tiles[T as usize].iter().enumerate() {
            for (w, word) in row.iter().enumerate() {
                // SAFETY: the caller guarantees 16 writable rows of 64 bytes.
                unsafe {
                    base.add(r * stride + 4 * w)
                        .cast::<u32>()
                        .write_unaligned(*word)
                };
            }
        }
    }

    unsafe fn dot<const C: u8, const A: u8, const B: u8>(&mut self) {
        let (a, b) = (self.tiles[A as usize], self.tiles[B as usize]);
        let c = &mut self.tiles[C as usize];
        for (m, c_row) in c.iter_mut().enumerate() {
            for (n, c_word) in c_row.iter_mut().enumerate() {
                let mut acc = f32::from_bits(*c_word);
                for k in 0..16 {
                    for half in 0..2 {
                        acc += pair_half(a[m][k], half) * pair_half(b[k][n], half);
                    }
                }
                *c_word = acc.to_bits();
            }
        }
    }
}
