//! A real `musicfs mount` in a child process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Whether `path` is a mount point right now (per /proc/self/mounts).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(canonical) = path
        .canonicalize()
        .or_else(|_| Ok::<_, ()>(path.to_path_buf()))
    else {
        return false;
    };
    let target = canonical.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(1) == Some(target.as_str()))
        })
        .unwrap_or(false)
}

/// Runs `bin ARGS... MOUNTPOINT` (a control command such as `status`,
/// `rescan` or `unmount`), asserts that it succeeded (showing its stderr if
/// not) and returns its stdout.
pub fn control_ok(bin: &Path, args: &[&str], mountpoint: &Path) -> String {
    let out = Command::new(bin)
        .args(args)
        .arg(mountpoint)
        .output()
        .expect("the musicfs binary runs");
    assert!(
        out.status.success(),
        "musicfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Aborts the kernel's FUSE connection of the mount at `path` (fusectl),
/// failing every request waiting on it.
pub fn abort_fuse_connection(path: &Path) {
    let conns = Path::new("/sys/fs/fuse/connections");
    if std::fs::read_dir(conns).map_or(true, |mut d| d.next().is_none()) {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(conns)
            .status();
    }
    let target = path.to_string_lossy().replace(' ', "\\040");
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for line in info
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(target.as_str()))
    {
        if let Some(minor) = line.split(' ').nth(2).and_then(|d| d.split(':').nth(1)) {
            let _ = std::fs::write(conns.join(minor).join("abort"), b"1");
        }
    }
}

/// The uid of `nobody`, a normal user with no privilege.
pub const NOBODY: u32 = 65534;

/// Sets up `dir` (a test's folder) for a daemon run as [`NOBODY`]: a copy
/// of the binary `bin` that user can run (the build's is under root's
/// home) and a wrapper script that runs it as that user through setpriv,
/// as a normal user's login would. `dir` and the folders `owned` (created
/// here, such as the cache and the mountpoint) become that user's to use.
/// Returns the wrapper, to give [`MountCommand`] as the binary.
pub fn as_nobody(bin: &Path, dir: &Path, owned: &[PathBuf]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let bin_dir = dir.join("bin");
    std::fs::create_dir(&bin_dir).expect("bin");
    let copy = bin_dir.join("musicfs");
    std::fs::copy(bin, &copy).expect("copy the binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let wrapper = bin_dir.join("musicfs-as-nobody");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- {} \"$@\"\n",
            copy.display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for dir in owned {
        std::fs::create_dir_all(dir).expect("dir");
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    wrapper
}

/// `program ARGS` run as `uid` through setpriv (no supplementary groups),
/// with no runtime directory of its own; its output.
pub fn run_as<I, A>(uid: u32, program: impl AsRef<std::ffi::OsStr>, args: I) -> std::process::Output
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program)
        .args(args)
        .env("XDG_RUNTIME_DIR", "")
        .output()
        .expect("setpriv runs")
}

/// A running daemon and its mount; unmounted and reaped when dropped.
pub struct Mounted {
    /// The daemon.
    pub child: Option<Child>,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Its stderr log.
    pub log: PathBuf,
}

/// How to start a mount.
pub struct MountCommand {
    cmd: Command,
    mountpoint: PathBuf,
    log: PathBuf,
    /// Where stderr goes when the log is a `--log-file` (else `log`).
    stderr: Option<PathBuf>,
}

impl MountCommand {
    /// `musicfs mount --origin ... --cache-dir CACHE MOUNTPOINT` with the
    /// binary at `bin`; the log goes to `log`.
    pub fn new(
        bin: &Path,
        origins: &[&Path],
        cache: &Path,
        mountpoint: &Path,
        log: &Path,
    ) -> MountCommand {
        let mut cmd = Command::new(bin);
        cmd.arg("mount");
        for o in origins {
            cmd.arg("--origin").arg(o);
        }
        cmd.arg("--cache-dir").arg(cache);
        cmd.env("RUST_LOG", "warn,fuser=error,musicfs=debug");
        MountCommand {
            cmd,
            mountpoint: mountpoint.to_path_buf(),
            log: log.to_path_buf(),
            stderr: None,
        }
    }

    /// Logs with `--log-file FILE` instead of stderr: [`Mounted::log`] is
    /// that file, and stderr goes to `FILE.stderr`.
    pub fn log_file(mut self, file: &Path) -> MountCommand {
        self.cmd.arg("--log-file").arg(file);
        let mut stderr = file.as_os_str().to_owned();
        stderr.push(".stderr");
        self.stderr = Some(PathBuf::from(stderr));
        self.log = file.to_path_buf();
        self
    }

    /// The usual layout of a test's folder `dir`: the library in `lib/`,
    /// the cache in `cache/`, the mountpoint `mnt/` and the log `log`.
    pub fn in_dir(bin: &Path, dir: &Path) -> MountCommand {
        MountCommand::new(
            bin,
            &[&dir.join("lib")],
            &dir.join("cache"),
            &dir.join("mnt"),
            &dir.join("log"),
        )
    }

    /// The usual layout of [`MountCommand::in_dir`], the origin given with
    /// `options` (such as `",fill=inline"`).
    pub fn in_dir_with(bin: &Path, dir: &Path, options: &str) -> MountCommand {
        let mut origin = dir.join("lib").into_os_string();
        origin.push(options);
        MountCommand::new(
            bin,
            &[Path::new(&origin)],
            &dir.join("cache"),
            &dir.join("mnt"),
            &dir.join("log"),
        )
    }

    /// Sets an environment variable of the daemon.
    pub fn env(mut self, key: &str, value: &str) -> MountCommand {
        self.cmd.env(key, value);
        self
    }

    /// Adds arguments before the mountpoint.
    pub fn args<I, S>(mut self, args: I) -> MountCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Starts the daemon and waits (up to `timeout`) until it is mounted.
    pub fn start(mut self, timeout: Duration) -> Mounted {
        // A stale mount (its daemon was killed) is there but cannot be
        // stat'ed: creating it says EEXIST, which is fine.
        if let Err(e) = std::fs::create_dir_all(&self.mountpoint) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::AlreadyExists,
                "mountpoint dir: {e}"
            );
        }
        let log =
            std::fs::File::create(self.stderr.as_ref().unwrap_or(&self.log)).expect("log file");
        self.cmd
            .arg(&self.mountpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = self.cmd.spawn().expect("musicfs binary runs");
        let mut m = Mounted {
            child: Some(child),
            mountpoint: self.mountpoint,
            log: self.log,
        };
        // Wait for the daemon to say it mounted: a stale mount left by a
        // killed daemon is in the mount table too, and the kernel reuses
        // mount ids, so the table alone cannot tell them apart.
        let is_new = |m: &Mounted| {
            m.log_text().contains(" mounted mountpoint=") && is_mounted(&m.mountpoint)
        };
        let up = crate::wait_for(timeout, || is_new(&m) || m.try_exited().is_some());
        assert!(up && is_new(&m), "mount did not come up:\n{}", m.log_text());
        m
    }
}

impl Mounted {
    fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 20 s) for the search index the daemon builds after
    /// mounting: its descriptors and work are then settled.
    pub fn wait_search_index(&self) {
        assert!(
            crate::wait_for(Duration::from_secs(20), || self
                .log_text()
                .contains("search index built")),
            "{}",
            self.log_text()
        );
    }

    /// Waits (up to 60 s) until what readers read from `fill=behind`
    /// origins is in the cache: `musicfs status` (run with `bin`) shows no
    /// file waiting, no fill, no fetch and no write under way.
    pub fn wait_filled(&self, bin: &Path) {
        let filled = || {
            let Ok(out) = Command::new(bin)
                .args(["status", "--json"])
                .arg(&self.mountpoint)
                .output()
            else {
                return false;
            };
            let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                return false;
            };
            let c = &doc["cache"];
            c["fill_behind"]["files_waiting"] == 0
                && c["fill_behind"]["fills_in_flight"] == 0
                && c["fetches_in_flight"] == 0
                && c["writes_pending"] == false
        };
        assert!(
            crate::wait_for(Duration::from_secs(60), filled),
            "the cache did not fill behind the readers:\n{}",
            self.log_text()
        );
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) with a pid we spawned and a valid signal number.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        crate::wait_for(timeout, || {
            status = self.try_exited();
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// SIGTERM, then wait for a clean exit. Returns the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(20));
        status.unwrap_or_else(|| panic!("daemon did not exit after SIGTERM:\n{}", self.log_text()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let done = crate::wait_for(Duration::from_secs(10), || {
                c.try_wait().ok().flatten().is_some()
            });
            if !done {
                let _ = c.kill();
                let reaped = crate::wait_for(Duration::from_secs(10), || {
                    c.try_wait().ok().flatten().is_some()
                });
                if !reaped {
                    // A thread stuck on this very mount keeps a killed
                    // daemon alive: abort its FUSE connection.
                    abort_fuse_connection(&self.mountpoint);
                    let _ = c.wait();
                }
            }
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
    }
}
