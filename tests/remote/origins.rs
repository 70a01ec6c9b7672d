//! Remote origins against real servers on loopback: S3 through moto's
//! server and SFTP through OpenSSH's sshd, both started by the tests
//! (`musicfs_tests::servers`), with network faults injected by a real TCP
//! proxy between client and server (`musicfs_tests::proxy`).
//!
//! What is checked: a remote scan finds exactly what a local scan of the
//! same files finds, reading only a few blocks per file; reads check the
//! file's version (ETag, size and mtime); listings page through thousands
//! of keys; unknown host keys are refused; secrets never print; and under
//! each network fault (latency spike, resets, a server that never answers,
//! a bandwidth cap) every call ends within its timeout with the right
//! error, and reads recover once the fault is gone.

use musicfs::library::remote_scan::{
    RemoteScanOptions, list_remote, scan_remote, scan_remote_files,
};
use musicfs::library::scan::{NoProgress, ScanOptions, ScanReport, scan_local};
use musicfs::origin::ranged::RangedOptions;
use musicfs::origin::{
    ListPage, Origin, OriginError, RemoteLimits, RemoteOrigin, S3Config, S3Origin, SftpOrigin,
};
use musicfs_core::{CatalogEntry, FileKind, FileVersion, OriginId, OriginPath};
use musicfs_tests::corpus::Library;
use musicfs_tests::fixtures::write_wav;
use musicfs_tests::proxy::{Fault, FaultProxy};
use musicfs_tests::servers::{MotoServer, Sshd};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const ORIGIN: OriginId = OriginId(1);
const BUCKET: &str = "music";
/// The secret key the tests give S3 origins; must never show anywhere.
const SECRET: &str = "musicfs-test-secret-key-do-not-log";
const KEY_ID: &str = "AKIAMUSICFSTEST00001";

/// Short limits so that fault tests end quickly.
fn fast_limits() -> RemoteLimits {
    RemoteLimits {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        retries: 1,
        ..RemoteLimits::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Everything logged by this test binary (every test, every thread, log
/// crate included), to check that no secret is ever logged.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        #[derive(Clone)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
            type Writer = Capture;
            fn make_writer(&'a self) -> Capture {
                self.clone()
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(Capture(Arc::clone(&buf)))
            .try_init();
        buf
    })
}

/// One generated library for the whole file: every format, the awkward
/// edge cases (empty, garbage and truncated files, hidden files).
fn library() -> &'static Library {
    static LIB: OnceLock<Library> = OnceLock::new();
    LIB.get_or_init(|| {
        Library::cached(
            Path::new(env!("CARGO_TARGET_TMPDIR")),
            &["--tracks", "60", "--seed", "3", "--edge-cases"],
        )
    })
}

/// What a scan found, without versions (a local version has an inode, a
/// remote one an ETag): path -> kind.
fn found(entries: &[CatalogEntry]) -> BTreeMap<Vec<u8>, FileKind> {
    entries
        .iter()
        .map(|e| (e.source.path.as_bytes().to_vec(), e.kind.clone()))
        .collect()
}

fn local_scan(root: &Path) -> ScanReport {
    scan_local(ORIGIN, root, &ScanOptions::default(), &NoProgress).expect("local scan")
}

fn assert_same_catalog(local: &ScanReport, remote: &ScanReport) {
    let (l, r) = (found(&local.entries), found(&remote.entries));
    for (path, kind) in &l {
        let shown = String::from_utf8_lossy(path);
        match r.get(path) {
            Some(k) => assert_eq!(k, kind, "{shown}"),
            None => panic!("{shown} missing from the remote scan"),
        }
    }
    for path in r.keys() {
        assert!(
            l.contains_key(path),
            "{} only in the remote scan",
            String::from_utf8_lossy(path)
        );
    }
    assert_eq!(local.tracks, remote.tracks);
    assert_eq!(local.covers, remote.covers);
    assert_eq!(local.unreadable, remote.unreadable);
}

fn s3_origin(config: S3Config) -> Arc<dyn RemoteOrigin> {
    Arc::new(S3Origin::new(ORIGIN, config).expect("s3 origin"))
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

#[test]
fn s3_scan_matches_local_scan_with_ranged_reads() {
    logs();
    let lib = library();
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    let uploaded = moto.upload_dir(BUCKET, "lib", &lib.root);
    let rt = runtime();
    let origin = s3_origin(moto.s3_config(BUCKET, "lib", None));
    let remote = rt
        .block_on(scan_remote(
            ORIGIN,
            Arc::clone(&origin),
            &RemoteScanOptions::default(),
            &NoProgress,
        ))
        .expect("remote scan");
    let local = local_scan(&lib.root);
    assert_same_catalog(&local, &remote);
    assert!(remote.tracks > 60, "{} tracks", remote.tracks);

    // A delta sync's pieces: the listing (versions, no tags) names exactly
    // the scanned files, and reading a few of them again gives the same
    // entries.
    let (listed, _) = rt
        .block_on(list_remote(origin.as_ref()))
        .expect("list_remote");
    let listed_paths: Vec<&[u8]> = listed.iter().map(|f| f.path.as_bytes()).collect();
    let scanned_paths: Vec<&[u8]> = remote
        .entries
        .iter()
        .map(|e| e.source.path.as_bytes())
        .collect();
    assert_eq!(listed_paths, scanned_paths);
    let some: Vec<_> = listed.iter().step_by(7).cloned().collect();
    let again = rt
        .block_on(scan_remote_files(
            ORIGIN,
            Arc::clone(&origin),
            some.clone(),
            &RemoteScanOptions::default(),
            &NoProgress,
        ))
        .expect("scan_remote_files");
    assert_eq!(again.entries.len(), some.len());
    for e in &again.entries {
        assert!(remote.entries.contains(e), "{}", e.source.path);
    }

    // Every entry carries the object's ETag, and its version reads back.
    for e in &remote.entries {
        let token = e.source.version.token.as_deref().unwrap_or_default();
        assert!(token.starts_with('"') && token.len() > 2, "{token:?}");
        assert_eq!(e.source.version.mtime_ns % 1_000_000_000, 0);
    }

    // Tags cost a few blocks per file, not the files: the library is
    // small tracks, so compare with their total size.
    let audio = (remote.tracks + remote.unreadable) as u64;
    let total: u64 = lib.manifest.iter().map(|m| m.size).sum();
    let per_file = remote.bytes_fetched / audio;
    eprintln!(
        "s3 scan: {uploaded} objects, {audio} audio files, {} KiB fetched ({per_file} B/file, {:.2} requests/file), library {} KiB",
        remote.bytes_fetched / 1024,
        remote.fetch_requests as f64 / audio as f64,
        total / 1024
    );
    assert!(per_file <= 100 * 1024, "{per_file} bytes per file");
    assert!(
        remote.fetch_requests <= audio * 3,
        "{} requests",
        remote.fetch_requests
    );
}

#[test]
fn tags_of_big_files_cost_a_few_blocks() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lib");
    // 24 MiB of WAV with its tags before the audio, and an MP3 whose tags
    // are at both ends (ID3v2 at the start, ID3v1 at the end).
    write_wav(&root.join("big.wav"), 24 << 20, 9, "Big", "Band", "Large");
    let mut mp3 =
        b"ID3\x03\x00\x00\x00\x00\x00\x23TIT2\x00\x00\x00\x19\x00\x00\x00Long Song With Frames"
            .to_vec();
    let frame = {
        // MPEG-1 layer III, 128 kb/s, 44.1 kHz: 417-byte frames.
        let mut f = vec![0xFF, 0xFB, 0x90, 0x64];
        f.resize(417, 0);
        f
    };
    while mp3.len() < 8 << 20 {
        mp3.extend_from_slice(&frame);
    }
    let mut v1 = b"TAG".to_vec();
    let mut field = |s: &str, n: usize| {
        let mut b = s.as_bytes().to_vec();
        b.resize(n, 0);
        v1.extend(b);
    };
    field("Long Song", 30);
    field("Band", 30);
    field("Large", 30);
    field("2001", 4);
    field("", 30);
    v1.push(0);
    mp3.extend(v1);
    std::fs::write(root.join("long.mp3"), &mp3).unwrap();

    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    moto.upload_dir(BUCKET, "", &root);
    let rt = runtime();
    let origin = s3_origin(moto.s3_config(BUCKET, "", None));
    let remote = rt
        .block_on(scan_remote(
            ORIGIN,
            origin,
            &RemoteScanOptions::default(),
            &NoProgress,
        ))
        .expect("scan");
    let local = local_scan(&root);
    assert_same_catalog(&local, &remote);
    assert_eq!(remote.tracks, 2, "{:?}", remote.entries);
    eprintln!(
        "32 MiB in 2 files: {} KiB fetched in {} requests",
        remote.bytes_fetched / 1024,
        remote.fetch_requests
    );
    assert!(
        remote.bytes_fetched < 512 * 1024,
        "{}",
        remote.bytes_fetched
    );
    assert!(remote.fetch_requests <= 6, "{}", remote.fetch_requests);
}

#[test]
fn sftp_scan_matches_local_scan_including_odd_names_and_links() {
    logs();
    let lib = library();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lib");
    copy_tree(&lib.root, &root);
    // What real trees hold: a Latin-1 directory name (not UTF-8), a link
    // to a file (followed), a link to a directory that loops (not
    // followed), a FIFO named like audio (never opened), tool state.
    let latin1 = root
        .join("weird")
        .join(OsStr::from_bytes(b"Caf\xe9 Tacvba"));
    write_wav(
        &root.join("weird/fine/ok.wav"),
        100_000,
        4,
        "Fine",
        "Odd",
        "Fine",
    );
    write_wav(
        &latin1.join("01.wav"),
        200_000,
        1,
        "Ojalá",
        "Café Tacvba",
        "Re",
    );
    write_wav(
        &root.join("solo/song.wav"),
        150_000,
        2,
        "Song",
        "Solo",
        "Alone",
    );
    std::os::unix::fs::symlink(root.join("solo/song.wav"), root.join("solo/link.wav")).unwrap();
    std::os::unix::fs::symlink("..", root.join("solo/loop")).unwrap();
    let fifo = std::ffi::CString::new(root.join("solo/fifo.mp3").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    write_wav(&root.join(".cache/x.wav"), 100_000, 3, "Hidden", "No", "No");

    let sshd = Sshd::start();
    let rt = runtime();
    let origin: Arc<dyn RemoteOrigin> =
        Arc::new(SftpOrigin::new(ORIGIN, sshd.sftp_config(&root, None)));
    let remote = rt
        .block_on(scan_remote(
            ORIGIN,
            Arc::clone(&origin),
            &RemoteScanOptions::default(),
            &NoProgress,
        ))
        .unwrap_or_else(|e| panic!("sftp scan: {e}\n{}", sshd.log()));
    // The SFTP client library cannot represent file names that are not
    // UTF-8, and a READDIR answer holding one breaks its session: the
    // directory holding that name ("weird") is reported and left out, its
    // subdirectories too, and everything else is exactly what a local scan
    // finds.
    assert!(
        remote
            .errors
            .iter()
            .any(|e| e.starts_with("weird:") && e.contains("UTF-8")),
        "{:?}",
        remote.errors
    );
    let mut local = local_scan(&root);
    local
        .entries
        .retain(|e| !e.source.path.as_bytes().starts_with(b"weird/"));
    local.tracks -= 2;
    assert_same_catalog(&local, &remote);
    let paths = found(&remote.entries);
    assert!(paths.contains_key(&b"solo/link.wav"[..]));
    assert!(!paths.keys().any(|p| p.starts_with(b"weird/")));
    assert!(!paths.keys().any(|p| p.starts_with(b"solo/loop")));
    assert!(!paths.keys().any(|p| p.starts_with(b".cache")));

    // SFTP versions: size and mtime in whole seconds, no token; they match
    // the file on disk.
    let e = remote
        .entries
        .iter()
        .find(|e| e.source.path.as_bytes() == b"solo/song.wav")
        .unwrap();
    let meta = std::fs::metadata(root.join("solo/song.wav")).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(e.source.version.size, meta.len());
    assert_eq!(e.source.version.mtime_ns, mtime as i64 * 1_000_000_000);
    assert_eq!(e.source.version.token, None);
    let audio = (remote.tracks + remote.unreadable) as u64;
    eprintln!(
        "sftp scan: {audio} audio files, {} B/file, {:.2} requests/file",
        remote.bytes_fetched / audio,
        remote.fetch_requests as f64 / audio as f64
    );
}

fn copy_tree(from: &Path, to: &Path) {
    for rel in musicfs_tests::files_under(from) {
        let dst = to.join(&rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&rel), &dst).unwrap();
    }
}

#[test]
fn s3_reads_check_the_version() {
    logs();
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    let data = noise(300_000, 1);
    moto.put(BUCKET, "lib/a/song.flac", data.clone());
    let rt = runtime();
    let origin = s3_origin(moto.s3_config(BUCKET, "lib", None));
    let path = OriginPath::new(&b"a/song.flac"[..]);
    rt.block_on(async {
        let v = origin.stat(&path).await.expect("stat");
        assert_eq!(v.size, 300_000);
        assert!(v.token.is_some());
        assert_eq!(
            origin.read_at(&path, &v, 1000, 5000).await.unwrap(),
            data[1000..6000]
        );
        // A read past the end is short; at the end, empty.
        assert_eq!(
            origin.read_at(&path, &v, 299_000, 5000).await.unwrap(),
            data[299_000..]
        );
        assert!(
            origin
                .read_at(&path, &v, 300_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        origin.check().await.expect("check");

        // Same size, other bytes: the ETag differs and If-Match refuses.
        moto.put(BUCKET, "lib/a/song.flac", noise(300_000, 2));
        assert!(matches!(
            origin.read_at(&path, &v, 0, 100).await,
            Err(OriginError::Changed)
        ));
        let v2 = origin.stat(&path).await.unwrap();
        assert_ne!(v2.token, v.token);
        assert_eq!(
            origin.read_at(&path, &v2, 0, 100).await.unwrap(),
            noise(300_000, 2)[..100]
        );
        // A version with no token is checked by size and mtime.
        let untokened = FileVersion {
            token: None,
            ..v2.clone()
        };
        assert!(origin.read_at(&path, &untokened, 0, 10).await.is_ok());
        let wrong_size = FileVersion {
            size: 1,
            token: None,
            ..v2.clone()
        };
        assert!(matches!(
            origin.read_at(&path, &wrong_size, 0, 1).await,
            Err(OriginError::Changed)
        ));

        moto.delete(BUCKET, "lib/a/song.flac");
        assert!(matches!(
            origin.read_at(&path, &v2, 0, 100).await,
            Err(OriginError::NotFound)
        ));
        assert!(matches!(
            origin.stat(&path).await,
            Err(OriginError::NotFound)
        ));
    });
}

#[test]
fn sftp_reads_check_the_version() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("song.flac");
    let data = noise(3 << 20, 3);
    std::fs::write(&file, &data).unwrap();
    let sshd = Sshd::start();
    let rt = runtime();
    let origin = SftpOrigin::new(ORIGIN, sshd.sftp_config(dir.path(), None));
    let path = OriginPath::new(&b"song.flac"[..]);
    rt.block_on(async {
        let v = origin
            .stat(&path)
            .await
            .unwrap_or_else(|e| panic!("stat: {e}\n{}", sshd.log()));
        assert_eq!(v.size, 3 << 20);
        // A 1 MiB read (several pipelined SFTP requests) and an odd one.
        assert_eq!(
            origin.read_at(&path, &v, 5, 1 << 20).await.unwrap(),
            data[5..(1 << 20) + 5]
        );
        assert_eq!(
            origin
                .read_at(&path, &v, (3 << 20) - 10, 100)
                .await
                .unwrap(),
            data[(3 << 20) - 10..]
        );
        origin.check().await.expect("check");

        // Rewritten with the same size and a later mtime: Changed.
        std::fs::write(&file, noise(3 << 20, 4)).unwrap();
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        drop(f);
        assert!(matches!(
            origin.read_at(&path, &v, 0, 10).await,
            Err(OriginError::Changed)
        ));
        let v2 = origin.stat(&path).await.unwrap();
        assert_eq!(
            origin.read_at(&path, &v2, 0, 10).await.unwrap(),
            noise(3 << 20, 4)[..10]
        );

        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            origin.read_at(&path, &v2, 0, 10).await,
            Err(OriginError::NotFound)
        ));
        assert!(matches!(
            origin.stat(&path).await,
            Err(OriginError::NotFound)
        ));

        // The root itself missing: check fails, the listing fails (an
        // unhealthy origin, never an empty one).
        let gone = SftpOrigin::new(ORIGIN, sshd.sftp_config(&dir.path().join("nope"), None));
        assert!(gone.check().await.is_err());
        let mut pages = 0;
        let listed = gone.list(&mut |_| pages += 1).await;
        assert!(matches!(listed, Err(OriginError::NotFound)), "{listed:?}");
    });
}

#[test]
fn sftp_refuses_unknown_and_wrong_host_keys() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    write_wav(&dir.path().join("a.wav"), 10_000, 1, "A", "B", "C");
    let sshd = Sshd::start();
    let other = Sshd::start();
    let rt = runtime();
    let empty = dir.path().join("known_hosts_empty");
    std::fs::write(&empty, "").unwrap();
    // Another server's key recorded for this server's address.
    let wrong = dir.path().join("known_hosts_wrong");
    std::fs::write(
        &wrong,
        format!("[127.0.0.1]:{} {}\n", sshd.port(), other.host_key()),
    )
    .unwrap();
    for (known_hosts, what) in [(empty, "unknown"), (wrong, "wrong")] {
        let mut config = sshd.sftp_config(dir.path(), None);
        config.known_hosts = Some(known_hosts);
        config.limits = fast_limits();
        let origin = SftpOrigin::new(ORIGIN, config);
        let started = Instant::now();
        let result = rt.block_on(origin.check());
        match result {
            Err(OriginError::Unavailable(why)) => {
                assert!(why.to_lowercase().contains("host key"), "{what}: {why}");
            }
            other => panic!("{what} host key was accepted: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    // With the right known_hosts it connects.
    let origin = SftpOrigin::new(ORIGIN, sshd.sftp_config(dir.path(), None));
    rt.block_on(origin.check())
        .expect("check with the right host key");
}

#[test]
fn s3_listing_pages_through_thousands_of_keys() {
    logs();
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..2500 {
        let p = dir.path().join(format!("many/{:02}/{i:05}.mp3", i % 50));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{i}")).unwrap();
    }
    std::fs::create_dir_all(dir.path().join(".trash")).unwrap();
    std::fs::write(dir.path().join(".trash/old.mp3"), "x").unwrap();
    std::fs::write(dir.path().join("many/.hidden.flac"), "x").unwrap();
    moto.upload_dir(BUCKET, "big", dir.path());
    // A "directory" marker, as consoles create them.
    let (status, _) = moto
        .http("PUT", &format!("/{BUCKET}/big/folder/"), &[])
        .unwrap();
    assert_eq!(status, 200);
    let rt = runtime();
    let origin = s3_origin(moto.s3_config(BUCKET, "big", None));
    let mut pages = Vec::new();
    rt.block_on(origin.list(&mut |page: ListPage| pages.push(page)))
        .expect("list");
    let files: Vec<&[u8]> = pages
        .iter()
        .flat_map(|p| p.files.iter().map(|f| f.path.as_bytes()))
        .collect();
    assert_eq!(files.len(), 2500);
    assert!(pages.len() >= 3, "{} pages", pages.len());
    assert!(pages.iter().all(|p| p.files.len() <= 1000));
    assert!(
        files
            .iter()
            .all(|p| p.starts_with(b"many/") && p.ends_with(b".mp3"))
    );
    assert!(
        !files
            .iter()
            .any(|p| p.starts_with(b".trash") || p.ends_with(b".hidden.flac"))
    );
    let mut sorted = files.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 2500, "no key listed twice");
}

/// Whatever `f` does, it must end within `limit`.
fn within<T>(limit: Duration, what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    assert!(took <= limit, "{what} took {took:?} (limit {limit:?})");
    out
}

/// Reads until one succeeds, for at most `limit`: recovery after a fault.
fn recovers(
    rt: &tokio::runtime::Runtime,
    origin: &dyn Origin,
    path: &OriginPath,
    v: &FileVersion,
    want: &[u8],
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        match rt.block_on(origin.read_at(path, v, 0, want.len())) {
            Ok(data) => {
                assert_eq!(data, want);
                return;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "{} did not recover within {limit:?}: {last:?}",
        origin.describe()
    );
}

#[test]
fn test_s3_origin_survives_latency_spike() {
    logs();
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    let data = noise(1 << 20, 5);
    moto.put(BUCKET, "lib/song.flac", data.clone());
    let proxy = FaultProxy::start(moto.addr());
    let rt = runtime();
    let path = OriginPath::new(&b"song.flac"[..]);

    // A 2 s request timeout: under a 5 s spike reads fail fast, as
    // Unavailable, then recover.
    let mut config = moto.s3_config(BUCKET, "lib", Some(proxy.port()));
    config.limits = fast_limits();
    let impatient = s3_origin(config);
    // A 10 s timeout: the same reads succeed, late.
    let mut config = moto.s3_config(BUCKET, "lib", Some(proxy.port()));
    config.limits.request_timeout = Duration::from_secs(10);
    let patient = s3_origin(config);

    let v = rt.block_on(impatient.stat(&path)).expect("stat");
    assert_eq!(
        rt.block_on(impatient.read_at(&path, &v, 0, 1 << 20))
            .unwrap(),
        data
    );

    proxy.set(Fault::Latency(Duration::from_secs(5)));
    for _ in 0..2 {
        let r = within(Duration::from_secs(4), "read under latency", || {
            rt.block_on(impatient.read_at(&path, &v, 0, 64 * 1024))
        });
        assert!(
            matches!(&r, Err(OriginError::Unavailable(why)) if why.contains("timed out")),
            "{r:?}"
        );
    }
    let r = within(Duration::from_secs(4), "check under latency", || {
        rt.block_on(impatient.check())
    });
    assert!(r.is_err());
    let slow = within(
        Duration::from_secs(12),
        "patient read under latency",
        || {
            let started = Instant::now();
            let r = rt.block_on(patient.read_at(&path, &v, 0, 64 * 1024));
            (r, started.elapsed())
        },
    );
    assert_eq!(slow.0.expect("a patient read succeeds"), data[..64 * 1024]);
    assert!(slow.1 >= Duration::from_secs(5), "{:?}", slow.1);

    proxy.heal();
    recovers(
        &rt,
        impatient.as_ref(),
        &path,
        &v,
        &data,
        Duration::from_secs(10),
    );
    within(Duration::from_secs(2), "read after recovery", || {
        rt.block_on(impatient.read_at(&path, &v, 0, 1 << 20))
            .expect("read after heal")
    });
}

/// The faults every origin must ride out, each with how it should look.
fn faults() -> Vec<(Fault, &'static str)> {
    vec![
        (Fault::Reset, "connection reset"),
        (Fault::Blackhole, "server accepts and never answers"),
        (Fault::Bandwidth(16 * 1024), "16 KiB/s bandwidth cap"),
        (Fault::Latency(Duration::from_secs(5)), "5 s latency spike"),
    ]
}

/// At the origin level (the engine's failover decision builds on this):
/// each fault yields `Unavailable` within the bounded time, never a hang
/// nor a wrong answer, and reads recover once the fault is gone.
fn ride_out_faults(
    rt: &tokio::runtime::Runtime,
    origin: &dyn Origin,
    proxy: &FaultProxy,
    path: &OriginPath,
    v: &FileVersion,
    data: &[u8],
) {
    let limits = fast_limits();
    // Gate, connect, request: the most one call may take, plus slack.
    let bound = limits.connect_timeout * 2 + limits.request_timeout + Duration::from_secs(2);
    assert_eq!(
        rt.block_on(origin.read_at(path, v, 0, data.len()))
            .expect("healthy read"),
        data
    );
    for (fault, what) in faults() {
        proxy.set(fault);
        for attempt in 0..3 {
            let r = within(bound, what, || {
                rt.block_on(origin.read_at(path, v, 0, data.len()))
            });
            match r {
                Err(OriginError::Unavailable(why)) => {
                    eprintln!("{}: {what} (attempt {attempt}): {why}", origin.describe());
                }
                other => panic!(
                    "{}: {what}: expected Unavailable, got {other:?}",
                    origin.describe()
                ),
            }
        }
        let r = within(bound, what, || rt.block_on(origin.check()));
        // A check is one small answer: a bandwidth cap lets it through.
        if !matches!(fault, Fault::Bandwidth(_)) {
            assert!(r.is_err(), "{what}: check passed under the fault");
        }
        proxy.heal();
        recovers(rt, origin, path, v, data, Duration::from_secs(20));
    }
}

#[test]
fn test_origin_connection_drop_triggers_failover() {
    logs();
    let data = noise(1 << 20, 7);
    let rt = runtime();

    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    moto.put(BUCKET, "lib/song.flac", data.clone());
    let s3_proxy = FaultProxy::start(moto.addr());
    let mut config = moto.s3_config(BUCKET, "lib", Some(s3_proxy.port()));
    config.limits = fast_limits();
    let s3 = s3_origin(config);
    let path = OriginPath::new(&b"song.flac"[..]);
    let v = rt.block_on(s3.stat(&path)).expect("stat");
    ride_out_faults(&rt, s3.as_ref(), &s3_proxy, &path, &v, &data);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("song.flac"), &data).unwrap();
    let sshd = Sshd::start();
    let ssh_proxy = FaultProxy::start(sshd.addr());
    let mut config = sshd.sftp_config(dir.path(), Some(ssh_proxy.port()));
    config.limits = fast_limits();
    let sftp = SftpOrigin::new(ORIGIN, config);
    let v = rt
        .block_on(sftp.stat(&path))
        .unwrap_or_else(|e| panic!("stat: {e}\n{}", sshd.log()));
    ride_out_faults(&rt, &sftp, &ssh_proxy, &path, &v, &data);

    // And in the daemon: the same track on both servers is one entry, read
    // from the preferred SFTP server until its connections are reset; then
    // the reads fail over to S3, and the SFTP origin is marked down. Once
    // the SFTP server answers again and its checks pass, reads go back to it.
    use musicfs_core::engine::{Config, Health, HealthConfig};
    use musicfs_tests::fixtures::TestDaemon;
    let mut tracks = Vec::new();
    for (name, title, seed) in [("track.wav", "Mirror", 5), ("again.wav", "Again", 6)] {
        let wav = dir.path().join("mirror").join(name);
        write_wav(&wav, 3 << 20, seed, title, "Band", "Album");
        let bytes = std::fs::read(&wav).unwrap();
        moto.put(BUCKET, &format!("mirror/{name}"), bytes.clone());
        tracks.push((format!("Band/Album/00 - {title}.wav"), bytes));
    }
    let mut config = sshd.sftp_config(&dir.path().join("mirror"), Some(ssh_proxy.port()));
    config.limits = fast_limits();
    let primary: Arc<dyn RemoteOrigin> = Arc::new(SftpOrigin::new(OriginId(0), config));
    let mirror: Arc<dyn RemoteOrigin> = Arc::new(
        S3Origin::new(
            OriginId(1),
            moto.s3_config(BUCKET, "mirror", Some(s3_proxy.port())),
        )
        .expect("s3 origin"),
    );
    let mut catalog = Vec::new();
    for (id, o) in [(OriginId(0), &primary), (OriginId(1), &mirror)] {
        let report = rt
            .block_on(scan_remote(
                id,
                Arc::clone(o),
                &RemoteScanOptions::default(),
                &NoProgress,
            ))
            .expect("scan");
        catalog.extend(report.entries);
    }
    let cache = dir.path().join("cache");
    let d = TestDaemon::start(
        &catalog,
        vec![
            Arc::clone(&primary) as Arc<dyn Origin>,
            Arc::clone(&mirror) as Arc<dyn Origin>,
        ],
        Arc::new(musicfs::store::ChunkStore::open(&cache).unwrap()),
        &cache,
        // Checks often enough that the healed origin is seen within seconds.
        Config {
            health: HealthConfig {
                check_interval: Duration::from_millis(200),
                check_timeout: Duration::from_secs(3),
                dead_backoff_base: Duration::from_millis(200),
                dead_backoff_max: Duration::from_secs(1),
                ..HealthConfig::default()
            },
            ..Config::default()
        },
    );
    let mut paths = d.paths();
    paths.sort();
    let mut want_paths: Vec<String> = tracks.iter().map(|(p, _)| p.clone()).collect();
    want_paths.sort();
    assert_eq!(paths, want_paths, "mirrors are one entry");
    let (track, want) = (&tracks[0].0, &tracks[0].1);
    let before = ssh_proxy.down_bytes();
    let s3_before = s3_proxy.down_bytes();
    ssh_proxy.set(Fault::Reset);
    let got = d
        .read_all(track, Duration::from_secs(60))
        .expect("read fails over to S3");
    assert!(got == *want, "byte-identical through the failover");
    assert!(
        ssh_proxy.down_bytes() - before < (1 << 20),
        "the bytes did not come from the reset SFTP server"
    );
    assert!(
        s3_proxy.down_bytes() - s3_before >= want.len() as u64,
        "the bytes came from S3"
    );
    let health = d.daemon.inspect(|e| {
        e.origin_statuses()
            .into_iter()
            .map(|s| (s.origin, s.health))
            .collect::<Vec<_>>()
    });
    assert!(
        health.contains(&(OriginId(0), Health::Degraded))
            || health.contains(&(OriginId(0), Health::Unhealthy)),
        "{health:?}"
    );

    // The SFTP server answers again: after its checks pass (hysteresis: more
    // than one), the uncached track is read from it, not from S3.
    ssh_proxy.heal();
    let sftp_health = || {
        d.daemon.inspect(|e| {
            e.origin_statuses()
                .into_iter()
                .find(|s| s.origin == OriginId(0))
                .map(|s| (s.health, s.last_error))
        })
    };
    let healed = musicfs_tests::wait_for(Duration::from_secs(60), || {
        sftp_health().is_some_and(|(h, _)| h == Health::Healthy)
    });
    assert!(healed, "{:?}\n{}", sftp_health(), sshd.log());
    let (track, want) = (&tracks[1].0, &tracks[1].1);
    let before = ssh_proxy.down_bytes();
    let s3_before = s3_proxy.down_bytes();
    let got = d
        .read_all(track, Duration::from_secs(60))
        .expect("read from the healed SFTP server");
    assert!(got == *want, "byte-identical after the return");
    let from_sftp = ssh_proxy.down_bytes() - before;
    assert!(
        from_sftp >= want.len() as u64,
        "only {from_sftp} bytes of {} came through the SFTP server",
        want.len()
    );
    let from_s3 = s3_proxy.down_bytes() - s3_before;
    assert!(from_s3 < (1 << 20), "{from_s3} bytes still came from S3");
}

#[test]
fn scans_of_unreachable_origins_fail_rather_than_come_back_empty() {
    logs();
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    moto.put(BUCKET, "lib/a.mp3", noise(1000, 1));
    let proxy = FaultProxy::start(moto.addr());
    let mut config = moto.s3_config(BUCKET, "lib", Some(proxy.port()));
    config.limits = fast_limits();
    let origin = s3_origin(config);
    let rt = runtime();
    proxy.set(Fault::Blackhole);
    let r = within(
        Duration::from_secs(20),
        "scan of a blackholed origin",
        || {
            rt.block_on(scan_remote(
                ORIGIN,
                Arc::clone(&origin),
                &RemoteScanOptions::default(),
                &NoProgress,
            ))
        },
    );
    assert!(matches!(r, Err(OriginError::Unavailable(_))), "{r:?}");
    proxy.heal();

    // A missing bucket is an error too, not an empty library.
    let missing = s3_origin(moto.s3_config("no-such-bucket", "", None));
    let r = rt.block_on(scan_remote(
        ORIGIN,
        missing,
        &RemoteScanOptions::default(),
        &NoProgress,
    ));
    assert!(r.is_err(), "{:?}", r.map(|r| r.entries.len()));
}

#[test]
fn secrets_never_appear_in_descriptions_errors_or_logs() {
    let logs = logs();
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    moto.put(BUCKET, "lib/a.flac", noise(1000, 1));
    let rt = runtime();
    let config = moto.s3_config(BUCKET, "lib", None);
    let origin = S3Origin::new(ORIGIN, config.clone()).unwrap();
    let path = OriginPath::new(&b"a.flac"[..]);
    let mut texts = vec![
        format!("{config:?}"),
        format!("{origin:?}"),
        origin.describe(),
    ];
    rt.block_on(async {
        let v = origin.stat(&path).await.unwrap();
        origin.read_at(&path, &v, 0, 10).await.unwrap();
        // Failures whose messages could carry a request: a wrong bucket, a
        // changed file, a dead server.
        let wrong = S3Origin::new(ORIGIN, moto.s3_config("nope", "", None)).unwrap();
        texts.push(format!("{:?}", wrong.check().await));
        let stale = FileVersion {
            token: Some("\"0000\"".into()),
            ..v.clone()
        };
        texts.push(format!("{:?}", origin.read_at(&path, &stale, 0, 10).await));
        let mut dead = moto.s3_config(BUCKET, "lib", Some(musicfs_tests::servers::free_port()));
        dead.limits = fast_limits();
        let dead = S3Origin::new(ORIGIN, dead).unwrap();
        texts.push(format!("{:?}", dead.read_at(&path, &v, 0, 10).await));
        texts.push(format!("{:?}", dead.check().await));
        let report = scan_remote(
            ORIGIN,
            Arc::new(S3Origin::new(ORIGIN, moto.s3_config(BUCKET, "lib", None)).unwrap()),
            &RemoteScanOptions {
                ranged: RangedOptions::default(),
                ..RemoteScanOptions::default()
            },
            &NoProgress,
        )
        .await;
        texts.push(format!("{report:?}"));
    });
    let logged = String::from_utf8_lossy(&logs.lock()).into_owned();
    assert!(
        !logged.is_empty(),
        "nothing was logged: the check would prove nothing"
    );
    texts.push(logged);
    for text in &texts {
        for secret in [SECRET, KEY_ID] {
            assert!(!text.contains(secret), "{secret} leaked: {text:.2000}");
        }
    }
}

/// The io-shell's delta sync over S3: changes are found by ETag, size and
/// mtime from one listing, and only new and changed objects are read.
#[test]
fn s3_delta_sync_reads_only_what_changed() {
    use musicfs::library::sync::{SyncSource, Syncer};
    use musicfs_core::Layout;
    use musicfs_core::engine::Config;
    use musicfs_tests::fixtures::TestDaemon;

    logs();
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    for i in 0..40u64 {
        write_wav(
            &lib.join(format!("a/{i:02}.wav")),
            20_000 + i as usize,
            i,
            &format!("Song {i:02}"),
            "Band",
            "Album",
        );
    }
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    moto.upload_dir(BUCKET, "lib", &lib);
    let origin: Arc<dyn RemoteOrigin> = Arc::new(
        S3Origin::new(OriginId(0), moto.s3_config(BUCKET, "lib", None)).expect("s3 origin"),
    );
    let d = TestDaemon::start(
        &[],
        vec![Arc::clone(&origin) as Arc<dyn Origin>],
        Arc::new(musicfs::store::ChunkStore::open(&dir.path().join("cache")).unwrap()),
        &dir.path().join("cache"),
        Config::default(),
    );
    let syncer = Syncer::new(
        Arc::clone(&d.daemon),
        Arc::clone(&d.db),
        Layout::default_layout(),
        vec![SyncSource::Remote(Arc::clone(&origin))],
        None,
        None,
    );
    // Called from a plain thread, as the daemon calls it from its blocking
    // pool: the syncer waits on the daemon's runtime.
    let first = syncer.sync_origin(OriginId(0)).expect("first sync");
    assert_eq!((first.reread, first.unchanged), (40, 0));
    assert_eq!(d.paths().len(), 40);

    // Retag one object (same key, new bytes: new ETag), delete one, add one.
    let retagged = lib.join("a/03.wav");
    write_wav(&retagged, 20_003, 3, "Renamed Song", "Band", "Album");
    moto.put(BUCKET, "lib/a/03.wav", std::fs::read(&retagged).unwrap());
    moto.delete(BUCKET, "lib/a/07.wav");
    write_wav(&lib.join("b/new.wav"), 30_000, 99, "Fresh", "Band", "Album");
    moto.put(
        BUCKET,
        "lib/b/new.wav",
        std::fs::read(lib.join("b/new.wav")).unwrap(),
    );
    let second = syncer.sync_origin(OriginId(0)).expect("second sync");
    assert_eq!(
        second.reread, 2,
        "the retagged and the new object: {second:?}"
    );
    assert_eq!(second.removed, 1);
    assert_eq!(second.unchanged, 38);
    let paths = d.paths();
    assert_eq!(paths.len(), 40);
    assert!(
        paths.iter().any(|p| p.ends_with("Renamed Song.wav")),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p.ends_with("Fresh.wav")), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.ends_with("Song 07.wav")),
        "{paths:?}"
    );

    // Nothing changed: nothing read.
    let third = syncer.sync_origin(OriginId(0)).expect("third sync");
    assert_eq!((third.reread, third.unchanged), (0, 40));

    // An unreachable bucket is an error, never an empty origin.
    drop(moto);
    assert!(syncer.sync_origin(OriginId(0)).is_err());
    assert_eq!(d.paths().len(), 40, "the tracks stay in the tree");
}
