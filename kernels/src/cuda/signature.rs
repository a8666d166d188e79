//! What each kernel of the compiled PTX takes: the byte size of every parameter of every `.entry`. A
//! launch is checked against it before it is queued, so an argument list that does not match its kernel
//! (one argument too few, an `i32` where the kernel reads a `u64`) is an error that names the kernel and
//! both lists, instead of a kernel that reads garbage.

use std::collections::HashMap;

/// Byte sizes of the parameters of each kernel entry in `ptx`, by kernel name.
///
/// Entries are written by NVRTC as `.visible .entry name(` followed by one `.param` declaration per
/// parameter (`.param .u64 name_param_0`, or `.param .align 8 .b8 name_param_1[264]` for a struct passed
/// by value) and a closing `)`.
pub(crate) fn entry_parameters(ptx: &str) -> HashMap<String, Vec<usize>> {
    let mut entries = HashMap::new();
    let mut rest = ptx;
    while let Some(at) = rest.find(".entry ") {
        rest = &rest[at + ".entry ".len()..];
        let Some(open) = rest.find('(') else { break };
        let name = rest[..open].trim().to_string();
        let Some(close) = rest[open..].find(')') else {
            break;
        };
        let sizes = rest[open + 1..open + close]
            .split(',')
            .map(str::trim)
            .filter(|declaration| !declaration.is_empty())
            .map(parameter_size)
            .collect();
        entries.insert(name, sizes);
        rest = &rest[open + close..];
    }
    entries
}

/// Bytes of one `.param` declaration (0 if its type is not one NVRTC writes for entry parameters, which
/// then never matches an argument). The type is the first word of the form `.b32`, `.u64`, `.f32`...:
/// newer compilers may add attributes such as `.ptr .global .align 16` to pointer parameters. The name
/// comes last, with an element count in brackets for a struct passed by value.
fn parameter_size(declaration: &str) -> usize {
    let words: Vec<&str> = declaration.split_whitespace().collect();
    let is_type = |w: &str| {
        let mut chars = w.chars();
        chars.next() == Some('.')
            && matches!(chars.next(), Some('b' | 's' | 'u' | 'f'))
            && matches!(chars.as_str(), "8" | "16" | "32" | "64")
    };
    let Some(element) = words.iter().find(|w| is_type(w)).map(|w| match &w[2..] {
        "8" => 1,
        "16" => 2,
        "32" => 4,
        _ => 8,
    }) else {
        return 0;
    };
    let count = words
        .last()
        .and_then(|name| {
            let (_, bracket) = name.split_once('[')?;
            bracket.strip_suffix(']')?.parse::<usize>().ok()
        })
        .unwrap_or(1);
    element * count
}

/// The launch of `kernel` with arguments of `argument_sizes` bytes, checked against the kernel's
/// parameters (`entries` from [`entry_parameters`]).
pub(crate) fn check_launch(
    entries: &HashMap<String, Vec<usize>>,
    kernel: &str,
    argument_sizes: &[usize],
) -> Result<(), String> {
    match entries.get(kernel) {
        None => Err(format!("kernel {kernel} is not in the compiled module")),
        Some(parameters) if parameters != argument_sizes => Err(format!(
            "kernel {kernel} takes parameters of {parameters:?} bytes, but the launch passes \
             arguments of {argument_sizes:?} bytes"
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape NVRTC writes, with a struct passed by value, a second entry after a body, and a pointer
    /// parameter with the attributes newer compilers add.
    const SAMPLE: &str = "
.visible .entry binary_f32(
	.param .u32 binary_f32_param_0,
	.param .align 8 .b8 binary_f32_param_1[264],
	.param .u64 binary_f32_param_2,
	.param .f64 binary_f32_param_3
)
{
	ld.param.u32 	%r1, [binary_f32_param_0];
	call.uni (retval0), f, (param0, param1);
}
.visible .entry empty(
)
{
}
.visible .entry flags(
	.param .u8 flags_param_0,
	.param .f32 flags_param_1,
	.param .u16 flags_param_2,
	.param .u64 .ptr .global .align 16 flags_param_3
)
{
}
";

    #[test]
    fn entries_and_their_parameter_sizes_are_read_from_ptx() {
        let entries = entry_parameters(SAMPLE);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries["binary_f32"], vec![4, 264, 8, 8]);
        assert_eq!(entries["empty"], Vec::<usize>::new());
        assert_eq!(entries["flags"], vec![1, 4, 2, 8]);
    }

    #[test]
    fn a_launch_must_match_its_kernel_exactly() {
        let entries = entry_parameters(SAMPLE);
        assert_eq!(check_launch(&entries, "flags", &[1, 4, 2, 8]), Ok(()));
        let short = check_launch(&entries, "binary_f32", &[4, 264, 8]).unwrap_err();
        assert!(
            short.contains("binary_f32") && short.contains("[4, 264, 8, 8]"),
            "{short}"
        );
        assert!(check_launch(&entries, "flags", &[4, 4, 2, 8]).is_err());
        let missing = check_launch(&entries, "unary_f32_f32", &[]).unwrap_err();
        assert!(missing.contains("not in the compiled module"), "{missing}");
    }
}
