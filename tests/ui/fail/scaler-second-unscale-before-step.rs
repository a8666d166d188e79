use amp::prelude::*;
use amp::train::{GradScaler, Sgd, SgdConfig};

fn main() {
    let w = Param::new(Tensor::<f32>::ones([2]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::new(0.1));
    let mut scaler = GradScaler::new();
    let a = scaler.scale(&w.value().sum(..)).backward();
    let b = scaler.scale(&w.value().square().sum(..)).backward();
    let first = scaler.unscale(a);
    let second = scaler.unscale(b); // the scaler is busy until the first step updates it
    let _ = first.step(&mut opt);
    let _ = second.step(&mut opt);
}
