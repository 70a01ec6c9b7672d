//! The daemon's allocator, and giving freed memory back to the system.
//!
//! The `musicfs` binary allocates through jemalloc (its
//! `#[global_allocator]`), set up for a daemon that runs for months: one
//! arena, and freed pages returned to the system by jemalloc's own
//! background thread about a second after they were freed. glibc's malloc
//! returns only the top of each heap, and a sync's freed listing stayed
//! scattered between long-lived blocks. Measured with the same code on the
//! 200,000-track bench library, saved-tree remount: RSS after the first
//! sync 296 MB with glibc, 261 MB with jemalloc; after walks and reads
//! 313 MB and 283 MB; the remount itself took 2.05 s and 0.83 s (decoding
//! the saved tree is millions of small allocations; one run each). On
//! 20,000 tracks the peaks moved little (serving 121 → 124 MB, first
//! mount 87 → 101 MB).
//! Returning pages at once (`dirty_decay_ms:0`) lowered those peaks by
//! 15 MB but halved the tag-scan and first-read speeds.

/// jemalloc's options, read when it starts (`_RJEM_MALLOC_CONF` in the
/// environment is read after them, and wins):
/// - `narenas:1`: one arena. By default there are four per core, and
///   memory freed in one is never reused by another; the threads' own
///   caches keep small allocations off the arena's lock.
/// - `background_thread:true`, `dirty_decay_ms:1000`, `muzzy_decay_ms:0`:
///   freed pages go back to the system about a second after they were
///   freed, from jemalloc's thread, not from the reader that freed them.
/// - `tcache_max:1024`, `tcache_nslots_small_max:16`: small thread
///   caches. A burst of cold reads grows tokio's blocking pool to some 57
///   threads (from 25), and a chunk is often allocated on one thread and
///   freed on another; with jemalloc's default caches (objects up to
///   32 KiB, up to 200 of a size per thread) each thread kept its own
///   stock of freed memory. Measured on the 20,000-track bench library,
///   interleaved runs: the first read of the 179 MB file peaked at
///   104-110 MB against 116-121 MB, a first mount followed by MPD's
///   database build at 93-100 MB against 113-122 MB, at the same speeds
///   (MPD 7.3-9.0 s against 8.5-9.9 s). No thread caches at all
///   (`tcache:false`) peaked about as low but made the 200,000-track
///   remount, millions of small allocations, slower (2.7-3.3 s against
///   1.6-2.2 s); these small ones do not (1.6-1.7 s).
#[used]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 113] = b"narenas:1,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,tcache_max:1024,tcache_nslots_small_max:16\0";

/// Returns free pages to the system now, after a burst of allocation (a
/// scan, a sync, an index build), rather than a second later. Costs a
/// walk of the allocator's free extents: call it after big jobs, not per
/// request.
pub fn release_free_memory() {
    const PURGE_ALL_ARENAS: &[u8] = b"arena.4096.purge\0";
    // SAFETY: the name is NUL-terminated, and "arena.<i>.purge" reads and
    // writes nothing (all pointers null, length 0). An error (jemalloc not
    // in use) leaves nothing to do.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL_ARENAS.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
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

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    /// Reads one of jemalloc's `opt.*` values (starting jemalloc if this
    /// test process has not yet).
    fn opt<T: Default>(name: &CStr) -> T {
        let mut value = T::default();
        let mut len = std::mem::size_of::<T>();
        // SAFETY: `name` is NUL-terminated; `value` is a valid `T` of
        // `len` bytes for jemalloc to write the option into.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&raw mut value).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "mallctl {name:?}");
        value
    }

    #[test]
    fn jemalloc_reads_the_daemons_options() {
        assert_eq!(opt::<u32>(c"opt.narenas"), 1);
        assert_eq!(opt::<usize>(c"opt.tcache_max"), 1024);
        assert_eq!(opt::<u32>(c"opt.tcache_nslots_small_max"), 16);
        assert_eq!(opt::<isize>(c"opt.dirty_decay_ms"), 1000);
        assert!(opt::<bool>(c"opt.background_thread"));
    }
}
