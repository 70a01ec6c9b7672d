//! Keeping what a tag scan read: a track's head and tail go into the chunk
//! cache, for the version the scan saw, so that a media server's own tag
//! scan right after the mount (or with the origin down) is answered from
//! the cache instead of asking the origin for the same bytes again.
//!
//! What is kept ([`kept_region`]): the first [`KEEP_HEAD_BYTES`] and the
//! last [`tail_bytes`] of the file (what media servers read for tags and
//! durations), widened to whatever the tag parser touched near either end
//! (a FLAC picture block, an ID3v2 tag with its art, an MP4 `moov` atom at
//! the end). Such chunks are evicted last (the core's
//! `Manifest::kept`), and all of them together may take at most
//! [`KEEP_SHARE_PCT`] of the cache.
//!
//! [`TagKeeper`] stores each batch of them as one pack file
//! ([`ChunkStore::put_pack`]): a media server's scan reads them back
//! together, and one file for thousands of chunks spares it an open and a
//! lookup per chunk. The order of steps is the executor's for a fetch's
//! chunks: the pack durable and in place first, then its index entries,
//! then the manifests that name them. Batches are written one at a time,
//! by one writer thread, in the order they were filled, so a manifest
//! never names a chunk of a later batch; after a batch failed, no later
//! one is written. It runs only while no engine does (the first scan
//! before a mount): nothing else deletes chunks then.

use crate::store::{ChunkStore, Db, PackWriter, StoreError};
use musicfs_core::engine::cut_points;
use musicfs_core::{ChunkId, Extent, Kept, Manifest, SourceFile};
use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

/// Bytes from the start of a track kept at least: what Navidrome,
/// Jellyfin, MPD and beets read for tags.
pub const KEEP_HEAD_BYTES: u64 = 128 * 1024;

/// The kernel reads a FUSE file in requests of up to this much, and reads
/// ahead of a reader: the kept head ends on such a boundary, and as far
/// past what the tag reader read as the kernel's read-ahead goes, so
/// neither the reader nor the read-ahead behind it asks the origin for
/// anything.
const KERNEL_REQUEST_BYTES: u64 = 128 * 1024;

/// The most a kept head is widened by for the kernel's read-ahead (the
/// mount's `max_readahead`). The kernel really reads ahead at most the
/// mount device's 128 KiB (see `kernel/fuse.rs`): with 1 MiB it read past
/// heads kept this way behind a tag reader going through a big picture.
const KERNEL_READ_AHEAD_MAX: u64 = 1 << 20;

/// The kernel reads whole pages: the kept tail starts on one.
const PAGE_BYTES: u64 = 4096;

/// A region touched by the parser this far beyond the kept head (or before
/// the kept tail) widens it: a cover picture block the parser skipped, the
/// audio frame after an ID3v2 tag.
const BRIDGE_BYTES: u64 = 2 * 1024 * 1024;

/// Neither end of a track is kept past this (tags with embedded artwork
/// reach 10-20 MiB; beyond that only garbage lengths).
const KEEP_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// Covers, other images and lyrics up to this size are kept whole.
pub const SIDECAR_KEEP_MAX_BYTES: u64 = 1 << 20;

/// Kept bytes of all tracks may take at most this share of the cache.
pub const KEEP_SHARE_PCT: u64 = 50;

/// Bytes a batch collects before it is written.
const BATCH_BYTES: usize = 8 << 20;

/// Bytes from the end of a track kept at least. Ogg streams need their last
/// page for a duration (MPD looks at the last 64 KiB); other formats keep
/// their footers there (ID3v1, APE, Lyrics3).
pub fn tail_bytes(ext: &str) -> u64 {
    match ext {
        "ogg" | "oga" | "opus" | "spx" => 64 * 1024,
        _ => 8 * 1024,
    }
}

/// Byte ranges a reader was asked for, merged as they come.
#[derive(Clone, Debug, Default)]
pub struct Touched {
    ranges: Vec<(u64, u64)>,
}

impl Touched {
    /// Records a read of `len` bytes at `pos`.
    pub fn add(&mut self, pos: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = pos.saturating_add(len);
        if let Some(last) = self.ranges.last_mut()
            && pos <= last.1
            && end >= last.0
        {
            last.0 = last.0.min(pos);
            last.1 = last.1.max(end);
            return;
        }
        self.ranges.push((pos, end));
    }

    /// The ranges, sorted and merged where they overlap or touch.
    fn merged(&self) -> Vec<(u64, u64)> {
        let mut r = self.ranges.clone();
        r.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
        for (s, e) in r {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        out
    }
}

/// A reader that records what it is asked for.
pub struct Recording<R> {
    inner: R,
    pos: u64,
    /// What was read.
    pub touched: Touched,
}

impl<R> Recording<R> {
    /// Records the reads of `inner`, which is at offset 0.
    pub fn new(inner: R) -> Recording<R> {
        Recording {
            inner,
            pos: 0,
            touched: Touched::default(),
        }
    }

    /// The reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Recording<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.touched.add(self.pos, n as u64);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Recording<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}

/// What to keep of a file of `size` bytes: `0..head` and `tail..size`
/// (`head == size` keeps it whole; `tail == size` keeps no tail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// End of the kept head.
    pub head: u64,
    /// Start of the kept tail.
    pub tail: u64,
}

/// Reads this close to the end belong to the tail (ID3v1, APE and Lyrics3
/// footers, an Ogg stream's last page): they never widen the head.
const TAIL_ZONE_BYTES: u64 = 64 * 1024;

/// A head and tail this close are kept as one: the whole file.
const JOIN_BYTES: u64 = 256 * 1024;

/// Decides what to keep of a file from what its parser touched.
pub fn kept_region(size: u64, tail_min: u64, touched: &Touched) -> Region {
    let ranges = touched.merged();
    let tail_zone = size.saturating_sub(TAIL_ZONE_BYTES.max(tail_min));
    let mut head = KEEP_HEAD_BYTES.min(size);
    for &(s, e) in &ranges {
        if s <= head.saturating_add(BRIDGE_BYTES) && s < tail_zone {
            head = head.max(e.min(size));
        }
    }
    let mut tail = size.saturating_sub(tail_min);
    for &(s, e) in ranges.iter().rev() {
        if e.saturating_add(BRIDGE_BYTES) >= tail && s >= head {
            tail = tail.min(s);
        }
    }
    if head > KEEP_MAX_BYTES {
        head = KEEP_HEAD_BYTES.min(size);
    }
    if size - tail > KEEP_MAX_BYTES {
        tail = size.saturating_sub(tail_min);
    }
    let head = head
        .div_ceil(KERNEL_REQUEST_BYTES)
        .saturating_mul(KERNEL_REQUEST_BYTES);
    // The kernel's read-ahead grows with a sequential reader: behind one
    // that read `head` bytes (a big picture) it reads about as much again.
    let head = head
        .saturating_add(head.clamp(KERNEL_REQUEST_BYTES, KERNEL_READ_AHEAD_MAX))
        .min(size);
    let tail = tail / PAGE_BYTES * PAGE_BYTES;
    if tail <= head.saturating_add(JOIN_BYTES) {
        return Region {
            head: size,
            tail: size,
        };
    }
    Region { head, tail }
}

/// The bytes kept of one file version.
pub struct KeptBytes {
    /// The file, at the version the bytes are of.
    pub source: SourceFile,
    /// `0..head.len()` of the file.
    pub head: Vec<u8>,
    /// Where `tail` starts.
    pub tail_at: u64,
    /// `tail_at..size` of the file.
    pub tail: Vec<u8>,
}

/// Writes kept bytes into the cache (see the module docs).
///
/// The scan's workers cut and hash on their own threads, reserve room for
/// the new chunks in the batch's pack and write them there side by side,
/// and hand each full batch to one writer thread that ends the pack, puts
/// it in place and indexes it, so no worker waits for a flush. (A worker that filled a batch used to write all of it itself:
/// with two workers on two cores one of them mostly waited on the disk.)
/// At most [`BATCHES_QUEUED`] full batches wait for the writer; past that
/// a worker that fills one waits.
pub struct TagKeeper {
    budget: u64,
    state: parking_lot::Mutex<State>,
    /// Full batches, in the order they were filled; `None` once finished.
    /// Sent to while `state` is held, so the order of the queue is the
    /// order of the batches.
    to_writer: parking_lot::Mutex<Option<std::sync::mpsc::SyncSender<Batch>>>,
    writer: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    written: Arc<Written>,
}

/// Full batches that may wait for the writer while it writes another.
const BATCHES_QUEUED: usize = 1;

impl std::fmt::Debug for TagKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TagKeeper")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    batch: Batch,
    /// Chunks already in the cache or in a batch.
    known: HashSet<ChunkId>,
    /// Bytes of new chunks so far.
    used: u64,
    kept_files: u64,
    over_budget: u64,
}

/// New chunks, in the order of the files and of their bytes, and the
/// manifests that name them (or chunks of earlier batches).
#[derive(Default)]
struct Batch {
    /// Started with the batch's first new chunk.
    pack: Option<Arc<PackWriter>>,
    manifests: Vec<(SourceFile, Manifest)>,
}

/// What the writer thread did; it never takes the state lock (a worker
/// holds that while it waits to hand over a batch).
struct Written {
    store: Arc<ChunkStore>,
    db: Arc<Db>,
    /// Set after a write failed: nothing more is kept or written.
    failed: std::sync::atomic::AtomicBool,
    outcome: parking_lot::Mutex<WrittenSoFar>,
}

/// Index entries written (id, length, last access), as `Db::put_chunks` takes
/// them.
type Indexed = Vec<(ChunkId, u32, u64)>;

#[derive(Default)]
struct WrittenSoFar {
    /// Index entries written, for the engine that starts next.
    indexed: Indexed,
    /// Files whose manifests were not written.
    files_lost: u64,
}

/// What a keeper did.
#[derive(Debug, Default)]
pub struct KeepReport {
    /// Files whose head and tail are in the cache.
    pub files: u64,
    /// Bytes of new chunks written.
    pub bytes: u64,
    /// Files left out because the kept bytes reached their share of the
    /// cache.
    pub over_budget: u64,
    /// The chunks indexed, to load into the engine.
    pub indexed: Vec<(ChunkId, u32, u64)>,
}

impl TagKeeper {
    /// A keeper over the cache of `capacity` bytes, which holds `known`.
    /// Starts its writer thread.
    pub fn new(
        store: Arc<ChunkStore>,
        db: Arc<Db>,
        capacity: u64,
        known: impl IntoIterator<Item = ChunkId>,
    ) -> io::Result<TagKeeper> {
        let written = Arc::new(Written {
            store,
            db,
            failed: Default::default(),
            outcome: Default::default(),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(BATCHES_QUEUED);
        let writer = std::thread::Builder::new()
            .name("tag-keeper".into())
            .spawn({
                let written = Arc::clone(&written);
                move || {
                    for batch in rx {
                        written.write_batch(batch);
                    }
                }
            })?;
        Ok(TagKeeper {
            budget: capacity.saturating_mul(KEEP_SHARE_PCT) / 100,
            state: parking_lot::Mutex::new(State {
                known: known.into_iter().collect(),
                ..State::default()
            }),
            to_writer: parking_lot::Mutex::new(Some(tx)),
            writer: parking_lot::Mutex::new(Some(writer)),
            written,
        })
    }

    fn failed(&self) -> bool {
        self.written
            .failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether more is kept (the budget is not spent, nothing failed).
    pub fn wants_more(&self) -> bool {
        !self.failed() && self.state.lock().used < self.budget
    }

    /// Keeps one file's bytes. Cutting happens on the caller's thread.
    pub fn keep(&self, kept: KeptBytes) {
        let size = kept.source.version.size;
        // The chunks, as slices of the bytes read: nothing is copied on
        // the way to the pack.
        let mut chunks: Vec<(u64, Extent, &[u8])> = Vec::new();
        for (at, part) in [(0, &kept.head), (kept.tail_at, &kept.tail)] {
            for (offset, extent) in cut_points(at, part) {
                let from = usize::try_from(offset - at).unwrap_or(usize::MAX);
                let Some(bytes) = part.get(from..from.saturating_add(extent.len as usize)) else {
                    return;
                };
                chunks.push((offset, extent, bytes));
            }
        }
        let mut manifest = Manifest::new(kept.source.version.clone());
        for &(offset, extent, _) in &chunks {
            if manifest.insert(offset, extent).is_err() {
                return;
            }
        }
        manifest.keep(Kept {
            head: kept.head.len() as u64,
            tail: if kept.tail.is_empty() {
                0
            } else {
                size - kept.tail_at
            },
        });
        // The chunks not yet in the cache, each once, in the file's order
        // (a reader of the head reads the pack forward): room is reserved
        // for them in the batch's pack under the lock, and they are
        // written after it, beside the other workers' chunks.
        let mut s = self.state.lock();
        if self.failed() || s.used >= self.budget {
            s.over_budget += u64::from(!self.failed());
            drop(s);
            return;
        }
        let mut new: Vec<(ChunkId, &[u8])> = Vec::new();
        for &(_, extent, bytes) in &chunks {
            if !s.known.contains(&extent.id) && !new.iter().any(|&(id, _)| id == extent.id) {
                new.push((extent.id, bytes));
            }
        }
        let pack = match (&s.batch.pack, new.is_empty()) {
            (_, true) => None,
            (Some(pack), false) => Some(Arc::clone(pack)),
            (None, false) => match self.written.store.start_pack() {
                Ok(pack) => Some(Arc::clone(s.batch.pack.insert(Arc::new(pack)))),
                Err(e) => {
                    drop(s);
                    self.written.fail(Some(&e));
                    return;
                }
            },
        };
        let slot = match &pack {
            Some(pack) => {
                let lens: Vec<(ChunkId, u32)> =
                    new.iter().map(|&(id, b)| (id, b.len() as u32)).collect();
                // None past 4 GiB in one pack: not with BATCH_BYTES
                // batches and KEEP_MAX_BYTES ends; the file is left out.
                let Some(slot) = pack.reserve(&lens) else {
                    return;
                };
                Some(slot)
            }
            None => None,
        };
        for &(id, bytes) in &new {
            s.known.insert(id);
            s.used += bytes.len() as u64;
        }
        s.kept_files += 1;
        s.batch.manifests.push((kept.source, manifest));
        if pack
            .as_ref()
            .is_some_and(|p| p.bytes() >= BATCH_BYTES as u64)
        {
            let full = std::mem::take(&mut s.batch);
            // Under the state lock: batches queue in the order they were
            // filled. Waits while the writer is BATCHES_QUEUED behind;
            // the writer waits for no lock to end a pack, only for its
            // reservations, which are written without one.
            self.hand_over(full);
        }
        drop(s);
        if let Some(slot) = slot {
            slot.write(&new);
        }
    }

    fn hand_over(&self, batch: Batch) {
        let sent = match self.to_writer.lock().as_ref() {
            Some(tx) => tx.send(batch).is_ok(),
            None => false,
        };
        if !sent {
            // Only after `finish`, or if the writer thread is gone.
            self.written.fail(None);
        }
    }

    /// Writes what is left, waits for the writer and says what was kept.
    pub fn finish(&self) -> Result<KeepReport, StoreError> {
        let mut s = self.state.lock();
        let last = std::mem::take(&mut s.batch);
        if last.pack.is_some() || !last.manifests.is_empty() {
            self.hand_over(last);
        }
        drop(s);
        self.stop_writer();
        self.written.db.flush()?;
        let s = self.state.lock();
        let mut outcome = self.written.outcome.lock();
        let report = KeepReport {
            files: s.kept_files.saturating_sub(outcome.files_lost),
            bytes: s.used,
            over_budget: s.over_budget,
            indexed: std::mem::take(&mut outcome.indexed),
        };
        if report.files > 0 {
            tracing::info!(
                files = report.files,
                mb = report.bytes / 1_000_000,
                "kept the tag bytes the scan read in the cache"
            );
        }
        if report.over_budget > 0 {
            tracing::warn!(
                files = report.over_budget,
                share_pct = KEEP_SHARE_PCT,
                "tag bytes of some files were not kept: they would take more than this share of the cache (--cache-size)"
            );
        }
        Ok(report)
    }

    /// Closes the queue and waits until the writer wrote (or dropped)
    /// every batch in it.
    fn stop_writer(&self) {
        drop(self.to_writer.lock().take());
        if let Some(writer) = self.writer.lock().take()
            && writer.join().is_err()
        {
            self.written.fail(None);
        }
    }
}

impl Drop for TagKeeper {
    /// A scan that ended early (an error) still leaves no thread behind.
    fn drop(&mut self) {
        self.stop_writer();
    }
}

impl Written {
    fn fail(&self, error: Option<&StoreError>) {
        let was = self.failed.swap(true, std::sync::atomic::Ordering::Relaxed);
        if let (false, Some(e)) = (was, error) {
            tracing::warn!(
                error = %crate::errors::error_chain(e),
                "cannot keep tag bytes in the cache; the first reads of tags will go to the origins"
            );
        }
    }

    /// Writes one batch, unless an earlier one failed: its manifests may
    /// name chunks of the batch that failed.
    fn write_batch(&self, batch: Batch) {
        let files = batch.manifests.len() as u64;
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            self.outcome.lock().files_lost += files;
            return;
        }
        let indexed = self.write(batch);
        let mut outcome = self.outcome.lock();
        match indexed {
            Ok(indexed) => outcome.indexed.extend(indexed),
            Err((indexed, e)) => {
                outcome.indexed.extend(indexed);
                outcome.files_lost += files;
                drop(outcome);
                self.fail(Some(&e));
            }
        }
    }

    /// The pack, then index, then manifests. A manifest is written only if
    /// every chunk of its batch is durable and indexed. What is indexed is
    /// returned with an error that follows.
    fn write(&self, batch: Batch) -> Result<Indexed, (Indexed, StoreError)> {
        let stored: Indexed = match batch.pack.map(|pack| self.store.put_pack(&pack)) {
            Some(Ok(stored)) => stored.into_iter().map(|(id, len)| (id, len, 0)).collect(),
            Some(Err(e)) => return Err((Vec::new(), e)),
            None => Vec::new(),
        };
        if let Err(e) = self.db.put_chunks(&stored) {
            return Err((Vec::new(), e));
        }
        for (source, m) in &batch.manifests {
            if let Err(e) = self.db.put_manifest(source.origin, &source.path, m) {
                return Err((stored, e));
            }
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touched(ranges: &[(u64, u64)]) -> Touched {
        let mut t = Touched::default();
        for &(s, e) in ranges {
            t.add(s, e - s);
        }
        t
    }

    const MB: u64 = 1 << 20;

    #[test]
    fn a_small_file_is_kept_whole() {
        let r = kept_region(300_000, 8192, &touched(&[(0, 8192), (299_872, 300_000)]));
        assert_eq!(
            r,
            Region {
                head: 300_000,
                tail: 300_000
            }
        );
    }

    #[test]
    fn head_and_tail_of_a_long_track() {
        let size = 40 * MB;
        // A FLAC: block headers, a 1 MiB picture skipped, the last header.
        let t = touched(&[(0, 8192), (1_100_000, 1_100_004)]);
        let r = kept_region(size, 8192, &t);
        // Up to the next 128 KiB, and the most the kernel reads ahead.
        let head = 9 * KERNEL_REQUEST_BYTES + KERNEL_READ_AHEAD_MAX;
        assert_eq!(
            r,
            Region {
                head,
                tail: size - 8192
            }
        );
        // An MP4 with its moov atom at the end: the tail widens to it.
        let t = touched(&[
            (0, 64),
            (size - 300_000, size - 299_000),
            (size - 2000, size),
        ]);
        let r = kept_region(size, 8192, &t);
        assert_eq!(
            r,
            Region {
                head: 2 * KERNEL_REQUEST_BYTES,
                tail: (size - 300_000) / 4096 * 4096
            }
        );
    }

    #[test]
    fn an_id3v1_read_does_not_pull_the_head_to_the_end() {
        // 900 kB: near enough for a bridge, but the read is in the tail zone.
        let size = 900_000;
        let t = touched(&[(0, 8192), (40_000, 40_004), (size - 128, size)]);
        assert_eq!(
            kept_region(size, 8192, &t),
            Region {
                head: 2 * KERNEL_REQUEST_BYTES,
                tail: (size - 8192) / 4096 * 4096
            }
        );
    }

    #[test]
    fn garbage_lengths_do_not_keep_more_than_the_cap() {
        let size = 4000 * MB;
        let mut t = Touched::default();
        // A parser walking a garbage chain of headers 1 MiB apart.
        for i in 0..100 {
            t.add(i * MB, 16);
        }
        let r = kept_region(size, 8192, &t);
        assert_eq!(
            r,
            Region {
                head: 2 * KERNEL_REQUEST_BYTES,
                tail: size - 8192
            }
        );
    }
}
