//! Shared test helpers for MusicFS, in one place:
//!
//! - [`corpus`]: realistic generated libraries with a manifest of tags and
//!   SHA-256 (the project's `tests/corpus/make-library.py`).
//! - [`mpd`]: a real MPD (and `mpc`) with its own config, on loopback.
//! - [`mount`]: a real `musicfs mount` process on a real FUSE mount, torn
//!   down cleanly even when a test fails.
//! - [`faults`]: `FaultyOrigin` (with its `FailMode`s) and `FaultyCasStore`.
//! - [`fixtures`]: a daemon driven in-process, without FUSE.
//! - [`servers`]: real S3 (moto) and SFTP (sshd) servers on loopback;
//!   [`proxy`]: a TCP fault proxy to put between them and a client.
//! - [`search`]: a synthetic library of search documents.
//! - small file helpers ([`sha256_file`], [`wait_for`]).

pub mod corpus;
pub mod disk;
pub mod faults;
pub mod fixtures;
pub mod mount;
pub mod mpd;
pub mod proxy;
pub mod search;
pub mod servers;

use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};

/// SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

/// SHA-256 of bytes, as lower-case hex.
pub fn sha256_bytes(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every regular file under `root`, relative, with its inode number.
pub fn inodes_under(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, u64> {
    use std::os::unix::fs::MetadataExt;
    files_under(root)
        .into_iter()
        .map(|p| {
            let ino = std::fs::metadata(root.join(&p))
                .unwrap_or_else(|e| panic!("{p:?}: {e}"))
                .ino();
            (p, ino)
        })
        .collect()
}

/// Every regular file under `root`, relative, sorted.
pub fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p.strip_prefix(root).unwrap_or(&p).to_path_buf()),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Whether `path` shows in its folder's listing. A sync swaps the tree
/// first and tells the kernel right after, so for a moment a lookup can
/// find a new file that a cached listing of its folder does not show yet:
/// a test that goes on to list the mount waits for this, not for a lookup.
pub fn is_listed(path: &Path) -> bool {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return false;
    };
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| e.file_name() == name))
        .unwrap_or(false)
}
