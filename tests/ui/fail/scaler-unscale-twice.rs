use amp::prelude::*;
use amp::train::GradScaler;

fn main() {
    let w = Param::new(Tensor::<f32>::ones([2]));
    let mut scaler = GradScaler::new();
    let scaled = scaler.scale(&w.value().sum(..)).backward();
    let first = scaler.unscale(scaled);
    drop(first);
    let _second = scaler.unscale(scaled); // the gradients were consumed by the first unscale
}
