//! The simulated io-shell: carries out the executor's primitive I/O
//! ([`musicfs_core::exec::Io`]) against the simulated network and disk.
//!
//! The daemon runs the same [`Exec`]: how many origin requests a fetch keeps
//! in flight, which chunks share a durable write, that the index learns of a
//! chunk only after its file is durable, that a chunk is never written and
//! deleted at once, that every chunk read from disk is checked against its
//! id, and that each FUSE read is answered once are all decided there and
//! tested here. What this file adds is only what a disk and a network do:
//! latency, faults, and completions in an order the seed picks.
//!
//! It also watches what the executor reports ([`Exec::tap`]) to keep the
//! trace and to check what only the shell can see (no chunk deleted that
//! the engine believes cached; no index entry before its file).

use crate::client::Answer;
use crate::invariants::Violation;
use crate::net::{OriginError, Request};
use crate::trace::Ev;
use crate::world::{Event, World};
use musicfs_core::Time;
use musicfs_core::engine::{
    ChunkFault, DiskFault, Fetch, FetchError, FetchId, FetchPlan, Notice, Output, SourceKey, key_of,
};
use musicfs_core::exec::{Exec, ExecConfig, Io, Observed, OpId, Purpose, Reply};
use musicfs_core::{ChunkId, FileVersion, OriginPath};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// I/Os one event may cause, far above any legitimate burst.
const IOS_PER_EVENT_MAX: u64 = 100_000;

/// Who waits for a network request.
#[derive(Clone, Copy, Debug)]
enum NetOwner {
    Read(OpId),
    Check(musicfs_core::OriginId, musicfs_core::engine::CheckId),
}

/// The io-shell's state: everything a crash forgets.
#[derive(Debug)]
pub(crate) struct Shell {
    /// The executor the daemon runs too.
    pub exec: Exec,
    /// Network requests in flight, by turmoil op.
    net_ops: BTreeMap<u64, NetOwner>,
    /// The turmoil op of each origin read.
    net_of: BTreeMap<OpId, u64>,
    /// Each fetch under way: its source, and when the engine last heard of
    /// it (start or progress): the engine gives up on it
    /// `fetch_stall_timeout` later.
    fetches: BTreeMap<FetchId, (SourceKey, Time)>,
    /// Sources whose fetch the engine gave up on for lack of progress, and
    /// when, until a fetch of theirs makes progress again.
    stalled: BTreeMap<SourceKey, Time>,
    /// Chunks the engine dropped as bad (missing or corrupt files): their
    /// deletion is no eviction, even of a pinned file's chunk.
    pub dropped: BTreeSet<ChunkId>,
}

impl Shell {
    pub(crate) fn new(config: ExecConfig) -> Shell {
        let mut exec = Exec::new(config);
        exec.tap();
        Shell {
            exec,
            net_ops: BTreeMap::new(),
            net_of: BTreeMap::new(),
            fetches: BTreeMap::new(),
            stalled: BTreeMap::new(),
            dropped: BTreeSet::new(),
        }
    }
}

fn fetch_error(e: OriginError) -> FetchError {
    match e {
        OriginError::NotFound => FetchError::NotFound,
        OriginError::Changed => FetchError::Changed,
        OriginError::Unavailable(why) => FetchError::Unavailable(why),
    }
}

impl World {
    /// Runs `f` on the executor and the engine, if the daemon is up, then
    /// checks what the executor carried out.
    pub(crate) fn with_exec(
        &mut self,
        f: impl FnOnce(&mut Exec, &mut musicfs_core::engine::Engine, Time),
    ) {
        let now = self.now;
        if let Some(e) = self.engine.as_mut() {
            f(&mut self.shell.exec, e, now);
        }
        // At once, not at the next `pump`: one step can make several
        // executor calls (a network tick completes several origin reads),
        // and the checks of a decision (`check_evict`) read the engine's
        // state, which a later call may change. Seed 1406: one report's
        // eviction took an unpinned chunk, then the next report put the
        // same chunk (dedup across a retag) into a pinned file's new chunk
        // map, and a check run after both saw "a pinned file's chunk".
        for o in self.shell.exec.take_observed() {
            self.observed(o);
        }
    }

    /// Drains the engine's outputs through the executor and carries out
    /// every I/O it asks for. The engine must settle: an event that keeps it
    /// producing work without end (without simulated time passing) is a
    /// livelock.
    pub(crate) fn pump(&mut self) {
        self.with_exec(|x, e, now| x.drain(e, now));
        let mut n = 0u64;
        loop {
            for o in self.shell.exec.take_observed() {
                self.observed(o);
            }
            let Some(io) = self.shell.exec.poll_io() else {
                break;
            };
            n += 1;
            if n > IOS_PER_EVENT_MAX {
                self.violation.get_or_insert(Violation::new(
                    "runaway",
                    format!("over {IOS_PER_EVENT_MAX} I/Os for one event: {io:?}"),
                ));
                return;
            }
            self.execute(io);
        }
    }

    fn execute(&mut self, io: Io) {
        let life = self.life;
        match io {
            Io::Reply { req, reply } => {
                let answer = match reply {
                    Reply::Error(errno) => Answer::Error(errno),
                    other => Answer::Data(other.assemble()),
                };
                self.deliver(req, answer);
            }
            Io::OriginRead {
                op,
                source,
                offset,
                len,
                timeout,
                purpose,
            } => {
                if purpose == Purpose::ReadAhead {
                    self.stats.origin_read_aheads += 1;
                }
                if let Purpose::Passthrough(req) = purpose {
                    self.push(Ev::Passthrough {
                        req: req.0,
                        origin: source.origin.0,
                        offset,
                        len,
                    });
                }
                if usize::from(source.origin.0) >= self.lib.origins.len() {
                    let err = FetchError::Unavailable("no such origin".into());
                    self.with_exec(|x, e, now| x.origin_read_done(e, now, op, Err(err)));
                    return;
                }
                let net = self.submit(Request {
                    origin: source.origin,
                    path: source.path,
                    version: source.version,
                    offset,
                    len,
                });
                self.shell.net_ops.insert(net, NetOwner::Read(op));
                self.shell.net_of.insert(op, net);
                self.schedule(timeout, Event::OpTimeout { life, op });
            }
            Io::AbortOriginRead(op) => {
                if let Some(net) = self.shell.net_of.remove(&op) {
                    self.shell.net_ops.remove(&net);
                    self.net.abort(net);
                }
            }
            Io::CheckOrigin {
                origin,
                check,
                timeout,
            } => {
                // The cheapest request there is: an empty path, no bytes.
                let net = self.submit(Request {
                    origin,
                    path: OriginPath::new(Vec::new()),
                    version: FileVersion::default(),
                    offset: 0,
                    len: 0,
                });
                self.shell
                    .net_ops
                    .insert(net, NetOwner::Check(origin, check));
                self.schedule(timeout, Event::CheckTimeout { life, op: net });
            }
            Io::ReadChunks { op, ids } => {
                let t = self.disk_latency();
                self.schedule(t, Event::ReadDone { life, op, ids });
            }
            Io::WriteChunks { op, chunks } => {
                let t = self.disk_latency();
                self.schedule(t, Event::WriteDone { life, op, chunks });
            }
            Io::IndexChunks { op, chunks } => {
                let t = self.disk_latency() / 4;
                self.schedule(t, Event::IndexDone { life, op, chunks });
            }
            Io::DeleteChunks { op, ids } => {
                self.push(Ev::Delete { chunks: ids.len() });
                let t = self.disk_latency();
                self.schedule(t, Event::DeleteDone { life, op, ids });
            }
            Io::ProbeDisk => {
                let t = self.disk_latency();
                self.schedule(t, Event::ProbeDone { life });
            }
            Io::Prime {
                ino,
                offset,
                slices,
                epoch,
            } => {
                let data = Reply::Slices(slices).assemble();
                self.push(Ev::Prime {
                    ino: ino.0,
                    offset,
                    len: data.len(),
                });
                self.check_prime(ino, offset, &data, epoch);
            }
            Io::Notice(n) => self.push(Ev::Notice(format!("{n:?}"))),
        }
    }

    /// What the executor reported: the trace, and checks of the engine's
    /// decisions at the moment they are carried out.
    fn observed(&mut self, o: Observed) {
        match o {
            Observed::Output(Output::Serve { req, pieces }) => self.push(Ev::Serve {
                req: req.0,
                pieces: pieces.len(),
            }),
            Observed::Output(Output::Fetch(fetch)) => self.fetch_started(&fetch),
            Observed::Output(Output::CancelFetch(id)) => {
                self.push(Ev::Cancel { id: id.0 });
                let stall = self.swarm.engine_config().fetch_stall_timeout;
                if let Some((key, last)) = self.shell.fetches.remove(&id)
                    && self.now >= last + stall
                {
                    self.shell.stalled.insert(key, self.now);
                }
            }
            Observed::Output(Output::Evict(ids)) => {
                self.push(Ev::Evict { chunks: ids.len() });
                self.check_evict(&ids);
            }
            Observed::Output(Output::Warm(runs, _)) => {
                self.stats.warms += 1;
                self.push(Ev::Warm { runs: runs.len() });
            }
            Observed::Output(Output::Notice(Notice::ChunkDropped(id, _))) => {
                self.shell.dropped.insert(id);
            }
            Observed::Output(_) => {}
            Observed::Progress {
                fetch,
                chunks,
                stored,
            } => {
                self.push(Ev::Progress {
                    id: fetch.0,
                    chunks,
                    stored: u8::try_from(stored).unwrap_or(u8::MAX),
                });
                if let Some((key, last)) = self.shell.fetches.get_mut(&fetch) {
                    *last = self.now;
                    let key = key.clone();
                    self.shell.stalled.remove(&key);
                }
            }
            Observed::Durable { chunks, failed } => self.push(Ev::Durable { chunks, failed }),
            Observed::FetchDone { fetch, result } => {
                if let Some((key, _)) = self.shell.fetches.remove(&fetch)
                    && result.is_ok()
                {
                    self.shell.stalled.remove(&key);
                }
                self.push(Ev::FetchDone {
                    id: fetch.0,
                    result: format!("{result:?}"),
                });
            }
        }
    }

    fn fetch_started(&mut self, fetch: &Fetch) {
        self.check_backoff(fetch);
        self.push(Ev::Fetch {
            id: fetch.id.0,
            origin: fetch.source.origin.0,
            path: fetch.source.path.to_string(),
            start: fetch.start,
            end: fetch.read_end(),
            verify: matches!(fetch.plan, FetchPlan::Verify { .. }),
        });
        self.shell
            .fetches
            .insert(fetch.id, (key_of(&fetch.source), self.now));
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

    /// An origin answered a request.
    pub(crate) fn on_net_done(&mut self, net: u64, result: Result<Vec<u8>, OriginError>) {
        self.push(Ev::NetDone {
            op: net,
            result: match &result {
                Ok(d) => format!("{} bytes", d.len()),
                Err(e) => format!("{e:?}"),
            },
        });
        match self.shell.net_ops.remove(&net) {
            Some(NetOwner::Read(op)) => {
                self.shell.net_of.remove(&op);
                let result = result.map_err(fetch_error);
                self.with_exec(|x, e, now| x.origin_read_done(e, now, op, result));
            }
            Some(NetOwner::Check(origin, check)) => {
                let result = result.map(drop).map_err(|e| format!("{e:?}"));
                self.with_exec(|x, e, now| x.check_done(e, now, origin, check, result));
            }
            None => {}
        }
    }

    /// An origin read took longer than the daemon waits for one.
    pub(crate) fn op_timeout(&mut self, op: OpId) {
        let Some(net) = self.shell.net_of.remove(&op) else {
            return;
        };
        self.shell.net_ops.remove(&net);
        self.net.abort(net);
        let err = FetchError::Unavailable("origin request timed out".into());
        self.with_exec(|x, e, now| x.origin_read_done(e, now, op, Err(err)));
    }

    /// A health check took longer than the daemon waits for one.
    pub(crate) fn check_timeout(&mut self, net: u64) {
        if let Some(NetOwner::Check(origin, check)) = self.shell.net_ops.remove(&net) {
            self.net.abort(net);
            let result = Err("no answer in time".to_owned());
            self.with_exec(|x, e, now| x.check_done(e, now, origin, check, result));
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

    fn read_fault(&mut self) -> bool {
        let Some(d) = self.swarm.read_faults else {
            return false;
        };
        self.log.read_faults && self.rng_disk.random_range(0..100) < d.pct
    }

    /// Chunk files were written (temp file, flush, rename: whole or absent).
    pub(crate) fn write_done(&mut self, op: OpId, chunks: Vec<(ChunkId, Arc<[u8]>)>) {
        let mut results = Vec::with_capacity(chunks.len());
        for (id, data) in chunks {
            results.push(match self.store_fault() {
                Some(fault) => Err(fault),
                None => {
                    self.disk.write_file(id, &data);
                    Ok(())
                }
            });
        }
        self.with_exec(|x, e, now| x.chunks_written(e, now, op, results));
    }

    /// Chunks were indexed: each must have its file in place by now.
    pub(crate) fn index_done(&mut self, op: OpId, chunks: Vec<(ChunkId, u32)>) {
        let early = chunks
            .iter()
            .find(|(id, _)| !self.disk.has_file(*id) && !self.disk.damaged.contains(id));
        if let Some((id, _)) = early {
            let v = Violation::new(
                "index after durable",
                format!("{id:?} was indexed before its file was written"),
            );
            self.violation.get_or_insert(v);
        }
        self.disk.index_chunks(&chunks);
        self.with_exec(|x, e, now| x.chunks_indexed(e, now, op, Ok(())));
    }

    /// Chunks were deleted (index entries, then files): none may be one the
    /// engine believes cached, unless a store of it is under way.
    pub(crate) fn delete_done(&mut self, op: OpId, ids: Vec<ChunkId>) {
        self.disk.evict(&ids);
        if let Some(e) = self.engine.as_ref() {
            let wrong = ids
                .iter()
                .find(|id| e.cache().contains(**id) && !self.shell.exec.storing(**id));
            if let Some(id) = wrong {
                let v = Violation::new(
                    "cached but deleted",
                    format!("{id:?} was deleted while the engine believes it cached"),
                );
                self.violation.get_or_insert(v);
            }
        }
        for id in &ids {
            self.shell.dropped.remove(id);
        }
        self.with_exec(|x, e, now| x.chunks_deleted(e, now, op));
    }

    /// A serve's chunk files have been read (unchecked: the executor
    /// checks them).
    pub(crate) fn read_done(&mut self, op: OpId, ids: Vec<ChunkId>) {
        let mut results = Vec::with_capacity(ids.len());
        let mut faults = 0;
        for id in ids {
            let r = if self.read_fault() {
                Err(ChunkFault::Disk(DiskFault::Io))
            } else {
                self.disk
                    .read(id)
                    .map(Arc::from)
                    .map_err(|_| ChunkFault::Missing)
            };
            faults += usize::from(r.is_err());
            results.push(r);
        }
        if faults > 0 {
            self.push(Ev::ServeFaults { req: op.0, faults });
        }
        self.with_exec(|x, e, now| x.chunks_read(e, now, op, results));
    }

    /// The disk probe wrote (or failed to write) its test chunk.
    pub(crate) fn probe_done(&mut self) {
        let ok = self.store_fault().is_none();
        self.push(Ev::Probe { ok });
        self.with_exec(|x, e, now| x.disk_probed(e, now, ok));
    }
}
