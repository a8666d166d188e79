use amp::prelude::*;

#[autocast(P)]
fn masked_scores<P: Policy>(scores: &Tensor<f32>, mask: &Tensor<f32>) -> Tensor<f32> {
    let penalty = mask * -1e9;
    (scores + &penalty).softmax(-1)
}

fn main() {
    let x = Tensor::<f32>::zeros([2]);
    let _ = masked_scores::<Bf16>(&x, &x); // fine
    let _ = masked_scores::<F16>(&x, &x); // 1e9 does not fit f16
}
