//! `#[keep_fp32]` on a let statement, an expression statement, a block and a closure.
use amp::prelude::*;

#[autocast(bf16)]
fn region(x: &Tensor<f32>) -> Tensor<f32> {
    #[keep_fp32]
    let a: Tensor<f32> = x.matmul(&x.t());
    let mut total = Tensor::<f32>::zeros([2, 2]);
    #[keep_fp32]
    {
        total = &total + &a;
    }
    let f = #[keep_fp32]
    |t: &Tensor<f32>| -> Tensor<f32> { t.matmul(&t.t()) };
    #[keep_fp32]
    drop(f(x).exp());
    &total + &f(x)
}

fn main() {
    let x = Tensor::<f32>::ones([2, 3]);
    assert_eq!(region(&x).to_vec(), vec![6.0; 4]);
}
