//! The `#[autocast]` and `#[keep_fp32]` attributes of amp. Use them through the `amp` crate, which
//! re-exports them and provides the runtime the expansion calls (`::amp::__private`).
//!
//! The crate is entry points only: `args` parses the attribute, `rewrite` walks the body, `expand`
//! assembles the output, and the policy table lives in `policy.md`, the one source that both the macro
//! and the documentation read.

mod args;
mod errors;
mod expand;
mod module;
mod returns;
mod rewrite;
mod syntax;
mod table;

#[cfg(test)]
mod golden;

use proc_macro::TokenStream;

/// Runs a function, every method of an impl block, or every function of an inline module under a
/// mixed-precision policy, decided at compile time.
///
/// ```text
/// #[autocast(bf16)]   // or f16, f32, or a type parameter P: amp::Policy
/// fn forward(x: &Tensor<f32>, w: &Param) -> Tensor<f32> {
///     x.matmul(w).softmax(-1)   // bf16 matmul (f32 accumulation), f32 softmax
/// }
/// ```
///
/// # The policy table
///
#[doc = include_str!("../policy.md")]
///
/// See the `amp` crate's documentation of `autocast` for every form, the compile errors, and examples.
#[proc_macro_attribute]
pub fn autocast(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::autocast(args.into(), item.into()).into()
}

/// Runs a function or method in f32 whatever the caller's policy; inside an `#[autocast]` region it also
/// marks a statement, block or closure whose ops run in f32.
#[proc_macro_attribute]
pub fn keep_fp32(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::keep_fp32(args.into(), item.into()).into()
}

/// Implements `amp::nn::Module` for a struct: its parameters are those of its fields, in declaration order,
/// each under the field's name (`blocks.0.attn.qkv.weight`; tuple struct fields are named `0`, `1`, ...).
///
/// ```text
/// #[derive(Module)]
/// struct Model<P: Policy> {
///     embed: Embedding,             // a layer or any other Module
///     blocks: Vec<Block>,           // "blocks.0.…", "blocks.1.…"
///     head: Option<Linear>,         // visited when Some
///     scale: Param,                 // a parameter: "scale"
///     dropout: f32,                 // skipped: numbers, bool, char, String, PhantomData
///     #[module(skip)]
///     vocab: Vocabulary,            // skipped: holds no parameters
///     #[module(rename = "ln_f")]
///     final_norm: LayerNorm,        // visited as "ln_f.…"
///     _policy: PhantomData<P>,
/// }
/// ```
///
/// Every other field must hold parameters (a `Param`, a `Module`, or a `Vec` or `Option` of those); any
/// other type is a compile error at the field that says to mark it `#[module(skip)]`. A field whose type
/// is a type parameter needs a bound (`M: Module`). A unit struct is a module without parameters.
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(item: TokenStream) -> TokenStream {
    module::derive(item.into()).into()
}
