//! The hidden `.offline` folder: the tree as it plays with no origin.
//!
//! `MOUNTPOINT/.offline/` has the same `Artist/Album/NN - Title.ext` layout
//! as the mount, but shows only files whose every byte is in the cache (and
//! the folders that lead to them), so a player pointed there never meets a
//! track that cannot play offline. Pin what you want there with
//! `musicfs pin`.
//!
//! Its nodes are the tree's own, seen through [`INO_VIEW_BIT`] (the tree
//! never hands out inode numbers with that bit): reading a file of the view
//! reads the tree's file. Like `.search`, it is not listed in the root.
//!
//! What is visible is computed from the engine in one pass and kept until
//! the cache or the tree changes ([`Engine::cache_epoch`]). Every folder of
//! the view has the time its contents last changed as its mtime, and the
//! kernel may trust an entry for a second only: a listing it cached is
//! dropped once the mtime moves.

use crate::exec::daemon::Daemon;
use musicfs_core::Ino;
use musicfs_core::engine::{Cached, Engine};
use musicfs_core::fs::{Attr, DirEntry, Errno, NodeKind};
use musicfs_core::tree::{INO_RESERVED_BIT, INO_VIEW_BIT};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The folder's name in the root.
pub const NAME: &str = ".offline";
/// Its inode: the root seen through the view.
pub const ROOT: u64 = INO_VIEW_BIT | Ino::ROOT.0;
/// Entries asked of the engine per batch while filtering a listing.
const BATCH: usize = 512;

/// Whether an inode belongs to the view.
pub fn owns(ino: u64) -> bool {
    ino & INO_RESERVED_BIT == 0 && ino & INO_VIEW_BIT != 0
}

/// The tree's node behind a view inode.
pub fn tree_ino(ino: u64) -> Ino {
    Ino(ino & !INO_VIEW_BIT)
}

fn view_ino(ino: Ino) -> u64 {
    ino.0 | INO_VIEW_BIT
}

struct Visible {
    epoch: Option<(u64, u64)>,
    /// Fully cached files and every folder above one.
    nodes: Arc<BTreeSet<Ino>>,
    /// When `nodes` last changed: every folder's mtime.
    mtime_ns: i64,
}

/// The `.offline` folder of a mount.
pub struct OfflineView {
    visible: Mutex<Visible>,
}

impl Default for OfflineView {
    fn default() -> Self {
        OfflineView {
            visible: Mutex::new(Visible {
                epoch: None,
                nodes: Arc::new(BTreeSet::new()),
                mtime_ns: now_ns(),
            }),
        }
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Fully cached files, and the folders above them.
fn compute(e: &Engine) -> BTreeSet<Ino> {
    let tree = e.tree();
    let mut out = BTreeSet::from([Ino::ROOT]);
    for (ino, _) in tree.files() {
        if e.cached(ino) != Cached::Full {
            continue;
        }
        let mut cur = ino;
        while out.insert(cur) {
            match tree.get(cur) {
                Some(node) if cur != Ino::ROOT => cur = node.parent,
                _ => break,
            }
        }
    }
    out
}

impl OfflineView {
    /// What is visible now, and the folders' mtime.
    fn visible(&self, daemon: &Daemon) -> (Arc<BTreeSet<Ino>>, i64) {
        let mut v = self.visible.lock();
        let (epoch, nodes) = daemon.inspect(|e| {
            let epoch = e.cache_epoch();
            let nodes = (v.epoch != Some(epoch)).then(|| compute(e));
            (epoch, nodes)
        });
        if let Some(nodes) = nodes {
            if nodes != *v.nodes {
                v.nodes = Arc::new(nodes);
                v.mtime_ns = now_ns().max(v.mtime_ns + 1);
            }
            v.epoch = Some(epoch);
        }
        (Arc::clone(&v.nodes), v.mtime_ns)
    }

    fn attr(e: &Engine, tree: Ino, mtime_ns: i64) -> Result<Attr, Errno> {
        let mut a = e.getattr(tree)?;
        a.ino = Ino(view_ino(tree));
        if a.kind == NodeKind::Dir {
            a.mtime_ns = mtime_ns;
        }
        Ok(a)
    }

    /// The attributes of a view inode.
    pub fn getattr(&self, daemon: &Daemon, ino: u64) -> Result<Attr, Errno> {
        let (visible, mtime) = self.visible(daemon);
        let tree = tree_ino(ino);
        if !visible.contains(&tree) {
            return Err(Errno::NoEnt);
        }
        daemon.inspect(|e| Self::attr(e, tree, mtime))
    }

    /// `name` in the view folder `parent`.
    pub fn lookup(&self, daemon: &Daemon, parent: u64, name: &[u8]) -> Result<Attr, Errno> {
        let (visible, mtime) = self.visible(daemon);
        daemon.inspect(|e| {
            let child = e.lookup(tree_ino(parent), name)?.ino;
            if !visible.contains(&child) {
                return Err(Errno::NoEnt);
            }
            Self::attr(e, child, mtime)
        })
    }

    /// The visible entries of a view folder from `offset` on (offsets are
    /// the tree's, so a listing resumes where it stopped).
    pub fn readdir(&self, daemon: &Daemon, ino: u64, offset: u64) -> Result<Vec<DirEntry>, Errno> {
        let (visible, _) = self.visible(daemon);
        let dir = tree_ino(ino);
        if !visible.contains(&dir) {
            return Err(Errno::NoEnt);
        }
        daemon.inspect(|e| {
            let mut out = Vec::new();
            let mut at = offset;
            // Hidden entries are skipped; an empty answer would end the
            // listing, so keep reading batches until something shows.
            loop {
                let batch = e.readdir(dir, at, BATCH)?;
                let Some(last) = batch.last() else {
                    return Ok(out);
                };
                at = last.next_offset;
                for mut ent in batch {
                    match ent.name.as_str() {
                        "." => ent.ino = Ino(view_ino(dir)),
                        ".." if dir == Ino::ROOT => ent.ino = Ino::ROOT,
                        ".." => ent.ino = Ino(view_ino(ent.ino)),
                        _ if visible.contains(&ent.ino) => ent.ino = Ino(view_ino(ent.ino)),
                        _ => continue,
                    }
                    out.push(ent);
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
        })
    }
}
