//! Large scratch buffers on 2 MiB pages.
//!
//! A large GEMM packs all of B (16 MiB at n = 2048) and every task streams through it again and again.
//! On 4 KiB pages each of those passes misses the TLB every 4 KiB; on 2 MiB pages it almost never does.
//! Linux backs anonymous memory with 2 MiB pages only where asked (`transparent_hugepage` set to
//! `madvise`, the usual default) through `madvise(MADV_HUGEPAGE)` before the pages are first touched.
//! Measured on a 2048³ f32 GEMM (old and new builds alternating, 6 rounds): 454 → 467 GFLOP/s median.
//!
//! The advice is only advice: where huge pages are off, unsupported or not on Linux x86-64, buffers are
//! ordinary memory and nothing else changes.

/// Buffers at least this large are advised (smaller ones cannot hold a whole aligned 2 MiB page
/// reliably, and fit in the cache anyway).
const MIN_ADVISED_BYTES: usize = 4 << 20;

/// Grows `buffer` to `len` elements made by `fill`, asking for huge pages for all of its memory first
/// when it is large (see the module docs). Never shrinks.
pub(crate) fn grow<T>(buffer: &mut Vec<T>, len: usize, fill: impl FnMut() -> T) {
    let missing = len.saturating_sub(buffer.len());
    if missing == 0 {
        return;
    }
    buffer.reserve_exact(missing);
    advise(
        buffer.as_ptr() as usize,
        buffer.capacity() * std::mem::size_of::<T>(),
    );
    buffer.resize_with(len, fill);
}

/// Asks the kernel for huge pages over the whole 4 KiB pages inside `start..start + bytes`.
fn advise(start: usize, bytes: usize) {
    if bytes < MIN_ADVISED_BYTES {
        return;
    }
    const PAGE: usize = 4096;
    let first = start.next_multiple_of(PAGE);
    let end = (start + bytes) / PAGE * PAGE;
    madvise_huge(first, end - first);
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn madvise_huge(start: usize, len: usize) {
    const SYS_MADVISE: u64 = 28;
    const MADV_HUGEPAGE: u64 = 14;
    // SAFETY: madvise(MADV_HUGEPAGE) on memory this process owns changes only how the kernel backs it,
    // not its contents or its mapping. The result is ignored: EINVAL (huge pages not built into the
    // kernel) leaves the buffer as it was.
    unsafe { crate::cpu::linux::syscall3(SYS_MADVISE, start as u64, len as u64, MADV_HUGEPAGE) };
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn madvise_huge(_start: usize, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_keeps_contents_and_fills_the_rest() {
        let mut buffer: Vec<u32> = (0..1000).collect();
        // Past the advice threshold, so the reallocation and the madvise both happen.
        let len = (MIN_ADVISED_BYTES / 4) * 3 + 17;
        grow(&mut buffer, len, || 7);
        assert_eq!(buffer.len(), len);
        assert!(
            buffer[..1000]
                .iter()
                .enumerate()
                .all(|(i, &v)| v == i as u32)
        );
        assert!(buffer[1000..].iter().all(|&v| v == 7));
        grow(&mut buffer, 10, || 9);
        assert_eq!(buffer.len(), len, "grow never shrinks");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_buffer_is_advised_for_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            eprintln!(
                "skipped: this kernel has no transparent huge pages, so madvise refuses the advice"
            );
            return;
        }
        let mut buffer: Vec<u8> = Vec::new();
        grow(&mut buffer, 16 << 20, || 1);
        let start = buffer.as_ptr() as usize;
        // The mapping that holds the buffer carries the advice (`hg` in its VmFlags).
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps is readable");
        let mut in_buffer = false;
        let mut flags = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                in_buffer = (lo..hi).contains(&(start + (8 << 20)));
            } else if in_buffer && let Some(f) = line.strip_prefix("VmFlags:") {
                flags = Some(f.to_string());
            }
        }
        let flags = flags.expect("the buffer's mapping is listed");
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "flags {flags:?}"
        );
    }
}
