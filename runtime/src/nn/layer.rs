//! How a layer's `forward` takes part in an autocast region.

use crate::policy::Policy;

/// A layer whose `forward` an `#[autocast]` region runs at the region's precision: inside a region,
/// `self.fc.forward(&x)` becomes `forward_under::<P>`. Outside any region a layer's own `forward` runs in
/// its input's type. `In` is the input type (a float tensor, or `Tensor<i64>` ids for an embedding).
pub trait Layer<In: ?Sized>: IsLayer {
    /// The output type under policy `P`.
    type Out<P: Policy>;
    /// The forward pass under policy `P` (low-precision layers cast input and weights to `P::Low`; norms
    /// run in f32).
    fn forward_under<P: Policy>(&self, input: &In) -> Self::Out<P>;
}

/// Marks the types that implement [`Layer`] for some input (the dispatch of a rewritten `forward` call
/// needs a trait that does not name the input type).
pub trait IsLayer {}

/// A layer reached through a reference or a box is the same layer (`for layer in &self.layers`).
macro_rules! layer_through {
    ($([$($generics:tt)*] $ty:ty;)*) => {$(
        impl<$($generics)*> IsLayer for $ty {}
        impl<In: ?Sized, $($generics)*> Layer<In> for $ty
        where
            L: Layer<In>,
        {
            type Out<P: Policy> = L::Out<P>;
            #[track_caller]
            fn forward_under<P: Policy>(&self, input: &In) -> Self::Out<P> {
                (**self).forward_under::<P>(input)
            }
        }
    )*};
}

layer_through! {
    [L: IsLayer + ?Sized] &L;
    [L: IsLayer + ?Sized] &mut L;
    [L: IsLayer + ?Sized] Box<L>;
    [L: IsLayer + ?Sized] std::rc::Rc<L>;
    [L: IsLayer + ?Sized] std::sync::Arc<L>;
}
