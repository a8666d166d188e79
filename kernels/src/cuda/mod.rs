//! The CUDA backend (feature `cuda`): device handles, device buffers, and the ops of [`crate::cpu`] on the
//! device, as NVRTC kernels (`kernels.cu`, compiled once per process) and cuBLAS matrix products.
//!
//! The CUDA libraries are loaded at run time, so this builds and runs on machines without CUDA: every
//! entry point first checks that the library it needs can be loaded and returns
//! [`CudaError::LibraryMissing`] if not (cudarc itself would panic).

mod buffer;
mod compile;
mod device;
mod error;
mod gemm;
mod index;
mod ops;
mod optim8;
mod signature;

pub use buffer::DeviceBuffer;
pub use compile::{KERNEL_SOURCE, PORTABLE_ARCH};
pub use device::{Gpu, compiled_kernels, device_count, gpu};
pub use error::CudaError;
pub use gemm::gemm;
pub use index::{
    arg_reduce, col2im, cumsum, gather, im2col, index_add, index_select, logsumexp, scatter_add,
};
pub use ops::{
    MAX_RANK, adam_step, binary, broadcast_copy, cast, compare, copy_rows, kahan_round_through,
    layer_norm, norm_backward, permute, reduce, rms_norm, select, sgd_step, softmax,
    softmax_backward, stochastic_round_bf16, unary, unary_backward, unscale_and_check,
};
pub use optim8::{DeviceQuantized, adam8bit_step, momentum8bit_step};

#[cfg(test)]
mod tests {
    use super::device::{library_present, portable_kernels};
    use super::{compile, index::DeviceConv, ops::DeviceDim3, ops::Layout};
    use std::mem::{align_of, size_of};

    /// Whether NVRTC is missing where that is allowed (not in CI, which sets `AMP_REQUIRE_NVRTC`).
    fn nvrtc_missing_and_allowed() -> bool {
        let missing = library_present("nvrtc").is_err();
        if missing && std::env::var_os("AMP_REQUIRE_NVRTC").is_none() {
            eprintln!("libnvrtc not found: kernel compilation not checked");
            return true;
        }
        false
    }

    /// A device gets machine code for its own architecture (here an H100/H200's `sm_90`), with the same
    /// kernels and parameters as the portable PTX.
    #[test]
    fn kernels_compile_to_machine_code_for_a_real_architecture() {
        if nvrtc_missing_and_allowed() {
            return;
        }
        let native = compile::for_arch("sm_90").unwrap_or_else(|e| panic!("{e}"));
        let portable = portable_kernels().unwrap_or_else(|e| panic!("{e}"));
        let cubin = native.cubin.as_deref().expect("machine code for sm_90");
        assert!(cubin.starts_with(b"\x7fELF"), "not an ELF image");
        assert!(
            portable.cubin.is_none(),
            "a virtual architecture has no machine code"
        );
        assert!(native.ptx.contains(".target sm_90"));
        assert_eq!(native.parameters, portable.parameters);
        assert!(portable.parameters.len() > 150);
    }

    /// Every struct a kernel takes by value has the size and alignment of the Rust struct passed for it,
    /// read from the PTX NVRTC writes (the launches check scalars and pointers the same way on a device).
    /// Without the NVRTC library this passes vacuously, unless `AMP_REQUIRE_NVRTC` is set (as in CI).
    #[test]
    fn structs_passed_by_value_match_the_kernels_parameters() {
        if nvrtc_missing_and_allowed() {
            return;
        }
        let kernels = portable_kernels().unwrap_or_else(|e| panic!("{e}"));
        let parameters = &kernels.parameters;
        let (layout, dim3, conv) = (
            size_of::<Layout>(),
            size_of::<DeviceDim3>(),
            size_of::<DeviceConv>(),
        );
        assert!(
            [
                align_of::<Layout>(),
                align_of::<DeviceDim3>(),
                align_of::<DeviceConv>()
            ] == [8; 3]
        );
        // The position of the struct in each family's parameter list, as the launches pass it.
        let families: [(&str, usize, usize); 16] = [
            ("binary_", 1, layout),
            ("compare_", 1, layout),
            ("select_", 0, layout),
            ("gather_layout_", 0, layout),
            ("reduce_", 1, dim3),
            ("softmax_f", 1, dim3),
            ("softmax_backward_", 1, dim3),
            ("gather_u", 0, dim3),
            ("index_select_", 0, dim3),
            ("scatter_add_", 0, dim3),
            ("index_add_", 0, dim3),
            ("arg_reduce_", 1, dim3),
            ("cumsum_", 1, dim3),
            ("logsumexp_", 0, dim3),
            ("im2col_", 0, conv),
            ("col2im_", 0, conv),
        ];
        for (family, position, size) in families {
            let members: Vec<_> = parameters
                .iter()
                .filter(|(name, _)| name.starts_with(family))
                .collect();
            assert!(!members.is_empty(), "no kernel named {family}*");
            for (name, sizes) in members {
                assert_eq!(sizes.get(position), Some(&size), "{name}: {sizes:?}");
            }
        }
        // Every other parameter is a scalar or a device pointer.
        for (name, sizes) in parameters {
            for &s in sizes {
                assert!(
                    matches!(s, 1 | 2 | 4 | 8) || [layout, dim3, conv].contains(&s),
                    "{name}: a parameter of {s} bytes matches no struct the launches pass"
                );
            }
        }
    }
}
