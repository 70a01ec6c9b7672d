//! The command line. Other tools drive it, so its shape is a contract:
//!
//! ```text
//! musicfs mount --origin DIR [--origin DIR ...] [--cache-dir DIR] [--cache-size SIZE]
//!               [--layout FORMAT] [--allow-other] [--allow-non-empty] [--wait-for-origins]
//!               [--uid UID] [--gid GID] [--umask OCTAL] [--log-file FILE]
//!               [--metrics-addr HOST:PORT] MOUNTPOINT
//! musicfs mount --config FILE [any option above, which overrides the file] [MOUNTPOINT]
//! musicfs unmount [--lazy] MOUNTPOINT
//! musicfs status [MOUNTPOINT] [--json]
//! musicfs rescan [MOUNTPOINT]
//! musicfs search [--mount MOUNTPOINT | --cache-dir DIR] [-n N] QUERY...
//! ```

pub mod config;
pub mod logging;
pub mod pin;
pub mod progress;

use clap::{Args, Parser, Subcommand};
use musicfs_core::layout::DEFAULT_LAYOUT;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

pub use crate::VERSION;

const ABOUT: &str =
    "Mount a music collection as one clean, read-only Artist/Album/NN - Title.ext tree.";

const LONG_ABOUT: &str = "\
Mount a music collection as one clean, read-only Artist/Album/NN - Title.ext tree.

MusicFS reads the tags of every track in the origins and shows them as one tree \
that any player, media server or shell can use. Bytes come through a local \
content-addressed cache, so music keeps playing when an origin is slow or gone.";

const MOUNT_AFTER: &str = "\
Examples:
  musicfs mount --origin ~/Music /mnt/music
  musicfs mount --origin /srv/flac --origin /srv/mp3 --cache-size 50G /mnt/music
  musicfs mount --origin ~/Music --layout '$genre/$albumartist/$year - $album/$track $title.$ext' /mnt/music
  musicfs mount --origin 'sftp://me@nas/srv/music,name=nas' --origin 's3://music/flac?endpoint=http://minio:9000,priority=1' /mnt/music
  musicfs mount --config /etc/musicfs/musicfs.toml

Origins: a local folder; s3://BUCKET/PREFIX (query: endpoint=, region=, path_style=, anonymous=; keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile, never the URL); or sftp://USER@HOST:PORT/PATH (query: key=, known_hosts=, ssh_config=; keys from ssh-agent, a key file or ~/.ssh/config; host keys checked against known_hosts). Append ,name=NAME and ,priority=N (lower is preferred; default 0, ties keep the order given). The same track in several origins is one entry, read from the preferred healthy origin.

Layout fields: $albumartist $artist $album $track $title $ext $year $genre $disc $format
($track is zero-padded, and becomes disc-track, e.g. 1-03, on multi-disc albums).
The file name (after the last /) needs $title or $track, or every track of an album would get the same name; one that does not end in .$ext gets .$ext appended.

Search inside the mount: the hidden folder MOUNTPOINT/.search/QUERY holds the tracks that \
match QUERY (up to 1000) as symlinks into the tree, e.g. \
ls '/mnt/music/.search/genre:jazz year:>2000' or mpv /mnt/music/.search/artist:radiohead/*. \
QUERY is written as for `musicfs search` (see musicfs search --help). .search itself lists \
nothing and is not listed, so scanners and find never walk into it.

The first mount scans the library (with a progress bar on a terminal) and mounts when the \
tree is ready; later mounts open the saved tree at once and catch up in the background. \
Stop with Ctrl-C, SIGTERM, or `musicfs unmount MOUNTPOINT`.";

/// `musicfs`: the command line.
#[derive(Debug, Parser)]
#[command(name = "musicfs", version = VERSION, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount origins as one tag-organized tree (runs in the foreground).
    #[command(after_help = MOUNT_AFTER)]
    Mount(Box<MountArgs>),
    /// Unmount a MusicFS mount; its daemon then exits cleanly. Any other
    /// file system is left alone.
    Unmount {
        /// Where it is mounted.
        mountpoint: PathBuf,
        /// Detach the mount even while files are open there: it disappears
        /// now, and its daemon exits once the last one is closed.
        #[arg(long)]
        lazy: bool,
    },
    /// Search the library's tags; prints one path per line, best match first.
    ///
    /// Inside a mount, the hidden folder MOUNTPOINT/.search/QUERY holds the same
    /// results as symlinks: `ls '/mnt/music/.search/artist:björk'`.
    #[command(after_help = crate::search::QUERY_HELP)]
    Search(SearchArgs),
    /// Look for changes in a running mount's origins now (new, retagged,
    /// moved and deleted files) instead of waiting for the watcher.
    Rescan {
        /// The mount (default: every running MusicFS mount).
        mountpoint: Option<PathBuf>,
    },
    /// Keep tracks for offline play: fetch them now and never evict them.
    ///
    /// WHAT is a search query (as for `musicfs search`: `artist:Björk year:1997`),
    /// a file or folder of the mount, or a playlist (.m3u, .m3u8) whose entries
    /// are files of the mount. Shows the fetch's progress until every file is
    /// cached; Ctrl-C stops it and keeps the pins with what was fetched (run
    /// the same command again to resume). A pin follows its track through a
    /// retag or a move in its origin, survives restarts, and a pinned track
    /// that changes is fetched again. Pins may take at most --pin-share (80%)
    /// of --cache-size; more is refused.
    #[command(after_help = crate::search::QUERY_HELP)]
    Pin(PinArgs),
    /// Release pins made by `musicfs pin` (same WHAT); the bytes stay cached
    /// until eviction needs the room.
    Unpin(PinArgs),
    /// List pinned files with their size and how much of each is cached
    /// (`full`, `partial`, `none`).
    Pins {
        /// The mount.
        mountpoint: PathBuf,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show a running mount's origins and their health, cache use and hit
    /// ratio, scan progress and background tasks (all mounts if none is named).
    Status {
        /// The mount to ask (default: every running MusicFS mount).
        mountpoint: Option<PathBuf>,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// `musicfs pin` and `musicfs unpin`.
#[derive(Debug, Args)]
pub struct PinArgs {
    /// The mount.
    pub mountpoint: PathBuf,
    /// A search query, a file or folder of the mount, or a playlist; several
    /// arguments are joined with spaces.
    #[arg(value_name = "WHAT", required = true, num_args = 1..)]
    pub what: Vec<String>,
}

/// `musicfs search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Ask the running mount at this mountpoint, and print absolute paths in it
    /// (paths a player can open).
    #[arg(
        long = "mount",
        value_name = "MOUNTPOINT",
        conflicts_with = "cache_dir"
    )]
    pub mountpoint: Option<PathBuf>,

    /// The cache directory of the library, for a search with no running mount
    /// (paths relative to the tree) [default: $XDG_CACHE_HOME/musicfs, or ~/.cache/musicfs].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// The most results to print.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=crate::search::MAX_LIMIT as u64))]
    pub limit: u64,

    /// What to look for (see below); several arguments are joined with spaces.
    /// Put it after -- if it starts with '-' (or write NOT word).
    #[arg(value_name = "QUERY", required = true, num_args = 1..)]
    pub query: Vec<String>,
}

/// `musicfs mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// A folder, s3://bucket/prefix or sftp://user@host/path to include, with optional
    /// ,name=NAME and ,priority=N (repeat for several origins; earlier ones are preferred),
    /// and for a folder ,cache=off: read it directly (kernel passthrough where possible),
    /// never cache it (no offline play, no pins). A folder's readers are answered straight
    /// from its files and what they read is cached half a second after they stop (fill=behind);
    /// ,fill=inline makes them wait for the cache instead, as remote origins always do.
    /// At least one is needed, here or in --config; any given here replace the file's.
    #[arg(long = "origin", value_name = "DIR|URL")]
    pub origins: Vec<String>,

    /// Where the chunk cache and the saved tree live [default: $XDG_CACHE_HOME/musicfs, or ~/.cache/musicfs].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Largest size of the chunk cache: 500M, 20G, 1T (powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    pub cache_size: u64,

    /// Files kept with `musicfs pin` may take at most this share of --cache-size,
    /// in percent (10 to 90); a pin past it is refused with the numbers.
    #[arg(long, value_name = "PERCENT", default_value_t = 80,
          value_parser = clap::value_parser!(u8).range(10..=90))]
    pub pin_share: u8,

    /// Path format of the tree (fields below). The file name needs $title or $track;
    /// .$ext is appended when it does not end with it.
    #[arg(long, value_name = "FORMAT", default_value = DEFAULT_LAYOUT)]
    pub layout: String,

    /// Let other users (and system services like a media server) see the mount.
    #[arg(long)]
    pub allow_other: bool,

    /// Mount even on a directory that is not empty (its files are hidden while mounted).
    #[arg(long)]
    pub allow_non_empty: bool,

    /// Give every file the extended attributes user.musicfs.cached (full, partial,
    /// none) and user.musicfs.pinned (yes, no). Off by default, as in JuiceFS: with
    /// it, `ls -l` asks the daemon for an attribute of every file it lists (about 6x
    /// slower `ls -lR`); without it, the kernel stops asking after the first time.
    #[arg(long)]
    pub xattrs: bool,

    /// Do not keep the bytes the first scan reads of each track (its head and
    /// tail: tags, embedded art) in the cache. By default they are kept, so a
    /// media server's tag scan right after the first mount, or with the origin
    /// down, asks the origin nothing; that costs writing them at the first
    /// mount (about 260 KiB per track) and up to half of --cache-size.
    #[arg(long)]
    pub no_keep_tags: bool,

    /// On a first mount, mount (empty) even when no origin answers, and fill in
    /// once one does; without it, such a mount fails with the origins' errors.
    #[arg(long)]
    pub wait_for_origins: bool,

    /// A read that cannot be answered within this time fails with EIO: 30s, 2m,
    /// 1m30s, or a number of seconds (1s to 1h). Kept in whole seconds.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_read_timeout)]
    pub read_timeout: u64,

    /// How often remote (S3, SFTP) origins are listed again to find changes: 5m, 1h,
    /// or a number of seconds (10s to 24h); local origins are watched and need no
    /// polling. `musicfs rescan` looks at once. Kept in whole seconds.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_poll_interval)]
    pub poll_interval: u64,

    /// After each change to the tree, run this command with sh; the changed
    /// folders (absolute paths in the mount) are its arguments ("$@") and, one
    /// per line, $MUSICFS_CHANGED. E.g. to tell Plex or Jellyfin (README has
    /// recipes). Changes are batched (0.5 s quiet, 5 s at most), one run at a
    /// time, killed after 60 s; its result is logged.
    #[arg(long, value_name = "CMD")]
    pub on_change: Option<String>,

    /// After each change to the tree, tell the MPD at HOST:PORT to update the
    /// changed folders (its music_directory must be this mountpoint).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub notify_mpd: Option<String>,

    /// Log verbosity (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Owner (a numeric user id) that every file and folder shows [default: the user
    /// running the mount]. Only what `ls -l` shows and what the kernel checks: the
    /// daemon still reads the origins as the user it runs as.
    #[arg(long, value_name = "UID", value_parser = parse_uid)]
    pub uid: Option<u32>,

    /// Group (a numeric group id) that every file and folder shows [default: the
    /// group of the user running the mount].
    #[arg(long, value_name = "GID", value_parser = parse_gid)]
    pub gid: Option<u32>,

    /// Permission bits taken away (octal, as umask(1)) from folders' 0555 and files'
    /// 0444: 027 gives 0550 and 0440 (no access for others). Write bits are never
    /// given: the mount is read-only [default: 022, which takes nothing away].
    #[arg(long, value_name = "OCTAL", value_parser = parse_umask)]
    pub umask: Option<u16>,

    /// Log to this file (appended) instead of stderr. SIGHUP reopens it, so logrotate
    /// can move it away (postrotate: kill -HUP the daemon's pid).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics (reads and bytes from the
    /// cache and each origin, origin health and errors, fetch latency, cache use,
    /// evictions, syncs, pins). Port 0 picks a free port; `musicfs status` shows it.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_metrics_addr)]
    pub metrics_addr: Option<SocketAddr>,

    /// Read settings from this TOML file; options given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where to mount (an existing, empty directory, unless --allow-non-empty); needed here or in --config.
    pub mountpoint: Option<PathBuf>,

    /// Clap ids of the options given on the command line, filled in by
    /// [`crate::cli::config::parse_command_line`]: an option left at its default
    /// must not override the --config file.
    #[arg(skip)]
    pub given: BTreeSet<String>,
}

/// A value of an option (on the command line or in the config file) that
/// does not parse. One line, quoting the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// `--notify-mpd`.
    #[error("'{0}' is not HOST:PORT (for example localhost:6600)")]
    HostPort(String),
    /// `--cache-size`: not a number.
    #[error("'{0}' is not a size (try 500M, 20G or 1T)")]
    Size(String),
    /// `--cache-size`: a unit that is not K, M, G or T.
    #[error("'{0}' has an unknown unit (use K, M, G or T)")]
    SizeUnit(String),
    /// `--cache-size`: zero, negative or too big.
    #[error("'{0}' is not a usable cache size")]
    SizeRange(String),
    /// `--cache-size`: under 1 MiB.
    #[error("'{0}' is too small for a cache (at least 1M)")]
    SizeTooSmall(String),
    /// `--uid`, `--gid`.
    #[error("'{value}' is not a {what} id (a number from 0 to 4294967294)")]
    Id {
        /// As written.
        value: String,
        /// "user" or "group".
        what: &'static str,
    },
    /// `--umask`.
    #[error("'{0}' is not a umask (octal digits from 000 to 777, e.g. 022 or 027)")]
    Umask(String),
    /// `--metrics-addr`.
    #[error(
        "'{0}' is not an address to listen on (HOST:PORT with an IP address, e.g. 127.0.0.1:9477 or [::1]:9477)"
    )]
    ListenAddress(String),
}

/// Checks `HOST:PORT` (a name or an IP address, `[::1]:6600` for IPv6).
pub fn parse_host_port(text: &str) -> Result<String, ValueError> {
    let bad = || ValueError::HostPort(text.to_owned());
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(text.to_owned())
}

/// Parses "500M", "20G", "1.5T", "10GiB", "4096": binary units, as `du` and
/// `df -h` show sizes.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| ValueError::Size(s.to_owned()))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(ValueError::SizeUnit(s.to_owned())),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(ValueError::SizeRange(s.to_owned()));
    }
    let bytes = bytes as u64;
    if bytes < (1 << 20) {
        return Err(ValueError::SizeTooSmall(s.to_owned()));
    }
    Ok(bytes)
}

/// Parses a numeric user or group id: 0 to 4294967294 (-1, all bits set,
/// means "no id" to the kernel).
fn parse_id(s: &str, what: &'static str) -> Result<u32, ValueError> {
    let t = s.trim();
    match t.parse::<u32>() {
        Ok(id) if id != u32::MAX && t.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(ValueError::Id {
            value: s.to_owned(),
            what,
        }),
    }
}

/// `--uid` / `uid`.
pub fn parse_uid(s: &str) -> Result<u32, ValueError> {
    parse_id(s, "user")
}

/// `--gid` / `gid`.
pub fn parse_gid(s: &str) -> Result<u32, ValueError> {
    parse_id(s, "group")
}

/// Parses a umask as umask(1) writes it: octal digits (`022`, `0027`,
/// `0o027`), at most 0777.
pub fn parse_umask(s: &str) -> Result<u16, ValueError> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    let bad = || ValueError::Umask(s.to_owned());
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(bad());
    }
    match u16::from_str_radix(digits, 8) {
        Ok(mask) if mask <= 0o777 => Ok(mask),
        _ => Err(bad()),
    }
}

/// Parses `--metrics-addr`: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, ValueError> {
    let t = s.trim();
    let bad = || ValueError::ListenAddress(s.to_owned());
    if let Ok(addr) = t.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match t.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// No `--cache-dir`, and no home to put the default one in.
#[derive(Debug, thiserror::Error)]
#[error("no cache directory: set --cache-dir, XDG_CACHE_HOME or HOME")]
pub struct NoCacheDir;

/// `$XDG_CACHE_HOME/musicfs`, else `~/.cache/musicfs`.
pub fn default_cache_dir() -> Result<PathBuf, NoCacheDir> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("musicfs"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("musicfs")),
        None => Err(NoCacheDir),
    }
}

/// The log levels `--log-level` and the config's `log_level` understand.
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// A `--log-level` / `log_level` that is not one of [`LOG_LEVELS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLevelError(pub String);

impl fmt::Display for LogLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown log level '{}' (use {})",
            self.0,
            LOG_LEVELS.join(", ")
        )
    }
}

impl std::error::Error for LogLevelError {}

/// Checks a log level, in any case, and gives it in lower case: the one
/// check for the command line and the config file.
pub fn parse_log_level(s: &str) -> Result<String, LogLevelError> {
    let level = s.trim().to_ascii_lowercase();
    if LOG_LEVELS.contains(&level.as_str()) {
        Ok(level)
    } else {
        Err(LogLevelError(s.to_owned()))
    }
}

/// The range `--read-timeout` / `read_timeout` accepts, in seconds.
pub const READ_TIMEOUT_SECS: RangeInclusive<u64> = 1..=3600;
/// The range `--poll-interval` / `poll_interval` accepts, in seconds.
pub const POLL_INTERVAL_SECS: RangeInclusive<u64> = 10..=86400;

/// Why a duration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// Not something [`parse_duration`] understands.
    Malformed(String),
    /// A duration, but outside what the option allows.
    OutOfRange {
        /// As written.
        text: String,
        /// Allowed, in seconds.
        range: RangeInclusive<u64>,
    },
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Malformed(text) => write!(
                f,
                "'{text}' is not a duration (try 30s, 5m, 1h, 1m30s or a number of seconds)"
            ),
            DurationError::OutOfRange { text, range } => write!(
                f,
                "'{text}' is out of range ({} to {})",
                Secs(*range.start()),
                Secs(*range.end())
            ),
        }
    }
}

impl std::error::Error for DurationError {}

/// Seconds shown the way they can be written: 90 is "1m30s", 3600 "1h".
struct Secs(u64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.0 / 3600, self.0 / 60 % 60, self.0 % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 || self.0 == 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

/// Parses a duration in whole seconds, as rclone and systemd write them:
/// `30s`, `5m`, `1h`, `1m30s`, `2h 30m`, `1d`, or a bare number of seconds.
/// Units: `s`/`sec`/`secs`/`second(s)`, `m`/`min`/`mins`/`minute(s)`,
/// `h`/`hr`/`hour(s)`, `d`/`day(s)`.
///
/// A small hand parser rather than the `humantime` crate: humantime refuses
/// a bare number (and so every existing `read_timeout = 30`), accepts units
/// finer than a second that these options cannot keep, and would be a new
/// dependency for twenty lines.
pub fn parse_duration(text: &str) -> Result<u64, DurationError> {
    let malformed = || DurationError::Malformed(text.to_owned());
    let t = text.trim();
    if t.is_empty() {
        return Err(malformed());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| malformed());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(malformed());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| malformed())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let scale = match rest[..unit_len].to_ascii_lowercase().as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86400,
            _ => return Err(malformed()),
        };
        total = value
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(malformed)?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

/// [`parse_duration`], then a check against `range` (seconds).
pub fn parse_duration_in(text: &str, range: RangeInclusive<u64>) -> Result<u64, DurationError> {
    let secs = parse_duration(text)?;
    if range.contains(&secs) {
        Ok(secs)
    } else {
        Err(DurationError::OutOfRange {
            text: text.to_owned(),
            range,
        })
    }
}

/// `--read-timeout`: a duration from 1s to 1h.
pub fn parse_read_timeout(text: &str) -> Result<u64, DurationError> {
    parse_duration_in(text, READ_TIMEOUT_SECS)
}

/// `--poll-interval`: a duration from 10s to 24h.
pub fn parse_poll_interval(text: &str) -> Result<u64, DurationError> {
    parse_duration_in(text, POLL_INTERVAL_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_commit_and_the_features() {
        use clap::CommandFactory as _;
        let shown = Cli::command().render_version();
        let features = if cfg!(feature = "failpoints") {
            "features: failpoints)"
        } else {
            "features: none)"
        };
        assert!(
            shown.starts_with(&format!("musicfs {} (commit ", env!("CARGO_PKG_VERSION"))),
            "{shown}"
        );
        assert!(shown.trim_end().ends_with(features), "{shown}");
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("30", 30),
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("1m30s", 90),
            ("1h 2m 3s", 3723),
            (" 2 min ", 120),
            ("1d", 86400),
            ("10S", 10),
            ("0", 0),
        ] {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
        }
        for bad in [
            "",
            "s",
            "1.5m",
            "-5",
            "5 fortnights",
            "m5",
            "1m30",
            "30 s x",
            "1e3",
            "99999999999999999999",
            "999999999999999999d",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(DurationError::Malformed(bad.to_owned())),
                "{bad}"
            );
        }
        let e = parse_duration("soon").unwrap_err().to_string();
        assert!(e.contains("'soon'") && e.contains("1m30s"), "{e}");
    }

    #[test]
    fn duration_ranges() {
        assert_eq!(parse_read_timeout("1s"), Ok(1));
        assert_eq!(parse_read_timeout("1h"), Ok(3600));
        assert_eq!(parse_poll_interval("10s"), Ok(10));
        assert_eq!(parse_poll_interval("24h"), Ok(86400));
        assert_eq!(parse_poll_interval("1d"), Ok(86400));
        for bad in ["0", "0s", "1h1s", "3601"] {
            let e = parse_read_timeout(bad).unwrap_err().to_string();
            assert_eq!(e, format!("'{bad}' is out of range (1s to 1h)"));
        }
        for bad in ["9s", "1d1s", "2d"] {
            let e = parse_poll_interval(bad).unwrap_err().to_string();
            assert_eq!(e, format!("'{bad}' is out of range (10s to 24h)"));
        }
        assert_eq!(Secs(90).to_string(), "1m30s");
        assert_eq!(Secs(3723).to_string(), "1h2m3s");
    }

    #[test]
    fn log_levels() {
        assert_eq!(parse_log_level("DEBUG"), Ok("debug".to_owned()));
        assert_eq!(parse_log_level("warn"), Ok("warn".to_owned()));
        let e = parse_log_level("loud").unwrap_err().to_string();
        assert!(
            e.contains("'loud'") && e.contains("error, warn, info"),
            "{e}"
        );
    }

    #[test]
    fn the_command_line_checks_durations_and_levels() {
        use clap::Parser as _;
        let mount = |extra: &[&str]| {
            let mut argv = vec!["musicfs", "mount", "--origin", "/a"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Mount(m) => (m.read_timeout, m.poll_interval, m.log_level),
                other => panic!("not a mount: {other:?}"),
            })
        };
        assert_eq!(mount(&[]).unwrap(), (30, 300, "info".to_owned()));
        assert_eq!(
            mount(&["--read-timeout", "1m30s", "--poll-interval", "1h"]).unwrap(),
            (90, 3600, "info".to_owned())
        );
        assert_eq!(mount(&["--log-level", "TRACE"]).unwrap().2, "trace");
        for (args, says) in [
            (["--read-timeout", "2h"], "out of range (1s to 1h)"),
            (["--poll-interval", "5s"], "out of range (10s to 24h)"),
            (["--read-timeout", "soon"], "not a duration"),
            (["--log-level", "loud"], "unknown log level 'loud'"),
        ] {
            let e = mount(&args).unwrap_err().to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn ids_umasks_and_addresses() {
        assert_eq!(parse_uid("1234"), Ok(1234));
        assert_eq!(parse_gid("0"), Ok(0));
        for bad in ["", "-1", "4294967295", "99999999999", "alice", "12a", "+5"] {
            let e = parse_uid(bad).unwrap_err().to_string();
            assert!(e.contains("not a user id"), "{bad}: {e}");
        }
        assert!(
            parse_gid("x")
                .unwrap_err()
                .to_string()
                .contains("not a group id")
        );
        assert_eq!(parse_umask("027"), Ok(0o027));
        assert_eq!(parse_umask("0027"), Ok(0o027));
        assert_eq!(parse_umask("0o22"), Ok(0o022));
        assert_eq!(parse_umask("0"), Ok(0));
        assert_eq!(parse_umask("777"), Ok(0o777));
        for bad in ["", "8", "0o", "1000", "07777", "-22", "22x", "0x1f"] {
            let e = parse_umask(bad).unwrap_err().to_string();
            assert!(e.contains("not a umask"), "{bad}: {e}");
        }
        assert_eq!(
            parse_metrics_addr("127.0.0.1:9477"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9477)))
        );
        assert_eq!(
            parse_metrics_addr("localhost:0"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 0)))
        );
        assert!(parse_metrics_addr("[::1]:9477").is_ok());
        for bad in [
            "",
            "9477",
            "127.0.0.1",
            "host:9477",
            "127.0.0.1:99999",
            ":9477",
        ] {
            let e = parse_metrics_addr(bad).unwrap_err().to_string();
            assert!(e.contains("HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("2097152"), Ok(2 << 20));
        for bad in ["", "G", "12Q", "-5G", "0", "1k", "1e9", "lots"] {
            assert!(parse_size(bad).is_err(), "{bad} accepted");
        }
    }
}
