use amp::prelude::*;

#[autocast(bf16)]
const fn width() -> usize {
    128
}

fn main() {}
