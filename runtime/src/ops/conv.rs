//! Convolutions (NCHW), lowered to the GEMM through im2col.

use crate::autograd::grad_if;
use crate::element::Float;
use crate::ops::buffer;
use crate::ops::dispatch::on_device;
use crate::ops::matmul::{gemm_new, spec};
use crate::tensor::Tensor;
use amp_kernels::cpu::{self, Binary, Conv2dGeometry};
#[cfg(feature = "cuda")]
use amp_kernels::cuda;
use std::sync::Arc;

/// The column matrices of `n` images on the host, one [`cpu::im2col`] per image.
fn im2col_host<E: Float>(x: &[E], geom: &Conv2dGeometry, n: usize) -> Vec<E> {
    let (rows, cols) = (geom.col_rows(), geom.col_cols());
    let image = geom.channels * geom.height * geom.width;
    let mut columns = buffer::<E>(n * rows * cols);
    for (x, c) in x
        .chunks_exact(image.max(1))
        .zip(columns.chunks_exact_mut((rows * cols).max(1)))
    {
        cpu::im2col(x, geom, c);
    }
    columns
}

/// A per-dimension setting (stride, padding) given once for both dimensions (`2`) or per dimension
/// (`(2, 1)` or `[2, 1]`, height first).
pub trait Pair {
    /// The (height, width) values.
    fn pair(self) -> [usize; 2];
}

impl Pair for usize {
    fn pair(self) -> [usize; 2] {
        [self, self]
    }
}
impl Pair for (usize, usize) {
    fn pair(self) -> [usize; 2] {
        [self.0, self.1]
    }
}
impl Pair for [usize; 2] {
    fn pair(self) -> [usize; 2] {
        self
    }
}

impl<E: Float> Tensor<E> {
    /// 2-D convolution (cross-correlation, as PyTorch) of an `[n, c, h, w]` input with an
    /// `[out_c, c, kh, kw]` weight and an optional `[out_c]` bias. Accumulates in f32 (f64 for f64).
    #[track_caller]
    pub fn conv2d(
        &self,
        weight: &Tensor<E>,
        bias: Option<&Tensor<E>>,
        stride: impl Pair,
        padding: impl Pair,
    ) -> Tensor<E> {
        let (sx, sw) = (self.shape(), weight.shape());
        let [sh, sw_] = stride.pair();
        let [ph, pw] = padding.pair();
        if sx.len() != 4 || sw.len() != 4 || sx[1] != sw[1] {
            panic!(
                "conv2d: input {sx:?} and weight {sw:?} must be [n, c, h, w] and [out_c, c, kh, kw] with equal c"
            );
        }
        if sw[2] == 0 || sw[3] == 0 {
            panic!("conv2d: kernel {:?} has an empty dimension", &sw[2..]);
        }
        if sh == 0 || sw_ == 0 {
            panic!("conv2d: stride must be positive, got ({sh}, {sw_})");
        }
        if sx[2] + 2 * ph < sw[2] || sx[3] + 2 * pw < sw[3] {
            panic!(
                "conv2d: kernel {:?} is larger than the padded input {:?}",
                &sw[2..],
                [sx[2] + 2 * ph, sx[3] + 2 * pw]
            );
        }
        if let Some(b) = bias
            && b.shape() != [sw[0]]
        {
            panic!(
                "conv2d: bias of shape {:?} does not match {} output channels",
                b.shape(),
                sw[0]
            );
        }
        crate::autocast::trace_low_op("conv2d", E::DTYPE);
        let geom = Conv2dGeometry {
            channels: sx[1],
            height: sx[2],
            width: sx[3],
            kernel_h: sw[2],
            kernel_w: sw[3],
            stride_h: sh,
            stride_w: sw_,
            pad_h: ph,
            pad_w: pw,
        };
        let (n, out_c) = (sx[0], sw[0]);
        let (rows, cols) = (geom.col_rows(), geom.col_cols());
        let image = geom.channels * geom.height * geom.width;
        if crate::ops::dispatch::device_of("conv2d", &[self, weight]) != crate::Device::Cpu {
            let y = self.conv2d_composed(weight, geom);
            return match bias {
                Some(b) => y.binary_same(&b.reshape([out_c, 1, 1]), Binary::Add, "conv2d"),
                None => y,
            };
        }
        let columns = im2col_host(self.data(), &geom, n);
        // out[i] = W [out_c, rows] · columns[i] [rows, cols]
        let out: Vec<E> = gemm_new(
            spec(n, out_c, cols, rows, (false, false), (0, rows * cols)),
            weight.data(),
            &columns,
        );
        let shape = vec![n, out_c, geom.out_h(), geom.out_w()];
        let w = weight.detach();
        let y = Tensor::record_vec(
            "conv2d",
            out,
            shape,
            &[self.node(), weight.node()],
            move |g, needs| {
                let dx = grad_if(needs[0], || {
                    // d columns[i] = Wᵀ · g[i], then scatter back onto the image.
                    let dcols: Vec<E> = gemm_new(
                        spec(n, rows, cols, out_c, (true, false), (0, out_c * cols)),
                        w.data(),
                        g.data(),
                    );
                    let mut dx = buffer::<E>(n * image);
                    for (d, c) in dx
                        .chunks_exact_mut(image.max(1))
                        .zip(dcols.chunks_exact((rows * cols).max(1)))
                    {
                        cpu::col2im(c, &geom, d);
                    }
                    Tensor::from_data(dx, vec![n, geom.channels, geom.height, geom.width])
                });
                let dw = grad_if(needs[1], || {
                    // dW = Σ_i g[i] · columns[i]ᵀ
                    // The sum over images accumulates in f32 (f64), rounded once at the end.
                    let mut dw = buffer::<E::Acc>(out_c * rows);
                    for i in 0..n {
                        let mut s = spec(1, out_c, rows, cols, (false, true), (0, 0));
                        s.accumulate = i > 0;
                        cpu::gemm(
                            &s,
                            &g.data()[i * out_c * cols..],
                            &columns[i * rows * cols..],
                            &mut dw,
                        );
                    }
                    let mut out = buffer::<E>(dw.len());
                    cpu::cast(&dw, &mut out);
                    Tensor::from_data(out, w.shape().to_vec())
                });
                vec![dx, dw]
            },
        );
        match bias {
            Some(b) => y.binary_same(&b.reshape([out_c, 1, 1]), Binary::Add, "conv2d"),
            None => y,
        }
    }

    /// 1-D convolution of an `[n, c, l]` input with an `[out_c, c, k]` weight and optional `[out_c]` bias.
    #[track_caller]
    pub fn conv1d(
        &self,
        weight: &Tensor<E>,
        bias: Option<&Tensor<E>>,
        stride: usize,
        padding: usize,
    ) -> Tensor<E> {
        let (sx, sw) = (self.shape(), weight.shape());
        if sx.len() != 3 || sw.len() != 3 || sx[1] != sw[1] {
            panic!(
                "conv1d: input {sx:?} and weight {sw:?} must be [n, c, l] and [out_c, c, k] with equal c"
            );
        }
        if stride == 0 {
            panic!("conv1d: stride must be positive, got {stride}");
        }
        if sx[2] + 2 * padding < sw[2] {
            panic!(
                "conv1d: kernel size {} is larger than the padded input length {}",
                sw[2],
                sx[2] + 2 * padding
            );
        }
        if let Some(b) = bias
            && b.shape() != [sw[0]]
        {
            panic!(
                "conv1d: bias of shape {:?} does not match {} output channels",
                b.shape(),
                sw[0]
            );
        }
        let y = self
            .unsqueeze(2)
            .conv2d(&weight.unsqueeze(2), bias, (1, stride), (0, padding));
        y.squeeze(2)
    }

    /// conv2d (no bias) from tensor ops, for devices: a differentiable im2col, then one matmul of the
    /// `[out_c, c·kh·kw]` weight with every image's columns; the gradients come from the ops' backward.
    pub(crate) fn conv2d_composed(&self, weight: &Tensor<E>, geom: Conv2dGeometry) -> Tensor<E> {
        let (n, out_c) = (self.shape()[0], weight.shape()[0]);
        let columns = self.im2col(geom);
        let flat = weight.reshape([out_c, geom.col_rows()]);
        flat.matmul(&columns)
            .reshape([n, out_c, geom.out_h(), geom.out_w()])
    }

    /// The column matrices `[n, c·kh·kw, oh·ow]` of `[n, c, h, w]` images, recorded (backward: col2im).
    fn im2col(&self, geom: Conv2dGeometry) -> Tensor<E> {
        let n = self.shape()[0];
        let (rows, cols) = (geom.col_rows(), geom.col_cols());
        let image = geom.channels * geom.height * geom.width;
        let out = on_device!("conv2d", [self],
            cpu => im2col_host(self.data(), &geom, n),
            cuda [x] => cuda::im2col(x, &geom, n));
        let shape = self.shape().to_vec();
        Tensor::record(
            "conv2d",
            Arc::new(out),
            vec![n, rows, cols],
            &[self.node()],
            move |g, _| {
                let dx = on_device!("conv2d", [g],
                cpu => {
                    let mut dx = buffer::<E>(n * image);
                    for (d, c) in dx
                        .chunks_exact_mut(image.max(1))
                        .zip(g.data().chunks_exact((rows * cols).max(1)))
                    {
                        cpu::col2im(c, &geom, d);
                    }
                    dx
                },
                cuda [gb] => cuda::col2im(gb, &geom, n));
                vec![Some(
                    Tensor::from_storage(Arc::new(dx), shape.clone(), None).into(),
                )]
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::{Rng, Tensor};
    use amp_kernels::cpu::Conv2dGeometry;

    /// The composed conv2d that devices run gives the fused CPU path's values and gradients (so on a
    /// device it is only the kernels that differ).
    #[test]
    fn composed_conv2d_matches_the_fused_path() {
        let mut rng = Rng::new(9);
        let x = Tensor::<f64>::randn([3, 2, 9, 7], &mut rng).with_grad();
        let w = Tensor::<f64>::randn([5, 2, 3, 2], &mut rng).with_grad();
        let geom = Conv2dGeometry {
            channels: 2,
            height: 9,
            width: 7,
            kernel_h: 3,
            kernel_w: 2,
            stride_h: 2,
            stride_w: 1,
            pad_h: 1,
            pad_w: 1,
        };
        let fused = x.conv2d(&w, None, (2, 1), (1, 1));
        let composed = x.conv2d_composed(&w, geom);
        assert_eq!(fused.shape(), composed.shape());
        let close = |a: Vec<f64>, b: Vec<f64>| {
            a.iter()
                .zip(&b)
                .all(|(x, y)| (x - y).abs() <= 1e-12 * (1.0 + x.abs()))
        };
        assert!(close(fused.to_vec(), composed.to_vec()));
        let probe = Tensor::<f64>::randn(fused.shape(), &mut rng);
        let gf = (&fused * &probe).sum(..).backward();
        let gc = (&composed * &probe).sum(..).backward();
        assert!(close(
            gf.get(&x).unwrap().to_vec(),
            gc.get(&x).unwrap().to_vec()
        ));
        assert!(close(
            gf.get(&w).unwrap().to_vec(),
            gc.get(&w).unwrap().to_vec()
        ));
    }
}
