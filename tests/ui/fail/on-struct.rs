use amp::prelude::*;

#[autocast(bf16)]
struct Model {
    w: Param,
}

fn main() {}
