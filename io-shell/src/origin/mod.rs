//! Origins: where the music really is.
//!
//! An [`Origin`] reads byte ranges of its files, and checks on every read
//! that the file is still the version the catalog knows: a range of another
//! version must never be mixed into a cached file. The io-shell holds one
//! per `--origin`, indexed by [`OriginId`].
//!
//! Kinds of origin:
//!
//! - [`LocalOrigin`]: a directory, scanned by [`crate::library::scan::scan_local`].
//! - [`S3Origin`] (`s3://bucket/prefix`) and [`SftpOrigin`]
//!   (`sftp://user@host:port/path`): remote origins. They also implement
//!   [`RemoteOrigin`] (listing and stat), and are scanned by
//!   [`scan_remote`](crate::library::remote_scan::scan_remote), which reads tags through ranged reads of each file's
//!   head (and tail where the format keeps tags there) instead of
//!   downloading whole files. [`parse_remote_url`] turns an origin URL into
//!   a [`RemoteSpec`].
//!
//! Why OpenDAL for S3 and the openssh crates for SFTP, rather than one crate
//! for both, is explained in [`s3`] and [`sftp`]: in short, OpenDAL's S3
//! service is exactly what is needed, while its SFTP service (itself a thin
//! wrapper over the same openssh crates) creates directories on the server,
//! panics on non-UTF-8 file names and cannot be pointed at a known_hosts
//! file; so SFTP uses those crates directly.
//!
//! Every network call of a remote origin is bounded by [`RemoteLimits`]:
//! a connect timeout, a per-request timeout, a cap on requests in flight
//! and on the request rate, and a small number of retries for idempotent
//! metadata requests.

use musicfs_core::{FileVersion, OriginId, OriginPath};
use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

pub mod arg;
pub mod beneath;
pub mod limits;
pub mod path;
pub mod ranged;
pub mod s3;
pub mod sftp;
pub mod spec;

pub use arg::{OriginArgError, OriginKind, OriginSpec, parse_origin};
pub use limits::RemoteLimits;
pub use s3::{S3Config, S3Credentials, S3Origin, Secret};
pub use sftp::{SftpConfig, SftpOrigin};
pub use spec::{RemoteSpec, UrlError, is_remote_url, parse_remote_url, redact_url};

/// A boxed future, as origin methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an origin read failed.
#[derive(Debug)]
pub enum OriginError {
    /// The file is not there any more.
    NotFound,
    /// The file is there but is not the version asked for.
    Changed,
    /// The origin could not answer (unreachable, timed out, out of
    /// descriptors, I/O error). Worth retrying later.
    Unavailable(String),
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginError::NotFound => f.write_str("file not found at its origin"),
            OriginError::Changed => f.write_str("file changed at its origin"),
            OriginError::Unavailable(why) => write!(f, "origin unavailable: {why}"),
        }
    }
}

impl std::error::Error for OriginError {}

/// A place music comes from.
pub trait Origin: Send + Sync + 'static {
    /// A description for logs and `musicfs status`, without secrets.
    fn describe(&self) -> String;

    /// Reads up to `len` bytes at `offset` of `path`, which must still be at
    /// `version`. Returns fewer bytes only at end of file.
    fn read_at<'a>(
        &'a self,
        path: &'a OriginPath,
        version: &'a FileVersion,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, OriginError>>;

    /// Checks cheaply that the origin answers (a local directory can be
    /// listed, a bucket listed, a server's root stat'ed). The caller bounds
    /// the time it waits.
    fn check(&self) -> BoxFuture<'_, Result<(), OriginError>>;

    /// The local directory, for origins that are one (scanned and watched
    /// directly rather than through ranged reads).
    fn local_root(&self) -> Option<&Path> {
        None
    }
}

/// A file found by listing a remote origin: its path relative to the
/// origin's root (`/`-separated, raw bytes) and its version as the listing
/// reported it (S3: size, last-modified in whole seconds and ETag; SFTP:
/// size and mtime, whole seconds, no inode or change token). The same
/// record a delta sync plans with.
pub use musicfs_core::sync::Listed as RemoteFile;

/// One page of a listing, as [`RemoteOrigin::list`] hands them out.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// Regular files (and, on SFTP, links to regular files) in this page.
    /// Hidden entries (a path component starting with `.` but not `..`) are
    /// left out, as the local scanner leaves them out.
    pub files: Vec<RemoteFile>,
    /// Problems below the root that did not stop the listing (an SFTP
    /// directory that cannot be read, an S3 key that is not a valid path).
    pub errors: Vec<String>,
}

/// An origin on another machine: it can list itself and stat one file, so
/// it is scanned by [`scan_remote`](crate::library::remote_scan::scan_remote) rather than walked as a directory.
pub trait RemoteOrigin: Origin {
    /// The current version of one file (`NotFound` if it is gone).
    fn stat<'a>(&'a self, path: &'a OriginPath) -> BoxFuture<'a, Result<FileVersion, OriginError>>;

    /// Lists every file under the root, handing out pages as they arrive
    /// (S3: ListObjectsV2 pages of 1000 keys; SFTP: one directory at a
    /// time), so that tag reading can start before a big bucket is listed.
    ///
    /// Fails only when the root itself cannot be listed (unreachable
    /// server, missing bucket or directory, refused credentials); pages
    /// already handed out are then incomplete and must not be taken for the
    /// whole origin.
    fn list<'a>(
        &'a self,
        sink: &'a mut (dyn FnMut(ListPage) + Send),
    ) -> BoxFuture<'a, Result<(), OriginError>>;

    /// The bounds this origin keeps to (timeouts, concurrency, rate).
    fn limits(&self) -> &RemoteLimits;
}

/// A directory on a local (or locally mounted) file system.
pub struct LocalOrigin {
    id: OriginId,
    root: PathBuf,
}

impl LocalOrigin {
    /// An origin serving the files under `root`.
    pub fn new(id: OriginId, root: PathBuf) -> LocalOrigin {
        LocalOrigin { id, root }
    }
}

impl Origin for LocalOrigin {
    fn describe(&self) -> String {
        format!("{} (local {})", self.id, self.root.display())
    }

    fn read_at<'a>(
        &'a self,
        path: &'a OriginPath,
        version: &'a FileVersion,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, OriginError>> {
        let root = self.root.clone();
        let path = path.clone();
        let version = version.clone();
        Box::pin(async move {
            // A local read can block for as long as the disk (or a dead NFS
            // server) likes: keep it off the async workers. The caller bounds
            // how long it waits.
            tokio::task::spawn_blocking(move || read_local(&root, &path, &version, offset, len))
                .await
                .map_err(|e| OriginError::Unavailable(format!("read task failed: {e}")))?
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), OriginError>> {
        let root = self.root.clone();
        Box::pin(async move {
            // On the blocking pool: statfs, which no cache answers (FUSE and
            // NFS ask the server every time; stat and a directory listing
            // can come from the kernel's caches of a server that is gone),
            // then reading the directory (it exists and may be read).
            tokio::task::spawn_blocking(move || {
                crate::sys::statfs(&root).map_err(classify)?;
                match std::fs::read_dir(&root) {
                    Ok(mut entries) => entries.next().transpose().map(drop).map_err(classify),
                    Err(e) => Err(classify(e)),
                }
            })
            .await
            .map_err(|e| OriginError::Unavailable(format!("check task failed: {e}")))?
        })
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// Opens `path` beneath `root` (never through a link out of it), checks it
/// is still `version`, and reads the range.
fn read_local(
    root: &Path,
    path: &OriginPath,
    version: &FileVersion,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, OriginError> {
    let file = beneath::open(root, path.as_bytes(), beneath::Purpose::Read).map_err(classify)?;
    let meta = file.metadata().map_err(classify)?;
    if !same_version(&path::file_version(&meta), version) {
        return Err(OriginError::Changed);
    }
    let want = len.min(usize::try_from(version.size.saturating_sub(offset)).unwrap_or(len));
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => return Err(OriginError::Changed), // shorter than its size said
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(classify(e)),
        }
    }
    Ok(buf)
}

/// Whether a file on disk is still the version the catalog recorded: same
/// size, mtime, device and inode. The ctime part of the token is left out:
/// a chmod or a backup tool touching ctime does not change the bytes, while a
/// file replaced by a rename (same size and mtime, `rsync -t`) has a new
/// inode and is caught.
fn same_version(now: &FileVersion, want: &FileVersion) -> bool {
    let identity = |v: &FileVersion| {
        v.token.as_deref().map(|t| {
            t.rsplit_once(':')
                .map_or(t, |(dev_ino, _ctime)| dev_ino)
                .to_owned()
        })
    };
    now.size == want.size && now.mtime_ns == want.mtime_ns && identity(now) == identity(want)
}

fn classify(e: io::Error) -> OriginError {
    // A link out of the root is, for this origin, no file at all; it says
    // nothing about the origin's health.
    if beneath::is_outside(&e) {
        tracing::warn!("refused to read through a link out of a local origin: {e}");
        return OriginError::NotFound;
    }
    match e.kind() {
        io::ErrorKind::NotFound => OriginError::NotFound,
        _ => OriginError::Unavailable(e.to_string()),
    }
}
