//! `<cache_dir>/owner`: which daemon uses this cache directory (its pid and
//! mountpoint), so that a second daemon refused by the database's lock can
//! say who holds it. Written after the lock is taken, removed at a clean
//! exit; only a hint (the lock is the truth).

use std::io;
use std::path::{Path, PathBuf};

/// The file's name in the cache directory.
pub const OWNER_FILE: &str = "owner";

/// The daemon that holds a cache directory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheOwner {
    /// Its process id.
    pub pid: u32,
    /// Where it mounts.
    pub mountpoint: PathBuf,
}

impl CacheOwner {
    /// This process, mounting at `mountpoint`.
    pub fn this_process(mountpoint: &Path) -> CacheOwner {
        CacheOwner {
            pid: std::process::id(),
            mountpoint: mountpoint.to_path_buf(),
        }
    }

    /// Writes the file atomically (temp file, rename).
    pub fn write(&self, cache_dir: &Path) -> io::Result<()> {
        let text = serde_json::to_vec(self).map_err(io::Error::other)?;
        let tmp = cache_dir.join(format!(".{OWNER_FILE}.{}", self.pid));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, cache_dir.join(OWNER_FILE))
    }

    /// The owner the file names, if it is there, reads, and names a process
    /// that is still running.
    pub fn read(cache_dir: &Path) -> Option<CacheOwner> {
        let text = std::fs::read(cache_dir.join(OWNER_FILE)).ok()?;
        let owner: CacheOwner = serde_json::from_slice(&text).ok()?;
        Path::new(&format!("/proc/{}", owner.pid))
            .exists()
            .then_some(owner)
    }

    /// Removes the file if it still names this process.
    pub fn remove_if_mine(cache_dir: &Path) {
        let path = cache_dir.join(OWNER_FILE);
        let mine = std::fs::read(&path)
            .ok()
            .and_then(|t| serde_json::from_slice::<CacheOwner>(&t).ok())
            .is_some_and(|o| o.pid == std::process::id());
        if mine {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CacheOwner::read(dir.path()), None);
        let me = CacheOwner::this_process(Path::new("/mnt/music"));
        me.write(dir.path()).unwrap();
        assert_eq!(CacheOwner::read(dir.path()), Some(me));
        CacheOwner::remove_if_mine(dir.path());
        assert!(!dir.path().join(OWNER_FILE).exists());
    }

    #[test]
    fn a_dead_or_garbled_owner_is_no_owner() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OWNER_FILE), b"not json").unwrap();
        assert_eq!(CacheOwner::read(dir.path()), None);
        // Above any pid_max: no such process.
        let dead = CacheOwner {
            pid: u32::MAX,
            mountpoint: "/mnt/x".into(),
        };
        dead.write(dir.path()).unwrap();
        assert_eq!(CacheOwner::read(dir.path()), None);
    }
}
