//! Packs: many chunks in one file, for the tag bytes a first scan keeps.
//!
//! Those are tens of thousands of small chunks (two or three per track's
//! head, one for its tail) that a media server's tag scan reads back all
//! at once, in the tree's order. As a file per chunk, each is a lookup,
//! an open, a stat and a read of its own: with the page cache cold, some
//! three times the disk work of reading the track natively. So the keeper
//! writes each batch as one pack:
//!
//! ```text
//! <cache_dir>/packs/<8-hex number>.pack
//!   the chunks' bytes, one after another (a track's in its order)
//!   a table, per chunk: its id (16 bytes, big-endian), offset, length (u32 LE)
//!   a trailer: the table's entries (u32 LE), its xxh3-64 (u64 LE), "MFSPACK1"
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

use super::{ChunkReadError, StoreError};
use musicfs_core::ChunkId;
use musicfs_core::chunk::CHUNK_MAX_BYTES;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

const MAGIC: &[u8; 8] = b"MFSPACK1";
const ENTRY_BYTES: usize = 24;
const TRAILER_BYTES: usize = 20;

/// Pack files kept open for reads: the 20,000-track bench library's
/// heads are some 120 packs, which a scan reads in the tree's order, all
/// over them (with 64 open, a scan opened 7,500). Bounded, as the daemon's
/// descriptors (1,024 by default) are shared with FUSE, sled and the
/// origins; others are opened when read.
const OPEN_MAX: usize = 256;

/// Chunks gathered to be written as one pack ([`super::ChunkStore::put_pack`]).
#[derive(Debug, Default)]
pub struct PackBuf {
    data: Vec<u8>,
    table: Vec<(ChunkId, u32, u32)>,
}

impl PackBuf {
    /// An empty pack with room for `bytes` of chunks.
    pub fn with_capacity(bytes: usize) -> PackBuf {
        PackBuf {
            data: Vec::with_capacity(bytes),
            table: Vec::new(),
        }
    }

    /// Adds the chunk `id`. False (and nothing added) if the pack would
    /// pass 4 GiB, which its offsets cannot address.
    pub fn push(&mut self, id: ChunkId, bytes: &[u8]) -> bool {
        let (Ok(offset), Ok(len)) = (u32::try_from(self.data.len()), u32::try_from(bytes.len()))
        else {
            return false;
        };
        if offset.checked_add(len).is_none() {
            return false;
        }
        self.data.extend_from_slice(bytes);
        self.table.push((id, offset, len));
        true
    }

    /// Bytes of chunks in it.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Whether it holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The table and trailer that end the file.
    fn footer(&self) -> Vec<u8> {
        let mut table = Vec::with_capacity(self.table.len() * ENTRY_BYTES + TRAILER_BYTES);
        for &(id, offset, len) in &self.table {
            table.extend_from_slice(&id.to_be_bytes());
            table.extend_from_slice(&offset.to_le_bytes());
            table.extend_from_slice(&len.to_le_bytes());
        }
        let hash = xxhash_rust::xxh3::xxh3_64(&table);
        table.extend_from_slice(&(self.table.len() as u32).to_le_bytes());
        table.extend_from_slice(&hash.to_le_bytes());
        table.extend_from_slice(MAGIC);
        table
    }
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
    /// Open pack files, at most [`OPEN_MAX`].
    open: HashMap<u32, Arc<File>>,
}

/// The packs of a chunk store.
#[derive(Debug)]
pub(super) struct Packs {
    dir: PathBuf,
    tmp: PathBuf,
    next: AtomicU32,
    state: RwLock<State>,
}

impl Packs {
    /// Opens `<cache_dir>/packs` (creating it) and reads every pack's
    /// table. Temp files are in `tmp`, which the caller empties. A pack
    /// whose table is damaged is deleted (its chunks read as missing and
    /// are fetched again); one that cannot be read is skipped.
    pub(super) fn open(cache_dir: &Path, tmp: &Path) -> Result<Packs, StoreError> {
        let dir = cache_dir.join("packs");
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
        let mut state = State::default();
        let mut last = None::<u32>;
        let entries = fs::read_dir(&dir).map_err(|e| StoreError::io("list directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list directory", &dir, e))?;
            let path = entry.path();
            let Some(n) = pack_number(&entry.file_name()) else {
                tracing::warn!(path = %path.display(), "skipped a file in the packs folder that is not a pack");
                continue;
            };
            last = last.max(Some(n));
            match read_table(&path) {
                Ok(table) => {
                    let mut live = 0u32;
                    for (id, offset, len) in table {
                        if let std::collections::hash_map::Entry::Vacant(v) = state.chunks.entry(id)
                        {
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
                        state.live.insert(n, live);
                    }
                }
                Err(TableError::Damaged(why)) => {
                    tracing::warn!(path = %path.display(), why, "deleting a damaged pack of cached tag bytes; they are fetched again when read");
                    let _ = fs::remove_file(&path);
                }
                Err(TableError::Io(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read a pack of cached tag bytes; its chunks are fetched again when read");
                }
            }
        }
        Ok(Packs {
            dir,
            tmp: tmp.to_path_buf(),
            next: AtomicU32::new(last.map_or(0, |n| n.saturating_add(1))),
            state: RwLock::new(state),
        })
    }

    fn path_of(&self, pack: u32) -> PathBuf {
        self.dir.join(format!("{pack:08x}.pack"))
    }

    /// Writes `pack` (see the module docs) and makes its chunks readable.
    /// Every chunk is checked against its id first. Returns each chunk's
    /// id and length, for the caller to index.
    pub(super) fn put(&self, pack: PackBuf) -> Result<Vec<(ChunkId, u32)>, StoreError> {
        fail::fail_point!("cas-pack-before-write", |arg| Err(StoreError::injected(
            "cas-pack-before-write",
            arg
        )));
        for &(id, offset, len) in &pack.table {
            let bytes = &pack.data[offset as usize..(offset + len) as usize];
            if len as usize > CHUNK_MAX_BYTES {
                return Err(StoreError::TooLarge {
                    id,
                    len: len as usize,
                });
            }
            let actual = ChunkId::of(bytes);
            debug_assert_eq!(actual, id, "PackBuf: bytes do not match their id");
            if actual != id {
                return Err(StoreError::WrongId { id, actual });
            }
        }
        let stored: Vec<(ChunkId, u32)> =
            pack.table.iter().map(|&(id, _, len)| (id, len)).collect();
        if pack.is_empty() {
            return Ok(stored);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .tmp
            .join(format!("{n:08x}.pack.{}", std::process::id()));
        let path = self.path_of(n);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| StoreError::io("create temp file", &tmp, e))
            .and_then(|mut file| {
                file.write_all(&pack.data)
                    .and_then(|()| file.write_all(&pack.footer()))
                    .map_err(|e| StoreError::io("write temp file", &tmp, e))?;
                file.sync_data()
                    .map_err(|e| StoreError::io("flush pack", &tmp, e))
            })
            .and_then(|()| {
                fs::rename(&tmp, &path)
                    .map_err(|e| StoreError::io("rename pack into place", &path, e))
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename is durable before the caller indexes. A pack in
        // place but never indexed is dropped at the next open.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io("flush packs folder", &self.dir, e))?;
        fail::fail_point!("cas-put-after-write-before-index", |arg| Err(
            StoreError::injected("cas-put-after-write-before-index", arg)
        ));
        let mut st = self.state.write();
        let mut live = 0u32;
        for &(id, offset, len) in &pack.table {
            if let std::collections::hash_map::Entry::Vacant(v) = st.chunks.entry(id) {
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
            st.live.insert(n, live);
        } else {
            drop(st);
            let _ = fs::remove_file(&path);
        }
        Ok(stored)
    }

    /// The pack file, offset and length of `id`, if it is packed.
    pub(super) fn location(&self, id: ChunkId) -> Option<(PathBuf, u64, u32)> {
        let p = *self.state.read().chunks.get(&id)?;
        Some((self.path_of(p.pack), u64::from(p.offset), p.len))
    }

    /// Reads `id`'s bytes, unverified; `None` if it is not packed.
    pub(super) fn read(&self, id: ChunkId) -> Option<Result<Vec<u8>, ChunkReadError>> {
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
        let mut data = vec![0u8; p.len as usize];
        Some(match file.read_exact_at(&mut data, u64::from(p.offset)) {
            Ok(()) => Ok(data),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ChunkReadError::Corrupt {
                len: u64::from(p.len),
                reason: "pack shorter than its table",
            }),
            Err(e) => Err(ChunkReadError::Io(StoreError::io(
                "read pack",
                self.path_of(p.pack),
                e,
            ))),
        })
    }

    fn open_pack(&self, pack: u32) -> io::Result<Arc<File>> {
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
        let file = st.open.get(&p.pack).cloned();
        drop(st);
        if emptied {
            self.delete(p.pack)?;
        } else {
            self.punch(p.pack, file, &[p]);
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
        let files: HashMap<u32, Arc<File>> = by_pack
            .keys()
            .filter_map(|n| Some((*n, Arc::clone(st.open.get(n)?))))
            .collect();
        drop(st);
        for (n, (emptied, gone)) in by_pack {
            if emptied {
                if let Err(e) = self.delete(n) {
                    tracing::warn!(error = %e, "cannot delete a pack nothing uses");
                }
            } else {
                self.punch(n, files.get(&n).cloned(), &gone);
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
    fn punch(&self, n: u32, file: Option<Arc<File>>, gone: &[Packed]) {
        let file = match file {
            Some(f) => f,
            None => match File::options().write(true).open(self.path_of(n)) {
                Ok(f) => Arc::new(f),
                Err(_) => return,
            },
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
    }
    emptied
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
fn read_table(path: &Path) -> Result<Vec<(ChunkId, u32, u32)>, TableError> {
    let file = File::open(path).map_err(TableError::Io)?;
    let size = file.metadata().map_err(TableError::Io)?.len();
    if size < TRAILER_BYTES as u64 {
        return Err(TableError::Damaged("shorter than its trailer"));
    }
    let mut trailer = [0u8; TRAILER_BYTES];
    file.read_exact_at(&mut trailer, size - TRAILER_BYTES as u64)
        .map_err(TableError::Io)?;
    if &trailer[12..] != MAGIC {
        return Err(TableError::Damaged("no pack trailer"));
    }
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
    for entry in table.chunks_exact(ENTRY_BYTES) {
        let id = ChunkId::from_be_slice(&entry[..16]).ok_or(TableError::Damaged("bad id"))?;
        let offset = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]);
        let len = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]);
        if len == 0
            || len as usize > CHUNK_MAX_BYTES
            || u64::from(offset) + u64::from(len) > table_at
        {
            return Err(TableError::Damaged("chunk outside the pack"));
        }
        out.push((id, offset, len));
    }
    Ok(out)
}
