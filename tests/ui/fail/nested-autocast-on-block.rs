use amp::prelude::*;

#[autocast(bf16)]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    let y = #[autocast(f32)]
    {
        x.matmul(x)
    };
    y.softmax(-1)
}

fn main() {}
