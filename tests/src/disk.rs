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
