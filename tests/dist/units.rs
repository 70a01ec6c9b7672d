//! What ships in dist/ works (issue "Run for months under systemd"): the
//! systemd units keep the mount visible and supervised and pass
//! `systemd-analyze verify`, their privileges suffice to mount, the example
//! config is valid, `musicfs mount --config` mounts, and the mount(8) helper
//! mounts for real, from the command line and from an fstab line.
//!
//! Real mounts need /dev/fuse and root, like the other end-to-end tests.

use musicfs_tests::fixtures::write_wav;
use musicfs_tests::mount::{Mounted, is_mounted};
use musicfs_tests::{sha256_file, wait_for};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
const TRACK: &str = "Band/Record/00 - Song.wav";

fn dist(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// --- The unit files ---------------------------------------------------------

/// A unit file's `[Service]` (etc.) settings: section -> key -> values, in
/// order (a key may repeat).
struct Unit {
    settings: BTreeMap<(String, String), Vec<String>>,
}

impl Unit {
    fn parse(text: &str) -> Unit {
        let mut section = String::new();
        let mut settings: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            assert!(!line.ends_with('\\'), "no continuation lines: {line}");
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("bad line {line}"));
            settings
                .entry((section.clone(), key.trim().to_owned()))
                .or_default()
                .push(value.trim().to_owned());
        }
        Unit { settings }
    }
    fn all(&self, key: &str) -> Vec<String> {
        self.settings
            .iter()
            .filter(|((_, k), _)| k == key)
            .flat_map(|(_, v)| v.clone())
            .collect()
    }
    fn one(&self, key: &str) -> String {
        let all = self.all(key);
        assert_eq!(all.len(), 1, "{key}= should be set once: {all:?}");
        all[0].clone()
    }
}

/// Settings that give the service a private mount namespace, which would
/// hide the FUSE mount from every other process (systemd.exec(5), and
/// exec_needs_mount_namespace() in systemd's execute.c).
const NAMESPACE_SETTINGS: &[&str] = &[
    "PrivateMounts",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateIPC",
    "IPCNamespacePath",
    "PrivateNetwork",
    "NetworkNamespacePath",
    "PrivateUsers",
    "ProtectSystem",
    "ProtectHome",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "BindPaths",
    "BindReadOnlyPaths",
    "TemporaryFileSystem",
    "MountFlags",
    "MountAPIVFS",
    "RootDirectory",
    "RootImage",
    "MountImages",
    "ExtensionImages",
    "ExtensionDirectories",
    "LogNamespace",
    "DynamicUser",
    // Older names of the *Paths= settings.
    "ReadWriteDirectories",
    "ReadOnlyDirectories",
    "InaccessibleDirectories",
];

fn check_unit(file: &str, instance: Option<(&str, &str)>) -> Unit {
    let unit = Unit::parse(&read(&dist(file)));
    let expand = |s: String| match instance {
        Some((i, f)) => s.replace("%i", i).replace("%f", f),
        None => s,
    };
    for key in NAMESPACE_SETTINGS {
        assert!(
            unit.all(key).is_empty(),
            "{file}: {key}= gives the daemon a private mount namespace, so nobody else would see the mount"
        );
    }
    assert_eq!(unit.one("Type"), "notify", "{file}");
    assert_eq!(unit.one("NotifyAccess"), "main", "{file}");
    assert_eq!(unit.one("WatchdogSec"), "30", "{file}");
    assert_eq!(unit.one("Restart"), "on-failure", "{file}");
    assert_eq!(unit.one("RestartSec"), "5", "{file}");
    // Usage errors are retried too: a missing origin may be a late NFS mount.
    assert!(unit.all("RestartPreventExitStatus").is_empty(), "{file}");
    assert_eq!(unit.one("KillMode"), "mixed", "{file}");
    assert!(!unit.one("TimeoutStopSec").is_empty());
    assert!(!unit.one("TimeoutStartSec").is_empty());
    assert_eq!(unit.one("DeviceAllow"), "/dev/fuse rw", "{file}");
    assert_eq!(unit.one("LimitNOFILE"), "65536", "{file}");
    assert_eq!(unit.one("NoNewPrivileges"), "yes", "{file}");
    let families = unit.one("RestrictAddressFamilies");
    for family in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(
            families.split_whitespace().any(|f| f == family),
            "{file}: {families}"
        );
    }
    assert!(unit.one("CacheDirectory").starts_with("musicfs"));
    // Shared by every daemon's control socket: never removed by one unit.
    assert_eq!(unit.one("RuntimeDirectory"), "musicfs", "{file}");
    assert_eq!(unit.one("RuntimeDirectoryPreserve"), "yes", "{file}");
    // No one may silently override the config file's log level.
    assert!(
        !unit
            .all("Environment")
            .iter()
            .any(|e| e.contains("RUST_LOG")),
        "{file}: RUST_LOG would override log_level"
    );
    // ExecStopPost detaches a dead mount, and its failure is not the unit's.
    let stop = expand(unit.one("ExecStopPost"));
    let (prefix, command) = stop.split_at(stop.find('/').expect("a path"));
    assert!(
        prefix.contains('-'),
        "{file}: ExecStopPost needs '-': {stop}"
    );
    let words: Vec<&str> = command.split_whitespace().collect();
    assert!(words[0].ends_with("/fusermount3"), "{file}: {stop}");
    assert_eq!(words[1], "-uz", "{file}: {stop}");
    // ExecStart is a command line musicfs accepts.
    let start = expand(unit.one("ExecStart"));
    let argv: Vec<&str> = start.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/bin/musicfs", "{file}");
    let cli = musicfs::cli::config::parse_command_line_from(argv.iter().copied())
        .unwrap_or_else(|e| panic!("{file}: ExecStart is not a musicfs command line: {e}"));
    let musicfs::cli::Command::Mount(args) = cli.command else {
        panic!("{file}: ExecStart is not `musicfs mount`");
    };
    assert!(args.config.is_some(), "{file}: settings come from a file");
    assert_eq!(unit.one("WantedBy"), "multi-user.target");
    unit
}

#[test]
fn single_unit_keeps_the_mount_visible_and_supervised() {
    let unit = check_unit("musicfs.service", None);
    assert_eq!(
        unit.one("ExecStart"),
        "/usr/bin/musicfs mount --config /etc/musicfs/musicfs.toml"
    );
    // Its ExecStopPost must name the example config's mountpoint.
    let example = musicfs::cli::config::parse(&read(&dist("musicfs.toml"))).unwrap();
    let mountpoint = example.mountpoint.expect("the example sets a mountpoint");
    assert!(
        unit.one("ExecStopPost")
            .ends_with(&format!(" {}", mountpoint.display())),
        "ExecStopPost and musicfs.toml disagree on the mountpoint"
    );
}

#[test]
fn template_unit_takes_mountpoint_and_config_from_the_instance() {
    let unit = check_unit("musicfs@.service", Some(("mnt-music", "/mnt/music")));
    assert_eq!(
        unit.one("ExecStart"),
        "/usr/bin/musicfs mount --config /etc/musicfs/%i.toml %f"
    );
    assert!(unit.one("ExecStopPost").ends_with(" -uz %f"));
    // Two daemons can never share a cache.
    assert!(unit.one("CacheDirectory").contains("%i"));
    assert!(unit.all("Environment").iter().any(|e| e.contains("%i")));
}

/// Copies `file` into `dir` as `as_name`, with ExecStart running the binary
/// under test (/usr/bin/musicfs does not exist here).
fn unit_for_verify(file: &str, dir: &Path, as_name: &str) -> PathBuf {
    let text =
        read(&dist(file)).replace("ExecStart=/usr/bin/musicfs ", &format!("ExecStart={BIN} "));
    assert!(text.contains(BIN));
    let path = dir.join(as_name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn units_pass_systemd_analyze_verify() {
    assert!(
        have("systemd-analyze"),
        "no systemd-analyze (scripts/install-deps installs the systemd package)"
    );
    let dir = tempfile::tempdir().unwrap();
    let single = unit_for_verify("musicfs.service", dir.path(), "musicfs.service");
    let template = unit_for_verify("musicfs@.service", dir.path(), "musicfs@.service");
    // An instance: the template with %i and %f filled in.
    let instance = dir.path().join("musicfs@mnt-music.service");
    std::os::unix::fs::symlink(&template, &instance).unwrap();
    for unit in [&single, &template, &instance] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(unit)
            .current_dir(dir.path())
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
            .unwrap();
        // Problems in other units of this machine are not ours; any line
        // about our unit is (systemd only warns about unknown keys and
        // unparsable values, and then ignores them: exit code 0).
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("musicfs")).collect();
        assert!(
            out.status.success() && ours.is_empty(),
            "systemd-analyze verify {}:\n{}",
            unit.display(),
            text(&out)
        );
        if !stderr.trim().is_empty() {
            eprintln!("systemd-analyze verify (not about our unit):\n{stderr}");
        }
    }
}

// --- The example config ------------------------------------------------------

#[test]
fn example_config_is_valid_and_documents_every_key() {
    let text = read(&dist("musicfs.toml"));
    musicfs::cli::config::parse(&text).unwrap_or_else(|e| panic!("dist/musicfs.toml: {e}"));
    // The commented-out examples are valid too.
    let keys = [
        "origins",
        "mountpoint",
        "cache_dir",
        "cache_size",
        "layout",
        "allow_other",
        "allow_non_empty",
        "wait_for_origins",
        "read_timeout",
        "poll_interval",
        "log_level",
        "uid",
        "gid",
        "umask",
        "log_file",
        "metrics_addr",
    ];
    let uncommented: String = text
        .lines()
        .map(|line| {
            let t = line.trim_start();
            match t.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with("{ url")
                        || keys.iter().any(|k| rest.starts_with(&format!("{k} ="))) =>
                {
                    rest.to_owned()
                }
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let all = musicfs::cli::config::parse(&uncommented)
        .unwrap_or_else(|e| panic!("dist/musicfs.toml, examples uncommented: {e}\n{uncommented}"));
    for key in keys {
        assert!(
            uncommented
                .lines()
                .any(|l| l.starts_with(&format!("{key} ="))),
            "dist/musicfs.toml does not show {key}"
        );
    }
    assert!(all.layout.is_some() && all.origins.is_some_and(|o| o.len() == 4));
    // It describes what works today: remote origins and names are real.
    for stale in ["when this build supports it", "not used"] {
        assert!(
            !text.contains(stale),
            "dist/musicfs.toml still says {stale:?}"
        );
    }
    for what in ["s3://", "sftp://", "musicfs status"] {
        assert!(
            text.contains(what),
            "dist/musicfs.toml does not mention {what}"
        );
    }
}

// --- Real mounts ---------------------------------------------------------------

/// A library of two tracks, a mountpoint and a cache in a temporary folder;
/// on drop, any daemon still serving the mountpoint is stopped and the
/// mount detached.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        write_wav(
            &dir.path().join("lib/a/song.wav"),
            600 << 10,
            1,
            "Song",
            "Band",
            "Record",
        );
        write_wav(
            &dir.path().join("lib/b/other.wav"),
            300 << 10,
            2,
            "Other",
            "Band",
            "Record",
        );
        std::fs::create_dir_all(dir.path().join("mnt")).unwrap();
        Fixture { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }
    fn mnt(&self) -> PathBuf {
        self.path("mnt")
    }
    fn track_hash(&self) -> String {
        sha256_file(&self.path("lib/a/song.wav")).unwrap()
    }
    /// Checks the mount serves the track byte for byte.
    fn assert_serves_the_track(&self) {
        let got = sha256_file(&self.mnt().join(TRACK))
            .unwrap_or_else(|e| panic!("{TRACK} in the mount: {e}"));
        assert_eq!(got, self.track_hash(), "{TRACK} differs from the origin");
    }
    /// A PATH whose `musicfs` is the binary under test.
    fn path_with_musicfs(&self) -> String {
        let bin = self.path("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let link = bin.join("musicfs");
        if !link.exists() {
            std::os::unix::fs::symlink(BIN, &link).unwrap();
        }
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
    /// A PATH whose `musicfs` is the binary under test, started a second
    /// late: a helper that does not wait for the mount is caught out.
    fn path_with_slow_musicfs(&self) -> String {
        let bin = self.path("slow-bin");
        std::fs::create_dir_all(&bin).unwrap();
        let script = bin.join("musicfs");
        std::fs::write(&script, format!("#!/bin/sh\nsleep 1\nexec {BIN} \"$@\"\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let mnt = self.mnt();
        for pid in daemons_serving(&mnt) {
            // SAFETY: kill(2) with a pid found in /proc and a valid signal.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            if !wait_for(Duration::from_secs(10), || !alive(pid)) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if is_mounted(&mnt) {
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        }
    }
}

/// Running (not zombie) `musicfs mount` processes whose last argument is
/// `mountpoint`: the daemons the helper started and then left.
fn daemons_serving(mountpoint: &Path) -> Vec<i32> {
    let want = mountpoint.to_str().unwrap();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_daemon = args.iter().any(|a| a == "mount")
            && args.first().is_some_and(|a| a.ends_with("musicfs"))
            && args.last().is_some_and(|a| a == want);
        if is_daemon && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` runs (a zombie has exited; nobody may reap it here).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    !matches!(state, Some(Some('Z' | 'X')) | None)
}

/// Waits until the daemon of `mountpoint` has exited and the mount is gone.
fn assert_daemon_gone(mountpoint: &Path) {
    let gone = wait_for(Duration::from_secs(20), || {
        daemons_serving(mountpoint).is_empty() && !is_mounted(mountpoint)
    });
    assert!(
        gone,
        "daemon still running ({:?}) or still mounted ({})",
        daemons_serving(mountpoint),
        is_mounted(mountpoint)
    );
}

/// A `musicfs mount` child: waits for its "mounted" log line.
fn start_daemon(mut cmd: Command, mountpoint: &Path, log: &Path) -> Mounted {
    let log_file = std::fs::File::create(log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut m = Mounted {
        child: Some(child),
        mountpoint: mountpoint.to_path_buf(),
        log: log.to_path_buf(),
    };
    let up = wait_for(MOUNT_TIMEOUT, || {
        (m.log_text().contains(" mounted mountpoint=") && is_mounted(mountpoint))
            || m.child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    });
    assert!(
        up && is_mounted(mountpoint),
        "mount did not come up:\n{}",
        m.log_text()
    );
    m
}

#[test]
fn mount_with_a_config_file() {
    let fx = Fixture::new();
    // Relative paths are relative to the file's folder.
    let config = fx.path("etc/musicfs.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        r#"
origins = [{ url = "../lib", name = "local" }]
mountpoint = "../mnt"
cache_dir = "../cache"
cache_size = "64M"
read_timeout = "10s"
poll_interval = "1m30s"
log_level = "info"
"#,
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("mount")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG");
    let m = start_daemon(cmd, &fx.mnt(), &fx.path("daemon.log"));
    fx.assert_serves_the_track();
    assert!(
        fx.path("cache").read_dir().unwrap().next().is_some(),
        "the cache is where the file says"
    );
    assert!(m.stop().success(), "a clean exit after SIGTERM");
    assert!(!is_mounted(&fx.mnt()));

    // A config error: one line naming the file and the line, exit code 2,
    // nothing mounted.
    std::fs::write(
        &config,
        "origins = [\"../lib\"]\nmountpoint = \"../mnt\"\ncache_sise = \"1G\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("mount")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("musicfs.toml")
            && stderr.contains("line 3")
            && stderr.contains("cache_sise"),
        "{stderr}"
    );
    assert!(!is_mounted(&fx.mnt()));
}

/// The daemon's user and group in [`unit_privileges_suffice_to_mount`],
/// and the group that may read the music (numbers no account uses).
const DAEMON_UID: u32 = 61_234;
const MUSIC_GID: u32 = 61_235;

#[test]
fn unit_privileges_suffice_to_mount() {
    // The unit runs the daemon as its own user, with CAP_SYS_ADMIN ambient
    // and nothing else in its bounding set, and NoNewPrivileges; setpriv(1)
    // does the same here. The origin belongs to another user and is open
    // only to a "music" group the daemon's user is in, as the unit's
    // comments tell an admin to set it up.
    assert!(is_root(), "the dist tests run as root (scripts/test)");
    assert!(
        have("setpriv"),
        "setpriv (util-linux) is installed by scripts/install-deps"
    );
    let unit = Unit::parse(&read(&dist("musicfs.service")));
    let caps = |key: &str| -> Vec<String> {
        unit.one(key)
            .split_whitespace()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect()
    };
    assert_eq!(unit.one("User"), "musicfs");
    assert_eq!(unit.one("NoNewPrivileges"), "yes");
    assert_eq!(caps("CapabilityBoundingSet"), ["+sys_admin"]);
    assert_eq!(caps("AmbientCapabilities"), ["+sys_admin"]);
    let fuse_mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode();
    assert_eq!(
        fuse_mode & 0o666,
        0o666,
        "/dev/fuse must be usable by the daemon's user (scripts/install-deps sets 0666)"
    );
    let fx = Fixture::new();
    // The daemon's user must be able to reach its folders, like any
    // service user under /var/cache and /run.
    std::fs::set_permissions(fx.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let lib = fx.path("lib");
    for path in [lib.clone(), lib.join("a"), lib.join("b")] {
        std::os::unix::fs::chown(&path, Some(65534), Some(MUSIC_GID)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();
    }
    for path in [lib.join("a/song.wav"), lib.join("b/other.wav")] {
        std::os::unix::fs::chown(&path, Some(65534), Some(MUSIC_GID)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    for dir in ["cache", "run"] {
        std::fs::create_dir_all(fx.path(dir)).unwrap();
        std::os::unix::fs::chown(fx.path(dir), Some(DAEMON_UID), Some(DAEMON_UID)).unwrap();
    }
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={DAEMON_UID}"))
        .arg(format!("--regid={DAEMON_UID}"))
        .arg(format!("--groups={MUSIC_GID}"))
        .arg(format!(
            "--bounding-set=-all,{}",
            caps("CapabilityBoundingSet").join(",")
        ))
        .arg(format!(
            "--inh-caps=-all,{}",
            caps("AmbientCapabilities").join(",")
        ))
        .arg(format!(
            "--ambient-caps=-all,{}",
            caps("AmbientCapabilities").join(",")
        ))
        // Others (root, here; a media server in life) read a mount made by
        // the daemon's user only with allow_other, as dist/musicfs.toml says.
        .args([
            "--no-new-privs",
            "--",
            BIN,
            "mount",
            "--allow-other",
            "--origin",
        ])
        .arg(&lib)
        .arg("--cache-dir")
        .arg(fx.path("cache"))
        .arg(fx.mnt())
        .env("XDG_RUNTIME_DIR", fx.path("run"))
        .env("HOME", fx.path("cache"))
        .env_remove("RUST_LOG");
    let m = start_daemon(cmd, &fx.mnt(), &fx.path("daemon.log"));
    // Root itself can read the origin only through the group: the test
    // would prove nothing if the daemon could not read it otherwise.
    fx.assert_serves_the_track();
    let owner = std::fs::metadata(fx.mnt().join(TRACK)).unwrap().uid();
    assert_eq!(owner, DAEMON_UID, "the daemon runs as the unit's user");
    let status = m.stop();
    assert!(
        status.success(),
        "clean stop and unmount with the unit's privileges: {status}"
    );
    assert!(!is_mounted(&fx.mnt()));
}

// --- The mount(8) helper ---------------------------------------------------------

fn helper() -> Command {
    let path = dist("mount.musicfs");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "dist/mount.musicfs must be executable");
    Command::new(path)
}

#[test]
fn mount_helper_is_shellcheck_clean() {
    assert!(
        have("shellcheck"),
        "no shellcheck (scripts/install-deps installs it)"
    );
    let out = Command::new("shellcheck")
        .args(["--shell=sh"])
        .arg(dist("mount.musicfs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn mount_helper_mounts_reads_and_unmounts() {
    let fx = Fixture::new();
    let started = Instant::now();
    let out = helper()
        .arg(fx.path("lib"))
        .arg(fx.mnt())
        .arg("-o")
        .arg(format!(
            // Durations as rclone and systemd write them.
            "cache_dir={},cache_size=64M,read_timeout=1m30s,poll_interval=5m,defaults,_netdev",
            fx.s("cache")
        ))
        .env("PATH", fx.path_with_slow_musicfs())
        .env("MUSICFS_LOG_DIR", fx.path("logs"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // The helper returns once the mount answers, not before.
    assert!(
        is_mounted(&fx.mnt()),
        "helper returned before the mount was up"
    );
    let daemons = daemons_serving(&fx.mnt());
    assert_eq!(daemons.len(), 1, "one daemon, in the background");
    assert!(started.elapsed() < MOUNT_TIMEOUT);
    fx.assert_serves_the_track();
    // Its log went where MUSICFS_LOG_DIR says, named after the mountpoint.
    let canonical = fx.mnt().canonicalize().unwrap();
    let name = canonical
        .to_str()
        .unwrap()
        .trim_start_matches('/')
        .replace('/', "-");
    let log = fx.path("logs").join(format!("{name}.log"));
    assert!(
        read(&log).contains(" mounted mountpoint="),
        "{}",
        log.display()
    );

    let out = Command::new(BIN)
        .arg("unmount")
        .arg(fx.mnt())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_daemon_gone(&fx.mnt());
    assert!(read(&log).contains("unmounted; bye"), "{}", read(&log));
}

#[test]
fn mount_helper_passes_owner_group_umask_and_the_log_file() {
    let fx = Fixture::new();
    let log = fx.path("helper.log");
    let out = helper()
        .arg(fx.path("lib"))
        .arg(fx.mnt())
        .arg("-o")
        .arg(format!(
            "cache_dir={},uid=1234,gid=2345,umask=027,log_file={}",
            fx.s("cache"),
            log.display()
        ))
        .env("PATH", fx.path_with_musicfs())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let root = std::fs::metadata(fx.mnt()).unwrap();
    assert_eq!((root.uid(), root.gid()), (1234, 2345));
    assert_eq!(root.mode() & 0o7777, 0o550);
    let track = std::fs::metadata(fx.mnt().join(TRACK)).unwrap();
    assert_eq!(
        (track.uid(), track.gid(), track.mode() & 0o7777),
        (1234, 2345, 0o440)
    );
    // The daemon writes the log file itself: SIGHUP reopens it.
    let daemons = daemons_serving(&fx.mnt());
    assert_eq!(daemons.len(), 1);
    std::fs::rename(&log, fx.path("helper.log.1")).unwrap();
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(daemons[0], libc::SIGHUP) };
    assert!(
        wait_for(Duration::from_secs(20), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("log file reopened")),
        "{}",
        read(&fx.path("helper.log.1"))
    );
    // -f -v shows the command: each option becomes the daemon's flag.
    let out = helper()
        .arg(fx.path("lib"))
        .arg(fx.path("mnt2"))
        .args([
            "-f",
            "-v",
            "-o",
            "uid=5,gid=6,umask=077,metrics_addr=127.0.0.1:0",
        ])
        .env("PATH", fx.path_with_musicfs())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && said.contains("--uid 5 --gid 6 --umask 077 --metrics-addr 127.0.0.1:0"),
        "{}",
        text(&out)
    );
    let out = Command::new(BIN)
        .arg("unmount")
        .arg(fx.mnt())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_daemon_gone(&fx.mnt());
    assert!(read(&log).contains("unmounted; bye"), "{}", read(&log));
}

#[test]
fn mount_helper_reports_errors() {
    let fx = Fixture::new();
    let run = |source: &str, opts: &str, path: &str| {
        helper()
            .arg(source)
            .arg(fx.mnt())
            .args(["-o", opts])
            .env("PATH", path)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let path = fx.path_with_musicfs();
    let lib = fx.s("lib");
    let log = format!("log_file={}", fx.s("helper.log"));
    let cache = format!("cache_dir={}", fx.s("cache"));

    // A typo in an option is not dropped silently...
    let out = run(&lib, &format!("{cache},cache_szie=1G"), &path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache_szie"));
    // ...unless mount(8) was told to be sloppy.
    let out = helper()
        .args(["-s", "-f", &lib])
        .arg(fx.mnt())
        .args(["-o", &format!("{cache},cache_szie=1G")])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!is_mounted(&fx.mnt()), "-f (fake) mounts nothing");

    // A mountpoint with files in it is refused, unless allow_non_empty.
    std::fs::create_dir_all(fx.mnt()).unwrap();
    std::fs::write(fx.mnt().join("keep.txt"), b"mine").unwrap();
    let out = run(&lib, &format!("{cache},{log}"), &path);
    assert_eq!(out.status.code(), Some(1), "usage error: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        text(&out)
    );
    let out = helper()
        .args(["-f", "-v", &lib])
        .arg(fx.mnt())
        .args(["-o", &format!("{cache},allow_non_empty")])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--allow-non-empty"),
        "{}",
        text(&out)
    );
    std::fs::remove_file(fx.mnt().join("keep.txt")).unwrap();

    // The daemon's own errors come back, with mount(8)'s exit codes.
    let out = run(&lib, &format!("{cache},{log},cache_size=lots"), &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "usage error: {}", text(&out));
    assert!(
        stderr.contains("musicfs: ") && stderr.contains("lots"),
        "{stderr}"
    );
    let out = run(&lib, &format!("{cache},{log},read_timeout=soon"), &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "usage error: {}", text(&out));
    assert!(stderr.contains("'soon' is not a duration"), "{stderr}");
    let out = run(&fx.s("no-such-lib"), &format!("{cache},{log}"), &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr.contains("no-such-lib"), "{stderr}");
    let out = run(
        "musicfs",
        &format!("{log},config={}", fx.s("none.toml")),
        &path,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr.contains("none.toml"), "{stderr}");
    assert!(!is_mounted(&fx.mnt()));

    // A daemon that never mounts is stopped after mount_timeout, and the
    // helper fails with 32 ("mount failure").
    let fake = fx.path("fake-bin");
    std::fs::create_dir_all(&fake).unwrap();
    // A duration no other process uses, to find it afterwards.
    let stuck = format!("sleep\x00{}\x00", 100_000 + std::process::id());
    std::fs::write(
        fake.join("musicfs"),
        format!(
            "#!/bin/sh\nexec {}\n",
            stuck.trim_end_matches('\0').replace('\0', " ")
        ),
    )
    .unwrap();
    std::fs::set_permissions(fake.join("musicfs"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let started = Instant::now();
    let out = run(
        &lib,
        &format!("{cache},{log},mount_timeout=1"),
        &format!("{}:/usr/bin:/bin", fake.display()),
    );
    assert_eq!(out.status.code(), Some(32), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mount_timeout"));
    assert!(started.elapsed() < Duration::from_secs(30));
    let sleeper_left = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == stuck.as_bytes())
            && e.file_name()
                .to_str()
                .and_then(|p| p.parse().ok())
                .is_some_and(alive)
    });
    assert!(!sleeper_left, "the helper left the stuck daemon running");
}

#[test]
fn fstab_lines_mount_through_mount_8() {
    // mount(8) runs helpers only from /sbin (and /sbin/fs.d, /sbin/fs), with
    // a fixed PATH. Rather than install into the real /sbin, this runs in a
    // private mount namespace where a read-only overlay adds the helper (and
    // `musicfs`) to /usr/sbin; the namespace, and everything mounted in it,
    // vanish with the script.
    assert!(is_root(), "the dist tests run as root (scripts/test)");
    assert!(
        have("unshare"),
        "no unshare(1) (util-linux, scripts/install-deps)"
    );
    let fx = Fixture::new();
    let extra = fx.path("sbin-extra");
    std::fs::create_dir_all(&extra).unwrap();
    for name in ["mount.musicfs", "mount.fuse.musicfs"] {
        std::os::unix::fs::symlink(dist("mount.musicfs"), extra.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(BIN, extra.join("musicfs")).unwrap();
    let fstab = fx.path("fstab");
    let opts = format!("cache_dir={},log_file={}", fx.s("cache"), fx.s("fstab.log"));
    std::fs::write(
        &fstab,
        format!(
            "# the form from the docs\nmusicfs#{lib} {mnt} fuse.musicfs defaults,cache_size=20G,allow_other,_netdev,nofail,{opts} 0 0\n",
            lib = fx.s("lib"),
            mnt = fx.s("mnt"),
        ),
    )
    .unwrap();
    let script = r#"
set -eu
sbin=$(readlink -f /sbin)
mount -t overlay overlay -o "lowerdir=$EXTRA:$sbin" "$sbin" || exit 77
[ -x "$sbin/mount.fuse.musicfs" ]
hash_and_unmount() {
  grep -q " $MNT " /proc/self/mountinfo
  echo "HASH $(sha256sum "$MNT/$TRACK" | cut -d' ' -f1)"
  umount "$MNT"
  for _ in $(seq 100); do
    grep -q " $MNT " /proc/self/mountinfo || return 0
    sleep 0.1
  done
  echo "still mounted after umount"; exit 1
}
# An fstab line (mount(8) reads the options from the file).
mount -T "$FSTAB" "$MNT"
hash_and_unmount
# Type fuse.musicfs on the command line: /sbin/mount.fuse.musicfs.
mount -t fuse.musicfs -o "$OPTS" "$LIB" "$MNT"
hash_and_unmount
# Type musicfs: /sbin/mount.musicfs.
mount -t musicfs -o "$OPTS,read_timeout=5" "$LIB" "$MNT"
hash_and_unmount
"#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("EXTRA", &extra)
        .env("FSTAB", &fstab)
        .env("MNT", fx.mnt())
        .env("LIB", fx.path("lib"))
        .env("OPTS", &opts)
        .env("TRACK", TRACK)
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(77),
        "no overlayfs to add the helper to /sbin:\n{}",
        text(&out)
    );
    let log = std::fs::read_to_string(fx.path("fstab.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\n--- daemon log\n{log}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hashes: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("HASH "))
        .collect();
    assert_eq!(hashes, vec![fx.track_hash().as_str(); 3], "{stdout}");
    // Each unmount ended its daemon, cleanly (the last one may still have
    // been saving its state when the script ended: read the log again).
    assert_daemon_gone(&fx.mnt());
    let log = std::fs::read_to_string(fx.path("fstab.log")).unwrap_or_default();
    assert_eq!(log.matches("unmounted; bye").count(), 3, "{log}");
}
