//! Scaled dot-product attention with the softmax computed in f32 (f64 for f64) inside.

use crate::autograd::grad_if;
use crate::element::Float;
use crate::ops::matmul::{gemm_new, spec};
use crate::ops::output_buffer;
use crate::tensor::Tensor;
use amp_kernels::Accum;
use amp_kernels::cpu::{self, Dim3};

impl<E: Float> Tensor<E> {
    /// `softmax(q·kᵀ/√d [+ causal mask]) · v` for queries `self` of shape `[..., lq, d]`, keys `[..., lk, d]`
    /// and values `[..., lk, dv]` (equal leading dimensions). With `causal`, query `i` attends to keys
    /// `0..=i` (PyTorch's `is_causal`). Scores and softmax are kept in f32 (f64 for f64) whatever `E` is;
    /// the probabilities are rounded to `E` only for the product with `v`.
    #[track_caller]
    pub fn attention(&self, key: &Tensor<E>, value: &Tensor<E>, causal: bool) -> Tensor<E> {
        let (sq, sk, sv) = (self.shape(), key.shape(), value.shape());
        let r = sq.len();
        let ok = r >= 2
            && sk.len() == r
            && sv.len() == r
            && sq[..r - 2] == sk[..r - 2]
            && sk[..r - 2] == sv[..r - 2]
            && sq[r - 1] == sk[r - 1]
            && sk[r - 2] == sv[r - 2];
        if !ok {
            panic!(
                "attention: query {sq:?}, key {sk:?} and value {sv:?} must be [..., lq, d], [..., lk, d] and [..., lk, dv]"
            );
        }
        crate::autocast::trace_low_op("attention", E::DTYPE);
        let (lq, lk, d, dv) = (sq[r - 2], sk[r - 2], sq[r - 1], sv[r - 1]);
        let batch: usize = sq[..r - 2].iter().product();
        let scale = 1.0 / (d as f64).sqrt();
        if crate::ops::dispatch::device_of("attention", &[self, key, value]) != crate::Device::Cpu {
            return self.attention_composed(key, value, causal, scale);
        }
        let mut scores: Vec<E::Acc> = gemm_new(
            spec(batch, lq, lk, d, (false, true), (lq * d, lk * d)),
            self.data(),
            key.data(),
        );
        let scale_acc = E::Acc::c(scale);
        for (row, s) in scores.chunks_exact_mut(lk.max(1)).enumerate() {
            // Query i sees keys 0..=i when causal: the rest are masked (whole runs, so both loops
            // vectorize).
            let seen = if causal {
                (row % lq.max(1) + 1).min(lk)
            } else {
                lk
            };
            let (kept, masked) = s.split_at_mut(seen);
            kept.iter_mut().for_each(|v| *v *= scale_acc);
            masked.fill(E::Acc::NEG_INFINITY);
        }
        let rows = Dim3 {
            outer: batch * lq,
            size: lk,
            inner: 1,
        };
        let mut probs = output_buffer::<E::Acc>(scores.len());
        cpu::softmax(&scores, &mut probs, rows);
        drop(scores);
        let mut probs_low = output_buffer::<E>(probs.len());
        cpu::cast(&probs, &mut probs_low);
        let out: Vec<E> = gemm_new(
            spec(batch, lq, dv, lk, (false, false), (lq * lk, lk * dv)),
            &probs_low,
            value.data(),
        );
        let mut shape = sq[..r - 2].to_vec();
        shape.extend([lq, dv]);
        let (q, k, v) = (self.detach(), key.detach(), value.detach());
        let inputs = [self.node(), key.node(), value.node()];
        Tensor::record_vec("attention", out, shape, &inputs, move |g, needs| {
            let dv_grad = grad_if(needs[2], || {
                let dv_: Vec<E> = gemm_new(
                    spec(batch, lk, dv, lq, (true, false), (lq * lk, lq * dv)),
                    &probs_low,
                    g.data(),
                );
                Tensor::from_data(dv_, v.shape().to_vec())
            });
            if !needs[0] && !needs[1] {
                return vec![None, None, dv_grad];
            }
            // dP = g · vᵀ in f32, then the softmax backward, then the 1/√d of the scores.
            let dp: Vec<E::Acc> = gemm_new(
                spec(batch, lq, lk, dv, (false, true), (lq * dv, lk * dv)),
                g.data(),
                v.data(),
            );
            let mut ds = output_buffer::<E::Acc>(dp.len());
            cpu::softmax_backward(&probs, &dp, &mut ds, rows);
            drop(dp);
            ds.iter_mut().for_each(|x| *x *= scale_acc);
            let mut ds_low = output_buffer::<E>(ds.len());
            cpu::cast(&ds, &mut ds_low);
            drop(ds);
            let dq = grad_if(needs[0], || {
                let d_: Vec<E> = gemm_new(
                    spec(batch, lq, d, lk, (false, false), (lq * lk, lk * d)),
                    &ds_low,
                    k.data(),
                );
                Tensor::from_data(d_, q.shape().to_vec())
            });
            let dk = grad_if(needs[1], || {
                let d_: Vec<E> = gemm_new(
                    spec(batch, lk, d, lq, (true, false), (lq * lk, lq * d)),
                    &ds_low,
                    q.data(),
                );
                Tensor::from_data(d_, k.shape().to_vec())
            });
            vec![dq, dk, dv_grad]
        })
    }

    /// Attention from tensor ops, for devices: the same arithmetic as the fused CPU path (scores and
    /// softmax in f32, probabilities rounded to `E` for the product with `v`), with the gradients from
    /// the ops' own backward passes. The scores' GEMM runs on f32 copies of q and k: the products of
    /// bf16 or f16 values are exact in f32, so this equals a low-precision GEMM accumulating in f32.
    pub(crate) fn attention_composed(
        &self,
        key: &Tensor<E>,
        value: &Tensor<E>,
        causal: bool,
        scale: f64,
    ) -> Tensor<E> {
        let r = self.rank();
        let (lq, lk) = (self.shape()[r - 2], key.shape()[r - 2]);
        let scores = self
            .cast::<E::Acc>()
            .matmul(&key.cast::<E::Acc>().transpose(-2, -1))
            .map("attention", amp_kernels::cpu::Unary::MulScalar(scale));
        let scores = if causal {
            // Query i sees keys 0..=i: the mask is built on the host and moved to the scores' device.
            let seen: Vec<bool> = (0..lq * lk).map(|k| k % lk <= k / lk).collect();
            let seen = Tensor::from_data(seen, vec![lq, lk])
                .to_device(self.device())
                .unwrap_or_else(|e| panic!("attention: {e}"));
            scores.where_same(&seen, &Tensor::full(Vec::new(), f64::NEG_INFINITY))
        } else {
            scores
        };
        scores.softmax(-1).cast::<E>().matmul(value)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Rng, Tensor};

    /// The composed attention that devices run gives the fused CPU path's values and gradients.
    #[test]
    fn composed_attention_matches_the_fused_path() {
        let mut rng = Rng::new(4);
        for causal in [false, true] {
            let q = Tensor::<f64>::randn([2, 3, 7, 5], &mut rng).with_grad();
            let k = Tensor::<f64>::randn([2, 3, 9, 5], &mut rng).with_grad();
            let v = Tensor::<f64>::randn([2, 3, 9, 4], &mut rng).with_grad();
            let fused = q.attention(&k, &v, causal);
            let composed = q.attention_composed(&k, &v, causal, 1.0 / 5f64.sqrt());
            let close = |a: Vec<f64>, b: Vec<f64>| {
                a.iter()
                    .zip(&b)
                    .all(|(x, y)| (x - y).abs() <= 1e-12 * (1.0 + x.abs()))
            };
            assert!(close(fused.to_vec(), composed.to_vec()), "causal {causal}");
            let probe = Tensor::<f64>::randn(fused.shape(), &mut rng);
            let gf = (&fused * &probe).sum(..).backward();
            let gc = (&composed * &probe).sum(..).backward();
            for t in [&q, &k, &v] {
                let (a, b) = (gf.get(t).unwrap().to_vec(), gc.get(t).unwrap().to_vec());
                assert!(close(a, b), "causal {causal}: gradients differ");
            }
        }
    }
}
