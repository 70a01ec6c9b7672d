//! End to end: the cache never serves a wrong byte and survives crashes,
//! corruption and a failing disk, through real mounts of the real binary.

use musicfs_tests::disk::{Tmpfs, cached_bytes, damage_cached_chunks};
use musicfs_tests::fixtures::{WavTags, write_wav, write_wav_tagged};
use musicfs_tests::mount::{
    MountCommand, Mounted, NOBODY, as_nobody, control_ok, is_mounted, run_as,
};
use musicfs_tests::{files_under, sha256_bytes, sha256_file, wait_for};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
const UP: Duration = Duration::from_secs(60);

/// A library of `n` WAV tracks of 1-4 MiB, and the SHA-256 of each by its
/// virtual path.
struct Setup {
    dir: tempfile::TempDir,
    want: BTreeMap<PathBuf, String>,
}

impl Setup {
    fn new(n: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let mut want = BTreeMap::new();
        for i in 0..n {
            let path = dir.path().join(format!("lib/disc/t{i:02}.wav"));
            let title = format!("Track {i:02}");
            write_wav(
                &path,
                (1 << 20) + (i % 4) * (1 << 20) + i * 1000,
                i as u64 + 3,
                &title,
                "Band",
                "Album",
            );
            want.insert(
                PathBuf::from(format!("Band/Album/00 - {title}.wav")),
                sha256_file(&path).unwrap(),
            );
        }
        Setup { dir, want }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    /// Nothing is indexed that is not on disk: every chunk the index of a
    /// killed mount lists is in its file or pack, whole. (Reads are served
    /// from memory before their chunks are durable; the index must still
    /// learn of a chunk only after its file is in place.)
    fn index_is_on_disk(&self, round: u64) {
        let cache = self.path("cache");
        let db = musicfs::store::Db::open(&cache)
            .expect("the killed mount's database opens")
            .db;
        let store = musicfs::store::ChunkStore::open(&cache).expect("chunk store");
        let index = db.load_chunk_index().expect("chunk index");
        for (id, len, _) in &index {
            // `get` verifies the bytes against the id.
            let bytes = store.get(*id).unwrap_or_else(|e| {
                panic!("round {round}: chunk {id} is indexed but not whole on disk: {e:?}")
            });
            assert_eq!(bytes.len(), *len as usize, "round {round}: chunk {id}");
        }
    }
    fn command(&self) -> MountCommand {
        MountCommand::in_dir(Path::new(BIN), self.dir.path())
    }
    fn mount(&self) -> Mounted {
        self.command().start(UP)
    }
    /// Mounted with the origin's `options` (such as `",fill=inline"`).
    fn mount_with(&self, options: &str) -> Mounted {
        MountCommand::in_dir_with(Path::new(BIN), self.dir.path(), options).start(UP)
    }
    fn check_all(&self, m: &Mounted) {
        for (rel, hash) in &self.want {
            let got = sha256_file(&m.mountpoint.join(rel))
                .unwrap_or_else(|e| panic!("{rel:?}: {e}\n{}", m.log_text()));
            assert_eq!(&got, hash, "{rel:?} differs from its origin");
        }
    }
    /// The packs: the tag bytes the first scan kept, fetches stored in
    /// batches.
    fn pack_files(&self) -> Vec<PathBuf> {
        let root = self.path("cache/packs");
        files_under(&root)
            .into_iter()
            .map(|p| root.join(p))
            .collect()
    }
}

#[test]
fn flipped_bytes_in_half_the_cached_chunks_never_reach_a_reader() {
    let s = Setup::new(12);
    let m = s.mount();
    s.check_all(&m);
    m.wait_filled(Path::new(BIN));
    assert!(m.stop().success());
    // The tag bytes the first scan kept, and the fetches stored behind
    // their readers, are in packs; a small batch in chunk files.
    let packs = s.pack_files().len();
    assert!(packs > 0, "cached chunks are packed");
    // The clean exit saved the packs' tables for the next mount.
    assert!(s.path("cache/packs.tables").is_file());
    // Half the cached chunks, wherever they lie.
    let damaged = damage_cached_chunks(&s.path("cache"), 2);
    assert!(damaged > 100, "{damaged} chunks damaged");
    let m = s.mount();
    s.check_all(&m);
    let log = m.log_text();
    assert!(
        log.contains("cached chunk was bad and was dropped"),
        "{log}"
    );
    // The remount read no pack's table: the saved ones held, and did not
    // keep a damaged chunk from being found.
    assert!(
        log.contains(&format!("packs={packs} from_saved={packs} read=0")),
        "{log}"
    );
}

#[test]
fn kill_9_mid_read_twenty_times_then_every_remount_serves_correct_bytes() {
    let s = Setup::new(8);
    for round in 0..20 {
        // Even rounds: readers wait for the fetches that store their bytes
        // (fill=inline), killed while chunks are being stored. Odd rounds:
        // readers are answered straight from the origin (fill=behind, the
        // default) and the kill lands while the cache fills behind them.
        let inline = round % 2 == 0;
        let mut m = if inline {
            s.mount_with(",fill=inline")
        } else {
            s.mount()
        };
        // Readers in the background, killed under them.
        let root = m.mountpoint.clone();
        let readers: Vec<_> = s
            .want
            .keys()
            .map(|rel| {
                let p = root.join(rel);
                std::thread::spawn(move || {
                    let _ = std::fs::read(p);
                })
            })
            .collect();
        let behind = if inline { 0 } else { 500 };
        std::thread::sleep(Duration::from_millis(behind + 5 + (round * 7) % 40));
        m.signal(libc::SIGKILL);
        m.wait_exit(Duration::from_secs(10)).expect("killed");
        for r in readers {
            let _ = r.join(); // they end with ENOTCONN; never hang
        }
        s.index_is_on_disk(round);
        // The next mount cleans the stale mount up by itself.
        let m = s.mount();
        s.check_all(&m);
        assert!(m.stop().success(), "round {round}");
    }
}

/// Opening a file again reuses the kernel's pages (files need no OPEN, and
/// the kernel keeps their pages across opens): the second read of every
/// track reaches the daemon not once. Nor does a close (no FLUSH).
#[test]
fn a_file_read_again_is_answered_by_the_kernel_page_cache() {
    let s = Setup::new(4);
    let m = s.mount();
    let numbers = || {
        let doc: serde_json::Value = serde_json::from_str(&control_ok(
            Path::new(BIN),
            &["status", "--json"],
            &m.mountpoint,
        ))
        .unwrap();
        let c = &doc["cache"];
        (
            c["reads_served"].as_u64().unwrap(),
            c["file_opens"].as_u64().unwrap(),
            c["file_flushes"].as_u64().unwrap(),
        )
    };
    s.check_all(&m);
    let (first, opens, flushes) = numbers();
    assert!(first > 0, "the first pass reached the daemon");
    // This kernel opens files by itself after the first OPEN (ENOSYS), and
    // closes them without a FLUSH after the first (ENOSYS).
    assert!(
        opens <= 1 && flushes <= 1,
        "{opens} OPEN and {flushes} FLUSH requests for {} files",
        s.want.len()
    );
    for _ in 0..3 {
        s.check_all(&m); // each opens and closes every file anew
    }
    assert_eq!(
        numbers(),
        (first, opens, flushes),
        "no read, no open and no flush reached the daemon again"
    );
    assert!(m.stop().success());
}

#[test]
fn descriptor_exhaustion_gives_errors_not_a_crash_and_passes() {
    let s = Setup::new(16);
    let m = s.mount();
    // Settled first: the search index is built in the background, and the
    // descriptors it holds meanwhile would be spare ones later.
    m.wait_search_index();
    std::thread::sleep(Duration::from_millis(300));
    // Leave the daemon almost no descriptors while 16 readers hit it.
    let pid = m.pid().to_string();
    let used = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = used.to_string(); // not one descriptor to spare
    // Only the soft limit: it can be raised again without privileges.
    let st = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={limit}:")])
        .status()
        .unwrap();
    assert!(st.success());
    let root = m.mountpoint.clone();
    let results: Vec<std::io::Result<Vec<u8>>> = s
        .want
        .keys()
        .map(|rel| {
            let p = root.join(rel);
            std::thread::spawn(move || std::fs::read(p))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let failed = results.iter().filter(|r| r.is_err()).count();
    for (r, (rel, hash)) in results.iter().zip(&s.want) {
        if let Ok(bytes) = r {
            assert_eq!(
                &sha256_bytes(bytes),
                hash,
                "{rel:?}: wrong bytes under fd pressure"
            );
        }
    }
    assert!(failed > 0, "with {limit} descriptors some reads must fail");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "daemon died:\n{}",
        m.log_text()
    );
    // Descriptors come back: everything reads again.
    let st = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=4096:"])
        .status()
        .unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_secs(6)); // the failed fetches' pauses pass
    s.check_all(&m);
    // The panic hook logs every panic as an ERROR "panic" line (other
    // errors may quote the word: tantivy's "...or panicked").
    assert!(!m.log_text().contains(" ERROR panic "), "{}", m.log_text());
    assert!(m.stop().success());
}

#[test]
fn test_sled_corruption_triggers_repair() {
    let s = Setup::new(6);
    let m = s.mount();
    s.check_all(&m);
    assert!(m.stop().success());
    for entry in std::fs::read_dir(s.path("cache/db")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, vec![0xA5; 4096]).unwrap();
        }
    }
    let m = s.mount();
    let log = m.log_text();
    assert!(
        log.contains("the cache database was damaged and has been rebuilt"),
        "{log}"
    );
    assert!(
        log.contains("chunk index rebuilt from the chunk files"),
        "{log}"
    );
    assert!(std::fs::read_dir(s.path("cache")).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("db.corrupt-")
    }));
    s.check_all(&m);
}

#[test]
fn test_metadata_corruption_triggers_rescan() {
    let s = Setup::new(6);
    let m = s.mount();
    assert!(m.stop().success());
    {
        // Damage the catalog records themselves (the sled files stay valid).
        let db = sled::open(s.path("cache/db")).unwrap();
        let catalog = db.open_tree("catalog").unwrap();
        let keys: Vec<_> = catalog.iter().keys().map(|k| k.unwrap()).collect();
        for k in keys.iter().step_by(2) {
            catalog.insert(k, &b"\xc1garbage"[..]).unwrap();
        }
        db.flush().unwrap();
    }
    let m = s.mount();
    let log = m.log_text();
    assert!(log.contains("the saved catalog is damaged"), "{log}");
    let listed: Vec<PathBuf> = files_under(&m.mountpoint);
    assert_eq!(
        listed,
        s.want.keys().cloned().collect::<Vec<_>>(),
        "every track is back before the mount is up"
    );
    s.check_all(&m);
}

#[test]
fn a_full_cache_disk_is_logged_once_and_passes_through_until_it_has_room() {
    let s = Setup::new(10);
    std::fs::create_dir_all(s.path("cache")).unwrap();
    let disk = Tmpfs::mount(&s.path("cache"), "size=3m");
    let m = s.mount();
    s.check_all(&m);
    m.wait_filled(Path::new(BIN));
    let log = m.log_text();
    assert_eq!(
        log.matches("cache disk failed").count(),
        1,
        "logged once per change:\n{log}"
    );
    disk.remount("size=256m", false);
    assert!(wait_for(Duration::from_secs(30), || m
        .log_text()
        .contains("cache disk works again")));
    s.check_all(&m);
    assert_eq!(m.log_text().matches("cache disk works again").count(), 1);
    drop(m);
    assert!(!is_mounted(&s.path("mnt")));
}

/// Tests that configure fail points: `scripts/test` runs only these with
/// the `failpoints` feature (`-- failpoints::`).
/// Bytes of the regular files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .filter_map(|rel| std::fs::metadata(dir.join(rel)).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn eviction_keeps_a_64m_cache_within_its_limit_while_1g_is_read() {
    // 64 tracks of 16 MiB: 1 GiB through a 64 MiB cache.
    const LIMIT: u64 = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut want = BTreeMap::new();
    for i in 0..64u64 {
        let path = dir.path().join(format!("lib/big/t{i:02}.wav"));
        let title = format!("Big {i:02}");
        write_wav(&path, 16 << 20, 100 + i, &title, "Band", "Big");
        want.insert(
            PathBuf::from(format!("Band/Big/00 - {title}.wav")),
            sha256_file(&path).unwrap(),
        );
    }
    let m = MountCommand::in_dir(Path::new(BIN), dir.path())
        .args(["--cache-size", "64M"])
        .start(UP);
    let cache = dir.path().join("cache");
    let mut most = 0;
    for (rel, hash) in &want {
        let got = sha256_file(&m.mountpoint.join(rel))
            .unwrap_or_else(|e| panic!("{rel:?}: {e}\n{}", m.log_text()));
        assert_eq!(&got, hash, "{rel:?} differs from its origin");
        most = most.max(cached_bytes(&cache));
    }
    // Eviction runs behind the stores: once reads stop, the chunks
    // settle at or below the limit (LRU down to 80% of it past 90%).
    assert!(
        wait_for(Duration::from_secs(20), || cached_bytes(&cache) <= LIMIT),
        "chunks {} bytes, limit {LIMIT}",
        cached_bytes(&cache)
    );
    let db = bytes_under(&dir.path().join("cache/db"));
    let index = bytes_under(&dir.path().join("cache/search"));
    println!(
        "cache after 1 GiB read with --cache-size 64M: chunks {} MiB (at most {} MiB seen), database {} MiB, search index {} MiB",
        cached_bytes(&cache) >> 20,
        most >> 20,
        db >> 20,
        index >> 20
    );
    assert!(most <= 2 * LIMIT, "chunks grew to {most} bytes");
    assert!(m.stop().success());
}

/// NFR-6.4: a retag (new tags, same audio) costs one read of the file from
/// its origin into the cache when it is next played, and only the chunks
/// that changed are written to the cache: content-defined chunking finds
/// the audio's chunks again after the tag area, whatever its new length.
/// Both ways a cache fills: behind the reader (a local folder's default;
/// the reader itself was answered from the origin) and inline.
#[test]
fn a_retag_reads_the_file_once_and_writes_only_the_changed_chunks_to_the_cache() {
    retag_reads_once_and_writes_only_changed_chunks("");
    retag_reads_once_and_writes_only_changed_chunks(",fill=inline");
}

fn retag_reads_once_and_writes_only_changed_chunks(options: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lib/song.wav");
    let tags = |title| WavTags {
        title,
        artist: "Band",
        album: "Retagged",
        genre: Some("Rock"),
        year: Some(1999),
    };
    write_wav_tagged(&file, 16 << 20, 42, &tags("Before"));
    let m = MountCommand::in_dir_with(Path::new(BIN), dir.path(), options).start(UP);
    let numbers = |m: &Mounted| {
        m.wait_filled(Path::new(BIN));
        let doc: serde_json::Value = serde_json::from_str(&control_ok(
            Path::new(BIN),
            &["status", "--json"],
            &m.mountpoint,
        ))
        .unwrap();
        let cache = &doc["cache"];
        (
            cache["fetched_bytes"].as_u64().unwrap(),
            cache["bytes"].as_u64().unwrap(),
        )
    };
    let before = m.mountpoint.join("Band/Retagged/00 - Before.wav");
    assert_eq!(sha256_file(&before).unwrap(), sha256_file(&file).unwrap());
    let (fetched0, cached0) = numbers(&m);

    // The retag: a longer title shifts the audio by a few bytes.
    write_wav_tagged(
        &file,
        16 << 20,
        42,
        &tags("After, With A Much Longer Title"),
    );
    let after = m
        .mountpoint
        .join("Band/Retagged/00 - After, With A Much Longer Title.wav");
    assert!(
        wait_for(Duration::from_secs(10), || after.exists()),
        "{}",
        m.log_text()
    );
    assert_eq!(sha256_file(&after).unwrap(), sha256_file(&file).unwrap());
    let (fetched1, cached1) = numbers(&m);
    let size = std::fs::metadata(&file).unwrap().len();
    let read = fetched1 - fetched0;
    let written = cached1.saturating_sub(cached0);
    println!(
        "retag of a {} MiB file ({options}): {} KiB read from the origin into the cache ({:.0}%), {} KiB written to the cache ({:.1}%)",
        size >> 20,
        read >> 10,
        100.0 * read as f64 / size as f64,
        written >> 10,
        100.0 * written as f64 / size as f64
    );
    assert!(
        read >= size / 2 && read <= size + (1 << 20),
        "the file is read once: {read} of {size}"
    );
    assert!(
        written * 10 < size,
        "under 10% written to the cache: {written} of {size}"
    );
    assert!(m.stop().success());
}

/// `--origin DIR,cache=off`: the bytes come straight from the origin (the
/// kernel reads the file itself where it can), nothing is cached, nothing
/// can be pinned, and with the origin gone a read fails with EIO.
/// A local folder's reader is answered straight from the origin file
/// (fill=behind, the default); what it read is cached once the file rests,
/// and plays with the origin gone. What nobody read is not cached.
#[test]
fn a_fill_behind_origin_caches_what_was_read_once_the_file_rests() {
    let s = Setup::new(4);
    let command = || {
        MountCommand::in_dir(Path::new(BIN), s.dir.path()).args([
            "--read-timeout",
            "3s",
            "--no-keep-tags",
        ])
    };
    let m = command().start(UP);
    let (read, unread): (Vec<_>, Vec<_>) = s.want.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (_, (rel, hash)) in &read {
        assert_eq!(&sha256_file(&m.mountpoint.join(rel)).unwrap(), *hash);
    }
    m.wait_filled(Path::new(BIN));
    let out = control_ok(Path::new(BIN), &["status", "--json"], &m.mountpoint);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["cache"]["fill_behind"]["files_filled"], 2, "{doc}");
    assert!(
        doc["cache"]["reads_passthrough"].as_u64().unwrap() > 0,
        "the reader was answered from the origin: {doc}"
    );
    // Past its first megabyte, the 3 MiB file's reads were answered from
    // origin bytes read ahead of them (the hashes above are right).
    assert!(
        doc["cache"]["reads_passthrough_read_ahead"]
            .as_u64()
            .unwrap()
            > 0,
        "{doc}"
    );
    let cached = cached_bytes(&s.path("cache"));
    let read_bytes: u64 = read
        .iter()
        .map(|(_, (rel, _))| std::fs::metadata(m.mountpoint.join(rel)).unwrap().len())
        .sum();
    assert!(
        cached >= read_bytes && cached < read_bytes + (1 << 20),
        "{cached} bytes cached for {read_bytes} read"
    );
    assert!(m.stop().success());
    // After a restart (the kernel's pages are gone with the old mount),
    // the origin goes away: what was read plays from the cache, exactly;
    // what was not fails (EIO within the read timeout), and the tree keeps it.
    let m = command().start(UP);
    std::fs::rename(s.path("lib"), s.path("gone")).unwrap();
    for (_, (rel, hash)) in &read {
        let got = sha256_file(&m.mountpoint.join(rel));
        assert_eq!(got.as_ref().ok(), Some(*hash), "{rel:?}\n{}", m.log_text());
    }
    for (_, (rel, _)) in &unread {
        let p = m.mountpoint.join(rel);
        assert!(p.exists(), "{rel:?} stays in the tree");
        let err = std::fs::read(&p).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{rel:?}: {err}");
    }
    assert!(m.stop().success());
}

#[test]
fn an_origin_with_cache_off_is_read_straight_through_and_never_cached() {
    let s = Setup::new(4);
    let origin = format!("{},cache=off", s.path("lib").display());
    let m = MountCommand::new(
        Path::new(BIN),
        &[Path::new(&origin)],
        &s.path("cache"),
        &s.path("mnt"),
        &s.path("log"),
    )
    .args(["--read-timeout", "3s"])
    .start(UP);
    s.check_all(&m);
    let status: serde_json::Value = serde_json::from_str(&control_ok(
        Path::new(BIN),
        &["status", "--json"],
        &m.mountpoint,
    ))
    .unwrap();
    let cache = &status["cache"];
    assert_eq!(cache["bytes"], 0, "{status:#}");
    assert_eq!(cache["fetched_bytes"], 0, "{status:#}");
    assert_eq!(cached_bytes(&s.path("cache")), 0);
    let log = m.log_text();
    if log.contains("kernel passthrough on") {
        // The kernel read the files: no read reached the daemon.
        assert_eq!(cache["reads_served"], 0, "{status:#}");
        assert_eq!(cache["reads_passthrough"], 0, "{status:#}");
        println!("cache=off: the kernel read the origin files itself (FUSE passthrough)");
    } else {
        assert!(
            cache["reads_passthrough"].as_u64().unwrap_or(0) > 0,
            "{status:#}"
        );
        println!("cache=off: the daemon read the origin files (no kernel passthrough)");
    }
    // Nothing of such an origin can be pinned.
    let out = Command::new(BIN)
        .args(["pin", &m.mountpoint.to_string_lossy(), "Band"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache=off"));
    // The origin goes away: a fresh open reads nothing stale, it fails.
    std::fs::rename(s.path("lib"), s.path("lib.gone")).unwrap();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", b"3");
    for rel in s.want.keys() {
        let err = sha256_file(&m.mountpoint.join(rel)).expect_err("no origin, no bytes");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{rel:?}: {err}");
    }
    assert!(m.stop().success());
}

#[test]
fn cache_off_without_the_privilege_for_passthrough_is_read_by_the_daemon_and_opens_stop() {
    // A daemon run by a normal user: the kernel agrees to FUSE passthrough
    // but refuses it backing files (that needs CAP_SYS_ADMIN).
    let s = Setup::new(4);
    let wrapper = as_nobody(
        Path::new(BIN),
        s.dir.path(),
        &[s.path("cache"), s.path("mnt")],
    );
    let origin = format!("{},cache=off", s.path("lib").display());
    let m = MountCommand::new(
        &wrapper,
        &[Path::new(&origin)],
        &s.path("cache"),
        &s.path("mnt"),
        &s.path("log"),
    )
    .env("XDG_RUNTIME_DIR", "")
    .start(UP);
    // Every file opened three times, each time read whole and exactly, by
    // the mount's user (the mount is not --allow-other).
    for _ in 0..3 {
        let files = s.want.keys().map(|rel| m.mountpoint.join(rel));
        let out = run_as(NOBODY, "sha256sum", ["--".into()].into_iter().chain(files));
        assert!(out.status.success(), "{out:?}\n{}", m.log_text());
        let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
            .collect();
        let want: Vec<&String> = s.want.values().collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), want);
    }
    // Root finds the user's mount (its socket is under /tmp/musicfs-UID).
    let out = Command::new(BIN)
        .args(["status", "--json"])
        .arg(&m.mountpoint)
        .env("XDG_RUNTIME_DIR", "")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let log = m.log_text();
    let cache = &status["cache"];
    assert!(
        cache["reads_passthrough"].as_u64().unwrap_or(0) > 0,
        "the daemon read the origin files: {status:#}"
    );
    assert_eq!(cache["bytes"], 0, "nothing cached: {status:#}");
    assert_eq!(cached_bytes(&s.path("cache")), 0);
    // With no passthrough to set up, an open needs no round trip: the
    // OPEN after the refusal is answered ENOSYS, and the kernel sends
    // no more (12 opens in all).
    let opens = cache["file_opens"].as_u64();
    if log.contains("kernel passthrough on") {
        assert!(
            log.contains("the kernel refused a backing file"),
            "a normal user gets no backing file:\n{log}"
        );
        assert_eq!(
            opens,
            Some(2),
            "the refused open and one ENOSYS: {status:#}"
        );
    } else {
        assert_eq!(opens, Some(1), "one ENOSYS: {status:#}");
    }
    assert!(m.stop().success());
}

#[cfg(feature = "failpoints")]
mod failpoints {
    use super::*;

    #[test]
    fn a_crash_between_chunk_write_and_index_loses_nothing() {
        // Every chunk lands on disk but the index never hears of it.
        let s = Setup::new(4);
        let m = s
            .command()
            .env("FAILPOINTS", "cas-put-after-write-before-index=return")
            .start(UP);
        s.check_all(&m);
        assert!(m.stop().success());
        let m = s.mount();
        s.check_all(&m);
    }

    #[test]
    fn failing_fetches_and_db_open_are_survived() {
        let s = Setup::new(3);
        let m = s
            .command()
            // Deterministic: the first two fetches fail (a random share
            // could fail three in a row, which rightly marks the origin
            // down), then they work; the reader still gets its bytes.
            .env("FAILPOINTS", "reader-manifest-fetch=2*return->off")
            .start(UP);
        s.check_all(&m);
        assert!(m.stop().success());
        let m = s
            .command()
            .env("FAILPOINTS", "db-open-corrupt=return")
            .start(UP);
        assert!(m.log_text().contains("damaged"), "{}", m.log_text());
        s.check_all(&m);
    }
}

/// Makes one track per format, two minutes long, each with 300 kB of
/// embedded art (a FLAC picture block, an ID3v2 APIC frame, an MP4 `covr`
/// atom with `moov` at the end, an Ogg METADATA_BLOCK_PICTURE comment).
const MAKE_TAGGED: &str = r#"
import base64, os, random, subprocess, sys
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, ID3, TIT2, TPE1, TALB, TRCK
from mutagen.mp4 import MP4, MP4Cover
from mutagen.oggvorbis import OggVorbis
from mutagen.oggopus import OggOpus
out = sys.argv[1]
codecs = {"flac": ["-c:a", "flac"], "mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
          "ogg": ["-c:a", "libvorbis", "-q:a", "3"], "opus": ["-c:a", "libopus", "-b:a", "64k"],
          "m4a": ["-c:a", "aac", "-b:a", "128k"]}
for i, ext in enumerate(codecs):
    path = os.path.join(out, f"t{i}.{ext}")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={300 + 40 * i}:duration=120", "-f", "lavfi", "-i",
                    f"anoisesrc=amplitude=0.01:seed={i}:duration=120", "-filter_complex",
                    "[0][1]amix=inputs=2", *codecs[ext], path], check=True)
    rng = random.Random(i)
    art = b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(300_000))
    title, artist, album = f"Song {i}", "Kept Band", "Kept Album"
    if ext == "mp3":
        tags = ID3()
        tags.add(TIT2(encoding=3, text=title)); tags.add(TPE1(encoding=3, text=artist))
        tags.add(TALB(encoding=3, text=album)); tags.add(TRCK(encoding=3, text=str(i + 1)))
        tags.add(APIC(encoding=3, mime="image/png", type=3, desc="front", data=art))
        tags.save(path)
        continue
    f = {"flac": FLAC, "m4a": MP4, "ogg": OggVorbis, "opus": OggOpus}[ext](path)
    pic = Picture(); pic.type = 3; pic.mime = "image/png"; pic.data = art
    if ext == "m4a":
        f["\xa9nam"] = title; f["\xa9ART"] = artist; f["\xa9alb"] = album; f["trkn"] = [(i + 1, 0)]
        f["covr"] = [MP4Cover(art, imageformat=MP4Cover.FORMAT_PNG)]
    else:
        f["title"] = title; f["artist"] = artist; f["album"] = album; f["tracknumber"] = str(i + 1)
        if ext == "flac":
            f.add_picture(pic)
        else:
            f["metadata_block_picture"] = [base64.b64encode(pic.write()).decode()]
    f.save()
"#;

/// Prints, per file, what a tag reader sees: every tag, the duration, and
/// the SHA-256 of each embedded picture (one JSON line each, sorted).
const READ_TAGS: &str = r#"
import base64, hashlib, json, sys
import mutagen
from mutagen.flac import Picture
lines = []
for path in sys.argv[1:]:
    f = mutagen.File(path)
    if f is None:
        sys.exit(f"not audio: {path}")
    pics, tags = [], {}
    for p in getattr(f, "pictures", []):
        pics.append(p.data)
    for key, value in (f.tags or {}).items():
        if key.startswith("APIC"):
            pics.append(value.data)
        elif key == "covr":
            pics.extend(bytes(c) for c in value)
        elif key == "metadata_block_picture":
            pics.extend(Picture(base64.b64decode(v)).data for v in value)
        else:
            tags[key] = str(value)
    lines.append(json.dumps({"tags": tags, "seconds": round(f.info.length, 2),
                             "pictures": sorted(hashlib.sha256(p).hexdigest() for p in pics)},
                            sort_keys=True))
print("\n".join(sorted(lines)))
"#;

fn python(script: &str, args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (scripts/install-deps installs it with mutagen)");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn origin_requests(m: &Mounted) -> u64 {
    let out = control_ok(Path::new(BIN), &["status", "--json"], &m.mountpoint);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    doc["origins"][0]["requests"].as_u64().unwrap()
}

#[test]
fn tags_and_art_the_first_scan_read_are_served_with_the_origin_gone() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    python(MAKE_TAGGED, &[&lib]);
    let originals = files_under(&lib);
    assert_eq!(originals.len(), 5, "one track per format");
    let want = python(
        READ_TAGS,
        &originals
            .iter()
            .map(|p| lib.join(p))
            .collect::<Vec<_>>()
            .iter()
            .map(PathBuf::as_path)
            .collect::<Vec<_>>(),
    );
    assert_eq!(want.matches("\"pictures\": [\"").count(), 5, "{want}");
    // And a cover beside them, which media servers read too.
    let cover = musicfs_tests::disk::noise(40_000, 9);
    std::fs::write(lib.join("cover.jpg"), &cover).unwrap();
    let library_bytes = bytes_under(&lib);

    let command =
        || MountCommand::in_dir(Path::new(BIN), dir.path()).args(["--read-timeout", "5s"]);
    let m = command().start(UP);
    let (covers, tracks): (Vec<PathBuf>, Vec<PathBuf>) = files_under(&m.mountpoint)
        .into_iter()
        .map(|p| m.mountpoint.join(p))
        .partition(|p| p.ends_with("cover.jpg"));
    assert_eq!(tracks.len(), 5, "{tracks:?}");
    // What a media server reads to scan a file: its first 128 KiB and its
    // last 4 KiB, and the cover whole. The first scan read them already:
    // the origin is asked for nothing.
    for t in &tracks {
        let mut f = std::fs::File::open(t).unwrap();
        let mut head = vec![0; 128 * 1024];
        std::io::Read::read_exact(&mut f, &mut head).unwrap();
        let len = f.metadata().unwrap().len();
        let mut tail = vec![0; 4096];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut tail, len - 4096).unwrap();
    }
    assert_eq!(covers.len(), 1, "{covers:?}");
    assert_eq!(std::fs::read(&covers[0]).unwrap(), cover);
    assert_eq!(origin_requests(&m), 0, "{}", m.log_text());
    // Only heads and tails are kept, not whole files.
    let cached = cached_bytes(&dir.path().join("cache"));
    assert!(
        cached < library_bytes / 3,
        "{cached} bytes cached of a {library_bytes}-byte library"
    );

    // The origin goes away: a tag reader still sees every tag, duration
    // and picture, and still asks the origin nothing.
    std::fs::rename(&lib, dir.path().join("gone")).unwrap();
    let refs: Vec<&Path> = tracks.iter().map(PathBuf::as_path).collect();
    assert_eq!(python(READ_TAGS, &refs), want, "{}", m.log_text());
    assert_eq!(origin_requests(&m), 0);
    assert!(m.stop().success());

    // After a restart (the origin back), the kept bytes are still there:
    // the tag reader is answered and the origin is asked nothing.
    std::fs::rename(dir.path().join("gone"), &lib).unwrap();
    let m = command().start(UP);
    assert_eq!(python(READ_TAGS, &refs), want, "{}", m.log_text());
    assert_eq!(origin_requests(&m), 0, "{}", m.log_text());
    assert!(m.stop().success());
}

#[test]
fn with_no_keep_tags_the_first_scan_caches_nothing() {
    let s = Setup::new(3);
    let m = s.command().args(["--no-keep-tags"]).start(UP);
    assert_eq!(cached_bytes(&s.path("cache")), 0);
    let (rel, hash) = s.want.iter().next().unwrap();
    assert_eq!(&sha256_file(&m.mountpoint.join(rel)).unwrap(), hash);
    assert!(origin_requests(&m) > 0, "the head came from the origin");
    assert!(m.stop().success());
}

#[test]
fn a_tag_scan_through_the_mount_finds_the_next_files_and_folders_read_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    // 3 artists, 2 albums each, 8 tracks of 400 KB: the scan crosses
    // folders and artists, and only each track's head and tail are kept.
    let mut originals = BTreeMap::new();
    for a in 1..=3 {
        for b in 1..=2 {
            for t in 1..=8 {
                let rel = format!("a{a}/b{b}/t{t}.wav");
                let path = lib.join(&rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let (artist, album) = (format!("Artist{a}"), format!("Album{b}"));
                let title = format!("T{t}");
                write_wav(
                    &path,
                    400_000,
                    (a * 100 + b * 10 + t) as u64,
                    &title,
                    &artist,
                    &album,
                );
                originals.insert(format!("{artist}/{album}/00 - {title}.wav"), path);
            }
        }
    }
    let m = MountCommand::in_dir(Path::new(BIN), dir.path()).start(UP);
    let stats = || {
        let out = control_ok(Path::new(BIN), &["status", "--json"], &m.mountpoint);
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        let n = |k: &str| doc["cache"][k].as_u64().unwrap();
        (
            n("reads_served"),
            n("reads_from_memory"),
            n("reads_from_disk"),
            n("chunks_read_ahead"),
            n("reads_waited_for_read_ahead"),
        )
    };
    // A media server's scan: walk, then each file's first 128 KiB and last
    // 4 KiB, in the walk's order (names sort as the listing does here), with
    // the page cache dropped (as root) so every read reaches the mount.
    let tracks = files_under(&m.mountpoint);
    let names: Vec<String> = tracks
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, originals.keys().cloned().collect::<Vec<_>>());
    let _ = std::fs::write("/proc/sys/vm/drop_caches", b"3");
    let (served, memory, disk, _, waited) = stats();
    for (name, origin) in &originals {
        let want = std::fs::read(origin).unwrap();
        let f = std::fs::File::open(m.mountpoint.join(name)).unwrap();
        let mut head = vec![0; 128 * 1024];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0).unwrap();
        assert!(head == want[..128 * 1024], "{name}: head");
        let mut tail = vec![0; 4096];
        let len = want.len() as u64;
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut tail, len - 4096).unwrap();
        assert!(tail == want[want.len() - 4096..], "{name}: tail");
    }
    let (served2, memory2, disk2, ahead, waited2) = stats();
    let (served, memory, disk) = (served2 - served, memory2 - memory, disk2 - disk);
    // Some reads may catch up with the read-ahead and wait for it; they
    // are answered from memory all the same.
    let waited = waited2 - waited;
    assert!(
        waited <= memory,
        "{waited} of {memory} reads from memory waited"
    );
    // The first file's reads go to the disk (nothing was read ahead of
    // them); every other file, in every folder, was read ahead. (The
    // kernel forgot the walk's inodes with the page cache, so pages handed
    // to it ahead of the reads mostly find no inode: most reads, not all,
    // reach the daemon. The next test has them all taken.)
    assert!(served >= 2, "{served} reads");
    assert!(disk <= 4, "{disk} of {served} reads went to the cache disk");
    assert_eq!(memory + disk, served);
    assert!(ahead > 0);
    assert_eq!(origin_requests(&m), 0, "{}", m.log_text());
    assert!(m.stop().success());
}

#[test]
fn a_tag_scan_reads_pages_handed_to_the_kernel_ahead_of_it_and_a_change_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    // 3 artists, 2 albums each, 4 tracks of 60 KB: each track is kept
    // whole, and one read-ahead window holds them all.
    let mut originals = BTreeMap::new();
    for a in 1..=3 {
        for b in 1..=2 {
            for t in 1..=4 {
                let path = lib.join(format!("a{a}/b{b}/t{t}.wav"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let (artist, album) = (format!("Artist{a}"), format!("Album{b}"));
                let title = format!("T{t}");
                let seed = (a * 100 + b * 10 + t) as u64;
                write_wav(&path, 60_000, seed, &title, &artist, &album);
                originals.insert(format!("{artist}/{album}/00 - {title}.wav"), path);
            }
        }
    }
    let m = MountCommand::in_dir(Path::new(BIN), dir.path()).start(UP);
    let stat = |key: &str| {
        let out = control_ok(Path::new(BIN), &["status", "--json"], &m.mountpoint);
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        doc["cache"][key].as_u64().unwrap()
    };
    let read = |name: &str| std::fs::read(m.mountpoint.join(name)).unwrap();
    // A media server's cold scan: the page cache dropped, then the walk
    // (READDIRPLUS: the kernel holds every file's inode)...
    let _ = std::fs::write("/proc/sys/vm/drop_caches", b"3");
    let names: Vec<String> = files_under(&m.mountpoint)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, originals.keys().cloned().collect::<Vec<_>>());
    // ...then the first file: its read reaches the daemon, which reads the
    // other files' kept bytes ahead and hands them to the kernel, all but
    // the window's middle file (the scan's read of it moves the window).
    let size = std::fs::metadata(originals.values().next().unwrap())
        .unwrap()
        .len();
    let (first, origin) = originals.iter().next().unwrap();
    assert!(read(first) == std::fs::read(origin).unwrap(), "{first}");
    let handed_over = (originals.len() as u64 - 2) * size;
    assert!(
        wait_for(Duration::from_secs(30), || stat("pages_primed_bytes")
            >= handed_over),
        "{} of {handed_over} bytes handed to the kernel\n{}",
        stat("pages_primed_bytes"),
        m.log_text()
    );
    // The scan goes on: every byte right, and only the middle file's read
    // reaches the daemon.
    let served = stat("reads_served");
    for (name, origin) in originals.iter().skip(1) {
        assert!(read(name) == std::fs::read(origin).unwrap(), "{name}");
    }
    let reached = stat("reads_served") - served;
    assert!(
        (1..=2).contains(&reached),
        "{reached} reads reached the daemon"
    );
    assert_eq!(stat("pages_primed_dropped"), 0);
    assert_eq!(origin_requests(&m), 0, "{}", m.log_text());

    // A tagger rewrites one of those files (other audio, same size and
    // tags): once synced, the mount shows the new bytes, not the pages
    // handed over before.
    let (name, origin) = originals.iter().nth(3).unwrap();
    write_wav(origin, 60_000, 999, "T4", "Artist1", "Album1");
    assert!(name.ends_with("Artist1/Album1/00 - T4.wav"), "{name}");
    let now = std::fs::read(origin).unwrap();
    assert_eq!(now.len() as u64, size);
    let out = control_ok(Path::new(BIN), &["rescan"], &m.mountpoint);
    assert!(out.contains("origin 0:"), "{out}");
    assert!(read(name) == now, "{name}: old pages after the sync");
    assert!(m.stop().success());
}
