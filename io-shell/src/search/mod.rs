//! Full-text search over the library's tags: a tantivy index at
//! `<cache_dir>/search/` ([`index_dir`]), one document per track, keyed by
//! the track's virtual path.
//!
//! # Who does what
//!
//! The daemon owns the one [`SearchIndex`] (and with it tantivy's writer
//! lock). It fills the index from the tree ([`docs_from_tree`],
//! [`SearchIndex::replace_all`]), keeps it current on every sync
//! ([`diff_docs`], [`SearchIndex::upsert`], [`SearchIndex::remove_keys`]),
//! [`SearchIndex::commit`]s in batches and once more at shutdown, and
//! answers [`SearchIndex::search`]. `musicfs search` with no daemon running
//! calls [`search_offline`], which only ever opens a *reader*, so it also
//! works while a daemon holds the writer.
//!
//! # Query syntax
//!
//! ```text
//! bjork homogenic                 bare words: every word must match, in any text field
//! artist:bjork album:homogenic    one field (artist albumartist album title genre format)
//! title:"love song"               quotes: an exact phrase, no typo tolerance
//! radio*                          a trailing * matches by prefix
//! year:1997  year:>2000  year:>=2000  year:<1980  year:<=1980
//! year:[1990 TO 1999]  year:{1990 TO 2000}  year:[* TO 1980]  year:1990..1999
//! massive OR portishead           either (OR binds tighter than the implicit AND)
//! -live  NOT live                 exclude
//! ```
//!
//! Case and accents never matter (`bjork` finds "Björk", `SIGUR ROS` finds
//! "Sigur Rós"): one analyzer folds both the tags and the query. Words of 4
//! to 7 letters forgive one typo, longer words two (`radiohed` finds
//! "Radiohead"), and a document with the word as typed always ranks above
//! one with a near miss. Shorter words and words with digits must match
//! exactly. A bare 4-digit number also matches the year. [`QUERY_HELP`] is
//! the same for a `--help` text. A query that does not parse is a
//! [`SearchError::BadQuery`] with a one-line message; no input panics.
//!
//! # Durability
//!
//! A commit is durable: tantivy fsyncs the new segment files, then
//! atomically replaces `meta.json` (which lists the live segments) and
//! fsyncs the directory. Everything not yet committed lives in the writer's
//! memory (and perhaps in segment files that no `meta.json` lists) and is
//! lost in a crash; the next writer deletes such orphans. So after a crash
//! the index is exactly as of its last commit. To know whether that is
//! behind the catalog, the caller can record a *stamp* with each commit
//! ([`SearchIndex::set_stamp`], [`SearchIndex::stamp`]), for example the
//! catalog's generation: if it differs at start, rebuild.
//!
//! # Corruption
//!
//! The index is a cache of the catalog, so an index that does not open
//! cleanly is moved aside and recreated empty ([`SearchIndex::open`]),
//! never repaired; the caller then rebuilds it from the catalog.
//!
//! # Memory
//!
//! The daemon aims at under 100 MB of RSS for a 20,000-track library. The
//! writer gets tantivy's smallest heap ([`WRITER_HEAP_BYTES`], 15 MB) and
//! one indexing and one merge thread; that heap bounds what it buffers
//! before it flushes a segment. Nothing is kept in tantivy's document
//! store: the virtual path comes back from its fast column. Readers
//! memory-map the segment files (2.3 MB for 20,000 tracks), so those pages
//! are clean and reclaimable by the kernel.
//!
//! Measured on 20,000 tracks (`examples/search_bench.rs`): an open, idle
//! index costs about 4 MB; while changes are pending, tantivy's segment
//! writer adds about 14 MB (30 MB during a full build); after each commit
//! that memory is handed back to the kernel (see `release_freed_memory`),
//! leaving about 10 MB in all. The writer is kept open (it holds the lock,
//! and an idle one costs next to nothing: its big allocations belong to the
//! segment writer, which only lives from the first change to the commit).

pub mod folder;
pub mod live;
mod query;
mod schema;

pub use query::{MAX_QUERY_BYTES, MAX_QUERY_TERMS, QUERY_HELP};

use musicfs_core::TrackTags;
use musicfs_core::catalog::{CatalogEntry, FileKind};
use musicfs_core::tree::{FileRole, VirtualTree};
use parking_lot::Mutex;
use schema::{Fields, TextField, VPATH};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tantivy::collector::TopDocs;
use tantivy::collector::sort_key::{SortBySimilarityScore, SortByString};
use tantivy::directory::error::{LockError, OpenDirectoryError, OpenReadError, OpenWriteError};
use tantivy::directory::{INDEX_WRITER_LOCK, MmapDirectory};
use tantivy::indexer::IndexWriterOptions;
use tantivy::store::Compressor;
use tantivy::{
    Directory, Index, IndexReader, IndexSettings, IndexWriter, Order, ReloadPolicy, Searcher,
    TantivyDocument, TantivyError, Term,
};

/// The most results one search returns; a larger `limit` is lowered to it.
pub const MAX_LIMIT: usize = 10_000;

/// The indexing heap of the writer: tantivy's minimum (15 MB). It bounds
/// what the writer buffers before it flushes a segment; 20,000 tracks fit
/// in well under that.
pub const WRITER_HEAP_BYTES: usize = 15_000_000;

/// Where the index of a cache directory lives.
pub fn index_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("search")
}

/// What the index knows of one track.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SearchDoc {
    /// The track's path in the mount, `/`-separated, without a leading `/`
    /// (as [`VirtualTree::path_of`] gives it). The key: one document per
    /// virtual path.
    pub vpath: String,
    /// Track artist.
    pub artist: Option<String>,
    /// Album artist.
    pub album_artist: Option<String>,
    /// Album title.
    pub album: Option<String>,
    /// Track title.
    pub title: Option<String>,
    /// Genre.
    pub genre: Option<String>,
    /// Release year.
    pub year: Option<i32>,
    /// Audio format label ("FLAC", "MP3", ...).
    pub format: Option<String>,
}

impl SearchDoc {
    /// The document of the track at `vpath` with these tags.
    pub fn from_tags(vpath: impl Into<String>, tags: &TrackTags) -> SearchDoc {
        SearchDoc {
            vpath: vpath.into(),
            artist: tags.artist.as_deref().map(str::to_owned),
            album_artist: tags.album_artist.as_deref().map(str::to_owned),
            album: tags.album.as_deref().map(str::to_owned),
            title: tags.title.as_deref().map(str::to_owned),
            genre: tags.genre.as_deref().map(str::to_owned),
            year: tags.year,
            format: tags.format.as_deref().map(str::to_owned),
        }
    }

    fn text(&self, f: TextField) -> Option<&str> {
        match f {
            TextField::Artist => self.artist.as_deref(),
            TextField::AlbumArtist => self.album_artist.as_deref(),
            TextField::Album => self.album.as_deref(),
            TextField::Title => self.title.as_deref(),
            TextField::Genre => self.genre.as_deref(),
            TextField::Format => self.format.as_deref(),
        }
    }
}

/// One document per track of `tree`, with the tags its catalog entry has,
/// sorted by virtual path. A track with several mirrors takes the tags of
/// its first source, the one the tree was named from.
pub fn docs_from_tree<E: Borrow<CatalogEntry>>(
    tree: &VirtualTree,
    catalog: impl IntoIterator<Item = E>,
) -> Vec<SearchDoc> {
    let mut docs: Vec<SearchDoc> = tree_docs(tree, catalog).collect();
    docs.sort_by(|a, b| a.vpath.cmp(&b.vpath));
    docs
}

/// The documents of [`docs_from_tree`], in the catalog's order, each made
/// as it is taken: what needs each document once (their digests, a
/// rebuild's writer) holds neither all of them (on 200,000 tracks, some
/// 80 MB) nor the catalog, which may be read as it goes
/// ([`crate::store::Db::catalog_entries`]).
pub fn tree_docs<E: Borrow<CatalogEntry>>(
    tree: &VirtualTree,
    catalog: impl IntoIterator<Item = E>,
) -> impl Iterator<Item = SearchDoc> {
    catalog.into_iter().filter_map(move |entry| {
        let entry = entry.borrow();
        let FileKind::Track(tags) = &entry.kind else {
            return None;
        };
        let (origin, path) = (entry.source.origin, &entry.source.path);
        let (ino, _) = tree.find_source(origin, path)?;
        let file = tree.file(ino)?;
        let first = file.sources.first()?;
        if file.role != FileRole::Track || first.origin != origin || first.path != *path {
            return None;
        }
        Some(SearchDoc::from_tags(tree.path_of(ino)?, tags))
    })
}

/// What a sync must do to the index to go from `old` to `new`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocChanges {
    /// New documents and documents whose tags changed.
    pub upsert: Vec<SearchDoc>,
    /// The keys ([`doc_key`]) of the virtual paths that are gone, for
    /// [`SearchIndex::remove_keys`].
    pub remove: BTreeSet<u64>,
}

impl DocChanges {
    /// True when the index is already current.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

/// What a running index remembers of the documents it holds: a key of
/// each document's virtual path ([`doc_key`]) and a digest of its
/// contents. Enough to find what a tree change altered, in 16 bytes a
/// document: the paths themselves took 18 MB on 200,000 tracks, and the
/// index already holds them (a removal looks them up there, see
/// [`SearchIndex::remove_keys`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocDigests(BTreeMap<u64, u64>);

impl DocDigests {
    /// The digests of `docs` (in any order; one per virtual path).
    pub fn of(docs: &[SearchDoc]) -> DocDigests {
        let mut digests = DocDigests::default();
        for d in docs {
            digests.add(d);
        }
        digests
    }

    /// Adds the digest of one document.
    pub fn add(&mut self, doc: &SearchDoc) {
        self.0.insert(doc_key(&doc.vpath), digest(doc));
    }

    /// What the index holds once `changes` are made.
    pub fn apply(&mut self, changes: &DocChanges) {
        for key in &changes.remove {
            self.0.remove(key);
        }
        for doc in &changes.upsert {
            self.add(doc);
        }
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A stamp of the whole set: the index records the stamp of what it
    /// last committed, so a restart knows whether it is behind the catalog.
    pub fn stamp(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        self.0.hash(&mut h);
        format!("{:016x}", h.finish())
    }
}

/// The key of a virtual path in [`DocDigests`]: 64 bits of its hash. Two
/// paths of one library with the same key (odds about 10^-9 at 200,000
/// tracks) would share one digest: at worst a search misses one of them
/// until its tags next change. Never a byte served.
pub fn doc_key(vpath: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(vpath.as_bytes())
}

fn digest(doc: &SearchDoc) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    doc.hash(&mut h);
    h.finish()
}

/// Compares what the index holds with a new document set (in any order)
/// by virtual path.
pub fn diff_docs(old: &DocDigests, new: &[SearchDoc]) -> DocChanges {
    let new_keys: HashSet<u64> = new.iter().map(|d| doc_key(&d.vpath)).collect();
    DocChanges {
        upsert: upserts(old, new),
        remove: old
            .0
            .keys()
            .filter(|k| !new_keys.contains(k))
            .copied()
            .collect(),
    }
}

/// The documents of `new` the index lacks or holds with other contents,
/// by path.
fn upserts(old: &DocDigests, new: &[SearchDoc]) -> Vec<SearchDoc> {
    let mut upsert: Vec<SearchDoc> = new
        .iter()
        .filter(|d| old.0.get(&doc_key(&d.vpath)) != Some(&digest(d)))
        .cloned()
        .collect();
    upsert.sort_by(|a, b| a.vpath.cmp(&b.vpath));
    upsert
}

/// Like [`diff_docs`], for a tree change confined to some folders:
/// `gone` are the virtual paths of the tracks that were in them before,
/// `new` the documents of the tracks in them now. Nothing outside them is
/// looked at.
pub fn diff_docs_within<'p>(
    old: &DocDigests,
    gone: impl IntoIterator<Item = &'p str>,
    new: &[SearchDoc],
) -> DocChanges {
    let new_keys: HashSet<u64> = new.iter().map(|d| doc_key(&d.vpath)).collect();
    DocChanges {
        upsert: upserts(old, new),
        remove: gone
            .into_iter()
            .map(doc_key)
            .filter(|k| !new_keys.contains(k) && old.0.contains_key(k))
            .collect(),
    }
}

/// A failure of the search index.
#[derive(Debug)]
pub enum SearchError {
    /// The query does not parse. The message is one line, meant for the
    /// person who typed the query (print it as it is).
    BadQuery(String),
    /// Another process (or another [`SearchIndex`] in this one) holds the
    /// index's writer lock. Nothing was moved or changed.
    Locked(PathBuf),
    /// [`search_offline`]: there is no index yet (no mount has built one).
    NoIndex(PathBuf),
    /// The index cannot be read. [`search_offline`] reports this rather
    /// than touching the index; [`SearchIndex::open`] only when even a
    /// freshly created index fails.
    Unusable {
        /// The index directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file-system call failed.
    Io {
        /// What we were doing.
        op: &'static str,
        /// To what.
        path: PathBuf,
        /// The operating system's error, unchanged.
        source: io::Error,
    },
    /// tantivy failed while writing, committing or searching.
    Index {
        /// What we were doing.
        op: &'static str,
        /// tantivy's error, unchanged.
        source: TantivyError,
    },
}

impl SearchError {
    fn index(op: &'static str) -> impl FnOnce(TantivyError) -> SearchError {
        move |source| SearchError::Index { op, source }
    }

    fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SearchError {
        let path = path.to_path_buf();
        move |source| SearchError::Io { op, path, source }
    }
}

impl fmt::Display for SearchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchError::BadQuery(msg) => write!(f, "bad query: {msg}"),
            SearchError::Locked(path) => write!(
                f,
                "the search index at {} is in use by another process",
                path.display()
            ),
            SearchError::NoIndex(path) => write!(
                f,
                "no search index at {} yet: mount the library once to build it",
                path.display()
            ),
            SearchError::Unusable { path, reason } => write!(
                f,
                "the search index at {} is unusable ({reason}); the next mount rebuilds it",
                path.display()
            ),
            SearchError::Io { op, path, source } => {
                write!(f, "search index: {op} {}: {source}", path.display())
            }
            SearchError::Index { op, source } => write!(f, "search index: {op}: {source}"),
        }
    }
}

impl std::error::Error for SearchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SearchError::Io { source, .. } => Some(source),
            SearchError::Index { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What [`SearchIndex::open`] found.
#[derive(Debug)]
pub struct OpenedIndex {
    /// The open index.
    pub index: SearchIndex,
    /// `Some(what happened)` when the old index could not be used, was moved
    /// aside to `<dir>.corrupt-<unix-time>` and replaced by an empty one:
    /// the caller must fill it ([`SearchIndex::replace_all`]).
    pub rebuilt: Option<String>,
}

/// The search index, open for writing and searching.
///
/// `Send + Sync`: share it behind an `Arc`. Searches never wait for the
/// writer; writes are serialized by an internal lock. It holds tantivy's
/// writer lock (a `flock` on `.tantivy-writer.lock`, released by the kernel
/// if the process dies) for as long as it lives.
///
/// Dropping it does **not** commit: call [`SearchIndex::commit`] at
/// shutdown.
pub struct SearchIndex {
    dir: PathBuf,
    fields: Fields,
    reader: IndexReader,
    writer: Mutex<WriterState>,
}

struct WriterState {
    writer: Writer,
    /// Upserts and removes since the last commit.
    pending: u64,
    /// The stamp the next commit records.
    stamp: Option<String>,
    /// The stamp of the last commit.
    committed_stamp: Option<String>,
    /// A `replace_all` deleted everything and did not get to its commit
    /// (the caller's iterator panicked): the writer must be reset before
    /// anything else, or the next commit would publish half a rebuild.
    half_rebuilt: bool,
}

/// tantivy's writer, which waits for its merges when dropped. Dropping an
/// `IndexWriter` leaves a merge under way running on tantivy's threads,
/// writing segment files into a folder its owner may be removing (a test's
/// temporary folder, an index set aside for a rebuild) or that a new
/// writer already owns.
struct Writer(std::mem::ManuallyDrop<IndexWriter>);

impl std::ops::Deref for Writer {
    type Target = IndexWriter;
    fn deref(&self) -> &IndexWriter {
        &self.0
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut IndexWriter {
        &mut self.0
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // SAFETY: the writer is taken out once, here, and `self` is not
        // used again.
        let writer = unsafe { std::mem::ManuallyDrop::take(&mut self.0) };
        if let Err(e) = writer.wait_merging_threads() {
            tracing::debug!("search index: a merge failed at close: {e}");
        }
    }
}

impl WriterState {
    /// The writer, reset first if a rebuild was left half done.
    fn ready(&mut self) -> &mut WriterState {
        if self.half_rebuilt {
            reset(self);
        }
        self
    }
}

impl fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchIndex")
            .field("dir", &self.dir)
            .field("docs", &self.len())
            .finish_non_exhaustive()
    }
}

/// Why an index could not be used as it is.
enum OpenProblem {
    /// Corrupt, incomplete or of another schema: move it aside, start afresh.
    Unusable(String),
    /// The lock, the disk, the descriptors: moving anything would not help.
    Fatal(SearchError),
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it (and `dir`) if needed.
    ///
    /// The index is checked before it is trusted: `meta.json` must parse,
    /// the schema must be exactly this version's (field names, options and
    /// the versioned tokenizer), every segment file it lists must exist and
    /// pass its checksum, and a reader must open every segment. If any of
    /// that fails (or tantivy panics trying), `dir` is renamed to
    /// `<dir>.corrupt-<unix-time>` (kept for a post-mortem, never read
    /// again), a warning is logged, an empty index is created, and
    /// [`OpenedIndex::rebuilt`] says what happened. A directory holding
    /// files but no `meta.json` counts as corrupt too: its commit is lost.
    ///
    /// The writer lock is taken *before* any of these checks, so a healthy
    /// index in use by another process is never mistaken for a broken one
    /// and moved away: that case is [`SearchError::Locked`] (after waiting
    /// up to two seconds for the lock: see `retry_while_busy`). Errors that
    /// moving the directory would not fix (a full, read-only or failing
    /// disk, descriptor exhaustion) are returned as they are.
    ///
    /// A brand-new index is empty with no [`stamp`](SearchIndex::stamp), and
    /// `rebuilt` is `None`.
    ///
    /// Checking reads every segment file once (a few MB for 20,000 tracks,
    /// through the page cache).
    pub fn open(dir: &Path) -> Result<OpenedIndex, SearchError> {
        fs::create_dir_all(dir).map_err(SearchError::io("create directory", dir))?;
        let problem = match catch_unwind(AssertUnwindSafe(|| SearchIndex::open_checked(dir))) {
            Ok(Ok(index)) => {
                return Ok(OpenedIndex {
                    index,
                    rebuilt: None,
                });
            }
            Ok(Err(OpenProblem::Fatal(e))) => return Err(e),
            Ok(Err(OpenProblem::Unusable(why))) => why,
            Err(panic) => format!("tantivy panicked opening it: {}", panic_message(&*panic)),
        };
        let aside = move_aside(dir)?;
        let what = format!(
            "search index unusable ({problem}); moved it to {} and started an empty one",
            aside.display()
        );
        tracing::warn!("{what}");
        fs::create_dir_all(dir).map_err(SearchError::io("create directory", dir))?;
        match SearchIndex::open_checked(dir) {
            Ok(index) => Ok(OpenedIndex {
                index,
                rebuilt: Some(what),
            }),
            Err(OpenProblem::Fatal(e)) => Err(e),
            Err(OpenProblem::Unusable(reason)) => Err(SearchError::Unusable {
                path: dir.to_path_buf(),
                reason,
            }),
        }
    }

    fn open_checked(dir: &Path) -> Result<SearchIndex, OpenProblem> {
        let problem = |op| move |e| classify(op, dir, e);
        let mmap = MmapDirectory::open(dir)
            .map_err(|e| classify("open directory", dir, TantivyError::from(e)))?;
        let lock = retry_while_busy(|| {
            mmap.acquire_lock(&INDEX_WRITER_LOCK)
                .map_err(|e| TantivyError::LockFailure(e, None))
        })
        .map_err(problem("take the writer lock"))?;
        let exists = Index::exists(&mmap)
            .map_err(|e| classify("look for meta.json", dir, TantivyError::from(e)))?;
        let index = if exists {
            let index = Index::open(mmap).map_err(problem("open"))?;
            if index.schema() != schema::schema() {
                return Err(OpenProblem::Unusable(
                    "its schema is not this version's".to_owned(),
                ));
            }
            schema::register(&index);
            let damaged = index
                .validate_checksum()
                .map_err(problem("verify checksums"))?;
            if !damaged.is_empty() {
                let mut names: Vec<String> =
                    damaged.iter().map(|p| p.display().to_string()).collect();
                names.sort();
                return Err(OpenProblem::Unusable(format!(
                    "damaged files: {}",
                    names.join(", ")
                )));
            }
            index
        } else {
            let stray = stray_files(dir).map_err(|e| {
                OpenProblem::Fatal(SearchError::Io {
                    op: "list",
                    path: dir.to_path_buf(),
                    source: e,
                })
            })?;
            if stray > 0 {
                return Err(OpenProblem::Unusable(format!(
                    "no meta.json, but {stray} other files"
                )));
            }
            let settings = IndexSettings {
                docstore_compression: Compressor::None,
                docstore_compress_dedicated_thread: false,
                ..IndexSettings::default()
            };
            let index = Index::create(mmap, schema::schema(), settings)
                .map_err(|e| OpenProblem::Fatal(SearchError::index("create")(e)))?;
            schema::register(&index);
            index
        };
        let fields =
            Fields::of(&index.schema()).map_err(|e| OpenProblem::Unusable(e.to_string()))?;
        // Opening a reader opens every segment: a missing or truncated file
        // shows here.
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(problem("open a reader"))?;
        let committed_stamp = index
            .load_metas()
            .map_err(problem("read meta.json"))?
            .payload;
        // tantivy's writer takes the lock itself. Another process could
        // slip in between; it would then hold the lock and we fail with
        // `Locked`, which is right.
        drop(lock);
        let writer = retry_while_busy(|| index.writer_with_options(writer_options()))
            .map_err(problem("start the writer"))?;
        Ok(SearchIndex {
            dir: dir.to_path_buf(),
            fields,
            reader,
            writer: Mutex::new(WriterState {
                writer: Writer(std::mem::ManuallyDrop::new(writer)),
                pending: 0,
                stamp: committed_stamp.clone(),
                committed_stamp,
                half_rebuilt: false,
            }),
        })
    }

    /// The directory of the index.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds the document, replacing any with the same virtual path. Seen by
    /// searches after the next [`commit`](SearchIndex::commit).
    ///
    /// On an error the writer is reset to the last commit: every change
    /// since then is dropped, and the caller should rebuild
    /// ([`replace_all`](SearchIndex::replace_all)) once the cause is gone.
    pub fn upsert(&self, doc: &SearchDoc) -> Result<(), SearchError> {
        let tdoc = self.to_tantivy(doc);
        let mut guard = self.writer.lock();
        let st = guard.ready();
        st.writer
            .delete_term(Term::from_field_text(self.fields.vpath, &doc.vpath));
        match st.writer.add_document(tdoc) {
            Ok(_) => {
                st.pending += 1;
                Ok(())
            }
            Err(e) => {
                reset(st);
                Err(SearchError::index("add a document")(e))
            }
        }
    }

    /// Removes the document with this virtual path (absent is fine). Seen by
    /// searches after the next [`commit`](SearchIndex::commit).
    pub fn remove(&self, vpath: &str) -> Result<(), SearchError> {
        let mut guard = self.writer.lock();
        let st = guard.ready();
        st.writer
            .delete_term(Term::from_field_text(self.fields.vpath, vpath));
        st.pending += 1;
        Ok(())
    }

    /// Removes the committed documents whose virtual paths have these keys
    /// ([`doc_key`]), and returns how many paths it found. The paths are
    /// read from the index's own term dictionary, so that a running index
    /// need not keep them in memory. Seen by searches after the next
    /// [`commit`](SearchIndex::commit).
    pub fn remove_keys(&self, keys: &BTreeSet<u64>) -> Result<usize, SearchError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut paths: BTreeSet<String> = BTreeSet::new();
        for segment in self.reader.searcher().segment_readers() {
            let inverted = segment
                .inverted_index(self.fields.vpath)
                .map_err(SearchError::index("read the paths"))?;
            let mut terms = inverted
                .terms()
                .stream()
                .map_err(|e| SearchError::index("read the paths")(e.into()))?;
            while terms.advance() {
                if let Ok(path) = std::str::from_utf8(terms.key())
                    && keys.contains(&doc_key(path))
                {
                    paths.insert(path.to_owned());
                }
            }
        }
        for path in &paths {
            self.remove(path)?;
        }
        Ok(paths.len())
    }

    /// Makes `docs` the whole index and commits: the rebuild after
    /// [`open`](SearchIndex::open) reported `rebuilt`, or after a stamp
    /// mismatch. Uncommitted upserts and removes are dropped first (the
    /// documents given are the whole truth). Searches see the old index
    /// until the commit, then the new one, never a mix. The virtual paths
    /// must be unique, as the paths of a tree are.
    ///
    /// On an error nothing is committed and the index stays as it was.
    pub fn replace_all(
        &self,
        docs: impl IntoIterator<Item = SearchDoc>,
    ) -> Result<(), SearchError> {
        let mut guard = self.writer.lock();
        let st = &mut *guard;
        st.writer
            .rollback()
            .map_err(SearchError::index("roll back"))?;
        st.pending = 0;
        st.half_rebuilt = false;
        st.writer
            .delete_all_documents()
            .map_err(SearchError::index("delete all"))?;
        st.half_rebuilt = true;
        for doc in docs {
            if let Err(e) = st.writer.add_document(self.to_tantivy(&doc)) {
                reset(st);
                return Err(SearchError::index("add a document")(e));
            }
        }
        st.pending += 1; // the delete-all, even with no documents
        self.commit_locked(st)
    }

    /// Makes every change so far durable and visible to searches. Cheap
    /// when there is nothing to commit. Call it in batches (every few
    /// hundred changes or seconds) and at shutdown, from a background task:
    /// it fsyncs, so it takes tens to a hundred-odd milliseconds (about
    /// 100 ms for 1,000 changes on this machine), and it holds the writer
    /// (not the searches) meanwhile.
    ///
    /// On an error the writer is reset to the last commit (see
    /// [`upsert`](SearchIndex::upsert)).
    pub fn commit(&self) -> Result<(), SearchError> {
        let mut guard = self.writer.lock();
        self.commit_locked(guard.ready())
    }

    fn commit_locked(&self, st: &mut WriterState) -> Result<(), SearchError> {
        if st.pending == 0 && st.stamp == st.committed_stamp {
            return Ok(());
        }
        let result = st.writer.prepare_commit().and_then(|mut prepared| {
            if let Some(stamp) = &st.stamp {
                prepared.set_payload(stamp);
            }
            prepared.commit()
        });
        if let Err(e) = result {
            reset(st);
            return Err(SearchError::index("commit")(e));
        }
        let wrote_segment = st.pending > 0;
        st.pending = 0;
        st.half_rebuilt = false;
        st.committed_stamp = st.stamp.clone();
        let reloaded = self
            .reader
            .reload()
            .map_err(SearchError::index("reload the reader"));
        if wrote_segment {
            release_freed_memory();
        }
        reloaded
    }

    /// Changes (upserts and removes) not yet committed.
    pub fn pending(&self) -> u64 {
        self.writer.lock().pending
    }

    /// Records `stamp` with the next commit (and with every commit after,
    /// until changed). Counts as a change: the next commit writes it even
    /// with nothing else to commit.
    pub fn set_stamp(&self, stamp: impl Into<String>) {
        self.writer.lock().stamp = Some(stamp.into());
    }

    /// The stamp of the last commit, as stored in the index: `None` for a
    /// new or rebuilt index, or one never stamped.
    pub fn stamp(&self) -> Option<String> {
        self.writer.lock().committed_stamp.clone()
    }

    /// The virtual paths of up to `limit` (at most [`MAX_LIMIT`]) committed
    /// documents matching `query`, best first; equal scores in virtual path
    /// order, so the same index and query always give the same list. For
    /// the syntax (`artist:bjork year:[1990 TO 1999] radiohed`) see the
    /// [module docs](crate::search#query-syntax).
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<String>, SearchError> {
        run_search(
            &self.reader.searcher(),
            &self.fields,
            query,
            limit,
            &self.dir,
        )
    }

    /// Committed documents.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// True when no document is committed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn to_tantivy(&self, doc: &SearchDoc) -> TantivyDocument {
        let mut t = TantivyDocument::new();
        t.add_text(self.fields.vpath, &doc.vpath);
        for f in TextField::ALL {
            if let Some(v) = doc.text(f).filter(|v| !v.trim().is_empty()) {
                t.add_text(self.fields.text(f), v);
            }
        }
        if let Some(year) = doc.year {
            t.add_i64(self.fields.year, i64::from(year));
        }
        t
    }
}

/// Searches the index of a cache directory without a daemon: opens a
/// reader only (no writer, so no writer lock: this works while a daemon
/// holds it, and never changes the index), searches, and closes. For
/// `musicfs search` when no daemon answers.
///
/// A bad query is reported even when there is no index. An index that does
/// not open is reported as [`SearchError::Unusable`] and left alone: the
/// next mount moves it aside and rebuilds it. A missing one is
/// [`SearchError::NoIndex`].
///
/// The reader briefly takes tantivy's meta lock (a `flock` on
/// `<cache_dir>/search/.tantivy-meta.lock`, which it may create) so that
/// a daemon's garbage collection cannot delete segment files while it
/// opens them.
pub fn search_offline(
    cache_dir: &Path,
    query: &str,
    limit: usize,
) -> Result<Vec<String>, SearchError> {
    query::parse(query)?;
    let dir = index_dir(cache_dir);
    if !dir.join("meta.json").is_file() {
        return Err(SearchError::NoIndex(dir));
    }
    let unusable = |reason: String| SearchError::Unusable {
        path: dir.clone(),
        reason,
    };
    let opened = catch_unwind(AssertUnwindSafe(|| {
        let index = Index::open_in_dir(&dir).map_err(|e| unusable(e.to_string()))?;
        if index.schema() != schema::schema() {
            return Err(unusable("its schema is not this version's".to_owned()));
        }
        schema::register(&index);
        let fields = Fields::of(&index.schema()).map_err(|e| unusable(e.to_string()))?;
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| unusable(e.to_string()))?;
        Ok((reader, fields))
    }));
    let (reader, fields) = match opened {
        Ok(r) => r?,
        Err(panic) => return Err(unusable(panic_message(&*panic))),
    };
    run_search(&reader.searcher(), &fields, query, limit, &dir)
}

fn run_search(
    searcher: &Searcher,
    fields: &Fields,
    query: &str,
    limit: usize,
    dir: &Path,
) -> Result<Vec<String>, SearchError> {
    let parsed = query::parse(query)?;
    let limit = limit.min(MAX_LIMIT);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let q = query::compile(&parsed, fields);
    let collector = TopDocs::with_limit(limit).order_by((
        (SortBySimilarityScore, Order::Desc),
        (SortByString::for_field(VPATH), Order::Asc),
    ));
    let hits = catch_unwind(AssertUnwindSafe(|| searcher.search(&*q, &collector)))
        .map_err(|panic| SearchError::Unusable {
            path: dir.to_path_buf(),
            reason: panic_message(&*panic),
        })?
        .map_err(SearchError::index("search"))?;
    let mut hits: Vec<(f32, String)> = hits
        .into_iter()
        .filter_map(|((score, vpath), _)| Some((score, vpath?)))
        .collect();
    // tantivy already returns this order; sorting again makes it a
    // property of this function rather than of a collector's internals.
    hits.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(hits.into_iter().map(|(_, vpath)| vpath).collect())
}

/// How long [`SearchIndex::open`] waits for a busy writer lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Runs `take` until it stops failing with a busy lock, for [`LOCK_WAIT`].
///
/// A lock that is busy for a moment is not necessarily another daemon's.
/// tantivy's locks are `flock`s, which belong to the open file, and a child
/// process forked while the lock file was open shares it until the child
/// execs: so a lock this process has just released (a `SearchIndex` dropped
/// and opened again, or our own check-then-start below) can still look busy
/// while any thread spawns a program (an `ssh` for an SFTP origin, say).
/// The tests hit exactly this. A real second owner still gets `Locked`.
fn retry_while_busy<T>(mut take: impl FnMut() -> tantivy::Result<T>) -> tantivy::Result<T> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match take() {
            Err(TantivyError::LockFailure(LockError::LockBusy, _)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn writer_options() -> IndexWriterOptions {
    IndexWriterOptions::builder()
        .memory_budget_per_thread(WRITER_HEAP_BYTES)
        .num_worker_threads(1)
        .num_merge_threads(1)
        .build()
}

/// Hands the memory freed by a finished segment writer back to the kernel.
///
/// tantivy's segment writer, which lives from the first change after a
/// commit to the next commit, allocates about 14 MB even for a batch of a
/// few documents (its term hash table is sized from the heap budget), and a
/// full build of 20,000 tracks peaks at about 30 MB. All of it is freed at
/// the commit, and given back at once rather than by the allocator's
/// decay (glibc's malloc, before jemalloc, kept it for good: 38 MB → 14
/// MB after a build with `malloc_trim`).
fn release_freed_memory() {
    crate::sys::memory::release_free_memory();
}

/// Resets a writer that failed to its last commit. A writer whose thread
/// died keeps failing; rollback starts a new one (keeping the lock).
fn reset(st: &mut WriterState) {
    st.pending = 0;
    st.half_rebuilt = false;
    if let Err(e) = st.writer.rollback() {
        tracing::warn!("search index: resetting the writer failed: {e}");
    }
}

/// Files in `dir` other than tantivy's lock files.
fn stray_files(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if name != ".tantivy-writer.lock" && name != ".tantivy-meta.lock" {
            n += 1;
        }
    }
    Ok(n)
}

/// Sorts an open failure into "rebuild it" and "leave it alone".
fn classify(op: &'static str, dir: &Path, e: TantivyError) -> OpenProblem {
    if let TantivyError::LockFailure(LockError::LockBusy, _) = e {
        return OpenProblem::Fatal(SearchError::Locked(dir.to_path_buf()));
    }
    let fatal_errno = os_error(&e)
        .and_then(|io| io.raw_os_error())
        .is_some_and(|errno| {
            matches!(
                errno,
                libc::ENOSPC
                    | libc::EDQUOT
                    | libc::EROFS
                    | libc::EIO
                    | libc::EACCES
                    | libc::EPERM
                    | libc::EMFILE
                    | libc::ENFILE
                    | libc::ENOMEM
            )
        });
    if fatal_errno || matches!(e, TantivyError::LockFailure(..)) {
        return OpenProblem::Fatal(SearchError::Index { op, source: e });
    }
    OpenProblem::Unusable(format!("{op}: {e}"))
}

/// The operating system's error inside a tantivy error, if there is one.
fn os_error(e: &TantivyError) -> Option<&Arc<io::Error>> {
    match e {
        TantivyError::IoError(io) => Some(io),
        TantivyError::LockFailure(LockError::IoError(io), _) => Some(io),
        TantivyError::OpenReadError(OpenReadError::IoError { io_error, .. })
        | TantivyError::OpenWriteError(OpenWriteError::IoError { io_error, .. })
        | TantivyError::OpenDirectoryError(OpenDirectoryError::IoError { io_error, .. }) => {
            Some(io_error)
        }
        _ => None,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("tantivy panicked: {msg}")
}

/// Renames `dir` to a fresh `<dir>.corrupt-<unix-time>[-n]` beside it.
fn move_aside(dir: &Path) -> Result<PathBuf, SearchError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "search".to_owned());
    let parent = dir.parent().unwrap_or(Path::new("."));
    for n in 0u32.. {
        let target = parent.join(if n == 0 {
            format!("{name}.corrupt-{secs}")
        } else {
            format!("{name}.corrupt-{secs}-{n}")
        });
        if fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        fs::rename(dir, &target).map_err(SearchError::io("move the index aside", dir))?;
        // Best effort: make the rename durable before a new index appears.
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
        return Ok(target);
    }
    unreachable!("u32 names ran out")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(vpath: &str, artist: &str, title: &str) -> SearchDoc {
        SearchDoc {
            vpath: vpath.to_owned(),
            artist: Some(artist.to_owned()),
            title: Some(title.to_owned()),
            ..SearchDoc::default()
        }
    }

    #[test]
    fn send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SearchIndex>();
        check::<SearchError>();
    }

    #[test]
    fn writer_heap_is_tantivys_minimum() {
        let dir = tempfile::tempdir().unwrap();
        let opened = SearchIndex::open(dir.path()).unwrap();
        // One byte less is refused: the constant is the floor.
        let too_small = IndexWriterOptions::builder()
            .memory_budget_per_thread(WRITER_HEAP_BYTES - 1)
            .build();
        drop(opened);
        let index = Index::open_in_dir(dir.path()).unwrap();
        assert!(
            index
                .writer_with_options::<TantivyDocument>(too_small)
                .is_err()
        );
    }

    #[test]
    fn diff_finds_changes() {
        let a = doc("A/x.flac", "A", "x");
        let b = doc("B/y.flac", "B", "y");
        let b2 = doc("B/y.flac", "B", "y (remaster)");
        let c = doc("C/z.flac", "C", "z");
        let old = DocDigests::of(&[a.clone(), b]);
        let changes = diff_docs(&old, &[c.clone(), a.clone(), b2.clone()]);
        assert_eq!(changes.upsert, vec![b2.clone(), c.clone()]);
        assert!(changes.remove.is_empty());
        let changes = diff_docs(&DocDigests::of(&[doc("gone", "g", "g")]), &[]);
        assert_eq!(changes.remove, BTreeSet::from([doc_key("gone")]));
        assert!(diff_docs(&DocDigests::default(), &[]).is_empty());
        // The stamp follows the contents, not the order they came in.
        let (one, two) = (
            DocDigests::of(&[a.clone(), c.clone()]),
            DocDigests::of(&[c, a]),
        );
        assert_eq!(one.stamp(), two.stamp());
        assert_ne!(one.stamp(), DocDigests::of(&[b2]).stamp());
    }

    #[test]
    fn a_diff_within_some_folders_leaves_the_rest_alone_and_applies_like_a_whole_one() {
        let a = doc("A/x.flac", "A", "x");
        let b = doc("B/y.flac", "B", "y");
        let b2 = doc("B/y.flac", "B", "y (remaster)");
        let c = doc("C/z.flac", "C", "z");
        let d = doc("B/w.flac", "B", "w");
        let old = DocDigests::of(&[a.clone(), b.clone(), c.clone()]);
        // Folders A and B were rebuilt: x went, y was retagged, w is new;
        // C was not looked at, and a path never held is not removed.
        let changes = diff_docs_within(
            &old,
            ["A/x.flac", "B/y.flac", "B/never.flac"],
            &[b2.clone(), d.clone()],
        );
        assert_eq!(changes.upsert, vec![d.clone(), b2.clone()]);
        assert_eq!(changes.remove, BTreeSet::from([doc_key("A/x.flac")]));
        let mut held = old.clone();
        held.apply(&changes);
        assert_eq!(held, DocDigests::of(&[b2.clone(), c.clone(), d.clone()]));
        // The same change seen whole applies to the same digests.
        let mut whole = old.clone();
        whole.apply(&diff_docs(&old, &[b2, c, d]));
        assert_eq!(whole, held);
    }

    #[test]
    fn stores_nothing_in_the_doc_store() {
        let dir = tempfile::tempdir().unwrap();
        let idx = SearchIndex::open(dir.path()).unwrap().index;
        idx.upsert(&doc("A/x.flac", "A", "x")).unwrap();
        idx.commit().unwrap();
        let schema = idx.reader.searcher().index().schema();
        assert!(schema.fields().all(|(_, e)| !e.is_stored()));
        assert_eq!(idx.search("x", 10).unwrap(), vec!["A/x.flac"]);
    }
}
