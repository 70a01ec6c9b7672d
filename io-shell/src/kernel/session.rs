//! The kernel mount: the FUSE device, mount(2) as type `fuse.musicfs` (or
//! fusermount3 without the privilege), the fuser session and its thread,
//! and how the mount ends.

use super::fuse::MusicFs;
use super::unmount::lazy_unmount;
use crate::sys;
use std::io;
use std::path::{Path, PathBuf};

/// The kernel mount, and how it ends.
pub enum KernelMount {
    /// Mounted here with mount(2) (type `fuse.musicfs`): unmounted with
    /// umount2(2).
    Direct(PathBuf),
    /// Mounted by fuser through fusermount3 (no privilege to mount; it
    /// sets the type `fuse.musicfs` from the subtype option).
    Fuser(fuser::SessionUnmounter),
}

impl KernelMount {
    /// Unmounts (a mount already gone is fine).
    pub fn unmount(&mut self) -> io::Result<()> {
        match self {
            KernelMount::Direct(path) => match sys::umount(path, sys::Unmount::Normal) {
                // Already gone (someone ran umount): nothing to do.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
                other => other,
            },
            KernelMount::Fuser(unmounter) => unmounter.unmount(),
        }
    }
}

/// What to mount, and how.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Where (canonical).
    pub mountpoint: PathBuf,
    /// The source the mount table shows: `musicfs:<first origin>`.
    pub source: String,
    /// Let other users in (`--allow-other`).
    pub allow_other: bool,
}

/// The kernel mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// mount(2) or fusermount3 failed.
    #[error("cannot mount at '{}': {source}", path.display())]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// Mounted, but fuser could not take the device (the mount is undone).
    #[error("cannot start the FUSE session at '{}': {source}", path.display())]
    Session {
        /// The mountpoint.
        path: PathBuf,
        /// fuser's error.
        #[source]
        source: io::Error,
    },
}

/// Mounts and opens the FUSE session. fuser 0.18 mounts with type `fuse`
/// when it calls mount(2) itself, so that `findmnt -t fuse.musicfs` and
/// mount(8) would not know the mount: MusicFS calls mount(2) with type
/// `fuse.musicfs` itself (as libfuse does) and hands the device to
/// `Session::from_fd`. Without the privilege to mount (a normal user),
/// fuser goes through fusermount3, which mounts as `fuse.musicfs` too.
pub fn open_session(
    fs: MusicFs,
    options: &MountOptions,
) -> Result<(fuser::Session<MusicFs>, KernelMount), SessionError> {
    let config = fuse_config(options);
    let path = &options.mountpoint;
    let direct = mount_fuse(&FuseMount {
        source: &options.source,
        target: path,
        subtype: "musicfs",
        allow_other: options.allow_other,
    });
    match direct {
        Ok(device) => {
            let acl = config.acl;
            match fuser::Session::from_fd(fs, device, acl, config) {
                Ok(session) => Ok((session, KernelMount::Direct(path.clone()))),
                Err(source) => {
                    lazy_unmount(path);
                    Err(SessionError::Session {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            tracing::debug!("no privilege to mount(2); mounting through fusermount3");
            let mut session =
                fuser::Session::new(fs, path, &config).map_err(|source| SessionError::Mount {
                    path: path.clone(),
                    source,
                })?;
            let unmounter = session.unmount_callable();
            Ok((session, KernelMount::Fuser(unmounter)))
        }
        Err(source) => Err(SessionError::Mount {
            path: path.clone(),
            source,
        }),
    }
}

/// The FUSE session's thread, and word of its end.
pub struct Serving {
    /// The thread; it returns when the mount ends.
    pub thread: std::thread::JoinHandle<io::Result<()>>,
    /// Hears when the session has ended (someone unmounted).
    pub ended: tokio::sync::oneshot::Receiver<()>,
}

/// Serves `session` on a thread of its own until the mount ends.
pub fn serve(session: fuser::Session<MusicFs>) -> io::Result<Serving> {
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("musicfs-fuse".into())
        .spawn(move || {
            let result = session.run();
            let _ = ended_tx.send(());
            result
        })?;
    Ok(Serving { thread, ended })
}

fn fuse_config(options: &MountOptions) -> fuser::Config {
    use fuser::MountOption as O;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        O::FSName(options.source.clone()),
        O::Subtype("musicfs".into()),
        O::RO,
        O::NoDev,
        O::NoSuid,
        O::NoAtime,
        O::DefaultPermissions,
    ];
    if options.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(2);
    config.clone_fd = true;
    config
}

/// The FUSE device.
pub const FUSE_DEVICE: &str = "/dev/fuse";

/// What [`mount_fuse`] mounts.
#[derive(Clone, Debug)]
pub struct FuseMount<'a> {
    /// The source the mount table shows (`musicfs:/srv/music`).
    pub source: &'a str,
    /// Where to mount (canonical).
    pub target: &'a Path,
    /// The subtype: the type shown is `fuse.SUBTYPE`.
    pub subtype: &'a str,
    /// Let other users in (`allow_other`).
    pub allow_other: bool,
}

/// Opens the FUSE device and mounts it at `mount.target` with mount(2), as
/// type `fuse.SUBTYPE` (what libfuse does as root; fuser 0.18 always says
/// plain `fuse` when it calls mount(2) itself), read-only, nosuid, nodev,
/// noatime, with `default_permissions`. Returns the device, for
/// `fuser::Session::from_fd`. `EPERM` means no privilege to mount: the
/// caller goes through fusermount3 instead.
pub fn mount_fuse(mount: &FuseMount<'_>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(FUSE_DEVICE)?; // O_CLOEXEC, as std opens every file
    let rootmode = std::fs::metadata(mount.target)?.mode() & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={rootmode:o},user_id={},group_id={},default_permissions",
        device.as_raw_fd(),
        sys::getuid(),
        sys::getgid(),
    );
    if mount.allow_other {
        data.push_str(",allow_other");
    }
    sys::mount(&sys::Mount {
        source: mount.source,
        target: mount.target,
        fstype: &format!("fuse.{}", mount.subtype),
        flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME,
        data: &data,
    })?;
    Ok(OwnedFd::from(device))
}

/// The FUSE device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FuseDeviceError {
    /// open(2) failed.
    #[error(
        "cannot open the FUSE device {} read-write: {source}; MusicFS needs FUSE \
         (load the module with `modprobe fuse`, check the device's permissions; \
         a container needs --device /dev/fuse)",
        path.display()
    )]
    Open {
        /// The device's path.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// Something else than a character device is there.
    #[error("{} is not the FUSE device (not a character device)", .0.display())]
    NotADevice(PathBuf),
}

/// Checks that the FUSE device at `path` (normally [`FUSE_DEVICE`]) can be
/// opened read-write, as mounting will: a mount that cannot work should
/// fail before a long first scan, not after it.
pub fn check_fuse_device(path: &Path) -> Result<(), FuseDeviceError> {
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| FuseDeviceError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let is_char_device = file
        .metadata()
        .is_ok_and(|m| m.file_type().is_char_device());
    if !is_char_device {
        return Err(FuseDeviceError::NotADevice(path.to_path_buf()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuse_device_check_takes_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("fuse");
        let e = check_fuse_device(&missing).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("cannot open") && text.contains(&missing.display().to_string()),
            "{text}"
        );
        assert!(text.contains("No such file"), "the system's words: {text}");
        std::fs::write(&missing, b"").unwrap();
        let e = check_fuse_device(&missing).unwrap_err();
        assert!(matches!(e, FuseDeviceError::NotADevice(_)), "{e}");
        let e = check_fuse_device(dir.path()).unwrap_err();
        assert!(
            matches!(e, FuseDeviceError::Open { .. }),
            "a directory: {e}"
        );
        // A character device that opens read-write passes.
        check_fuse_device(Path::new("/dev/null")).unwrap();
    }
}
