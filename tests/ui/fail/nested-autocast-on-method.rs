use amp::prelude::*;

struct Model(Param);

#[autocast(bf16)]
impl Model {
    #[autocast(f16)]
    fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        x.linear(&self.0, None)
    }
}

fn main() {}
