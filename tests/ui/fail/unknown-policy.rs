use amp::prelude::*;

#[autocast(bfloat16)]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    x.exp()
}

fn main() {}
