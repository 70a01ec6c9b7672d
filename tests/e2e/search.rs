//! End to end: `musicfs search` and the hidden `.search` folder.

use musicfs_tests::fixtures::{WavTags, write_wav_tagged};
use musicfs_tests::mount::{MountCommand, Mounted};
use musicfs_tests::{files_under, sha256_file, wait_for};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

struct Setup {
    dir: tempfile::TempDir,
}

fn track(dir: &Path, file: &str, title: &str, artist: &str, album: &str, genre: &str, year: i32) {
    let tags = WavTags {
        title,
        artist,
        album,
        genre: Some(genre),
        year: Some(year),
    };
    write_wav_tagged(&dir.join(file), 50_000, file.len() as u64, &tags);
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        track(
            &lib,
            "a.wav",
            "Jóga",
            "Björk",
            "Homogenic",
            "Electronic",
            1997,
        );
        track(
            &lib,
            "b.wav",
            "Hunter",
            "Björk",
            "Homogenic",
            "Electronic",
            1997,
        );
        track(
            &lib,
            "c.wav",
            "So What",
            "Miles Davis",
            "Kind of Blue",
            "Jazz",
            1959,
        );
        track(
            &lib,
            "d.wav",
            "Footprints",
            "Esperanza Spalding",
            "Live",
            "Jazz",
            2010,
        );
        track(
            &lib,
            "e.wav",
            "Airbag",
            "Radiohead",
            "OK Computer",
            "Rock",
            1997,
        );
        Setup { dir }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn mount(&self) -> Mounted {
        MountCommand::in_dir(Path::new(BIN), self.dir.path()).start(Duration::from_secs(60))
    }
    fn search(&self, query: &str) -> (Option<i32>, Vec<String>) {
        let out = Command::new(BIN)
            .args(["search", "--cache-dir"])
            .arg(self.path("cache"))
            .arg(query)
            .output()
            .unwrap();
        let lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        (out.status.code(), lines)
    }
}

#[test]
fn search_by_field_accent_case_and_typo_against_the_daemon_and_offline() {
    let s = Setup::new();
    let m = s.mount();
    assert!(
        wait_for(Duration::from_secs(20), || s.search("bjork").1.len() == 2),
        "index ready"
    );
    let (code, hits) = s.search("artist:bjork");
    assert_eq!(code, Some(0));
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(
        hits.iter().all(|h| h.starts_with("Björk/Homogenic/")),
        "{hits:?}"
    );
    assert_eq!(
        s.search("radiohed").1,
        ["Radiohead/OK Computer/00 - Airbag.wav"],
        "typo tolerant"
    );
    assert_eq!(s.search("MILES").1.len(), 1, "case-insensitive");
    let (_, jazz_new) = s.search("genre:jazz year:>2000");
    assert_eq!(jazz_new, ["Esperanza Spalding/Live/00 - Footprints.wav"]);
    let (_, nineties) = s.search("year:[1990 TO 1999]");
    assert_eq!(nineties.len(), 3, "{nineties:?}");
    let (code, _) = s.search("artst:x");
    assert_eq!(code, Some(2), "a bad query is a usage error");
    // A new album is found once it shows in the tree.
    track(
        &s.path("lib"),
        "f.wav",
        "Sleep",
        "Nala Sinephro",
        "Space 1.8",
        "Jazz",
        2021,
    );
    assert!(
        wait_for(Duration::from_secs(10), || s.search("sinephro").1.len()
            == 1),
        "new album searchable"
    );
    // A track removed from the origin is no longer found; the others are.
    std::fs::remove_file(s.path("lib").join("e.wav")).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || s
            .search("radiohead")
            .1
            .is_empty()),
        "removed track no longer searchable"
    );
    assert_eq!(s.search("bjork").1.len(), 2, "the others stay");
    // Asked by mountpoint: absolute paths that open as the tracks.
    let out = Command::new(BIN)
        .args(["search", "--mount"])
        .arg(&m.mountpoint)
        .arg("artist:bjork")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let paths: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    let mnt = m.mountpoint.canonicalize().unwrap();
    for p in &paths {
        assert!(p.is_absolute() && p.starts_with(&mnt), "{p:?}");
        assert!(sha256_file(p).is_ok(), "{p:?} opens");
    }
    let out = Command::new(BIN)
        .args(["search", "--mount"])
        .arg(s.path("lib"))
        .arg("bjork")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "not a mount: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no MusicFS mount answers"));
    drop(m);
    // Offline: the committed index answers with no daemon running.
    let (code, hits) = s.search("genre:jazz year:>2000");
    assert_eq!(code, Some(0));
    assert_eq!(hits.len(), 2, "{hits:?}");
}

#[test]
fn the_search_folder_lists_matches_as_symlinks_and_hides_itself() {
    let s = Setup::new();
    let m = s.mount();
    let mnt = m.mountpoint.clone();
    let query = mnt.join(".search").join("genre:jazz year:>2000");
    assert!(
        wait_for(Duration::from_secs(20), || query.exists()),
        "index ready"
    );
    let entries: Vec<String> = std::fs::read_dir(&query)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(entries, ["00 - Footprints.wav"]);
    let link = query.join("00 - Footprints.wav");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from("../../Esperanza Spalding/Live/00 - Footprints.wav")
    );
    // The link leads to the real bytes.
    assert_eq!(
        sha256_file(&link).unwrap(),
        sha256_file(&s.path("lib/d.wav")).unwrap()
    );
    let artist = mnt.join(".search").join("artist:björk");
    assert_eq!(std::fs::read_dir(&artist).unwrap().count(), 2);
    // Hidden from listings, so scanners and find never walk into it.
    assert_eq!(std::fs::read_dir(mnt.join(".search")).unwrap().count(), 0);
    assert!(
        std::fs::read_dir(&mnt)
            .unwrap()
            .all(|e| e.unwrap().file_name() != ".search")
    );
    assert!(files_under(&mnt).iter().all(|p| !p.starts_with(".search")));
    let find = Command::new("find").arg(&mnt).output().unwrap();
    assert!(!String::from_utf8_lossy(&find.stdout).contains(".search"));
    // A query that matches nothing is an empty folder; a malformed one is absent.
    assert_eq!(
        std::fs::read_dir(mnt.join(".search/artist:nobody-at-all"))
            .unwrap()
            .count(),
        0
    );
    assert!(!mnt.join(".search/artst:x").exists());
}

#[test]
fn a_listed_search_folder_shows_new_results_after_the_library_changes() {
    let s = Setup::new();
    let m = s.mount();
    let query = m.mountpoint.join(".search").join("genre:jazz year:>2000");
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&query)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert!(
        wait_for(Duration::from_secs(20), || names().len() == 1),
        "index ready: {:?}",
        names()
    );
    // The kernel now holds this listing in its cache.
    assert_eq!(names(), ["00 - Footprints.wav"]);
    add_a_jazz_album_of_2021(&s);
    assert!(
        wait_for(Duration::from_secs(20), || names().len() == 2),
        "the cached listing was dropped when the results changed: {:?}",
        names()
    );
    assert_eq!(names(), ["00 - Footprints.wav", "00 - Promise.wav"]);
}

/// One more 2021 jazz track, so `genre:jazz year:>2000` finds two.
fn add_a_jazz_album_of_2021(s: &Setup) {
    track(
        &s.path("lib"),
        "f.wav",
        "Promise",
        "Floating Points",
        "Promises",
        "Jazz",
        2021,
    );
}

#[test]
fn search_folders_have_real_times() {
    use std::time::SystemTime;
    let s = Setup::new();
    // File times have whole-second precision in places: allow for it.
    let before = SystemTime::now() - Duration::from_secs(2);
    let m = s.mount();
    let query = m.mountpoint.join(".search").join("genre:jazz year:>2000");
    assert!(
        wait_for(Duration::from_secs(20), || query.exists()),
        "index ready"
    );
    let mtime = |p: &Path| std::fs::symlink_metadata(p).unwrap().modified().unwrap();
    let recent = |t: SystemTime| t >= before && t <= SystemTime::now() + Duration::from_secs(2);
    let root = mtime(&m.mountpoint.join(".search"));
    assert!(
        recent(root),
        ".search is dated {root:?}, not the mount's start"
    );
    let first = mtime(&query);
    assert!(recent(first), "the query folder is dated {first:?}");
    let link = query.join("00 - Footprints.wav");
    assert_eq!(mtime(&link), first, "a result link has its folder's time");
    // Searching again with the same results keeps the time (past the
    // kernel's one-second attribute cache, so the daemon is asked again).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(mtime(&query), first);
    // New results: a later time.
    add_a_jazz_album_of_2021(&s);
    assert!(
        wait_for(Duration::from_secs(20), || mtime(&query) > first),
        "the mtime did not move with the results"
    );
    assert!(recent(mtime(&query)));
    assert_eq!(std::fs::read_dir(&query).unwrap().count(), 2);
}

#[test]
fn the_search_folder_is_in_the_help() {
    for args in [&["mount", "--help"][..], &["search", "--help"][..]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("MOUNTPOINT/.search/QUERY"),
            "{args:?}:\n{help}"
        );
    }
}
