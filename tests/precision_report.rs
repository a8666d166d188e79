//! The precision report: regions register what the attribute decided when they first run, and with
//! tracing on, low-precision ops that ran in full precision outside any region are flagged with their
//! call sites. (One test: tracing is process-wide.)

use amp::prelude::*;

#[autocast(bf16)]
fn region(x: &Tensor<f32>, w: &Param) -> Tensor<f32> {
    x.linear(w, None).softmax(-1)
}

#[autocast(P)]
fn generic_region<P: Policy>(x: &Tensor<f32>) -> Tensor<f32> {
    x.matmul(&x.t())
}

/// The report lists each region per policy with its ops, lines and classes, and the trace separates
/// ops inside regions from full-precision ops outside them.
#[test]
fn report_lists_regions_and_traced_ops() {
    amp::set_tracing(true);
    let x = Tensor::<f32>::ones([2, 3]);
    let w = Param::new(Tensor::ones([4, 3]));
    let _ = region(&x, &w);
    let _ = generic_region::<Bf16>(&x);
    let _ = generic_region::<F16>(&x);
    let _ = generic_region::<F16>(&x);
    let outside_line = line!() + 1;
    let _ = x.matmul(&x.t());

    let report = amp::report();
    let find = |name: &str, policy: &str| {
        report
            .regions
            .iter()
            .find(|r| r.site.function.ends_with(name) && r.policy == policy)
            .unwrap_or_else(|| panic!("{name} under {policy} is not in the report:\n{report}"))
    };
    let r = find("::region", "bf16");
    let ops: Vec<(&str, String)> = r
        .site
        .ops
        .iter()
        .map(|o| (o.op, o.class.to_string()))
        .collect();
    assert_eq!(
        ops,
        vec![
            ("linear", "low".to_string()),
            ("softmax", "f32".to_string())
        ]
    );
    assert_eq!(r.site.ops[0].line, r.site.line + 1);
    assert!(r.site.file.ends_with("precision_report.rs"));
    let g = find("::generic_region", "f16");
    assert_eq!(g.site.written, "P");
    find("::generic_region", "bf16");
    assert_eq!(
        report
            .regions
            .iter()
            .filter(|r| r.site.function.ends_with("::generic_region"))
            .count(),
        2
    );

    let inside: Vec<_> = report.traced.iter().filter(|(t, _)| t.in_region).collect();
    assert!(
        inside
            .iter()
            .any(|(t, _)| t.op == "linear" && t.dtype == DType::BF16)
    );
    assert!(
        inside
            .iter()
            .any(|(t, n)| t.op == "matmul" && t.dtype == DType::F16 && *n == 2)
    );
    let flagged: Vec<_> = report.full_precision_outside_regions().collect();
    assert_eq!(flagged.len(), 1, "{report}");
    assert_eq!(flagged[0].0.op, "matmul");
    assert!(
        flagged[0]
            .0
            .location
            .contains(&format!("precision_report.rs:{outside_line}")),
        "{}",
        flagged[0].0.location
    );

    let text = report.to_string();
    assert!(
        text.contains("policy bf16") && text.contains("ran in full precision outside any region"),
        "{text}"
    );
}
