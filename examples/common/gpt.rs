//! A GPT (decoder-only transformer) written once against f32 tensors with `#[autocast(P)]`: token and
//! position embeddings, pre-LayerNorm blocks of causal self-attention and a GELU MLP, a final LayerNorm and
//! a linear head. Under a low-precision policy the linears and the attention products run in bf16/f16 with
//! f32 accumulation, while the embeddings, the residual stream, the norms and the loss stay in f32.

use amp::prelude::*;
use std::marker::PhantomData;

/// The sizes of a [`Gpt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GptConfig {
    /// Distinct tokens (characters).
    pub vocab_size: usize,
    /// The longest input; also the size of the position table.
    pub context: usize,
    /// The width of the residual stream.
    pub width: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads per block (they split `width` evenly).
    pub heads: usize,
}

impl GptConfig {
    /// Ok if every size is positive and the heads divide the width.
    pub fn check(&self) -> Result<(), String> {
        let sizes = [
            self.vocab_size,
            self.context,
            self.width,
            self.layers,
            self.heads,
        ];
        if sizes.contains(&0) {
            return Err(format!("every model size must be positive: {self}"));
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(format!(
                "the width {} is not a multiple of the {} heads",
                self.width, self.heads
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for GptConfig {
    /// `layers=4 heads=4 width=128 context=128 vocab=76`: also the form stored in checkpoints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "layers={} heads={} width={} context={} vocab={}",
            self.layers, self.heads, self.width, self.context, self.vocab_size
        )
    }
}

/// Multi-head causal self-attention. Queries, keys and values have projections of their own (a fused
/// one would have to be split into three copies afterwards).
#[derive(Module)]
pub struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    /// Mixes the heads' outputs back into the residual stream.
    proj: Linear,
    heads: usize,
}

/// The position-wise MLP: width → 4·width → GELU → width.
#[derive(Module)]
pub struct Mlp {
    up: Linear,
    down: Linear,
}

/// One pre-LayerNorm transformer block: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module)]
pub struct Block {
    attn_norm: LayerNorm,
    attn: SelfAttention,
    mlp_norm: LayerNorm,
    mlp: Mlp,
}

/// A character-level GPT whose forward pass runs under policy `P`; its parameters are f32 masters.
#[derive(Module)]
pub struct Gpt<P: Policy> {
    token_embedding: Embedding,
    position_embedding: Embedding,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    head: Linear,
    #[module(skip)]
    config: GptConfig,
    policy: PhantomData<P>,
}

/// A weight drawn from N(0, std²).
fn normal(shape: [usize; 2], std: f64, rng: &mut Rng) -> Param {
    Param::named("weight", Tensor::<f32>::randn(shape, rng) * std)
}

/// GPT-2's initialization scale: weights N(0, 0.02²). (The layers' own PyTorch defaults, N(0, 1)
/// embeddings in particular, train much more slowly here.)
const INIT_STD: f64 = 0.02;
const LAYER_NORM_EPS: f64 = 1e-5;

impl<P: Policy> Gpt<P> {
    /// A freshly initialized model, as GPT-2 initializes one: weights N(0, 0.02²), except that the
    /// projections that write into the residual stream are scaled down by √(2·layers) so that the
    /// stream's variance does not grow with depth. Parameters are named (`blocks.0.attn.query.weight`)
    /// for the optimizer and checkpoints. Panics unless `config` passes [`GptConfig::check`].
    ///
    /// The linears have no biases, as in many recent GPTs: the model trains as well without them, and
    /// each bias would cost a column sum over every token of the batch in the backward pass.
    pub fn new(config: GptConfig, rng: &mut Rng) -> Self {
        if let Err(e) = config.check() {
            panic!("Gpt::new: {e}");
        }
        let GptConfig {
            vocab_size,
            context,
            width,
            layers,
            heads,
        } = config;
        let residual_std = INIT_STD / (2.0 * layers as f64).sqrt();
        let mut linear = |inputs: usize, outputs: usize, std: f64| Linear {
            weight: normal([outputs, inputs], std, rng),
            bias: None,
        };
        let mut blocks = Vec::with_capacity(layers);
        for _ in 0..layers {
            blocks.push(Block {
                attn_norm: LayerNorm::new(width, LAYER_NORM_EPS, true),
                attn: SelfAttention {
                    query: linear(width, width, INIT_STD),
                    key: linear(width, width, INIT_STD),
                    value: linear(width, width, INIT_STD),
                    proj: linear(width, width, residual_std),
                    heads,
                },
                mlp_norm: LayerNorm::new(width, LAYER_NORM_EPS, true),
                mlp: Mlp {
                    up: linear(width, 4 * width, INIT_STD),
                    down: linear(4 * width, width, residual_std),
                },
            });
        }
        let head = linear(width, vocab_size, INIT_STD);
        let mut embedding = |rows: usize| Embedding {
            weight: normal([rows, width], INIT_STD, rng),
        };
        let model = Gpt {
            token_embedding: embedding(vocab_size),
            position_embedding: embedding(context),
            blocks,
            final_norm: LayerNorm::new(width, LAYER_NORM_EPS, true),
            head,
            config,
            policy: PhantomData,
        };
        model.name_params();
        model
    }

    /// The sizes this model was built with.
    pub fn config(&self) -> GptConfig {
        self.config
    }

    /// Continues `prompt` by `count` tokens, feeding back each one chosen: the most likely token when
    /// `temperature` is 0, otherwise a draw from `softmax(logits / temperature)` with `rng`. Runs without
    /// recording gradients; the prompt must not be empty.
    pub fn generate(
        &self,
        prompt: &[u32],
        count: usize,
        temperature: f64,
        rng: &mut Rng,
    ) -> Vec<u32> {
        assert!(!prompt.is_empty(), "generate: the prompt must not be empty");
        let mut tokens = prompt.to_vec();
        no_grad(|| {
            for _ in 0..count {
                let window = &tokens[tokens.len().saturating_sub(self.config.context)..];
                let ids: Vec<i64> = window.iter().map(|&t| i64::from(t)).collect();
                let device = self.token_embedding.weight.value().device();
                let ids = Tensor::from_vec(ids, [1, window.len()]).to_device(device);
                let logits = self.logits(&ids.expect("the model's device works"));
                let vocab = self.config.vocab_size;
                let last = logits.to_vec().split_off((window.len() - 1) * vocab);
                tokens.push(choose(&last, temperature, rng));
            }
        });
        tokens.split_off(prompt.len())
    }
}

/// The index of the largest logit (temperature 0), or a draw from the tempered softmax.
fn choose(logits: &[f32], temperature: f64, rng: &mut Rng) -> u32 {
    let argmax = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    if temperature <= 0.0 {
        return argmax as u32;
    }
    let top = f64::from(logits[argmax]);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| ((f64::from(l) - top) / temperature).exp())
        .collect();
    let mut u = rng.uniform() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    argmax as u32
}

// The forward pass. The residual stream `x` starts as the f32 embeddings and stays f32: each block adds a
// low-precision result to it, and `f32 + bf16` promotes to f32 (as in PyTorch), so the small updates of
// many steps are not rounded away in bf16. Nothing here needs `#[keep_fp32]`: the policy table already
// keeps the norms and the loss in f32, and `attention` keeps its scores and softmax in f32 (a hand-written
// mask such as `scores + -1e9` would not even compile under f16).
#[autocast(P)]
impl<P: Policy> Gpt<P> {
    /// Logits `[batch, time, vocab]` for token ids `[batch, time]` (time at most the context).
    pub fn logits(&self, ids: &Tensor<i64>) -> Tensor<f32> {
        let time = ids.shape()[1];
        // Made on the host, like every constructor, and moved to where the ids are (PyTorch's
        // `torch.arange(t, device=ids.device)`).
        let positions = Tensor::<i64>::arange(time)
            .to_device(ids.device())
            .unwrap_or_else(|e| panic!("positions on {}: {e}", ids.device()));
        let mut x = self.token_embedding.forward(ids) + self.position_embedding.forward(&positions);
        for block in &self.blocks {
            let attended = self.self_attention(&block.attn, &block.attn_norm.forward(&x));
            x = &x + attended;
            let h = block.mlp.up.forward(&block.mlp_norm.forward(&x)).gelu();
            x = &x + block.mlp.down.forward(&h);
        }
        self.head.forward(&self.final_norm.forward(&x))
    }

    /// The mean cross-entropy (in f32) of the next-token predictions for `ids` against `targets`.
    pub fn loss(&self, ids: &Tensor<i64>, targets: &Tensor<i64>) -> Tensor<f32> {
        self.logits(ids).cross_entropy(targets)
    }

    /// Causal multi-head self-attention of `x` (`[batch, time, width]`, f32): the projections and the
    /// attention products run in `P::Low`; the scores and their softmax in f32 inside `attention`.
    fn self_attention(&self, attn: &SelfAttention, x: &Tensor<f32>) -> Tensor<P::Low> {
        let (batch, time, width) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let split = [batch, time, attn.heads, width / attn.heads];
        // [batch, time, width] → [batch, heads, time, head width]
        let q = attn.query.forward(x).reshape(split).transpose(1, 2);
        let k = attn.key.forward(x).reshape(split).transpose(1, 2);
        let v = attn.value.forward(x).reshape(split).transpose(1, 2);
        let heads = q.attention(&k, &v, true);
        let merged = heads.transpose(1, 2).reshape([batch, time, width]);
        attn.proj.forward(&merged)
    }
}
