//! Expansion golden tests: each `tests/expand/<name>.rs` holds one item with its attribute; its
//! expansion, pretty-printed, must equal `tests/expand/<name>.expanded.rs`. Set `AMP_BLESS=1` to write the
//! expected files after an intended change, then review the diff.

use crate::expand;
use proc_macro2::TokenStream;
use quote::ToTokens;
use std::path::Path;

/// Expands the single item in `source` according to its `#[autocast(..)]` or `#[keep_fp32]` attribute.
fn expand_source(source: &str) -> String {
    let mut file: syn::File = syn::parse_str(source).expect("the case parses");
    let mut item = file.items.remove(0);
    let attrs = match &mut item {
        syn::Item::Fn(f) => &mut f.attrs,
        syn::Item::Impl(i) => &mut i.attrs,
        syn::Item::Mod(m) => &mut m.attrs,
        other => panic!("unsupported case item {}", other.to_token_stream()),
    };
    let index = attrs
        .iter()
        .position(|a| a.path().is_ident("autocast") || a.path().is_ident("keep_fp32"))
        .expect("the case has an attribute");
    let attr = attrs.remove(index);
    let args = match &attr.meta {
        syn::Meta::List(list) => list.tokens.clone(),
        _ => TokenStream::new(),
    };
    let output = if attr.path().is_ident("autocast") {
        expand::autocast(args, item.into_token_stream())
    } else {
        expand::keep_fp32(args, item.into_token_stream())
    };
    let file = syn::parse2::<syn::File>(output.clone())
        .unwrap_or_else(|e| panic!("the expansion is not valid Rust ({e}):\n{output}"));
    prettyplease::unparse(&file)
}

#[test]
fn expansions_match_the_checked_in_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand");
    let bless = std::env::var_os("AMP_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/expand exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "rs")
                && !p.to_string_lossy().ends_with(".expanded.rs")
        })
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 6,
        "expected at least 6 expansion cases, found {}",
        cases.len()
    );
    let mut mismatches = Vec::new();
    for case in &cases {
        let expanded = expand_source(&std::fs::read_to_string(case).expect("readable case"));
        let golden = case.with_extension("expanded.rs");
        if bless {
            std::fs::write(&golden, &expanded).expect("writable golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != expanded {
            mismatches.push(format!("{}:\n{expanded}", golden.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "expansions differ from the checked-in files (rerun with AMP_BLESS=1 and review the diff):\n{}",
        mismatches.join("\n")
    );
}

/// The macros return tokens (an expansion or `compile_error!`s) on arbitrary input; they never panic.
#[test]
fn never_panics_on_odd_input() {
    let items = [
        "",
        "fn",
        "struct S;",
        "trait T { fn f(&self) -> Tensor<f32> { self.x.matmul(&y) } }",
        "mod m;",
        "const fn f() {}",
        "fn f() { #[keep_fp32(1, 2)] let x = 1; }",
        "fn f() { let f = #[autocast] || 1; }",
        "fn f() -> (Tensor<f32>, ) { (x.exp(),) }",
        "fn f() -> Result<Tensor<f32>> { Ok(x.exp()) }",
        "fn f(v: f32) -> f32 { match v { 0.0..=1e5 => 1.0, 1e6 => 2.0, _ => 3.0 } }",
        "async fn f(x: &Tensor<f32>) -> Tensor<f32> { x.exp() }",
        "fn f(&mut self) -> Tensor<i64> { self.m.forward(x).argmax(-1) }",
        "fn f() { Tensor::cat(&[], 0); Tensor::cat(x); Tensor::stack(&[a], 0, 1); }",
        "fn f() { x.linear(None); x.layer_norm(); 1e400; -1e-400; 65504.0; 65505.0 }",
        "impl X { #[autocast] fn f() {} #[keep_fp32] const C: u8 = 0; }",
        "extern \"C\" { fn g(); }",
        "fn f() { x.cast(); x.cast::<>(); x.to_f32::<u8>(); }",
    ];
    let args = [
        "",
        "bf16",
        "f16",
        "f32",
        "P",
        "bf16, f16",
        "(",
        "bf16, f32 = [",
        "bf16, f32 = []",
        "1 + 2",
        "f32 = [a]",
    ];
    for item in items {
        for arg in args {
            for expand in [expand::autocast, expand::keep_fp32] {
                let (a, i) = (
                    arg.parse().unwrap_or_default(),
                    item.parse().unwrap_or_default(),
                );
                let out = expand(a, i);
                // When the input item is valid Rust, so is the output (expansion or errors plus the item).
                if syn::parse_str::<syn::Item>(item).is_ok() {
                    let parsed = syn::parse2::<syn::File>(out.clone());
                    assert!(
                        parsed.is_ok(),
                        "invalid output for `{arg}` on `{item}`:\n{out}"
                    );
                }
            }
        }
    }
}
