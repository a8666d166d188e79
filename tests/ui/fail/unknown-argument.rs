use amp::prelude::*;

#[autocast(bf16, fp64 = [my_op])]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    x.exp()
}

fn main() {}
