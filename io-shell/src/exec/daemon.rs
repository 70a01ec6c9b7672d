//! The daemon: binds the engine and its executor to the world.
//!
//! The engine decides what to do, the executor ([`musicfs_core::exec`])
//! how: it turns the engine's outputs into primitive I/O and orders it.
//! Both live under one short lock ([`Daemon::with_engine`]). The daemon only
//! carries out each [`Io`] without the lock (replies at once, disk work on
//! the blocking pool, origin requests as tasks) and reports its completion.
//! The simulator carries out the same I/O against its network and disk, so
//! the orderings the daemon relies on are the ones thousands of seeds test.
//! No FUSE thread ever waits for an origin or the disk, and no code calls
//! `block_on` inside the runtime.

use crate::origin::{Origin, OriginError};
use crate::store::{ChunkBackend, ChunkReadError, Db, StoreError};
use musicfs_core::engine::{ChunkFault, DiskFault, Engine, FetchError, Notice, ReqId};
use musicfs_core::exec::{Exec, ExecConfig, Io, OpId, Purpose, Reply};
use musicfs_core::tree::VirtualTree;
use musicfs_core::{ChunkId, Time};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Where a parked FUSE reply goes: the fuser reply object, or (in tests) a
/// channel.
pub trait ReadReply: Send + 'static {
    /// Answers with bytes.
    fn data(self: Box<Self>, data: &[u8]);
    /// Answers with an error.
    fn error(self: Box<Self>, errno: musicfs_core::fs::Errno);
}

/// The kernel's page cache of the mount, for pages handed to it before a
/// reader asks (`Io::Prime`). Implemented over FUSE notifications
/// (`kernel/notify.rs`); a daemon without a mount has none.
pub trait KernelPages: Send + Sync {
    /// Puts `data` into the cached pages of `ino` at `offset`. An inode the
    /// kernel no longer holds is no error: the pages are simply not kept.
    fn store(&self, ino: u64, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// Drops every cached page of `ino`.
    fn drop_pages(&self, ino: u64);
}

/// Pages for the kernel: the file, where they start, the bytes, and the
/// tree epoch they belong to (`Io::Prime`).
type Primed = (musicfs_core::Ino, u64, Vec<musicfs_core::exec::Slice>, u64);

thread_local! {
    /// Whether this thread is one of the blocking pool's, running the
    /// daemon's disk work (see [`Daemon::prime`]).
    static ON_BLOCKING_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` on the bytes of `slices`, back to back: one chunk's slice
/// needs no copy, several are assembled.
fn with_bytes<R>(slices: Vec<musicfs_core::exec::Slice>, f: impl FnOnce(&[u8]) -> R) -> R {
    match slices.as_slice() {
        [s] => f(&s.chunk[s.from as usize..(s.from + s.len) as usize]),
        _ => f(&Reply::Slices(slices).assemble()),
    }
}

/// Cache-disk and origin counters beyond the engine's (the metrics and
/// `musicfs status` read them).
#[derive(Debug, Default)]
pub struct IoStats {
    /// Chunk bytes written to the cache disk.
    pub stored_bytes: AtomicU64,
    /// Bytes answered from the cache (every read but passthroughs).
    pub served_bytes: AtomicU64,
    /// FUSE OPEN requests of files (none after the first where the kernel
    /// opens files by itself).
    pub file_opens: AtomicU64,
    /// FUSE FLUSH requests (one at most: the first is answered ENOSYS and
    /// the kernel sends no more).
    pub file_flushes: AtomicU64,
    /// Bytes handed to the kernel's page cache before a reader asked (an
    /// inode the kernel had forgotten takes none, and is not told apart).
    pub primed_bytes: AtomicU64,
    /// Files whose pages were dropped again because the tree changed
    /// while they were on their way.
    pub primes_dropped: AtomicU64,
    /// Per origin, by [`musicfs_core::OriginId`].
    pub origins: Vec<OriginIo>,
}

/// What one origin was asked and answered.
#[derive(Debug)]
pub struct OriginIo {
    /// Requests to fill the cache (a fetch asks in pieces) that ended,
    /// well or not.
    pub requests: AtomicU64,
    /// Of those, the ones that failed (unreachable, timed out, the file
    /// changed or is gone).
    pub request_errors: AtomicU64,
    /// Bytes read from the origin to fill the cache.
    pub fetched_bytes: AtomicU64,
    /// How long those requests took, in seconds.
    pub request_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Reads answered straight from the origin (cache disk failing).
    pub passthrough_reads: AtomicU64,
    /// Bytes of those.
    pub passthrough_bytes: AtomicU64,
    /// Passthrough reads the origin failed.
    pub passthrough_errors: AtomicU64,
}

impl OriginIo {
    fn new() -> OriginIo {
        OriginIo {
            requests: AtomicU64::new(0),
            request_errors: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            // 1 ms to about 16 s.
            request_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
            ),
            passthrough_reads: AtomicU64::new(0),
            passthrough_bytes: AtomicU64::new(0),
            passthrough_errors: AtomicU64::new(0),
        }
    }
}

impl IoStats {
    fn new(origins: usize) -> IoStats {
        IoStats {
            origins: (0..origins).map(|_| OriginIo::new()).collect(),
            ..IoStats::default()
        }
    }

    fn origin(&self, id: musicfs_core::OriginId) -> Option<&OriginIo> {
        self.origins.get(usize::from(id.0))
    }
}

/// The engine and the executor beside it: what one lock guards.
struct State {
    engine: Engine,
    exec: Exec,
}

/// The running daemon's shared state.
pub struct Daemon {
    state: Mutex<State>,
    /// The engine's tree as of its last swap: metadata operations read it
    /// without taking the engine's lock.
    tree: RwLock<Arc<VirtualTree>>,
    /// The engine's tree epoch when `tree` was taken.
    tree_epoch: AtomicU64,
    replies: Mutex<HashMap<ReqId, Box<dyn ReadReply>>>,
    next_req: AtomicU64,
    rt: Handle,
    origins: Vec<Arc<dyn Origin>>,
    store: Arc<dyn ChunkBackend>,
    db: Arc<Db>,
    /// Origin reads in flight, to abort.
    origin_reads: Mutex<HashMap<OpId, AbortHandle>>,
    timer: Notify,
    /// Where pages handed to the kernel go (set once the mount is up).
    kernel_pages: std::sync::OnceLock<Arc<dyn KernelPages>>,
    /// One [`Daemon::persist`] at a time: two could write what they took
    /// from the engine in the wrong order (an older chunk map, a released
    /// pin over its release).
    persisting: Mutex<()>,
    epoch: Instant,
    /// Counters.
    pub io_stats: IoStats,
}

impl Daemon {
    /// A daemon around `engine`, doing its I/O on `rt`.
    pub fn new(
        engine: Engine,
        rt: Handle,
        origins: Vec<Arc<dyn Origin>>,
        store: Arc<dyn ChunkBackend>,
        db: Arc<Db>,
    ) -> Arc<Daemon> {
        let exec = Exec::new(ExecConfig {
            page_bytes: crate::sys::page_size(),
            ..ExecConfig::for_engine(engine.config())
        });
        let origins_len = origins.len();
        let tree = RwLock::new(engine.tree_snapshot());
        let tree_epoch = AtomicU64::new(engine.tree_epoch());
        Arc::new(Daemon {
            state: Mutex::new(State { engine, exec }),
            tree,
            tree_epoch,
            replies: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            rt,
            origins,
            store,
            db,
            origin_reads: Mutex::new(HashMap::new()),
            timer: Notify::new(),
            kernel_pages: std::sync::OnceLock::new(),
            persisting: Mutex::new(()),
            epoch: Instant::now(),
            io_stats: IoStats::new(origins_len),
        })
    }

    /// The runtime the daemon's I/O runs on.
    pub fn runtime(&self) -> &Handle {
        &self.rt
    }

    /// Monotonic time since the daemon started, as the engine counts it.
    pub fn now(&self) -> Time {
        Time::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// The instant a [`Time`] stands for.
    fn instant_of(&self, t: Time) -> Instant {
        self.epoch + Duration::from_nanos(t.as_nanos())
    }

    /// Runs `f` on the engine under its lock, then carries out what it
    /// decided.
    pub fn with_engine<R>(self: &Arc<Self>, f: impl FnOnce(&mut Engine, Time) -> R) -> R {
        self.with_exec(|_, e, now| f(e, now))
    }

    /// Runs `f` on the executor and the engine under their lock; the
    /// executor turns what the engine decided into I/O, which is then
    /// started without the lock: replies are sent at once, disk and origin
    /// work is spawned on the runtime.
    fn with_exec<R>(self: &Arc<Self>, f: impl FnOnce(&mut Exec, &mut Engine, Time) -> R) -> R {
        let (result, ios, sooner) = {
            let mut guard = self.state.lock();
            let State { engine, exec } = &mut *guard;
            let now = self.now();
            let before = engine.poll_timeout();
            let result = f(exec, engine, now);
            exec.drain(engine, now);
            let ios: Vec<Io> = std::iter::from_fn(|| exec.poll_io()).collect();
            // The timer task sleeps until the deadline it last saw; it is
            // woken only when the next deadline moved earlier (a later one
            // just makes it wake early once and look again).
            let sooner = match (engine.poll_timeout(), before) {
                (Some(after), Some(before)) => after < before,
                (Some(_), None) => true,
                (None, _) => false,
            };
            // A sync swapped the tree: publish the new snapshot (still
            // under the engine's lock, so snapshots never go back in time).
            let epoch = engine.tree_epoch();
            if self.tree_epoch.load(Ordering::Relaxed) != epoch {
                // The epoch changes under the snapshot's lock: whoever
                // takes that lock after this sees both (`prime`).
                let mut tree = self.tree.write();
                *tree = engine.tree_snapshot();
                self.tree_epoch.store(epoch, Ordering::Relaxed);
            }
            (result, ios, sooner)
        };
        // Pages for the kernel go last: a reply in this batch may be what
        // frees a page they wait for.
        let mut primes = Vec::new();
        for io in ios {
            match io {
                Io::Prime {
                    ino,
                    offset,
                    slices,
                    epoch,
                } => primes.push((ino, offset, slices, epoch)),
                io => self.start(io),
            }
        }
        self.prime(primes);
        if sooner {
            self.timer.notify_one();
        }
        result
    }

    /// The tree, for metadata operations: a snapshot, taken without the
    /// engine's lock (a read being planned never delays a lookup).
    pub fn tree(&self) -> Arc<VirtualTree> {
        Arc::clone(&self.tree.read())
    }

    /// Whether chunks wait for the disk or are being written.
    pub fn writes_pending(&self) -> bool {
        self.state.lock().exec.writes_pending()
    }

    /// What the executor did so far.
    pub fn exec_stats(&self) -> musicfs_core::exec::ExecStats {
        self.state.lock().exec.stats().clone()
    }

    /// Reads the engine without changing it.
    pub fn inspect<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        f(&self.state.lock().engine)
    }

    /// Where pages handed to the kernel go: the mount's page cache. Set
    /// once, when the mount is up; before that, none are handed over.
    pub fn set_kernel_pages(&self, pages: Arc<dyn KernelPages>) {
        let _ = self.kernel_pages.set(pages);
    }

    /// The kernel listed these files of a folder (READDIRPLUS): it holds
    /// their inodes now, and can take their pages before it asks.
    pub fn listed(self: &Arc<Self>, files: &[musicfs_core::Ino]) {
        if files.is_empty() || self.kernel_pages.get().is_none() {
            return;
        }
        self.with_engine(|e, _| e.listed(files));
    }

    /// Hands files' pages to the kernel: on this thread if it is one of
    /// the blocking pool's (a read-ahead just ended here), else on the
    /// pool, never on a FUSE thread: the kernel locks each page to fill
    /// it, and a page a read is filling stays locked until that read's
    /// reply, which must never wait behind this.
    fn prime(self: &Arc<Self>, primes: Vec<Primed>) {
        if primes.is_empty() {
            return;
        }
        let Some(pages) = self.kernel_pages.get().cloned() else {
            return;
        };
        if ON_BLOCKING_POOL.get() {
            self.hand_over(pages.as_ref(), primes);
        } else {
            let d = Arc::clone(self);
            self.blocking(move || d.hand_over(pages.as_ref(), primes));
        }
    }

    /// Each file's bytes are its bytes as of tree `epoch`. A sync that
    /// swapped the tree tells the kernel of what changed after the swap;
    /// if that swap came before these pages arrived (the epoch moved on),
    /// they may be of an old version, and are dropped again here.
    fn hand_over(&self, pages: &dyn KernelPages, primes: Vec<Primed>) {
        for (ino, offset, slices, epoch) in primes {
            let len: u64 = slices.iter().map(|s| u64::from(s.len)).sum();
            let stored = with_bytes(slices, |data| pages.store(ino.0, offset, data));
            match stored {
                Ok(()) => {
                    self.io_stats.primed_bytes.fetch_add(len, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(ino = ino.0, offset, error = %e, "the kernel did not take pages");
                    continue;
                }
            }
            // Under the snapshot's lock, as the swap stores the epoch: a
            // swap not seen here comes after, and so does its notice.
            let moved = {
                let _tree = self.tree.read();
                self.tree_epoch.load(Ordering::Relaxed) != epoch
            };
            if moved {
                pages.drop_pages(ino.0);
                self.io_stats.primes_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs `job` on the blocking pool, marked as such (see
    /// [`Daemon::prime`]).
    fn blocking(&self, job: impl FnOnce() + Send + 'static) {
        self.rt.spawn_blocking(move || {
            ON_BLOCKING_POOL.set(true);
            job();
        });
    }

    /// Starts a FUSE read: parks the reply and lets the engine plan it.
    pub fn read(self: &Arc<Self>, ino: u64, offset: u64, size: u32, reply: Box<dyn ReadReply>) {
        let req = ReqId(self.next_req.fetch_add(1, Ordering::Relaxed));
        self.replies.lock().insert(req, reply);
        self.with_exec(|x, e, now| x.read(e, now, req, musicfs_core::Ino(ino), offset, size));
    }

    /// Starts one I/O the executor asked for. Nothing here waits: blocking
    /// work goes to the blocking pool, origin requests to tasks, and each
    /// reports its completion back through [`Daemon::with_exec`].
    fn start(self: &Arc<Self>, io: Io) {
        match io {
            Io::Reply { req, reply } => self.reply(req, reply),
            Io::OriginRead {
                op,
                source,
                offset,
                len,
                timeout,
                purpose,
            } => {
                tracing::trace!(source = %source.path, offset, len, ?purpose, "origin read");
                let d = Arc::clone(self);
                // Under the lock, so the task cannot remove its handle
                // before it is there.
                let mut reads = self.origin_reads.lock();
                let task = self.rt.spawn(async move {
                    let result = d.origin_read(&source, offset, len, timeout, purpose).await;
                    d.origin_reads.lock().remove(&op);
                    d.with_exec(|x, e, now| x.origin_read_done(e, now, op, result));
                });
                reads.insert(op, task.abort_handle());
            }
            Io::AbortOriginRead(op) => {
                if let Some(task) = self.origin_reads.lock().remove(&op) {
                    task.abort();
                }
            }
            Io::CheckOrigin {
                origin,
                check,
                timeout,
            } => {
                let d = Arc::clone(self);
                // Each check is its own task: a hung origin delays only itself.
                self.rt.spawn(async move {
                    let result = d.check_origin(origin, timeout).await;
                    d.with_exec(|x, e, now| x.check_done(e, now, origin, check, result));
                });
            }
            Io::ReadChunks { op, ids } => {
                let d = Arc::clone(self);
                self.blocking(move || {
                    let results: Vec<Result<Arc<[u8]>, ChunkFault>> = ids
                        .iter()
                        .map(|&id| d.store.read(id).map_err(|e| chunk_fault(&e)))
                        .collect();
                    d.with_exec(|x, e, now| x.chunks_read(e, now, op, results));
                });
            }
            Io::WriteChunks { op, chunks } => {
                let d = Arc::clone(self);
                self.blocking(move || {
                    let batch: Vec<(ChunkId, &[u8])> =
                        chunks.iter().map(|(id, data)| (*id, &data[..])).collect();
                    let results: Vec<Result<(), DiskFault>> = d
                        .store
                        .put_batch(&batch)
                        .into_iter()
                        .zip(&chunks)
                        .map(|(r, (_, data))| {
                            if r.is_ok() {
                                d.io_stats
                                    .stored_bytes
                                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                            }
                            r.map_err(|e| disk_fault(&e))
                        })
                        .collect();
                    d.with_exec(|x, e, now| x.chunks_written(e, now, op, results));
                });
            }
            Io::IndexChunks { op, chunks } => {
                let d = Arc::clone(self);
                self.blocking(move || {
                    let rows: Vec<(ChunkId, u32, u64)> =
                        chunks.iter().map(|&(id, len)| (id, len, 0)).collect();
                    let result = d.db.put_chunks(&rows).map_err(|e| {
                        tracing::warn!(error = %e, "could not index stored chunks");
                        disk_fault(&e)
                    });
                    d.with_exec(|x, e, now| x.chunks_indexed(e, now, op, result));
                });
            }
            Io::DeleteChunks { op, ids } => {
                let d = Arc::clone(self);
                self.blocking(move || {
                    evict(d.store.as_ref(), &d.db, &ids);
                    d.with_exec(|x, e, now| x.chunks_deleted(e, now, op));
                });
            }
            Io::ProbeDisk => {
                let d = Arc::clone(self);
                self.blocking(move || {
                    let ok = probe_disk(d.store.as_ref());
                    d.with_exec(|x, e, now| x.disk_probed(e, now, ok));
                });
            }
            Io::Prime {
                ino,
                offset,
                slices,
                epoch,
            } => self.prime(vec![(ino, offset, slices, epoch)]),
            Io::Notice(notice) => log_notice(&notice),
        }
    }

    /// Sends a FUSE reply (the executor sends each read one).
    fn reply(&self, req: ReqId, reply: Reply) {
        let Some(r) = self.replies.lock().remove(&req) else {
            return;
        };
        match reply {
            Reply::Error(errno) => r.error(errno),
            Reply::Bytes(data) => r.data(&data),
            Reply::Slices(slices) => {
                let len: usize = slices.iter().map(|s| s.len as usize).sum();
                self.io_stats
                    .served_bytes
                    .fetch_add(len as u64, Ordering::Relaxed);
                with_bytes(slices, |data| r.data(data));
            }
        }
    }

    /// Reads from an origin within `timeout`. An answer of another length
    /// is left for the executor to judge.
    async fn origin_read(
        &self,
        source: &musicfs_core::SourceFile,
        offset: u64,
        len: u32,
        timeout: Duration,
        purpose: Purpose,
    ) -> Result<Vec<u8>, FetchError> {
        let started = Instant::now();
        let stats = self.io_stats.origin(source.origin);
        let Some(origin) = self.origins.get(usize::from(source.origin.0)) else {
            return Err(FetchError::Unavailable("no such origin".into()));
        };
        let read = async {
            if matches!(purpose, Purpose::Fetch(_)) {
                fail::fail_point!("reader-manifest-fetch", |_| Err(OriginError::Unavailable(
                    "injected: reader-manifest-fetch".into()
                )));
            }
            // A slow origin is slow for every read of it: fetches, and the
            // passthroughs that answer a fill=behind folder's readers.
            injected_delay("origin-read-delay").await;
            origin
                .read_at(&source.path, &source.version, offset, len as usize)
                .await
        };
        let result = match tokio::time::timeout(timeout, read).await {
            Ok(r) => r.map_err(fetch_error),
            Err(_) => Err(FetchError::Unavailable("origin read timed out".into())),
        };
        if let Some(o) = stats {
            let bytes = result.as_ref().map_or(0, |d| d.len() as u64);
            match purpose {
                Purpose::Fetch(_) => {
                    o.requests.fetch_add(1, Ordering::Relaxed);
                    o.request_seconds.observe(started.elapsed().as_secs_f64());
                    o.fetched_bytes.fetch_add(bytes, Ordering::Relaxed);
                    if result.is_err() {
                        o.request_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Purpose::Passthrough(_) | Purpose::ReadAhead => {
                    o.passthrough_reads.fetch_add(1, Ordering::Relaxed);
                    o.passthrough_bytes.fetch_add(bytes, Ordering::Relaxed);
                    // A failed read ahead of a stream is the reads' to
                    // report: they ask the origin again themselves.
                    if result.is_err() && purpose != Purpose::ReadAhead {
                        o.passthrough_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if let Err(e) = &result {
            tracing::debug!(source = %source.path, offset, len, error = ?e, "origin read failed");
        }
        result
    }

    /// Checks that an origin answers, within `timeout`.
    async fn check_origin(
        &self,
        origin: musicfs_core::OriginId,
        timeout: Duration,
    ) -> Result<(), String> {
        let Some(o) = self.origins.get(usize::from(origin.0)) else {
            return Err("no such origin".into());
        };
        let check = async {
            // A hung check, for tests (`sleep(MS)`, `pause`): on the blocking
            // pool, so it holds up this check, which the timeout ends, and no
            // runtime thread. Nothing at all without `failpoints`.
            #[cfg(feature = "failpoints")]
            let _ = tokio::task::spawn_blocking(|| fail::fail_point!("health-check-hang")).await;
            o.check().await
        };
        match tokio::time::timeout(timeout, check).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// Runs the engine's timers until the runtime shuts down.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let next = self.inspect(|e| e.poll_timeout());
            match next {
                Some(t) => {
                    let at = tokio::time::Instant::from_std(self.instant_of(t));
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {
                            self.with_exec(|x, e, now| x.handle_timeout(e, now));
                        }
                        _ = self.timer.notified() => {}
                    }
                }
                None => self.timer.notified().await,
            }
        }
    }

    /// Writes what the engine changed (chunk maps, access times, pins) to
    /// the database. Called every second, at shutdown, and by a pin
    /// command before it answers.
    pub fn persist(self: &Arc<Self>) -> Result<(), StoreError> {
        let _one_at_a_time = self.persisting.lock();
        let (manifests, touched, pins) = self.with_engine(|e, _| {
            (
                e.take_dirty_manifests(),
                e.take_touched_chunks(),
                e.take_dirty_pins(),
            )
        });
        if !pins.is_empty() {
            self.db.put_pins(&pins)?;
        }
        for ((origin, path), manifest) in &manifests {
            match manifest {
                Some(m) => self.db.put_manifest(*origin, path, m)?,
                None => self.db.remove_manifest(*origin, path)?,
            }
        }
        self.db.touch_chunks(&touched)?;
        self.store.checkpoint();
        Ok(())
    }

    /// Persists every second until the runtime shuts down; once reads go
    /// idle, lets the memory cache go and hands the pages back.
    pub async fn run_persistence(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let d = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || d.persist()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not save cache state"),
                Err(e) => tracing::warn!(error = %e, "cache state task failed"),
            }
            let released = self.with_exec(|x, _, now| x.release_idle_memory(now));
            if released > 0 {
                tracing::debug!(bytes = released, "reads idle: memory cache released");
                let _ = tokio::task::spawn_blocking(crate::sys::memory::release_free_memory).await;
            }
        }
    }

    /// Stops every origin read (at shutdown).
    pub fn cancel_fetches(&self) {
        for (_, task) in self.origin_reads.lock().drain() {
            task.abort();
        }
    }

    /// The database.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }
}

/// A slow origin, for tests: the fail point `name` set to `return(MS)`
/// delays by MS milliseconds without blocking a runtime thread. Compiles to
/// nothing without the `failpoints` feature.
async fn injected_delay(name: &str) {
    #[cfg(feature = "failpoints")]
    if let Some(Some(ms)) = fail::eval(name, |arg| arg.and_then(|a| a.parse::<u64>().ok())) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Whether the cache disk takes writes again: stores and deletes a small
/// chunk through the same atomic path real chunks take.
fn probe_disk(store: &dyn ChunkBackend) -> bool {
    let data = format!("musicfs disk probe {:?}", Instant::now()).into_bytes();
    let id = ChunkId::of(&data);
    let ok = store.put(id, &data).is_ok();
    let _ = store.remove(id);
    ok
}

fn evict(store: &dyn ChunkBackend, db: &Db, ids: &[ChunkId]) {
    // Index first: a crash in between leaves an orphan file (wasted space),
    // never an index entry for a missing file.
    if let Err(e) = db.remove_chunks(ids) {
        tracing::warn!(error = %e, "could not remove evicted chunks from the index");
    }
    for &id in ids {
        if let Err(e) = store.remove(id) {
            tracing::debug!(chunk = %id, error = %e, "could not delete evicted chunk");
        }
    }
}

fn disk_fault(e: &StoreError) -> DiskFault {
    // The store's classifier. What is not the disk's fault (a refused
    // chunk; a lock only happens at open) still left the chunk unstored.
    e.disk_fault().unwrap_or(DiskFault::Io)
}

fn chunk_fault(e: &ChunkReadError) -> ChunkFault {
    match e {
        ChunkReadError::Missing => ChunkFault::Missing,
        ChunkReadError::Corrupt { .. } => ChunkFault::Corrupt,
        ChunkReadError::Io(e) => ChunkFault::Disk(disk_fault(e)),
    }
}

/// What an origin's error means to the engine.
fn fetch_error(e: OriginError) -> FetchError {
    match e {
        OriginError::NotFound => FetchError::NotFound,
        OriginError::Changed => FetchError::Changed,
        OriginError::Unavailable(why) => FetchError::Unavailable(why),
    }
}

fn log_notice(notice: &Notice) {
    match notice {
        Notice::PassthroughOn(fault) => tracing::error!(
            ?fault,
            "cache disk failed: reads now go straight to the origins, nothing is cached"
        ),
        Notice::PassthroughOff => tracing::warn!("cache disk works again: caching resumed"),
        Notice::ChunkDropped(id, fault) => tracing::warn!(
            chunk = %id, ?fault,
            "cached chunk was bad and was dropped; its bytes are fetched again from the origin"
        ),
        Notice::SourceChanged((origin, path)) => tracing::warn!(
            %origin, path = %path,
            "file changed at its origin while being read; it will be rescanned"
        ),
        Notice::ReadTimedOut(ino) => {
            tracing::warn!(
                ino = ino.0,
                "read timed out: its bytes could not be had in time"
            )
        }
        Notice::OriginHealth(origin, from, to) => match to {
            musicfs_core::engine::Health::Healthy => {
                tracing::info!(%origin, %from, %to, "origin is healthy again; fetching from it")
            }
            musicfs_core::engine::Health::Degraded => {
                tracing::warn!(%origin, %from, %to, "origin is failing; checking it more often")
            }
            musicfs_core::engine::Health::Unhealthy => tracing::error!(
                %origin, %from, %to,
                "origin is down: its tracks stay, cached ones play, uncached reads fail with EIO"
            ),
        },
        Notice::TooManyReads(max) => tracing::warn!(
            max,
            "too many reads in flight: new ones get EAGAIN until some finish"
        ),
        Notice::PinsReleased {
            files,
            bytes,
            limit_bytes,
        } => tracing::warn!(
            files,
            mib = bytes >> 20,
            limit_mib = limit_bytes >> 20,
            "pins released: pinned files outgrew their share of the cache (newest pins first)"
        ),
        Notice::FetchFailed((origin, path), why) => {
            tracing::warn!(%origin, path = %path, why = %why, "fetch failed; retrying later")
        }
    }
}
