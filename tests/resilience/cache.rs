//! The cache never serves a wrong byte: corrupt, missing and unreadable
//! chunks, a full or read-only cache disk, and eviction, on the real daemon
//! (engine, chunk store, database, local origin), without FUSE.

use musicfs::store::{ChunkBackend, ChunkStore, Db};
use musicfs_core::ChunkId;
use musicfs_core::engine::Config;
use musicfs_tests::disk::{Tmpfs, cached_bytes, damage_cached_chunks, remove_cached_chunks};
use musicfs_tests::faults::FaultyCasStore;
use musicfs_tests::fixtures::{TestDaemon, local_origin, scan, write_wav};
use musicfs_tests::{files_under, wait_for};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const SONG: &str = "Band/Record/00 - Song.wav";

struct Lib {
    dir: tempfile::TempDir,
}

impl Lib {
    /// A library with one 3 MiB track, plus `extra` more of `extra_bytes`.
    fn new(extra: usize, extra_bytes: usize) -> Lib {
        let dir = tempfile::tempdir().unwrap();
        write_wav(
            &dir.path().join("lib/song.wav"),
            3 << 20,
            1,
            "Song",
            "Band",
            "Record",
        );
        for i in 0..extra {
            let title = format!("Extra {i:02}");
            write_wav(
                &dir.path().join(format!("lib/x{i}.wav")),
                extra_bytes,
                10 + i as u64,
                &title,
                "Band",
                "Extras",
            );
        }
        Lib { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("lib")
    }
    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    fn bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.root().join(name)).unwrap()
    }
    /// A daemon over this library, storing into `store`, its database in
    /// `db_dir`.
    fn daemon(&self, store: Arc<dyn ChunkBackend>, db_dir: &Path) -> TestDaemon {
        TestDaemon::start(
            &scan(&self.root()),
            vec![local_origin(&self.root())],
            store,
            db_dir,
            config(),
        )
    }
}

fn chunk_files(cache: &Path) -> Vec<PathBuf> {
    let chunks = cache.join("chunks");
    files_under(&chunks)
        .into_iter()
        .filter(|p| !p.starts_with("tmp"))
        .map(|p| chunks.join(p))
        .collect()
}

fn config() -> Config {
    Config {
        disk_probe_interval: Duration::from_millis(200),
        ..Config::default()
    }
}

#[test]
fn test_corrupt_chunk_auto_refetched() {
    let lib = Lib::new(0, 0);
    let d = TestDaemon::local(&lib.root(), &lib.cache(), config());
    let want = lib.bytes("song.wav");
    assert_eq!(d.read_all(SONG, T).unwrap(), want);
    d.persist();
    drop(d);
    // Every cached chunk, in its file or its pack.
    let damaged = damage_cached_chunks(&lib.cache(), 1);
    assert!(damaged > 10, "the song is cut into chunks: {damaged}");
    // A new daemon: nothing in memory, every chunk comes off the disk.
    let d = TestDaemon::local(&lib.root(), &lib.cache(), config());
    assert_eq!(d.read_all(SONG, T).unwrap(), want);
    let dropped = d.daemon.inspect(|e| e.stats().chunks_dropped);
    assert!(
        dropped as usize >= damaged,
        "{dropped} chunks dropped, {damaged} corrupted"
    );
    // The cache healed: every chunk file holds the bytes its name says.
    assert!(wait_for(T, || chunk_files(&lib.cache()).iter().all(|f| {
        let id = ChunkId::from_hex(&f.file_name().unwrap().to_string_lossy()).unwrap();
        std::fs::read(f).is_ok_and(|b| id.matches(&b))
    })));
}

#[test]
fn test_missing_chunk_triggers_origin_fetch() {
    let lib = Lib::new(0, 0);
    let d = TestDaemon::local(&lib.root(), &lib.cache(), config());
    let want = lib.bytes("song.wav");
    assert_eq!(d.read_all(SONG, T).unwrap(), want);
    d.persist();
    drop(d);
    // Every other cached chunk, from its file or its pack.
    assert!(remove_cached_chunks(&lib.cache(), 2) > 5);
    let d = TestDaemon::local(&lib.root(), &lib.cache(), config());
    assert_eq!(d.read_all(SONG, T).unwrap(), want);
    assert!(d.daemon.inspect(|e| e.stats().chunks_dropped) > 0);
}

#[test]
fn corrupt_reads_from_a_faulty_store_never_reach_the_reader() {
    let lib = Lib::new(0, 0);
    let store = Arc::new(FaultyCasStore::new(ChunkStore::open(&lib.cache()).unwrap()));
    let d = lib.daemon(store.clone(), &lib.cache());
    let want = lib.bytes("song.wav");
    assert_eq!(d.read_all(SONG, T).unwrap(), want);
    d.persist();
    drop(d);
    store.inject_corruption.store(true, Ordering::SeqCst);
    let d = lib.daemon(store.clone(), &lib.cache());
    // Every chunk read off the disk is corrupted on the way: the reader still
    // gets exactly the origin's bytes.
    assert_eq!(
        d.read(SONG, 1 << 20, 200_000, T).unwrap(),
        want[1 << 20..(1 << 20) + 200_000]
    );
}

#[test]
fn test_passthrough_mode_when_cache_disk_dead() {
    let lib = Lib::new(0, 0);
    let store = Arc::new(FaultyCasStore::new(ChunkStore::open(&lib.cache()).unwrap()));
    let d = lib.daemon(store.clone(), &lib.cache());
    let want = lib.bytes("song.wav");
    store.inject_enospc.store(true, Ordering::SeqCst);
    assert_eq!(d.read(SONG, 0, 100_000, T).unwrap(), want[..100_000]);
    // The read was answered from memory; the write that fails behind it
    // switches to passthrough.
    assert!(
        wait_for(T, || d.daemon.inspect(|e| e.in_passthrough())),
        "a full disk switches to passthrough"
    );
    let before = chunk_files(&lib.cache()).len();
    assert_eq!(
        d.read_all(SONG, T).unwrap(),
        want,
        "passthrough serves the origin's bytes"
    );
    assert_eq!(
        chunk_files(&lib.cache()).len(),
        before,
        "nothing is cached while the disk is full"
    );
    // The disk recovers: the probe notices and caching resumes.
    store.inject_enospc.store(false, Ordering::SeqCst);
    assert!(
        wait_for(T, || !d.daemon.inspect(|e| e.in_passthrough())),
        "back from passthrough"
    );
    assert_eq!(d.read_all(SONG, T).unwrap(), want);
    d.flush_writes(); // reads are answered before their chunks are written
    assert!(chunk_files(&lib.cache()).len() > before, "caching resumed");
}

#[test]
fn unreadable_cache_disk_falls_back_to_the_origin() {
    let lib = Lib::new(0, 0);
    let store = Arc::new(FaultyCasStore::new(ChunkStore::open(&lib.cache()).unwrap()));
    let d = lib.daemon(store.clone(), &lib.cache());
    let want = lib.bytes("song.wav");
    assert_eq!(d.read_all(SONG, T).unwrap(), want);
    d.persist();
    drop(d);
    store.inject_eio_on_read.store(true, Ordering::SeqCst);
    let d = lib.daemon(store.clone(), &lib.cache());
    assert_eq!(d.read(SONG, 5000, 100_000, T).unwrap(), want[5000..105_000]);
    assert!(
        d.daemon.inspect(|e| e.in_passthrough()),
        "EIO on the cache disk means passthrough"
    );
}

#[test]
fn test_cas_put_handles_enospc() {
    // A real 1 MiB tmpfs as the cache's chunk directory: it fills up for real.
    let lib = Lib::new(0, 0);
    std::fs::create_dir_all(lib.cache()).unwrap();
    let db_dir = lib.dir.path().join("dbcache");
    let disk = Tmpfs::mount(&lib.cache(), "size=1m");
    let store = Arc::new(ChunkStore::open(disk.path()).unwrap());
    let d = lib.daemon(store, &db_dir);
    let want = lib.bytes("song.wav");
    assert_eq!(d.read_all(SONG, T).unwrap(), want);
    // The reads were answered from memory; the writes failing behind them
    // switch to passthrough.
    assert!(
        wait_for(T, || d.daemon.inspect(|e| e.in_passthrough())),
        "ENOSPC switched to passthrough"
    );
    // More room: the probe puts it back to normal.
    disk.remount("size=64m", false);
    assert!(wait_for(T, || !d.daemon.inspect(|e| e.in_passthrough())));
    assert_eq!(d.read_all(SONG, T).unwrap(), want);
}

#[test]
fn a_read_only_cache_disk_is_passthrough_until_writable() {
    let lib = Lib::new(0, 0);
    let db_dir = lib.dir.path().join("dbcache");
    let disk = Tmpfs::mount(&lib.cache(), "size=64m");
    let store = Arc::new(ChunkStore::open(disk.path()).unwrap());
    let d = lib.daemon(store, &db_dir);
    disk.remount_read_only();
    let want = lib.bytes("song.wav");
    assert_eq!(d.read_all(SONG, T).unwrap(), want);
    assert!(wait_for(T, || d.daemon.inspect(|e| e.in_passthrough())));
    disk.remount("", false);
    assert!(wait_for(T, || !d.daemon.inspect(|e| e.in_passthrough())));
}

#[test]
fn test_eviction_triggers_at_watermark() {
    // Ten 600 KB tracks through a 2 MiB cache.
    let lib = Lib::new(10, 600_000);
    let capacity = 2u64 << 20;
    let d = TestDaemon::local(
        &lib.root(),
        &lib.cache(),
        Config {
            cache_capacity_bytes: capacity,
            ..config()
        },
    );
    for i in 0..10 {
        let path = format!("Band/Extras/00 - Extra {i:02}.wav");
        assert_eq!(
            d.read_all(&path, T).unwrap(),
            lib.bytes(&format!("x{i}.wav")),
            "{path}"
        );
        let cached = d.daemon.inspect(|e| e.cache().bytes());
        assert!(
            cached <= capacity * 9 / 10,
            "cache holds {cached} bytes over its start watermark"
        );
    }
    // Eviction deletes the files in the background; the disk follows.
    let on_disk = || cached_bytes(&lib.cache());
    assert!(
        wait_for(T, || on_disk() <= capacity),
        "{} bytes on disk",
        on_disk()
    );
    assert!(d.daemon.inspect(|e| e.stats().chunks_evicted) > 0);
    // The index agrees with the disk after a restart.
    d.persist();
    drop(d);
    let db = Db::open(&lib.cache()).unwrap().db;
    let indexed: u64 = db
        .load_chunk_index()
        .unwrap()
        .iter()
        .map(|c| u64::from(c.1))
        .sum();
    assert!(indexed <= capacity, "index lists {indexed} bytes");
}
