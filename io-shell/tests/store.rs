//! The on-disk cache store against a real file system: chunk files, their
//! verification, crash atomicity (fail points), real disk failures (a tiny
//! tmpfs for ENOSPC and EROFS), descriptor exhaustion (in a child process),
//! and the sled database including its corruption recovery.
//!
//! Fail points are process-global, so every test here takes [`serial`]
//! first: a test that switches `cas-put-before-write` on must not make
//! another test's `put` fail.

use musicfs::library::keep::{KeptBytes, TagKeeper};
use musicfs::store::{
    ChunkReadError, ChunkStore, Db, META_LIBRARY_FINGERPRINT, PackWriter, PacksLoaded, StoreError,
};
use musicfs_core::catalog::{CatalogEntry, FileKind, SourceFile};
use musicfs_core::chunk::CHUNK_MAX_BYTES;
use musicfs_core::engine::DiskFault;
use musicfs_core::{ChunkId, Extent, FileVersion, Manifest, OriginId, OriginPath, TrackTags};
use musicfs_tests::disk::{Tmpfs, noise};
use parking_lot::{Mutex, MutexGuard};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock()
}

fn chunk(len: usize, seed: u64) -> (ChunkId, Vec<u8>) {
    let data = noise(len, seed);
    (ChunkId::of(&data), data)
}

fn tmp_entries(cache: &Path) -> Vec<PathBuf> {
    fs::read_dir(cache.join("chunks/tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

// ---------------------------------------------------------------- chunks --

#[test]
fn put_get_round_trip() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    for (i, len) in [1usize, 16 * 1024, 65_537, 256 * 1024]
        .into_iter()
        .enumerate()
    {
        let (id, data) = chunk(len, i as u64);
        store.put(id, &data).unwrap();
        assert_eq!(store.get(id).unwrap(), data);
        let path = store.path_of(id);
        assert_eq!(
            path,
            dir.path()
                .join("chunks")
                .join(format!("{:02x}", id.shard()))
                .join(id.to_hex())
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), len as u64);
    }
    assert!(tmp_entries(dir.path()).is_empty());
}

#[test]
fn put_is_idempotent() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, data) = chunk(70_000, 1);
    store.put(id, &data).unwrap();
    let ino = fs::metadata(store.path_of(id)).unwrap().ino();
    store.put(id, &data).unwrap();
    // The second put found the file in place and did not rewrite it.
    assert_eq!(fs::metadata(store.path_of(id)).unwrap().ino(), ino);
    assert_eq!(store.get(id).unwrap(), data);
    assert_eq!(store.scan().unwrap(), vec![(id, data.len() as u64)]);
}

#[test]
fn get_of_an_absent_chunk_is_missing() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, _) = chunk(100, 2);
    assert!(matches!(store.get(id), Err(ChunkReadError::Missing)));
}

#[test]
fn a_flipped_byte_is_corrupt_and_left_in_place() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, data) = chunk(50_000, 3);
    store.put(id, &data).unwrap();
    let mut bad = data.clone();
    bad[12_345] ^= 0x01;
    fs::write(store.path_of(id), &bad).unwrap();
    match store.get(id) {
        Err(ChunkReadError::Corrupt { len, .. }) => assert_eq!(len, data.len() as u64),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Not deleted: the caller decides.
    assert!(store.path_of(id).exists());
    // put does not fix it (same length: deduplicated); remove + put does.
    store.remove(id).unwrap();
    store.put(id, &data).unwrap();
    assert_eq!(store.get(id).unwrap(), data);
}

#[test]
fn a_truncated_chunk_is_corrupt() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, data) = chunk(50_000, 4);
    store.put(id, &data).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(store.path_of(id))
        .unwrap()
        .set_len(49_999)
        .unwrap();
    match store.get(id) {
        Err(ChunkReadError::Corrupt { len, .. }) => assert_eq!(len, 49_999),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A truncated file has the wrong length, so put replaces it.
    store.put(id, &data).unwrap();
    assert_eq!(store.get(id).unwrap(), data);
}

#[test]
fn remove_deletes_and_tolerates_absence() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, data) = chunk(1000, 5);
    store.put(id, &data).unwrap();
    store.remove(id).unwrap();
    assert!(matches!(store.get(id), Err(ChunkReadError::Missing)));
    store.remove(id).unwrap();
}

#[test]
fn scan_lists_exactly_what_was_put() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let mut want = Vec::new();
    for seed in 0..40u64 {
        let (id, data) = chunk(1000 + seed as usize * 37, seed + 100);
        store.put(id, &data).unwrap();
        want.push((id, data.len() as u64));
    }
    let (gone, _) = chunk(1000, 100);
    store.remove(gone).unwrap();
    want.retain(|(id, _)| *id != gone);
    // Things that are not chunks are not listed.
    let (other, _) = chunk(10, 999);
    let shard = dir.path().join(format!("chunks/{:02x}", other.shard()));
    fs::write(shard.join("README"), b"x").unwrap();
    fs::write(shard.join(other.to_hex().to_uppercase()), b"x").unwrap();
    fs::create_dir(shard.join(other.to_hex())).unwrap();
    // A valid name in the wrong shard.
    let wrong = dir.path().join(format!(
        "chunks/{:02x}/{}",
        other.shard().wrapping_add(1),
        other.to_hex()
    ));
    fs::write(wrong, b"x").unwrap();
    fs::write(dir.path().join("chunks/tmp/partial"), b"x").unwrap();

    let mut got = store.scan().unwrap();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn temp_leftovers_are_removed_at_open() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, data) = chunk(3000, 6);
    store.put(id, &data).unwrap();
    drop(store);
    // What a crash in the middle of a put leaves behind.
    fs::write(
        dir.path()
            .join("chunks/tmp")
            .join(format!("{}.1.0", id.to_hex())),
        &data[..100],
    )
    .unwrap();
    fs::create_dir(dir.path().join("chunks/tmp/strange-dir")).unwrap();
    fs::write(dir.path().join("chunks/tmp/strange-dir/f"), b"x").unwrap();
    assert_eq!(tmp_entries(dir.path()).len(), 2);

    let store = ChunkStore::open(dir.path()).unwrap();
    assert!(tmp_entries(dir.path()).is_empty());
    // Real chunks are untouched.
    assert_eq!(store.get(id).unwrap(), data);
}

#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "do not match their id"))]
fn bytes_are_never_stored_under_the_wrong_id() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, _) = chunk(100, 7);
    let other = noise(100, 8);
    // Release builds: a real error. Debug builds: the assertion fires first.
    let err = store.put(id, &other).unwrap_err();
    assert!(matches!(err, StoreError::WrongId { .. }), "{err:?}");
    assert!(!store.path_of(id).exists());
}

// ------------------------------------------------------------ tag keeper --

/// Keeps a 300 KiB head of `files` tracks (past the keeper's 8 MiB batch
/// several times over) with `keeper`, on as many threads as a scan.
fn keep_heads(keeper: &Arc<TagKeeper>, files: u64) -> Vec<(SourceFile, Vec<u8>)> {
    let kept: Vec<(SourceFile, Vec<u8>)> = (0..files)
        .map(|i| {
            let source = SourceFile {
                origin: OriginId(0),
                path: OriginPath::new(format!("a/{i:03}.flac").into_bytes()),
                version: FileVersion {
                    size: 4 << 20,
                    mtime_ns: 1,
                    token: None,
                },
            };
            (source, noise(300 << 10, 1000 + i))
        })
        .collect();
    std::thread::scope(|s| {
        for half in kept.chunks(kept.len().div_ceil(2)) {
            s.spawn(move || {
                for (source, head) in half {
                    keeper.keep(KeptBytes {
                        source: source.clone(),
                        head: head.clone(),
                        tail_at: source.version.size,
                        tail: Vec::new(),
                    });
                }
            });
        }
    });
    kept
}

/// Every manifest in `db` names only chunks that are indexed, on disk and
/// sound, and maps exactly the bytes kept of its file. Returns how many
/// manifests there are.
fn check_kept(cache: &Path, db: &Db, store: &ChunkStore, kept: &[(SourceFile, Vec<u8>)]) -> usize {
    let indexed: std::collections::HashSet<ChunkId> = db
        .load_chunk_index()
        .unwrap()
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    let manifests = db.load_manifests().unwrap();
    for (origin, path, m) in &manifests {
        let (_, head) = kept
            .iter()
            .find(|(s, _)| s.origin == *origin && &s.path == path)
            .expect("a manifest of a kept file");
        let mut bytes = Vec::new();
        for (offset, e) in m.extents() {
            assert_eq!(offset, bytes.len() as u64);
            assert!(
                indexed.contains(&e.id),
                "a manifest names a chunk not indexed"
            );
            bytes.extend(
                store
                    .get(e.id)
                    .expect("an indexed chunk is on disk and sound"),
            );
        }
        assert_eq!(&bytes, head);
    }
    assert!(tmp_entries(cache).is_empty(), "no temp file left");
    manifests.len()
}

#[test]
fn a_keeper_stores_every_batch_and_the_manifests_that_name_them() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ChunkStore::open(dir.path()).unwrap());
    let db = Arc::new(Db::open(dir.path()).unwrap().db);
    let keeper =
        Arc::new(TagKeeper::new(Arc::clone(&store), Arc::clone(&db), 1 << 40, []).unwrap());
    let kept = keep_heads(&keeper, 80);
    let report = keeper.finish().unwrap();
    assert_eq!(report.files, 80);
    assert_eq!(report.bytes, 80 * (300 << 10));
    let index = db.load_chunk_index().unwrap();
    assert_eq!(report.indexed.len(), index.len());
    assert_eq!(check_kept(dir.path(), &db, &store, &kept), 80);
    // All in packs, one per batch of 8 MiB: no chunk file.
    assert!(
        index
            .iter()
            .all(|(id, _, _)| store.packed_at(*id).is_some())
    );
    assert_eq!(fs::read_dir(dir.path().join("packs")).unwrap().count(), 3);
    assert!(chunk_files(dir.path()).is_empty());
    // They are all there after a restart.
    drop((keeper, store));
    let store = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(store.forget_unindexed(&index), 0);
    assert_eq!(check_kept(dir.path(), &db, &store, &kept), 80);
}

/// The chunk files under `cache`, not counting the temp folder.
fn chunk_files(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(cache.join("chunks")).unwrap() {
        let shard = shard.unwrap().path();
        if shard.ends_with("tmp") {
            continue;
        }
        out.extend(fs::read_dir(shard).unwrap().map(|e| e.unwrap().path()));
    }
    out
}

// ----------------------------------------------------------------- packs --

/// `n` chunks of `len` bytes, written into a pack of `store` from two
/// threads (not yet put in place), and as they are.
fn pack_of(
    store: &ChunkStore,
    n: u64,
    len: usize,
    seed: u64,
) -> (PackWriter, Vec<(ChunkId, Vec<u8>)>) {
    let chunks: Vec<(ChunkId, Vec<u8>)> = (0..n).map(|i| chunk(len, seed + i)).collect();
    let pack = store.start_pack().unwrap();
    std::thread::scope(|s| {
        for part in chunks.chunks(chunks.len().div_ceil(2)) {
            let pack = &pack;
            s.spawn(move || {
                for (id, data) in part {
                    let slot = pack.reserve(&[(*id, data.len() as u32)]).unwrap();
                    slot.write(&[(*id, &data[..])]);
                }
            });
        }
    });
    (pack, chunks)
}

fn the_pack(cache: &Path) -> Vec<PathBuf> {
    fs::read_dir(cache.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn a_pack_is_read_back_after_a_restart_and_listed_by_a_scan() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (pack, chunks) = pack_of(&store, 50, 40_000, 1);
    let stored = store.put_pack(&pack).unwrap();
    assert_eq!(stored.len(), 50);
    assert!(chunk_files(dir.path()).is_empty());
    assert!(tmp_entries(dir.path()).is_empty());
    drop(store);
    let store = ChunkStore::open(dir.path()).unwrap();
    for (id, data) in &chunks {
        assert_eq!(&store.get(*id).unwrap(), data);
    }
    let mut listed = store.scan().unwrap();
    listed.sort();
    let mut want: Vec<(ChunkId, u64)> =
        chunks.iter().map(|(id, d)| (*id, d.len() as u64)).collect();
    want.sort();
    assert_eq!(listed, want);
    // Storing a packed chunk again writes no file.
    store.put(chunks[3].0, &chunks[3].1).unwrap();
    assert!(chunk_files(dir.path()).is_empty());
}

#[test]
fn removing_packed_chunks_frees_their_blocks_and_the_last_one_the_pack() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (pack, chunks) = pack_of(&store, 20, 64 << 10, 100);
    store.put_pack(&pack).unwrap();
    let pack_file = the_pack(dir.path()).pop().unwrap();
    let blocks = || fs::metadata(&pack_file).unwrap().blocks() * 512;
    let before = blocks();
    // Read first, as the daemon does: the pack is then open for reading.
    assert_eq!(store.get(chunks[0].0).unwrap(), chunks[0].1);
    for (id, _) in &chunks[..10] {
        store.remove(*id).unwrap();
        assert!(matches!(store.get(*id), Err(ChunkReadError::Missing)));
    }
    assert!(
        blocks() + 10 * (60 << 10) <= before,
        "{} bytes allocated, {before} before removing half",
        blocks()
    );
    for (id, data) in &chunks[10..] {
        assert_eq!(&store.get(*id).unwrap(), data);
    }
    for (id, _) in &chunks[10..] {
        store.remove(*id).unwrap();
    }
    assert!(!pack_file.exists(), "the pack goes with its last chunk");
    assert!(store.scan().unwrap().is_empty());
}

#[test]
fn at_open_packed_chunks_the_index_does_not_name_are_dropped() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (pack, chunks) = pack_of(&store, 12, 30_000, 200);
    store.put_pack(&pack).unwrap();
    let (pack, others) = pack_of(&store, 5, 30_000, 300);
    store.put_pack(&pack).unwrap();
    // Evicted in this run: the pack's table still lists them.
    for (id, _) in &chunks[..4] {
        store.remove(*id).unwrap();
    }
    drop(store);
    let store = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(store.scan().unwrap().len(), 17, "the tables list all");
    // The index names the 8 left of the first pack, none of the second
    // (written by a run that crashed before indexing it).
    let index: Vec<(ChunkId, u32, u64)> = chunks[4..]
        .iter()
        .map(|(id, d)| (*id, d.len() as u32, 0))
        .collect();
    assert_eq!(store.forget_unindexed(&index), 9);
    assert_eq!(the_pack(dir.path()).len(), 1, "the unindexed pack is gone");
    for (id, _) in chunks[..4].iter().chain(&others) {
        assert!(matches!(store.get(*id), Err(ChunkReadError::Missing)));
    }
    for (id, data) in &chunks[4..] {
        assert_eq!(&store.get(*id).unwrap(), data);
    }
    assert_eq!(store.scan().unwrap().len(), 8);
}

#[test]
fn a_damaged_pack_is_reported_never_served() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (pack, chunks) = pack_of(&store, 6, 30_000, 400);
    store.put_pack(&pack).unwrap();
    let path = the_pack(dir.path()).pop().unwrap();
    // A flipped byte in the second chunk: that chunk is corrupt; a fresh
    // copy of its bytes replaces it.
    let mut bytes = fs::read(&path).unwrap();
    let (_, at, _) = store.packed_at(chunks[1].0).unwrap();
    bytes[at as usize + 17] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        store.get(chunks[1].0),
        Err(ChunkReadError::Corrupt { .. })
    ));
    assert_eq!(store.get(chunks[2].0).unwrap(), chunks[2].1);
    store.put(chunks[1].0, &chunks[1].1).unwrap();
    assert_eq!(store.get(chunks[1].0).unwrap(), chunks[1].1);
    assert!(store.packed_at(chunks[1].0).is_none(), "now a chunk file");
    // A damaged table: the pack is deleted at the next open, its chunks
    // are missing (fetched again), the rest of the store opens.
    let len = bytes.len();
    bytes[len - 30] ^= 1;
    fs::write(&path, &bytes).unwrap();
    drop(store);
    let store = ChunkStore::open(dir.path()).unwrap();
    assert!(!path.exists());
    assert!(matches!(
        store.get(chunks[2].0),
        Err(ChunkReadError::Missing)
    ));
    assert_eq!(store.get(chunks[1].0).unwrap(), chunks[1].1);
}

/// A batch of `n` chunks of `len` bytes, as a fetch stores them.
fn batch_of(n: u64, len: usize, seed: u64) -> Vec<(ChunkId, Vec<u8>)> {
    (0..n).map(|i| chunk(len, seed + i)).collect()
}

fn refs(chunks: &[(ChunkId, Vec<u8>)]) -> Vec<(ChunkId, &[u8])> {
    chunks.iter().map(|(id, d)| (*id, &d[..])).collect()
}

#[test]
fn a_large_batch_is_one_pack_in_order_read_back_after_a_restart() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    // 2.5 MiB: past the size from which a batch is packed.
    let chunks = batch_of(40, 64 * 1024, 700);
    let results = store.put_batch(&refs(&chunks));
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let packs = the_pack(dir.path());
    assert_eq!(packs.len(), 1, "{packs:?}");
    // End to end, in the order given, and no chunk file.
    let mut next = 0;
    for (id, data) in &chunks {
        let (pack, offset, len) = store.packed_at(*id).expect("packed");
        assert_eq!(
            (pack, offset, len as usize),
            (packs[0].clone(), next, data.len())
        );
        next += data.len() as u64;
        assert!(!store.path_of(*id).exists());
        assert_eq!(&store.get(*id).unwrap(), data);
    }
    // Marked as read in order (the kernel reads it ahead).
    let bytes = fs::read(&packs[0]).unwrap();
    assert_eq!(&bytes[bytes.len() - 8..], b"MFSPACKS");
    assert!(tmp_entries(dir.path()).is_empty());
    drop(store);
    let store = ChunkStore::open(dir.path()).unwrap();
    let index: Vec<(ChunkId, u32, u64)> = chunks
        .iter()
        .map(|(id, d)| (*id, d.len() as u32, 0))
        .collect();
    assert_eq!(store.forget_unindexed(&index), 0);
    for (id, data) in &chunks {
        assert_eq!(&store.get(*id).unwrap(), data);
    }
    // Evicted one by one, the pack goes with its last chunk.
    for (id, _) in &chunks {
        store.remove(*id).unwrap();
    }
    assert!(the_pack(dir.path()).is_empty());
}

#[test]
fn a_packed_batch_stores_each_chunk_once_and_replaces_a_damaged_one() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let mut chunks = batch_of(30, 60_000, 800);
    // One is stored already, one is damaged on disk, one is named twice
    // and one is too long to be a chunk.
    store.put(chunks[3].0, &chunks[3].1).unwrap();
    fs::write(store.path_of(chunks[5].0), b"rotten").unwrap();
    chunks[9] = chunks[8].clone();
    let big = vec![7u8; CHUNK_MAX_BYTES + 1];
    chunks[20] = (ChunkId::of(&big), big);
    let results = store.put_batch(&refs(&chunks));
    assert_eq!(results.len(), chunks.len());
    for (i, r) in results.iter().enumerate() {
        if i == 20 {
            assert!(matches!(r, Err(StoreError::TooLarge { .. })), "{r:?}");
            assert!(matches!(
                store.get(chunks[20].0),
                Err(ChunkReadError::Missing)
            ));
        } else {
            assert!(r.is_ok(), "{i}: {r:?}");
            assert_eq!(store.get(chunks[i].0).unwrap(), chunks[i].1, "{i}");
        }
    }
    // The stored one stays its file; the damaged file is gone for the
    // packed copy; the twice-named chunk is packed once.
    assert!(store.path_of(chunks[3].0).exists());
    assert!(store.packed_at(chunks[3].0).is_none());
    assert!(!store.path_of(chunks[5].0).exists());
    assert!(store.packed_at(chunks[5].0).is_some());
    let pack = &the_pack(dir.path())[0];
    let size = fs::metadata(pack).unwrap().len();
    let packed_bytes = 27 * 60_000; // 30, less the stored, the twin and the refused
    assert!(
        size >= packed_bytes && size < packed_bytes + 60_000,
        "{size} bytes of pack for {packed_bytes} of chunks"
    );
    // A second copy of the batch stores nothing new.
    let results = store.put_batch(&refs(&chunks));
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 29);
    assert_eq!(the_pack(dir.path()).len(), 1);
}

#[test]
fn a_small_batch_stays_chunk_files() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let chunks = batch_of(4, 64 * 1024, 900);
    assert!(store.put_batch(&refs(&chunks)).iter().all(Result::is_ok));
    assert!(the_pack(dir.path()).is_empty());
    for (id, data) in &chunks {
        assert_eq!(&fs::read(store.path_of(*id)).unwrap(), data);
    }
}

/// Stores `batches` batches of 1.25 MiB, one pack each; their chunks by pack.
fn packed_batches(store: &ChunkStore, batches: u64, seed: u64) -> Vec<Vec<(ChunkId, Vec<u8>)>> {
    (0..batches)
        .map(|b| {
            let chunks = batch_of(20, 64 * 1024, seed + 100 * b);
            assert!(store.put_batch(&refs(&chunks)).iter().all(Result::is_ok));
            chunks
        })
        .collect()
}

fn index_of<'a>(
    chunks: impl IntoIterator<Item = &'a (ChunkId, Vec<u8>)>,
) -> Vec<(ChunkId, u32, u64)> {
    chunks
        .into_iter()
        .map(|(id, d)| (*id, d.len() as u32, 0))
        .collect()
}

/// The store of `cache` opened again: its packs' tables learnt as `how`
/// says, every chunk of `packs` (the index) kept and read back whole.
fn reopened(cache: &Path, how: PacksLoaded, packs: &[Vec<(ChunkId, Vec<u8>)>]) -> ChunkStore {
    let store = ChunkStore::open(cache).unwrap();
    assert_eq!(store.packs_loaded(), how);
    assert_eq!(store.forget_unindexed(&index_of(packs.iter().flatten())), 0);
    for (id, data) in packs.iter().flatten() {
        assert_eq!(&store.get(*id).unwrap(), data);
    }
    store
}

fn loaded(packs: usize, from_saved: usize, read: usize) -> PacksLoaded {
    PacksLoaded {
        packs,
        from_saved,
        read,
    }
}

#[test]
fn a_clean_exits_saved_tables_spare_the_next_open_reading_each_pack() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let mut packs = packed_batches(&store, 3, 1000);
    assert_eq!(the_pack(dir.path()).len(), 3);
    assert!(store.save_pack_tables().unwrap());
    assert!(!store.save_pack_tables().unwrap(), "nothing changed");
    // An eviction changes what is live.
    let (evicted, _) = packs[0].remove(0);
    store.remove(evicted).unwrap();
    assert!(store.save_pack_tables().unwrap());
    drop(store);

    let store = reopened(dir.path(), loaded(3, 3, 0), &packs);
    assert!(matches!(store.get(evicted), Err(ChunkReadError::Missing)));
    // A pack put in place after the save (this run then crashes: no save),
    // and one whose last chunk goes.
    packs.extend(packed_batches(&store, 1, 2000));
    for (id, _) in packs.remove(1) {
        store.remove(id).unwrap();
    }
    drop(store);

    let store = reopened(dir.path(), loaded(3, 2, 1), &packs);
    assert!(store.save_pack_tables().unwrap());
    drop(store);
    let store = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(store.packs_loaded(), loaded(3, 3, 0));
}

#[test]
fn a_saved_table_holds_only_for_the_pack_it_was_saved_from() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let packs = packed_batches(&store, 2, 3000);
    assert!(store.save_pack_tables().unwrap());
    let (a, _, _) = store.packed_at(packs[0][0].0).unwrap();
    let (b, _, _) = store.packed_at(packs[1][0].0).unwrap();
    drop(store);
    // Another file under pack a's name (as an older version that knows no
    // saved tables might leave it): its own table is read.
    let copy = dir.path().join("copy");
    fs::copy(&b, &copy).unwrap();
    fs::rename(&copy, &a).unwrap();

    let store = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(store.packs_loaded(), loaded(2, 1, 1));
    for (id, data) in &packs[1] {
        assert_eq!(&store.get(*id).unwrap(), data);
    }
    for (id, _) in &packs[0] {
        assert!(matches!(store.get(*id), Err(ChunkReadError::Missing)));
    }
}

#[test]
fn a_new_pack_never_takes_the_number_of_one_whose_table_was_saved() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let mut packs = packed_batches(&store, 3, 5000);
    assert!(store.save_pack_tables().unwrap());
    let last = store.packed_at(packs[2][0].0).unwrap().0;
    // The last pack goes, and the run ends without a save (a crash).
    for (id, _) in packs.remove(2) {
        store.remove(id).unwrap();
    }
    assert!(!last.exists());
    drop(store);

    let store = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(store.packs_loaded(), loaded(2, 2, 0));
    packs.extend(packed_batches(&store, 1, 6000));
    let new = store.packed_at(packs[2][0].0).unwrap().0;
    assert_ne!(new, last, "a saved table names that pack");
    drop(store);
    // (Had it taken the number, and the file system the inode, the saved
    // table would have been taken for the new pack's.)
    reopened(dir.path(), loaded(3, 2, 1), &packs);
}

#[test]
fn a_long_run_saves_the_pack_tables_again_once_enough_packs_are_new() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let mut packs = packed_batches(&store, 3, 7000);
    assert!(!store.save_pack_tables_after(4).unwrap());
    packs.extend(packed_batches(&store, 1, 7300));
    assert!(store.save_pack_tables_after(4).unwrap());
    assert!(
        !store.save_pack_tables_after(4).unwrap(),
        "no pack new since"
    );
    packs.extend(packed_batches(&store, 1, 7400));
    // A crash: the last pack's table was never saved.
    drop(store);
    let store = reopened(dir.path(), loaded(5, 4, 1), &packs);
    // The table that open read counts as new.
    assert!(store.save_pack_tables_after(1).unwrap());
    drop(store);
    reopened(dir.path(), loaded(5, 5, 0), &packs);
}

#[test]
fn damaged_saved_tables_are_ignored_and_every_table_read() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let packs = packed_batches(&store, 2, 4000);
    assert!(store.save_pack_tables().unwrap());
    drop(store);
    let saved = dir.path().join("packs.tables");
    let good = fs::read(&saved).unwrap();
    let mut flipped = good.clone();
    flipped[30] ^= 0x40;
    for damaged in [
        flipped,
        good[..good.len() - 9].to_vec(),
        b"MFSPTAB1".to_vec(),
    ] {
        fs::write(&saved, &damaged).unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        assert_eq!(store.packs_loaded(), loaded(2, 0, 2));
        for (id, data) in packs.iter().flatten() {
            assert_eq!(&store.get(*id).unwrap(), data);
        }
    }
    // Saved again, they are used again.
    let store = ChunkStore::open(dir.path()).unwrap();
    assert!(store.save_pack_tables().unwrap());
    drop(store);
    let store = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(store.packs_loaded(), loaded(2, 2, 0));
}

// ----------------------------------------------------------- fail points --

#[cfg(feature = "failpoints")]
mod failpoints {
    use super::*;

    #[test]
    fn a_keeper_whose_write_fails_writes_no_manifest_after_it() {
        let _g = serial();
        let scenario = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ChunkStore::open(dir.path()).unwrap());
        let db = Arc::new(Db::open(dir.path()).unwrap().db);
        let keeper =
            Arc::new(TagKeeper::new(Arc::clone(&store), Arc::clone(&db), 1 << 40, []).unwrap());
        // The disk fills after the first batch (8 MiB, of 23 MiB).
        fail::cfg("cas-pack-before-write", "1*off->return(ENOSPC)").unwrap();
        let kept = keep_heads(&keeper, 80);
        let report = keeper.finish().unwrap();
        fail::remove("cas-pack-before-write");
        assert!(
            !keeper.wants_more(),
            "nothing more is kept after a failed write"
        );
        let manifests = check_kept(dir.path(), &db, &store, &kept);
        assert_eq!(report.files as usize, manifests);
        assert!(
            (1..80).contains(&manifests),
            "{manifests} files kept: the batches before the failure, none after"
        );
        scenario.teardown();
    }

    #[test]
    fn a_packed_batch_that_fails_leaves_nothing_a_restart_keeps() {
        let _g = serial();
        let scenario = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let chunks = batch_of(24, 64 * 1024, 1000);
        let gone = |store: &ChunkStore| {
            chunks
                .iter()
                .all(|(id, _)| matches!(store.get(*id), Err(ChunkReadError::Missing)))
        };
        // Refused before a byte is written, each chunk with the errno.
        fail::cfg("cas-put-before-write", "return(ENOSPC)").unwrap();
        let results = store.put_batch(&refs(&chunks));
        fail::remove("cas-put-before-write");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(e) if e.disk_fault() == Some(DiskFault::NoSpace))),
            "{results:?}"
        );
        // The pack fails as it is put in place: every chunk fails with it.
        fail::cfg("cas-pack-before-write", "return(ENOSPC)").unwrap();
        let results = store.put_batch(&refs(&chunks));
        fail::remove("cas-pack-before-write");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(e) if e.disk_fault() == Some(DiskFault::NoSpace))),
            "{results:?}"
        );
        assert!(the_pack(dir.path()).is_empty());
        assert!(tmp_entries(dir.path()).is_empty());
        assert!(gone(&store));
        // In place, then "crashed" before the caller indexed it: the
        // next open drops it.
        fail::cfg("cas-put-after-write-before-index", "return").unwrap();
        assert!(store.put_batch(&refs(&chunks)).iter().all(Result::is_err));
        fail::remove("cas-put-after-write-before-index");
        assert_eq!(the_pack(dir.path()).len(), 1);
        drop(store);
        let store = ChunkStore::open(dir.path()).unwrap();
        assert_eq!(store.forget_unindexed(&[]), chunks.len());
        assert!(the_pack(dir.path()).is_empty());
        assert!(gone(&store));
        // And a batch after the failures is stored whole.
        assert!(store.put_batch(&refs(&chunks)).iter().all(Result::is_ok));
        for (id, data) in &chunks {
            assert_eq!(&store.get(*id).unwrap(), data);
        }
        scenario.teardown();
    }

    #[test]
    fn a_pack_that_fails_leaves_nothing_a_restart_keeps() {
        let _g = serial();
        let scenario = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let (pack, chunks) = pack_of(&store, 8, 30_000, 500);
        fail::cfg("cas-pack-before-write", "return(ENOSPC)").unwrap();
        let err = store.put_pack(&pack).unwrap_err();
        fail::remove("cas-pack-before-write");
        assert_eq!(err.disk_fault(), Some(DiskFault::NoSpace), "{err:?}");
        assert!(the_pack(dir.path()).is_empty());
        assert!(tmp_entries(dir.path()).is_empty());
        // Written and in place, then the write "fails" before the caller
        // indexes it: the next open drops what the index does not name.
        let (pack, _) = pack_of(&store, 8, 30_000, 500);
        fail::cfg("cas-put-after-write-before-index", "return").unwrap();
        assert!(store.put_pack(&pack).is_err());
        fail::remove("cas-put-after-write-before-index");
        assert_eq!(the_pack(dir.path()).len(), 1);
        drop(store);
        let store = ChunkStore::open(dir.path()).unwrap();
        assert_eq!(store.forget_unindexed(&[]), 8);
        assert!(the_pack(dir.path()).is_empty());
        assert!(matches!(
            store.get(chunks[0].0),
            Err(ChunkReadError::Missing)
        ));
        scenario.teardown();
    }

    #[test]
    fn put_failing_before_the_write_leaves_no_file() {
        let _g = serial();
        let scenario = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let (id, data) = chunk(80_000, 10);

        fail::cfg("cas-put-before-write", "return").unwrap();
        let err = store.put(id, &data).unwrap_err();
        assert!(matches!(err, StoreError::Injected { .. }), "{err:?}");
        assert!(!store.path_of(id).exists());
        assert!(tmp_entries(dir.path()).is_empty());
        assert!(matches!(store.get(id), Err(ChunkReadError::Missing)));
        assert!(store.scan().unwrap().is_empty());

        // The argument names the errno, so callers can test passthrough.
        fail::cfg("cas-put-before-write", "return(ENOSPC)").unwrap();
        let err = store.put(id, &data).unwrap_err();
        assert_eq!(err.disk_fault(), Some(DiskFault::NoSpace), "{err:?}");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));

        fail::remove("cas-put-before-write");
        store.put(id, &data).unwrap();
        assert_eq!(store.get(id).unwrap(), data);
        scenario.teardown();
    }

    #[test]
    fn put_failing_after_the_write_leaves_a_complete_file() {
        let _g = serial();
        let scenario = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let (id, data) = chunk(200_000, 11);

        fail::cfg("cas-put-after-write-before-index", "return").unwrap();
        assert!(store.put(id, &data).is_err());
        // "Crashed" after the rename: the file is whole and verifies.
        assert_eq!(
            fs::metadata(store.path_of(id)).unwrap().len(),
            data.len() as u64
        );
        assert!(tmp_entries(dir.path()).is_empty());
        fail::remove("cas-put-after-write-before-index");
        drop(store);

        // After the restart the index is rebuilt from a scan.
        let store = ChunkStore::open(dir.path()).unwrap();
        assert_eq!(store.scan().unwrap(), vec![(id, data.len() as u64)]);
        assert_eq!(store.get(id).unwrap(), data);
        scenario.teardown();
    }

    #[test]
    fn db_open_corrupt_forces_a_fresh_database() {
        let _g = serial();
        let scenario = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        {
            let out = Db::open(dir.path()).unwrap();
            assert!(out.repaired.is_none());
            out.db.set_meta("k", b"v").unwrap();
            out.db.close().unwrap();
        }
        fail::cfg("db-open-corrupt", "return").unwrap();
        let out = Db::open(dir.path()).unwrap();
        let what = out.repaired.as_deref().expect("fail point forces a repair");
        assert!(what.contains("db-open-corrupt"), "{what}");
        assert_eq!(out.db.get_meta("k").unwrap(), None);
        assert_eq!(corrupt_dirs(dir.path()).len(), 1);
        out.db.close().unwrap();

        fail::remove("db-open-corrupt");
        let out = Db::open(dir.path()).unwrap();
        assert!(out.repaired.is_none());
        assert_eq!(out.db.get_meta("k").unwrap(), None);
        scenario.teardown();
    }
}

// ---------------------------------------------------- real disk failures --

#[test]
fn a_full_then_read_only_disk_is_a_disk_failure() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&dir.path().join("cache"), "size=1m");
    let store = ChunkStore::open(mnt.path()).unwrap();
    let free_before = store.free_bytes().unwrap();
    assert!(free_before <= 1024 * 1024, "free {free_before}");

    let mut stored = Vec::new();
    let mut failure = None;
    for seed in 0..16 {
        let (id, data) = chunk(256 * 1024, 200 + seed);
        match store.put(id, &data) {
            Ok(()) => stored.push((id, data)),
            Err(e) => {
                failure = Some((id, e));
                break;
            }
        }
    }
    let (failed_id, err) = failure.expect("a 1 MiB tmpfs must fill up");
    assert_eq!(err.disk_fault(), Some(DiskFault::NoSpace), "{err:?}");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err:?}");
    assert!(!stored.is_empty());
    // No partial chunk, no leftover temp file, earlier chunks intact.
    assert!(!store.path_of(failed_id).exists());
    assert!(tmp_entries(mnt.path()).is_empty());
    for (id, data) in &stored {
        assert_eq!(&store.get(*id).unwrap(), data);
    }
    assert!(store.free_bytes().unwrap() < 256 * 1024);

    // Make room, then lose write access altogether.
    store.remove(stored[0].0).unwrap();
    mnt.remount_read_only();
    let (id, data) = chunk(1000, 300);
    let err = store.put(id, &data).unwrap_err();
    assert_eq!(err.disk_fault(), Some(DiskFault::ReadOnly), "{err:?}");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err:?}");
    // Reading still works on a read-only cache.
    assert_eq!(store.get(stored[1].0).unwrap(), stored[1].1);
    let err = store.remove(stored[1].0).unwrap_err();
    assert_eq!(err.disk_fault(), Some(DiskFault::ReadOnly), "{err:?}");
    drop(mnt);
}

#[test]
fn a_database_on_a_read_only_disk_fails_as_a_disk_failure() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&dir.path().join("cache"), "size=4m");
    mnt.remount_read_only();
    let err = Db::open(mnt.path()).unwrap_err();
    assert!(err.is_disk_failure(), "{err:?}");
    drop(mnt);
}

// ------------------------------------------------- descriptor exhaustion --

const FD_CHILD_ENV: &str = "MUSICFS_STORE_TEST_FD_CHILD";
const FD_CHILD_OK: &str = "fd-exhaustion-child: all checks passed";

#[test]
fn running_out_of_descriptors_is_reported_not_a_panic() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fd_exhaustion_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FD_CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(FD_CHILD_OK),
        "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// Runs only as the child of the test above (it does nothing otherwise):
/// lowering RLIMIT_NOFILE would hurt every other test in this process.
#[test]
fn fd_exhaustion_child() {
    let Some(dir) = std::env::var_os(FD_CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let store = ChunkStore::open(&dir).unwrap();
    let (id, data) = chunk(40_000, 400);
    store.put(id, &data).unwrap();

    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_max.min(64);
    // SAFETY: valid pointer to an initialised rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);

    let mut hog = Vec::new();
    loop {
        match fs::File::open("/dev/null") {
            Ok(f) => hog.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
        assert!(hog.len() < 100_000, "RLIMIT_NOFILE had no effect");
    }

    let err = store.get(id).unwrap_err();
    assert_eq!(err.disk_fault(), Some(DiskFault::NoDescriptors), "{err:?}");
    assert!(!err.is_disk_failure(), "{err:?}");
    let (id2, data2) = chunk(1000, 401);
    let err = store.put(id2, &data2).unwrap_err();
    assert_eq!(err.disk_fault(), Some(DiskFault::NoDescriptors), "{err:?}");
    assert!(!err.is_disk_failure(), "{err:?}");

    drop(hog);
    assert_eq!(store.get(id).unwrap(), data);
    store.put(id2, &data2).unwrap();
    assert_eq!(store.get(id2).unwrap(), data2);
    println!("{FD_CHILD_OK}");
}

// -------------------------------------------------------------- database --

fn entry(origin: u16, path: &[u8], kind: FileKind) -> CatalogEntry {
    CatalogEntry {
        source: SourceFile {
            origin: OriginId(origin),
            path: OriginPath::new(path),
            version: FileVersion {
                size: 1234 + path.len() as u64,
                mtime_ns: -5,
                token: Some(format!("etag-{}", path.len()).into()),
            },
        },
        kind,
    }
}

fn track(title: &str) -> FileKind {
    FileKind::Track(TrackTags {
        title: Some(title.into()),
        artist: Some("Artist".into()),
        track: Some(3),
        year: Some(1999),
        compilation: true,
        ..TrackTags::default()
    })
}

fn manifest(size: u64, seeds: &[u64]) -> Manifest {
    let mut m = Manifest::new(FileVersion {
        size,
        mtime_ns: 42,
        token: None,
    });
    let mut off = 0;
    for &s in seeds {
        m.insert(
            off,
            Extent {
                len: 1000,
                id: ChunkId(u128::MAX - u128::from(s)),
            },
        )
        .unwrap();
        off += 3000;
    }
    m
}

fn corrupt_dirs(cache: &Path) -> Vec<PathBuf> {
    fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("db.corrupt-"))
        })
        .collect()
}

#[test]
fn db_round_trips_everything() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = Db::open(dir.path()).unwrap();
    assert!(out.repaired.is_none());
    let db = out.db;

    let entries = vec![
        entry(0, b"A/B/01.flac", track("One")),
        entry(0, b"A/B/cover.jpg", FileKind::Cover),
        entry(
            0,
            b"A/\xff\xfe/x.mp3",
            FileKind::Unreadable("bad header".into()),
        ),
        entry(1, b"A/B/01.flac", track("Other origin")),
    ];
    db.put_catalog(&entries).unwrap();
    let mut want = entries.clone();
    want.sort_by(|a, b| (a.source.origin, &a.source.path).cmp(&(b.source.origin, &b.source.path)));
    assert_eq!(db.load_catalog().unwrap(), want);

    // Replacing origin 0's catalog drops what it no longer has, keeps origin 1.
    let new0 = vec![
        entry(0, b"A/B/01.flac", track("One, retagged")),
        entry(0, b"C/D/02.ogg", track("Two")),
    ];
    db.replace_catalog_for_origin(OriginId(0), &new0).unwrap();
    let got = db.load_catalog().unwrap();
    assert_eq!(
        got,
        vec![new0[0].clone(), new0[1].clone(), entries[3].clone()]
    );
    db.remove_catalog(OriginId(0), &OriginPath::new(&b"C/D/02.ogg"[..]))
        .unwrap();
    db.remove_catalog(OriginId(9), &OriginPath::new(&b"nothing"[..]))
        .unwrap();
    assert_eq!(
        db.load_catalog().unwrap(),
        vec![new0[0].clone(), entries[3].clone()]
    );

    let p1 = OriginPath::new(&b"A/B/01.flac"[..]);
    let p2 = OriginPath::new(&b"Z/\x80.wav"[..]);
    let (m1, m2) = (manifest(10_000, &[1, 2, 3]), manifest(5_000, &[]));
    db.put_manifest(OriginId(1), &p1, &m1).unwrap();
    db.put_manifest(OriginId(0), &p2, &m2).unwrap();
    assert_eq!(
        db.load_manifests().unwrap(),
        vec![
            (OriginId(0), p2.clone(), m2.clone()),
            (OriginId(1), p1.clone(), m1.clone())
        ]
    );
    db.remove_manifest(OriginId(0), &p2).unwrap();
    assert_eq!(db.load_manifests().unwrap(), vec![(OriginId(1), p1, m1)]);

    let (a, b, c) = (ChunkId(1), ChunkId(u128::MAX), ChunkId(1 << 100));
    db.put_chunks(&[(a, 10, 100), (b, 20, 200), (c, 30, u64::MAX)])
        .unwrap();
    db.remove_chunks(&[c, ChunkId(77)]).unwrap();
    db.touch_chunks(&[(a, 150), (c, 999)]).unwrap();
    assert_eq!(
        db.load_chunk_index().unwrap(),
        vec![(a, 10, 150), (b, 20, 200)]
    );

    assert_eq!(db.get_meta(META_LIBRARY_FINGERPRINT).unwrap(), None);
    db.set_meta(META_LIBRARY_FINGERPRINT, b"origins: /music")
        .unwrap();
    assert_eq!(
        db.get_meta(META_LIBRARY_FINGERPRINT).unwrap(),
        Some(b"origins: /music".to_vec())
    );
    db.flush().unwrap();
}

#[test]
fn db_keeps_its_data_across_a_reopen() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let e = entry(3, b"x/y.flac", track("Kept"));
    let p = OriginPath::new(&b"x/y.flac"[..]);
    let m = manifest(9_000, &[5, 6]);
    {
        let db = Db::open(dir.path()).unwrap().db;
        db.put_catalog(std::slice::from_ref(&e)).unwrap();
        db.put_manifest(OriginId(3), &p, &m).unwrap();
        db.put_chunks(&[(ChunkId(5), 1000, 7)]).unwrap();
        db.set_meta("k", b"v").unwrap();
        db.close().unwrap();
    }
    let out = Db::open(dir.path()).unwrap();
    assert!(out.repaired.is_none(), "{:?}", out.repaired);
    assert_eq!(out.db.load_catalog().unwrap(), vec![e]);
    assert_eq!(out.db.load_manifests().unwrap(), vec![(OriginId(3), p, m)]);
    assert_eq!(
        out.db.load_chunk_index().unwrap(),
        vec![(ChunkId(5), 1000, 7)]
    );
    assert_eq!(out.db.get_meta("k").unwrap(), Some(b"v".to_vec()));
    assert!(corrupt_dirs(dir.path()).is_empty());
}

#[test]
fn a_second_open_while_in_use_fails_without_moving_anything() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let first = Db::open(dir.path()).unwrap().db;
    first.set_meta("k", b"v").unwrap();
    first.flush().unwrap();
    let err = Db::open(dir.path()).unwrap_err();
    assert_eq!(
        err.disk_fault(),
        None,
        "a held lock is not the disk: {err:?}"
    );
    assert!(err.is_locked(), "{err:?}");
    assert!(corrupt_dirs(dir.path()).is_empty());
    first.close().unwrap();
    let out = Db::open(dir.path()).unwrap();
    assert!(out.repaired.is_none());
    assert_eq!(out.db.get_meta("k").unwrap(), Some(b"v".to_vec()));
}

fn garbage(len: usize) -> Vec<u8> {
    noise(len, 0xbad)
}

fn assert_recovers_from(damage: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap().db;
        db.put_catalog(&[entry(0, b"a.flac", track("A"))]).unwrap();
        db.put_chunks(&[(ChunkId(1), 1, 1)]).unwrap();
        db.close().unwrap();
    }
    damage(&dir.path().join("db"));

    let out = Db::open(dir.path()).unwrap();
    let what = out
        .repaired
        .clone()
        .expect("a damaged database is repaired");
    let aside = corrupt_dirs(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(what.contains(&*aside[0].to_string_lossy()), "{what}");
    // The damaged files were moved, not deleted.
    assert!(aside[0].join("db").exists());

    // The new database is empty and works.
    let db = out.db;
    assert!(db.load_catalog().unwrap().is_empty());
    assert!(db.load_chunk_index().unwrap().is_empty());
    db.put_chunks(&[(ChunkId(2), 2, 2)]).unwrap();
    db.close().unwrap();
    let out = Db::open(dir.path()).unwrap();
    assert!(out.repaired.is_none(), "{:?}", out.repaired);
    assert_eq!(out.db.load_chunk_index().unwrap(), vec![(ChunkId(2), 2, 2)]);
}

#[test]
fn a_database_with_garbage_files_is_moved_aside_and_replaced() {
    let _g = serial();
    assert_recovers_from(|db| {
        fs::write(db.join("conf"), garbage(4096)).unwrap();
        fs::write(db.join("db"), garbage(64 * 1024)).unwrap();
    });
}

#[test]
fn a_database_with_a_garbage_data_file_is_moved_aside_and_replaced() {
    let _g = serial();
    // sled opens this one as an empty database; it must not pass as healthy.
    assert_recovers_from(|db| fs::write(db.join("db"), garbage(64 * 1024)).unwrap());
}

#[test]
fn a_database_with_a_garbage_config_is_moved_aside_and_replaced() {
    let _g = serial();
    assert_recovers_from(|db| fs::write(db.join("conf"), garbage(100)).unwrap());
}
