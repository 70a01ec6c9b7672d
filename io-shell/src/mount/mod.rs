//! `musicfs mount`: from command-line arguments to a running mount, and a
//! clean exit.
//!
//! Order of events: validate everything (bad arguments are a one-line error
//! and exit code 2, before anything is touched); open the cache; scan the
//! origins the cache does not know yet (with a progress bar); build the tree;
//! mount; serve until a signal or an unmount; then stop fetching, save the
//! cache state and exit 0.

use crate::cli::progress::TerminalProgress;
use crate::cli::{MountArgs, UsageError};
use crate::exec::daemon::Daemon;
use crate::kernel::fuse::{MusicFs, Ownership};
use crate::kernel::notify::Invalidator;
use crate::library::changes;
use crate::library::remote_scan::{RemoteScanOptions, scan_remote_blocking};
use crate::library::scan::{self, ScanOptions, ScanProgress};
use crate::library::sync::{SyncSource, Syncer};
use crate::library::watch;
use crate::origin::{
    LocalOrigin, Origin, RemoteOrigin, RemoteSpec, is_remote_url, parse_remote_url, redact_url,
};
use crate::pins::fill::PinFiller;
use crate::search::live::LiveSearch;
use crate::service::control::{self, Control, ScanState};
use crate::service::supervisor::{RestartPolicy, Supervisor};
use crate::service::systemd;
use crate::store::{CacheOwner, ChunkStore, Db};
use crate::sys;
use musicfs_core::engine::{Config as EngineConfig, Engine};
use musicfs_core::tree::VirtualTree;
use musicfs_core::{CatalogEntry, Layout, OriginId};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A failure while running: reported in one line, exit code 1.
#[derive(Debug)]
pub struct RunError(pub String);

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for RunError {
    fn from(e: E) -> RunError {
        RunError(sys::error_chain(&e))
    }
}

/// The cache directory is in use by another daemon (sled's lock is held).
#[derive(Debug, thiserror::Error)]
#[error(
    "cache dir '{}' is in use by {}; two mounts cannot share a cache: give this one its own --cache-dir",
    cache_dir.display(),
    match owner {
        Some(o) => format!("another MusicFS mount (pid {}, mounted at {})", o.pid, o.mountpoint.display()),
        None => "another MusicFS process".to_owned(),
    }
)]
pub struct CacheInUse {
    /// The cache directory.
    pub cache_dir: PathBuf,
    /// Who holds it, if its owner file says so.
    pub owner: Option<CacheOwner>,
}

/// A first mount (nothing saved) where no origin answered.
#[derive(Debug, thiserror::Error)]
#[error(
    "no origin answers, and there is no saved tree to mount: {}. \
     Fix the origins, or use --wait-for-origins to mount now (empty) and fill in once one answers",
    failures.iter().map(|(what, why)| format!("origin '{what}': {why}")).collect::<Vec<_>>().join("; ")
)]
pub struct NoOriginAnswers {
    /// Each origin and why it could not be scanned.
    pub failures: Vec<(String, String)>,
}

/// Where an origin's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginKind {
    /// A local directory (canonical path).
    Local(PathBuf),
    /// An S3 bucket or an SFTP server.
    Remote(Box<RemoteSpec>),
}

/// One origin, as configured:
/// `--origin WHERE[,name=NAME][,priority=N][,cache=off]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginSpec {
    /// Where its files are.
    pub kind: OriginKind,
    /// A short name for logs and `musicfs status`.
    pub name: Option<String>,
    /// Lower is preferred; ties keep the order given.
    pub priority: i64,
    /// Its bytes go through the chunk cache (the default); `cache=off`
    /// (local folders only) reads them straight from the origin.
    pub cached: bool,
}

impl OriginSpec {
    /// A local directory with no name, at the default priority.
    pub fn local(root: PathBuf) -> OriginSpec {
        OriginSpec {
            kind: OriginKind::Local(root),
            name: None,
            priority: 0,
            cached: true,
        }
    }

    /// For logs and `musicfs status`; never contains a secret.
    pub fn describe(&self) -> String {
        let place = match &self.kind {
            OriginKind::Local(p) => format!("local {}", p.display()),
            OriginKind::Remote(r) => r.describe(),
        };
        match &self.name {
            Some(name) => format!("{name} ({place})"),
            None => place,
        }
    }

    /// Where its files are, for messages; never contains a secret.
    fn describe_place(&self) -> String {
        match &self.kind {
            OriginKind::Local(p) => p.display().to_string(),
            OriginKind::Remote(r) => r.describe(),
        }
    }

    /// Whether two origins list the same files: local folders by their
    /// canonical path (so `/music/`, a symlink to it and `/x/../music` are
    /// one), remote ones by their [`OriginSpec::key`], except that an SFTP
    /// path compares by its components (`/srv/music/` is `/srv/music`) and
    /// a host name ignores case.
    pub fn same_place(&self, other: &OriginSpec) -> bool {
        match (&self.kind, &other.kind) {
            (OriginKind::Local(a), OriginKind::Local(b)) => a == b,
            (OriginKind::Remote(a), OriginKind::Remote(b)) => match (&**a, &**b) {
                (RemoteSpec::Sftp(a), RemoteSpec::Sftp(b)) => {
                    a.user == b.user
                        && a.host.eq_ignore_ascii_case(&b.host)
                        && a.port.unwrap_or(22) == b.port.unwrap_or(22)
                        && a.root == b.root
                }
                _ => self.key() == other.key(),
            },
            _ => false,
        }
    }

    /// A stable text form, saved in the cache to notice a changed origin
    /// list. The name and priority are left out: renaming an origin or
    /// preferring another does not change its files.
    pub fn key(&self) -> String {
        match &self.kind {
            OriginKind::Local(p) => format!("local:{}", p.display()),
            OriginKind::Remote(r) => r.key(),
        }
    }
}

/// A validated `musicfs mount`.
#[derive(Clone, Debug)]
pub struct MountPlan {
    /// Origins in priority order; the index is the [`OriginId`].
    pub origins: Vec<OriginSpec>,
    /// The cache directory (exists and is writable).
    pub cache_dir: PathBuf,
    /// Cache limit in bytes.
    pub cache_size: u64,
    /// Pins may take at most this share of the cache, in percent.
    pub pin_share: u8,
    /// Path layout.
    pub layout: Layout,
    /// Let other users see the mount.
    pub allow_other: bool,
    /// Mount on a directory that is not empty.
    pub allow_non_empty: bool,
    /// Serve the user.musicfs.* extended attributes.
    pub xattrs: bool,
    /// A first mount comes up (empty) even when no origin answers.
    pub wait_for_origins: bool,
    /// Read deadline.
    pub read_timeout: Duration,
    /// Pause between listings of a remote origin.
    pub poll_interval: Duration,
    /// Who is told of tree changes (`--on-change`, `--notify-mpd`).
    pub change_targets: changes::Targets,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Owner, group and umask of the files and folders shown.
    pub ownership: Ownership,
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The umask when none is given: takes nothing from 0555 and 0444.
pub const DEFAULT_UMASK: u16 = 0o022;

impl MountPlan {
    /// Checks every argument; nothing is changed on disk except creating the
    /// cache directory.
    pub fn from_args(args: &MountArgs) -> Result<MountPlan, UsageError> {
        // Both may come from a --config file, so clap cannot require them.
        if args.origins.is_empty() {
            return Err(UsageError(
                "no origin: give --origin DIR, or origins in the --config file".into(),
            ));
        }
        let Some(mountpoint) = &args.mountpoint else {
            return Err(UsageError(
                "no mountpoint: give MOUNTPOINT, or mountpoint in the --config file".into(),
            ));
        };
        let mut origins: Vec<OriginSpec> = Vec::new();
        for raw in &args.origins {
            let spec = parse_origin(raw)?;
            // The same place twice would make every track a mirror of itself.
            if let Some(j) = origins.iter().position(|o| o.same_place(&spec)) {
                return Err(UsageError(format!(
                    "origin '{}' and origin '{}' are the same place ({}): give each origin once",
                    redact_url(&args.origins[j]),
                    redact_url(raw),
                    spec.describe_place(),
                )));
            }
            // Still in the order given: `j` is also an index of args.origins.
            origins.push(spec);
        }
        // Lower priority first; a stable sort keeps the given order on ties.
        origins.sort_by_key(|o: &OriginSpec| o.priority);
        let mut names = std::collections::BTreeSet::new();
        for name in origins.iter().filter_map(|o| o.name.as_deref()) {
            if !names.insert(name) {
                return Err(UsageError(format!("two origins are named '{name}'")));
            }
        }
        if origins.len() > usize::from(u16::MAX) {
            return Err(UsageError("too many origins".into()));
        }
        let layout = Layout::parse(&args.layout)
            .map_err(|e| UsageError(format!("bad --layout '{}': {e}", args.layout)))?;
        let mountpoint = check_mountpoint(mountpoint, args.allow_non_empty)?;
        let cache_dir = match &args.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir()?,
        };
        check_cache_dir(&cache_dir)?;
        Ok(MountPlan {
            origins,
            cache_dir,
            cache_size: args.cache_size,
            pin_share: args.pin_share,
            layout,
            allow_other: args.allow_other,
            allow_non_empty: args.allow_non_empty,
            xattrs: args.xattrs,
            wait_for_origins: args.wait_for_origins,
            read_timeout: Duration::from_secs(args.read_timeout),
            poll_interval: Duration::from_secs(args.poll_interval),
            change_targets: changes::Targets {
                command: args.on_change.clone(),
                mpd: args.notify_mpd.clone(),
            },
            mountpoint,
            ownership: Ownership {
                uid: args.uid.unwrap_or_else(current_uid),
                gid: args.gid.unwrap_or_else(current_gid),
                umask: args.umask.unwrap_or(DEFAULT_UMASK),
            },
            metrics_addr: args.metrics_addr,
        })
    }
}

/// Parses `WHERE[,name=NAME][,priority=N][,cache=off]`: a local directory
/// (which must exist), or an `s3://` or `sftp://` URL (checked, not
/// contacted). Only trailing `,name=`, `,priority=` and `,cache=` parts are
/// options, so a path with a comma in it still works.
pub fn parse_origin(raw: &str) -> Result<OriginSpec, UsageError> {
    let mut place = raw;
    let mut name = None;
    let mut priority = None;
    let mut cached = None;
    while let Some((head, tail)) = place.rsplit_once(',') {
        if let Some(c) = tail.strip_prefix("cache=") {
            if cached.is_some() {
                return Err(UsageError(format!(
                    "origin '{}': cache given twice",
                    redact_url(raw)
                )));
            }
            cached = Some(match c {
                "on" => true,
                "off" => false,
                other => {
                    return Err(UsageError(format!(
                        "origin '{}': cache is 'on' or 'off', not '{other}'",
                        redact_url(raw)
                    )));
                }
            });
            place = head;
            continue;
        }
        if let Some(n) = tail.strip_prefix("name=") {
            if name.is_some() {
                return Err(UsageError(format!(
                    "origin '{}': name given twice",
                    redact_url(raw)
                )));
            }
            if n.trim().is_empty() || n.contains('=') {
                return Err(UsageError(format!(
                    "origin '{}': a name must be non-empty text without ',' or '='",
                    redact_url(raw)
                )));
            }
            name = Some(n.to_owned());
        } else if let Some(p) = tail.strip_prefix("priority=") {
            if priority.is_some() {
                return Err(UsageError(format!(
                    "origin '{}': priority given twice",
                    redact_url(raw)
                )));
            }
            priority = Some(p.parse::<i64>().map_err(|_| {
                UsageError(format!(
                    "origin '{}': priority must be a whole number, not '{p}'",
                    redact_url(raw)
                ))
            })?);
        } else {
            break;
        }
        place = head;
    }
    let kind = parse_place(place)?;
    let cached = cached.unwrap_or(true);
    if !cached && matches!(kind, OriginKind::Remote(_)) {
        return Err(UsageError(format!(
            "origin '{}': cache=off is for local folders (a remote origin's bytes are cached so that they play when it is slow or gone)",
            redact_url(raw)
        )));
    }
    Ok(OriginSpec {
        kind,
        name,
        priority: priority.unwrap_or(0),
        cached,
    })
}

fn parse_place(raw: &str) -> Result<OriginKind, UsageError> {
    if is_remote_url(raw) {
        return parse_remote_url(raw)
            .map(|r| OriginKind::Remote(Box::new(r)))
            .map_err(|e| UsageError(format!("origin '{}': {e}", redact_url(raw))));
    }
    let path = Path::new(raw);
    let meta = std::fs::metadata(path)
        .map_err(|e| UsageError(format!("origin '{raw}' cannot be used: {}", io_reason(&e))))?;
    if !meta.is_dir() {
        return Err(UsageError(format!("origin '{raw}' is not a directory")));
    }
    let canonical = path.canonicalize().map_err(|e| {
        UsageError(format!(
            "origin '{raw}' cannot be resolved: {}",
            io_reason(&e)
        ))
    })?;
    Ok(OriginKind::Local(canonical))
}

fn check_mountpoint(path: &Path, allow_non_empty: bool) -> Result<PathBuf, UsageError> {
    let shown = path.display();
    if let Some(fstype) = fuse_mount_at(path) {
        // statfs always reaches the daemon (stat may be answered from the
        // kernel's attribute cache): ENOTCONN means its daemon is dead.
        match statfs_errno(path) {
            Some(libc::ENOTCONN) => {
                tracing::warn!(mountpoint = %shown, "found a stale mount left by a dead daemon; cleaning it up");
                lazy_unmount(path);
            }
            _ => {
                return Err(UsageError(format!(
                    "mountpoint '{shown}' is already mounted ({fstype}); unmount it first"
                )));
            }
        }
    }
    let canonical = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => path.canonicalize().map_err(|e| {
            UsageError(format!(
                "mountpoint '{shown}' cannot be resolved: {}",
                io_reason(&e)
            ))
        })?,
        Ok(_) => {
            return Err(UsageError(format!(
                "mountpoint '{shown}' is not a directory"
            )));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(UsageError(format!(
                "mountpoint '{shown}' is a stale mount that could not be cleaned up; run `musicfs unmount {shown}`"
            )));
        }
        Err(e) => {
            return Err(UsageError(format!(
                "mountpoint '{shown}' cannot be used: {}",
                io_reason(&e)
            )));
        }
    };
    if !allow_non_empty {
        check_empty(&canonical, path)?;
    }
    Ok(canonical)
}

/// Refuses a mountpoint with files in it: the mount would hide them.
fn check_empty(dir: &Path, shown: &Path) -> Result<(), UsageError> {
    let shown = shown.display();
    let mut entries = std::fs::read_dir(dir).map_err(|e| {
        UsageError(format!(
            "mountpoint '{shown}' cannot be listed: {}",
            io_reason(&e)
        ))
    })?;
    match entries.next() {
        None => Ok(()),
        Some(first) => {
            let example = first
                .map(|e| format!(" (it holds '{}')", e.file_name().to_string_lossy()))
                .unwrap_or_default();
            Err(UsageError(format!(
                "mountpoint '{shown}' is not empty{example}; the mount would hide its files. \
                 Use an empty directory, or --allow-non-empty"
            )))
        }
    }
}

/// The file-system type of a FUSE mount at `path`, if there is one.
fn fuse_mount_at(path: &Path) -> Option<String> {
    let entry = sys::mount_at(path).ok()??;
    entry.is_fuse().then_some(entry.fstype)
}

/// The errno of statfs(2) on `path`, or None if it succeeds.
fn statfs_errno(path: &Path) -> Option<i32> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `buf` is large enough
    // for the struct statfs(2) writes.
    let rc = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    (rc != 0).then(|| {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    })
}

/// `$XDG_CACHE_HOME/musicfs`, else `~/.cache/musicfs`.
pub fn default_cache_dir() -> Result<PathBuf, UsageError> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("musicfs"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("musicfs")),
        None => Err(UsageError(
            "no cache directory: set --cache-dir, XDG_CACHE_HOME or HOME".into(),
        )),
    }
}

fn check_cache_dir(dir: &Path) -> Result<(), UsageError> {
    let shown = dir.display();
    std::fs::create_dir_all(dir).map_err(|e| {
        UsageError(format!(
            "cache dir '{shown}' cannot be created: {}",
            io_reason(&e)
        ))
    })?;
    let probe = dir.join(format!(".musicfs-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|e| {
        UsageError(format!(
            "cache dir '{shown}' is not writable: {}",
            io_reason(&e)
        ))
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Loads the saved catalog, dropping origins whose configuration changed,
/// and scans the origins the cache has never seen (the first mount). Known
/// origins are caught up with in the background by their watchers and
/// pollers. Also says which origins were scanned just now (their pollers
/// need not list them again at once).
fn load_catalog(
    plan: &MountPlan,
    sources: &[SyncSource],
    rt: &tokio::runtime::Handle,
    db: &Db,
    scan: &Arc<ScanState>,
) -> Result<(Vec<CatalogEntry>, Vec<bool>), RunError> {
    let mut scanned_now = vec![false; plan.origins.len()];
    let mut saved_tree = false;
    let mut failed: Vec<(OriginId, &OriginSpec, String)> = Vec::new();
    let (mut entries, damaged) = db.load_catalog_counted()?;
    if damaged > 0 {
        // Damaged records are tracks missing from the tree: rebuild the
        // catalog from the origins before showing anything.
        tracing::warn!(
            damaged,
            "the saved catalog is damaged; rescanning every origin before mounting"
        );
        for i in 0..plan.origins.len() {
            db.set_meta(&format!("origin/{i}"), b"")?;
        }
    }
    for (i, (spec, source)) in plan.origins.iter().zip(sources).enumerate() {
        let id = OriginId(i as u16);
        let meta_key = format!("origin/{i}");
        let saved = db.get_meta(&meta_key)?;
        if saved.as_deref() == Some(spec.key().as_bytes()) {
            saved_tree = true;
            continue;
        }
        // New origin, or another origin now has this index: forget what was
        // saved for this index and scan it.
        entries.retain(|e| e.source.origin != id);
        let report = match scan_origin(id, spec, source, rt, scan)? {
            Ok(report) => {
                scanned_now[i] = true;
                report
            }
            Err(e) => {
                failed.push((id, spec, e));
                continue;
            }
        };
        db.replace_catalog_for_origin(id, &report)?;
        db.set_meta(&meta_key, spec.key().as_bytes())?;
        entries.extend(report);
    }
    // Nothing saved and nothing answered: an empty mount that says it is
    // ready would hide the cause. Unless asked to wait for the origins.
    if !failed.is_empty() && !saved_tree && !scanned_now.contains(&true) && !plan.wait_for_origins {
        return Err(NoOriginAnswers {
            failures: failed
                .into_iter()
                .map(|(_, spec, why)| (spec.describe(), why))
                .collect(),
        }
        .into());
    }
    // An origin that cannot be scanned now is saved as known and empty:
    // its poller's sync reads it whole once it answers.
    for (id, spec, why) in failed {
        tracing::warn!(
            origin = %spec.describe(),
            error = %why,
            "cannot scan this origin now; mounting without its tracks, which appear once it answers"
        );
        db.replace_catalog_for_origin(id, &[])?;
        db.set_meta(&format!("origin/{}", id.0), spec.key().as_bytes())?;
    }
    let configured = plan.origins.len();
    entries.retain(|e| usize::from(e.source.origin.0) < configured);
    db.flush()?;
    Ok((entries, scanned_now))
}

/// Scan progress for a first scan: the terminal bar, `musicfs status`, and
/// systemd (STATUS= lines, and EXTEND_TIMEOUT_USEC so a long first scan is
/// not taken for a hung start).
struct FirstScanProgress {
    bar: TerminalProgress,
    state: Arc<ScanState>,
    last_notice: parking_lot::Mutex<Instant>,
}

impl FirstScanProgress {
    const NOTICE_EVERY: Duration = Duration::from_secs(2);

    fn new(state: Arc<ScanState>) -> FirstScanProgress {
        FirstScanProgress {
            bar: TerminalProgress::new(),
            state,
            // The first progress is told at once, then every NOTICE_EVERY.
            last_notice: parking_lot::Mutex::new(
                Instant::now()
                    .checked_sub(Self::NOTICE_EVERY)
                    .unwrap_or_else(Instant::now),
            ),
        }
    }

    fn tell_systemd(&self) {
        let mut last = self.last_notice.lock();
        if last.elapsed() < Self::NOTICE_EVERY {
            return;
        }
        *last = Instant::now();
        let done = self.state.scanned.load(Ordering::Relaxed);
        let seen = self.state.seen.load(Ordering::Relaxed);
        systemd::status(&format!("first scan: {done} of {seen} files"));
        systemd::extend_timeout(Self::NOTICE_EVERY * 5);
    }
}

impl ScanProgress for FirstScanProgress {
    fn discovered(&self, n: u64) {
        self.bar.discovered(n);
        self.state.seen.fetch_add(n, Ordering::Relaxed);
        self.tell_systemd();
    }
    fn scanned(&self, n: u64) {
        self.bar.scanned(n);
        self.state.scanned.fetch_add(n, Ordering::Relaxed);
        self.tell_systemd();
    }
    fn finish(&self) {
        self.bar.finish();
    }
}

/// Scans a new origin, reporting progress (bar, `musicfs status`, systemd).
///
/// A remote origin that cannot be scanned now (unreachable, refused) gives
/// the inner `Err` with every cause: the mount comes up with the other
/// origins' tracks (or the saved tree), and the origin's poller scans it
/// once it answers (its sync is checkpointed, so the work is not lost if
/// that is cut short too). A local origin that cannot be walked is an
/// error: it was checked a moment ago.
fn scan_origin(
    id: OriginId,
    spec: &OriginSpec,
    source: &SyncSource,
    rt: &tokio::runtime::Handle,
    state: &Arc<ScanState>,
) -> Result<Result<Vec<CatalogEntry>, String>, RunError> {
    let what = spec.describe();
    *state.what.lock() = what.clone();
    tracing::info!(origin = %what, "scanning a new origin; the mount comes up when it is done");
    let progress = FirstScanProgress::new(Arc::clone(state));
    let started = Instant::now();
    let entries = match source {
        SyncSource::Local(root) => scan::scan_local(id, root, &ScanOptions::default(), &progress)
            .map(|r| Ok(r.entries))
            .map_err(|e| RunError(format!("cannot scan origin '{what}': {e}"))),
        SyncSource::Remote(remote) => match scan_remote_blocking(
            rt,
            id,
            Arc::clone(remote),
            &RemoteScanOptions::default(),
            &progress,
        ) {
            Ok(report) => {
                tracing::info!(
                    origin = %what,
                    files = report.entries.len(),
                    unreadable = report.unreadable,
                    fetched_bytes = report.bytes_fetched,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "remote origin scanned"
                );
                Ok(Ok(report.entries))
            }
            Err(e) => Ok(Err(sys::error_chain(&e))),
        },
    };
    state.what.lock().clear();
    entries
}

/// How long a graceful shutdown waits for reads in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a shutdown waits for a running sync to reach its next saved
/// batch (or for the search build to finish).
const SYNC_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Exit code of a shutdown cut short by a second signal.
pub const EXIT_FORCED: i32 = 130;

/// Mounts and serves until unmounted or signalled.
pub fn run(plan: MountPlan) -> Result<(), RunError> {
    let started = Instant::now();
    // Before anything slow: a mount that cannot work fails now, not after
    // a first scan of many minutes.
    sys::check_fuse_device(Path::new(sys::FUSE_DEVICE))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("musicfs-io")
        .enable_all()
        .build()?;
    let mut signals = Signals::install(&runtime, &plan.mountpoint);
    let metrics_listener =
        match plan.metrics_addr {
            Some(addr) => Some(crate::service::metrics::bind(addr).map_err(|e| {
                RunError(format!("cannot serve metrics on {addr}: {}", io_reason(&e)))
            })?),
            None => None,
        };
    let descriptions = plan.origins.iter().map(OriginSpec::describe).collect();
    let control = Control::new(&plan.mountpoint, &plan.cache_dir, descriptions);
    let _socket = match control::serve(Arc::clone(&control), runtime.handle()) {
        Ok(guard) => Some(guard),
        Err(e) => {
            tracing::warn!(error = %e, "no control socket; `musicfs status` will not see this mount");
            None
        }
    };
    // The database first: its lock keeps a second daemon out before the
    // chunk store empties the temp directory (which the first one uses).
    let opened = Db::open(&plan.cache_dir).map_err(|e| -> RunError {
        if e.is_locked() {
            CacheInUse {
                cache_dir: plan.cache_dir.clone(),
                owner: CacheOwner::read(&plan.cache_dir),
            }
            .into()
        } else {
            e.into()
        }
    })?;
    if let Err(e) = CacheOwner::this_process(&plan.mountpoint).write(&plan.cache_dir) {
        tracing::warn!(error = %e, "cannot write the cache's owner file");
    }
    let store = Arc::new(ChunkStore::open(&plan.cache_dir)?);
    let db = Arc::new(opened.db);
    let mut chunk_index = db.load_chunk_index()?;
    if let Some(what) = &opened.repaired {
        tracing::warn!(what = %what, "the cache database was damaged and has been rebuilt");
        chunk_index = rebuild_chunk_index(&store, &db)?;
    }
    // Each origin once, shared by the first scan, the reads and the syncs.
    let mut readers: Vec<Arc<dyn Origin>> = Vec::with_capacity(plan.origins.len());
    let mut sources: Vec<SyncSource> = Vec::with_capacity(plan.origins.len());
    for (i, spec) in plan.origins.iter().enumerate() {
        let id = OriginId(i as u16);
        match &spec.kind {
            OriginKind::Local(root) => {
                readers.push(Arc::new(LocalOrigin::new(id, root.clone())));
                sources.push(SyncSource::Local(root.clone()));
            }
            OriginKind::Remote(remote) => {
                let opened: Arc<dyn RemoteOrigin> = remote.open(id).map_err(|e| {
                    RunError(format!("cannot set up origin '{}': {e}", spec.describe()))
                })?;
                readers.push(Arc::clone(&opened) as Arc<dyn Origin>);
                sources.push(SyncSource::Remote(opened));
            }
        }
    }
    control.set_phase("scanning");
    let (catalog, scanned_now) =
        load_catalog(&plan, &sources, runtime.handle(), &db, &control.scan)?;
    let (tree, report) = VirtualTree::build(&plan.layout, &catalog);
    tracing::info!(
        tracks = report.tracks,
        mirrors = report.mirrors,
        covers = report.covers,
        renamed = report.renamed,
        unreadable = report.unreadable,
        lyrics = report.lyrics,
        images = report.images,
        artist_images = report.artist_images,
        cue_sheets = report.cues,
        playlists = report.playlists,
        playlist_entries_not_in_library = report.playlist_entries_missing,
        sidecars_left_out = report.sidecars_left_out,
        "tree ready"
    );
    // The tree holds what it needs; the catalog is read from the db again
    // when a sync needs it.
    drop(catalog);
    crate::sys::memory::release_free_memory();
    let manifests = db
        .load_manifests()?
        .into_iter()
        .map(|(origin, path, m)| ((origin, path), m));
    let config = EngineConfig {
        read_timeout: plan.read_timeout,
        cache_capacity_bytes: plan.cache_size,
        pin_share_pct: plan.pin_share,
        uncached_origins: plan
            .origins
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.cached)
            .map(|(i, _)| OriginId(i as u16))
            .collect(),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, tree, manifests, chunk_index, seed_from_clock());
    for i in 0..plan.origins.len() {
        engine.track_origin(musicfs_core::Time::ZERO, OriginId(i as u16));
    }
    engine.restore_pins(db.load_pins()?);
    let daemon = Daemon::new(
        engine,
        runtime.handle().clone(),
        readers,
        store,
        Arc::clone(&db),
    );
    let _ = control.daemon.set(Arc::clone(&daemon));
    let supervisor = Arc::new(Supervisor::new(
        runtime.handle().clone(),
        RestartPolicy::default(),
    ));
    let _ = control.supervisor.set(Arc::clone(&supervisor));
    let syncer = Arc::new(Syncer::new(
        Arc::clone(&daemon),
        Arc::clone(&db),
        plan.layout.clone(),
        sources.clone(),
    ));
    let _ = control.syncer.set(Arc::clone(&syncer));
    if let Some(listener) = metrics_listener {
        let labels = plan
            .origins
            .iter()
            .enumerate()
            .map(|(i, o)| o.name.clone().unwrap_or_else(|| i.to_string()))
            .collect();
        let metrics =
            crate::service::metrics::Metrics::new(Arc::clone(&daemon), Arc::clone(&syncer), labels);
        let addr = crate::service::metrics::serve(listener, metrics, runtime.handle())?;
        tracing::info!(url = %format!("http://{addr}/metrics"), "serving metrics");
        let _ = control.metrics_addr.set(addr);
    }
    let pin_filler = PinFiller::new(Arc::clone(&daemon));
    {
        // A sync may have changed pinned files (a retag): fetch them again.
        let filler = Arc::clone(&pin_filler);
        syncer.on_tree_change(Box::new(move |_| filler.kick()));
    }
    let _ = control.pin_filler.set(Arc::clone(&pin_filler));
    if plan.change_targets.any() {
        let (queue, receiver) = changes::queue();
        syncer.on_tree_change(Box::new(move |change| queue.push(change.tree, change.diff)));
        runtime.spawn(changes::run(
            receiver,
            plan.mountpoint.clone(),
            plan.change_targets.clone(),
        ));
    }
    // The search index opens in the background: a rebuild must not delay
    // the mount. Until it is ready, searches answer from the saved index.
    let search: Arc<OnceLock<Arc<LiveSearch>>> = Arc::new(OnceLock::new());
    {
        let search = Arc::clone(&search);
        syncer.on_tree_change(Box::new(move |change| {
            if let Some(live) = search.get()
                && let Err(e) = live.tree_changed(change.tree, change.catalog)
            {
                tracing::warn!(error = %e, "could not update the search index");
            }
        }));
    }
    let _ = control.search.set(Arc::clone(&search));

    let (session, mut kernel_mount) = open_session(
        MusicFs::new(Arc::clone(&daemon), plan.ownership, Arc::clone(&search))
            .with_xattrs(plan.xattrs)
            .with_kernel_passthrough(
                plan.origins
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| !o.cached)
                    .filter_map(|(i, o)| match &o.kind {
                        OriginKind::Local(root) => Some((OriginId(i as u16), root.clone())),
                        OriginKind::Remote(_) => None,
                    })
                    .collect(),
            ),
        &plan,
    )?;
    // Tests: a signal between mount(2) and the flag below.
    fail::fail_point!("mounted-before-serving");
    // The kernel mount exists from here on: a signal must now unmount it
    // through the graceful shutdown (not exit and leave a dead mount).
    if let Some(s) = &signals {
        s.mounted.store(true, Ordering::SeqCst);
    }
    let invalidator = Invalidator::new(session.notifier());
    syncer.on_tree_change_first(Box::new(move |change| {
        invalidator.tree_changed(change.diff)
    }));
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let fuse_thread = std::thread::Builder::new()
        .name("musicfs-fuse".into())
        .spawn(move || {
            let result = session.run();
            let _ = ended_tx.send(());
            result
        })?;
    tracing::info!(
        mountpoint = %plan.mountpoint.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "mounted"
    );
    spawn_background(
        &supervisor,
        &daemon,
        &syncer,
        &sources,
        &scanned_now,
        plan.poll_interval,
    );
    {
        let filler = Arc::clone(&pin_filler);
        supervisor.spawn(
            "pins",
            false,
            Arc::new(move || {
                let filler = Arc::clone(&filler);
                Box::pin(async move {
                    filler.run().await;
                    Err("pin filler ended".to_string())
                })
            }),
        );
    }
    open_search(&supervisor, &syncer, &daemon, &db, &plan.cache_dir, &search);
    control.set_phase("serving");
    systemd::ready(&format!(
        "serving {} tracks at {}",
        report.tracks,
        plan.mountpoint.display()
    ));
    let watchdog = systemd::start_watchdog(&plan.mountpoint);

    let signal = runtime.block_on(wait_for_stop(signals.as_mut(), ended_rx));
    // Graceful shutdown, in order: no new work; background tasks stopped;
    // reads in flight drained (bounded: a slow origin ends in EIO, never a
    // hang); state flushed; unmounted.
    systemd::stopping();
    control.set_phase("stopping");
    if let Some(name) = signal {
        tracing::info!(
            signal = name,
            "shutting down (a second signal exits at once)"
        );
    }
    // Each step is logged (`shutdown: ...`), so the order can be checked
    // from outside (tests/e2e/lifecycle.rs).
    daemon.with_engine(|e, _| e.begin_shutdown());
    tracing::info!("shutdown: new reads get EIO");
    supervisor.stop_all();
    // A sync (or the search build) on the blocking pool outlives its
    // aborted task: wait for it to reach a saved batch, so that nothing
    // writes the catalog or the index after they are saved below.
    let quiet = syncer.stop(SYNC_STOP_TIMEOUT);
    if !quiet {
        tracing::warn!(timeout = ?SYNC_STOP_TIMEOUT, "a sync or the search build still runs; it is left to finish or to resume at the next mount");
    }
    tracing::info!("shutdown: syncs, the watcher and the search build stopped");
    if !runtime.block_on(drain(&daemon, DRAIN_TIMEOUT)) {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "reads still in flight after the drain timeout get EIO");
    }
    daemon.with_engine(|e, _| e.abort_all());
    daemon.cancel_fetches();
    tracing::info!("shutdown: reads drained");
    if let Err(e) = daemon.persist() {
        tracing::warn!(error = %e, "could not save the cache state at exit");
    }
    tracing::info!("shutdown: cache state saved");
    if let Some(live) = search.get() {
        match live.commit() {
            Ok(()) => tracing::info!("shutdown: search index committed"),
            Err(e) => tracing::warn!(error = %e, "could not save the search index at exit"),
        }
    }
    db.flush()?;
    tracing::info!("shutdown: database flushed");
    if signal.is_some()
        && let Err(e) = kernel_mount.unmount()
    {
        tracing::warn!(error = %e, "unmount failed (busy?); detaching the mount instead");
        lazy_unmount(&plan.mountpoint);
    }
    match fuse_thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "FUSE session ended with an error");
            // Nothing serves the mount any more: leave no dead mount.
            if matches!(kernel_mount, KernelMount::Direct(_)) {
                let _ = kernel_mount.unmount();
            }
        }
        Err(_) => tracing::error!("FUSE thread panicked"),
    }
    if let Some(stop) = watchdog {
        stop.store(true, Ordering::Relaxed);
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    CacheOwner::remove_if_mine(&plan.cache_dir);
    tracing::info!("unmounted; bye");
    Ok(())
}

/// The daemon's background tasks, under the supervisor: timers,
/// persistence, a watcher per local origin (which first catches up with
/// changes made while unmounted, by a delta sync) and a poller per remote
/// origin (a delta sync at once, unless it was scanned just now, then
/// every `poll_interval`).
fn spawn_background(
    supervisor: &Supervisor,
    daemon: &Arc<Daemon>,
    syncer: &Arc<Syncer>,
    sources: &[SyncSource],
    scanned_now: &[bool],
    poll_interval: Duration,
) {
    let d = Arc::clone(daemon);
    supervisor.spawn(
        "timers",
        true,
        Arc::new(move || {
            let d = Arc::clone(&d);
            Box::pin(async move {
                d.run_timers().await;
                Err("timer loop ended".to_string())
            })
        }),
    );
    let d = Arc::clone(daemon);
    supervisor.spawn(
        "persistence",
        true,
        Arc::new(move || {
            let d = Arc::clone(&d);
            Box::pin(async move {
                d.run_persistence().await;
                Err("persistence loop ended".to_string())
            })
        }),
    );
    for (i, source) in sources.iter().enumerate() {
        let (s, origin) = (Arc::clone(syncer), OriginId(i as u16));
        match source {
            SyncSource::Local(root) => {
                let root = root.clone();
                supervisor.spawn(
                    &format!("watch:{i}"),
                    true,
                    Arc::new(move || {
                        Box::pin(watch::watch_origin(Arc::clone(&s), origin, root.clone()))
                    }),
                );
            }
            SyncSource::Remote(_) => {
                let fresh = scanned_now.get(i).copied().unwrap_or(false);
                // A restart of the task (after a panic) syncs at once.
                let first = Arc::new(AtomicBool::new(fresh));
                supervisor.spawn(
                    &format!("poll:{i}"),
                    true,
                    Arc::new(move || {
                        let skip_first = first.swap(false, Ordering::Relaxed);
                        Box::pin(watch::poll_origin(
                            Arc::clone(&s),
                            origin,
                            poll_interval,
                            skip_first,
                        ))
                    }),
                );
            }
        }
    }
}

/// Opens the search index in the background (rebuilding it if needed).
fn open_search(
    supervisor: &Supervisor,
    syncer: &Arc<Syncer>,
    daemon: &Arc<Daemon>,
    db: &Arc<Db>,
    cache_dir: &Path,
    slot: &Arc<OnceLock<Arc<LiveSearch>>>,
) {
    let (syncer, d, db, dir, slot) = (
        Arc::clone(syncer),
        Arc::clone(daemon),
        Arc::clone(db),
        cache_dir.to_path_buf(),
        Arc::clone(slot),
    );
    // Critical: an index that cannot be opened now (out of descriptors, a
    // full disk) is tried again with growing pauses; once open, the task
    // is finished for good.
    supervisor.spawn(
        "search-index",
        true,
        Arc::new(move || {
            let (syncer, d, db, dir, slot) = (
                Arc::clone(&syncer),
                Arc::clone(&d),
                Arc::clone(&db),
                dir.clone(),
                Arc::clone(&slot),
            );
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    // No sync in between: a tree change published while the
                    // index opens would otherwise be missed by it.
                    syncer.exclusive(|| {
                        tracing::debug!("search index: opening");
                        // Tests: a slow build, to stop the daemon during it.
                        fail::fail_point!("search-index-open");
                        let tree = d.inspect(|e| e.tree().clone());
                        let live = LiveSearch::open(&dir, &db, &tree).map_err(|e| e.to_string())?;
                        let _ = slot.set(live);
                        Ok::<(), String>(())
                    })?;
                    crate::sys::memory::release_free_memory();
                    Ok(())
                })
                .await
                .map_err(|e| e.to_string())?
            })
        }),
    );
}

/// Waits until no read is in flight, or `timeout`. True if drained.
async fn drain(daemon: &Arc<Daemon>, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while daemon.inspect(|e| e.reads_in_flight()) > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Signals, from the very start of `run`: before the mount is up a signal
/// ends the process at once (nothing is mounted; the catalog is written in
/// atomic batches, so an interrupted first scan loses only its progress);
/// after, the first signal starts the graceful shutdown and a second one
/// detaches the mount and exits at once. SIGTERM, SIGINT and SIGHUP stop
/// the daemon, except that with `--log-file` SIGHUP only reopens the log
/// file (logrotate).
struct Signals {
    first: tokio::sync::mpsc::UnboundedReceiver<&'static str>,
    mounted: Arc<AtomicBool>,
}

impl Signals {
    fn install(runtime: &tokio::runtime::Runtime, mountpoint: &Path) -> Option<Signals> {
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
                if name == "SIGHUP" && crate::cli::logging::logs_to_file() {
                    match crate::cli::logging::reopen() {
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
async fn wait_for_stop(
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

/// The mount's source in the mount table: `musicfs:<first origin>`.
fn fsname(plan: &MountPlan) -> String {
    match plan.origins.first().map(|o| &o.kind) {
        Some(OriginKind::Local(p)) => format!("musicfs:{}", p.display()),
        Some(OriginKind::Remote(r)) => format!("musicfs:{}", r.key()),
        None => "musicfs".into(),
    }
}

/// The kernel mount, and how it ends.
enum KernelMount {
    /// Mounted here with mount(2) (type `fuse.musicfs`): unmounted with
    /// umount2(2).
    Direct(PathBuf),
    /// Mounted by fuser through fusermount3 (no privilege to mount; it
    /// sets the type `fuse.musicfs` from the subtype option).
    Fuser(fuser::SessionUnmounter),
}

impl KernelMount {
    fn unmount(&mut self) -> std::io::Result<()> {
        match self {
            KernelMount::Direct(path) => match sys::umount(path, sys::Unmount::Normal) {
                // Already gone (someone ran umount): nothing to do.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
                other => other,
            },
            KernelMount::Fuser(unmounter) => unmounter.unmount(),
        }
    }
}

/// Mounts and opens the FUSE session. fuser 0.18 mounts with type `fuse`
/// when it calls mount(2) itself, so that `findmnt -t fuse.musicfs` and
/// mount(8) would not know the mount: MusicFS calls mount(2) with type
/// `fuse.musicfs` itself (as libfuse does) and hands the device to
/// `Session::from_fd`. Without the privilege to mount (a normal user),
/// fuser goes through fusermount3, which mounts as `fuse.musicfs` too.
fn open_session(
    fs: MusicFs,
    plan: &MountPlan,
) -> Result<(fuser::Session<MusicFs>, KernelMount), RunError> {
    let config = fuse_config(plan);
    let shown = plan.mountpoint.display();
    let source = fsname(plan);
    let direct = sys::mount_fuse(&sys::FuseMount {
        source: &source,
        target: &plan.mountpoint,
        subtype: "musicfs",
        allow_other: plan.allow_other,
    });
    match direct {
        Ok(device) => {
            let acl = config.acl;
            match fuser::Session::from_fd(fs, device, acl, config) {
                Ok(session) => Ok((session, KernelMount::Direct(plan.mountpoint.clone()))),
                Err(e) => {
                    lazy_unmount(&plan.mountpoint);
                    Err(RunError(format!(
                        "cannot start the FUSE session at '{shown}': {e}"
                    )))
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            tracing::debug!("no privilege to mount(2); mounting through fusermount3");
            let mut session = fuser::Session::new(fs, &plan.mountpoint, &config)
                .map_err(|e| RunError(format!("cannot mount at '{shown}': {e}")))?;
            let unmounter = session.unmount_callable();
            Ok((session, KernelMount::Fuser(unmounter)))
        }
        Err(e) => Err(RunError(format!("cannot mount at '{shown}': {e}"))),
    }
}

fn fuse_config(plan: &MountPlan) -> fuser::Config {
    use fuser::MountOption as O;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        O::FSName(fsname(plan)),
        O::Subtype("musicfs".into()),
        O::RO,
        O::NoDev,
        O::NoSuid,
        O::NoAtime,
        O::DefaultPermissions,
    ];
    if plan.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(2);
    config.clone_fd = true;
    config
}

/// Rebuilds the chunk index from the chunk files after the database was
/// lost: the files are the truth (each is verified when read).
fn rebuild_chunk_index(
    store: &ChunkStore,
    db: &Db,
) -> Result<Vec<(musicfs_core::ChunkId, u32, u64)>, RunError> {
    let found = store.scan()?;
    let index: Vec<_> = found
        .into_iter()
        .filter_map(|(id, len)| u32::try_from(len).ok().map(|len| (id, len, 0)))
        .collect();
    db.put_chunks(&index)?;
    tracing::info!(
        chunks = index.len(),
        "chunk index rebuilt from the chunk files"
    );
    Ok(index)
}

/// Detaches a busy mount: it disappears now, open files keep working.
pub fn lazy_unmount(mountpoint: &Path) {
    if sys::umount(mountpoint, sys::Unmount::Lazy).is_err() {
        let _ = std::process::Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(mountpoint)
            .status();
    }
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn current_gid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

/// Retry jitter only needs to differ between daemons, not be secret.
fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_options_are_split_off_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a,b");
        std::fs::create_dir(&odd).unwrap();
        let raw = format!("{},name=home,priority=-3", odd.display());
        let spec = parse_origin(&raw).unwrap();
        assert_eq!(spec.name.as_deref(), Some("home"));
        assert_eq!(spec.priority, -3);
        assert_eq!(
            spec.kind,
            OriginKind::Local(odd.canonicalize().unwrap()),
            "a comma inside the path is part of the path"
        );
        let plain = parse_origin(&odd.display().to_string()).unwrap();
        assert_eq!((plain.name, plain.priority), (None, 0));
    }

    #[test]
    fn remote_origins_parse_and_describe_without_secrets() {
        let spec =
            parse_origin("s3://music/flac?endpoint=http://127.0.0.1:9000,name=bucket,priority=2")
                .unwrap();
        assert!(matches!(&spec.kind, OriginKind::Remote(r) if matches!(**r, RemoteSpec::S3(_))));
        assert_eq!(spec.priority, 2);
        assert!(
            spec.describe().starts_with("bucket (s3://music/flac"),
            "{}",
            spec.describe()
        );
        let sftp = parse_origin("sftp://me@nas:2222/srv/music").unwrap();
        assert!(matches!(&sftp.kind, OriginKind::Remote(r) if matches!(**r, RemoteSpec::Sftp(_))));
        assert_ne!(spec.key(), sftp.key());
        let err = parse_origin("sftp://me:hunter2@nas/srv/music")
            .unwrap_err()
            .0;
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse_origin("s3://b/p?secret_access_key=hunter2")
            .unwrap_err()
            .0;
        assert!(!err.contains("hunter2"), "{err}");
    }

    fn plan_error(origins: &[&str]) -> String {
        let mut argv = vec!["musicfs", "mount"];
        for o in origins {
            argv.extend(["--origin", o]);
        }
        argv.push("/nonexistent/mnt");
        let args = match crate::cli::config::parse_command_line_from(argv) {
            Ok(cli) => match cli.command {
                crate::cli::Command::Mount(m) => m,
                other => panic!("not a mount: {other:?}"),
            },
            Err(e) => panic!("{e}"),
        };
        match MountPlan::from_args(&args) {
            Ok(plan) => panic!("accepted {origins:?} as {:?}", plan.origins),
            Err(e) => e.0,
        }
    }

    #[test]
    fn the_same_origin_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let music = dir.path().join("music");
        std::fs::create_dir_all(music.join("sub")).unwrap();
        std::os::unix::fs::symlink(&music, dir.path().join("link")).unwrap();
        let m = music.display().to_string();
        let canonical = music.canonicalize().unwrap().display().to_string();
        for twin in [
            format!("{m}/"),
            format!("{m}/sub/.."),
            dir.path().join("link").display().to_string(),
            format!("{m}/,name=other,priority=5"),
        ] {
            let e = plan_error(&[m.as_str(), twin.as_str()]);
            assert!(
                e.contains(&format!(
                    "origin '{m}' and origin '{twin}' are the same place ({canonical})"
                )),
                "{twin}: {e}"
            );
        }
        for (a, b) in [
            ("s3://music/flac", "s3://music/flac/,name=again"),
            (
                "s3://music/flac?endpoint=http://minio:9000",
                "s3://music//flac?endpoint=http://minio:9000&region=x",
            ),
            ("sftp://me@nas/srv/music", "sftp://me@NAS:22/srv/music/"),
        ] {
            let e = plan_error(&[a, b]);
            assert!(
                e.contains("are the same place") && e.contains(a),
                "{b}: {e}"
            );
        }
        // Different places are still fine: the first error is the mountpoint.
        for (a, b) in [
            ("s3://music/flac", "s3://music/mp3"),
            (
                "s3://music/flac",
                "s3://music/flac?endpoint=http://minio:9000",
            ),
            ("sftp://me@nas/srv/music", "sftp://you@nas/srv/music"),
            ("sftp://me@nas/srv/music", "sftp://me@nas:2222/srv/music"),
        ] {
            let e = plan_error(&[a, b]);
            assert!(e.contains("mountpoint"), "{a} {b}: {e}");
        }
        let sub = music.join("sub").display().to_string();
        assert!(plan_error(&[&m, &sub]).contains("mountpoint"));
    }

    #[test]
    fn bad_origin_options_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        for (raw, says) in [
            (format!("{d},priority=high"), "whole number"),
            (format!("{d},name="), "name must be"),
            (format!("{d},name=a,name=b"), "twice"),
            ("ftp://host/x".to_owned(), "not supported"),
            ("s3://".to_owned(), "bucket"),
        ] {
            let err = parse_origin(&raw).unwrap_err().0;
            assert!(err.contains(says), "{raw}: {err}");
        }
    }

    #[test]
    fn origin_and_mountpoint_are_still_required() {
        let cli = |args: &[&str]| {
            let argv = std::iter::once("musicfs").chain(args.iter().copied());
            match crate::cli::config::parse_command_line_from(argv)
                .expect("parses")
                .command
            {
                crate::cli::Command::Mount(m) => *m,
                other => panic!("not a mount: {other:?}"),
            }
        };
        let e = MountPlan::from_args(&cli(&["mount", "/mnt"])).unwrap_err();
        assert!(e.0.contains("origin"), "{e}");
        let e = MountPlan::from_args(&cli(&["mount", "--origin", "/a"])).unwrap_err();
        assert!(e.0.contains("mountpoint"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("musicfs.toml");
        std::fs::write(&file, "mountpoint = \"/mnt\"").unwrap();
        let args = crate::cli::config::resolve(cli(&["mount", "--config", file.to_str().unwrap()]));
        let e = MountPlan::from_args(&args.unwrap()).unwrap_err();
        assert!(e.0.contains("origin"), "{e}");
    }
}
