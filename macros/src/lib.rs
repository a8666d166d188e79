//! The `#[autocast]` and `#[keep_fp32]` attributes of amp. Use them through the `amp` crate, which
//! re-exports them and provides the runtime the expansion calls (`::amp::__private`).
//!
//! The crate is entry points only: `args` parses the attribute, `rewrite` walks the body, `expand`
//! assembles the output, and the policy table lives in `policy.md`, the one source that both the macro
//! and the documentation read.

mod args;
mod errors;
mod expand;
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
