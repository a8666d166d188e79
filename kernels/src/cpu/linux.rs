//! Raw x86-64 Linux system calls, for the two this crate makes (AMX permission, huge-page advice)
//! without depending on a C library binding.

/// Makes system call `number` with three arguments and returns the kernel's result (negative: an errno).
///
/// # Safety
/// The call must not affect memory or state the caller relies on in ways Rust cannot see; the two
/// callers only change how the kernel treats this process (`arch_prctl`) or backs its memory
/// (`madvise` advice), never memory contents.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) unsafe fn syscall3(number: u64, arg1: u64, arg2: u64, arg3: u64) -> i64 {
    let result: i64;
    // SAFETY: the `syscall` instruction clobbers rcx and r11, declared here; the rest is the caller's
    // contract.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") number as i64 => result,
            in("rdi") arg1,
            in("rsi") arg2,
            in("rdx") arg3,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result
}
