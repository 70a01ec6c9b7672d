//! Live changes of origins. Local ones: inotify (through the `notify` crate),
//! debounced, turned into delta syncs of exactly the paths that changed.
//!
//! Bursts are gathered until the origin has been quiet for the debounce
//! time (a file being copied produces hundreds of events; a retag tool
//! writes in several steps), bounded by a longest wait so a busy origin is
//! still synced. A lost event (inotify queue overflow) or a watcher error
//! means nothing can be trusted: the whole origin is synced.

use crate::library::sync::Syncer;
use musicfs_core::{OriginId, OriginPath};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time before a burst of changes is synced.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest a burst is gathered before syncing anyway.
pub const BURST_MAX: Duration = Duration::from_millis(1500);

/// What the watcher callback hands to the sync loop.
enum Seen {
    Paths(Vec<PathBuf>),
    /// Events were lost or the watcher failed: sync everything.
    Rescan(String),
}

/// An origin that cannot be watched (the supervisor tries again later).
#[derive(Debug, thiserror::Error)]
#[error("cannot watch '{}': {source}", root.display())]
pub struct WatchError {
    /// The origin's folder.
    pub root: PathBuf,
    /// inotify's error.
    #[source]
    pub source: notify::Error,
}

/// Watches one local origin until the task is stopped; every burst of
/// changes becomes one sync. Returns an error if the watch cannot be set
/// up (the supervisor then retries later).
pub async fn watch_origin(
    syncer: Arc<Syncer>,
    origin: OriginId,
    root: PathBuf,
) -> Result<(), WatchError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |res: notify::Result<notify::Event>| {
        if let Some(seen) = classify(res) {
            let _ = tx.send(seen);
        }
    };
    // Watching walks every folder of the origin: on a thread of its own,
    // at background priority, beside the readers of a fresh mount rather
    // than before them (and never on a runtime worker).
    let watch_root = root.clone();
    let watcher = tokio::task::spawn_blocking(move || {
        crate::sys::in_background("watch-origin", || {
            let mut watcher = notify::RecommendedWatcher::new(handler, watch_config())?;
            watcher.watch(&watch_root, RecursiveMode::Recursive)?;
            Ok(watcher)
        })
        .map_err(notify::Error::io)
        .and_then(|r| r)
    })
    .await
    .map_err(|e| notify::Error::generic(&format!("watch task failed: {e}")))
    .and_then(|r| r);
    let _watcher = watcher.map_err(|source| WatchError {
        root: root.clone(),
        source,
    })?;
    tracing::info!(%origin, root = %root.display(), "watching for changes");
    // Catch up with what changed before the watch existed.
    sync_blocking(&syncer, origin, None).await;
    while let Some(first) = rx.recv().await {
        let mut paths = BTreeSet::new();
        let mut rescan = None;
        absorb(first, &root, &mut paths, &mut rescan);
        let burst_end = tokio::time::Instant::now() + BURST_MAX;
        loop {
            let quiet = tokio::time::sleep(DEBOUNCE);
            tokio::select! {
                more = rx.recv() => match more {
                    Some(seen) => absorb(seen, &root, &mut paths, &mut rescan),
                    None => return Ok(()),
                },
                _ = quiet => break,
            }
            if tokio::time::Instant::now() >= burst_end {
                break;
            }
        }
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
    Ok(())
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

/// What the kernel is asked to report: changes and a written file's close,
/// not opens or reads. An origin of 200,000 tracks has some 10,000 folders;
/// the catch-up sync's own walk opens each, and with opens watched that
/// alone overflowed inotify's queue (16,384 events by default), which
/// costs a second sync of the whole origin. So would any backup or player
/// reading the origin directly.
fn watch_config() -> notify::Config {
    use notify::EventKindMask;
    notify::Config::default().with_event_kinds(EventKindMask::CORE | EventKindMask::ACCESS_CLOSE)
}

/// What one watcher event means for the sync loop; `None` for events that
/// change nothing. notify watches opens too (`IN_OPEN`): without this
/// filter every read of an origin file, every directory a walk opens (our
/// own catch-up sync's included) and every player reading the origin
/// directly would start a sync of that path.
fn classify(res: notify::Result<notify::Event>) -> Option<Seen> {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    match res {
        Ok(event) if event.need_rescan() => {
            Some(Seen::Rescan("the kernel dropped file events".into()))
        }
        Ok(event) => match event.kind {
            // A file written and closed is the end of a change; every other
            // access (open, read, a close after reading) leaves it as it was.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                Some(Seen::Paths(event.paths))
            }
            EventKind::Access(_) => None,
            _ => Some(Seen::Paths(event.paths)),
        },
        Err(e) => Some(Seen::Rescan(format!("watcher error: {e}"))),
    }
}

fn absorb(seen: Seen, root: &Path, paths: &mut BTreeSet<OriginPath>, rescan: &mut Option<String>) {
    match seen {
        Seen::Rescan(why) => *rescan = Some(why),
        Seen::Paths(list) => {
            for p in list {
                if let Ok(rel) = p.strip_prefix(root)
                    && !rel.as_os_str().is_empty()
                {
                    paths.insert(OriginPath::new(rel.as_os_str().as_bytes()));
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc;

    /// Runs `action` under a real inotify watch of `dir` and returns how
    /// many raw events the kernel delivered and what [`classify`] kept.
    fn watched(dir: &Path, action: impl FnOnce()) -> (usize, Vec<Seen>) {
        let (tx, rx) = mpsc::channel();
        let handler = move |res| {
            let _ = tx.send(res);
        };
        let mut watcher =
            notify::RecommendedWatcher::new(handler, watch_config()).expect("inotify watcher");
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .expect("watch the temp dir");
        action();
        let mut raw = 0;
        let mut kept = Vec::new();
        while let Ok(res) = rx.recv_timeout(Duration::from_millis(300)) {
            raw += 1;
            kept.extend(classify(res));
        }
        (raw, kept)
    }

    #[test]
    fn reading_an_origin_reports_nothing_but_writing_does() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("album")).unwrap();
        let track = dir.path().join("album/01.flac");
        std::fs::write(&track, b"fLaC and some audio").unwrap();

        // What a player, a scanner or our own sync walk does, over many
        // folders: the kernel is not even asked to report it, so no walk
        // can overflow its queue.
        for i in 0..200 {
            std::fs::create_dir(dir.path().join(format!("album/{i}"))).unwrap();
        }
        let (raw, kept) = watched(dir.path(), || {
            let mut bytes = Vec::new();
            std::fs::File::open(&track)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            for entry in walkdir::WalkDir::new(dir.path()) {
                entry.unwrap().metadata().unwrap();
            }
        });
        assert_eq!((raw, kept.len()), (0, 0), "reads and walks were reported");

        let (_, kept) = watched(dir.path(), || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&track)
                .unwrap();
            f.write_all(b" retagged").unwrap();
        });
        let named: Vec<PathBuf> = kept
            .into_iter()
            .flat_map(|s| match s {
                Seen::Paths(p) => p,
                Seen::Rescan(why) => panic!("unexpected rescan: {why}"),
            })
            .collect();
        assert!(
            named.iter().any(|p| p.ends_with("album/01.flac")),
            "{named:?}"
        );
    }
}
