use amp::prelude::*;

#[autocast(bf16, f16)]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    x.exp()
}

fn main() {}
