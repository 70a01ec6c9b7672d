//! The search index of a running mount: built from the tree at start-up
//! when it is missing, damaged or behind, then kept in step with every tree
//! change, committed after each sync and at shutdown.

use super::{
    DocDigests, SearchError, SearchIndex, diff_docs, diff_docs_within, docs_from_tree, index_dir,
    tree_docs,
};
use musicfs_core::CatalogEntry;
use musicfs_core::tree::VirtualTree;
use parking_lot::Mutex;
use std::borrow::Borrow;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A running mount's search index: empty while it opens in the background
/// (a rebuild must not delay the mount), then set once. Shared by the
/// `.search` folder, the control socket and the listener that keeps the
/// index in step with the tree.
#[derive(Default)]
pub struct SearchSlot(OnceLock<Arc<LiveSearch>>);

impl SearchSlot {
    /// The index, once open.
    pub fn get(&self) -> Option<&Arc<LiveSearch>> {
        self.0.get()
    }

    /// Puts the opened index in (once; a second one is dropped).
    pub fn set(&self, live: Arc<LiveSearch>) {
        let _ = self.0.set(live);
    }
}

/// The index and what it holds.
pub struct LiveSearch {
    index: SearchIndex,
    held: Mutex<DocDigests>,
}

impl LiveSearch {
    /// Opens (or rebuilds) the index of the library in `cache_dir`;
    /// `catalog` gives the entries `tree` was built from, once for the
    /// digests and once more if the index must be rebuilt (a database's
    /// [`crate::store::Db::catalog_entries`], read as it goes).
    pub fn open<I, E>(
        cache_dir: &Path,
        tree: &VirtualTree,
        catalog: impl Fn() -> I,
    ) -> Result<Arc<LiveSearch>, SearchError>
    where
        I: IntoIterator<Item = E>,
        E: Borrow<CatalogEntry>,
    {
        let opened = SearchIndex::open(&index_dir(cache_dir))?;
        // The digests first, one document at a time: an index that is
        // current (most mounts) never needs every document at once.
        let mut held = DocDigests::default();
        tree_docs(tree, catalog()).for_each(|doc| held.add(&doc));
        let want = held.stamp();
        let index = opened.index;
        if let Some(what) = &opened.rebuilt {
            tracing::warn!(what = %what, "the search index was damaged; rebuilding it from the catalog");
        }
        if opened.rebuilt.is_some() || index.stamp().as_deref() != Some(want.as_str()) {
            index.set_stamp(want);
            // One document at a time into the writer: on 200,000 tracks
            // the documents held together took some 80 MB.
            index.replace_all(tree_docs(tree, catalog()))?;
            tracing::info!(tracks = held.len(), "search index built");
        }
        Ok(Arc::new(LiveSearch {
            index,
            held: Mutex::new(held),
        }))
    }

    /// Follows a tree change: only what changed is written, then committed.
    /// `catalog` is what `new_tree` was built from, or, for a change
    /// confined to some folders, the entries of the files in them now,
    /// with `gone` the paths of the tracks that were in them before.
    pub fn tree_changed<'c>(
        &self,
        new_tree: &VirtualTree,
        catalog: impl IntoIterator<Item = &'c CatalogEntry>,
        gone: Option<&[String]>,
    ) -> Result<(), SearchError> {
        let new_docs = docs_from_tree(new_tree, catalog);
        let mut held = self.held.lock();
        let changes = match gone {
            None => diff_docs(&held, &new_docs),
            Some(gone) => diff_docs_within(&held, gone.iter().map(String::as_str), &new_docs),
        };
        drop(new_docs);
        if changes.is_empty() {
            return Ok(());
        }
        // Before the upserts: the paths are looked up among the committed
        // documents, and a key that is gone is no new document's.
        self.index.remove_keys(&changes.remove)?;
        for doc in &changes.upsert {
            self.index.upsert(doc)?;
        }
        let mut new_held = held.clone();
        new_held.apply(&changes);
        self.index.set_stamp(new_held.stamp());
        self.index.commit()?;
        *held = new_held;
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
