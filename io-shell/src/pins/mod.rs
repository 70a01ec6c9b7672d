//! Pins: `musicfs pin`, `unpin` and `pins`, the daemon's side.
//!
//! What a pin means (which chunks eviction keeps, the pin limit, which
//! files still need bytes) is decided in the core (`core/src/engine/pins.rs`).
//! Here: turning what the user named (a search query, a folder or file of
//! the mount, a playlist's entries) into files of the tree, answering the
//! control socket, and saving pins durably before saying they are done.
//! [`fill::PinFiller`] fetches what pinned files still lack; the command
//! line is [`crate::cli::pin`].

pub mod fill;

use crate::exec::daemon::Daemon;
use crate::search::live::LiveSearch;
use musicfs_core::Ino;
use musicfs_core::engine::{Cached, Engine};
use musicfs_core::tree::{Body, FileRole};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Failed files listed in one answer, at most.
const FAILED_SHOWN_MAX: usize = 20;

/// A pin request that names nothing.
#[derive(Debug, thiserror::Error)]
#[error("a pin request names a \"query\" or \"paths\"")]
pub struct NoTarget;

/// What a pin request names: a search query, or paths of the mount
/// (relative to its root; a folder means every file under it).
#[derive(Debug)]
pub enum Target {
    /// Tracks a search finds (with the covers beside them).
    Query(String),
    /// Files and folders of the mount.
    Paths(Vec<String>),
}

impl Target {
    /// The target of a control request (`{"query": ..}` or `{"paths": [..]}`).
    pub fn from_request(request: &Value) -> Result<Target, NoTarget> {
        if let Some(q) = request["query"].as_str() {
            return Ok(Target::Query(q.to_owned()));
        }
        if let Some(paths) = request["paths"].as_array() {
            return Ok(Target::Paths(
                paths
                    .iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect(),
            ));
        }
        Err(NoTarget)
    }
}

/// The files of the tree a target names, or the answer to send instead.
pub fn resolve(
    daemon: &Daemon,
    search: Option<&LiveSearch>,
    target: &Target,
) -> Result<Vec<Ino>, Value> {
    let (paths, with_covers) = match target {
        Target::Paths(paths) => (paths.clone(), false),
        Target::Query(query) => {
            let Some(live) = search else {
                return Err(
                    json!({"error": "the search index is not open yet; try again in a moment, or name a folder of the mount"}),
                );
            };
            let max = crate::search::MAX_LIMIT;
            match live.search(query, max) {
                Ok(paths) if paths.len() >= max => {
                    return Err(json!({"error": format!(
                        "the query finds {max} tracks or more: pin folders of the mount, or narrow the query"
                    )}));
                }
                Ok(paths) => (paths, true),
                Err(e @ crate::search::SearchError::BadQuery(_)) => {
                    return Err(json!({"bad_query": e.to_string()}));
                }
                Err(e) => return Err(json!({"error": e.to_string()})),
            }
        }
    };
    let (inos, missing) = daemon.inspect(|e| files_of(e, &paths, with_covers));
    if let Some(path) = missing {
        return Err(json!({"error": format!("'{path}' is not in the mount")}));
    }
    Ok(inos)
}

/// The files at or under `paths`, plus (for search hits) the cover images
/// beside each track; the first path that names nothing, if any.
fn files_of(e: &Engine, paths: &[String], with_covers: bool) -> (Vec<Ino>, Option<String>) {
    let tree = e.tree();
    let mut out = BTreeSet::new();
    for path in paths {
        let Some(ino) = tree.resolve(path) else {
            return (Vec::new(), Some(path.clone()));
        };
        for file in tree.files_under(ino) {
            out.insert(file);
            let parent = tree.get(file).map(|n| n.parent);
            if with_covers
                && let Some(Body::Dir(dir)) = parent.and_then(|p| tree.get(p)).map(|n| &n.body)
            {
                let covers = dir
                    .children
                    .values()
                    .filter(|&&c| tree.file(c).is_some_and(|f| f.role == FileRole::Cover));
                out.extend(covers);
            }
        }
    }
    (out.into_iter().collect(), None)
}

/// The inodes a request lists (`{"inos": [..]}`).
pub fn inos_of(request: &Value) -> Vec<Ino> {
    request["inos"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(Ino)
        .collect()
}

/// Saves pin changes durably: a pin the user was told about survives a
/// crash right after.
pub fn save(daemon: &Arc<Daemon>) -> Result<(), crate::store::StoreError> {
    daemon.persist()?;
    daemon.db().flush()
}

/// `pin`: pins the files, saves, wakes the filler.
pub fn pin(daemon: &Arc<Daemon>, filler: &fill::PinFiller, inos: &[Ino]) -> Value {
    let inos_named = inos.len();
    if inos.is_empty() {
        return json!({"error": "nothing in the mount matches"});
    }
    let cacheable: Vec<Ino> = daemon.inspect(|e| {
        inos.iter()
            .copied()
            .filter(|&i| e.is_cacheable(i))
            .collect()
    });
    if cacheable.is_empty() {
        return json!({"error": "these files are only in cache=off origins: they are never cached, so they cannot be pinned"});
    }
    let inos = &cacheable[..];
    match daemon.with_engine(|e, _| e.pin(inos)) {
        Ok(report) => {
            if let Err(e) = save(daemon) {
                return json!({"error": format!("could not save the pins: {e}")});
            }
            filler.kick();
            json!({
                "files": report.files,
                "new_files": report.new_files,
                "bytes": report.bytes,
                "uncacheable": report.uncacheable + (inos_named - inos.len()),
                "inos": inos.iter().map(|i| i.0).collect::<Vec<_>>(),
            })
        }
        Err(refused) => json!({"refused": {
            "adding_bytes": refused.adding_bytes,
            "pinned_bytes": refused.pinned_bytes,
            "limit_bytes": refused.limit_bytes,
        }}),
    }
}

/// `unpin`: releases the files' pins and saves.
pub fn unpin(daemon: &Arc<Daemon>, filler: &fill::PinFiller, inos: &[Ino]) -> Value {
    let released = daemon.with_engine(|e, _| e.unpin(inos));
    filler.interrupt();
    match save(daemon) {
        Ok(()) => json!({"released": released}),
        Err(e) => json!({"error": format!("could not save the pins: {e}")}),
    }
}

/// `pin_pause` (Ctrl-C on `musicfs pin`): stops fetching these files, keeps
/// their pins and what is cached.
pub fn pause(daemon: &Arc<Daemon>, filler: &fill::PinFiller, inos: &[Ino]) -> Value {
    daemon.with_engine(|e, _| e.pause_pins(inos));
    filler.interrupt();
    match save(daemon) {
        Ok(()) => json!({"paused": inos.len()}),
        Err(e) => json!({"error": format!("could not save the pins: {e}")}),
    }
}

/// `pin_state`: how far the fetch of these files is.
pub fn state(daemon: &Daemon, filler: &fill::PinFiller, inos: &[Ino]) -> Value {
    let failed = filler.failed();
    let (full, bytes, cached, failures) = daemon.inspect(|e| {
        let (mut full, mut bytes, mut cached) = (0usize, 0u64, 0u64);
        let mut failures = Vec::new();
        for &ino in inos {
            let Some(f) = e.tree().file(ino) else {
                continue;
            };
            bytes += f.size;
            cached += e.cached_bytes(ino).min(f.size);
            if e.cached(ino) == Cached::Full {
                full += 1;
            } else if let Some(why) = failed.get(&ino)
                && failures.len() < FAILED_SHOWN_MAX
            {
                let path = e.tree().path_of(ino).unwrap_or_default();
                failures.push(json!({"path": path, "error": why.to_string()}));
            }
        }
        (full, bytes, cached, failures)
    });
    json!({
        "files": inos.len(),
        "full": full,
        "bytes": bytes,
        "cached_bytes": cached,
        "filling": filler.is_busy(),
        "failed": failures,
    })
}

/// `pins`: every pinned file with its size and how much is cached.
pub fn list(daemon: &Daemon) -> Value {
    daemon.inspect(|e| {
        let files: Vec<Value> = e
            .pinned_files()
            .into_iter()
            .map(|p| {
                json!({
                    "path": e.tree().path_of(p.ino).unwrap_or_default(),
                    "size": p.size,
                    "cached_bytes": p.cached_bytes.min(p.size),
                    "paused": p.paused,
                })
            })
            .collect();
        json!({
            "limit_bytes": e.pin_limit_bytes(),
            "pinned_bytes": e.pinned_bytes(),
            "files": files,
        })
    })
}

/// The pin part of `musicfs status`.
pub fn summary(e: &Engine) -> Value {
    let files = e.pinned_files();
    let cached: u64 = files.iter().map(|p| p.cached_bytes.min(p.size)).sum();
    let full = files.iter().filter(|p| p.cached_bytes >= p.size).count();
    json!({
        "files": files.len(),
        "full": full,
        "bytes": e.pinned_bytes(),
        "cached_bytes": cached,
        "limit_bytes": e.pin_limit_bytes(),
    })
}
