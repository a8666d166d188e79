use amp::prelude::*;

#[keep_fp32(strict)]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    x.exp()
}

fn main() {}
