//! The simulated cache disk: chunk files and the database beside them, with
//! the durability the real store has and the ways a real disk fails.
//!
//! It follows the io-shell's store (`io-shell/src/store`): a chunk file is
//! written to a temp file, fsynced and renamed, so it is either absent or
//! whole; the index entry is written after the file, and the database
//! (sled) makes writes durable only when it flushes, every 500 ms. A crash
//! therefore loses index entries and chunk maps written since the last
//! flush, and never leaves a partial chunk file, unless the disk lies: then
//! a chunk file acknowledged as written is only durable after the disk's own
//! write-back flush, and a crash before it tears the file while its index
//! entry may survive. Verification on read must catch those.

use crate::swarm::Stream;
use musicfs_core::engine::{Pin, SourceKey};
use musicfs_core::{CatalogEntry, ChunkId, Manifest};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// A key-value table of the database: durable entries, and writes since the
/// last flush (`None` is a removal).
#[derive(Clone, Debug)]
pub struct Table<K: Ord, V> {
    durable: BTreeMap<K, V>,
    pending: BTreeMap<K, Option<V>>,
}

impl<K: Ord + Clone, V: Clone> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            durable: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone> Table<K, V> {
    /// Writes an entry (durable at the next flush).
    pub fn put(&mut self, k: K, v: V) {
        self.pending.insert(k, Some(v));
    }

    /// Removes an entry (durable at the next flush).
    pub fn remove(&mut self, k: K) {
        self.pending.insert(k, None);
    }

    /// The entry as the running daemon sees it.
    pub fn get(&self, k: &K) -> Option<&V> {
        match self.pending.get(k) {
            Some(v) => v.as_ref(),
            None => self.durable.get(k),
        }
    }

    /// Makes every write durable.
    pub fn flush(&mut self) {
        for (k, v) in std::mem::take(&mut self.pending) {
            match v {
                Some(v) => self.durable.insert(k, v),
                None => self.durable.remove(&k),
            };
        }
    }

    /// Loses every write since the last flush.
    pub fn crash(&mut self) {
        self.pending.clear();
    }

    /// What survives a crash.
    pub fn durable(&self) -> &BTreeMap<K, V> {
        &self.durable
    }
}

#[derive(Clone, Debug)]
struct ChunkFile {
    data: Vec<u8>,
    /// False while a lying disk holds it in its write-back cache.
    durable: bool,
}

/// Why a chunk file could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// No such file.
    Missing,
}

/// What a restarted daemon loads: chunk maps, and the chunk index as
/// (id, length, last access).
pub type Persisted = (Vec<(SourceKey, Manifest)>, Vec<(ChunkId, u32, u64)>);

/// The cache directory: chunk files plus the database.
#[derive(Debug, Default)]
pub struct Disk {
    files: BTreeMap<ChunkId, ChunkFile>,
    /// The chunk index: id to (length, last access).
    pub index: Table<ChunkId, (u32, u64)>,
    /// The chunk maps.
    pub manifests: Table<SourceKey, Manifest>,
    /// Pinned origin files.
    pub pins: Table<SourceKey, Pin>,
    /// The catalog of the last scan (written whole, synchronously).
    pub catalog: Vec<CatalogEntry>,
    /// Chunk files a fault damaged (flipped, torn, deleted behind the
    /// index's back): the only files allowed not to match their id.
    pub damaged: BTreeSet<ChunkId>,
    lying: bool,
}

impl Disk {
    /// An empty cache on a disk that lies about fsync when `lying`.
    pub fn new(lying: bool) -> Disk {
        Disk {
            lying,
            ..Disk::default()
        }
    }

    /// Writes a chunk file as `ChunkStore::put_batch` does (temp file,
    /// flush, rename): whole or absent. A file already holding exactly these
    /// bytes is kept as it is (content addressing: stored once).
    pub fn write_file(&mut self, id: ChunkId, data: &[u8]) {
        if self.files.get(&id).is_some_and(|f| f.data == data) {
            return;
        }
        let file = ChunkFile {
            data: data.to_vec(),
            durable: !self.lying,
        };
        self.files.insert(id, file);
        self.damaged.remove(&id);
    }

    /// Records chunks in the index (id, length), as `Db::put_chunks` does.
    pub fn index_chunks(&mut self, chunks: &[(ChunkId, u32)]) {
        for &(id, len) in chunks {
            self.index.put(id, (len, 0));
        }
    }

    /// The bytes of a chunk file, unchecked.
    pub fn read(&self, id: ChunkId) -> Result<&[u8], ReadError> {
        self.files
            .get(&id)
            .map(|f| f.data.as_slice())
            .ok_or(ReadError::Missing)
    }

    /// Whether a chunk file exists.
    pub fn has_file(&self, id: ChunkId) -> bool {
        self.files.contains_key(&id)
    }

    /// Deletes evicted chunks as the daemon does: index entries first, then
    /// the files.
    pub fn evict(&mut self, ids: &[ChunkId]) {
        for &id in ids {
            self.index.remove(id);
            self.files.remove(&id);
            self.damaged.remove(&id);
        }
    }

    /// Records new access times of indexed chunks.
    pub fn touch(&mut self, touched: &[(ChunkId, u64)]) {
        for &(id, at) in touched {
            if let Some(&(len, _)) = self.index.get(&id) {
                self.index.put(id, (len, at));
            }
        }
    }

    /// The database's periodic flush.
    pub fn flush_db(&mut self) {
        self.index.flush();
        self.manifests.flush();
        self.pins.flush();
    }

    /// The disk's own write-back flush: what it acknowledged is now durable.
    pub fn flush_disk(&mut self) {
        for f in self.files.values_mut() {
            f.durable = true;
        }
    }

    /// Power loss: database writes since the last flush are lost; chunk
    /// files a lying disk had not written are torn (a zeroed tail) or gone.
    /// Returns how many files were damaged.
    pub fn crash(&mut self, rng: &mut Stream) -> usize {
        self.index.crash();
        self.manifests.crash();
        self.pins.crash();
        let mut hurt = 0;
        let mut gone = Vec::new();
        for (&id, f) in self.files.iter_mut() {
            if f.durable {
                continue;
            }
            hurt += 1;
            self.damaged.insert(id);
            if rng.random_bool(0.5) || f.data.is_empty() {
                gone.push(id);
            } else {
                let keep = rng.random_range(0..f.data.len());
                for b in &mut f.data[keep..] {
                    *b = 0;
                }
                f.durable = true;
            }
        }
        for id in gone {
            self.files.remove(&id);
        }
        hurt
    }

    /// Flips one bit of a random chunk file. Returns the chunk.
    pub fn flip_bit(&mut self, rng: &mut Stream) -> Option<ChunkId> {
        let id = self.random_file(rng)?;
        let f = self.files.get_mut(&id)?;
        if f.data.is_empty() {
            return None;
        }
        let at = rng.random_range(0..f.data.len());
        f.data[at] ^= 1 << rng.random_range(0..8);
        self.damaged.insert(id);
        Some(id)
    }

    /// Deletes a random chunk file behind the index's back.
    pub fn lose_file(&mut self, rng: &mut Stream) -> Option<ChunkId> {
        let id = self.random_file(rng)?;
        self.files.remove(&id);
        self.damaged.insert(id);
        Some(id)
    }

    fn random_file(&self, rng: &mut Stream) -> Option<ChunkId> {
        if self.files.is_empty() {
            return None;
        }
        let n = rng.random_range(0..self.files.len());
        self.files.keys().nth(n).copied()
    }

    /// What a restarted daemon loads: the durable chunk maps and index.
    pub fn persisted(&self) -> Persisted {
        let manifests = self
            .manifests
            .durable()
            .iter()
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect();
        let chunks = self
            .index
            .durable()
            .iter()
            .map(|(&id, &(len, at))| (id, len, at))
            .collect();
        (manifests, chunks)
    }
}
