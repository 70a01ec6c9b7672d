//! The daemon: binds the engine to the world.
//!
//! The engine decides; the daemon does. Every call into the engine happens
//! under one short lock ([`Daemon::with_engine`]); the outputs it queued are
//! then executed without the lock: replies are sent at once, disk and origin
//! work is spawned on the tokio runtime. No FUSE thread ever waits for an
//! origin or the disk, and no code calls `block_on` inside the runtime.

use crate::origin::{Origin, OriginError};
use crate::store::{ChunkBackend, ChunkReadError, Db, StoreError};
use futures::StreamExt;
use musicfs_core::engine::{
    ChunkFault, CutError, Cutter, DiskFault, Engine, Fetch, FetchError, FetchId, FetchedChunk,
    Notice, Output, Piece, ReqId, Stored,
};
use musicfs_core::{ChunkId, Time};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Bytes asked of an origin in one request while fetching.
const FETCH_PIECE_BYTES: usize = 1 << 20;
/// Requests of one fetch in flight together. A remote origin answers each
/// request after a round trip (and S3 after its first-byte latency): one at
/// a time, a fetch would spend most of its time waiting. Pieces are still
/// handed to the chunk cutter in order.
const FETCH_PIECES_IN_FLIGHT: usize = 4;
/// Verified chunk bytes kept in memory, so consecutive kernel reads through
/// one chunk do not read and hash it from disk again and again.
const MEMORY_CACHE_BYTES: u64 = 16 << 20;

/// Where a parked FUSE reply goes: the fuser reply object, or (in tests) a
/// channel.
pub trait ReadReply: Send + 'static {
    /// Answers with bytes.
    fn data(self: Box<Self>, data: &[u8]);
    /// Answers with an error.
    fn error(self: Box<Self>, errno: musicfs_core::fs::Errno);
}

/// Cache-disk and origin counters beyond the engine's (the metrics and
/// `musicfs status` read them).
#[derive(Debug, Default)]
pub struct IoStats {
    /// Chunk bytes written to the cache disk.
    pub stored_bytes: AtomicU64,
    /// Bytes served from the in-memory chunk cache.
    pub memory_hits: AtomicU64,
    /// Bytes answered from the cache (every read but passthroughs).
    pub served_bytes: AtomicU64,
    /// Per origin, by [`musicfs_core::OriginId`].
    pub origins: Vec<OriginIo>,
}

/// What one origin was asked and answered.
#[derive(Debug)]
pub struct OriginIo {
    /// Fetches (into the cache) that ended, well or not.
    pub fetches: AtomicU64,
    /// Fetches that ended in an error (unreachable, timed out, the file
    /// changed or is gone).
    pub fetch_errors: AtomicU64,
    /// Bytes read from the origin by fetches.
    pub fetched_bytes: AtomicU64,
    /// How long fetches took, in seconds.
    pub fetch_seconds: prometheus_client::metrics::histogram::Histogram,
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
            fetches: AtomicU64::new(0),
            fetch_errors: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            // 5 ms to about 80 s.
            fetch_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 15),
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

/// The running daemon's shared state.
pub struct Daemon {
    engine: Mutex<Engine>,
    replies: Mutex<HashMap<ReqId, Box<dyn ReadReply>>>,
    next_req: AtomicU64,
    rt: Handle,
    origins: Vec<Arc<dyn Origin>>,
    store: Arc<dyn ChunkBackend>,
    db: Arc<Db>,
    memory: quick_cache::sync::Cache<ChunkId, Arc<[u8]>, ChunkWeighter>,
    fetch_tasks: Mutex<HashMap<FetchId, AbortHandle>>,
    timer: Notify,
    /// One [`Daemon::persist`] at a time: two could write what they took
    /// from the engine in the wrong order (an older chunk map, a released
    /// pin over its release).
    persisting: Mutex<()>,
    epoch: Instant,
    origin_request_timeout: Duration,
    health_check_timeout: Duration,
    /// Counters.
    pub io_stats: IoStats,
}

#[derive(Clone)]
struct ChunkWeighter;

impl quick_cache::Weighter<ChunkId, Arc<[u8]>> for ChunkWeighter {
    fn weight(&self, _key: &ChunkId, val: &Arc<[u8]>) -> u64 {
        val.len().max(1) as u64
    }
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
        let origins_len = origins.len();
        let origin_request_timeout = engine.config().fetch_stall_timeout;
        let health_check_timeout = engine.config().health.check_timeout;
        let memory = quick_cache::sync::Cache::with_weighter(
            (MEMORY_CACHE_BYTES / (64 << 10)) as usize,
            MEMORY_CACHE_BYTES,
            ChunkWeighter,
        );
        Arc::new(Daemon {
            engine: Mutex::new(engine),
            replies: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            rt,
            origins,
            store,
            db,
            memory,
            fetch_tasks: Mutex::new(HashMap::new()),
            timer: Notify::new(),
            persisting: Mutex::new(()),
            epoch: Instant::now(),
            origin_request_timeout,
            health_check_timeout,
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

    /// Runs `f` on the engine under its lock, then executes what it decided.
    pub fn with_engine<R>(self: &Arc<Self>, f: impl FnOnce(&mut Engine, Time) -> R) -> R {
        let (result, outputs, sooner) = {
            let mut engine = self.engine.lock();
            let now = self.now();
            let before = engine.poll_timeout();
            let result = f(&mut engine, now);
            let outputs: Vec<Output> = std::iter::from_fn(|| engine.poll_output()).collect();
            // The timer task sleeps until the deadline it last saw; it is
            // woken only when the next deadline moved earlier (a later one
            // just makes it wake early once and look again).
            let sooner = match (engine.poll_timeout(), before) {
                (Some(after), Some(before)) => after < before,
                (Some(_), None) => true,
                (None, _) => false,
            };
            (result, outputs, sooner)
        };
        self.execute(outputs);
        if sooner {
            self.timer.notify_one();
        }
        result
    }

    /// Reads the engine without changing it.
    pub fn inspect<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        f(&self.engine.lock())
    }

    /// Starts a FUSE read: parks the reply and lets the engine plan it.
    pub fn read(self: &Arc<Self>, ino: u64, offset: u64, size: u32, reply: Box<dyn ReadReply>) {
        let req = ReqId(self.next_req.fetch_add(1, Ordering::Relaxed));
        self.replies.lock().insert(req, reply);
        self.with_engine(|e, now| e.read(now, req, musicfs_core::Ino(ino), offset, size));
    }

    fn take_reply(&self, req: ReqId) -> Option<Box<dyn ReadReply>> {
        self.replies.lock().remove(&req)
    }

    fn execute(self: &Arc<Self>, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::ReadError { req, errno } => {
                    if let Some(reply) = self.take_reply(req) {
                        reply.error(errno);
                    }
                }
                Output::Generated { req, data } => {
                    if let Some(reply) = self.take_reply(req) {
                        reply.data(&data);
                    }
                }
                Output::Serve { req, pieces, .. } => self.serve(req, pieces),
                Output::Passthrough {
                    req,
                    source,
                    offset,
                    len,
                } => {
                    let d = Arc::clone(self);
                    self.rt.spawn(async move {
                        d.passthrough(req, source, offset, len).await;
                    });
                }
                Output::Fetch(fetch) => {
                    let id = fetch.id;
                    let d = Arc::clone(self);
                    let task = self.rt.spawn(async move { d.run_fetch(fetch).await });
                    self.fetch_tasks.lock().insert(id, task.abort_handle());
                }
                Output::CancelFetch(id) => {
                    if let Some(task) = self.fetch_tasks.lock().remove(&id) {
                        task.abort();
                    }
                }
                Output::Evict(ids) => {
                    for id in &ids {
                        self.memory.remove(id);
                    }
                    let (store, db) = (Arc::clone(&self.store), Arc::clone(&self.db));
                    self.rt
                        .spawn_blocking(move || evict(store.as_ref(), &db, &ids));
                }
                Output::ProbeDisk => {
                    let d = Arc::clone(self);
                    self.rt.spawn(async move {
                        let store = Arc::clone(&d.store);
                        let ok = tokio::task::spawn_blocking(move || probe_disk(store.as_ref()))
                            .await
                            .unwrap_or(false);
                        d.with_engine(|e, now| e.disk_probe(now, ok));
                    });
                }
                Output::CheckOrigin { origin, check } => {
                    let d = Arc::clone(self);
                    // Each check is its own task: a hung origin delays only itself.
                    self.rt.spawn(async move {
                        let result = d.check_origin(origin).await;
                        d.with_engine(|e, now| e.health_check_done(now, origin, check, result));
                    });
                }
                Output::Notice(notice) => log_notice(&notice),
            }
        }
    }

    /// Answers a read from cached chunks: from memory when every piece is
    /// there (on the calling thread: no hop, no wait), else from disk on the
    /// blocking pool.
    fn serve(self: &Arc<Self>, req: ReqId, pieces: Vec<Piece>) {
        let cached: Option<Vec<Arc<[u8]>>> =
            pieces.iter().map(|p| self.memory.get(&p.id)).collect();
        if let Some(chunks) = cached {
            let data = assemble(&pieces, &chunks);
            self.io_stats
                .memory_hits
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            self.finish_serve(req, Ok(data));
            return;
        }
        let d = Arc::clone(self);
        self.rt.spawn_blocking(move || {
            let result = d.read_pieces(&pieces);
            d.finish_serve(req, result);
        });
    }

    fn read_pieces(&self, pieces: &[Piece]) -> Result<Vec<u8>, Vec<(ChunkId, ChunkFault)>> {
        let mut chunks = Vec::with_capacity(pieces.len());
        let mut faults = Vec::new();
        for p in pieces {
            if let Some(c) = self.memory.get(&p.id) {
                chunks.push(c);
                continue;
            }
            match self.store.get(p.id) {
                Ok(bytes) if bytes.len() == p.chunk_len as usize => {
                    let bytes: Arc<[u8]> = bytes.into();
                    self.memory.insert(p.id, Arc::clone(&bytes));
                    chunks.push(bytes);
                }
                Ok(_) => faults.push((p.id, ChunkFault::Corrupt)),
                Err(e) => faults.push((p.id, chunk_fault(&e))),
            }
        }
        if faults.is_empty() {
            Ok(assemble(pieces, &chunks))
        } else {
            Err(faults)
        }
    }

    fn finish_serve(
        self: &Arc<Self>,
        req: ReqId,
        result: Result<Vec<u8>, Vec<(ChunkId, ChunkFault)>>,
    ) {
        match result {
            Ok(data) => {
                self.io_stats
                    .served_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if let Some(reply) = self.take_reply(req) {
                    reply.data(&data);
                }
                self.with_engine(|e, now| e.read_finished(now, req, &[]));
            }
            Err(faults) => self.with_engine(|e, now| e.read_finished(now, req, &faults)),
        }
    }

    async fn passthrough(
        self: &Arc<Self>,
        req: ReqId,
        source: musicfs_core::SourceFile,
        offset: u64,
        len: u32,
    ) {
        let result = match self.origins.get(usize::from(source.origin.0)) {
            Some(origin) => {
                let read = origin.read_at(&source.path, &source.version, offset, len as usize);
                match tokio::time::timeout(self.origin_request_timeout, read).await {
                    Ok(r) => r,
                    Err(_) => Err(OriginError::Unavailable("timed out".into())),
                }
            }
            None => Err(OriginError::Unavailable("no such origin".into())),
        };
        // The engine never plans past the end of the file: an answer of
        // another length is a truncated response or a changed file, and a
        // short reply would reach the reader as an early end of file.
        let result = result.and_then(|data| {
            if data.len() == len as usize {
                Ok(data)
            } else {
                Err(OriginError::Changed)
            }
        });
        if let Some(o) = self.io_stats.origin(source.origin) {
            o.passthrough_reads.fetch_add(1, Ordering::Relaxed);
            match &result {
                Ok(data) => o
                    .passthrough_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed),
                Err(_) => o.passthrough_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
        match result {
            Ok(data) => {
                if let Some(reply) = self.take_reply(req) {
                    reply.data(&data);
                }
                self.with_engine(|e, now| e.read_finished(now, req, &[]));
            }
            Err(e) => {
                tracing::debug!(source = %source.path, error = %e, "passthrough read failed");
                let error = fetch_error(e);
                self.with_engine(|en, now| en.passthrough_failed(now, req, error));
            }
        }
    }

    /// Checks that an origin answers, within the health check timeout.
    async fn check_origin(&self, origin: musicfs_core::OriginId) -> Result<(), String> {
        let Some(o) = self.origins.get(usize::from(origin.0)) else {
            return Err("no such origin".into());
        };
        let timeout = self.health_check_timeout;
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

    /// Streams a fetch's byte range from its origin through a [`Cutter`]
    /// into the chunk store, reporting each piece's chunks to the engine.
    async fn run_fetch(self: Arc<Self>, fetch: Fetch) {
        let id = fetch.id;
        let started = Instant::now();
        let result = self.fetch_range(&fetch).await;
        if let Some(o) = self.io_stats.origin(fetch.source.origin) {
            o.fetches.fetch_add(1, Ordering::Relaxed);
            o.fetch_seconds.observe(started.elapsed().as_secs_f64());
            if result.is_err() {
                o.fetch_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.fetch_tasks.lock().remove(&id);
        self.with_engine(|e, now| e.fetch_done(now, id, result));
    }

    async fn fetch_range(self: &Arc<Self>, fetch: &Fetch) -> Result<(), FetchError> {
        fail::fail_point!("reader-manifest-fetch", |_| Err(FetchError::Unavailable(
            "injected: reader-manifest-fetch".into()
        )));
        let origin = self
            .origins
            .get(usize::from(fetch.source.origin.0))
            .ok_or_else(|| FetchError::Unavailable("no such origin".into()))?;
        let mut cutter = Cutter::new(fetch);
        let end = fetch.read_end();
        let pieces = (fetch.start..end).step_by(FETCH_PIECE_BYTES).map(|pos| {
            let want = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(FETCH_PIECE_BYTES);
            (pos, want)
        });
        let timeout = self.origin_request_timeout;
        let mut reads = futures::stream::iter(pieces)
            .map(|(pos, want)| async move {
                let read = async {
                    injected_delay("origin-read-delay").await;
                    origin
                        .read_at(&fetch.source.path, &fetch.source.version, pos, want)
                        .await
                };
                (pos, want, tokio::time::timeout(timeout, read).await)
            })
            .buffered(FETCH_PIECES_IN_FLIGHT);
        // Dropping `reads` (an error, or the cutter has all it needs)
        // cancels the requests still in flight.
        while let Some((pos, want, result)) = reads.next().await {
            if cutter.is_done() {
                break;
            }
            let data = match result {
                Ok(Ok(data)) => data,
                Ok(Err(e)) => return Err(fetch_error(e)),
                Err(_) => return Err(FetchError::Unavailable("origin read timed out".into())),
            };
            if let Some(o) = self.io_stats.origin(fetch.source.origin) {
                o.fetched_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            if data.len() != want {
                return Err(FetchError::Changed); // shorter than the version's size
            }
            let pos = pos + want as u64;
            let chunks = cutter.push(&data, pos == end).map_err(|e| match e {
                CutError::Mismatch | CutError::ShortRead => FetchError::Changed,
            })?;
            if chunks.is_empty() {
                continue;
            }
            let reported = self.store_chunks(chunks, fetch.store).await;
            self.with_engine(|e, now| e.fetch_progress(now, fetch.id, &reported));
        }
        Ok(())
    }

    /// Writes chunks to disk (atomically, then indexes them) and keeps them
    /// in memory for the reads waiting on them.
    async fn store_chunks(
        self: &Arc<Self>,
        chunks: Vec<musicfs_core::engine::CutChunk>,
        store: bool,
    ) -> Vec<FetchedChunk> {
        let d = Arc::clone(self);
        let work = move || {
            // One flush for the piece's chunks, not two fsyncs each.
            let results: Vec<Option<Result<(), StoreError>>> = if store {
                let batch: Vec<(ChunkId, &[u8])> =
                    chunks.iter().map(|c| (c.id, &c.data[..])).collect();
                d.store.put_batch(&batch).into_iter().map(Some).collect()
            } else {
                chunks.iter().map(|_| None).collect()
            };
            let mut out = Vec::with_capacity(chunks.len());
            let mut indexed = Vec::new();
            for (c, result) in chunks.into_iter().zip(results) {
                let extent = c.extent();
                let stored = match result {
                    Some(Ok(())) => {
                        indexed.push((c.id, extent.len, 0));
                        d.io_stats
                            .stored_bytes
                            .fetch_add(c.data.len() as u64, Ordering::Relaxed);
                        Stored::Yes
                    }
                    Some(Err(e)) => Stored::Failed(disk_fault(&e)),
                    None => Stored::Skipped,
                };
                d.memory.insert(c.id, c.data.into());
                out.push(FetchedChunk {
                    offset: c.offset,
                    extent,
                    stored,
                });
            }
            // The index learns of a chunk only once its file is durable.
            if let Err(e) = d.db.put_chunks(&indexed) {
                tracing::warn!(error = %e, "could not index stored chunks");
                for c in &mut out {
                    if c.stored == Stored::Yes {
                        c.stored = Stored::Failed(disk_fault(&e));
                    }
                }
            }
            out
        };
        tokio::task::spawn_blocking(work).await.unwrap_or_default()
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
                            self.with_engine(|e, now| e.handle_timeout(now));
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
        Ok(())
    }

    /// Persists every second until the runtime shuts down.
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
        }
    }

    /// Stops every fetch (at shutdown).
    pub fn cancel_fetches(&self) {
        for (_, task) in self.fetch_tasks.lock().drain() {
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

fn assemble(pieces: &[Piece], chunks: &[Arc<[u8]>]) -> Vec<u8> {
    let total: usize = pieces.iter().map(|p| p.len as usize).sum();
    let mut out = Vec::with_capacity(total);
    for (p, c) in pieces.iter().zip(chunks) {
        let from = p.from as usize;
        out.extend_from_slice(&c[from..from + p.len as usize]);
    }
    out
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
