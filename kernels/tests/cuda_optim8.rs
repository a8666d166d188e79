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

/// A host state quantized from `values`.
fn quantized(values: &[f32], book: &Codebook) -> (Vec<u8>, Vec<f32>) {
    let (mut codes, mut absmax) = (
        vec![0u8; values.len()],
        vec![0f32; quant_blocks(values.len())],
    );
    cpu::quantize_blockwise(
        values,
        book,
        Quantized {
            codes: &mut codes,
            absmax: &mut absmax,
        },
    );
    (codes, absmax)
}

/// A gradient with a NaN and an infinity in it (where there is room).
fn gradient(n: usize, seed: u64) -> Vec<f32> {
    let mut g = random(n, seed, 0.5);
    if n > 10 {
        g[3] = f32::NAN;
        g[n - 2] = f32::NEG_INFINITY;
    }
    g
}

fn assert_same_bits(what: &str, cpu: &[f32], gpu: &[f32]) {
    assert_eq!(cpu.len(), gpu.len(), "{what}: lengths");
    for (i, (a, b)) in cpu.iter().zip(gpu).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
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
            let (mut mc, mut ma) = quantized(&random(n, 2, 0.1), Codebook::signed());
            let v0: Vec<f32> = random(n, 3, 0.01).iter().map(|x| x.abs()).collect();
            let (mut vc, mut va) = quantized(&v0, Codebook::unsigned());
            let mut dw = DeviceBuffer::upload(&gpu, &w).unwrap();
            let (mut dmc, mut dma) = (
                DeviceBuffer::upload_bytes(&gpu, &mc).unwrap(),
                DeviceBuffer::upload(&gpu, &ma).unwrap(),
            );
            let (mut dvc, mut dva) = (
                DeviceBuffer::upload_bytes(&gpu, &vc).unwrap(),
                DeviceBuffer::upload(&gpu, &va).unwrap(),
            );
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
                let m = Quantized {
                    codes: &mut mc,
                    absmax: &mut ma,
                };
                let v = Quantized {
                    codes: &mut vc,
                    absmax: &mut va,
                };
                cpu::adam8bit_step(&mut w, &g, m, v, &hp);
                let dg = DeviceBuffer::upload(&gpu, &g).unwrap();
                let m = DeviceQuantized {
                    codes: &mut dmc,
                    absmax: &mut dma,
                };
                let v = DeviceQuantized {
                    codes: &mut dvc,
                    absmax: &mut dva,
                };
                cuda::adam8bit_step(&mut dw, &dg, m, v, &hp).unwrap();
            }
            let what = format!("n = {n}, decoupled = {decoupled}");
            assert_same_bits(
                &format!("{what}: weights"),
                &w,
                &dw.download::<f32>().unwrap(),
            );
            assert_eq!(
                mc,
                dmc.download_bytes().unwrap(),
                "{what}: first-moment codes"
            );
            assert_eq!(
                vc,
                dvc.download_bytes().unwrap(),
                "{what}: second-moment codes"
            );
            assert_same_bits(
                &format!("{what}: m scales"),
                &ma,
                &dma.download::<f32>().unwrap(),
            );
            assert_same_bits(
                &format!("{what}: v scales"),
                &va,
                &dva.download::<f32>().unwrap(),
            );
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
            let (mut bc, mut ba) = (
                vec![Codebook::signed().zero_code(); n],
                vec![0f32; quant_blocks(n)],
            );
            let mut dw = DeviceBuffer::upload(&gpu, &w).unwrap();
            let (mut dbc, mut dba) = (
                DeviceBuffer::upload_bytes(&gpu, &bc).unwrap(),
                DeviceBuffer::upload(&gpu, &ba).unwrap(),
            );
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
                cpu::momentum8bit_step(
                    &mut w,
                    &g,
                    Quantized {
                        codes: &mut bc,
                        absmax: &mut ba,
                    },
                    first,
                    &hp,
                );
                let dg = DeviceBuffer::upload(&gpu, &g).unwrap();
                let b = DeviceQuantized {
                    codes: &mut dbc,
                    absmax: &mut dba,
                };
                cuda::momentum8bit_step(&mut dw, &dg, b, first, &hp).unwrap();
            }
            let what = format!("n = {n}, nesterov = {nesterov}");
            assert_same_bits(
                &format!("{what}: weights"),
                &w,
                &dw.download::<f32>().unwrap(),
            );
            assert_eq!(bc, dbc.download_bytes().unwrap(), "{what}: momentum codes");
            assert_same_bits(
                &format!("{what}: scales"),
                &ba,
                &dba.download::<f32>().unwrap(),
            );
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
    let (mut bc, mut ba) = (vec![0u8; n], vec![0f32; quant_blocks(n)]);
    cpu::momentum8bit_step(
        &mut w,
        &g,
        Quantized {
            codes: &mut bc,
            absmax: &mut ba,
        },
        true,
        &hp,
    );
    let (mut dw, dg) = (
        DeviceBuffer::upload(&gpu, &w).unwrap(),
        DeviceBuffer::upload(&gpu, &g).unwrap(),
    );
    let (mut dbc, mut dba) = (
        DeviceBuffer::upload_bytes(&gpu, &vec![0u8; n]).unwrap(),
        DeviceBuffer::upload(&gpu, &vec![0f32; quant_blocks(n)]).unwrap(),
    );
    let b = DeviceQuantized {
        codes: &mut dbc,
        absmax: &mut dba,
    };
    cuda::momentum8bit_step(&mut dw, &dg, b, true, &hp).unwrap();
    assert_eq!(
        bc,
        dbc.download_bytes().unwrap(),
        "codes of the midpoints and of tiny values"
    );
}
