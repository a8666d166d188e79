use amp::prelude::*;

struct Tokenizer {
    vocab: Vec<String>,
}

#[derive(Module)]
struct Model {
    fc: Linear,
    tokenizer: Tokenizer,
}

fn main() {}
