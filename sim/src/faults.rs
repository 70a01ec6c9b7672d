//! Faults: when they happen and what they do to the world.
//!
//! The whole chaos phase's schedule is drawn up front from the seed's
//! "faults" stream ([`World::plan_faults`]): episodes (partitions, stalled
//! and flaky origins, disk store and read faults) on the origins the swarm
//! made fault-prone, and point events (content changes, crashes, bit flips,
//! lost chunk files, clock jumps) anywhere. Each fault acts on the world
//! only through the same surfaces a real one would: the turmoil network, an
//! origin's behaviour, the simulated disk, the clock, or killing the daemon.
//!
//! The [`FaultLog`] remembers when each kind of fault was last in force, so
//! the liveness rules can tell a read that failed because of a fault from
//! one that failed for no reason.

use crate::client::Answer;
use crate::shell::Shell;
use crate::swarm::{Stream, exp_ms};
use crate::trace::Ev;
use crate::world::{Event, Phase, World};
use musicfs_core::engine::ReqId;
use musicfs_core::{OriginId, Time};
use rand::Rng;
use std::time::Duration;

/// Faults, scheduled during the chaos phase.
#[derive(Debug)]
pub(crate) enum Fault {
    Partition(OriginId, bool),
    Stall(OriginId, bool),
    Flaky(OriginId, bool),
    StoreFaults(bool),
    ReadFaults(bool),
    Mutate,
    Crash,
    BitFlip,
    LoseChunk,
    ClockJump(Duration),
}

/// Fault windows, for the rules that excuse a read.
#[derive(Debug, Default)]
pub(crate) struct FaultLog {
    /// Per origin: whether an episode is on, and when the last one ended.
    pub origin_on: Vec<u32>,
    pub origin_last_end: Vec<Option<Time>>,
    pub disk_on: u32,
    pub disk_last_end: Option<Time>,
    pub store_faults: bool,
    pub read_faults: bool,
    /// The last forward clock jump: every fetch in flight then stalled.
    pub last_jump: Option<Time>,
}

impl World {
    /// Draws the whole chaos phase's fault schedule up front, from the
    /// faults stream alone.
    pub(crate) fn plan_faults(&mut self) {
        let s = self.swarm.clone();
        let end = s.chaos_ms;
        let rng = &mut self.rng_faults;
        let mut plan: Vec<(u64, Fault)> = Vec::new();
        let episodes = |rng: &mut Stream, gap: u64, len: u64, on: &dyn Fn(bool) -> Fault| {
            let mut t = exp_ms(rng, gap);
            let mut out = Vec::new();
            while t < end {
                let l = exp_ms(rng, len);
                out.push((t, on(true)));
                out.push(((t + l).min(end), on(false)));
                t += l + exp_ms(rng, gap);
            }
            out
        };
        for o in (0..s.origins).filter(|o| s.faulty_origins & 1 << o != 0) {
            let id = OriginId(o);
            if let Some(e) = s.partitions {
                plan.extend(episodes(rng, e.gap_ms, e.len_ms, &|on| {
                    Fault::Partition(id, on)
                }));
            }
            if let Some(e) = s.stalls {
                plan.extend(episodes(rng, e.gap_ms, e.len_ms, &|on| {
                    Fault::Stall(id, on)
                }));
            }
            if let Some(f) = s.flaky {
                let e = f.episodes;
                plan.extend(episodes(rng, e.gap_ms, e.len_ms, &|on| {
                    Fault::Flaky(id, on)
                }));
            }
        }
        if let Some(d) = s.store_faults {
            let e = d.episodes;
            plan.extend(episodes(rng, e.gap_ms, e.len_ms, &Fault::StoreFaults));
        }
        if let Some(d) = s.read_faults {
            let e = d.episodes;
            plan.extend(episodes(rng, e.gap_ms, e.len_ms, &Fault::ReadFaults));
        }
        let points = |rng: &mut Stream, gap: Option<u64>, f: &dyn Fn(&mut Stream) -> Fault| {
            let mut out = Vec::new();
            if let Some(gap) = gap {
                let mut t = exp_ms(rng, gap);
                while t < end {
                    out.push((t, f(rng)));
                    t += exp_ms(rng, gap);
                }
            }
            out
        };
        plan.extend(points(rng, s.mutations_gap_ms, &|_| Fault::Mutate));
        plan.extend(points(rng, s.crash_gap_ms, &|_| Fault::Crash));
        plan.extend(points(rng, s.bitflip_gap_ms, &|_| Fault::BitFlip));
        plan.extend(points(rng, s.lost_chunk_gap_ms, &|_| Fault::LoseChunk));
        let jumps = s.clock_jumps;
        plan.extend(points(rng, jumps.map(|j| j.0), &|r| {
            let max = jumps.map_or(1, |j| j.1);
            Fault::ClockJump(Duration::from_millis(r.random_range(1..=max)))
        }));
        for (t, f) in plan {
            self.schedule(Duration::from_millis(t), Event::Fault(f));
        }
    }

    pub(crate) fn fault(&mut self, f: Fault) {
        if self.phase != Phase::Chaos {
            return;
        }
        match f {
            Fault::Partition(o, on) => {
                self.net.set_partition(o, on);
                self.origin_episode(o, on);
                self.push(Ev::Fault(format!("partition {o} {on}")));
            }
            Fault::Stall(o, on) => {
                self.net.set_stall(o, on);
                self.origin_episode(o, on);
                self.push(Ev::Fault(format!("stall {o} {on}")));
            }
            Fault::Flaky(o, on) => {
                let flaky = if on { self.swarm.flaky } else { None };
                self.lib.origins[usize::from(o.0)].borrow_mut().flaky = flaky;
                self.origin_episode(o, on);
                self.push(Ev::Fault(format!("flaky {o} {on}")));
            }
            Fault::StoreFaults(on) => {
                self.log.store_faults = on;
                self.disk_episode(on);
                self.push(Ev::Fault(format!("store faults {on}")));
            }
            Fault::ReadFaults(on) => {
                self.log.read_faults = on;
                self.disk_episode(on);
                self.push(Ev::Fault(format!("read faults {on}")));
            }
            Fault::Mutate => {
                if let Some(what) = self.lib.mutate(self.swarm.size_max) {
                    self.push(Ev::Fault(what));
                }
            }
            Fault::Crash => self.crash(),
            Fault::BitFlip => {
                if let Some(id) = self.disk.flip_bit(&mut self.rng_disk) {
                    self.push(Ev::Fault(format!("bit flip in {id:?}")));
                }
            }
            Fault::LoseChunk => {
                if let Some(id) = self.disk.lose_file(&mut self.rng_disk) {
                    self.push(Ev::Fault(format!("chunk file lost {id:?}")));
                }
            }
            Fault::ClockJump(d) => {
                self.now += d;
                self.log.last_jump = Some(self.now);
                for r in self.reads.values_mut() {
                    r.jumped += d;
                }
                self.push(Ev::Fault(format!("clock jumps {d:?}")));
            }
        }
    }

    fn origin_episode(&mut self, o: OriginId, on: bool) {
        let i = usize::from(o.0);
        if on {
            self.log.origin_on[i] += 1;
        } else {
            self.log.origin_on[i] = self.log.origin_on[i].saturating_sub(1);
            self.log.origin_last_end[i] = Some(self.now);
        }
    }

    fn disk_episode(&mut self, on: bool) {
        if on {
            self.log.disk_on += 1;
        } else {
            self.log.disk_on = self.log.disk_on.saturating_sub(1);
            self.log.disk_last_end = Some(self.now);
        }
    }

    /// The daemon dies: the kernel fails every read in flight, the network
    /// drops its connections, the disk loses what was not durable.
    fn crash(&mut self) {
        if self.engine.is_none() {
            return;
        }
        self.stats.crashes += 1;
        self.push(Ev::Crash);
        self.engine = None;
        self.life += 1;
        self.net.abort_all();
        self.shell = Shell::new(self.swarm.exec_config());
        let reqs: Vec<ReqId> = self.reads.keys().copied().collect();
        for req in reqs {
            self.deliver(req, Answer::Aborted);
        }
        let hurt = self.disk.crash(&mut self.rng_disk);
        if hurt > 0 {
            self.push(Ev::Fault(format!("crash tore or lost {hurt} chunk files")));
        }
        for c in &mut self.clients {
            c.reset();
        }
        let down = Duration::from_millis(self.rng_faults.random_range(50..3_000));
        self.schedule(down, Event::Restart);
    }

    pub(crate) fn restart(&mut self) {
        if self.engine.is_some() {
            return;
        }
        self.start_engine();
        for i in 0..self.clients.len() {
            self.wake_client(i, Duration::from_millis(1));
        }
    }

    /// The end of chaos: every fault stops at once.
    pub(crate) fn heal(&mut self) {
        self.phase = Phase::Heal;
        self.push(Ev::Phase("heal"));
        for o in 0..self.swarm.origins {
            let id = OriginId(o);
            self.net.set_partition(id, false);
            self.net.set_stall(id, false);
            self.lib.origins[usize::from(o)].borrow_mut().flaky = None;
            if self.log.origin_on[usize::from(o)] > 0 {
                self.log.origin_on[usize::from(o)] = 0;
                self.log.origin_last_end[usize::from(o)] = Some(self.now);
            }
        }
        self.log.store_faults = false;
        self.log.read_faults = false;
        if self.log.disk_on > 0 {
            self.log.disk_on = 0;
            self.log.disk_last_end = Some(self.now);
        }
        if self.engine.is_none() {
            self.restart();
        }
        // Let reads started before the heal finish, hung fetches stall, and
        // backoffs and the disk probe run out, before demanding success.
        let config = self.swarm.engine_config();
        let settle = config.read_timeout
            + self.swarm.fault_shadow(&config)
            + config.disk_probe_interval
            + Duration::from_millis(self.swarm.rescan_ms);
        self.schedule(settle, Event::Verify);
    }

    /// Fault windows in force, for the liveness rule.
    pub(crate) fn origin_clean_since(&self, o: OriginId, since: Time) -> bool {
        let i = usize::from(o.0);
        self.log.origin_on[i] == 0 && self.log.origin_last_end[i].is_none_or(|t| t < since)
    }

    pub(crate) fn disk_clean_since(&self, since: Time) -> bool {
        self.log.disk_on == 0 && self.log.disk_last_end.is_none_or(|t| t < since)
    }

    pub(crate) fn clock_steady_since(&self, since: Time) -> bool {
        self.log.last_jump.is_none_or(|t| t < since)
    }
}
