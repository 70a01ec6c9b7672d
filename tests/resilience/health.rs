//! Origin health checks on the real daemon (seed 4.2.x): every check is
//! bounded by its timeout, checks of several origins run side by side, and
//! a hung origin delays nobody but itself.
//!
//! Then every `FailMode` of `FaultyOrigin` against the real daemon: whatever
//! an origin does, a read gets exactly the origin's bytes or an error, within
//! the read timeout; cached bytes play while an origin is down; a mirror
//! takes over from a failing origin, and gives the reads back once it heals.
//!
//! Why those run in-process (a `Daemon` with its engine and executor, no
//! FUSE) and not on the `musicfs` binary: `FaultyOrigin` is an `Origin`
//! wrapper, a Rust value handed to the daemon when it is built, and the
//! binary builds its origins from `--origin` arguments only; there is no
//! way to give it one. What the binary can be made to meet is tested on it
//! here too: an origin on a file system that stops answering (the mount of
//! a SIGSTOPped `musicfs`), with failover to a mirror and the way back
//! (`test_origin_recovery_resumes_routing_on_the_binary`), and hung health
//! checks through the `FAILPOINTS` environment variable
//! (`failpoints::a_hung_health_check_on_the_binary_fails_at_its_timeout_and_heals`).

use musicfs::library::scan::{NoProgress, ScanOptions, scan_local};
use musicfs::origin::{BoxFuture, LocalOrigin, Origin, OriginError};
use musicfs::store::{ChunkBackend, ChunkStore};
use musicfs_core::engine::{Config, Health, HealthConfig};
use musicfs_core::fs::Errno;
use musicfs_core::{FileVersion, OriginId, OriginPath};
use musicfs_tests::faults::{FailMode, FaultyCasStore, FaultyOrigin};
use musicfs_tests::fixtures::{TestDaemon, local_origin, scan, write_wav};
use musicfs_tests::mount::{MountCommand, control_ok};
use musicfs_tests::{files_under, wait_for};
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

fn fast_checks(timeout: Duration) -> Config {
    Config {
        health: HealthConfig {
            check_interval: Duration::from_millis(100),
            check_timeout: timeout,
            dead_backoff_base: Duration::from_millis(200),
            dead_backoff_max: Duration::from_millis(400),
            ..HealthConfig::default()
        },
        ..Config::default()
    }
}

fn status_of(d: &TestDaemon, origin: OriginId) -> (Health, u32, Option<String>) {
    d.daemon.inspect(|e| {
        e.origin_statuses()
            .into_iter()
            .find(|s| s.origin == origin)
            .map(|s| (s.health, s.consecutive_failures, s.last_error))
            .expect("origin is tracked")
    })
}

/// A local origin whose directory is on a file system that stopped
/// answering: the mount of a SIGSTOPped `musicfs` daemon, as a dead NFS
/// server looks. Reading the directory blocks in the kernel, for good.
#[test]
fn test_local_origin_health_check_has_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_wav(&d.join("lib/a.wav"), 50_000, 1, "A", "B", "C");
    let m = MountCommand::new(
        Path::new(BIN),
        &[&d.join("lib")],
        &d.join("cache-frozen"),
        &d.join("frozen"),
        &d.join("frozen.log"),
    )
    .start(Duration::from_secs(60));
    let catalog = scan(&m.mountpoint);
    assert!(!catalog.is_empty(), "the frozen origin has tracks to serve");
    m.signal(libc::SIGSTOP);

    let daemon = TestDaemon::start(
        &catalog,
        vec![local_origin(&m.mountpoint)],
        Arc::new(musicfs::store::ChunkStore::open(&d.join("cache")).unwrap()),
        &d.join("cache"),
        fast_checks(Duration::from_millis(300)),
    );
    daemon
        .daemon
        .with_engine(|e, now| e.track_origin(now, OriginId(0)));
    let timed_out = wait_for(Duration::from_secs(30), || {
        let (health, failures, _) = status_of(&daemon, OriginId(0));
        health == Health::Unhealthy && failures >= 3
    });
    let (health, failures, error) = status_of(&daemon, OriginId(0));
    m.signal(libc::SIGCONT);
    assert!(
        timed_out,
        "a check that never answers counts as failed: {health:?} after {failures} failures"
    );
    let error = error.unwrap_or_default();
    // The daemon's timer or the engine's (whichever fires first) ends it.
    assert!(
        error.contains("no answer within") || error.contains("timed out"),
        "{error}"
    );

    // Once the file system answers again, the origin recovers.
    let recovered = wait_for(Duration::from_secs(30), || {
        status_of(&daemon, OriginId(0)).0 == Health::Healthy
    });
    assert!(recovered, "{:?}", status_of(&daemon, OriginId(0)));
    assert!(m.stop().success());
}

/// An origin whose checks take `delay` (or never end), counting how many
/// checks of all such origins are in flight together.
struct SlowCheck {
    inner: Arc<dyn Origin>,
    delay: Option<Duration>,
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    done: AtomicUsize,
}

impl Origin for SlowCheck {
    fn describe(&self) -> String {
        "slow check".into()
    }
    fn read_at<'a>(
        &'a self,
        path: &'a OriginPath,
        version: &'a FileVersion,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, OriginError>> {
        self.inner.read_at(path, version, offset, len)
    }
    fn check(&self) -> BoxFuture<'_, Result<(), OriginError>> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            match self.delay {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

#[test]
fn test_health_checks_run_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lib");
    write_wav(&root.join("a.wav"), 50_000, 1, "A", "B", "C");
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    // Origin 0 never answers; 1 to 3 take a second each.
    let origins: Vec<Arc<SlowCheck>> = [None, Some(1), Some(1), Some(1)]
        .into_iter()
        .map(|secs| {
            Arc::new(SlowCheck {
                inner: local_origin(&root),
                delay: secs.map(Duration::from_secs),
                in_flight: Arc::clone(&in_flight),
                most: Arc::clone(&most),
                done: AtomicUsize::new(0),
            })
        })
        .collect();
    let daemon = TestDaemon::start(
        &scan(&root),
        origins
            .iter()
            .map(|o| Arc::clone(o) as Arc<dyn Origin>)
            .collect(),
        Arc::new(musicfs::store::ChunkStore::open(&dir.path().join("cache")).unwrap()),
        &dir.path().join("cache"),
        fast_checks(Duration::from_secs(5)),
    );
    daemon.daemon.with_engine(|e, now| {
        for i in 0..4 {
            e.track_origin(now, OriginId(i));
        }
    });
    // All four checks are in flight at once: none waits for another, not
    // even for the one that never answers.
    let together = wait_for(Duration::from_secs(30), || most.load(Ordering::SeqCst) == 4);
    assert!(
        together,
        "at most {} checks ran together",
        most.load(Ordering::SeqCst)
    );
    // The answering origins keep being checked while origin 0 hangs.
    let kept_checking = wait_for(Duration::from_secs(30), || {
        origins[1..]
            .iter()
            .all(|o| o.done.load(Ordering::SeqCst) >= 2)
    });
    assert!(kept_checking);
    assert_eq!(origins[0].done.load(Ordering::SeqCst), 0);
    for i in 1..4 {
        assert_eq!(status_of(&daemon, OriginId(i)).0, Health::Healthy);
    }
}

// ----- FaultyOrigin against the real daemon ---------------------------------

/// A read timeout short enough to keep the fault tests fast, and what a
/// test waits for a reply at most: past it, the read hung.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
const HANG: Duration = Duration::from_secs(10);

/// Short timeouts everywhere, so faults show within a few seconds.
fn fast_faults() -> Config {
    Config {
        read_timeout: READ_TIMEOUT,
        fetch_stall_timeout: Duration::from_secs(1),
        retry_backoff_base: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(200),
        health: HealthConfig {
            check_interval: Duration::from_millis(100),
            check_timeout: Duration::from_millis(300),
            dead_backoff_base: Duration::from_millis(100),
            dead_backoff_max: Duration::from_millis(400),
            on_demand_gap: Duration::from_millis(100),
            ..HealthConfig::default()
        },
        ..Config::default()
    }
}

/// Tracks: each one's virtual path and bytes.
type Tracks = Vec<(String, Vec<u8>)>;

/// Writes `n` tracks of `bytes` bytes each under `root`; returns each one's
/// virtual path and bytes.
fn library(root: &Path, n: usize, bytes: usize) -> Tracks {
    (0..n)
        .map(|i| {
            let file = root.join(format!("t{i}.wav"));
            let title = format!("T{i}");
            write_wav(&file, bytes, 40 + i as u64, &title, "Band", "Album");
            (
                format!("Band/Album/00 - {title}.wav"),
                std::fs::read(&file).unwrap(),
            )
        })
        .collect()
}

/// A daemon over the local origins `roots` (origin i is `roots[i]`, in
/// order of preference), each wrapped in a healthy [`FaultyOrigin`].
fn faulty_daemon(
    cache: &Path,
    roots: &[&Path],
    config: Config,
) -> (TestDaemon, Vec<Arc<FaultyOrigin>>) {
    let store = Arc::new(ChunkStore::open(cache).unwrap());
    faulty_daemon_on(store, cache, roots, config)
}

/// [`faulty_daemon`] with its chunks in `store`.
fn faulty_daemon_on(
    store: Arc<dyn ChunkBackend>,
    cache: &Path,
    roots: &[&Path],
    config: Config,
) -> (TestDaemon, Vec<Arc<FaultyOrigin>>) {
    let mut catalog = Vec::new();
    let mut origins = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        let id = OriginId(u16::try_from(i).unwrap());
        catalog.extend(
            scan_local(id, root, &ScanOptions::default(), &NoProgress)
                .unwrap()
                .entries,
        );
        let local: Arc<dyn Origin> = Arc::new(LocalOrigin::new(id, root.to_path_buf()));
        origins.push(Arc::new(FaultyOrigin::new(local, FailMode::Healthy)));
    }
    let d = TestDaemon::start(
        &catalog,
        origins
            .iter()
            .map(|o| Arc::clone(o) as Arc<dyn Origin>)
            .collect(),
        store,
        cache,
        config,
    );
    (d, origins)
}

/// Reads `len` bytes at `offset` of `path`: the exact bytes of `want` there
/// (never fewer, never others), or an error; and within the read timeout.
fn read_checked(
    d: &TestDaemon,
    path: &str,
    want: &[u8],
    offset: u64,
    len: u32,
) -> Result<(), Errno> {
    let started = Instant::now();
    let got = d.read(path, offset, len, HANG);
    let took = started.elapsed();
    assert!(
        took <= READ_TIMEOUT + Duration::from_secs(2),
        "{path} @{offset}: answered after {took:?}, past the read timeout"
    );
    let from = usize::try_from(offset).unwrap().min(want.len());
    let to = (from + len as usize).min(want.len());
    match got {
        Ok(bytes) => {
            assert!(
                bytes == want[from..to],
                "{path} @{offset}+{len}: {} bytes served that are not the origin's {} bytes",
                bytes.len(),
                to - from
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Reads all of `path` in 128 KiB reads, checking each; the errors met.
fn read_file_checked(d: &TestDaemon, path: &str, want: &[u8]) -> Vec<Errno> {
    (0..want.len() as u64)
        .step_by(128 * 1024)
        .filter_map(|offset| read_checked(d, path, want, offset, 128 * 1024).err())
        .collect()
}

fn health_of(d: &TestDaemon, origin: OriginId) -> Health {
    status_of(d, origin).0
}

#[test]
fn every_nth_origin_read_failing_still_serves_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let files = library(&dir.path().join("lib"), 3, 3 << 20);
    let (d, origins) = faulty_daemon(
        &dir.path().join("cache"),
        &[&dir.path().join("lib")],
        fast_faults(),
    );
    origins[0].set_mode(FailMode::FailEveryNth(3));
    for (path, want) in &files {
        let errors = read_file_checked(&d, path, want);
        assert!(errors.is_empty(), "{path}: {errors:?}");
    }
    // The faults happened: every third origin read failed (at least 9 MiB
    // came through in 1 MiB requests, so a third of the calls, at least 4,
    // failed) and the failed fetches were started again.
    let calls = origins[0].calls();
    assert!(calls >= 13, "only {calls} origin reads");
    let stats = d.daemon.inspect(|e| e.stats().clone());
    assert!(stats.fetches > files.len() as u64, "{stats:?}");
    assert_eq!(stats.reads_failed, 0, "{stats:?}");
}

#[test]
fn an_origin_that_stops_answering_keeps_cached_music_and_fails_the_rest_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let files = library(&dir.path().join("lib"), 2, 2 << 20);
    let (d, origins) = faulty_daemon(
        &dir.path().join("cache"),
        &[&dir.path().join("lib")],
        fast_faults(),
    );
    let (cached, want_cached) = &files[0];
    let (cold, want_cold) = &files[1];
    assert!(read_file_checked(&d, cached, want_cached).is_empty());
    // From now on every origin read and every check fails.
    let served = origins[0].calls();
    origins[0].set_mode(FailMode::FailAfterN(served));
    // Uncached bytes: EIO, within the read timeout (`read_checked` bounds it).
    for offset in [0, 1 << 20] {
        assert_eq!(
            read_checked(&d, cold, want_cold, offset, 128 * 1024),
            Err(Errno::Io)
        );
    }
    assert!(origins[0].calls() > served, "the origin was asked");
    assert!(
        wait_for(Duration::from_secs(10), || health_of(&d, OriginId(0))
            == Health::Unhealthy),
        "{:?}",
        status_of(&d, OriginId(0))
    );
    // Cached bytes keep playing, without asking the origin.
    let asked = origins[0].calls();
    assert!(read_file_checked(&d, cached, want_cached).is_empty());
    assert_eq!(origins[0].calls(), asked, "cached reads asked the origin");
    // An unhealthy origin is not asked for fetches; its readers get EIO.
    assert_eq!(
        read_checked(&d, cold, want_cold, 512 * 1024, 4096),
        Err(Errno::Io)
    );
    assert_eq!(origins[0].calls(), asked, "a down origin was fetched from");
}

#[test]
fn a_slow_origin_answers_or_fails_within_the_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let files = library(&dir.path().join("lib"), 2, 2 << 20);
    let mut config = fast_faults();
    // A slow check is no failed check.
    config.health.check_timeout = Duration::from_secs(1);
    let (d, origins) = faulty_daemon(
        &dir.path().join("cache"),
        &[&dir.path().join("lib")],
        config,
    );
    // Slower than a disk, well within the timeouts: every byte arrives.
    origins[0].set_mode(FailMode::TimeoutMs(200));
    let (slow, want_slow) = &files[0];
    assert!(read_file_checked(&d, slow, want_slow).is_empty());
    assert_eq!(health_of(&d, OriginId(0)), Health::Healthy);
    // An origin that never answers in time: EIO within the read timeout,
    // never a hang, and the origin is marked failing.
    origins[0].set_mode(FailMode::TimeoutMs(60_000));
    let (hung, want_hung) = &files[1];
    for offset in [0, 1 << 20] {
        assert_eq!(
            read_checked(&d, hung, want_hung, offset, 128 * 1024),
            Err(Errno::Io)
        );
    }
    assert!(wait_for(Duration::from_secs(10), || health_of(
        &d,
        OriginId(0)
    ) == Health::Unhealthy));
    // Once it answers again, so do the reads.
    origins[0].set_mode(FailMode::Healthy);
    assert!(wait_for(Duration::from_secs(10), || health_of(
        &d,
        OriginId(0)
    ) == Health::Healthy));
    assert!(read_file_checked(&d, hung, want_hung).is_empty());
}

#[test]
fn truncated_origin_answers_are_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let files = library(&dir.path().join("lib"), 2, 3 << 20);
    let (d, origins) = faulty_daemon(
        &dir.path().join("cache"),
        &[&dir.path().join("lib")],
        fast_faults(),
    );
    origins[0].set_mode(FailMode::PartialRead { max_bytes: 100_000 });
    let (cut, want_cut) = &files[0];
    // Every read is checked byte for byte: exact, or an error.
    let errors = read_file_checked(&d, cut, want_cut);
    assert!(!errors.is_empty(), "truncated answers went unnoticed");
    assert!(errors.iter().all(|&e| e == Errno::Io), "{errors:?}");
    // Answers that fit are whole: the bytes come through.
    origins[0].set_mode(FailMode::PartialRead { max_bytes: 4 << 20 });
    let (whole, want_whole) = &files[1];
    assert!(read_file_checked(&d, whole, want_whole).is_empty());
}

/// A daemon over two tracks of `bytes` bytes each whose cache disk is full:
/// the first track is read (answered from memory; the failed write behind
/// switches the daemon to passthrough), so the second is read straight from
/// the origin.
fn in_passthrough(dir: &Path, bytes: usize) -> (TestDaemon, Vec<Arc<FaultyOrigin>>, Tracks) {
    let cache = dir.join("cache");
    let files = library(&dir.join("lib"), 2, bytes);
    let store = Arc::new(FaultyCasStore::new(ChunkStore::open(&cache).unwrap()));
    store.inject_enospc.store(true, Ordering::SeqCst);
    let (d, origins) = faulty_daemon_on(
        Arc::clone(&store) as Arc<dyn ChunkBackend>,
        &cache,
        &[&dir.join("lib")],
        fast_faults(),
    );
    let (first, want_first) = &files[0];
    assert!(read_file_checked(&d, first, want_first).is_empty());
    assert!(
        musicfs_tests::wait_for(Duration::from_secs(10), || d
            .daemon
            .inspect(|e| e.in_passthrough())),
        "in passthrough"
    );
    (d, origins, files)
}

/// With the cache disk full the daemon reads straight from the origin
/// (passthrough): a truncated answer must not reach the reader there either.
#[test]
fn truncated_origin_answers_are_never_served_in_passthrough() {
    let dir = tempfile::tempdir().unwrap();
    let (d, origins, files) = in_passthrough(dir.path(), 1 << 20);
    origins[0].set_mode(FailMode::PartialRead { max_bytes: 1000 });
    let (cut, want_cut) = &files[1];
    let errors = read_file_checked(&d, cut, want_cut);
    assert_eq!(errors.len(), 8, "every 128 KiB read fails: {errors:?}");
}

/// A stream read straight from the origin (the cache disk is full) is read
/// ahead of in memory. Once the origin cuts its answers short, what was read
/// ahead before is still the origin's bytes; nothing cut short reaches a
/// reader: a short read ahead is dropped, and the reads waiting for it ask
/// the origin themselves and fail.
#[test]
fn truncated_answers_to_a_read_ahead_are_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (d, origins, files) = in_passthrough(dir.path(), 4 << 20);
    let (cut, want_cut) = &files[1];
    let before = d.daemon.exec_stats().served_read_ahead;
    for offset in (0..2 << 20).step_by(128 * 1024) {
        assert_eq!(read_checked(&d, cut, want_cut, offset, 128 * 1024), Ok(()));
    }
    assert!(
        d.daemon.exec_stats().served_read_ahead > before,
        "the second megabyte was answered from bytes read ahead"
    );
    origins[0].set_mode(FailMode::PartialRead { max_bytes: 1000 });
    let errors: Vec<Errno> = (2 << 20..4 << 20)
        .step_by(128 * 1024)
        .filter_map(|offset| read_checked(&d, cut, want_cut, offset, 128 * 1024).err())
        .collect();
    assert!(!errors.is_empty(), "cut answers went unnoticed");
    assert!(errors.iter().all(|&e| e == Errno::Io), "{errors:?}");
}

#[test]
fn a_missing_file_fails_its_reads_but_not_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let files = library(&dir.path().join("lib"), 2, 1 << 20);
    let (d, origins) = faulty_daemon(
        &dir.path().join("cache"),
        &[&dir.path().join("lib")],
        fast_faults(),
    );
    origins[0].set_mode(FailMode::ReturnError(ErrorKind::NotFound));
    let (gone, want_gone) = &files[0];
    assert_eq!(
        read_checked(&d, gone, want_gone, 0, 128 * 1024),
        Err(Errno::Io)
    );
    // A file gone from an origin says nothing about the origin.
    let (_, failures, error) = status_of(&d, OriginId(0));
    assert_eq!((failures, error), (0, None));
    origins[0].set_mode(FailMode::Healthy);
    let (other, want_other) = &files[1];
    assert!(read_file_checked(&d, other, want_other).is_empty());
    assert_eq!(health_of(&d, OriginId(0)), Health::Healthy);
}

#[test]
fn origin_errors_other_than_not_found_mark_the_origin_down_until_it_heals() {
    let dir = tempfile::tempdir().unwrap();
    let kinds = [
        ErrorKind::ConnectionReset,
        ErrorKind::PermissionDenied,
        ErrorKind::TimedOut,
        ErrorKind::Other,
    ];
    let files = library(&dir.path().join("lib"), kinds.len(), 1 << 20);
    let (d, origins) = faulty_daemon(
        &dir.path().join("cache"),
        &[&dir.path().join("lib")],
        fast_faults(),
    );
    for (kind, (path, want)) in kinds.into_iter().zip(&files) {
        origins[0].set_mode(FailMode::ReturnError(kind));
        assert_eq!(
            read_checked(&d, path, want, 0, 128 * 1024),
            Err(Errno::Io),
            "{kind:?}"
        );
        let down = wait_for(Duration::from_secs(10), || {
            health_of(&d, OriginId(0)) == Health::Unhealthy
        });
        assert!(down, "{kind:?}: {:?}", status_of(&d, OriginId(0)));
        origins[0].set_mode(FailMode::Healthy);
        let up = wait_for(Duration::from_secs(10), || {
            health_of(&d, OriginId(0)) == Health::Healthy
        });
        assert!(up, "{kind:?}: {:?}", status_of(&d, OriginId(0)));
        let errors = read_file_checked(&d, path, want);
        assert!(errors.is_empty(), "{kind:?} after healing: {errors:?}");
    }
}

/// Two local mirrors of the same files: origin 0 preferred, origin 1 a copy.
fn mirrored(dir: &Path, n: usize, bytes: usize) -> Vec<(String, Vec<u8>)> {
    let files = library(&dir.join("lib0"), n, bytes);
    std::fs::create_dir_all(dir.join("lib1")).unwrap();
    for i in 0..n {
        let name = format!("t{i}.wav");
        std::fs::copy(dir.join("lib0").join(&name), dir.join("lib1").join(&name)).unwrap();
    }
    files
}

#[test]
fn test_origin_recovery_resumes_routing() {
    let dir = tempfile::tempdir().unwrap();
    let files = mirrored(dir.path(), 4, 1 << 20);
    let (d, origins) = faulty_daemon(
        &dir.path().join("cache"),
        &[&dir.path().join("lib0"), &dir.path().join("lib1")],
        fast_faults(),
    );
    assert_eq!(d.paths().len(), files.len(), "mirrors are one entry each");
    let calls = || (origins[0].calls(), origins[1].calls());
    // Both healthy: the preferred origin serves.
    assert!(read_file_checked(&d, &files[0].0, &files[0].1).is_empty());
    assert!(calls().0 > 0 && calls().1 == 0, "{:?}", calls());
    // The preferred origin fails: reads go on from the mirror.
    origins[0].set_mode(FailMode::ReturnError(ErrorKind::ConnectionRefused));
    assert!(read_file_checked(&d, &files[1].0, &files[1].1).is_empty());
    assert!(calls().1 > 0, "the mirror served: {:?}", calls());
    assert!(wait_for(Duration::from_secs(10), || health_of(
        &d,
        OriginId(0)
    ) == Health::Unhealthy));
    let before = calls();
    assert!(read_file_checked(&d, &files[2].0, &files[2].1).is_empty());
    assert_eq!(calls().0, before.0, "an unhealthy origin was read from");
    assert!(calls().1 > before.1);
    // It heals: after its checks pass (one brings it to degraded, more to
    // healthy), the reads go back to it and the mirror is left alone.
    origins[0].set_mode(FailMode::Healthy);
    assert!(wait_for(Duration::from_secs(10), || health_of(
        &d,
        OriginId(0)
    ) == Health::Healthy));
    let before = calls();
    assert!(read_file_checked(&d, &files[3].0, &files[3].1).is_empty());
    assert!(
        calls().0 > before.0,
        "routing resumed: {before:?} -> {:?}",
        calls()
    );
    assert_eq!(calls().1, before.1, "the mirror was still read from");
}

// ----- the real binary --------------------------------------------------------

/// `musicfs status --json` of the mount at `mnt`.
fn status_json(mnt: &Path) -> serde_json::Value {
    let out = control_ok(Path::new(BIN), &["status", "--json"], mnt);
    serde_json::from_str(&out).expect("status --json is JSON")
}

/// Origin `i`'s health and the requests it was asked, per `status --json`.
fn origin_status(mnt: &Path, i: usize) -> (String, u64) {
    let doc = status_json(mnt);
    let o = &doc["origins"][i];
    (
        o["health"].as_str().unwrap_or_default().to_owned(),
        o["requests"].as_u64().expect("requests counted"),
    )
}

/// Sends SIGCONT to a stopped process when dropped, so that a failing test
/// never leaves a frozen file system (and the threads blocked on it) behind.
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// Failover between two local mirrors on the real binary, and the way
/// back. Origin 0 (preferred: given first) is the mount of another `musicfs`
/// daemon, which SIGSTOP freezes as a dead NFS server freezes: every read
/// of it blocks in the kernel. Origin 1 is a plain copy of the same files.
#[test]
fn test_origin_recovery_resumes_routing_on_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 4 MiB each: the first scan read their heads (and WAV tails) through
    // origin 0, so the kernel holds a few pages of each; most are not.
    let files = library(&d.join("inner-lib"), 3, 4 << 20);
    std::fs::create_dir_all(d.join("lib1")).unwrap();
    for i in 0..files.len() {
        let name = format!("t{i}.wav");
        std::fs::copy(d.join("inner-lib").join(&name), d.join("lib1").join(&name)).unwrap();
    }
    let inner = MountCommand::new(
        Path::new(BIN),
        &[&d.join("inner-lib")],
        &d.join("inner-cache"),
        &d.join("lib0"),
        &d.join("inner.log"),
    )
    .start(Duration::from_secs(60));
    let m = MountCommand::new(
        Path::new(BIN),
        &[&d.join("lib0"), &d.join("lib1")],
        &d.join("cache"),
        &d.join("mnt"),
        &d.join("outer.log"),
    )
    .start(Duration::from_secs(60));
    let mnt = m.mountpoint.clone();
    assert_eq!(
        files_under(&mnt).len(),
        files.len(),
        "mirrors are one entry each"
    );
    let read = |i: usize| {
        let (path, want) = &files[i];
        let got = std::fs::read(mnt.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(got == *want, "{path}: not the origin's bytes");
    };

    // Both healthy: the preferred origin serves (and fills the cache
    // behind the reader).
    read(0);
    m.wait_filled(Path::new(BIN));
    let (health0, asked0) = origin_status(&mnt, 0);
    let (_, asked1) = origin_status(&mnt, 1);
    assert_eq!(health0, "healthy");
    assert!(asked0 > 0 && asked1 == 0, "{asked0} / {asked1}");

    // Origin 0 stops answering: its fetch stalls, is given up, and the
    // mirror serves the read, whole and within the read timeout (30 s).
    inner.signal(libc::SIGSTOP);
    let thaw = Thaw(inner.pid());
    let started = Instant::now();
    read(1);
    let failover = started.elapsed();
    // The mirror answered the reader; it also fills the cache behind it.
    m.wait_filled(Path::new(BIN));
    let (health0, before0) = origin_status(&mnt, 0);
    let (_, before1) = origin_status(&mnt, 1);
    assert_ne!(health0, "healthy", "the stalled fetch counts against it");
    assert!(before1 > asked1, "the mirror served: {asked1} -> {before1}");
    let log = m.log_text();
    assert!(log.contains("origin is failing"), "{log}");

    // It answers again: once its health checks pass (a degraded origin is
    // checked every 7.5 s, two passes make it healthy), reads go back to it
    // and the mirror is left alone.
    drop(thaw);
    let healthy = wait_for(Duration::from_secs(60), || {
        origin_status(&mnt, 0).0 == "healthy"
    });
    assert!(healthy, "{:?}\n{}", status_json(&mnt), m.log_text());
    println!(
        "failover read took {failover:?} (origin 0 {health0}); healthy again {:?} after the thaw",
        started.elapsed() - failover
    );
    read(2);
    let (_, after0) = origin_status(&mnt, 0);
    let (_, after1) = origin_status(&mnt, 1);
    assert!(after0 > before0, "routing resumed: {before0} -> {after0}");
    assert_eq!(after1, before1, "the mirror was still read from");
    assert!(m.stop().success());
    assert!(inner.stop().success());
}

/// Tests that configure fail points: `scripts/test` runs only these, alone,
/// with the `failpoints` feature (`-- failpoints::`). Fail points are global:
/// run beside the other tests of this file, they would hang their checks too.
#[cfg(feature = "failpoints")]
mod failpoints {
    use super::*;

    /// The `health-check-hang` fail point holds every check of every origin
    /// for `sleep(5000)`: each check still ends at the configured check
    /// timeout, the origin is marked down, and cached music plays.
    #[test]
    fn a_hung_health_check_times_out_and_cached_reads_go_on() {
        let scenario = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let files = library(&dir.path().join("lib"), 2, 1 << 20);
        let config = fast_faults();
        let (interval, timeout) = (config.health.check_interval, config.health.check_timeout);
        let (d, origins) = faulty_daemon(
            &dir.path().join("cache"),
            &[&dir.path().join("lib")],
            config,
        );
        let (cached, want_cached) = &files[0];
        assert!(read_file_checked(&d, cached, want_cached).is_empty());

        fail::cfg("health-check-hang", "sleep(5000)").unwrap();
        let started = Instant::now();
        // The next check fails at its timeout, long before the hang ends.
        let failed = wait_for(Duration::from_secs(5), || status_of(&d, OriginId(0)).1 >= 1);
        let took = started.elapsed();
        let (health, _, error) = status_of(&d, OriginId(0));
        assert!(failed, "{health:?}");
        assert!(
            took < interval + timeout + Duration::from_secs(2),
            "the first hung check failed after {took:?}"
        );
        let error = error.unwrap_or_default();
        assert!(
            error.contains("no answer within") || error.contains("timed out"),
            "{error}"
        );
        assert_ne!(health, Health::Healthy);
        let down = wait_for(Duration::from_secs(10), || {
            health_of(&d, OriginId(0)) == Health::Unhealthy
        });
        assert!(down, "{:?}", status_of(&d, OriginId(0)));

        // Cached music plays, without asking the origin.
        let asked = origins[0].calls();
        assert!(read_file_checked(&d, cached, want_cached).is_empty());
        assert_eq!(origins[0].calls(), asked);

        // The checks answer again: the origin is trusted again, and the
        // uncached file is read from it.
        fail::remove("health-check-hang");
        let up = wait_for(Duration::from_secs(15), || {
            health_of(&d, OriginId(0)) == Health::Healthy
        });
        assert!(up, "{:?}", status_of(&d, OriginId(0)));
        let (cold, want_cold) = &files[1];
        assert!(read_file_checked(&d, cold, want_cold).is_empty());
        assert!(origins[0].calls() > asked);
        scenario.teardown();
    }

    /// The same fail point on the real binary (`FAILPOINTS`): its first
    /// three checks hang for 20 s. Each fails at the 5 s check timeout,
    /// three make the origin unhealthy, cached music plays meanwhile without
    /// asking it, and once the checks answer again it is healthy and read.
    #[test]
    fn a_hung_health_check_on_the_binary_fails_at_its_timeout_and_heals() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let files = library(&d.join("lib"), 2, 1 << 20);
        let command = || {
            MountCommand::new(
                Path::new(BIN),
                &[&d.join("lib")],
                &d.join("cache"),
                &d.join("mnt"),
                &d.join("log"),
            )
        };
        let read = |mnt: &Path, i: usize| {
            let (path, want) = &files[i];
            let got = std::fs::read(mnt.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(got == *want, "{path}: not the origin's bytes");
        };
        // A first mount caches track 0 (its fetch, a success, is not mixed
        // with the hung checks below).
        let m = command().start(Duration::from_secs(60));
        read(&m.mountpoint, 0);
        m.wait_filled(Path::new(BIN));
        assert!(m.stop().success());

        let m = command()
            .env("FAILPOINTS", "health-check-hang=3*sleep(20000)")
            .start(Duration::from_secs(60));
        let mnt = m.mountpoint.clone();
        let failed = wait_for(Duration::from_secs(30), || {
            status_json(&mnt)["origins"][0]["consecutive_failures"]
                .as_u64()
                .is_some_and(|n| n >= 1)
        });
        let doc = status_json(&mnt);
        assert!(failed, "{doc:#}");
        let error = doc["origins"][0]["last_error"].as_str().unwrap_or_default();
        // The daemon's timer or the engine's (whichever fires first) ends it.
        assert!(
            error == "no answer within 5s" || error == "health check timed out",
            "{doc:#}"
        );
        let down = wait_for(Duration::from_secs(60), || {
            origin_status(&mnt, 0).0 == "unhealthy"
        });
        assert!(down, "{:#}\n{}", status_json(&mnt), m.log_text());

        // Cached music plays, without asking the origin.
        let (_, asked) = origin_status(&mnt, 0);
        read(&mnt, 0);
        assert_eq!(origin_status(&mnt, 0).1, asked);

        // The three hangs are used up: the checks answer, the origin is
        // healthy again and the uncached track is read from it.
        let up = wait_for(Duration::from_secs(60), || {
            origin_status(&mnt, 0).0 == "healthy"
        });
        assert!(up, "{:#}\n{}", status_json(&mnt), m.log_text());
        read(&mnt, 1);
        assert!(origin_status(&mnt, 0).1 > asked);
        assert!(m.stop().success());
    }
}
