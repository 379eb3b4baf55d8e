//! The `sluice` binary: parse the command line, run the command, map errors to exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    keep_freed_memory();
    let code = sluice::cli::main();
    ExitCode::from(code as u8)
}

/// glibc hands freed memory back to the kernel eagerly (trimming the heap top, mmap for
/// anything over a threshold that moves), so the next batch's buffers fault in fresh,
/// zeroed pages. Measured on the 10M-row benchmark pipeline: 0.80M page faults and about
/// two fifths of the CPU time in the kernel (perf). Keeping freed memory for reuse cut the faults to
/// 0.67M and the run by about 8% (three interleaved runs each, with the same settings
/// through GLIBC_TUNABLES); the memory limit still bounds what queries hold.
/// Must run before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    const MMAP_THRESHOLD: i32 = 32 << 20;
    const TOP_PAD: i32 = 64 << 20;
    // SAFETY: mallopt only sets allocator parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
