//! Casting return values to the declared type: a function written against `Tensor<f32>` keeps its
//! signature under every policy. Tensors, tuples of them, and `Option`/`Result` of those are converted;
//! any other return type is returned unchanged.

use syn::visit_mut::{self, VisitMut};
use syn::{Expr, GenericArgument, PathArguments, ReturnType, Type, parse_quote};

/// Code converting `value` (an expression) to `ty`, or `None` if `ty` holds no tensor to convert. The value
/// is first bound with `ty`'s shape and every tensor's element type left to inference, so that an
/// expression like `Err(e)` still knows its full type.
pub fn convert(ty: &Type, value: &Expr) -> Option<Expr> {
    // A macro tail (`todo!()`, `unreachable!()`) or a value with nothing to convert keeps its type from
    // the signature.
    if holds_no_value(value) || matches!(value, Expr::Macro(_)) {
        return None;
    }
    let converted = convert_bound(ty, &parse_quote!(__amp_value))?;
    let mut relaxed = ty.clone();
    TensorElementInfer.visit_type_mut(&mut relaxed);
    Some(parse_quote!({ let __amp_value: #relaxed = #value; #converted }))
}

/// Values with nothing to convert, whose type only the declared return type determines: `None`,
/// `Err(..)`, and `Ok`/`Some` of those (converting them would leave their tensor type unknown).
fn holds_no_value(value: &Expr) -> bool {
    match value {
        Expr::Path(p) => p.path.is_ident("None"),
        Expr::Paren(p) => holds_no_value(&p.expr),
        Expr::Call(call) => {
            let Expr::Path(f) = &*call.func else {
                return false;
            };
            let Some(name) = f.path.segments.last().map(|s| s.ident.to_string()) else {
                return false;
            };
            match name.as_str() {
                "Err" => true,
                "Ok" | "Some" => call.args.len() == 1 && holds_no_value(&call.args[0]),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether a type is a primitive integer or `bool`.
fn is_integer_or_bool(ty: &Type) -> bool {
    const NAMES: [&str; 13] = [
        "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize",
        "bool",
    ];
    matches!(ty, Type::Path(p) if p.path.get_ident().is_some_and(|i| NAMES.iter().any(|n| i == n)))
}

/// `Tensor<T>` becomes `Tensor<_>`.
struct TensorElementInfer;

impl VisitMut for TensorElementInfer {
    fn visit_path_segment_mut(&mut self, segment: &mut syn::PathSegment) {
        if segment.ident == "Tensor"
            && let PathArguments::AngleBracketed(args) = &mut segment.arguments
            && args.args.len() == 1
            && matches!(args.args[0], GenericArgument::Type(_))
        {
            args.args[0] = parse_quote!(_);
            return;
        }
        visit_mut::visit_path_segment_mut(self, segment);
    }
}

fn convert_bound(ty: &Type, value: &Expr) -> Option<Expr> {
    match ty {
        Type::Paren(p) => convert_bound(&p.elem, value),
        Type::Group(g) => convert_bound(&g.elem, value),
        Type::Tuple(tuple) => {
            let names: Vec<syn::Ident> = (0..tuple.elems.len())
                .map(|i| quote::format_ident!("__amp_ret{}", i))
                .collect();
            let parts: Vec<Expr> = tuple
                .elems
                .iter()
                .zip(&names)
                .map(|(t, n)| {
                    let v: Expr = parse_quote!(#n);
                    convert_bound(t, &v).unwrap_or(v)
                })
                .collect();
            let converts_any = tuple
                .elems
                .iter()
                .any(|t| convert(t, &parse_quote!(x)).is_some());
            converts_any.then(|| parse_quote!({ let (#(#names,)*) = #value; (#(#parts,)*) }))
        }
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last()?;
            let PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            let first = args.args.iter().find_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })?;
            match last.ident.to_string().as_str() {
                // Integer and bool tensors (labels, masks) are never cast.
                "Tensor" if args.args.len() == 1 && !is_integer_or_bool(first) => {
                    Some(parse_quote!(::amp::__private::autocast::ret::<#first, _>(#value)))
                }
                "Option" | "Result" => {
                    let v: Expr = parse_quote!(__amp_ok);
                    let inner = convert_bound(first, &v)?;
                    Some(parse_quote!((#value).map(|__amp_ok| #inner)))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Converts the value of every `return` in a body (not in nested closures, async blocks or items).
pub struct ReturnRewriter<'a> {
    pub ty: &'a Type,
}

impl VisitMut for ReturnRewriter<'_> {
    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        match expr {
            Expr::Return(ret) => {
                if let Some(value) = &mut ret.expr {
                    visit_mut::visit_expr_mut(self, value);
                    if let Some(converted) = convert(self.ty, value) {
                        **value = converted;
                    }
                }
            }
            Expr::Closure(_) | Expr::Async(_) => {}
            _ => visit_mut::visit_expr_mut(self, expr),
        }
    }

    fn visit_item_mut(&mut self, _item: &mut syn::Item) {}
}

/// The declared return type, if any.
pub fn declared(output: &ReturnType) -> Option<&Type> {
    match output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => Some(ty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::ToTokens;

    fn show(ty: &str) -> Option<String> {
        let ty: Type = syn::parse_str(ty).unwrap();
        convert(&ty, &parse_quote!(v)).map(|e| e.to_token_stream().to_string())
    }

    #[test]
    fn converts_tensors_and_their_containers_only() {
        assert!(show("Tensor<f32>").unwrap().contains("ret :: < f32 , _ >"));
        assert!(
            show("amp::Tensor<P::Low>")
                .unwrap()
                .contains("ret :: < P :: Low , _ >")
        );
        assert!(show("(Tensor<f32>, usize)").unwrap().contains("__amp_ret0"));
        assert!(show("Option<Tensor<f32>>").unwrap().contains("map"));
        assert!(
            show("Result<(Tensor<f32>, Tensor<bf16>), String>")
                .unwrap()
                .contains("__amp_ret1")
        );
        assert_eq!(show("f32"), None);
        assert_eq!(show("Vec<Tensor<f32>>"), None);
        assert_eq!(show("(usize, String)"), None);
        assert_eq!(show("Result<usize, String>"), None);
    }
}
