//! End to end: running for months under systemd. Signals, ordered shutdown
//! with reads in flight, the read timeout, stale mounts, sd_notify against a
//! real notify socket, `musicfs status`, and a panic under a lock.

use musicfs_tests::disk::Tmpfs;
use musicfs_tests::fixtures::{TestDaemon, write_wav};
use musicfs_tests::mount::{MountCommand, Mounted, control_ok, is_mounted};
use musicfs_tests::sha256_file;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
const UP: Duration = Duration::from_secs(60);
const SONG: &str = "Band/Album/00 - Song.wav";

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        write_wav(
            &dir.path().join("lib/song.wav"),
            4 << 20,
            9,
            "Song",
            "Band",
            "Album",
        );
        write_wav(
            &dir.path().join("lib/other.wav"),
            1 << 20,
            8,
            "Other",
            "Band",
            "Album",
        );
        Setup { dir }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn command(&self) -> MountCommand {
        MountCommand::in_dir(Path::new(BIN), self.dir.path())
    }
    fn mount(&self) -> Mounted {
        self.command().start(UP)
    }
    /// A notify socket (as systemd's, 200 ms receive timeout) and a mount
    /// command that talks to it, with a 1 s watchdog.
    fn under_systemd(&self) -> (UnixDatagram, MountCommand) {
        let path = self.path("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let command = self
            .command()
            .env("NOTIFY_SOCKET", path.to_str().unwrap())
            .env("WATCHDOG_USEC", "1000000");
        (socket, command)
    }
}

#[test]
fn test_sigterm_triggers_shutdown() {
    let s = Setup::new();
    let mut m = s.mount();
    m.signal(libc::SIGTERM);
    let status = m.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(!is_mounted(&s.path("mnt")));
}

#[test]
fn test_sigint_triggers_shutdown() {
    let s = Setup::new();
    let mut m = s.mount();
    m.signal(libc::SIGINT);
    assert_eq!(
        m.wait_exit(Duration::from_secs(20)).expect("exits").code(),
        Some(0)
    );
    assert!(!is_mounted(&s.path("mnt")));
}

#[test]
fn test_stale_mount_detected_on_startup() {
    let s = Setup::new();
    let mut m = s.mount();
    m.signal(libc::SIGKILL);
    m.wait_exit(Duration::from_secs(10)).expect("killed");
    assert!(
        is_mounted(&s.path("mnt")),
        "kill -9 leaves the mount behind"
    );
    let err = std::fs::read_dir(s.path("mnt"))
        .err()
        .and_then(|e| e.raw_os_error());
    assert_eq!(
        err,
        Some(libc::ENOTCONN),
        "Transport endpoint is not connected"
    );
    let m = s.mount();
    assert!(m.log_text().contains("stale mount"), "{}", m.log_text());
    assert_eq!(
        sha256_file(&m.mountpoint.join(SONG)).unwrap(),
        sha256_file(&s.path("lib/song.wav")).unwrap()
    );
}

#[test]
fn a_second_mount_on_a_live_mountpoint_is_refused() {
    let s = Setup::new();
    let _m = s.mount();
    let out = Command::new(BIN)
        .args(["mount", "--origin"])
        .arg(s.path("lib"))
        .arg("--cache-dir")
        .arg(s.path("cache2"))
        .arg(s.path("mnt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already mounted"));
}

#[test]
fn test_sd_notify_ready_status_watchdog_and_stopping() {
    let s = Setup::new();
    let (socket, command) = s.under_systemd();
    let m = command.start(UP);
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        if messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3 {
            break;
        }
    }
    let all = messages.join("\n");
    assert!(
        all.contains("STATUS=first scan"),
        "scan progress reported:\n{all}"
    );
    assert!(all.contains("EXTEND_TIMEOUT_USEC="), "{all}");
    assert!(all.contains("READY=1"), "{all}");
    let ready_at = messages.iter().position(|m| m.contains("READY=1")).unwrap();
    let first_ping = messages
        .iter()
        .position(|m| m.contains("WATCHDOG=1"))
        .expect("watchdog pings");
    assert!(first_ping > ready_at, "no ping before the mount is up");
    assert!(
        messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "{all}"
    );
    assert!(m.log_text().contains("systemd watchdog enabled"));
    let status = m.stop();
    assert!(status.success());
    let mut rest = String::new();
    while let Ok(n) = socket.recv(&mut buf) {
        rest.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(rest.contains("STOPPING=1"), "{rest}");
}

#[test]
fn test_status_reports_origins_cache_and_tasks() {
    let s = Setup::new();
    let m = s.mount();
    let _ = std::fs::read(m.mountpoint.join(SONG)).unwrap();
    let out = control_ok(Path::new(BIN), &["status", "--json"], &m.mountpoint);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["phase"], "serving");
    // The build and the FUSE protocol the kernel offered at this mount.
    let version = doc["version"].as_str().unwrap();
    assert!(version.contains("(commit "), "{version}");
    let protocol = doc["fuse_protocol"].as_str().unwrap_or_default();
    let (major, minor) = protocol.split_once('.').unwrap_or(("", ""));
    assert!(
        major == "7" && minor.parse::<u32>().is_ok_and(|m| m >= 12),
        "FUSE protocol 7.x: {protocol:?}"
    );
    assert_eq!(doc["origins"][0]["health"], "healthy");
    assert!(doc["cache"]["bytes"].as_u64().unwrap() > 0);
    assert!(doc["cache"]["reads_served"].as_u64().unwrap() > 0);
    // What the origin was asked: the song's bytes, once, but for the head
    // and tail the first scan read and kept (well under 1 MiB of 4 MiB).
    let size = std::fs::metadata(m.mountpoint.join(SONG)).unwrap().len();
    assert!(
        doc["origins"][0]["requests"].as_u64().unwrap() >= 1,
        "{doc:#}"
    );
    let read = doc["origins"][0]["bytes_read"].as_u64().unwrap();
    assert!(read < size && read > size - (1 << 20), "{doc:#}");
    // Read again: answered by the cache, the origin is asked nothing more.
    let _ = std::fs::read(m.mountpoint.join(SONG)).unwrap();
    let again: serde_json::Value = serde_json::from_str(&control_ok(
        Path::new(BIN),
        &["status", "--json"],
        &m.mountpoint,
    ))
    .unwrap();
    assert_eq!(
        again["origins"][0]["requests"],
        doc["origins"][0]["requests"]
    );
    let text = control_ok(Path::new(BIN), &["status"], &m.mountpoint);
    assert!(text.contains(" requests, "), "{text}");
    let tasks: Vec<&str> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        tasks.contains(&"timers") && tasks.contains(&"persistence"),
        "{tasks:?}"
    );
    let text = Command::new(BIN)
        .arg("status")
        .arg(&m.mountpoint)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("origins:") && text.contains("healthy") && text.contains("hit ratio"),
        "{text}"
    );
    // With no mountpoint it lists every running mount.
    let all = Command::new(BIN).arg("status").output().unwrap();
    assert!(String::from_utf8_lossy(&all.stdout).contains(&m.mountpoint.display().to_string()));
}

#[test]
fn test_parking_lot_lock_survives_a_panic_and_operations_keep_answering() {
    let s = Setup::new();
    let d = TestDaemon::local(&s.path("lib"), &s.path("cache"), Default::default());
    let daemon = d.daemon.clone();
    let panicked = std::thread::spawn(move || {
        daemon.with_engine(|_, _| panic!("panic while holding the engine lock"));
    })
    .join();
    assert!(panicked.is_err(), "the panic happened");
    let want = std::fs::read(s.path("lib/song.wav")).unwrap();
    assert_eq!(
        d.read_all(SONG, Duration::from_secs(20)).unwrap(),
        want,
        "the lock is not poisoned"
    );
}

/// Runs `musicfs ARGS...`: its exit code and stderr.
fn run(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn unmount(mountpoint: &Path, lazy: bool) -> (Option<i32>, String) {
    let mut args = vec![std::ffi::OsStr::new("unmount")];
    if lazy {
        args.push(std::ffi::OsStr::new("--lazy"));
    }
    args.push(mountpoint.as_os_str());
    run(&args)
}

#[test]
fn unmount_refuses_a_file_system_that_is_not_musicfs() {
    let s = Setup::new();
    let tmpfs = Tmpfs::mount(&s.path("tmpfs"), "size=1m");
    let (code, stderr) = unmount(tmpfs.path(), false);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("not a MusicFS mount") && stderr.contains("tmpfs"),
        "says what is mounted there: {stderr}"
    );
    assert!(is_mounted(tmpfs.path()), "the tmpfs is still mounted");
    let (code, stderr) = unmount(tmpfs.path(), true);
    assert_eq!(code, Some(1), "--lazy does not change that: {stderr}");
    assert!(is_mounted(tmpfs.path()));
}

#[test]
fn unmount_of_a_directory_that_is_no_mountpoint_says_not_mounted() {
    let s = Setup::new();
    let (code, stderr) = unmount(&s.path("lib"), false);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is not mounted"), "{stderr}");
    assert!(!stderr.contains("os error"), "{stderr}");
}

#[test]
fn a_busy_mount_is_refused_with_a_hint_and_detached_with_lazy() {
    let s = Setup::new();
    let mut m = s.mount();
    // A process with its working directory inside, and one with a file open.
    let mut inside = Command::new("sleep")
        .arg("60")
        .current_dir(m.mountpoint.join("Band"))
        .spawn()
        .unwrap();
    let open = std::fs::File::open(m.mountpoint.join(SONG)).unwrap();
    let (code, stderr) = unmount(&m.mountpoint, false);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("busy") && stderr.contains("files open") && stderr.contains("--lazy"),
        "{stderr}"
    );
    assert!(!stderr.contains("os error"), "{stderr}");
    assert!(is_mounted(&m.mountpoint), "still mounted");
    let (code, stderr) = unmount(&m.mountpoint, true);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!is_mounted(&m.mountpoint), "detached at once");
    drop(open);
    let _ = inside.kill();
    let _ = inside.wait();
    let status = m
        .wait_exit(Duration::from_secs(20))
        .expect("the daemon exits once the last user is gone");
    assert_eq!(status.code(), Some(0), "{}", m.log_text());
}

#[test]
fn a_mountpoint_with_files_is_refused_unless_allow_non_empty() {
    let s = Setup::new();
    std::fs::create_dir_all(s.path("mnt")).unwrap();
    std::fs::write(s.path("mnt/notes.txt"), b"mine").unwrap();
    let out = Command::new(BIN)
        .args(["mount", "--origin"])
        .arg(s.path("lib"))
        .arg("--cache-dir")
        .arg(s.path("cache"))
        .arg(s.path("mnt"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not empty") && stderr.contains("notes.txt"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-non-empty"), "{stderr}");
    assert!(!is_mounted(&s.path("mnt")));
    let m = s.command().args(["--allow-non-empty"]).start(UP);
    assert!(m.mountpoint.join(SONG).exists(), "mounted over it");
    assert!(
        !m.mountpoint.join("notes.txt").exists(),
        "its files are hidden"
    );
    assert!(m.stop().success());
    assert_eq!(std::fs::read(s.path("mnt/notes.txt")).unwrap(), b"mine");
}

/// `musicfs mount --origin ORIGIN --cache-dir CACHE [EXTRA...] MOUNTPOINT`
/// with the log at info: exit code, stderr, and how long it took.
fn mount_once(
    origin: &str,
    cache: &Path,
    mountpoint: &Path,
    extra: &[&str],
) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["mount", "--origin", origin, "--cache-dir"])
        .arg(cache)
        .args(extra)
        .arg(mountpoint)
        .env("RUST_LOG", "info")
        .env("AWS_ACCESS_KEY_ID", "dummy")
        .env("AWS_SECRET_ACCESS_KEY", "dummy")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn an_unusable_mountpoint_fails_before_any_scanning() {
    let s = Setup::new();
    let lib = s.path("lib");
    let lib = lib.to_str().unwrap();
    std::fs::write(s.path("plain-file"), b"x").unwrap();
    for (mountpoint, says) in [
        (s.path("plain-file"), "not a directory"),
        (s.path("no-such-dir"), "no such file or directory"),
    ] {
        let (code, stderr, _) = mount_once(lib, &s.path("cache"), &mountpoint, &[]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(
            !stderr.contains("scanning"),
            "failed only after a scan: {stderr}"
        );
    }
}

/// `musicfs mount` of the setup's library, run by `sh -c PREPARE` in a
/// private mount namespace: what PREPARE mounts there (over `/dev`, say)
/// vanishes with the command. Exit code, stderr.
fn mount_in_namespace(s: &Setup, prepare: &str) -> (Option<i32>, String) {
    std::fs::create_dir_all(s.path("mnt")).unwrap();
    let script = format!("set -e; {prepare}; exec \"$@\"");
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(BIN)
        .args(["mount", "--origin"])
        .arg(s.path("lib"))
        .arg("--cache-dir")
        .arg(s.path("cache"))
        .arg(s.path("mnt"))
        .env("RUST_LOG", "info")
        .env("NOT_FUSE", s.path("not-fuse"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("unshare(1) runs (util-linux)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_or_unusable_fuse_device_fails_before_any_scanning() {
    let s = Setup::new();
    std::fs::write(s.path("not-fuse"), b"").unwrap();
    for (prepare, says) in [
        // A container started without --device /dev/fuse.
        (
            "mount -t tmpfs none /dev",
            "cannot open the FUSE device /dev/fuse read-write: No such file or directory",
        ),
        // Something that is not a device where the device should be.
        (
            "mount --bind \"$NOT_FUSE\" /dev/fuse",
            "/dev/fuse is not the FUSE device (not a character device)",
        ),
    ] {
        let (code, stderr) = mount_in_namespace(&s, prepare);
        assert_eq!(code, Some(1), "{prepare}: {stderr}");
        assert!(stderr.contains(says), "{prepare}: {stderr}");
        // Checked first: no scan started, and the cache was not even opened
        // (its folder is made while the options are checked, and stays
        // empty: no database, no chunks, no search index).
        assert!(!stderr.contains("scanning"), "{prepare}: {stderr}");
        let cache: Vec<_> = std::fs::read_dir(s.path("cache"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            cache.is_empty(),
            "{prepare}: the cache was opened: {cache:?}"
        );
        assert!(!is_mounted(&s.path("mnt")));
    }
}

#[test]
fn a_cache_dir_in_use_names_the_mount_that_holds_it() {
    let s = Setup::new();
    let first = s.mount();
    std::fs::create_dir_all(s.path("mnt2")).unwrap();
    let lib = s.path("lib");
    let (code, stderr, _) = mount_once(
        lib.to_str().unwrap(),
        &s.path("cache"),
        &s.path("mnt2"),
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by another MusicFS mount"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", first.pid())),
        "names the pid {}: {stderr}",
        first.pid()
    );
    let mountpoint = first.mountpoint.canonicalize().unwrap();
    assert!(
        stderr.contains(&mountpoint.display().to_string()),
        "names the mountpoint: {stderr}"
    );
    assert!(!stderr.contains("WouldBlock"), "{stderr}");
    assert!(!is_mounted(&s.path("mnt2")));
    // The first mount is unharmed.
    assert_eq!(
        sha256_file(&first.mountpoint.join(SONG)).unwrap(),
        sha256_file(&s.path("lib/song.wav")).unwrap()
    );
    assert!(first.stop().success());
}

#[test]
fn a_first_mount_with_no_origin_answering_fails_with_the_cause() {
    let s = Setup::new();
    std::fs::create_dir_all(s.path("mnt")).unwrap();
    // A missing local folder: a usage error that says so.
    let missing = s.path("no-such-lib");
    let (code, stderr, _) = mount_once(
        missing.to_str().unwrap(),
        &s.path("cache"),
        &s.path("mnt"),
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no such file or directory"), "{stderr}");
    // An S3 server that refuses connections.
    let closed = "s3://bucket/music?endpoint=http://127.0.0.1:1&region=us-east-1";
    let (code, stderr, took) = mount_once(closed, &s.path("cache"), &s.path("mnt"), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no origin answers") && stderr.contains("Connection refused"),
        "the whole chain, down to the cause: {stderr}"
    );
    assert!(stderr.contains("--wait-for-origins"), "{stderr}");
    assert!(!stderr.contains("mounted mountpoint="), "{stderr}");
    assert!(!is_mounted(&s.path("mnt")));
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // Asked to wait, it mounts (empty) and fills in later.
    let start = |extra: &[&str]| {
        MountCommand::new(
            Path::new(BIN),
            &[],
            &s.path("cache"),
            &s.path("mnt"),
            &s.path("log"),
        )
        .args(["--origin", closed])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", "dummy")
        .env("AWS_SECRET_ACCESS_KEY", "dummy")
        .start(UP)
    };
    let m = start(&["--wait-for-origins"]);
    assert!(
        m.log_text().contains("cannot scan this origin now"),
        "{}",
        m.log_text()
    );
    assert!(m.stop().success());
    // With a saved tree it mounts as before, flag or not.
    let m = start(&[]);
    assert!(m.stop().success());
}

/// Asserts that `steps` appear in `log` in this order (each once at least).
fn assert_in_order(log: &str, steps: &[&str]) {
    let mut from = 0;
    for step in steps {
        match log[from..].find(step) {
            Some(at) => from += at + step.len(),
            None => panic!(
                "{step:?} missing, or not after {:?}:\n{log}",
                &steps[..steps.iter().position(|s| s == step).unwrap_or(0)]
            ),
        }
    }
}

/// The shutdown steps, in the order the daemon takes them.
/// "database closed" also says that nothing held the database any more
/// when the daemon let go of it.
const SHUTDOWN_STEPS: [&str; 9] = [
    "shutdown: new reads get EIO",
    "shutdown: syncs, the watcher and the search build stopped",
    "shutdown: reads drained",
    "shutdown: cached chunks written",
    "shutdown: cache state saved",
    "shutdown: search index committed",
    "shutdown: database flushed",
    "shutdown: database closed",
    "unmounted; bye",
];

/// `musicfs search --cache-dir CACHE QUERY`, offline (no daemon runs).
fn offline_search(s: &Setup, query: &str) -> Vec<String> {
    let out = Command::new(BIN)
        .args(["search", "--cache-dir"])
        .arg(s.path("cache"))
        .arg(query)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn test_shutdown_order_on_sigterm() {
    let s = Setup::new();
    let mut m = s.mount();
    let log_has = |m: &Mounted, what: &str| {
        musicfs_tests::wait_for(Duration::from_secs(20), || m.log_text().contains(what))
    };
    assert!(log_has(&m, "search index built"), "{}", m.log_text());
    // A change just before the signal.
    write_wav(&s.path("lib/late.wav"), 100_000, 5, "Late", "Band", "Album");
    let late = m.mountpoint.join("Band/Album/00 - Late.wav");
    assert!(musicfs_tests::wait_for(Duration::from_secs(10), || late.exists()));
    m.signal(libc::SIGTERM);
    let status = m.wait_exit(Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", m.log_text());
    let log = m.log_text();
    assert_in_order(
        &log,
        &[&["shutting down"][..], &SHUTDOWN_STEPS[..]].concat(),
    );
    assert!(!is_mounted(&m.mountpoint));
    // The late track is searchable offline. Not thanks to the shutdown's
    // own commit, though: the sync that applied the change committed it to
    // the index already (the next test shows it with a kill -9, which
    // skips every shutdown step), so that commit finds nothing pending.
    // No change can be pending at shutdown: each sync and the search
    // build commit what they wrote, and a failed commit drops its changes
    // from the writer (the next change writes them again, and a start
    // that finds the index behind the catalog rebuilds it). The step
    // stays as a cheap safety net, and is logged in its place.
    assert_eq!(offline_search(&s, "title:late").len(), 1);
}

/// Every change is committed to the search index by the sync that applies
/// it, not at shutdown: killed with SIGKILL (no shutdown step runs), the
/// daemon leaves an index that finds the change.
#[test]
fn a_synced_change_is_committed_to_the_search_index_at_once() {
    let s = Setup::new();
    let mut m = s.mount();
    m.wait_search_index();
    write_wav(&s.path("lib/late.wav"), 100_000, 5, "Late", "Band", "Album");
    // A search answered by the daemon sees committed documents only.
    let searched = || {
        let out = Command::new(BIN)
            .args(["search", "--mount"])
            .arg(&m.mountpoint)
            .arg("title:late")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert!(
        musicfs_tests::wait_for(Duration::from_secs(10), || searched() == 1),
        "{}",
        m.log_text()
    );
    m.signal(libc::SIGKILL);
    assert!(m.wait_exit(Duration::from_secs(10)).is_some());
    assert!(!m.log_text().contains("shutdown:"), "{}", m.log_text());
    assert_eq!(offline_search(&s, "title:late").len(), 1);
}

#[cfg(feature = "failpoints")]
mod failpoints {
    use super::*;
    use musicfs_tests::wait_for;

    /// Reads a file in a thread; the receiver gets the result.
    fn read_in_background(path: PathBuf) -> std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(std::fs::read(path));
        });
        rx
    }

    #[test]
    fn test_shutdown_with_inflight_reads() {
        let s = Setup::new();
        // fill=inline: the read waits for a fetch the drain gives up on.
        // (From a fill=behind folder it is a passthrough, which its own
        // origin request timeout, as long as the drain's, ends with EIO.)
        let mut m = MountCommand::in_dir_with(Path::new(BIN), s.dir.path(), ",fill=inline")
            .env("FAILPOINTS", "origin-read-delay=return(60000)")
            .start(UP);
        let reader = read_in_background(m.mountpoint.join(SONG));
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        m.signal(libc::SIGTERM);
        let status = m
            .wait_exit(Duration::from_secs(30))
            .expect("exits despite a stuck read");
        assert_eq!(status.code(), Some(0), "{}", m.log_text());
        assert!(
            t.elapsed() < Duration::from_secs(25),
            "bounded by the drain timeout"
        );
        let result = reader
            .recv_timeout(Duration::from_secs(20))
            .expect("the reader is not left hanging");
        assert!(result.is_err(), "the slow read ends in an error");
        assert!(m.log_text().contains("drain timeout"), "{}", m.log_text());
        assert!(!is_mounted(&s.path("mnt")));
    }

    #[test]
    fn test_double_signal_forces_immediate_exit() {
        let s = Setup::new();
        let mut m = s
            .command()
            .env("FAILPOINTS", "origin-read-delay=return(60000)")
            .start(UP);
        let _reader = read_in_background(m.mountpoint.join(SONG));
        std::thread::sleep(Duration::from_millis(500));
        m.signal(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        m.signal(libc::SIGTERM);
        let status = m.wait_exit(Duration::from_secs(10)).expect("exits at once");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(status.code(), Some(130), "{}", m.log_text());
        assert!(m.log_text().contains("second signal"));
        assert!(wait_for(Duration::from_secs(5), || !is_mounted(
            &s.path("mnt")
        )));
    }

    #[test]
    fn fuse_read_timeout_gives_eio_not_a_hang() {
        let s = Setup::new();
        let m = s
            .command()
            .env("FAILPOINTS", "origin-read-delay=return(60000)")
            .args(["--read-timeout", "2"])
            .start(UP);
        let t = Instant::now();
        let result = read_in_background(m.mountpoint.join(SONG))
            .recv_timeout(Duration::from_secs(30))
            .expect("a read never hangs");
        assert_eq!(result.err().and_then(|e| e.raw_os_error()), Some(libc::EIO));
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "EIO near the 2 s read timeout, took {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn the_watchdog_stops_pinging_when_the_fuse_loop_hangs() {
        let s = Setup::new();
        let (socket, command) = s.under_systemd();
        let m = command
            .env("FAILPOINTS", "fuse-statfs-hang=sleep(30000)")
            .start(UP);
        let mut buf = [0u8; 4096];
        let mut pings = 0;
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                pings += usize::from(String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1"));
            }
        }
        assert_eq!(pings, 0, "no ping while statfs cannot be answered");
        assert!(
            m.log_text().contains("FUSE loop is not answering"),
            "{}",
            m.log_text()
        );
        drop(m);
    }

    /// A panic in a background task (here a watcher's sync, by the fail
    /// point's `panic` action) reaches the log through tracing, with its
    /// message, where it happened, and a backtrace; the mount goes on.
    #[test]
    fn test_panic_hook_logs_to_tracing_with_location_and_backtrace() {
        let s = Setup::new();
        let m = s
            .command()
            .env(
                "FAILPOINTS",
                "delta-sync-after-batch=panic(planted panic in a sync)",
            )
            .start(UP);
        // A new file starts the watcher's sync, which panics after its batch.
        write_wav(&s.path("lib/new.wav"), 100_000, 3, "New", "Band", "Album");
        assert!(
            wait_for(Duration::from_secs(20), || m
                .log_text()
                .contains("planted panic in a sync")),
            "no panic logged:\n{}",
            m.log_text()
        );
        // The hook's line may still be being written: wait for its backtrace.
        assert!(wait_for(Duration::from_secs(5), || m
            .log_text()
            .contains("backtrace=")));
        let log = m.log_text();
        // The hook's event: message, location (file:line:col), thread, and
        // a backtrace whose frames name the task that panicked.
        let at = log
            .find("ERROR panic")
            .unwrap_or_else(|| panic!("no ERROR line from the panic hook:\n{log}"));
        let event = &log[at..];
        let event = &event[..event.find("\n20").unwrap_or(event.len())];
        for part in [
            "thread=",
            "panicked at ",
            ".rs:",
            "planted panic in a sync",
            "backtrace=",
            "musicfs::library::sync",
        ] {
            assert!(
                event.contains(part),
                "no {part:?} in the hook's event:\n{event}"
            );
        }
        // The mount goes on serving.
        assert_eq!(
            sha256_file(&m.mountpoint.join(SONG)).unwrap(),
            sha256_file(&s.path("lib/song.wav")).unwrap()
        );
        assert!(m.stop().success());
    }

    /// Mounts with `failpoints`, runs `start`, waits for the log line
    /// `when`, sends SIGTERM, and returns the log once the daemon has
    /// exited 0.
    fn sigterm_when(s: &Setup, failpoints: &str, start: impl FnOnce(), when: &str) -> String {
        let mut m = s.command().env("FAILPOINTS", failpoints).start(UP);
        start();
        assert!(
            wait_for(Duration::from_secs(20), || m.log_text().contains(when)),
            "{}",
            m.log_text()
        );
        m.signal(libc::SIGTERM);
        let status = m.wait_exit(Duration::from_secs(30)).expect("exits");
        assert_eq!(status.code(), Some(0), "{}", m.log_text());
        m.log_text()
    }

    /// SIGTERM while a sync runs: the sync stops at its next saved batch
    /// before anything is saved for good, the daemon exits cleanly, and the
    /// next mount finishes the sync.
    #[test]
    fn test_sigterm_during_a_sync_stops_it_at_a_saved_batch() {
        let s = Setup::new();
        // A new file starts a sync, which pauses 3 s after its first batch.
        let new_file = || write_wav(&s.path("lib/new.wav"), 100_000, 6, "New", "Band", "Album");
        let log = sigterm_when(
            &s,
            "delta-sync-after-batch=sleep(3000)",
            new_file,
            "sync batch saved",
        );
        assert_in_order(
            &log,
            &[
                "sync batch saved",
                "shutting down",
                "shutdown: new reads get EIO",
                "sync stopped at a saved batch for shutdown",
                "shutdown: syncs, the watcher and the search build stopped",
                "shutdown: database flushed",
                "unmounted; bye",
            ],
        );
        assert!(!log.contains("origin changes applied"), "{log}");
        // The next mount resumes the sync: the new track shows.
        let m = s.mount();
        let new = m.mountpoint.join("Band/Album/00 - New.wav");
        assert!(
            wait_for(Duration::from_secs(20), || new.exists()),
            "{}",
            m.log_text()
        );
        assert!(m.stop().success());
    }

    /// SIGTERM while the search index is being built: the shutdown waits
    /// for the build (which commits what it built), so a search right
    /// after finds the library.
    #[test]
    fn test_sigterm_during_the_search_build_waits_and_commits_it() {
        let s = Setup::new();
        let log = sigterm_when(
            &s,
            "search-index-open=sleep(2000)",
            || {},
            "search index: opening",
        );
        assert_in_order(
            &log,
            &[
                "search index: opening",
                "shutting down",
                "search index built",
                "shutdown: syncs, the watcher and the search build stopped",
                "shutdown: search index committed",
                "unmounted; bye",
            ],
        );
        assert_eq!(offline_search(&s, "band").len(), 2);
    }

    /// A signal that comes after mount(2) but before the daemon counts
    /// itself as mounted (a test once hit this window by chance) leaves no
    /// dead mount behind.
    #[test]
    fn a_signal_right_after_the_kernel_mount_leaves_no_mount_behind() {
        let s = Setup::new();
        std::fs::create_dir_all(s.path("mnt")).unwrap();
        let mut child = Command::new(BIN)
            .args(["mount", "--origin"])
            .arg(s.path("lib"))
            .arg("--cache-dir")
            .arg(s.path("cache"))
            .arg(s.path("mnt"))
            .env("FAILPOINTS", "mounted-before-serving=sleep(3000)")
            .stderr(std::fs::File::create(s.path("log")).unwrap())
            .spawn()
            .unwrap();
        assert!(
            wait_for(Duration::from_secs(30), || is_mounted(&s.path("mnt"))),
            "no kernel mount"
        );
        // SAFETY: kill(2) with the pid of our child and a valid signal.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let exited = wait_for(Duration::from_secs(20), || {
            child.try_wait().ok().flatten().is_some()
        });
        assert!(exited, "the daemon exits");
        let log = std::fs::read_to_string(s.path("log")).unwrap_or_default();
        assert!(child.wait().unwrap().success(), "{log}");
        assert!(!is_mounted(&s.path("mnt")), "a dead mount was left:\n{log}");
    }
}
