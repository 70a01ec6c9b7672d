//! End to end: the tree follows the origins live (watcher + delta sync).

use musicfs_tests::fixtures::write_wav;
use musicfs_tests::mount::{MountCommand, Mounted, control_ok};
use musicfs_tests::{files_under, inodes_under, sha256_file, wait_for};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
/// How long a test waits for a change to show before it calls it lost. The
/// issue's target is 2 s; this leaves room for a loaded CI machine, and the
/// measured latency is printed. (The watcher's own bound is asserted in the
/// burst test.)
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
    fn command(&self) -> MountCommand {
        MountCommand::in_dir(Path::new(BIN), self.dir.path())
    }
    fn mount(&self) -> Mounted {
        self.command().start(Duration::from_secs(60))
    }
}

/// The summary lines of the syncs that changed something, in order.
fn applied(m: &Mounted) -> Vec<String> {
    m.log_text()
        .lines()
        .filter(|l| l.contains("origin changes applied"))
        .map(str::to_owned)
        .collect()
}

/// The number in `name=N` of a log line.
fn field(line: &str, name: &str) -> u64 {
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// Waits until every sync the watcher has started is done and logged:
/// `musicfs rescan` runs a sync of its own, and syncs run one at a time.
/// (Everything it could find was synced already: it logs no summary.)
fn settle(m: &Mounted) {
    let out = control_ok(Path::new(BIN), &["rescan"], &m.mountpoint);
    assert!(out.contains("origin 0:"), "{out}");
}

/// Waits until the watch of the origin is set up and its catch-up sync is
/// done: from then on only file events start syncs. (That sync runs at
/// background priority, so on a loaded machine it can still be listing the
/// origin while a test writes its files.)
fn watching(m: &Mounted) {
    assert!(
        wait_for(Duration::from_secs(60), || m
            .log_text()
            .contains("watching for changes")),
        "{}",
        m.log_text()
    );
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
    // Each sync patched the tree where its changes reached: none loaded
    // the whole catalog to build it again.
    let applied = applied(&m);
    assert!(applied.len() >= 4, "{applied:#?}");
    assert!(
        applied.iter().all(|l| l.contains("tree=patched")),
        "{applied:#?}"
    );
}

#[test]
fn rescan_on_demand_reports_what_changed() {
    let s = Setup::new();
    let m = s.mount();
    write_wav(&s.lib("extra.wav"), 100_000, 42, "Extra", "Band", "First");
    let text = control_ok(Path::new(BIN), &["rescan"], &m.mountpoint);
    // The watcher may have got there first; either way the track is there.
    assert!(text.contains("origin 0:"), "{text}");
    assert!(wait_for(VISIBLE_WITHIN, || m
        .mountpoint
        .join("Band/First/00 - Extra.wav")
        .exists()));
}

#[test]
fn a_burst_of_1000_file_events_gives_few_syncs_and_shows_the_last_change_quickly() {
    let s = Setup::new();
    let m = s.mount();
    let mnt = m.mountpoint.clone();
    // Let the watcher settle first: its catch-up sync done, and the sync
    // of one change seen through it.
    watching(&m);
    write_wav(
        &s.lib("warm-up.wav"),
        2_000,
        999,
        "Warm Up",
        "Band",
        "Burst",
    );
    shows(&m, "the warm-up file", || {
        mnt.join("Band/Burst/00 - Warm Up.wav").exists()
    });
    settle(&m);
    let before = applied(&m).len();
    // 1,000 new tracks over about 3.5 s, a group every 50 ms: the origin
    // is never quiet for the 200 ms debounce, so only the 1.5 s burst bound
    // makes the watcher sync while it goes on.
    let first = mnt.join("Band/Burst/00 - Burst 0000.wav");
    let started = Instant::now();
    let mut first_seen = None;
    for group in 0..70u64 {
        for i in group * 15..((group + 1) * 15).min(1000) {
            write_wav(
                &s.lib(&format!("burst/{i:04}.wav")),
                2_000,
                1_000 + i,
                &format!("Burst {i:04}"),
                "Band",
                "Burst",
            );
        }
        if first_seen.is_none() && first.exists() {
            first_seen = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let burst = started.elapsed();
    // The syncs that end from here on are the ones the last change waits for.
    let ended_before = applied(&m).len();
    let last = mnt.join("Band/Burst/00 - Burst 0999.wav");
    let took = shows(&m, "the last file of the burst", || last.exists());
    assert!(
        wait_for(VISIBLE_WITHIN, || std::fs::read_dir(mnt.join("Band/Burst"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 1001),
        "every file of the burst shows"
    );
    settle(&m);
    let lines = applied(&m);
    let ran = lines.len() - before;
    println!(
        "burst of 1000 files over {burst:?}: {ran} syncs, first file visible after {first_seen:?}, last {took:?} after the burst"
    );
    // The burst bound: the first files show while the burst still runs.
    assert!(
        first_seen.is_some(),
        "nothing of a {burst:?} burst showed before it ended: the 1.5 s bound did not flush it"
    );
    // One sync per 1.5 s of burst, plus the tail: never one per event.
    let bound = (burst.as_secs_f64() / musicfs::library::watch::BURST_MAX.as_secs_f64()).ceil()
        as usize
        + 2;
    assert!(
        ran >= 2 && ran <= bound,
        "{ran} syncs for a burst of {burst:?} (2 to {bound})"
    );
    // The last change shows within the burst bound plus the time of the
    // syncs it waited for: the one running when the burst ended (counted
    // whole, from before the end) and the one that read it. Those syncs'
    // own time is what a loaded machine stretches, so it is measured (each
    // logs elapsed_ms), not guessed. What the logged time leaves out (the
    // events' delivery, listing the changed paths, telling the kernel, this
    // test's 20 ms polling) fits in what the bound leaves over: after its
    // last event the watcher waits only the 200 ms debounce, not 1.5 s.
    let syncing: u64 = lines[ended_before..]
        .iter()
        .map(|l| field(l, "elapsed_ms"))
        .sum();
    let within = musicfs::library::watch::BURST_MAX + Duration::from_millis(syncing);
    assert!(
        took <= within,
        "the last change showed {took:?} after the burst, past {within:?} (1.5 s + {syncing} ms of syncing)"
    );
    assert!(m.stop().success());
}

#[test]
fn file_events_closer_than_the_debounce_give_exactly_one_sync() {
    let s = Setup::new();
    let m = s.mount();
    let mnt = m.mountpoint.clone();
    watching(&m);
    settle(&m);
    const FILES: usize = 20;
    // A machine too loaded to write the next small file within the 200 ms
    // debounce breaks the premise (it would rightly sync twice): that is
    // seen, and the case is run again with new files.
    for attempt in 0..3 {
        let before = applied(&m).len();
        let mut last_write = Instant::now();
        let mut widest = Duration::ZERO;
        for i in 0..FILES {
            write_wav(
                &s.lib(&format!("close/{attempt}/{i:02}.wav")),
                2_000,
                2_000 + i as u64,
                &format!("Close {attempt} {i:02}"),
                "Band",
                &format!("Close {attempt}"),
            );
            widest = widest.max(last_write.elapsed());
            last_write = Instant::now();
        }
        let folder = mnt.join(format!("Band/Close {attempt}"));
        let shown = wait_for(VISIBLE_WITHIN, || {
            std::fs::read_dir(&folder).map_or(0, |d| d.count()) == FILES
        });
        assert!(shown, "{:?}\n{}", files_under(&mnt), m.log_text());
        settle(&m);
        let lines = applied(&m)[before..].to_vec();
        if widest >= musicfs::library::watch::DEBOUNCE {
            println!("attempt {attempt}: {widest:?} between two writes, past the debounce; again");
            continue;
        }
        println!("{FILES} files, at most {widest:?} apart: {lines:?}");
        assert_eq!(
            lines.len(),
            1,
            "one sync for the whole group: {lines:#?}\n{}",
            m.log_text()
        );
        assert_eq!(field(&lines[0], "read"), FILES as u64, "{}", lines[0]);
        assert!(m.stop().success());
        return;
    }
    panic!("three times a write took longer than the 200 ms debounce");
}

/// Tests that configure fail points: `scripts/test` runs only these with
/// the `failpoints` feature (`-- failpoints::`).
#[cfg(feature = "failpoints")]
mod failpoints {
    use super::*;

    #[test]
    fn a_kill_9_during_a_large_rescan_resumes_on_the_next_mount() {
        let s = Setup::new();
        let m = s.mount();
        assert!(m.stop().success());
        // A large change while unmounted: the next mount catches up with it in
        // batches of 256 files, in the background.
        let added = 900;
        for i in 0..added {
            write_wav(
                &s.lib(&format!("new/{}/{i}.wav", i % 9)),
                4_000,
                1000 + i as u64,
                &format!("New {i:03}"),
                "Newcomer",
                &format!("Batch {}", i % 9),
            );
        }
        // Two batches are saved, then the sync stalls: kill -9 it there.
        let mut m = s
            .command()
            .env("FAILPOINTS", "delta-sync-after-batch=1*off->sleep(60000)")
            .start(Duration::from_secs(60));
        let saved_two = wait_for(Duration::from_secs(60), || {
            m.log_text().matches("sync batch saved").count() >= 2
        });
        assert!(saved_two, "{}", m.log_text());
        m.signal(libc::SIGKILL);
        assert!(m.wait_exit(Duration::from_secs(10)).is_some());
        drop(m);

        // The next mount resumes after the last saved batch...
        let m = s.mount();
        let all = 3 + added;
        // The sync logs its summary just after the new tree is published: wait
        // for both.
        let converged = wait_for(Duration::from_secs(60), || {
            files_under(&m.mountpoint).len() == all
                && m.log_text().contains("origin changes applied")
        });
        assert!(converged, "{}", m.log_text());
        let log = m.log_text();
        let read_again = format!("read={}", added - 2 * 256);
        assert!(
            log.lines()
                .any(|l| l.contains("origin changes applied") && l.contains(&read_again)),
            "only the {} unfinished files are read again:\n{log}",
            added - 2 * 256
        );
        // ...and ends with the tree a fresh scan gives: same names, same inodes.
        let resumed = inodes_under(&m.mountpoint);
        assert!(m.stop().success());
        let d = s.dir.path();
        let fresh = MountCommand::new(
            Path::new(BIN),
            &[&d.join("lib")],
            &d.join("fresh-cache"),
            &d.join("fresh-mnt"),
            &d.join("fresh-log"),
        )
        .start(Duration::from_secs(60));
        assert_eq!(resumed, inodes_under(&fresh.mountpoint));
        assert!(fresh.stop().success());
    }
}

#[test]
fn a_clean_stop_saves_the_tree_of_the_catalog_and_the_next_mount_loads_it() {
    let s = Setup::new();
    let log = || std::fs::read_to_string(s.dir.path().join("log")).unwrap_or_default();
    let stop = |m: Mounted| {
        assert!(m.stop().success());
        log()
    };
    // Stops `m`, which must save its tree, and mounts again, which must
    // load it and show `want`.
    let saved_and_loaded = |m: Mounted, want: &BTreeMap<PathBuf, u64>| {
        let stopped = stop(m);
        assert!(
            stopped.contains("shutdown: tree saved for the next mount"),
            "{stopped}"
        );
        let m = s.mount();
        assert!(m.log_text().contains("saved_tree=true"), "{}", m.log_text());
        assert_eq!(&inodes_under(&m.mountpoint), want);
        m
    };
    // A first mount scans: its catalog had no saved copy to key the tree
    // by while it mounted, so the tree is saved when it stops.
    let m = s.mount();
    let first = inodes_under(&m.mountpoint);
    assert_eq!(first.len(), 3);
    let m = saved_and_loaded(m, &first);

    // A change synced while mounted: the tree the sync built is saved at
    // the stop, under the key of the new catalog.
    write_wav(
        &s.lib("incoming/new.wav"),
        200_000,
        9,
        "New",
        "Band",
        "Second",
    );
    let mnt = m.mountpoint.clone();
    shows(&m, "new track", || {
        mnt.join("Band/Second/00 - New.wav").exists()
    });
    settle(&m);
    let synced = inodes_under(&mnt);
    assert_eq!(synced.len(), 4);
    let m = saved_and_loaded(m, &synced);
    assert_eq!(
        sha256_file(&m.mountpoint.join("Band/Second/00 - New.wav")).unwrap(),
        sha256_file(&s.lib("incoming/new.wav")).unwrap()
    );
    // Nothing changed since: nothing to save.
    let stopped = stop(m);
    assert!(
        !stopped.contains("tree saved for the next mount"),
        "{stopped}"
    );

    // A change while unmounted: the saved tree is the saved catalog's, and
    // the catch-up sync after the mount shows the change.
    std::fs::remove_file(s.lib("incoming/new.wav")).unwrap();
    let m = s.mount();
    assert!(m.log_text().contains("saved_tree=true"), "{}", m.log_text());
    let mnt = m.mountpoint.clone();
    shows(&m, "removal made while unmounted", || {
        !mnt.join("Band/Second/00 - New.wav").exists()
    });
    assert_eq!(inodes_under(&mnt), first);
    // The tree without the file is saved at the stop, and the next
    // mount loads it.
    settle(&m);
    drop(saved_and_loaded(m, &first));
}
