use amp::prelude::*;

fn main() {
    let a = Tensor::<bf16>::ones([2]);
    let b = Tensor::<f16>::ones([2]);
    let _ = &a + &b;
}
