use amp::prelude::*;

#[autocast(bf16, f32 = [a, b, a], f32 = [c])]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    x.exp()
}

fn main() {}
