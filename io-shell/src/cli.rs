//! The command line. Other tools drive it, so its shape is a contract:
//!
//! ```text
//! musicfs mount --origin DIR [--origin DIR ...] [--cache-dir DIR] [--cache-size SIZE]
//!               [--layout FORMAT] [--allow-other] [--allow-non-empty] [--wait-for-origins] MOUNTPOINT
//! musicfs mount --config FILE [any option above, which overrides the file] [MOUNTPOINT]
//! musicfs unmount [--lazy] MOUNTPOINT
//! musicfs status [MOUNTPOINT] [--json]
//! musicfs rescan [MOUNTPOINT]
//! musicfs search [--mount MOUNTPOINT | --cache-dir DIR] [-n N] QUERY...
//! ```

use clap::{Args, Parser, Subcommand};
use musicfs_core::layout::DEFAULT_LAYOUT;
use std::collections::BTreeSet;
use std::path::PathBuf;

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

The first mount scans the library (with a progress bar on a terminal) and mounts when the \
tree is ready; later mounts open the saved tree at once and catch up in the background. \
Stop with Ctrl-C, SIGTERM, or `musicfs unmount MOUNTPOINT`.";

/// `musicfs`: the command line.
#[derive(Debug, Parser)]
#[command(name = "musicfs", version, about = ABOUT, long_about = LONG_ABOUT)]
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
    Mount(MountArgs),
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
    #[command(after_help = crate::search::QUERY_HELP)]
    Search(SearchArgs),
    /// Look for changes in a running mount's origins now (new, retagged,
    /// moved and deleted files) instead of waiting for the watcher.
    Rescan {
        /// The mount (default: every running MusicFS mount).
        mountpoint: Option<PathBuf>,
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
    /// ,name=NAME and ,priority=N (repeat for several origins; earlier ones are preferred).
    /// At least one is needed, here or in --config; any given here replace the file's.
    #[arg(long = "origin", value_name = "DIR|URL")]
    pub origins: Vec<String>,

    /// Where the chunk cache and the saved tree live [default: $XDG_CACHE_HOME/musicfs, or ~/.cache/musicfs].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Largest size of the chunk cache: 500M, 20G, 1T (powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    pub cache_size: u64,

    /// Path format of the tree.
    #[arg(long, value_name = "FORMAT", default_value = DEFAULT_LAYOUT)]
    pub layout: String,

    /// Let other users (and system services like a media server) see the mount.
    #[arg(long)]
    pub allow_other: bool,

    /// Mount even on a directory that is not empty (its files are hidden while mounted).
    #[arg(long)]
    pub allow_non_empty: bool,

    /// On a first mount, mount (empty) even when no origin answers, and fill in
    /// once one does; without it, such a mount fails with the origins' errors.
    #[arg(long)]
    pub wait_for_origins: bool,

    /// A read that cannot be answered within this many seconds fails with EIO.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub read_timeout: u64,

    /// How often remote (S3, SFTP) origins are listed again to find changes; local
    /// origins are watched and need no polling. `musicfs rescan` looks at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub poll_interval: u64,

    /// Log verbosity (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

    /// Read settings from this TOML file; options given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where to mount (an existing, empty directory, unless --allow-non-empty); needed here or in --config.
    pub mountpoint: Option<PathBuf>,

    /// Clap ids of the options given on the command line, filled in by
    /// [`crate::config::parse_command_line`]: an option left at its default
    /// must not override the --config file.
    #[arg(skip)]
    pub given: BTreeSet<String>,
}

/// Parses "500M", "20G", "1.5T", "10GiB", "4096": binary units, as `du` and
/// `df -h` show sizes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (try 500M, 20G or 1T)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("'{s}' has an unknown unit (use K, M, G or T)")),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{s}' is not a usable cache size"));
    }
    let bytes = bytes as u64;
    if bytes < (1 << 20) {
        return Err(format!("'{s}' is too small for a cache (at least 1M)"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
