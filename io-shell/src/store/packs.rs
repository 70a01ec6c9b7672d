//! Packs: many chunks in one file.
//!
//! Two kinds of chunks are read back many at a time, and as a file per
//! chunk each would be a lookup, an open, a stat and a disk read of its
//! own:
//! - the tag bytes a first scan keeps: tens of thousands of small chunks
//!   (two or three per track's head, one for its tail) that a media
//!   server's tag scan reads back all at once, in the tree's order. With
//!   the page cache cold, as chunk files they cost some three times the
//!   disk work of reading the tracks natively. The keeper writes each
//!   batch as one pack ([`PackReads::Random`]).
//! - the chunks of a fetch, stored behind its reader in batches of up to
//!   8 MiB ([`super::ChunkStore::put_batch`]): a player reading the track
//!   again later reads them in order. In a pack they lie end to end, and
//!   the kernel reads them ahead in large requests, as it does a native
//!   file ([`PackReads::Sequential`]). Measured on a 179 MB track read
//!   back with the page cache cold: as chunk files, 4,800 disk reads of
//!   39 KiB (the native file: 150 of 1.2 MB); in packs, 1,200-1,500 of
//!   130-150 KiB, most of them the database's and the few chunk files'
//!   of small batches.
//!
//! ```text
//! <cache_dir>/packs/<8-hex number>.pack
//!   the chunks' bytes, one after another (a track's in its order)
//!   a table, per chunk: its id (16 bytes, big-endian), offset, length (u32 LE)
//!   a trailer: the table's entries (u32 LE), its xxh3-64 (u64 LE), and
//!   "MFSPACK1" (read at random) or "MFSPACKS" (read in order)
//! ```
//!
//! A pack is written in the temp folder, made durable, renamed into place
//! and the rename made durable before the caller indexes its chunks: the
//! order, and so the guarantees, of a chunk file (never partial in place;
//! a crash loses at most what was not indexed). Reads verify every chunk
//! against its id, as for chunk files.
//!
//! Removing a chunk punches a hole over its bytes (the space is free at
//! once); the pack file goes with its last chunk. The table says what a
//! pack held, the database's index what is still cached: at open,
//! [`Packs::retain_indexed`] drops what the index does not name (chunks evicted
//! in an earlier run, a pack a crash left unindexed).
//!
//! Reading every table at open costs a disk read per pack: 0.8-1.7 s for
//! 20,000 packs with the page cache cold on this VM's disk (about what
//! 40 GB of cached tracks make), minutes on a spinning one; from the saved
//! tables, 0.04-0.09 s (`bench/run`). So a clean exit saves the tables of
//! the packs in place, what is still live of each, in one file
//! ([`Packs::save_tables`]), and so does a running daemon once 1,024 packs
//! are new since the last save ([`Packs::save_tables_after`]), which
//! bounds what a crash costs the next open:
//!
//! ```text
//! <cache_dir>/packs.tables
//!   "MFSPTAB1"
//!   per pack: its number (u32 LE), inode number (u64 LE), 0 (read at
//!   random) or 1 (in order), its chunks (u32 LE), and per chunk its id
//!   (16 bytes, big-endian), offset and length (u32 LE)
//!   the xxh3-64 of all of the above (u64 LE)
//! ```
//!
//! The next open takes a pack's table from there when a pack of that
//! number and inode is in place (packs never change once in place, but
//! for holes punched over chunks that the index no longer names), and
//! reads it from the pack otherwise: a pack written after the save (the
//! run after it crashed), or one an older version replaced. A damaged
//! file is ignored: every table is then read, as before. Whatever the
//! tables say, every chunk read is verified against its id.

mod saved;

use super::{ChunkReadError, StoreError};
use musicfs_core::ChunkId;
use musicfs_core::chunk::CHUNK_MAX_BYTES;
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

const MAGIC_RANDOM: &[u8; 8] = b"MFSPACK1";
const MAGIC_SEQUENTIAL: &[u8; 8] = b"MFSPACKS";

/// How a pack's chunks are read back, kept in its trailer (and in the
/// saved tables). Both kinds are read with the kernel's read-ahead (see
/// `Packs::open_pack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackReads {
    /// Out of the order written: a first scan's tag bytes, read back by
    /// a media server's tag scan in the tree's order, a read-ahead window
    /// of files at a time.
    Random,
    /// In the order written (a track's chunks, replayed).
    Sequential,
}

impl PackReads {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            PackReads::Random => MAGIC_RANDOM,
            PackReads::Sequential => MAGIC_SEQUENTIAL,
        }
    }
}

const ENTRY_BYTES: usize = 24;
const TRAILER_BYTES: usize = 20;

/// A pack's table: each chunk's id, offset and length.
type Table = Vec<(ChunkId, u32, u32)>;

/// Pack files kept open for reads: the 20,000-track bench library's
/// heads are some 120 packs, which a scan reads in the tree's order, all
/// over them (with 64 open, a scan opened 7,500). Bounded, as the daemon's
/// descriptors are shared with FUSE, sled, tantivy and the origins (and a
/// cache of terabytes has tens of thousands of packs); others are opened
/// when read.
const OPEN_MAX: usize = 256;

/// A pack being written: a temp file that several threads write chunks
/// into, side by side, each at the place it reserved
/// ([`PackWriter::reserve`]); [`super::ChunkStore::put_pack`] then ends
/// it with its table and puts it in place. Dropped before that, its temp
/// file is removed.
///
/// The chunks go from the writer's own buffers straight to the file: a
/// first version gathered each 8 MiB batch in memory and wrote it from
/// one thread, which added up to 24 MiB to a first mount's peak and, on
/// this VM, spent a third to half of the scan's CPU in that one copy into
/// the page cache (`copy_folio_from_iter_atomic`).
#[derive(Debug)]
pub struct PackWriter {
    file: File,
    tmp: PathBuf,
    n: u32,
    reads: PackReads,
    state: parking_lot::Mutex<Writing>,
    done: parking_lot::Condvar,
    committed: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Writing {
    table: Table,
    len: u64,
    /// Reservations not yet written.
    writing: usize,
    error: Option<StoreError>,
}

/// Room reserved in a pack for some chunks; [`PackSlot::write`] fills it.
/// Dropped unwritten, the pack fails (its table would name bytes that are
/// not there).
#[derive(Debug)]
pub struct PackSlot<'a> {
    pack: &'a PackWriter,
    at: u64,
    len: u64,
    written: bool,
}

impl PackWriter {
    /// Bytes reserved so far.
    pub fn bytes(&self) -> u64 {
        self.state.lock().len
    }

    /// Reserves room for `chunks` (ids and lengths), one after another:
    /// the table names them in this order. `None` (nothing reserved) if
    /// the pack would pass 4 GiB, which its offsets cannot address.
    pub fn reserve(&self, chunks: &[(ChunkId, u32)]) -> Option<PackSlot<'_>> {
        let mut st = self.state.lock();
        let at = st.len;
        let total: u64 = chunks.iter().map(|&(_, len)| u64::from(len)).sum();
        if at + total > u64::from(u32::MAX) {
            return None;
        }
        let mut offset = at;
        for &(id, len) in chunks {
            st.table.push((id, offset as u32, len));
            offset += u64::from(len);
        }
        st.len = offset;
        st.writing += 1;
        Some(PackSlot {
            pack: self,
            at,
            len: total,
            written: false,
        })
    }

    /// Waits until every reservation is written; the table, or the first
    /// error.
    fn finish(&self) -> Result<(Table, u64), StoreError> {
        let mut st = self.state.lock();
        while st.writing > 0 {
            self.done.wait(&mut st);
        }
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        Ok((std::mem::take(&mut st.table), st.len))
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if !self.committed.load(Ordering::Relaxed) {
            // Best effort: a leftover is also removed at the next open.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl PackSlot<'_> {
    /// Writes the chunks reserved, in the order reserved: each must hash
    /// to its id and have the length reserved (a caller bug otherwise,
    /// which fails the pack rather than store bytes under a wrong id).
    pub fn write(mut self, chunks: &[(ChunkId, &[u8])]) {
        let result = self.write_all(chunks);
        self.written = true;
        self.end(result.err());
    }

    fn write_all(&self, chunks: &[(ChunkId, &[u8])]) -> Result<(), StoreError> {
        let mut at = self.at;
        for &(id, bytes) in chunks {
            if bytes.len() > CHUNK_MAX_BYTES {
                return Err(StoreError::TooLarge {
                    id,
                    len: bytes.len(),
                });
            }
            let actual = ChunkId::of(bytes);
            debug_assert_eq!(actual, id, "PackSlot: bytes do not match their id");
            if actual != id {
                return Err(StoreError::WrongId { id, actual });
            }
            self.pack
                .file
                .write_all_at(bytes, at)
                .map_err(|e| StoreError::io("write temp file", &self.pack.tmp, e))?;
            at += bytes.len() as u64;
        }
        if at - self.at != self.len {
            debug_assert!(false, "PackSlot: the chunks written are not those reserved");
            return Err(StoreError::io(
                "write temp file",
                &self.pack.tmp,
                io::Error::other("the chunks written are not those reserved"),
            ));
        }
        Ok(())
    }

    fn end(&mut self, error: Option<StoreError>) {
        let mut st = self.pack.state.lock();
        if let Some(e) = error {
            st.error.get_or_insert(e);
        }
        st.writing -= 1;
        if st.writing == 0 {
            self.pack.done.notify_all();
        }
    }
}

impl Drop for PackSlot<'_> {
    fn drop(&mut self) {
        if !self.written {
            self.end(Some(StoreError::io(
                "write temp file",
                &self.pack.tmp,
                io::Error::other("a reserved chunk was never written"),
            )));
        }
    }
}

/// The table and trailer that end a pack file.
fn footer(table: &[(ChunkId, u32, u32)], reads: PackReads) -> Vec<u8> {
    let mut out = Vec::with_capacity(table.len() * ENTRY_BYTES + TRAILER_BYTES);
    for &(id, offset, len) in table {
        out.extend_from_slice(&entry_bytes(id, offset, len));
    }
    let hash = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&(table.len() as u32).to_le_bytes());
    out.extend_from_slice(&hash.to_le_bytes());
    out.extend_from_slice(reads.magic());
    out
}

/// Where a packed chunk is.
#[derive(Clone, Copy, Debug)]
struct Packed {
    pack: u32,
    offset: u32,
    len: u32,
    /// Named by the index ([`Packs::retain_indexed`]'s mark; it fits in
    /// the map entry's padding).
    indexed: bool,
}

#[derive(Debug, Default)]
struct State {
    chunks: HashMap<ChunkId, Packed>,
    /// Chunks still in each pack.
    live: HashMap<u32, u32>,
    /// The packs written in order ([`PackReads::Sequential`]), as the saved
    /// tables record them.
    sequential: HashSet<u32>,
    /// Open pack files, at most [`OPEN_MAX`].
    open: HashMap<u32, Arc<File>>,
    /// Each pack's inode number: what tells, at the next open, that the
    /// pack of that number is the one whose table was saved.
    inodes: HashMap<u32, u64>,
    /// Whether the packs changed since their tables were loaded or saved.
    changed: bool,
    /// Packs put in place since the tables were loaded or saved: what a
    /// crash would have the next open read.
    unsaved: usize,
}

impl State {
    /// Makes the chunks of pack `n` readable, but for those already in
    /// another pack. Returns how many it added.
    fn add(
        &mut self,
        n: u32,
        table: impl IntoIterator<Item = (ChunkId, u32, u32)>,
        reads: PackReads,
    ) -> u32 {
        let mut live = 0u32;
        for (id, offset, len) in table {
            if let std::collections::hash_map::Entry::Vacant(v) = self.chunks.entry(id) {
                v.insert(Packed {
                    pack: n,
                    offset,
                    len,
                    indexed: false,
                });
                live += 1;
            }
        }
        if live > 0 {
            // Added to: a table whose saved copy broke off half way is
            // read from its pack after.
            *self.live.entry(n).or_default() += live;
            if reads == PackReads::Sequential {
                self.sequential.insert(n);
            }
        }
        live
    }
}

/// A table entry (see the module docs).
fn entry_bytes(id: ChunkId, offset: u32, len: u32) -> [u8; ENTRY_BYTES] {
    let mut out = [0u8; ENTRY_BYTES];
    out[..16].copy_from_slice(&id.to_be_bytes());
    out[16..20].copy_from_slice(&offset.to_le_bytes());
    out[20..].copy_from_slice(&len.to_le_bytes());
    out
}

/// A table entry: the chunk's id, offset and length.
fn entry(bytes: &[u8]) -> Option<(ChunkId, u32, u32)> {
    let (id, place) = bytes.split_first_chunk::<16>()?;
    let (offset, len) = place.split_first_chunk::<4>()?;
    let len: &[u8; 4] = len.try_into().ok()?;
    Some((
        ChunkId::from_be_slice(id)?,
        u32::from_le_bytes(*offset),
        u32::from_le_bytes(*len),
    ))
}

/// How the chunk store's open learnt the packs' tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacksLoaded {
    /// Packs in place.
    pub packs: usize,
    /// Tables taken from the file last saved.
    pub from_saved: usize,
    /// Tables read from their packs.
    pub read: usize,
}

/// The packs of a chunk store.
#[derive(Debug)]
pub(super) struct Packs {
    dir: PathBuf,
    tmp: PathBuf,
    /// Where the tables are saved (see the module docs).
    saved: PathBuf,
    next: AtomicU32,
    state: RwLock<State>,
    loaded: PacksLoaded,
    saving: parking_lot::Mutex<()>,
}

impl Packs {
    /// Opens `<cache_dir>/packs` (creating it) and learns every pack's
    /// table: from the tables last saved where they still hold,
    /// else from the pack. Temp files are in `tmp`, which the caller
    /// empties. A pack whose table is damaged is deleted (its chunks read
    /// as missing and are fetched again); one that cannot be read is
    /// skipped.
    pub(super) fn open(cache_dir: &Path, tmp: &Path) -> Result<Packs, StoreError> {
        let dir = cache_dir.join("packs");
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
        let mut loaded = PacksLoaded::default();
        let mut last = None::<u32>;
        // Each pack in place, and its inode number.
        let mut listed = HashMap::new();
        let entries = fs::read_dir(&dir).map_err(|e| StoreError::io("list directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list directory", &dir, e))?;
            let Some(n) = pack_number(&entry.file_name()) else {
                tracing::warn!(path = %entry.path().display(), "skipped a file in the packs folder that is not a pack");
                continue;
            };
            last = last.max(Some(n));
            listed.insert(n, entry.ino());
        }
        loaded.packs = listed.len();
        let mut state = State::default();
        let saved_path = cache_dir.join(saved::FILE);
        let from_saved = saved::load(&saved_path, &listed, &mut state);
        if let Some(why) = &from_saved.unusable {
            tracing::warn!(path = %saved_path.display(), why = %why, "cannot use the saved pack tables; reading each pack's");
        }
        loaded.from_saved = from_saved.added.len();
        // The others' tables, in the order the packs were written (most
        // likely their order on disk).
        let mut unsaved: Vec<(u32, u64)> = listed
            .iter()
            .filter(|(n, _)| !from_saved.added.contains(n))
            .map(|(&n, &inode)| (n, inode))
            .collect();
        unsaved.sort_unstable();
        for (n, inode) in unsaved {
            loaded.read += 1;
            let path = dir.join(pack_name(n));
            match read_table(&path) {
                Ok((table, reads)) => {
                    state.add(n, table, reads);
                    state.inodes.insert(n, inode);
                }
                Err(TableError::Damaged(why)) => {
                    tracing::warn!(path = %path.display(), why, "deleting a damaged pack of cached chunks; they are fetched again when read");
                    let _ = fs::remove_file(&path);
                }
                Err(TableError::Io(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read a pack of cached chunks; they are fetched again when read");
                }
            }
        }
        // Tables read, or saved ones of packs gone since: the file no
        // longer says what is in place.
        state.changed = loaded.read > 0 || from_saved.stale;
        state.unsaved = loaded.read;
        tracing::debug!(
            packs = loaded.packs,
            from_saved = loaded.from_saved,
            read = loaded.read,
            "pack tables loaded"
        );
        Ok(Packs {
            dir,
            tmp: tmp.to_path_buf(),
            saved: saved_path,
            next: AtomicU32::new(last.max(from_saved.last).map_or(0, |n| n.saturating_add(1))),
            state: RwLock::new(state),
            loaded,
            saving: parking_lot::Mutex::new(()),
        })
    }

    /// How the open learnt the tables.
    pub(super) fn loaded(&self) -> PacksLoaded {
        self.loaded
    }

    /// Saves the tables of the packs in place, what is live of each, for
    /// the next open (see the module docs): written beside, flushed and
    /// renamed over the last. Returns false when nothing changed since
    /// they were loaded or saved. A pack put in place after the save has
    /// its table read at the next open; a chunk removed after it is still
    /// in its saved table, and the open's check against the index
    /// ([`Packs::retain_indexed`]) drops it.
    pub(super) fn save_tables(&self) -> Result<bool, StoreError> {
        self.save_tables_if(|_| true)
    }

    /// Saves the tables as [`Packs::save_tables`] does once `packs` have
    /// been put in place since they were loaded or saved: a run of months
    /// bounds what a crash would have the next open read.
    pub(super) fn save_tables_after(&self, packs: usize) -> Result<bool, StoreError> {
        self.save_tables_if(|st| st.unsaved >= packs)
    }

    fn save_tables_if(&self, due: impl Fn(&State) -> bool) -> Result<bool, StoreError> {
        // One save at a time (the daemon's checkpoint and the exit's share
        // the temporary file).
        let _one = self.saving.lock();
        let mut st = self.state.write();
        if !st.changed || !due(&st) {
            return Ok(false);
        }
        // A change while the file is written marks it again.
        st.changed = false;
        st.unsaved = 0;
        // Packs are read meanwhile, and put in place once it is written.
        let st = parking_lot::RwLockWriteGuard::downgrade(st);
        let tmp = self
            .tmp
            .join(format!("{}.{}", saved::FILE, std::process::id()));
        let result = super::replace_file(&self.saved, &tmp, move |file| {
            saved::write(&st, file)?;
            drop(st);
            Ok(())
        })
        .map_err(|e| StoreError::io("save pack tables", &self.saved, e));
        if result.is_err() {
            // Tried again at the exit, or once as many packs more are put
            // in place (not at every call: the disk may be full).
            self.state.write().changed = true;
        }
        result.map(|()| true)
    }

    fn path_of(&self, pack: u32) -> PathBuf {
        self.dir.join(pack_name(pack))
    }

    /// Starts a pack: its temp file, for [`PackWriter::reserve`].
    pub(super) fn start(&self, reads: PackReads) -> Result<PackWriter, StoreError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .tmp
            .join(format!("{n:08x}.pack.{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| StoreError::io("create temp file", &tmp, e))?;
        Ok(PackWriter {
            file,
            tmp,
            n,
            reads,
            state: Default::default(),
            done: Default::default(),
            committed: Default::default(),
        })
    }

    /// Ends `pack` once its reservations are written (see the module
    /// docs) and makes its chunks readable. Returns each chunk's id and
    /// length, for the caller to index.
    /// A pack that fails leaves no temp file.
    pub(super) fn put(&self, pack: &PackWriter) -> Result<Vec<(ChunkId, u32)>, StoreError> {
        let put = self.put_in_place(pack);
        if put.is_err() && !pack.committed.load(Ordering::Relaxed) {
            let _ = fs::remove_file(&pack.tmp);
        }
        put
    }

    fn put_in_place(&self, pack: &PackWriter) -> Result<Vec<(ChunkId, u32)>, StoreError> {
        let (table, len) = pack.finish()?;
        fail::fail_point!("cas-pack-before-write", |arg| Err(StoreError::injected(
            "cas-pack-before-write",
            arg
        )));
        let stored: Vec<(ChunkId, u32)> = table.iter().map(|&(id, _, len)| (id, len)).collect();
        if table.is_empty() {
            return Ok(stored);
        }
        let (tmp, n) = (&pack.tmp, pack.n);
        let path = self.path_of(n);
        pack.file
            .write_all_at(&footer(&table, pack.reads), len)
            .map_err(|e| StoreError::io("write temp file", tmp, e))?;
        pack.file
            .sync_data()
            .map_err(|e| StoreError::io("flush pack", tmp, e))?;
        fs::rename(tmp, &path).map_err(|e| StoreError::io("rename pack into place", &path, e))?;
        pack.committed.store(true, Ordering::Relaxed);
        // The rename is durable before the caller indexes. A pack in
        // place but never indexed is dropped at the next open.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io("flush packs folder", &self.dir, e))?;
        fail::fail_point!("cas-put-after-write-before-index", |arg| Err(
            StoreError::injected("cas-put-after-write-before-index", arg)
        ));
        // Renamed, the temp file's inode is the pack's.
        let inode = pack.file.metadata().map(|m| m.ino());
        let mut st = self.state.write();
        if st.add(n, table.iter().copied(), pack.reads) == 0 {
            drop(st);
            let _ = fs::remove_file(&path);
        } else {
            st.changed = true;
            st.unsaved += 1;
            if let Ok(inode) = inode {
                st.inodes.insert(n, inode);
            }
        }
        Ok(stored)
    }

    /// The pack file, offset and length of `id`, if it is packed.
    pub(super) fn location(&self, id: ChunkId) -> Option<(PathBuf, u64, u32)> {
        let p = *self.state.read().chunks.get(&id)?;
        Some((self.path_of(p.pack), u64::from(p.offset), p.len))
    }

    /// Reads `id`'s bytes, unverified; `None` if it is not packed.
    pub(super) fn read(&self, id: ChunkId) -> Option<Result<Arc<[u8]>, ChunkReadError>> {
        let (p, file) = {
            let st = self.state.read();
            let p = *st.chunks.get(&id)?;
            (p, st.open.get(&p.pack).cloned())
        };
        let file = match file {
            Some(file) => file,
            None => match self.open_pack(p.pack) {
                Ok(file) => file,
                // Its last chunk was removed meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Some(Err(ChunkReadError::Missing));
                }
                Err(e) => {
                    let path = self.path_of(p.pack);
                    return Some(Err(ChunkReadError::Io(StoreError::io(
                        "open pack",
                        path,
                        e,
                    ))));
                }
            },
        };
        Some(
            match crate::sys::read_shared_at(&file, u64::from(p.offset), p.len as usize) {
                Ok(data) => Ok(data),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Err(ChunkReadError::Corrupt {
                        len: u64::from(p.len),
                        reason: "pack shorter than its table",
                    })
                }
                Err(e) => Err(ChunkReadError::Io(StoreError::io(
                    "read pack",
                    self.path_of(p.pack),
                    e,
                ))),
            },
        )
    }

    fn open_pack(&self, pack: u32) -> io::Result<Arc<File>> {
        // Every pack keeps the kernel's read-ahead, and the one open file
        // keeps its state across the threads that read it. A stream's
        // chunks lie in their order. A tag scan's read-ahead window asks
        // for dozens of files' chunks at once, and a folder's lie side by
        // side in the first scan's packs: with the read-ahead, a cold scan
        // with every chunk cached made a third fewer disk reads for the
        // same bytes (12,705 of 75 KiB against 19,266 of 49 KiB) and ran
        // 7-19% faster. Before that window (a chunk read at a time, in
        // the tree's order) the read-ahead read three times the bytes.
        let file = Arc::new(File::open(self.path_of(pack))?);
        let mut st = self.state.write();
        if st.open.len() >= OPEN_MAX
            && let Some(&some) = st.open.keys().next()
        {
            st.open.remove(&some);
        }
        st.open.insert(pack, Arc::clone(&file));
        Ok(file)
    }

    /// Removes `id` from its pack: false if it was not packed.
    pub(super) fn remove(&self, id: ChunkId) -> Result<bool, StoreError> {
        let mut st = self.state.write();
        let Some(p) = st.chunks.remove(&id) else {
            return Ok(false);
        };
        let emptied = forget(&mut st, p.pack);
        drop(st);
        if emptied {
            self.delete(p.pack)?;
        } else {
            self.punch(p.pack, &[p]);
        }
        Ok(true)
    }

    /// Drops every packed chunk `index` does not name (see the module
    /// docs). Returns how many.
    pub(super) fn retain_indexed(&self, index: &[(ChunkId, u32, u64)]) -> usize {
        let mut st = self.state.write();
        if st.chunks.is_empty() {
            return 0;
        }
        // Marked in place: a set of the index's ids would cost a few MB on
        // a large cache, at the mount's peak.
        for (id, _, _) in index {
            if let Some(p) = st.chunks.get_mut(id) {
                p.indexed = true;
            }
        }
        let mut dead: Vec<(ChunkId, Packed)> = Vec::new();
        for (&id, p) in st.chunks.iter_mut() {
            if !std::mem::take(&mut p.indexed) {
                dead.push((id, *p));
            }
        }
        let mut by_pack: HashMap<u32, (bool, Vec<Packed>)> = HashMap::new();
        for &(id, p) in &dead {
            st.chunks.remove(&id);
            let emptied = forget(&mut st, p.pack);
            let slot = by_pack.entry(p.pack).or_default();
            slot.0 |= emptied;
            slot.1.push(p);
        }
        drop(st);
        for (n, (emptied, gone)) in by_pack {
            if emptied {
                if let Err(e) = self.delete(n) {
                    tracing::warn!(error = %e, "cannot delete a pack nothing uses");
                }
            } else {
                self.punch(n, &gone);
            }
        }
        if !dead.is_empty() {
            tracing::info!(
                chunks = dead.len(),
                "dropped packed chunks the index no longer names"
            );
        }
        dead.len()
    }

    /// Frees the blocks of `gone` in pack `n`. Only space is at stake: a
    /// file system that cannot punch holes keeps it until the pack goes.
    ///
    /// Opened for writing here: the packs kept open are open for reading,
    /// which `fallocate` refuses (`EBADF`).
    fn punch(&self, n: u32, gone: &[Packed]) {
        let Ok(file) = File::options().write(true).open(self.path_of(n)) else {
            return;
        };
        for p in gone {
            if let Err(e) = crate::sys::punch_hole(&file, u64::from(p.offset), u64::from(p.len)) {
                tracing::debug!(error = %e, pack = n, "cannot free an evicted chunk's space in its pack");
                return;
            }
        }
    }

    fn delete(&self, n: u32) -> Result<(), StoreError> {
        let path = self.path_of(n);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove pack", &path, e)),
        }
    }

    /// Every packed chunk with its length.
    pub(super) fn scan(&self) -> Vec<(ChunkId, u64)> {
        self.state
            .read()
            .chunks
            .iter()
            .map(|(&id, p)| (id, u64::from(p.len)))
            .collect()
    }
}

/// One chunk less in pack `n`: true if it was the last (the pack is then
/// forgotten, and the caller deletes its file).
fn forget(st: &mut State, n: u32) -> bool {
    st.changed = true;
    let emptied = match st.live.get_mut(&n) {
        Some(live) => {
            *live = live.saturating_sub(1);
            *live == 0
        }
        None => true,
    };
    if emptied {
        st.live.remove(&n);
        st.open.remove(&n);
        st.sequential.remove(&n);
        st.inodes.remove(&n);
    }
    emptied
}

/// Pack 42 is `0000002a.pack`.
fn pack_name(n: u32) -> String {
    format!("{n:08x}.pack")
}

/// `0000002a.pack` is pack 42.
fn pack_number(name: &std::ffi::OsStr) -> Option<u32> {
    let hex = name.to_str()?.strip_suffix(".pack")?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

enum TableError {
    Damaged(&'static str),
    Io(io::Error),
}

/// Reads and checks a pack's table.
fn read_table(path: &Path) -> Result<(Table, PackReads), TableError> {
    let file = File::open(path).map_err(TableError::Io)?;
    let size = file.metadata().map_err(TableError::Io)?.len();
    if size < TRAILER_BYTES as u64 {
        return Err(TableError::Damaged("shorter than its trailer"));
    }
    let mut trailer = [0u8; TRAILER_BYTES];
    file.read_exact_at(&mut trailer, size - TRAILER_BYTES as u64)
        .map_err(TableError::Io)?;
    let reads = match &trailer[12..] {
        m if m == MAGIC_RANDOM => PackReads::Random,
        m if m == MAGIC_SEQUENTIAL => PackReads::Sequential,
        _ => return Err(TableError::Damaged("no pack trailer")),
    };
    let count = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as u64;
    let mut hash = [0u8; 8];
    hash.copy_from_slice(&trailer[4..12]);
    let table_bytes = count * ENTRY_BYTES as u64;
    let Some(table_at) = (size - TRAILER_BYTES as u64).checked_sub(table_bytes) else {
        return Err(TableError::Damaged("table longer than the pack"));
    };
    let mut table = vec![0u8; table_bytes as usize];
    file.read_exact_at(&mut table, table_at)
        .map_err(TableError::Io)?;
    if xxhash_rust::xxh3::xxh3_64(&table) != u64::from_le_bytes(hash) {
        return Err(TableError::Damaged("table checksum mismatch"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for e in table.chunks_exact(ENTRY_BYTES) {
        let (id, offset, len) = entry(e).ok_or(TableError::Damaged("bad id"))?;
        if len == 0
            || len as usize > CHUNK_MAX_BYTES
            || u64::from(offset) + u64::from(len) > table_at
        {
            return Err(TableError::Damaged("chunk outside the pack"));
        }
        out.push((id, offset, len));
    }
    Ok((out, reads))
}
