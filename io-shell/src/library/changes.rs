//! Telling media servers what changed: `--on-change CMD` and
//! `--notify-mpd HOST:PORT`.
//!
//! FUSE cannot deliver inotify events for changes that happen behind the
//! mount (only deletions, through FUSE_NOTIFY_DELETE), so Jellyfin's
//! real-time monitoring, MPD's `auto_update` and minidlna never fire on
//! their own. After every sync that changes the tree, the folders a media
//! server should look at again ([`TreeDiff::changed_folders`]) are queued
//! here; once changes have been quiet for [`QUIET`] (or [`BATCH_MAX_WAIT`]
//! after the first), one batch goes out:
//! - `--on-change CMD` runs `sh -c CMD` with the changed folders, as
//!   absolute paths in the mount, as its positional parameters (`"$@"`,
//!   `$1`...) and, one per line, in `MUSICFS_CHANGED`, with
//!   `MUSICFS_MOUNTPOINT` set; never two at a time, killed after
//!   [`COMMAND_TIMEOUT`], its result logged;
//! - `--notify-mpd HOST:PORT` sends MPD `update "FOLDER"` for each folder
//!   (relative to the mount: MPD's `music_directory` is the mountpoint), in
//!   one command list, with a bounded wait for its answer.
//!
//! Batches that pile up while one goes out are merged; past
//! [`FOLDERS_MAX`] folders the whole mount is named instead.

use musicfs_core::tree::{TreeDiff, VirtualTree};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Changes quiet this long: the batch goes out.
pub const QUIET: Duration = Duration::from_millis(500);
/// A batch never waits longer than this after its first change.
pub const BATCH_MAX_WAIT: Duration = Duration::from_secs(5);
/// An `--on-change` command running longer is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting to MPD and its answer, each.
pub const MPD_TIMEOUT: Duration = Duration::from_secs(10);
/// More folders than this in one batch: the whole mount is named.
pub const FOLDERS_MAX: usize = 256;
/// Batches queued, at most; past that the oldest are merged into the root.
const QUEUE_MAX: usize = 1024;
/// Bytes of a command's output kept for the log.
const OUTPUT_LOGGED_MAX: usize = 2048;

/// Where change notices go.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    /// `--on-change`: a shell command.
    pub command: Option<String>,
    /// `--notify-mpd`: MPD's address.
    pub mpd: Option<String>,
}

impl Targets {
    /// Whether anyone is to be told.
    pub fn any(&self) -> bool {
        self.command.is_some() || self.mpd.is_some()
    }
}

/// The sending side: handed the tree changes by the syncer.
#[derive(Clone)]
pub struct ChangeQueue {
    tx: mpsc::Sender<BTreeSet<String>>,
    /// A change was dropped (the queue was full): the next batch names the
    /// whole mount.
    overflowed: Arc<AtomicBool>,
}

impl ChangeQueue {
    /// Queues the folders a tree change touched. Never blocks: if the queue
    /// is full, the change is dropped and the next batch names the whole
    /// mount instead (see [`run`]).
    pub fn push(&self, tree: &VirtualTree, diff: &TreeDiff) {
        if diff.is_empty() {
            return;
        }
        let folders = diff.changed_folders(tree, FOLDERS_MAX);
        if folders.is_empty() {
            return;
        }
        if self.tx.try_send(folders).is_err() {
            self.overflowed.store(true, Ordering::SeqCst);
            tracing::warn!("change notices are backed up; the next one names the whole mount");
        }
    }
}

/// A queue and its receiving end, for [`run`].
pub fn queue() -> (ChangeQueue, Receiver) {
    let (tx, rx) = mpsc::channel(QUEUE_MAX);
    let overflowed = Arc::new(AtomicBool::new(false));
    (
        ChangeQueue {
            tx,
            overflowed: Arc::clone(&overflowed),
        },
        Receiver { rx, overflowed },
    )
}

/// The receiving side of a [`ChangeQueue`].
pub struct Receiver {
    rx: mpsc::Receiver<BTreeSet<String>>,
    overflowed: Arc<AtomicBool>,
}

/// Sends batches of changed folders to `targets` until the queue closes.
pub async fn run(receiver: Receiver, mountpoint: PathBuf, targets: Targets) {
    let Receiver { mut rx, overflowed } = receiver;
    while let Some(first) = rx.recv().await {
        let mut folders = first;
        let deadline = tokio::time::Instant::now() + BATCH_MAX_WAIT;
        loop {
            let quiet = tokio::time::Instant::now() + QUIET;
            match tokio::time::timeout_at(quiet.min(deadline), rx.recv()).await {
                Ok(Some(more)) => folders.extend(more),
                Ok(None) | Err(_) => break,
            }
        }
        // A dropped change (a full queue) is folded in as "everything".
        if overflowed.swap(false, Ordering::SeqCst) {
            folders.insert(String::new());
        }
        let folders = minimal(folders);
        if let Some(command) = &targets.command {
            run_command(command, &mountpoint, &folders).await;
        }
        if let Some(addr) = &targets.mpd {
            match notify_mpd(addr, &folders).await {
                Ok(()) => {
                    tracing::info!(mpd = %addr, folders = folders.len(), "MPD told to update")
                }
                Err(e) => tracing::warn!(mpd = %addr, error = %e, "could not tell MPD to update"),
            }
        }
    }
}

/// The folders without those inside another of them (or just the root).
fn minimal(folders: BTreeSet<String>) -> Vec<String> {
    if folders.contains("") || folders.len() > FOLDERS_MAX {
        return vec![String::new()];
    }
    let inside_another = |p: &str| p.match_indices('/').any(|(i, _)| folders.contains(&p[..i]));
    folders
        .iter()
        .filter(|p| !inside_another(p))
        .cloned()
        .collect()
}

/// Runs `sh -c COMMAND` with the folders as absolute paths in the mount.
async fn run_command(command: &str, mountpoint: &Path, folders: &[String]) {
    let paths: Vec<PathBuf> = folders
        .iter()
        .map(|f| {
            if f.is_empty() {
                mountpoint.to_path_buf()
            } else {
                mountpoint.join(f)
            }
        })
        .collect();
    let changed: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .arg("musicfs-on-change")
        .args(&paths)
        .env("MUSICFS_MOUNTPOINT", mountpoint)
        .env("MUSICFS_CHANGED", changed.join("\n"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let output = match tokio::time::timeout(COMMAND_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            tracing::warn!(command, error = %e, "--on-change command could not start");
            return;
        }
        Err(_) => {
            tracing::warn!(command, timeout = ?COMMAND_TIMEOUT, "--on-change command took too long and was killed");
            return;
        }
    };
    let tail = |b: &[u8]| {
        let text = String::from_utf8_lossy(&b[b.len().saturating_sub(OUTPUT_LOGGED_MAX)..]);
        text.trim().to_owned()
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if output.status.success() {
        tracing::info!(command, folders = paths.len(), elapsed_ms, output = %tail(&output.stdout), "--on-change command ran");
    } else {
        tracing::warn!(command, folders = paths.len(), elapsed_ms, status = %output.status, stderr = %tail(&output.stderr), "--on-change command failed");
    }
}

/// Why MPD could not be told.
#[derive(Debug, thiserror::Error)]
pub enum MpdError {
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Not an MPD (no `OK MPD` greeting).
    #[error("not an MPD server (it said {0:?})")]
    NotMpd(String),
    /// MPD refused a command.
    #[error("MPD refused: {0}")]
    Refused(String),
}

/// Quotes `s` as an MPD protocol argument.
pub fn mpd_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `io` within `limit`.
async fn bounded<T>(
    limit: Duration,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, MpdError> {
    match tokio::time::timeout(limit, io).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(MpdError::Timeout(limit)),
    }
}

/// Sends `update FOLDER` for each folder, in one command list.
pub async fn notify_mpd(addr: &str, folders: &[String]) -> Result<(), MpdError> {
    let stream = bounded(MPD_TIMEOUT, tokio::net::TcpStream::connect(addr)).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let greeting = bounded(MPD_TIMEOUT, lines.next_line())
        .await?
        .unwrap_or_default();
    if !greeting.starts_with("OK MPD ") {
        return Err(MpdError::NotMpd(greeting));
    }
    let mut request = String::from("command_list_begin\n");
    for f in folders {
        // MPD's names never start with '/': the root is "update" alone.
        if f.is_empty() {
            request.push_str("update\n");
        } else {
            request.push_str(&format!("update {}\n", mpd_quote(f)));
        }
    }
    request.push_str("command_list_end\n");
    write.write_all(request.as_bytes()).await?;
    loop {
        let line = bounded(MPD_TIMEOUT, lines.next_line()).await?;
        match line {
            Some(l) if l == "OK" => break,
            Some(l) if l.starts_with("ACK") => return Err(MpdError::Refused(l)),
            Some(_) => continue,
            None => {
                return Err(MpdError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "MPD closed the connection",
                )));
            }
        }
    }
    let _ = write.write_all(b"close\n").await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(
            mpd_quote(r#"Sigur Rós/"( )"\x"#),
            r#""Sigur Rós/\"( )\"\\x""#
        );
    }

    #[test]
    fn minimal_drops_folders_inside_others() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            minimal(set(&["A", "A B", "A/One", "B/Two"])),
            vec!["A", "A B", "B/Two"]
        );
        assert_eq!(minimal(set(&["A", ""])), vec![""]);
    }
}
