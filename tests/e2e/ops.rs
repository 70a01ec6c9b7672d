//! End to end, on real mounts: what an operator needs (issue 13): owner,
//! group and umask; the mount type `fuse.musicfs`; `musicfs status` of a
//! mount run by a normal user; `--log-file` and SIGHUP; Prometheus metrics.

use musicfs_tests::fixtures::write_wav;
use musicfs_tests::mount::{MountCommand, NOBODY, as_nobody, control_ok, is_mounted, run_as};
use musicfs_tests::wait_for;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A library of three small tracks in `lib/`, in a folder everyone may
    /// read (a daemon run by another user needs to).
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let lib = dir.path().join("lib");
        write_wav(&lib.join("a.wav"), 200_000, 1, "One", "Artist A", "Album X");
        write_wav(&lib.join("b.wav"), 200_000, 2, "Two", "Artist A", "Album X");
        write_wav(
            &lib.join("c/d.wav"),
            300_000,
            3,
            "Three",
            "Artist B",
            "Album Y",
        );
        Fixture { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn mnt(&self) -> PathBuf {
        self.path("mnt")
    }
    fn command(&self) -> MountCommand {
        MountCommand::in_dir(Path::new(BIN), self.dir.path())
    }
    /// `musicfs mount` with `args`, expected to fail before mounting.
    fn mount_fails(&self, args: &[&str]) -> Output {
        std::fs::create_dir_all(self.mnt()).expect("mnt");
        let out = Command::new(BIN)
            .arg("mount")
            .arg("--origin")
            .arg(self.path("lib"))
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .args(args)
            .arg(self.mnt())
            .output()
            .expect("musicfs runs");
        assert!(!is_mounted(&self.mnt()), "{args:?} mounted");
        out
    }
}

impl Fixture {
    /// A second mount of the library, on `mnt2` with the cache `cache2`,
    /// expected to fail.
    fn mount_fails_elsewhere(&self, args: &[&str]) -> Output {
        std::fs::create_dir_all(self.path("mnt2")).expect("mnt2");
        let out = Command::new(BIN)
            .arg("mount")
            .arg("--origin")
            .arg(self.path("lib"))
            .arg("--cache-dir")
            .arg(self.path("cache2"))
            .args(args)
            .arg(self.path("mnt2"))
            .output()
            .expect("musicfs runs");
        assert!(!is_mounted(&self.path("mnt2")), "{args:?} mounted");
        out
    }
}

/// Every file and folder under `root` (folders first), with `root` itself.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .map(|e| e.expect("entry").path())
                .collect();
            entries.sort();
            out.extend(entries);
        }
        i += 1;
    }
    out
}

/// Checks that every node under the mount shows `uid:gid`, folders with
/// `dir_mode` and files with `file_mode`; returns the files.
fn assert_owned(mnt: &Path, uid: u32, gid: u32, dir_mode: u32, file_mode: u32) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in walk(mnt) {
        let meta = std::fs::symlink_metadata(&p).expect("stat");
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{}", p.display());
        let want = if meta.is_dir() { dir_mode } else { file_mode };
        assert_eq!(
            meta.mode() & 0o7777,
            want,
            "{}: mode {:o}",
            p.display(),
            meta.mode() & 0o7777
        );
        if meta.is_file() {
            files.push(p);
        }
    }
    assert_eq!(files.len(), 3, "the three tracks: {files:?}");
    files
}

#[test]
fn uid_gid_and_umask_show_on_every_file_and_folder() {
    let fx = Fixture::new();
    let m = fx
        .command()
        .args(["--uid", "1234", "--gid", "2345", "--umask", "027"])
        .start(MOUNT_TIMEOUT);
    let files = assert_owned(&m.mountpoint, 1234, 2345, 0o550, 0o440);
    // The bytes are the origin's, and writing is still refused.
    let data = std::fs::read(&files[0]).expect("read through the mount");
    assert!(data.len() > 100_000, "{} bytes", data.len());
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(&files[0])
        .expect_err("a read-only mount");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert!(m.stop().success());
}

#[test]
fn without_options_the_daemons_user_owns_everything() {
    let fx = Fixture::new();
    let m = fx.command().start(MOUNT_TIMEOUT);
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_owned(&m.mountpoint, uid, gid, 0o555, 0o444);
    assert!(m.stop().success());
}

#[test]
fn uid_gid_and_umask_keys_in_the_config_file() {
    let fx = Fixture::new();
    let config = fx.path("musicfs.toml");
    std::fs::write(&config, "uid = 1234\ngid = \"2345\"\numask = \"077\"\n").expect("config");
    let m = fx
        .command()
        .args(["--config".as_ref(), config.as_os_str()])
        .start(MOUNT_TIMEOUT);
    assert_owned(&m.mountpoint, 1234, 2345, 0o500, 0o400);
    assert!(m.stop().success());
}

#[test]
fn bad_values_are_usage_errors() {
    let fx = Fixture::new();
    for (args, says) in [
        (&["--uid=-5"][..], "'-5' is not a user id"),
        (&["--uid", "4294967295"], "is not a user id"),
        (&["--gid", "staff"], "'staff' is not a group id"),
        (&["--umask", "088"], "'088' is not a umask"),
        (&["--umask", "1777"], "is not a umask"),
        (&["--metrics-addr", "nowhere:80"], "HOST:PORT"),
        (
            &["--log-file", "/nonexistent/dir/musicfs.log"],
            "cannot open the log file '/nonexistent/dir/musicfs.log': its directory does not exist",
        ),
    ] {
        let out = fx.mount_fails(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
    let config = fx.path("bad.toml");
    std::fs::write(&config, "umask = 27\n").expect("config");
    let out = fx.mount_fails(&["--config", config.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 1") && stderr.contains("string of octal digits"),
        "{stderr}"
    );
}

/// The mountinfo line of the mount at `mnt`: (type, source, super options).
fn mountinfo(mnt: &Path) -> Option<(String, String, String)> {
    let target = mnt.to_string_lossy().replace(' ', "\\040");
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(target.as_str()))
        .and_then(|l| {
            let (_, right) = l.split_once(" - ")?;
            let mut f = right.split(' ');
            Some((
                f.next()?.to_owned(),
                f.next()?.to_owned(),
                f.next()?.to_owned(),
            ))
        })
}

#[test]
fn the_mount_is_of_type_fuse_musicfs() {
    let fx = Fixture::new();
    let mut m = fx.command().start(MOUNT_TIMEOUT);
    let (fstype, source, options) = mountinfo(&m.mountpoint).expect("in the mount table");
    assert_eq!(fstype, "fuse.musicfs");
    assert!(source.starts_with("musicfs:"), "{source}");
    assert!(
        options.contains("user_id=0") && options.contains("default_permissions"),
        "{options}"
    );
    let findmnt = Command::new("findmnt")
        .args(["-n", "-o", "TARGET", "-t", "fuse.musicfs"])
        .output();
    if let Ok(out) = findmnt {
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            listed
                .lines()
                .any(|l| Path::new(l.trim()) == m.mountpoint.as_path()),
            "findmnt -t fuse.musicfs: {listed}"
        );
    }
    // A dead mount of this type is found and cleaned up by the next mount.
    m.signal(libc::SIGKILL);
    assert!(m.wait_exit(Duration::from_secs(20)).is_some());
    assert_eq!(
        mountinfo(&m.mountpoint).map(|t| t.0).as_deref(),
        Some("fuse.musicfs"),
        "a killed daemon leaves its (dead) mount"
    );
    // (`dead` would lazily unmount it when dropped: kept until the end.)
    let dead = m;
    let mut m = MountCommand::new(
        Path::new(BIN),
        &[&fx.path("lib")],
        &fx.path("cache"),
        &fx.mnt(),
        &fx.path("log2"),
    )
    .start(MOUNT_TIMEOUT);
    assert!(
        m.log_text().contains("found a stale mount"),
        "{}",
        m.log_text()
    );
    // `musicfs unmount` knows it as a MusicFS mount.
    control_ok(Path::new(BIN), &["unmount"], &m.mountpoint);
    let status = m.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&fx.mnt()));
    drop(dead);
}

#[test]
fn the_log_file_is_reopened_on_sighup_and_loses_no_line() {
    let fx = Fixture::new();
    let log = fx.path("musicfs.log");
    let m = fx.command().log_file(&log).start(MOUNT_TIMEOUT);
    let stderr = std::fs::read_to_string(fx.path("musicfs.log.stderr")).unwrap_or_default();
    assert!(!stderr.contains("mounted"), "logs go to the file: {stderr}");
    // logrotate: move the file, then SIGHUP.
    let rotated = fx.path("musicfs.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    m.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(20), || m
            .log_text()
            .contains("log file reopened")),
        "no reopen; old file:\n{}",
        std::fs::read_to_string(&rotated).unwrap_or_default()
    );
    control_ok(Path::new(BIN), &["rescan"], &m.mountpoint);
    let old = std::fs::read_to_string(&rotated).expect("old log");
    assert!(m.log_text().contains("rescan asked"), "{}", m.log_text());
    assert!(old.contains(" mounted mountpoint="), "{old}");
    assert!(!old.contains("rescan asked"), "{old}");
    // Still serving: SIGHUP with a log file does not stop the daemon.
    assert!(is_mounted(&m.mountpoint));
    assert_eq!(
        walk(&m.mountpoint).len(),
        1 + 2 + 2 + 3,
        "root, 2 artists, 2 albums, 3 tracks"
    );
    let log_path = m.log.clone();
    assert!(m.stop().success());
    let new = std::fs::read_to_string(&log_path).expect("new log");
    assert!(new.contains("unmounted; bye"), "{new}");
}

#[test]
fn sighup_without_a_log_file_stops_cleanly() {
    let fx = Fixture::new();
    let mut m = fx.command().start(MOUNT_TIMEOUT);
    m.signal(libc::SIGHUP);
    let status = m.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(status.success(), "{status}\n{}", m.log_text());
    assert!(!is_mounted(&fx.mnt()));
    assert!(m.log_text().contains("signal=\"SIGHUP\"") || m.log_text().contains("signal=SIGHUP"));
}

/// What a terminal shows of `raw`, line by line: within each line (split
/// at `\n`), `\r` goes back to its start, `ESC[2K` erases it and `ESC[K`
/// erases to its end; other escape sequences (colours, the cursor) draw
/// nothing. Enough for indicatif's single-line bar and tracing's colours.
fn screen_lines(raw: &str) -> Vec<String> {
    raw.split('\n')
        .map(|line| {
            let mut cells: Vec<char> = Vec::new();
            let mut col = 0;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\r' => col = 0,
                    '\x1b' if chars.peek() == Some(&'[') => {
                        chars.next();
                        let mut params = String::new();
                        let mut fin = None;
                        for c in chars.by_ref() {
                            if ('\x40'..='\x7e').contains(&c) {
                                fin = Some(c);
                                break;
                            }
                            params.push(c);
                        }
                        match (fin, params.as_str()) {
                            (Some('K'), "2") => cells.clear(),
                            (Some('K'), "" | "0") => cells.truncate(col),
                            _ => {}
                        }
                    }
                    '\x1b' => {
                        chars.next();
                    }
                    c => {
                        while cells.len() < col {
                            cells.push(' ');
                        }
                        if col < cells.len() {
                            cells[col] = c;
                        } else {
                            cells.push(c);
                        }
                        col += 1;
                    }
                }
            }
            cells.into_iter().collect::<String>().trim_end().to_owned()
        })
        .collect()
}

/// The first scan on a terminal (under `script`, which gives the daemon a
/// pty): the progress bar is drawn, and each warning logged while it is
/// up (an unreadable audio file) shows on a line of its own, whole, with
/// no piece of the bar on it.
#[test]
fn scan_warnings_print_whole_lines_above_the_progress_bar() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Enough small tracks for a scan the bar is drawn during, with broken
    // ones among them all along.
    let mut broken = Vec::new();
    for album in 0..40 {
        for t in 0..40 {
            write_wav(
                &d.join(format!("lib/{album:02}/{t:02}.wav")),
                2_000,
                (album * 100 + t) as u64,
                &format!("T{t}"),
                "Artist",
                &format!("Album {album}"),
            );
        }
        if album % 4 == 3 {
            let path = d.join(format!("lib/{album:02}/broken.mp3"));
            std::fs::write(&path, musicfs_tests::disk::noise(3_000, album as u64)).unwrap();
            broken.push(path);
        }
    }
    std::fs::create_dir_all(d.join("mnt")).unwrap();
    let quote = |p: &Path| format!("'{}'", p.display());
    let cmd = format!(
        "{} mount --origin {} --cache-dir {} {}",
        quote(Path::new(BIN)),
        quote(&d.join("lib")),
        quote(&d.join("cache")),
        quote(&d.join("mnt")),
    );
    let out = std::fs::File::create(d.join("tty")).unwrap();
    let mut script = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env_remove("RUST_LOG")
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::piped())
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("script(1) runs (util-linux)");
    let tty = || std::fs::read_to_string(d.join("tty")).unwrap_or_default();
    let up = wait_for(MOUNT_TIMEOUT, || {
        screen_lines(&tty())
            .iter()
            .any(|l| l.contains(" mounted mountpoint="))
    });
    if up {
        control_ok(Path::new(BIN), &["unmount"], &d.join("mnt"));
    }
    let exited = wait_for(Duration::from_secs(30), || {
        script.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = script.kill();
    }
    let raw = tty();
    assert!(up && exited, "{raw}");
    // The bar: "⠁ scanning 120/1610 files  ..." (the log's "scanning a new
    // origin" line is no bar).
    let first_bar = raw
        .match_indices("scanning ")
        .map(|(at, _)| at)
        .find(|&at| raw[at + 9..].starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("the bar was never drawn: {raw:?}"));
    let lines = screen_lines(&raw);
    for path in &broken {
        let shown = path.display().to_string();
        let warned: Vec<&String> = lines.iter().filter(|l| l.contains(&shown)).collect();
        assert_eq!(warned.len(), 1, "{shown}: {warned:#?}\n{raw:?}");
        let line = warned[0];
        assert!(
            line.contains("WARN") && line.contains(&format!("unreadable audio file {shown}: ")),
            "{line:?}"
        );
        // Whole and alone: it starts as every log line does (the
        // timestamp), and no piece of the bar is on it.
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "torn at its start: {line:?}"
        );
        assert!(
            !line.contains(" files ") && !line.contains("files/s") && !line.contains("ETA"),
            "the bar is on the line: {line:?}"
        );
    }
    // At least one warning came while the bar was up.
    let last_warning = raw.rfind("unreadable audio file").unwrap();
    assert!(first_bar < last_warning, "{raw:?}");
}

#[test]
fn status_of_a_mount_run_by_a_normal_user() {
    let fx = Fixture::new();
    // A copy of the binary the other users can run, and a wrapper that
    // runs it as nobody.
    let wrapper = as_nobody(Path::new(BIN), fx.dir.path(), &[fx.path("cache"), fx.mnt()]);
    let bin = fx.path("bin/musicfs");
    let m = MountCommand::in_dir(&wrapper, fx.dir.path())
        .env("XDG_RUNTIME_DIR", "")
        .start(MOUNT_TIMEOUT);
    let (fstype, _, options) = mountinfo(&m.mountpoint).expect("mounted");
    assert_eq!(fstype, "fuse.musicfs", "through fusermount3 too");
    assert!(options.contains(&format!("user_id={NOBODY}")), "{options}");

    let mnt = m.mountpoint.as_os_str();
    // Root finds it (in /tmp/musicfs-65534, from user_id= in the mount table).
    let out = Command::new(BIN)
        .args(["status".as_ref(), mnt])
        .env("XDG_RUNTIME_DIR", "")
        .output()
        .expect("status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&m.mountpoint.display().to_string()) && stdout.contains("serving"),
        "{stdout}"
    );
    // So does its own user.
    let out = run_as(NOBODY, &bin, [OsStr::new("status"), mnt]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another user is told whose it is.
    let out = run_as(4321, &bin, [OsStr::new("status"), mnt]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the mount at '{}' is run by another user (uid {NOBODY}); run status as that user or root",
            m.mountpoint.display()
        )),
        "{stderr}"
    );
    // With its socket gone, status says so.
    let socket = PathBuf::from(format!("/tmp/musicfs-{NOBODY}"))
        .join(musicfs::service::control::socket_name(&m.mountpoint));
    let hidden = socket.with_extension("hidden");
    std::fs::rename(&socket, &hidden).expect("the socket is where status looked");
    let out = Command::new(BIN)
        .args(["status".as_ref(), mnt])
        .env("XDG_RUNTIME_DIR", "")
        .output()
        .expect("status");
    std::fs::rename(&hidden, &socket).expect("put back");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("(run by uid {NOBODY}) has no control socket")),
        "{stderr}"
    );
    // And a folder that is no mount.
    let out = Command::new(BIN)
        .args(["status".as_ref(), fx.path("lib").as_os_str()])
        .output()
        .expect("status");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("there is no MusicFS mount at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(m.stop().success());
    assert!(!is_mounted(&fx.mnt()));
}

/// `GET path` from `addr` with a plain TCP client: (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The samples of a text exposition: series (name and labels) to value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sample(all: &BTreeMap<String, f64>, series: &str) -> f64 {
    *all.get(series)
        .unwrap_or_else(|| panic!("no {series} in:\n{all:#?}"))
}

#[test]
fn metrics_count_reads_fetches_syncs_and_the_cache() {
    let fx = Fixture::new();
    // Longer than the head and tail the first scan keeps, so reading it
    // asks the origin for the rest.
    write_wav(
        &fx.path("lib/long.wav"),
        2_000_000,
        4,
        "Long",
        "Artist C",
        "Album Z",
    );
    // fill=inline: the reads below wait for the fetches that cache their
    // bytes, as every remote origin's do, so the first pass is counted as
    // fetches and the reads as cache reads at once.
    let m = MountCommand::in_dir_with(Path::new(BIN), fx.dir.path(), ",fill=inline")
        .args(["--metrics-addr", "127.0.0.1:0"])
        .start(MOUNT_TIMEOUT);
    // Port 0: the daemon picked one; status says which.
    let status = control_ok(Path::new(BIN), &["status", "--json"], &m.mountpoint);
    let doc: serde_json::Value = serde_json::from_str(&status).expect("json");
    let url = doc["metrics"]
        .as_str()
        .expect("status names the metrics URL");
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .expect("http://ADDR/metrics")
        .to_owned();
    assert!(
        control_ok(Path::new(BIN), &["status"], &m.mountpoint).contains(url),
        "the text status shows it too"
    );

    let (line, body) = http_get(&addr, "/metrics");
    assert!(line.contains("200"), "{line}");
    let before = samples(&body);
    assert_eq!(sample(&before, "musicfs_tracks"), 4.0);
    assert_eq!(
        sample(&before, "musicfs_cache_capacity_bytes"),
        (10u64 << 30) as f64
    );
    assert_eq!(
        sample(&before, "musicfs_origin_requests_total{origin=\"0\"}"),
        0.0
    );
    let states: f64 = ["healthy", "degraded", "unhealthy"]
        .iter()
        .map(|s| {
            sample(
                &before,
                &format!("musicfs_origin_health{{origin=\"0\",state=\"{s}\"}}"),
            )
        })
        .sum();
    assert_eq!(states, 1.0, "one health state at a time");

    // Read every track twice: the first reads fetch, the second hit the cache.
    let files: Vec<PathBuf> = walk(&m.mountpoint)
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    let mut total = 0u64;
    for f in &files {
        total += std::fs::read(f).expect("read").len() as u64;
    }
    control_ok(Path::new(BIN), &["rescan"], &m.mountpoint);
    let first = samples(&http_get(&addr, "/metrics").1);
    let fetches = sample(&first, "musicfs_origin_requests_total{origin=\"0\"}");
    assert!(fetches >= 1.0, "{first:#?}");
    // Every byte came from the origin at most once; the heads and tails
    // the first scan kept did not come again.
    let fetched = sample(&first, "musicfs_origin_fetch_bytes_total{origin=\"0\"}");
    assert!(
        fetched > 0.0 && fetched <= total as f64,
        "{fetched} bytes fetched of {total} read: {first:#?}"
    );
    assert_eq!(
        sample(
            &first,
            "musicfs_origin_request_duration_seconds_count{origin=\"0\"}"
        ),
        fetches,
        "one latency per request"
    );
    // Bytes reach the kernel as answers to its reads, or handed to its
    // page cache ahead of them (a tag scan's read-ahead, files whose reads
    // then never come).
    let answered = sample(&first, "musicfs_read_cache_bytes_total");
    let primed = sample(&first, "musicfs_pages_primed_bytes_total");
    assert!(
        answered + primed >= total as f64,
        "{answered} + {primed} of {total}"
    );
    assert!(sample(&first, "musicfs_reads_total{result=\"cache\"}") >= 1.0);
    assert!(sample(&first, "musicfs_cache_size_bytes") >= total as f64);
    assert!(sample(&first, "musicfs_sync_runs_total{origin=\"0\"}") >= 1.0);
    assert_eq!(
        sample(&first, "musicfs_reads_total{result=\"failed\"}"),
        0.0
    );
    assert_eq!(sample(&first, "musicfs_pinned_files"), 0.0);

    // Again: answered by the kernel's page cache or by the chunk cache,
    // never by a new fetch.
    for f in &files {
        std::fs::read(f).expect("read");
    }
    let second = samples(&http_get(&addr, "/metrics").1);
    assert_eq!(
        sample(&second, "musicfs_origin_requests_total{origin=\"0\"}"),
        fetches,
        "no new fetch: the bytes are cached"
    );
    let (line, _) = http_get(&addr, "/nothing");
    assert!(line.contains("404"), "{line}");

    // The same address for another mount: taken, so that mount fails.
    let out = fx.mount_fails_elsewhere(&["--metrics-addr", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve metrics on {addr}")),
        "{stderr}"
    );
    assert!(m.stop().success());
}
