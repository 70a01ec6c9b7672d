//! SFTP origins: a directory on an SSH server.
//!
//! # Why the openssh crates, not OpenDAL's SFTP service nor russh
//!
//! S3 goes through OpenDAL (see [`super::s3`]), and OpenDAL has an SFTP
//! service too; one crate for both was the first choice. Its SFTP service
//! is a thin layer over `openssh` + `openssh-sftp-client`, and that layer
//! does not fit a read-only music origin (opendal-service-sftp 0.59):
//!
//! - on every new connection it *creates* the root directory, component by
//!   component, on the server: a typo in the path becomes an empty library
//!   instead of an error, and a read-only origin writes;
//! - its lister `unwrap()`s each file name as UTF-8, so one Latin-1 file
//!   name from an old rip panics the listing, and its paths are `&str`, so
//!   such files cannot even be read;
//! - it cannot be given a known_hosts file, an ssh config file or a
//!   connect timeout: tests would have to write into the user's real
//!   `~/.ssh/known_hosts` or accept unknown hosts;
//! - each read is a canonicalize, an open and a seek before the data.
//!
//! So SFTP uses those same two crates directly: the same well-kept stack
//! (openssh-rust), without the wrapper. The alternative, **russh** +
//! **russh-sftp** (pure Rust, no `ssh` binary), would mean re-implementing
//! what users expect of `ssh`: known_hosts with hashed names, markers and
//! wildcards, `~/.ssh/config` with `Host`/`Match` blocks, `ProxyJump`,
//! agent forwarding and key formats; and russh-sftp also types file names
//! as `String`.
//!
//! # Authentication and host keys
//!
//! The `openssh` crate drives the system's OpenSSH client as a multiplexing
//! master (`ssh -M`, talked to through its control socket: `native-mux`),
//! so authentication and host-key checking are exactly `ssh`'s:
//!
//! - keys from `ssh-agent` (`SSH_AUTH_SOCK`), from `~/.ssh/config`
//!   (`IdentityFile`, `User`, `Port`, `HostName` aliases, `ProxyJump`), or
//!   one key file given explicitly ([`SftpConfig::key_file`], `?key=`; then
//!   only that key is offered);
//! - `StrictHostKeyChecking=yes`: a host missing from known_hosts, or with
//!   another key, is refused, never accepted silently;
//!   [`SftpConfig::known_hosts`] (`?known_hosts=`) names the file to check
//!   against instead of `~/.ssh/known_hosts`;
//! - `BatchMode=yes`: no password or passphrase prompt can hang a mount.
//!
//! No secret ever passes through MusicFS: keys stay in their files or the
//! agent, and passwords in URLs are refused.
//!
//! # Versions
//!
//! SFTP (version 3, what OpenSSH speaks) gives size and mtime in whole
//! seconds, and no inode or change token: a file's [`FileVersion`] is
//! `{size, mtime (whole seconds), token: None}`. Every read opens the file
//! and checks its `fstat` against the version before reading; a file
//! replaced with the same size within the same second is not detected.
//!
//! # Connections
//!
//! One SSH connection per origin, shared by all requests: SFTP pipelines
//! requests on one channel, and each read is split into 128 KiB requests
//! sent at once. The connection is made on first use, in a background task
//! (a caller that gives up does not waste it), at most once a second while
//! the server is down, and dropped on any transport failure or timeout so
//! that the next request reconnects. `ServerAliveInterval` lets the master
//! notice a dead link on its own.

use super::limits::{RequestGate, with_retries};
use super::{BoxFuture, ListPage, Origin, OriginError, RemoteFile, RemoteLimits, RemoteOrigin};
use crate::errors::error_chain;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use musicfs_core::{FileVersion, OriginId, OriginPath};
use openssh::{ControlPersist, KnownHosts, SessionBuilder};
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::file::File;
use openssh_sftp_client::metadata::MetaData;
use openssh_sftp_client::{Error as SftpError, Sftp, SftpOptions};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt;
use std::io::SeekFrom;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncSeekExt;
use tokio::sync::watch;

/// Bytes asked for in one SFTP read request. OpenSSH's server answers at
/// most 255 KiB per request; 128 KiB pieces stay under that and give
/// several requests in flight per 1 MiB fetch.
const PIECE: u64 = 128 * 1024;
/// Directories listed at once.
const LIST_DIRS_IN_FLIGHT: usize = 8;
/// Files in one listing page handed out.
const PAGE_FILES: usize = 1000;
/// After a failed connection attempt, requests fail at once for this long
/// instead of each starting an `ssh` process.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// SSH keepalive: the master gives up on a silent server after three.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// An idle master (no SFTP channel: MusicFS died) exits after this.
const MASTER_IDLE_SECS: usize = 60;

/// How to reach one SFTP origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftpConfig {
    /// Host name, address, or `Host` alias of `~/.ssh/config`.
    pub host: String,
    /// Port; `None`: ssh's (config file, else 22).
    pub port: Option<u16>,
    /// Login name; `None`: ssh's (config file, else the local user).
    pub user: Option<String>,
    /// The library's directory on the server: absolute, or relative to the
    /// login directory.
    pub root: PathBuf,
    /// The only private key to offer (`ssh -i`, `IdentitiesOnly=yes`);
    /// `None`: the agent and the keys ssh finds on its own.
    pub key_file: Option<PathBuf>,
    /// The known_hosts file to check the host key against instead of
    /// `~/.ssh/known_hosts` (`UserKnownHostsFile`).
    pub known_hosts: Option<PathBuf>,
    /// An ssh config file instead of `~/.ssh/config` (`ssh -F`).
    pub ssh_config: Option<PathBuf>,
    /// Where the master's control socket lives; `None`: the openssh crate's
    /// default (`$XDG_STATE_HOME`, else `~/.local/state`).
    pub control_dir: Option<PathBuf>,
    /// Timeouts, retries, concurrency and rate.
    pub limits: RemoteLimits,
}

impl SftpConfig {
    /// A configuration for `root` on `host` with everything else default.
    pub fn new(host: impl Into<String>, root: impl Into<PathBuf>) -> SftpConfig {
        SftpConfig {
            host: host.into(),
            port: None,
            user: None,
            root: root.into(),
            key_file: None,
            known_hosts: None,
            ssh_config: None,
            control_dir: None,
            limits: RemoteLimits::default(),
        }
    }

    /// `user@host:port/root`, for people.
    pub fn display(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let root = self.root.display().to_string();
        let sep = if root.starts_with('/') { "" } else { "/~/" };
        format!("{user}{host}{port}{sep}{root}")
    }
}

/// A directory on an SSH server as an origin.
pub struct SftpOrigin {
    root: PathBuf,
    description: String,
    limits: RemoteLimits,
    gate: RequestGate,
    /// The connection reads, stats and checks use.
    pool: Arc<Pool>,
    /// A second connection for listings: a directory the client library
    /// cannot list (see [`SftpOrigin::list_all`]) breaks the session it is
    /// read on, and that must not be the one serving reads.
    lister: Arc<Pool>,
}

/// Why a request on a pool failed.
enum ReqError {
    /// No connection could be made.
    Connect(OriginError),
    /// The server answered.
    Answer(OriginError),
    /// The connection broke or stalled during the request (it is dropped).
    Broken(String),
}

impl fmt::Debug for SftpOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpOrigin")
            .field("origin", &self.description)
            .finish_non_exhaustive()
    }
}

/// A request's failure: an answer about the file, or a broken connection.
enum Fail {
    /// The server answered (no such file, changed, permission denied).
    Answer(OriginError),
    /// The connection failed or stalled: drop it and reconnect.
    Broken(String),
}

impl From<SftpError> for Fail {
    fn from(e: SftpError) -> Fail {
        match &e {
            SftpError::SftpError(SftpErrorKind::NoSuchFile, _) => {
                Fail::Answer(OriginError::NotFound)
            }
            SftpError::SftpError(SftpErrorKind::PermDenied, _) => {
                Fail::Answer(OriginError::Unavailable("sftp: permission denied".into()))
            }
            SftpError::SftpError(kind, msg) => Fail::Answer(OriginError::Unavailable(format!(
                "sftp server error {kind:?}: {msg}"
            ))),
            _ => Fail::Broken(error_chain(&e)),
        }
    }
}

impl SftpOrigin {
    /// Builds the origin. Makes no connection: the first request does, so a
    /// mount can come up while the server is down.
    pub fn new(id: OriginId, config: SftpConfig) -> SftpOrigin {
        let description = format!("{id} (sftp {})", config.display());
        let config = Arc::new(config);
        SftpOrigin {
            root: config.root.clone(),
            description,
            limits: config.limits.clone(),
            gate: RequestGate::new(&config.limits),
            pool: Pool::new(&config),
            lister: Pool::new(&config),
        }
    }

    fn full_path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    /// Runs one request on the shared connection, bounded by the request
    /// timeout; drops the connection if it broke or stalled.
    async fn request<T, F, Fut>(&self, what: &str, op: F) -> Result<T, OriginError>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Fail>>,
    {
        match self.request_on(&self.pool, what, op).await {
            Ok(value) => Ok(value),
            Err(ReqError::Connect(e) | ReqError::Answer(e)) => Err(e),
            Err(ReqError::Broken(why)) => {
                Err(OriginError::Unavailable(format!("sftp {what}: {why}")))
            }
        }
    }

    async fn request_on<T, F, Fut>(
        &self,
        pool: &Arc<Pool>,
        what: &str,
        op: F,
    ) -> Result<T, ReqError>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Fail>>,
    {
        let _permit = self.gate.enter().await.map_err(ReqError::Connect)?;
        let conn = pool.get().await.map_err(ReqError::Connect)?;
        let generation = conn.generation;
        let result = match tokio::time::timeout(self.limits.request_timeout, op(conn)).await {
            Ok(result) => result,
            Err(_) => Err(Fail::Broken(format!(
                "{what} timed out after {:.1} s",
                self.limits.request_timeout.as_secs_f64()
            ))),
        };
        match result {
            Ok(value) => Ok(value),
            Err(Fail::Answer(e)) => Err(ReqError::Answer(e)),
            Err(Fail::Broken(why)) => {
                pool.invalidate(generation, &why);
                Err(ReqError::Broken(why))
            }
        }
    }

    async fn read_range(
        &self,
        path: &OriginPath,
        version: &FileVersion,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, OriginError> {
        let full = self.full_path(path.as_bytes());
        self.request("read", |conn| async move {
            let mut file = conn.sftp.open(&full).await?;
            let now = version_of(&file.metadata().await?);
            if now.size != version.size || now.mtime_ns != version.mtime_ns {
                return Err(Fail::Answer(OriginError::Changed));
            }
            let end = offset.saturating_add(len as u64).min(version.size);
            if offset >= end {
                return Ok(Vec::new());
            }
            let pieces = (0..(end - offset).div_ceil(PIECE)).map(|i| {
                let start = offset + i * PIECE;
                let file = file.clone();
                read_exact_at(file, start, (start + PIECE).min(end))
            });
            let parts = futures::future::try_join_all(pieces).await?;
            let mut out = Vec::with_capacity((end - offset) as usize);
            for part in parts {
                out.extend_from_slice(&part);
            }
            drop(file);
            Ok(out)
        })
        .await
    }

    async fn stat_once(&self, rel: &[u8]) -> Result<FileVersion, OriginError> {
        let full = self.full_path(rel);
        self.request("stat", |conn| async move {
            let meta = conn.sftp.fs().metadata(&full).await?;
            if !meta.file_type().is_some_and(|t| t.is_file()) {
                return Err(Fail::Answer(OriginError::NotFound));
            }
            Ok(version_of(&meta))
        })
        .await
    }

    /// Lists the tree breadth-first, [`LIST_DIRS_IN_FLIGHT`] directories at
    /// a time, on the listing connection.
    ///
    /// The SFTP client library decodes every file name of a READDIR answer
    /// as UTF-8, and a name that is not (a Latin-1 name from an old rip)
    /// kills the whole session, and with it the other directories being
    /// listed. So a directory whose listing breaks the connection is not an
    /// error at once: it is set aside and tried again alone, on a fresh
    /// connection, once the rest is listed; if it breaks that one too, it
    /// is reported in [`ListPage::errors`] and left out, and the listing
    /// goes on. A connection that cannot be made at all fails the listing.
    async fn list_all(&self, sink: &mut (dyn FnMut(ListPage) + Send)) -> Result<(), OriginError> {
        let mut pending: VecDeque<Vec<u8>> = VecDeque::from([Vec::new()]);
        let mut suspects: VecDeque<(Vec<u8>, String)> = VecDeque::new();
        let mut running = FuturesUnordered::new();
        let mut page = ListPage::default();
        loop {
            let alone = pending.is_empty() && running.is_empty();
            if alone {
                // Suspects, one at a time, twice each.
                let Some((rel, first)) = suspects.pop_front() else {
                    break;
                };
                let mut outcome = Err(ReqError::Broken(first));
                for _ in 0..2 {
                    outcome = self.list_dir(&rel).await;
                    if !matches!(outcome, Err(ReqError::Broken(_))) {
                        break;
                    }
                }
                match outcome {
                    Ok(dir) => {
                        pending.extend(dir.subdirs);
                        page.files.extend(dir.files);
                        page.errors.extend(dir.errors);
                    }
                    Err(ReqError::Connect(e)) => return Err(e),
                    Err(ReqError::Answer(e)) if rel.is_empty() => return Err(e),
                    // A stalled connection is the server's doing, not a
                    // file name's: the origin is unavailable.
                    Err(ReqError::Broken(why)) if why.contains("timed out") => {
                        return Err(OriginError::Unavailable(format!("sftp list: {why}")));
                    }
                    Err(ReqError::Broken(why)) if rel.is_empty() => {
                        return Err(OriginError::Unavailable(format!(
                            "sftp list: {why} (listing the root breaks the SFTP session; if it holds \
                             a file name that is not valid UTF-8, the SFTP client cannot list it)"
                        )));
                    }
                    Err(ReqError::Answer(e)) => page.errors.push(self.dir_error(&rel, &e.to_string())),
                    Err(ReqError::Broken(_)) => page.errors.push(self.dir_error(
                        &rel,
                        "listing it breaks the SFTP session, most likely because it holds a file name \
                         that is not valid UTF-8, which the SFTP client cannot represent; its files are left out",
                    )),
                }
                continue;
            }
            while running.len() < LIST_DIRS_IN_FLIGHT {
                let Some(rel) = pending.pop_front() else {
                    break;
                };
                running.push(async move {
                    let listed = self.list_dir(&rel).await;
                    (rel, listed)
                });
            }
            let Some((rel, listed)) = running.next().await else {
                continue;
            };
            match listed {
                Ok(dir) => {
                    pending.extend(dir.subdirs);
                    page.files.extend(dir.files);
                    page.errors.extend(dir.errors);
                }
                Err(ReqError::Connect(e)) => return Err(e),
                // The root itself: the listing fails as a whole.
                Err(ReqError::Answer(e)) if rel.is_empty() => return Err(e),
                // Below it: one unreadable directory must not hide the rest.
                Err(ReqError::Answer(e)) => page.errors.push(self.dir_error(&rel, &e.to_string())),
                Err(ReqError::Broken(why)) => suspects.push_back((rel, why)),
            }
            if page.files.len() >= PAGE_FILES {
                sink(std::mem::take(&mut page));
            }
        }
        if !page.files.is_empty() || !page.errors.is_empty() {
            sink(page);
        }
        Ok(())
    }

    fn dir_error(&self, rel: &[u8], why: &str) -> String {
        let shown = String::from_utf8_lossy(rel).into_owned();
        tracing::warn!(origin = %self.description, dir = %shown, error = %why, "cannot list directory");
        format!("{shown}: cannot list directory: {why}")
    }

    /// Reads one directory: its files (with versions), its subdirectories,
    /// and the entries that could not be used.
    async fn list_dir(&self, rel: &[u8]) -> Result<DirListing, ReqError> {
        let full = self.full_path(rel);
        let timeout = self.limits.request_timeout;
        self.request_on(&self.lister, "list directory", |conn| async move {
            let mut fs = conn.sftp.fs();
            let dir = fs.open_dir(&full).await?;
            let entries = dir.read_dir();
            tokio::pin!(entries);
            let mut out = DirListing::default();
            let mut links = Vec::new();
            loop {
                // Each READDIR round trip is bounded on its own: a huge
                // directory may take longer than one request timeout.
                let next = tokio::time::timeout(timeout, entries.next())
                    .await
                    .map_err(|_| Fail::Broken("reading a directory timed out".into()))?;
                let Some(entry) = next else { break };
                let entry = entry?;
                let name = entry.filename().as_os_str().as_bytes();
                if name == b"."
                    || name == b".."
                    || super::path::is_hidden(name)
                    || name.contains(&b'/')
                {
                    continue;
                }
                let child = join_rel(rel, name);
                let meta = entry.metadata();
                match meta.file_type() {
                    Some(t) if t.is_dir() => out.subdirs.push(child),
                    Some(t) if t.is_file() => out.files.push(RemoteFile {
                        path: OriginPath::new(child),
                        version: version_of(&meta),
                    }),
                    // Links to files are followed (their target's version),
                    // links to directories are not: as the local scanner.
                    Some(t) if t.is_symlink() => links.push(child),
                    _ => {} // FIFOs, sockets, devices: never part of a library
                }
            }
            for child in links {
                let target = self.full_path(&child);
                match fs.metadata(&target).await {
                    Ok(meta) if meta.file_type().is_some_and(|t| t.is_file()) => {
                        out.files.push(RemoteFile {
                            path: OriginPath::new(child),
                            version: version_of(&meta),
                        });
                    }
                    Ok(_) => {}
                    Err(e) => match Fail::from(e) {
                        Fail::Broken(why) => return Err(Fail::Broken(why)),
                        Fail::Answer(why) => out.errors.push(format!(
                            "{}: dangling or unreadable link ({why})",
                            String::from_utf8_lossy(&child)
                        )),
                    },
                }
            }
            Ok(out)
        })
        .await
    }
}

#[derive(Default)]
struct DirListing {
    files: Vec<RemoteFile>,
    subdirs: Vec<Vec<u8>>,
    errors: Vec<String>,
}

fn join_rel(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        out.extend_from_slice(dir);
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// Reads `[start, end)` with as many requests as the server needs (it may
/// answer with fewer bytes than asked). The file's own offset is not
/// trusted: each request seeks explicitly.
async fn read_exact_at(mut file: File, start: u64, end: u64) -> Result<Vec<u8>, Fail> {
    let mut out = Vec::with_capacity((end - start) as usize);
    let mut pos = start;
    while pos < end {
        file.seek(SeekFrom::Start(pos))
            .await
            .map_err(|e| Fail::Broken(format!("seek: {e}")))?;
        let want = u32::try_from(end - pos).unwrap_or(u32::MAX);
        match file.read(want, bytes_buffer()).await? {
            // End of file before the version's size: the file shrank.
            None => return Err(Fail::Answer(OriginError::Changed)),
            Some(data) if data.is_empty() => return Err(Fail::Answer(OriginError::Changed)),
            Some(data) => {
                let take = data.len().min((end - pos) as usize);
                out.extend_from_slice(&data[..take]);
                pos += take as u64;
            }
        }
    }
    Ok(out)
}

fn bytes_buffer() -> bytes::BytesMut {
    bytes::BytesMut::new()
}

/// The version of a file from its SFTP attributes.
fn version_of(meta: &MetaData) -> FileVersion {
    let secs = meta.modified().map_or(0, |t| t.as_duration().as_secs());
    FileVersion {
        size: meta.len().unwrap_or(0),
        mtime_ns: i64::try_from(secs)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000),
        token: None,
    }
}

impl Origin for SftpOrigin {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn read_at<'a>(
        &'a self,
        path: &'a OriginPath,
        version: &'a FileVersion,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, OriginError>> {
        Box::pin(self.read_range(path, version, offset, len))
    }

    /// Stats the root directory: proves the connection (made if needed)
    /// works and the library's directory is there.
    fn check(&self) -> BoxFuture<'_, Result<(), OriginError>> {
        Box::pin(async move {
            let root = self.root.clone();
            self.request("check", |conn| async move {
                let meta = conn.sftp.fs().metadata(&root).await?;
                if meta.file_type().is_some_and(|t| t.is_dir()) {
                    Ok(())
                } else {
                    Err(Fail::Answer(OriginError::Unavailable(
                        "sftp check failed: the root is not a directory".into(),
                    )))
                }
            })
            .await
            .map_err(|e| match e {
                OriginError::NotFound => OriginError::Unavailable(
                    "sftp check failed: the root directory is missing".into(),
                ),
                other => other,
            })
        })
    }
}

impl RemoteOrigin for SftpOrigin {
    fn stat<'a>(&'a self, path: &'a OriginPath) -> BoxFuture<'a, Result<FileVersion, OriginError>> {
        Box::pin(async move {
            with_retries(&self.limits, "stat", || self.stat_once(path.as_bytes())).await
        })
    }

    fn list<'a>(
        &'a self,
        sink: &'a mut (dyn FnMut(ListPage) + Send),
    ) -> BoxFuture<'a, Result<(), OriginError>> {
        Box::pin(self.list_all(sink))
    }

    fn limits(&self) -> &RemoteLimits {
        &self.limits
    }
}

/// A live SFTP session.
struct Conn {
    sftp: Sftp,
    generation: u64,
}

enum State {
    /// No connection; the next request makes one.
    Idle,
    /// A connection attempt is under way; its result arrives here.
    Connecting(watch::Receiver<Option<Result<Arc<Conn>, ConnectError>>>),
    /// Connected.
    Ready(Arc<Conn>),
    /// The last attempt failed at `at`.
    Failed { at: Instant, why: ConnectError },
}

/// The origin's one connection, made on demand.
struct Pool {
    config: Arc<SftpConfig>,
    state: Mutex<State>,
    generation: AtomicU64,
}

impl Pool {
    fn new(config: &Arc<SftpConfig>) -> Arc<Pool> {
        Arc::new(Pool {
            config: Arc::clone(config),
            state: Mutex::new(State::Idle),
            generation: AtomicU64::new(0),
        })
    }

    async fn get(self: &Arc<Self>) -> Result<Arc<Conn>, OriginError> {
        let mut rx = {
            let mut state = self.state.lock();
            match &*state {
                State::Ready(conn) => return Ok(Arc::clone(conn)),
                State::Connecting(rx) => rx.clone(),
                State::Failed { at, why } if at.elapsed() < RECONNECT_PAUSE => {
                    return Err(OriginError::Unavailable(why.to_string()));
                }
                State::Idle | State::Failed { .. } => {
                    let (tx, rx) = watch::channel(None);
                    *state = State::Connecting(rx.clone());
                    let pool = Arc::clone(self);
                    tokio::spawn(async move {
                        let result = pool.connect().await;
                        pool.connected(result, &tx);
                    });
                    rx
                }
            }
        };
        let limit = self.config.limits.connect_timeout + self.config.limits.request_timeout;
        match tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await {
            Ok(Ok(result)) => match result.as_ref() {
                Some(Ok(conn)) => Ok(Arc::clone(conn)),
                Some(Err(why)) => Err(OriginError::Unavailable(why.to_string())),
                None => Err(OriginError::Unavailable(
                    "sftp connection attempt lost".into(),
                )),
            },
            Ok(Err(_)) => Err(OriginError::Unavailable(
                "sftp connection attempt lost".into(),
            )),
            Err(_) => Err(OriginError::Unavailable("sftp connect timed out".into())),
        }
    }

    /// Records the outcome of a connection attempt and wakes its waiters.
    fn connected(
        &self,
        result: Result<Sftp, ConnectError>,
        tx: &watch::Sender<Option<Result<Arc<Conn>, ConnectError>>>,
    ) {
        let shown = self.config.display();
        let outcome = match result {
            Ok(sftp) => {
                let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(origin = %shown, "sftp connected");
                let conn = Arc::new(Conn { sftp, generation });
                *self.state.lock() = State::Ready(Arc::clone(&conn));
                Ok(conn)
            }
            Err(why) => {
                tracing::warn!(origin = %shown, error = %why, "sftp connection failed");
                *self.state.lock() = State::Failed {
                    at: Instant::now(),
                    why: why.clone(),
                };
                Err(why)
            }
        };
        let _ = tx.send(Some(outcome));
    }

    /// Forgets connection `generation` after it failed (if it is still the
    /// current one), so that the next request reconnects.
    fn invalidate(&self, generation: u64, why: &str) {
        let mut state = self.state.lock();
        if let State::Ready(conn) = &*state
            && conn.generation == generation
        {
            tracing::warn!(origin = %self.config.display(), error = %why, "sftp connection dropped");
            *state = State::Idle;
        }
    }

    /// Starts an OpenSSH master and the SFTP subsystem through it.
    async fn connect(&self) -> Result<Sftp, ConnectError> {
        let config = &self.config;
        let limits = &config.limits;
        let mut builder = SessionBuilder::default();
        builder
            .known_hosts_check(KnownHosts::Strict)
            .connect_timeout(limits.connect_timeout.max(Duration::from_secs(1)))
            .server_alive_interval(KEEPALIVE)
            .control_persist(ControlPersist::IdleFor(
                NonZeroUsize::new(MASTER_IDLE_SECS).unwrap_or(NonZeroUsize::MIN),
            ));
        if let Some(user) = &config.user {
            builder.user(user.clone());
        }
        if let Some(port) = config.port {
            builder.port(port);
        }
        if let Some(key) = &config.key_file {
            builder.keyfile(key);
        }
        if let Some(file) = &config.known_hosts {
            builder.user_known_hosts_file(file);
        }
        if let Some(file) = &config.ssh_config {
            builder.config_file(file);
        }
        if let Some(dir) = &config.control_dir {
            builder.control_directory(dir);
        }
        // ssh's ConnectTimeout covers the TCP connect and the banner; this
        // covers the rest (key exchange, authentication, the subsystem).
        let attempt = async {
            let session = builder
                .connect_mux(&config.host)
                .await
                .map_err(ConnectError::ssh)?;
            Sftp::from_session(session, SftpOptions::new())
                .await
                .map_err(|e| ConnectError::Subsystem(Arc::new(e)))
        };
        let limit = limits.connect_timeout + limits.request_timeout;
        match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::TimedOut(limit)),
        }
    }
}

/// Why a connection could not be made. Shared by every request that waited
/// for the attempt (hence `Clone`), and told to the engine as the reason
/// the origin is unavailable.
#[derive(Clone, Debug, thiserror::Error)]
enum ConnectError {
    /// There is no `ssh` to run.
    #[error("cannot run `ssh`: install the OpenSSH client")]
    NoSsh(#[source] Arc<openssh::Error>),
    /// ssh failed (refused, host key, authentication, ...).
    #[error("ssh: {}", error_chain(.0))]
    Ssh(#[source] Arc<openssh::Error>),
    /// Connected, but the SFTP subsystem did not start.
    #[error("cannot start the sftp subsystem: {}", error_chain(.0))]
    Subsystem(#[source] Arc<openssh_sftp_client::Error>),
    /// The whole attempt took too long.
    #[error("sftp connect timed out after {:.1} s", .0.as_secs_f64())]
    TimedOut(Duration),
}

impl ConnectError {
    fn ssh(e: openssh::Error) -> ConnectError {
        if let openssh::Error::Connect(io) = &e
            && io.kind() == std::io::ErrorKind::NotFound
        {
            return ConnectError::NoSsh(Arc::new(e));
        }
        ConnectError::Ssh(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let mut c = SftpConfig::new("nas", "/srv/music");
        assert_eq!(c.display(), "nas/srv/music");
        c.user = Some("me".into());
        c.port = Some(2222);
        assert_eq!(c.display(), "me@nas:2222/srv/music");
        c.root = "Music".into();
        c.host = "::1".into();
        assert_eq!(c.display(), "me@[::1]:2222/~/Music");
    }

    #[test]
    fn rel_paths_join() {
        assert_eq!(join_rel(b"", b"a.flac"), b"a.flac");
        assert_eq!(join_rel(b"A/B", b"\xff.mp3"), b"A/B/\xff.mp3");
    }
}
