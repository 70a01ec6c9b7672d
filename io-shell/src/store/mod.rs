//! The on-disk cache store: chunk files plus one sled database.
//!
//! A cache directory looks like this:
//!
//! ```text
//! <cache_dir>/
//!   chunks/00 .. chunks/ff/<32-hex-id>   one file per chunk, named by ChunkId
//!   chunks/tmp/                          in-progress writes (emptied at open)
//!   packs/<8-hex number>.pack            many chunks each: the tag bytes a first scan keeps,
//!                                        a fetch's chunks stored in one batch
//!   packs.tables                         the packs' tables, saved at a clean exit (and on
//!                                        the way, every 1,024 new packs)
//!   db/                                  sled: catalog, manifests, chunk index, meta
//!   db.corrupt-<unix-time>/              a database that failed to open, set aside
//! ```
//!
//! The chunk files are the truth about *bytes*: every read is verified
//! against its content id, so a damaged file is reported, never served. The
//! database is the truth about *what we know*: the catalog, the manifests and
//! an index of the chunk files with their last access. The index can always
//! be rebuilt from [`ChunkStore::scan`], which is why a corrupt database is
//! moved aside rather than repaired.
//!
//! Errors keep the operating system's error code all the way up, because the
//! caller reacts to *kinds* of failure, which [`StoreError::disk_fault`]
//! names: a full, read-only or failing cache disk switches the daemon to
//! serving straight from the origins ("passthrough"); running out of file
//! descriptors is transient and must not.

mod chunks;
mod db;
mod owner;
mod packs;
pub mod tree_cache;

pub use chunks::ChunkStore;
pub use owner::{CacheOwner, OWNER_FILE};
pub use packs::{PackSlot, PackWriter, PacksLoaded};

/// What the daemon needs of a chunk store. [`ChunkStore`] is the real one;
/// tests wrap it to inject full disks, I/O errors and corruption.
pub trait ChunkBackend: Send + Sync + 'static {
    /// Stores a chunk atomically (see [`ChunkStore::put`]).
    fn put(&self, id: ChunkId, data: &[u8]) -> Result<(), StoreError>;
    /// Stores several chunks, results in their order (see
    /// [`ChunkStore::put_batch`]: one flush for the batch).
    fn put_batch(&self, chunks: &[(ChunkId, &[u8])]) -> Vec<Result<(), StoreError>> {
        chunks
            .iter()
            .map(|&(id, data)| self.put(id, data))
            .collect()
    }
    /// Reads and verifies a chunk (see [`ChunkStore::get`]).
    fn get(&self, id: ChunkId) -> Result<Vec<u8>, ChunkReadError>;
    /// Reads a chunk for a caller that verifies it (the executor): the
    /// same checks as [`ChunkBackend::get`] but the hash.
    fn read(&self, id: ChunkId) -> Result<Arc<[u8]>, ChunkReadError> {
        self.get(id).map(Arc::from)
    }
    /// Deletes a chunk; a missing one is fine.
    fn remove(&self, id: ChunkId) -> Result<(), StoreError>;
    /// Saves what lets the next open be quick, if enough changed since it
    /// was last saved (see [`ChunkStore::save_pack_tables_after`]); the
    /// daemon calls it as it saves the rest of its state. Failures are
    /// logged: they cost only time.
    fn checkpoint(&self) {}
}

/// Packs put in place between two saves of their tables while the daemon
/// runs (some 2 GB of cached tracks): after a crash, the next open reads
/// at most about as many tables (some 75 ms on this VM's disk with the
/// page cache cold), and a save, which writes every packed chunk's place
/// (24 bytes each), is made once per that much cached.
pub const PACK_TABLES_SAVED_EVERY: usize = 1024;

impl ChunkBackend for ChunkStore {
    fn put(&self, id: ChunkId, data: &[u8]) -> Result<(), StoreError> {
        ChunkStore::put(self, id, data)
    }
    fn put_batch(&self, chunks: &[(ChunkId, &[u8])]) -> Vec<Result<(), StoreError>> {
        ChunkStore::put_batch(self, chunks)
    }
    fn get(&self, id: ChunkId) -> Result<Vec<u8>, ChunkReadError> {
        ChunkStore::get(self, id)
    }
    fn read(&self, id: ChunkId) -> Result<Arc<[u8]>, ChunkReadError> {
        ChunkStore::read_unverified(self, id)
    }
    fn remove(&self, id: ChunkId) -> Result<(), StoreError> {
        ChunkStore::remove(self, id)
    }
    fn checkpoint(&self) {
        match self.save_pack_tables_after(PACK_TABLES_SAVED_EVERY) {
            Ok(true) => tracing::debug!("pack tables saved"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not save the pack tables; after a crash the next mount reads the tables of the packs written since the last save")
            }
        }
    }
}
pub use db::{Db, META_LIBRARY_FINGERPRINT, META_SCHEMA_VERSION, OpenOutcome, SCHEMA_VERSION};

use musicfs_core::ChunkId;
use musicfs_core::engine::DiskFault;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A failure of the cache store.
///
/// Every variant that stems from the operating system keeps the original
/// [`io::Error`] (and so its raw `errno`), so callers can tell a full disk
/// from a missing file from descriptor exhaustion.
#[derive(Debug)]
pub enum StoreError {
    /// A file-system call failed.
    Io {
        /// What the store was doing, for the log ("create temp file", ...).
        op: &'static str,
        /// The file or directory it was doing it to.
        path: PathBuf,
        /// The operating system's error, unchanged.
        source: io::Error,
    },
    /// The sled database failed (its own I/O error, corruption or a bug).
    Db {
        /// What the store was doing.
        op: &'static str,
        /// sled's error, unchanged.
        source: sled::Error,
    },
    /// A record could not be encoded for the database. (Records that fail to
    /// *decode* are skipped and logged by the loaders instead.)
    Encode {
        /// Which kind of record.
        what: &'static str,
        /// The encoder's message.
        detail: String,
    },
    /// [`ChunkStore::put`] was given bytes whose hash is not the id: storing
    /// them would serve wrong bytes later, so they are refused.
    WrongId {
        /// The id the caller claimed.
        id: ChunkId,
        /// The id of the bytes actually given.
        actual: ChunkId,
    },
    /// [`ChunkStore::put`] was given more than
    /// [`musicfs_core::chunk::CHUNK_MAX_BYTES`]: no chunker produces that, so
    /// it is a caller bug, and the store's readers rely on the bound.
    TooLarge {
        /// The refused chunk's id.
        id: ChunkId,
        /// Its length.
        len: usize,
    },
    /// A fail point (the `failpoints` feature) injected this error.
    ///
    /// The fail point's argument may name an errno (`return(ENOSPC)`), so
    /// tests can drive the disk-failure paths; without one it is `EIO`.
    Injected {
        /// The fail point's name.
        point: &'static str,
        /// The error it stands for.
        source: io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn db(op: &'static str, source: sled::Error) -> StoreError {
        StoreError::Db { op, source }
    }

    /// The same error again, for each of several chunks one failed write
    /// stood for: the step, the path and the errno (which callers
    /// classify) are kept; a database or encoding error becomes an I/O
    /// error of the step.
    pub(crate) fn again(&self) -> StoreError {
        let same = |e: &io::Error| match e.raw_os_error() {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::new(e.kind(), e.to_string()),
        };
        match self {
            StoreError::Io { op, path, source } => StoreError::io(op, path.clone(), same(source)),
            StoreError::Injected { point, source } => StoreError::Injected {
                point,
                source: same(source),
            },
            StoreError::WrongId { id, actual } => StoreError::WrongId {
                id: *id,
                actual: *actual,
            },
            StoreError::TooLarge { id, len } => StoreError::TooLarge { id: *id, len: *len },
            StoreError::Db { op, .. } | StoreError::Encode { what: op, .. } => {
                StoreError::io(op, PathBuf::new(), io::Error::other(self.to_string()))
            }
        }
    }

    /// Builds the error a fail point returns. `arg` is the fail point's
    /// `return(...)` argument: an errno name (`ENOSPC`) or number, or none.
    #[allow(dead_code)] // only called from fail points, which may be compiled out
    pub(crate) fn injected(point: &'static str, arg: Option<String>) -> StoreError {
        let errno = arg
            .as_deref()
            .and_then(errno_from_name)
            .unwrap_or(libc::EIO);
        StoreError::Injected {
            point,
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// The underlying operating-system error, if this is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            StoreError::Io { source, .. } | StoreError::Injected { source, .. } => Some(source),
            StoreError::Db {
                source: sled::Error::Io(e),
                ..
            } => Some(e),
            _ => None,
        }
    }

    /// The raw `errno`, if known.
    ///
    /// sled copies errors it stores from its background flusher and loses
    /// the raw code on the way (it keeps the kind and a `Debug` rendering
    /// that still says `code: N`), so that rendering is read as a fallback.
    pub fn raw_os_error(&self) -> Option<i32> {
        let e = self.io_error()?;
        e.raw_os_error().or_else(|| errno_in_debug(&e.to_string()))
    }

    /// What this failure says about the cache disk. The one classifier of
    /// store errors: the daemon turns its answer into the engine's
    /// [`DiskFault`] (which puts the mount in passthrough, except for
    /// `NoDescriptors`), and the tests assert it.
    ///
    /// | the error | fault |
    /// |---|---|
    /// | `ENOSPC`, `EDQUOT` (or, without an errno, the kinds `StorageFull`, `QuotaExceeded`) | `NoSpace` |
    /// | `EROFS`, `EACCES`, `EPERM` (`ReadOnlyFilesystem`, `PermissionDenied`) | `ReadOnly` |
    /// | `EMFILE`, `ENFILE` | `NoDescriptors`: transient, not the disk's fault |
    /// | `EIO` and every other I/O error, `ENOENT` included; sled reporting corruption | `Io` |
    /// | sled's lock held by another process | `None` |
    /// | a chunk refused (`WrongId`, `TooLarge`), a record that cannot be encoded, sled's other errors (a bug, an unsupported database) | `None` |
    ///
    /// `ENOENT` is `Io` because an ordinary missing file never becomes a
    /// `StoreError`: a chunk that is not there is
    /// [`ChunkReadError::Missing`], removing one that is gone succeeds, a
    /// scan skips files that vanish. A missing file that still reaches
    /// here is a piece of the store itself (its `chunks/` or temp folder
    /// removed, the cache directory gone from under the daemon): nothing can
    /// be cached until it is back, which is what a disk fault means.
    ///
    /// A held lock is `None`: the disk works, another MusicFS process has
    /// the cache. It only happens at [`Db::open`], where the mount refuses
    /// to start and names the other mount ([`StoreError::is_locked`]).
    /// `None` in general means "not the disk": retrying elsewhere or
    /// fixing the caller helps, passthrough would not.
    pub fn disk_fault(&self) -> Option<DiskFault> {
        match self {
            StoreError::Db {
                source: sled::Error::Corruption { .. },
                ..
            } => return Some(DiskFault::Io),
            StoreError::Db {
                source: sled::Error::Io(e),
                ..
            } if is_lock_error(e) => return None,
            StoreError::Encode { .. }
            | StoreError::WrongId { .. }
            | StoreError::TooLarge { .. } => {
                return None;
            }
            _ => {}
        }
        let e = self.io_error()?;
        Some(match self.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => DiskFault::NoSpace,
            Some(libc::EROFS | libc::EACCES | libc::EPERM) => DiskFault::ReadOnly,
            Some(libc::EMFILE | libc::ENFILE) => DiskFault::NoDescriptors,
            Some(_) => DiskFault::Io,
            None => match e.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => DiskFault::NoSpace,
                io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
                    DiskFault::ReadOnly
                }
                _ => DiskFault::Io,
            },
        })
    }

    /// True when the cache disk itself cannot be used ([`StoreError::disk_fault`]
    /// names a fault other than `NoDescriptors`): the caller stops caching
    /// and serves reads straight from the origins ("passthrough") instead of
    /// failing them: a cache is an optimisation, and a broken one must not
    /// take the mount down.
    pub fn is_disk_failure(&self) -> bool {
        matches!(self.disk_fault(), Some(f) if f != DiskFault::NoDescriptors)
    }

    /// True when another process holds the database's lock (another daemon
    /// on the same cache directory).
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Db { source: sled::Error::Io(e), .. } if is_lock_error(e))
    }

    /// True when the process (`EMFILE`) or the system (`ENFILE`) is out of
    /// file descriptors ([`StoreError::disk_fault`] is `NoDescriptors`).
    ///
    /// That is transient and says nothing about the disk, so the caller
    /// should fail or retry the one request rather than go to passthrough.
    pub fn is_fd_exhaustion(&self) -> bool {
        self.disk_fault() == Some(DiskFault::NoDescriptors)
    }

    /// True when the database reported corruption while in use. The caller
    /// can drop the [`Db`] and [`Db::open`] it again, which sets a corrupt
    /// database aside and starts a fresh one.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StoreError::Db {
                source: sled::Error::Corruption { .. },
                ..
            }
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { op, path, source } => {
                write!(f, "cache store: {op} {}: {source}", path.display())
            }
            StoreError::Db { op, source } => write!(f, "cache database: {op}: {source}"),
            StoreError::Encode { what, detail } => {
                write!(f, "cache database: cannot encode {what}: {detail}")
            }
            StoreError::WrongId { id, actual } => write!(
                f,
                "cache store: refusing to store bytes with id {actual} under id {id}"
            ),
            StoreError::TooLarge { id, len } => {
                write!(f, "cache store: chunk {id} of {len} bytes is too large")
            }
            StoreError::Injected { point, source } => {
                write!(f, "cache store: fail point {point}: {source}")
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } | StoreError::Injected { source, .. } => Some(source),
            StoreError::Db { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why [`ChunkStore::get`] returned no bytes.
///
/// The three cases call for different reactions: a missing chunk is simply
/// fetched again; a corrupt one must be removed (and its index entry
/// dropped) before it is fetched again; an I/O error may mean the cache disk
/// is failing ([`ChunkReadError::is_disk_failure`]).
#[derive(Debug)]
pub enum ChunkReadError {
    /// No file for this id.
    Missing,
    /// The file exists but does not hold the bytes the id names. It is left
    /// in place: the caller decides whether to remove it.
    Corrupt {
        /// The file's length on disk.
        len: u64,
        /// What was wrong ("hash mismatch", "longer than any chunk", ...).
        reason: &'static str,
    },
    /// The file could not be read.
    Io(StoreError),
}

impl ChunkReadError {
    /// See [`StoreError::disk_fault`]. `None` for `Missing` and `Corrupt`:
    /// one bad file is not a bad disk.
    pub fn disk_fault(&self) -> Option<DiskFault> {
        match self {
            ChunkReadError::Io(e) => e.disk_fault(),
            ChunkReadError::Missing | ChunkReadError::Corrupt { .. } => None,
        }
    }

    /// See [`StoreError::is_disk_failure`].
    pub fn is_disk_failure(&self) -> bool {
        matches!(self, ChunkReadError::Io(e) if e.is_disk_failure())
    }

    /// See [`StoreError::is_fd_exhaustion`].
    pub fn is_fd_exhaustion(&self) -> bool {
        matches!(self, ChunkReadError::Io(e) if e.is_fd_exhaustion())
    }
}

impl fmt::Display for ChunkReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkReadError::Missing => f.write_str("chunk not in the cache"),
            ChunkReadError::Corrupt { len, reason } => {
                write!(f, "cached chunk is corrupt ({reason}, {len} bytes on disk)")
            }
            ChunkReadError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ChunkReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChunkReadError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// sled reports a held lock as `ErrorKind::Other` with this message.
/// Replaces `path` with what `write` writes: into `tmp` first, flushed,
/// then renamed over it, so that `path` is always whole (the old or the
/// new). A failure leaves no `tmp` behind: on a full disk, no half-written
/// copy holds space.
pub(crate) fn replace_file(
    path: &std::path::Path,
    tmp: &std::path::Path,
    write: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let written = std::fs::File::create(tmp)
        .and_then(|mut file| {
            write(&mut file)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

pub(super) fn is_lock_error(e: &io::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

/// Finds `code: N` in the `Debug` rendering of an `io::Error` that sled
/// turned into a message.
fn errno_in_debug(msg: &str) -> Option<i32> {
    let rest = &msg[msg.find("code: ")? + "code: ".len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `ENOSPC` → `libc::ENOSPC`, and plain numbers, for fail point arguments.
#[allow(dead_code)]
fn errno_from_name(name: &str) -> Option<i32> {
    let name = name.trim();
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    Some(match name {
        "ENOSPC" => libc::ENOSPC,
        "EDQUOT" => libc::EDQUOT,
        "EIO" => libc::EIO,
        "EROFS" => libc::EROFS,
        "EACCES" => libc::EACCES,
        "EPERM" => libc::EPERM,
        "EMFILE" => libc::EMFILE,
        "ENFILE" => libc::ENFILE,
        "ENOENT" => libc::ENOENT,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_fault_table() {
        use DiskFault::{Io, NoDescriptors, NoSpace, ReadOnly};
        let e = |errno| StoreError::io("test", "/x", io::Error::from_raw_os_error(errno));
        for (errno, fault) in [
            (libc::ENOSPC, Some(NoSpace)),
            (libc::EDQUOT, Some(NoSpace)),
            (libc::EROFS, Some(ReadOnly)),
            (libc::EACCES, Some(ReadOnly)),
            (libc::EPERM, Some(ReadOnly)),
            (libc::EMFILE, Some(NoDescriptors)),
            (libc::ENFILE, Some(NoDescriptors)),
            (libc::EIO, Some(Io)),
            (libc::ENOENT, Some(Io)),
            (libc::EBADF, Some(Io)),
            (libc::EINTR, Some(Io)),
        ] {
            assert_eq!(e(errno).disk_fault(), fault, "errno {errno}");
            let failure = fault.is_some_and(|f| f != NoDescriptors);
            assert_eq!(e(errno).is_disk_failure(), failure, "errno {errno}");
            assert_eq!(
                e(errno).is_fd_exhaustion(),
                fault == Some(NoDescriptors),
                "errno {errno}"
            );
        }
        // Without an errno, by kind.
        for (kind, fault) in [
            (io::ErrorKind::StorageFull, NoSpace),
            (io::ErrorKind::QuotaExceeded, NoSpace),
            (io::ErrorKind::ReadOnlyFilesystem, ReadOnly),
            (io::ErrorKind::PermissionDenied, ReadOnly),
            (io::ErrorKind::Other, Io),
        ] {
            let err = StoreError::io("test", "/x", io::Error::new(kind, "no errno"));
            assert_eq!(err.disk_fault(), Some(fault), "{kind:?}");
        }
        // The database.
        let sled_io = |e| StoreError::db("op", sled::Error::Io(e));
        let lock = io::Error::other("could not acquire lock on \"db\"");
        assert_eq!(
            sled_io(lock).disk_fault(),
            None,
            "another process, not the disk"
        );
        let corrupt = StoreError::db("get", sled::Error::Corruption { at: None, bt: () });
        assert_eq!(corrupt.disk_fault(), Some(Io));
        assert_eq!(
            sled_io(io::Error::other("something")).disk_fault(),
            Some(Io)
        );
        let bug = StoreError::db("op", sled::Error::Unsupported("x".into()));
        assert_eq!(bug.disk_fault(), None);
        // Not the disk: a caller's bug.
        let id = ChunkId(1);
        for err in [
            StoreError::WrongId { id, actual: id },
            StoreError::TooLarge { id, len: 1 },
            StoreError::Encode {
                what: "x",
                detail: "y".into(),
            },
        ] {
            assert_eq!(err.disk_fault(), None, "{err}");
        }
        // Reads: one bad file is not a bad disk.
        assert_eq!(ChunkReadError::Missing.disk_fault(), None);
        let bad = ChunkReadError::Corrupt {
            len: 1,
            reason: "x",
        };
        assert_eq!(bad.disk_fault(), None);
        assert_eq!(
            ChunkReadError::Io(e(libc::EROFS)).disk_fault(),
            Some(ReadOnly)
        );
    }

    #[test]
    fn a_store_whose_folders_vanished_is_an_io_fault() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        std::fs::remove_dir_all(dir.path()).unwrap();
        let data = b"some bytes".to_vec();
        let id = ChunkId::of(&data);
        let err = store.put(id, &data).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        assert_eq!(err.disk_fault(), Some(DiskFault::Io), "{err}");
    }

    #[test]
    fn classifies_sled_errors_that_lost_their_errno() {
        // What sled's `Error::clone` makes of an ENOSPC from its flusher.
        let orig = io::Error::from_raw_os_error(libc::EMFILE);
        let cloned = io::Error::new(orig.kind(), format!("{orig:?}"));
        assert_eq!(cloned.raw_os_error(), None);
        let e = StoreError::db("flush", sled::Error::Io(cloned));
        assert!(e.is_fd_exhaustion());
        assert!(!e.is_disk_failure());
        let e = StoreError::db("flush", sled::Error::Io(io::Error::other("something")));
        assert!(e.is_disk_failure());
        let lock = io::Error::other("could not acquire lock on \"db\"");
        let locked = StoreError::db("open", sled::Error::Io(lock));
        assert!(!locked.is_disk_failure() && locked.is_locked());
        assert!(!corrupt_free_io().is_locked());
        let corrupt = StoreError::db("get", sled::Error::Corruption { at: None, bt: () });
        assert!(corrupt.is_disk_failure() && corrupt.is_corruption());
    }

    fn corrupt_free_io() -> StoreError {
        StoreError::db("flush", sled::Error::Io(io::Error::other("something")))
    }

    #[test]
    fn injected_errors_carry_the_named_errno() {
        let e = StoreError::injected("p", Some("ENOSPC".into()));
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(e.is_disk_failure());
        let e = StoreError::injected("p", Some("EMFILE".into()));
        assert!(e.is_fd_exhaustion());
        let e = StoreError::injected("p", None);
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn read_errors_classify_through() {
        assert!(!ChunkReadError::Missing.is_disk_failure());
        assert!(
            !ChunkReadError::Corrupt {
                len: 1,
                reason: "x"
            }
            .is_disk_failure()
        );
        let io = |errno| {
            ChunkReadError::Io(StoreError::io(
                "read",
                "/x",
                io::Error::from_raw_os_error(errno),
            ))
        };
        assert!(io(libc::EIO).is_disk_failure());
        assert!(io(libc::EMFILE).is_fd_exhaustion());
    }
}
