//! `musicfs mount --config FILE`: the mount's settings in a TOML file, so a
//! systemd unit (dist/musicfs.service) or an admin keeps them in /etc.
//!
//! Every command-line option has a key (dist/musicfs.toml shows them all):
//!
//! ```toml
//! origins = ["/srv/flac", { url = "sftp://nas/music", name = "nas", priority = 1 }]
//! # a table may also say cache = false, or fill = "inline" (see --origin)
//! mountpoint = "/mnt/music"
//! cache_dir = "/var/cache/musicfs"
//! cache_size = "20G"          # or a number of bytes
//! layout = "$albumartist/$album/$track - $title.$ext"
//! allow_other = true
//! allow_non_empty = false    # mount on a directory that is not empty
//! xattrs = false             # user.musicfs.cached and .pinned on every file
//! keep_tags = true           # keep each track's head and tail at the first scan
//! wait_for_origins = false   # a first mount with no origin answering mounts empty
//! read_timeout = "30s"        # or 1m30s, or a number of seconds
//! poll_interval = "5m"        # between listings of remote origins
//! log_level = "info"
//! on_change = "curl -s -X POST http://jellyfin:8096/Library/Media/Updated ..."
//! notify_mpd = "localhost:6600"
//! uid = 1000                  # owner shown on every file and folder
//! gid = 1000
//! umask = "027"               # octal, as a string
//! log_file = "/var/log/musicfs/music.log"
//! metrics_addr = "127.0.0.1:9477"
//! pin_share = 80              # percent of cache_size `musicfs pin` may take
//! ```
//!
//! Rules, chosen so that a config never surprises:
//!
//! - Options given on the command line win over the file. `--origin` replaces
//!   the file's whole origin list rather than adding to it: a merged list
//!   would make origin priorities depend on two places at once.
//!   `--allow-other` can only turn sharing on (and `--allow-non-empty` its check off).
//! - A key the program does not know is an error, never ignored: a typo
//!   (`cache_sise`) would otherwise silently fall back to a default.
//! - Every value is checked here, with the file and the line in the message:
//!   one line on stderr and exit code 2, like any other usage error.
//! - Relative paths are relative to the file's folder, not to wherever the
//!   daemon was started (systemd starts it in `/`).
//! - Origins are preferred in list order; a table's `priority` reorders them
//!   (lower first, 0 when absent, ties keep list order).

use crate::cli::{
    Cli, Command, DurationError, MountArgs, ValueError, parse_gid, parse_log_level,
    parse_metrics_addr, parse_poll_interval, parse_read_timeout, parse_size, parse_uid,
    parse_umask,
};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use musicfs_core::Layout;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Parses the process's command line like `Cli::try_parse`, and also records
/// which `mount` options were given on it (in [`MountArgs::given`]), so that
/// [`resolve`] can tell `--cache-size 10G` from the 10G default.
pub fn parse_command_line() -> Result<Cli, clap::Error> {
    parse_command_line_from(std::env::args_os())
}

/// [`parse_command_line`] for a given argument list (the first item is the
/// program name).
pub fn parse_command_line_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut matches = Cli::command().try_get_matches_from(args)?;
    let given: BTreeSet<String> = match matches.subcommand() {
        Some(("mount", sub)) => sub
            .ids()
            .filter(|id| sub.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.as_str().to_owned())
            .collect(),
        _ => BTreeSet::new(),
    };
    let mut cli =
        Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut Cli::command()))?;
    if let Command::Mount(args) = &mut cli.command {
        args.given = given;
    }
    Ok(cli)
}

/// The final `musicfs mount` arguments: the `--config` file (if any) under
/// the options given on the command line. Errors are usage errors.
pub fn resolve(mut args: MountArgs) -> Result<MountArgs, ConfigFileError> {
    let Some(path) = args.config.clone() else {
        return Ok(args);
    };
    let file = load(&path)?;
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let given = |id: &str| args.given.contains(id);
    if args.origins.is_empty()
        && let Some(origins) = file.origins
    {
        args.origins = origins
            .into_iter()
            .map(|o| {
                if o.contains("://") {
                    o
                } else {
                    base.join(o).to_string_lossy().into_owned()
                }
            })
            .collect();
    }
    if args.mountpoint.is_none() {
        args.mountpoint = file.mountpoint.map(|p| base.join(p));
    }
    if args.cache_dir.is_none() {
        args.cache_dir = file.cache_dir.map(|p| base.join(p));
    }
    if let Some(size) = file.cache_size.filter(|_| !given("cache_size")) {
        args.cache_size = size;
    }
    if let Some(layout) = file.layout.filter(|_| !given("layout")) {
        args.layout = layout;
    }
    args.allow_other |= file.allow_other.unwrap_or(false);
    args.allow_non_empty |= file.allow_non_empty.unwrap_or(false);
    args.xattrs |= file.xattrs.unwrap_or(false);
    args.no_keep_tags |= file.keep_tags == Some(false);
    args.wait_for_origins |= file.wait_for_origins.unwrap_or(false);
    if let Some(secs) = file.read_timeout.filter(|_| !given("read_timeout")) {
        args.read_timeout = secs;
    }
    if let Some(secs) = file.poll_interval.filter(|_| !given("poll_interval")) {
        args.poll_interval = secs;
    }
    if let Some(level) = file.log_level.filter(|_| !given("log_level")) {
        args.log_level = level;
    }
    if args.on_change.is_none() {
        args.on_change = file.on_change;
    }
    if args.notify_mpd.is_none() {
        args.notify_mpd = file.notify_mpd;
    }
    args.uid = args.uid.or(file.uid);
    args.gid = args.gid.or(file.gid);
    args.umask = args.umask.or(file.umask);
    if args.log_file.is_none() {
        args.log_file = file.log_file.map(|p| base.join(p));
    }
    args.metrics_addr = args.metrics_addr.or(file.metrics_addr);
    if let Some(pct) = file.pin_share.filter(|_| !given("pin_share")) {
        args.pin_share = pct;
    }
    Ok(args)
}

/// A config file's settings, checked. Paths are as written (relative ones
/// are joined to the file's folder by [`resolve`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// Origin paths or URLs, most preferred first.
    pub origins: Option<Vec<String>>,
    /// Where to mount.
    pub mountpoint: Option<PathBuf>,
    /// Cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Cache limit in bytes.
    pub cache_size: Option<u64>,
    /// Path layout (already known to parse).
    pub layout: Option<String>,
    /// Let other users see the mount.
    pub allow_other: Option<bool>,
    /// Mount on a directory that is not empty.
    pub allow_non_empty: Option<bool>,
    /// Give files the user.musicfs.* extended attributes.
    pub xattrs: Option<bool>,
    /// Keep what the first scan reads of each track in the cache.
    pub keep_tags: Option<bool>,
    /// A first mount with no origin answering mounts empty.
    pub wait_for_origins: Option<bool>,
    /// Read deadline in seconds.
    pub read_timeout: Option<u64>,
    /// Seconds between listings of remote origins.
    pub poll_interval: Option<u64>,
    /// Log level (one of [`crate::cli::LOG_LEVELS`]).
    pub log_level: Option<String>,
    /// A command to run after each change.
    pub on_change: Option<String>,
    /// An MPD to tell of each change.
    pub notify_mpd: Option<String>,
    /// Owner shown on files and folders.
    pub uid: Option<u32>,
    /// Group shown on files and folders.
    pub gid: Option<u32>,
    /// Permission bits taken away.
    pub umask: Option<u16>,
    /// Where the daemon logs.
    pub log_file: Option<PathBuf>,
    /// Where the Prometheus metrics are served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Share of the cache pins may take, in percent.
    pub pin_share: Option<u8>,
}

/// Why the `--config` file cannot be used: one line naming the file (and
/// the line in it), reported like any other usage error (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read config file '{}': {}", path.display(), read_reason(.source))]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A key or value is wrong, at a known line.
    #[error("config file '{}' line {line} ({shown}): {}", path.display(), source.one_line())]
    AtLine {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The line's text (shortened).
        shown: String,
        /// What is wrong.
        #[source]
        source: ConfigError,
    },
    /// Something is wrong with the file as a whole.
    #[error("config file '{}': {}", path.display(), source.one_line())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ConfigError,
    },
}

fn read_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<FileConfig, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|e| e.in_file(path, &text))
}

/// A config error: a message and, when known, where in the text.
#[derive(Debug)]
pub struct ConfigError {
    message: String,
    span: Option<Range<usize>>,
}

impl ConfigError {
    /// The message on one line (toml's may span lines), in the file's words.
    fn one_line(&self) -> String {
        let message = self
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        message.replace("unknown field", "unknown key")
    }

    /// The error naming `path` and the line.
    fn in_file(self, path: &Path, text: &str) -> ConfigFileError {
        let path = path.to_path_buf();
        match self.span.clone() {
            Some(span) => {
                let at = span.start.min(text.len());
                let line = text[..at].matches('\n').count() + 1;
                // Type errors name the value, not the key: show the line.
                let shown: String = text.lines().nth(line - 1).unwrap_or("").trim().into();
                let shown = match shown.char_indices().nth(60) {
                    Some((cut, _)) => format!("{}...", &shown[..cut]),
                    None => shown,
                };
                ConfigFileError::AtLine {
                    path,
                    line,
                    shown,
                    source: self,
                }
            }
            None => ConfigFileError::Invalid { path, source: self },
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Parses and checks config text.
pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
        message: e.message().to_owned(),
        span: e.span(),
    })?;
    let origins = match raw.origins {
        Some(list) => Some(order_origins(list)?),
        None => None,
    };
    Ok(FileConfig {
        origins,
        mountpoint: raw.mountpoint.map(|p| p.0),
        cache_dir: raw.cache_dir.map(|p| p.0),
        cache_size: raw.cache_size.map(|s| s.0),
        layout: raw.layout.map(|l| l.0),
        allow_other: raw.allow_other,
        allow_non_empty: raw.allow_non_empty,
        xattrs: raw.xattrs,
        keep_tags: raw.keep_tags,
        wait_for_origins: raw.wait_for_origins,
        read_timeout: raw.read_timeout.map(|t| t.0),
        poll_interval: raw.poll_interval.map(|t| t.0),
        log_level: raw.log_level.map(|l| l.0),
        on_change: raw.on_change.map(|c| c.0),
        notify_mpd: raw.notify_mpd.map(|a| a.0),
        uid: raw.uid.map(|i| i.0),
        gid: raw.gid.map(|i| i.0),
        umask: raw.umask.map(|u| u.0),
        log_file: raw.log_file.map(|p| p.0),
        metrics_addr: raw.metrics_addr.map(|a| a.0),
        pin_share: raw.pin_share.map(|p| p.0),
    })
}

/// Checks origin names and sorts by priority (stable: ties keep list order).
fn order_origins(list: Vec<Spanned<OriginEntry>>) -> Result<Vec<String>, ConfigError> {
    let mut names = BTreeSet::new();
    for entry in &list {
        if let Some(name) = &entry.get_ref().name
            && !names.insert(name.clone())
        {
            return Err(ConfigError {
                message: format!("two origins are named '{name}'"),
                span: Some(entry.span()),
            });
        }
    }
    let mut entries: Vec<OriginEntry> = list.into_iter().map(Spanned::into_inner).collect();
    entries.sort_by_key(|e| e.priority.unwrap_or(0));
    // In `--origin` form: the name rides along; the order is the priority.
    Ok(entries
        .into_iter()
        .map(|e| {
            let mut origin = e.url;
            if let Some(name) = e.name {
                origin.push_str(&format!(",name={name}"));
            }
            if e.cache == Some(false) {
                origin.push_str(",cache=off");
            }
            if let Some(fill) = e.fill {
                origin.push_str(&format!(",fill={fill}"));
            }
            origin
        })
        .collect())
}

/// The file as written; each value type checks itself while deserializing,
/// so that its errors carry the value's span (and so its line).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    origins: Option<Vec<Spanned<OriginEntry>>>,
    mountpoint: Option<NonEmptyPath>,
    cache_dir: Option<NonEmptyPath>,
    cache_size: Option<CacheSize>,
    layout: Option<LayoutText>,
    allow_other: Option<bool>,
    allow_non_empty: Option<bool>,
    xattrs: Option<bool>,
    keep_tags: Option<bool>,
    wait_for_origins: Option<bool>,
    read_timeout: Option<ReadTimeout>,
    poll_interval: Option<PollInterval>,
    log_level: Option<LogLevel>,
    on_change: Option<ShellCommand>,
    notify_mpd: Option<HostPort>,
    uid: Option<UserId>,
    gid: Option<GroupId>,
    umask: Option<Umask>,
    log_file: Option<NonEmptyPath>,
    metrics_addr: Option<MetricsAddr>,
    pin_share: Option<PinShare>,
}

/// One origin: `"/srv/music"` or `{ url = "...", name = "...", priority = N }`.
#[derive(Debug)]
struct OriginEntry {
    url: String,
    name: Option<String>,
    priority: Option<i64>,
    cache: Option<bool>,
    fill: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginTable {
    url: String,
    name: Option<String>,
    priority: Option<i64>,
    cache: Option<bool>,
    fill: Option<String>,
}

impl<'de> Deserialize<'de> for OriginEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OriginEntry, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OriginEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an origin: a path or URL string, or a table { url = \"...\", name = \"...\", priority = N, cache = false, fill = \"inline\" }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OriginEntry, E> {
                Ok(OriginEntry {
                    url: origin_url(s)?,
                    name: None,
                    priority: None,
                    cache: None,
                    fill: None,
                })
            }
            // A hand-written visitor rather than an untagged enum: the table's
            // own errors (`ulr = ...`, a missing url) reach the user intact.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OriginEntry, A::Error> {
                let t = OriginTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if t.name
                    .as_deref()
                    .is_some_and(|n| n.trim().is_empty() || n.contains([',', '=']))
                {
                    return Err(de::Error::custom(
                        "an origin's name must be non-empty text without ',' or '='",
                    ));
                }
                Ok(OriginEntry {
                    url: origin_url(&t.url)?,
                    name: t.name,
                    priority: t.priority,
                    cache: t.cache,
                    fill: t.fill,
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn origin_url<E: de::Error>(s: &str) -> Result<String, E> {
    if s.trim().is_empty() {
        return Err(E::custom("an origin cannot be empty"));
    }
    Ok(s.to_owned())
}

#[derive(Debug)]
struct NonEmptyPath(PathBuf);

impl<'de> Deserialize<'de> for NonEmptyPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NonEmptyPath, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(de::Error::custom("a path cannot be empty"));
        }
        Ok(NonEmptyPath(PathBuf::from(s)))
    }
}

/// `"20G"` (as `--cache-size` takes it) or a number of bytes.
#[derive(Debug)]
struct CacheSize(u64);

impl<'de> Deserialize<'de> for CacheSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CacheSize, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CacheSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"20G\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CacheSize, E> {
                parse_size(s).map(CacheSize).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<CacheSize, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<CacheSize, E> {
                self.visit_str(&n.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration as `--read-timeout` takes it (`"30s"`, `"1m30s"`) or a number
/// of seconds, in its range.
#[derive(Debug)]
struct ReadTimeout(u64);

impl<'de> Deserialize<'de> for ReadTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ReadTimeout, D::Error> {
        d.deserialize_any(DurationVisitor(parse_read_timeout))
            .map(ReadTimeout)
    }
}

/// A duration as `--poll-interval` takes it (`"5m"`, `"1h"`) or a number of
/// seconds, in its range.
#[derive(Debug)]
struct PollInterval(u64);

impl<'de> Deserialize<'de> for PollInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PollInterval, D::Error> {
        d.deserialize_any(DurationVisitor(parse_poll_interval))
            .map(PollInterval)
    }
}

/// A duration string or a whole number of seconds, checked by the same
/// parser as the command line's.
struct DurationVisitor(fn(&str) -> Result<u64, DurationError>);

impl Visitor<'_> for DurationVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration like \"30s\", \"5m\", \"1m30s\" or a number of seconds")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
        (self.0)(s).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
        self.visit_str(&n.to_string())
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
        self.visit_str(&n.to_string())
    }
}

/// A layout that parses.
#[derive(Debug)]
struct LayoutText(String);

impl<'de> Deserialize<'de> for LayoutText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LayoutText, D::Error> {
        let s = String::deserialize(d)?;
        Layout::parse(&s).map_err(|e| de::Error::custom(format!("bad layout '{s}': {e}")))?;
        Ok(LayoutText(s))
    }
}

/// One of [`crate::cli::LOG_LEVELS`] (any case), checked as `--log-level` is.
#[derive(Debug)]
struct LogLevel(String);

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LogLevel, D::Error> {
        let s = String::deserialize(d)?;
        parse_log_level(&s).map(LogLevel).map_err(de::Error::custom)
    }
}

/// A shell command (`on_change`): not empty.
#[derive(Debug)]
struct ShellCommand(String);

impl<'de> Deserialize<'de> for ShellCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ShellCommand, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(de::Error::custom("an empty command"));
        }
        Ok(ShellCommand(s))
    }
}

/// `HOST:PORT`, checked as `--notify-mpd` is.
#[derive(Debug)]
struct HostPort(String);

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HostPort, D::Error> {
        let s = String::deserialize(d)?;
        crate::cli::parse_host_port(&s)
            .map(HostPort)
            .map_err(de::Error::custom)
    }
}

/// A user id, as `--uid` takes it: a number (or a string of digits).
#[derive(Debug)]
struct UserId(u32);

/// A group id, as `--gid` takes it.
#[derive(Debug)]
struct GroupId(u32);

/// A number or a string of digits, checked by `parse`.
struct IdVisitor(fn(&str) -> Result<u32, ValueError>);

impl Visitor<'_> for IdVisitor {
    type Value = u32;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a numeric id like 1000")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<u32, E> {
        (self.0)(s).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u32, E> {
        self.visit_str(&n.to_string())
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<u32, E> {
        self.visit_str(&n.to_string())
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UserId, D::Error> {
        d.deserialize_any(IdVisitor(parse_uid)).map(UserId)
    }
}

impl<'de> Deserialize<'de> for GroupId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<GroupId, D::Error> {
        d.deserialize_any(IdVisitor(parse_gid)).map(GroupId)
    }
}

/// A umask written as a string of octal digits (`"027"`). A bare TOML
/// number is refused: `umask = 027` is the decimal 27 to TOML, not 0o27,
/// and a silently different mask is worse than an error.
#[derive(Debug)]
struct Umask(u16);

impl<'de> Deserialize<'de> for Umask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Umask, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Umask;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a umask as a string of octal digits, like \"027\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Umask, E> {
                parse_umask(s).map(Umask).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A percentage from 10 to 90, as `--pin-share` takes it.
#[derive(Debug)]
struct PinShare(u8);

impl<'de> Deserialize<'de> for PinShare {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PinShare, D::Error> {
        let n = i64::deserialize(d)?;
        u8::try_from(n)
            .ok()
            .filter(|p| (10..=90).contains(p))
            .map(PinShare)
            .ok_or_else(|| de::Error::custom(format!("{n} is not a percentage from 10 to 90")))
    }
}

/// `"127.0.0.1:9477"`, as `--metrics-addr` takes it.
#[derive(Debug)]
struct MetricsAddr(std::net::SocketAddr);

impl<'de> Deserialize<'de> for MetricsAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MetricsAddr, D::Error> {
        let s = String::deserialize(d)?;
        parse_metrics_addr(&s)
            .map(MetricsAddr)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_share_is_a_percentage_from_10_to_90() {
        assert_eq!(parse("pin_share = 60").unwrap().pin_share, Some(60));
        for bad in [
            "pin_share = 95",
            "pin_share = 0",
            "pin_share = -5",
            "pin_share = \"a\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let (_dir, args) = with_file("pin_share = 60", &[]);
        assert_eq!(args.unwrap().pin_share, 60);
        let (_dir, args) = with_file("pin_share = 60", &["--pin-share", "30"]);
        assert_eq!(args.unwrap().pin_share, 30, "the command line wins");
    }

    #[test]
    fn change_targets_are_read_and_checked() {
        let parsed =
            parse("on_change = \"echo \\\"$@\\\"\"\nnotify_mpd = \"localhost:6600\"").unwrap();
        assert_eq!(parsed.notify_mpd.as_deref(), Some("localhost:6600"));
        assert_eq!(parsed.on_change.as_deref(), Some("echo \"$@\""));
        for bad in [
            "notify_mpd = \"localhost\"",
            "notify_mpd = \"h:0\"",
            "on_change = \" \"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    fn cli(args: &[&str]) -> MountArgs {
        let argv = std::iter::once("musicfs").chain(args.iter().copied());
        match parse_command_line_from(argv).expect("parses").command {
            Command::Mount(m) => *m,
            other => panic!("not a mount: {other:?}"),
        }
    }

    /// Writes `text` as dir/musicfs.toml and resolves `args` + `--config` it.
    fn with_file(
        text: &str,
        args: &[&str],
    ) -> (tempfile::TempDir, Result<MountArgs, ConfigFileError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("musicfs.toml");
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap().to_owned();
        let mut all = vec!["mount", "--config", path.as_str()];
        all.extend_from_slice(args);
        let resolved = resolve(cli(&all));
        (dir, resolved)
    }

    fn err(text: &str) -> String {
        match with_file(text, &[]).1 {
            Ok(args) => panic!("accepted:\n{text}\nas {args:?}"),
            Err(e) => {
                let e = e.to_string();
                assert_eq!(e.lines().count(), 1, "one line: {e}");
                assert!(e.contains("musicfs.toml"), "names the file: {e}");
                e
            }
        }
    }

    const FULL: &str = r#"
# every key
origins = [
  "/srv/flac",
  { url = "sftp://nas/music", name = "nas", priority = -1 },
  { url = "relative/mp3", priority = 5 },
  "s3://bucket/prefix",
]
mountpoint = "/mnt/music"
cache_dir = "cache"
cache_size = "20G"
layout = "$genre/$artist/$title.$ext"
allow_other = true
allow_non_empty = true
wait_for_origins = true
read_timeout = 12
log_level = "DEBUG"
uid = 1234
gid = "2345"
umask = "027"
log_file = "logs/musicfs.log"
metrics_addr = "127.0.0.1:9477"
"#;

    #[test]
    fn every_key_is_read() {
        let (dir, args) = with_file(FULL, &[]);
        let args = args.unwrap();
        let base = dir.path();
        assert_eq!(
            args.origins,
            vec![
                "sftp://nas/music,name=nas".to_owned(),
                "/srv/flac".to_owned(),
                "s3://bucket/prefix".to_owned(),
                base.join("relative/mp3").to_string_lossy().into_owned(),
            ],
            "priority first, ties in list order, URLs untouched, relative paths from the file"
        );
        assert_eq!(args.mountpoint, Some(PathBuf::from("/mnt/music")));
        assert_eq!(args.cache_dir, Some(base.join("cache")));
        assert_eq!(args.cache_size, 20 << 30);
        assert_eq!(args.layout, "$genre/$artist/$title.$ext");
        assert!(args.allow_other);
        assert!(args.allow_non_empty);
        assert!(args.wait_for_origins);
        assert_eq!(args.read_timeout, 12);
        assert_eq!(args.log_level, "debug");
        assert_eq!(
            (args.uid, args.gid, args.umask),
            (Some(1234), Some(2345), Some(0o027))
        );
        assert_eq!(args.log_file, Some(base.join("logs/musicfs.log")));
        assert_eq!(
            args.metrics_addr,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9477)))
        );
        // The command line wins.
        let (_dir, args) = with_file(FULL, &["--uid", "7", "--umask", "077"]);
        let args = args.unwrap();
        assert_eq!(
            (args.uid, args.gid, args.umask),
            (Some(7), Some(2345), Some(0o077))
        );
    }

    #[test]
    fn durations_as_strings_or_seconds() {
        let read = |text: &str| parse(text).unwrap().read_timeout;
        let poll = |text: &str| parse(text).unwrap().poll_interval;
        assert_eq!(read("read_timeout = 30"), Some(30));
        assert_eq!(read("read_timeout = \"30s\""), Some(30));
        assert_eq!(read("read_timeout = \"30\""), Some(30));
        assert_eq!(read("read_timeout = \"1m30s\""), Some(90));
        assert_eq!(poll("poll_interval = \"5m\""), Some(300));
        assert_eq!(poll("poll_interval = \"1h\""), Some(3600));
        assert_eq!(poll("poll_interval = 600"), Some(600));
        // The same parser as the command line's, which the file's value meets.
        let (_dir, args) = with_file(
            "read_timeout = \"1m30s\"\npoll_interval = \"2h\"",
            &["--poll-interval", "15m"],
        );
        let args = args.unwrap();
        assert_eq!((args.read_timeout, args.poll_interval), (90, 900));
    }

    #[test]
    fn sizes_as_strings_or_bytes() {
        assert_eq!(
            parse("cache_size = 2097152").unwrap().cache_size,
            Some(2 << 20)
        );
        assert_eq!(
            parse("cache_size = \"1.5G\"").unwrap().cache_size,
            Some(3 << 29)
        );
        assert_eq!(parse("").unwrap(), FileConfig::default());
    }

    #[test]
    fn the_command_line_overrides_the_file() {
        let (_dir, args) = with_file(
            FULL,
            &[
                "--origin",
                "/cli/music",
                "--cache-dir",
                "/cli/cache",
                // The default values, given explicitly: they still win.
                "--cache-size",
                "10G",
                "--layout",
                "$albumartist/$album/$track - $title.$ext",
                "--read-timeout",
                "30",
                "--log-level",
                "info",
                "/cli/mnt",
            ],
        );
        let args = args.unwrap();
        assert_eq!(
            args.origins,
            vec!["/cli/music".to_owned()],
            "replaced, not added"
        );
        assert_eq!(args.mountpoint, Some(PathBuf::from("/cli/mnt")));
        assert_eq!(args.cache_dir, Some(PathBuf::from("/cli/cache")));
        assert_eq!(args.cache_size, 10 << 30);
        assert_eq!(args.layout, "$albumartist/$album/$track - $title.$ext");
        assert_eq!(args.read_timeout, 30);
        assert_eq!(args.log_level, "info");
        assert!(args.allow_other, "--allow-other cannot be turned off");
        assert!(args.allow_non_empty, "nor --allow-non-empty");
    }

    #[test]
    fn defaults_do_not_override_the_file() {
        let (_dir, args) = with_file("cache_size = \"20G\"\nread_timeout = 5", &[]);
        let args = args.unwrap();
        assert_eq!(args.cache_size, 20 << 30);
        assert_eq!(args.read_timeout, 5);
        assert_eq!(args.log_level, "info");
        assert!(!args.allow_other && !args.allow_non_empty && !args.wait_for_origins);
        assert!(args.origins.is_empty() && args.mountpoint.is_none());
    }

    #[test]
    fn no_config_changes_nothing() {
        let args = resolve(cli(&["mount", "--origin", "/a", "/mnt"])).unwrap();
        assert_eq!(args.origins, vec!["/a".to_owned()]);
        assert_eq!(args.cache_size, 10 << 30);
        assert!(args.given.contains("origins") && args.given.contains("mountpoint"));
        assert!(!args.given.contains("cache_size") && !args.given.contains("log_level"));
    }

    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let e = err("mountpoint = \"/mnt\"\n\ncache_sise = \"20G\"\n");
        assert!(e.contains("line 3") && e.contains("cache_sise"), "{e}");
        assert!(e.contains("unknown key"), "{e}");
        let e = err("origins = [\n  \"/a\",\n  { ulr = \"/b\" },\n]\n");
        assert!(e.contains("line 3") && e.contains("ulr"), "{e}");
        let e = err("[origins]\nurl = \"/a\"\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn bad_sizes_are_errors() {
        for (text, why) in [
            ("cache_size = \"lots\"", "lots"),
            ("cache_size = \"12Q\"", "unknown unit"),
            ("cache_size = \"1k\"", "too small"),
            ("cache_size = 1000", "too small"),
            ("cache_size = -5", "-5"),
            ("cache_size = 1.5", "a size like"),
            ("cache_size = true", "a size like"),
        ] {
            let e = err(&format!("\n{text}\n"));
            assert!(e.contains("line 2") && e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn bad_types_and_values_are_errors() {
        for (text, why) in [
            ("mountpoint = 5", "mountpoint"),
            ("mountpoint = \"\"", "empty"),
            ("allow_other = \"yes\"", "allow_other"),
            ("allow_non_empty = 1", "allow_non_empty"),
            ("wait_for_origins = \"no\"", "wait_for_origins"),
            ("origins = \"/a\"", "origins"),
            ("origins = [1]", "an origin"),
            ("origins = [\"\"]", "empty"),
            ("origins = [{ name = \"x\" }]", "url"),
            (
                "origins = [{ url = \"/a\", priority = \"high\" }]",
                "priority",
            ),
            (
                "origins = [{ url = \"/a\", name = \"n\" }, { url = \"/b\", name = \"n\" }]",
                "named 'n'",
            ),
            ("read_timeout = \"soon\"", "'soon' is not a duration"),
            ("read_timeout = 1.5", "a duration like"),
            ("read_timeout = true", "a duration like"),
            ("read_timeout = 0", "out of range"),
            ("read_timeout = -5", "'-5' is not a duration"),
            ("read_timeout = 3601", "out of range (1s to 1h)"),
            ("read_timeout = \"2h\"", "out of range (1s to 1h)"),
            ("poll_interval = 5", "out of range"),
            ("poll_interval = \"2d\"", "out of range (10s to 24h)"),
            ("layout = \"$artst/$title\"", "artst"),
            ("layout = \"$artist/$album\"", "neither $title nor $track"),
            ("log_level = \"verbose\"", "unknown log level 'verbose'"),
            ("cache_dir = [\"/a\"]", "cache_dir"),
            ("uid = -1", "not a user id"),
            ("uid = 4294967295", "not a user id"),
            ("gid = \"staff\"", "not a group id"),
            ("uid = 1.5", "a numeric id"),
            ("umask = 27", "string of octal digits"),
            ("umask = \"089\"", "not a umask"),
            ("umask = \"1777\"", "not a umask"),
            ("log_file = \"\"", "empty"),
            ("metrics_addr = \"nowhere\"", "HOST:PORT"),
            ("metrics_addr = 9477", "metrics_addr"),
        ] {
            let e = err(&format!("# comment\n{text}\n"));
            assert!(e.contains("line 2") && e.contains(why), "{text}: {e}");
        }
        let e = err("origins = [\"/a\"\n");
        assert!(e.contains("line"), "syntax errors have a line too: {e}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let e = resolve(cli(&["mount", "--config", "/nonexistent/musicfs.toml"])).unwrap_err();
        assert!(
            matches!(&e, ConfigFileError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "the system's error is kept: {e:?}"
        );
        let e = e.to_string();
        assert!(
            e.contains("/nonexistent/musicfs.toml") && e.contains("no such file"),
            "{e}"
        );
    }
}
