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
/// With memory kept, each arena keeps its own: glibc gives every thread that meets a locked
/// arena one more (up to eight per core), and the threads that read files (tokio's blocking
/// pool) filled theirs with the Parquet column chunks they fetched, which then only they
/// could reuse: one arena per core (as many as the runtime's workers) lowered the peak on
/// one Parquet file of benches/pipeline from 1,983 to 1,749 MiB (five runs each) at the
/// same speed.
/// Must run before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    const MMAP_THRESHOLD: i32 = 32 << 20;
    const TOP_PAD: i32 = 64 << 20;
    let arenas = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: mallopt only sets allocator parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
        libc::mallopt(libc::M_ARENA_MAX, i32::try_from(arenas).unwrap_or(i32::MAX));
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
