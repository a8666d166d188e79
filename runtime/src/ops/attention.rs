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
}
