//! Real disk failures for tests: a small tmpfs that fills up (ENOSPC) or
//! is remounted read-only (EROFS), unmounted even when a test panics.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A tmpfs mounted for one test. Needs root (these machines and CI run tests
/// as root); a failed mount fails the test rather than skipping it.
pub struct Tmpfs {
    path: PathBuf,
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

impl Tmpfs {
    /// Mounts a tmpfs at `path` with `options` (e.g. `"size=1m"`).
    pub fn mount(path: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mountpoint");
        let (target, fstype) = (c_path(path), CString::new("tmpfs").expect("literal"));
        let data = CString::new(options).expect("options without NUL");
        // SAFETY: valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount tmpfs on {} (these tests need root): {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remounts with new options, e.g. `"size=64m"`; read-only if asked.
    pub fn remount(&self, options: &str, read_only: bool) {
        let (target, data) = (c_path(&self.path), CString::new(options).expect("options"));
        let flags = libc::MS_REMOUNT | if read_only { libc::MS_RDONLY } else { 0 };
        // SAFETY: as in `mount`; a null source is allowed for a remount.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                target.as_ptr(),
                std::ptr::null(),
                flags,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "remount {options}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Remounts read-only.
    pub fn remount_read_only(&self) {
        self.remount("", true);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // SAFETY: valid NUL-terminated string.
        unsafe { libc::umount2(c_path(&self.path).as_ptr(), libc::MNT_DETACH) };
    }
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The bytes a cache directory (`--cache-dir`) holds in chunks: its chunk
/// files' lengths and its packs' allocated blocks (an evicted packed
/// chunk's bytes are a hole punched in its pack). Temp files are not
/// counted.
pub fn cached_bytes(cache: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let chunks = cache.join("chunks");
    let files: u64 = crate::files_under(&chunks)
        .iter()
        .filter(|p| !p.starts_with("tmp"))
        .filter_map(|p| std::fs::metadata(chunks.join(p)).ok())
        .map(|m| m.len())
        .sum();
    let packs = cache.join("packs");
    let packed: u64 = crate::files_under(&packs)
        .iter()
        .filter_map(|p| std::fs::metadata(packs.join(p)).ok())
        .map(|m| m.len().min(m.blocks() * 512))
        .sum();
    files + packed
}

/// The chunk store of a stopped daemon's cache directory and its
/// index: each chunk's id, length and last access.
fn stopped_cache(
    cache: &Path,
) -> (
    musicfs::store::ChunkStore,
    Vec<(musicfs_core::ChunkId, u32, u64)>,
) {
    let db = musicfs::store::Db::open(cache)
        .expect("the cache's database opens")
        .db;
    let store = musicfs::store::ChunkStore::open(cache).expect("chunk store");
    let index = db.load_chunk_index().expect("chunk index");
    (store, index)
}

/// Flips one byte in every `every`-th chunk the index of the cache
/// directory `cache` lists, wherever it lies (its chunk file, or its
/// place in a pack), a third of the way into the chunk. The daemon must
/// be stopped (its database is opened here). Returns how many chunks
/// were damaged.
pub fn damage_cached_chunks(cache: &Path, every: usize) -> usize {
    let (store, index) = stopped_cache(cache);
    let mut damaged = 0;
    for (id, len, _) in index.iter().step_by(every.max(1)) {
        let (path, at) = match store.packed_at(*id) {
            Some((pack, offset, _)) => (pack, offset + u64::from(*len) / 3),
            None => (store.path_of(*id), u64::from(*len) / 3),
        };
        use std::os::unix::fs::FileExt;
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        else {
            continue;
        };
        let mut b = [0u8];
        if file.read_exact_at(&mut b, at).is_ok() {
            b[0] ^= 0x01;
            file.write_all_at(&b, at)
                .expect("write the damaged byte back");
            damaged += 1;
        }
    }
    damaged
}

/// Removes every `every`-th chunk the index of the cache directory
/// `cache` lists from the disk (its chunk file, or its place in a pack),
/// leaving the index as it is: the chunks a crash or an outside hand
/// took. The daemon must be stopped. Returns how many were removed.
pub fn remove_cached_chunks(cache: &Path, every: usize) -> usize {
    let (store, index) = stopped_cache(cache);
    index
        .iter()
        .step_by(every.max(1))
        .filter(|(id, _, _)| store.remove(*id).is_ok())
        .count()
}
