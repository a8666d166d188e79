use amp::prelude::*;

#[autocast(bf16)]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    #[autocast(f16)]
    let y = x.matmul(x);
    y.softmax(-1)
}

fn main() {}
