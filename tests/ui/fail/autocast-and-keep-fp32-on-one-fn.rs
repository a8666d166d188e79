use amp::prelude::*;

#[autocast(bf16)]
#[keep_fp32]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    x.exp()
}

fn main() {}
