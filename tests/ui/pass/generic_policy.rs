//! One model, generic over the policy, in the fn form and the impl form.
use amp::prelude::*;
use std::marker::PhantomData;

#[autocast(P)]
fn score<P: Policy>(x: &Tensor<f32>, w: &Param) -> Tensor<f32> {
    x.linear(w, None).log_softmax(-1)
}

struct Net<P: Policy> {
    w: Param,
    policy: PhantomData<P>,
}

#[autocast(P)]
impl<P: Policy> Net<P> {
    fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        x.linear(&self.w, None).relu()
    }
}

fn main() {
    let x = Tensor::<f32>::ones([2, 3]);
    let w = Param::new(Tensor::ones([4, 3]));
    for out in [score::<Bf16>(&x, &w), score::<F16>(&x, &w), score::<F32>(&x, &w)] {
        assert_eq!(out.shape(), &[2, 4]);
    }
    let net = Net::<Bf16> { w, policy: PhantomData };
    assert_eq!(net.forward(&x).dtype(), DType::F32);
}
