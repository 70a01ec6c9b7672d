//! Giving freed memory back to the system.
//!
//! glibc keeps freed memory in its arenas (one per thread that allocated)
//! and returns only the top of each heap to the system. A daemon that read
//! the tags of 20,000 files on eight threads, or rebuilt its search index,
//! would otherwise carry that peak for the months it runs. Measured on the
//! 20,000-track bench library after a first scan, the search index build
//! and a 179 MB read: 214 MB of anonymous memory with glibc's default of
//! one arena per thread (up to 8 per core), 148 MB with one arena.

/// Returns free heap pages to the system, after a burst of allocation (a
/// scan, a sync, an index build). Costs a walk of the allocator's free
/// lists: call it after big jobs, not per request.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own free
    // lists under the allocator's locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// mallopt(3): sets one of glibc's allocator parameters. Call before
/// other threads exist, as glibc asks.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn mallopt(param: libc::c_int, value: libc::c_int) {
    // SAFETY: mallopt takes two integers and no pointers.
    unsafe {
        libc::mallopt(param, value);
    }
}

/// Big blocks (a fetched piece, a read's reply, a large chunk) are
/// mapped on their own from this size up, and unmapped when freed.
const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// Tunes glibc's malloc for a long-running daemon. Call before starting
/// any thread.
///
/// - Caps the arenas at two (unless `MALLOC_ARENA_MAX` says otherwise):
///   the daemon's threads (scanner, tokio workers, FUSE, the blocking
///   pool) would each get an arena by default, and memory freed in one is
///   never reused by another. Two keep malloc contention low on the
///   scanner's threads.
/// - Fixes the mmap threshold at 128 KiB (unless `MALLOC_MMAP_THRESHOLD_`
///   is set). glibc raises it each time a mapped block is freed, up to
///   32 MB, after which the reads' 1 MB buffers come from the heap and
///   stay there: measured on the bench library, reading the three big
///   files through the mount peaked at 110 MB with the moving threshold
///   and 95 MB with a fixed one, and read no slower.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            mallopt(libc::M_ARENA_MAX, 2);
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        }
    }
}

/// This process's resident memory in MiB (`VmRSS`), for the logs of the
/// mount's steps; `None` where /proc cannot tell.
pub fn resident_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
