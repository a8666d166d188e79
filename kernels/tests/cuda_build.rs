//! The CUDA backend on any machine: the kernels compile under NVRTC (where its library is present) and a
//! missing driver or device is an error, never a panic. The device tests are in the runtime's
//! `tests/cuda.rs`.
#![cfg(feature = "cuda")]

use amp_kernels::cuda::{self, CudaError};

/// Every kernel the Rust side launches, by the names it builds.
fn expected_kernels() -> Vec<String> {
    let all = ["f32", "f64", "bf16", "f16", "i64", "bool"];
    let floats = &all[..4];
    let bits = ["u8", "u16", "u32", "u64"];
    let mut names: Vec<String> = [
        "adam_step",
        "sgd_step",
        "stochastic_round_bf16",
        "kahan_round_bf16",
        "kahan_round_f16",
        "adam8bit_step",
        "momentum8bit_step",
    ]
    .map(String::from)
    .to_vec();
    for i in all {
        names.push(format!("compare_{i}"));
        names.extend(all.iter().map(|o| format!("cast_{i}_{o}")));
    }
    for i in floats {
        for kernel in [
            "unary_backward",
            "binary",
            "softmax_backward",
            "norm_backward",
            "unscale_and_check",
            "scatter_add",
            "index_add",
            "arg_reduce",
            "cumsum",
            "logsumexp",
            "col2im",
        ] {
            names.push(format!("{kernel}_{i}"));
        }
        for o in floats {
            for kernel in ["unary", "reduce", "softmax", "layer_norm", "rms_norm"] {
                names.push(format!("{kernel}_{i}_{o}"));
            }
        }
    }
    for b in bits {
        for kernel in [
            "select",
            "gather_layout",
            "copy_rows",
            "gather",
            "index_select",
            "im2col",
        ] {
            names.push(format!("{kernel}_{b}"));
        }
    }
    names
}

/// The kernels compile, and the PTX has an entry for every kernel name the launches use. Without the
/// NVRTC library this passes vacuously, unless `AMP_REQUIRE_NVRTC` is set (CI installs NVRTC and sets it).
#[test]
fn kernels_compile_under_nvrtc_with_every_launched_entry() {
    let ptx = match cuda::compiled_kernels() {
        Ok(ptx) => ptx,
        Err(CudaError::LibraryMissing { .. })
            if std::env::var_os("AMP_REQUIRE_NVRTC").is_none() =>
        {
            eprintln!("libnvrtc not found: kernel compilation not checked");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let text = ptx.to_src();
    if let Some(path) = std::env::var_os("AMP_DUMP_PTX") {
        std::fs::write(path, &text).unwrap();
    }
    let missing: Vec<String> = expected_kernels()
        .into_iter()
        .filter(|name| !text.contains(&format!(".entry {name}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "kernels missing from the PTX: {missing:?}"
    );
}

/// Asking for a device that does not exist is an error that says why (no driver here, or too few
/// devices on a GPU machine), and nothing panics.
#[test]
fn a_missing_device_is_an_error() {
    let beyond = cuda::device_count().unwrap_or(0) + 3;
    let err = cuda::gpu(beyond).expect_err("no machine has this many devices");
    match &err {
        CudaError::LibraryMissing { library } => assert_eq!(*library, "cuda"),
        CudaError::NoDevice { ordinal, .. } => assert_eq!(*ordinal, beyond),
        other => panic!("unexpected error: {other}"),
    }
    assert!(!err.to_string().is_empty());
}
