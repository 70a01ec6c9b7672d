//! The executor: turns the engine's outputs into primitive I/O, and decides
//! every ordering between those I/Os.
//!
//! The engine decides *what* to do (serve these chunks, fetch these bytes,
//! evict those chunks). The executor decides *how*, as a second pure state
//! machine beside it: how many origin requests a fetch keeps in flight and
//! in which order their bytes reach the [`Cutter`]; which chunks share one
//! durable write (group commit) and that the index learns of a chunk only
//! after its file is durable; that a chunk being deleted is not written and
//! a chunk being written is not deleted; that every cached chunk read from
//! disk is checked against its id; that each FUSE read is answered once.
//!
//! What is left to a shell is only to carry out each [`Io`] and report its
//! completion: the daemon does it with tokio and real files, the simulator
//! with its turmoil network and crashing disk, the engine tests with maps.
//! So all three run this code, and thousands of simulated seeds test the
//! orderings the daemon relies on.
//!
//! Every method takes the engine by `&mut` and drains the outputs it queued
//! before returning; the shell then drains [`Exec::poll_io`].

mod ahead;

use crate::SourceFile;
use crate::chunk::ChunkId;
use crate::engine::{
    CheckId, ChunkFault, CutChunk, Cutter, DiskFault, Engine, Fetch, FetchError, FetchId,
    FetchedChunk, Notice, Output, Piece, Prime, ReqId, Stored, WarmFor,
};
use crate::fs::Errno;
use crate::ids::{Ino, OriginId};
use crate::manifest::Extent;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Identifies one primitive I/O from start to completion. Chosen by the
/// executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Pages waiting for a read-ahead to be handed to the kernel, at most (a
/// hint: the oldest are dropped).
const PRIMES_WAITING_MAX: usize = 1024;

/// The executor's limits.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// Bytes asked of an origin in one request while fetching.
    pub piece_bytes: u32,
    /// Requests of one fetch in flight together. A remote origin answers
    /// each after a round trip: one at a time, a fetch would mostly wait.
    /// Their bytes are still handed to the cutter in order.
    pub pieces_in_flight: usize,
    /// Verified chunk bytes kept in memory, so consecutive kernel reads
    /// through one chunk do not read and hash it from disk again.
    pub memory_bytes: u64,
    /// After this long without a read, the memory cache is emptied (its
    /// chunks are on disk, and the kernel's page cache holds what was
    /// read): a daemon between albums keeps only what it needs.
    pub memory_idle: Duration,
    /// Chunk bytes one durable write carries at most (group commit: chunks
    /// cut while a write is under way share the next one).
    pub write_batch_bytes: u64,
    /// Group writes under way together. The next batch is written while
    /// the last one waits for its sync, so the disk and the CPU overlap.
    pub writes_in_flight: usize,
    /// A sequential reader's read-ahead reads of the cache disk
    /// (`Output::Warm` with [`WarmFor::Stream`]) under way together; the
    /// rest wait their turn, and one a read waits for goes at once. Each
    /// holds about a MiB in memory until its reader gets there. A tag
    /// scan's read-ahead ([`WarmFor::Scan`]) is not held back: a 1-thread
    /// scan that caught up with a queue waited for the disk file by file,
    /// 13% slower (9 interleaved pairs).
    pub warm_reads_in_flight: usize,
    /// Cut chunk bytes waiting for the disk, at most: fetches stop asking
    /// their origins for more until the disk catches up. A fill behind
    /// readers counts the bytes being written too: it holds at most this
    /// much between its origin and the disk.
    pub write_queue_bytes: u64,
    /// An origin request not answered by then fails.
    pub origin_request_timeout: Duration,
    /// A health check not answered by then fails.
    pub check_timeout: Duration,
    /// Bytes of an origin read ahead of a streaming reader answered
    /// straight from it (`ahead.rs`), in one origin read; up to twice this
    /// is at hand or under way past the reader. 0: none.
    pub passthrough_ahead_bytes: u32,
    /// The kernel's page size: pages handed to it (`Io::Prime`) start
    /// and end on its pages (or at the file's end), as it takes only
    /// whole pages.
    pub page_bytes: u64,
}

impl ExecConfig {
    /// Limits that fit `engine`'s configuration.
    pub fn for_engine(config: &crate::engine::Config) -> ExecConfig {
        ExecConfig {
            piece_bytes: 1 << 20,
            pieces_in_flight: 4,
            memory_bytes: 16 << 20,
            memory_idle: Duration::from_secs(5),
            // Together with the memory cache, what a burst of cold reads may
            // hold at once beyond the daemon's idle figure: 8 MiB queued and
            // two 8 MiB batches being written.
            write_batch_bytes: 8 << 20,
            writes_in_flight: 2,
            // Enough to keep a disk busy: 4 MiB ahead of the reader.
            warm_reads_in_flight: 4,
            write_queue_bytes: 8 << 20,
            origin_request_timeout: config.fetch_stall_timeout,
            check_timeout: config.health.check_timeout,
            // Eight of the kernel's 128 KiB reads: the origin reads in
            // large pieces while the reader takes the last one's bytes.
            passthrough_ahead_bytes: 1 << 20,
            page_bytes: 4096,
        }
    }
}

/// One slice of a reply: `len` bytes from `from` in a verified chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// The chunk's bytes.
    pub chunk: Arc<[u8]>,
    /// Offset of the slice inside the chunk.
    pub from: u32,
    /// Length of the slice.
    pub len: u32,
}

/// The answer to a FUSE read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// These bytes (empty at end of file).
    Bytes(Vec<u8>),
    /// The concatenation of these slices (assembled by the shell, outside
    /// any lock).
    Slices(Vec<Slice>),
    /// An error.
    Error(Errno),
}

impl Reply {
    /// The bytes of the reply, assembled (an error has none).
    pub fn assemble(&self) -> Vec<u8> {
        match self {
            Reply::Bytes(b) => b.clone(),
            Reply::Slices(slices) => {
                let total: usize = slices.iter().map(|s| s.len as usize).sum();
                let mut out = Vec::with_capacity(total);
                for s in slices {
                    let from = s.from as usize;
                    out.extend_from_slice(&s.chunk[from..from + s.len as usize]);
                }
                out
            }
            Reply::Error(_) => Vec::new(),
        }
    }
}

/// Why an origin is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// To fill the cache.
    Fetch(FetchId),
    /// To answer a read directly (cache failing, or a `cache=off` origin).
    Passthrough(ReqId),
    /// To answer the next reads of a stream answered directly (`ahead.rs`).
    ReadAhead,
}

/// One primitive I/O for the shell to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Io {
    /// Answer a FUSE read. Each read is answered exactly once.
    Reply {
        /// The read.
        req: ReqId,
        /// The answer.
        reply: Reply,
    },
    /// Read `len` bytes at `offset` of an origin file, and report
    /// [`Exec::origin_read_done`]; past `timeout`, report a failure.
    OriginRead {
        /// The op.
        op: OpId,
        /// What to read.
        source: SourceFile,
        /// Offset.
        offset: u64,
        /// Length.
        len: u32,
        /// Fail if no answer by then.
        timeout: Duration,
        /// Why (for counters).
        purpose: Purpose,
    },
    /// Give up on an origin read: its completion, if any, is ignored.
    AbortOriginRead(OpId),
    /// Check that an origin answers (cheaply) and report
    /// [`Exec::check_done`]; past `timeout`, report a failure.
    CheckOrigin {
        /// The origin.
        origin: OriginId,
        /// The check.
        check: CheckId,
        /// Fail if no answer by then.
        timeout: Duration,
    },
    /// Read these chunk files (unverified: the executor checks them) and
    /// report [`Exec::chunks_read`], one result per chunk, in order.
    ReadChunks {
        /// The op.
        op: OpId,
        /// Chunk ids.
        ids: Vec<ChunkId>,
    },
    /// Make these chunks durable files, each written whole or not at all (a
    /// temp file, flushed, renamed into place, flushed), and report
    /// [`Exec::chunks_written`], one result per chunk, in order. Do not
    /// index them: an [`Io::IndexChunks`] follows.
    WriteChunks {
        /// The op.
        op: OpId,
        /// The chunks and their bytes.
        chunks: Vec<(ChunkId, Arc<[u8]>)>,
    },
    /// Record these durable chunks (id, length) in the index, and report
    /// [`Exec::chunks_indexed`].
    IndexChunks {
        /// The op.
        op: OpId,
        /// The chunks.
        chunks: Vec<(ChunkId, u32)>,
    },
    /// Delete these chunks: index entries first, then their files (a crash
    /// in between leaves an orphan file, never an entry without a file),
    /// and report [`Exec::chunks_deleted`].
    DeleteChunks {
        /// The op.
        op: OpId,
        /// The chunks.
        ids: Vec<ChunkId>,
    },
    /// Try writing to the cache disk and report [`Exec::disk_probed`].
    ProbeDisk,
    /// Hand these bytes of file `ino` to the kernel's page cache (nothing
    /// to report). They are the file's bytes at `offset` in tree epoch
    /// `epoch`: if the tree has changed since (a later epoch), drop the
    /// file's pages again, as a sync may have told the kernel of the
    /// change before they arrived.
    Prime {
        /// The file.
        ino: Ino,
        /// Where the bytes start (on a page).
        offset: u64,
        /// The bytes.
        slices: Vec<Slice>,
        /// The tree epoch they belong to.
        epoch: u64,
    },
    /// Worth a log line.
    Notice(Notice),
}

/// What the executor did, for a simulator that checks it (see
/// [`Exec::tap`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The engine asked for this.
    Output(Output),
    /// A fetch's chunks were reported to the engine.
    Progress {
        /// The fetch.
        fetch: FetchId,
        /// Chunks reported.
        chunks: usize,
        /// Of which stored.
        stored: usize,
    },
    /// A group write ended: this many chunks durable, this many failed.
    Durable {
        /// Chunks written and indexed.
        chunks: usize,
        /// Chunks that could not be stored.
        failed: usize,
    },
    /// A fetch's end was reported to the engine.
    FetchDone {
        /// The fetch.
        fetch: FetchId,
        /// Its result.
        result: Result<(), FetchError>,
    },
}

/// A chunk cut by a fetch, on its way to the disk.
#[derive(Clone, Debug)]
struct Queued {
    offset: u64,
    extent: Extent,
    data: Arc<[u8]>,
}

#[derive(Debug)]
enum Op {
    Piece {
        fetch: FetchId,
        offset: u64,
        len: u32,
    },
    Passthrough {
        req: ReqId,
        len: u32,
    },
    /// Origin bytes read ahead of a stream answered directly.
    Ahead,
    Read {
        req: ReqId,
    },
    Write {
        batch: Vec<Queued>,
    },
    Index {
        batch: Vec<(Queued, Stored)>,
    },
    /// An index update a planted bug sent early: its completion is moot.
    EarlyIndex,
    Delete {
        ids: Vec<ChunkId>,
    },
    /// Chunks read ahead (`Output::Warm`): id and length, and whether it
    /// counts against [`ExecConfig::warm_reads_in_flight`].
    Warm {
        chunks: Vec<(ChunkId, u32)>,
        paced: bool,
    },
}

#[derive(Debug)]
struct FetchRun {
    fetch: Fetch,
    cutter: Cutter,
    /// Next offset to ask the origin for.
    next_piece: u64,
    end: u64,
    /// Requests in flight, by offset.
    in_flight: BTreeMap<u64, (OpId, u32)>,
    /// Answers that arrived ahead of the cutter, by offset. A failed one
    /// waits its turn too: the pieces before it are still cut and reported,
    /// so a retry starts where this fetch got to.
    arrived: BTreeMap<u64, Result<Vec<u8>, FetchError>>,
    /// The reading side ended (all bytes cut, or an error).
    ended: Option<Result<(), FetchError>>,
}

#[derive(Debug)]
struct Serving {
    pieces: Vec<Piece>,
    /// Chunks at hand (from memory, or read and verified).
    have: BTreeMap<ChunkId, Arc<[u8]>>,
    /// Chunks asked of the disk, in the order of the [`Io::ReadChunks`].
    ids: Vec<ChunkId>,
    /// Chunks a read-ahead is reading: the read waits for it rather than
    /// read them a second time.
    awaiting: Vec<ChunkId>,
}

/// Verified chunk bytes, least recently used first out.
#[derive(Debug, Default)]
struct Memory {
    capacity: u64,
    bytes: u64,
    tick: u64,
    chunks: BTreeMap<ChunkId, (Arc<[u8]>, u64)>,
    lru: BTreeMap<u64, ChunkId>,
}

impl Memory {
    fn get(&mut self, id: ChunkId) -> Option<Arc<[u8]>> {
        let (data, at) = self.chunks.get_mut(&id)?;
        self.lru.remove(at);
        self.tick += 1;
        *at = self.tick;
        self.lru.insert(self.tick, id);
        Some(Arc::clone(data))
    }

    fn insert(&mut self, id: ChunkId, data: Arc<[u8]>) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        self.remove(id);
        self.tick += 1;
        self.chunks.insert(id, (data, self.tick));
        self.lru.insert(self.tick, id);
        self.bytes += len;
        while self.bytes > self.capacity {
            let Some((_, old)) = self.lru.pop_first() else {
                break;
            };
            if let Some((d, _)) = self.chunks.remove(&old) {
                self.bytes -= d.len() as u64;
            }
        }
    }

    fn remove(&mut self, id: ChunkId) {
        if let Some((d, at)) = self.chunks.remove(&id) {
            self.lru.remove(&at);
            self.bytes -= d.len() as u64;
        }
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.lru.clear();
        self.bytes = 0;
    }
}

/// What the executor did, for `musicfs status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Reads whose chunks were all in memory (or being stored), or being
    /// read ahead into it.
    pub served_from_memory: u64,
    /// Of those, the reads that waited for a read-ahead still reading
    /// their chunks: how far behind a scan its read-ahead runs.
    pub waited_for_read_ahead: u64,
    /// Reads that had chunk files read from the cache disk.
    pub served_from_disk: u64,
    /// Chunks read ahead into memory (`Output::Warm`) and found sound.
    pub chunks_warmed: u64,
    /// Bytes of the memory cache let go after reads went idle.
    pub memory_released_bytes: u64,
    /// Reads answered straight from an origin with bytes read ahead of them
    /// (`ahead.rs`), without an origin read of their own.
    pub served_read_ahead: u64,
    /// Runs of kept bytes handed to the kernel's page cache
    /// (`Output::Prime`).
    pub primed_runs: u64,
    /// Their bytes.
    pub primed_bytes: u64,
}

/// The executor's state: everything a crash forgets.
#[derive(Debug)]
pub struct Exec {
    config: ExecConfig,
    next_op: u64,
    io: VecDeque<Io>,
    /// Reads not yet answered.
    parked: BTreeSet<ReqId>,
    ops: BTreeMap<OpId, Op>,
    fetches: BTreeMap<FetchId, FetchRun>,
    serving: BTreeMap<ReqId, Serving>,
    memory: Memory,
    /// Chunks waiting for the disk, in the order they were cut.
    write_queue: VecDeque<Queued>,
    write_queue_bytes: u64,
    /// Group writes under way, each until its index update ends (at most
    /// [`ExecConfig::writes_in_flight`]).
    writing: usize,
    /// Chunk bytes of the group writes under way.
    writing_bytes: u64,
    /// Chunks queued, being written or being indexed (with multiplicity),
    /// and their bytes: the engine serves them from here until they are
    /// durable.
    storing: BTreeMap<ChunkId, (u32, Arc<[u8]>)>,
    /// Chunks with a delete under way (with multiplicity).
    deleting: BTreeMap<ChunkId, u32>,
    /// Evicted chunks whose delete waits for their store to end.
    deferred: BTreeSet<ChunkId>,
    /// Chunks a read-ahead is reading, or is to read.
    warming: BTreeSet<ChunkId>,
    /// Streams' read-ahead reads waiting their turn
    /// ([`ExecConfig::warm_reads_in_flight`]), oldest first: their ops are
    /// in `ops`, their chunks in `warming`.
    warm_queue: VecDeque<OpId>,
    /// Streams' read-ahead reads under way.
    warms_started: usize,
    /// Pages to hand the kernel once the read-ahead of their chunks ends
    /// (oldest first, at most [`PRIMES_WAITING_MAX`]).
    primes_waiting: VecDeque<Prime>,
    /// Origin bytes read ahead of streams answered straight from their
    /// origin.
    ahead: ahead::Ahead,
    /// When the last read came in.
    last_read: Option<Time>,
    /// Completions seen (for the planted lost-completion bug).
    completions: u64,
    stats: ExecStats,
    tap: Option<Vec<Observed>>,
}

impl Exec {
    /// An executor with nothing under way.
    pub fn new(config: ExecConfig) -> Exec {
        let memory = Memory {
            capacity: config.memory_bytes,
            ..Memory::default()
        };
        Exec {
            config,
            next_op: 1,
            io: VecDeque::new(),
            parked: BTreeSet::new(),
            ops: BTreeMap::new(),
            fetches: BTreeMap::new(),
            serving: BTreeMap::new(),
            memory,
            write_queue: VecDeque::new(),
            write_queue_bytes: 0,
            writing: 0,
            writing_bytes: 0,
            storing: BTreeMap::new(),
            deleting: BTreeMap::new(),
            deferred: BTreeSet::new(),
            warming: BTreeSet::new(),
            warm_queue: VecDeque::new(),
            warms_started: 0,
            primes_waiting: VecDeque::new(),
            ahead: ahead::Ahead::default(),
            last_read: None,
            completions: 0,
            stats: ExecStats::default(),
            tap: None,
        }
    }

    /// The limits.
    pub fn config(&self) -> &ExecConfig {
        &self.config
    }

    /// What it did so far.
    pub fn stats(&self) -> &ExecStats {
        &self.stats
    }

    /// Records every engine output and report from now on, for
    /// [`Exec::take_observed`] (the simulator's checks and trace).
    pub fn tap(&mut self) {
        self.tap = Some(Vec::new());
    }

    /// What happened since the last call (empty unless [`Exec::tap`]).
    pub fn take_observed(&mut self) -> Vec<Observed> {
        self.tap.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The next I/O to carry out.
    pub fn poll_io(&mut self) -> Option<Io> {
        self.io.pop_front()
    }

    /// Reads not answered yet.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Origin bytes at hand, read ahead of streams answered straight from
    /// their origin.
    pub fn read_ahead_bytes(&self) -> u64 {
        self.ahead.bytes()
    }

    /// Whether chunks wait for the disk or are being written or indexed.
    pub fn writes_pending(&self) -> bool {
        !self.write_queue.is_empty() || self.writing > 0
    }

    /// Whether `id` is queued, being written or being indexed.
    pub fn storing(&self, id: ChunkId) -> bool {
        self.storing.contains_key(&id)
    }

    fn op(&mut self, op: Op) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        self.ops.insert(id, op);
        id
    }

    fn observe(&mut self, o: impl FnOnce() -> Observed) {
        if let Some(t) = self.tap.as_mut() {
            t.push(o());
        }
    }

    // ----- inputs -----

    /// A FUSE read arrived.
    pub fn read(
        &mut self,
        e: &mut Engine,
        now: Time,
        req: ReqId,
        ino: crate::Ino,
        off: u64,
        size: u32,
    ) {
        self.parked.insert(req);
        self.last_read = Some(now);
        // The kernel asks for these pages itself: handing them over too
        // would only copy them again.
        if !self.primes_waiting.is_empty() {
            let end = off.saturating_add(u64::from(size));
            self.primes_waiting
                .retain(|p| p.ino != ino || p.offset < off || p.offset >= end);
        }
        e.read(now, req, ino, off, size);
        self.drain(e, now);
    }

    /// Empties the memory cache if no read came in for
    /// [`ExecConfig::memory_idle`] and none is under way; returns the bytes
    /// let go (0 if it kept them). Chunks not yet durable are kept: they
    /// live in the write queue, not here.
    pub fn release_idle_memory(&mut self, now: Time) -> u64 {
        let idle = self
            .last_read
            .is_none_or(|at| now.saturating_since(at) >= self.config.memory_idle);
        let held = self.memory.bytes + self.ahead.bytes();
        if !idle || !self.parked.is_empty() || !self.fetches.is_empty() || held == 0 {
            return 0;
        }
        let freed = self.memory.bytes + self.ahead.release();
        self.memory.clear();
        self.stats.memory_released_bytes += freed;
        freed
    }

    /// The engine's timer fired.
    pub fn handle_timeout(&mut self, e: &mut Engine, now: Time) {
        e.handle_timeout(now);
        self.drain(e, now);
    }

    /// Carries out what the engine queued (after the shell called it
    /// directly: a sync, a pin command).
    pub fn drain(&mut self, e: &mut Engine, now: Time) {
        while let Some(out) = e.poll_output() {
            if self.tap.is_some() {
                self.observe(|| Observed::Output(out.clone()));
            }
            self.on_output(e, now, out);
        }
    }

    /// An origin read ended.
    pub fn origin_read_done(
        &mut self,
        e: &mut Engine,
        now: Time,
        op: OpId,
        result: Result<Vec<u8>, FetchError>,
    ) {
        match self.ops.remove(&op) {
            Some(Op::Piece { fetch, offset, len }) => {
                self.piece_done(e, now, fetch, offset, len, result)
            }
            Some(Op::Passthrough { req, len }) => {
                // The engine never plans past the end of the file: another
                // length is a truncated answer or a changed file, and a
                // short reply would reach the reader as an early end.
                match result {
                    Ok(data) if data.len() == len as usize => {
                        self.reply(req, Reply::Bytes(data));
                        e.read_finished(now, req, &[]);
                    }
                    Ok(_) => e.passthrough_failed(now, req, FetchError::Changed),
                    Err(err) => e.passthrough_failed(now, req, err),
                }
            }
            Some(Op::Ahead) => {
                // Not the engine's: a failure is left to the reads waiting,
                // which go to the origin themselves and report their own.
                let misplace = e.config().bugs().misplace_read_ahead;
                let out = self
                    .ahead
                    .landed(op, result.ok().map(Arc::<[u8]>::from), misplace);
                self.carry_out(e, now, out);
            }
            Some(other) => {
                self.ops.insert(op, other); // not an origin read: ignore
            }
            None => {} // aborted
        }
        self.drain(e, now);
    }

    /// A health check ended.
    pub fn check_done(
        &mut self,
        e: &mut Engine,
        now: Time,
        origin: OriginId,
        check: CheckId,
        result: Result<(), String>,
    ) {
        e.health_check_done(now, origin, check, result);
        self.drain(e, now);
    }

    /// Chunk files were read: one result per id of the [`Io::ReadChunks`].
    pub fn chunks_read(
        &mut self,
        e: &mut Engine,
        now: Time,
        op: OpId,
        results: Vec<Result<Arc<[u8]>, ChunkFault>>,
    ) {
        if let Some(Op::Warm { .. }) = self.ops.get(&op)
            && let Some(Op::Warm { chunks, paced }) = self.ops.remove(&op)
        {
            if paced {
                self.warm_ended();
            }
            self.warmed(e, now, chunks, results);
            return;
        }
        self.completions += 1;
        if e.config().bugs().lose_completion && self.completions.is_multiple_of(16) {
            return; // planted: this serve never ends
        }
        let Some(Op::Read { req }) = self.ops.remove(&op) else {
            return;
        };
        let Some(mut serving) = self.serving.remove(&req) else {
            return;
        };
        let verify = !e.config().bugs().skip_verify;
        let lens: BTreeMap<ChunkId, u32> =
            serving.pieces.iter().map(|p| (p.id, p.chunk_len)).collect();
        let mut results = results.into_iter();
        let mut faults = Vec::new();
        for id in serving.ids.iter().copied() {
            let want = lens.get(&id).copied().unwrap_or(0) as usize;
            match results.next().unwrap_or(Err(ChunkFault::Missing)) {
                Ok(bytes) if bytes.len() == want && (!verify || id.matches(&bytes)) => {
                    self.memory.insert(id, Arc::clone(&bytes));
                    serving.have.insert(id, bytes);
                }
                Ok(_) => faults.push((id, ChunkFault::Corrupt)),
                Err(fault) => faults.push((id, fault)),
            }
        }
        if faults.is_empty() {
            let slices = slices_of(&serving.pieces, &serving.have);
            self.reply(req, Reply::Slices(slices));
        }
        e.read_finished(now, req, &faults);
        self.drain(e, now);
    }

    /// A write ended: one result per chunk of the [`Io::WriteChunks`].
    pub fn chunks_written(
        &mut self,
        e: &mut Engine,
        now: Time,
        op: OpId,
        results: Vec<Result<(), DiskFault>>,
    ) {
        let Some(Op::Write { batch }) = self.ops.remove(&op) else {
            return;
        };
        let mut results = results.into_iter();
        let done: Vec<(Queued, Stored)> = batch
            .into_iter()
            .map(|q| {
                let stored = match results.next() {
                    Some(Ok(())) => Stored::Yes,
                    Some(Err(f)) => Stored::Failed(f),
                    None => Stored::Failed(DiskFault::Io),
                };
                (q, stored)
            })
            .collect();
        if e.config().bugs().index_before_durable {
            // Planted: the index was told before the write (see write_next).
            self.write_ended(&done);
            self.stored(e, now, done);
        } else {
            // The index learns of a chunk only once its file is durable.
            let chunks: Vec<(ChunkId, u32)> = done
                .iter()
                .filter(|(_, s)| *s == Stored::Yes)
                .map(|(q, _)| (q.extent.id, q.extent.len))
                .collect();
            if chunks.is_empty() {
                self.write_ended(&done);
                self.stored(e, now, done);
            } else {
                // Still in flight: the write becomes an index update.
                let op = self.op(Op::Index { batch: done });
                self.io.push_back(Io::IndexChunks { op, chunks });
            }
        }
        self.write_next(e);
        self.drain(e, now);
    }

    /// An index update ended.
    pub fn chunks_indexed(
        &mut self,
        e: &mut Engine,
        now: Time,
        op: OpId,
        result: Result<(), DiskFault>,
    ) {
        let mut batch = match self.ops.remove(&op) {
            Some(Op::Index { batch }) => batch,
            Some(Op::EarlyIndex) | None => return,
            Some(other) => {
                self.ops.insert(op, other);
                return;
            }
        };
        if let Err(fault) = result {
            for (_, s) in &mut batch {
                if *s == Stored::Yes {
                    *s = Stored::Failed(fault);
                }
            }
        }
        self.write_ended(&batch);
        self.stored(e, now, batch);
        self.write_next(e);
        self.drain(e, now);
    }

    /// A delete ended (whatever happened: a chunk that could not be deleted
    /// is an orphan file, found by the next scan of the store).
    pub fn chunks_deleted(&mut self, e: &mut Engine, now: Time, op: OpId) {
        let Some(Op::Delete { ids }) = self.ops.remove(&op) else {
            return;
        };
        for id in ids {
            dec(&mut self.deleting, id);
        }
        self.write_next(e);
        self.drain(e, now);
    }

    /// The disk probe ended.
    pub fn disk_probed(&mut self, e: &mut Engine, now: Time, ok: bool) {
        e.disk_probe(now, ok);
        self.drain(e, now);
    }

    // ----- engine outputs -----

    fn on_output(&mut self, e: &mut Engine, now: Time, out: Output) {
        match out {
            Output::ReadError { req, errno } => self.reply(req, Reply::Error(errno)),
            Output::Generated { req, data } => self.reply(req, Reply::Bytes(data)),
            Output::Serve { req, pieces } => self.serve(e, now, req, pieces),
            Output::Passthrough {
                req,
                source,
                offset,
                len,
                streaming,
            } => {
                match self.ahead.take(req, &source, offset, len) {
                    ahead::Take::Ready(slices) => self.serve_read_ahead(e, now, req, slices),
                    ahead::Take::Waiting => {}
                    ahead::Take::Miss => self.passthrough(req, source.clone(), offset, len),
                }
                let window = self.config.passthrough_ahead_bytes;
                if streaming
                    && window > 0
                    && let Some((at, n)) = self.ahead.next(&source, offset + u64::from(len), window)
                {
                    let op = self.op(Op::Ahead);
                    let out = self.ahead.started(&source, op, at, n);
                    self.io.push_back(Io::OriginRead {
                        op,
                        source,
                        offset: at,
                        len: n,
                        timeout: self.config.origin_request_timeout,
                        purpose: Purpose::ReadAhead,
                    });
                    self.carry_out(e, now, out);
                }
            }
            Output::Fetch(fetch) => self.start_fetch(e, now, fetch),
            Output::CancelFetch(id) => {
                if let Some(run) = self.fetches.remove(&id) {
                    self.abort_pieces(&run);
                }
            }
            Output::Evict(ids) => self.evict(e, ids),
            Output::Warm(runs, to) => {
                for run in runs {
                    self.warm(run, to);
                }
            }
            Output::Prime(primes) => {
                for p in primes {
                    self.prime(e, p);
                }
            }
            Output::ProbeDisk => self.io.push_back(Io::ProbeDisk),
            Output::CheckOrigin { origin, check } => self.io.push_back(Io::CheckOrigin {
                origin,
                check,
                timeout: self.config.check_timeout,
            }),
            Output::Notice(n) => {
                if let Notice::ChunkDropped(id, _) = &n {
                    self.memory.remove(*id);
                }
                self.io.push_back(Io::Notice(n));
            }
        }
    }

    /// Reads `offset..offset + len` of `source` for read `req`.
    fn passthrough(&mut self, req: ReqId, source: SourceFile, offset: u64, len: u32) {
        let op = self.op(Op::Passthrough { req, len });
        self.io.push_back(Io::OriginRead {
            op,
            source,
            offset,
            len,
            timeout: self.config.origin_request_timeout,
            purpose: Purpose::Passthrough(req),
        });
    }

    /// Answers read `req` with origin bytes read ahead of it.
    fn serve_read_ahead(&mut self, e: &mut Engine, now: Time, req: ReqId, slices: Vec<Slice>) {
        self.stats.served_read_ahead += 1;
        self.reply(req, Reply::Slices(slices));
        e.read_finished(now, req, &[]);
    }

    /// Answers, sends on and aborts what the read-ahead of streams left.
    fn carry_out(&mut self, e: &mut Engine, now: Time, out: ahead::Outcome) {
        for op in out.abort {
            if self.ops.remove(&op).is_some() {
                self.io.push_back(Io::AbortOriginRead(op));
            }
        }
        for (req, slices) in out.ready {
            self.serve_read_ahead(e, now, req, slices);
        }
        for (req, source, offset, len) in out.direct {
            self.passthrough(req, source, offset, len);
        }
    }

    /// Sends one FUSE reply, unless the read was answered already (its
    /// deadline passed first).
    fn reply(&mut self, req: ReqId, reply: Reply) {
        if self.parked.remove(&req) {
            self.io.push_back(Io::Reply { req, reply });
        }
    }

    fn serve(&mut self, e: &mut Engine, now: Time, req: ReqId, pieces: Vec<Piece>) {
        let mut have = BTreeMap::new();
        let mut ids = Vec::new();
        for p in &pieces {
            if have.contains_key(&p.id) || ids.contains(&p.id) {
                continue;
            }
            match self.at_hand(p.id) {
                Some(chunk) => {
                    have.insert(p.id, chunk);
                }
                None => ids.push(p.id),
            }
        }
        if ids.is_empty() {
            // Every piece in memory (or none at all: end of file).
            self.stats.served_from_memory += 1;
            self.reply(req, Reply::Slices(slices_of(&pieces, &have)));
            e.read_finished(now, req, &[]);
            return;
        }
        if ids.iter().all(|id| self.warming.contains(id)) {
            // A read-ahead is reading them: wait for it (`warmed`), and
            // start it now if it is still waiting its turn.
            self.hurry_warms(&ids);
            self.stats.served_from_memory += 1;
            self.stats.waited_for_read_ahead += 1;
            let serving = Serving {
                pieces,
                have,
                ids: Vec::new(),
                awaiting: ids,
            };
            self.serving.insert(req, serving);
            return;
        }
        self.stats.served_from_disk += 1;
        self.read_chunks(
            req,
            Serving {
                pieces,
                have,
                ids,
                awaiting: Vec::new(),
            },
        );
    }

    /// Asks the disk for the chunks of `serving.ids`.
    fn read_chunks(&mut self, req: ReqId, serving: Serving) {
        let op = self.op(Op::Read { req });
        self.io.push_back(Io::ReadChunks {
            op,
            ids: serving.ids.clone(),
        });
        self.serving.insert(req, serving);
    }

    /// A read-ahead ended: the reads waiting for its chunks take them from
    /// memory, or, for a chunk it could not bring (missing, damaged), read
    /// the disk themselves, which reports the fault to the engine.
    fn serve_awaiting(&mut self, e: &mut Engine, now: Time) {
        let ready: Vec<ReqId> = self
            .serving
            .iter()
            .filter(|(_, s)| {
                !s.awaiting.is_empty() && s.awaiting.iter().all(|id| !self.warming.contains(id))
            })
            .map(|(&req, _)| req)
            .collect();
        for req in ready {
            let Some(mut serving) = self.serving.remove(&req) else {
                continue;
            };
            for id in std::mem::take(&mut serving.awaiting) {
                match self.memory.get(id) {
                    Some(chunk) => {
                        serving.have.insert(id, chunk);
                    }
                    None => serving.ids.push(id),
                }
            }
            if serving.ids.is_empty() {
                self.reply(
                    req,
                    Reply::Slices(slices_of(&serving.pieces, &serving.have)),
                );
                e.read_finished(now, req, &[]);
            } else {
                self.read_chunks(req, serving);
            }
        }
    }

    /// Reads ahead into memory the chunks of `run` not there yet, as one
    /// read: at once for a scan, in turn for a stream (up to
    /// [`ExecConfig::warm_reads_in_flight`] side by side). Chunks already
    /// on their way (read ahead, or being stored) are left out; a run
    /// with a chunk being deleted is left alone.
    ///
    /// A stream's runs share their edge chunk (each pass starts with the
    /// chunk the last one ended in): leaving out the whole run for it, as
    /// this once did, left a megabyte in ten unread, and a player's reads
    /// there went to the disk one by one (a cached 179 MB track read back
    /// cold: 48-71 of 684 reads).
    fn warm(&mut self, run: Vec<(ChunkId, u32)>, to: WarmFor) {
        let mut chunks: Vec<(ChunkId, u32)> = Vec::with_capacity(run.len());
        for (id, len) in run {
            if chunks.iter().any(|&(c, _)| c == id)
                || self.memory.get(id).is_some()
                || self.storing.contains_key(&id)
                || self.warming.contains(&id)
            {
                continue;
            }
            if self.deleting.contains_key(&id) {
                return;
            }
            chunks.push((id, len));
        }
        if chunks.is_empty() {
            return;
        }
        self.warming.extend(chunks.iter().map(|&(id, _)| id));
        let paced = to == WarmFor::Stream;
        let op = self.op(Op::Warm { chunks, paced });
        if paced {
            self.warm_queue.push_back(op);
            self.start_queued_warms();
        } else {
            self.start_warm(op);
        }
    }

    /// Starts queued read-aheads, oldest first, while fewer than
    /// [`ExecConfig::warm_reads_in_flight`] are under way.
    fn start_queued_warms(&mut self) {
        while self.warms_started < self.config.warm_reads_in_flight.max(1) {
            let Some(op) = self.warm_queue.pop_front() else {
                break;
            };
            self.start_warm(op);
        }
    }

    /// Asks the disk for the chunks of the read-ahead `op`.
    fn start_warm(&mut self, op: OpId) {
        let Some(&Op::Warm { ref chunks, paced }) = self.ops.get(&op) else {
            return;
        };
        let ids = chunks.iter().map(|&(id, _)| id).collect();
        if paced {
            self.warms_started += 1;
        }
        self.io.push_back(Io::ReadChunks { op, ids });
    }

    /// Starts the queued read-aheads that hold any of `ids` (a read waits
    /// for them), whatever the limit: a reader never waits behind the
    /// read-ahead of files it has not asked for.
    fn hurry_warms(&mut self, ids: &[ChunkId]) {
        let hurried: Vec<OpId> = self
            .warm_queue
            .iter()
            .copied()
            .filter(|op| {
                matches!(self.ops.get(op), Some(Op::Warm { chunks, .. })
                    if chunks.iter().any(|(c, _)| ids.contains(c)))
            })
            .collect();
        if hurried.is_empty() {
            return;
        }
        self.warm_queue.retain(|op| !hurried.contains(op));
        for op in hurried {
            self.start_warm(op);
        }
    }

    /// A stream's read-ahead ended: the next ones in line start.
    fn warm_ended(&mut self) {
        self.warms_started = self.warms_started.saturating_sub(1);
        self.start_queued_warms();
    }

    /// The chunks a read-ahead asked for arrived (`results`, in order):
    /// the sound ones go to memory, and reads waiting for them are
    /// answered. A chunk missing, damaged or being deleted is left alone:
    /// the read that wants it finds that out and deals with it.
    fn warmed(
        &mut self,
        e: &mut Engine,
        now: Time,
        chunks: Vec<(ChunkId, u32)>,
        results: Vec<Result<Arc<[u8]>, ChunkFault>>,
    ) {
        let verify = !e.config().bugs().skip_verify;
        let mut results = results.into_iter();
        for (id, len) in chunks {
            self.warming.remove(&id);
            if let Some(Ok(bytes)) = results.next()
                && bytes.len() == len as usize
                && (!verify || id.matches(&bytes))
                && !self.deleting.contains_key(&id)
            {
                self.stats.chunks_warmed += 1;
                self.memory.insert(id, bytes);
            }
        }
        self.serve_awaiting(e, now);
        self.primes_ready(e);
    }

    /// Hands `p`'s pages to the kernel if its chunks are at hand, or once
    /// the read-ahead reading them ends; otherwise (not in memory, or
    /// being deleted, or the tree changed since it was planned) leaves it.
    fn prime(&mut self, e: &Engine, p: Prime) {
        let race = e.config().bugs().prime_any_epoch;
        if p.epoch != e.tree_epoch() && !race {
            return;
        }
        let mut waits = false;
        for &(id, _) in &p.chunks {
            if self.deleting.contains_key(&id) {
                return;
            }
            if self.warming.contains(&id) {
                waits = true;
            } else if !self.memory.chunks.contains_key(&id) && !self.storing.contains_key(&id) {
                return;
            }
        }
        if waits {
            if self.primes_waiting.len() >= PRIMES_WAITING_MAX {
                self.primes_waiting.pop_front();
            }
            self.primes_waiting.push_back(p);
            return;
        }
        let start = p.offset;
        let end = start + p.chunks.iter().map(|&(_, len)| u64::from(len)).sum::<u64>();
        // Whole pages only: the kernel leaves a page it got part of for a
        // read to fill.
        let page = self.config.page_bytes.max(1);
        let from = start.next_multiple_of(page);
        let to = if end >= p.size {
            p.size
        } else {
            end - end % page
        };
        if from >= to {
            return;
        }
        let mut slices = Vec::new();
        let mut at = start;
        for &(id, len) in &p.chunks {
            let chunk_end = at + u64::from(len);
            let (lo, hi) = (at.max(from), chunk_end.min(to));
            if lo < hi {
                let Some(chunk) = self.at_hand(id) else {
                    return;
                };
                slices.push(Slice {
                    chunk,
                    from: (lo - at) as u32,
                    len: (hi - lo) as u32,
                });
            }
            at = chunk_end;
        }
        self.stats.primed_runs += 1;
        self.stats.primed_bytes += to - from;
        let epoch = if race { e.tree_epoch() } else { p.epoch };
        self.io.push_back(Io::Prime {
            ino: p.ino,
            offset: from,
            slices,
            epoch,
        });
    }

    /// A read-ahead ended: the pages waiting for it go to the kernel.
    fn primes_ready(&mut self, e: &Engine) {
        if self.primes_waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.primes_waiting);
        for p in waiting {
            if p.chunks.iter().any(|(id, _)| self.warming.contains(id)) {
                self.primes_waiting.push_back(p);
            } else {
                self.prime(e, p);
            }
        }
    }

    /// The files with pages waiting for a read-ahead to be handed to the
    /// kernel (for the simulator, which changes them under the wait).
    pub fn primes_waiting(&self) -> impl Iterator<Item = Ino> + '_ {
        self.primes_waiting.iter().map(|p| p.ino)
    }

    /// A verified chunk's bytes, from memory or from the write queue.
    fn at_hand(&mut self, id: ChunkId) -> Option<Arc<[u8]>> {
        self.memory
            .get(id)
            .or_else(|| self.storing.get(&id).map(|(_, data)| Arc::clone(data)))
    }

    fn evict(&mut self, e: &Engine, ids: Vec<ChunkId>) {
        let race = e.config().bugs().store_during_evict;
        let mut now_ids = Vec::with_capacity(ids.len());
        for id in ids {
            self.memory.remove(id);
            if self.storing.contains_key(&id) && !race {
                // Its store may find the file in place and keep it: the
                // delete waits, and is dropped if the engine caches the
                // chunk again meanwhile.
                self.deferred.insert(id);
            } else {
                now_ids.push(id);
            }
        }
        self.delete(now_ids);
    }

    fn delete(&mut self, ids: Vec<ChunkId>) {
        if ids.is_empty() {
            return;
        }
        for &id in &ids {
            *self.deleting.entry(id).or_default() += 1;
        }
        let op = self.op(Op::Delete { ids: ids.clone() });
        self.io.push_back(Io::DeleteChunks { op, ids });
    }

    // ----- fetches -----

    fn start_fetch(&mut self, e: &mut Engine, now: Time, fetch: Fetch) {
        let id = fetch.id;
        let end = fetch.read_end();
        let run = FetchRun {
            cutter: Cutter::new(&fetch),
            next_piece: fetch.start,
            end,
            in_flight: BTreeMap::new(),
            arrived: BTreeMap::new(),
            ended: (fetch.start >= end).then_some(Ok(())),
            fetch,
        };
        self.fetches.insert(id, run);
        self.ask_pieces(id);
        self.maybe_finish(e, now, id);
    }

    /// Keeps up to `pieces_in_flight` requests of a fetch in flight, while
    /// the disk keeps up.
    fn ask_pieces(&mut self, id: FetchId) {
        let queue_full = self.write_queue_bytes >= self.config.write_queue_bytes;
        // A fill behind readers holds at most the queue's worth of bytes
        // between the origin and the disk, written or not: nobody waits
        // for it, and its peak is the daemon's peak.
        let fill_full =
            self.write_queue_bytes + self.writing_bytes >= self.config.write_queue_bytes;
        let Some(run) = self.fetches.get_mut(&id) else {
            return;
        };
        if run.ended.is_some() || (queue_full && run.fetch.store) || (fill_full && run.fetch.behind)
        {
            return;
        }
        let most = if run.fetch.after_failure || run.fetch.behind {
            1
        } else {
            self.config.pieces_in_flight
        };
        while run.in_flight.len() < most && run.next_piece < run.end {
            let offset = run.next_piece;
            let len = (run.end - offset).min(u64::from(self.config.piece_bytes)) as u32;
            run.next_piece += u64::from(len);
            let op = OpId(self.next_op);
            self.next_op += 1;
            self.ops.insert(
                op,
                Op::Piece {
                    fetch: id,
                    offset,
                    len,
                },
            );
            run.in_flight.insert(offset, (op, len));
            self.io.push_back(Io::OriginRead {
                op,
                source: run.fetch.source.clone(),
                offset,
                len,
                timeout: self.config.origin_request_timeout,
                purpose: Purpose::Fetch(id),
            });
        }
    }

    fn abort_pieces(&mut self, run: &FetchRun) {
        for (op, _) in run.in_flight.values() {
            self.ops.remove(op);
            self.io.push_back(Io::AbortOriginRead(*op));
        }
    }

    fn piece_done(
        &mut self,
        e: &mut Engine,
        now: Time,
        id: FetchId,
        offset: u64,
        len: u32,
        result: Result<Vec<u8>, FetchError>,
    ) {
        let Some(run) = self.fetches.get_mut(&id) else {
            return;
        };
        run.in_flight.remove(&offset);
        if run.ended.is_some() {
            return;
        }
        let result = match result {
            // Shorter than the version's size: the file changed.
            Ok(data) if data.len() != len as usize => Err(FetchError::Changed),
            other => other,
        };
        run.arrived.insert(offset, result);
        if let Err(err) = self.cut_arrived(e, now, id) {
            self.end_fetch(id, Err(err));
        }
        self.ask_pieces(id);
        self.write_next(e);
        self.maybe_finish(e, now, id);
    }

    /// Hands the bytes that arrived, in order, to the cutter.
    fn cut_arrived(&mut self, e: &mut Engine, now: Time, id: FetchId) -> Result<(), FetchError> {
        // Reported at once, before they reach the disk: a reader never
        // waits on the cache disk (the engine hears later if a write
        // failed).
        let mut report = Vec::new();
        let mut complete = false;
        let mut outcome = Ok(());
        while let Some(run) = self.fetches.get_mut(&id) {
            let at = run.cutter.next_offset();
            let data = match run.arrived.remove(&at) {
                None => break,
                Some(Ok(data)) => data,
                Some(Err(err)) => {
                    outcome = Err(err);
                    break;
                }
            };
            let last = at + data.len() as u64 == run.end;
            let chunks = match run.cutter.push(&data, last) {
                Ok(chunks) => chunks,
                Err(_) => {
                    outcome = Err(FetchError::Changed);
                    break;
                }
            };
            complete = run.cutter.is_done() || last;
            let store = run.fetch.store;
            let keep_in_memory = !run.fetch.behind;
            for c in chunks {
                let q = self.cut(c, keep_in_memory);
                let stored = if store {
                    let entry = self
                        .storing
                        .entry(q.extent.id)
                        .or_insert_with(|| (0, Arc::clone(&q.data)));
                    entry.0 += 1;
                    self.write_queue_bytes += u64::from(q.extent.len);
                    Stored::Pending
                } else {
                    Stored::Skipped
                };
                report.push(FetchedChunk {
                    offset: q.offset,
                    extent: q.extent,
                    stored,
                });
                if store {
                    self.write_queue.push_back(q);
                }
            }
            if complete {
                break;
            }
        }
        if complete {
            self.end_fetch(id, Ok(()));
        }
        if !report.is_empty() {
            self.report(e, now, id, &report);
        }
        outcome
    }

    /// A chunk was cut: keep its bytes in memory for the reads about to
    /// want them (unless `keep_in_memory` is false: a fill behind readers).
    fn cut(&mut self, c: CutChunk, keep_in_memory: bool) -> Queued {
        let extent = c.extent();
        let data = c.data;
        if keep_in_memory {
            self.memory.insert(c.id, Arc::clone(&data));
        }
        Queued {
            offset: c.offset,
            extent,
            data,
        }
    }

    fn end_fetch(&mut self, id: FetchId, result: Result<(), FetchError>) {
        if let Some(mut run) = self.fetches.remove(&id) {
            self.abort_pieces(&run);
            run.in_flight.clear();
            run.arrived.clear();
            run.ended.get_or_insert(result);
            self.fetches.insert(id, run);
        }
    }

    fn maybe_finish(&mut self, e: &mut Engine, now: Time, id: FetchId) {
        let finished = self.fetches.get(&id).is_some_and(|r| r.ended.is_some());
        if !finished {
            return;
        }
        if let Some(run) = self.fetches.remove(&id) {
            let result = run.ended.unwrap_or(Ok(()));
            self.observe(|| Observed::FetchDone {
                fetch: id,
                result: result.clone(),
            });
            e.fetch_done(now, id, result);
            // At once: an output queued now may be stale by the next report.
            self.drain(e, now);
        }
    }

    fn report(&mut self, e: &mut Engine, now: Time, id: FetchId, chunks: &[FetchedChunk]) {
        let stored = chunks.iter().filter(|c| c.stored == Stored::Yes).count();
        self.observe(|| Observed::Progress {
            fetch: id,
            chunks: chunks.len(),
            stored,
        });
        e.fetch_progress(now, id, chunks);
        // At once: an eviction decided here must be carried out before the
        // next report can cache one of its chunks again.
        self.drain(e, now);
    }

    // ----- the disk -----

    /// Starts the next group write, if none is under way: every queued
    /// chunk, in order, up to the batch limit and up to the first chunk
    /// whose delete is under way (it is written after the delete).
    fn write_next(&mut self, e: &Engine) {
        if self.writing >= self.config.writes_in_flight.max(1) {
            return;
        }
        let race = e.config().bugs().store_during_evict;
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        while let Some(q) = self.write_queue.front() {
            let len = u64::from(q.extent.len);
            let blocked = self.deleting.contains_key(&q.extent.id) && !race;
            if blocked || (!batch.is_empty() && bytes + len > self.config.write_batch_bytes) {
                break;
            }
            bytes += len;
            if let Some(q) = self.write_queue.pop_front() {
                batch.push(q);
            }
        }
        if batch.is_empty() {
            return;
        }
        self.write_queue_bytes -= bytes;
        self.writing_bytes += bytes;
        let chunks: Vec<(ChunkId, Arc<[u8]>)> = batch
            .iter()
            .map(|q| (q.extent.id, Arc::clone(&q.data)))
            .collect();
        let index: Vec<(ChunkId, u32)> =
            batch.iter().map(|q| (q.extent.id, q.extent.len)).collect();
        let op = self.op(Op::Write { batch });
        self.writing += 1;
        if e.config().bugs().index_before_durable {
            let iop = self.op(Op::EarlyIndex);
            self.io.push_back(Io::IndexChunks {
                op: iop,
                chunks: index,
            });
        }
        self.io.push_back(Io::WriteChunks { op, chunks });
        // Room in the queue again: fetches that paused may go on.
        let paused: Vec<FetchId> = self.fetches.keys().copied().collect();
        for id in paused {
            self.ask_pieces(id);
        }
    }

    /// A group write (with its index update) is no longer under way:
    /// fills behind readers that paused for it go on.
    fn write_ended(&mut self, batch: &[(Queued, Stored)]) {
        self.writing -= 1;
        self.writing_bytes -= batch
            .iter()
            .map(|(q, _)| u64::from(q.extent.len))
            .sum::<u64>();
        let paused: Vec<FetchId> = self
            .fetches
            .iter()
            .filter(|(_, run)| run.fetch.behind)
            .map(|(id, _)| *id)
            .collect();
        for id in paused {
            self.ask_pieces(id);
        }
    }

    /// A group write ended: tell the engine which chunks could not be
    /// made durable (it served them from memory meanwhile), then settle
    /// the deletes that waited for them.
    fn stored(&mut self, e: &mut Engine, now: Time, batch: Vec<(Queued, Stored)>) {
        let failed: Vec<(ChunkId, DiskFault)> = batch
            .iter()
            .filter_map(|(q, s)| match s {
                Stored::Failed(f) => Some((q.extent.id, *f)),
                _ => None,
            })
            .collect();
        let durable = batch.len() - failed.len();
        for (q, _) in &batch {
            if let Some((n, _)) = self.storing.get_mut(&q.extent.id) {
                *n -= 1;
                if *n == 0 {
                    self.storing.remove(&q.extent.id);
                }
            }
        }
        self.observe(|| Observed::Durable {
            chunks: durable,
            failed: failed.len(),
        });
        if !failed.is_empty() {
            e.chunks_not_stored(now, &failed);
            self.drain(e, now);
        }
        let mut delete_now = Vec::new();
        for (q, _) in batch {
            let id = q.extent.id;
            if !self.storing.contains_key(&id)
                && self.deferred.remove(&id)
                && !e.cache().contains(id)
            {
                delete_now.push(id);
            }
        }
        self.delete(delete_now);
    }
}

fn slices_of(pieces: &[Piece], have: &BTreeMap<ChunkId, Arc<[u8]>>) -> Vec<Slice> {
    pieces
        .iter()
        .filter_map(|p| {
            have.get(&p.id).map(|c| Slice {
                chunk: Arc::clone(c),
                from: p.from,
                len: p.len,
            })
        })
        .collect()
}

/// Drops one holder of `id` in a map of holder counts.
fn dec(counts: &mut BTreeMap<ChunkId, u32>, id: ChunkId) {
    if let Some(n) = counts.get_mut(&id) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&id);
        }
    }
}
