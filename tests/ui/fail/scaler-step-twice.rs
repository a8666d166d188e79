use amp::prelude::*;
use amp::train::{GradScaler, Sgd, SgdConfig};

fn main() {
    let w = Param::new(Tensor::<f32>::ones([2]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::new(0.1));
    let mut scaler = GradScaler::new();
    let scaled = scaler.scale(&w.value().sum(..)).backward();
    let grads = scaler.unscale(scaled);
    let _ = grads.step(&mut opt);
    let _ = grads.step(&mut opt); // one step per update: the unscaled gradients are spent
}
