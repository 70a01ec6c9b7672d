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
//! [`TagKeeper`] stores them as the executor stores a fetch's chunks, in
//! the same order of steps: chunk files durable first (one batch, two
//! `syncfs`), then their index entries, then the manifests that name them.
//! Batches are written one at a time, in the order they were filled, so a
//! manifest never names a chunk of a later batch. It runs only while no
//! engine does (the first scan before a mount): nothing else deletes
//! chunks then.

use crate::store::{ChunkStore, Db, StoreError};
use musicfs_core::engine::cut_run;
use musicfs_core::{ChunkId, Kept, Manifest, SourceFile};
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
pub struct TagKeeper {
    store: Arc<ChunkStore>,
    db: Arc<Db>,
    budget: u64,
    state: parking_lot::Mutex<State>,
    /// Held while a batch is written: batches go out one at a time, in
    /// the order they were filled.
    writing: parking_lot::Mutex<()>,
}

impl std::fmt::Debug for TagKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TagKeeper")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    batch: Vec<(ChunkId, Arc<[u8]>)>,
    batch_bytes: usize,
    manifests: Vec<(SourceFile, Manifest)>,
    /// Chunks already in the cache or in a batch.
    known: HashSet<ChunkId>,
    /// Bytes of new chunks so far.
    used: u64,
    kept_files: u64,
    over_budget: u64,
    /// Index entries written, for the engine that starts next.
    indexed: Vec<(ChunkId, u32, u64)>,
    /// Set after a write failed: nothing more is kept.
    failed: bool,
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
    pub fn new(
        store: Arc<ChunkStore>,
        db: Arc<Db>,
        capacity: u64,
        known: impl IntoIterator<Item = ChunkId>,
    ) -> TagKeeper {
        TagKeeper {
            store,
            db,
            budget: capacity.saturating_mul(KEEP_SHARE_PCT) / 100,
            state: parking_lot::Mutex::new(State {
                known: known.into_iter().collect(),
                ..State::default()
            }),
            writing: parking_lot::Mutex::new(()),
        }
    }

    /// Whether more is kept (the budget is not spent, nothing failed).
    pub fn wants_more(&self) -> bool {
        let s = self.state.lock();
        !s.failed && s.used < self.budget
    }

    /// Keeps one file's bytes. Cutting happens on the caller's thread.
    pub fn keep(&self, kept: KeptBytes) {
        let size = kept.source.version.size;
        let mut chunks = cut_run(0, &kept.head);
        if !kept.tail.is_empty() {
            chunks.extend(cut_run(kept.tail_at, &kept.tail));
        }
        let mut manifest = Manifest::new(kept.source.version.clone());
        for c in &chunks {
            if manifest.insert(c.offset, c.extent()).is_err() {
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
        let full = {
            let mut s = self.state.lock();
            if s.failed || s.used >= self.budget {
                s.over_budget += u64::from(!s.failed);
                return;
            }
            for c in chunks {
                if s.known.insert(c.id) {
                    s.used += c.data.len() as u64;
                    s.batch_bytes += c.data.len();
                    s.batch.push((c.id, c.data));
                }
            }
            s.kept_files += 1;
            s.manifests.push((kept.source, manifest));
            s.batch_bytes >= BATCH_BYTES
        };
        if full {
            self.write_batch();
        }
    }

    /// Writes what is left and says what was kept.
    pub fn finish(&self) -> Result<KeepReport, StoreError> {
        self.write_batch();
        self.db.flush()?;
        let mut s = self.state.lock();
        let report = KeepReport {
            files: s.kept_files,
            bytes: s.used,
            over_budget: s.over_budget,
            indexed: std::mem::take(&mut s.indexed),
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

    fn write_batch(&self) {
        let _one_at_a_time = self.writing.lock();
        let (batch, manifests) = {
            let mut s = self.state.lock();
            s.batch_bytes = 0;
            (
                std::mem::take(&mut s.batch),
                std::mem::take(&mut s.manifests),
            )
        };
        if batch.is_empty() && manifests.is_empty() {
            return;
        }
        match self.write(&batch, &manifests) {
            Ok(indexed) => self.state.lock().indexed.extend(indexed),
            Err(e) => {
                let mut s = self.state.lock();
                if !s.failed {
                    tracing::warn!(
                        error = %crate::errors::error_chain(&e),
                        "cannot keep tag bytes in the cache; the first reads of tags will go to the origins"
                    );
                }
                s.failed = true;
                s.kept_files = s.kept_files.saturating_sub(manifests.len() as u64);
            }
        }
    }

    /// Files, then index, then manifests. A manifest is written only if
    /// every chunk of its batch is durable and indexed.
    fn write(
        &self,
        batch: &[(ChunkId, Arc<[u8]>)],
        manifests: &[(SourceFile, Manifest)],
    ) -> Result<Vec<(ChunkId, u32, u64)>, StoreError> {
        let refs: Vec<(ChunkId, &[u8])> = batch.iter().map(|(id, d)| (*id, &d[..])).collect();
        let mut stored = Vec::with_capacity(batch.len());
        let mut first_error = None;
        for ((id, data), result) in batch.iter().zip(self.store.put_batch(&refs)) {
            match result {
                Ok(()) => stored.push((*id, data.len() as u32, 0u64)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // What is durable is indexed even if the rest failed: a chunk file
        // nobody indexes is only space.
        self.db.put_chunks(&stored)?;
        if let Some(e) = first_error {
            return Err(e);
        }
        for (source, m) in manifests {
            self.db.put_manifest(source.origin, &source.path, m)?;
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
