::core::compile_error! {
    "manual cast `.to_f32()` inside #[autocast(f16)]\nhelp: autocast chooses the precision of every op in this region; remove the cast, or run this code in f32 by marking its statement, block or closure #[keep_fp32]"
}
::core::compile_error! {
    "nested #[autocast] inside #[autocast(f16)]: a region's policy is set once, on its fn, impl block or mod\nhelp: to run part of the region in f32, mark it #[keep_fp32] instead"
}
::core::compile_error! {
    "float literal `1e9` cannot be represented in f16 inside #[autocast(f16)]: it is 1e9, and the f16 range is ±65504\nhelp: it would become infinity; use a value within ±65504 (for a mask, f16::MIN is -65504), or compute this part in f32 with #[keep_fp32]"
}
::core::compile_error! {
    "`binary_cross_entropy` is not allowed inside #[autocast(f16)]: its gradients can overflow f16\nhelp: apply `bce_with_logits` to the logits instead of `binary_cross_entropy` to sigmoid probabilities; it is safe under autocast"
}
fn broken(x: &Tensor<f32>, mask: &Tensor<f32>) -> Tensor<f32> {
    let y = x.to_f32().matmul(&x.t());
    let z = y.softmax(-1);
    let masked = &z + &(mask * -1e9);
    masked.binary_cross_entropy(&z)
}
