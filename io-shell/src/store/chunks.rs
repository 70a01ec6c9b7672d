//! Chunk files: one file per chunk, named by its content id; and packs of
//! many chunks (`super::packs`) for the tag bytes a first scan keeps and
//! for the chunks a fetch stores in one batch.
//!
//! `<cache_dir>/chunks/<xx>/<32-hex-id>`, where `xx` is [`ChunkId::shard`]
//! in two hex digits: 256 directories keep each one small (a multi-terabyte
//! cache holds tens of millions of chunks). Writes go to `chunks/tmp/` first
//! and are renamed into place, so a chunk file is either absent or complete.

use super::packs::{PackReads, PackWriter, Packs, PacksLoaded};
use super::{ChunkReadError, StoreError};
use musicfs_core::ChunkId;
use musicfs_core::chunk::CHUNK_MAX_BYTES;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Names temp files uniquely within this process (the pid covers others).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A batch of at least this many bytes is stored as one pack rather than
/// a file per chunk ([`ChunkStore::put_batch`]). Smaller batches (a slow
/// origin's fetch, stored as it trickles in) stay chunk files: a pack
/// each would make many small packs, which gain nothing on reading back
/// and each cost the open mount a table read.
const PACK_BATCH_MIN_BYTES: u64 = 1 << 20;

/// What [`ChunkStore::check`] found of a chunk about to be stored.
enum Check {
    /// Exactly these bytes are in place already.
    Stored,
    /// To be written; `stale` is a damaged chunk file in its place.
    New { stale: Option<PathBuf> },
}

/// The chunk-file half of the cache.
///
/// It is `Send + Sync` and holds no open chunk files (only a few packs):
/// every call opens what it needs, so many threads can read and write
/// chunks at once.
///
/// It assumes it is the only user of its cache directory (open the [`super::Db`]
/// first: sled locks the database, which keeps a second daemon out), because
/// [`ChunkStore::open`] deletes whatever it finds in the temp directory.
#[derive(Debug)]
pub struct ChunkStore {
    root: PathBuf,
    tmp: PathBuf,
    packs: Packs,
}

/// A chunk written to a temp file by [`ChunkStore::stage`]: not yet
/// durable, not yet in place. Dropped without [`ChunkStore::commit`], its
/// temp file is removed.
#[derive(Debug)]
struct Staged {
    /// `None` once renamed into place.
    tmp: Option<PathBuf>,
    path: PathBuf,
}

impl Staged {
    fn rename_into_place(mut self) -> Result<(), StoreError> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        match fs::rename(&tmp, &self.path) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.tmp = Some(tmp);
                Err(StoreError::io("rename chunk into place", &self.path, e))
            }
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            // Best effort: a leftover is also removed at the next open.
            let _ = fs::remove_file(tmp);
        }
    }
}

impl ChunkStore {
    /// Opens the chunk store under `cache_dir`, creating `chunks/`, its 256
    /// shard directories and `chunks/tmp/` as needed.
    ///
    /// Files left in `chunks/tmp/` are writes a crash interrupted; they were
    /// never renamed into place, so nothing refers to them and they are
    /// deleted here.
    pub fn open(cache_dir: &Path) -> Result<ChunkStore, StoreError> {
        let root = cache_dir.join("chunks");
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| StoreError::io("create directory", &tmp, e))?;
        for shard in 0..=255u8 {
            let dir = root.join(format!("{shard:02x}"));
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io("create directory", &dir, e)),
            }
        }
        let packs = Packs::open(cache_dir, &tmp)?;
        let store = ChunkStore { root, tmp, packs };
        store.clear_temp()?;
        Ok(store)
    }

    /// Deletes every leftover temp file.
    fn clear_temp(&self) -> Result<(), StoreError> {
        let entries =
            fs::read_dir(&self.tmp).map_err(|e| StoreError::io("list directory", &self.tmp, e))?;
        let mut removed = 0usize;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list directory", &self.tmp, e))?;
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let res = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match res {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove temp file", &path, e)),
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed unfinished chunk writes left by a crash");
        }
        Ok(())
    }

    /// Where the chunk file of `id` lives (whether or not it is there). A
    /// packed chunk is elsewhere: see [`ChunkStore::packed_at`].
    pub fn path_of(&self, id: ChunkId) -> PathBuf {
        self.shard_dir(id).join(id.to_hex())
    }

    /// The pack file, offset and length of `id`, if it is packed.
    pub fn packed_at(&self, id: ChunkId) -> Option<(PathBuf, u64, u32)> {
        self.packs.location(id)
    }

    /// Starts a pack file, many chunks in one (see `packs`): for the tag
    /// bytes of a first scan, which are read back together. Threads
    /// reserve room in it and write their chunks side by side; then
    /// [`ChunkStore::put_pack`].
    pub fn start_pack(&self) -> Result<PackWriter, StoreError> {
        self.packs.start(PackReads::Random)
    }

    /// Ends a pack once every reservation in it is written, in the order
    /// of steps of [`ChunkStore::put_batch`] (temp file, flush, rename,
    /// flush; the caller indexes after). Returns each chunk's id and
    /// length.
    pub fn put_pack(&self, pack: &PackWriter) -> Result<Vec<(ChunkId, u32)>, StoreError> {
        self.packs.put(pack)
    }

    /// Drops the packed chunks the index does not name: evicted in an
    /// earlier run (the pack's table still lists them), or written by a
    /// run that crashed before indexing them. Their space is freed.
    /// Returns how many. Chunk files need no such step: eviction deletes
    /// them.
    pub fn forget_unindexed(&self, index: &[(ChunkId, u32, u64)]) -> usize {
        self.packs.retain_indexed(index)
    }

    /// How the open learnt the packs' tables: how many it took from the
    /// file last saved, how many it read from their packs.
    pub fn packs_loaded(&self) -> PacksLoaded {
        self.packs.loaded()
    }

    /// Saves the packs' tables for the next open, which then need not
    /// read each pack (see `packs`): at a clean exit, once nothing writes
    /// any more. Returns false when nothing changed since the open (or the
    /// last save). A failure costs only the next open's time.
    pub fn save_pack_tables(&self) -> Result<bool, StoreError> {
        self.packs.save_tables()
    }

    /// Saves the packs' tables as [`ChunkStore::save_pack_tables`] does,
    /// once `packs` packs have been put in place since the last save (or
    /// the open): in a run of months, what a crash would have the next
    /// open read is bounded.
    pub fn save_pack_tables_after(&self, packs: usize) -> Result<bool, StoreError> {
        self.packs.save_tables_after(packs)
    }

    fn shard_dir(&self, id: ChunkId) -> PathBuf {
        self.root.join(format!("{:02x}", id.shard()))
    }

    /// Stores `data` as the chunk `id`, atomically and durably.
    ///
    /// The bytes go to a fresh temp file in `chunks/tmp/`, which is flushed
    /// to disk and then renamed into place, and the rename is flushed so it
    /// survives a power cut (see [`ChunkStore::put_batch`]). A crash at any
    /// point leaves either no chunk file or a complete one, never a partial
    /// one.
    ///
    /// `data` must hash to `id`: storing bytes under the wrong id would serve
    /// them for another file later, so that is refused with
    /// [`StoreError::WrongId`] (and is a debug assertion, being a caller bug).
    /// Chunks longer than [`CHUNK_MAX_BYTES`] are refused the same way.
    ///
    /// If a file holding exactly these bytes is already in place, this does
    /// nothing (content addressing: a duplicate chunk is stored once). A file
    /// of the right length is read and checked first: a damaged file must
    /// not survive a fresh copy of its bytes arriving.
    ///
    /// The caller records the chunk in the [`super::Db`] index after this
    /// returns; a crash in between leaves a file the index does not know,
    /// which [`ChunkStore::scan`] finds.
    pub fn put(&self, id: ChunkId, data: &[u8]) -> Result<(), StoreError> {
        self.put_batch(&[(id, data)]).pop().unwrap_or_else(|| {
            Err(StoreError::io(
                "store chunk",
                &self.root,
                io::ErrorKind::Other.into(),
            ))
        })
    }

    /// Stores several chunks as [`ChunkStore::put`] does, in the same order
    /// of steps (temp file, flush, rename, flush; the caller indexes after),
    /// but with two flushes for the whole batch instead of two `fsync`s per
    /// chunk: a 179 MB track is some 2,800 chunks. The results are in the
    /// order of `chunks`.
    ///
    /// A batch of at least `PACK_BATCH_MIN_BYTES` (1 MiB) goes into one pack
    /// (see `packs`), its chunks end to end in the order given, which is a
    /// fetch's: read back later, they are read like the native file, not a
    /// file per chunk. A crash at any point still leaves either no pack or
    /// a complete one, and either no chunk file or a complete one.
    pub fn put_batch(&self, chunks: &[(ChunkId, &[u8])]) -> Vec<Result<(), StoreError>> {
        let bytes: usize = chunks.iter().map(|(_, data)| data.len()).sum();
        if chunks.len() > 1 && bytes as u64 >= PACK_BATCH_MIN_BYTES {
            return self.put_packed(chunks);
        }
        self.commit(
            chunks
                .iter()
                .map(|&(id, data)| self.stage(id, data))
                .collect(),
        )
    }

    /// [`ChunkStore::put_batch`] into one pack: each chunk is checked as
    /// [`ChunkStore::stage`] does; those not already stored are written
    /// once each (a batch may name a chunk twice) to a sequential pack,
    /// and share its outcome.
    fn put_packed(&self, chunks: &[(ChunkId, &[u8])]) -> Vec<Result<(), StoreError>> {
        let mut results: Vec<Option<Result<(), StoreError>>> = Vec::with_capacity(chunks.len());
        let mut new: Vec<(ChunkId, &[u8])> = Vec::new();
        let mut named = HashSet::new();
        for &(id, data) in chunks {
            results.push(match self.check(id, data) {
                Err(e) => Some(Err(e)),
                Ok(Check::Stored) => Some(Ok(())),
                Ok(Check::New { stale }) => {
                    if let Some(path) = stale
                        && let Err(e) = fs::remove_file(&path)
                        && e.kind() != io::ErrorKind::NotFound
                    {
                        Some(Err(StoreError::io("remove damaged chunk", &path, e)))
                    } else {
                        if named.insert(id) {
                            new.push((id, data));
                        }
                        None
                    }
                }
            });
        }
        let outcome = if new.is_empty() {
            Ok(())
        } else {
            self.write_pack(&new)
        };
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| match &outcome {
                    Ok(()) => Ok(()),
                    Err(e) => Err(e.again()),
                })
            })
            .collect()
    }

    /// Writes `chunks` (checked, none stored yet) as one sequential pack,
    /// durable and in place when this returns `Ok`.
    fn write_pack(&self, chunks: &[(ChunkId, &[u8])]) -> Result<(), StoreError> {
        let pack = self.packs.start(PackReads::Sequential)?;
        let lens: Vec<(ChunkId, u32)> = chunks
            .iter()
            .map(|&(id, data)| (id, data.len() as u32))
            .collect();
        let Some(slot) = pack.reserve(&lens) else {
            return Err(StoreError::io(
                "reserve room in pack",
                &self.root,
                io::Error::other("a batch past 4 GiB"),
            ));
        };
        slot.write(chunks);
        self.packs.put(&pack).map(|_| ())
    }

    /// The second half of [`ChunkStore::put_batch`]: makes the staged temp
    /// files durable, renames them into place and makes the renames
    /// durable. `Ok(None)` (already in place) stays `Ok`, an error stays
    /// that error. The results are in the order of `staged`.
    fn commit(
        &self,
        staged: Vec<Result<Option<Staged>, StoreError>>,
    ) -> Vec<Result<(), StoreError>> {
        let flush_failed = |step: &'static str, e: &io::Error| {
            StoreError::io(step, &self.root, io::Error::from(e.kind()))
        };
        let pending = staged.iter().any(|s| matches!(s, Ok(Some(_))));
        // The bytes are durable before any file is renamed into place...
        let synced = if pending { self.flush() } else { Ok(()) };
        let mut results: Vec<Result<(), StoreError>> = staged
            .into_iter()
            .map(|s| match s {
                Ok(None) => Ok(()),
                // A staged file that is not renamed is removed as it drops
                // (and any leftover at the next open).
                Ok(Some(staged)) => match &synced {
                    Ok(()) => staged.rename_into_place(),
                    Err(e) => Err(flush_failed("flush chunk files", e)),
                },
                Err(e) => Err(e),
            })
            .collect();
        // ...and the renames are durable before the caller indexes them.
        if synced.is_ok()
            && results.iter().any(Result::is_ok)
            && let Err(e) = self.flush()
        {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(flush_failed("flush chunk folders", &e));
            }
        }
        #[cfg(feature = "failpoints")]
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            if let Some(e) = fail::eval("cas-put-after-write-before-index", |arg| {
                StoreError::injected("cas-put-after-write-before-index", arg)
            }) {
                *r = Err(e);
            }
        }
        results
    }

    /// `syncfs` of the file system holding the store.
    fn flush(&self) -> io::Result<()> {
        crate::sys::syncfs(&File::open(&self.root)?)
    }

    /// The first half of [`ChunkStore::put_batch`], which many threads may
    /// run at once: checks a chunk and writes its bytes to a temp file (not
    /// yet durable, not yet in place; [`ChunkStore::commit`] does that).
    /// `None` if a file with exactly these bytes is already in place.
    fn stage(&self, id: ChunkId, data: &[u8]) -> Result<Option<Staged>, StoreError> {
        if let Check::Stored = self.check(id, data)? {
            return Ok(None);
        }
        let path = self.path_of(id);
        let tmp = self.tmp.join(format!(
            "{}.{}.{}",
            id.to_hex(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| StoreError::io("create temp file", &tmp, e))
            .and_then(|mut file| {
                file.write_all(data)
                    .map_err(|e| StoreError::io("write temp file", &tmp, e))
            });
        let staged = Staged {
            tmp: Some(tmp),
            path,
        };
        // On an error, dropping `staged` removes what was written.
        written.map(|()| Some(staged))
    }

    /// Whether `data`, claimed to be chunk `id`, is to be stored: refused
    /// if it does not hash to `id` or is too long; [`Check::Stored`] if
    /// these exact bytes are already in a pack or a chunk file. A damaged
    /// packed copy is dropped here; a damaged chunk file is named, for
    /// the caller to replace.
    fn check(&self, id: ChunkId, data: &[u8]) -> Result<Check, StoreError> {
        let actual = ChunkId::of(data);
        debug_assert_eq!(actual, id, "ChunkStore::put: bytes do not match their id");
        if actual != id {
            return Err(StoreError::WrongId { id, actual });
        }
        if data.len() > CHUNK_MAX_BYTES {
            return Err(StoreError::TooLarge {
                id,
                len: data.len(),
            });
        }
        fail::fail_point!("cas-put-before-write", |arg| Err(StoreError::injected(
            "cas-put-before-write",
            arg
        )));

        // Already packed: kept if its bytes are sound, else dropped for
        // the copy the caller writes.
        match self.packs.read(id) {
            Some(Ok(old)) if *old == *data => return Ok(Check::Stored),
            Some(_) => {
                self.packs.remove(id)?;
            }
            None => {}
        }
        let path = self.path_of(id);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == data.len() as u64 => {
                if fs::read(&path).is_ok_and(|old| old == data) {
                    return Ok(Check::Stored);
                }
                Ok(Check::New { stale: Some(path) })
            }
            // Wrong length or not a file: replaced.
            Ok(_) => Ok(Check::New { stale: Some(path) }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Check::New { stale: None }),
            Err(e) => Err(StoreError::io("stat chunk", &path, e)),
        }
    }

    /// Reads the chunk `id` and verifies it against its id.
    ///
    /// Returns [`ChunkReadError::Missing`] when there is no file,
    /// [`ChunkReadError::Corrupt`] when the bytes do not hash to `id` (a
    /// flipped bit, a truncated file; a file longer than any chunk is
    /// reported without being read), and [`ChunkReadError::Io`] when the
    /// file cannot be read (`EIO`, `EMFILE`, ...). Nothing is deleted here:
    /// what to do about a bad chunk is the caller's decision.
    pub fn get(&self, id: ChunkId) -> Result<Vec<u8>, ChunkReadError> {
        let data = self.read_unverified(id)?;
        if !id.matches(&data) {
            return Err(ChunkReadError::Corrupt {
                len: data.len() as u64,
                reason: "hash mismatch",
            });
        }
        Ok(data.to_vec())
    }

    /// Reads the chunk `id` as [`ChunkStore::get`] does, with every check
    /// but the hash: for a caller that hashes it anyway (the executor
    /// verifies every chunk it serves).
    pub fn read_unverified(&self, id: ChunkId) -> Result<Arc<[u8]>, ChunkReadError> {
        if let Some(packed) = self.packs.read(id) {
            return packed;
        }
        let path = self.path_of(id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ChunkReadError::Missing),
            Err(e) => return Err(ChunkReadError::Io(StoreError::io("open chunk", &path, e))),
        };
        let meta = file
            .metadata()
            .map_err(|e| ChunkReadError::Io(StoreError::io("stat chunk", &path, e)))?;
        let len = meta.len();
        if !meta.is_file() {
            return Err(ChunkReadError::Corrupt {
                len,
                reason: "not a regular file",
            });
        }
        if len > CHUNK_MAX_BYTES as u64 {
            return Err(ChunkReadError::Corrupt {
                len,
                reason: "longer than any chunk",
            });
        }
        let changed = |len| ChunkReadError::Corrupt {
            len,
            reason: "length changed while reading",
        };
        let data = match crate::sys::read_shared_at(&file, 0, len as usize) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(changed(len)),
            Err(e) => return Err(ChunkReadError::Io(StoreError::io("read chunk", &path, e))),
        };
        // A file that grew after the stat is noticed too.
        match file.read_at(&mut [0u8], len) {
            Ok(0) => Ok(data),
            Ok(_) => Err(changed(len + 1)),
            Err(e) => Err(ChunkReadError::Io(StoreError::io("read chunk", &path, e))),
        }
    }

    /// Deletes the chunk `id`. A chunk that is already gone is fine: eviction
    /// and corruption handling may both get there.
    pub fn remove(&self, id: ChunkId) -> Result<(), StoreError> {
        if self.packs.remove(id)? {
            return Ok(());
        }
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove chunk", &path, e)),
        }
    }

    /// Every chunk on disk, with its length, in no particular order: the
    /// packed ones, then the chunk files.
    ///
    /// This is how a lost or corrupt index is rebuilt. Only regular files
    /// whose name is exactly the 32 lower-case hex digits of an id in the
    /// right shard are listed; the temp directory and anything else are
    /// skipped. Lengths are not verified here: reads verify.
    pub fn scan(&self) -> Result<Vec<(ChunkId, u64)>, StoreError> {
        let mut out = self.packs.scan();
        let mut foreign = 0usize;
        for shard in 0..=255u8 {
            let dir = self.root.join(format!("{shard:02x}"));
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("list directory", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io("list directory", &dir, e))?;
                let name = entry.file_name();
                let id = name.to_str().and_then(ChunkId::from_hex).filter(|id| {
                    id.shard() == shard && Some(id.to_hex().as_str()) == name.to_str()
                });
                let Some(id) = id else {
                    foreign += 1;
                    continue;
                };
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Removed since the listing (eviction running alongside).
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io("stat chunk", entry.path(), e)),
                };
                if !meta.is_file() {
                    foreign += 1;
                    continue;
                }
                out.push((id, meta.len()));
            }
        }
        if foreign > 0 {
            tracing::warn!(
                foreign,
                dir = %self.root.display(),
                "skipped files in the chunk store that are not chunks"
            );
        }
        Ok(out)
    }

    /// Bytes available to this process on the cache file system (`statvfs`:
    /// blocks available to unprivileged users times the fragment size).
    ///
    /// The caller compares this with its reserve to decide when to stop
    /// caching and serve from the origins instead.
    pub fn free_bytes(&self) -> Result<u64, StoreError> {
        crate::sys::available_bytes(&self.root)
            .map_err(|e| StoreError::io("statvfs", &self.root, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_shard_then_hex() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let id = ChunkId(0xab00_0000_0000_0000_0000_0000_0000_0001);
        assert_eq!(
            store.path_of(id),
            dir.path()
                .join("chunks/ab/ab000000000000000000000000000001")
        );
        assert!(dir.path().join("chunks/00").is_dir());
        assert!(dir.path().join("chunks/ff").is_dir());
        assert!(dir.path().join("chunks/tmp").is_dir());
    }

    #[test]
    fn oversized_files_are_corrupt_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let id = ChunkId::of(b"x");
        let f = File::create(store.path_of(id)).unwrap();
        f.set_len(CHUNK_MAX_BYTES as u64 + 1).unwrap();
        match store.get(id) {
            Err(ChunkReadError::Corrupt { len, reason }) => {
                assert_eq!(len, CHUNK_MAX_BYTES as u64 + 1);
                assert_eq!(reason, "longer than any chunk");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn oversized_puts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let data = vec![7u8; CHUNK_MAX_BYTES + 1];
        let id = ChunkId::of(&data);
        assert!(matches!(
            store.put(id, &data),
            Err(StoreError::TooLarge { .. })
        ));
        assert!(!store.path_of(id).exists());
    }

    #[test]
    fn put_replaces_a_file_of_the_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let data = b"the real bytes".to_vec();
        let id = ChunkId::of(&data);
        fs::write(store.path_of(id), b"short").unwrap();
        store.put(id, &data).unwrap();
        assert_eq!(store.get(id).unwrap(), data);
    }

    #[test]
    fn a_batch_stores_each_chunk_and_reports_each_failure_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let mut chunks: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        // One is already stored, one is damaged on disk, one is too big.
        chunks[7] = vec![7; CHUNK_MAX_BYTES + 1];
        store.put(ChunkId::of(&chunks[3]), &chunks[3]).unwrap();
        fs::write(store.path_of(ChunkId::of(&chunks[5])), b"rotten").unwrap();
        let batch: Vec<(ChunkId, &[u8])> =
            chunks.iter().map(|c| (ChunkId::of(c), &c[..])).collect();
        let results = store.put_batch(&batch);
        assert_eq!(results.len(), batch.len());
        for (i, r) in results.iter().enumerate() {
            if i == 7 {
                assert!(matches!(r, Err(StoreError::TooLarge { .. })), "{r:?}");
            } else {
                assert!(r.is_ok(), "{i}: {r:?}");
                assert_eq!(store.get(ChunkId::of(&chunks[i])).unwrap(), chunks[i]);
            }
        }
        assert!(matches!(
            store.get(ChunkId::of(&chunks[7])),
            Err(ChunkReadError::Missing)
        ));
        // Nothing is left in the temp folder.
        assert_eq!(fs::read_dir(&store.tmp).unwrap().count(), 0);
    }

    #[test]
    fn free_bytes_is_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        assert!(store.free_bytes().unwrap() > 0);
    }
}
