use amp::prelude::*;

#[autocast(bf16, f32 = my_op)]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    x.exp()
}

fn main() {}
