//! The engine: the state machine between FUSE, the cache and the origins.
//!
//! The io-shell calls the engine with events (a read arrived, a fetch made
//! progress, a timer fired), each stamped with `now`, and then drains
//! [`Engine::poll_output`] and re-arms its timer from [`Engine::poll_timeout`].
//! Metadata operations (lookup, getattr, readdir) answer directly: they need
//! no I/O. A read is planned here: served from cached chunks, or parked
//! while fetches fill the cache, or passed straight through to the origin
//! when the cache disk has failed; and it is answered with EIO if its
//! deadline passes first, so no reader ever hangs.

mod behind;
mod cache;
mod cutter;
mod health;
mod pins;
mod types;

pub use cache::{ChunkCache, ChunkMeta};
pub use cutter::{CutChunk, CutError, Cutter, cut_points, cut_run};
pub use health::{CheckId, Health, HealthConfig, HealthTable, OriginStatus};
pub use pins::{Cached, Pin, PinRefused, PinReport, PinnedFile};
pub use types::*;

use crate::catalog::SourceFile;
use crate::chunk::ChunkId;
use crate::fs::{Attr, DirEntry, Errno};
use crate::ids::{Ino, OriginId};
use crate::manifest::{Extent, Manifest};
use crate::time::Time;
use crate::tree::{self, TreeDiff, VirtualTree};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Tunables. Every wait and every retry has a bound.
#[derive(Clone, Debug)]
pub struct Config {
    /// A read not answered by then gets EIO.
    pub read_timeout: Duration,
    /// A fetch that reports no progress for this long is given up on.
    pub fetch_stall_timeout: Duration,
    /// Consecutive failed fetches of one file before its readers get EIO.
    pub fetch_retries_max: u32,
    /// First pause after a failed fetch; doubles per failure.
    pub retry_backoff_base: Duration,
    /// Longest pause between retries.
    pub retry_backoff_max: Duration,
    /// Cache size limit in bytes.
    pub cache_capacity_bytes: u64,
    /// Eviction starts above this share of the limit.
    pub evict_start_pct: u8,
    /// Eviction stops at this share of the limit.
    pub evict_stop_pct: u8,
    /// Read-ahead of a fresh or seeking reader.
    pub readahead_min_bytes: u64,
    /// Read-ahead of a long sequential reader.
    pub readahead_max_bytes: u64,
    /// A sequential reader answered straight from its origin is read
    /// ahead of (`Output::Passthrough::streaming`) once it has read this
    /// much back to back: further than a tag reader and the kernel's
    /// read-ahead behind it go, so a media server's scan of files whose
    /// heads are not kept does not make the origin read more of each.
    pub passthrough_ahead_after: u64,
    /// A seek this close to the end of mapped bytes starts its fetch there,
    /// so chunk boundaries match those of a whole-file cut.
    pub seek_align_bytes: u64,
    /// Bytes a single verify fetch restores at most.
    pub verify_batch_bytes: u64,
    /// How often to try the cache disk again while in passthrough.
    pub disk_probe_interval: Duration,
    /// Reads waiting or being answered, at most; one more gets EAGAIN
    /// (the kernel keeps far fewer in flight: this bounds a runaway
    /// client, and with it the io-shell's map of parked replies).
    pub reads_in_flight_max: usize,
    /// Pinned files may take at most this share of the cache.
    pub pin_share_pct: u8,
    /// Origins whose bytes never go through the cache (`cache=off`): reads
    /// of them pass straight through, nothing is fetched ahead or pinned.
    pub uncached_origins: BTreeSet<OriginId>,
    /// Origins whose readers are answered straight from the origin file
    /// while the cache fills behind them (local folders, where reading a
    /// file twice costs little): a read of bytes not cached is a
    /// `Passthrough`, and the bytes read are fetched into the cache once
    /// the file has had no such read for `fill_behind_after` (see
    /// `behind.rs`). Other origins fill the cache as they are read, and
    /// their readers wait for the fetch.
    pub fill_behind_origins: BTreeSet<OriginId>,
    /// How long a file read from a fill-behind origin rests before what
    /// was read of it is cached.
    pub fill_behind_after: Duration,
    /// Origin health checks.
    pub health: HealthConfig,
    /// Known bugs, planted on purpose so the simulator can prove it finds
    /// them. Only with the `planted` feature: a release build has none.
    #[cfg(feature = "planted")]
    #[doc(hidden)]
    pub planted: PlantedBugs,
}

/// Test-only switches that make the engine wrong in a known way. The
/// simulator turns each on and must report a broken invariant within a
/// stated number of seeds; a simulation that cannot is not testing much.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Executor: serve chunks read from disk without checking them
    /// against their ids.
    pub skip_verify: bool,
    /// Executor: tell the index of chunks before their files are durable.
    pub index_before_durable: bool,
    /// Executor: lose one in sixteen chunk-read completions.
    pub lose_completion: bool,
    /// Executor: let a chunk's store and its eviction's delete run
    /// together (a store that finds the file in place keeps it, the delete
    /// removes it, and the engine believes it cached).
    pub store_during_evict: bool,
    /// Forget to release one pin when a read finishes.
    pub leak_pin: bool,
    /// Treat an origin that stopped answering as healthy: no pause, no
    /// failover, just ask it again.
    pub stalled_origin_is_healthy: bool,
    /// Let eviction take chunks of pinned files.
    pub evict_pinned: bool,
    /// Executor: keep origin bytes read ahead of a stream one byte further
    /// on than they were read.
    pub misplace_read_ahead: bool,
    /// Executor: hand the kernel pages planned in an older tree as if
    /// they were the current tree's (and do not drop them when the tree
    /// changed under them).
    pub prime_any_epoch: bool,
}

impl Config {
    /// The planted bugs in force: none unless built with the `planted`
    /// feature and asked for.
    #[inline]
    pub fn bugs(&self) -> PlantedBugs {
        #[cfg(feature = "planted")]
        return self.planted;
        #[cfg(not(feature = "planted"))]
        PlantedBugs::default()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            read_timeout: Duration::from_secs(30),
            fetch_stall_timeout: Duration::from_secs(10),
            fetch_retries_max: 4,
            retry_backoff_base: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(5),
            cache_capacity_bytes: 10 << 30,
            evict_start_pct: 90,
            evict_stop_pct: 80,
            readahead_min_bytes: 1 << 20,
            readahead_max_bytes: 16 << 20,
            passthrough_ahead_after: 1 << 20,
            seek_align_bytes: 2 << 20,
            verify_batch_bytes: 8 << 20,
            disk_probe_interval: Duration::from_secs(10),
            reads_in_flight_max: 4096,
            pin_share_pct: 80,
            uncached_origins: BTreeSet::new(),
            fill_behind_origins: BTreeSet::new(),
            fill_behind_after: Duration::from_millis(500),
            health: HealthConfig::default(),
            #[cfg(feature = "planted")]
            planted: PlantedBugs::default(),
        }
    }
}

/// Counters for `musicfs status` and the logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Reads answered with bytes.
    pub reads_served: u64,
    /// Reads answered without waiting for an origin.
    pub reads_hit: u64,
    /// Reads answered by passthrough.
    pub reads_passthrough: u64,
    /// Reads answered with an error.
    pub reads_failed: u64,
    /// Fetches started.
    pub fetches: u64,
    /// Bytes fetched from origins into the cache.
    pub fetched_bytes: u64,
    /// Chunks dropped because their file was missing or corrupt.
    pub chunks_dropped: u64,
    /// Chunks evicted.
    pub chunks_evicted: u64,
    /// Files whose reads were cached behind their readers (fills started).
    pub fills_behind: u64,
}

/// A read from arrival to reply.
#[derive(Clone, Debug)]
struct Read {
    ino: Ino,
    offset: u64,
    end: u64,
    deadline: Time,
    /// Whether it has waited for an origin (for the hit ratio).
    waited: bool,
    /// Whether it follows on from the file's last reads
    /// ([`Engine::note_access_pattern`]): only such a read is read ahead
    /// of. A lone read elsewhere (a tag reader at the end of a file, a
    /// player's seek, or the kernel asking again for a few pages it let
    /// go of) reads what it asks for; if a stream follows, its next read
    /// starts the read-ahead.
    streaming: bool,
    /// Bytes the file's reader read back to back up to this read's end.
    run: u64,
}

/// A read handed to the io-shell to answer.
#[derive(Clone, Debug)]
struct InService {
    read: Read,
    pinned: Vec<ChunkId>,
    /// Its deadline passed and EIO was sent; only the pins remain to release.
    timed_out: bool,
    /// Its file changed while it was in service: never planned again.
    stale: bool,
    /// The origin file (and version) a `Passthrough` reads, to blame if it
    /// fails.
    source: Option<SourceFile>,
}

#[derive(Clone, Debug)]
struct FetchState {
    fetch: Fetch,
    key: SourceKey,
    /// Next offset a chunk is expected at.
    next: u64,
    last_progress: Time,
}

impl FetchState {
    /// The bytes this fetch may still map: no other fetch may start there.
    fn claim(&self) -> std::ops::Range<u64> {
        self.next..self.fetch.read_end()
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Backoff {
    failures: u32,
    until: Time,
    /// Whether waiting readers still need a wake-up at `until`.
    armed: bool,
}

#[derive(Clone, Copy, Debug)]
struct Readahead {
    last_end: u64,
    /// Where the reader's run of back-to-back reads started.
    run_start: u64,
    window: u64,
    /// How far its cached chunks were read ahead into memory.
    warmed_to: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DiskMode {
    Normal,
    Passthrough { next_probe: Time, probing: bool },
}

/// Files whose kept bytes were warmed lately (since the last tree swap).
#[derive(Debug, Default)]
struct Warmed {
    files: BTreeSet<Ino>,
    /// `files` in the order they were warmed, oldest first.
    order: VecDeque<Ino>,
    /// Files in the middle of a window: a read of one moves it on.
    marks: BTreeSet<Ino>,
}

impl Warmed {
    /// Remembers that `ino` was warmed, forgetting the oldest beyond
    /// [`WARMED_FILES_MAX`].
    fn note(&mut self, ino: Ino) {
        if !self.files.insert(ino) {
            return;
        }
        if self.order.len() >= WARMED_FILES_MAX
            && let Some(old) = self.order.pop_front()
        {
            self.files.remove(&old);
            self.marks.remove(&old);
        }
        self.order.push_back(ino);
    }
}

/// Whom a fetch is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum For {
    /// A reader (waiting, or about to): read `window` bytes past what it
    /// wants, to keep a sequential reader ahead.
    Reader { window: u64 },
    /// A fill behind readers (`behind.rs`): exactly the ranges read.
    Fill,
}

/// What a read plan found.
enum Plan {
    /// Every byte is cached: reply from these pieces.
    Ready(Vec<Piece>),
    /// Bytes are on their way (or will be after a backoff).
    Wait,
    /// Read straight from this origin file.
    Passthrough(SourceFile),
    /// The read cannot succeed.
    Fail(Errno),
}

/// Bounds the read-ahead bookkeeping: it is a hint, not state worth memory.
const READAHEAD_ENTRIES_MAX: usize = 4096;

/// Kept bytes read ahead of a scan, at most, each time one of its reads
/// reaches the engine (the executor's memory cache holds 16 MiB: room for
/// the windows of a few scans at once; more would evict what a scan on
/// several threads has not read yet).
const WARM_BYTES_MAX: u64 = 4 << 20;
/// Files warmed lately, remembered so that a scan's window is not warmed
/// again at each of its reads. Bounded: a file warmed long ago (since
/// evicted from memory) is warmed again by the next scan.
const WARMED_FILES_MAX: usize = 2048;
/// A run of back-to-back cached chunks of a file's kept bytes: where it
/// starts in the file, and its chunks (id, length).
type KeptRun = (u64, Vec<(ChunkId, u32)>);

/// Folders past the current one a scan is read ahead into.
const WARM_FOLDERS_AHEAD: usize = 8;
/// Bytes of one run a sequential reader's cached chunks are read ahead in
/// (`warm_cached_ahead`): several runs are read side by side.
const WARM_RUN_BYTES: u64 = 1 << 20;

/// The MusicFS state machine.
pub struct Engine {
    config: Config,
    /// Shared, so metadata operations read a snapshot without the engine.
    tree: Arc<VirtualTree>,
    manifests: BTreeMap<SourceKey, Manifest>,
    dirty_manifests: BTreeSet<SourceKey>,
    cache: ChunkCache,
    pending: BTreeMap<ReqId, Read>,
    in_service: BTreeMap<ReqId, InService>,
    fetches: BTreeMap<FetchId, FetchState>,
    backoff: BTreeMap<SourceKey, Backoff>,
    readahead: BTreeMap<Ino, Readahead>,
    /// Files whose kept bytes were warmed lately (since the last tree
    /// swap), and their order, oldest first.
    warmed: Warmed,
    /// Reads of fill-behind origins still to be cached (`behind.rs`).
    behind: behind::Behind,
    disk: DiskMode,
    /// Shutting down: no new reads, no new fetches.
    draining: bool,
    health: HealthTable,
    next_fetch: u64,
    rng: SplitMix64,
    outputs: VecDeque<Output>,
    stats: Stats,
    /// Pinned origin files (see `pins.rs`).
    pins: BTreeMap<SourceKey, Pin>,
    dirty_pins: BTreeSet<SourceKey>,
    next_pin_seq: u64,
    /// Trees swapped in so far.
    tree_epoch: u64,
    /// Reads are being refused for the read limit (told once per episode).
    over_read_limit: bool,
}

impl Engine {
    /// An engine over `tree`, with the persisted chunk maps and chunk index.
    /// `seed` feeds the retry jitter, so a simulation replays exactly.
    pub fn new(
        config: Config,
        tree: VirtualTree,
        manifests: impl IntoIterator<Item = (SourceKey, Manifest)>,
        chunks: impl IntoIterator<Item = (ChunkId, u32, u64)>,
        seed: u64,
    ) -> Engine {
        let mut cache = ChunkCache::new(
            config.cache_capacity_bytes,
            config.evict_start_pct,
            config.evict_stop_pct,
        );
        cache.load_all(chunks);
        let health = HealthTable::new(config.health.clone());
        let mut engine = Engine {
            config,
            draining: false,
            health,
            tree: Arc::new(tree),
            manifests: manifests.into_iter().collect(),
            dirty_manifests: BTreeSet::new(),
            cache,
            pending: BTreeMap::new(),
            in_service: BTreeMap::new(),
            fetches: BTreeMap::new(),
            backoff: BTreeMap::new(),
            readahead: BTreeMap::new(),
            warmed: Warmed::default(),
            behind: behind::Behind::default(),
            disk: DiskMode::Normal,
            next_fetch: 1,
            rng: SplitMix64(seed),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            pins: BTreeMap::new(),
            dirty_pins: BTreeSet::new(),
            next_pin_seq: 1,
            tree_epoch: 0,
            over_read_limit: false,
        };
        engine.drop_stale_manifests();
        engine.track_tree_origins(Time::ZERO);
        engine.evict();
        engine.debug_check_manifests();
        engine
    }

    /// Starts watching the health of an origin (origins of the tree are
    /// watched automatically; this is for origins that hold no track yet).
    pub fn track_origin(&mut self, now: Time, origin: OriginId) {
        self.health.track(origin, now);
    }

    fn track_tree_origins(&mut self, now: Time) {
        let origins: BTreeSet<OriginId> = self
            .tree
            .files()
            .flat_map(|(_, f)| f.sources.iter().map(|s| s.origin))
            .collect();
        for origin in origins {
            self.health.track(origin, now);
        }
    }

    /// Each origin's health, for `musicfs status` and the logs.
    pub fn origin_statuses(&self) -> Vec<OriginStatus> {
        self.health.statuses()
    }

    /// The result of an [`Output::CheckOrigin`].
    pub fn health_check_done(
        &mut self,
        now: Time,
        origin: OriginId,
        check: CheckId,
        result: Result<(), String>,
    ) {
        let t = self.health.check_done(
            now,
            origin,
            check,
            result.as_ref().map(|_| ()).map_err(String::as_str),
        );
        self.note_health(now, t);
    }

    fn note_health(&mut self, now: Time, transition: Option<health::Transition>) {
        if let Some((origin, from, to)) = transition {
            self.outputs
                .push_back(Output::Notice(Notice::OriginHealth(origin, from, to)));
            // A recovered origin may serve reads that were waiting.
            if to < from {
                self.replan_all(now);
            }
        }
    }

    // ----- metadata: answered at once -------------------------------------

    /// The tree.
    pub fn tree(&self) -> &VirtualTree {
        &self.tree
    }

    /// The tree as a snapshot that outlives the engine's lock: metadata
    /// operations answer from it without queuing behind reads. It changes
    /// only when a sync swaps the tree ([`Engine::tree_epoch`] moves).
    pub fn tree_snapshot(&self) -> Arc<VirtualTree> {
        Arc::clone(&self.tree)
    }

    /// Trees swapped in so far.
    pub fn tree_epoch(&self) -> u64 {
        self.tree_epoch
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// FUSE lookup.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr, Errno> {
        self.tree.lookup_attr(parent, name)
    }

    /// FUSE getattr.
    pub fn getattr(&self, ino: Ino) -> Result<Attr, Errno> {
        self.tree.getattr(ino)
    }

    /// FUSE readdir: up to `limit` entries from `offset`.
    pub fn readdir(&self, ino: Ino, offset: u64, limit: usize) -> Result<Vec<DirEntry>, Errno> {
        self.tree.readdir(ino, offset, limit)
    }

    /// FUSE open: files only, and never for writing.
    pub fn open(&self, ino: Ino, write: bool) -> Result<(), Errno> {
        self.tree.open(ino, write)
    }

    /// FUSE opendir.
    pub fn opendir(&self, ino: Ino) -> Result<(), Errno> {
        self.tree.opendir(ino)
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The chunk index.
    pub fn cache(&self) -> &ChunkCache {
        &self.cache
    }

    /// The chunk map of one origin file, if any.
    pub fn manifest(&self, key: &SourceKey) -> Option<&Manifest> {
        self.manifests.get(key)
    }

    /// Whether reads currently bypass the cache.
    pub fn in_passthrough(&self) -> bool {
        matches!(self.disk, DiskMode::Passthrough { .. })
    }

    /// Reads waiting for bytes or being answered.
    pub fn reads_in_flight(&self) -> usize {
        self.pending.len() + self.in_service.len()
    }

    /// Fetches in flight.
    pub fn fetches_in_flight(&self) -> usize {
        self.fetches.len()
    }

    /// Pins held by reads being answered; must always equal
    /// `cache().total_pins()` (an invariant the simulator checks).
    pub fn pins_held_by_reads(&self) -> u64 {
        self.in_service
            .values()
            .map(|s| s.pinned.len() as u64)
            .sum()
    }

    /// The requests waiting for bytes or being answered, with their
    /// deadlines (for liveness checks).
    pub fn read_deadlines(&self) -> Vec<(ReqId, Time)> {
        self.pending
            .iter()
            .map(|(&r, read)| (r, read.deadline))
            .chain(
                self.in_service
                    .iter()
                    .filter(|(_, s)| !s.timed_out)
                    .map(|(&r, s)| (r, s.read.deadline)),
            )
            .collect()
    }

    /// Chunk maps changed since the last call, for the io-shell to persist:
    /// `None` means the map was dropped and its stored copy must go too.
    pub fn take_dirty_manifests(&mut self) -> Vec<(SourceKey, Option<Manifest>)> {
        let keys = std::mem::take(&mut self.dirty_manifests);
        keys.into_iter()
            .map(|k| {
                let m = self.manifests.get(&k).cloned();
                (k, m)
            })
            .collect()
    }

    /// Chunk access times changed since the last call.
    pub fn take_touched_chunks(&mut self) -> Vec<(ChunkId, u64)> {
        self.cache.take_touched()
    }

    /// Files that moved inside their origin keep their chunk maps: call this
    /// before [`Engine::replace_tree`] with the new tree. The sync matched
    /// old and new by identity; the map is kept only if size and mtime agree
    /// (the bytes are the same), under the new path and version.
    pub fn move_sources(&mut self, moves: &[(SourceKey, SourceFile)]) {
        self.move_pins(moves);
        for (old, new) in moves {
            let Some(mut m) = self.manifests.remove(old) else {
                continue;
            };
            self.dirty_manifests.insert(old.clone());
            if m.version.size == new.version.size && m.version.mtime_ns == new.version.mtime_ns {
                m.version = new.version.clone();
                let key = key_of(new);
                self.manifests.insert(key.clone(), m);
                self.dirty_manifests.insert(key);
            }
        }
    }

    /// Replaces the tree with a newer build (after a rescan). Chunk maps of
    /// files whose version changed are dropped; readers of files that
    /// changed get EIO rather than a mix of two versions.
    pub fn replace_tree(&mut self, now: Time, tree: VirtualTree) -> TreeDiff {
        let diff = tree::diff(&self.tree, &tree);
        // Readers waiting on a file whose bytes changed get EIO: their range
        // was computed from the old version, and no reply may mix versions.
        let changed: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, r)| file_changed(&self.tree, &tree, r.ino))
            .map(|(&req, _)| req)
            .collect();
        for req in changed {
            self.pending.remove(&req);
            self.fail_read(req, Errno::Io);
        }
        // Readers being answered finish from the version they started on;
        // if that answer fails, they are not planned again on the new one.
        for s in self.in_service.values_mut() {
            s.stale |= file_changed(&self.tree, &tree, s.read.ino);
        }
        // A pause earned by an old version says nothing about the new one.
        // (Looked up per paused file: maps of every file's version were
        // tens of MB at a sync's peak on a large library.)
        let old_tree = &self.tree;
        self.backoff.retain(|(origin, path), _| {
            let version =
                |t: &VirtualTree| t.find_source(*origin, path).map(|(_, s)| s.version.clone());
            version(&tree).is_some_and(|v| version(old_tree) == Some(v))
        });
        self.tree = Arc::new(tree);
        self.tree_epoch += 1;
        // Files may have changed: warm anew.
        self.warmed = Warmed::default();
        self.drop_stale_manifests();
        self.settle_pins();
        self.track_tree_origins(now);
        self.replan_all(now);
        self.debug_check_manifests();
        diff
    }

    // ----- reads -----------------------------------------------------------

    /// Starts a graceful shutdown: reads arriving from now on get EIO, reads
    /// in flight go on (the caller waits for [`Engine::reads_in_flight`] to
    /// reach zero, up to its drain timeout, then calls [`Engine::abort_all`]).
    pub fn begin_shutdown(&mut self) {
        self.draining = true;
    }

    /// Ends every read still waiting with EIO and cancels every fetch: the
    /// drain timeout passed. Pinned chunks are released as the io-shell
    /// reports the reads it was answering.
    pub fn abort_all(&mut self) {
        self.draining = true;
        let reqs: Vec<ReqId> = self.pending.keys().copied().collect();
        for req in reqs {
            self.pending.remove(&req);
            self.fail_read(req, Errno::Io);
        }
        let late: Vec<ReqId> = self
            .in_service
            .iter()
            .filter(|(_, s)| !s.timed_out)
            .map(|(&r, _)| r)
            .collect();
        for req in late {
            if let Some(s) = self.in_service.get_mut(&req) {
                s.timed_out = true;
            }
            self.fail_read(req, Errno::Io);
        }
        let fetches: Vec<FetchId> = self.fetches.keys().copied().collect();
        for id in fetches {
            self.fetches.remove(&id);
            self.outputs.push_back(Output::CancelFetch(id));
        }
    }

    /// A FUSE read of `size` bytes at `offset` of `ino`.
    pub fn read(&mut self, now: Time, req: ReqId, ino: Ino, offset: u64, size: u32) {
        if self.draining {
            self.fail_read(req, Errno::Io);
            return;
        }
        let max = self.config.reads_in_flight_max;
        if self.pending.len() + self.in_service.len() >= max {
            if !self.over_read_limit {
                self.over_read_limit = true;
                self.outputs
                    .push_back(Output::Notice(Notice::TooManyReads(max)));
            }
            self.fail_read(req, Errno::Again);
            return;
        }
        self.over_read_limit = false;
        let Some(file) = self.tree.file(ino) else {
            let errno = if self.tree.get(ino).is_some() {
                Errno::IsDir
            } else {
                Errno::NoEnt
            };
            self.fail_read(req, errno);
            return;
        };
        let end = offset.saturating_add(u64::from(size)).min(file.size);
        if let Some(bytes) = &file.generated {
            // Made by the tree: answered from memory, like metadata.
            let range = usize::try_from(offset.min(end)).unwrap_or(usize::MAX)
                ..usize::try_from(end).unwrap_or(usize::MAX);
            let data = bytes.get(range).unwrap_or_default().to_vec();
            self.stats.reads_served += 1;
            self.stats.reads_hit += 1;
            self.outputs.push_back(Output::Generated { req, data });
            return;
        }
        let mut read = Read {
            ino,
            offset: offset.min(end),
            end,
            deadline: now + self.config.read_timeout,
            waited: false,
            streaming: false,
            run: 0,
        };
        if read.offset < read.end {
            (read.streaming, read.run) = self.note_access_pattern(ino, read.offset, read.end);
        }
        self.pending.insert(req, read);
        self.plan_read(now, req);
    }

    /// The io-shell has answered a `Serve` or `Passthrough`, or could not
    /// answer a `Serve` because of `faults` (chunks missing, corrupt or
    /// unreadable): then the bad chunks are dropped and the read is planned
    /// again, so it is served from a fresh, verified fetch.
    pub fn read_finished(&mut self, now: Time, req: ReqId, faults: &[(ChunkId, ChunkFault)]) {
        let Some(service) = self.in_service.remove(&req) else {
            return;
        };
        let leak = usize::from(self.config.bugs().leak_pin);
        for id in service.pinned.iter().skip(leak) {
            self.cache.unpin(*id);
        }
        for &(id, fault) in faults {
            self.drop_chunk(now, id, fault);
        }
        if !faults.is_empty() && !service.timed_out {
            if service.stale {
                self.fail_read(req, Errno::Io);
            } else {
                self.pending.insert(req, service.read);
                self.plan_read(now, req);
            }
        }
        self.evict();
    }

    /// A `Passthrough` failed: the origin did not answer in time, or said
    /// the file changed or is gone. Nothing was sent to the reader. The
    /// failure counts against the origin and the file as a failed fetch
    /// does (health, a retry pause), and the read is planned again: from
    /// another origin holding the file, after the pause, or EIO at its
    /// deadline.
    pub fn passthrough_failed(&mut self, now: Time, req: ReqId, error: FetchError) {
        let Some(service) = self.in_service.remove(&req) else {
            return;
        };
        if let Some(src) = &service.source {
            let key = &key_of(src);
            // A version the tree no longer shows (a sync swapped it while
            // the read was out) changed, of course: that says nothing about
            // the version shown now.
            let shown = self
                .tree
                .file(service.read.ino)
                .is_some_and(|f| f.sources.contains(src));
            match error {
                FetchError::Changed | FetchError::NotFound if !shown => {}
                FetchError::Changed | FetchError::NotFound => {
                    self.outputs
                        .push_back(Output::Notice(Notice::SourceChanged(key.clone())));
                    self.mark_failed(now, key, u32::MAX);
                }
                FetchError::Unavailable(why) => {
                    let t = self.health.record(now, key.0, Err(&why));
                    self.outputs
                        .push_back(Output::Notice(Notice::FetchFailed(key.clone(), why)));
                    self.mark_failed(now, key, 1);
                    self.note_health(now, t);
                }
            }
        }
        if service.timed_out {
            return; // its deadline already answered it
        }
        if service.stale || self.draining {
            self.fail_read(req, Errno::Io);
            return;
        }
        self.pending.insert(req, service.read);
        self.plan_read(now, req);
    }

    /// Decides what to do with one pending read.
    fn plan_read(&mut self, now: Time, req: ReqId) {
        let Some(read) = self.pending.get(&req).cloned() else {
            return;
        };
        match self.plan(now, &read) {
            Plan::Ready(pieces) => {
                self.pending.remove(&req);
                self.stats.reads_served += 1;
                if !read.waited {
                    self.stats.reads_hit += 1;
                }
                let mut pinned = Vec::with_capacity(pieces.len());
                for p in &pieces {
                    self.cache.pin(p.id);
                    self.cache.touch(p.id);
                    pinned.push(p.id);
                }
                self.in_service.insert(
                    req,
                    InService {
                        read: read.clone(),
                        pinned,
                        timed_out: false,
                        stale: false,
                        source: None,
                    },
                );
                self.outputs.push_back(Output::Serve { req, pieces });
                if read.offset < read.end {
                    if self.in_kept_region(&read) {
                        // A scan outside any window starts one; one inside
                        // moves it on at its middle mark.
                        if !self.warmed.files.contains(&read.ino)
                            || self.warmed.marks.remove(&read.ino)
                        {
                            self.warm_ahead(read.ino);
                        }
                    } else if read.streaming {
                        self.prefetch(now, read.ino, read.end);
                    }
                }
            }
            Plan::Passthrough(source) => {
                self.pending.remove(&req);
                self.stats.reads_passthrough += 1;
                let len = u32::try_from(read.end - read.offset).unwrap_or(u32::MAX);
                self.in_service.insert(
                    req,
                    InService {
                        read: read.clone(),
                        pinned: Vec::new(),
                        timed_out: false,
                        stale: false,
                        source: Some(source.clone()),
                    },
                );
                self.outputs.push_back(Output::Passthrough {
                    req,
                    source,
                    offset: read.offset,
                    len,
                    streaming: read.streaming && read.run >= self.config.passthrough_ahead_after,
                });
            }
            Plan::Wait => {
                if let Some(r) = self.pending.get_mut(&req) {
                    r.waited = true;
                }
            }
            Plan::Fail(errno) => {
                self.pending.remove(&req);
                self.fail_read(req, errno);
            }
        }
    }

    fn plan(&mut self, now: Time, read: &Read) -> Plan {
        let Some(file) = self.tree.file(read.ino) else {
            return Plan::Fail(Errno::Io);
        };
        if read.end > file.size {
            // The file shrank under the read (defence in depth: replace_tree
            // fails such reads): never plan past EOF.
            return Plan::Fail(Errno::Io);
        }
        if read.offset >= read.end {
            return Plan::Ready(Vec::new());
        }
        let sources = file.sources.clone();
        // Any source whose chunk map covers the range with cached chunks will
        // do: cached music plays whatever the origins are doing.
        for src in &sources {
            if let Some(pieces) = self.cached_pieces(&key_of(src), read.offset, read.end) {
                return Plan::Ready(pieces);
            }
        }
        let Some(src) = self.pick_source(now, &sources) else {
            // Every origin holding the file is down (offline mode), or all
            // gave up on it: uncached bytes cannot be had.
            // Unless a reader-prompted check of an unhealthy origin may show it back.
            let reachable = sources
                .iter()
                .any(|s| self.health.health(s.origin) != Health::Unhealthy);
            if reachable && self.earliest_retry(&sources).is_some() {
                return Plan::Wait;
            }
            let mut checking = false;
            for s in &sources {
                if self.health.health(s.origin) == Health::Unhealthy {
                    checking |= self.health.check_on_demand(now, s.origin);
                }
            }
            return if checking {
                Plan::Wait
            } else {
                Plan::Fail(Errno::Io)
            };
        };
        if self.in_passthrough() || self.config.uncached_origins.contains(&src.origin) {
            return Plan::Passthrough(src);
        }
        if self.fills_behind(read.ino, &src) {
            self.behind.note(now, read.ino, &src, read.offset, read.end);
            return Plan::Passthrough(src);
        }
        self.ensure_fetching(now, read.ino, &src, read.offset, read.end);
        Plan::Wait
    }

    /// The pieces for `offset..end` if every byte is mapped and cached.
    fn cached_pieces(&self, key: &SourceKey, offset: u64, end: u64) -> Option<Vec<Piece>> {
        let manifest = self.manifests.get(key)?;
        let mut pieces = Vec::new();
        let mut pos = offset;
        for (o, e) in manifest.overlapping(offset..end) {
            if o > pos || !self.cache.contains(e.id) {
                return None;
            }
            let from = pos - o;
            let take = (o + u64::from(e.len)).min(end) - pos;
            pieces.push(Piece {
                id: e.id,
                chunk_len: e.len,
                from: u32::try_from(from).ok()?,
                len: u32::try_from(take).ok()?,
            });
            pos += take;
        }
        (pos >= end).then_some(pieces)
    }

    /// The first source, in priority order, not pausing after a failure.
    /// A source that failed too often is tried again once its (longest)
    /// pause is over, by whichever read comes next.
    ///
    /// Healthy origins come first, then degraded ones, each in priority
    /// order; unhealthy origins are not asked at all (their health checks
    /// bring them back).
    fn pick_source(&self, now: Time, sources: &[SourceFile]) -> Option<SourceFile> {
        [Health::Healthy, Health::Degraded]
            .into_iter()
            .find_map(|wanted| {
                sources
                    .iter()
                    .filter(|s| self.health.health(s.origin) == wanted)
                    .find(|s| self.backoff.get(&key_of(s)).is_none_or(|b| b.until <= now))
                    .cloned()
            })
    }

    /// When a backed-off source may be tried again, if any may.
    fn earliest_retry(&self, sources: &[SourceFile]) -> Option<Time> {
        sources
            .iter()
            .filter_map(|s| self.backoff.get(&key_of(s)))
            .filter(|b| b.failures < self.config.fetch_retries_max)
            .map(|b| b.until)
            .min()
    }

    /// Makes sure fetches are under way for every byte of `offset..end` of
    /// `src` that is not cached.
    fn ensure_fetching(&mut self, now: Time, ino: Ino, src: &SourceFile, offset: u64, end: u64) {
        let window = self
            .readahead
            .get(&ino)
            .map_or(self.config.readahead_min_bytes, |r| r.window);
        self.ensure_fetching_for(now, src, offset, end, For::Reader { window });
    }

    /// [`Engine::ensure_fetching`], for a reader or for a fill behind one.
    fn ensure_fetching_for(
        &mut self,
        now: Time,
        src: &SourceFile,
        offset: u64,
        end: u64,
        wanted: For,
    ) {
        let key = key_of(src);
        // Taken out while the fetches are planned (nothing below reads or
        // writes the map), and put back: no copy of the whole chunk map on
        // every read.
        let manifest = self
            .manifests
            .remove(&key)
            .unwrap_or_else(|| Manifest::new(src.version.clone()));
        let mut pos = offset;
        // Walk the range: each stretch is mapped-and-cached (skip), claimed by
        // a fetch in flight (wait), mapped-but-absent (verify) or unmapped
        // (chunk). Bounded by the number of extents in the read.
        while pos < end {
            if let Some(claim_end) = self.claimed_until(&key, pos) {
                pos = claim_end;
                continue;
            }
            match manifest.overlapping(pos..pos + 1).next() {
                Some((o, e)) if self.cache.contains(e.id) => pos = o + u64::from(e.len),
                Some((o, _)) => pos = self.start_verify(now, src, &manifest, o, wanted),
                None => pos = self.start_chunking(now, src, &manifest, pos, end, wanted),
            }
        }
        self.manifests.insert(key, manifest);
    }

    /// If a fetch in flight will map `pos`, where its claim ends.
    fn claimed_until(&self, key: &SourceKey, pos: u64) -> Option<u64> {
        self.fetches
            .values()
            .filter(|f| &f.key == key)
            .map(FetchState::claim)
            .find(|c| c.contains(&pos))
            .map(|c| c.end)
    }

    /// The start of the first claim after `pos`, if any.
    fn next_claim_start(&self, key: &SourceKey, pos: u64) -> Option<u64> {
        self.fetches
            .values()
            .filter(|f| &f.key == key)
            .map(|f| f.claim().start)
            .filter(|&s| s > pos)
            .min()
    }

    /// Starts a verify fetch for the run of absent extents from `offset`.
    /// Returns where the run ends (always past `offset`).
    fn start_verify(
        &mut self,
        now: Time,
        src: &SourceFile,
        m: &Manifest,
        offset: u64,
        wanted: For,
    ) -> u64 {
        let key = key_of(src);
        let limit = offset.saturating_add(self.config.verify_batch_bytes);
        let mut extents: Vec<(u64, Extent)> = Vec::new();
        let mut pos = offset;
        for (o, e) in m.overlapping(offset..m.size()) {
            let contiguous = o == pos;
            if !contiguous || self.cache.contains(e.id) || o >= limit {
                break;
            }
            if self.claimed_until(&key, o).is_some() {
                break;
            }
            extents.push((o, e));
            pos = o + u64::from(e.len);
        }
        let Some(&(first_offset, _)) = extents.first() else {
            // A claim covers `offset` (callers check first); step past it.
            let first_len = m
                .overlapping(offset..offset + 1)
                .next()
                .map_or(1, |(_, e)| e.len);
            return offset + u64::from(first_len);
        };
        debug_assert_eq!(first_offset, offset);
        let fetch = Fetch {
            id: self.next_fetch_id(),
            source: src.clone(),
            start: offset,
            plan: FetchPlan::Verify { extents },
            store: true,
            after_failure: self.backoff.contains_key(&key),
            behind: wanted == For::Fill,
        };
        self.start_fetch(now, fetch);
        pos
    }

    /// Starts a chunking fetch for unmapped bytes at `pos`, wanted up to
    /// `want_end`. Returns where its claim ends.
    fn start_chunking(
        &mut self,
        now: Time,
        src: &SourceFile,
        m: &Manifest,
        pos: u64,
        want_end: u64,
        wanted: For,
    ) -> u64 {
        let key = key_of(src);
        // Where the unmapped stretch holding `pos` begins: the end of the
        // extent before it, or of the file's start.
        let gap_start = m
            .overlapping(0..pos)
            .last()
            .map_or(0, |(o, e)| o + u64::from(e.len));
        let claimed_between = self
            .fetches
            .values()
            .any(|f| f.key == key && f.claim().start < pos && f.claim().end > gap_start);
        // Start at the natural boundary if it is close, so a seek does not
        // split a chunk a whole-file cut would have made; but never make a
        // seek far into an uncached file wait for the bytes before it.
        let start = if !claimed_between && pos - gap_start <= self.config.seek_align_bytes {
            gap_start
        } else {
            pos
        };
        let mut hard_end = m.next_mapped_start(start);
        if let Some(c) = self.next_claim_start(&key, start) {
            hard_end = hard_end.min(c);
        }
        let window = match wanted {
            For::Reader { window } => window,
            For::Fill => 0,
        };
        let soft_end = want_end.max(start).saturating_add(window).min(hard_end);
        let fetch = Fetch {
            id: self.next_fetch_id(),
            source: src.clone(),
            start,
            plan: FetchPlan::Chunk { soft_end, hard_end },
            store: true,
            after_failure: self.backoff.contains_key(&key),
            behind: wanted == For::Fill,
        };
        let claim_end = fetch.read_end();
        self.start_fetch(now, fetch);
        claim_end.max(pos + 1)
    }

    fn start_fetch(&mut self, now: Time, fetch: Fetch) {
        self.stats.fetches += 1;
        let state = FetchState {
            key: key_of(&fetch.source),
            next: fetch.start,
            last_progress: now,
            fetch: fetch.clone(),
        };
        self.fetches.insert(fetch.id, state);
        self.outputs.push_back(Output::Fetch(fetch));
    }

    fn next_fetch_id(&mut self) -> FetchId {
        let id = FetchId(self.next_fetch);
        self.next_fetch += 1;
        id
    }

    /// Whether a read of `ino` from `src` is answered straight from the
    /// origin and cached behind the reader (see `behind.rs`). Not for a
    /// pinned file (its filler waits for the bytes to be cached), nor for
    /// a new file while the fills are far behind.
    fn fills_behind(&self, ino: Ino, src: &SourceFile) -> bool {
        self.config.fill_behind_origins.contains(&src.origin)
            && !self.is_pinned(ino)
            && (!self.behind.is_full() || self.behind.is_waiting(&key_of(src)))
    }

    /// Fills started behind readers and still fetching.
    fn fills_in_flight(&self) -> usize {
        self.behind
            .fetches
            .iter()
            .filter(|f| self.fetches.contains_key(f))
            .count()
    }

    /// Starts caching what readers of fill-behind origins read, for the
    /// files that have rested long enough, a few files at a time. A fill
    /// is a plain fetch of the ranges read (no read-ahead): chunked,
    /// verified and durable before indexed like any other. A file the tree
    /// no longer shows as read, or whose origin is down or pausing after a
    /// failure, is not filled (a later read notes it again).
    fn start_due_fills(&mut self, now: Time) {
        let fetches = &self.fetches;
        self.behind.fetches.retain(|f| fetches.contains_key(f));
        if self.draining || self.in_passthrough() {
            self.behind.clear();
            return;
        }
        let after = self.config.fill_behind_after;
        while let Some(p) = self.behind.take_due(now, after) {
            let src = &p.source;
            let shown = self
                .tree
                .file(p.ino)
                .is_some_and(|f| f.sources.contains(src));
            let pausing = self
                .backoff
                .get(&key_of(src))
                .is_some_and(|b| b.until > now);
            if !shown || pausing || self.health.health(src.origin) == Health::Unhealthy {
                continue;
            }
            let first = self.next_fetch;
            for (&start, &end) in &p.ranges {
                self.ensure_fetching_for(now, src, start, end, For::Fill);
            }
            self.behind
                .fetches
                .extend((first..self.next_fetch).map(FetchId));
            self.stats.fills_behind += 1;
        }
    }

    /// Files read from fill-behind origins whose bytes are still to be
    /// cached, the bytes read of them, and the fills under way.
    pub fn fills_waiting(&self) -> (usize, u64, usize) {
        let (files, bytes) = self.behind.waiting();
        (files, bytes, self.fills_in_flight())
    }

    /// Keeps a sequential reader's bytes arriving before it asks for them.
    fn prefetch(&mut self, now: Time, ino: Ino, from: u64) {
        if self.in_passthrough() || self.draining {
            return;
        }
        let Some(file) = self.tree.file(ino) else {
            return;
        };
        let window = self
            .readahead
            .get(&ino)
            .map_or(self.config.readahead_min_bytes, |r| r.window);
        let to = from.saturating_add(window / 2).min(file.size);
        if from >= to {
            return;
        }
        let sources = file.sources.clone();
        self.warm_cached_ahead(ino, from, to);
        if let Some(src) = self.pick_source(now, &sources)
            && !self.config.uncached_origins.contains(&src.origin)
            && !self.fills_behind(ino, &src)
        {
            self.ensure_fetching(now, ino, &src, from, to);
        }
    }

    /// The chunk map, in `manifests`, of the first source of `file` that
    /// has one for the version the tree shows.
    fn current_manifest<'m>(
        manifests: &'m BTreeMap<SourceKey, Manifest>,
        file: &tree::FileNode,
    ) -> Option<&'m Manifest> {
        file.sources
            .iter()
            .find_map(|s| manifests.get(&key_of(s)).filter(|m| m.version == s.version))
    }

    /// Reads the cached chunks of `from..to` of `ino` into memory ahead of
    /// its sequential reader (`Output::Warm`), in runs of about
    /// [`WARM_RUN_BYTES`] that the cache disk reads side by side: a reader
    /// of a cached file whose pages the kernel no longer holds (a reboot, a
    /// track played again) finds its chunks in memory rather than waiting
    /// for the disk read by read. It tops up once less than half of the
    /// range ahead was read (`Readahead::warmed_to`), so each chunk is asked
    /// for once per pass.
    fn warm_cached_ahead(&mut self, ino: Ino, from: u64, to: u64) {
        let Some(warmed_to) = self.readahead.get(&ino).map(|r| r.warmed_to) else {
            return;
        };
        if warmed_to >= from + (to - from) / 2 {
            return;
        }
        let start = from.max(warmed_to);
        let Some(file) = self.tree.file(ino) else {
            return;
        };
        let Some(manifest) = Self::current_manifest(&self.manifests, file) else {
            return;
        };
        let mut runs = Vec::new();
        let mut run: Vec<(ChunkId, u32)> = Vec::new();
        let mut run_bytes = 0;
        for (_, e) in manifest.overlapping(start..to) {
            if self.cache.contains(e.id) {
                run.push((e.id, e.len));
                run_bytes += u64::from(e.len);
            }
            if !self.cache.contains(e.id) || run_bytes >= WARM_RUN_BYTES {
                if !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
                run_bytes = 0;
            }
        }
        if !run.is_empty() {
            runs.push(run);
        }
        if let Some(r) = self.readahead.get_mut(&ino) {
            r.warmed_to = to;
        }
        if !runs.is_empty() {
            self.outputs.push_back(Output::Warm(runs, WarmFor::Stream));
        }
    }

    /// A read inside what a first scan kept of a file is, most likely, a
    /// media server's tag scan: it reads the kept bytes of the folder's
    /// other files next, then those of the next folders of its walk. The
    /// kept chunks of those files still on disk are read into memory now
    /// (`Output::Warm`), side by side, so the scan finds each file's tags
    /// there rather than waiting for the cache disk file by file: a
    /// read-ahead across files that asks no origin for anything. The
    /// window: the files after this one up to [`WARM_FOLDERS_AHEAD`]
    /// folders on, at most [`WARM_BYTES_MAX`] bytes not warmed lately. A
    /// read of the file in its middle moves it on (`Warmed::marks`), so a
    /// scan's other reads cost the engine one set lookup each.
    ///
    /// The same bytes are handed to the kernel's page cache as they arrive
    /// (`Output::Prime`): the scan then reads them with no round trip to
    /// the daemon at all. The kernel takes pages only for inodes it holds
    /// (a file of a folder it listed); a folder listed after its
    /// read-ahead has its pages handed over then (`Engine::listed`). The
    /// middle file's are not: the scan's read of it is how the window
    /// moves on.
    fn warm_ahead(&mut self, ino: Ino) {
        if self.in_passthrough() || self.draining {
            return;
        }
        let tree = Arc::clone(&self.tree);
        let Some(folder) = tree.get(ino).map(|n| n.parent) else {
            return;
        };
        // The files after this one (a scan on several threads may have
        // entered the folder anywhere), then the next folders'.
        let here = tree.files_in(folder).skip_while(|&(f, _)| f != ino).skip(1);
        let there = std::iter::successors(tree.next_folder(folder), |&f| tree.next_folder(f))
            .take(WARM_FOLDERS_AHEAD)
            .flat_map(|f| tree.files_in(f));
        let mut runs = Vec::new();
        let mut primes = Vec::new();
        let mut bytes = 0;
        let mut new_files = Vec::new();
        self.warmed.note(ino);
        for (file_ino, file) in here.chain(there) {
            if bytes >= WARM_BYTES_MAX {
                break;
            }
            if self.warmed.files.contains(&file_ino) {
                continue;
            }
            let Some(manifest) = Self::current_manifest(&self.manifests, file) else {
                continue;
            };
            self.warmed.note(file_ino);
            new_files.push(file_ino);
            let file_runs = self.kept_runs(manifest);
            bytes += file_runs
                .iter()
                .flat_map(|(_, run)| run)
                .map(|&(_, len)| u64::from(len))
                .sum::<u64>();
            primes.extend(self.primes_of(file_ino, file.size, &file_runs));
            runs.extend(file_runs.into_iter().map(|(_, run)| run));
        }
        if let Some(&mid) = new_files.get(new_files.len() / 2) {
            self.warmed.marks.insert(mid);
            // The kernel reads the mark's pages from the daemon: that read
            // is how the window moves on (a scan reading handed-over pages
            // sends nothing).
            primes.retain(|p| p.ino != mid);
        }
        if !runs.is_empty() {
            self.outputs.push_back(Output::Warm(runs, WarmFor::Scan));
        }
        // After the read-ahead they wait for.
        if !primes.is_empty() {
            self.outputs.push_back(Output::Prime(primes));
        }
    }

    /// The runs of back-to-back cached chunks holding `manifest`'s kept
    /// bytes (its head, its tail): where each starts, and its chunks.
    fn kept_runs(&self, manifest: &Manifest) -> Vec<KeptRun> {
        let mut runs: Vec<KeptRun> = Vec::new();
        // Where the last run ends, while it can grow.
        let mut open_to = None;
        for (offset, extent) in manifest.kept_extents() {
            if !self.cache.contains(extent.id) {
                open_to = None;
                continue;
            }
            let chunk = (extent.id, extent.len);
            match runs.last_mut() {
                Some((_, chunks)) if open_to == Some(offset) => chunks.push(chunk),
                _ => runs.push((offset, vec![chunk])),
            }
            open_to = Some(offset + u64::from(extent.len));
        }
        runs
    }

    /// `runs` of file `ino` (of `size` bytes) as pages to hand the kernel.
    fn primes_of<'r>(
        &self,
        ino: Ino,
        size: u64,
        runs: &'r [KeptRun],
    ) -> impl Iterator<Item = Prime> + 'r {
        let epoch = self.tree_epoch;
        runs.iter().map(move |(offset, chunks)| Prime {
            ino,
            offset: *offset,
            size,
            chunks: chunks.clone(),
            epoch,
        })
    }

    /// The kernel listed these files (a READDIRPLUS): it now holds their
    /// inodes, so it can take their pages before it asks for them. Those
    /// a scan's read-ahead warmed (`warm_ahead`) before the listing get
    /// their kept bytes handed over (`Output::Prime`). The executor hands
    /// over only what is in memory: a listing alone reads nothing from the
    /// disk.
    pub fn listed(&mut self, files: &[Ino]) {
        if self.in_passthrough() || self.draining {
            return;
        }
        let tree = Arc::clone(&self.tree);
        let mut primes = Vec::new();
        for &ino in files {
            let Some(file) = tree.file(ino) else {
                continue;
            };
            if !self.warmed.files.contains(&ino) || self.warmed.marks.contains(&ino) {
                continue;
            }
            let Some(manifest) = Self::current_manifest(&self.manifests, file) else {
                continue;
            };
            let runs = self.kept_runs(manifest);
            primes.extend(self.primes_of(ino, file.size, &runs));
        }
        if !primes.is_empty() {
            self.outputs.push_back(Output::Prime(primes));
        }
    }

    /// Whether `read` lies in what a tag scan kept of its file (its head
    /// or its tail). Such reads fetch nothing ahead: a media server's tag
    /// scan, and the kernel's read-ahead behind it, stay there, and asking
    /// the origin for more would cost a request nobody needs. A player
    /// that reads on past the kept head gets its read-ahead from there.
    fn in_kept_region(&self, read: &Read) -> bool {
        let Some(file) = self.tree.file(read.ino) else {
            return false;
        };
        file.sources.iter().any(|s| {
            self.manifests
                .get(&key_of(s))
                .is_some_and(|m| m.version == s.version && m.within_kept(read.offset, read.end))
        })
    }

    /// Grows the read-ahead window of sequential readers, resets it on
    /// seeks. Returns whether this read follows on from the last ones, or
    /// starts at the file's beginning (a track played, or played again),
    /// and how long the run of back-to-back reads it ends is.
    fn note_access_pattern(&mut self, ino: Ino, offset: u64, end: u64) -> (bool, u64) {
        if self.readahead.len() >= READAHEAD_ENTRIES_MAX && !self.readahead.contains_key(&ino) {
            self.readahead.clear();
        }
        let min = self.config.readahead_min_bytes;
        let max = self.config.readahead_max_bytes;
        let ra = self.readahead.entry(ino).or_insert(Readahead {
            last_end: 0,
            run_start: 0,
            window: min,
            warmed_to: 0,
        });
        // The kernel splits a reader's reads, and its read-ahead requests
        // (several in flight, taken by two FUSE threads; up to 1 MiB each
        // where an admin widened the mount's read-ahead, or for O_DIRECT)
        // reach the engine a little out of order: a read within two of its
        // own lengths of the furthest one so far is still sequential.
        let slack = end.saturating_sub(offset).saturating_mul(2).max(256 * 1024);
        let near = offset.abs_diff(ra.last_end) <= slack;
        ra.window = if near { (ra.window * 2).min(max) } else { min };
        ra.last_end = if near { ra.last_end.max(end) } else { end };
        if !near {
            ra.warmed_to = 0;
            ra.run_start = offset;
        }
        (
            near || offset == 0,
            end.saturating_sub(ra.run_start.min(offset)),
        )
    }

    // ----- fetch results ---------------------------------------------------

    /// Chunks a fetch produced, in file order.
    pub fn fetch_progress(&mut self, now: Time, fetch: FetchId, chunks: &[FetchedChunk]) {
        let Some(state) = self.fetches.get_mut(&fetch) else {
            return; // cancelled or already failed
        };
        state.last_progress = now;
        let key = state.key.clone();
        let mut outcome = Ok(());
        let mut disk_fault = None;
        for c in chunks {
            match self.accept_chunk(fetch, &key, c) {
                Ok(()) => {}
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
            match c.stored {
                Stored::Yes | Stored::Pending => self.cache.insert(c.extent.id, c.extent.len),
                Stored::Skipped => {}
                Stored::Failed(fault) => disk_fault = disk_fault.or(Some(fault)),
            }
        }
        if let Err(e) = outcome {
            self.outputs.push_back(Output::CancelFetch(fetch));
            self.fetch_done(now, fetch, Err(e));
        } else {
            self.backoff.remove(&key);
            let t = self.health.record(now, key.0, Ok(()));
            self.note_health(now, t);
        }
        if let Some(fault) = disk_fault {
            self.enter_passthrough(now, fault);
        }
        // Serve whoever can now be served (pinning their chunks) before
        // evicting, so a small cache never evicts what a reader waits for.
        self.replan_key(now, &key);
        self.evict();
    }

    /// Chunks reported [`Stored::Pending`] could not be made durable: they
    /// are no longer cached (a read fetches them again), and the cache
    /// disk's fault is handled as a failed store's.
    pub fn chunks_not_stored(&mut self, now: Time, failed: &[(ChunkId, DiskFault)]) {
        for &(id, fault) in failed {
            if self.cache.remove(id) {
                // Replies using it lose their pin with it (as in drop_chunk).
                for s in self.in_service.values_mut() {
                    s.pinned.retain(|p| *p != id);
                }
            }
            self.enter_passthrough(now, fault);
        }
        self.replan_all(now);
    }

    /// Checks one reported chunk against the fetch's plan and maps it.
    fn accept_chunk(
        &mut self,
        fetch: FetchId,
        key: &SourceKey,
        c: &FetchedChunk,
    ) -> Result<(), FetchError> {
        let state = self
            .fetches
            .get_mut(&fetch)
            .ok_or(FetchError::Unavailable("fetch vanished".into()))?;
        if c.offset != state.next {
            return Err(FetchError::Unavailable(
                "chunks reported out of order".into(),
            ));
        }
        if let FetchPlan::Verify { extents } = &state.fetch.plan {
            // The origin must give back exactly the chunks this version was
            // cut into; anything else means the file changed under us.
            let expected = extents.iter().find(|(o, _)| *o == c.offset);
            if expected.map(|(_, e)| *e) != Some(c.extent) {
                return Err(FetchError::Changed);
            }
            state.next = c.offset + u64::from(c.extent.len);
            self.stats.fetched_bytes += u64::from(c.extent.len);
            return Ok(());
        }
        state.next = c.offset + u64::from(c.extent.len);
        self.stats.fetched_bytes += u64::from(c.extent.len);
        let m = self
            .manifests
            .get_mut(key)
            .ok_or(FetchError::Unavailable("chunk map dropped".into()))?;
        if m.insert(c.offset, c.extent).is_err() {
            return Err(FetchError::Unavailable(
                "chunk overlaps mapped bytes".into(),
            ));
        }
        self.dirty_manifests.insert(key.clone());
        Ok(())
    }

    /// A fetch ended: all its chunks were reported, or it failed.
    pub fn fetch_done(&mut self, now: Time, fetch: FetchId, result: Result<(), FetchError>) {
        let Some(state) = self.fetches.remove(&fetch) else {
            return;
        };
        let key = state.key;
        let current = self
            .tree
            .find_source(key.0, &key.1)
            .is_some_and(|(_, s)| s.version == state.fetch.source.version);
        if !current && !matches!(result, Err(FetchError::Unavailable(_))) {
            // A fetch of a version the tree no longer shows: its outcome
            // says nothing about the file as it is now.
            self.replan_key(now, &key);
            return;
        }
        match result {
            Ok(()) => {
                self.backoff.remove(&key);
            }
            Err(FetchError::Changed | FetchError::NotFound) => {
                // Never mix two versions of a file: forget what we mapped and
                // fail its readers; the next rescan shows the new version.
                self.outputs
                    .push_back(Output::Notice(Notice::SourceChanged(key.clone())));
                if self.manifests.remove(&key).is_some() {
                    self.dirty_manifests.insert(key.clone());
                }
                self.mark_failed(now, &key, u32::MAX);
            }
            Err(FetchError::Unavailable(why)) => {
                let t = self.health.record(now, key.0, Err(&why));
                self.outputs
                    .push_back(Output::Notice(Notice::FetchFailed(key.clone(), why)));
                self.mark_failed(now, &key, 1);
                self.note_health(now, t);
            }
        }
        self.replan_key(now, &key);
        self.start_due_fills(now);
    }

    fn mark_failed(&mut self, now: Time, key: &SourceKey, weight: u32) {
        let base = self.config.retry_backoff_base;
        let max = self.config.retry_backoff_max;
        let b = self.backoff.entry(key.clone()).or_default();
        b.failures = b.failures.saturating_add(weight);
        let exp = base.saturating_mul(1u32 << b.failures.min(16).saturating_sub(1));
        let pause = exp.min(max);
        // Full jitter: spread retries of many readers over the pause.
        let jitter = self
            .rng
            .below(u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX) / 2 + 1);
        b.until = now + pause / 2 + Duration::from_nanos(jitter);
        b.armed = true;
    }

    // ----- timers ------------------------------------------------------------

    /// When [`Engine::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let reads = self
            .pending
            .values()
            .chain(
                self.in_service
                    .values()
                    .filter(|s| !s.timed_out)
                    .map(|s| &s.read),
            )
            .map(|r| r.deadline);
        let stalls = self
            .fetches
            .values()
            .map(|f| f.last_progress + self.config.fetch_stall_timeout);
        let retries = self.backoff.values().filter(|b| b.armed).map(|b| b.until);
        let health = self.health.next_timer();
        let probe = match self.disk {
            DiskMode::Passthrough {
                next_probe,
                probing: false,
            } => Some(next_probe),
            _ => None,
        };
        let fills = if self.draining || self.fills_in_flight() >= behind::FILL_FETCHES_MAX {
            None // a fill's end starts the next
        } else {
            self.behind.next_due(self.config.fill_behind_after)
        };
        reads
            .chain(stalls)
            .chain(retries)
            .chain(probe)
            .chain(health)
            .chain(fills)
            .min()
    }

    /// Fires whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        for t in self.health.expire(now) {
            self.note_health(now, Some(t));
        }
        for (origin, check) in self.health.due_checks(now) {
            self.outputs
                .push_back(Output::CheckOrigin { origin, check });
        }
        let stalled: Vec<FetchId> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.last_progress + self.config.fetch_stall_timeout <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in stalled {
            self.outputs.push_back(Output::CancelFetch(id));
            if self.config.bugs().stalled_origin_is_healthy {
                self.fetches.remove(&id);
                continue;
            }
            self.fetch_done(now, id, Err(FetchError::Unavailable("no progress".into())));
        }
        if let DiskMode::Passthrough {
            next_probe,
            probing: false,
        } = self.disk
            && next_probe <= now
        {
            self.disk = DiskMode::Passthrough {
                next_probe,
                probing: true,
            };
            self.outputs.push_back(Output::ProbeDisk);
        }
        // Retry after backoff, and time out what waited too long.
        for b in self.backoff.values_mut() {
            if b.armed && b.until <= now {
                b.armed = false;
            }
        }
        self.replan_all(now);
        let late: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for req in late {
            if let Some(read) = self.pending.remove(&req) {
                self.outputs
                    .push_back(Output::Notice(Notice::ReadTimedOut(read.ino)));
                self.fail_read(req, Errno::Io);
            }
        }
        let mut late_service = Vec::new();
        for (&req, s) in self.in_service.iter_mut() {
            if !s.timed_out && s.read.deadline <= now {
                s.timed_out = true;
                late_service.push(req);
            }
        }
        for req in late_service {
            self.fail_read(req, Errno::Io);
        }
        self.start_due_fills(now);
    }

    // ----- the cache disk --------------------------------------------------

    /// The result of a [`Output::ProbeDisk`].
    pub fn disk_probe(&mut self, now: Time, ok: bool) {
        if !self.in_passthrough() {
            return;
        }
        if ok {
            self.disk = DiskMode::Normal;
            self.outputs
                .push_back(Output::Notice(Notice::PassthroughOff));
        } else {
            self.disk = DiskMode::Passthrough {
                next_probe: now + self.config.disk_probe_interval,
                probing: false,
            };
        }
    }

    /// The cache disk failed: stop writing to it, send reads straight to
    /// the origins, and probe it now and then. Running out of descriptors is
    /// not the disk's fault and passes by itself.
    fn enter_passthrough(&mut self, now: Time, fault: DiskFault) {
        if fault == DiskFault::NoDescriptors || self.in_passthrough() {
            return;
        }
        self.disk = DiskMode::Passthrough {
            next_probe: now + self.config.disk_probe_interval,
            probing: false,
        };
        self.outputs
            .push_back(Output::Notice(Notice::PassthroughOn(fault)));
        // Fetches in flight would only fail to store; their readers are
        // planned again and go through.
        let ids: Vec<FetchId> = self.fetches.keys().copied().collect();
        for id in ids {
            self.fetches.remove(&id);
            self.outputs.push_back(Output::CancelFetch(id));
        }
        self.replan_all(now);
    }

    fn drop_chunk(&mut self, now: Time, id: ChunkId, fault: ChunkFault) {
        if self.cache.remove(id) {
            // Other replies pinned it too: their pins went with it, so they
            // must not release a pin on a fresh copy of the chunk later.
            for s in self.in_service.values_mut() {
                s.pinned.retain(|p| *p != id);
            }
            self.stats.chunks_dropped += 1;
            self.outputs
                .push_back(Output::Notice(Notice::ChunkDropped(id, fault)));
            // Delete the bad file and its index entry as an eviction would.
            self.outputs.push_back(Output::Evict(vec![id]));
        }
        if let ChunkFault::Disk(fault) = fault {
            self.enter_passthrough(now, fault);
        }
    }

    fn evict(&mut self) {
        if !self.cache.over_start_watermark() {
            return;
        }
        let held = if self.config.bugs().evict_pinned {
            BTreeSet::new()
        } else {
            self.held_chunks()
        };
        let kept = self.kept_chunks();
        let victims = self
            .cache
            .evict(|id| held.contains(&id), |id| kept.contains(&id));
        if !victims.is_empty() {
            self.stats.chunks_evicted += victims.len() as u64;
            self.outputs.push_back(Output::Evict(victims));
        }
    }

    // ----- helpers -----------------------------------------------------------

    fn fail_read(&mut self, req: ReqId, errno: Errno) {
        self.stats.reads_failed += 1;
        self.outputs.push_back(Output::ReadError { req, errno });
    }

    fn replan_key(&mut self, now: Time, key: &SourceKey) {
        let reqs: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, r)| {
                self.tree
                    .file(r.ino)
                    .is_some_and(|f| f.sources.iter().any(|s| &key_of(s) == key))
            })
            .map(|(&id, _)| id)
            .collect();
        for req in reqs {
            self.plan_read(now, req);
        }
    }

    fn replan_all(&mut self, now: Time) {
        let reqs: Vec<ReqId> = self.pending.keys().copied().collect();
        for req in reqs {
            self.plan_read(now, req);
        }
    }

    /// Forgets chunk maps that no longer match their file's version.
    fn drop_stale_manifests(&mut self) {
        // Without a search of the tree per chunk map (on 200,000 tracks,
        // 130 ms of every mount and every sync): the maps and the tree's
        // source index are both in (origin, path) order, and are matched
        // in one walk of the two; the files' versions are then read in
        // inode order, the order the tree keeps its nodes in.
        let mut index = self.tree.source_index().peekable();
        let mut shown: Vec<(Ino, &SourceKey, &Manifest)> = Vec::new();
        let mut stale: Vec<SourceKey> = Vec::new();
        for (key, manifest) in &self.manifests {
            while index.next_if(|(k, _)| *k < key).is_some() {}
            match index.next_if(|(k, _)| *k == key) {
                Some((_, ino)) => shown.push((ino, key, manifest)),
                None => stale.push(key.clone()),
            }
        }
        shown.sort_unstable_by_key(|&(ino, _, _)| ino);
        let mut files = self.tree.files().peekable();
        for (ino, key, manifest) in shown {
            while files.next_if(|&(i, _)| i < ino).is_some() {}
            let current = files
                .peek()
                .filter(|&&(i, _)| i == ino)
                .is_some_and(|(_, f)| {
                    f.sources.iter().any(|s| {
                        s.origin == key.0 && s.path == key.1 && s.version == manifest.version
                    })
                });
            if !current {
                stale.push(key.clone());
            }
        }
        for key in stale {
            self.manifests.remove(&key);
            self.dirty_manifests.insert(key);
        }
    }

    /// Chunks holding bytes a tag scan kept: evicted last.
    fn kept_chunks(&self) -> BTreeSet<ChunkId> {
        self.manifests
            .values()
            .flat_map(|m| m.kept_extents().map(|(_, e)| e.id))
            .collect()
    }

    /// Changes whenever what is cached, or the tree, changes: a view of
    /// "what plays offline" computed at one epoch holds until it moves.
    pub fn cache_epoch(&self) -> (u64, u64) {
        (self.tree_epoch, self.cache.changes())
    }

    /// Everything queued for the io-shell, one at a time. Once the queue is
    /// drained, debug builds check the engine's own bookkeeping.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.outputs.pop_front();
        if out.is_none() {
            self.debug_check();
        }
        out
    }

    /// The engine's bookkeeping agrees with itself, checked after every
    /// transition in debug builds (the simulator's seeds run them): every
    /// pin the cache counts is held by a read in service, no two fetches
    /// claim the same bytes of a file, and every chunk map is of the
    /// version the tree shows. A planted bug may break these on purpose:
    /// then the simulator's invariants, not a panic, must catch it.
    fn debug_check(&self) {
        if !cfg!(debug_assertions) || self.config.bugs() != PlantedBugs::default() {
            return;
        }
        debug_assert_eq!(
            self.cache.total_pins(),
            self.pins_held_by_reads(),
            "the cache's pins are the pins of the reads in service"
        );
        let mut claims: BTreeMap<&SourceKey, Vec<std::ops::Range<u64>>> = BTreeMap::new();
        for f in self.fetches.values() {
            claims.entry(&f.key).or_default().push(f.claim());
        }
        for (key, mut ranges) in claims {
            ranges.sort_by_key(|r| r.start);
            for w in ranges.windows(2) {
                debug_assert!(
                    w[0].end <= w[1].start || w[0].is_empty() || w[1].is_empty(),
                    "fetches of {}:{} claim overlapping bytes {:?} and {:?}",
                    key.0,
                    key.1,
                    w[0],
                    w[1]
                );
            }
        }
    }

    /// Every chunk map is of the version the tree shows for its file.
    fn debug_check_manifests(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let mut current: BTreeMap<SourceKey, &crate::manifest::FileVersion> = BTreeMap::new();
        for (_, f) in self.tree.files() {
            for s in &f.sources {
                current.insert(key_of(s), &s.version);
            }
        }
        for (key, m) in &self.manifests {
            debug_assert!(
                current.get(key).is_some_and(|v| **v == m.version),
                "the chunk map of {}:{} is of a version the tree does not show",
                key.0,
                key.1
            );
        }
    }
}

/// Whether the bytes of file `ino` differ between two trees (gone, or
/// another size or other sources).
fn file_changed(old: &VirtualTree, new: &VirtualTree, ino: Ino) -> bool {
    !matches!(
        (old.file(ino), new.file(ino)),
        (Some(a), Some(b)) if a.size == b.size && a.sources == b.sources && a.generated == b.generated
    )
}

/// A tiny deterministic generator for retry jitter (SplitMix64).
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}
