use amp::prelude::*;

#[autocast(bf16)]
fn forward(x: &Tensor<f32>, w: &Tensor<f32>) -> Tensor<f32> {
    x.cast::<bf16>().matmul(&w.cast::<bf16>())
}

fn main() {}
