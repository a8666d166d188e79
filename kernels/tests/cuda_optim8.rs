//! The 8-bit optimizer kernels on a device against the CPU ones, bit for bit: weights, codes and block
//! scales after several steps, on odd sizes (a partial last block), with NaN and infinite gradient
//! elements. Needs a CUDA device (or the emulated one of `scripts/cuda-emulator`).
#![cfg(feature = "cuda")]

use amp_kernels::cpu::{self, AdamStep, Codebook, Quantized, SgdStep, quant_blocks};
use amp_kernels::cuda::{self, DeviceBuffer, DeviceQuantized, Gpu};
use std::sync::Arc;

fn gpu() -> Arc<Gpu> {
    cuda::gpu(0).unwrap_or_else(|e| panic!("these tests need a CUDA device: {e}"))
}

/// Uniform values in [-scale, scale) from a seeded LCG.
fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A block-quantized state in host memory.
struct HostState {
    codes: Vec<u8>,
    absmax: Vec<f32>,
}

impl HostState {
    /// `values` quantized in `book`.
    fn of(values: &[f32], book: &Codebook) -> Self {
        let mut state = HostState::zeros(values.len(), 0);
        cpu::quantize_blockwise(values, book, state.view());
        state
    }

    /// `n` codes `code` with zero scales.
    fn zeros(n: usize, code: u8) -> Self {
        HostState {
            codes: vec![code; n],
            absmax: vec![0.0; quant_blocks(n)],
        }
    }

    fn view(&mut self) -> Quantized<'_> {
        Quantized {
            codes: &mut self.codes,
            absmax: &mut self.absmax,
        }
    }

    fn upload(&self, gpu: &Arc<Gpu>) -> DeviceState {
        DeviceState {
            codes: DeviceBuffer::upload_bytes(gpu, &self.codes).unwrap(),
            absmax: DeviceBuffer::upload(gpu, &self.absmax).unwrap(),
        }
    }
}

/// A block-quantized state on the device.
struct DeviceState {
    codes: DeviceBuffer,
    absmax: DeviceBuffer,
}

impl DeviceState {
    fn view(&mut self) -> DeviceQuantized<'_> {
        DeviceQuantized {
            codes: &mut self.codes,
            absmax: &mut self.absmax,
        }
    }

    /// Panics unless the codes and scales are those of `host`, bit for bit.
    fn assert_equals(&self, what: &str, host: &HostState) {
        assert_eq!(
            host.codes,
            self.codes.download_bytes().unwrap(),
            "{what}: codes"
        );
        assert_same_bits(
            &format!("{what}: scales"),
            &host.absmax,
            &self.absmax.download::<f32>().unwrap(),
        );
    }
}

/// A gradient with a NaN and an infinity in it, and one whose square overflows (where there is room):
/// Adam's second moment then becomes infinite, the block's scale too, and at the next step the block's
/// moments are NaN, whose absmax is 0 (NaN is ignored).
fn gradient(n: usize, seed: u64) -> Vec<f32> {
    let mut g = random(n, seed, 0.5);
    if n > 10 {
        g[3] = f32::NAN;
        g[n - 2] = f32::NEG_INFINITY;
        g[n / 2] = 3e25;
    }
    g
}

/// Equal bits, or NaN on both sides (a GPU writes its own NaN payload).
fn assert_same_bits(what: &str, cpu: &[f32], gpu: &[f32]) {
    assert_eq!(cpu.len(), gpu.len(), "{what}: lengths");
    for (i, (a, b)) in cpu.iter().zip(gpu).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{what}: element {i} is {b} on the device and {a} on the CPU"
        );
    }
}

const SIZES: [usize; 6] = [1, 255, 256, 257, 1000, 4099];

#[test]
#[ignore = "needs a CUDA device"]
fn adam8bit_on_the_device_matches_the_cpu_bit_for_bit() {
    let gpu = gpu();
    for n in SIZES {
        for decoupled in [true, false] {
            let mut w = random(n, 1, 1.0);
            let mut m = HostState::of(&random(n, 2, 0.1), Codebook::signed());
            let v0: Vec<f32> = random(n, 3, 0.01).iter().map(|x| x.abs()).collect();
            let mut v = HostState::of(&v0, Codebook::unsigned());
            let mut dw = DeviceBuffer::upload(&gpu, &w).unwrap();
            let (mut dm, mut dv) = (m.upload(&gpu), v.upload(&gpu));
            for step in 1..=3 {
                let g = gradient(n, 10 + step);
                let hp = AdamStep {
                    lr: 1e-2,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 0.1,
                    decoupled,
                    step,
                };
                cpu::adam8bit_step(&mut w, &g, m.view(), v.view(), &hp);
                let dg = DeviceBuffer::upload(&gpu, &g).unwrap();
                cuda::adam8bit_step(&mut dw, &dg, dm.view(), dv.view(), &hp).unwrap();
            }
            let what = format!("n = {n}, decoupled = {decoupled}");
            assert_same_bits(
                &format!("{what}: weights"),
                &w,
                &dw.download::<f32>().unwrap(),
            );
            dm.assert_equals(&format!("{what}: first moment"), &m);
            dv.assert_equals(&format!("{what}: second moment"), &v);
        }
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn momentum8bit_on_the_device_matches_the_cpu_bit_for_bit() {
    let gpu = gpu();
    for n in SIZES {
        for nesterov in [false, true] {
            let mut w = random(n, 4, 1.0);
            let mut b = HostState::zeros(n, Codebook::signed().zero_code());
            let mut dw = DeviceBuffer::upload(&gpu, &w).unwrap();
            let mut db = b.upload(&gpu);
            let hp = SgdStep {
                lr: 0.05,
                momentum: 0.9,
                dampening: if nesterov { 0.0 } else { 0.1 },
                weight_decay: 1e-3,
                nesterov,
            };
            for step in 0..3 {
                let g = gradient(n, 20 + step);
                let first = step == 0;
                cpu::momentum8bit_step(&mut w, &g, b.view(), first, &hp);
                let dg = DeviceBuffer::upload(&gpu, &g).unwrap();
                cuda::momentum8bit_step(&mut dw, &dg, db.view(), first, &hp).unwrap();
            }
            let what = format!("n = {n}, nesterov = {nesterov}");
            assert_same_bits(
                &format!("{what}: weights"),
                &w,
                &dw.download::<f32>().unwrap(),
            );
            db.assert_equals(&format!("{what}: momentum"), &b);
        }
    }
}

/// Values exactly on a midpoint between two entries round to the even code, and tiny negative values keep
/// their sign, as on the CPU.
#[test]
#[ignore = "needs a CUDA device"]
fn ties_and_signs_of_codes_are_as_on_the_cpu() {
    let gpu = gpu();
    let book = Codebook::signed();
    // Momentum from a first step is the gradient itself (no weight decay): make it the midpoints, in a
    // block whose absmax is 1 (the largest entry).
    let mut g: Vec<f32> = book.midpoints().to_vec();
    g.push(1.0);
    // And, in a second block of absmax 1, values too small for any entry but zero: a negative one takes
    // the code below zero's (the sign fix), a positive one zero's.
    g.extend([1.0, -1e-12, 1e-12, -3e-9, -1e-10]);
    let n = g.len();
    let hp = SgdStep {
        lr: 0.0,
        momentum: 0.9,
        dampening: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    };
    let mut w = vec![0f32; n];
    let mut b = HostState::zeros(n, 0);
    let (mut dw, dg) = (
        DeviceBuffer::upload(&gpu, &w).unwrap(),
        DeviceBuffer::upload(&gpu, &g).unwrap(),
    );
    let mut db = b.upload(&gpu);
    cpu::momentum8bit_step(&mut w, &g, b.view(), true, &hp);
    cuda::momentum8bit_step(&mut dw, &dg, db.view(), true, &hp).unwrap();
    db.assert_equals("the midpoints and tiny values", &b);
}
