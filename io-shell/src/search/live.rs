//! The search index of a running mount: built from the tree at start-up
//! when it is missing, damaged or behind, then kept in step with every tree
//! change, committed after each sync and at shutdown.

use super::{SearchDoc, SearchError, SearchIndex, diff_docs, docs_from_tree, index_dir};
use crate::store::Db;
use musicfs_core::tree::VirtualTree;
use parking_lot::Mutex;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

/// The index and what it holds.
pub struct LiveSearch {
    index: SearchIndex,
    docs: Mutex<Vec<SearchDoc>>,
    db: Arc<Db>,
}

/// A stamp of a set of documents: the index records the stamp of what it
/// last committed, so a restart knows whether it is behind the catalog.
fn stamp(docs: &[SearchDoc]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    docs.hash(&mut h);
    format!("{:016x}", h.finish())
}

impl LiveSearch {
    /// Opens (or rebuilds) the index of the library in `cache_dir`.
    pub fn open(
        cache_dir: &Path,
        db: Arc<Db>,
        tree: &VirtualTree,
    ) -> Result<Arc<LiveSearch>, SearchError> {
        let opened = SearchIndex::open(&index_dir(cache_dir))?;
        let catalog = db.load_catalog().map_err(|e| SearchError::Unusable {
            path: cache_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let docs = docs_from_tree(tree, &catalog);
        let want = stamp(&docs);
        let index = opened.index;
        if let Some(what) = &opened.rebuilt {
            tracing::warn!(what = %what, "the search index was damaged; rebuilding it from the catalog");
        }
        if opened.rebuilt.is_some() || index.stamp().as_deref() != Some(want.as_str()) {
            index.set_stamp(want);
            index.replace_all(docs.iter().cloned())?;
            tracing::info!(tracks = docs.len(), "search index built");
        }
        Ok(Arc::new(LiveSearch {
            index,
            docs: Mutex::new(docs),
            db,
        }))
    }

    /// Follows a tree change: only what changed is written, then committed.
    pub fn tree_changed(&self, new_tree: &VirtualTree) -> Result<(), SearchError> {
        let catalog = self.db.load_catalog().map_err(|e| SearchError::Unusable {
            path: self.index.dir().to_path_buf(),
            reason: e.to_string(),
        })?;
        let new_docs = docs_from_tree(new_tree, &catalog);
        let mut docs = self.docs.lock();
        let changes = diff_docs(&docs, &new_docs);
        if changes.is_empty() {
            return Ok(());
        }
        for vpath in &changes.remove {
            self.index.remove(vpath)?;
        }
        for doc in &changes.upsert {
            self.index.upsert(doc)?;
        }
        self.index.set_stamp(stamp(&new_docs));
        self.index.commit()?;
        *docs = new_docs;
        Ok(())
    }

    /// Matching virtual paths, best first.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<String>, SearchError> {
        self.index.search(query, limit)
    }

    /// Commits anything pending (at shutdown).
    pub fn commit(&self) -> Result<(), SearchError> {
        self.index.commit()
    }
}
