//! Telling the kernel what changed. The kernel caches entries, attributes
//! and pages for long (see [`super::fuse`]); after a sync swapped the tree,
//! [`Invalidator`] tells it exactly which entries and inodes changed. The
//! library side publishes the change (`Syncer::on_tree_change_first`); this is
//! the only place that turns it into FUSE notifications.

use musicfs_core::tree::TreeDiff;
use std::ffi::OsStr;

/// Sends a mount's invalidations (FUSE notify messages).
pub struct Invalidator {
    notifier: fuser::Notifier,
}

impl Invalidator {
    /// Invalidations for the session `notifier` belongs to.
    pub fn new(notifier: fuser::Notifier) -> Invalidator {
        Invalidator { notifier }
    }

    /// Tells the kernel what `diff` changed.
    pub fn tree_changed(&self, diff: &TreeDiff) {
        invalidate(&self.notifier, diff);
    }
}

/// The mount's page cache, filled ahead of readers (FUSE_NOTIFY_STORE,
/// Linux 2.6.36+): the kept bytes a media server's tag scan reads next go
/// there before it asks, so its reads need no round trip to the daemon.
pub struct PageStore {
    notifier: fuser::Notifier,
}

impl PageStore {
    /// Pages for the session `notifier` belongs to.
    pub fn new(notifier: fuser::Notifier) -> PageStore {
        PageStore { notifier }
    }
}

impl crate::exec::daemon::KernelPages for PageStore {
    fn store(&self, ino: u64, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.notifier.store(fuser::INodeNo(ino), offset, data)
    }

    fn drop_pages(&self, ino: u64) {
        let _ = self.notifier.inval_inode(fuser::INodeNo(ino), 0, 0);
    }
}

/// Tells the kernel exactly which entries and inodes changed. An entry
/// whose node is gone gets a delete notice (FUSE_NOTIFY_DELETE, Linux
/// 3.3+): the kernel drops it as if it had been unlinked, which inotify
/// watchers on the mount see as a deletion; the others are invalidated.
fn invalidate(notifier: &fuser::Notifier, diff: &TreeDiff) {
    let mut told = std::collections::BTreeSet::new();
    for (parent, child, name) in &diff.deleted {
        let deleted = notifier.delete(
            fuser::INodeNo(parent.0),
            fuser::INodeNo(child.0),
            OsStr::new(name),
        );
        match deleted {
            Ok(()) => {
                told.insert((*parent, name.as_str()));
            }
            Err(e) => {
                tracing::debug!(name = %name, error = %e, "delete notice not taken; invalidating")
            }
        }
    }
    for (parent, name) in &diff.entries {
        if !told.contains(&(*parent, name.as_str())) {
            let _ = notifier.inval_entry(fuser::INodeNo(parent.0), OsStr::new(name));
        }
    }
    for ino in &diff.inodes {
        let _ = notifier.inval_inode(fuser::INodeNo(ino.0), 0, 0);
    }
}
