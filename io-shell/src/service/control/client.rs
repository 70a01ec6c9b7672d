//! The client end of the control socket: finding a mount's socket (whoever
//! runs it), asking it, and showing `musicfs status`.

pub use super::socket_path;
use super::{runtime_dir, socket_name};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Why [`ask`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No socket to ask.
    #[error(transparent)]
    Find(#[from] FindError),
    /// The socket is there, but no daemon answers on it.
    #[error("no daemon answers for '{}' at {}: {source}", mountpoint.display(), socket.display())]
    NoAnswer {
        /// The mountpoint, as given.
        mountpoint: PathBuf,
        /// The socket asked.
        socket: PathBuf,
        /// Why the request failed.
        #[source]
        source: std::io::Error,
    },
}

/// Asks the daemon of the mount at `mountpoint` (see [`find_socket`]).
pub fn ask(mountpoint: &Path, cmd: &Value, timeout: Duration) -> Result<Value, AskError> {
    let socket = find_socket(mountpoint)?;
    request(&socket, cmd, timeout).map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            let uid = crate::sys::mount_at(mountpoint)
                .ok()
                .flatten()
                .and_then(|m| m.user_id);
            AskError::Find(FindError::OtherUser {
                shown: mountpoint.display().to_string(),
                uid,
            })
        } else {
            AskError::NoAnswer {
                mountpoint: mountpoint.to_path_buf(),
                socket: socket.clone(),
                source,
            }
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
        let asked = match (o["requests"].as_u64(), o["bytes_read"].as_u64()) {
            (Some(n), Some(b)) => format!(
                ", {n} requests, {:.1} MiB read",
                b as f64 / (1 << 20) as f64
            ),
            _ => String::new(),
        };
        out.push_str(&format!(
            "    [{}] {:<10} {}{}{}\n",
            o["id"],
            s(&o["health"]),
            s(&o["origin"]),
            asked,
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
        let fb = &c["fill_behind"];
        let waiting = fb["files_waiting"].as_u64().unwrap_or(0);
        let filling = fb["fills_in_flight"].as_u64().unwrap_or(0);
        if waiting + filling > 0 {
            out.push_str(&format!(
                "  caching behind readers: {waiting} files ({:.1} MiB read) waiting, {filling} fills under way\n",
                mib(&fb["bytes_waiting"]),
            ));
        }
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
