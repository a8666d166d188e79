//! Losses, all with mean reduction (PyTorch's default), accumulated in f32 (f64 for f64) and returned as
//! a one-element tensor of the input's type. `cross_entropy` computes its log-softmax in f32; `nll_loss`
//! takes log-probabilities as given.

use crate::autograd::{grad_if, no_grad};
use crate::element::Float;
use crate::ops::buffer;
use crate::tensor::Tensor;
use amp_kernels::cpu::{Binary, Unary};
use amp_kernels::{Accum, Elem};

impl<E: Float> Tensor<E> {
    #[track_caller]
    fn check_same_shape(&self, op: &str, target: &Tensor<E>) {
        if self.shape() != target.shape() {
            panic!(
                "{op}: input of shape {:?} and target of shape {:?} differ",
                self.shape(),
                target.shape()
            );
        }
    }

    /// Cross-entropy of logits `self` (`[..., classes]`) against class indices `targets` (the leading
    /// shape), averaged: `log_softmax` then [`nll_loss`](Self::nll_loss).
    #[track_caller]
    pub fn cross_entropy(&self, targets: &Tensor<i64>) -> Tensor<E> {
        self.check_targets("cross_entropy", targets);
        // The log-probabilities are written in f32 (f64 for f64), so the loss and its gradient are
        // computed in f32 for bf16/f16 logits too.
        self.log_softmax_compute(-1)
            .nll_loss_named("cross_entropy", targets)
            .cast::<E>()
    }

    /// Negative log-likelihood of log-probabilities `self` (`[..., classes]`) at class indices `targets`
    /// (the leading shape), averaged over the targets.
    #[track_caller]
    pub fn nll_loss(&self, targets: &Tensor<i64>) -> Tensor<E> {
        self.check_targets("nll_loss", targets);
        self.nll_loss_named("nll_loss", targets)
    }

    #[track_caller]
    fn check_targets(&self, op: &str, targets: &Tensor<i64>) {
        let s = self.shape();
        if s.is_empty() || targets.shape() != &s[..s.len() - 1] {
            panic!(
                "{op}: targets of shape {:?} do not match input of shape {s:?} (expected the input's shape without its last, class dimension)",
                targets.shape()
            );
        }
        let classes = s[s.len() - 1];
        if let Some((i, &t)) = targets
            .host_data()
            .iter()
            .enumerate()
            .find(|&(_, &t)| t < 0 || t as u64 >= classes as u64)
        {
            panic!("{op}: target {t} at position {i} is out of range for {classes} classes");
        }
    }

    fn nll_loss_named(&self, op: &'static str, targets: &Tensor<i64>) -> Tensor<E> {
        let classes = self.shape()[self.rank() - 1];
        let n = targets.numel();
        if crate::ops::dispatch::device_of(op, &[self, targets]) != crate::Device::Cpu {
            // On a device: the same sum of picked log-probabilities as below, from tensor ops (its
            // gradient, -g/n at each target, comes from the backward of gather and mean).
            let picked = self
                .reshape([n, classes])
                .gather(1, &targets.reshape([n, 1]));
            return picked.mean(..).neg();
        }
        let x = self.data();
        let mut total = E::Acc::ZERO;
        for (row, &t) in targets.data().iter().enumerate() {
            total += x[row * classes + t as usize].to_acc();
        }
        let loss = -(total / E::Acc::c(n as f64));
        let (targets, shape) = (targets.clone(), self.shape().to_vec());
        Tensor::record_vec(
            op,
            vec![loss.cast::<E>()],
            Vec::new(),
            &[self.node()],
            move |g, _| {
                let scale = -g.item().to_acc() / E::Acc::c(n as f64);
                let mut dx = buffer::<E>(n * classes);
                for (row, &t) in targets.data().iter().enumerate() {
                    dx[row * classes + t as usize] = E::from_acc(scale);
                }
                vec![Some(Tensor::from_data(dx, shape.clone()).into())]
            },
        )
    }

    /// Mean squared error `mean((self - target)²)`; shapes must be equal.
    #[track_caller]
    pub fn mse_loss(&self, target: &Tensor<E>) -> Tensor<E> {
        self.check_same_shape("mse_loss", target);
        let d =
            self.cast::<E::Acc>()
                .binary_same(&target.cast::<E::Acc>(), Binary::Sub, "mse_loss");
        d.square().mean(..).cast::<E>()
    }

    /// Mean absolute error `mean(|self - target|)`; shapes must be equal.
    #[track_caller]
    pub fn l1_loss(&self, target: &Tensor<E>) -> Tensor<E> {
        self.check_same_shape("l1_loss", target);
        let d = self
            .cast::<E::Acc>()
            .binary_same(&target.cast::<E::Acc>(), Binary::Sub, "l1_loss");
        d.abs().mean(..).cast::<E>()
    }

    /// Binary cross-entropy on logits, `mean(softplus(x) - x·t)`, computed stably (the safe form of
    /// `binary_cross_entropy(sigmoid(x))`).
    #[track_caller]
    pub fn bce_with_logits(&self, target: &Tensor<E>) -> Tensor<E> {
        self.check_same_shape("bce_with_logits", target);
        let (x, t) = (
            self.detach().cast::<E::Acc>(),
            target.detach().cast::<E::Acc>(),
        );
        let loss = no_grad(|| {
            // max(x, 0) - x·t + ln(1 + e^{-|x|})
            let tail = x.abs().neg().exp().log1p();
            x.relu()
                .binary_same(&x.binary_same(&t, Binary::Mul, "bce"), Binary::Sub, "bce")
                .binary_same(&tail, Binary::Add, "bce")
                .mean(..)
        });
        let n = self.numel() as f64;
        Tensor::record(
            "bce_with_logits",
            // Kept where the inputs are (a device loss stays on the device).
            loss.cast::<E>().storage().clone(),
            Vec::new(),
            &[self.node(), target.node()],
            move |g, needs| {
                let scale = g.item().to_f64() / n;
                vec![
                    grad_if(needs[0], || {
                        x.sigmoid()
                            .binary_same(&t, Binary::Sub, "bce")
                            .map("bce", Unary::MulScalar(scale))
                            .cast::<E>()
                    }),
                    grad_if(needs[1], || {
                        x.map("bce", Unary::MulScalar(-scale)).cast::<E>()
                    }),
                ]
            },
        )
    }

    /// Binary cross-entropy on probabilities `self` in `[0, 1]`: `-mean(t·ln p + (1-t)·ln(1-p))`, with the
    /// logarithms clamped at -100 as PyTorch does. Prefer [`bce_with_logits`](Self::bce_with_logits): this
    /// form loses precision near 0 and 1, which is why autocast rejects it under f16.
    #[track_caller]
    pub fn binary_cross_entropy(&self, target: &Tensor<E>) -> Tensor<E> {
        self.check_same_shape("binary_cross_entropy", target);
        if let Some(p) = self
            .host_data()
            .iter()
            .find(|p| !(p.to_f64() >= 0.0 && p.to_f64() <= 1.0))
        {
            panic!(
                "binary_cross_entropy: input {p:?} is not a probability in [0, 1] (use bce_with_logits on logits)"
            );
        }
        let (p, t) = (
            self.detach().cast::<E::Acc>(),
            target.detach().cast::<E::Acc>(),
        );
        let (log_p, log_q) = no_grad(|| {
            (
                p.log().clamp(-100.0, f64::INFINITY),
                p.map("bce", Unary::ScalarSub(1.0))
                    .log()
                    .clamp(-100.0, f64::INFINITY),
            )
        });
        let loss = no_grad(|| {
            let one_minus_t = t.map("bce", Unary::ScalarSub(1.0));
            t.binary_same(&log_p, Binary::Mul, "bce")
                .binary_same(
                    &one_minus_t.binary_same(&log_q, Binary::Mul, "bce"),
                    Binary::Add,
                    "bce",
                )
                .mean(..)
                .neg()
        });
        let n = self.numel() as f64;
        Tensor::record(
            "binary_cross_entropy",
            // Kept where the inputs are (a device loss stays on the device).
            loss.cast::<E>().storage().clone(),
            Vec::new(),
            &[self.node(), target.node()],
            move |g, needs| {
                let scale = g.item().to_f64() / n;
                vec![
                    grad_if(needs[0], || {
                        // (p - t) / max(p·(1-p), 1e-12), as PyTorch's backward.
                        let denom = p
                            .binary_same(&p.map("bce", Unary::ScalarSub(1.0)), Binary::Mul, "bce")
                            .clamp(1e-12, f64::INFINITY);
                        p.binary_same(&t, Binary::Sub, "bce")
                            .binary_same(&denom, Binary::Div, "bce")
                            .map("bce", Unary::MulScalar(scale))
                            .cast::<E>()
                    }),
                    grad_if(needs[1], || {
                        log_q
                            .binary_same(&log_p, Binary::Sub, "bce")
                            .map("bce", Unary::MulScalar(scale))
                            .cast::<E>()
                    }),
                ]
            },
        )
    }

    /// Kullback–Leibler divergence with `self` as log-probabilities and `target` as probabilities:
    /// `mean(t · (ln t - x))` over all elements (PyTorch's `reduction="mean"`), with `0 · ln 0 = 0`.
    /// The gradient with respect to a zero target is taken as 0.
    #[track_caller]
    pub fn kl_div(&self, target: &Tensor<E>) -> Tensor<E> {
        self.check_same_shape("kl_div", target);
        let (x, t) = (
            self.detach().cast::<E::Acc>(),
            target.detach().cast::<E::Acc>(),
        );
        let zero = Tensor::<E::Acc>::zeros(Vec::new());
        let positive = t.gt(&zero);
        // ln t where t > 0, else 0 (so t·ln t is 0 there).
        let log_t = no_grad(|| t.where_same(&positive, &Tensor::ones(Vec::new())).log());
        let loss = no_grad(|| {
            t.binary_same(
                &log_t.binary_same(&x, Binary::Sub, "kl_div"),
                Binary::Mul,
                "kl_div",
            )
            .mean(..)
        });
        let n = self.numel() as f64;
        Tensor::record(
            "kl_div",
            // Kept where the inputs are (a device loss stays on the device).
            loss.cast::<E>().storage().clone(),
            Vec::new(),
            &[self.node(), target.node()],
            move |g, needs| {
                let scale = g.item().to_f64() / n;
                vec![
                    grad_if(needs[0], || {
                        t.map("kl_div", Unary::MulScalar(-scale)).cast::<E>()
                    }),
                    grad_if(needs[1], || {
                        let d = log_t
                            .binary_same(&x, Binary::Sub, "kl_div")
                            .map("kl_div", Unary::AddScalar(1.0));
                        d.where_same(&positive, &zero)
                            .map("kl_div", Unary::MulScalar(scale))
                            .cast::<E>()
                    }),
                ]
            },
        )
    }
}
