use amp::prelude::*;

// The Lightning documentation's example of a bug autocast exists to prevent: a low-precision op on an
// f16 and an f32 tensor. Outside a region it does not compile (PyTorch fails at run time).
fn main() {
    let a = Tensor::<f16>::ones([2, 2]);
    let b = Tensor::<f32>::ones([2, 2]);
    let _ = a.matmul(&b);
}
