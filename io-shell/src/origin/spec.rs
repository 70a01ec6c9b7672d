//! Remote origins as URLs: `s3://bucket/prefix?...` and
//! `sftp://user@host:port/path?...`.
//!
//! Query parameters, all optional:
//!
//! | scheme | parameter | meaning |
//! | --- | --- | --- |
//! | s3 | `endpoint=http://127.0.0.1:9000` | S3-compatible server (default: AWS) |
//! | s3 | `region=eu-west-1` | region (default: `AWS_REGION`, else `us-east-1`) |
//! | s3 | `path_style=true\|false` | path-style addressing (default: on with `endpoint`) |
//! | s3 | `anonymous=true` | unsigned requests (public buckets) |
//! | s3 | `instance_metadata=true` | also take credentials from EC2 instance metadata |
//! | sftp | `key=/path/to/id_ed25519` | the only key to offer (default: agent and ssh's own) |
//! | sftp | `known_hosts=/path` | known_hosts file to check the host key against |
//! | sftp | `ssh_config=/path` | ssh config file instead of `~/.ssh/config` |
//! | both | `timeout=10` | seconds per request |
//! | both | `connect_timeout=10` | seconds to connect |
//!
//! Credentials never go in the URL (it shows in `ps`, shell history and
//! logs): S3 keys come from the AWS environment variables or profile files,
//! SSH keys from the agent or a key file. A URL that tries (`sftp://u:pw@`,
//! `?secret_access_key=`) is refused, and the message does not repeat the
//! secret. Unknown parameters are refused too, so a typo is not silently
//! ignored.
//!
//! An SFTP path is absolute (`sftp://nas/srv/music`), or relative to the
//! login directory when it starts with `/~/` (`sftp://nas/~/Music`).

use super::s3::{S3Config, S3Credentials, S3Origin};
use super::sftp::{SftpConfig, SftpOrigin};
use super::{OriginError, RemoteLimits, RemoteOrigin};
use musicfs_core::OriginId;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A remote origin as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteSpec {
    /// An S3 bucket or prefix.
    S3(S3Config),
    /// A directory on an SSH server.
    Sftp(SftpConfig),
}

impl RemoteSpec {
    /// A stable text form without secrets, to save in the cache and notice
    /// a changed origin list: what identifies the files, not how long to
    /// wait for them.
    pub fn key(&self) -> String {
        match self {
            RemoteSpec::S3(c) => format!(
                "s3:{}/{}@{}",
                c.bucket,
                c.prefix,
                c.endpoint
                    .as_deref()
                    .map_or_else(|| "aws".to_owned(), super::s3::strip_userinfo)
            ),
            RemoteSpec::Sftp(c) => format!("sftp:{}", c.display()),
        }
    }

    /// For people and logs, without secrets.
    pub fn describe(&self) -> String {
        match self {
            RemoteSpec::S3(c) => {
                format!("s3://{}/{} at {}", c.bucket, c.prefix, c.display_endpoint())
            }
            RemoteSpec::Sftp(c) => format!("sftp://{}", c.display()),
        }
    }

    /// Builds the origin. No network traffic: connections are made on
    /// first use.
    pub fn open(&self, id: OriginId) -> Result<Arc<dyn RemoteOrigin>, OriginError> {
        Ok(match self {
            RemoteSpec::S3(c) => Arc::new(S3Origin::new(id, c.clone())?),
            RemoteSpec::Sftp(c) => Arc::new(SftpOrigin::new(id, c.clone())),
        })
    }

    /// The limits the origin will keep to.
    pub fn limits_mut(&mut self) -> &mut RemoteLimits {
        match self {
            RemoteSpec::S3(c) => &mut c.limits,
            RemoteSpec::Sftp(c) => &mut c.limits,
        }
    }
}

/// Whether `raw` looks like a remote origin URL (`scheme://...`).
pub fn is_remote_url(raw: &str) -> bool {
    raw.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    })
}

/// `raw` with any password and secret-looking query values replaced by
/// `***`, for error messages that quote what the user typed.
pub fn redact_url(raw: &str) -> String {
    let (head, query) = match raw.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (raw, None),
    };
    let head = redact_userinfo(head);
    match query {
        None => head,
        Some(q) => {
            let parts: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
                    // A URL inside a parameter (`endpoint=`) may carry one.
                    Some((k, v)) => format!("{k}={}", redact_userinfo(v)),
                    None => kv.to_owned(),
                })
                .collect();
            format!("{head}?{}", parts.join("&"))
        }
    }
}

/// `scheme://user:password@host/...` with the password replaced by `***`.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "token",
        "access_key",
        "credential",
        "signature",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Why an origin URL cannot be used: one line for a person, which never
/// contains a secret from the URL.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("not a valid URL ({0})")]
    NotAUrl(#[source] url::ParseError),
    /// A query parameter that looks like a credential.
    #[error(
        "credentials do not go in the URL (parameter '{0}'): use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or an AWS profile for S3, an ssh key or ssh-agent for SFTP"
    )]
    SecretParameter(String),
    /// Neither `s3://` nor `sftp://`.
    #[error(
        "{0}:// origins are not supported; use a local directory, s3://bucket/prefix or sftp://user@host/path"
    )]
    Scheme(String),
    /// `s3://user:key@bucket`.
    #[error(
        "credentials do not go in the URL: use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or an AWS profile"
    )]
    S3Credentials,
    /// `s3:///prefix`.
    #[error("s3:// needs a bucket: s3://bucket/prefix")]
    NoBucket,
    /// `s3://bucket:9000`.
    #[error("s3://bucket takes no port; give the server as ?endpoint=http://host:port")]
    S3Port,
    /// A prefix whose percent-decoding is not UTF-8.
    #[error("the S3 prefix is not UTF-8")]
    PrefixNotUtf8,
    /// `endpoint=` is not a URL.
    #[error("endpoint is not a URL ({0})")]
    Endpoint(#[source] url::ParseError),
    /// `endpoint=` is not http(s).
    #[error("endpoint must be an http:// or https:// URL")]
    EndpointScheme,
    /// `endpoint=http://user:pw@host`.
    #[error("credentials do not go in the endpoint URL")]
    EndpointCredentials,
    /// `sftp://user:pw@host`.
    #[error("passwords do not go in the URL: use an ssh key (?key=/path) or ssh-agent")]
    SftpPassword,
    /// `sftp:///path`.
    #[error("sftp:// needs a host: sftp://user@host:port/path")]
    NoHost,
    /// A user name whose percent-decoding is not UTF-8.
    #[error("the user name is not UTF-8")]
    UserNotUtf8,
    /// A parameter this scheme does not know.
    #[error("unknown {scheme}:// parameter '{key}' (known: {known})")]
    UnknownParameter {
        /// `s3` or `sftp`.
        scheme: &'static str,
        /// The parameter.
        key: String,
        /// The ones it knows.
        known: &'static str,
    },
    /// A yes/no parameter with another value.
    #[error("{key} must be true or false, not '{value}'")]
    NotABool {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// A duration parameter with another value.
    #[error("{key} must be a number of seconds (0 < s <= 3600), not '{value}'")]
    NotSeconds {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// A file parameter naming something else.
    #[error("{key}={value} is not a file")]
    NotAFile {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// A file parameter naming nothing usable.
    #[error("{key}={value} cannot be used: {source}")]
    Unusable {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Parses an `s3://` or `sftp://` origin URL.
pub fn parse_remote_url(raw: &str) -> Result<RemoteSpec, UrlError> {
    let url = url::Url::parse(raw).map_err(UrlError::NotAUrl)?;
    let mut params = Vec::new();
    for (k, v) in url.query_pairs() {
        if is_secret_param(&k) {
            return Err(UrlError::SecretParameter(k.into_owned()));
        }
        params.push((k.into_owned(), v.into_owned()));
    }
    match url.scheme() {
        "s3" => parse_s3(&url, &params).map(RemoteSpec::S3),
        "sftp" => parse_sftp(&url, &params).map(RemoteSpec::Sftp),
        other => Err(UrlError::Scheme(other.to_owned())),
    }
}

fn parse_s3(url: &url::Url, params: &[(String, String)]) -> Result<S3Config, UrlError> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::S3Credentials);
    }
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or(UrlError::NoBucket)?;
    if url.port().is_some() {
        return Err(UrlError::S3Port);
    }
    let prefix = decode_utf8(url.path())?.trim_matches('/').to_owned();
    let mut config = S3Config::new(bucket, prefix);
    let mut instance_metadata = false;
    let mut anonymous = false;
    for (k, v) in params {
        match k.as_str() {
            "endpoint" => {
                let endpoint = url::Url::parse(v).map_err(UrlError::Endpoint)?;
                if !matches!(endpoint.scheme(), "http" | "https") {
                    return Err(UrlError::EndpointScheme);
                }
                if !endpoint.username().is_empty() || endpoint.password().is_some() {
                    return Err(UrlError::EndpointCredentials);
                }
                config.endpoint = Some(v.trim_end_matches('/').to_owned());
            }
            "region" => config.region = Some(v.clone()),
            "path_style" => config.path_style = Some(parse_bool(k, v)?),
            "anonymous" => anonymous = parse_bool(k, v)?,
            "instance_metadata" => instance_metadata = parse_bool(k, v)?,
            _ => apply_common(&mut config.limits, k, v, "s3")?,
        }
    }
    config.credentials = if anonymous {
        S3Credentials::Anonymous
    } else {
        S3Credentials::Environment { instance_metadata }
    };
    Ok(config)
}

fn parse_sftp(url: &url::Url, params: &[(String, String)]) -> Result<SftpConfig, UrlError> {
    if url.password().is_some() {
        return Err(UrlError::SftpPassword);
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or(UrlError::NoHost)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let path = decode_bytes(url.path());
    let root: PathBuf = match path.as_slice() {
        b"" | b"/~" | b"/~/" => PathBuf::from("."),
        p => match p.strip_prefix(b"/~/") {
            Some(rel) => PathBuf::from(OsStr::from_bytes(rel)),
            None => PathBuf::from(OsStr::from_bytes(p)),
        },
    };
    let mut config = SftpConfig::new(host, root);
    if !url.username().is_empty() {
        config.user = Some(
            String::from_utf8(decode_bytes(url.username())).map_err(|_| UrlError::UserNotUtf8)?,
        );
    }
    config.port = url.port();
    for (k, v) in params {
        match k.as_str() {
            "key" => config.key_file = Some(existing_file(k, v)?),
            "known_hosts" => config.known_hosts = Some(existing_file(k, v)?),
            "ssh_config" => config.ssh_config = Some(existing_file(k, v)?),
            _ => apply_common(&mut config.limits, k, v, "sftp")?,
        }
    }
    Ok(config)
}

fn apply_common(
    limits: &mut RemoteLimits,
    k: &str,
    v: &str,
    scheme: &'static str,
) -> Result<(), UrlError> {
    match k {
        "timeout" => limits.request_timeout = parse_secs(k, v)?,
        "connect_timeout" => limits.connect_timeout = parse_secs(k, v)?,
        _ => {
            let known = if scheme == "s3" {
                "endpoint, region, path_style, anonymous, instance_metadata, timeout, connect_timeout"
            } else {
                "key, known_hosts, ssh_config, timeout, connect_timeout"
            };
            return Err(UrlError::UnknownParameter {
                scheme,
                key: k.to_owned(),
                known,
            });
        }
    }
    Ok(())
}

fn parse_bool(k: &str, v: &str) -> Result<bool, UrlError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(UrlError::NotABool {
            key: k.to_owned(),
            value: v.to_owned(),
        }),
    }
}

fn parse_secs(k: &str, v: &str) -> Result<Duration, UrlError> {
    v.trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| UrlError::NotSeconds {
            key: k.to_owned(),
            value: v.to_owned(),
        })
}

fn existing_file(k: &str, v: &str) -> Result<PathBuf, UrlError> {
    let path = PathBuf::from(v);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => Err(UrlError::NotAFile {
            key: k.to_owned(),
            value: v.to_owned(),
        }),
        Err(source) => Err(UrlError::Unusable {
            key: k.to_owned(),
            value: v.to_owned(),
            source,
        }),
    }
}

/// Percent-decodes a URL component into raw bytes (file names need not be
/// UTF-8).
fn decode_bytes(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_utf8(s: &str) -> Result<String, UrlError> {
    String::from_utf8(decode_bytes(s)).map_err(|_| UrlError::PrefixNotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        let spec = parse_remote_url(
            "s3://music/lib/My%20Rips/?endpoint=http://127.0.0.1:9000&region=eu-west-1&path_style=true&timeout=2.5",
        )
        .unwrap();
        let RemoteSpec::S3(c) = &spec else { panic!() };
        assert_eq!(c.bucket, "music");
        assert_eq!(c.prefix, "lib/My Rips");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.path_style, Some(true));
        assert_eq!(c.limits.request_timeout, Duration::from_millis(2500));
        assert_eq!(spec.key(), "s3:music/lib/My Rips@http://127.0.0.1:9000");

        let RemoteSpec::S3(c) = parse_remote_url("s3://bucket").unwrap() else {
            panic!()
        };
        assert_eq!(c.prefix, "");
        assert_eq!(
            c.credentials,
            S3Credentials::Environment {
                instance_metadata: false
            }
        );
        let RemoteSpec::S3(c) = parse_remote_url("s3://b/p?anonymous=true").unwrap() else {
            panic!()
        };
        assert_eq!(c.credentials, S3Credentials::Anonymous);

        assert!(parse_remote_url("s3:///nobucket").is_err());
        assert!(
            parse_remote_url("s3://b/p?endpont=x")
                .unwrap_err()
                .to_string()
                .contains("unknown")
        );
        assert!(parse_remote_url("s3://b/p?endpoint=ftp://x").is_err());
        assert!(
            parse_remote_url("ftp://host/x")
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
    }

    #[test]
    fn secrets_in_urls_are_refused_and_not_echoed() {
        for raw in [
            "s3://b/p?secret_access_key=wJalrXUtnFEMI",
            "s3://b/p?aws_session_token=wJalrXUtnFEMI",
            "s3://AKIA:wJalrXUtnFEMI@b/p",
            "s3://b/p?endpoint=http://AKIA:wJalrXUtnFEMI@127.0.0.1:9000",
            "sftp://me:wJalrXUtnFEMI@host/srv",
            "sftp://me@host/srv?password=wJalrXUtnFEMI",
        ] {
            let err = parse_remote_url(raw).unwrap_err().to_string();
            assert!(!err.contains("wJalrXUtnFEMI"), "{raw}: {err}");
            assert!(
                !redact_url(raw).contains("wJalrXUtnFEMI"),
                "{}",
                redact_url(raw)
            );
        }
        assert_eq!(
            redact_url("sftp://me:pw@host:22/srv?key=/k"),
            "sftp://me:***@host:22/srv?key=/k"
        );
    }

    #[test]
    fn sftp_urls() {
        let RemoteSpec::Sftp(c) = parse_remote_url("sftp://me@nas:2222/srv/m%C3%BAsica").unwrap()
        else {
            panic!()
        };
        assert_eq!(c.host, "nas");
        assert_eq!(c.user.as_deref(), Some("me"));
        assert_eq!(c.port, Some(2222));
        assert_eq!(c.root, PathBuf::from("/srv/música"));

        let RemoteSpec::Sftp(c) = parse_remote_url("sftp://nas/~/Music").unwrap() else {
            panic!()
        };
        assert_eq!(c.root, PathBuf::from("Music"));
        assert_eq!(c.user, None);
        assert_eq!(c.port, None);
        let RemoteSpec::Sftp(c) = parse_remote_url("sftp://nas").unwrap() else {
            panic!()
        };
        assert_eq!(c.root, PathBuf::from("."));
        let RemoteSpec::Sftp(c) = parse_remote_url("sftp://[::1]:22/x").unwrap() else {
            panic!()
        };
        assert_eq!(c.host, "::1");
        // Raw bytes survive: a Latin-1 directory name.
        let RemoteSpec::Sftp(c) = parse_remote_url("sftp://nas/srv/m%FAsica").unwrap() else {
            panic!()
        };
        assert_eq!(c.root.as_os_str().as_bytes(), b"/srv/m\xfasica");

        assert!(parse_remote_url("sftp://nas/x?key=/does/not/exist").is_err());
        assert!(
            parse_remote_url("sftp://nas/x?known_host=/etc/hosts")
                .unwrap_err()
                .to_string()
                .contains("unknown")
        );
    }

    #[test]
    fn remote_urls_are_recognised() {
        assert!(is_remote_url("s3://b"));
        assert!(is_remote_url("sftp://h/x"));
        assert!(!is_remote_url("/music"));
        assert!(!is_remote_url("./odd://name"));
    }
}
