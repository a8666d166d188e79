//! Every malformed #[module] attribute is reported, all at once.
use amp::prelude::*;

#[derive(Module)]
#[module(skip)]
struct Model {
    #[module]
    a: Linear,
    #[module = "b"]
    b: Linear,
    #[module(skip = true)]
    c: Linear,
    #[module(rename)]
    d: Linear,
    #[module(rename = "")]
    e: Linear,
    #[module(skip, rename = "f2")]
    f: Linear,
    #[module(skip, skip)]
    g: Linear,
}

fn main() {}
