//! The control socket: `musicfs status` (and friends) ask a running daemon.
//!
//! One Unix socket per mount, in the runtime directory
//! (`$XDG_RUNTIME_DIR/musicfs`, `/run/musicfs` for root, else
//! `/tmp/musicfs-$UID`), named after a hash of the mountpoint. A request is
//! one line of JSON (`{"cmd":"status"}`), the answer one JSON document. The
//! socket is up from the start ([`ControlSocket::bind`], answering `status`
//! from a [`MountStatus`]), so a long first scan can be watched; once the
//! daemon and its services exist, the mount hands it a [`Control`]
//! ([`ControlSocket::serve`]) and it answers everything. [`client`] is the
//! other end.
//! Nothing secret is ever in an answer: origins describe themselves
//! without credentials.

pub mod client;

use crate::exec::daemon::Daemon;
use crate::library::sync::Syncer;
use crate::pins::fill::PinFiller;
use crate::search::live::SearchSlot;
use crate::service::supervisor::{Supervisor, TaskState};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};

/// Longest request line accepted.
const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// A client that says nothing for this long is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Progress of a scan, shared with the progress bar and systemd.
#[derive(Debug, Default)]
pub struct ScanState {
    /// Files found so far.
    pub seen: AtomicU64,
    /// Files read so far.
    pub scanned: AtomicU64,
    /// What is being scanned ("" when idle).
    pub what: Mutex<String>,
}

/// What `musicfs status` shows from the very start: which mount, since
/// when, its phase, and the first scan's progress.
pub struct MountStatus {
    started: Instant,
    mountpoint: PathBuf,
    origins: Vec<String>,
    /// Scan progress.
    pub scan: Arc<ScanState>,
    phase: Mutex<&'static str>,
}

impl MountStatus {
    /// The status of the mount at `mountpoint` with these origins (as
    /// they describe themselves: no secrets).
    pub fn new(mountpoint: &Path, origins: Vec<String>) -> Arc<MountStatus> {
        Arc::new(MountStatus {
            started: Instant::now(),
            mountpoint: mountpoint.to_path_buf(),
            origins,
            scan: Arc::new(ScanState::default()),
            phase: Mutex::new("starting"),
        })
    }

    /// Sets the phase: "scanning", "serving", "stopping".
    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock() = phase;
    }

    /// The status document, without the daemon's part.
    pub fn doc(&self) -> Value {
        let scan = json!({
            "what": self.scan.what.lock().clone(),
            "files_seen": self.scan.seen.load(Ordering::Relaxed),
            "files_scanned": self.scan.scanned.load(Ordering::Relaxed),
        });
        let mut doc = json!({
            "mountpoint": self.mountpoint.display().to_string(),
            "pid": std::process::id(),
            "uptime_secs": self.started.elapsed().as_secs(),
            "phase": *self.phase.lock(),
            "version": crate::VERSION,
            "fuse_protocol": crate::kernel::fuse::kernel_protocol(),
            "scan": scan,
        });
        doc["origins"] = origins_doc(&self.origins, &[]);
        doc
    }
}

/// Each origin with its health (`unknown` before the daemon tracks it).
fn origins_doc(origins: &[String], health: &[(u16, String, u32, Option<String>)]) -> Value {
    origins
        .iter()
        .enumerate()
        .map(|(i, describe)| {
            let h = health.iter().find(|h| usize::from(h.0) == i);
            json!({
                "id": i,
                "origin": describe,
                "health": h.map_or("unknown".to_string(), |h| h.1.clone()),
                "consecutive_failures": h.map_or(0, |h| h.2),
                "last_error": h.and_then(|h| h.3.clone()),
            })
        })
        .collect()
}

/// Everything a running mount answers on its control socket: `status`,
/// `rescan`, `search` and the pin commands.
pub struct Control {
    /// The status shown from the start.
    pub status: Arc<MountStatus>,
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// The supervisor of background tasks.
    pub supervisor: Arc<Supervisor>,
    /// Syncs origins (`musicfs rescan`).
    pub syncer: Arc<Syncer>,
    /// The search index, once open.
    pub search: Arc<SearchSlot>,
    /// Fetches what pinned files lack (`musicfs pin`).
    pub pin_filler: Arc<PinFiller>,
    /// The cache directory (a search names the library by it).
    pub cache_dir: PathBuf,
    /// Where the Prometheus metrics are served (`--metrics-addr`).
    pub metrics_addr: Option<SocketAddr>,
}

impl Control {
    /// The status document.
    pub fn status(&self) -> Value {
        let mut doc = self.status.doc();
        if let Some(addr) = self.metrics_addr {
            doc["metrics"] = json!(format!("http://{addr}/metrics"));
        }
        let health: Vec<(u16, String, u32, Option<String>)> = self.daemon.inspect(|e| {
            e.origin_statuses()
                .into_iter()
                .map(|s| {
                    (
                        s.origin.0,
                        s.health.to_string(),
                        s.consecutive_failures,
                        s.last_error,
                    )
                })
                .collect()
        });
        doc["origins"] = origins_doc(&self.status.origins, &health);
        // What each origin was asked: a scan through the mount that the
        // cache answers costs its origin nothing, and this shows it.
        if let Some(list) = doc["origins"].as_array_mut() {
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            for (entry, o) in list.iter_mut().zip(&self.daemon.io_stats.origins) {
                entry["requests"] = json!(load(&o.requests) + load(&o.passthrough_reads));
                entry["bytes_read"] = json!(load(&o.fetched_bytes) + load(&o.passthrough_bytes));
            }
        }
        let x = self.daemon.exec_stats();
        let writes_pending = self.daemon.writes_pending();
        doc["cache"] = self.daemon.inspect(|e| {
            let s = e.stats();
            let answered = s.reads_served + s.reads_passthrough;
            let (files, bytes, fills) = e.fills_waiting();
            let fill_behind = json!({"files_waiting": files, "bytes_waiting": bytes, "fills_in_flight": fills, "files_filled": s.fills_behind});
            json!({
                "bytes": e.cache().bytes(),
                "capacity_bytes": e.cache().capacity_bytes(),
                "chunks": e.cache().len(),
                "hit_ratio": if answered == 0 { Value::Null } else { json!(s.reads_hit as f64 / answered as f64) },
                "passthrough": e.in_passthrough(),
                "reads_served": s.reads_served,
                // Of those: answered from memory (kept bytes read ahead of a
                // scan, or just fetched), or with chunk files read.
                "reads_from_memory": x.served_from_memory,
                // Of those: waited for a read-ahead still under way.
                "reads_waited_for_read_ahead": x.waited_for_read_ahead,
                "reads_from_disk": x.served_from_disk,
                "chunks_read_ahead": x.chunks_warmed,
                // Kept bytes handed to the kernel's page cache before a
                // scan asked: runs handed over, bytes it took, and files
                // whose pages were dropped again (the tree changed).
                "pages_primed_runs": x.primed_runs,
                "pages_primed_bytes": self.daemon.io_stats.primed_bytes.load(std::sync::atomic::Ordering::Relaxed),
                "pages_primed_dropped": self.daemon.io_stats.primes_dropped.load(std::sync::atomic::Ordering::Relaxed),
                "memory_released_bytes": x.memory_released_bytes,
                "file_opens": self.daemon.io_stats.file_opens.load(std::sync::atomic::Ordering::Relaxed),
                "file_flushes": self.daemon.io_stats.file_flushes.load(std::sync::atomic::Ordering::Relaxed),
                "reads_failed": s.reads_failed,
                "reads_passthrough": s.reads_passthrough,
                // Of those: answered with origin bytes read ahead of them.
                "reads_passthrough_read_ahead": x.served_read_ahead,
                "fetched_bytes": s.fetched_bytes,
                "chunks_dropped": s.chunks_dropped,
                "chunks_evicted": s.chunks_evicted,
                "reads_in_flight": e.reads_in_flight(),
                "fetches_in_flight": e.fetches_in_flight(),
                // Cut chunks still on their way to the cache disk.
                "writes_pending": writes_pending,
                // Reads of fill=behind origins answered from the origin,
                // whose bytes are still to be cached (and the fills under
                // way): 0 and 0 once the cache holds what was read.
                "fill_behind": fill_behind,
                "tracks": e.tree().file_count(),
            })
        });
        doc["pins"] = self.daemon.inspect(crate::pins::summary);
        doc["tasks"] = self
            .supervisor
            .statuses()
            .into_iter()
            .map(|t| {
                let (state, error) = match t.state {
                    TaskState::Running => ("running", None),
                    TaskState::Restarting { error } => ("restarting", Some(error)),
                    TaskState::Failed { error } => ("failed", Some(error)),
                    TaskState::Finished => ("finished", None),
                    TaskState::Stopped => ("stopped", None),
                };
                json!({"name": t.name, "critical": t.critical, "state": state, "restarts": t.restarts, "error": error})
            })
            .collect();
        doc
    }

    /// Syncs every origin now (blocking: called on the blocking pool).
    fn rescan(&self) -> Value {
        tracing::info!("rescan asked (musicfs rescan)");
        let syncer = &self.syncer;
        let origins: Vec<Value> = (0..syncer.origins())
            .map(|i| match syncer.sync_origin(musicfs_core::OriginId(i as u16)) {
                Ok(r) => json!({"id": i, "read": r.reread, "removed": r.removed, "moved": r.moved, "unchanged": r.unchanged}),
                Err(e) => json!({"id": i, "error": e.to_string()}),
            })
            .collect();
        json!({ "rescan": origins })
    }

    /// A search, if it is for this mount's library and the index is open.
    fn search(&self, request: &Value) -> Value {
        // Asked through this mount's own socket (`search --mount`), or by a
        // client looking for the daemon of a cache directory.
        let this_mount = request["mount"].as_bool() == Some(true);
        let same_library = this_mount
            || request["cache_dir"]
                .as_str()
                .map(PathBuf::from)
                .and_then(|d| d.canonicalize().ok())
                .is_some_and(|d| self.cache_dir.canonicalize().is_ok_and(|c| c == d));
        let live = self.search.get();
        let (Some(live), true) = (live, same_library) else {
            return json!({"error": "not this library, or its index is not open yet"});
        };
        let query = request["query"].as_str().unwrap_or_default();
        let limit = request["limit"].as_u64().map_or(50, |l| l as usize);
        match live.search(query, limit) {
            Ok(paths) => json!({ "paths": paths, "mountpoint": self.status.mountpoint }),
            Err(e @ crate::search::SearchError::BadQuery(_)) => json!({"bad_query": e.to_string()}),
            Err(e) => json!({"error": e.to_string()}),
        }
    }

    /// `pin`, `unpin`, `pin_pause`, `pin_state` and `pins`.
    fn pins(&self, cmd: &str, request: &Value) -> Value {
        use crate::pins;
        let (daemon, filler) = (&self.daemon, &self.pin_filler);
        let live = self.search.get().map(Arc::as_ref);
        let named = || {
            pins::Target::from_request(request)
                .map_err(|e| json!({ "error": e.to_string() }))
                .and_then(|t| pins::resolve(daemon, live, &t))
        };
        match cmd {
            "pin" => named().map_or_else(|e| e, |inos| pins::pin(daemon, filler, &inos)),
            "unpin" => named().map_or_else(|e| e, |inos| pins::unpin(daemon, filler, &inos)),
            "pin_pause" => pins::pause(daemon, filler, &pins::inos_of(request)),
            "pin_state" => pins::state(daemon, filler, &pins::inos_of(request)),
            _ => pins::list(daemon),
        }
    }
}

/// Who answers a request: the status alone while the mount starts, then
/// the running mount.
#[derive(Clone)]
enum Answerer {
    Starting(Arc<MountStatus>),
    Serving(Arc<Control>),
}

impl Answerer {
    fn answer(&self, request: &str) -> Value {
        let parsed = serde_json::from_str::<Value>(request).unwrap_or(Value::Null);
        let cmd = parsed.get("cmd").and_then(Value::as_str).map(str::to_owned);
        match (self, cmd.as_deref()) {
            (Answerer::Starting(status), Some("status")) => status.doc(),
            (Answerer::Serving(c), Some("status")) => c.status(),
            (Answerer::Serving(c), Some("search")) => c.search(&parsed),
            (Answerer::Serving(c), Some("rescan")) => c.rescan(),
            (
                Answerer::Serving(c),
                Some(cmd @ ("pin" | "unpin" | "pin_pause" | "pin_state" | "pins")),
            ) => c.pins(cmd, &parsed),
            (Answerer::Starting(_), Some("search")) => {
                json!({"error": "not this library, or its index is not open yet"})
            }
            (
                Answerer::Starting(_),
                Some("rescan" | "pin" | "unpin" | "pin_pause" | "pin_state" | "pins"),
            ) => json!({"error": "not mounted yet"}),
            (_, Some(other)) => json!({"error": format!("unknown command '{other}'")}),
            (_, None) => json!({"error": "a request is one line of JSON: {\"cmd\":\"status\"}"}),
        }
    }
}

/// Where control sockets live: `$XDG_RUNTIME_DIR/musicfs` (a login
/// session's user), else systemd's `$RUNTIME_DIRECTORY` (the units'
/// `RuntimeDirectory=musicfs`, /run/musicfs), else `/run/musicfs` for root
/// and `/tmp/musicfs-$UID` for anyone else.
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("musicfs");
    }
    if let Some(dir) = std::env::var("RUNTIME_DIRECTORY")
        .ok()
        .and_then(|d| d.split(':').next().map(str::to_owned))
        .filter(|d| d.starts_with('/'))
    {
        return PathBuf::from(dir);
    }
    let uid = crate::sys::geteuid();
    if uid == 0 {
        PathBuf::from("/run/musicfs")
    } else {
        PathBuf::from(format!("/tmp/musicfs-{uid}"))
    }
}

/// The file name of the control socket of the mount at `mountpoint`: a
/// hash of the path as the mount table shows it.
pub fn socket_name(mountpoint: &Path) -> String {
    let canonical = crate::sys::mount_table_path(mountpoint);
    let hash = xxhash_rust::xxh3::xxh3_64(canonical.as_os_str().as_encoded_bytes());
    format!("{hash:016x}.sock")
}

/// The control socket of the mount at `mountpoint`, in this user's
/// [`runtime_dir`] (where this process's daemon puts it).
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    runtime_dir().join(socket_name(mountpoint))
}

/// The control socket of a mount: removed when dropped.
pub struct ControlSocket {
    path: PathBuf,
    answerer: Arc<RwLock<Answerer>>,
}

impl ControlSocket {
    /// Binds the socket of the mount `status` describes and serves it until
    /// the runtime stops; until [`ControlSocket::serve`], it answers
    /// `status` from `status` alone.
    pub fn bind(
        status: &Arc<MountStatus>,
        rt: &tokio::runtime::Handle,
    ) -> std::io::Result<ControlSocket> {
        let path = socket_path(&status.mountpoint);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let _ = std::fs::remove_file(&path); // a leftover from a killed daemon
        let listener = {
            let _guard = rt.enter();
            tokio::net::UnixListener::bind(&path)?
        };
        let answerer = Arc::new(RwLock::new(Answerer::Starting(Arc::clone(status))));
        let shared = Arc::clone(&answerer);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let answerer = Arc::clone(&shared);
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut line = String::new();
                    let mut reader = BufReader::new(read.take(REQUEST_BYTES_MAX as u64));
                    let got =
                        tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
                    if matches!(got, Ok(Ok(n)) if n > 0) {
                        // Not under the lock: a rescan may take minutes.
                        let answerer = answerer.read().clone();
                        let answer =
                            tokio::task::spawn_blocking(move || answerer.answer(line.trim()))
                                .await
                                .unwrap_or_else(|e| json!({"error": e.to_string()}));
                        let mut text = answer.to_string();
                        text.push('\n');
                        let _ = write.write_all(text.as_bytes()).await;
                    }
                });
            }
        });
        Ok(ControlSocket { path, answerer })
    }

    /// From now on every request is answered by `control`.
    pub fn serve(&self, control: Arc<Control>) {
        *self.answerer.write() = Answerer::Serving(control);
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
