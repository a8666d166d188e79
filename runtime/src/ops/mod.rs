//! Tensor ops, one family per module. Every op validates shapes (panicking with the op's name and the
//! shapes at the caller's line), calls a kernel, and records its backward when an input needs a gradient.

mod attention;
mod binary;
mod cast;
mod conv;
pub(crate) mod dispatch;
mod dropout;
mod index;
mod loss;
mod matmul;
mod norm;
mod reduce;
mod shape;
mod softmax;
mod unary;

pub use binary::Scalar;
pub use conv::Pair;

use crate::element::Element;

/// A buffer of `n` default elements for a kernel to write into (a reused one when possible).
pub(crate) fn buffer<E: Element>(n: usize) -> Vec<E> {
    crate::pool::take(n)
}

/// A buffer of `n` elements with unspecified values, for a kernel that writes every one of them (no
/// zeroing of a reused buffer).
pub(crate) fn output_buffer<E: Element>(n: usize) -> Vec<E> {
    crate::pool::take_for_overwrite(n)
}

#[cfg(test)]
mod tests {
    use crate::pool::{empty_cache, give};
    use crate::{Rng, Tensor, bf16};

    /// Fills this thread's pool with NaN buffers of every size the ops below ask for, so an op that took
    /// an output buffer without writing every element would leave NaN in its result.
    fn poison_pool(sizes: &[usize]) {
        for &n in sizes {
            for _ in 0..4 {
                give(vec![f32::NAN; n]);
                give(vec![bf16::NAN; n]);
            }
        }
    }

    /// Every op that writes into an unzeroed pooled buffer (`output_buffer`), forward and backward, gives
    /// bit for bit the same values as on fresh zeroed buffers. The tensors are large enough to be pooled.
    #[test]
    fn ops_on_reused_unzeroed_buffers_match_fresh_buffers() {
        let mut rng = Rng::new(7);
        let (rows, cols) = (129, 257); // 33,153 elements: 130 KB of f32, 65 KB of bf16
        let x = Tensor::<f32>::randn([rows, cols], &mut rng).with_grad();
        let w = Tensor::<f32>::randn([cols, cols], &mut rng).with_grad();
        let bias = Tensor::<f32>::randn([cols], &mut rng);
        let run = || {
            let h = x.matmul(&w).gelu();
            let low = h.to_bf16().matmul(&w.to_bf16()).to_f32();
            let mask = low.gt(&Tensor::zeros([1]));
            let mixed = (&low + &bias).where_(&mask, &h);
            let normed = mixed.layer_norm(&[cols], None, None, 1e-5).softmax(-1)
                + mixed.rms_norm(&[cols], None, 1e-5).log_softmax(-1);
            let seq = mixed.reshape([1, rows, cols]);
            let turned = seq.permute(&[0, 2, 1]);
            let moved = Tensor::cat(&[&turned, &turned.narrow(-1, 1, 7)], -1).broadcast_to([
                2,
                cols,
                rows + 7,
            ]);
            let attended = seq.attention(&seq, &x.reshape([1, rows, cols]), true);
            let loss = (&normed * &normed).sum(..) + (&attended * &attended).sum(..);
            let grads = loss.backward();
            let mut values = normed.to_vec();
            values.extend(attended.to_vec());
            values.extend(moved.to_vec());
            values.extend(grads.get(&x).unwrap().to_vec());
            values.extend(grads.get(&w).unwrap().to_vec());
            values
        };
        empty_cache();
        let fresh = run();
        assert!(fresh.iter().all(|v| v.is_finite()));
        poison_pool(&[
            rows * cols,
            cols * cols,
            rows * cols * 2,
            rows * rows,
            2 * cols * (rows + 7),
        ]);
        let reused = run();
        empty_cache();
        let same = fresh
            .iter()
            .zip(&reused)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "an op left part of a reused buffer unwritten");
    }
}
