//! End to end with a real music server: MPD scans and plays through the
//! mount, and is told of changes (`--notify-mpd`); `--on-change` runs a
//! command per batch of changes; the kernel tells inotify watchers on the
//! mount of deletions.

use musicfs_tests::corpus::Library;
use musicfs_tests::mount::{MountCommand, Mounted};
use musicfs_tests::mpd::Mpd;
use musicfs_tests::{files_under, sha256_file, wait_for};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

struct Setup {
    dir: tempfile::TempDir,
    lib: Library,
}

impl Setup {
    fn new(args: &[&str]) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let lib = Library::generate(dir.path(), args);
        Setup { dir, lib }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn mnt(&self) -> PathBuf {
        self.path("mnt")
    }

    fn mount(&self, extra: &[String]) -> Mounted {
        MountCommand::in_dir(Path::new(BIN), self.dir.path())
            .args(extra)
            .start(Duration::from_secs(120))
    }
}

/// How many times each tag line occurs.
fn counted(songs: &[(String, String)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, tags) in songs {
        *out.entry(tags.clone()).or_insert(0) += 1;
    }
    out
}

#[test]
fn mpd_scans_the_mount_as_it_scans_the_origin_and_plays_through_it() {
    let s = Setup::new(&[
        "--tracks",
        "40",
        "--seed",
        "11",
        "--seconds",
        "6",
        "--edge-cases",
    ]);
    let m = s.mount(&[]);
    let origin_mpd = Mpd::start(&s.lib.root, &s.path("mpd-origin"));
    let mount_mpd = Mpd::start(&s.mnt(), &s.path("mpd-mount"));
    origin_mpd.update();
    mount_mpd.update();
    let (origin, mount) = (origin_mpd.songs(), mount_mpd.songs());
    assert!(
        origin.len() >= 40,
        "MPD found {} songs in the origin",
        origin.len()
    );

    // What honestly differs: files MPD lists but MusicFS does not show.
    // - Unreadable files: MusicFS shows a file only if its tags can be read
    //   (lofty); the generator's "broken" files (truncated, zero bytes, not
    //   audio at all) are left out, while MPD lists some of them anyway
    //   (seen: `odd/empty.flac`, zero bytes, no tags).
    // - Hidden files (a name starting with '.'): MusicFS skips them, MPD
    //   lists them (seen: `odd/.hidden.flac`).
    // Every song only MPD-on-the-origin has must be one of those; nothing
    // else may differ, in either direction.
    let hidden = |p: &str| p.split('/').any(|c| c.starts_with('.'));
    let broken: Vec<&str> = s
        .lib
        .manifest
        .iter()
        .filter(|e| e.kind == "broken" || hidden(&e.path))
        .map(|e| e.path.as_str())
        .collect();
    let (o, mnt) = (counted(&origin), counted(&mount));
    for (tags, n) in &mnt {
        assert_eq!(
            o.get(tags),
            Some(n),
            "the mount has {n} songs tagged {tags:?}, the origin a different number"
        );
    }
    let only_origin: Vec<&String> = origin
        .iter()
        .filter(|(_, tags)| o.get(tags) != mnt.get(tags))
        .map(|(file, _)| file)
        .collect();
    for file in &only_origin {
        assert!(
            broken.contains(&file.as_str()),
            "{file} is in MPD's scan of the origin but not of the mount, and is neither broken nor hidden"
        );
    }
    println!(
        "MPD: {} songs in the origin, {} in the mount; only in the origin (broken or hidden files): {:?}",
        origin.len(),
        mount.len(),
        only_origin
    );
    // Artists and albums: the same lists.
    for tag in ["artist", "album", "albumartist"] {
        assert_eq!(
            origin_mpd.mpc(&["list", tag]),
            mount_mpd.mpc(&["list", tag]),
            "MPD's {tag} lists differ"
        );
    }

    // It plays a track through the mount: elapsed time advances.
    let (file, _) = &mount[0];
    mount_mpd.mpc(&["add", file]);
    mount_mpd.mpc(&["play"]);
    let played = wait_for(Duration::from_secs(20), || {
        let status = mount_mpd.mpc(&["status", "%currenttime% %state%"]);
        status.starts_with("0:0") && !status.starts_with("0:00") && status.contains("playing")
    });
    assert!(
        played,
        "MPD did not play {file} through the mount: {}\n{}",
        mount_mpd.mpc(&["status"]),
        mount_mpd.log()
    );
    drop(mount_mpd);
    assert!(m.stop().success());
}

/// Copies a track of a second generated library into the origin at
/// `stem` plus its extension; returns its SHA-256 and its origin path.
fn add_track(s: &Setup, extra: &Library, stem: &str) -> (String, String) {
    let track = extra
        .manifest
        .iter()
        .find(|e| e.kind == "track")
        .expect("a track in the second library");
    let ext = Path::new(&track.path)
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rel = format!("{stem}.{ext}");
    let to = s.lib.root.join(&rel);
    std::fs::create_dir_all(to.parent().expect("a folder")).unwrap();
    // Copied beside, then renamed in: the watcher sees one whole file.
    let tmp = s.lib.root.join(".incoming.tmp");
    std::fs::copy(extra.root.join(&track.path), &tmp).unwrap();
    std::fs::rename(&tmp, &to).unwrap();
    (track.sha256.clone(), rel)
}

/// The mount's path of the file with this SHA-256, once it shows.
fn wait_shown(mnt: &Path, sha: &str) -> Option<PathBuf> {
    let mut found = None;
    wait_for(Duration::from_secs(20), || {
        found = files_under(mnt)
            .into_iter()
            .find(|p| sha256_file(&mnt.join(p)).is_ok_and(|h| h == sha));
        found.is_some()
    });
    found
}

#[test]
fn a_track_added_or_removed_at_the_origin_reaches_mpd_without_a_rescan() {
    let s = Setup::new(&["--tracks", "12", "--seed", "12"]);
    let extra = Library::generate(&s.path("extra"), &["--tracks", "3", "--seed", "99"]);
    std::fs::create_dir_all(s.mnt()).unwrap();
    let mpd = Mpd::start(&s.mnt(), &s.path("mpd"));
    let m = s.mount(&["--notify-mpd".into(), format!("127.0.0.1:{}", mpd.port)]);
    mpd.update();
    let before = mpd.songs().len();
    assert!(before >= 12, "{before}");

    let added_at = Instant::now();
    let (sha, rel) = add_track(&s, &extra, "new/one");
    let shown = wait_shown(&s.mnt(), &sha).expect("the new track shows in the mount");
    let shown = shown.to_string_lossy().into_owned();
    let in_mpd = |file: &str| mpd.songs().iter().any(|(f, _)| f == file);
    assert!(
        wait_for(Duration::from_secs(15), || in_mpd(&shown)),
        "MPD was not told of {shown}:\n{}\n{}",
        m.log_text(),
        mpd.log()
    );
    println!(
        "a track added to the origin was in MPD's database {} ms later, no rescan asked",
        added_at.elapsed().as_millis()
    );
    assert_eq!(mpd.songs().len(), before + 1);
    assert!(
        m.log_text().contains("MPD told to update"),
        "{}",
        m.log_text()
    );

    std::fs::remove_file(s.lib.root.join(&rel)).unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || !in_mpd(&shown)),
        "MPD still lists {shown} after it left the origin"
    );
    assert_eq!(mpd.songs().len(), before);
    assert!(m.stop().success());
}

#[test]
fn on_change_runs_one_command_at_a_time_with_the_changed_folders() {
    let s = Setup::new(&["--tracks", "8", "--seed", "13"]);
    let extra = Library::generate(&s.path("extra"), &["--tracks", "3", "--seed", "98"]);
    let log = s.path("on-change.log");
    // Each run writes "start", its arguments, sleeps, then "end": runs that
    // overlapped would interleave.
    let command = format!(
        "log={}; echo start >> $log; printf 'arg %s\\n' \"$@\" >> $log; sleep 1; echo end >> $log",
        log.display()
    );
    let m = s.mount(&["--on-change".into(), command]);
    let (sha, rel) = add_track(&s, &extra, "new/one");
    let shown = wait_shown(&s.mnt(), &sha).expect("the new track shows");
    let folder = s.mnt().join(shown.parent().expect("in a folder"));
    // The new track's folder, or the folder above it if that one is new
    // too (an artist never seen before): looking there finds it.
    let ran = |want: &Path| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("arg "))
            .any(|arg| want.starts_with(arg) && Path::new(arg) != s.mnt())
    };
    assert!(
        wait_for(Duration::from_secs(15), || ran(&folder)),
        "--on-change was not run with {}:\n{}\n{}",
        folder.display(),
        std::fs::read_to_string(&log).unwrap_or_default(),
        m.log_text()
    );
    // Changes while a run sleeps: batched into later runs, never two at once.
    for n in 0..3 {
        let ext = Path::new(&rel).extension().unwrap_or_default();
        let copy = s.lib.root.join(format!("new/copy-{n}")).with_extension(ext);
        std::fs::copy(s.lib.root.join(&rel), copy).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    std::fs::remove_file(s.lib.root.join(&rel)).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.matches("start").count() >= 2
                && text.matches("start").count() == text.matches("end").count()
        }),
        "{}",
        m.log_text()
    );
    std::thread::sleep(Duration::from_secs(3));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut open = false;
    for line in text.lines() {
        match line {
            "start" => {
                assert!(!open, "two --on-change runs overlapped:\n{text}");
                open = true;
            }
            "end" => open = false,
            _ => assert!(line.starts_with("arg /"), "{line}"),
        }
    }
    assert!(
        m.log_text().contains("--on-change command ran"),
        "{}",
        m.log_text()
    );
    assert!(m.stop().success());
}

/// Waits up to `timeout` for an inotify event with `mask` on `dir`.
fn inotify_sees(dir: &Path, mask: u32, act: impl FnOnce(), timeout: Duration) -> bool {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain syscalls on a descriptor we own; the buffer outlives
    // the read; the descriptor is closed below.
    unsafe {
        let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
        assert!(fd >= 0, "inotify_init1");
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        let wd = libc::inotify_add_watch(fd, path.as_ptr(), mask);
        assert!(wd >= 0, "inotify_add_watch on {}", dir.display());
        act();
        let deadline = Instant::now() + timeout;
        let mut seen = false;
        let mut buf = [0u8; 4096];
        while !seen && Instant::now() < deadline {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n > 0 {
                let mut off = 0usize;
                while off + std::mem::size_of::<libc::inotify_event>() <= n as usize {
                    let ev = &*(buf.as_ptr().add(off) as *const libc::inotify_event);
                    seen |= ev.mask & mask != 0;
                    off += std::mem::size_of::<libc::inotify_event>() + ev.len as usize;
                }
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        libc::close(fd);
        seen
    }
}

#[test]
fn an_inotify_watcher_on_the_mount_sees_a_track_removed_at_the_origin() {
    let s = Setup::new(&["--tracks", "6", "--seed", "14"]);
    let m = s.mount(&[]);
    let mut tracks = s.lib.manifest.iter().filter(|e| e.kind == "track");
    let (first, second) = (tracks.next().expect("a track"), tracks.next().expect("two"));
    // A watch on the track itself: FUSE_NOTIFY_DELETE unlinks it in the
    // kernel, which tells its watchers IN_DELETE_SELF.
    let shown = wait_shown(&s.mnt(), &first.sha256).expect("shown");
    let file_told = inotify_sees(
        &s.mnt().join(&shown),
        libc::IN_DELETE_SELF,
        || std::fs::remove_file(s.lib.root.join(&first.path)).unwrap(),
        Duration::from_secs(15),
    );
    assert!(
        file_told,
        "no IN_DELETE_SELF on {} when it left the origin:\n{}",
        shown.display(),
        m.log_text()
    );
    assert!(!s.mnt().join(&shown).exists());
    // A watch on its folder: the kernel sends IN_DELETE only for unlinks
    // made through the VFS, not for a FUSE delete notice (Linux 6.18);
    // the answer is printed, and written in the README.
    let shown = wait_shown(&s.mnt(), &second.sha256).expect("shown");
    let folder = s.mnt().join(shown.parent().expect("in a folder"));
    let folder_told = inotify_sees(
        &folder,
        libc::IN_DELETE,
        || std::fs::remove_file(s.lib.root.join(&second.path)).unwrap(),
        Duration::from_secs(10),
    );
    println!(
        "inotify on a folder of the mount, track removed at the origin: IN_DELETE {}",
        if folder_told { "seen" } else { "not seen" }
    );
    assert!(!s.mnt().join(&shown).exists());
    assert!(m.stop().success());
}
