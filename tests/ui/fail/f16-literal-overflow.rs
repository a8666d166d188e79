use amp::prelude::*;

#[autocast(f16)]
fn masked_scores(scores: &Tensor<f32>, mask: &Tensor<f32>) -> Tensor<f32> {
    let penalty = mask * -1e9;
    (scores + &penalty).softmax(-1)
}

fn main() {}
