//! End to end: a real FUSE mount of a generated library (issue "Mount a local
//! music library as one tag-organized, read-only tree").

use musicfs_core::naming::is_valid_name;
use musicfs_tests::corpus::Library;
use musicfs_tests::disk::cached_bytes;
use musicfs_tests::mount::{MountCommand, Mounted, control_ok, is_mounted};
use musicfs_tests::{files_under, sha256_file};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
const MOUNT_TIMEOUT: Duration = Duration::from_secs(120);

/// One library for the whole file: 230 tracks of every format, the awkward
/// edge cases, and one 48 MiB FLAC.
fn library() -> &'static Library {
    static LIB: OnceLock<Library> = OnceLock::new();
    LIB.get_or_init(|| {
        Library::cached(
            Path::new(env!("CARGO_TARGET_TMPDIR")),
            &[
                "--tracks",
                "230",
                "--seed",
                "5",
                "--edge-cases",
                "--big",
                "1",
                "--big-mb",
                "48",
            ],
        )
    })
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn command(&self) -> MountCommand {
        let lib = library();
        MountCommand::new(
            Path::new(BIN),
            &[&lib.root],
            &self.path("cache"),
            &self.path("mnt"),
            &self.path("daemon.log"),
        )
    }
    fn mount(&self) -> Mounted {
        self.command().start(MOUNT_TIMEOUT)
    }
}

fn hash_all(root: &Path) -> BTreeMap<PathBuf, String> {
    files_under(root)
        .into_iter()
        .map(|rel| {
            let h = sha256_file(&root.join(&rel)).unwrap_or_else(|e| panic!("{rel:?}: {e}"));
            (rel, h)
        })
        .collect()
}

/// Cover art, or another file shown beside the tracks (the generated
/// library's playlist in `Playlists/`): not a track.
fn is_cover(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    p.starts_with("Playlists")
        || [".png", ".jpg", ".lrc", ".txt", ".cue"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

#[test]
fn every_track_appears_once_byte_identical_under_valid_names() {
    let fx = Fixture::new();
    let m = fx.mount();
    let lib = library();
    let listed = hash_all(&m.mountpoint);
    let mut want: HashMap<&str, usize> = HashMap::new();
    for t in lib.tracks() {
        *want.entry(t.sha256.as_str()).or_default() += 1;
    }
    let mut got: HashMap<&str, usize> = HashMap::new();
    for (rel, hash) in &listed {
        for comp in rel.components() {
            let name = comp.as_os_str().to_str().expect("names are UTF-8");
            assert!(is_valid_name(name), "invalid name {name:?} in {rel:?}");
        }
        if is_cover(rel) {
            continue;
        }
        assert_eq!(rel.components().count(), 3, "Artist/Album/Track: {rel:?}");
        *got.entry(hash.as_str()).or_default() += 1;
    }
    assert_eq!(got, want, "tracks in the mount differ from the origin");
    // Cover art from tidy album folders is shown beside the tracks.
    assert!(
        listed.keys().any(|p| is_cover(p)),
        "no cover art in the tree"
    );
    // The log counts the files lofty could not read.
    assert!(m.log_text().contains("3 unreadable"), "{}", m.log_text());
    assert!(m.stop().success());
}

#[test]
fn getattr_shows_real_sizes_and_origin_mtimes() {
    let fx = Fixture::new();
    let m = fx.mount();
    let lib = library();
    let by_hash: HashMap<&str, &str> = lib
        .tracks()
        .map(|t| (t.sha256.as_str(), t.path.as_str()))
        .collect();
    for rel in files_under(&m.mountpoint)
        .iter()
        .filter(|p| !is_cover(p))
        .take(40)
    {
        let meta = std::fs::metadata(m.mountpoint.join(rel)).unwrap();
        let hash = sha256_file(&m.mountpoint.join(rel)).unwrap();
        let origin = std::fs::metadata(lib.root.join(by_hash[hash.as_str()])).unwrap();
        assert_eq!(meta.len(), origin.len());
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (origin.mtime(), origin.mtime_nsec())
        );
        assert_eq!(meta.mode() & 0o777, 0o444);
    }
    let out = Command::new("stat")
        .args(["-f", "-c", "%b %c %l"])
        .arg(&m.mountpoint)
        .output()
        .unwrap();
    assert!(out.status.success(), "statfs answers");
}

fn ffprobe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration,format_name:format_tags",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe must be installed (apt install ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe {path:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

#[test]
fn ffprobe_through_the_mount_sees_the_same_tags_and_duration() {
    let fx = Fixture::new();
    let m = fx.mount();
    let lib = library();
    let by_hash: HashMap<&str, &str> = lib
        .tracks()
        .map(|t| (t.sha256.as_str(), t.path.as_str()))
        .collect();
    let mut formats_seen = std::collections::BTreeSet::new();
    for rel in files_under(&m.mountpoint).iter().filter(|p| !is_cover(p)) {
        let ext = rel
            .extension()
            .map(|e| e.to_string_lossy().to_string())
            .unwrap_or_default();
        if !formats_seen.insert(ext) {
            continue;
        }
        let mounted = m.mountpoint.join(rel);
        let origin = lib
            .root
            .join(by_hash[sha256_file(&mounted).unwrap().as_str()]);
        assert_eq!(ffprobe(&mounted), ffprobe(&origin), "{rel:?}");
    }
    for ext in ["flac", "mp3", "ogg", "opus", "m4a"] {
        assert!(formats_seen.contains(ext), "no {ext} track probed");
    }
}

#[test]
fn tar_and_cp_of_the_whole_mount_work() {
    let fx = Fixture::new();
    let m = fx.mount();
    let listed = files_under(&m.mountpoint);
    let tar = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -cf - -C '{}' . | tar -tf - | grep -vc '/$'",
            m.mountpoint.display()
        ))
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let count: usize = String::from_utf8_lossy(&tar.stdout).trim().parse().unwrap();
    assert_eq!(count, listed.len());
    let copy = fx.path("copy");
    let cp = Command::new("cp")
        .arg("-r")
        .arg(&m.mountpoint)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    assert_eq!(hash_all(&copy), hash_all(&m.mountpoint));
}

#[test]
fn two_hundred_concurrent_readers_all_complete() {
    let fx = Fixture::new();
    let m = fx.mount();
    let lib = library();
    let want: HashMap<String, usize> = lib.tracks().fold(HashMap::new(), |mut acc, t| {
        *acc.entry(t.sha256.clone()).or_default() += 1;
        acc
    });
    let files: Vec<PathBuf> = files_under(&m.mountpoint)
        .into_iter()
        .filter(|p| !is_cover(p))
        .take(200)
        .map(|p| m.mountpoint.join(p))
        .collect();
    assert_eq!(files.len(), 200);
    let (tx, rx) = std::sync::mpsc::channel();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(files.len()));
    for f in files {
        let (tx, barrier) = (tx.clone(), barrier.clone());
        std::thread::spawn(move || {
            barrier.wait();
            let _ = tx.send((f.clone(), sha256_file(&f).map_err(|e| e.to_string())));
        });
    }
    drop(tx);
    // A deadlock detector, not a speed target: each read needs milliseconds.
    for _ in 0..200 {
        let (f, r) = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("a reader hung:\n{}", m.log_text()));
        let hash = r.unwrap_or_else(|e| panic!("{f:?}: {e}"));
        assert!(
            want.contains_key(&hash),
            "{f:?} has bytes of no origin track"
        );
    }
}

#[test]
fn a_seek_into_a_large_uncached_file_does_not_fetch_the_whole_file() {
    let fx = Fixture::new();
    let m = fx.mount();
    let lib = library();
    let big = lib
        .tracks()
        .find(|t| t.path.starts_with("big/"))
        .expect("big file");
    let mounted = m
        .mountpoint
        .join("Big Files/Long Takes/01 - Long Take 1.flac");
    let offset = big.size * 2 / 3;
    // The first scan kept every track's head and tail: count what the
    // read adds.
    let kept = cached_bytes(&fx.path("cache"));
    assert!(big.size > 24 << 20, "the big file is {} bytes", big.size);
    let mut buf = vec![0u8; 65536];
    let f = std::fs::File::open(&mounted).unwrap();
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, offset).unwrap();
    let origin = std::fs::File::open(lib.root.join(&big.path)).unwrap();
    let mut want = vec![0u8; 65536];
    std::os::unix::fs::FileExt::read_exact_at(&origin, &mut want, offset).unwrap();
    assert_eq!(buf, want);
    let cached = cached_bytes(&fx.path("cache")) - kept;
    assert!(
        cached < 8 << 20,
        "a 64 KiB read at 2/3 of the file cached {cached} bytes of a {} byte file",
        big.size
    );
}

#[test]
fn every_write_gets_erofs() {
    let fx = Fixture::new();
    let m = fx.mount();
    let track = files_under(&m.mountpoint)
        .into_iter()
        .find(|p| !is_cover(p))
        .unwrap();
    let track = m.mountpoint.join(track);
    let erofs = |r: std::io::Result<()>| {
        assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::EROFS))
    };
    erofs(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&track)
            .map(drop),
    );
    erofs(std::fs::write(m.mountpoint.join("new.flac"), b"x"));
    erofs(std::fs::create_dir(m.mountpoint.join("newdir")));
    erofs(std::fs::remove_file(&track));
    erofs(std::fs::rename(&track, m.mountpoint.join("moved.flac")));
    erofs(std::fs::set_permissions(
        &track,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    ));
    erofs(std::os::unix::fs::symlink(
        "/etc/passwd",
        m.mountpoint.join("link"),
    ));
    // And nothing changed at the origin.
    assert!(
        std::fs::read_dir(&m.mountpoint)
            .unwrap()
            .all(|e| e.unwrap().file_name() != "new.flac")
    );
}

#[test]
fn sigterm_and_sigint_exit_zero_and_leave_no_mount() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let fx = Fixture::new();
        let mut m = fx.mount();
        // Keep a reader busy, so shutdown happens with the mount in use.
        let _ = std::fs::read_dir(&m.mountpoint).unwrap().count();
        m.signal(signal);
        let status = m.wait_exit(Duration::from_secs(20)).expect("daemon exits");
        assert_eq!(status.code(), Some(0), "signal {signal}:\n{}", m.log_text());
        assert!(
            !is_mounted(&m.mountpoint),
            "mount left behind after signal {signal}"
        );
    }
}

#[test]
fn unmount_from_another_shell_ends_the_daemon_cleanly() {
    let fx = Fixture::new();
    let mut m = fx.mount();
    control_ok(Path::new(BIN), &["unmount"], &m.mountpoint);
    let status = m
        .wait_exit(Duration::from_secs(20))
        .expect("daemon exits after unmount");
    assert_eq!(status.code(), Some(0), "{}", m.log_text());
    assert!(!is_mounted(&m.mountpoint));
}

#[test]
fn a_remount_opens_the_saved_tree_with_the_same_names_and_inodes() {
    let fx = Fixture::new();
    let inodes = musicfs_tests::inodes_under;
    let m = fx.mount();
    let first = inodes(&m.mountpoint);
    assert!(m.stop().success());
    let m = fx.mount();
    assert_eq!(inodes(&m.mountpoint), first);
    let log = m.log_text();
    assert!(
        !log.contains("scanning a new origin"),
        "second mount rescanned before mounting:\n{log}"
    );
    // The first mount saved its tree when it stopped; the second loaded
    // it, and so does the third, and they show the same tree.
    assert!(
        log.contains("saved_tree=true"),
        "second mount built its tree:\n{log}"
    );
    let saved = fx.path("cache").join("tree.bin");
    assert!(
        musicfs_tests::wait_for(Duration::from_secs(30), || saved.exists()),
        "the tree was not saved for the next mount:\n{}",
        m.log_text()
    );
    assert!(m.stop().success());
    let m = fx.mount();
    assert!(
        m.log_text().contains("saved_tree=true"),
        "third mount built its tree:\n{}",
        m.log_text()
    );
    assert_eq!(inodes(&m.mountpoint), first);
    assert!(m.stop().success());
    // A saved tree that does not read is built again, the same.
    let bytes = std::fs::read(&saved).unwrap();
    std::fs::write(&saved, &bytes[..bytes.len() / 3]).unwrap();
    let m = fx.mount();
    assert!(
        m.log_text().contains("saved_tree=false"),
        "{}",
        m.log_text()
    );
    assert_eq!(inodes(&m.mountpoint), first);
    // A fresh cache (a fresh scan) gives the same tree too.
    drop(m);
    let other = Fixture::new();
    let m = other.mount();
    assert_eq!(inodes(&m.mountpoint), first);
}

fn run_bad(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs `musicfs ARGS` that must be refused as a usage error: exit code 2,
/// one line on stderr containing each of `says`.
fn assert_usage_error(args: &[&str], says: &[&str]) {
    let (code, stderr) = run_bad(args);
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    for s in says {
        assert!(stderr.contains(s), "{args:?}: no {s:?} in {stderr}");
    }
}

#[test]
fn durations_and_log_levels_are_checked_on_the_command_line() {
    // Checked while parsing the command line, before the origin or the
    // mountpoint are looked at.
    let base = ["mount", "--origin", "/nonexistent/music"];
    let mnt = "/nonexistent/mnt".to_owned();
    for (option, value, says) in [
        ("--read-timeout", "2h", "'2h' is out of range (1s to 1h)"),
        ("--read-timeout", "0", "'0' is out of range (1s to 1h)"),
        ("--read-timeout", "soon", "'soon' is not a duration"),
        ("--poll-interval", "5s", "'5s' is out of range (10s to 24h)"),
        ("--log-level", "loud", "unknown log level 'loud'"),
    ] {
        let mut args = base.to_vec();
        args.extend([option, value, &mnt]);
        assert_usage_error(&args, &[option, says]);
    }
    let help = Command::new(BIN)
        .args(["mount", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--read-timeout <DURATION>") && help.contains("1m30s"),
        "{help}"
    );
    assert!(help.contains("--poll-interval <DURATION>"), "{help}");
}

#[test]
fn a_layout_without_a_track_field_is_a_usage_error() {
    // Any existing folder is an origin; the layout is checked before the
    // mountpoint.
    let origin = tempfile::tempdir().unwrap();
    let origin = origin.path().to_str().unwrap();
    assert_usage_error(
        &[
            "mount",
            "--origin",
            origin,
            "--layout",
            "$artist/$album.$ext",
            "/nonexistent/mnt",
        ],
        &[
            "bad --layout",
            "\"$album.$ext\" has neither $title nor $track",
            "e.g. \"$albumartist/$album/$track - $title.$ext\"",
        ],
    );
    let help = Command::new(BIN)
        .args(["mount", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("gets .$ext appended"), "{help}");
}

#[test]
fn a_layout_without_ext_keeps_each_files_real_extension() {
    let fx = Fixture::new();
    let m = fx
        .command()
        .args(["--layout", "$artist/$album/$track $title"])
        .start(MOUNT_TIMEOUT);
    let lib = library();
    // Each track's extension in the origin, by its content.
    let mut ext_of: HashMap<&str, Vec<String>> = HashMap::new();
    for t in lib.tracks() {
        let ext = Path::new(&t.path)
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .expect("generated tracks have an extension");
        ext_of.entry(t.sha256.as_str()).or_default().push(ext);
    }
    let exts: std::collections::BTreeSet<&String> = ext_of.values().flatten().collect();
    assert!(exts.len() >= 5, "the library has many formats: {exts:?}");
    let mut tracks = 0;
    for (rel, hash) in hash_all(&m.mountpoint) {
        let Some(want) = ext_of.get(hash.as_str()) else {
            assert!(is_cover(&rel), "{rel:?} is neither a track nor a cover");
            continue;
        };
        tracks += 1;
        let name = rel.file_name().unwrap().to_string_lossy();
        let got = Path::new(name.as_ref())
            .extension()
            .map(|e| e.to_string_lossy().into_owned());
        assert!(
            got.as_ref().is_some_and(|g| want.contains(g)),
            "{rel:?} does not end in its origin's extension {want:?}"
        );
        // The layout's name, then the extension: "$track $title.$ext".
        assert_eq!(rel.components().count(), 3, "$artist/$album/...: {rel:?}");
        assert!(
            name.as_bytes()[0].is_ascii_digit(),
            "{rel:?} starts with its track number"
        );
    }
    assert_eq!(tracks, lib.tracks().count(), "every track is in the mount");
    assert!(m.stop().success());
}

#[test]
fn the_same_origin_twice_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let music = dir.path().join("music");
    std::fs::create_dir(&music).unwrap();
    std::os::unix::fs::symlink(&music, dir.path().join("link")).unwrap();
    let m = music.to_str().unwrap();
    let slash = format!("{m}/");
    let link = dir.path().join("link");
    let link = link.to_str().unwrap();
    for twin in [slash.as_str(), link] {
        assert_usage_error(
            &["mount", "--origin", m, "--origin", twin, "/nonexistent/mnt"],
            &[
                &format!("origin '{m}' and origin '{twin}' are the same place"),
                "give each origin once",
            ],
        );
    }
    assert_usage_error(
        &[
            "mount",
            "--origin",
            "sftp://me@nas/srv/music",
            "--origin",
            "sftp://me@nas/srv/music/,name=again",
            "/nonexistent/mnt",
        ],
        &[
            "origin 'sftp://me@nas/srv/music' and origin 'sftp://me@nas/srv/music/,name=again' are the same place",
        ],
    );
}

#[test]
fn version_names_the_git_commit_and_the_features() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    // The commit this source tree is at, when git can tell (the binary was
    // built from it: build.rs reruns when HEAD moves).
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let commit = head.unwrap_or_else(|| "unknown".to_owned());
    let features = if cfg!(feature = "failpoints") {
        "failpoints"
    } else {
        "none"
    };
    assert_eq!(
        shown,
        format!(
            "musicfs {} (commit {commit}; features: {features})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn bad_arguments_give_one_line_and_exit_code_2() {
    let fx = Fixture::new();
    let lib = library().root.to_str().unwrap().to_owned();
    let mnt = fx.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt = mnt.to_str().unwrap().to_owned();
    let file = fx.path("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let file = file.to_str().unwrap().to_owned();
    let cache = fx.path("cache").to_str().unwrap().to_owned();
    let not_creatable = format!("{file}/cache");
    let cases: Vec<Vec<&str>> = vec![
        vec!["mount", &mnt],
        vec![
            "mount",
            "--origin",
            "/nonexistent/music",
            "--cache-dir",
            &cache,
            &mnt,
        ],
        vec!["mount", "--origin", &file, "--cache-dir", &cache, &mnt],
        vec![
            "mount",
            "--origin",
            &lib,
            "--cache-dir",
            &cache,
            "/nonexistent/mnt",
        ],
        vec!["mount", "--origin", &lib, "--cache-dir", &cache, &file],
        vec![
            "mount",
            "--origin",
            &lib,
            "--cache-dir",
            &not_creatable,
            &mnt,
        ],
        vec![
            "mount",
            "--origin",
            &lib,
            "--cache-dir",
            &cache,
            "--layout",
            "$artst/$title",
            &mnt,
        ],
        vec![
            "mount",
            "--origin",
            &lib,
            "--cache-dir",
            &cache,
            "--cache-size",
            "lots",
            &mnt,
        ],
        vec![
            "mount",
            "--origin",
            &lib,
            "--cache-dir",
            &cache,
            "--cache-size",
            "12Q",
            &mnt,
        ],
        vec!["mount", "--origin", &lib, "--bogus-flag", &mnt],
        vec!["frobnicate"],
    ];
    for args in cases {
        let (code, stderr) = run_bad(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?} printed:\n{stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "{stderr}"
        );
    }
    assert!(!is_mounted(Path::new(&mnt)));
    let (code, stderr) = run_bad(&[
        "mount",
        "--origin",
        &lib,
        "--cache-dir",
        &cache,
        "--layout",
        "$artst/$title",
        &mnt,
    ]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("artst"),
        "the error names the bad field: {stderr}"
    );
    let help = Command::new(BIN)
        .args(["mount", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--cache-size"));
}
