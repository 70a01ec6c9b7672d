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

/// Caps glibc's malloc arenas at two (unless `MALLOC_ARENA_MAX` says
/// otherwise): the daemon's threads (scanner, tokio workers, FUSE, the
/// blocking pool) would each get an arena by default, and memory freed in
/// one is never reused by another. Two keep malloc contention low on the
/// scanner's threads. Call before starting any thread.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt takes two integers; called before other threads
        // exist, as glibc asks.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
