//! The layout transforms that turn a 2-D convolution into a matrix product.

use crate::{Elem, Float};

/// Geometry of a 2-D convolution over one `channels × height × width` image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Input channels.
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Zero padding above and below.
    pub pad_h: usize,
    /// Zero padding left and right.
    pub pad_w: usize,
}

impl Conv2dGeometry {
    /// Output height: `(height + 2·pad_h - kernel_h) / stride_h + 1`.
    pub fn out_h(&self) -> usize {
        (self.height + 2 * self.pad_h - self.kernel_h) / self.stride_h + 1
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.width + 2 * self.pad_w - self.kernel_w) / self.stride_w + 1
    }

    /// Rows of the column matrix: `channels · kernel_h · kernel_w`.
    pub fn col_rows(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w
    }

    /// Columns of the column matrix: `out_h · out_w`.
    pub fn col_cols(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Input position for output `(oy, ox)` and kernel tap `(ky, kx)`, `None` in the padding.
    #[inline]
    fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let y = (oy * self.stride_h + ky).checked_sub(self.pad_h)?;
        let x = (ox * self.stride_w + kx).checked_sub(self.pad_w)?;
        (y < self.height && x < self.width).then_some((y, x))
    }
}

/// `cols[(c·kh + ky)·kw + kx][oy·ow + ox] = x[c][oy·sh + ky - ph][ox·sw + kx - pw]`, zero in the padding.
pub fn im2col<E: Elem>(x: &[E], g: &Conv2dGeometry, cols: &mut [E]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    assert!(
        x.len() == g.channels * g.height * g.width && cols.len() == g.col_rows() * g.col_cols(),
        "im2col: lengths do not match the geometry"
    );
    for c in 0..g.channels {
        for ky in 0..g.kernel_h {
            for kx in 0..g.kernel_w {
                let row = ((c * g.kernel_h + ky) * g.kernel_w + kx) * oh * ow;
                for oy in 0..oh {
                    for ox in 0..ow {
                        cols[row + oy * ow + ox] = match g.source(oy, ox, ky, kx) {
                            Some((y, xx)) => x[(c * g.height + y) * g.width + xx],
                            None => E::default(),
                        };
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back onto the input position it came from.
pub fn col2im<E: Float>(cols: &[E], g: &Conv2dGeometry, dx: &mut [E]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    assert!(
        dx.len() == g.channels * g.height * g.width && cols.len() == g.col_rows() * g.col_cols(),
        "col2im: lengths do not match the geometry"
    );
    let mut acc: Vec<E::Acc> = dx.iter().map(|v| v.to_acc()).collect();
    for c in 0..g.channels {
        for ky in 0..g.kernel_h {
            for kx in 0..g.kernel_w {
                let row = ((c * g.kernel_h + ky) * g.kernel_w + kx) * oh * ow;
                for oy in 0..oh {
                    for ox in 0..ow {
                        if let Some((y, xx)) = g.source(oy, ox, ky, kx) {
                            acc[(c * g.height + y) * g.width + xx] +=
                                cols[row + oy * ow + ox].to_acc();
                        }
                    }
                }
            }
        }
    }
    for (d, a) in dx.iter_mut().zip(acc) {
        *d = E::from_acc(a);
    }
}
