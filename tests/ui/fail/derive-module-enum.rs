use amp::prelude::*;

#[derive(Module)]
enum Head {
    Linear(Linear),
    Norm(LayerNorm),
}

fn main() {}
