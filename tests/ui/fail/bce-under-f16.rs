use amp::prelude::*;

#[autocast(f16)]
fn loss(logits: &Tensor<f32>, target: &Tensor<f32>) -> Tensor<f32> {
    logits.sigmoid().binary_cross_entropy(target)
}

fn main() {}
