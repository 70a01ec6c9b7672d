//! The engine's inputs and outputs: what the io-shell must do, and what it
//! reports back.

use crate::catalog::SourceFile;
use crate::chunk::{CHUNK_MAX_BYTES, ChunkId};
use crate::fs::Errno;
use crate::ids::{Ino, OriginId, OriginPath};
use crate::manifest::Extent;

/// Identifies one FUSE read from arrival to reply. Chosen by the io-shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub u64);

/// Identifies one fetch from an origin. Chosen by the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FetchId(pub u64);

/// An origin file, as a map key.
pub type SourceKey = (OriginId, OriginPath);

/// The key of a source file.
pub fn key_of(src: &SourceFile) -> SourceKey {
    (src.origin, src.path.clone())
}

/// One slice of a reply: `len` bytes starting `from` bytes into chunk `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The chunk.
    pub id: ChunkId,
    /// The chunk's full length (to check what is read from disk).
    pub chunk_len: u32,
    /// Offset of the slice inside the chunk.
    pub from: u32,
    /// Length of the slice.
    pub len: u32,
}

/// What a fetch does with the bytes it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchPlan {
    /// Unmapped bytes: cut them into chunks with the [`crate::Chunker`],
    /// starting a chunk at `start`. Keep emitting chunks while a chunk would
    /// start before `soft_end`; never cut past `hard_end` (EOF or the start of
    /// bytes already mapped), where a cut is forced.
    Chunk {
        /// Stop starting new chunks here.
        soft_end: u64,
        /// Never pass this offset.
        hard_end: u64,
    },
    /// Mapped bytes whose chunks are not on disk: the cut points are known,
    /// and each chunk must hash to its id or the origin changed.
    Verify {
        /// The extents to restore, contiguous, in order, from `start`.
        extents: Vec<(u64, Extent)>,
    },
}

/// An order to read bytes from an origin into the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// Its id, to report progress against.
    pub id: FetchId,
    /// Which origin file, at which version.
    pub source: SourceFile,
    /// First byte to read.
    pub start: u64,
    /// How to cut and check.
    pub plan: FetchPlan,
    /// Whether to store the chunks (false while the cache disk is failing).
    pub store: bool,
    /// The last fetch of this file failed without progress: ask the origin
    /// one piece at a time, so a failing piece cannot take the pieces
    /// after it down with it again and again (an origin that fails every
    /// third request would otherwise fail the first piece of every retry).
    pub after_failure: bool,
    /// A fill behind readers (`engine/behind.rs`): no reader waits for its
    /// bytes, so it asks one piece at a time and keeps no chunk in the
    /// memory cache (each stays readable from the write queue until it is
    /// durable): the cache fills without the memory a waiting reader's
    /// fetch may use.
    pub behind: bool,
}

impl Fetch {
    /// One past the last byte the fetch may need from the origin.
    pub fn read_end(&self) -> u64 {
        match &self.plan {
            FetchPlan::Chunk { soft_end, hard_end } => hard_end
                .min(&soft_end.saturating_add(CHUNK_MAX_BYTES as u64))
                .to_owned(),
            FetchPlan::Verify { extents } => extents
                .last()
                .map_or(self.start, |(o, e)| o + u64::from(e.len)),
        }
    }
}

/// How the cache disk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiskFault {
    /// ENOSPC or EDQUOT.
    NoSpace,
    /// EIO.
    Io,
    /// EROFS, EACCES, EPERM: the cache directory cannot be written.
    ReadOnly,
    /// EMFILE, ENFILE: out of descriptors (transient, not the disk's fault).
    NoDescriptors,
}

/// What happened to one chunk of a fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// On disk and durable.
    Yes,
    /// Cut and held in memory while it is made durable: it may be served
    /// at once. If the write fails, [`crate::engine::Engine::chunks_not_stored`]
    /// says so.
    Pending,
    /// Not stored because the fetch was told not to.
    Skipped,
    /// Writing failed.
    Failed(DiskFault),
}

/// One chunk a fetch produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchedChunk {
    /// Offset in the file.
    pub offset: u64,
    /// Length and id.
    pub extent: Extent,
    /// Whether it reached the disk.
    pub stored: Stored,
}

/// Why a fetch ended early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// Could not reach the origin, or it answered too slowly or with an
    /// error that may pass. Retried with backoff, then failed over.
    Unavailable(String),
    /// The file is gone from the origin.
    NotFound,
    /// The file's size or mtime changed, or its bytes no longer hash to the
    /// chunk ids this version was cut into.
    Changed,
}

/// Why serving a read from disk failed for one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkFault {
    /// The chunk file is gone.
    Missing,
    /// Its bytes do not hash to its id.
    Corrupt,
    /// The disk failed to read it.
    Disk(DiskFault),
}

/// Things the engine decided that deserve a log line: each is reported
/// once per change, never once per read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Writing to the cache failed: reads go straight to the origins.
    PassthroughOn(DiskFault),
    /// The cache disk works again.
    PassthroughOff,
    /// A chunk was dropped from the index because its file was bad.
    ChunkDropped(ChunkId, ChunkFault),
    /// A file changed at its origin while being read; its old chunk map
    /// was dropped.
    SourceChanged(SourceKey),
    /// Reads were refused with EAGAIN: this many were already in flight.
    TooManyReads(usize),
    /// A read got EIO because its bytes could not be had in time.
    ReadTimedOut(Ino),
    /// An origin file could not be fetched; retrying after a pause.
    FetchFailed(SourceKey, String),
    /// Pinned files were released because pins would have taken more
    /// than their share of the cache (files grew, or a crash lost a
    /// release).
    PinsReleased {
        /// Files released.
        files: usize,
        /// Their bytes.
        bytes: u64,
        /// The most that may be pinned.
        limit_bytes: u64,
    },
    /// An origin's health changed (from, to).
    OriginHealth(OriginId, super::Health, super::Health),
}

/// Everything the engine asks of the io-shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Reply to a read with an error.
    ReadError {
        /// The read.
        req: ReqId,
        /// The error.
        errno: Errno,
    },
    /// Reply to a read with these bytes, read from cached chunks (each
    /// verified against its id), then report [`crate::engine::Engine::read_finished`].
    /// An empty list means end of file.
    Serve {
        /// The read.
        req: ReqId,
        /// The slices, in order.
        pieces: Vec<Piece>,
    },
    /// Reply to a read with these bytes, which the tree generated (a
    /// rewritten playlist): no cache, no origin, nothing to report after.
    Generated {
        /// The read.
        req: ReqId,
        /// The bytes (empty at end of file).
        data: Vec<u8>,
    },
    /// Reply to a read with bytes read straight from the origin (the cache
    /// cannot take them, or the origin is `cache=off`), then report
    /// `read_finished`. If the origin fails (or takes longer than the
    /// fetch stall timeout), send nothing and report `passthrough_failed`:
    /// the engine tries another origin, retries, or answers EIO.
    Passthrough {
        /// The read.
        req: ReqId,
        /// Where to read.
        source: SourceFile,
        /// Offset in the file.
        offset: u64,
        /// Number of bytes.
        len: u32,
        /// The read ends a run of back-to-back reads of at least
        /// `Config::passthrough_ahead_after`: the executor reads the origin
        /// ahead of it into memory (a hint).
        streaming: bool,
    },
    /// Start a fetch and report `fetch_progress` and `fetch_done`.
    Fetch(Fetch),
    /// Stop a fetch; a `fetch_done` may still arrive and is ignored.
    CancelFetch(FetchId),
    /// Delete these chunks from the disk and the index.
    Evict(Vec<ChunkId>),
    /// Read these runs of cached chunks into memory, verified, ahead of
    /// the reads likely to want them (in the order given). A hint: nothing
    /// is reported, and a chunk that cannot be read is left to the read
    /// that wants it.
    /// Each run is a file's back-to-back chunks (id, length), read as one.
    Warm(Vec<Vec<(ChunkId, u32)>>, WarmFor),
    /// Hand these runs of kept bytes to the kernel's page cache, where
    /// their chunks are in memory or being read ahead into it (a hint:
    /// the others are left out, and the kernel takes pages only for the
    /// inodes it holds), so a tag scan's reads of them need no round trip.
    Prime(Vec<Prime>),
    /// Try writing to the cache disk and report `disk_probe`.
    ProbeDisk,
    /// Check that an origin answers (cheaply: stat its root, list one key)
    /// and report `health_check_done`. Checks of different origins run in
    /// parallel; the engine times each out by itself.
    CheckOrigin {
        /// The origin.
        origin: OriginId,
        /// The check, to report against.
        check: super::CheckId,
    },
    /// Worth a log line.
    Notice(Notice),
}

/// A run of a file's cached kept bytes for the kernel's page cache
/// (`Output::Prime`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prime {
    /// The file.
    pub ino: Ino,
    /// Where the run starts in it.
    pub offset: u64,
    /// The file's size (a run that ends there may end in a part page).
    pub size: u64,
    /// The run's chunks, back to back: id and length.
    pub chunks: Vec<(ChunkId, u32)>,
    /// The tree epoch the run was planned in: handed over only while the
    /// tree is still that one.
    pub epoch: u64,
}

/// Whom a read-ahead of the cache disk (`Output::Warm`) is for, which sets
/// how many of its reads go to the disk at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarmFor {
    /// A tag scan's next files: small runs (a head, a tail) that the scan
    /// reads within milliseconds. All go to the disk at once: a scan that
    /// catches up with a queue waits for the disk file by file.
    Scan,
    /// A sequential reader's next megabytes: runs of about a MiB, at most
    /// `ExecConfig::warm_reads_in_flight` at once, so that a cold read of
    /// a long cached file holds few of them in memory.
    Stream,
}
