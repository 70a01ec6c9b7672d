//! Sync decisions: what changed in an origin, what must be read again, and
//! what the catalog becomes.
//!
//! The io-shell lists an origin (a directory walk, a bucket listing, or the
//! paths an inotify burst named) and hands the result here. The plan says
//! which files to read again (new or changed), which are gone, and which
//! only moved (same identity at a new path: no tags to read, and the chunk
//! map follows the file). Reading is done in batches; after each batch the
//! io-shell saves the updated catalog entries, and that saved catalog *is*
//! the checkpoint: an interrupted sync, planned again, re-reads only what it
//! had not finished, never a file twice and never a file missed.

use crate::catalog::{CatalogEntry, SourceFile};
use crate::ids::{OriginId, OriginPath};
use crate::manifest::FileVersion;
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

/// One file as a listing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Path inside the origin.
    pub path: OriginPath,
    /// Size, mtime, change token.
    pub version: FileVersion,
}

/// What a sync must do for one origin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// The origin.
    pub origin: Option<OriginId>,
    /// Files to read (new or changed), in path order.
    pub reread: Vec<Listed>,
    /// Files that are gone.
    pub removed: Vec<OriginPath>,
    /// Files that moved: the old entry, now at the new path and version.
    pub moved: Vec<(OriginPath, CatalogEntry)>,
    /// Files that did not change.
    pub unchanged: usize,
}

impl SyncPlan {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.reread.is_empty() && self.removed.is_empty() && self.moved.is_empty()
    }

    /// The files to read, in batches of at most `size`.
    pub fn batches(&self, size: usize) -> impl Iterator<Item = &[Listed]> {
        self.reread.chunks(size.max(1))
    }
}

/// The identity of a file that survives a rename: its token without the
/// ctime a rename changes (local files: device and inode; S3: the ETag), and
/// its size and mtime.
fn identity(v: &FileVersion) -> Option<(u64, i64, &str)> {
    let token = v.token.as_deref()?;
    let stable = match token.matches(':').count() {
        // "dev:ino:ctime" (local): a rename changes ctime, not dev:ino.
        2 => token.rsplit_once(':').map_or(token, |(dev_ino, _)| dev_ino),
        _ => token,
    };
    Some((v.size, v.mtime_ns, stable))
}

/// Plans a sync of `origin` from a complete listing. `catalog` holds the
/// origin's saved entries (others are ignored), owned or borrowed: each is
/// looked at once, and only those that are gone are kept, so a caller may
/// stream them from where they are saved instead of holding them all.
pub fn plan_full<E: Borrow<CatalogEntry>>(
    origin: OriginId,
    catalog: impl IntoIterator<Item = E>,
    listing: &[Listed],
) -> SyncPlan {
    // Each listed path, and whether a saved entry has it.
    let listed: BTreeMap<&OriginPath, usize> = listing
        .iter()
        .enumerate()
        .map(|(i, l)| (&l.path, i))
        .collect();
    let mut saved = vec![false; listing.len()];
    let mut plan = SyncPlan {
        origin: Some(origin),
        ..SyncPlan::default()
    };
    let mut gone: Vec<E> = Vec::new();
    for entry in catalog {
        let e = entry.borrow();
        if e.source.origin != origin {
            continue;
        }
        match listed.get(&e.source.path) {
            None => gone.push(entry),
            Some(&i) => {
                saved[i] = true;
                let l = &listing[i];
                if e.source.version == l.version {
                    plan.unchanged += 1;
                } else {
                    plan.reread.push(l.clone());
                }
            }
        }
    }
    gone.sort_by(|a, b| a.borrow().source.path.cmp(&b.borrow().source.path));
    let gone: Vec<&CatalogEntry> = gone.iter().map(Borrow::borrow).collect();
    let new: Vec<&Listed> = listed
        .values()
        .filter(|&&i| !saved[i])
        .map(|&i| &listing[i])
        .collect();
    resolve_moves(origin, &gone, &new, &mut plan);
    plan.reread.sort_by(|a, b| a.path.cmp(&b.path));
    plan
}

/// Plans a sync of only `paths` (what a file-system watcher reported):
/// `stats` holds those of them that exist now, with their versions.
/// Directories named by the watcher are expanded by the caller into the
/// files under them; a path with entries saved *under* it (a folder that
/// moved away or was deleted) removes those entries.
pub fn plan_paths(
    origin: OriginId,
    catalog: &[CatalogEntry],
    paths: &BTreeSet<OriginPath>,
    stats: &[Listed],
) -> SyncPlan {
    let under = |p: &OriginPath, prefix: &OriginPath| {
        let (p, d) = (p.as_bytes(), prefix.as_bytes());
        p == d || (p.len() > d.len() && p.starts_with(d) && p[d.len()] == b'/')
    };
    let touched: Vec<CatalogEntry> = catalog
        .iter()
        .filter(|e| e.source.origin == origin && paths.iter().any(|p| under(&e.source.path, p)))
        .cloned()
        .collect();
    // Files that exist now but were not named (inside a folder that was
    // named) are part of the listing too.
    let mut plan = plan_full(origin, &touched, stats);
    // `plan_full` saw only the touched entries, so "unchanged" counts only those.
    plan.unchanged = plan.unchanged.min(touched.len());
    plan
}

/// Pairs gone files with new files of the same identity: a move, not a
/// delete and an add. Whatever is left is removed or read.
fn resolve_moves(origin: OriginId, gone: &[&CatalogEntry], new: &[&Listed], plan: &mut SyncPlan) {
    let mut by_identity: BTreeMap<(u64, i64, &str), Vec<&CatalogEntry>> = BTreeMap::new();
    for e in gone {
        if let Some(id) = identity(&e.source.version) {
            by_identity.entry(id).or_default().push(e);
        }
    }
    let mut moved_from = BTreeSet::new();
    for l in new {
        let candidate = identity(&l.version)
            .and_then(|id| by_identity.get_mut(&id))
            .and_then(|v| {
                if v.is_empty() {
                    None
                } else {
                    Some(v.remove(0))
                }
            });
        match candidate {
            Some(old) => {
                moved_from.insert(old.source.path.clone());
                let entry = CatalogEntry {
                    source: SourceFile {
                        origin,
                        path: l.path.clone(),
                        version: l.version.clone(),
                    },
                    kind: old.kind.clone(),
                };
                plan.moved.push((old.source.path.clone(), entry));
            }
            None => plan.reread.push((*l).clone()),
        }
    }
    plan.removed = gone
        .iter()
        .map(|e| e.source.path.clone())
        .filter(|p| !moved_from.contains(p))
        .collect();
}

/// The catalog after a sync: `catalog` with `plan`'s removals and moves and
/// the entries read in `read` (for files of `plan.reread`; a file that could
/// not be read at all is simply left out and found again next time).
pub fn apply(
    catalog: &[CatalogEntry],
    plan: &SyncPlan,
    read: &[CatalogEntry],
) -> Vec<CatalogEntry> {
    let Some(origin) = plan.origin else {
        return catalog.to_vec();
    };
    let mut by_key: BTreeMap<(OriginId, OriginPath), CatalogEntry> = catalog
        .iter()
        .map(|e| ((e.source.origin, e.source.path.clone()), e.clone()))
        .collect();
    for p in &plan.removed {
        by_key.remove(&(origin, p.clone()));
    }
    for (old, entry) in &plan.moved {
        by_key.remove(&(origin, old.clone()));
        by_key.insert((origin, entry.source.path.clone()), entry.clone());
    }
    for e in read {
        by_key.insert((e.source.origin, e.source.path.clone()), e.clone());
    }
    by_key.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::FileKind;
    use crate::tags::TrackTags;

    fn v(size: u64, ino: u64) -> FileVersion {
        FileVersion {
            size,
            mtime_ns: 1000 + size as i64,
            token: Some(format!("1:{ino}:{}", 5000 + ino).into()),
        }
    }

    fn entry(path: &str, version: FileVersion, title: &str) -> CatalogEntry {
        CatalogEntry {
            source: SourceFile {
                origin: OriginId(0),
                path: OriginPath::new(path.as_bytes().to_vec()),
                version,
            },
            kind: FileKind::Track(TrackTags {
                title: Some(title.into()),
                ..Default::default()
            }),
        }
    }

    fn listed(path: &str, version: FileVersion) -> Listed {
        Listed {
            path: OriginPath::new(path.as_bytes().to_vec()),
            version,
        }
    }

    #[test]
    fn only_changed_files_are_read_again_and_moves_keep_their_tags() {
        let catalog = vec![
            entry("a.flac", v(10, 1), "A"),
            entry("b.flac", v(20, 2), "B"),
            entry("old/c.flac", v(30, 3), "C"),
            entry("d.flac", v(40, 4), "D"),
        ];
        let mut moved_c = v(30, 3);
        moved_c.token = Some("1:3:9999".into()); // a rename changes ctime only
        let listing = vec![
            listed("a.flac", v(10, 1)),    // unchanged
            listed("b.flac", v(21, 2)),    // retagged
            listed("new/c.flac", moved_c), // moved
            listed("e.flac", v(50, 5)),    // added
        ];
        let plan = plan_full(OriginId(0), &catalog, &listing);
        let names = |v: &[Listed]| v.iter().map(|l| l.path.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&plan.reread), ["b.flac", "e.flac"]);
        assert_eq!(plan.removed, vec![OriginPath::new(b"d.flac".to_vec())]);
        assert_eq!(plan.moved.len(), 1);
        assert_eq!(plan.moved[0].0.to_string(), "old/c.flac");
        assert_eq!(plan.unchanged, 1);
        let read = vec![
            entry("b.flac", v(21, 2), "B2"),
            entry("e.flac", v(50, 5), "E"),
        ];
        let after = apply(&catalog, &plan, &read);
        let paths: Vec<String> = after.iter().map(|e| e.source.path.to_string()).collect();
        assert_eq!(paths, ["a.flac", "b.flac", "e.flac", "new/c.flac"]);
        let c = after
            .iter()
            .find(|e| e.source.path.to_string() == "new/c.flac")
            .unwrap();
        assert_eq!(
            c.kind,
            entry("x", v(1, 1), "C").kind,
            "a move keeps the tags read before"
        );
        // Planning again after applying finds nothing to do: applied batches
        // are the checkpoint.
        assert!(plan_full(OriginId(0), &after, &listing).is_empty());
        // Entries streamed as owned values, in any order and among another
        // origin's, plan the same.
        let mut streamed = catalog.clone();
        streamed.reverse();
        let mut elsewhere = entry("d.flac", v(40, 4), "D");
        elsewhere.source.origin = OriginId(1);
        streamed.insert(1, elsewhere);
        assert_eq!(plan_full(OriginId(0), streamed, &listing), plan);
    }

    #[test]
    fn an_interrupted_sync_resumes_without_duplicates_or_gaps() {
        let catalog: Vec<CatalogEntry> = Vec::new();
        let listing: Vec<Listed> = (0..10)
            .map(|i| listed(&format!("{i}.mp3"), v(i, i)))
            .collect();
        let plan = plan_full(OriginId(0), &catalog, &listing);
        // Only the first batch of 4 gets done before a crash.
        let first: Vec<CatalogEntry> = plan
            .batches(4)
            .next()
            .unwrap()
            .iter()
            .map(|l| entry(&l.path.to_string(), l.version.clone(), "t"))
            .collect();
        let saved = apply(
            &catalog,
            &SyncPlan {
                reread: vec![],
                removed: vec![],
                moved: vec![],
                ..plan.clone()
            },
            &first,
        );
        let resumed = plan_full(OriginId(0), &saved, &listing);
        let again: BTreeSet<String> = resumed.reread.iter().map(|l| l.path.to_string()).collect();
        let done: BTreeSet<String> = first.iter().map(|e| e.source.path.to_string()).collect();
        assert!(again.is_disjoint(&done), "no file read twice");
        assert_eq!(again.len() + done.len(), 10, "none missed");
    }

    #[test]
    fn watcher_paths_limit_the_plan_and_folders_cover_their_contents() {
        let catalog = vec![
            entry("x/1.flac", v(1, 1), "1"),
            entry("x/2.flac", v(2, 2), "2"),
            entry("y/3.flac", v(3, 3), "3"),
        ];
        // Folder x was deleted; y untouched and not named.
        let paths = BTreeSet::from([OriginPath::new(b"x".to_vec())]);
        let plan = plan_paths(OriginId(0), &catalog, &paths, &[]);
        let removed: Vec<String> = plan.removed.iter().map(ToString::to_string).collect();
        assert_eq!(removed, ["x/1.flac", "x/2.flac"]);
        assert!(plan.reread.is_empty());
    }
}
