//! One origin as the command line or the config file gives it:
//! `--origin WHERE[,name=NAME][,priority=N][,cache=off][,fill=inline]`.

use super::spec::{RemoteSpec, UrlError, is_remote_url, parse_remote_url, redact_url};
use crate::errors::io_reason;
use std::io;
use std::path::{Path, PathBuf};

/// Where an origin's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginKind {
    /// A local directory (canonical path).
    Local(PathBuf),
    /// An S3 bucket or an SFTP server.
    Remote(Box<RemoteSpec>),
}

/// One origin, as configured:
/// `--origin WHERE[,name=NAME][,priority=N][,cache=off][,fill=inline]`.
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
    /// How a cached origin's bytes reach the cache. `fill=behind` (a local
    /// folder's default): a reader is answered straight from the file, and
    /// what it read is cached once the file rests. `fill=inline` (the only
    /// way for remote origins, where each byte is asked for once): a
    /// reader waits for the fetch that caches the bytes.
    pub fill_behind: bool,
}

impl OriginSpec {
    /// A local directory with no name, at the default priority.
    pub fn local(root: PathBuf) -> OriginSpec {
        OriginSpec {
            kind: OriginKind::Local(root),
            name: None,
            priority: 0,
            cached: true,
            fill_behind: true,
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
    pub fn describe_place(&self) -> String {
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

/// Why an `--origin` cannot be used: one line, naming the origin as given
/// (any secret in it redacted).
#[derive(Debug, thiserror::Error)]
pub enum OriginArgError {
    /// `,name=`, `,priority=` or `,cache=` twice.
    #[error("origin '{origin}': {what} given twice")]
    Twice {
        /// The origin, redacted.
        origin: String,
        /// Which option.
        what: &'static str,
    },
    /// `,fill=` neither `behind` nor `inline`.
    #[error("origin '{origin}': fill is 'behind' or 'inline', not '{value}'")]
    Fill {
        /// The origin, redacted.
        origin: String,
        /// What was given.
        value: String,
    },
    /// `fill=behind` on a remote origin.
    #[error(
        "origin '{origin}': fill=behind is for local folders (a remote origin's bytes are cached as they are read, so that each is asked for once)"
    )]
    FillBehindRemote {
        /// The origin, redacted.
        origin: String,
    },
    /// `,cache=` neither `on` nor `off`.
    #[error("origin '{origin}': cache is 'on' or 'off', not '{value}'")]
    Cache {
        /// The origin, redacted.
        origin: String,
        /// What was given.
        value: String,
    },
    /// An empty name, or one with `=`.
    #[error("origin '{origin}': a name must be non-empty text without ',' or '='")]
    Name {
        /// The origin, redacted.
        origin: String,
    },
    /// `,priority=` not a whole number.
    #[error("origin '{origin}': priority must be a whole number, not '{value}'")]
    Priority {
        /// The origin, redacted.
        origin: String,
        /// What was given.
        value: String,
        /// Why it is not a number.
        #[source]
        source: std::num::ParseIntError,
    },
    /// `cache=off` on a remote origin.
    #[error(
        "origin '{origin}': cache=off is for local folders (a remote origin's bytes are cached so that they play when it is slow or gone)"
    )]
    UncachedRemote {
        /// The origin, redacted.
        origin: String,
    },
    /// A remote origin's URL.
    #[error("origin '{origin}': {source}")]
    Url {
        /// The origin, redacted.
        origin: String,
        /// What is wrong with the URL.
        #[source]
        source: UrlError,
    },
    /// A local folder that cannot be stat'ed.
    #[error("origin '{origin}' cannot be used: {}", io_reason(.source))]
    Unusable {
        /// The folder, as given.
        origin: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// A local origin that is a file.
    #[error("origin '{origin}' is not a directory")]
    NotADirectory {
        /// The folder, as given.
        origin: String,
    },
    /// A local folder whose real path cannot be found.
    #[error("origin '{origin}' cannot be resolved: {}", io_reason(.source))]
    Unresolvable {
        /// The folder, as given.
        origin: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

/// Parses `WHERE[,name=NAME][,priority=N][,cache=off][,fill=inline]`: a
/// local directory (which must exist), or an `s3://` or `sftp://` URL
/// (checked, not contacted). Only trailing `,name=`, `,priority=`,
/// `,cache=` and `,fill=` parts are options, so a path with a comma in it
/// still works.
pub fn parse_origin(raw: &str) -> Result<OriginSpec, OriginArgError> {
    let mut place = raw;
    let mut name = None;
    let mut priority = None;
    let mut cached = None;
    let mut fill = None;
    let twice = |what| OriginArgError::Twice {
        origin: redact_url(raw),
        what,
    };
    while let Some((head, tail)) = place.rsplit_once(',') {
        if let Some(f) = tail.strip_prefix("fill=") {
            if fill.is_some() {
                return Err(twice("fill"));
            }
            fill = Some(
                switch(f, "behind", "inline").ok_or_else(|| OriginArgError::Fill {
                    origin: redact_url(raw),
                    value: f.to_owned(),
                })?,
            );
        } else if let Some(c) = tail.strip_prefix("cache=") {
            if cached.is_some() {
                return Err(twice("cache"));
            }
            cached = Some(switch(c, "on", "off").ok_or_else(|| OriginArgError::Cache {
                origin: redact_url(raw),
                value: c.to_owned(),
            })?);
        } else if let Some(n) = tail.strip_prefix("name=") {
            if name.is_some() {
                return Err(twice("name"));
            }
            if n.trim().is_empty() || n.contains('=') {
                return Err(OriginArgError::Name {
                    origin: redact_url(raw),
                });
            }
            name = Some(n.to_owned());
        } else if let Some(p) = tail.strip_prefix("priority=") {
            if priority.is_some() {
                return Err(twice("priority"));
            }
            priority = Some(
                p.parse::<i64>()
                    .map_err(|source| OriginArgError::Priority {
                        origin: redact_url(raw),
                        value: p.to_owned(),
                        source,
                    })?,
            );
        } else {
            break;
        }
        place = head;
    }
    let kind = parse_place(place)?;
    let cached = cached.unwrap_or(true);
    if !cached && matches!(kind, OriginKind::Remote(_)) {
        return Err(OriginArgError::UncachedRemote {
            origin: redact_url(raw),
        });
    }
    let local = matches!(kind, OriginKind::Local(_));
    if fill == Some(true) && !local {
        return Err(OriginArgError::FillBehindRemote {
            origin: redact_url(raw),
        });
    }
    Ok(OriginSpec {
        kind,
        name,
        priority: priority.unwrap_or(0),
        cached,
        fill_behind: cached && local && fill.unwrap_or(true),
    })
}

/// A two-way option's value: true for `yes`, false for `no`, else none.
fn switch(value: &str, yes: &str, no: &str) -> Option<bool> {
    if value == yes {
        Some(true)
    } else if value == no {
        Some(false)
    } else {
        None
    }
}

fn parse_place(raw: &str) -> Result<OriginKind, OriginArgError> {
    if is_remote_url(raw) {
        return parse_remote_url(raw)
            .map(|r| OriginKind::Remote(Box::new(r)))
            .map_err(|source| OriginArgError::Url {
                origin: redact_url(raw),
                source,
            });
    }
    let path = Path::new(raw);
    let meta = std::fs::metadata(path).map_err(|source| OriginArgError::Unusable {
        origin: raw.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(OriginArgError::NotADirectory {
            origin: raw.to_owned(),
        });
    }
    let canonical = path
        .canonicalize()
        .map_err(|source| OriginArgError::Unresolvable {
            origin: raw.to_owned(),
            source,
        })?;
    Ok(OriginKind::Local(canonical))
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
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse_origin("s3://b/p?secret_access_key=hunter2")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
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
            (format!("{d},fill=later"), "'behind' or 'inline'"),
            (format!("{d},fill=inline,fill=behind"), "twice"),
            ("s3://b/p,fill=behind".to_owned(), "for local folders"),
        ] {
            let err = parse_origin(&raw).unwrap_err().to_string();
            assert!(err.contains(says), "{raw}: {err}");
        }
    }

    #[test]
    fn local_folders_fill_behind_unless_told_inline_and_remote_ones_never() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let fills = |raw: String| parse_origin(&raw).unwrap().fill_behind;
        assert!(fills(format!("{d}")));
        assert!(fills(format!("{d},fill=behind,name=x")));
        assert!(!fills(format!("{d},fill=inline")));
        assert!(!fills(format!("{d},cache=off")), "nothing to fill");
        assert!(!fills("sftp://me@nas/srv/music".to_owned()));
        assert!(!fills("s3://b/p,fill=inline".to_owned()));
    }
}
