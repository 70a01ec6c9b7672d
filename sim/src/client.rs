//! Simulated FUSE clients: what the kernel asks of the engine on behalf of
//! programs using the mount.
//!
//! - A player resolves a track by path (lookups from the root), then reads
//!   it front to back in 128 KiB requests with one to three in flight, as
//!   the kernel's read-ahead does, now and then seeking.
//! - A seeker reads small random ranges, past EOF too.
//! - A burst opens many files at once and reads from each (a media scanner).
//! - A walker lists the whole tree with paged readdirs, looking up and
//!   stat-ing every entry.
//! - The verifier, after the faults heal, reads every file whole; every one
//!   of its reads must succeed.
//!
//! Each read is recorded with the versions it may return; its answer is
//! checked by [`crate::invariants`] when it arrives.

use crate::invariants::Violation;
use crate::swarm::{Stream, Swarm};
use crate::trace::{Ev, ReplyKind};
use crate::world::{Event, Phase, ReadRecord, World};
use musicfs_core::engine::ReqId;
use musicfs_core::fs::{Errno, NodeKind};
use musicfs_core::{Ino, Time};
use rand::Rng;
use std::time::Duration;

/// The kernel's largest read.
const KERNEL_READ_BYTES: u32 = 128 << 10;

/// How a FUSE read was answered.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    Data(Vec<u8>),
    Error(Errno),
    /// The daemon crashed; the kernel answered for it.
    Aborted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Player,
    Seeker,
    Burst,
    Walker,
    Verifier,
}

/// One simulated program.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub kind: Kind,
    file: Option<(Ino, u64)>,
    next_off: u64,
    pub outstanding: usize,
    depth: usize,
    reads_left: u32,
    files: Vec<Ino>,
    /// Wake-ups from before a crash are ignored.
    pub epoch: u32,
    wake_pending: bool,
    /// The verifier must be done by then.
    pub deadline: Option<Time>,
}

impl Client {
    fn new(kind: Kind) -> Client {
        Client {
            kind,
            file: None,
            next_off: 0,
            outstanding: 0,
            depth: 1,
            reads_left: 0,
            files: Vec::new(),
            epoch: 0,
            wake_pending: false,
            deadline: None,
        }
    }

    /// The chaos phase's clients.
    pub fn population(swarm: &Swarm, rng: &mut Stream) -> Vec<Client> {
        (0..swarm.clients)
            .map(|_| {
                let kind = match rng.random_range(0..20) {
                    0..8 => Kind::Player,
                    8..13 => Kind::Seeker,
                    13..16 => Kind::Burst,
                    _ => Kind::Walker,
                };
                Client::new(kind)
            })
            .collect()
    }

    /// The reader of every file, after the heal.
    pub fn verifier(files: Vec<Ino>, deadline: Time) -> Client {
        Client {
            files,
            depth: 2,
            deadline: Some(deadline),
            ..Client::new(Kind::Verifier)
        }
    }

    /// The daemon crashed: the program saw its reads fail and starts over.
    pub fn reset(&mut self) {
        self.file = None;
        self.outstanding = 0;
        self.epoch += 1;
        self.wake_pending = false;
    }
}

impl World {
    /// Wakes client `i` after `after`, unless a wake-up is already due.
    pub(crate) fn wake_client(&mut self, i: usize, after: Duration) {
        let c = &mut self.clients[i];
        if !c.wake_pending {
            c.wake_pending = true;
            let epoch = c.epoch;
            self.schedule(after, Event::ClientWake(i, epoch));
        }
    }

    pub(crate) fn client_wake(&mut self, i: usize, epoch: u32) {
        if self.clients[i].epoch != epoch {
            return;
        }
        self.clients[i].wake_pending = false;
        let kind = self.clients[i].kind;
        if self.engine.is_none() || (self.phase != Phase::Chaos && kind != Kind::Verifier) {
            return; // down (restart wakes everyone), or winding down
        }
        match kind {
            Kind::Player => self.play(i),
            Kind::Seeker => self.seek(i),
            Kind::Burst => self.burst(i),
            Kind::Walker => self.walk(i),
            Kind::Verifier => self.verify_next(i),
        }
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng_clients.random_range(lo..=hi))
    }

    fn play(&mut self, i: usize) {
        if self.clients[i].file.is_none() {
            let Some(f) = self.open_random() else { return };
            let depth = self.rng_clients.random_range(1..=3);
            let c = &mut self.clients[i];
            (c.file, c.next_off, c.depth) = (Some(f), 0, depth);
        }
        let Some((ino, size)) = self.clients[i].file else {
            return;
        };
        if self.rng_clients.random_bool(0.03) {
            self.clients[i].next_off = self.rng_clients.random_range(0..=size);
        }
        while self.clients[i].outstanding < self.clients[i].depth && self.clients[i].next_off < size
        {
            let off = self.clients[i].next_off;
            self.clients[i].next_off += u64::from(KERNEL_READ_BYTES);
            self.issue_read(i, ino, off, KERNEL_READ_BYTES);
        }
        if self.clients[i].next_off >= size && self.clients[i].outstanding == 0 {
            self.clients[i].file = None;
            let t = self.ms(50, 1_000);
            self.wake_client(i, t);
        }
    }

    fn seek(&mut self, i: usize) {
        if self.clients[i].outstanding > 0 {
            return;
        }
        if self.clients[i].file.is_none() || self.clients[i].reads_left == 0 {
            let Some(f) = self.open_random() else { return };
            let n = self.rng_clients.random_range(1..=6);
            (self.clients[i].file, self.clients[i].reads_left) = (Some(f), n);
        }
        let Some((ino, size)) = self.clients[i].file else {
            return;
        };
        self.clients[i].reads_left -= 1;
        let off = self.rng_clients.random_range(0..=size + (64 << 10));
        let len = self.rng_clients.random_range(1..=256u32 << 10);
        self.issue_read(i, ino, off, len);
    }

    fn burst(&mut self, i: usize) {
        if self.clients[i].outstanding > 0 {
            return;
        }
        if self.rng_clients.random_bool(0.5) {
            self.scan_folders(i);
            return;
        }
        for _ in 0..self.rng_clients.random_range(5..=30) {
            let Some((ino, size)) = self.open_random() else {
                return;
            };
            let off = self.rng_clients.random_range(0..=size);
            let len = self
                .rng_clients
                .random_range(4u32 << 10..=KERNEL_READ_BYTES);
            self.issue_read(i, ino, off, len);
        }
    }

    /// A media server's tag scan: lists a folder (the kernel then holds
    /// its files' inodes: `Engine::listed`), reads the head of each of its
    /// files at once, and goes on to the next folders of the walk.
    fn scan_folders(&mut self, i: usize) {
        let Some((start, _)) = self.open_random() else {
            return;
        };
        let Some(tree) = self.engine.as_ref().map(|e| e.tree_snapshot()) else {
            return;
        };
        let Some(mut folder) = tree.get(start).map(|n| n.parent) else {
            return;
        };
        for _ in 0..self.rng_clients.random_range(1..=3) {
            let files: Vec<Ino> = tree.files_in(folder).map(|(ino, _)| ino).take(30).collect();
            self.with_exec(|x, e, now| {
                e.listed(&files);
                x.drain(e, now);
            });
            for &ino in &files {
                self.issue_read(i, ino, 0, KERNEL_READ_BYTES);
            }
            match tree.next_folder(folder) {
                Some(next) => folder = next,
                None => break,
            }
        }
        // Now and then a tagger rewrites a file the scan comes to next (one
        // whose pages wait for the read-ahead) and a sync lands while that
        // read-ahead is under way: pages taken before it must not reach
        // the kernel as the new version's.
        let ahead: Vec<Ino> = self.shell.exec.primes_waiting().collect();
        if !ahead.is_empty() && self.rng_clients.random_bool(0.5) {
            let ino = ahead[self.rng_clients.random_range(0..ahead.len())];
            let source = tree.file(ino).and_then(|f| f.sources.first().cloned());
            let max = self.swarm.disk_latency_max_us;
            let t = Duration::from_micros(self.rng_clients.random_range(0..=max));
            if let Some(src) = source {
                self.schedule(t, Event::RetagAndSync(usize::from(src.origin.0), src.path));
            }
        }
    }

    /// Lists the whole tree through readdir, lookup and getattr.
    fn walk(&mut self, i: usize) {
        let limit = self.rng_clients.random_range(1..=8);
        if let Err(v) = self.walk_tree(limit) {
            self.violation = Some(v);
            return;
        }
        let t = self.ms(500, 4_000);
        self.wake_client(i, t);
    }

    fn walk_tree(&self, limit: usize) -> Result<(), Violation> {
        let Some(e) = self.engine.as_ref() else {
            return Ok(());
        };
        let bad = |what: String| Violation::new("readdir", what);
        let mut stack = vec![Ino::ROOT];
        while let Some(dir) = stack.pop() {
            e.opendir(dir)
                .map_err(|err| bad(format!("opendir {dir:?}: {err}")))?;
            let mut offset = 0;
            loop {
                let page = e
                    .readdir(dir, offset, limit)
                    .map_err(|err| bad(format!("readdir {dir:?}: {err}")))?;
                if page.is_empty() {
                    break;
                }
                for ent in page {
                    if ent.next_offset <= offset {
                        return Err(bad(format!("readdir {dir:?} went backwards at {offset}")));
                    }
                    offset = ent.next_offset;
                    if ent.name == "." || ent.name == ".." {
                        continue;
                    }
                    if !musicfs_core::naming::is_valid_name(&ent.name) {
                        return Err(bad(format!("invalid name {:?} in {dir:?}", ent.name)));
                    }
                    let attr = e.lookup(dir, ent.name.as_bytes()).map_err(|err| {
                        bad(format!("lookup of listed {:?} in {dir:?}: {err}", ent.name))
                    })?;
                    let stat = e
                        .getattr(ent.ino)
                        .map_err(|err| bad(format!("getattr {:?}: {err}", ent.ino)))?;
                    if attr.ino != ent.ino || stat.kind != ent.kind || attr != stat {
                        return Err(bad(format!(
                            "{:?}: readdir, lookup and getattr disagree",
                            ent.name
                        )));
                    }
                    if ent.kind == NodeKind::Dir {
                        stack.push(ent.ino);
                    }
                }
            }
        }
        Ok(())
    }

    fn verify_next(&mut self, i: usize) {
        loop {
            if self.clients[i].file.is_none() {
                let Some(ino) = self.clients[i].files.pop() else {
                    if self.clients[i].outstanding == 0 {
                        self.finish();
                    }
                    return;
                };
                let Some(e) = self.engine.as_ref() else {
                    return;
                };
                let Ok(attr) = e.getattr(ino) else {
                    self.violation = Some(Violation::new(
                        "tree",
                        format!("listed file {ino:?} has no attributes"),
                    ));
                    return;
                };
                (self.clients[i].file, self.clients[i].next_off) = (Some((ino, attr.size)), 0);
            }
            let Some((ino, size)) = self.clients[i].file else {
                return;
            };
            // Up to and including one read at EOF, which must come back empty.
            while self.clients[i].outstanding < self.clients[i].depth
                && self.clients[i].next_off <= size
            {
                let off = self.clients[i].next_off;
                self.clients[i].next_off += u64::from(KERNEL_READ_BYTES);
                self.issue_read(i, ino, off.min(size), KERNEL_READ_BYTES);
            }
            if self.clients[i].next_off > size && self.clients[i].outstanding == 0 {
                self.clients[i].file = None;
                continue;
            }
            return;
        }
    }

    /// Picks a random file of the tree and resolves it the way the kernel
    /// would: one lookup per path component from the root.
    fn open_random(&mut self) -> Option<(Ino, u64)> {
        let e = self.engine.as_ref()?;
        let n = e.tree().file_count();
        if n == 0 {
            return None;
        }
        let pick = self.rng_clients.random_range(0..n);
        let (ino, _) = e.tree().files().nth(pick)?;
        let path = e.tree().path_of(ino)?;
        let mut cur = Ino::ROOT;
        for comp in path.split('/') {
            match e.lookup(cur, comp.as_bytes()) {
                Ok(attr) => cur = attr.ino,
                Err(err) => {
                    self.violation = Some(Violation::new(
                        "tree",
                        format!("lookup of {path:?} failed at {comp:?}: {err}"),
                    ));
                    return None;
                }
            }
        }
        let attr = e.getattr(ino).ok()?;
        if cur != ino
            || attr.kind != NodeKind::File
            || e.open(ino, false).is_err()
            || e.open(ino, true) != Err(Errno::ReadOnly)
        {
            self.violation = Some(Violation::new(
                "tree",
                format!("{path:?} resolves to {cur:?}, listed as {ino:?}"),
            ));
            return None;
        }
        Some((ino, attr.size))
    }

    fn issue_read(&mut self, client: usize, ino: Ino, offset: u64, size: u32) {
        let now = self.now;
        let Some(e) = self.engine.as_mut() else {
            return;
        };
        let req = ReqId(self.next_req);
        self.next_req += 1;
        let sources = e
            .tree()
            .file(ino)
            .map(|f| f.sources.clone())
            .unwrap_or_default();
        let record = ReadRecord {
            client,
            ino,
            offset,
            size,
            start: now,
            versions: sources.clone(),
            first_sources: sources,
            tree_changed: false,
            passthrough_seen: e.in_passthrough(),
            jumped: Duration::ZERO,
        };
        self.reads.insert(req, record);
        self.clients[client].outstanding += 1;
        self.stats.reads += 1;
        self.trace.push(
            now,
            Ev::Read {
                req: req.0,
                client,
                ino: ino.0,
                offset,
                size,
            },
        );
        self.shell.exec.read(e, now, req, ino, offset, size);
    }

    /// A FUSE reply reaches its program.
    pub(crate) fn deliver(&mut self, req: ReqId, answer: Answer) {
        let Some(rec) = self.reads.remove(&req) else {
            self.violation = Some(Violation::new(
                "one reply",
                format!("{req:?} answered twice"),
            ));
            return;
        };
        let reply = match &answer {
            Answer::Data(d) => ReplyKind::Data(d.len()),
            Answer::Error(e) => ReplyKind::Error(e.code()),
            Answer::Aborted => ReplyKind::Aborted,
        };
        self.push(Ev::Reply { req: req.0, reply });
        match &answer {
            Answer::Data(_) => self.stats.reads_ok += 1,
            _ => self.stats.reads_err += 1,
        }
        if let Err(v) = self.check_reply(&rec, &answer) {
            self.violation.get_or_insert(v);
        }
        let i = rec.client;
        let c = &mut self.clients[i];
        c.outstanding = c.outstanding.saturating_sub(1);
        let failed = !matches!(answer, Answer::Data(_));
        let t = match c.kind {
            Kind::Player => {
                if failed && self.rng_clients.random_bool(0.5) {
                    self.clients[i].file = None;
                }
                self.ms(0, 80)
            }
            Kind::Seeker => self.ms(5, 300),
            Kind::Burst if c.outstanding == 0 => self.ms(300, 3_000),
            Kind::Burst | Kind::Walker => return,
            Kind::Verifier => Duration::ZERO,
        };
        if !matches!(answer, Answer::Aborted) {
            self.wake_client(i, t);
        }
    }
}
