use amp::prelude::*;

#[autocast(bf16)]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    x.to_f16().relu().to_f32()
}

fn main() {}
