//! Compile-time behaviour of the attributes: every rejection (`tests/ui/fail`, each with the expected
//! compiler output beside it) and the forms that must compile and run (`tests/ui/pass`).
//! After an intended change of a message: `TRYBUILD=overwrite cargo test --test ui`, then review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
