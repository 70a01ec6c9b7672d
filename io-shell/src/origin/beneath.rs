//! Opening a local origin's files without ever leaving the origin's root.
//!
//! A local origin is a folder that other people may write into (a shared
//! music folder, a NAS export). A symbolic link in it (`cover.jpg ->
//! /etc/shadow`, `Album -> /root`) must never make the daemon, which may run
//! with more rights than the folder's writers, serve a file from outside
//! the folder. Every open of an origin file therefore resolves its path with
//! `openat2(2)` and `RESOLVE_BENEATH` from a descriptor of the root: the
//! kernel refuses any step (a link, a `..`) that leaves the root, at the
//! moment of the open, so a link swapped in after the scan is refused too.
//! Links that stay inside the root keep working.
//!
//! `RESOLVE_BENEATH` refuses every absolute link, even one that points back
//! inside the root (`/srv/music/a.flac` in `/srv/music`). Such a path is
//! resolved once in user space; if the real path lies under the root's real
//! path, that real path is opened again with `RESOLVE_BENEATH`, so the open
//! that returns a descriptor is still checked by the kernel.
//!
//! Why `rustix`: it wraps `openat2` and its flags without `unsafe` in this
//! crate, and it is already in the build (tempfile, notify's dependencies).
//! Linux older than 5.6 has no `openat2` (`ENOSYS`); there the real path is
//! checked in user space and its last component opened with `O_NOFOLLOW`,
//! which leaves a window in which a directory above the file could be
//! swapped. The README states that a kernel of 5.6 or newer closes it.

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How a file is opened: for its bytes, or for its metadata only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Read its bytes. Opened without blocking (a FIFO named `x.mp3` must
    /// not stall anything) and without becoming our controlling terminal.
    Read,
    /// `fstat` it only (`O_PATH`: no read permission needed, nothing read).
    Stat,
}

/// The message of the error an escaping path gives.
const OUTSIDE: &str = "the path leads outside its origin (a symbolic link or `..` out of the root)";

/// Whether `err` is the refusal of a path that leaves its origin's root.
pub fn is_outside(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::PermissionDenied
        && err.get_ref().is_some_and(|e| e.to_string() == OUTSIDE)
}

fn outside() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, OUTSIDE)
}

/// Opens `rel` (an origin-relative path, `/`-separated) under `root`,
/// refusing any resolution that leaves `root`. The error of a refused path
/// satisfies [`is_outside`].
pub fn open(root: &Path, rel: &[u8], purpose: Purpose) -> io::Result<File> {
    let rel = Path::new(OsStr::from_bytes(rel));
    if rel.is_absolute() {
        return Err(outside());
    }
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)?;
    match open_at(&dir, rel, purpose) {
        // An absolute link, or `..` that may come back: resolve it once in
        // user space and, if it ends inside the root, open the real path
        // beneath the root (still checked by the kernel).
        Err(Errno::XDEV) => {
            let inside = real_path_inside(root, rel)?;
            match open_at(&dir, &inside, purpose) {
                Ok(file) => Ok(file),
                Err(Errno::XDEV | Errno::LOOP) => Err(outside()),
                Err(e) => Err(e.into()),
            }
        }
        // A magic link (`/proc/self/fd/N`), refused by RESOLVE_NO_MAGICLINKS.
        Err(Errno::LOOP) if leads_outside(root, rel) => Err(outside()),
        Err(Errno::NOSYS) => open_checked_in_user_space(root, rel, purpose),
        Err(e) => Err(e.into()),
        Ok(file) => Ok(file),
    }
}

/// The metadata of `rel` under `root` (following links that stay inside),
/// from a descriptor opened by [`open`].
pub fn stat(root: &Path, rel: &[u8]) -> io::Result<Metadata> {
    open(root, rel, Purpose::Stat)?.metadata()
}

fn flags(purpose: Purpose) -> OFlags {
    match purpose {
        Purpose::Read => OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Purpose::Stat => OFlags::PATH | OFlags::CLOEXEC,
    }
}

fn open_at(dir: &File, rel: &Path, purpose: Purpose) -> Result<File, Errno> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    // EAGAIN: a rename or mount raced the resolution; the kernel asks for a
    // retry. A few are plenty; past them the origin is too busy to read.
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, rel, flags(purpose), Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < 8 => tries += 1,
            other => return other.map(File::from),
        }
    }
}

/// The real path of `rel`, relative to the root's real path, or the
/// [`is_outside`] error if it lies elsewhere.
fn real_path_inside(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let real_root = std::fs::canonicalize(root)?;
    let real = std::fs::canonicalize(root.join(rel))?;
    match real.strip_prefix(&real_root) {
        Ok(inside) if !inside.as_os_str().is_empty() => Ok(inside.to_path_buf()),
        _ => Err(outside()),
    }
}

fn leads_outside(root: &Path, rel: &Path) -> bool {
    real_path_inside(root, rel).is_err()
}

/// Kernels without `openat2`: check the real path, then open it with
/// `O_NOFOLLOW` so at least the last component cannot be swapped for a link.
fn open_checked_in_user_space(root: &Path, rel: &Path, purpose: Purpose) -> io::Result<File> {
    let inside = real_path_inside(root, rel)?;
    let real_root = std::fs::canonicalize(root)?;
    let bits = match purpose {
        Purpose::Read => libc::O_NONBLOCK | libc::O_NOCTTY,
        Purpose::Stat => libc::O_PATH,
    };
    File::options()
        .read(true)
        .custom_flags(bits | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(real_root.join(inside))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("music");
        let secret = dir.path().join("secret");
        std::fs::create_dir_all(root.join("Album")).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(root.join("Album/a.flac"), b"inside").unwrap();
        std::fs::write(secret.join("shadow"), b"outside").unwrap();
        (dir, root, secret)
    }

    fn read(root: &Path, rel: &str) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        open(root, rel.as_bytes(), Purpose::Read)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn plain_files_and_links_inside_the_root_open() {
        let (_dir, root, _) = setup();
        assert_eq!(read(&root, "Album/a.flac").unwrap(), b"inside");
        symlink("a.flac", root.join("Album/rel.flac")).unwrap();
        symlink("Album", root.join("Alias")).unwrap();
        symlink("../Album/a.flac", root.join("Album/up.flac")).unwrap();
        symlink(root.join("Album/a.flac"), root.join("Album/abs.flac")).unwrap();
        assert_eq!(read(&root, "Album/rel.flac").unwrap(), b"inside");
        assert_eq!(read(&root, "Alias/a.flac").unwrap(), b"inside");
        assert_eq!(read(&root, "Album/up.flac").unwrap(), b"inside");
        assert_eq!(read(&root, "Album/abs.flac").unwrap(), b"inside");
        assert_eq!(stat(&root, b"Album/abs.flac").unwrap().len(), 6);
    }

    #[test]
    fn links_and_dots_out_of_the_root_are_refused() {
        let (_dir, root, secret) = setup();
        symlink(secret.join("shadow"), root.join("Album/cover.jpg")).unwrap();
        symlink("../../secret/shadow", root.join("Album/rel.jpg")).unwrap();
        symlink(&secret, root.join("Elsewhere")).unwrap();
        symlink("/proc/self/root/etc/hostname", root.join("Album/proc.jpg")).unwrap();
        for rel in [
            "Album/cover.jpg",
            "Album/rel.jpg",
            "Elsewhere/shadow",
            "../secret/shadow",
            "Album/../../secret/shadow",
            "Album/proc.jpg",
        ] {
            let err = read(&root, rel).unwrap_err();
            assert!(is_outside(&err), "{rel}: {err}");
            let err = stat(&root, rel.as_bytes()).unwrap_err();
            assert!(is_outside(&err), "{rel}: {err}");
        }
    }

    #[test]
    fn a_missing_file_is_not_found_not_outside() {
        let (_dir, root, _) = setup();
        let err = read(&root, "Album/gone.flac").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!is_outside(&err));
    }

    #[test]
    fn the_user_space_fallback_refuses_the_same_paths() {
        let (_dir, root, secret) = setup();
        symlink(secret.join("shadow"), root.join("Album/cover.jpg")).unwrap();
        let err = open_checked_in_user_space(&root, Path::new("Album/cover.jpg"), Purpose::Read)
            .unwrap_err();
        assert!(is_outside(&err), "{err}");
        assert!(
            open_checked_in_user_space(&root, Path::new("Album/a.flac"), Purpose::Read).is_ok()
        );
    }
}
