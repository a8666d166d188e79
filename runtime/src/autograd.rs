//! Reverse-mode automatic differentiation: the graph recorded by ops, the backward pass, [`Grads`], and
//! the no-grad scope.
//!
//! Every op whose inputs require a gradient (while grad mode is on) attaches a [`Node`] to its output: the
//! op's name, its inputs' nodes, and a closure mapping the output's gradient to its inputs' gradients.
//! [`Tensor::backward`] walks the graph from the loss in reverse topological order, accumulating each
//! node's gradient before calling its closure, and returns the leaves' gradients.

use crate::element::{AnyTensor, DType, Element, Float};
use crate::tensor::{Storage, Tensor};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Whether ops on this thread record gradient history (true unless inside [`no_grad`]).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` with gradient recording off on this thread: ops build no graph, as for evaluation.
///
/// ```
/// use amp_runtime::{Tensor, no_grad};
/// let w = Tensor::<f32>::ones([2]).with_grad();
/// let y = no_grad(|| &w * 2.0);
/// assert!(!y.requires_grad());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Turns gradient recording off on this thread until dropped (restoring the previous state, also when
/// unwinding from a panic). Guards restore in reverse order of creation, as nested scopes drop them;
/// dropping an outer guard before an inner one leaves recording as the inner guard found it.
pub struct NoGradGuard {
    previous: bool,
    // The flag is thread-local, so the guard must be dropped on the thread that made it.
    _not_send: PhantomData<*const ()>,
}

impl NoGradGuard {
    /// Turns recording off.
    #[must_use = "recording turns back on when the guard is dropped; bind it with `let _guard = ...`"]
    pub fn new() -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard {
            previous,
            _not_send: PhantomData,
        }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Identifies a leaf of the graph (a [`Param`](crate::Param) or a tensor made by
/// [`Tensor::with_grad`]); [`Grads`] are keyed by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GradId(u64);

// Unwind-safe so that tensors and parameters can cross `catch_unwind` (a backward closure holds only
// saved values, which a panic cannot leave half-updated).
type BackwardFn =
    Box<dyn Fn(&AnyTensor) -> Vec<Option<AnyTensor>> + Send + Sync + RefUnwindSafe + UnwindSafe>;

/// One recorded op (or a leaf, which has no backward closure).
pub(crate) struct Node {
    id: u64,
    op: &'static str,
    dtype: DType,
    shape: Vec<usize>,
    parents: Vec<Option<Arc<Node>>>,
    backward: Option<BackwardFn>,
}

impl Node {
    /// A new leaf with a fresh identity.
    pub(crate) fn leaf(dtype: DType, shape: &[usize]) -> Arc<Node> {
        Arc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op: "leaf",
            dtype,
            shape: shape.to_vec(),
            parents: Vec::new(),
            backward: None,
        })
    }

    pub(crate) fn grad_id(&self) -> GradId {
        GradId(self.id)
    }

    pub(crate) fn is_leaf(&self) -> bool {
        self.backward.is_none()
    }
}

impl Drop for Node {
    /// Frees a long chain of nodes without recursing once per node (a deep graph would overflow the
    /// stack): parents whose last reference is here are unlinked onto a work list.
    fn drop(&mut self) {
        let mut stack: Vec<Arc<Node>> = self.parents.drain(..).flatten().collect();
        while let Some(node) = stack.pop() {
            if let Ok(mut node) = Arc::try_unwrap(node) {
                stack.extend(node.parents.drain(..).flatten());
            }
        }
    }
}

impl<E: Element> Tensor<E> {
    /// Builds an op's output and, when grad mode is on and some input requires a gradient, records the
    /// node. `backward(grad, needs)` returns one entry per input (in `inputs` order): the input's gradient
    /// where `needs[i]`, `None` elsewhere.
    pub(crate) fn record<F>(
        op: &'static str,
        data: Arc<Storage<E>>,
        shape: Vec<usize>,
        inputs: &[Option<&Arc<Node>>],
        backward: F,
    ) -> Self
    where
        F: Fn(&Tensor<E>, &[bool]) -> Vec<Option<AnyTensor>>
            + Send
            + Sync
            + RefUnwindSafe
            + UnwindSafe
            + 'static,
    {
        if !is_grad_enabled() || inputs.iter().all(Option::is_none) {
            return Self::from_storage(data, shape, None);
        }
        let needs: Vec<bool> = inputs.iter().map(Option::is_some).collect();
        let node = Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op,
            dtype: E::DTYPE,
            shape: shape.clone(),
            parents: inputs.iter().map(|n| n.cloned()).collect(),
            backward: Some(Box::new(move |grad: &AnyTensor| {
                let grad = E::any_ref(grad).expect("gradient has the type of its tensor");
                backward(grad, &needs)
            })),
        };
        Self::from_storage(data, shape, Some(Arc::new(node)))
    }

    /// [`record`](Self::record) for an output computed into a fresh vector.
    pub(crate) fn record_vec<F>(
        op: &'static str,
        data: Vec<E>,
        shape: Vec<usize>,
        inputs: &[Option<&Arc<Node>>],
        backward: F,
    ) -> Self
    where
        F: Fn(&Tensor<E>, &[bool]) -> Vec<Option<AnyTensor>>
            + Send
            + Sync
            + RefUnwindSafe
            + UnwindSafe
            + 'static,
    {
        Self::record(op, Arc::new(Storage::Cpu(data)), shape, inputs, backward)
    }
}

/// `Some(f().into())` when `need`, else `None`: one entry of a backward closure's result.
pub(crate) fn grad_if<E: Element>(need: bool, f: impl FnOnce() -> Tensor<E>) -> Option<AnyTensor> {
    need.then(|| f().into())
}

impl<E: Float> Tensor<E> {
    /// Computes the gradients of this scalar (a loss) with respect to every leaf it depends on.
    ///
    /// Panics if the tensor has more than one element (use [`backward_with`](Self::backward_with)) or
    /// does not require a gradient.
    #[track_caller]
    pub fn backward(&self) -> Grads {
        if self.numel() != 1 {
            panic!(
                "backward: the loss must have one element, got shape {:?}; reduce it first (e.g. .mean(..)) or call backward_with",
                self.shape()
            );
        }
        // The seed lives where the loss does, so every gradient is computed on that device.
        let seed = Tensor::ones(self.shape())
            .to_device(self.device())
            .unwrap_or_else(|e| panic!("backward: {e}"));
        self.backward_with(&seed)
    }

    /// Computes gradients given the gradient of this tensor (`grad`, same shape).
    #[track_caller]
    pub fn backward_with(&self, grad: &Tensor<E>) -> Grads {
        if grad.shape() != self.shape() {
            panic!(
                "backward_with: gradient shape {:?} differs from tensor shape {:?}",
                grad.shape(),
                self.shape()
            );
        }
        let Some(root) = self.node() else {
            panic!(
                "backward: this tensor does not require a gradient (none of its inputs is a Param or a \
                 tensor made with with_grad(), or it was computed inside no_grad)"
            );
        };
        no_grad(|| run_backward(root, grad.detach().into()))
    }
}

/// Nodes reachable from `root`, parents before children.
fn topological_order(root: &Arc<Node>) -> Vec<Arc<Node>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<(Arc<Node>, bool)> = vec![(root.clone(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !seen.insert(node.id) {
            continue;
        }
        stack.push((node.clone(), true));
        for parent in node.parents.iter().flatten() {
            if !seen.contains(&parent.id) {
                stack.push((parent.clone(), false));
            }
        }
    }
    order
}

fn run_backward(root: &Arc<Node>, seed: AnyTensor) -> Grads {
    let mut pending: HashMap<u64, AnyTensor> = HashMap::new();
    pending.insert(root.id, seed);
    let mut leaves = HashMap::new();
    for node in topological_order(root).iter().rev() {
        let Some(grad) = pending.remove(&node.id) else {
            continue;
        };
        let Some(backward) = &node.backward else {
            leaves.insert(node.grad_id(), grad);
            continue;
        };
        let parent_grads = backward(&grad);
        debug_assert_eq!(
            parent_grads.len(),
            node.parents.len(),
            "{}: wrong number of gradients",
            node.op
        );
        for (parent, g) in node.parents.iter().zip(parent_grads) {
            let (Some(parent), Some(g)) = (parent, g) else {
                continue;
            };
            assert!(
                g.dtype() == parent.dtype && g.shape() == parent.shape.as_slice(),
                "internal error in the backward of {}: gradient {} {:?} for an input of {} {:?}",
                node.op,
                g.dtype(),
                g.shape(),
                parent.dtype,
                parent.shape
            );
            match pending.remove(&parent.id) {
                Some(acc) => pending.insert(parent.id, acc.add_same(&g)),
                None => pending.insert(parent.id, g),
            };
        }
    }
    Grads { map: leaves }
}

/// The gradients [`Tensor::backward`] computed, one per leaf (parameter or [`Tensor::with_grad`] tensor)
/// the loss depends on. A gradient has its leaf's element type: f32 for [`Param`](crate::Param)s.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct Grads {
    map: HashMap<GradId, AnyTensor>,
}

/// Something [`Grads`] can be looked up by: a [`Param`](crate::Param) or a leaf [`Tensor`].
pub trait GradKey {
    /// The gradient's type.
    type Grad;
    /// The leaf's identity, if it is a leaf.
    fn grad_id(&self) -> Option<GradId>;
    /// Types a gradient found for this key.
    fn typed_grad(grad: &AnyTensor) -> Option<Self::Grad>;
}

impl<E: Float> GradKey for Tensor<E> {
    type Grad = Tensor<E>;
    fn grad_id(&self) -> Option<GradId> {
        self.node().filter(|n| n.is_leaf()).map(|n| n.grad_id())
    }
    fn typed_grad(grad: &AnyTensor) -> Option<Tensor<E>> {
        E::any_ref(grad).cloned()
    }
}

impl Grads {
    /// The gradient for `key`, or `None` if the loss does not depend on it.
    pub fn get<K: GradKey>(&self, key: &K) -> Option<K::Grad> {
        self.map.get(&key.grad_id()?).and_then(K::typed_grad)
    }

    /// The gradient stored under `id`.
    pub fn get_by_id(&self, id: GradId) -> Option<&AnyTensor> {
        self.map.get(&id)
    }

    /// Replaces (or adds) the gradient stored under `id`.
    pub fn insert(&mut self, id: GradId, grad: AnyTensor) -> Option<AnyTensor> {
        self.map.insert(id, grad)
    }

    /// Removes the gradient stored under `id`.
    pub fn remove(&mut self, id: GradId) -> Option<AnyTensor> {
        self.map.remove(&id)
    }

    /// Number of leaves with a gradient.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no leaf received a gradient.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every (leaf, gradient) pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (GradId, &AnyTensor)> {
        self.map.iter().map(|(&id, g)| (id, g))
    }

    /// Every (leaf, gradient) pair, mutably, in no particular order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (GradId, &mut AnyTensor)> {
        self.map.iter_mut().map(|(&id, g)| (id, g))
    }

    /// Adds `other`'s gradients to these (the union of leaves; shared leaves are summed).
    #[track_caller]
    pub fn accumulate(&mut self, other: Grads) {
        for (id, g) in other.map {
            let sum = match self.map.remove(&id) {
                Some(mine) => mine.add_same(&g),
                None => g,
            };
            self.map.insert(id, sum);
        }
    }
}
