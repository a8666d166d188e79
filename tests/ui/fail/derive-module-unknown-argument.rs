use amp::prelude::*;

#[derive(Module)]
struct Model {
    #[module(frobnicate)]
    fc: Linear,
}

fn main() {}
