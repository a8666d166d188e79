#[autocast(f16)]
fn mixed(q: &Tensor<f32>, k: &Tensor<f32>) -> Tensor<f32> {
    #[keep_fp32]
    let scores = q.matmul(&k.t()) / 8.0;
    let scaled = #[keep_fp32] { scores.softmax(-1) * 2.0 };
    let f = #[keep_fp32] |t: &Tensor<f32>| t.sum(..);
    f(&scaled)
}
