//! systemd integration: readiness, status, start-up extensions, stopping,
//! and a watchdog that only pings while the FUSE loop really answers.
//!
//! Everything is a no-op outside systemd (no `NOTIFY_SOCKET`), so the daemon
//! calls these unconditionally.

use sd_notify::NotifyState;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// READY=1: the mount is up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STATUS=...: shown by `systemctl status`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// EXTEND_TIMEOUT_USEC: a long first scan is progress, not a hang.
pub fn extend_timeout(by: Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

/// STOPPING=1.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Starts the watchdog if systemd asked for one (`WATCHDOG_USEC`): every
/// half period, a probe asks the kernel for `statfs` of the mount, which
/// only the FUSE loop can answer; WATCHDOG=1 is sent only when it does. A
/// wedged FUSE loop therefore stops the pings and systemd restarts the
/// service. Returns the flag that stops the watchdog.
///
/// The probe runs in a *child process* (this binary, `__probe-statfs`): a
/// thread of the daemon itself waiting on its own mount could never be
/// killed (the answer can only come from the dying process), and would
/// make the daemon unkillable exactly when systemd wants to kill it.
pub fn start_watchdog(mountpoint: &Path) -> Option<Arc<AtomicBool>> {
    let period = sd_notify::watchdog_enabled()?;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::error!(error = %e, "cannot find my own binary; no watchdog");
            return None;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let mountpoint = mountpoint.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("musicfs-watchdog".into())
        .spawn(move || watchdog_loop(&exe, &mountpoint, period, &flag));
    match spawned {
        Ok(_) => {
            tracing::info!(?period, "systemd watchdog enabled");
            Some(stop)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start the watchdog thread");
            None
        }
    }
}

fn watchdog_loop(exe: &Path, mountpoint: &Path, period: Duration, stop: &AtomicBool) {
    let interval = period / 2;
    // At most one probe alive: one stuck in a wedged loop is not replaced.
    let mut probe: Option<std::process::Child> = None;
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        if probe.is_none() {
            probe = std::process::Command::new(exe)
                .arg(PROBE_ARG)
                .arg(mountpoint)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| tracing::warn!(error = %e, "cannot start the watchdog probe"))
                .ok();
        }
        let answered = probe.as_mut().and_then(|child| wait_child(child, interval));
        match answered {
            Some(ok) => {
                probe = None;
                if ok {
                    send(&[NotifyState::Watchdog]);
                    warned = false;
                    std::thread::sleep(interval);
                    continue;
                }
            }
            None => std::thread::sleep(Duration::from_millis(10).min(interval)),
        }
        if !warned {
            tracing::error!("the FUSE loop is not answering; not pinging the systemd watchdog");
            warned = true;
        }
    }
    if let Some(mut child) = probe {
        let _ = child.kill();
    }
}

/// Waits up to `timeout` for the probe; Some(success) once it exited.
fn wait_child(child: &mut std::process::Child, timeout: Duration) -> Option<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.success()),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => return None,
            Err(_) => return Some(false),
        }
    }
}

/// The hidden argument that makes the binary a watchdog probe.
pub const PROBE_ARG: &str = "__probe-statfs";

/// Whether statfs(2) on the mount succeeds (it goes to the FUSE loop).
pub fn fuse_answers(mountpoint: &Path) -> bool {
    crate::sys::statfs(mountpoint).is_ok()
}
