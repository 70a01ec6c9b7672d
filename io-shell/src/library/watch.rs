//! Live changes of origins. Local ones: inotify (one watch per folder, see
//! [`crate::library::folder_watch`]),
//! debounced, turned into delta syncs of exactly the paths that changed.
//!
//! Bursts are gathered until the origin has been quiet for the debounce
//! time (a file being copied produces hundreds of events; a retag tool
//! writes in several steps), bounded by a longest wait so a busy origin is
//! still synced. A lost event (inotify queue overflow) or a watcher error
//! means nothing can be trusted: the whole origin is synced.

use crate::library::folder_watch::{Change, FolderWatch};
use crate::library::sync::Syncer;
use futures::StreamExt;
use musicfs_core::{OriginId, OriginPath};
use std::collections::BTreeSet;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time before a burst of changes is synced.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest a burst is gathered before syncing anyway.
pub const BURST_MAX: Duration = Duration::from_millis(1500);
/// Bytes of inotify events read at once.
const EVENT_BUFFER: usize = 64 << 10;

/// An origin that cannot be watched (the supervisor tries again later).
#[derive(Debug, thiserror::Error)]
#[error("cannot watch '{}': {source}", root.display())]
pub struct WatchError {
    /// The origin's folder.
    pub root: PathBuf,
    /// inotify's error.
    #[source]
    pub source: io::Error,
}

/// Stops a task when dropped (the watch loop's reader of file events ends
/// with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches one local origin until the task is stopped; every burst of
/// changes becomes one sync. Returns an error if the watch cannot be set
/// up or its events stop (the supervisor then retries later).
pub async fn watch_origin(
    syncer: Arc<Syncer>,
    origin: OriginId,
    root: PathBuf,
) -> Result<(), WatchError> {
    let failed = |source: io::Error| WatchError {
        root: root.clone(),
        source,
    };
    let inotify = inotify::Inotify::init().map_err(failed)?;
    // Watching walks every folder of the origin: on a thread of its own,
    // at background priority, beside the readers of a fresh mount rather
    // than before them (and never on a runtime worker).
    let (walk_root, watches) = (root.clone(), inotify.watches());
    let mut folders = tokio::task::spawn_blocking(move || {
        crate::sys::in_background("watch-origin", || FolderWatch::new(&walk_root, watches))
            .and_then(|r| r)
    })
    .await
    .map_err(|e| failed(io::Error::other(e)))?
    .map_err(failed)?;
    let mut events = inotify
        .into_event_stream(vec![0u8; EVENT_BUFFER])
        .map_err(failed)?;
    let watched = folders.len();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let _reader = AbortOnDrop(tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let change = match event {
                // A folder that appeared is walked to watch its tree: off
                // the runtime's workers.
                Ok(event) if FolderWatch::walks(&event) => {
                    let walked = tokio::task::spawn_blocking(move || {
                        let change = folders.event(&event);
                        (folders, change)
                    })
                    .await;
                    match walked {
                        Ok((f, change)) => {
                            folders = f;
                            change
                        }
                        Err(e) => {
                            let _ = tx.send(Change::Rescan(format!("watching a new folder: {e}")));
                            return;
                        }
                    }
                }
                Ok(event) => folders.event(&event),
                Err(e) => {
                    let _ = tx.send(Change::Rescan(format!("reading file events: {e}")));
                    return;
                }
            };
            if let Some(change) = change
                && tx.send(change).is_err()
            {
                return;
            }
        }
    }));
    // Catch up with what changed before the watch existed. Only then is the
    // origin said to be watched: from here on, every change is synced by a
    // burst below and by nothing else.
    sync_blocking(&syncer, origin, None).await;
    tracing::info!(%origin, root = %root.display(), folders = watched, "watching for changes");
    while let Some(first) = rx.recv().await {
        let mut paths = BTreeSet::new();
        let mut rescan = None;
        absorb(first, &root, &mut paths, &mut rescan);
        let burst_start = tokio::time::Instant::now();
        let burst_end = burst_start + BURST_MAX;
        loop {
            let quiet = tokio::time::sleep(DEBOUNCE);
            tokio::select! {
                more = rx.recv() => match more {
                    Some(seen) => absorb(seen, &root, &mut paths, &mut rescan),
                    None => break,
                },
                _ = quiet => break,
            }
            if tokio::time::Instant::now() >= burst_end {
                break;
            }
        }
        tracing::debug!(
            %origin,
            paths = paths.len(),
            gathered_ms = burst_start.elapsed().as_millis() as u64,
            "changes gathered"
        );
        match rescan {
            Some(why) => {
                tracing::warn!(%origin, %why, "syncing the whole origin");
                sync_blocking(&syncer, origin, None).await;
            }
            None if !paths.is_empty() => {
                sync_blocking(&syncer, origin, Some(paths)).await;
            }
            None => {}
        }
    }
    // The reader ended: its events can no longer be trusted.
    Err(failed(io::Error::other("file events stopped")))
}

/// Keeps one remote origin in step by polling: a delta sync at once (catch
/// up with what changed while unmounted, or scan an origin that could not
/// be reached at mount) unless `just_scanned`, then every `interval`
/// (`--poll-interval`: a remote
/// origin cannot tell us of changes; a listing costs one request per 1000
/// keys on S3 or one per folder on SFTP, and tags are read only for what
/// changed); after a failure, again sooner. Never returns.
pub async fn poll_origin(
    syncer: Arc<Syncer>,
    origin: OriginId,
    interval: Duration,
    just_scanned: bool,
) {
    let retry = interval.min(Duration::from_secs(30));
    if just_scanned {
        tokio::time::sleep(interval).await;
    }
    loop {
        let ok = sync_blocking(&syncer, origin, None).await;
        tokio::time::sleep(if ok { interval } else { retry }).await;
    }
}

fn absorb(
    change: Change,
    root: &Path,
    paths: &mut BTreeSet<OriginPath>,
    rescan: &mut Option<String>,
) {
    match change {
        Change::Rescan(why) => *rescan = Some(why),
        Change::Path(p) => {
            if let Ok(rel) = p.strip_prefix(root)
                && !rel.as_os_str().is_empty()
            {
                paths.insert(OriginPath::new(rel.as_os_str().as_bytes()));
            }
        }
    }
}

async fn sync_blocking(
    syncer: &Arc<Syncer>,
    origin: OriginId,
    paths: Option<BTreeSet<OriginPath>>,
) -> bool {
    let s = Arc::clone(syncer);
    // At background priority: a sync's walk and tag reads yield the CPU
    // and the disk to readers.
    let result = tokio::task::spawn_blocking(move || {
        crate::sys::in_background("sync", || match paths {
            Some(paths) => s.sync_paths(origin, &paths),
            None => s.sync_origin(origin),
        })
    })
    .await;
    match result {
        Ok(Ok(Ok(_))) => true,
        Ok(Ok(Err(e))) => {
            tracing::warn!(%origin, error = %e, "sync failed; will retry later");
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(%origin, error = %e, "cannot start a sync; will retry later");
            false
        }
        Err(e) => {
            tracing::error!(%origin, error = %e, "sync task failed");
            false
        }
    }
}
