//! `musicfs mount`'s arguments, checked: bad arguments are a one-line error
//! and exit code 2, before anything is touched.

use crate::cli::{MountArgs, NoCacheDir, default_cache_dir};
use crate::errors::io_reason;
use crate::kernel::fuse::Ownership;
use crate::kernel::unmount::lazy_unmount;
use crate::library::changes;
use crate::origin::{OriginArgError, OriginSpec, parse_origin, redact_url};
use crate::sys;
use musicfs_core::Layout;
use musicfs_core::layout::LayoutError;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated `musicfs mount`.
#[derive(Clone, Debug)]
pub struct MountPlan {
    /// Origins in priority order; the index is the
    /// [`OriginId`](musicfs_core::OriginId).
    pub origins: Vec<OriginSpec>,
    /// The cache directory (exists and is writable).
    pub cache_dir: PathBuf,
    /// Cache limit in bytes.
    pub cache_size: u64,
    /// Pins may take at most this share of the cache, in percent.
    pub pin_share: u8,
    /// Path layout.
    pub layout: Layout,
    /// Let other users see the mount.
    pub allow_other: bool,
    /// Mount on a directory that is not empty.
    pub allow_non_empty: bool,
    /// Serve the user.musicfs.* extended attributes.
    pub xattrs: bool,
    /// Keep the bytes the first scan reads in the cache (`library::keep`).
    pub keep_tags: bool,
    /// A first mount comes up (empty) even when no origin answers.
    pub wait_for_origins: bool,
    /// Read deadline.
    pub read_timeout: Duration,
    /// Pause between listings of a remote origin.
    pub poll_interval: Duration,
    /// Who is told of tree changes (`--on-change`, `--notify-mpd`).
    pub change_targets: changes::Targets,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Owner, group and umask of the files and folders shown.
    pub ownership: Ownership,
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The umask when none is given: takes nothing from 0555 and 0444.
pub const DEFAULT_UMASK: u16 = 0o022;

impl MountPlan {
    /// Checks every argument; nothing is changed on disk except creating the
    /// cache directory.
    pub fn from_args(args: &MountArgs) -> Result<MountPlan, PlanError> {
        // Both may come from a --config file, so clap cannot require them.
        if args.origins.is_empty() {
            return Err(PlanError::NoOrigin);
        }
        let Some(mountpoint) = &args.mountpoint else {
            return Err(PlanError::NoMountpoint);
        };
        let mut origins: Vec<OriginSpec> = Vec::new();
        for raw in &args.origins {
            let spec = parse_origin(raw)?;
            // The same place twice would make every track a mirror of itself.
            if let Some(j) = origins.iter().position(|o| o.same_place(&spec)) {
                return Err(PlanError::SamePlace {
                    first: redact_url(&args.origins[j]),
                    second: redact_url(raw),
                    place: spec.describe_place(),
                });
            }
            // Still in the order given: `j` is also an index of args.origins.
            origins.push(spec);
        }
        // Lower priority first; a stable sort keeps the given order on ties.
        origins.sort_by_key(|o: &OriginSpec| o.priority);
        let mut names = std::collections::BTreeSet::new();
        for name in origins.iter().filter_map(|o| o.name.as_deref()) {
            if !names.insert(name) {
                return Err(PlanError::SameName(name.to_owned()));
            }
        }
        if origins.len() > usize::from(u16::MAX) {
            return Err(PlanError::TooManyOrigins);
        }
        let layout = Layout::parse(&args.layout).map_err(|source| PlanError::Layout {
            text: args.layout.clone(),
            source,
        })?;
        let mountpoint = check_mountpoint(mountpoint, args.allow_non_empty)?;
        let cache_dir = match &args.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir()?,
        };
        check_cache_dir(&cache_dir)?;
        Ok(MountPlan {
            origins,
            cache_dir,
            cache_size: args.cache_size,
            pin_share: args.pin_share,
            layout,
            allow_other: args.allow_other,
            allow_non_empty: args.allow_non_empty,
            xattrs: args.xattrs,
            keep_tags: !args.no_keep_tags,
            wait_for_origins: args.wait_for_origins,
            read_timeout: Duration::from_secs(args.read_timeout),
            poll_interval: Duration::from_secs(args.poll_interval),
            change_targets: changes::Targets {
                command: args.on_change.clone(),
                mpd: args.notify_mpd.clone(),
            },
            mountpoint,
            ownership: Ownership {
                uid: args.uid.unwrap_or_else(sys::getuid),
                gid: args.gid.unwrap_or_else(sys::getgid),
                umask: args.umask.unwrap_or(DEFAULT_UMASK),
            },
            metrics_addr: args.metrics_addr,
        })
    }
}

/// Why `musicfs mount` refuses its arguments: one line, exit code 2,
/// before anything is touched.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No `--origin` and none in the config file.
    #[error("no origin: give --origin DIR, or origins in the --config file")]
    NoOrigin,
    /// No mountpoint on the command line or in the config file.
    #[error("no mountpoint: give MOUNTPOINT, or mountpoint in the --config file")]
    NoMountpoint,
    /// An `--origin` that cannot be used.
    #[error(transparent)]
    Origin(#[from] OriginArgError),
    /// One place given twice (every track would mirror itself).
    #[error(
        "origin '{first}' and origin '{second}' are the same place ({place}): give each origin once"
    )]
    SamePlace {
        /// The first, as given (redacted).
        first: String,
        /// The second, as given (redacted).
        second: String,
        /// Where both are.
        place: String,
    },
    /// Two origins with one name.
    #[error("two origins are named '{0}'")]
    SameName(String),
    /// More origins than ids.
    #[error("too many origins")]
    TooManyOrigins,
    /// A `--layout` that does not parse.
    #[error("bad --layout '{text}': {source}")]
    Layout {
        /// The layout, as given.
        text: String,
        /// What is wrong with it.
        #[source]
        source: LayoutError,
    },
    /// Something (alive) is mounted there already.
    #[error("mountpoint '{}' is already mounted ({fstype}); unmount it first", path.display())]
    Mounted {
        /// The mountpoint, as given.
        path: PathBuf,
        /// What is mounted there.
        fstype: String,
    },
    /// A dead mount there that could not be detached.
    #[error(
        "mountpoint '{}' is a stale mount that could not be cleaned up; run `musicfs unmount {}`",
        path.display(), path.display()
    )]
    StaleMount {
        /// The mountpoint, as given.
        path: PathBuf,
    },
    /// The mountpoint is a file.
    #[error("mountpoint '{}' is not a directory", path.display())]
    NotADirectory {
        /// The mountpoint, as given.
        path: PathBuf,
    },
    /// The mountpoint cannot be stat'ed, resolved or listed.
    #[error("mountpoint '{}' cannot be {doing}: {}", path.display(), io_reason(.source))]
    Mountpoint {
        /// The mountpoint, as given.
        path: PathBuf,
        /// "used", "resolved", "listed".
        doing: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// Files would be hidden by the mount.
    #[error(
        "mountpoint '{}' is not empty{}; the mount would hide its files. \
         Use an empty directory, or --allow-non-empty",
        path.display(),
        holds.as_ref().map(|h| format!(" (it holds '{h}')")).unwrap_or_default()
    )]
    NotEmpty {
        /// The mountpoint, as given.
        path: PathBuf,
        /// A name found in it, if it could be read.
        holds: Option<String>,
    },
    /// No `--cache-dir` and no place for the default one.
    #[error(transparent)]
    NoCacheDir(#[from] NoCacheDir),
    /// The cache directory cannot be created or written.
    #[error("cache dir '{}' {doing}: {}", path.display(), io_reason(.source))]
    CacheDir {
        /// The cache directory.
        path: PathBuf,
        /// "cannot be created", "is not writable".
        doing: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

fn check_mountpoint(path: &Path, allow_non_empty: bool) -> Result<PathBuf, PlanError> {
    let shown = path.display();
    if let Some(fstype) = fuse_mount_at(path) {
        // statfs always reaches the daemon (stat may be answered from the
        // kernel's attribute cache): ENOTCONN means its daemon is dead.
        match sys::statfs(path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                tracing::warn!(mountpoint = %shown, "found a stale mount left by a dead daemon; cleaning it up");
                lazy_unmount(path);
            }
            _ => {
                return Err(PlanError::Mounted {
                    path: path.to_path_buf(),
                    fstype,
                });
            }
        }
    }
    let mountpoint_error = |doing, source| PlanError::Mountpoint {
        path: path.to_path_buf(),
        doing,
        source,
    };
    let canonical = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => path
            .canonicalize()
            .map_err(|e| mountpoint_error("resolved", e))?,
        Ok(_) => {
            return Err(PlanError::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(PlanError::StaleMount {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(mountpoint_error("used", e)),
    };
    if !allow_non_empty {
        check_empty(&canonical, path)?;
    }
    Ok(canonical)
}

/// Refuses a mountpoint with files in it: the mount would hide them.
fn check_empty(dir: &Path, shown: &Path) -> Result<(), PlanError> {
    let mut entries = std::fs::read_dir(dir).map_err(|source| PlanError::Mountpoint {
        path: shown.to_path_buf(),
        doing: "listed",
        source,
    })?;
    match entries.next() {
        None => Ok(()),
        Some(first) => Err(PlanError::NotEmpty {
            path: shown.to_path_buf(),
            holds: first
                .ok()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        }),
    }
}

/// The file-system type of a FUSE mount at `path`, if there is one.
fn fuse_mount_at(path: &Path) -> Option<String> {
    let entry = sys::mount_at(path).ok()??;
    entry.is_fuse().then_some(entry.fstype)
}

fn check_cache_dir(dir: &Path) -> Result<(), PlanError> {
    let cache_dir_error = |doing, source| PlanError::CacheDir {
        path: dir.to_path_buf(),
        doing,
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| cache_dir_error("cannot be created", e))?;
    let probe = dir.join(format!(".musicfs-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|e| cache_dir_error("is not writable", e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_error(origins: &[&str]) -> String {
        let mut argv = vec!["musicfs", "mount"];
        for o in origins {
            argv.extend(["--origin", o]);
        }
        argv.push("/nonexistent/mnt");
        let args = match crate::cli::config::parse_command_line_from(argv) {
            Ok(cli) => match cli.command {
                crate::cli::Command::Mount(m) => m,
                other => panic!("not a mount: {other:?}"),
            },
            Err(e) => panic!("{e}"),
        };
        match MountPlan::from_args(&args) {
            Ok(plan) => panic!("accepted {origins:?} as {:?}", plan.origins),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_same_origin_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let music = dir.path().join("music");
        std::fs::create_dir_all(music.join("sub")).unwrap();
        std::os::unix::fs::symlink(&music, dir.path().join("link")).unwrap();
        let m = music.display().to_string();
        let canonical = music.canonicalize().unwrap().display().to_string();
        for twin in [
            format!("{m}/"),
            format!("{m}/sub/.."),
            dir.path().join("link").display().to_string(),
            format!("{m}/,name=other,priority=5"),
        ] {
            let e = plan_error(&[m.as_str(), twin.as_str()]);
            assert!(
                e.contains(&format!(
                    "origin '{m}' and origin '{twin}' are the same place ({canonical})"
                )),
                "{twin}: {e}"
            );
        }
        for (a, b) in [
            ("s3://music/flac", "s3://music/flac/,name=again"),
            (
                "s3://music/flac?endpoint=http://minio:9000",
                "s3://music//flac?endpoint=http://minio:9000&region=x",
            ),
            ("sftp://me@nas/srv/music", "sftp://me@NAS:22/srv/music/"),
        ] {
            let e = plan_error(&[a, b]);
            assert!(
                e.contains("are the same place") && e.contains(a),
                "{b}: {e}"
            );
        }
        // Different places are still fine: the first error is the mountpoint.
        for (a, b) in [
            ("s3://music/flac", "s3://music/mp3"),
            (
                "s3://music/flac",
                "s3://music/flac?endpoint=http://minio:9000",
            ),
            ("sftp://me@nas/srv/music", "sftp://you@nas/srv/music"),
            ("sftp://me@nas/srv/music", "sftp://me@nas:2222/srv/music"),
        ] {
            let e = plan_error(&[a, b]);
            assert!(e.contains("mountpoint"), "{a} {b}: {e}");
        }
        let sub = music.join("sub").display().to_string();
        assert!(plan_error(&[&m, &sub]).contains("mountpoint"));
    }

    #[test]
    fn origin_and_mountpoint_are_still_required() {
        let cli = |args: &[&str]| {
            let argv = std::iter::once("musicfs").chain(args.iter().copied());
            match crate::cli::config::parse_command_line_from(argv)
                .expect("parses")
                .command
            {
                crate::cli::Command::Mount(m) => *m,
                other => panic!("not a mount: {other:?}"),
            }
        };
        let e = MountPlan::from_args(&cli(&["mount", "/mnt"])).unwrap_err();
        assert!(e.to_string().contains("origin"), "{e}");
        let e = MountPlan::from_args(&cli(&["mount", "--origin", "/a"])).unwrap_err();
        assert!(e.to_string().contains("mountpoint"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("musicfs.toml");
        std::fs::write(&file, "mountpoint = \"/mnt\"").unwrap();
        let args = crate::cli::config::resolve(cli(&["mount", "--config", file.to_str().unwrap()]));
        let e = MountPlan::from_args(&args.unwrap()).unwrap_err();
        assert!(e.to_string().contains("origin"), "{e}");
    }
}
