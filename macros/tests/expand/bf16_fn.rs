#[autocast(bf16)]
fn attention_block(x: &Tensor<f32>, w: &Param, y: &Tensor<i64>) -> Tensor<f32> {
    let h: Tensor<f32> = x.linear(w, None);
    let a = h.gelu();
    let p = a.softmax(-1);
    p.cross_entropy(y)
}
