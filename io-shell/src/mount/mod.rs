//! `musicfs mount`: from command-line arguments to a running mount, and a
//! clean exit.
//!
//! Order of events ([`run`], one function per step): validate everything
//! ([`plan`]: bad arguments are a one-line error and exit code 2, before
//! anything is touched); open the cache; scan the origins the cache does not
//! know yet ([`first_scan`], with a progress bar); build the tree; start the
//! daemon and its services; mount; serve until a signal ([`signals`]) or an
//! unmount; then stop fetching, save the cache state and exit 0.

mod first_scan;
pub mod plan;
mod signals;

pub use plan::{DEFAULT_UMASK, MountPlan, PlanError};
pub use signals::EXIT_FORCED;

use crate::errors::{error_chain, io_reason};
use crate::exec::daemon::Daemon;
use crate::kernel::fuse::MusicFs;
use crate::kernel::guard::Guard;
use crate::kernel::notify::{Invalidator, PageStore};
use crate::kernel::session::{
    self, FUSE_DEVICE, FuseDeviceError, KernelMount, MountOptions, SessionError,
};
use crate::kernel::unmount::lazy_unmount;
use crate::library::changes;
use crate::library::sync::{SyncSource, Syncer, Touched};
use crate::library::watch;
use crate::origin::{LocalOrigin, Origin, OriginError, OriginKind, OriginSpec, RemoteOrigin};
use crate::pins::fill::PinFiller;
use crate::search::SearchError;
use crate::search::live::{LiveSearch, SearchSlot};
use crate::service::control::{Control, ControlSocket, MountStatus};
use crate::service::metrics;
use crate::service::supervisor::{RestartPolicy, Supervisor, TaskError};
use crate::service::systemd;
use crate::store::tree_cache::{self, TreeKey};
use crate::store::{CacheOwner, ChunkStore, Db, StoreError};
use musicfs_core::engine::{Config as EngineConfig, Engine};
use musicfs_core::manifest::Manifest;
use musicfs_core::tree::{BuildReport, VirtualTree};
use musicfs_core::{ChunkId, OriginId, OriginPath};
use signals::{Signals, wait_for_stop};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A failure while running: exit code 1. `main` prints it with its causes,
/// one a line.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The FUSE device cannot be used.
    #[error(transparent)]
    FuseDevice(#[from] FuseDeviceError),
    /// The tokio runtime could not start.
    #[error("cannot start the runtime")]
    Runtime(#[source] io::Error),
    /// `--metrics-addr` cannot be served.
    #[error("cannot serve metrics on {addr}: {}", io_reason(.source))]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// Another daemon holds the cache.
    #[error(transparent)]
    CacheInUse(#[from] CacheInUse),
    /// The cache cannot be opened or read.
    #[error("cannot use the cache in '{}'", dir.display())]
    Cache {
        /// The cache directory.
        dir: PathBuf,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// An origin cannot be set up (a remote origin's client).
    #[error("cannot set up origin '{origin}'")]
    Origin {
        /// The origin, described without secrets.
        origin: String,
        /// Why.
        #[source]
        source: OriginError,
    },
    /// A local origin cannot be walked for its first scan.
    #[error("cannot scan origin '{origin}'")]
    Scan {
        /// The origin, described.
        origin: String,
        /// The walk's error.
        #[source]
        source: io::Error,
    },
    /// A first mount where no origin answered.
    #[error(transparent)]
    NoOriginAnswers(#[from] NoOriginAnswers),
    /// The kernel mount could not be made.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The FUSE session's thread could not start.
    #[error("cannot start the FUSE thread")]
    Thread(#[source] io::Error),
}

impl RunError {
    fn cache(dir: &Path) -> impl FnOnce(StoreError) -> RunError + '_ {
        move |source| RunError::Cache {
            dir: dir.to_path_buf(),
            source,
        }
    }
}

/// The cache directory is in use by another daemon (sled's lock is held).
#[derive(Debug, thiserror::Error)]
#[error(
    "cache dir '{}' is in use by {}; two mounts cannot share a cache: give this one its own --cache-dir",
    cache_dir.display(),
    match owner {
        Some(o) => format!("another MusicFS mount (pid {}, mounted at {})", o.pid, o.mountpoint.display()),
        None => "another MusicFS process".to_owned(),
    }
)]
pub struct CacheInUse {
    /// The cache directory.
    pub cache_dir: PathBuf,
    /// Who holds it, if its owner file says so.
    pub owner: Option<CacheOwner>,
}

/// A first mount (nothing saved) where no origin answered.
#[derive(Debug, thiserror::Error)]
#[error(
    "no origin answers, and there is no saved tree to mount: {}. \
     Fix the origins, or use --wait-for-origins to mount now (empty) and fill in once one answers",
    failures.iter().map(|(what, why)| format!("origin '{what}': {}", error_chain(why))).collect::<Vec<_>>().join("; ")
)]
pub struct NoOriginAnswers {
    /// Each origin (described) and why it could not be scanned.
    pub failures: Vec<(String, OriginError)>,
}

/// How long a graceful shutdown waits for reads in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Records written in one run above which a clean exit reopens the
/// database so that sled snapshots them ([`close_database`]). A first scan
/// of 20,000 tracks writes about 62,000 (a catalog entry, a chunk map and
/// chunk index entries per file); playing adds one per chunk read (its
/// last access), some 500 per CD-quality track. Below this the next
/// open's replay takes a few tens of milliseconds: not worth an open more
/// at every stop.
const COMPACT_AFTER_RECORDS: u64 = 20_000;

/// How long a shutdown waits for a running sync to reach its next saved
/// batch (or for the search build to finish).
const SYNC_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Mounts and serves until unmounted or signalled.
pub fn run(plan: MountPlan) -> Result<(), RunError> {
    let started = Instant::now();
    // Before anything slow: a mount that cannot work fails now, not after
    // a first scan of many minutes.
    session::check_fuse_device(Path::new(FUSE_DEVICE))?;
    // Packs, chunk files read side by side, the index, the search index
    // and the origins' connections share the descriptors; EMFILE only
    // delays reads (the store reports it as transient), but need not come.
    match crate::sys::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::debug!(error = %e, "cannot raise the open files limit"),
    }
    let runtime = start_runtime()?;
    let mut signals = Signals::install(&runtime, &plan.mountpoint);
    let metrics_listener = bind_metrics(plan.metrics_addr)?;
    let status = MountStatus::new(
        &plan.mountpoint,
        plan.origins.iter().map(OriginSpec::describe).collect(),
    );
    let socket = bind_control_socket(&status, runtime.handle());
    let mut cache = open_cache(&plan)?;
    let origins = open_origins(&plan)?;
    status.set_phase("scanning");
    let library = load_library(&plan, &origins, runtime.handle(), &mut cache, &status)?;
    let db = Arc::clone(&cache.db);
    let store = Arc::clone(&cache.store);
    let save_tree = library.save_tree;
    let daemon = start_daemon(
        &plan,
        library.tree,
        library.manifests,
        cache,
        &origins,
        runtime.handle(),
    )?;
    // The tree as built from the loaded catalog, before any sync swaps it.
    let save_tree = save_tree.map(|(key, report)| (key, report, daemon.tree()));
    let tracks = library.report.tracks;
    let served = Served {
        unsaved: library.unsaved.then(|| daemon.tree()),
        report: library.report,
    };
    let services = start_services(
        &plan,
        &daemon,
        &db,
        &origins,
        served,
        &runtime,
        metrics_listener,
    )?;
    let kernel = mount_kernel(&plan, &daemon, &services, signals.as_ref())?;
    tracing::info!(
        mountpoint = %plan.mountpoint.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        rss_mib = crate::sys::memory::resident_mib(),
        "mounted"
    );
    if let Some(socket) = &socket {
        socket.serve(Arc::new(Control {
            status: Arc::clone(&status),
            daemon: Arc::clone(&daemon),
            supervisor: Arc::clone(&services.supervisor),
            syncer: Arc::clone(&services.syncer),
            search: Arc::clone(&services.search),
            pin_filler: Arc::clone(&services.pin_filler),
            cache_dir: plan.cache_dir.clone(),
            metrics_addr: services.metrics_addr,
        }));
    }
    start_background(&plan, &daemon, &services, &origins, &library.scanned_now);
    if let Some((key, report, tree)) = save_tree {
        save_tree_behind(&plan.cache_dir, key, report, tree);
    }
    status.set_phase("serving");
    systemd::ready(&format!(
        "serving {} tracks at {}",
        tracks,
        plan.mountpoint.display()
    ));
    let watchdog = systemd::start_watchdog(&plan.mountpoint);

    let signal = runtime.block_on(wait_for_stop(signals.as_mut(), kernel.ended));
    systemd::stopping();
    status.set_phase("stopping");
    if let Some(name) = signal {
        tracing::info!(
            signal = name,
            "shutting down (a second signal exits at once)"
        );
    }
    let saved = shut_down(&runtime, &daemon, &db, &store, &services, &plan.cache_dir);
    unmount(
        &plan.mountpoint,
        kernel.mount,
        kernel.thread,
        signal.is_some(),
    );
    if let Some(guard) = kernel.guard {
        guard.stand_down();
    }
    if let Some(stop) = watchdog {
        stop.store(true, Ordering::Relaxed);
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    // The last users of the database, so that it can be closed here (one
    // whose flush failed is left to the exit).
    drop((socket, services, daemon));
    if saved.is_ok() {
        close_database(db);
    }
    CacheOwner::remove_if_mine(&plan.cache_dir);
    saved?;
    tracing::info!("unmounted; bye");
    Ok(())
}

/// Closes the database at a clean exit. After a run that wrote many
/// records (a first scan, a large sync) it is opened once more, so that the
/// next mount does not spend most of a second replaying them
/// ([`Db::close_compacted`]).
fn close_database(db: Arc<Db>) {
    let Ok(db) = Arc::try_unwrap(db) else {
        // Flushed already: nothing is lost, the process's exit closes it.
        tracing::warn!(
            "the cache database is still in use at exit (a bug); it closes with the process"
        );
        return;
    };
    let written = db.records_written();
    let started = Instant::now();
    match db.close_compacted(COMPACT_AFTER_RECORDS) {
        Ok(true) => tracing::info!(
            records = written,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shutdown: database closed, and reopened once so that the next open need not replay this run's log"
        ),
        Ok(false) => tracing::info!(records = written, "shutdown: database closed"),
        Err(e) => {
            tracing::warn!(error = %e, "could not close the cache database cleanly; the next open replays its log")
        }
    }
}

/// Saves the tree just built for the next mount, on a thread of its own
/// (the mount does not wait; a save cut short by an exit leaves only a
/// temporary file, and the next mount builds the tree as it would anyway).
fn save_tree_behind(cache_dir: &Path, key: TreeKey, report: BuildReport, tree: Arc<VirtualTree>) {
    let dir = cache_dir.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("save-tree".into())
        .spawn(move || {
            // Beside the readers, not before them.
            if let Err(e) = crate::sys::lower_this_threads_priority() {
                tracing::debug!(error = %e, "cannot lower the priority of the tree's save");
            }
            let started = Instant::now();
            match tree_cache::save(&dir, key, &tree, &report) {
                Ok(()) => tracing::debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "tree saved for the next mount"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot save the tree for the next mount; it will be built again"
                ),
            }
            drop(tree);
            crate::sys::memory::release_free_memory();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start saving the tree for the next mount");
    }
}

/// The tokio runtime: two workers (most work is on the blocking pool).
fn start_runtime() -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("musicfs-io")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)
}

/// Binds `--metrics-addr` now, so that a taken port fails the mount before
/// any scan.
fn bind_metrics(addr: Option<SocketAddr>) -> Result<Option<std::net::TcpListener>, RunError> {
    addr.map(|addr| metrics::bind(addr).map_err(|source| RunError::Metrics { addr, source }))
        .transpose()
}

/// The control socket, up from the start so that a long first scan can be
/// watched; a mount without one still works.
fn bind_control_socket(
    status: &Arc<MountStatus>,
    rt: &tokio::runtime::Handle,
) -> Option<ControlSocket> {
    match ControlSocket::bind(status, rt) {
        Ok(socket) => Some(socket),
        Err(e) => {
            tracing::warn!(error = %e, "no control socket; `musicfs status` will not see this mount");
            None
        }
    }
}

/// The cache directory, opened.
struct Cache {
    db: Arc<Db>,
    store: Arc<ChunkStore>,
    /// The chunk files the index knows: id, length, last access (read by
    /// [`load_library`]).
    chunk_index: Vec<(ChunkId, u32, u64)>,
    /// Set when the database was damaged and set aside: the chunk index is
    /// rebuilt from the chunk files.
    repaired: Option<String>,
}

/// Opens the cache: the database first, whose lock keeps a second daemon
/// out before the chunk store empties the temp directory (which the first
/// one uses); then the chunk store and its index (rebuilt from the chunk
/// files if the database was damaged).
fn open_cache(plan: &MountPlan) -> Result<Cache, RunError> {
    let dir = &plan.cache_dir;
    let started = Instant::now();
    let opened = Db::open(dir).map_err(|e| {
        if e.is_locked() {
            RunError::CacheInUse(CacheInUse {
                cache_dir: dir.clone(),
                owner: CacheOwner::read(dir),
            })
        } else {
            RunError::cache(dir)(e)
        }
    })?;
    if let Err(e) = CacheOwner::this_process(&plan.mountpoint).write(dir) {
        tracing::warn!(error = %e, "cannot write the cache's owner file");
    }
    let store = Arc::new(ChunkStore::open(dir).map_err(RunError::cache(dir))?);
    let db = Arc::new(opened.db);
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cache database open"
    );
    if let Some(what) = &opened.repaired {
        tracing::warn!(what = %what, "the cache database was damaged and has been rebuilt");
    }
    Ok(Cache {
        db,
        store,
        chunk_index: Vec::new(),
        repaired: opened.repaired,
    })
}

/// Each origin once, shared by the first scan, the reads and the syncs.
struct Origins {
    /// What reads are served from, by origin id.
    readers: Vec<Arc<dyn Origin>>,
    /// How each origin is synced, by origin id.
    sources: Vec<SyncSource>,
}

fn open_origins(plan: &MountPlan) -> Result<Origins, RunError> {
    let mut readers: Vec<Arc<dyn Origin>> = Vec::with_capacity(plan.origins.len());
    let mut sources: Vec<SyncSource> = Vec::with_capacity(plan.origins.len());
    for (i, spec) in plan.origins.iter().enumerate() {
        let id = OriginId(i as u16);
        match &spec.kind {
            OriginKind::Local(root) => {
                readers.push(Arc::new(LocalOrigin::new(id, root.clone())));
                sources.push(SyncSource::Local(root.clone()));
            }
            OriginKind::Remote(remote) => {
                let opened: Arc<dyn RemoteOrigin> =
                    remote.open(id).map_err(|source| RunError::Origin {
                        origin: spec.describe(),
                        source,
                    })?;
                readers.push(Arc::clone(&opened) as Arc<dyn Origin>);
                sources.push(SyncSource::Remote(opened));
            }
        }
    }
    Ok(Origins { readers, sources })
}

/// The tree the daemon starts serving, for the syncer.
struct Served {
    /// Its build report.
    report: BuildReport,
    /// The tree, when it is not saved for the next mount (the syncer then
    /// saves it at shutdown).
    unsaved: Option<Arc<VirtualTree>>,
}

/// The tree the mount starts with.
struct Library {
    tree: VirtualTree,
    /// Set when the tree was built (not loaded) from the saved catalog:
    /// the key to save it under, and its build report.
    save_tree: Option<(TreeKey, BuildReport)>,
    /// Set when the tree was built from a catalog with no key yet (a first
    /// scan's): the syncer saves the tree at shutdown.
    unsaved: bool,
    /// The chunk maps the cache holds, by origin file.
    manifests: Vec<(OriginId, OriginPath, Manifest)>,
    /// Its build report.
    report: BuildReport,
    /// Which origins were scanned just now (their pollers need not list
    /// them again at once).
    scanned_now: Vec<bool>,
}

/// The saved catalog plus a first scan of new origins, built into the tree.
///
/// A remount (every origin known, nothing to scan) reads what the cache
/// remembers side by side: the catalog, the chunk index, the chunk maps
/// and the saved tree are independent, and on a large library each is a
/// good part of a remount. The saved tree is decoded before its key (the
/// catalog's digest) is known, and used only if the key then matches.
/// When the catalog is not the saved one after all (damaged records
/// rescanned, an origin dropped), the chunk index and maps are read again
/// after the scan, which may have added to them.
fn load_library(
    plan: &MountPlan,
    origins: &Origins,
    rt: &tokio::runtime::Handle,
    cache: &mut Cache,
    status: &MountStatus,
) -> Result<Library, RunError> {
    let db = Arc::clone(&cache.db);
    let ahead = first_scan::nothing_to_scan(plan, &db).map_err(RunError::cache(&plan.cache_dir))?;
    if !ahead {
        // A first scan keeps tag bytes: it must know the chunks already
        // cached. (The chunk maps are read after it, with what it kept.)
        cache.chunk_index = load_chunk_index(&db, cache.repaired.is_some(), &cache.store)
            .map_err(RunError::cache(&plan.cache_dir))?;
    }
    let repaired = cache.repaired.is_some();
    // Beside the catalog's load: the saved tree. What the cache remembers
    // (the chunk index, unless read before a scan, and the chunk maps) is
    // read beside the tree's build, which leaves a core to spare: on
    // 200,000 tracks, reading them beside the catalog and then building
    // alone took 0.3 s more.
    let (loaded_catalog, saved) = std::thread::scope(|s| {
        let saved = ahead.then(|| {
            s.spawn(|| {
                timed("saved tree read", || {
                    tree_cache::load_any(&plan.cache_dir, plan.layout.source())
                })
            })
        });
        let loaded = timed("catalog ready", || {
            first_scan::load_catalog(plan, &origins.sources, rt, cache, &status.scan)
        });
        (loaded, saved.and_then(join))
    });
    let first_scan::LoadedCatalog {
        entries: catalog,
        scanned_now,
        digest,
    } = loaded_catalog?;
    let key = digest.and_then(|d| TreeKey::new(plan.layout.source(), d));
    // A saved tree of another catalog (a sync whose tree was not saved) is
    // let go here, before the build, not held beside it.
    let saved = saved
        .and_then(|(saved_key, tree, report)| (Some(saved_key) == key).then_some((tree, report)));
    let (index, manifests, (tree, report, loaded)) = std::thread::scope(|s| {
        let (db, store) = (&cache.db, &cache.store);
        // With the tree in hand, nothing is built: both on a core each.
        let side_by_side = saved.is_some();
        let remembered = s.spawn(move || {
            if ahead {
                let (index, manifests) = load_remembered(db, repaired, store, side_by_side);
                (Some(index), manifests)
            } else {
                // The index was read before the scan, which extended it.
                (None, timed("chunk maps loaded", || db.load_manifests()))
            }
        });
        // Not read ahead: read it now if it is this catalog's.
        let saved = saved.or_else(|| {
            key.filter(|_| !ahead)
                .and_then(|key| tree_cache::load(&plan.cache_dir, key))
        });
        let loaded = saved.is_some();
        let (tree, report) = saved
            .unwrap_or_else(|| timed("tree built", || VirtualTree::build(&plan.layout, &catalog)));
        let (index, manifests) = join(remembered);
        (index, manifests, (tree, report, loaded))
    });
    if let Some(index) = index {
        cache.chunk_index = index.map_err(RunError::cache(&plan.cache_dir))?;
    }
    let manifests = manifests.map_err(RunError::cache(&plan.cache_dir))?;
    tracing::info!(
        saved_tree = loaded,
        tracks = report.tracks,
        mirrors = report.mirrors,
        covers = report.covers,
        renamed = report.renamed,
        unreadable = report.unreadable,
        lyrics = report.lyrics,
        images = report.images,
        artist_images = report.artist_images,
        cue_sheets = report.cues,
        playlists = report.playlists,
        playlist_entries_not_in_library = report.playlist_entries_missing,
        sidecars_left_out = report.sidecars_left_out,
        "tree ready"
    );
    // The tree is all a mount keeps of the catalog: syncs read it from the
    // database. Let go on a thread of its own, beside the mount's last
    // steps (on 200,000 tracks, freeing it and returning the pages took
    // some 60 ms before the mount).
    let free = move || {
        drop(catalog);
        crate::sys::memory::release_free_memory();
    };
    if let Err(e) = std::thread::Builder::new()
        .name("catalog-free".into())
        .spawn(free)
    {
        tracing::debug!(error = %e, "cannot free the catalog on a thread of its own");
    }
    Ok(Library {
        tree,
        // A tree just built is saved for the next mount, under its key.
        save_tree: key.filter(|_| !loaded).map(|key| (key, report.clone())),
        unsaved: key.is_none() && !loaded,
        manifests,
        report,
        scanned_now,
    })
}

/// The result of a scoped thread (its panic goes on in the caller).
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs `job`, and logs (debug) how long it took.
fn timed<R>(what: &'static str, job: impl FnOnce() -> R) -> R {
    let started = Instant::now();
    let out = job();
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "{what}");
    out
}

/// The chunk index and the chunk maps, read from the database (the index
/// rebuilt from the chunk files if the database was damaged): on two
/// threads `side_by_side`, else one after the other, on one core beside
/// the tree's build on the other (on two threads, the three shared the
/// two cores, and the build, the longest, took a third more).
#[allow(clippy::type_complexity)]
fn load_remembered(
    db: &Db,
    repaired: bool,
    store: &ChunkStore,
    side_by_side: bool,
) -> (
    Result<Vec<(ChunkId, u32, u64)>, StoreError>,
    Result<Vec<(OriginId, OriginPath, Manifest)>, StoreError>,
) {
    let manifests = || timed("chunk maps loaded", || db.load_manifests());
    if side_by_side {
        std::thread::scope(|s| {
            let manifests = s.spawn(manifests);
            (load_chunk_index(db, repaired, store), join(manifests))
        })
    } else {
        let index = load_chunk_index(db, repaired, store);
        (index, manifests())
    }
}

/// The chunk index from the database, or rebuilt from the chunk files if
/// the database was damaged.
fn load_chunk_index(
    db: &Db,
    repaired: bool,
    store: &ChunkStore,
) -> Result<Vec<(ChunkId, u32, u64)>, StoreError> {
    timed("chunk index loaded", || {
        if repaired {
            rebuild_chunk_index(store, db)
        } else {
            db.load_chunk_index()
        }
    })
}

/// The engine, with what the cache remembers (chunk maps, the chunk index,
/// pins), and the daemon that runs it.
fn start_daemon(
    plan: &MountPlan,
    tree: VirtualTree,
    manifests: Vec<(OriginId, OriginPath, Manifest)>,
    cache: Cache,
    origins: &Origins,
    rt: &tokio::runtime::Handle,
) -> Result<Arc<Daemon>, RunError> {
    let Cache {
        db,
        store,
        chunk_index,
        ..
    } = cache;
    // The index is final here (a first scan is over): packed chunks it
    // does not name were evicted in an earlier run or never indexed.
    timed("packs checked against the index", || {
        store.forget_unindexed(&chunk_index)
    });
    let manifests = manifests
        .into_iter()
        .map(|(origin, path, m)| ((origin, path), m));
    let config = EngineConfig {
        read_timeout: plan.read_timeout,
        cache_capacity_bytes: plan.cache_size,
        pin_share_pct: plan.pin_share,
        uncached_origins: plan
            .origins
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.cached)
            .map(|(i, _)| OriginId(i as u16))
            .collect(),
        fill_behind_origins: plan
            .origins
            .iter()
            .enumerate()
            .filter(|(_, o)| o.fill_behind)
            .map(|(i, _)| OriginId(i as u16))
            .collect(),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, tree, manifests, chunk_index, seed_from_clock());
    for i in 0..plan.origins.len() {
        engine.track_origin(musicfs_core::Time::ZERO, OriginId(i as u16));
    }
    engine.restore_pins(db.load_pins().map_err(RunError::cache(&plan.cache_dir))?);
    Ok(Daemon::new(
        engine,
        rt.clone(),
        origins.readers.clone(),
        store,
        db,
    ))
}

/// What runs beside the daemon.
struct Services {
    supervisor: Arc<Supervisor>,
    syncer: Arc<Syncer>,
    pin_filler: Arc<PinFiller>,
    /// The search index, once the background task opened it.
    search: Arc<SearchSlot>,
    /// Where metrics are served, if they are.
    metrics_addr: Option<SocketAddr>,
}

/// The supervisor, the syncer and who hears of its tree changes (the pin
/// filler, `--on-change` and `--notify-mpd`, the search index), and the
/// metrics endpoint.
fn start_services(
    plan: &MountPlan,
    daemon: &Arc<Daemon>,
    db: &Arc<Db>,
    origins: &Origins,
    served: Served,
    runtime: &tokio::runtime::Runtime,
    metrics_listener: Option<std::net::TcpListener>,
) -> Result<Services, RunError> {
    let supervisor = Arc::new(Supervisor::new(
        runtime.handle().clone(),
        RestartPolicy::default(),
    ));
    let syncer = Arc::new(Syncer::new(
        Arc::clone(daemon),
        Arc::clone(db),
        plan.layout.clone(),
        origins.sources.clone(),
        Some(served.report.clone()),
        served.unsaved.map(|tree| (tree, served.report)),
    ));
    let metrics_addr = match metrics_listener {
        Some(listener) => {
            let labels = plan
                .origins
                .iter()
                .enumerate()
                .map(|(i, o)| o.name.clone().unwrap_or_else(|| i.to_string()))
                .collect();
            let metrics = metrics::Metrics::new(Arc::clone(daemon), Arc::clone(&syncer), labels);
            let requested = plan.metrics_addr;
            let addr = metrics::serve(listener, metrics, runtime.handle()).map_err(|source| {
                RunError::Metrics {
                    addr: requested.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                    source,
                }
            })?;
            tracing::info!(url = %format!("http://{addr}/metrics"), "serving metrics");
            Some(addr)
        }
        None => None,
    };
    let pin_filler = PinFiller::new(Arc::clone(daemon));
    {
        // A sync may have changed pinned files (a retag): fetch them again.
        let filler = Arc::clone(&pin_filler);
        syncer.on_tree_change(Box::new(move |_| filler.kick()));
    }
    if plan.change_targets.any() {
        let (queue, receiver) = changes::queue();
        syncer.on_tree_change(Box::new(move |change| queue.push(change.tree, change.diff)));
        runtime.spawn(changes::run(
            receiver,
            plan.mountpoint.clone(),
            plan.change_targets.clone(),
        ));
    }
    // The search index opens in the background (start_background): a
    // rebuild must not delay the mount. Until it is ready, searches answer
    // from the saved index.
    let search = Arc::new(SearchSlot::default());
    {
        let search = Arc::clone(&search);
        syncer.on_tree_change(Box::new(move |change| {
            if let Some(live) = search.get()
                && let Err(e) = match change.touched {
                    Touched::All(catalog) => live.tree_changed(change.tree, catalog, None),
                    Touched::Tops {
                        entries,
                        old_tracks,
                    } => live.tree_changed(change.tree, entries, Some(old_tracks)),
                }
            {
                tracing::warn!(error = %e, "could not update the search index");
            }
        }));
    }
    Ok(Services {
        supervisor,
        syncer,
        pin_filler,
        search,
        metrics_addr,
    })
}

/// The kernel mount, served.
struct Kernel {
    mount: KernelMount,
    thread: std::thread::JoinHandle<io::Result<()>>,
    /// Hears when the session ended (someone unmounted).
    ended: tokio::sync::oneshot::Receiver<()>,
    /// Aborts the connection if this process dies mounted; stood down at
    /// a clean exit.
    guard: Option<Guard>,
}

/// Mounts, tells the kernel of every tree change from now on, and serves
/// the FUSE session on its own thread.
fn mount_kernel(
    plan: &MountPlan,
    daemon: &Arc<Daemon>,
    services: &Services,
    signals: Option<&Signals>,
) -> Result<Kernel, RunError> {
    let fs = MusicFs::new(
        Arc::clone(daemon),
        plan.ownership,
        Arc::clone(&services.search),
    )
    .with_xattrs(plan.xattrs)
    .with_kernel_passthrough(
        plan.origins
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.cached)
            .filter_map(|(i, o)| match &o.kind {
                OriginKind::Local(root) => Some((OriginId(i as u16), root.clone())),
                OriginKind::Remote(_) => None,
            })
            .collect(),
    );
    let options = MountOptions {
        mountpoint: plan.mountpoint.clone(),
        source: fsname(plan),
        allow_other: plan.allow_other,
    };
    let (session, mount) = session::open_session(fs, &options)?;
    // Tests: a signal between mount(2) and the flag below.
    fail::fail_point!("mounted-before-serving");
    // The kernel mount exists from here on: a signal must now unmount it
    // through the graceful shutdown (not exit and leave a dead mount).
    if let Some(s) = signals {
        s.mounted();
    }
    // Kept bytes a tag scan reads next go to the kernel's page cache, if
    // a guard can abort the connection should the daemon die while it
    // hands pages over (see kernel::guard).
    let guard = match Guard::arm(&plan.mountpoint) {
        Ok(guard) => {
            daemon.set_kernel_pages(Arc::new(PageStore::new(session.notifier())));
            Some(guard)
        }
        Err(reason) => {
            tracing::info!(%reason, "no connection guard: a tag scan's read-ahead is not handed to the kernel's page cache");
            None
        }
    };
    // The kernel hears of a tree change before anyone else.
    let invalidator = Invalidator::new(session.notifier());
    services
        .syncer
        .on_tree_change_first(Box::new(move |change| {
            invalidator.tree_changed(change.diff)
        }));
    let serving = session::serve(session).map_err(RunError::Thread)?;
    Ok(Kernel {
        mount,
        thread: serving.thread,
        ended: serving.ended,
        guard,
    })
}

/// The mount's source in the mount table: `musicfs:<first origin>`.
fn fsname(plan: &MountPlan) -> String {
    match plan.origins.first().map(|o| &o.kind) {
        Some(OriginKind::Local(p)) => format!("musicfs:{}", p.display()),
        Some(OriginKind::Remote(r)) => format!("musicfs:{}", r.key()),
        None => "musicfs".into(),
    }
}

/// The supervised background tasks: the daemon's loops, watchers and
/// pollers, the pin filler and the search index's opening.
fn start_background(
    plan: &MountPlan,
    daemon: &Arc<Daemon>,
    services: &Services,
    origins: &Origins,
    scanned_now: &[bool],
) {
    let supervisor = &services.supervisor;
    spawn_background(
        supervisor,
        daemon,
        &services.syncer,
        &origins.sources,
        scanned_now,
        plan.poll_interval,
    );
    {
        let filler = Arc::clone(&services.pin_filler);
        supervisor.spawn(
            "pins",
            false,
            Arc::new(move || {
                let filler = Arc::clone(&filler);
                Box::pin(async move {
                    filler.run().await;
                    Err(TaskError::Ended("pin filler"))
                })
            }),
        );
    }
    open_search(
        supervisor,
        &services.syncer,
        daemon,
        &plan.cache_dir,
        &services.search,
    );
}

/// Graceful shutdown, in order: no new work; background tasks stopped;
/// reads in flight drained (bounded: a slow origin ends in EIO, never a
/// hang); state flushed. Each step is logged (`shutdown: ...`), so the
/// order can be checked from outside (tests/e2e/lifecycle.rs). A database
/// that cannot be flushed is the run's error, once the mount is gone.
fn shut_down(
    runtime: &tokio::runtime::Runtime,
    daemon: &Arc<Daemon>,
    db: &Db,
    store: &ChunkStore,
    services: &Services,
    cache_dir: &Path,
) -> Result<(), RunError> {
    daemon.with_engine(|e, _| e.begin_shutdown());
    tracing::info!("shutdown: new reads get EIO");
    services.supervisor.stop_all();
    // A sync (or the search build) on the blocking pool outlives its
    // aborted task: wait for it to reach a saved batch, so that nothing
    // writes the catalog or the index after they are saved below.
    let quiet = services.syncer.stop(SYNC_STOP_TIMEOUT);
    if !quiet {
        tracing::warn!(timeout = ?SYNC_STOP_TIMEOUT, "a sync or the search build still runs; it is left to finish or to resume at the next mount");
    }
    tracing::info!("shutdown: syncs, the watcher and the search build stopped");
    if !runtime.block_on(drain(daemon, DRAIN_TIMEOUT)) {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "reads still in flight after the drain timeout get EIO");
    }
    daemon.with_engine(|e, _| e.abort_all());
    daemon.cancel_fetches();
    tracing::info!("shutdown: reads drained");
    // Chunks already served from memory are made durable before the cache
    // state that maps them is saved.
    if !runtime.block_on(flush_writes(daemon, DRAIN_TIMEOUT)) {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "cached chunks still being written after the drain timeout are fetched again when read");
    }
    tracing::info!("shutdown: cached chunks written");
    if let Err(e) = daemon.persist() {
        tracing::warn!(error = %e, "could not save the cache state at exit");
    }
    tracing::info!("shutdown: cache state saved");
    // Nothing writes chunks any more: the next open need not read every
    // pack's table.
    let started = Instant::now();
    match store.save_pack_tables() {
        Ok(true) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shutdown: pack tables saved for the next mount"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not save the pack tables; the next mount reads each pack's")
        }
    }
    // Only when no sync runs any more: the tree must be the catalog's.
    if quiet {
        let started = Instant::now();
        match services.syncer.save_tree(cache_dir) {
            Ok(true) => tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "shutdown: tree saved for the next mount"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not save the tree for the next mount; it will be built")
            }
        }
    }
    if let Some(live) = services.search.get() {
        match live.commit() {
            Ok(()) => tracing::info!("shutdown: search index committed"),
            Err(e) => tracing::warn!(error = %e, "could not save the search index at exit"),
        }
    }
    db.flush().map_err(RunError::cache(cache_dir))?;
    tracing::info!("shutdown: database flushed");
    Ok(())
}

/// Ends the kernel mount: after a signal it is unmounted here (whoever ran
/// `musicfs unmount` did it already), then the FUSE thread is joined.
fn unmount(
    mountpoint: &Path,
    mut mount: KernelMount,
    thread: std::thread::JoinHandle<io::Result<()>>,
    signalled: bool,
) {
    if signalled && let Err(e) = mount.unmount() {
        tracing::warn!(error = %e, "unmount failed (busy?); detaching the mount instead");
        lazy_unmount(mountpoint);
    }
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "FUSE session ended with an error");
            // Nothing serves the mount any more: leave no dead mount.
            if matches!(mount, KernelMount::Direct(_)) {
                let _ = mount.unmount();
            }
        }
        Err(_) => tracing::error!("FUSE thread panicked"),
    }
}

/// The daemon's background tasks, under the supervisor: timers,
/// persistence, a watcher per local origin (which first catches up with
/// changes made while unmounted, by a delta sync) and a poller per remote
/// origin (a delta sync at once, unless it was scanned just now, then
/// every `poll_interval`).
fn spawn_background(
    supervisor: &Supervisor,
    daemon: &Arc<Daemon>,
    syncer: &Arc<Syncer>,
    sources: &[SyncSource],
    scanned_now: &[bool],
    poll_interval: Duration,
) {
    let d = Arc::clone(daemon);
    supervisor.spawn(
        "timers",
        true,
        Arc::new(move || {
            let d = Arc::clone(&d);
            Box::pin(async move {
                d.run_timers().await;
                Err(TaskError::Ended("timer loop"))
            })
        }),
    );
    let d = Arc::clone(daemon);
    supervisor.spawn(
        "persistence",
        true,
        Arc::new(move || {
            let d = Arc::clone(&d);
            Box::pin(async move {
                d.run_persistence().await;
                Err(TaskError::Ended("persistence loop"))
            })
        }),
    );
    for (i, source) in sources.iter().enumerate() {
        let (s, origin) = (Arc::clone(syncer), OriginId(i as u16));
        match source {
            SyncSource::Local(root) => {
                let root = root.clone();
                supervisor.spawn(
                    &format!("watch:{i}"),
                    true,
                    Arc::new(move || {
                        let watching = watch::watch_origin(Arc::clone(&s), origin, root.clone());
                        Box::pin(async move { watching.await.map_err(TaskError::failed) })
                    }),
                );
            }
            SyncSource::Remote(_) => {
                let fresh = scanned_now.get(i).copied().unwrap_or(false);
                // A restart of the task (after a panic) syncs at once.
                let first = Arc::new(AtomicBool::new(fresh));
                supervisor.spawn(
                    &format!("poll:{i}"),
                    true,
                    Arc::new(move || {
                        let skip_first = first.swap(false, Ordering::Relaxed);
                        let polling =
                            watch::poll_origin(Arc::clone(&s), origin, poll_interval, skip_first);
                        Box::pin(async move {
                            polling.await;
                            Err(TaskError::Ended("poller"))
                        })
                    }),
                );
            }
        }
    }
}

/// Opens the search index in the background (rebuilding it if needed).
fn open_search(
    supervisor: &Supervisor,
    syncer: &Arc<Syncer>,
    daemon: &Arc<Daemon>,
    cache_dir: &Path,
    slot: &Arc<SearchSlot>,
) {
    let (syncer, d, dir, slot) = (
        Arc::clone(syncer),
        Arc::clone(daemon),
        cache_dir.to_path_buf(),
        Arc::clone(slot),
    );
    // Critical: an index that cannot be opened now (out of descriptors, a
    // full disk) is tried again with growing pauses; once open, the task
    // is finished for good.
    supervisor.spawn(
        "search-index",
        true,
        Arc::new(move || {
            let (syncer, d, dir, slot) = (
                Arc::clone(&syncer),
                Arc::clone(&d),
                dir.clone(),
                Arc::clone(&slot),
            );
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    // No sync in between: a tree change published while the
                    // index opens would otherwise be missed by it. Beside
                    // the readers, not before them: a build takes seconds
                    // of CPU on a large library (tantivy's threads inherit
                    // the priority).
                    let built = crate::sys::in_background("search-index", || {
                        syncer.exclusive(|| {
                            tracing::debug!("search index: opening");
                            // Tests: a slow build, to stop the daemon during it.
                            fail::fail_point!("search-index-open");
                            // The tree being served, and the catalog read one
                            // entry at a time: neither is copied whole (each is
                            // ~100 MB on a 200,000-track library).
                            let tree = d.tree();
                            let live = LiveSearch::open(&dir, &tree, || syncer.catalog_entries())?;
                            slot.set(live);
                            Ok::<(), SearchError>(())
                        })
                    });
                    built.map_err(|source| SearchError::Io {
                        op: "start the search index's build",
                        path: dir.clone(),
                        source,
                    })??;
                    crate::sys::memory::release_free_memory();
                    Ok::<(), SearchError>(())
                })
                .await
                .map_err(TaskError::failed)?
                .map_err(TaskError::failed)
            })
        }),
    );
}

/// Waits until no read is in flight, or `timeout`. True if drained.
async fn drain(daemon: &Arc<Daemon>, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while daemon.inspect(|e| e.reads_in_flight()) > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Waits until the executor has no chunk waiting for the disk, or
/// `timeout`. True if all were written.
async fn flush_writes(daemon: &Arc<Daemon>, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while daemon.writes_pending() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Rebuilds the chunk index from the chunk files after the database was
/// lost: the files are the truth (each is verified when read).
fn rebuild_chunk_index(
    store: &ChunkStore,
    db: &Db,
) -> Result<Vec<(musicfs_core::ChunkId, u32, u64)>, StoreError> {
    let found = store.scan()?;
    let index: Vec<_> = found
        .into_iter()
        .filter_map(|(id, len)| u32::try_from(len).ok().map(|len| (id, len, 0)))
        .collect();
    db.put_chunks(&index)?;
    tracing::info!(
        chunks = index.len(),
        "chunk index rebuilt from the chunk files"
    );
    Ok(index)
}

/// Retry jitter only needs to differ between daemons, not be secret.
fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}
