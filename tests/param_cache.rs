//! The Param cast cache: one cast per (dtype, version), invalidated by updates, and never handing a cast
//! made without gradient history to code that needs a gradient (PyTorch bug #112583).

use amp::prelude::*;

fn param(values: &[f32]) -> Param {
    Param::named("w", Tensor::from_vec(values.to_vec(), [values.len()]))
}

/// Two grad-mode requests in one version return the same buffer; the cast happens once.
#[test]
fn reuses_the_cast_within_a_version() {
    let w = param(&[1.0, 2.5, -3.0]);
    assert!(!w.is_cast_cached::<bf16>());
    let a = w.get::<bf16>();
    assert!(w.is_cast_cached::<bf16>());
    let b = w.get::<bf16>();
    assert!(a.same_storage(&b));
    assert!(a.requires_grad() && b.requires_grad());
}

/// Each low-precision type has its own entry; f32 is the master itself.
#[test]
fn caches_each_dtype_separately() {
    let w = param(&[1.0 / 3.0, 1e-3]);
    let low_b = w.get::<bf16>();
    let low_h = w.get::<f16>();
    assert_eq!(
        low_b.to_vec(),
        vec![bf16::from_f32(1.0 / 3.0), bf16::from_f32(1e-3)]
    );
    assert_eq!(
        low_h.to_vec(),
        vec![f16::from_f32(1.0 / 3.0), f16::from_f32(1e-3)]
    );
    assert!(w.get::<bf16>().same_storage(&low_b));
    assert!(w.get::<f16>().same_storage(&low_h));
    assert!(w.get::<f32>().same_storage(&w.value()));
}

/// An update bumps the version; the next request casts the new value.
#[test]
fn update_invalidates_the_cast() {
    let w = param(&[1.0, 2.0]);
    let before = w.get::<bf16>();
    let version = w.version();
    w.update(|v| v.iter_mut().for_each(|x| *x += 0.5));
    assert_eq!(w.version(), version + 1);
    assert!(!w.is_cast_cached::<bf16>());
    let after = w.get::<bf16>();
    assert!(!after.same_storage(&before));
    assert_eq!(
        after.to_vec(),
        vec![bf16::from_f32(1.5), bf16::from_f32(2.5)]
    );
    // The old handout keeps its values: the update did not write through a shared buffer.
    assert_eq!(
        before.to_vec(),
        vec![bf16::from_f32(1.0), bf16::from_f32(2.0)]
    );
    w.set(Tensor::from_vec(vec![-1.0, -2.0], [2]));
    assert_eq!(w.version(), version + 2);
    assert_eq!(
        w.get::<bf16>().to_vec(),
        vec![bf16::from_f32(-1.0), bf16::from_f32(-2.0)]
    );
}

/// A cast made under no_grad is not reused in grad mode: the later forward still trains the weight.
#[test]
fn no_grad_cast_is_never_reused_for_training() {
    let w = param(&[0.5, -1.5, 2.0]);
    let eval = no_grad(|| w.get::<bf16>());
    assert!(!eval.requires_grad());
    let train = w.get::<bf16>();
    assert!(
        train.requires_grad(),
        "a grad-mode get must return a recorded cast"
    );
    assert!(!train.same_storage(&eval));
    let x = Tensor::<bf16>::from_vec(
        vec![
            bf16::from_f32(1.0),
            bf16::from_f32(2.0),
            bf16::from_f32(3.0),
        ],
        [3],
    );
    let grads = (&train * &x).sum(..).backward();
    let g = grads
        .get(&w)
        .expect("the master weight receives a gradient");
    assert_eq!(g.dtype(), DType::F32);
    assert_eq!(g.to_vec(), vec![1.0, 2.0, 3.0]);
}

/// A recorded cast serves no_grad requests too (its history is simply not used there).
#[test]
fn recorded_cast_serves_no_grad() {
    let w = param(&[4.0]);
    let train = w.get::<f16>();
    let eval = no_grad(|| w.get::<f16>());
    assert!(eval.same_storage(&train));
    let y = no_grad(|| &eval * 2.0);
    assert!(!y.requires_grad());
}

/// Uses of one cached cast accumulate their gradients on the master, across separate backward passes.
#[test]
fn gradients_accumulate_through_the_cached_cast() {
    let w = param(&[1.0, -2.0]);
    let a = Tensor::<bf16>::from_vec(vec![bf16::from_f32(3.0), bf16::from_f32(0.5)], [2]);
    let loss = (&w.get::<bf16>() * &a).sum(..).to_f32() + (&w.get::<bf16>() * 2.0).sum(..).to_f32();
    let g = loss.backward().get(&w).unwrap();
    assert_eq!(g.to_vec(), vec![5.0, 2.5]);
    // The same cached node works again for a second, independent backward pass.
    let g2 = w.get::<bf16>().square().sum(..).backward().get(&w).unwrap();
    assert_eq!(g2.to_vec(), vec![2.0, -4.0]);
}

/// Names and identities: clones share a parameter; distinct parameters have distinct gradient ids.
#[test]
fn identity_and_name() {
    let w = param(&[1.0]);
    let same = w.clone();
    same.set_name("layer.weight");
    assert_eq!(w.name(), "layer.weight");
    assert_eq!(w.grad_id(), same.grad_id());
    assert_ne!(w.grad_id(), param(&[1.0]).grad_id());
    same.update(|v| v[0] = 7.0);
    assert_eq!(w.value().to_vec(), vec![7.0]);
}

/// Setting a value of the wrong shape panics with the parameter's name and both shapes.
#[test]
#[should_panic(expected = "Param::set: new value of shape [3] for parameter 'w' of shape [2]")]
fn set_rejects_a_new_shape() {
    param(&[1.0, 2.0]).set(Tensor::zeros([3]));
}
