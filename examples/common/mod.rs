//! Code shared by the examples (and by the tests that run them in small).

// Each example and test uses a different subset of these helpers.
#![allow(dead_code)]

pub mod digits;
pub mod gpt;
pub mod gpt_train;
pub mod mlp;
pub mod optimizers;
pub mod plot;
pub mod shakespeare_cli;
pub mod stats;
pub mod text;
