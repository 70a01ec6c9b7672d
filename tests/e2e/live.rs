//! End to end: the tree follows the origins live (watcher + delta sync).

use musicfs_tests::fixtures::write_wav;
use musicfs_tests::mount::{MountCommand, Mounted};
use musicfs_tests::{files_under, sha256_file, wait_for};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
/// The target is 2 s; the bound here leaves room for a loaded CI
/// machine, and the measured latency is printed.
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            let title = format!("Old {i}");
            write_wav(
                &dir.path().join(format!("lib/old/{i}.wav")),
                300_000,
                i,
                &title,
                "Band",
                "First",
            );
        }
        Setup { dir }
    }
    fn lib(&self, p: &str) -> PathBuf {
        self.dir.path().join("lib").join(p)
    }
    fn mount(&self) -> Mounted {
        let d = self.dir.path();
        MountCommand::new(
            Path::new(BIN),
            &[&d.join("lib")],
            &d.join("cache"),
            &d.join("mnt"),
            &d.join("log"),
        )
        .start(Duration::from_secs(60))
    }
}

/// Waits for `cond`, returning how long it took.
fn shows(m: &Mounted, what: &str, cond: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    assert!(
        wait_for(VISIBLE_WITHIN, &cond),
        "{what} not visible after {VISIBLE_WITHIN:?}:\n{}",
        m.log_text()
    );
    let took = t.elapsed();
    println!("{what}: visible after {took:?}");
    took
}

#[test]
fn added_retagged_deleted_and_moved_files_show_without_a_remount() {
    let s = Setup::new();
    let m = s.mount();
    let mnt = m.mountpoint.clone();
    // Keep a listing in the kernel's cache first: invalidation must be precise.
    assert_eq!(files_under(&mnt).len(), 3);

    // A new album.
    for i in 0..4 {
        write_wav(
            &s.lib(&format!("incoming/new{i}.wav")),
            200_000,
            100 + i,
            &format!("New {i}"),
            "Band",
            "Second",
        );
    }
    shows(&m, "new album", || {
        mnt.join("Band/Second/00 - New 3.wav").exists()
    });
    assert_eq!(
        sha256_file(&mnt.join("Band/Second/00 - New 0.wav")).unwrap(),
        sha256_file(&s.lib("incoming/new0.wav")).unwrap()
    );

    // A retag: same file, new title; it moves to its new path.
    let ino_before = std::fs::metadata(mnt.join("Band/First/00 - Old 0.wav"))
        .unwrap()
        .ino();
    write_wav(
        &s.lib("old/0.wav"),
        300_000,
        0,
        "Renamed By Tags",
        "Band",
        "First",
    );
    shows(&m, "retagged track", || {
        mnt.join("Band/First/00 - Renamed By Tags.wav").exists()
            && !mnt.join("Band/First/00 - Old 0.wav").exists()
    });

    // A delete.
    std::fs::remove_file(s.lib("old/1.wav")).unwrap();
    shows(&m, "deleted track", || {
        !mnt.join("Band/First/00 - Old 1.wav").exists()
    });

    // A folder moved inside the origin: same virtual path, same inode.
    let kept = mnt.join("Band/First/00 - Old 2.wav");
    let ino = std::fs::metadata(&kept).unwrap().ino();
    let want = sha256_file(&kept).unwrap();
    std::fs::rename(s.lib("old"), s.lib("archive")).unwrap();
    std::thread::sleep(Duration::from_secs(1)); // let the sync run
    shows(&m, "moved folder", || {
        s.lib("archive/2.wav").exists() && kept.exists()
    });
    assert_eq!(
        std::fs::metadata(&kept).unwrap().ino(),
        ino,
        "a move keeps the inode"
    );
    assert_eq!(sha256_file(&kept).unwrap(), want);
    assert_ne!(ino_before, 0);
    let log = m.log_text();
    assert!(
        log.contains("moved=1"),
        "the move was recognised as a move:\n{log}"
    );
    assert_eq!(files_under(&mnt).len(), 6);
}

#[test]
fn rescan_on_demand_reports_what_changed() {
    let s = Setup::new();
    let m = s.mount();
    write_wav(&s.lib("extra.wav"), 100_000, 42, "Extra", "Band", "First");
    let out = Command::new(BIN)
        .arg("rescan")
        .arg(&m.mountpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // The watcher may have got there first; either way the track is there.
    assert!(text.contains("origin 0:"), "{text}");
    assert!(wait_for(VISIBLE_WITHIN, || m
        .mountpoint
        .join("Band/First/00 - Extra.wav")
        .exists()));
}
