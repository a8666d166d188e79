use amp::prelude::*;
use amp::train::{GradScaler, clip_grad_norm};

fn main() {
    let w = Param::new(Tensor::<f32>::ones([2]));
    let scaler = GradScaler::new();
    let mut scaled = scaler.scale(&w.value().sum(..)).backward();
    clip_grad_norm(&mut scaled, 1.0); // clipping applies to unscaled gradients
}
