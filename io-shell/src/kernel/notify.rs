//! Telling the kernel what changed. The kernel caches entries, attributes
//! and pages for long (see [`super::fuse`]); after a sync swapped the tree,
//! [`Invalidator`] tells it exactly which entries and inodes changed. The
//! library side publishes the change (`Syncer::on_tree_change_first`); this is
//! the only place that turns it into FUSE notifications.

use crate::exec::daemon::KernelPages;
use musicfs_core::tree::TreeDiff;
use parking_lot::Mutex;
use std::ffi::OsStr;
use std::sync::Arc;

/// Sends a mount's invalidations (FUSE notify messages).
pub struct Invalidator {
    notifier: fuser::Notifier,
    /// Held while invalidating, and by [`PageStore`] from its check to its
    /// store.
    pages: Arc<Mutex<()>>,
}

impl Invalidator {
    /// Invalidations for the session `notifier` belongs to, and the store
    /// of read-ahead pages that must never come between a tree swap and
    /// its invalidations.
    pub fn new(notifier: fuser::Notifier) -> (Invalidator, PageStore) {
        let pages = Arc::new(Mutex::new(()));
        let store = PageStore {
            notifier: notifier.clone(),
            pages: Arc::clone(&pages),
        };
        (Invalidator { notifier, pages }, store)
    }

    /// Tells the kernel what `diff` changed.
    pub fn tree_changed(&self, diff: &TreeDiff) {
        let _pages = self.pages.lock();
        invalidate(&self.notifier, diff);
    }
}

/// Puts read-ahead bytes into the kernel's page cache (FUSE_NOTIFY_STORE,
/// Linux 2.6.36+), so a scan's reads of them need no FUSE round trip.
///
/// Why a stored page is never stale: the daemon checks, under the lock the
/// invalidations take, that no tree swap happened since the bytes were
/// planned. A swap after the check waits, for its invalidations, until the
/// store is sent; then it drops the pages of every file it changed, the
/// stored ones with them.
pub struct PageStore {
    notifier: fuser::Notifier,
    pages: Arc<Mutex<()>>,
}

impl KernelPages for PageStore {
    fn store(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        current: &dyn Fn() -> bool,
    ) -> std::io::Result<bool> {
        let _pages = self.pages.lock();
        if !current() {
            return Ok(false);
        }
        self.notifier.store(fuser::INodeNo(ino), offset, data)?;
        Ok(true)
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
