//! The hidden `.search` folder: `ls "/mnt/music/.search/genre:jazz year:>2000"`
//! lists the matching tracks as symlinks into the tree, so
//! `mpv /mnt/music/.search/artist:radiohead/*` plays them.
//!
//! `.search` is not listed in the root, and listing it shows nothing, so
//! scanners and `find` never wander into it. Its nodes live in the inode
//! numbers the tree never uses (top bit set); a query's folder is made when
//! it is looked up and kept for a while (bounded).
//!
//! Times: `.search` itself has the mount's start time; a query folder and
//! its links the time of the search that last changed its results, so the
//! mtime moves exactly when the results do (which is what makes the kernel
//! drop a cached listing).

use super::live::SearchSlot;
use musicfs_core::Ino;
use musicfs_core::fs::{Attr, DirEntry, Errno, NodeKind};
use musicfs_core::naming;
use musicfs_core::tree::INO_RESERVED_BIT;
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// The folder's name in the root.
pub const NAME: &str = ".search";
/// Its inode.
pub const ROOT: u64 = INO_RESERVED_BIT | 1;
/// Results per query folder.
const RESULTS_MAX: usize = 1000;
/// Query folders remembered (each holds at most RESULTS_MAX links).
const QUERIES_MAX: usize = 64;

/// Whether an inode belongs to the search folder.
pub fn owns(ino: u64) -> bool {
    ino & INO_RESERVED_BIT != 0
}

struct QueryDir {
    /// (name, link inode, link target)
    entries: Vec<(String, u64, String)>,
    /// A digest of the results, to tell whether a new search changed them.
    digest: u64,
    /// When a search last changed the results (or first made the folder):
    /// it changes when they do, and the kernel drops its cached listing.
    mtime_ns: i64,
}

#[derive(Default)]
struct Folders {
    dirs: BTreeMap<u64, QueryDir>,
    links: BTreeMap<u64, (u64, usize)>,
    order: VecDeque<u64>,
}

/// The `.search` folder of a mount.
pub struct SearchFolder {
    live: Arc<SearchSlot>,
    folders: Mutex<Folders>,
    /// When the folder was made (the mount's start): the mtime of `.search`.
    started_ns: i64,
}

/// Now, in nanoseconds since 1970 (0 for a clock set before it).
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn reserved(hash: u64) -> u64 {
    // Never ROOT, never 0 or 1 (after the bit): keep the low bits away from 1.
    (hash | INO_RESERVED_BIT | 2) & !1
}

fn dir_attr(ino: u64, entries: usize, mtime_ns: i64) -> Attr {
    Attr {
        ino: Ino(ino),
        size: entries as u64,
        mtime_ns,
        kind: NodeKind::Dir,
        nlink: 2,
    }
}

impl SearchFolder {
    /// The folder, answering from `live` once the index is open.
    pub fn new(live: Arc<SearchSlot>) -> SearchFolder {
        SearchFolder {
            live,
            folders: Mutex::new(Folders::default()),
            started_ns: now_ns(),
        }
    }

    /// The folder itself.
    pub fn root_attr(&self) -> Attr {
        dir_attr(ROOT, 0, self.started_ns)
    }

    /// A name in one of the search folder's directories.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, Errno> {
        let name = std::str::from_utf8(name).map_err(|_| Errno::NoEnt)?;
        if parent == ROOT {
            return self.query_dir(name);
        }
        let folders = self.folders.lock();
        let dir = folders.dirs.get(&parent).ok_or(Errno::NoEnt)?;
        let (_, ino, target) = dir
            .entries
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or(Errno::NoEnt)?;
        Ok(link_attr(*ino, target, dir.mtime_ns))
    }

    fn query_dir(&self, query: &str) -> Result<Attr, Errno> {
        let live = self.live.get().ok_or(Errno::NoEnt)?;
        let paths = live.search(query, RESULTS_MAX).map_err(|e| {
            tracing::debug!(%query, error = %e, "search folder query refused");
            Errno::NoEnt
        })?;
        let dir_ino = reserved(xxhash_rust::xxh3::xxh3_64(query.as_bytes()));
        let mut names = std::collections::BTreeSet::new();
        let entries: Vec<(String, u64, String)> = paths
            .iter()
            .map(|vpath| {
                let file = vpath.rsplit('/').next().unwrap_or(vpath);
                let (base, ext) = naming::split_ext(file);
                let mut name = file.to_owned();
                let mut n = 2;
                while !names.insert(name.clone()) {
                    name = naming::with_collision_suffix(base, ext, n);
                    n += 1;
                }
                let key = format!("{query}\0{vpath}");
                let ino = reserved(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
                (name, ino, format!("../../{vpath}"))
            })
            .collect();
        let mut digest = xxhash_rust::xxh3::Xxh3::new();
        for (name, _, target) in &entries {
            digest.update(name.as_bytes());
            digest.update(b"\0");
            digest.update(target.as_bytes());
            digest.update(b"\0");
        }
        let digest = digest.digest();
        let now = now_ns();
        let mut f = self.folders.lock();
        // The same results keep their time; new ones get now, and always a
        // later mtime than before (a clock step back must not hide them).
        let mtime_ns = match f.dirs.get(&dir_ino) {
            Some(old) if old.digest == digest => old.mtime_ns,
            Some(old) => now.max(old.mtime_ns.saturating_add(1)),
            None => now,
        };
        let attr = dir_attr(dir_ino, entries.len(), mtime_ns);
        if let Some(old) = f.dirs.remove(&dir_ino) {
            for (_, ino, _) in &old.entries {
                f.links.remove(ino);
            }
            f.order.retain(|d| *d != dir_ino);
        }
        for (i, (_, ino, _)) in entries.iter().enumerate() {
            f.links.insert(*ino, (dir_ino, i));
        }
        f.dirs.insert(
            dir_ino,
            QueryDir {
                entries,
                digest,
                mtime_ns,
            },
        );
        f.order.push_back(dir_ino);
        while f.order.len() > QUERIES_MAX {
            if let Some(gone) = f.order.pop_front()
                && let Some(d) = f.dirs.remove(&gone)
            {
                for (_, ino, _) in &d.entries {
                    f.links.remove(ino);
                }
            }
        }
        Ok(attr)
    }

    /// Attributes of a search node.
    pub fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        if ino == ROOT {
            return Ok(self.root_attr());
        }
        let f = self.folders.lock();
        if let Some(d) = f.dirs.get(&ino) {
            return Ok(dir_attr(ino, d.entries.len(), d.mtime_ns));
        }
        let (dir, i) = f.links.get(&ino).ok_or(Errno::NoEnt)?;
        let dir = f.dirs.get(dir).ok_or(Errno::NoEnt)?;
        let (_, _, target) = &dir.entries[*i];
        Ok(link_attr(ino, target, dir.mtime_ns))
    }

    /// A listing: the folder itself shows nothing; a query folder its links.
    pub fn readdir(&self, ino: u64, offset: u64) -> Result<Vec<DirEntry>, Errno> {
        let f = self.folders.lock();
        let listed: Vec<(String, u64, NodeKind)> = if ino == ROOT {
            Vec::new()
        } else {
            let d = f.dirs.get(&ino).ok_or(Errno::NoEnt)?;
            d.entries
                .iter()
                .map(|(n, i, _)| (n.clone(), *i, NodeKind::Symlink))
                .collect()
        };
        let dots = [
            (".".to_string(), ino, NodeKind::Dir),
            (
                "..".to_string(),
                if ino == ROOT { 1 } else { ROOT },
                NodeKind::Dir,
            ),
        ];
        Ok(dots
            .into_iter()
            .chain(listed)
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .map(|(i, (name, ino, kind))| DirEntry {
                ino: Ino(ino),
                next_offset: i as u64 + 1,
                kind,
                name,
            })
            .collect())
    }

    /// Where a result link points.
    pub fn readlink(&self, ino: u64) -> Result<String, Errno> {
        let f = self.folders.lock();
        let (dir, i) = f.links.get(&ino).ok_or(Errno::NoEnt)?;
        Ok(f.dirs.get(dir).ok_or(Errno::NoEnt)?.entries[*i].2.clone())
    }
}

fn link_attr(ino: u64, target: &str, mtime_ns: i64) -> Attr {
    Attr {
        ino: Ino(ino),
        size: target.len() as u64,
        mtime_ns,
        kind: NodeKind::Symlink,
        nlink: 1,
    }
}
