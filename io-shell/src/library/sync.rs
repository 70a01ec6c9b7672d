//! Delta sync of origins: the io-shell half of the core's
//! [`musicfs_core::sync`] decisions.
//!
//! A sync lists what changed (a full `stat`-only walk of a local origin, a
//! listing of a remote one, or the paths a watcher named; versions are
//! size, mtime and inode locally, size, mtime and ETag remotely), lets the
//! core plan it, reads tags only of new and changed
//! files in batches, saves each batch to the catalog (the checkpoint: an
//! interrupted sync, run again, reads only what it had not finished), then
//! rebuilds the tree, swaps it into the engine and publishes the change to
//! its listeners (the kernel side invalidates exactly the entries that
//! changed; nothing here speaks FUSE). One sync runs at a time.

use crate::exec::daemon::Daemon;
use crate::library::remote_scan::{RemoteScanOptions, list_remote, scan_remote_files};
use crate::library::scan::{self, NoProgress};
use crate::origin::OriginError;
use crate::origin::RemoteOrigin;
use crate::store::tree_cache::{self, TreeKey};
use crate::store::{Db, StoreError};
use musicfs_core::sync::{self, Listed, SyncPlan};
use musicfs_core::tree::update::{Change, FileKey, Need, TreeUpdate, Updated};
use musicfs_core::tree::{BuildReport, FileRole, VirtualTree};
use musicfs_core::{CatalogEntry, Ino, Layout, OriginId, OriginPath};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Files whose tags are read between two checkpoints.
pub const SYNC_BATCH_FILES: usize = 256;

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Files whose tags were read.
    pub reread: usize,
    /// Files gone from the origin.
    pub removed: usize,
    /// Files that moved inside the origin (tags and cache kept).
    pub moved: usize,
    /// Files found unchanged.
    pub unchanged: usize,
    /// Entries and inodes that changed (listeners were told of each).
    pub invalidated: usize,
    /// The tree was patched where the changes reached, not built whole
    /// ([`musicfs_core::tree::update`]).
    pub patched: bool,
}

/// How one origin is synced.
#[derive(Clone)]
pub enum SyncSource {
    /// A local directory: walked and `stat`ed, tags read from disk.
    Local(PathBuf),
    /// A remote origin: listed, tags read through ranged reads.
    Remote(Arc<dyn RemoteOrigin>),
}

/// Changed files a sync remembers, with their catalog entries from before
/// it, to patch the tree rather than build it whole. Past this many, it
/// forgets them and builds whole (a patch reaching that far would decline).
const CHANGES_REMEMBERED: usize = 16_384;

/// A published tree change.
pub struct TreeChange<'a> {
    /// The new tree.
    pub tree: &'a VirtualTree,
    /// What of the catalog it may have changed (the search index follows
    /// the tree this way, without loading the catalog again).
    pub touched: Touched<'a>,
    /// What changed from the tree before.
    pub diff: &'a musicfs_core::tree::TreeDiff,
}

/// What a tree change may have changed, for those who follow the catalog.
pub enum Touched<'a> {
    /// Anything: here is the whole catalog the new tree was built from.
    All(&'a [CatalogEntry]),
    /// Only what is in some top folders of the tree (a patched tree,
    /// [`musicfs_core::tree::update`]).
    Tops {
        /// The catalog entries every file now in those folders comes from
        /// (and a few more of their origin folders).
        entries: &'a [CatalogEntry],
        /// The paths of the tracks that were in those folders before.
        old_tracks: &'a [String],
    },
}

/// Called after every tree change.
pub type TreeListener = Box<dyn Fn(&TreeChange<'_>) + Send + Sync>;

/// Runs syncs for one mount.
pub struct Syncer {
    daemon: Arc<Daemon>,
    db: Arc<Db>,
    layout: Layout,
    /// How each origin is synced, by origin id.
    sources: Vec<SyncSource>,
    /// Told of every tree change, in order.
    listeners: Mutex<Vec<TreeListener>>,
    /// The tree built from the saved catalog as it is now, and its report,
    /// while it is not saved for the next mount: set when a sync swaps a
    /// tree in (or by the mount, for a tree it built and could not save),
    /// cleared when the catalog changes without a new tree. See
    /// [`Syncer::save_tree`].
    unsaved_tree: Mutex<Option<(Arc<VirtualTree>, BuildReport)>>,
    /// The build report of the tree being served, while that tree is the
    /// one the saved catalog gives: then a sync can patch it. Taken by a
    /// sync when it starts changing the catalog, put back with its new
    /// tree; a sync that stops midway leaves it empty, and the next one
    /// builds whole.
    served_report: Mutex<Option<BuildReport>>,
    one_at_a_time: Mutex<()>,
    /// Set at shutdown: no sync starts, a running one stops at its next
    /// checkpoint (a saved batch).
    stopping: AtomicBool,
    threads: usize,
    /// Counters per origin, by origin id (the metrics read them).
    pub stats: Vec<SyncStats>,
}

/// What the syncs of one origin did.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Syncs that ran to their end (with changes or without).
    pub runs: AtomicU64,
    /// Syncs that failed or stopped early.
    pub failures: AtomicU64,
    /// Files read again (new or changed).
    pub read: AtomicU64,
    /// Files gone.
    pub removed: AtomicU64,
    /// Files moved.
    pub moved: AtomicU64,
}

/// Why a sync did not run to its end. Every batch saved before the error
/// stays saved: the next sync does not read it again.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The daemon is stopping.
    #[error("the daemon is shutting down; the sync resumes at the next mount")]
    Stopping,
    /// No origin has this id.
    #[error("there is no {0}")]
    NoOrigin(OriginId),
    /// Paths of a remote origin (which is only synced whole).
    #[error("{0} is remote: sync it whole")]
    Remote(OriginId),
    /// A local origin cannot be listed: unreachable is unhealthy, never
    /// empty, so the catalog is kept as it is.
    #[error("cannot list origin '{}': {source}", root.display())]
    ListLocal {
        /// The origin's folder.
        root: PathBuf,
        /// The walk's error.
        #[source]
        source: std::io::Error,
    },
    /// A remote origin cannot be listed (the catalog is kept as it is).
    #[error("cannot list origin '{origin}': {source}")]
    ListRemote {
        /// The origin, described.
        origin: String,
        /// Why.
        #[source]
        source: OriginError,
    },
    /// A local origin's folder is gone (or went while it was listed: the
    /// paths the walk missed are not deleted).
    #[error("origin '{}' is not reachable", .0.display())]
    Unreachable(PathBuf),
    /// The tags of a batch cannot be read from a remote origin.
    #[error("cannot read tags from '{origin}': {source}")]
    ReadTags {
        /// The origin, described.
        origin: String,
        /// Why.
        #[source]
        source: OriginError,
    },
    /// The catalog cannot be read or saved.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Tests: a fail point cut the sync after a saved batch.
    #[error("sync interrupted (fail point {0})")]
    Interrupted(&'static str),
}

impl Syncer {
    /// A syncer for the daemon's origins, whose tree was built from the
    /// catalog saved in `db`. `report` is that build's report, if known
    /// (without it the first sync builds the tree whole). `unsaved_tree`
    /// is that tree and its report when it is not saved for the next mount
    /// yet.
    ///
    /// The syncer keeps no catalog in memory (on 200,000 tracks that was
    /// ~100 MB for as long as the daemon ran): a sync plans against the
    /// origin's saved entries and builds the new tree from the saved
    /// catalog, and holds either only while it runs.
    pub fn new(
        daemon: Arc<Daemon>,
        db: Arc<Db>,
        layout: Layout,
        sources: Vec<SyncSource>,
        report: Option<BuildReport>,
        unsaved_tree: Option<(Arc<VirtualTree>, BuildReport)>,
    ) -> Syncer {
        let sources_len = sources.len();
        Syncer {
            daemon,
            db,
            layout,
            sources,
            listeners: Mutex::new(Vec::new()),
            unsaved_tree: Mutex::new(unsaved_tree),
            served_report: Mutex::new(report),
            one_at_a_time: Mutex::new(()),
            stopping: AtomicBool::new(false),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            stats: (0..sources_len).map(|_| SyncStats::default()).collect(),
        }
    }

    /// Registers a function told of every tree change, after those
    /// registered before it.
    pub fn on_tree_change(&self, listener: TreeListener) {
        self.listeners.lock().push(listener);
    }

    /// Registers a function told of every tree change before all others:
    /// the kernel's invalidation, so that whoever is told next (a media
    /// server, `--on-change`, the search index) finds the new tree through
    /// the mount.
    pub fn on_tree_change_first(&self, listener: TreeListener) {
        self.listeners.lock().insert(0, listener);
    }

    /// Runs `job` while no sync runs (and no other such job): for work
    /// that reads the whole tree or catalog and must not miss a change
    /// published meanwhile (opening the search index). It also keeps two
    /// whole-catalog jobs from holding their memory at the same time.
    pub fn exclusive<R>(&self, job: impl FnOnce() -> R) -> R {
        let _one = self.one_at_a_time.lock();
        job()
    }

    /// The saved catalog, entry by entry, read as it is taken: the one the
    /// tree being served was built from when no sync runs (as in
    /// [`Syncer::exclusive`]). See [`Db::catalog_entries`].
    pub fn catalog_entries(&self) -> impl Iterator<Item = CatalogEntry> + use<> {
        self.db.catalog_entries()
    }

    /// After a change to the saved catalog: the tree built from it before
    /// is no longer its tree.
    fn catalog_changed(&self) {
        *self.unsaved_tree.lock() = None;
    }

    /// Saves the tree built from the catalog as it is now in `cache_dir`,
    /// under the key the next mount computes from that catalog (the same
    /// binary and layout, and the catalog's saved bytes, which every sync
    /// keeps equal to this one), so that it loads the tree instead of
    /// building it. Nothing to do when that tree is saved already, or when
    /// the catalog changed after it was built (a sync stopped midway):
    /// then the next mount builds, as it would anyway. Run at shutdown,
    /// after [`Syncer::stop`].
    pub fn save_tree(&self, cache_dir: &Path) -> Result<bool, SyncError> {
        let Some((tree, report)) = self.unsaved_tree.lock().take() else {
            return Ok(false);
        };
        let Some(key) = TreeKey::new(self.layout.source(), self.db.catalog_digest()?) else {
            return Ok(false);
        };
        tree_cache::save(cache_dir, key, &tree, &report)
            .map_err(|e| SyncError::Store(StoreError::io("save the tree", cache_dir, e)))?;
        Ok(true)
    }

    /// Shutdown: no sync starts from now on, and a running one (or a search
    /// index build, which also runs under the sync lock) is waited for up
    /// to `wait`; a sync stops at its next saved batch. True when nothing
    /// runs any more, false when `wait` ran out first.
    pub fn stop(&self, wait: Duration) -> bool {
        self.stopping.store(true, Ordering::SeqCst);
        match self.one_at_a_time.try_lock_for(wait) {
            // Held for good: nothing that waits for the lock (a search
            // build queued behind the last sync) starts during shutdown.
            Some(guard) => {
                std::mem::forget(guard);
                true
            }
            None => false,
        }
    }

    /// The lock every sync holds, unless the daemon is stopping.
    fn begin(&self) -> Result<parking_lot::MutexGuard<'_, ()>, SyncError> {
        let one = self.one_at_a_time.lock();
        if self.stopping.load(Ordering::SeqCst) {
            return Err(SyncError::Stopping);
        }
        Ok(one)
    }

    /// Number of origins.
    pub fn origins(&self) -> usize {
        self.sources.len()
    }

    /// Syncs a whole origin against a fresh listing.
    ///
    /// Must not be called on a runtime worker thread (a remote origin's
    /// listing is waited for): use the blocking pool.
    pub fn sync_origin(&self, origin: OriginId) -> Result<SyncReport, SyncError> {
        let _one = self.begin()?;
        let source = self.source(origin)?;
        // Unreachable is unhealthy, never empty: a failed listing keeps the
        // catalog as it is.
        let listing = match &source {
            SyncSource::Local(root) => {
                scan::list_local(root).map_err(|source| SyncError::ListLocal {
                    root: root.clone(),
                    source,
                })?
            }
            SyncSource::Remote(remote) => {
                let (files, problems) = self
                    .daemon
                    .runtime()
                    .block_on(list_remote(remote.as_ref()))
                    .map_err(|source| SyncError::ListRemote {
                        origin: remote.describe(),
                        source,
                    })?;
                for problem in problems.iter().take(20) {
                    tracing::warn!(%origin, %problem, "listing problem");
                }
                scan::Listing {
                    files,
                    unseen: Vec::new(),
                }
            }
        };
        // The saved entries are streamed: a whole-origin sync holds the
        // listing, not the catalog too (on 200,000 tracks, ~100 MB more).
        let mut failed = None;
        let saved = self
            .db
            .catalog_of(origin)
            .map_while(|e| e.map_err(|e| failed = Some(e)).ok());
        let mut plan = sync::plan_full(origin, saved, &listing.files);
        if let Some(e) = failed {
            return Err(e.into());
        }
        listing.keep_unseen(&mut plan);
        drop(listing);
        let report = self.run(origin, &source, plan);
        // A full sync held the whole listing for a moment.
        crate::sys::memory::release_free_memory();
        report
    }

    /// Syncs only `paths` of an origin (what a watcher saw change).
    pub fn sync_paths(
        &self,
        origin: OriginId,
        paths: &BTreeSet<OriginPath>,
    ) -> Result<SyncReport, SyncError> {
        let _one = self.begin()?;
        let source = self.source(origin)?;
        let SyncSource::Local(root) = &source else {
            return Err(SyncError::Remote(origin));
        };
        if !root.is_dir() {
            return Err(SyncError::Unreachable(root.clone()));
        }
        let listing = scan::list_paths(root, paths);
        if !root.is_dir() {
            // Gone while listed: the paths it missed are not deleted.
            return Err(SyncError::Unreachable(root.clone()));
        }
        // Only what is under the named paths: a watcher's sync of one
        // retagged file must not hold the whole catalog in memory.
        let catalog = self.db.catalog_under(origin, paths)?;
        let mut plan = sync::plan_paths(origin, &catalog, paths, &listing.files);
        listing.keep_unseen(&mut plan);
        self.run(origin, &source, plan)
    }

    fn source(&self, origin: OriginId) -> Result<SyncSource, SyncError> {
        self.sources
            .get(usize::from(origin.0))
            .cloned()
            .ok_or(SyncError::NoOrigin(origin))
    }

    /// Reads the tags of one batch of new or changed files.
    fn read_batch(
        &self,
        origin: OriginId,
        source: &SyncSource,
        batch: &[Listed],
    ) -> Result<Vec<CatalogEntry>, SyncError> {
        match source {
            SyncSource::Local(root) => Ok(scan::read_files(origin, root, batch, self.threads)),
            SyncSource::Remote(remote) => {
                let files = batch.to_vec();
                let report = self
                    .daemon
                    .runtime()
                    .block_on(scan_remote_files(
                        origin,
                        Arc::clone(remote),
                        files,
                        &RemoteScanOptions::default(),
                        &NoProgress,
                    ))
                    .map_err(|source| SyncError::ReadTags {
                        origin: remote.describe(),
                        source,
                    })?;
                Ok(report.entries)
            }
        }
    }

    fn run(
        &self,
        origin: OriginId,
        source: &SyncSource,
        plan: SyncPlan,
    ) -> Result<SyncReport, SyncError> {
        let result = self.run_plan(origin, source, plan);
        if let Some(stats) = self.stats.get(usize::from(origin.0)) {
            match &result {
                Ok(r) => {
                    stats.runs.fetch_add(1, Ordering::Relaxed);
                    stats.read.fetch_add(r.reread as u64, Ordering::Relaxed);
                    stats.removed.fetch_add(r.removed as u64, Ordering::Relaxed);
                    stats.moved.fetch_add(r.moved as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        result
    }

    fn run_plan(
        &self,
        origin: OriginId,
        source: &SyncSource,
        plan: SyncPlan,
    ) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        let mut report = SyncReport {
            removed: plan.removed.len(),
            moved: plan.moved.len(),
            unchanged: plan.unchanged,
            ..SyncReport::default()
        };
        if plan.is_empty() {
            return Ok(report);
        }
        // From here the catalog changes: the tree served is its tree again
        // only once this sync publishes.
        let base = self.served_report.lock().take();
        let mut changes = base.as_ref().map(|_| ChangeLog::default());
        for batch in plan.batches(SYNC_BATCH_FILES) {
            let read = self.read_batch(origin, source, batch)?;
            self.remember(
                &mut changes,
                read.iter().map(|e| (origin, e.source.path.clone())),
            )?;
            self.db.put_catalog(&read)?;
            self.catalog_changed();
            // The batch is the checkpoint only once it is on disk.
            self.db.flush()?;
            report.reread += batch.len();
            tracing::debug!(
                %origin,
                done = report.reread,
                of = plan.reread.len(),
                "sync batch saved"
            );
            // A crash here (kill -9, or this fail point in tests) leaves the
            // finished batches saved: the next sync skips them.
            fail::fail_point!("delta-sync-after-batch", |_| Err(SyncError::Interrupted(
                "delta-sync-after-batch"
            )));
            if self.stopping.load(Ordering::SeqCst) {
                tracing::info!(%origin, done = report.reread, of = plan.reread.len(), "sync stopped at a saved batch for shutdown");
                return Err(SyncError::Stopping);
            }
        }
        self.catalog_changed();
        self.remember(
            &mut changes,
            plan.removed.iter().map(|path| (origin, path.clone())),
        )?;
        for path in &plan.removed {
            self.db.remove_catalog(origin, path)?;
        }
        self.remember(
            &mut changes,
            plan.moved.iter().flat_map(|(old, entry)| {
                [(origin, old.clone()), (origin, entry.source.path.clone())]
            }),
        )?;
        let mut moves = Vec::with_capacity(plan.moved.len());
        for (old, entry) in &plan.moved {
            self.db.remove_catalog(origin, old)?;
            moves.push(((origin, old.clone()), entry.source.clone()));
        }
        let moved: Vec<CatalogEntry> = plan.moved.iter().map(|(_, e)| e.clone()).collect();
        self.db.put_catalog(&moved)?;
        drop(moved);
        let base = base.zip(changes);
        (report.invalidated, report.patched) = self.publish(&moves, base)?;
        let tree = if report.patched { "patched" } else { "built" };
        tracing::info!(
            %origin,
            read = report.reread,
            removed = report.removed,
            moved = report.moved,
            invalidated = report.invalidated,
            tree = %tree,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "origin changes applied"
        );
        Ok(report)
    }

    /// Notes the catalog entries `files` have before they change, unless
    /// noted already or too many are: then `changes` is let go.
    fn remember(
        &self,
        changes: &mut Option<ChangeLog>,
        files: impl IntoIterator<Item = FileKey>,
    ) -> Result<(), SyncError> {
        let Some(log) = changes else {
            return Ok(());
        };
        for (origin, path) in files {
            if log.len() >= CHANGES_REMEMBERED {
                *changes = None;
                return Ok(());
            }
            if !log.contains_key(&(origin, path.clone())) {
                let before = self.db.catalog_entry(origin, &path)?;
                log.insert((origin, path), before);
            }
        }
        Ok(())
    }

    /// The tree served, patched for the changed files in `log` (their
    /// entries from before; the catalog has them as they are now), if the
    /// patch can be made: see [`musicfs_core::tree::update`].
    fn patch(
        &self,
        report: &BuildReport,
        log: ChangeLog,
    ) -> Result<Option<(Updated, Vec<String>)>, SyncError> {
        let old = self.daemon.with_engine(|e, _| e.tree_snapshot());
        let mut changes = Vec::with_capacity(log.len());
        for ((origin, path), before) in log {
            let now = self.db.catalog_entry(origin, &path)?;
            changes.push(Change {
                old: before,
                new: now,
            });
        }
        let mut update = TreeUpdate::new(&old, report, &self.layout, changes);
        while let Some(need) = update.need() {
            let entries = match &need {
                Need::Files(files) => self.db.catalog_files(files)?,
                Need::Playlists => self.db.catalog_playlists()?,
                Need::Folder {
                    origin,
                    folder,
                    children,
                } => self.db.catalog_in_folder(*origin, folder, *children)?,
            };
            match &need {
                Need::Files(files) => {
                    tracing::trace!(
                        files = files.len(),
                        found = entries.len(),
                        "tree patch read"
                    )
                }
                Need::Playlists => tracing::trace!(playlists = entries.len(), "tree patch read"),
                Need::Folder {
                    folder, children, ..
                } => tracing::trace!(
                    folder = %String::from_utf8_lossy(folder.as_bytes()),
                    children,
                    found = entries.len(),
                    "tree patch read"
                ),
            }
            update.supply(entries);
        }
        let updated = match update.finish() {
            Ok(updated) => updated,
            Err(why) => {
                tracing::info!(why = %why, "building the whole tree");
                return Ok(None);
            }
        };
        let old_tracks = updated
            .tops
            .iter()
            .filter_map(|top| old.lookup(Ino::ROOT, top.as_bytes()).ok())
            .flat_map(|dir| old.files_under(dir))
            .filter(|&ino| old.file(ino).is_some_and(|f| f.role == FileRole::Track))
            .filter_map(|ino| old.path_of(ino))
            .collect();
        Ok(Some((updated, old_tracks)))
    }

    /// Patches the tree served for the changes noted in `base` (with the
    /// served tree's report), or rebuilds it from the saved catalog, then
    /// swaps it in and tells the listeners. Returns how many entries and
    /// inodes changed, and whether the tree was patched.
    fn publish(
        &self,
        moves: &[(musicfs_core::engine::SourceKey, musicfs_core::SourceFile)],
        base: Option<(BuildReport, ChangeLog)>,
    ) -> Result<(usize, bool), SyncError> {
        let changed = self.swap_in(moves, base);
        // The catalog (or the entries of a patch) and the old tree were
        // the daemon's peak.
        crate::sys::memory::release_free_memory();
        changed
    }

    fn swap_in(
        &self,
        moves: &[(musicfs_core::engine::SourceKey, musicfs_core::SourceFile)],
        base: Option<(BuildReport, ChangeLog)>,
    ) -> Result<(usize, bool), SyncError> {
        let started = Instant::now();
        let patched = match base {
            Some((report, log)) => self.patch(&report, log)?,
            None => None,
        };
        let was_patched = patched.is_some();
        // Held only for the build and the listeners. A failed read fails
        // the sync: it never leaves tracks out of the tree.
        let (catalog, entries, old_tracks);
        let (tree, report, touched) = match patched {
            Some((updated, tracks)) => {
                tracing::debug!(
                    tops = updated.tops.len(),
                    entries = updated.entries.len(),
                    "tree patched"
                );
                (entries, old_tracks) = (updated.entries, tracks);
                let touched = Touched::Tops {
                    entries: &entries,
                    old_tracks: &old_tracks,
                };
                (updated.tree, updated.report, touched)
            }
            None => {
                catalog = self.db.load_catalog()?;
                let (tree, report) = VirtualTree::build(&self.layout, &catalog);
                (tree, report, Touched::All(&catalog))
            }
        };
        let (diff, new_tree) = self.daemon.with_engine(|e, now| {
            e.move_sources(moves);
            (e.replace_tree(now, tree), e.tree_snapshot())
        });
        *self.unsaved_tree.lock() = Some((Arc::clone(&new_tree), report.clone()));
        *self.served_report.lock() = Some(report);
        let change = TreeChange {
            tree: &new_tree,
            touched,
            diff: &diff,
        };
        for listener in self.listeners.lock().iter() {
            listener(&change);
        }
        let changed = diff.entries.len() + diff.inodes.len();
        tracing::debug!(
            patched = was_patched,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "tree published"
        );
        Ok((changed, was_patched))
    }
}

/// Files a sync changed, each with its catalog entry from before the sync
/// (`None`: it had none).
type ChangeLog = BTreeMap<FileKey, Option<CatalogEntry>>;
