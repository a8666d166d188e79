//! Per-region overrides for ops the table does not know, and the precision report.
use amp::prelude::*;

trait Mish {
    fn mish(&self) -> Self;
}

impl<E: Float> Mish for Tensor<E> {
    fn mish(&self) -> Self {
        self * &self.softplus().tanh()
    }
}

#[autocast(bf16, f32 = [mish], low = [custom_mm])]
fn region(x: &Tensor<f32>) -> Tensor<f32> {
    x.matmul(&x.t()).mish()
}

fn main() {
    let x = Tensor::<f32>::ones([2, 3]);
    assert_eq!(region(&x).dtype(), DType::F32);
    let report = amp::report().to_string();
    assert!(report.contains("mish"), "{report}");
}
