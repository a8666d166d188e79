//! The arguments of `#[autocast(..)]`: a policy, then optional per-region overrides.
//!
//! ```text
//! #[autocast(bf16)]                       // bf16, f16 or f32
//! #[autocast(P)]                          // a type implementing amp::Policy, usually a type parameter
//! #[autocast(bf16, f32 = [my_op, other])] // ops the table does not know, run in f32 (or `low = [..]`)
//! ```

use crate::errors::Errors;
use crate::table::Class;
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Ident, Token, Type, bracketed};

/// A policy known when the macro runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// `bf16`
    Bf16,
    /// `f16`
    F16,
    /// `f32`
    F32,
}

impl Known {
    fn from_ident(name: &str) -> Option<Known> {
        match name {
            "bf16" => Some(Known::Bf16),
            "f16" => Some(Known::F16),
            "f32" => Some(Known::F32),
            _ => None,
        }
    }

    /// The policy type.
    pub fn type_tokens(self) -> TokenStream {
        match self {
            Known::Bf16 => quote!(::amp::policy::Bf16),
            Known::F16 => quote!(::amp::policy::F16),
            Known::F32 => quote!(::amp::policy::F32),
        }
    }

    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            Known::Bf16 => "bf16",
            Known::F16 => "f16",
            Known::F32 => "f32",
        }
    }
}

/// The policy argument.
#[derive(Clone)]
pub enum Policy {
    /// `bf16`, `f16` or `f32`.
    Known(Known),
    /// A type implementing `amp::Policy` (a type parameter or a path), resolved by rustc.
    Type(Box<Type>),
}

impl Policy {
    /// The policy as a type.
    pub fn type_tokens(&self) -> TokenStream {
        match self {
            Policy::Known(k) => k.type_tokens(),
            Policy::Type(t) => t.to_token_stream(),
        }
    }

    /// The policy as written, for the precision report.
    pub fn label(&self) -> String {
        match self {
            Policy::Known(k) => k.name().to_string(),
            Policy::Type(t) => t.to_token_stream().to_string().replace(' ', ""),
        }
    }

    /// The policy if the macro knows it.
    pub fn known(&self) -> Option<Known> {
        match self {
            Policy::Known(k) => Some(*k),
            Policy::Type(_) => None,
        }
    }

    /// A single lowercase identifier that is not a known policy (`bfloat16`, `fp16`): almost certainly a
    /// typo rather than a type.
    pub fn suspicious_ident(&self) -> Option<&Ident> {
        let Policy::Type(ty) = self else {
            return None;
        };
        let Type::Path(p) = ty.as_ref() else {
            return None;
        };
        let ident = p.path.get_ident()?;
        ident
            .to_string()
            .starts_with(|c: char| c.is_ascii_lowercase())
            .then_some(ident)
    }

    /// The identifier, if the policy is a bare identifier (a possible type parameter).
    pub fn ident(&self) -> Option<&Ident> {
        let Policy::Type(ty) = self else {
            return None;
        };
        let Type::Path(p) = ty.as_ref() else {
            return None;
        };
        if p.qself.is_some() {
            return None;
        }
        p.path.get_ident()
    }
}

/// An op the attribute's overrides assign to a class.
#[derive(Clone)]
pub struct Override {
    /// Method name.
    pub name: String,
    /// The class it gets.
    pub class: Class,
}

/// Parsed arguments.
pub struct Args {
    /// The policy.
    pub policy: Policy,
    /// Per-region class overrides.
    pub overrides: Vec<Override>,
}

enum Arg {
    Policy(Type, Span),
    Override(Ident, Vec<Ident>),
}

fn parse_arg(input: ParseStream) -> syn::Result<Arg> {
    if input.peek(Ident) && input.peek2(Token![=]) {
        let key: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let content;
        bracketed!(content in input);
        let names = Punctuated::<Ident, Token![,]>::parse_terminated(&content)?;
        return Ok(Arg::Override(key, names.into_iter().collect()));
    }
    let span = input.span();
    let ty: Type = input.parse()?;
    Ok(Arg::Policy(ty, span))
}

/// How the attribute is written, for error messages.
pub const USAGE: &str = "expected #[autocast(bf16)], #[autocast(f16)], #[autocast(f32)] or #[autocast(P)] with P: amp::Policy";

/// Parses the arguments, recording every problem; `None` when no policy could be read.
pub fn parse(tokens: TokenStream, errors: &mut Errors) -> Option<Args> {
    let parser =
        |input: ParseStream| Punctuated::<Arg, Token![,]>::parse_terminated_with(input, parse_arg);
    let parsed = match parser.parse2(tokens) {
        Ok(p) => p,
        Err(e) => {
            errors.at(
                e.span(),
                format!("malformed #[autocast] arguments: {e}; {USAGE}"),
            );
            return None;
        }
    };
    let mut policy: Option<Policy> = None;
    let mut overrides: Vec<Override> = Vec::new();
    let mut seen_keys: Vec<String> = Vec::new();
    for arg in parsed {
        match arg {
            Arg::Policy(ty, span) => {
                if policy.is_some() {
                    errors.at(
                        span,
                        "duplicate policy: #[autocast] takes exactly one policy",
                    );
                    continue;
                }
                let known = match &ty {
                    Type::Path(p) if p.qself.is_none() => p.path.segments.last().and_then(|s| {
                        let name = s.ident.to_string();
                        // `bf16`, or the policy type itself (`Bf16`, `amp::policy::F16`).
                        let by_type = match name.as_str() {
                            "Bf16" => Some(Known::Bf16),
                            "F16" => Some(Known::F16),
                            "F32" => Some(Known::F32),
                            _ => None,
                        };
                        let bare = p.path.segments.len() == 1 && s.arguments.is_none();
                        let by_name = if bare { Known::from_ident(&name) } else { None };
                        by_name.or(if s.arguments.is_none() { by_type } else { None })
                    }),
                    _ => None,
                };
                policy = Some(match known {
                    Some(k) => Policy::Known(k),
                    None => Policy::Type(Box::new(ty)),
                });
            }
            Arg::Override(key, names) => {
                let key_name = key.to_string();
                let class = match key_name.as_str() {
                    "f32" => Class::F32,
                    "low" => Class::Low,
                    _ => {
                        errors.spanned(&key, format!("unknown argument `{key_name}`: expected `f32 = [ops]` or `low = [ops]`"));
                        continue;
                    }
                };
                if seen_keys.contains(&key_name) {
                    errors.spanned(&key, format!("duplicate argument `{key_name}`"));
                    continue;
                }
                seen_keys.push(key_name);
                if names.is_empty() {
                    errors.spanned(&key, "an override lists at least one op name");
                }
                for name in names {
                    let n = name.to_string();
                    if overrides.iter().any(|o| o.name == n) {
                        errors.spanned(&name, format!("`{n}` is listed twice in the overrides"));
                        continue;
                    }
                    overrides.push(Override { name: n, class });
                }
            }
        }
    }
    match policy {
        Some(policy) => Some(Args { policy, overrides }),
        None => {
            errors.at(Span::call_site(), format!("missing policy: {USAGE}"));
            None
        }
    }
}
