//! `musicfs unmount`: ends a mount from another shell; the daemon notices
//! and exits cleanly.
//!
//! Only a MusicFS mount is unmounted: run as root, umount(2) would take
//! down any file system at all, so what is mounted there is checked first
//! (in `/proc/self/mountinfo`).

use crate::sys::{self, MountEntry, Unmount};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why `musicfs unmount` did not unmount.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    /// Nothing is mounted there.
    #[error("'{}' is not mounted", .0.display())]
    NotMounted(PathBuf),
    /// Something else than MusicFS is mounted there.
    #[error(
        "'{}' is not a MusicFS mount ({fstype} from '{source_name}'); not unmounting it",
        path.display()
    )]
    NotMusicFs {
        /// The mountpoint.
        path: PathBuf,
        /// Its file-system type.
        fstype: String,
        /// Its source.
        source_name: String,
    },
    /// Something has files open there (EBUSY).
    #[error(
        "'{}' is busy: something has files open there (or its working directory inside); \
         close them, or detach it now with `musicfs unmount --lazy {}`",
        .0.display(), .0.display()
    )]
    Busy(PathBuf),
    /// The mount table cannot be read.
    #[error("cannot read the mount table /proc/self/mountinfo: {0}")]
    MountTable(#[source] std::io::Error),
    /// umount(2) failed for another reason.
    #[error("cannot unmount '{}': {source}", path.display())]
    Failed {
        /// The mountpoint.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// fusermount3 (for a user's own mount) refused or could not run.
    #[error("cannot unmount '{}': {why}", path.display())]
    Fusermount {
        /// The mountpoint.
        path: PathBuf,
        /// What fusermount3 said.
        why: String,
    },
}

/// Unmounts the MusicFS mount at `mountpoint`, and nothing else. As root it
/// calls umount(2) itself; a user's own mount goes through fusermount3,
/// which needs no privileges. `lazy` detaches a busy mount (MNT_DETACH).
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<(), UnmountError> {
    let entry = sys::mount_at(mountpoint)
        .map_err(UnmountError::MountTable)?
        .ok_or_else(|| UnmountError::NotMounted(mountpoint.to_path_buf()))?;
    check_is_musicfs(mountpoint, &entry)?;
    // The path the kernel knows it by: a dead mount cannot be resolved.
    let target = entry.mount_point;
    if is_root() {
        let how = if lazy { Unmount::Lazy } else { Unmount::Normal };
        return sys::umount(&target, how).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => UnmountError::Busy(mountpoint.to_path_buf()),
            // Unmounted by someone else in between.
            Some(libc::EINVAL) => UnmountError::NotMounted(mountpoint.to_path_buf()),
            _ => UnmountError::Failed {
                path: mountpoint.to_path_buf(),
                source: e,
            },
        });
    }
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd
        .arg(&target)
        .output()
        .map_err(|e| UnmountError::Fusermount {
            path: mountpoint.to_path_buf(),
            why: format!("cannot run fusermount3: {e}"),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if why.contains("Device or resource busy") {
        return Err(UnmountError::Busy(mountpoint.to_path_buf()));
    }
    Err(UnmountError::Fusermount {
        path: mountpoint.to_path_buf(),
        why,
    })
}

/// Detaches a busy mount: it disappears now, open files keep working.
pub fn lazy_unmount(mountpoint: &Path) {
    if sys::umount(mountpoint, sys::Unmount::Lazy).is_err() {
        let _ = std::process::Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(mountpoint)
            .status();
    }
}

fn check_is_musicfs(mountpoint: &Path, entry: &MountEntry) -> Result<(), UnmountError> {
    if entry.is_musicfs() {
        return Ok(());
    }
    Err(UnmountError::NotMusicFs {
        path: mountpoint.to_path_buf(),
        fstype: entry.fstype.clone(),
        source_name: entry.source.clone(),
    })
}

fn is_root() -> bool {
    sys::geteuid() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fstype: &str, source: &str) -> MountEntry {
        MountEntry {
            user_id: None,
            mount_point: PathBuf::from("/mnt/x"),
            device: "0:1".into(),
            fstype: fstype.into(),
            source: source.into(),
        }
    }

    #[test]
    fn other_file_systems_are_refused_with_what_is_there() {
        let e = check_is_musicfs(Path::new("/mnt/x"), &entry("tmpfs", "tmpfs")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("not a MusicFS mount") && text.contains("tmpfs"),
            "{text}"
        );
        let e =
            check_is_musicfs(Path::new("/mnt/x"), &entry("fuse.sshfs", "me@nas:/")).unwrap_err();
        assert!(e.to_string().contains("me@nas:/"), "{e}");
        assert!(check_is_musicfs(Path::new("/mnt/x"), &entry("fuse", "musicfs:/srv")).is_ok());
        assert!(check_is_musicfs(Path::new("/mnt/x"), &entry("fuse.musicfs", "/srv")).is_ok());
    }

    #[test]
    fn a_plain_directory_is_not_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let e = unmount(dir.path(), false).unwrap_err();
        assert!(matches!(e, UnmountError::NotMounted(_)), "{e}");
        assert!(e.to_string().contains("is not mounted"), "{e}");
    }
}
