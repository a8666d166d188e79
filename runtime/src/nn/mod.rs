//! Layers and models: [`Module`] (a tree of named parameters, usually derived with `#[derive(Module)]`),
//! [`Layer`] (a forward pass an autocast region runs at its precision), and the standard layers.

mod conv;
mod embedding;
mod layer;
mod linear;
mod module;
mod norm;

pub use conv::Conv2d;
pub use embedding::Embedding;
pub use layer::{IsLayer, Layer};
pub use linear::Linear;
pub use module::{Module, ModuleField, join_name};
pub use norm::{LayerNorm, RmsNorm};
