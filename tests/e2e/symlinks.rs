//! End to end: a local origin never serves a file from outside its root,
//! whichever way a symbolic link (or a tag) tries to lead there.
//!
//! Each test puts "secret" files outside the origin (a tagged track, an
//! image), leads to them from inside, and reads every file of the mount:
//! none may have a secret's bytes. Links that stay inside the origin keep
//! working.

use musicfs_core::naming::is_valid_name;
use musicfs_tests::disk::noise;
use musicfs_tests::fixtures::{WavTags, write_wav, write_wav_tagged};
use musicfs_tests::mount::{MountCommand, Mounted};
use musicfs_tests::{files_under, is_listed, sha256_bytes, sha256_file, wait_for};
use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

/// A test's folder: `lib/` is the origin, `outside/` holds the secrets.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let s = Setup {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        write_wav(
            &s.lib("Band/Album/1.wav"),
            200_000,
            1,
            "One",
            "Band",
            "Album",
        );
        write_wav(
            &s.outside("secret.wav"),
            200_000,
            99,
            "Secret",
            "Outsider",
            "Hidden",
        );
        write_wav(
            &s.outside("folder/deep.wav"),
            150_000,
            98,
            "Deep",
            "Outsider",
            "Deeper",
        );
        std::fs::write(s.outside("secret.jpg"), noise(4096, 97)).expect("secret image");
        std::fs::write(s.outside("folder/cover.jpg"), noise(4096, 96)).expect("secret image");
        s
    }

    fn lib(&self, rel: &str) -> PathBuf {
        self.dir.path().join("lib").join(rel)
    }

    fn outside(&self, rel: &str) -> PathBuf {
        let p = self.dir.path().join("outside").join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("outside dir");
        }
        p
    }

    /// The SHA-256 of every file outside the origin.
    fn secrets(&self) -> Vec<String> {
        let root = self.dir.path().join("outside");
        files_under(&root)
            .iter()
            .map(|rel| sha256_file(&root.join(rel)).expect("hash a secret"))
            .collect()
    }

    fn mount(&self) -> Mounted {
        MountCommand::in_dir(Path::new(BIN), self.dir.path()).start(Duration::from_secs(60))
    }
}

/// Reads every file of the mount, returning each one's SHA-256 (or the
/// error its read gave).
fn read_everything(mnt: &Path) -> BTreeMap<PathBuf, Result<String, String>> {
    files_under(mnt)
        .into_iter()
        .map(|rel| {
            let hash = sha256_file(&mnt.join(&rel)).map_err(|e| e.to_string());
            (rel, hash)
        })
        .collect()
}

fn assert_no_secret_served(s: &Setup, mnt: &Path) -> BTreeMap<PathBuf, Result<String, String>> {
    let served = read_everything(mnt);
    let secrets = s.secrets();
    assert!(!secrets.is_empty());
    for (rel, hash) in &served {
        if let Ok(hash) = hash {
            assert!(
                !secrets.contains(hash),
                "{rel:?} in the mount serves a file from outside the origin"
            );
        }
    }
    served
}

fn serves(served: &BTreeMap<PathBuf, Result<String, String>>, hash: &str) -> bool {
    served.values().any(|h| h.as_deref() == Ok(hash))
}

#[test]
fn a_link_to_a_file_outside_the_origin_is_never_served() {
    let s = Setup::new();
    symlink(s.outside("secret.jpg"), s.lib("Band/Album/cover.jpg")).unwrap();
    symlink(s.outside("secret.wav"), s.lib("Band/Album/2.wav")).unwrap();
    symlink("../../../outside/secret.wav", s.lib("Band/Album/3.wav")).unwrap();
    symlink(
        "/proc/self/root/etc/hostname",
        s.lib("Band/Album/front.jpg"),
    )
    .unwrap();
    // Links that stay inside the origin keep working: a relative one and
    // an absolute one, to tracks kept in a hidden folder (not scanned
    // themselves, so each track is reached only through its link).
    write_wav(
        &s.lib(".store/in.wav"),
        120_000,
        5,
        "Linked",
        "Band",
        "Album",
    );
    write_wav(
        &s.lib(".store/abs.wav"),
        120_000,
        6,
        "Absolute",
        "Band",
        "Album",
    );
    symlink("../../.store/in.wav", s.lib("Band/Album/4.wav")).unwrap();
    symlink(s.lib(".store/abs.wav"), s.lib("Band/Album/5.wav")).unwrap();

    let m = s.mount();
    let served = assert_no_secret_served(&s, &m.mountpoint);
    for inside in ["Band/Album/1.wav", ".store/in.wav", ".store/abs.wav"] {
        let hash = sha256_file(&s.lib(inside)).unwrap();
        assert!(serves(&served, &hash), "{inside} is not served: {served:?}");
    }
    assert_eq!(served.len(), 3, "only the three inside tracks: {served:?}");
    let log = m.log_text();
    assert!(
        log.contains("outside its origin"),
        "the refusal is logged:\n{log}"
    );
    assert!(m.stop().success());
}

#[test]
fn a_link_to_a_folder_outside_the_origin_is_never_served() {
    let s = Setup::new();
    symlink(s.outside("folder"), s.lib("Elsewhere")).unwrap();
    symlink(s.outside(""), s.lib("Band/Album/Disc 2")).unwrap();
    let m = s.mount();
    assert_no_secret_served(&s, &m.mountpoint);

    // A link made while mounted goes through the watcher's sync instead:
    // a new track beside it tells when that sync has run.
    symlink(s.outside("folder"), s.lib("Band/Album/Bonus")).unwrap();
    write_wav(
        &s.lib("Band/Album/6.wav"),
        100_000,
        6,
        "Six",
        "Band",
        "Album",
    );
    let six = m.mountpoint.join("Band/Album/00 - Six.wav");
    assert!(
        wait_for(Duration::from_secs(10), || is_listed(&six)),
        "the sync did not run:\n{}",
        m.log_text()
    );
    let served = assert_no_secret_served(&s, &m.mountpoint);
    assert_eq!(served.len(), 2, "{served:?}");
    assert!(m.stop().success());
}

/// The watcher's side of a swap: the sync that sees the links drops both
/// files. (The open's side, a read while the tree still lists a swapped
/// file, is `failpoints::a_link_swapped_in_while_the_tree_still_lists_it_is_refused_at_open`.)
#[test]
fn a_link_swapped_in_after_the_scan_is_never_served() {
    let s = Setup::new();
    std::fs::write(s.lib("Band/Album/cover.jpg"), noise(2048, 7)).unwrap();
    write_wav(
        &s.lib("Band/Album/2.wav"),
        200_000,
        2,
        "Two",
        "Band",
        "Album",
    );
    let m = s.mount();
    let mnt = &m.mountpoint;
    assert!(mnt.join("Band/Album/cover.jpg").exists());
    assert!(mnt.join("Band/Album/00 - Two.wav").exists());

    // Swap both for links out of the origin (each an atomic rename over the
    // file), then add a track: when it shows, the sync that saw the swap
    // has run too.
    for (name, target) in [("cover.jpg", "secret.jpg"), ("2.wav", "secret.wav")] {
        let tmp = s.lib(&format!("Band/Album/{name}.link"));
        symlink(s.outside(target), &tmp).unwrap();
        std::fs::rename(&tmp, s.lib(&format!("Band/Album/{name}"))).unwrap();
    }
    write_wav(
        &s.lib("Band/Album/7.wav"),
        100_000,
        7,
        "Seven",
        "Band",
        "Album",
    );
    let seven = mnt.join("Band/Album/00 - Seven.wav");
    assert!(
        wait_for(Duration::from_secs(10), || is_listed(&seven)),
        "the sync did not run:\n{}",
        m.log_text()
    );
    // The sync that saw the links dropped both files (the kernel is told
    // right after it).
    assert!(
        wait_for(Duration::from_secs(5), || !mnt
            .join("Band/Album/cover.jpg")
            .exists()
            && !mnt.join("Band/Album/00 - Two.wav").exists()),
        "swapped files still listed: {:?}",
        files_under(mnt)
    );
    assert_no_secret_served(&s, mnt);
    assert!(m.stop().success());
}

#[test]
fn dots_in_tags_never_lead_out_of_the_mount() {
    let s = Setup::new();
    let tags = WavTags {
        title: "../../../outside/secret",
        artist: "..",
        album: "../..",
        genre: Some("/etc"),
        year: None,
    };
    write_wav_tagged(&s.lib("dots.wav"), 100_000, 3, &tags);
    let m = s.mount();
    let served = assert_no_secret_served(&s, &m.mountpoint);
    let own = sha256_file(&s.lib("dots.wav")).unwrap();
    let (path, _) = served
        .iter()
        .find(|(_, h)| h.as_deref() == Ok(own.as_str()))
        .unwrap_or_else(|| panic!("the dotted track is not served: {served:?}"));
    for comp in path.components() {
        let Component::Normal(name) = comp else {
            panic!("{path:?} has a {comp:?} component");
        };
        let name = name.to_str().expect("names are UTF-8");
        assert!(is_valid_name(name), "invalid name {name:?} in {path:?}");
    }
    // Its bytes are its own, and nothing outside the mount is reachable
    // from it.
    let full = m.mountpoint.join(path);
    assert_eq!(sha256_bytes(&std::fs::read(&full).unwrap()), own);
    assert!(full.canonicalize().unwrap().starts_with(&m.mountpoint));
    assert!(m.stop().success());
}

/// Tests that configure fail points: `scripts/test` runs only these with
/// the `failpoints` feature (`-- failpoints::`).
#[cfg(feature = "failpoints")]
mod failpoints {
    use super::*;

    /// The read itself refuses a link swapped in after the scan, while the
    /// tree still lists the file: no sync has dropped it (the only sync,
    /// the remount's catch-up, is stopped by the `delta-sync-after-batch`
    /// fail point after its first batch, before its removals). So the bytes
    /// can only be kept out by the open, `openat2(RESOLVE_BENEATH)` from the
    /// origin's root, which the log shows refusing the link.
    #[test]
    fn a_link_swapped_in_while_the_tree_still_lists_it_is_refused_at_open() {
        let s = Setup::new();
        // Over the size of covers the first scan keeps whole (1 MiB).
        std::fs::write(s.lib("Band/Album/cover.jpg"), noise(1_500_000, 7)).unwrap();
        // Longer than the head and tail the first scan keeps: reading it
        // whole needs the origin (the kept bytes are the listed version's
        // own, verified, and may be served).
        write_wav(
            &s.lib("Band/Album/2.wav"),
            3_000_000,
            2,
            "Two",
            "Band",
            "Album",
        );
        let swapped = ["Band/Album/cover.jpg", "Band/Album/00 - Two.wav"];
        let m = s.mount();
        for rel in swapped {
            assert!(m.mountpoint.join(rel).exists(), "{rel}");
        }
        assert!(m.stop().success());

        // While unmounted: both files become links out of the origin (each
        // an atomic rename over the file), and a new track gives the
        // catch-up sync a batch to read, after which the fail point stops it.
        for (name, target) in [("cover.jpg", "secret.jpg"), ("2.wav", "secret.wav")] {
            let tmp = s.lib(&format!("Band/Album/{name}.link"));
            symlink(s.outside(target), &tmp).unwrap();
            std::fs::rename(&tmp, s.lib(&format!("Band/Album/{name}"))).unwrap();
        }
        write_wav(
            &s.lib("Band/Album/7.wav"),
            100_000,
            7,
            "Seven",
            "Band",
            "Album",
        );
        let m = MountCommand::in_dir(Path::new(BIN), s.dir.path())
            .env("FAILPOINTS", "delta-sync-after-batch=return")
            .start(Duration::from_secs(60));
        let mnt = &m.mountpoint;
        assert!(
            wait_for(Duration::from_secs(30), || m
                .log_text()
                .contains("sync failed; will retry later")),
            "the catch-up sync was not stopped:\n{}",
            m.log_text()
        );
        // The tree is the saved one: the swapped files are listed, the new
        // track is not.
        for rel in swapped {
            assert!(is_listed(&mnt.join(rel)), "{rel}: {:?}", files_under(mnt));
        }
        assert!(!is_listed(&mnt.join("Band/Album/00 - Seven.wav")));

        let secrets = s.secrets();
        let refusals = |m: &Mounted| {
            m.log_text()
                .matches("refused to read through a link out of a local origin")
                .count()
        };
        for rel in swapped {
            let before = refusals(&m);
            match std::fs::read(mnt.join(rel)) {
                Ok(bytes) => panic!(
                    "{rel}: {} bytes served through a link out of the origin (a secret: {})",
                    bytes.len(),
                    secrets.contains(&sha256_bytes(&bytes))
                ),
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{rel}: {e}"),
            }
            // The line is logged before the read is answered.
            assert!(
                refusals(&m) > before,
                "{rel}: the read failed, but not at its open:\n{}",
                m.log_text()
            );
        }
        // Still listed (nothing dropped them: the refusal is the open's).
        for rel in swapped {
            assert!(is_listed(&mnt.join(rel)), "{rel}");
        }
        assert_no_secret_served(&s, mnt);
        assert!(m.stop().success());
    }
}
