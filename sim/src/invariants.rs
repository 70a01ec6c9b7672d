//! The invariants: what must hold after every step, at every reply, after
//! every rescan and restart, and at the end of a run.
//!
//! Each check returns (or records) a [`Violation`] naming the invariant, so
//! a failure report says which rule broke before it shows any trace. A check
//! must hold for the correct engine under every fault the swarm can draw:
//! where a fault legitimately makes a read fail, the rule says precisely
//! which reads it excuses (see [`World::eio_inexcusable`]).

use crate::client::Answer;
use crate::origin::version_key;
use crate::world::{Phase, ReadRecord, World};
use musicfs_core::engine::{SourceKey, key_of};
use musicfs_core::fs::Errno;
use musicfs_core::naming::is_valid_name;
use musicfs_core::tree::VirtualTree;
use musicfs_core::{Ino, SourceFile, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which rule.
    pub invariant: &'static str,
    /// What happened.
    pub detail: String,
}

impl Violation {
    /// A violation of `invariant`.
    pub fn new(invariant: &'static str, detail: impl Into<String>) -> Violation {
        Violation {
            invariant,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.invariant, self.detail)
    }
}

fn before(t: Time, d: std::time::Duration) -> Time {
    Time::from_nanos(t.as_nanos().saturating_sub(d.as_nanos() as u64))
}

impl World {
    pub(crate) fn fail(&mut self, v: Violation) {
        self.violation.get_or_insert(v);
    }

    /// At every eviction: no chunk of a pinned file is evicted (a chunk
    /// dropped because its file was bad is deleted all the same: that is
    /// no eviction).
    pub(crate) fn check_evict(&mut self, ids: &[musicfs_core::ChunkId]) {
        let Some(e) = self.engine.as_ref() else {
            return;
        };
        let held = e.held_chunks();
        let evicted_held = ids
            .iter()
            .find(|id| held.contains(id) && !self.shell.dropped.contains(id));
        if let Some(id) = evicted_held {
            let v = Violation::new(
                "pinned evicted",
                format!("{id:?} of a pinned file was evicted"),
            );
            self.fail(v);
        }
        for id in ids {
            self.shell.dropped.remove(id);
        }
    }

    /// After every step: pins balance, the cache is within its limit,
    /// no read is past its deadline, the verifier is on time.
    pub(crate) fn check_step(&mut self) {
        let Some(e) = self.engine.as_ref() else {
            return self.check_deadlines();
        };
        // Summed here, not the cache's running count: the check must not
        // trust the bookkeeping it checks.
        let pins: u64 = e.cache().iter().map(|(_, m)| u64::from(m.pins)).sum();
        let held = e.pins_held_by_reads();
        let cache = e.cache();
        let over = cache.bytes() > cache.capacity_bytes();
        let unpinned: u64 = if over {
            let held = e.held_chunks();
            cache
                .iter()
                .filter(|(id, m)| m.pins == 0 && !held.contains(id))
                .map(|(_, m)| u64::from(m.len))
                .sum()
        } else {
            0
        };
        let (pinned, limit) = (e.pinned_bytes(), e.pin_limit_bytes());
        if pinned > limit {
            let v = Violation::new(
                "pin share",
                format!("{pinned} bytes pinned over a pin limit of {limit}"),
            );
            return self.fail(v);
        }
        let (bytes, capacity) = (cache.bytes(), cache.capacity_bytes());
        if e.in_passthrough() {
            for r in self.reads.values_mut() {
                r.passthrough_seen = true;
            }
        }
        if pins != held {
            let v = Violation::new(
                "pins",
                format!("cache holds {pins} pins, reads hold {held}"),
            );
            return self.fail(v);
        }
        if unpinned > 0 {
            let v = Violation::new(
                "cache limit",
                format!(
                    "{bytes} bytes cached over a limit of {capacity} with {unpinned} bytes evictable"
                ),
            );
            return self.fail(v);
        }
        self.check_deadlines();
    }

    fn check_deadlines(&mut self) {
        let timeout = self.swarm.engine_config().read_timeout;
        // The engine's own view: every read it still owes an answer is one
        // the kernel still waits for, with the deadline it was given.
        if let Some(e) = self.engine.as_ref() {
            for (req, deadline) in e.read_deadlines() {
                let Some(r) = self.reads.get(&req) else {
                    let v = Violation::new(
                        "one reply",
                        format!("engine still serves {req:?}, already answered"),
                    );
                    return self.fail(v);
                };
                if deadline != r.start + timeout || deadline + r.jumped < self.now {
                    let v = Violation::new(
                        "read deadline",
                        format!("{req:?} has deadline {deadline:?} at {:?}", self.now),
                    );
                    return self.fail(v);
                }
            }
        }
        for (req, r) in &self.reads {
            if self.now > r.start + timeout + r.jumped {
                let v = Violation::new(
                    "read deadline",
                    format!(
                        "{req:?} started at {:?} is unanswered at {:?}",
                        r.start, self.now
                    ),
                );
                return self.fail(v);
            }
        }
        if self.phase == Phase::Verify
            && let Some(d) = self.clients.last().and_then(|c| c.deadline)
            && self.now > d
        {
            self.fail(Violation::new(
                "convergence",
                "the reads after the heal did not finish in time",
            ));
        }
    }

    /// At every reply: the bytes are those of a version the file had, the
    /// reply is on time, and an EIO is excused by some fault.
    pub(crate) fn check_reply(
        &mut self,
        rec: &ReadRecord,
        answer: &Answer,
    ) -> Result<(), Violation> {
        let timeout = self.swarm.engine_config().read_timeout;
        if self.now > rec.start + timeout + rec.jumped {
            return Err(Violation::new(
                "read deadline",
                "answered after its deadline",
            ));
        }
        match answer {
            Answer::Aborted => Ok(()),
            Answer::Data(data) => self.check_bytes(rec, data),
            Answer::Error(Errno::Io) if self.phase == Phase::Verify => Err(Violation::new(
                "liveness",
                format!(
                    "EIO for {:?} at {}+{} after every fault healed",
                    rec.ino, rec.offset, rec.size
                ),
            )),
            Answer::Error(Errno::Io) => {
                self.stats.eio_judged += 1;
                match self.eio_inexcusable(rec) {
                    Some(src) => Err(Violation::new(
                        "liveness (EIO)",
                        format!(
                            "EIO for {:?} at {}+{} (started {:?}) while its source {}:{} stayed reachable and unchanged",
                            rec.ino, rec.offset, rec.size, rec.start, src.origin, src.path
                        ),
                    )),
                    None => Ok(()),
                }
            }
            Answer::Error(Errno::NoEnt) if rec.first_sources.is_empty() => Ok(()),
            Answer::Error(e) => Err(Violation::new(
                "errno",
                format!("unexpected {e} for {:?}", rec.ino),
            )),
        }
    }

    fn check_bytes(&mut self, rec: &ReadRecord, data: &[u8]) -> Result<(), Violation> {
        let fits = |bytes: &[u8]| {
            let len = bytes.len() as u64;
            let start = rec.offset.min(len) as usize;
            let end = rec.offset.saturating_add(u64::from(rec.size)).min(len) as usize;
            data == &bytes[start..end]
        };
        let matched = rec.versions.iter().any(|v| {
            self.lib
                .history
                .get(&version_key(v))
                .is_some_and(|b| fits(b))
        });
        if matched {
            return Ok(());
        }
        let versions: Vec<String> = rec
            .versions
            .iter()
            .map(|v| format!("{}:{} size {}", v.origin, v.path, v.version.size))
            .collect();
        Err(Violation::new(
            "safety",
            format!(
                "read of {:?} at {}+{} returned {} bytes matching no version it had: {versions:?}",
                rec.ino,
                rec.offset,
                rec.size,
                data.len()
            ),
        ))
    }

    /// Pages handed to the kernel's page cache (`Io::Prime`) are read by
    /// every later reader without the engine: while the tree is still the
    /// one they were taken in, they must be exactly bytes of a version it
    /// shows for the file. Pages of an older tree are dropped again (the
    /// daemon tells the kernel), so they are not judged.
    pub(crate) fn check_prime(&mut self, ino: Ino, offset: u64, data: &[u8], epoch: u64) {
        let Some(e) = self.engine.as_ref() else {
            return;
        };
        if epoch != e.tree_epoch() {
            self.stats.primes_dropped += 1;
            return;
        }
        self.stats.primes += 1;
        let sources = e
            .tree()
            .file(ino)
            .map(|f| f.sources.clone())
            .unwrap_or_default();
        let end = offset.saturating_add(data.len() as u64);
        let matched = sources.iter().any(|v| {
            self.lib.history.get(&version_key(v)).is_some_and(|b| {
                usize::try_from(offset)
                    .ok()
                    .zip(usize::try_from(end).ok())
                    .and_then(|(from, to)| b.get(from..to))
                    == Some(data)
            })
        });
        if !matched {
            self.fail(Violation::new(
                "safety (pages)",
                format!(
                    "{} bytes at {offset} handed to the kernel for {ino:?} match no version the tree shows",
                    data.len()
                ),
            ));
        }
    }

    /// An EIO is a bug when one source of the file stayed reachable and
    /// unchanged through the read and long enough before it for earlier
    /// faults to have passed (the fault shadow), the tree did not change
    /// under the read, the cache disk had no fault and never went to
    /// passthrough, and the clock did not jump within the shadow either (a
    /// jump stalls every fetch in flight). Returns that source.
    pub(crate) fn eio_inexcusable<'r>(&self, rec: &'r ReadRecord) -> Option<&'r SourceFile> {
        if rec.tree_changed || rec.passthrough_seen || !rec.jumped.is_zero() {
            return None;
        }
        let config = self.swarm.engine_config();
        let since = before(rec.start, self.swarm.fault_shadow(&config));
        if !self.disk_clean_since(since) || !self.clock_steady_since(since) {
            return None;
        }
        rec.first_sources
            .iter()
            .find(|s| self.origin_clean_since(s.origin, since) && self.lib.is_current(s))
    }

    /// After every tree build: no source shown twice, names valid, every
    /// scanned track shown, and an unreachable origin's tracks kept.
    pub(crate) fn check_tree(&mut self, old: Option<&VirtualTree>) {
        if let Err(v) = self.tree_problems(old) {
            self.fail(v);
        }
    }

    fn tree_problems(&self, old: Option<&VirtualTree>) -> Result<(), Violation> {
        let Some(e) = self.engine.as_ref() else {
            return Ok(());
        };
        let tree = e.tree();
        let bad = |what: String| Violation::new("tree", what);
        let mut seen: BTreeMap<SourceKey, musicfs_core::Ino> = BTreeMap::new();
        for (ino, file) in tree.files() {
            if let Some(bytes) = &file.generated {
                if !file.sources.is_empty() || bytes.len() as u64 != file.size {
                    return Err(bad(format!("{ino:?} is generated but not only that")));
                }
                continue;
            }
            if file.sources.is_empty() {
                return Err(bad(format!("{ino:?} has no source")));
            }
            for s in &file.sources {
                if let Some(other) = seen.insert(key_of(s), ino) {
                    return Err(bad(format!(
                        "{}:{} shown twice, as {other:?} and {ino:?}",
                        s.origin, s.path
                    )));
                }
                if s.version.size != file.size {
                    return Err(bad(format!("{ino:?} has a source of another size")));
                }
            }
            let path = tree
                .path_of(ino)
                .ok_or_else(|| bad(format!("{ino:?} has no path")))?;
            if let Some(c) = path.split('/').find(|c| !is_valid_name(c)) {
                return Err(bad(format!("invalid name {c:?} in {path:?}")));
            }
            if tree.resolve(&path) != Some(ino) {
                return Err(bad(format!("{path:?} does not resolve to {ino:?}")));
            }
        }
        for entry in &self.disk.catalog {
            if matches!(entry.kind, musicfs_core::FileKind::Track(_))
                && !seen.contains_key(&key_of(&entry.source))
            {
                return Err(bad(format!(
                    "scanned track {}:{} is not in the tree",
                    entry.source.origin, entry.source.path
                )));
            }
        }
        if let Some(old) = old {
            for (_, file) in old.files() {
                for s in &file.sources {
                    if !self.net.is_reachable(s.origin) && !seen.contains_key(&key_of(s)) {
                        return Err(Violation::new(
                            "unreachable origin",
                            format!(
                                "{}:{} vanished from the tree while its origin was unreachable",
                                s.origin, s.path
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// After a restart: what was durable is loaded, and a listed chunk whose
    /// file exists has its id's bytes unless a fault damaged it (a missing
    /// file is allowed: reading it refetches).
    pub(crate) fn check_restart(&mut self) {
        if self.life == 0 {
            return;
        }
        let Some(e) = self.engine.as_ref() else {
            return;
        };
        let durable = self.disk.index.durable();
        let mut problems = Vec::new();
        let loaded: BTreeSet<_> = e.cache().iter().map(|(id, _)| id).collect();
        let total: u64 = durable.values().map(|&(len, _)| u64::from(len)).sum();
        let start_mark = e.cache().capacity_bytes() * u64::from(e.config().evict_start_pct) / 100;
        for (id, m) in e.cache().iter() {
            match durable.get(&id) {
                Some(&(len, _)) if len == m.len => {}
                _ => problems.push(format!("{id:?} is indexed but was never durably indexed")),
            }
            if let Ok(bytes) = self.disk.read(id)
                && !id.matches(bytes)
                && !self.damaged().contains(&id)
            {
                problems.push(format!("{id:?} has wrong bytes though no fault touched it"));
            }
        }
        if total <= start_mark && loaded.len() != durable.len() {
            problems.push(format!(
                "{} durable chunks, {} loaded",
                durable.len(),
                loaded.len()
            ));
        }
        for (key, m) in self.disk.manifests.durable() {
            let current = e.tree().files().any(|(_, f)| {
                f.sources
                    .iter()
                    .any(|s| &key_of(s) == key && s.version == m.version)
            });
            let kept = e.manifest(key);
            if current && kept != Some(m) {
                problems.push(format!(
                    "durable chunk map of {}:{} was not loaded",
                    key.0, key.1
                ));
            }
            if !current && kept.is_some() {
                problems.push(format!("stale chunk map of {}:{} was loaded", key.0, key.1));
            }
        }
        if let Some(p) = problems.into_iter().next() {
            self.fail(Violation::new("durability", p));
        }
    }

    /// After the heal and one rescan, the tree is the one the origins'
    /// contents give.
    pub(crate) fn check_converged(&mut self) {
        let truth: Vec<_> = self
            .lib
            .origins
            .iter()
            .flat_map(|o| o.borrow().catalog())
            .collect();
        let (want, _) = VirtualTree::build(&self.layout, &truth);
        let Some(e) = self.engine.as_ref() else {
            return self.fail(Violation::new("convergence", "no daemon after the heal"));
        };
        if e.tree() != &want {
            let v = Violation::new(
                "convergence",
                format!(
                    "tree has {} files, the origins' contents give {}",
                    e.tree().file_count(),
                    want.file_count()
                ),
            );
            self.fail(v);
        }
    }

    /// At the end: every read answered exactly once, nothing pinned.
    pub(crate) fn check_final(&mut self) {
        if let Some((req, r)) = self.reads.iter().next() {
            let v = Violation::new(
                "one reply",
                format!("{req:?} (started {:?}) never answered", r.start),
            );
            return self.fail(v);
        }
        if self.shell.exec.parked() != 0 {
            return self.fail(Violation::new("one reply", "replies still parked"));
        }
        if let Some(e) = self.engine.as_ref()
            && (e.reads_in_flight() != 0 || e.cache().total_pins() != 0)
        {
            let v = Violation::new(
                "pins",
                format!(
                    "{} reads in flight and {} pins after the last reply",
                    e.reads_in_flight(),
                    e.cache().total_pins()
                ),
            );
            self.fail(v);
        }
    }
}
