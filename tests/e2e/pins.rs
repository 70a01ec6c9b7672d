//! End to end: `musicfs pin`, `unpin` and `pins` on real mounts, the
//! `user.musicfs.cached` attribute and the `.offline` view.
//!
//! The library: an artist to pin ("Keeper", 4 tracks of 1.5 MB) and one
//! whose reads put the cache under pressure ("Filler", 6 tracks of 3 MB),
//! under a 10 MiB cache.

use musicfs_tests::fixtures::write_wav;
use musicfs_tests::mount::{MountCommand, Mounted};
use musicfs_tests::{files_under, sha256_file, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
const KEEPER_TRACKS: u64 = 4;
const KEEPER_BYTES: usize = 1_500_000;
const FILLER_TRACKS: u64 = 6;
const FILLER_BYTES: usize = 3_000_000;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let s = Setup {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for n in 1..=KEEPER_TRACKS {
            write_wav(
                &s.path(&format!("lib/keeper/{n}.wav")),
                KEEPER_BYTES,
                n,
                &format!("Keep {n}"),
                "Keeper",
                "Kept",
            );
        }
        for n in 1..=FILLER_TRACKS {
            write_wav(
                &s.path(&format!("lib/filler/{n}.wav")),
                FILLER_BYTES,
                100 + n,
                &format!("Fill {n}"),
                "Filler",
                "Filled",
            );
        }
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn mnt(&self) -> PathBuf {
        self.path("mnt")
    }

    fn mount(&self) -> Mounted {
        self.command().start(Duration::from_secs(60))
    }

    fn command(&self) -> MountCommand {
        MountCommand::in_dir(Path::new(BIN), self.dir.path()).args([
            "--cache-size",
            "10M",
            "--xattrs",
        ])
    }

    /// SHA-256 of each Keeper track, by its name in the mount.
    fn keeper_hashes(&self) -> BTreeMap<String, String> {
        (1..=KEEPER_TRACKS)
            .map(|n| {
                let hash = sha256_file(&self.path(&format!("lib/keeper/{n}.wav"))).unwrap();
                (format!("00 - Keep {n}.wav"), hash)
            })
            .collect()
    }

    fn keeper(&self, n: u64) -> PathBuf {
        self.mnt().join(format!("Keeper/Kept/00 - Keep {n}.wav"))
    }
}

/// `musicfs ARGS...`.
fn musicfs(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("musicfs runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `musicfs pins --json MNT`.
fn pins_json(mnt: &Path) -> Value {
    let out = musicfs(&["pins", "--json", &mnt.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("pins --json is JSON")
}

fn status_json(mnt: &Path) -> Value {
    let out = musicfs(&["status", "--json", &mnt.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

/// The value of the extended attribute `name` of `path`.
fn xattr(path: &Path, name: &str) -> Option<String> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a buffer of the length passed.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| String::from_utf8_lossy(&buf[..len as usize]).into_owned())
}

/// Every pinned file is fully cached.
#[cfg(feature = "failpoints")]
fn all_pins_full(mnt: &Path) -> bool {
    let pins = pins_json(mnt);
    let files = pins["files"].as_array().cloned().unwrap_or_default();
    !files.is_empty()
        && files
            .iter()
            .all(|f| f["cached_bytes"].as_u64() == f["size"].as_u64())
}

#[test]
fn a_pinned_artist_plays_offline_while_other_reads_evict_around_it() {
    let s = Setup::new();
    let want = s.keeper_hashes();
    let m = s.mount();
    m.wait_search_index();
    let mnt = s.mnt();
    // The first scan kept the head and tail of every track, no more.
    assert_eq!(
        xattr(&s.keeper(1), "user.musicfs.cached").as_deref(),
        Some("partial")
    );
    assert_eq!(
        xattr(&s.keeper(1), "user.musicfs.pinned").as_deref(),
        Some("no")
    );

    let out = musicfs(&["pin", &mnt.to_string_lossy(), "artist:Keeper"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("pinned 4 files"), "{}", text(&out));
    assert!(stdout.contains("4 of 4 files cached"), "{}", text(&out));
    for n in 1..=KEEPER_TRACKS {
        assert_eq!(
            xattr(&s.keeper(n), "user.musicfs.cached").as_deref(),
            Some("full")
        );
        assert_eq!(
            xattr(&s.keeper(n), "user.musicfs.pinned").as_deref(),
            Some("yes")
        );
    }

    // 18 MB of other music through a 10 MiB cache: eviction runs, and
    // never takes a pinned chunk.
    for n in 1..=FILLER_TRACKS {
        let track = mnt.join(format!("Filler/Filled/00 - Fill {n}.wav"));
        let hash = sha256_file(&s.path(&format!("lib/filler/{n}.wav"))).unwrap();
        assert_eq!(sha256_file(&track).unwrap(), hash);
    }
    // Those reads were answered from the origin; the cache fills behind.
    m.wait_filled(Path::new(BIN));
    let status = status_json(&mnt);
    assert!(
        status["cache"]["chunks_evicted"].as_u64().unwrap_or(0) > 0,
        "no eviction happened: {status:#}"
    );
    assert!(status["cache"]["bytes"].as_u64().unwrap() <= 10 << 20);
    assert_eq!(status["pins"]["files"], 4, "{status:#}");
    assert_eq!(status["pins"]["full"], 4, "{status:#}");

    // The origin goes away: the pinned tracks play, byte for byte, from a
    // fresh open (the kernel's pages dropped first).
    std::fs::rename(s.path("lib"), s.path("lib.gone")).unwrap();
    drop_page_cache();
    for (name, hash) in &want {
        let track = mnt.join("Keeper/Kept").join(name);
        assert_eq!(&sha256_file(&track).unwrap(), hash, "{name}");
    }
    // `.offline` shows every pinned track, and only what plays offline.
    let offline = mnt.join(".offline");
    let shown = files_under(&offline);
    for name in want.keys() {
        assert!(
            shown.contains(&Path::new("Keeper/Kept").join(name)),
            "{name} not in .offline: {shown:?}"
        );
    }
    for rel in &shown {
        assert_eq!(
            xattr(&mnt.join(rel), "user.musicfs.cached").as_deref(),
            Some("full"),
            "{rel:?} is in .offline"
        );
        assert!(
            sha256_file(&offline.join(rel)).is_ok(),
            "{rel:?} plays offline"
        );
    }
    let listed =
        String::from_utf8_lossy(&musicfs(&["pins", &mnt.to_string_lossy()]).stdout).into_owned();
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("full")).count(),
        4,
        "{listed}"
    );
    assert!(
        listed.contains("4 files pinned, 4 fully cached"),
        "{listed}"
    );
    assert!(m.stop().success());
}

#[test]
fn the_attributes_are_off_unless_asked_for() {
    let s = Setup::new();
    let m = MountCommand::in_dir(Path::new(BIN), s.dir.path()).start(Duration::from_secs(60));
    assert_eq!(xattr(&s.keeper(1), "user.musicfs.cached"), None);
    let err = std::io::Error::last_os_error();
    assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "{err}");
    assert!(m.stop().success());
}

/// Drops the kernel's page cache, so reads reach the mount again.
fn drop_page_cache() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", b"3");
}

#[test]
fn folders_and_playlists_pin_too_and_too_much_is_refused_with_the_numbers() {
    let s = Setup::new();
    let m = s
        .command()
        .args(["--pin-share", "70"])
        .start(Duration::from_secs(60));
    let mnt = s.mnt();
    // A folder of the mount (no search index needed).
    let out = musicfs(&[
        "pin",
        &mnt.to_string_lossy(),
        &mnt.join("Keeper").to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // 18 MB more is far past 70% of 10 MiB: refused, with the numbers.
    let out = musicfs(&["pin", &mnt.to_string_lossy(), "Filler"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let sizes = |dir: &str| -> u64 {
        files_under(&s.path(dir))
            .iter()
            .map(|f| std::fs::metadata(s.path(dir).join(f)).unwrap().len())
            .sum()
    };
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    for number in [
        mib(sizes("lib/filler")),
        mib(sizes("lib/keeper")),
        mib(7 << 20),
    ] {
        assert!(
            err.contains("cannot pin") && err.contains(&number),
            "{number}: {err}"
        );
    }
    assert_eq!(pins_json(&mnt)["files"].as_array().map(Vec::len), Some(4));

    // A playlist outside the mount whose entries point into it.
    let playlist = s.path("road.m3u8");
    std::fs::write(
        &playlist,
        format!(
            "#EXTM3U\n#EXTINF:1,Fill 1\n{}\n/nowhere/else.flac\n",
            mnt.join("Filler/Filled/00 - Fill 1.wav").display()
        ),
    )
    .unwrap();
    let out = musicfs(&[
        "unpin",
        &mnt.to_string_lossy(),
        &mnt.join("Keeper").to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("released 4"),
        "{}",
        text(&out)
    );
    let out = musicfs(&["pin", &mnt.to_string_lossy(), &playlist.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("1 entries of the playlist are not files of the mount")
    );
    let pins = pins_json(&mnt);
    let paths: Vec<&str> = pins["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(paths, vec!["Filler/Filled/00 - Fill 1.wav"]);
    // Nothing matching is an error, not an empty success.
    let out = musicfs(&["pin", &mnt.to_string_lossy(), "artist:Nobody"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(m.stop().success());
}

#[test]
fn a_pin_follows_its_track_through_a_retag_and_a_restart() {
    let s = Setup::new();
    let m = s.mount();
    let mnt = s.mnt();
    let out = musicfs(&[
        "pin",
        &mnt.to_string_lossy(),
        &s.keeper(1).to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // A retag renames the track in the mount and changes its bytes: the pin
    // stays, and the new version is fetched in the background.
    write_wav(
        &s.path("lib/keeper/1.wav"),
        KEEPER_BYTES + 4096,
        1,
        "Renamed",
        "Keeper",
        "Kept",
    );
    let renamed = mnt.join("Keeper/Kept/00 - Renamed.wav");
    assert!(
        wait_for(Duration::from_secs(20), || xattr(
            &renamed,
            "user.musicfs.cached"
        )
        .as_deref()
            == Some("full")),
        "the retagged pinned track was not fetched again: {:?}\n{}",
        xattr(&renamed, "user.musicfs.cached"),
        m.log_text()
    );
    assert_eq!(
        xattr(&renamed, "user.musicfs.pinned").as_deref(),
        Some("yes")
    );
    assert!(m.stop().success());
    // Pins live in the cache database.
    let m = s.mount();
    let pins = pins_json(&mnt);
    assert_eq!(
        pins["files"][0]["path"], "Keeper/Kept/00 - Renamed.wav",
        "{pins:#}"
    );
    assert_eq!(pins["files"][0]["cached_bytes"], pins["files"][0]["size"]);
    assert!(m.stop().success());
}

/// Tests that slow the origin down with the `origin-read-delay` fail point
/// (feature `failpoints`; run by the fail-point step of `scripts/test`).
#[cfg(feature = "failpoints")]
mod failpoints {
    use super::*;

    /// Starts `musicfs pin` of the Keeper folder in the background.
    fn start_pin(mnt: &Path) -> std::process::Child {
        Command::new(BIN)
            .args([
                "pin",
                &mnt.to_string_lossy(),
                &mnt.join("Keeper").to_string_lossy(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("musicfs pin runs")
    }

    /// Bytes of pinned files cached so far, per `pins --json`.
    fn cached_bytes(mnt: &Path) -> u64 {
        pins_json(mnt)["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["cached_bytes"].as_u64())
            .sum()
    }

    #[test]
    fn a_pin_cut_short_by_kill_9_is_still_there_after_a_remount_and_finishes() {
        let s = Setup::new();
        let mut m = s
            .command()
            .env("FAILPOINTS", "origin-read-delay=return(1000)")
            .start(Duration::from_secs(60));
        let mnt = s.mnt();
        let pin = start_pin(&mnt);
        assert!(
            wait_for(Duration::from_secs(30), || cached_bytes(&mnt) > 0),
            "{}",
            m.log_text()
        );
        let at_kill = cached_bytes(&mnt);
        m.signal(libc::SIGKILL);
        assert!(m.wait_exit(Duration::from_secs(10)).is_some());
        assert!(
            at_kill < KEEPER_TRACKS * KEEPER_BYTES as u64,
            "the fetch was cut short"
        );
        let out = pin.wait_with_output().expect("pin exits");
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        // Remounted (no delay), the daemon finishes the fetch on its own.
        let m = s.mount();
        let pins = pins_json(&mnt);
        assert_eq!(
            pins["files"].as_array().map(Vec::len),
            Some(4),
            "the pins survived: {pins:#}"
        );
        assert!(
            wait_for(Duration::from_secs(30), || all_pins_full(&mnt)),
            "the fetch did not finish: {:#}\n{}",
            pins_json(&mnt),
            m.log_text()
        );
        for (name, hash) in &s.keeper_hashes() {
            assert_eq!(
                &sha256_file(&mnt.join("Keeper/Kept").join(name)).unwrap(),
                hash
            );
        }
        assert!(m.stop().success());
    }

    #[test]
    fn ctrl_c_stops_a_pin_keeps_what_was_fetched_and_the_same_pin_resumes() {
        let s = Setup::new();
        let m = s
            .command()
            .env("FAILPOINTS", "origin-read-delay=return(1000)")
            .start(Duration::from_secs(60));
        let mnt = s.mnt();
        let pin = start_pin(&mnt);
        // Past what the first scan kept of the four tracks (their heads and
        // tails): the pin has fetched, so it is running and has its handler.
        let kept = KEEPER_TRACKS * (300 << 10);
        assert!(wait_for(Duration::from_secs(30), || cached_bytes(&mnt) > kept));
        // SAFETY: kill(2) on a child we spawned.
        unsafe { libc::kill(pin.id() as i32, libc::SIGINT) };
        let out = pin.wait_with_output().expect("pin exits");
        assert_eq!(out.status.code(), Some(130), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("the pins stay"),
            "{}",
            text(&out)
        );
        // Paused: nothing more is fetched.
        let pins = pins_json(&mnt);
        let files = pins["files"].as_array().cloned().unwrap_or_default();
        assert_eq!(files.len(), 4);
        assert!(files.iter().all(|f| f["paused"] == true), "{pins:#}");
        let stopped_at = cached_bytes(&mnt);
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            cached_bytes(&mnt) <= stopped_at + (2 << 20),
            "fetching went on after Ctrl-C"
        );
        assert!(stopped_at < KEEPER_TRACKS * KEEPER_BYTES as u64);
        drop(m);
        // Without the delay, the same pin resumes and completes.
        let m = s.mount();
        let out = musicfs(&[
            "pin",
            &mnt.to_string_lossy(),
            &mnt.join("Keeper").to_string_lossy(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(all_pins_full(&mnt));
        assert!(
            pins_json(&mnt)["files"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|f| f["paused"] == false)
        );
        assert!(m.stop().success());
    }
}
