//! Documentation of the attributes (this module has no items).
#![doc = include_str!("attributes_intro.md")]
#![doc = include_str!("../macros/policy.md")]
#![doc = include_str!("attributes_body.md")]
