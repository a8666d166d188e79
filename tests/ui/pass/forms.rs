//! Every form of the attributes compiles: fn, method, impl block, inline mod, keep_fp32 on fn and method.
use amp::prelude::*;

#[autocast(bf16)]
fn free_fn(x: &Tensor<f32>) -> Tensor<f32> {
    x.matmul(&x.t()).softmax(-1)
}

struct Model(Param);

impl Model {
    #[autocast(f16)]
    fn method(&self, x: &Tensor<f32>) -> Tensor<f32> {
        x.linear(&self.0, None)
    }

    #[keep_fp32]
    fn in_f32(&self, x: &Tensor<bf16>) -> Tensor<f32> {
        x.linear(&self.0, None)
    }
}

#[autocast(bf16)]
impl Model {
    fn impl_method(&self, x: &Tensor<f32>) -> Tensor<f32> {
        x.linear(&self.0, None).gelu()
    }

    #[keep_fp32]
    fn kept(&self, x: &Tensor<f32>) -> Tensor<f32> {
        x.linear(&self.0, None)
    }
}

#[autocast(f32)]
mod module {
    use amp::prelude::*;

    pub fn inside(x: &Tensor<f32>) -> Tensor<f32> {
        x.exp().sum(..)
    }
}

#[keep_fp32]
fn kept_fn(x: &Tensor<bf16>) -> Tensor<f32> {
    x.relu() + 1.0
}

fn main() {
    let x = Tensor::<f32>::ones([2, 3]);
    let m = Model(Param::new(Tensor::ones([4, 3])));
    assert_eq!(free_fn(&x).shape(), &[2, 2]);
    assert_eq!(m.method(&x).shape(), &[2, 4]);
    assert_eq!(m.in_f32(&x.to_bf16()).dtype(), DType::F32);
    assert_eq!(m.impl_method(&x).shape(), &[2, 4]);
    assert_eq!(m.kept(&x).shape(), &[2, 4]);
    assert_eq!(module::inside(&x).item(), 6.0 * std::f32::consts::E);
    assert_eq!(kept_fn(&x.to_bf16()).to_vec(), vec![2.0; 6]);
}
