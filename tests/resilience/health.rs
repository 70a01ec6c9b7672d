//! Origin health checks on the real daemon (seed 4.2.x): every check is
//! bounded by its timeout, checks of several origins run side by side, and
//! a hung origin delays nobody but itself.

use musicfs::origin::{BoxFuture, Origin, OriginError};
use musicfs_core::engine::{Config, Health, HealthConfig};
use musicfs_core::{FileVersion, OriginId, OriginPath};
use musicfs_tests::fixtures::{TestDaemon, local_origin, scan, write_wav};
use musicfs_tests::mount::MountCommand;
use musicfs_tests::wait_for;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
