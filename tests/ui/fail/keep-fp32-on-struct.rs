use amp::prelude::*;

#[keep_fp32]
struct Stats {
    mean: f32,
}

fn main() {}
