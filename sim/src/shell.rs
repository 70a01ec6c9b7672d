//! The simulated io-shell: carries out the engine's outputs the way
//! `io-shell/src/daemon.rs` does, against the simulated network and disk.
//!
//! What it mirrors, because the engine's correctness depends on it:
//! - FUSE replies are parked by request id and taken once: an answer for a
//!   read already answered (its deadline passed first) is dropped, and
//!   `read_finished` is still reported.
//! - A fetch streams its byte range in pieces through the core's
//!   [`Cutter`], stores the chunks it cuts (the store runs to its end even if
//!   the fetch is cancelled meanwhile, as a blocking task would), then
//!   reports them with `fetch_progress`; a piece shorter than asked, or one
//!   that does not cut as the plan says, is a changed file.
//! - A serve reads every piece's chunk file, checks its length, and its hash
//!   unless the engine said `verify: false` (only a planted bug says so), and
//!   reports missing, corrupt and unreadable chunks instead of answering.
//! - A passthrough has the origin-request timeout the daemon puts on it.

use crate::client::Answer;
use crate::invariants::Violation;
use crate::net::{OriginError, Request};
use crate::trace::Ev;
use crate::world::{Event, World};
use musicfs_core::Time;
use musicfs_core::engine::{CheckId, SourceKey, key_of};
use musicfs_core::engine::{
    ChunkFault, CutChunk, Cutter, DiskFault, Fetch, FetchError, FetchId, FetchPlan, FetchedChunk,
    Notice, Output, Piece, ReqId, Stored,
};
use musicfs_core::{ChunkId, FileVersion, OriginId, OriginPath};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Bytes asked of an origin in one request while fetching (the daemon asks
/// 1 MiB; the simulated files are smaller, so pieces are too).
pub const FETCH_PIECE_BYTES: u64 = 256 << 10;

/// Outputs one event may cause, far above any legitimate burst.
const OUTPUTS_PER_EVENT_MAX: u64 = 100_000;

/// Who is waiting for a network request.
#[derive(Clone, Copy, Debug)]
enum OpOwner {
    Fetch(FetchId),
    Passthrough(ReqId),
    Check(OriginId, CheckId),
}

/// A fetch under way.
#[derive(Debug)]
struct FetchDriver {
    fetch: Fetch,
    cutter: Cutter,
    pos: u64,
    end: u64,
    want: u64,
    op: Option<u64>,
    /// When the engine last heard of it (start or progress): the engine
    /// gives up on it `fetch_stall_timeout` later.
    last_progress: Time,
}

/// The io-shell's state: everything a crash forgets.
#[derive(Debug, Default)]
pub(crate) struct Shell {
    /// FUSE replies not yet sent.
    pub parked: BTreeSet<ReqId>,
    fetches: BTreeMap<FetchId, FetchDriver>,
    ops: BTreeMap<u64, OpOwner>,
    passthroughs: BTreeMap<ReqId, u64>,
    /// Chunks of each serve in progress (each is pinned once per piece).
    serving: BTreeMap<ReqId, Vec<ChunkId>>,
    /// Serves holding a pin on a chunk the engine dropped from its cache
    /// while they used it (see `World::check_step`).
    pub drifted: BTreeSet<ReqId>,
    /// Sources whose fetch the engine gave up on for lack of progress, and
    /// when, until a fetch of theirs makes progress again.
    stalled: BTreeMap<SourceKey, Time>,
    /// Chunks the engine dropped as bad (missing or corrupt files): their
    /// deletion is no eviction, even of a pinned file's chunk.
    pub dropped: BTreeSet<ChunkId>,
}

fn fetch_error(e: OriginError) -> FetchError {
    match e {
        OriginError::NotFound => FetchError::NotFound,
        OriginError::Changed => FetchError::Changed,
        OriginError::Unavailable(why) => FetchError::Unavailable(why),
    }
}

impl World {
    /// Drains the engine's outputs and carries each out. The engine must
    /// settle: an event that keeps it producing outputs without end (without
    /// simulated time passing) is a livelock.
    pub(crate) fn pump(&mut self) {
        let mut n = 0u64;
        while let Some(out) = self.engine.as_mut().and_then(|e| e.poll_output()) {
            n += 1;
            if n > OUTPUTS_PER_EVENT_MAX {
                self.violation.get_or_insert(Violation::new(
                    "runaway",
                    format!("the engine produced over {OUTPUTS_PER_EVENT_MAX} outputs for one event: {out:?}"),
                ));
                return;
            }
            self.execute(out);
        }
    }

    fn execute(&mut self, out: Output) {
        match out {
            Output::ReadError { req, errno } => self.reply(req, Answer::Error(errno)),
            Output::Generated { req, data } => self.reply(req, Answer::Data(data)),
            Output::Serve {
                req,
                pieces,
                verify,
            } => {
                self.push(Ev::Serve {
                    req: req.0,
                    pieces: pieces.len(),
                    verify,
                });
                self.shell
                    .serving
                    .insert(req, pieces.iter().map(|p| p.id).collect());
                if pieces.is_empty() {
                    // Nothing to read: the daemon answers on the spot.
                    self.serve_done(req, &pieces, verify);
                } else {
                    let t = self.disk_latency();
                    let life = self.life;
                    self.schedule(
                        t,
                        Event::ServeDone {
                            life,
                            req,
                            pieces,
                            verify,
                        },
                    );
                }
            }
            Output::Passthrough {
                req,
                source,
                offset,
                len,
            } => {
                self.push(Ev::Passthrough {
                    req: req.0,
                    origin: source.origin.0,
                    offset,
                    len,
                });
                let op = self.submit(Request {
                    origin: source.origin,
                    path: source.path,
                    version: source.version,
                    offset,
                    len,
                });
                self.shell.ops.insert(op, OpOwner::Passthrough(req));
                self.shell.passthroughs.insert(req, op);
                let timeout = self.swarm.engine_config().fetch_stall_timeout;
                let life = self.life;
                self.schedule(timeout, Event::PassTimeout { life, req });
            }
            Output::Fetch(fetch) => self.start_fetch(fetch),
            Output::CancelFetch(id) => {
                self.push(Ev::Cancel { id: id.0 });
                let stall = self.swarm.engine_config().fetch_stall_timeout;
                if let Some(d) = self.shell.fetches.remove(&id) {
                    if self.now >= d.last_progress + stall {
                        self.shell.stalled.insert(key_of(&d.fetch.source), self.now);
                    }
                    if let Some(op) = d.op {
                        self.shell.ops.remove(&op);
                        self.net.abort(op);
                    }
                }
            }
            Output::Evict(ids) => {
                self.push(Ev::Evict { chunks: ids.len() });
                self.check_evict(&ids);
                self.disk.evict(&ids);
            }
            Output::ProbeDisk => {
                let t = self.disk_latency();
                let life = self.life;
                self.schedule(t, Event::ProbeDone { life });
            }
            Output::CheckOrigin { origin, check } => {
                // The cheapest request there is: an empty path, no bytes.
                let op = self.submit(Request {
                    origin,
                    path: OriginPath::new(Vec::new()),
                    version: FileVersion::default(),
                    offset: 0,
                    len: 0,
                });
                self.shell.ops.insert(op, OpOwner::Check(origin, check));
                let timeout = self.swarm.engine_config().health.check_timeout;
                let life = self.life;
                self.schedule(timeout, Event::CheckTimeout { life, op });
            }
            Output::Notice(n) => {
                if let Notice::ChunkDropped(id, _) = n {
                    self.shell.dropped.insert(id);
                    for (req, ids) in &self.shell.serving {
                        if ids.contains(&id) {
                            self.shell.drifted.insert(*req);
                        }
                    }
                }
                self.push(Ev::Notice(format!("{n:?}")));
            }
        }
    }

    /// Sends one FUSE reply, unless the read was answered already.
    pub(crate) fn reply(&mut self, req: ReqId, answer: Answer) {
        if self.shell.parked.remove(&req) {
            self.deliver(req, answer);
        }
    }

    fn submit(&mut self, req: Request) -> u64 {
        let (origin, offset, len) = (req.origin.0, req.offset, req.len);
        let op = self.net.submit(req);
        self.push(Ev::NetOp {
            op,
            origin,
            offset,
            len,
        });
        op
    }

    fn disk_latency(&mut self) -> Duration {
        let max = self.swarm.disk_latency_max_us;
        Duration::from_micros(self.rng_disk.random_range(0..=max))
    }

    fn start_fetch(&mut self, fetch: Fetch) {
        let id = fetch.id;
        let end = fetch.read_end();
        self.check_backoff(&fetch);
        self.push(Ev::Fetch {
            id: id.0,
            origin: fetch.source.origin.0,
            path: fetch.source.path.to_string(),
            start: fetch.start,
            end,
            verify: matches!(fetch.plan, FetchPlan::Verify { .. }),
        });
        if usize::from(fetch.source.origin.0) >= self.lib.origins.len() {
            self.finish_fetch(id, Err(FetchError::Unavailable("no such origin".into())));
            return;
        }
        let driver = FetchDriver {
            cutter: Cutter::new(&fetch),
            pos: fetch.start,
            end,
            want: 0,
            op: None,
            last_progress: self.now,
            fetch,
        };
        self.shell.fetches.insert(id, driver);
        self.fetch_next(id);
    }

    /// Asks for the next piece, or ends the fetch once the plan is done.
    fn fetch_next(&mut self, id: FetchId) {
        let Some(d) = self.shell.fetches.get_mut(&id) else {
            return;
        };
        if d.pos >= d.end || d.cutter.is_done() {
            self.finish_fetch(id, Ok(()));
            return;
        }
        let want = (d.end - d.pos).min(FETCH_PIECE_BYTES);
        d.want = want;
        let req = Request {
            origin: d.fetch.source.origin,
            path: d.fetch.source.path.clone(),
            version: d.fetch.source.version.clone(),
            offset: d.pos,
            len: want as u32,
        };
        let op = self.submit(req);
        if let Some(d) = self.shell.fetches.get_mut(&id) {
            d.op = Some(op);
        }
        self.shell.ops.insert(op, OpOwner::Fetch(id));
    }

    fn finish_fetch(&mut self, id: FetchId, result: Result<(), FetchError>) {
        if let Some(d) = self.shell.fetches.remove(&id)
            && result.is_ok()
        {
            self.shell.stalled.remove(&key_of(&d.fetch.source));
        }
        self.push(Ev::FetchDone {
            id: id.0,
            result: format!("{result:?}"),
        });
        let now = self.now;
        if let Some(e) = self.engine.as_mut() {
            e.fetch_done(now, id, result);
        }
    }

    /// An origin answered a request.
    pub(crate) fn on_net_done(&mut self, op: u64, result: Result<Vec<u8>, OriginError>) {
        self.push(Ev::NetDone {
            op,
            result: match &result {
                Ok(d) => format!("{} bytes", d.len()),
                Err(e) => format!("{e:?}"),
            },
        });
        match self.shell.ops.remove(&op) {
            Some(OpOwner::Fetch(id)) => self.on_fetch_piece(id, result),
            Some(OpOwner::Passthrough(req)) => {
                self.shell.passthroughs.remove(&req);
                let now = self.now;
                match result {
                    Ok(data) => {
                        self.reply(req, Answer::Data(data));
                        if let Some(e) = self.engine.as_mut() {
                            e.read_finished(now, req, &[]);
                        }
                    }
                    Err(err) => {
                        if let Some(e) = self.engine.as_mut() {
                            e.passthrough_failed(now, req, fetch_error(err));
                        }
                    }
                }
            }
            Some(OpOwner::Check(origin, check)) => {
                let result = result.map(drop).map_err(|e| format!("{e:?}"));
                self.check_done(origin, check, result);
            }
            None => {}
        }
    }

    fn check_done(&mut self, origin: OriginId, check: CheckId, result: Result<(), String>) {
        let now = self.now;
        if let Some(e) = self.engine.as_mut() {
            e.health_check_done(now, origin, check, result);
        }
    }

    /// A health check took longer than the daemon waits for one.
    pub(crate) fn check_timeout(&mut self, op: u64) {
        if let Some(OpOwner::Check(origin, check)) = self.shell.ops.remove(&op) {
            self.net.abort(op);
            self.check_done(origin, check, Err("no answer in time".into()));
        }
    }

    fn on_fetch_piece(&mut self, id: FetchId, result: Result<Vec<u8>, OriginError>) {
        let Some(d) = self.shell.fetches.get_mut(&id) else {
            return;
        };
        d.op = None;
        let data = match result {
            Ok(data) => data,
            Err(e) => return self.finish_fetch(id, Err(fetch_error(e))),
        };
        if data.len() as u64 != d.want {
            // Shorter than the version's size: the file changed.
            return self.finish_fetch(id, Err(FetchError::Changed));
        }
        d.pos += d.want;
        let end_of_input = d.pos == d.end;
        match d.cutter.push(&data, end_of_input) {
            Err(_) => self.finish_fetch(id, Err(FetchError::Changed)),
            Ok(chunks) if chunks.is_empty() => self.fetch_next(id),
            Ok(chunks) => {
                let store = d.fetch.store;
                let t = self.disk_latency();
                let life = self.life;
                self.schedule(
                    t,
                    Event::StoreDone {
                        life,
                        fetch: id,
                        chunks,
                        store,
                    },
                );
            }
        }
    }

    /// No request to a source inside its retry pause: after the engine gave
    /// up on a stalled fetch, it must wait at least half the first backoff
    /// (the least its jitter allows) before asking that source again, unless
    /// another fetch of the source made progress meanwhile.
    fn check_backoff(&mut self, fetch: &Fetch) {
        let key = key_of(&fetch.source);
        let Some(&at) = self.shell.stalled.get(&key) else {
            return;
        };
        let pause = self.swarm.engine_config().retry_backoff_base / 2;
        if self.now < at + pause {
            let v = Violation::new(
                "backoff",
                format!(
                    "{}:{} asked again {:?} after its fetch stalled, inside the retry pause",
                    key.0,
                    key.1,
                    self.now.saturating_since(at)
                ),
            );
            self.violation.get_or_insert(v);
        }
    }

    fn store_fault(&mut self) -> Option<DiskFault> {
        let d = self.swarm.store_faults?;
        (self.log.store_faults && self.rng_disk.random_range(0..100) < d.pct).then_some(d.kind)
    }

    /// A fetch's chunks reached the disk (or failed to).
    pub(crate) fn store_done(&mut self, id: FetchId, chunks: Vec<CutChunk>, store: bool) {
        let mut reported = Vec::with_capacity(chunks.len());
        for c in chunks {
            let (offset, extent) = (c.offset, c.extent());
            let stored = if !store {
                Stored::Skipped
            } else if let Some(fault) = self.store_fault() {
                Stored::Failed(fault)
            } else {
                self.disk.store(c.id, c.data);
                Stored::Yes
            };
            reported.push(FetchedChunk {
                offset,
                extent,
                stored,
            });
        }
        if !self.shell.fetches.contains_key(&id) {
            return; // cancelled while storing: nobody is told
        }
        let stored = reported.iter().filter(|c| c.stored == Stored::Yes).count() as u8;
        self.push(Ev::Progress {
            id: id.0,
            chunks: reported.len(),
            stored,
        });
        let now = self.now;
        if let Some(e) = self.engine.as_mut() {
            e.fetch_progress(now, id, &reported);
        }
        if let Some(d) = self.shell.fetches.get_mut(&id) {
            d.last_progress = now;
            let key = key_of(&d.fetch.source);
            self.shell.stalled.remove(&key);
        }
        self.fetch_next(id);
    }

    fn read_fault(&mut self) -> bool {
        let Some(d) = self.swarm.read_faults else {
            return false;
        };
        self.log.read_faults && self.rng_disk.random_range(0..100) < d.pct
    }

    /// A serve's chunk files have been read.
    pub(crate) fn serve_done(&mut self, req: ReqId, pieces: &[Piece], verify: bool) {
        let ids = self.shell.serving.remove(&req).unwrap_or_default();
        if self.shell.drifted.remove(&req) {
            // Its unpins may hit a dropped chunk cached again since, whose
            // pins now belong to other serves: they are short of one.
            let cache = self.engine.as_ref().map(|e| e.cache());
            let back: Vec<ChunkId> = ids
                .into_iter()
                .filter(|id| cache.is_some_and(|c| c.contains(*id)))
                .collect();
            for (other, theirs) in &self.shell.serving {
                if theirs.iter().any(|id| back.contains(id)) {
                    self.shell.drifted.insert(*other);
                }
            }
        }
        let total: usize = pieces.iter().map(|p| p.len as usize).sum();
        let mut data = Vec::with_capacity(total);
        let mut faults = Vec::new();
        for p in pieces {
            if self.read_fault() {
                faults.push((p.id, ChunkFault::Disk(DiskFault::Io)));
                continue;
            }
            let bytes = match self.disk.read(p.id) {
                Ok(b) => b,
                Err(_) => {
                    faults.push((p.id, ChunkFault::Missing));
                    continue;
                }
            };
            let (from, to) = (p.from as usize, p.from as usize + p.len as usize);
            let bad = bytes.len() != p.chunk_len as usize
                || to > bytes.len()
                // A file no fault touched still holds the bytes the cutter
                // hashed to its id: hashing it again would say the same, so
                // only damaged files are hashed (a third of the run's time).
                || (verify && self.disk.damaged.contains(&p.id) && !p.id.matches(bytes));
            if bad {
                faults.push((p.id, ChunkFault::Corrupt));
            } else {
                data.extend_from_slice(&bytes[from..to]);
            }
        }
        let now = self.now;
        if faults.is_empty() {
            self.reply(req, Answer::Data(data));
        } else {
            self.push(Ev::ServeFaults {
                req: req.0,
                faults: faults.len(),
            });
        }
        if let Some(e) = self.engine.as_mut() {
            e.read_finished(now, req, &faults);
        }
    }

    /// A passthrough's origin did not answer in time.
    pub(crate) fn pass_timeout(&mut self, req: ReqId) {
        let Some(op) = self.shell.passthroughs.remove(&req) else {
            return;
        };
        self.shell.ops.remove(&op);
        self.net.abort(op);
        let now = self.now;
        if let Some(e) = self.engine.as_mut() {
            let why = FetchError::Unavailable("passthrough timed out".into());
            e.passthrough_failed(now, req, why);
        }
    }

    /// The disk probe wrote (or failed to write) its test chunk.
    pub(crate) fn probe_done(&mut self) {
        let ok = self.store_fault().is_none();
        self.push(Ev::Probe { ok });
        let now = self.now;
        if let Some(e) = self.engine.as_mut() {
            e.disk_probe(now, ok);
        }
    }
}
