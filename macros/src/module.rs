//! `#[derive(Module)]`: visits a struct's parameters field by field, in declaration order.
//!
//! ```text
//! #[derive(Module)]
//! struct Block<P: Policy> {
//!     attn: Attention,              // visited as "attn.…" (a Module)
//!     mlp: Vec<Linear>,             // "mlp.0.weight", "mlp.1.weight", …
//!     head: Option<Linear>,         // visited when Some
//!     dropout: f64,                 // skipped: a plain number
//!     #[module(skip)]
//!     cache: KvCache,               // skipped: holds no parameters
//!     #[module(rename = "ln_f")]
//!     final_norm: LayerNorm,        // visited as "ln_f.…"
//!     _policy: PhantomData<P>,      // skipped
//! }
//! ```
//!
//! Each visited field goes through `::amp::nn::ModuleField`, implemented for `Param`, every `Module`, and
//! `Vec`/`Option` of those; a field of any other type is a type error at the field, whose message (the
//! trait's `#[diagnostic::on_unimplemented]`) says to add `#[module(skip)]`.

use crate::errors::Errors;
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, LitStr, Member, Token, Type};

const USAGE: &str = "expected #[module(skip)] or #[module(rename = \"name\")]";

/// What `#[module(..)]` says about one field.
#[derive(Default)]
struct FieldAttrs {
    skip: bool,
    rename: Option<LitStr>,
}

/// Expands `#[derive(Module)]` on `input`.
pub fn derive(input: TokenStream) -> TokenStream {
    let input = match syn::parse2::<DeriveInput>(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = Errors::default();
    for attr in module_attrs(&input.attrs) {
        errors.spanned(
            attr,
            "#[module(..)] goes on a field of a #[derive(Module)] struct, not on the struct",
        );
    }
    let fields = match &input.data {
        Data::Struct(s) => &s.fields,
        Data::Enum(e) => {
            errors.spanned(
                e.enum_token,
                "#[derive(Module)] applies to a struct\n\
                 help: to choose between layers, use a struct with an Option<..> field for each choice",
            );
            return errors.to_compile_errors();
        }
        Data::Union(u) => {
            errors.spanned(u.union_token, "#[derive(Module)] applies to a struct");
            return errors.to_compile_errors();
        }
    };

    let mut visits = Vec::new();
    for (index, field) in fields.iter().enumerate() {
        let attrs = field_attrs(&field.attrs, &mut errors);
        if attrs.skip || is_plain_data(&field.ty) {
            continue;
        }
        // The member carries the type's span, so that a type holding no parameters is reported there.
        let span = field.ty.span();
        let (member, name) = match &field.ident {
            Some(ident) => {
                let mut member = ident.clone();
                member.set_span(span);
                (Member::Named(member), ident.unraw().to_string())
            }
            None => (
                Member::Unnamed(syn::Index {
                    index: index as u32,
                    span,
                }),
                index.to_string(),
            ),
        };
        let name = attrs.rename.map_or(name, |lit| lit.value());
        visits.push(quote_spanned! {span=>
            ::amp::nn::ModuleField::visit_field(&self.#member, &::amp::nn::join_name(prefix, #name), f);
        });
    }
    if !errors.is_empty() {
        return errors.to_compile_errors();
    }

    // A struct without parameters still implements Module (like a parameter-free PyTorch module), and
    // must not warn about its unused arguments.
    let (prefix, f) = if visits.is_empty() {
        (format_ident!("_prefix"), format_ident!("_f"))
    } else {
        (format_ident!("prefix"), format_ident!("f"))
    };
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics ::amp::nn::Module for #ident #ty_generics #where_clause {
            fn visit_params(
                &self,
                #prefix: &::core::primitive::str,
                #f: &mut dyn ::core::ops::FnMut(::std::string::String, &::amp::Param),
            ) {
                #(#visits)*
            }
        }
    }
}

fn module_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("module"))
}

/// Parses every `#[module(..)]` on a field, recording each malformed or unknown argument.
fn field_attrs(attrs: &[Attribute], errors: &mut Errors) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in module_attrs(attrs) {
        if attr.meta.require_list().is_err() {
            errors.spanned(attr, format!("malformed #[module] attribute: {USAGE}"));
            continue;
        }
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                if !(meta.input.is_empty() || meta.input.peek(Token![,])) {
                    return Err(meta.error(format!("`skip` takes no value: {USAGE}")));
                }
                if out.skip {
                    errors.spanned(&meta.path, "duplicate `skip`");
                }
                out.skip = true;
                Ok(())
            } else if meta.path.is_ident("rename") {
                let lit: LitStr = meta.value().and_then(|value| value.parse()).map_err(|_| {
                    syn::Error::new_spanned(
                        &meta.path,
                        "`rename` takes a string: #[module(rename = \"name\")]",
                    )
                })?;
                if lit.value().is_empty() {
                    errors.spanned(&lit, "#[module(rename = ..)] needs a non-empty name");
                } else if out.rename.is_some() {
                    errors.spanned(&meta.path, "duplicate `rename`");
                }
                out.rename = Some(lit);
                Ok(())
            } else {
                let path = &meta.path;
                let name = quote!(#path).to_string().replace(' ', "");
                Err(meta.error(format!("unknown #[module] argument `{name}`: {USAGE}")))
            }
        });
        if let Err(e) = parsed {
            errors.at(e.span(), e);
        }
    }
    if out.skip
        && let Some(lit) = &out.rename
    {
        errors.spanned(
            lit,
            "a skipped field has no name to rename: use either `skip` or `rename`",
        );
    }
    out
}

/// Whether a field's type certainly holds no parameters: `PhantomData<..>`, a primitive number, `bool`,
/// `char`, `str`, `String`, `()`, or a reference, array, slice or tuple of those. Decided on syntax alone,
/// so a type alias to one of them is not recognized (it needs `#[module(skip)]`).
fn is_plain_data(ty: &Type) -> bool {
    const PLAIN: &[&str] = &[
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
        "f32", "f64", "bool", "char", "str", "String",
    ];
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().is_some_and(|last| {
            last.ident == "PhantomData"
                || (last.arguments.is_none() && PLAIN.iter().any(|name| last.ident == name))
        }),
        Type::Reference(r) => is_plain_data(&r.elem),
        Type::Array(a) => is_plain_data(&a.elem),
        Type::Slice(s) => is_plain_data(&s.elem),
        Type::Tuple(t) => t.elems.iter().all(is_plain_data),
        Type::Paren(p) => is_plain_data(&p.elem),
        Type::Group(g) => is_plain_data(&g.elem),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    /// The expansion with all whitespace removed (so the checks do not depend on line breaks).
    fn expand(input: TokenStream) -> String {
        derive(input).to_string().split_whitespace().collect()
    }

    /// Fields are visited in declaration order under their names; skipped ones are left out.
    #[test]
    fn visits_fields_in_order_and_skips_plain_data() {
        let out = expand(quote! {
            struct Model<P: Policy> where P: Copy {
                r#type: Embedding,
                #[module(skip)] cache: Cache,
                dropout: f64,
                #[module(rename = "ln_f")] norm: LayerNorm,
                _p: ::core::marker::PhantomData<P>,
            }
        });
        let type_at = out.find("(&self.r#type,&::amp::nn::join_name(prefix,\"type\"),f)");
        let ln_at = out.find("(&self.norm,&::amp::nn::join_name(prefix,\"ln_f\"),f)");
        assert!(type_at.unwrap() < ln_at.unwrap(), "{out}");
        assert_eq!(out.matches("visit_field").count(), 2, "{out}");
        assert!(
            out.contains("impl<P:Policy>::amp::nn::ModuleforModel<P>whereP:Copy{"),
            "{out}"
        );
    }

    /// Tuple struct fields are named by index; a struct without parameters gets unused-safe arguments.
    #[test]
    fn tuple_and_unit_structs() {
        let out = expand(quote!(
            struct Pair(Linear, #[module(skip)] Tokenizer, Param);
        ));
        assert!(
            out.contains("(&self.0,&::amp::nn::join_name(prefix,\"0\"),f)"),
            "{out}"
        );
        assert!(
            out.contains("(&self.2,&::amp::nn::join_name(prefix,\"2\"),f)"),
            "{out}"
        );
        assert!(!out.contains("self.1"), "{out}");
        let unit = expand(quote!(
            struct Identity;
        ));
        assert!(
            unit.contains("_prefix:&::core::primitive::str,_f:&mut"),
            "{unit}"
        );
        assert!(!unit.contains("visit_field"), "{unit}");
    }

    /// Every error is reported, and no impl is emitted next to them.
    #[test]
    fn collects_every_error() {
        let out = derive(quote! {
            #[module(skip)]
            struct Model {
                #[module(frobnicate)] a: Linear,
                #[module] b: Linear,
                #[module(skip, rename = "c2")] c: Linear,
            }
        })
        .to_string();
        assert_eq!(out.matches("compile_error").count(), 4, "{out}");
        assert!(
            out.contains("unknown #[module] argument `frobnicate`"),
            "{out}"
        );
        assert!(!out.contains("impl"), "{out}");
        let out = derive(quote!(
            enum E {
                A,
            }
        ))
        .to_string();
        assert!(out.contains("applies to a struct"), "{out}");
    }

    /// Plain data is recognized through references, arrays, tuples and paths; containers are not.
    #[test]
    fn plain_data() {
        let plain = |ty: TokenStream| is_plain_data(&syn::parse2(ty).unwrap());
        assert!(plain(quote!(usize)));
        assert!(plain(quote!(std::string::String)));
        assert!(plain(quote!(&'static str)));
        assert!(plain(quote!([usize; 2])));
        assert!(plain(quote!((f32, bool))));
        assert!(plain(quote!(PhantomData<fn() -> P>)));
        assert!(!plain(quote!(Linear)));
        assert!(!plain(quote!(Vec<f32>)));
        assert!(!plain(quote!(f32<T>)));
        assert!(!plain(quote!(<T as Tr>::f32)));
    }
}
