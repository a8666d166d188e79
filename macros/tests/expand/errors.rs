#[autocast(f16)]
fn broken(x: &Tensor<f32>, mask: &Tensor<f32>) -> Tensor<f32> {
    let y = x.to_f32().matmul(&x.t());
    #[autocast(bf16)]
    let z = y.softmax(-1);
    let masked = &z + &(mask * -1e9);
    masked.binary_cross_entropy(&z)
}
