use amp::prelude::*;
use amp::train::{GradScaler, Optimizer, Sgd, SgdConfig};

fn main() {
    let w = Param::new(Tensor::<f32>::ones([2]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::new(0.1));
    let scaler = GradScaler::new();
    let scaled = scaler.scale(&w.value().sum(..)).backward();
    opt.step(&scaled); // still multiplied by the scale: unscale first
}
