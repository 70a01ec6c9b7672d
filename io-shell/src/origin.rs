//! Origins: where the music really is.
//!
//! An [`Origin`] reads byte ranges of its files, and checks on every read
//! that the file is still the version the catalog knows: a range of another
//! version must never be mixed into a cached file. The io-shell holds one
//! per `--origin`, indexed by [`OriginId`].

use crate::scan;
use musicfs_core::{FileVersion, OriginId, OriginPath};
use std::ffi::OsStr;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

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

    /// The local directory, for origins that are one (scanned and watched
    /// directly rather than through ranged reads).
    fn local_root(&self) -> Option<&Path> {
        None
    }
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

    fn full_path(&self, path: &OriginPath) -> PathBuf {
        self.root.join(OsStr::from_bytes(path.as_bytes()))
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
        let full = self.full_path(path);
        let version = version.clone();
        Box::pin(async move {
            // A local read can block for as long as the disk (or a dead NFS
            // server) likes: keep it off the async workers. The caller bounds
            // how long it waits.
            tokio::task::spawn_blocking(move || read_local(&full, &version, offset, len))
                .await
                .map_err(|e| OriginError::Unavailable(format!("read task failed: {e}")))?
        })
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// Opens `path`, checks it is still `version`, and reads the range.
fn read_local(
    path: &Path,
    version: &FileVersion,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, OriginError> {
    let file = std::fs::File::open(path).map_err(classify)?;
    let meta = file.metadata().map_err(classify)?;
    if !same_version(&scan::file_version(&meta), version) {
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
    match e.kind() {
        io::ErrorKind::NotFound => OriginError::NotFound,
        _ => OriginError::Unavailable(e.to_string()),
    }
}
