//! The catalog a mount starts from: the saved one, and a first scan (with
//! progress on the terminal, in `musicfs status` and to systemd) of each
//! origin the cache has never seen.

use super::{Cache, MountPlan, NoOriginAnswers, RunError};
use crate::cli::progress::TerminalProgress;
use crate::errors::error_chain;
use crate::library::keep::TagKeeper;
use crate::library::remote_scan::{RemoteScanOptions, scan_remote_blocking};
use crate::library::scan::{self, ScanOptions, ScanProgress};
use crate::library::sync::SyncSource;
use crate::origin::{OriginError, OriginSpec};
use crate::service::control::ScanState;
use crate::service::systemd;
use crate::store::StoreError;
use musicfs_core::{CatalogEntry, OriginId};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Loads the saved catalog, dropping origins whose configuration changed,
/// and scans the origins the cache has never seen (the first mount). Known
/// origins are caught up with in the background by their watchers and
/// pollers. Also says which origins were scanned just now (their pollers
/// need not list them again at once), and, when the catalog is exactly
/// the saved one (nothing scanned, dropped or damaged), the digest of its
/// saved bytes (a saved tree is keyed by it).
pub(super) fn load_catalog(
    plan: &MountPlan,
    sources: &[SyncSource],
    rt: &tokio::runtime::Handle,
    cache: &mut Cache,
    scan: &Arc<ScanState>,
) -> Result<LoadedCatalog, RunError> {
    let db = &*Arc::clone(&cache.db);
    let mut keep = KeepInto {
        cache,
        capacity: plan.cache_size,
        keeper: None,
    };
    let cache = |source| RunError::Cache {
        dir: plan.cache_dir.clone(),
        source,
    };
    let mut scanned_now = vec![false; plan.origins.len()];
    let mut saved_tree = false;
    let mut failed: Vec<(OriginId, &OriginSpec, OriginError)> = Vec::new();
    let (mut entries, damaged, digest) = db.load_catalog_digested().map_err(cache)?;
    let mut as_saved = damaged == 0;
    if damaged > 0 {
        // Damaged records are tracks missing from the tree: rebuild the
        // catalog from the origins before showing anything.
        tracing::warn!(
            damaged,
            "the saved catalog is damaged; rescanning every origin before mounting"
        );
        for i in 0..plan.origins.len() {
            db.set_meta(&format!("origin/{i}"), b"").map_err(cache)?;
        }
    }
    for (i, (spec, source)) in plan.origins.iter().zip(sources).enumerate() {
        let id = OriginId(i as u16);
        let meta_key = format!("origin/{i}");
        let saved = db.get_meta(&meta_key).map_err(cache)?;
        if saved.as_deref() == Some(spec.key().as_bytes()) {
            saved_tree = true;
            continue;
        }
        // New origin, or another origin now has this index: forget what was
        // saved for this index and scan it.
        as_saved = false;
        entries.retain(|e| e.source.origin != id);
        let keeper = if spec.cached && plan.keep_tags {
            keep.keeper()
        } else {
            None
        };
        let report = match scan_origin(id, spec, source, rt, scan, keeper)? {
            Ok(report) => {
                scanned_now[i] = true;
                report
            }
            Err(e) => {
                failed.push((id, spec, e));
                continue;
            }
        };
        db.replace_catalog_for_origin(id, &report).map_err(cache)?;
        db.set_meta(&meta_key, spec.key().as_bytes())
            .map_err(cache)?;
        entries.extend(report);
    }
    // Nothing saved and nothing answered: an empty mount that says it is
    // ready would hide the cause. Unless asked to wait for the origins.
    if !failed.is_empty() && !saved_tree && !scanned_now.contains(&true) && !plan.wait_for_origins {
        return Err(NoOriginAnswers {
            failures: failed
                .into_iter()
                .map(|(_, spec, why)| (spec.describe(), why))
                .collect(),
        }
        .into());
    }
    // An origin that cannot be scanned now is saved as known and empty:
    // its poller's sync reads it whole once it answers.
    for (id, spec, why) in failed {
        tracing::warn!(
            origin = %spec.describe(),
            error = %error_chain(&why),
            "cannot scan this origin now; mounting without its tracks, which appear once it answers"
        );
        db.replace_catalog_for_origin(id, &[]).map_err(cache)?;
        db.set_meta(&format!("origin/{}", id.0), spec.key().as_bytes())
            .map_err(cache)?;
    }
    let configured = plan.origins.len();
    let loaded = entries.len();
    entries.retain(|e| usize::from(e.source.origin.0) < configured);
    as_saved &= entries.len() == loaded;
    keep.finish().map_err(cache)?;
    db.flush().map_err(cache)?;
    Ok(LoadedCatalog {
        entries,
        scanned_now,
        digest: as_saved.then_some(digest),
    })
}

/// Whether every configured origin is one the cache knows as it is
/// configured: then [`load_catalog`] scans nothing (unless the saved
/// catalog turns out damaged).
pub(super) fn nothing_to_scan(plan: &MountPlan, db: &crate::store::Db) -> Result<bool, StoreError> {
    for (i, spec) in plan.origins.iter().enumerate() {
        if db.get_meta(&format!("origin/{i}"))?.as_deref() != Some(spec.key().as_bytes()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What [`load_catalog`] gives.
pub(super) struct LoadedCatalog {
    /// Every entry, saved and scanned just now.
    pub entries: Vec<CatalogEntry>,
    /// Which origins were scanned just now.
    pub scanned_now: Vec<bool>,
    /// The digest of the saved catalog, when `entries` is exactly it.
    pub digest: Option<u128>,
}

/// Where a first scan keeps the tag bytes it read: the cache, through one
/// [`TagKeeper`] made when the first origin is scanned.
struct KeepInto<'a> {
    cache: &'a mut Cache,
    capacity: u64,
    keeper: Option<Arc<TagKeeper>>,
}

impl KeepInto<'_> {
    /// The keeper, made at the first call; `None` if it cannot start (the
    /// scan then keeps nothing, and the first tag reads go to the origin).
    fn keeper(&mut self) -> Option<Arc<TagKeeper>> {
        if self.keeper.is_none() {
            let cache = &*self.cache;
            match TagKeeper::new(
                Arc::clone(&cache.store),
                Arc::clone(&cache.db),
                self.capacity,
                cache.chunk_index.iter().map(|c| c.0),
            ) {
                Ok(keeper) => self.keeper = Some(Arc::new(keeper)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the tag keeper; the first reads of tags will go to the origins");
                    return None;
                }
            }
        }
        self.keeper.clone()
    }

    /// Writes what is left; the engine that starts next loads the new
    /// index entries with the others.
    fn finish(self) -> Result<(), StoreError> {
        if let Some(keeper) = self.keeper {
            let report = keeper.finish()?;
            self.cache.chunk_index.extend(report.indexed);
        }
        Ok(())
    }
}

/// Scan progress for a first scan: the terminal bar, `musicfs status`, and
/// systemd (STATUS= lines, and EXTEND_TIMEOUT_USEC so a long first scan is
/// not taken for a hung start).
struct FirstScanProgress {
    bar: TerminalProgress,
    state: Arc<ScanState>,
    last_notice: parking_lot::Mutex<Instant>,
}

impl FirstScanProgress {
    const NOTICE_EVERY: Duration = Duration::from_secs(2);

    fn new(state: Arc<ScanState>) -> FirstScanProgress {
        FirstScanProgress {
            bar: TerminalProgress::new(),
            state,
            // The first progress is told at once, then every NOTICE_EVERY.
            last_notice: parking_lot::Mutex::new(
                Instant::now()
                    .checked_sub(Self::NOTICE_EVERY)
                    .unwrap_or_else(Instant::now),
            ),
        }
    }

    fn tell_systemd(&self) {
        let mut last = self.last_notice.lock();
        if last.elapsed() < Self::NOTICE_EVERY {
            return;
        }
        *last = Instant::now();
        let done = self.state.scanned.load(Ordering::Relaxed);
        let seen = self.state.seen.load(Ordering::Relaxed);
        systemd::status(&format!("first scan: {done} of {seen} files"));
        systemd::extend_timeout(Self::NOTICE_EVERY * 5);
    }
}

impl ScanProgress for FirstScanProgress {
    fn discovered(&self, n: u64) {
        self.bar.discovered(n);
        self.state.seen.fetch_add(n, Ordering::Relaxed);
        self.tell_systemd();
    }
    fn scanned(&self, n: u64) {
        self.bar.scanned(n);
        self.state.scanned.fetch_add(n, Ordering::Relaxed);
        self.tell_systemd();
    }
    fn finish(&self) {
        self.bar.finish();
    }
}

/// Scans a new origin, reporting progress (bar, `musicfs status`, systemd).
///
/// A remote origin that cannot be scanned now (unreachable, refused) gives
/// the inner `Err` with every cause: the mount comes up with the other
/// origins' tracks (or the saved tree), and the origin's poller scans it
/// once it answers (its sync is checkpointed, so the work is not lost if
/// that is cut short too). A local origin that cannot be walked is an
/// error: it was checked a moment ago.
fn scan_origin(
    id: OriginId,
    spec: &OriginSpec,
    source: &SyncSource,
    rt: &tokio::runtime::Handle,
    state: &Arc<ScanState>,
    keeper: Option<Arc<TagKeeper>>,
) -> Result<Result<Vec<CatalogEntry>, OriginError>, RunError> {
    let what = spec.describe();
    *state.what.lock() = what.clone();
    tracing::info!(origin = %what, "scanning a new origin; the mount comes up when it is done");
    let progress = FirstScanProgress::new(Arc::clone(state));
    let started = Instant::now();
    let entries = match source {
        SyncSource::Local(root) => {
            let options = ScanOptions {
                keep: keeper,
                ..ScanOptions::default()
            };
            scan::scan_local(id, root, &options, &progress)
                .map(|r| Ok(r.entries))
                .map_err(|source| RunError::Scan {
                    origin: what.clone(),
                    source,
                })
        }
        SyncSource::Remote(remote) => match scan_remote_blocking(
            rt,
            id,
            Arc::clone(remote),
            &RemoteScanOptions {
                keep: keeper,
                ..RemoteScanOptions::default()
            },
            &progress,
        ) {
            Ok(report) => {
                tracing::info!(
                    origin = %what,
                    files = report.entries.len(),
                    unreadable = report.unreadable,
                    fetched_bytes = report.bytes_fetched,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "remote origin scanned"
                );
                Ok(Ok(report.entries))
            }
            Err(e) => Ok(Err(e)),
        },
    };
    state.what.lock().clear();
    entries
}
