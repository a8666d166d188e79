#[autocast(P)]
fn masked<P: Policy>(logits: &Tensor<f32>, target: &Tensor<f32>) -> Tensor<f32> {
    let shifted = logits * 1e9;
    shifted.sigmoid().binary_cross_entropy(target)
}
