//! The control socket: `musicfs status` (and friends) ask a running daemon.
//!
//! One Unix socket per mount, in the runtime directory
//! (`$XDG_RUNTIME_DIR/musicfs`, `/run/musicfs` for root, else
//! `/tmp/musicfs-$UID`), named after a hash of the mountpoint. A request is
//! one line of JSON (`{"cmd":"status"}`), the answer one JSON document. The
//! socket is up from the start, so a long first scan can be watched.
//! Nothing secret is ever in an answer: origins describe themselves
//! without credentials.

use crate::exec::daemon::Daemon;
use crate::service::supervisor::{Supervisor, TaskState};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

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

/// Everything `musicfs status` reports.
pub struct Control {
    started: Instant,
    mountpoint: PathBuf,
    origins: Vec<String>,
    /// Scan progress.
    pub scan: Arc<ScanState>,
    /// The daemon, once the tree is built.
    pub daemon: OnceLock<Arc<Daemon>>,
    /// The supervisor of background tasks.
    pub supervisor: OnceLock<Arc<Supervisor>>,
    /// Syncs origins (`musicfs rescan`).
    pub syncer: OnceLock<Arc<crate::library::sync::Syncer>>,
    /// The search index, once open.
    pub search: OnceLock<Arc<OnceLock<Arc<crate::search::live::LiveSearch>>>>,
    /// Fetches what pinned files lack (`musicfs pin`).
    pub pin_filler: OnceLock<Arc<crate::pins::fill::PinFiller>>,
    /// The cache directory (a search names the library by it).
    pub cache_dir: PathBuf,
    /// "scanning", "serving", "stopping".
    pub phase: Mutex<&'static str>,
    /// Where the Prometheus metrics are served (`--metrics-addr`).
    pub metrics_addr: OnceLock<std::net::SocketAddr>,
}

impl Control {
    /// Control state for the mount at `mountpoint` with these origins.
    pub fn new(mountpoint: &Path, cache_dir: &Path, origins: Vec<String>) -> Arc<Control> {
        Arc::new(Control {
            started: Instant::now(),
            mountpoint: mountpoint.to_path_buf(),
            origins,
            scan: Arc::new(ScanState::default()),
            daemon: OnceLock::new(),
            supervisor: OnceLock::new(),
            syncer: OnceLock::new(),
            search: OnceLock::new(),
            pin_filler: OnceLock::new(),
            cache_dir: cache_dir.to_path_buf(),
            phase: Mutex::new("starting"),
            metrics_addr: OnceLock::new(),
        })
    }

    /// Sets the phase.
    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock() = phase;
    }

    /// The status document.
    pub fn status(&self) -> Value {
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
        if let Some(addr) = self.metrics_addr.get() {
            doc["metrics"] = json!(format!("http://{addr}/metrics"));
        }
        let health: Vec<(u16, String, u32, Option<String>)> = self
            .daemon
            .get()
            .map(|d| {
                d.inspect(|e| {
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
                })
            })
            .unwrap_or_default();
        doc["origins"] = self
            .origins
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
            .collect();
        if let Some(d) = self.daemon.get() {
            doc["cache"] = d.inspect(|e| {
                let s = e.stats();
                let answered = s.reads_served + s.reads_passthrough;
                json!({
                    "bytes": e.cache().bytes(),
                    "capacity_bytes": e.cache().capacity_bytes(),
                    "chunks": e.cache().len(),
                    "hit_ratio": if answered == 0 { Value::Null } else { json!(s.reads_hit as f64 / answered as f64) },
                    "passthrough": e.in_passthrough(),
                    "reads_served": s.reads_served,
                    "reads_failed": s.reads_failed,
                    "reads_passthrough": s.reads_passthrough,
                    "fetched_bytes": s.fetched_bytes,
                    "chunks_dropped": s.chunks_dropped,
                    "chunks_evicted": s.chunks_evicted,
                    "reads_in_flight": e.reads_in_flight(),
                    "fetches_in_flight": e.fetches_in_flight(),
                    "tracks": e.tree().file_count(),
                })
            });
            doc["pins"] = d.inspect(crate::pins::summary);
        }
        if let Some(sup) = self.supervisor.get() {
            doc["tasks"] = sup
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
        }
        doc
    }

    /// Syncs every origin now (blocking: called on the blocking pool).
    fn rescan(&self) -> Value {
        tracing::info!("rescan asked (musicfs rescan)");
        let Some(syncer) = self.syncer.get() else {
            return json!({"error": "not mounted yet"});
        };
        let origins: Vec<Value> = (0..syncer.origins())
            .map(|i| match syncer.sync_origin(musicfs_core::OriginId(i as u16)) {
                Ok(r) => json!({"id": i, "read": r.reread, "removed": r.removed, "moved": r.moved, "unchanged": r.unchanged}),
                Err(e) => json!({"id": i, "error": e}),
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
        let live = self.search.get().and_then(|s| s.get());
        let (Some(live), true) = (live, same_library) else {
            return json!({"error": "not this library, or its index is not open yet"});
        };
        let query = request["query"].as_str().unwrap_or_default();
        let limit = request["limit"].as_u64().map_or(50, |l| l as usize);
        match live.search(query, limit) {
            Ok(paths) => json!({ "paths": paths, "mountpoint": self.mountpoint }),
            Err(e @ crate::search::SearchError::BadQuery(_)) => json!({"bad_query": e.to_string()}),
            Err(e) => json!({"error": e.to_string()}),
        }
    }

    /// `pin`, `unpin`, `pin_pause`, `pin_state` and `pins`.
    fn pins(&self, cmd: &str, request: &Value) -> Value {
        use crate::pins;
        let (Some(daemon), Some(filler)) = (self.daemon.get(), self.pin_filler.get()) else {
            return json!({"error": "not mounted yet"});
        };
        let live = self.search.get().and_then(|s| s.get()).map(Arc::as_ref);
        let named = || {
            pins::Target::from_request(request)
                .map_err(|e| json!({ "error": e }))
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

    fn answer(self: &Arc<Self>, request: &str) -> Value {
        let parsed = serde_json::from_str::<Value>(request).unwrap_or(Value::Null);
        let cmd = parsed.get("cmd").and_then(Value::as_str).map(str::to_owned);
        match cmd.as_deref() {
            Some("search") => self.search(&parsed),
            Some("status") => self.status(),
            Some("rescan") => self.rescan(),
            Some(cmd @ ("pin" | "unpin" | "pin_pause" | "pin_state" | "pins")) => {
                self.pins(cmd, &parsed)
            }
            Some(other) => json!({"error": format!("unknown command '{other}'")}),
            None => json!({"error": "a request is one line of JSON: {\"cmd\":\"status\"}"}),
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
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
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

/// Why [`find_socket`] found no socket to ask.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// No MusicFS mount there, and no daemon starting there either.
    #[error("there is no MusicFS mount at '{0}'")]
    NotMounted(String),
    /// The socket is in a directory this user may not read.
    #[error("the mount at '{shown}' is run by another user ({}); run status as that user or root", uid.map_or("uid unknown".to_owned(), |u| format!("uid {u}")))]
    OtherUser {
        /// The mountpoint, as given.
        shown: String,
        /// Its daemon's user, from the mount table.
        uid: Option<u32>,
    },
    /// A MusicFS mount without a socket where its daemon would put it.
    #[error("the mount at '{shown}' (run by {}) has no control socket in {looked}; its daemon may have been killed, or runs with an XDG_RUNTIME_DIR of its own", uid.map_or("an unknown user".to_owned(), |u| format!("uid {u}")))]
    NoSocket {
        /// The mountpoint, as given.
        shown: String,
        /// Its daemon's user, from the mount table.
        uid: Option<u32>,
        /// The directories looked in.
        looked: String,
    },
}

/// The directories where a daemon run by `uid` (or by this user) puts its
/// control socket, this user's first.
fn socket_dirs(uid: Option<u32>) -> Vec<PathBuf> {
    let mut dirs = vec![runtime_dir(), PathBuf::from("/run/musicfs")];
    if let Some(uid) = uid {
        dirs.push(PathBuf::from(format!("/run/user/{uid}/musicfs")));
        dirs.push(PathBuf::from(format!("/tmp/musicfs-{uid}")));
    }
    dirs.dedup();
    dirs
}

/// The control socket of the mount at `mountpoint`, whoever runs it: this
/// user's runtime directory, then where a daemon of the mount's user
/// (`user_id=` in the mount table) would put it: `/run/musicfs` (root and
/// the systemd units), `/run/user/UID/musicfs`, `/tmp/musicfs-UID`. A
/// directory this user may not enter is reported as another user's mount.
pub fn find_socket(mountpoint: &Path) -> Result<PathBuf, FindError> {
    let shown = mountpoint.display().to_string();
    let name = socket_name(mountpoint);
    let mount = crate::sys::mount_at(mountpoint)
        .ok()
        .flatten()
        .filter(crate::sys::MountEntry::is_musicfs);
    let uid = mount.as_ref().and_then(|m| m.user_id);
    let dirs = socket_dirs(uid);
    let mut denied = false;
    for dir in &dirs {
        let path = dir.join(&name);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
    }
    if denied {
        return Err(FindError::OtherUser { shown, uid });
    }
    if mount.is_none() {
        return Err(FindError::NotMounted(shown));
    }
    let looked = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(FindError::NoSocket { shown, uid, looked })
}

/// Asks the daemon of the mount at `mountpoint` (see [`find_socket`]);
/// the error is one line for the user.
pub fn ask(mountpoint: &Path, cmd: &Value, timeout: Duration) -> Result<Value, String> {
    let socket = find_socket(mountpoint).map_err(|e| e.to_string())?;
    request(&socket, cmd, timeout).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            let uid = crate::sys::mount_at(mountpoint)
                .ok()
                .flatten()
                .and_then(|m| m.user_id);
            FindError::OtherUser {
                shown: mountpoint.display().to_string(),
                uid,
            }
            .to_string()
        } else {
            format!(
                "no daemon answers for '{}' at {}: {e}",
                mountpoint.display(),
                socket.display()
            )
        }
    })
}

/// The sockets of every MusicFS mount this user can reach: those in this
/// user's runtime directory, and those of the mounts in the mount table
/// (another user's, for root).
pub fn reachable_sockets() -> Vec<PathBuf> {
    let mut out = all_sockets();
    for m in crate::sys::mounts()
        .unwrap_or_default()
        .iter()
        .filter(|m| m.is_musicfs())
    {
        if let Ok(socket) = find_socket(&m.mount_point)
            && !out.contains(&socket)
        {
            out.push(socket);
        }
    }
    out
}

/// Serves the control socket until the runtime stops; removes it on drop of
/// the returned guard.
pub fn serve(control: Arc<Control>, rt: &tokio::runtime::Handle) -> std::io::Result<SocketGuard> {
    let path = socket_path(&control.mountpoint);
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
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let control = Arc::clone(&control);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(read.take(REQUEST_BYTES_MAX as u64));
                let got = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
                if matches!(got, Ok(Ok(n)) if n > 0) {
                    let c = Arc::clone(&control);
                    let answer = tokio::task::spawn_blocking(move || c.answer(line.trim()))
                        .await
                        .unwrap_or_else(|e| json!({"error": e.to_string()}));
                    let mut text = answer.to_string();
                    text.push('\n');
                    let _ = write.write_all(text.as_bytes()).await;
                }
            });
        }
    });
    Ok(SocketGuard { path })
}

use tokio::io::AsyncReadExt as _;

/// Removes the control socket when dropped.
pub struct SocketGuard {
    path: PathBuf,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one request to the daemon listening at `socket` and waits up to
/// `timeout` for the answer.
pub fn request(socket: &Path, cmd: &Value, timeout: Duration) -> std::io::Result<Value> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut line = cmd.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Every control socket in the runtime directory.
pub fn all_sockets() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(runtime_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `musicfs status` as text.
pub fn render_status(doc: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    out.push_str(&format!(
        "{}  (pid {}, {}, up {}s)\n",
        s(&doc["mountpoint"]),
        doc["pid"],
        s(&doc["phase"]),
        doc["uptime_secs"]
    ));
    out.push_str(&format!(
        "  musicfs {}, FUSE protocol {}\n",
        s(&doc["version"]),
        s(&doc["fuse_protocol"])
    ));
    if let Some(url) = doc["metrics"].as_str() {
        out.push_str(&format!("  metrics: {url}\n"));
    }
    let scan = &doc["scan"];
    if scan["what"].as_str().is_some_and(|w| !w.is_empty()) {
        out.push_str(&format!(
            "  scanning {}: {} of {} files\n",
            s(&scan["what"]),
            scan["files_scanned"],
            scan["files_seen"]
        ));
    }
    out.push_str("  origins:\n");
    for o in doc["origins"].as_array().into_iter().flatten() {
        let err = o["last_error"]
            .as_str()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "    [{}] {:<10} {}{}\n",
            o["id"],
            s(&o["health"]),
            s(&o["origin"]),
            err
        ));
    }
    let c = &doc["cache"];
    if c.is_object() {
        let mib = |v: &Value| v.as_u64().unwrap_or(0) as f64 / (1 << 20) as f64;
        let ratio = c["hit_ratio"]
            .as_f64()
            .map_or("n/a".into(), |r| format!("{:.1}%", r * 100.0));
        out.push_str(&format!(
            "  cache: {:.1} of {:.0} MiB, {} chunks, hit ratio {}{}\n",
            mib(&c["bytes"]),
            mib(&c["capacity_bytes"]),
            c["chunks"],
            ratio,
            if c["passthrough"].as_bool() == Some(true) {
                ", PASSTHROUGH (cache disk failing)"
            } else {
                ""
            }
        ));
        out.push_str(&format!(
            "  tracks: {}; reads in flight {}, fetches {}; failed reads {}\n",
            c["tracks"], c["reads_in_flight"], c["fetches_in_flight"], c["reads_failed"]
        ));
    }
    let p = &doc["pins"];
    if p["files"].as_u64().unwrap_or(0) > 0 {
        let mib = |v: &Value| v.as_u64().unwrap_or(0) as f64 / (1 << 20) as f64;
        out.push_str(&format!(
            "  pins: {} files ({:.1} MiB), {} fully cached ({:.1} MiB cached); at most {:.0} MiB may be pinned\n",
            p["files"],
            mib(&p["bytes"]),
            p["full"],
            mib(&p["cached_bytes"]),
            mib(&p["limit_bytes"]),
        ));
    }
    if let Some(tasks) = doc["tasks"].as_array() {
        out.push_str("  tasks:");
        for t in tasks {
            out.push_str(&format!(" {}={}", s(&t["name"]), s(&t["state"])));
            if t["restarts"].as_u64().unwrap_or(0) > 0 {
                out.push_str(&format!("(restarted {}x)", t["restarts"]));
            }
        }
        out.push('\n');
    }
    out
}
