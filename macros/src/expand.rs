//! Expansion of the attributes on fns, impl blocks and inline modules.

use crate::args::{self, Known, Override, Policy};
use crate::errors::Errors;
use crate::returns::{ReturnRewriter, convert, declared};
use crate::rewrite::Rewriter;
use crate::syntax::{is_attr, strip_markers};
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{Attribute, Block, Generics, ImplItem, Item, Signature, Stmt, TraitItem};

/// What a region runs under.
struct Region<'a> {
    policy: Policy,
    overrides: &'a [Override],
    keep: bool,
}

impl Region<'_> {
    /// `#[autocast(bf16)]`, for messages.
    fn label(&self) -> String {
        if self.keep {
            "#[keep_fp32]".to_string()
        } else {
            format!("#[autocast({})]", self.policy.label())
        }
    }

    /// The policy as the report shows it.
    fn written(&self) -> String {
        if self.keep {
            "keep_fp32".to_string()
        } else {
            self.policy.label()
        }
    }

    fn policy_tokens(&self) -> TokenStream {
        if self.keep {
            Known::F32.type_tokens()
        } else {
            self.policy.type_tokens()
        }
    }

    fn known(&self) -> Option<Known> {
        if self.keep {
            Some(Known::F32)
        } else {
            self.policy.known()
        }
    }
}

/// `#[autocast(..)]` on an item.
pub fn autocast(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let parsed = args::parse(args, &mut errors);
    let Ok(mut item) = syn::parse2::<Item>(item.clone()) else {
        errors.at(
            Span::call_site(),
            "#[autocast] applies to a fn, an impl block or an inline mod",
        );
        return finish_with_errors(item, &errors);
    };
    let original = item.clone();
    if let Some(parsed) = &parsed {
        let region = Region {
            policy: parsed.policy.clone(),
            overrides: &parsed.overrides,
            keep: false,
        };
        expand_item(&mut item, &region, &Generics::default(), &mut errors, true);
    }
    finish(item, original, &errors)
}

/// `#[keep_fp32]` on a fn or method outside an `#[autocast]` impl.
pub fn keep_fp32(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    if !args.is_empty() {
        errors.spanned(&args, "#[keep_fp32] takes no arguments");
    }
    let Ok(mut item) = syn::parse2::<Item>(item.clone()) else {
        errors.at(
            Span::call_site(),
            "#[keep_fp32] on an item applies to a fn or method",
        );
        return finish_with_errors(item, &errors);
    };
    let original = item.clone();
    match &mut item {
        Item::Fn(f) => {
            let region = Region { policy: Policy::Known(Known::F32), overrides: &[], keep: true };
            reject_second_marker(&f.attrs, &mut errors);
            expand_fn(&f.sig, &mut f.block, &region, &Generics::default(), None, &mut errors);
        }
        other => errors.spanned(
            item_keyword(other),
            "#[keep_fp32] on an item applies to a fn or method; inside an #[autocast] region it also marks a \
             statement, block or closure",
        ),
    }
    finish(item, original, &errors)
}

fn finish(item: Item, mut original: Item, errors: &Errors) -> TokenStream {
    if errors.is_empty() {
        return item.into_token_stream();
    }
    StripMarkers.visit_item_mut(&mut original);
    finish_with_errors(original.into_token_stream(), errors)
}

fn finish_with_errors(item: TokenStream, errors: &Errors) -> TokenStream {
    let errors = errors.to_compile_errors();
    quote!(#errors #item)
}

/// Expands one item of a region: fns directly, every method of an impl, every fn of an inline mod.
fn expand_item(item: &mut Item, region: &Region, outer: &Generics, errors: &mut Errors, top: bool) {
    match item {
        // A const fn inside an impl or mod runs no tensor ops: it is left as written (on its own it is an
        // error, reported by `expand_fn`).
        Item::Fn(f) if !top && f.sig.constness.is_some() => {}
        Item::Fn(f) => {
            let region = own_region(&mut f.attrs, region, errors, top);
            expand_fn(&f.sig, &mut f.block, &region, outer, None, errors);
        }
        Item::Trait(t) if !top => {
            let owner = t.ident.to_string();
            let generics = merge(outer, &t.generics);
            for trait_item in t.items.iter_mut() {
                if let TraitItem::Fn(f) = trait_item
                    && f.sig.constness.is_none()
                    && let Some(block) = &mut f.default
                {
                    let region = own_region(&mut f.attrs, region, errors, false);
                    expand_fn(&f.sig, block, &region, &generics, Some(&owner), errors);
                }
            }
        }
        Item::Impl(imp) => {
            if !top && has_marker(&imp.attrs) {
                reject_nested(&imp.attrs, region, errors);
            }
            let owner = imp.self_ty.to_token_stream().to_string().replace(' ', "");
            let generics = merge(outer, &imp.generics);
            for impl_item in imp.items.iter_mut() {
                if let ImplItem::Fn(f) = impl_item
                    && f.sig.constness.is_none()
                {
                    let region = own_region(&mut f.attrs, region, errors, false);
                    expand_fn(
                        &f.sig,
                        &mut f.block,
                        &region,
                        &generics,
                        Some(&owner),
                        errors,
                    );
                }
            }
        }
        Item::Mod(m) => {
            if !top && has_marker(&m.attrs) {
                reject_nested(&m.attrs, region, errors);
            }
            match &mut m.content {
                Some((_, items)) => {
                    for inner in items.iter_mut() {
                        expand_item(inner, region, outer, errors, false);
                    }
                }
                None if top => errors.spanned(
                    &m.ident,
                    "#[autocast] applies to an inline mod (`mod name { .. }`), not to a module in another file",
                ),
                None => {}
            }
        }
        other if top => errors.spanned(
            item_keyword(other),
            "#[autocast] applies to a fn, an impl block or an inline mod\n\
             help: put it on the fn or impl that holds the model code",
        ),
        _ => {}
    }
}

/// A fn's own markers inside a region: `#[keep_fp32]` switches it to f32; another `#[autocast]` is an
/// error (the region's policy is set once).
fn own_region<'a>(
    attrs: &mut Vec<Attribute>,
    region: &Region<'a>,
    errors: &mut Errors,
    top: bool,
) -> Region<'a> {
    if top {
        reject_second_marker(attrs, errors);
        return Region {
            policy: region.policy.clone(),
            overrides: region.overrides,
            keep: region.keep,
        };
    }
    let keep = attrs.iter().any(|a| is_attr(a, "keep_fp32"));
    reject_nested(attrs, region, errors);
    attrs.retain(|a| !is_attr(a, "keep_fp32") && !is_attr(a, "autocast"));
    Region {
        policy: region.policy.clone(),
        overrides: region.overrides,
        keep: keep || region.keep,
    }
}

fn has_marker(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| is_attr(a, "autocast"))
}

fn reject_nested(attrs: &[Attribute], region: &Region, errors: &mut Errors) {
    for attr in attrs.iter().filter(|a| is_attr(a, "autocast")) {
        errors.spanned(
            attr,
            format!(
                "nested #[autocast] inside {}: a region's policy is set once, on its fn, impl block or mod\n\
                 help: to run this part in f32, mark it #[keep_fp32] instead",
                region.label()
            ),
        );
    }
}

/// `#[autocast]` and `#[keep_fp32]` on the same fn conflict.
fn reject_second_marker(attrs: &[Attribute], errors: &mut Errors) {
    for attr in attrs
        .iter()
        .filter(|a| is_attr(a, "autocast") || is_attr(a, "keep_fp32"))
    {
        errors.spanned(
            attr,
            "#[autocast] and #[keep_fp32] on one item conflict: use one of them",
        );
    }
}

fn merge(outer: &Generics, inner: &Generics) -> Generics {
    let mut merged = inner.clone();
    merged.params.extend(outer.params.iter().cloned());
    merged
}

fn item_keyword(item: &Item) -> TokenStream {
    match item {
        Item::Struct(s) => s.struct_token.to_token_stream(),
        Item::Enum(e) => e.enum_token.to_token_stream(),
        Item::Trait(t) => t.trait_token.to_token_stream(),
        Item::Const(c) => c.const_token.to_token_stream(),
        Item::Static(s) => s.static_token.to_token_stream(),
        Item::Use(u) => u.use_token.to_token_stream(),
        _ => quote!(),
    }
}

/// Checks that a policy written as a lowercase identifier is a type parameter in scope (`bfloat16` is a
/// typo, not a type).
fn check_policy(region: &Region, sig: &Signature, outer: &Generics, errors: &mut Errors) {
    if region.keep {
        return;
    }
    let Some(ident) = region.policy.ident() else {
        return;
    };
    let declared = sig
        .generics
        .type_params()
        .chain(outer.type_params())
        .any(|p| p.ident == *ident);
    if !declared && region.policy.suspicious_ident().is_some() {
        errors.spanned(ident, format!("unknown policy `{ident}`: {}", args::USAGE));
    }
}

/// Rewrites one function body into a region.
fn expand_fn(
    sig: &Signature,
    block: &mut Block,
    region: &Region,
    outer: &Generics,
    owner: Option<&str>,
    errors: &mut Errors,
) {
    if let Some(c) = &sig.constness {
        errors.spanned(
            c,
            format!(
                "{} cannot apply to a const fn: tensor ops do not run at compile time",
                region.label()
            ),
        );
        return;
    }
    check_policy(region, sig, outer, errors);
    let mut rewriter = Rewriter::new(
        region.policy_tokens(),
        region.known(),
        region.keep,
        region.overrides,
        region.label(),
        errors,
    );
    rewriter.note_signature(sig);
    rewriter.visit_block_mut(block);
    let ops = std::mem::take(&mut rewriter.ops);

    if let Some(ty) = declared(&sig.output) {
        ReturnRewriter { ty }.visit_block_mut(block);
        if let Some(Stmt::Expr(tail, None)) = block.stmts.last_mut()
            && let Some(converted) = convert(ty, tail)
        {
            *tail = converted;
        }
    }

    let name = sig.ident.to_string();
    let path = match owner {
        Some(owner) => format!("{owner}::{name}"),
        None => name,
    };
    let written = region.written();
    let policy = region.policy_tokens();
    let fn_line = quote_spanned!(sig.ident.span()=> ::core::line!());
    let sites = ops.iter().map(|op| {
        let (name, class) = (&op.name, op.class.tokens());
        let line = quote_spanned!(op.span=> ::core::line!());
        quote!(::amp::__private::autocast::OpSite { op: #name, class: #class, line: #line })
    });
    // An async body may resume on another thread, so it registers without marking the thread as inside
    // a region (which the tracing uses).
    let entry = if sig.asyncness.is_some() {
        quote!(::amp::__private::autocast::register::<#policy>(&__AMP_SITE);)
    } else {
        quote!(let __amp_region = ::amp::__private::autocast::enter::<#policy>(&__AMP_SITE);)
    };
    let stmts = &block.stmts;
    let new_block: Block = syn::parse_quote_spanned!(block.span()=> {
        #[allow(unused_imports)]
        use ::amp::__private::autocast::prelude::*;
        static __AMP_SITE: ::amp::__private::autocast::RegionSite = ::amp::__private::autocast::RegionSite::new(
            ::core::concat!(::core::module_path!(), "::", #path),
            ::core::file!(),
            #fn_line,
            #written,
            &[#(#sites),*],
        );
        #entry
        #(#stmts)*
    });
    *block = new_block;
}

/// Removes marker attributes everywhere, for re-emitting an item after an error.
struct StripMarkers;

impl VisitMut for StripMarkers {
    fn visit_attributes_mut(&mut self, attrs: &mut Vec<Attribute>) {
        strip_markers(attrs);
    }

    fn visit_expr_mut(&mut self, expr: &mut syn::Expr) {
        if let Some(attrs) = crate::syntax::expr_attrs_mut(expr) {
            strip_markers(attrs);
        }
        visit_mut::visit_expr_mut(self, expr);
    }

    fn visit_local_mut(&mut self, local: &mut syn::Local) {
        strip_markers(&mut local.attrs);
        visit_mut::visit_local_mut(self, local);
    }

    fn visit_impl_item_fn_mut(&mut self, f: &mut syn::ImplItemFn) {
        strip_markers(&mut f.attrs);
        visit_mut::visit_impl_item_fn_mut(self, f);
    }

    fn visit_item_fn_mut(&mut self, f: &mut syn::ItemFn) {
        strip_markers(&mut f.attrs);
        visit_mut::visit_item_fn_mut(self, f);
    }
}
