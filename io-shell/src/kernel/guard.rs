//! The mount's guard: a small process that aborts the FUSE connection if
//! the daemon dies without unmounting.
//!
//! Pages handed to the kernel ahead of a scan ([`super::notify::PageStore`])
//! are written into the page cache under each page's lock; a page the
//! kernel is filling for a READ stays locked until that READ is answered.
//! If the daemon is killed then (SIGKILL, the OOM killer), the thread
//! handing pages over never leaves the kernel, the process never finishes
//! dying, its `/dev/fuse` stays open, the kernel never aborts the
//! connection, and the READ, its reader and the thread wait for each other
//! for ever. The guard breaks that: it is told of the daemon's death by the
//! kernel (PR_SET_PDEATHSIG, sent as the thread that started it ends) and
//! writes `1` to `/sys/fs/fuse/connections/<N>/abort`: every request fails,
//! the pages are let go, the daemon finishes dying and readers get
//! `ENOTCONN`, as after any other crash. A clean exit stands it down first.
//! Without a guard (no fusectl to abort through), no pages are handed over.

use crate::sys;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};

/// The hidden first argument that runs `musicfs` as a guard:
/// `musicfs GUARD_ARG <connection> <daemon pid>`.
pub const GUARD_ARG: &str = "__guard-connection";

/// Where the kernel lists FUSE connections (fusectl).
const CONNECTIONS: &str = "/sys/fs/fuse/connections";

/// A running guard of one mount's connection.
pub struct Guard {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Guard {
    /// Starts the guard of the FUSE mount at `mountpoint`. Call it on the
    /// thread that lives as long as the mount: its end is the signal.
    pub fn arm(mountpoint: &Path) -> Result<Guard, String> {
        let entry = sys::mount_at(mountpoint)
            .map_err(|e| format!("cannot read the mount table: {e}"))?
            .ok_or("the mount is not in the mount table")?;
        let connection = entry
            .device
            .split_once(':')
            .map(|(_, minor)| minor.to_owned())
            .ok_or("no device number in the mount table")?;
        let abort = abort_file(&connection)?;
        // Opened for writing now, so a guard that cannot write it is never
        // started; nothing is written.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&abort)
            .map_err(|e| format!("cannot open {}: {e}", abort.display()))?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg(GUARD_ARG)
            .arg(&connection)
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = sys::spawn_tied_to_this_thread(&mut cmd)
            .map_err(|e| format!("cannot start the guard: {e}"))?;
        let stdin = child.stdin.take();
        tracing::debug!(connection, pid = child.id(), "connection guard started");
        Ok(Guard { child, stdin })
    }

    /// A clean exit: the guard leaves without touching the connection.
    pub fn stand_down(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"x");
        }
        let _ = self.child.wait();
    }
}

/// The connection's abort file, mounting fusectl first if need be (as
/// root; systemd mounts it at boot).
fn abort_file(connection: &str) -> Result<PathBuf, String> {
    let dir = Path::new(CONNECTIONS).join(connection);
    if !dir.exists() {
        let mounted = sys::mount(&sys::Mount {
            source: "fusectl",
            target: Path::new(CONNECTIONS),
            fstype: "fusectl",
            flags: 0,
            data: "",
        });
        if let Err(e) = mounted
            && !dir.exists()
        {
            return Err(format!("no {} (fusectl): {e}", dir.display()));
        }
    }
    Ok(dir.join("abort"))
}

/// The guard process: waits for the daemon's death (the signal of
/// [`sys::spawn_tied_to_this_thread`]) or for a clean exit (a byte or the end of stdin), and
/// aborts the connection on the first.
pub fn run(connection: &str, daemon: &str) -> ExitCode {
    // A clean exit, told on stdin (or the daemon gone and its pipe with
    // it, once it could finish dying): leave.
    std::thread::spawn(|| {
        let mut byte = [0u8; 1];
        let _ = std::io::stdin().read(&mut byte);
        std::process::exit(0);
    });
    // The daemon may have died before the guard was tied to it.
    let orphaned = daemon.parse::<u32>().ok() != Some(sys::getppid());
    if !orphaned && sys::wait_for_parent_death().is_err() {
        return ExitCode::FAILURE;
    }
    let abort = Path::new(CONNECTIONS).join(connection).join("abort");
    match std::fs::write(&abort, b"1") {
        Ok(()) => {
            eprintln!(
                "musicfs: the daemon (pid {daemon}) died mounted: its FUSE connection {connection} is aborted, readers get ENOTCONN"
            );
            ExitCode::SUCCESS
        }
        // Already gone with its daemon: nothing to do.
        Err(_) => ExitCode::FAILURE,
    }
}
