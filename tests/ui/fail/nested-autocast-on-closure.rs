use amp::prelude::*;

#[autocast(bf16)]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    let f = #[autocast(f16)]
    |t: &Tensor<f32>| t.matmul(t);
    f(x).softmax(-1)
}

fn main() {}
