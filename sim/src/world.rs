//! The world of one seed and its discrete-event loop.
//!
//! The loop owns the clock. Three things can happen next, and it always runs
//! the earliest: an event from its queue (a client waking, a disk operation
//! completing, a fault starting, a rescan, a crash...), the engine's own
//! timer ([`Engine::poll_timeout`]), or a tick of the turmoil network when
//! something is on the wire. After each it drains the engine's outputs
//! through the simulated io-shell ([`crate::shell`]) and checks the
//! invariants ([`crate::invariants`]). Time jumps straight to the next thing
//! that happens, so a simulated minute costs what happens in it.
//!
//! A run has three phases: chaos (clients and faults), heal (faults stop;
//! reads already started may still fail), and verify (every file is read
//! whole and every read must succeed, and the tree must equal the one the
//! origins' real contents give).

use crate::client::Client;
use crate::disk::Disk;
use crate::faults::{Fault, FaultLog};
use crate::invariants::Violation;
use crate::net::Net;
use crate::origin::{Library, VersionKey, version_key};
use crate::shell::Shell;
use crate::swarm::{Stream, Swarm, stream};
use crate::trace::{Ev, Trace};
use musicfs_core::ChunkId;
use musicfs_core::catalog::{CatalogEntry, FileKind};
use musicfs_core::engine::{Engine, ReqId, SourceKey, cut_run};
use musicfs_core::exec::OpId;
use musicfs_core::sync::{self, Listed};
use musicfs_core::tree::VirtualTree;
use musicfs_core::{Ino, Kept, Layout, Manifest, SourceFile, Time};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Events the loop can schedule.
#[derive(Debug)]
pub(crate) enum Event {
    ClientWake(usize, u32),
    /// An origin read's timeout.
    OpTimeout {
        life: u32,
        op: OpId,
    },
    /// A serve's chunk files have been read.
    ReadDone {
        life: u32,
        op: OpId,
        ids: Vec<ChunkId>,
    },
    /// A group write's chunk files are in place (or failed to be).
    WriteDone {
        life: u32,
        op: OpId,
        chunks: Vec<(ChunkId, Arc<[u8]>)>,
    },
    /// Chunks' index entries are written.
    IndexDone {
        life: u32,
        op: OpId,
        chunks: Vec<(ChunkId, u32)>,
    },
    /// Evicted chunks are deleted.
    DeleteDone {
        life: u32,
        op: OpId,
        ids: Vec<ChunkId>,
    },
    /// A disk probe finished.
    ProbeDone {
        life: u32,
    },
    /// A health check took too long.
    CheckTimeout {
        life: u32,
        op: u64,
    },
    /// A slow origin's answer is due.
    NetWake(u64),
    /// The daemon writes dirty chunk maps and access times (every second).
    Persist,
    /// The database flushes (every 500 ms).
    DbFlush,
    /// A user pins, unpins or pauses some files (`musicfs pin`).
    Pin,
    /// A lying disk's write-back flush.
    DiskFlush,
    Rescan,
    /// A tagger rewrites a file a scan is reading, and a sync follows at
    /// once (origin index, path).
    RetagAndSync(usize, musicfs_core::OriginPath),
    Fault(Fault),
    Restart,
    Heal,
    Verify,
}

/// One FUSE read from request to reply, and what it may return.
#[derive(Clone, Debug)]
pub(crate) struct ReadRecord {
    pub client: usize,
    pub ino: Ino,
    pub offset: u64,
    pub size: u32,
    pub start: Time,
    /// Every origin version the tree showed for the inode during the read.
    pub versions: Vec<SourceFile>,
    /// The sources the tree showed when the read started.
    pub first_sources: Vec<SourceFile>,
    pub tree_changed: bool,
    pub passthrough_seen: bool,
    pub jumped: Duration,
}

/// The run of one seed.
pub struct World {
    pub(crate) seed: u64,
    pub(crate) swarm: Swarm,
    pub(crate) now: Time,
    queue: BTreeMap<(Time, u64), Event>,
    seq: u64,
    pub(crate) engine: Option<Engine>,
    pub(crate) layout: Layout,
    pub(crate) lib: Library,
    pub(crate) net: Net,
    pub(crate) disk: Disk,
    pub(crate) shell: Shell,
    /// The daemon's incarnation: events an earlier one scheduled are
    /// ignored (a crash forgets its disk writes and timers in flight).
    pub(crate) life: u32,
    pub(crate) clients: Vec<Client>,
    /// FUSE reads the kernel still waits for.
    pub(crate) reads: BTreeMap<ReqId, ReadRecord>,
    pub(crate) next_req: u64,
    /// When each kind of fault was last in force.
    pub(crate) log: FaultLog,
    pub(crate) trace: Trace,
    pub(crate) rng_clients: Stream,
    pub(crate) rng_disk: Stream,
    pub(crate) rng_faults: Stream,
    rng_engine: Stream,
    /// Pin commands: their own stream, so they reshuffle nothing else.
    rng_pins: Stream,
    /// How often a pin command comes, if ever.
    pin_every: Option<Duration>,
    pub(crate) phase: Phase,
    pub(crate) stats: RunStats,
    pub(crate) violation: Option<Violation>,
    /// Since when the engine's tree has shown each origin version it shows.
    pub(crate) shown_since: BTreeMap<VersionKey, Time>,
    /// The instant of the last engine wake-up, and how many came at it.
    timer_repeat: (Time, u32),
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Chaos,
    Heal,
    Verify,
    Done,
}

/// Counts for the summary line.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    /// FUSE reads issued.
    pub reads: u64,
    /// Reads answered with bytes.
    pub reads_ok: u64,
    /// Reads answered with an error.
    pub reads_err: u64,
    /// EIO answers the liveness rule judged.
    pub eio_judged: u64,
    /// Crashes.
    pub crashes: u64,
    /// Rescans.
    pub rescans: u64,
    /// Rescans that changed the catalog and patched the tree (checked
    /// equal to the whole build).
    pub tree_patches: u64,
    /// Read-aheads of kept chunks into memory the engine asked for.
    pub warms: u64,
    /// Origin reads ahead of streams answered straight from their origin.
    pub origin_read_aheads: u64,
    /// Runs of pages handed to the kernel, checked.
    pub primes: u64,
    /// Runs of pages handed to the kernel after the tree changed (dropped
    /// again).
    pub primes_dropped: u64,
    /// Loop iterations.
    pub steps: u64,
    /// turmoil ticks.
    pub net_ticks: u64,
}

/// A runaway loop is a bug of its own; stop and say so.
const STEPS_MAX: u64 = 500_000;
/// Wake-ups the engine may ask for at one instant.
const TIMER_REPEATS_MAX: u32 = 20;

impl World {
    /// The world of `seed`, ready to run.
    pub fn new(seed: u64, swarm: Swarm, live_trace: bool) -> World {
        let lib = Library::generate(seed, &swarm);
        let latency = Duration::from_millis(swarm.latency_max_ms);
        let net = Net::new(stream(seed, "turmoil").random(), latency, &lib.origins);
        let mut w = World {
            seed,
            now: Time::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            engine: None,
            layout: Layout::default_layout(),
            lib,
            net,
            disk: Disk::new(swarm.lying_disk),
            shell: Shell::new(swarm.exec_config()),
            life: 0,
            clients: Vec::new(),
            reads: BTreeMap::new(),
            next_req: 1,
            log: FaultLog {
                origin_on: vec![0; usize::from(swarm.origins)],
                origin_last_end: vec![None; usize::from(swarm.origins)],
                ..FaultLog::default()
            },
            trace: Trace::new(live_trace),
            rng_clients: stream(seed, "clients"),
            rng_disk: stream(seed, "disk"),
            rng_faults: stream(seed, "faults"),
            rng_engine: stream(seed, "engine"),
            rng_pins: stream(seed, "pins"),
            pin_every: None,
            phase: Phase::Chaos,
            stats: RunStats::default(),
            violation: None,
            shown_since: BTreeMap::new(),
            timer_repeat: (Time::ZERO, 0),
            swarm,
        };
        w.disk.catalog = w.scan().0;
        w.keep_scanned();
        w.start_engine();
        w.clients = Client::population(&w.swarm, &mut w.rng_clients);
        for i in 0..w.clients.len() {
            let t = Duration::from_millis(w.rng_clients.random_range(0..200));
            w.wake_client(i, t);
        }
        // Half the seeds pin (the other half run as before pins existed).
        if w.rng_pins.random_bool(0.5) {
            let every = Duration::from_millis(w.rng_pins.random_range(300..4_000));
            w.pin_every = Some(every);
            w.schedule(every, Event::Pin);
        }
        w.schedule(Duration::from_secs(1), Event::Persist);
        w.schedule(Duration::from_millis(500), Event::DbFlush);
        w.schedule(Duration::from_millis(1_500), Event::DiskFlush);
        w.schedule(Duration::from_millis(w.swarm.rescan_ms), Event::Rescan);
        w.plan_faults();
        w.schedule(Duration::from_millis(w.swarm.chaos_ms), Event::Heal);
        w
    }

    /// Queues `ev` to happen `after` from now.
    pub(crate) fn schedule(&mut self, after: Duration, ev: Event) {
        self.seq += 1;
        self.queue.insert((self.now + after, self.seq), ev);
    }

    pub(crate) fn push(&mut self, ev: Ev) {
        self.trace.push(self.now, ev);
    }

    /// Runs to the end. Returns the first broken invariant, if any.
    pub fn run(&mut self) -> Option<Violation> {
        while self.phase != Phase::Done && self.violation.is_none() {
            self.stats.steps += 1;
            if self.stats.steps > STEPS_MAX {
                return Some(Violation::new("runaway", "the run never ended"));
            }
            self.step_once();
            self.pump();
            if self.violation.is_none() {
                self.check_step();
            }
        }
        self.stats.net_ticks = self.net.steps();
        self.violation.take()
    }

    fn step_once(&mut self) {
        let ev_at = self.queue.first_key_value().map(|(k, _)| k.0);
        let timer_at = self.engine.as_ref().and_then(Engine::poll_timeout);
        let net_at = self.net.next_step(self.now);
        let Some(at) = [timer_at, ev_at, net_at].into_iter().flatten().min() else {
            self.violation = Some(Violation::new(
                "liveness",
                "nothing left to happen before the run ended",
            ));
            return;
        };
        self.now = self.now.max(at);
        if timer_at == Some(at) {
            self.engine_timer();
        } else if ev_at == Some(at) {
            if let Some((_, ev)) = self.queue.pop_first() {
                self.dispatch(ev);
            }
        } else {
            let (done, wakes) = self.net.step();
            for (id, delay) in wakes {
                self.schedule(delay, Event::NetWake(id));
            }
            for (op, result) in done {
                self.on_net_done(op, result);
            }
        }
    }

    fn engine_timer(&mut self) {
        let now = self.now;
        // Work planned inside `handle_timeout` (an on-demand health check)
        // may be due at once, so one more wake-up at the same instant is
        // fine; many in a row are a spin that would burn a core.
        if self.timer_repeat.0 == now {
            self.timer_repeat.1 += 1;
            if self.timer_repeat.1 > TIMER_REPEATS_MAX {
                let v = Violation::new(
                    "timer",
                    format!("the engine asks to be woken at {now:?} again and again"),
                );
                self.violation = Some(v);
                return;
            }
        } else {
            self.timer_repeat = (now, 0);
        }
        if let Some(e) = self.engine.as_mut() {
            e.handle_timeout(now);
            // The daemon offers it every second; the engine's timers come
            // often enough to stand for that tick.
            self.shell.exec.release_idle_memory(now);
        }
    }

    fn dispatch(&mut self, ev: Event) {
        match ev {
            Event::ClientWake(i, epoch) => self.client_wake(i, epoch),
            Event::OpTimeout { life, op } if life == self.life => self.op_timeout(op),
            Event::ReadDone { life, op, ids } if life == self.life => self.read_done(op, ids),
            Event::WriteDone { life, op, chunks } if life == self.life => {
                self.write_done(op, chunks)
            }
            Event::IndexDone { life, op, chunks } if life == self.life => {
                self.index_done(op, chunks)
            }
            Event::DeleteDone { life, op, ids } if life == self.life => self.delete_done(op, ids),
            Event::ProbeDone { life } if life == self.life => self.probe_done(),
            Event::CheckTimeout { life, op } if life == self.life => self.check_timeout(op),
            Event::OpTimeout { .. }
            | Event::ReadDone { .. }
            | Event::WriteDone { .. }
            | Event::IndexDone { .. }
            | Event::DeleteDone { .. }
            | Event::ProbeDone { .. }
            | Event::CheckTimeout { .. } => {} // work of a daemon that crashed
            Event::NetWake(id) => self.net.wake(id),
            Event::Persist => {
                self.persist();
                if self.phase != Phase::Done {
                    self.schedule(Duration::from_secs(1), Event::Persist);
                }
            }
            Event::DbFlush => {
                if self.engine.is_some() {
                    self.disk.flush_db();
                }
                self.schedule(Duration::from_millis(500), Event::DbFlush);
            }
            Event::DiskFlush => {
                self.disk.flush_disk();
                let t = Duration::from_millis(self.rng_disk.random_range(200..4_000));
                self.schedule(t, Event::DiskFlush);
            }
            Event::Pin => {
                if self.phase == Phase::Chaos {
                    self.pin_command();
                }
                if let Some(every) = self.pin_every {
                    self.schedule(every, Event::Pin);
                }
            }
            Event::Rescan => {
                self.rescan();
                let t = Duration::from_millis(self.swarm.rescan_ms);
                self.schedule(t, Event::Rescan);
            }
            Event::RetagAndSync(o, path) => {
                if self.phase == Phase::Chaos && self.engine.is_some() {
                    if let Some(what) = self.lib.retag(o, &path) {
                        self.push(Ev::Fault(what));
                    }
                    self.rescan();
                }
            }
            Event::Fault(f) => self.fault(f),
            Event::Restart => self.restart(),
            Event::Heal => self.heal(),
            Event::Verify => self.start_verify(),
        }
    }

    /// What a sync of every reachable origin makes of the saved catalog,
    /// decided by the core's sync planning (the io-shell's `Syncer` runs the
    /// same functions): unchanged files are not read again, moved files keep
    /// their entries, an unreachable origin keeps its saved entries. Also
    /// returns the moves, for `Engine::move_sources`.
    pub(crate) fn scan(&self) -> (Vec<CatalogEntry>, Vec<(SourceKey, SourceFile)>) {
        let mut catalog = self.disk.catalog.clone();
        let mut moves = Vec::new();
        for o in &self.lib.origins {
            let o = o.borrow();
            if !self.net.is_reachable(o.id) {
                continue;
            }
            let listing: Vec<Listed> = o
                .catalog()
                .into_iter()
                .map(|e| Listed {
                    path: e.source.path,
                    version: e.source.version,
                })
                .collect();
            let plan = sync::plan_full(o.id, &catalog, &listing);
            // "Reading the tags" of a file is asking the origin what it is.
            let fresh: BTreeMap<_, _> = o
                .catalog()
                .into_iter()
                .map(|e| (e.source.path.clone(), e))
                .collect();
            let read: Vec<CatalogEntry> = plan
                .reread
                .iter()
                .filter_map(|l| fresh.get(&l.path).cloned())
                .collect();
            moves.extend(
                plan.moved
                    .iter()
                    .map(|(old, e)| ((o.id, old.clone()), e.source.clone())),
            );
            catalog = sync::apply(&catalog, &plan, &read);
        }
        (catalog, moves)
    }

    /// What the daemon's first scan keeps before its engine starts
    /// (`io-shell/src/library/keep.rs`): every cached track's head and tail,
    /// cut as a fetch would cut them, durable, indexed, and mapped.
    fn keep_scanned(&mut self) {
        let Some((head, tail)) = self.swarm.kept else {
            return;
        };
        let uncached = self.swarm.engine_config().uncached_origins;
        for e in self.disk.catalog.clone() {
            let src = &e.source;
            if !matches!(e.kind, FileKind::Track(_)) || uncached.contains(&src.origin) {
                continue;
            }
            let Some(bytes) = self.lib.bytes_of(src) else {
                continue;
            };
            let size = bytes.len() as u64;
            let head = head.min(size);
            let tail = tail.min(size - head);
            let mut cut = cut_run(0, &bytes[..head as usize]);
            cut.extend(cut_run(size - tail, &bytes[(size - tail) as usize..]));
            let mut m = Manifest::new(src.version.clone());
            for c in cut {
                if m.insert(c.offset, c.extent()).is_ok() {
                    self.disk.write_file(c.id, &c.data);
                    self.disk.index_chunks(&[(c.id, c.data.len() as u32)]);
                }
            }
            m.keep(Kept { head, tail });
            self.disk.manifests.put((src.origin, src.path.clone()), m);
        }
        self.disk.flush_disk();
        self.disk.flush_db();
    }

    pub(crate) fn start_engine(&mut self) {
        let (tree, _) = VirtualTree::build(&self.layout, &self.disk.catalog);
        let (manifests, chunks) = self.disk.persisted();
        let (nm, nc) = (manifests.len(), chunks.len());
        let config = self.swarm.engine_config();
        let mut engine = Engine::new(config, tree, manifests, chunks, self.rng_engine.random());
        let pins: Vec<_> = self
            .disk
            .pins
            .durable()
            .iter()
            .map(|(k, p)| (k.clone(), *p))
            .collect();
        engine.restore_pins(pins);
        self.engine = Some(engine);
        if self.life > 0 {
            self.push(Ev::Restart {
                chunks: nc,
                manifests: nm,
            });
        }
        self.note_shown();
        self.check_tree(None);
        self.check_restart();
    }

    /// Keeps, for every version the tree shows, when it started showing it.
    fn note_shown(&mut self) {
        let Some(e) = self.engine.as_ref() else {
            return;
        };
        let mut shown = BTreeMap::new();
        for (_, f) in e.tree().files() {
            for s in &f.sources {
                let k = version_key(s);
                let since = self.shown_since.get(&k).copied().unwrap_or(self.now);
                shown.insert(k, since);
            }
        }
        self.shown_since = shown;
    }

    fn rescan(&mut self) {
        if self.engine.is_none() || self.phase == Phase::Done {
            return;
        }
        self.stats.rescans += 1;
        let (catalog, moves) = self.scan();
        let old_catalog = std::mem::replace(&mut self.disk.catalog, catalog);
        let (tree, _) = VirtualTree::build(&self.layout, &self.disk.catalog);
        // The io-shell's syncs patch the tree where the changes reach: the
        // patch must be exactly the whole build.
        let tree = match self.patched_tree(&old_catalog) {
            Some((patched, _)) if patched != tree => {
                self.fail(Violation::new(
                    "tree patch",
                    "a patched tree differs from the whole build of the same catalog",
                ));
                return;
            }
            Some((patched, changed)) => {
                self.stats.tree_patches += u64::from(changed > 0);
                patched
            }
            None => tree,
        };
        let now = self.now;
        let Some(e) = self.engine.as_mut() else {
            return;
        };
        let old = e.tree().clone();
        e.move_sources(&moves);
        let diff = e.replace_tree(now, tree);
        let files = e.tree().file_count();
        self.push(Ev::Rescan {
            files,
            changed: diff.inodes.len() + diff.entries.len(),
        });
        self.note_tree_change();
        self.note_shown();
        self.check_tree(Some(&old));
    }

    /// The engine's tree patched from `old` (the catalog it was built
    /// from) to the catalog on disk, as a sync patches it, and how many
    /// entries changed; `None` when the patch declines.
    fn patched_tree(&self, old: &[CatalogEntry]) -> Option<(VirtualTree, usize)> {
        use musicfs_core::tree::update::{Change, TreeUpdate};
        let e = self.engine.as_ref()?;
        let key = |c: &CatalogEntry| (c.source.origin, c.source.path.clone());
        let before: BTreeMap<_, &CatalogEntry> = old.iter().map(|c| (key(c), c)).collect();
        let now: BTreeMap<_, &CatalogEntry> =
            self.disk.catalog.iter().map(|c| (key(c), c)).collect();
        let changes: Vec<Change> = before
            .keys()
            .chain(now.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| before.get(*k) != now.get(*k))
            .map(|k| Change {
                old: before.get(k).map(|c| (*c).clone()),
                new: now.get(k).map(|c| (*c).clone()),
            })
            .collect();
        let changed = changes.len();
        let (_, report) = VirtualTree::build(&self.layout, old);
        let mut update = TreeUpdate::new(e.tree(), &report, &self.layout, changes);
        while let Some(need) = update.need() {
            let entries: Vec<CatalogEntry> = now
                .values()
                .filter(|c| need.asks_for(c))
                .map(|c| (*c).clone())
                .collect();
            update.supply(entries);
        }
        update.finish().ok().map(|u| (u.tree, changed))
    }

    /// Gives every read in flight the versions the new tree shows for its
    /// inode: the engine may now serve those.
    fn note_tree_change(&mut self) {
        let Some(e) = self.engine.as_ref() else {
            return;
        };
        let tree = e.tree();
        for r in self.reads.values_mut() {
            let now_sources = tree
                .file(r.ino)
                .map(|f| f.sources.clone())
                .unwrap_or_default();
            if now_sources != r.first_sources {
                r.tree_changed = true;
            }
            for s in now_sources {
                if !r.versions.contains(&s) {
                    r.versions.push(s);
                }
            }
        }
    }

    fn persist(&mut self) {
        let Some(e) = self.engine.as_mut() else {
            return;
        };
        for (key, m) in e.take_dirty_manifests() {
            match m {
                Some(m) => self.disk.manifests.put(key, m),
                None => self.disk.manifests.remove(key),
            }
        }
        let touched = e.take_touched_chunks();
        self.disk.touch(&touched);
        for (key, pin) in e.take_dirty_pins() {
            match pin {
                Some(pin) => self.disk.pins.put(key, pin),
                None => self.disk.pins.remove(key),
            }
        }
    }

    /// `musicfs pin`, `unpin` or Ctrl-C on a pin: the engine decides, and
    /// the daemon saves the pins durably before it answers (as
    /// `pins::save` does: persist, then flush).
    fn pin_command(&mut self) {
        let Some(e) = self.engine.as_mut() else {
            return;
        };
        let files: Vec<Ino> = e.tree().files().map(|(ino, _)| ino).collect();
        if files.is_empty() {
            return;
        }
        // Prefer files with cached bytes: their chunks are what a pin must
        // keep from eviction.
        let cached: Vec<Ino> = files
            .iter()
            .copied()
            .filter(|&i| e.cached(i) != musicfs_core::engine::Cached::None)
            .collect();
        let pool = if !cached.is_empty() && self.rng_pins.random_bool(0.7) {
            &cached
        } else {
            &files
        };
        let n = self.rng_pins.random_range(1..=3usize);
        let pick: Vec<Ino> = (0..n)
            .map(|_| pool[self.rng_pins.random_range(0..pool.len())])
            .collect();
        let roll = self.rng_pins.random_range(0..10u32);
        let what = if roll < 6 {
            match e.pin(&pick) {
                Ok(r) => format!("pin {} files, {} new", r.files, r.new_files),
                Err(r) => format!(
                    "pin refused: {} + {} > {}",
                    r.pinned_bytes, r.adding_bytes, r.limit_bytes
                ),
            }
        } else if roll < 9 {
            format!("unpin {} files", e.unpin(&pick))
        } else {
            e.pause_pins(&pick);
            "pause".to_owned()
        };
        self.push(Ev::Pin(what));
        self.persist();
        self.disk.flush_db();
    }

    fn start_verify(&mut self) {
        // One sync round after the heal: every origin is reachable, so the
        // tree must now be exactly the one the origins' contents give.
        self.rescan();
        self.phase = Phase::Verify;
        self.push(Ev::Phase("verify"));
        self.check_converged();
        let files: Vec<_> = self
            .engine
            .as_ref()
            .map(|e| e.tree().files().map(|(ino, _)| ino).collect())
            .unwrap_or_default();
        // Generous: every file could wait a whole read timeout for a fetch.
        let config = self.swarm.engine_config();
        let bound = config.read_timeout * (files.len() as u32 + 2) + Duration::from_secs(60);
        let i = self.clients.len();
        self.clients.push(Client::verifier(files, self.now + bound));
        self.wake_client(i, Duration::ZERO);
    }

    /// The verifier read everything: final checks, then stop.
    pub(crate) fn finish(&mut self) {
        self.check_final();
        self.phase = Phase::Done;
        self.push(Ev::Phase("done"));
    }

    /// The trace so far.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The swarm options.
    pub fn swarm(&self) -> &Swarm {
        &self.swarm
    }

    /// Counters.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Chunks ever put in a set, for restart checks.
    pub(crate) fn damaged(&self) -> &BTreeSet<musicfs_core::ChunkId> {
        &self.disk.damaged
    }
}
