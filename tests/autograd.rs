//! Autograd behaviour beyond per-op gradients: when graphs are built, no-grad scopes, accumulation,
//! gradient element types, error messages, and very deep graphs.

use amp::prelude::*;
use amp::{AnyTensor, NoGradGuard, is_grad_enabled};

fn t(values: &[f64]) -> Tensor<f64> {
    Tensor::from_vec(values.to_vec(), [values.len()])
}

/// Ops on tensors that need no gradient record nothing.
#[test]
fn plain_tensors_build_no_graph() {
    let x = t(&[1.0, 2.0]);
    let y = (&x * &x).exp().sum(..);
    assert!(!x.requires_grad() && !y.requires_grad());
}

/// Inside no_grad nothing is recorded, even from leaves; the previous state comes back afterwards, also
/// for nested scopes and after a panic.
#[test]
fn no_grad_scopes_nest_and_restore() {
    let w = t(&[1.0]).with_grad();
    assert!(is_grad_enabled());
    let y = no_grad(|| {
        let inner = no_grad(|| &w * 2.0);
        assert!(!is_grad_enabled());
        assert!(!inner.requires_grad());
        &w + 1.0
    });
    assert!(!y.requires_grad());
    assert!(is_grad_enabled());
    {
        let _guard = NoGradGuard::new();
        assert!(!(&w * 3.0).requires_grad());
    }
    assert!((&w * 3.0).requires_grad());
    let _ = std::panic::catch_unwind(|| no_grad(|| panic!("inside no_grad")));
    assert!(
        is_grad_enabled(),
        "a panic inside no_grad must not leave recording off"
    );
}

/// A value used twice receives the sum of both paths' gradients (a diamond in the graph).
#[test]
fn gradients_accumulate_over_paths() {
    let x = t(&[2.0, -1.0]).with_grad();
    let a = x.exp();
    let b = &x * &x;
    let loss = (&a + &b).sum(..) + (&x * 3.0).sum(..);
    let g = loss.backward().get(&x).unwrap().to_vec();
    for (gi, xi) in g.iter().zip([2.0f64, -1.0]) {
        let expected = xi.exp() + 2.0 * xi + 3.0;
        assert!((gi - expected).abs() < 1e-12, "{gi} vs {expected}");
    }
}

/// Gradients have their leaf's element type: a bf16 leaf gets a bf16 gradient, an f32 leaf used through
/// bf16 ops gets an f32 gradient (the cast's backward casts back).
#[test]
fn gradient_types_follow_their_leaves() {
    let low =
        Tensor::<bf16>::from_vec(vec![bf16::from_f32(1.5), bf16::from_f32(-0.5)], [2]).with_grad();
    let master = Tensor::<f32>::from_vec(vec![0.25, 4.0], [2]).with_grad();
    let loss = (&low * &master.to_bf16()).sum(..).to_f32();
    let grads = loss.backward();
    let g_low: Tensor<bf16> = grads.get(&low).unwrap();
    let g_master: Tensor<f32> = grads.get(&master).unwrap();
    assert_eq!(
        g_low.to_vec(),
        vec![bf16::from_f32(0.25), bf16::from_f32(4.0)]
    );
    assert_eq!(g_master.to_vec(), vec![1.5, -0.5]);
    assert_eq!(grads.len(), 2);
    assert!(matches!(
        grads.get_by_id(master.grad_id_for_test()),
        Some(AnyTensor::F32(_))
    ));
}

/// Only leaves are reported; an intermediate tensor has no entry.
#[test]
fn intermediates_are_not_in_grads() {
    let x = t(&[1.0]).with_grad();
    let mid = &x * 2.0;
    let grads = (&mid * &mid).sum(..).backward();
    assert!(grads.get(&mid).is_none());
    assert_eq!(grads.get(&x).unwrap().to_vec(), vec![8.0]);
    let unrelated = t(&[5.0]).with_grad();
    assert!(grads.get(&unrelated).is_none());
}

/// backward on a non-scalar names the shape; backward on a tensor without history explains why.
#[test]
fn backward_misuse_is_explained() {
    let x = t(&[1.0, 2.0]).with_grad();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (&x * 2.0).backward()))
        .unwrap_err();
    let msg = panic_message(&err);
    assert!(msg.contains("backward") && msg.contains("[2]"), "{msg}");
    let err = std::panic::catch_unwind(|| t(&[1.0]).sum(..).backward()).unwrap_err();
    let msg = panic_message(&err);
    assert!(msg.contains("does not require a gradient"), "{msg}");
    let g = (&x * 2.0).backward_with(&t(&[1.0, 10.0])).get(&x).unwrap();
    assert_eq!(g.to_vec(), vec![2.0, 20.0]);
}

/// A graph 100,000 ops deep runs backward and is freed without overflowing the stack.
#[test]
fn very_deep_graphs_work() {
    let x = Tensor::<f32>::from_vec(vec![1.0], [1]).with_grad();
    let mut y = x.clone();
    for _ in 0..100_000 {
        y = &y * 1.0;
    }
    let g = y.sum(..).backward().get(&x).unwrap();
    assert_eq!(g.to_vec(), vec![1.0]);
    drop(y);
}

fn panic_message(err: &Box<dyn std::any::Any + Send>) -> String {
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

trait GradIdForTest {
    fn grad_id_for_test(&self) -> amp::GradId;
}
impl<E: Float> GradIdForTest for Tensor<E> {
    fn grad_id_for_test(&self) -> amp::GradId {
        <Tensor<E> as amp::GradKey>::grad_id(self).expect("a leaf")
    }
}
