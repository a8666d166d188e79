//! The forms #[derive(Module)] accepts: named, tuple, unit and generic structs, fields skipped by type or
//! by attribute, renamed fields, raw identifiers, and a where clause.
use amp::prelude::*;
use std::marker::PhantomData;

#[derive(Module)]
struct Mlp {
    up: Linear,
    down: Linear,
}

/// A tuple struct: fields are named "0", "1", ...
#[derive(Module)]
struct Pair(Linear, #[module(skip)] Vec<u8>, Param);

/// A unit struct: a module without parameters.
#[derive(Module)]
struct Identity;

#[derive(Module)]
struct Model<P: Policy, M>
where
    M: Module,
{
    r#type: Embedding,
    blocks: Vec<M>,
    head: Option<Linear>,
    #[module(rename = "ln_f")]
    final_norm: LayerNorm,
    pair: Pair,
    identity: Identity,
    // Skipped by type: numbers, strings, tuples and arrays of them, PhantomData.
    dropout: f64,
    name: String,
    label: &'static str,
    kernel: [usize; 2],
    shape: (usize, usize),
    #[module(skip)]
    vocab: Vec<String>,
    _policy: PhantomData<P>,
}

fn main() {
    let mut rng = Rng::new(0);
    let model = Model::<Bf16, Mlp> {
        r#type: Embedding::new(5, 4, &mut rng),
        blocks: vec![Mlp {
            up: Linear::new(4, 8, true, &mut rng),
            down: Linear::new(8, 4, false, &mut rng),
        }],
        head: None,
        final_norm: LayerNorm::new([4], 1e-5, true),
        pair: Pair(
            Linear::new(2, 2, false, &mut rng),
            vec![1],
            Param::new(Tensor::ones([3])),
        ),
        identity: Identity,
        dropout: 0.1,
        name: String::from("model"),
        label: "tiny",
        kernel: [3, 3],
        shape: (1, 2),
        vocab: vec![],
        _policy: PhantomData,
    };
    let names: Vec<String> = model
        .named_params()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names,
        [
            "type.weight",
            "blocks.0.up.weight",
            "blocks.0.up.bias",
            "blocks.0.down.weight",
            "ln_f.weight",
            "ln_f.bias",
            "pair.0.weight",
            "pair.2",
        ]
    );
    assert!(Identity.params().is_empty());
    let _ = (
        &model.dropout,
        &model.name,
        &model.label,
        &model.kernel,
        &model.shape,
        &model.vocab,
    );
    assert_eq!(model.pair.1, [1]);
}
