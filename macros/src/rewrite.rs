//! The body rewrite: every call of an op in the policy table goes through a compile-time dispatch that
//! runs it at its class's precision when the receiver is a tensor and leaves it untouched otherwise.
//!
//! `x.matmul(&w)` becomes `(&probe::<P, _>(&x)).__amp_low().matmul(&w)`: for a tensor `x` the probe
//! yields `Low<P::Low>` (the cast receiver, whose `matmul` casts `w`); for any other type it yields `&x`
//! and the original method runs as written. Place receivers are borrowed (nothing is moved); temporaries
//! are passed by value. The checks of the region (manual casts, nested attributes, banned ops, f16
//! literals) run during the same walk, and every error is collected.

use crate::args::{Known, Override};
use crate::errors::Errors;
use crate::syntax::{expr_attrs_mut, is_attr, is_place};
use crate::table::{Class, Table};
use proc_macro2::{Literal, Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{
    Attribute, BinOp, Expr, ExprBinary, ExprCall, ExprClosure, ExprLit, ExprMethodCall,
    GenericArgument, Ident, Item, Lit, Local, Pat, PathArguments, Type, parse_quote_spanned,
};

/// How the report shows an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportClass {
    Low,
    F32,
    Promote,
    Same,
    KeepF32,
    Layer,
}

impl ReportClass {
    /// The `amp::autocast::OpClass` variant.
    pub fn tokens(self) -> TokenStream {
        match self {
            ReportClass::Low => quote!(::amp::__private::autocast::OpClass::Low),
            ReportClass::F32 => quote!(::amp::__private::autocast::OpClass::F32),
            ReportClass::Promote => quote!(::amp::__private::autocast::OpClass::Promote),
            ReportClass::Same => quote!(::amp::__private::autocast::OpClass::Same),
            ReportClass::KeepF32 => quote!(::amp::__private::autocast::OpClass::KeepF32),
            ReportClass::Layer => quote!(::amp::__private::autocast::OpClass::Layer),
        }
    }
}

/// One rewritten op, for the report.
pub struct OpRecord {
    pub name: String,
    pub class: ReportClass,
    pub span: Span,
}

/// Walks a region's body, rewriting op calls and collecting errors.
pub struct Rewriter<'a> {
    policy: TokenStream,
    known: Option<Known>,
    keep: bool,
    overrides: &'a [Override],
    label: String,
    errors: &'a mut Errors,
    pub ops: Vec<OpRecord>,
    /// Bindings known to be mutable (`&mut self`, `mut x`, `x: &mut T`): a layer's `forward` on a place
    /// rooted at one is called through `&mut`, so a user module's `forward(&mut self)` still works.
    mutable: Vec<String>,
}

/// Arguments of table ops that take an optional tensor, where a bare `None` needs a type.
fn optional_tensor_positions(op: &str) -> &'static [usize] {
    match op {
        "linear" | "conv1d" | "conv2d" | "rms_norm" => &[1],
        "layer_norm" | "group_norm" => &[1, 2],
        _ => &[],
    }
}

impl<'a> Rewriter<'a> {
    /// A rewriter for a region under `policy` (`keep`: the whole region is `#[keep_fp32]`).
    pub fn new(
        policy: TokenStream,
        known: Option<Known>,
        keep: bool,
        overrides: &'a [Override],
        label: String,
        errors: &'a mut Errors,
    ) -> Self {
        Rewriter {
            mutable: Vec::new(),
            policy,
            known,
            keep,
            overrides,
            label,
            errors,
            ops: Vec::new(),
        }
    }

    /// Notes the mutable bindings of a fn's signature.
    pub fn note_signature(&mut self, sig: &syn::Signature) {
        for input in &sig.inputs {
            match input {
                // `&mut self` and `mut self` both set `mutability`.
                syn::FnArg::Receiver(r) if r.mutability.is_some() => {
                    self.mutable.push("self".into())
                }
                syn::FnArg::Receiver(_) => {}
                syn::FnArg::Typed(t) => {
                    let by_mut_ref = matches!(&*t.ty, Type::Reference(r) if r.mutability.is_some());
                    if let Pat::Ident(id) = &*t.pat
                        && (id.mutability.is_some() || by_mut_ref)
                    {
                        self.mutable.push(id.ident.to_string());
                    }
                }
            }
        }
    }

    fn note_mutable_binding(&mut self, pat: &Pat) {
        let pat = match pat {
            Pat::Type(t) => &*t.pat,
            other => other,
        };
        if let Pat::Ident(id) = pat
            && id.mutability.is_some()
        {
            self.mutable.push(id.ident.to_string());
        }
    }

    /// Whether a place expression is rooted at a binding known to be mutable.
    fn mutable_place(&self, e: &Expr) -> bool {
        match e {
            Expr::Path(p) => p
                .path
                .get_ident()
                .is_some_and(|i| self.mutable.iter().any(|m| i == m)),
            Expr::Field(f) => self.mutable_place(&f.base),
            Expr::Index(i) => self.mutable_place(&i.expr),
            Expr::Paren(p) => self.mutable_place(&p.expr),
            Expr::Group(g) => self.mutable_place(&g.expr),
            _ => false,
        }
    }

    fn policy_tokens(&self) -> TokenStream {
        if self.keep {
            quote!(::amp::policy::F32)
        } else {
            self.policy.clone()
        }
    }

    fn class_of(&self, name: &str) -> Option<Class> {
        match self.overrides.iter().find(|o| o.name == name) {
            Some(o) => Some(o.class),
            None => Table::get().class_of(name),
        }
    }

    fn record(&mut self, name: impl Into<String>, class: ReportClass, span: Span) {
        self.ops.push(OpRecord {
            name: name.into(),
            class,
            span,
        });
    }

    /// Runs `f` with the region switched to `#[keep_fp32]`.
    fn in_keep(&mut self, f: impl FnOnce(&mut Self)) {
        let previous = self.keep;
        self.keep = true;
        f(self);
        self.keep = previous;
    }

    /// Removes `#[keep_fp32]` / `#[autocast]` markers from `attrs`; returns whether `#[keep_fp32]` was there.
    fn take_markers(&mut self, attrs: &mut Vec<Attribute>) -> bool {
        let mut keep = false;
        let mut kept = Vec::with_capacity(attrs.len());
        for attr in attrs.drain(..) {
            if is_attr(&attr, "keep_fp32") {
                if !matches!(attr.meta, syn::Meta::Path(_)) {
                    self.errors
                        .spanned(&attr, "#[keep_fp32] takes no arguments");
                }
                keep = true;
            } else if is_attr(&attr, "autocast") {
                self.errors.spanned(
                    &attr,
                    format!(
                        "nested #[autocast] inside {}: a region's policy is set once, on its fn, impl block or mod\n\
                         help: to run part of the region in f32, mark it #[keep_fp32] instead",
                        self.label
                    ),
                );
            } else {
                kept.push(attr);
            }
        }
        *attrs = kept;
        keep
    }

    fn check_manual_cast(&mut self, call: &ExprMethodCall) {
        let name = call.method.to_string();
        let is_cast = matches!(name.as_str(), "to_f16" | "to_bf16" | "to_f32" | "to_f64")
            || (name == "cast" && call.turbofish.is_some());
        if is_cast {
            let shown = match &call.turbofish {
                Some(t) => format!(
                    ".{name}{}()",
                    t.to_token_stream().to_string().replace(' ', "")
                ),
                None => format!(".{name}()"),
            };
            let span_tokens = {
                let method = &call.method;
                let turbofish = &call.turbofish;
                quote!(#method #turbofish)
            };
            self.errors.spanned(
                span_tokens,
                format!(
                    "manual cast `{shown}` inside {}\n\
                     help: autocast chooses the precision of every op in this region; remove the cast, or run \
                     this code in f32 by marking its statement, block or closure #[keep_fp32]",
                    self.label
                ),
            );
        }
    }

    fn rewrite_method_call(&mut self, call: &mut ExprMethodCall) {
        let name = call.method.to_string();
        let Some(class) = self.class_of(&name) else {
            return;
        };
        let span = call.method.span();
        let mut guard = TokenStream::new();
        let (dispatch, report) = if self.keep {
            match class {
                Class::Low => ("__amp_low", ReportClass::KeepF32),
                Class::Layer => ("__amp_layer", ReportClass::KeepF32),
                _ => ("__amp_full", ReportClass::KeepF32),
            }
        } else {
            match class {
                Class::Low => ("__amp_low", ReportClass::Low),
                Class::F32 => ("__amp_full", ReportClass::F32),
                Class::Promote => ("__amp_keep", ReportClass::Promote),
                Class::Same => ("__amp_keep", ReportClass::Same),
                Class::Layer => ("__amp_layer", ReportClass::Layer),
                Class::BannedUnderF16 => {
                    match self.known {
                        Some(Known::F16) => {
                            self.errors.spanned(
                                &call.method,
                                format!(
                                    "`{name}` is not allowed inside {}: its gradients can overflow f16\n\
                                     help: apply `bce_with_logits` to the logits instead of `{name}` to sigmoid \
                                     probabilities; it is safe under autocast",
                                    self.label
                                ),
                            );
                            return;
                        }
                        Some(_) => {}
                        None => {
                            let policy = &self.policy;
                            guard = quote_spanned!(span=> const { ::amp::__private::autocast::assert_bce_allowed::<#policy>() };);
                        }
                    }
                    ("__amp_full", ReportClass::F32)
                }
            }
        };
        let dispatch = if name == "sum" { "__amp_sum" } else { dispatch };
        let method = Ident::new(dispatch, span);
        let receiver = strip_parens(&call.receiver);
        let rspan = receiver.span();
        let arg = if dispatch == "__amp_layer" && is_place(receiver) && self.mutable_place(receiver)
        {
            quote_spanned!(rspan=> &mut #receiver)
        } else if is_place(receiver) {
            quote_spanned!(rspan=> &#receiver)
        } else {
            receiver.to_token_stream()
        };
        let policy = self.policy_tokens();
        let probe = quote_spanned!(rspan=> ::amp::__private::autocast::probe::<#policy, _>(#arg));
        let refs = if dispatch == "__amp_sum" {
            quote!(&&)
        } else {
            quote!(&)
        };
        let new_receiver: Expr = if guard.is_empty() {
            parse_quote_spanned!(rspan=> (#refs #probe).#method())
        } else {
            parse_quote_spanned!(rspan=> { #guard (#refs #probe).#method() })
        };
        *call.receiver = new_receiver;
        for &i in optional_tensor_positions(&name) {
            if let Some(arg) = call.args.iter_mut().nth(i)
                && matches!(arg, Expr::Path(p) if p.path.is_ident("None"))
            {
                let aspan = arg.span();
                *arg = parse_quote_spanned!(aspan=> ::core::option::Option::<&::amp::__private::autocast::NoTensor>::None);
            }
        }
        self.record(name, report, span);
    }

    /// Inside `#[keep_fp32]`, `+ - * /` on tensors run in f32.
    fn rewrite_operator(&mut self, bin: &mut ExprBinary) {
        let symbol = match bin.op {
            BinOp::Add(_) => "+",
            BinOp::Sub(_) => "-",
            BinOp::Mul(_) => "*",
            BinOp::Div(_) => "/",
            _ => return,
        };
        let policy = quote!(::amp::policy::F32);
        for side in [&mut bin.left, &mut bin.right] {
            let inner = &**side;
            let span = inner.span();
            let wrapped: Expr = parse_quote_spanned!(span=> (&::amp::__private::autocast::probe::<#policy, _>(#inner)).__amp_operand());
            **side = wrapped;
        }
        self.record(symbol, ReportClass::KeepF32, bin.op.span());
    }

    /// Checks a float literal against f16's range; for a policy only known to rustc, returns the literal
    /// wrapped in a compile-time check.
    fn check_literal(&mut self, lit: &ExprLit) -> Option<Expr> {
        if self.keep {
            return None;
        }
        let Lit::Float(float) = &lit.lit else {
            return None;
        };
        let value = float.base10_parse::<f64>().ok()?;
        if !(value.is_finite() && value.abs() > 65504.0) {
            return None;
        }
        match self.known {
            Some(Known::F16) => {
                self.errors.spanned(
                    float,
                    format!(
                        "float literal `{}` cannot be represented in f16 inside {}: it is {value:e}, and the f16 \
                         range is ±65504\n\
                         help: it would become infinity; use a value within ±65504 (for a mask, f16::MIN is \
                         -65504), or compute this part in f32 with #[keep_fp32]",
                        float.token(),
                        self.label
                    ),
                );
                None
            }
            Some(_) => None,
            None => {
                let span = float.span();
                let policy = &self.policy;
                let magnitude = Literal::f64_unsuffixed(value.abs());
                Some(parse_quote_spanned!(span=> {
                    const { ::amp::__private::autocast::assert_literal_fits::<#policy>(#magnitude) };
                    #lit
                }))
            }
        }
    }

    /// `Tensor::cat(&[a, b], dim)` / `Tensor::stack(..)` with tensors of different float types: promote
    /// the list to its widest type first.
    fn rewrite_cat(&mut self, call: &ExprCall) -> Option<Expr> {
        let Expr::Path(path) = &*call.func else {
            return None;
        };
        let segments: Vec<String> = path
            .path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect();
        let [.., ty, op] = segments.as_slice() else {
            return None;
        };
        if ty != "Tensor" || !(op == "cat" || op == "stack") || call.args.len() != 2 {
            return None;
        }
        // `Tensor::<bf16>::cat(..)` names its type: leave it as written.
        let tensor_segment = &path.path.segments[path.path.segments.len() - 2];
        if !tensor_segment.arguments.is_none() {
            return None;
        }
        let list = match &call.args[0] {
            Expr::Reference(r) => &*r.expr,
            other => other,
        };
        let Expr::Array(array) = list else {
            return None;
        };
        if array.elems.is_empty() {
            return None;
        }
        let span = call.func.span();
        let mut cons = quote!(::amp::__private::autocast::Nil);
        for elem in array.elems.iter().rev() {
            cons = quote_spanned!(elem.span()=> ::amp::__private::autocast::Cons(#elem, #cons));
        }
        let dim = &call.args[1];
        let function = Ident::new(op, span);
        let class = if self.keep {
            ReportClass::KeepF32
        } else {
            ReportClass::Promote
        };
        self.record(op.clone(), class, span);
        Some(parse_quote_spanned!(span=> ::amp::__private::autocast::#function(#cons, #dim)))
    }

    fn relax_pattern(&mut self, pat: &mut Pat) {
        if self.keep {
            return;
        }
        if let Pat::Type(pt) = pat {
            TensorF32Relaxer.visit_type_mut(&mut pt.ty);
        }
    }
}

/// The expression inside any parentheses (the probe call supplies its own).
fn strip_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => strip_parens(&p.expr),
        other => other,
    }
}

/// Rewrites `Tensor<f32>` in type annotations inside a region to `Tensor<_>`: the element type there is
/// the policy's, and rustc infers it.
struct TensorF32Relaxer;

impl VisitMut for TensorF32Relaxer {
    fn visit_type_path_mut(&mut self, tp: &mut syn::TypePath) {
        if let Some(last) = tp.path.segments.last_mut()
            && last.ident == "Tensor"
            && let PathArguments::AngleBracketed(args) = &mut last.arguments
            && args.args.len() == 1
            && let Some(GenericArgument::Type(Type::Path(elem))) = args.args.first_mut()
            && elem.path.is_ident("f32")
        {
            let span = elem.span();
            args.args[0] = GenericArgument::Type(Type::Infer(syn::TypeInfer {
                underscore_token: syn::Token![_](span),
            }));
            return;
        }
        visit_mut::visit_type_path_mut(self, tp);
    }
}

impl VisitMut for Rewriter<'_> {
    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        let keep = match expr_attrs_mut(expr) {
            Some(attrs) => self.take_markers(attrs),
            None => false,
        };
        if keep && !self.keep {
            self.in_keep(|r| r.visit_expr_inner(expr));
        } else {
            self.visit_expr_inner(expr);
        }
    }

    fn visit_local_mut(&mut self, local: &mut Local) {
        let keep = self.take_markers(&mut local.attrs);
        self.note_mutable_binding(&local.pat);
        let before = self.ops.len();
        if keep && !self.keep {
            self.in_keep(|r| visit_mut::visit_local_mut(r, local));
        } else {
            visit_mut::visit_local_mut(self, local);
        }
        // `let h: Tensor<f32> = x.matmul(w)` holds the policy's type; `let acc: Tensor<f32> =
        // Tensor::zeros(..)` (no rewritten op) keeps its annotation.
        if self.ops.len() > before {
            self.relax_pattern(&mut local.pat);
        }
    }

    /// Patterns hold no ops, and their literals are not values to check (`0.0..=1e5 => ..`).
    fn visit_pat_mut(&mut self, _pat: &mut syn::Pat) {}

    fn visit_expr_closure_mut(&mut self, closure: &mut ExprClosure) {
        for input in closure.inputs.iter_mut() {
            self.relax_pattern(input);
        }
        if let syn::ReturnType::Type(_, ty) = &mut closure.output
            && !self.keep
        {
            TensorF32Relaxer.visit_type_mut(ty);
        }
        visit_mut::visit_expr_closure_mut(self, closure);
    }

    fn visit_stmt_macro_mut(&mut self, mac: &mut syn::StmtMacro) {
        self.take_markers(&mut mac.attrs);
    }

    /// Items nested in a body (fns, impls) are not part of the region.
    fn visit_item_mut(&mut self, _item: &mut Item) {}
}

impl Rewriter<'_> {
    fn visit_expr_inner(&mut self, expr: &mut Expr) {
        // Ops are reported in source order: an op's record goes where its name stands (after its
        // receiver, before its arguments), although it is rewritten after both.
        if let Some(position) = self.visit_expr_kind(expr)
            && let Some(record) = self.ops.pop()
        {
            self.ops.insert(position, record);
        }
    }

    /// Rewrites one expression after its children. Returns where its own op record belongs if it
    /// recorded one (it is then the last record).
    fn visit_expr_kind(&mut self, expr: &mut Expr) -> Option<usize> {
        let (position, before_own);
        match expr {
            Expr::MethodCall(call) => {
                self.visit_expr_mut(&mut call.receiver);
                position = self.ops.len();
                for arg in call.args.iter_mut() {
                    self.visit_expr_mut(arg);
                }
                // After the children, so errors come out in source order (a receiver precedes its call).
                self.check_manual_cast(call);
                before_own = self.ops.len();
                self.rewrite_method_call(call);
            }
            Expr::Binary(bin) => {
                self.visit_expr_mut(&mut bin.left);
                position = self.ops.len();
                self.visit_expr_mut(&mut bin.right);
                before_own = self.ops.len();
                if self.keep {
                    self.rewrite_operator(bin);
                }
            }
            Expr::Lit(lit) => {
                (position, before_own) = (self.ops.len(), self.ops.len());
                if let Some(checked) = self.check_literal(lit) {
                    *expr = checked;
                }
            }
            Expr::Call(call) => {
                position = self.ops.len();
                visit_mut::visit_expr_call_mut(self, call);
                before_own = self.ops.len();
                if let Some(promoted) = self.rewrite_cat(call) {
                    *expr = promoted;
                }
            }
            Expr::Closure(closure) => {
                self.visit_expr_closure_mut(closure);
                return None;
            }
            _ => {
                visit_mut::visit_expr_mut(self, expr);
                return None;
            }
        }
        (self.ops.len() > before_own).then_some(position)
    }
}
