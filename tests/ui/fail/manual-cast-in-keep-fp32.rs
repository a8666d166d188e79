use amp::prelude::*;

#[autocast(f16)]
fn forward(x: &Tensor<f32>) -> Tensor<f32> {
    #[keep_fp32]
    let y = x.to_f64().exp();
    y.to_f32()
}

fn main() {}
