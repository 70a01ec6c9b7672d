//! Kernel passthrough for `cache=off` origins: the kernel reads the origin
//! file itself (FUSE_PASSTHROUGH, Linux 6.9+, and CAP_SYS_ADMIN for the
//! backing-file ioctl), so those reads never reach the daemon and run at
//! the local disk's speed.
//!
//! At open, a file every source of which is in a `cache=off` local origin
//! is opened beneath its origin's root (never through a link out of it,
//! see `origin/beneath.rs`), checked to still be the version the tree
//! shows, and handed to the kernel as the open's backing file. Where that
//! cannot be done (an older kernel, no privilege, the origin gone, the file
//! changed), the open is an ordinary one and reads go through the engine,
//! which reads the origin directly for these origins (no cache) with the
//! usual read timeout.
//!
//! The kernel wants one backing id per inode for all its open handles: ids
//! are shared by inode and dropped with the last handle (`release`).
//!
//! The backing file is given at open, so while passthrough is on every
//! open of every file of the mount reaches the daemon; once it is off,
//! opens need no daemon (see `MusicFs::open`).

use crate::origin::beneath::{self, Purpose};
use fuser::{BackingId, ReplyOpen};
use musicfs_core::tree::VirtualTree;
use musicfs_core::{Ino, OriginId};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

/// The file handle of an open that is not passed through.
pub const PLAIN_HANDLE: u64 = 0;

#[derive(Default)]
struct Backings {
    by_handle: HashMap<u64, Arc<BackingId>>,
    by_inode: HashMap<u64, Weak<BackingId>>,
    next_handle: u64,
}

/// Backing files of passed-through opens.
pub struct KernelPassthrough {
    /// Roots of the `cache=off` local origins.
    roots: BTreeMap<OriginId, PathBuf>,
    /// The kernel agreed (set at FUSE init) and the ioctl has not been
    /// refused.
    enabled: AtomicBool,
    backings: Mutex<Backings>,
}

impl KernelPassthrough {
    /// Passthrough for the files of these `cache=off` origins.
    pub fn new(roots: BTreeMap<OriginId, PathBuf>) -> KernelPassthrough {
        KernelPassthrough {
            roots,
            enabled: AtomicBool::new(false),
            backings: Mutex::new(Backings::default()),
        }
    }

    /// Whether there is anything to pass through.
    pub fn wanted(&self) -> bool {
        !self.roots.is_empty()
    }

    /// Whether opens are passed through: the kernel agreed, and has not
    /// refused a backing file since.
    pub fn on(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// The kernel agreed to FUSE_PASSTHROUGH.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    /// Answers an open of `ino` (a file of `tree`, the tree's snapshot) with
    /// a backing file if it can; gives the reply back otherwise.
    pub fn try_open(&self, tree: &VirtualTree, ino: Ino, reply: ReplyOpen) -> Option<ReplyOpen> {
        if !self.on() {
            return Some(reply);
        }
        let Some((root, rel, size, mtime_ns)) = self.origin_file(tree, ino) else {
            return Some(reply);
        };
        let mut backings = self.backings.lock();
        let shared = backings.by_inode.get(&ino.0).and_then(Weak::upgrade);
        let id = match shared {
            Some(id) => id,
            None => {
                let file = match beneath::open(&root, &rel, Purpose::Read) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::debug!(ino = ino.0, error = %e, "no passthrough: cannot open the origin file");
                        return Some(reply);
                    }
                };
                // The kernel will serve whatever the file holds: only the
                // version the tree shows (a changed file waits for its sync).
                let same = file.metadata().is_ok_and(|m| {
                    m.len() == size && m.mtime() * 1_000_000_000 + m.mtime_nsec() == mtime_ns
                });
                if !same {
                    return Some(reply);
                }
                match reply.open_backing(&file) {
                    Ok(id) => {
                        let id = Arc::new(id);
                        backings.by_inode.insert(ino.0, Arc::downgrade(&id));
                        id
                    }
                    Err(e) => {
                        self.enabled.store(false, Ordering::SeqCst);
                        tracing::warn!(error = %e, "the kernel refused a backing file (needs CAP_SYS_ADMIN): cache=off origins are read by the daemon from now on");
                        return Some(reply);
                    }
                }
            }
        };
        backings.next_handle += 1;
        let handle = backings.next_handle;
        backings.by_handle.insert(handle, Arc::clone(&id));
        backings.by_inode.retain(|_, w| w.strong_count() > 0);
        drop(backings);
        reply.opened_passthrough(fuser::FileHandle(handle), fuser::FopenFlags::empty(), &id);
        None
    }

    /// Where the kernel may read file `ino` itself: every source of it is
    /// in a `cache=off` origin. Its origin's root, its path beneath it, and
    /// the size and mtime the tree shows of it.
    fn origin_file(&self, tree: &VirtualTree, ino: Ino) -> Option<(PathBuf, Vec<u8>, u64, i64)> {
        let file = tree.file(ino)?;
        let all_off = file
            .sources
            .iter()
            .all(|s| self.roots.contains_key(&s.origin));
        let src = file.sources.first().filter(|_| all_off)?;
        let root = self.roots.get(&src.origin)?.clone();
        Some((
            root,
            src.path.as_bytes().to_vec(),
            src.version.size,
            src.version.mtime_ns,
        ))
    }

    /// The open with this handle was closed.
    pub fn release(&self, handle: u64) {
        if handle != PLAIN_HANDLE {
            self.backings.lock().by_handle.remove(&handle);
        }
    }

    /// Opens passed through right now (for `musicfs status`).
    pub fn open_count(&self) -> usize {
        self.backings.lock().by_handle.len()
    }
}
