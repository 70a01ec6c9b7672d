//! Signals during `musicfs mount`.

use crate::cli::logging;
use crate::kernel::unmount::lazy_unmount;
use crate::sys;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code of a shutdown cut short by a second signal.
pub const EXIT_FORCED: i32 = 130;

/// Signals, from the very start of `run`: before the mount is up a signal
/// ends the process at once (nothing is mounted; the catalog is written in
/// atomic batches, so an interrupted first scan loses only its progress);
/// after, the first signal starts the graceful shutdown and a second one
/// detaches the mount and exits at once. SIGTERM, SIGINT and SIGHUP stop
/// the daemon, except that with `--log-file` SIGHUP only reopens the log
/// file (logrotate).
pub(super) struct Signals {
    first: tokio::sync::mpsc::UnboundedReceiver<&'static str>,
    mounted: Arc<AtomicBool>,
}

impl Signals {
    /// The kernel mount exists from now on: a signal must unmount it
    /// through the graceful shutdown (not exit and leave a dead mount).
    pub(super) fn mounted(&self) {
        self.mounted.store(true, Ordering::SeqCst);
    }

    /// Handlers from now on; `None` (logged) if they cannot be installed.
    pub(super) fn install(runtime: &tokio::runtime::Runtime, mountpoint: &Path) -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let _guard = runtime.enter();
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers; stop with `musicfs unmount`");
            return None;
        };
        let (tx, first) = tokio::sync::mpsc::unbounded_channel();
        let mounted = Arc::new(AtomicBool::new(false));
        let (is_mounted, mountpoint) = (Arc::clone(&mounted), mountpoint.to_path_buf());
        runtime.spawn(async move {
            let mut count = 0u32;
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                    _ = hup.recv() => "SIGHUP",
                };
                // SIGHUP with --log-file: logrotate moved the file away.
                // Without one, the terminal is gone: stop as for SIGTERM.
                if name == "SIGHUP" && logging::logs_to_file() {
                    match logging::reopen() {
                        Ok(path) => tracing::info!(
                            path = %path.unwrap_or_default().display(),
                            "SIGHUP: log file reopened"
                        ),
                        Err(e) => tracing::warn!(error = %e, "SIGHUP: cannot reopen the log file; still writing to the old one"),
                    }
                    continue;
                }
                count += 1;
                if !is_mounted.load(Ordering::SeqCst) {
                    tracing::warn!(signal = name, "stopped before the mount was up");
                    // The signal may have come between mount(2) and the
                    // flag: leave no dead MusicFS mount behind.
                    if sys::mount_at(&mountpoint)
                        .ok()
                        .flatten()
                        .is_some_and(|m| m.is_musicfs())
                    {
                        lazy_unmount(&mountpoint);
                    }
                    std::process::exit(0);
                }
                if count == 1 {
                    let _ = tx.send(name);
                } else {
                    tracing::warn!("second signal: exiting now");
                    lazy_unmount(&mountpoint);
                    std::process::exit(EXIT_FORCED);
                }
            }
        });
        Some(Signals { first, mounted })
    }
}

/// Waits for the first signal or the end of the FUSE session (someone ran
/// `musicfs unmount`). Returns the signal's name, if one came.
pub(super) async fn wait_for_stop(
    signals: Option<&mut Signals>,
    ended: tokio::sync::oneshot::Receiver<()>,
) -> Option<&'static str> {
    let Some(signals) = signals else {
        let _ = ended.await;
        return None;
    };
    tokio::select! {
        name = signals.first.recv() => name,
        _ = ended => None,
    }
}
