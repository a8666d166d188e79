//! Models as trees of named parameters.

use crate::param::Param;

/// A model or layer: something that owns [`Param`]s, each reachable under a dotted name
/// (`blocks.0.attn.qkv.weight`). Implement it with `#[derive(Module)]`.
///
/// ```
/// use amp_runtime::nn::{Linear, Module};
/// use amp_runtime::Rng;
///
/// let layer = Linear::new(4, 3, true, &mut Rng::new(0));
/// let names: Vec<String> = layer.named_params().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["weight", "bias"]);
/// assert_eq!(layer.num_params(), 4 * 3 + 3);
/// ```
pub trait Module {
    /// Calls `f(name, param)` for every parameter, in declaration order, names prefixed by `prefix`
    /// (empty for the root; otherwise `prefix.` precedes each name).
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Param));

    /// Every parameter with its dotted name, in declaration order.
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut out = Vec::new();
        self.visit_params("", &mut |name, p| out.push((name, p.clone())));
        out
    }

    /// Every parameter, in declaration order.
    fn params(&self) -> Vec<Param> {
        self.named_params().into_iter().map(|(_, p)| p).collect()
    }

    /// Total number of parameter elements.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit_params("", &mut |_, p| n += p.numel());
        n
    }

    /// Moves every parameter to `device` (PyTorch's `model.to(device)`), or says why it cannot; the
    /// parameters moved before a failure stay moved, the rest stay where they were.
    ///
    /// ```
    /// use amp_runtime::nn::{Linear, Module};
    /// use amp_runtime::{Device, Rng};
    /// let layer = Linear::new(4, 3, true, &mut Rng::new(0));
    /// layer.to_device(Device::Cpu).unwrap();
    /// if Device::cuda_count() == 0 {
    ///     assert!(layer.to_device(Device::Cuda(0)).is_err());
    /// }
    /// ```
    fn to_device(&self, device: crate::Device) -> Result<(), crate::DeviceError> {
        self.params().iter().try_for_each(|p| p.to_device(device))
    }

    /// Writes each parameter's dotted name into its name slot (optimizers and checkpoints use it).
    fn name_params(&self) {
        self.visit_params("", &mut |name, p| p.set_name(name));
    }
}

/// Joins a prefix and a field name with a dot (no dot for an empty prefix).
pub fn join_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A field of a `#[derive(Module)]` struct that holds parameters: a [`Param`], a [`Module`], or a `Vec` or
/// `Option` of those. Fields without parameters need `#[module(skip)]` (`PhantomData` and plain numbers
/// are skipped automatically).
#[diagnostic::on_unimplemented(
    message = "`{Self}` holds no parameters `#[derive(Module)]` can find",
    label = "this field is not a Param, a Module, or a Vec/Option of those",
    note = "mark fields without parameters with #[module(skip)]"
)]
pub trait ModuleField {
    /// Visits the field's parameters under `name` (the field's full dotted name).
    fn visit_field(&self, name: &str, f: &mut dyn FnMut(String, &Param));
}

impl ModuleField for Param {
    fn visit_field(&self, name: &str, f: &mut dyn FnMut(String, &Param)) {
        f(name.to_string(), self);
    }
}

impl<M: Module> ModuleField for M {
    fn visit_field(&self, name: &str, f: &mut dyn FnMut(String, &Param)) {
        self.visit_params(name, f);
    }
}

impl<T: ModuleField> ModuleField for Vec<T> {
    fn visit_field(&self, name: &str, f: &mut dyn FnMut(String, &Param)) {
        for (i, item) in self.iter().enumerate() {
            item.visit_field(&join_name(name, &i.to_string()), f);
        }
    }
}

impl<T: ModuleField> ModuleField for Option<T> {
    fn visit_field(&self, name: &str, f: &mut dyn FnMut(String, &Param)) {
        if let Some(item) = self {
            item.visit_field(name, f);
        }
    }
}
