//! Inside a region, values that are not tensors behave exactly as without the attribute.
use amp::prelude::*;

struct Logits(Vec<f32>);

impl Logits {
    fn softmax(&self) -> Vec<f32> {
        let z: f32 = self.0.iter().map(|v| v.exp()).sum();
        self.0.iter().map(|v| v.exp() / z).collect()
    }
}

#[autocast(f16)]
fn region(l: &Logits, v: &[f32]) -> (f32, f32, usize, i32, Vec<f32>) {
    let a = f32::exp(0.5) + 1.5f32.exp();
    let b: f32 = v.iter().copied().sum();
    let n = v.len() * 2 + 1;
    let i = 7i32.pow(2) - 3 * 4;
    (a, b, n, i, l.softmax())
}

fn main() {
    let l = Logits(vec![0.0, 1.0]);
    let (a, b, n, i, s) = region(&l, &[1.0, 2.0]);
    assert_eq!(a, f32::exp(0.5) + 1.5f32.exp());
    assert_eq!((b, n, i), (3.0, 5, 37));
    assert_eq!(s, l.softmax());
}
