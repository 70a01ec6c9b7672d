//! The engine's read path, driven by an in-memory io-shell: every read must
//! return exactly the origin's bytes, through fetches, evictions, corrupt
//! chunks, a failing disk and an unreachable origin.

use musicfs_core::catalog::{CatalogEntry, FileKind, SourceFile};
use musicfs_core::engine::{
    Cached, ChunkFault, Config, DiskFault, Engine, FetchError, Health, Notice, Output, ReqId,
    cut_run,
};
use musicfs_core::exec::{Exec, ExecConfig, Io, OpId, Purpose, Reply};
use musicfs_core::fs::Errno;
use musicfs_core::tree::VirtualTree;
use musicfs_core::{
    ChunkId, FileVersion, Ino, Kept, Layout, Manifest, OriginId, OriginPath, Time, TrackTags,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[derive(Default)]
struct World {
    /// Files by (origin, path).
    origin: BTreeMap<(u16, Vec<u8>), Vec<u8>>,
    /// Origins that are down.
    down: std::collections::BTreeSet<u16>,
    disk: BTreeMap<ChunkId, Vec<u8>>,
    replies: BTreeMap<ReqId, Result<Vec<u8>, Errno>>,
    disk_full: bool,
    /// Chunk files read.
    chunk_reads: u64,
    /// Fetches the origin answers later (to test timeouts and concurrency).
    held: Vec<(OpId, Io)>,
    hold_fetches: bool,
    fetched_bytes: u64,
    fetches_by_origin: [u64; 4],
    passthroughs_by_origin: [u64; 4],
    /// Origin reads ahead of streams answered straight from their origin.
    read_aheads_by_origin: [u64; 4],
    /// Reads ahead the origin answers later.
    held_read_aheads: Vec<Io>,
    hold_read_aheads: bool,
    /// Writes the disk finishes later (a slow disk).
    held_writes: Vec<Io>,
    hold_writes: bool,
    /// Chunk bytes whose write finished.
    written_bytes: u64,
    /// Chunk reads the disk answers later (a slow cache disk), by op.
    held_chunk_reads: Vec<(OpId, Vec<ChunkId>)>,
    hold_chunk_reads: bool,
    /// Pages handed to the kernel: file, offset, bytes, tree epoch.
    primes: Vec<(Ino, u64, Vec<u8>, u64)>,
}

struct Harness {
    engine: Engine,
    exec: Exec,
    world: World,
    now: Time,
    next_req: u64,
}

/// A track of "Artist"; `title` may name its album first (`Other/Title`),
/// else it is on "Album".
fn track(origin: u16, path: &str, title: &str, size: u64) -> CatalogEntry {
    let (album, title) = title.split_once('/').unwrap_or(("Album", title));
    CatalogEntry {
        source: SourceFile {
            origin: OriginId(origin),
            path: OriginPath::new(path.as_bytes().to_vec()),
            version: FileVersion {
                size,
                mtime_ns: 1_700_000_000_000_000_000,
                token: None,
            },
        },
        kind: FileKind::Track(TrackTags {
            title: Some(title.into()),
            artist: Some("Artist".into()),
            album: Some(album.into()),
            track: Some(1),
            ..Default::default()
        }),
    }
}

impl Harness {
    fn new(files: &[(&str, usize)], config: Config) -> Harness {
        Harness::with_origins(files, 1, config)
    }

    /// Every file in each of `origins` origins (mirrors of each other).
    fn with_origins(files: &[(&str, usize)], origins: u16, config: Config) -> Harness {
        let mut world = World::default();
        let mut catalog = Vec::new();
        for origin in 0..origins {
            for (i, (name, size)) in files.iter().enumerate() {
                let path = format!("{name}.flac");
                world.origin.insert(
                    (origin, path.clone().into_bytes()),
                    noise(*size, i as u64 + 1),
                );
                catalog.push(track(origin, &path, name, *size as u64));
            }
        }
        let (tree, _) = VirtualTree::build(&Layout::default_layout(), &catalog);
        let exec = Exec::new(ExecConfig {
            // Uneven pieces, as a network would deliver them.
            piece_bytes: 100_000,
            // No memory: every serve reads (and checks) the disk.
            memory_bytes: 0,
            ..ExecConfig::for_engine(&config)
        });
        let engine = Engine::new(config, tree, Vec::new(), Vec::new(), 42);
        Harness {
            engine,
            exec,
            world,
            now: Time::ZERO,
            next_req: 1,
        }
    }

    /// [`Harness::new`], with what a first scan kept of each file: its
    /// first `head` and last `tail` bytes, cut and on disk.
    fn with_kept(files: &[(&str, usize)], head: usize, tail: usize, config: Config) -> Harness {
        let mut h = Harness::new(files, config.clone());
        let mut manifests = Vec::new();
        let mut chunks = Vec::new();
        for (key, bytes) in &h.world.origin {
            let size = bytes.len();
            let source = track(key.0, std::str::from_utf8(&key.1).unwrap(), "", size as u64).source;
            let mut m = Manifest::new(source.version.clone());
            let mut cut = cut_run(0, &bytes[..head]);
            cut.extend(cut_run((size - tail) as u64, &bytes[size - tail..]));
            for c in cut {
                m.insert(c.offset, c.extent()).unwrap();
                chunks.push((c.id, c.data.len() as u32, 0));
                h.world.disk.insert(c.id, c.data.to_vec());
            }
            m.keep(Kept {
                head: head as u64,
                tail: tail as u64,
            });
            manifests.push(((source.origin, source.path), m));
        }
        let tree = h.engine.tree().clone();
        h.engine = Engine::new(config, tree, manifests, chunks, 42);
        h
    }

    /// The executor, with a memory cache of `bytes`.
    fn with_memory(mut self, bytes: u64) -> Harness {
        self.exec = Exec::new(ExecConfig {
            memory_bytes: bytes,
            ..self.exec.config().clone()
        });
        self
    }

    fn ino(&self, title: &str) -> Ino {
        let (album, title) = title.split_once('/').unwrap_or(("Album", title));
        self.engine
            .tree()
            .resolve(&format!("Artist/{album}/01 - {title}.flac"))
            .expect("track in tree")
    }

    fn origin_bytes(&self, title: &str) -> &[u8] {
        &self.world.origin[&(0, format!("{title}.flac").into_bytes())]
    }

    fn set_down(&mut self, origin: u16, down: bool) {
        if down {
            self.world.down.insert(origin);
        } else {
            self.world.down.remove(&origin);
        }
    }

    fn start_read(&mut self, ino: Ino, offset: u64, size: u32) -> ReqId {
        let req = ReqId(self.next_req);
        self.next_req += 1;
        self.exec
            .read(&mut self.engine, self.now, req, ino, offset, size);
        req
    }

    fn read(&mut self, title: &str, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let ino = self.ino(title);
        let req = self.start_read(ino, offset, size);
        self.run_until_replied(req)
    }

    fn run_until_replied(&mut self, req: ReqId) -> Result<Vec<u8>, Errno> {
        let mut reply = None;
        self.run_clock_until("read never completed", |h| {
            reply = h.world.replies.remove(&req);
            reply.is_some()
        });
        reply.expect("replied")
    }

    /// Carries out what is asked and moves the clock to each next timer
    /// until `done`; panics with `what` if it never is.
    fn run_clock_until(&mut self, what: &str, mut done: impl FnMut(&mut Harness) -> bool) {
        for _ in 0..10_000 {
            self.pump();
            if done(self) {
                return;
            }
            let next = self
                .engine
                .poll_timeout()
                .expect("something waiting needs a timer");
            assert!(next >= self.now, "timer in the past would spin");
            self.now = next;
            self.exec.handle_timeout(&mut self.engine, self.now);
        }
        panic!("{what}");
    }

    /// Carries out every I/O the executor asks for, at once (origin reads
    /// of fetches are held while `hold_fetches`).
    fn pump(&mut self) {
        self.exec.drain(&mut self.engine, self.now);
        while let Some(io) = self.exec.poll_io() {
            self.execute(io);
        }
    }

    fn execute(&mut self, io: Io) {
        let (e, now) = (&mut self.engine, self.now);
        match io {
            Io::Reply { req, reply } => {
                let r = match reply {
                    Reply::Error(errno) => Err(errno),
                    other => Ok(other.assemble()),
                };
                assert!(self.world.replies.insert(req, r).is_none(), "one reply");
            }
            Io::OriginRead {
                op,
                purpose: Purpose::Fetch(_),
                ..
            } if self.world.hold_fetches => self.world.held.push((op, io)),
            Io::OriginRead {
                purpose: Purpose::ReadAhead,
                ..
            } if self.world.hold_read_aheads => self.world.held_read_aheads.push(io),
            Io::OriginRead {
                op,
                source,
                offset,
                len,
                purpose,
                ..
            } => {
                let origin = usize::from(source.origin.0);
                match purpose {
                    Purpose::Fetch(_) => self.world.fetches_by_origin[origin] += 1,
                    Purpose::Passthrough(_) => self.world.passthroughs_by_origin[origin] += 1,
                    Purpose::ReadAhead => self.world.read_aheads_by_origin[origin] += 1,
                }
                let key = (source.origin.0, source.path.as_bytes().to_vec());
                let result = if self.world.down.contains(&source.origin.0) {
                    Err(FetchError::Unavailable("down".into()))
                } else {
                    match self.world.origin.get(&key) {
                        None => Err(FetchError::NotFound),
                        Some(bytes) => {
                            let end = (offset + u64::from(len)).min(bytes.len() as u64);
                            let start = offset.min(end);
                            Ok(bytes[start as usize..end as usize].to_vec())
                        }
                    }
                };
                if let (Ok(data), Purpose::Fetch(_)) = (&result, purpose) {
                    self.world.fetched_bytes += data.len() as u64;
                }
                self.exec.origin_read_done(e, now, op, result);
            }
            Io::AbortOriginRead(op) => {
                self.world.held.retain(|(o, _)| *o != op);
                self.world
                    .held_read_aheads
                    .retain(|io| !matches!(io, Io::OriginRead { op: o, .. } if *o == op));
            }
            Io::CheckOrigin { origin, check, .. } => {
                let result = if self.world.down.contains(&origin.0) {
                    Err("down".to_string())
                } else {
                    Ok(())
                };
                self.exec.check_done(e, now, origin, check, result);
            }
            Io::ReadChunks { op, ids } if self.world.hold_chunk_reads => {
                self.world.held_chunk_reads.push((op, ids));
            }
            Io::ReadChunks { op, ids } => {
                self.world.chunk_reads += ids.len() as u64;
                let results = ids
                    .iter()
                    .map(|id| {
                        let bytes = self.world.disk.get(id).ok_or(ChunkFault::Missing)?;
                        Ok(Arc::from(&bytes[..]))
                    })
                    .collect();
                self.exec.chunks_read(e, now, op, results);
            }
            Io::WriteChunks { .. } if self.world.hold_writes => self.world.held_writes.push(io),
            Io::WriteChunks { op, chunks } => {
                self.world.written_bytes += chunks.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
                let results = chunks
                    .into_iter()
                    .map(|(id, data)| {
                        if self.world.disk_full {
                            Err(DiskFault::NoSpace)
                        } else {
                            self.world.disk.insert(id, data.to_vec());
                            Ok(())
                        }
                    })
                    .collect();
                self.exec.chunks_written(e, now, op, results);
            }
            Io::IndexChunks { op, .. } => self.exec.chunks_indexed(e, now, op, Ok(())),
            Io::DeleteChunks { op, ids } => {
                for id in ids {
                    self.world.disk.remove(&id);
                }
                self.exec.chunks_deleted(e, now, op);
            }
            Io::ProbeDisk => {
                let ok = !self.world.disk_full;
                self.exec.disk_probed(e, now, ok);
            }
            Io::Prime {
                ino,
                offset,
                slices,
                epoch,
            } => {
                let bytes = Reply::Slices(slices).assemble();
                self.world.primes.push((ino, offset, bytes, epoch));
            }
            Io::Notice(_) => {}
        }
    }

    /// Lets the disk finish the oldest write it held; false if none was.
    fn finish_held_write(&mut self) -> bool {
        if self.world.held_writes.is_empty() {
            return false;
        }
        let io = self.world.held_writes.remove(0);
        let hold = std::mem::replace(&mut self.world.hold_writes, false);
        self.execute(io);
        self.world.hold_writes = hold;
        self.pump();
        true
    }

    /// Lets the disk answer the chunk reads it held, and any asked for
    /// meanwhile.
    /// Chunks in the disk reads held so far ([`World::hold_chunk_reads`]).
    fn held_chunks(&self) -> usize {
        self.world
            .held_chunk_reads
            .iter()
            .map(|(_, ids)| ids.len())
            .sum()
    }

    fn release_chunk_reads(&mut self) {
        self.world.hold_chunk_reads = false;
        for (op, ids) in std::mem::take(&mut self.world.held_chunk_reads) {
            self.execute(Io::ReadChunks { op, ids });
        }
        self.pump();
    }

    /// Lets the origin answer the reads ahead it held.
    fn release_read_aheads(&mut self) {
        self.world.hold_read_aheads = false;
        for io in std::mem::take(&mut self.world.held_read_aheads) {
            self.execute(io);
        }
        self.pump();
    }

    /// Lets the origin answer the fetch requests it held.
    fn release_held(&mut self) {
        self.world.hold_fetches = false;
        // Answers in the reverse order: the executor must still hand the
        // bytes to the cutter in order.
        for (_, io) in std::mem::take(&mut self.world.held).into_iter().rev() {
            self.execute(io);
        }
        self.pump();
    }
}

const MIB: usize = 1 << 20;

/// A configuration whose `origins` fill behind their readers.
fn fill_behind(origins: &[u16]) -> Config {
    Config {
        fill_behind_origins: origins.iter().copied().map(OriginId).collect(),
        ..Config::default()
    }
}

/// A configuration whose `origins` are `cache=off`.
fn uncached(origins: &[u16]) -> Config {
    Config {
        uncached_origins: origins.iter().copied().map(OriginId).collect(),
        ..Config::default()
    }
}

#[test]
fn reads_return_the_origin_bytes_everywhere() {
    let mut h = Harness::new(
        &[
            ("Empty", 0),
            ("Small", 1000),
            ("Mid", 300_000),
            ("Big", 5 * MIB + 7),
        ],
        Config::default(),
    );
    for title in ["Empty", "Small", "Mid", "Big"] {
        let want = h.origin_bytes(title).to_vec();
        for &(off, len) in &[
            (0u64, 4096u32),
            (1, 131072),
            (250_000, 70_000),
            (5 * MIB as u64, 1 << 20),
        ] {
            let got = h.read(title, off, len).unwrap();
            let s = (off as usize).min(want.len());
            let e = (off as usize + len as usize).min(want.len());
            assert_eq!(got, want[s..e], "{title} at {off}+{len}");
        }
    }
    // A whole sequential read, as `cat` would do it.
    let want = h.origin_bytes("Big").to_vec();
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.extend(h.read("Big", got.len() as u64, 128 * 1024).unwrap());
    }
    assert_eq!(got, want);
    assert!(
        h.read("Big", want.len() as u64, 4096).unwrap().is_empty(),
        "EOF"
    );
    assert_eq!(h.engine.reads_in_flight(), 0);
    assert_eq!(h.engine.cache().total_pins(), 0, "every pin released");
}

/// The kernel's read-ahead requests (several in flight, taken by two FUSE
/// threads; 1 MiB each where the mount's read-ahead was widened) reach the
/// engine a little out of order. That is
/// still a sequential reader: its fetches grow to the engine's whole
/// read-ahead window instead of starting over at every swap.
#[test]
fn reads_a_little_out_of_order_still_grow_the_read_ahead() {
    let fetches = |swapped: bool| {
        let mut h = Harness::new(&[("Big", 48 * MIB)], Config::default());
        let want = h.origin_bytes("Big").to_vec();
        for pair in 0..24 {
            let order = if swapped {
                [2 * pair + 1, 2 * pair]
            } else {
                [2 * pair, 2 * pair + 1]
            };
            for i in order {
                let off = i * MIB;
                let got = h.read("Big", off as u64, MIB as u32).unwrap();
                assert_eq!(got, want[off..off + MIB], "at {off}");
            }
        }
        h.engine.stats().fetches
    };
    let (in_order, swapped) = (fetches(false), fetches(true));
    assert!(
        swapped <= in_order + 2,
        "{swapped} fetches for pairs of reads swapped, {in_order} in order"
    );
}

#[test]
fn a_seek_into_an_uncached_file_fetches_near_the_seek_not_the_whole_file() {
    let mut h = Harness::new(&[("Big", 64 * MIB)], Config::default());
    let want = h.origin_bytes("Big").to_vec();
    let off = 40 * MIB as u64;
    let got = h.read("Big", off, 4096).unwrap();
    assert_eq!(got, want[off as usize..off as usize + 4096]);
    assert!(
        h.world.fetched_bytes < 4 * MIB as u64,
        "fetched {} bytes for one 4 KiB read at 40 MiB",
        h.world.fetched_bytes
    );
    // Then the start of the file, and the seek region again: all correct.
    assert_eq!(h.read("Big", 0, 65536).unwrap(), want[..65536]);
    assert_eq!(
        h.read("Big", off - 10, 20).unwrap(),
        want[off as usize - 10..off as usize + 10]
    );
}

#[test]
fn a_cached_read_needs_no_origin_and_survives_it_going_down() {
    let mut h = Harness::new(&[("Song", 2 * MIB)], Config::default());
    let want = h.origin_bytes("Song").to_vec();
    assert_eq!(h.read("Song", 0, 2 * MIB as u32).unwrap(), want);
    h.set_down(0, true);
    assert_eq!(h.read("Song", 1000, 5000).unwrap(), want[1000..6000]);
    assert!(h.engine.stats().reads_hit >= 1);
}

#[test]
fn corrupt_and_missing_chunks_are_refetched_and_verified() {
    let mut h = Harness::new(&[("Song", 3 * MIB)], Config::default());
    let want = h.origin_bytes("Song").to_vec();
    assert_eq!(h.read("Song", 0, 3 * MIB as u32).unwrap(), want);
    let ids: Vec<ChunkId> = h.world.disk.keys().copied().collect();
    for (i, id) in ids.iter().enumerate() {
        if i % 2 == 0 {
            h.world.disk.get_mut(id).unwrap()[7] ^= 0x40;
        } else if i % 3 == 0 {
            h.world.disk.remove(id);
        }
    }
    assert_eq!(h.read("Song", 0, 3 * MIB as u32).unwrap(), want);
    assert!(h.engine.stats().chunks_dropped > 0);
    assert!(
        h.world.disk.iter().all(|(id, b)| id.matches(b)),
        "disk healed"
    );
}

#[test]
fn an_unreachable_origin_gives_eio_within_the_read_timeout() {
    let config = Config {
        read_timeout: Duration::from_secs(30),
        ..Config::default()
    };
    let mut h = Harness::new(&[("Song", MIB)], config);
    h.set_down(0, true);
    let start = h.now;
    assert_eq!(h.read("Song", 0, 4096), Err(Errno::Io));
    assert!(h.now.saturating_since(start) <= Duration::from_secs(30));
    // Once it is back, reads work again (after the pause).
    h.set_down(0, false);
    h.now += Duration::from_secs(10);
    h.engine.handle_timeout(h.now);
    h.pump();
    let want = h.origin_bytes("Song").to_vec();
    assert_eq!(h.read("Song", 0, 4096).unwrap(), want[..4096]);
}

#[test]
fn a_silent_origin_gives_eio_at_the_deadline() {
    let mut h = Harness::new(&[("Song", MIB)], Config::default());
    h.world.hold_fetches = true;
    let start = h.now;
    assert_eq!(h.read("Song", 0, 4096), Err(Errno::Io));
    let waited = h.now.saturating_since(start);
    assert!(waited <= Duration::from_secs(30), "waited {waited:?}");
}

#[test]
fn what_a_scan_kept_is_read_without_the_origin_and_evicted_last() {
    let config = Config {
        cache_capacity_bytes: 3 * MIB as u64,
        ..Config::default()
    };
    let (head, tail) = (256 * 1024, 8192);
    let mut h = Harness::with_kept(&[("A", 4 * MIB), ("B", 4 * MIB)], head, tail, config);
    let a = h.origin_bytes("A").to_vec();
    // A tag scan: the first 128 KiB, then the rest of the kept head (the
    // kernel reading ahead), then the last 4 KiB. Nothing is fetched, not
    // even ahead of the reader.
    assert_eq!(h.read("A", 0, 128 * 1024).unwrap(), a[..128 * 1024]);
    assert_eq!(
        h.read("A", 128 * 1024, 128 * 1024).unwrap(),
        a[128 * 1024..head]
    );
    let size = a.len() as u64;
    assert_eq!(h.read("A", size - 4096, 4096).unwrap(), a[a.len() - 4096..]);
    h.pump();
    assert_eq!(h.world.fetches_by_origin[0], 0, "no origin request");
    // With the origin down too.
    h.set_down(0, true);
    assert_eq!(
        h.read("B", 0, 64 * 1024).unwrap(),
        h.origin_bytes("B")[..64 * 1024]
    );
    h.set_down(0, false);
    // Past the kept head, the origin is asked.
    assert_eq!(
        h.read("A", head as u64, 128 * 1024).unwrap(),
        a[head..head + 128 * 1024]
    );
    assert!(h.world.fetches_by_origin[0] > 0);
    // Reading both files whole through a 3 MiB cache evicts, but the kept
    // chunks go last: every one of them is still cached after.
    for title in ["A", "B"] {
        let want = h.origin_bytes(title).to_vec();
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.extend(h.read(title, got.len() as u64, 256 * 1024).unwrap());
        }
        assert_eq!(got, want);
    }
    assert!(h.engine.stats().chunks_evicted > 0, "the cache was full");
    for title in ["A", "B"] {
        let key = (
            OriginId(0),
            OriginPath::new(format!("{title}.flac").into_bytes()),
        );
        let m = h.engine.manifest(&key).expect("manifest").clone();
        let kept: Vec<_> = m.kept_extents().collect();
        assert!(!kept.is_empty());
        for (offset, e) in kept {
            assert!(
                h.engine.cache().contains(e.id),
                "{title}: kept chunk at {offset} evicted"
            );
        }
    }
}

#[test]
fn a_scan_finds_the_kept_bytes_of_the_next_files_and_folders_in_memory() {
    let (head, tail) = (192 * 1024, 8192);
    let later = ["B", "C", "D", "Second/E", "Second/F", "Third/G"];
    let mut files = vec![("A", MIB)];
    files.extend(later.iter().map(|&t| (t, MIB)));
    let mut h = Harness::with_kept(&files, head, tail, Config::default()).with_memory(16 << 20);
    // C's kept head is damaged on disk: read ahead, it must not reach
    // memory, and its read must still return the origin's bytes.
    let c_key = (OriginId(0), OriginPath::new(b"C.flac".to_vec()));
    let c_first = h
        .engine
        .manifest(&c_key)
        .unwrap()
        .kept_extents()
        .next()
        .unwrap()
        .1
        .id;
    h.world.disk.get_mut(&c_first).unwrap()[7] ^= 1;

    let scan = |h: &mut Harness, title: &str| {
        let want = h.origin_bytes(title).to_vec();
        assert_eq!(
            h.read(title, 0, 128 * 1024).unwrap(),
            want[..128 * 1024],
            "{title}"
        );
        let size = want.len() as u64;
        assert_eq!(
            h.read(title, size - 4096, 4096).unwrap(),
            want[want.len() - 4096..],
            "{title}"
        );
    };
    let kept_chunks = |h: &Harness, title: &str| {
        let key = (
            OriginId(0),
            OriginPath::new(format!("{title}.flac").into_bytes()),
        );
        h.engine.manifest(&key).unwrap().kept_extents().count() as u64
    };
    // The scan's first read (A's): A's own chunks, under its first 128 KiB
    // and last 4 KiB, then every kept chunk of the files after it, in this
    // folder and the next ones.
    scan(&mut h, "A");
    h.pump();
    let a = {
        let m = h
            .engine
            .manifest(&(OriginId(0), OriginPath::new(b"A.flac".to_vec())))
            .unwrap();
        let size = MIB as u64;
        (m.overlapping(0..128 * 1024).count() + m.overlapping(size - 4096..size).count()) as u64
    };
    let ahead: u64 = later.iter().map(|t| kept_chunks(&h, t)).sum();
    assert_eq!(h.world.chunk_reads, a + ahead);
    // The later files are answered from memory: no chunk file is read
    // again, no origin asked.
    let after_a = h.world.chunk_reads;
    for title in ["B", "D", "Second/E", "Second/F", "Third/G"] {
        scan(&mut h, title);
    }
    assert_eq!(h.world.chunk_reads, after_a);
    assert_eq!(h.world.fetches_by_origin[0], 0);
    // C's damaged chunk was not kept: its read goes to the disk, finds the
    // damage, and is answered from a verified fetch.
    scan(&mut h, "C");
    assert!(h.world.chunk_reads > after_a);
    assert!(
        h.world.fetches_by_origin[0] > 0,
        "C's damaged chunk, fetched again"
    );
    // Each file is read ahead once: the reads above read nothing more.
    let before = h.world.chunk_reads;
    for title in later {
        scan(&mut h, title);
    }
    assert_eq!(h.world.chunk_reads, before);
}

/// Files of 1 MiB of which a first scan kept a head and a tail that end
/// off the kernel's pages, all in one folder.
fn scanned_folder() -> (Harness, Vec<&'static str>) {
    let titles = vec!["A", "B", "C", "D", "E", "F"];
    let files: Vec<(&str, usize)> = titles.iter().map(|&t| (t, MIB)).collect();
    let h = Harness::with_kept(&files, 10_000, 6_000, Config::default()).with_memory(16 << 20);
    (h, titles)
}

/// The files primed so far, by title, and every prime checked: whole
/// pages of the origin's bytes (or up to the end of the file).
fn primed(h: &Harness, titles: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (ino, offset, bytes, _) in &h.world.primes {
        let title = titles
            .iter()
            .find(|t| h.ino(t) == *ino)
            .expect("a primed file is a track");
        let want = h.origin_bytes(title);
        let end = offset + bytes.len() as u64;
        assert!(offset.is_multiple_of(4096), "{title}: starts off a page");
        assert!(
            end.is_multiple_of(4096) || end == want.len() as u64,
            "{title}: ends off a page"
        );
        assert!(
            bytes[..] == want[*offset as usize..end as usize],
            "{title} at {offset}"
        );
        out.push(format!("{title}@{offset}+{}", bytes.len()));
    }
    out
}

#[test]
fn a_scans_read_ahead_hands_the_kernel_whole_pages_but_the_middle_files() {
    let (mut h, titles) = scanned_folder();
    // The kernel lists the folder: nothing was read ahead, nothing to hand.
    let inos: Vec<Ino> = titles.iter().map(|t| h.ino(t)).collect();
    h.engine.listed(&inos);
    h.pump();
    assert!(h.world.primes.is_empty());
    // The scan reads A: B to F are read ahead, and their heads (10,000
    // bytes: two whole pages) and tails (6,000 bytes to the end: from the
    // next page on) go to the kernel, all but D's, the window's middle,
    // whose read moves the window on.
    h.read("A", 0, 4096).unwrap();
    h.pump();
    let tail = (MIB - 4096) as u64;
    let want: Vec<String> = ["B", "C", "E", "F"]
        .iter()
        .flat_map(|t| [format!("{t}@0+8192"), format!("{t}@{tail}+4096")])
        .collect();
    assert_eq!(primed(&h, &titles), want);
    // A later listing hands over again what is in memory (the kernel may
    // have dropped it), still not the middle file's.
    h.world.primes.clear();
    h.engine.listed(&inos);
    h.pump();
    let again = primed(&h, &titles);
    assert!(want.iter().all(|p| again.contains(p)), "{again:?}");
    assert!(!again.iter().any(|p| p.starts_with("D@")), "{again:?}");
}

#[test]
fn pages_waiting_for_the_read_ahead_are_dropped_by_a_read_of_them_or_a_tree_swap() {
    let (mut h, titles) = scanned_folder();
    h.world.hold_chunk_reads = true;
    let a = h.ino("A");
    let req = h.start_read(a, 0, 4096);
    h.pump();
    // A read of B's head while its pages wait: the kernel fills them
    // itself; only B's tail is still handed over.
    let b = h.ino("B");
    let b_req = h.start_read(b, 0, 128 * 1024);
    h.world.hold_chunk_reads = false;
    h.release_chunk_reads();
    h.run_until_replied(req).unwrap();
    h.run_until_replied(b_req).unwrap();
    let got = primed(&h, &titles);
    assert!(!got.contains(&"B@0+8192".to_string()), "{got:?}");
    assert!(got.contains(&format!("B@{}+4096", MIB - 4096)), "{got:?}");
    assert!(got.contains(&"C@0+8192".to_string()), "{got:?}");

    // A fresh window whose read-ahead ends after a tree swap: none of its
    // pages go to the kernel (they may be of the old version).
    let (mut h, _) = scanned_folder();
    h.world.hold_chunk_reads = true;
    let req = h.start_read(h.ino("A"), 0, 4096);
    h.pump();
    let tree = h.engine.tree().clone();
    h.engine.replace_tree(h.now, tree);
    h.world.hold_chunk_reads = false;
    h.release_chunk_reads();
    h.run_until_replied(req).unwrap();
    assert!(h.world.primes.is_empty(), "{:?}", h.world.primes.len());
}

#[test]
fn a_scans_read_ahead_goes_to_the_disk_at_once_whatever_the_streams_limit() {
    // Files of 256 KiB of which a first scan kept 64 KiB, read there.
    const READ: u32 = 64 * 1024;
    let (head, tail) = (READ as usize, 4096);
    let titles: Vec<String> = (0..12).map(|i| format!("T{i:02}")).collect();
    let files: Vec<(&str, usize)> = titles.iter().map(|t| (t.as_str(), MIB / 4)).collect();
    let mut h = Harness::with_kept(&files, head, tail, Config::default()).with_memory(16 << 20);
    h.exec = Exec::new(ExecConfig {
        warm_reads_in_flight: 2,
        ..h.exec.config().clone()
    });
    h.world.hold_chunk_reads = true;
    // The first file's read: its own chunks, and the read-ahead of the
    // eleven files after it, a run for each head and each tail, all on the
    // disk at once: a scan that caught up with a queue would wait for the
    // disk file by file.
    let first = h.start_read(h.ino("T00"), 0, READ);
    h.pump();
    assert_eq!(
        h.world.held_chunk_reads.len(),
        1 + 11 * 2,
        "{:?}",
        h.world.held_chunk_reads
    );
    // The next file's read, while the read-ahead is still reading it,
    // waits for it (and is counted as such) rather than read it again.
    assert_eq!(h.exec.stats().waited_for_read_ahead, 0);
    let second = h.start_read(h.ino("T01"), 0, READ);
    h.pump();
    assert_eq!(
        h.world.held_chunk_reads.len(),
        1 + 11 * 2,
        "read nothing itself"
    );
    assert_eq!(h.exec.stats().waited_for_read_ahead, 1);
    h.release_chunk_reads();
    assert_eq!(
        h.run_until_replied(first).unwrap(),
        h.origin_bytes("T00")[..READ as usize]
    );
    assert_eq!(
        h.run_until_replied(second).unwrap(),
        h.origin_bytes("T01")[..READ as usize]
    );
    let reads = h.world.chunk_reads;
    for t in &titles[1..] {
        let want = h.origin_bytes(t)[..READ as usize].to_vec();
        assert_eq!(h.read(t, 0, READ).unwrap(), want, "{t}");
    }
    assert_eq!(h.world.chunk_reads, reads, "every file was read ahead once");
    assert_eq!(
        h.exec.stats().waited_for_read_ahead,
        1,
        "the read-ahead had read the others before their reads came"
    );
    assert_eq!(h.world.fetches_by_origin[0], 0);
}

#[test]
fn a_streams_read_ahead_keeps_few_disk_reads_in_flight_and_never_makes_its_reader_wait_behind_it() {
    // A cached 12 MiB song whose bytes are on the cache disk only; its
    // reader's read-ahead reaches 4 MiB past the read, in runs of a MiB.
    const READ: u32 = 128 * 1024;
    let config = Config {
        readahead_min_bytes: 8 * MIB as u64,
        ..Config::default()
    };
    let mut h = Harness::new(&[("Song", 12 * MIB)], config).with_memory(16 << 20);
    h.exec = Exec::new(ExecConfig {
        warm_reads_in_flight: 2,
        ..h.exec.config().clone()
    });
    let want = h.origin_bytes("Song").to_vec();
    assert_eq!(read_whole(&mut h, "Song"), want);
    h.pump();
    h.now += h.exec.config().memory_idle;
    assert!(h.exec.release_idle_memory(h.now) > 0);
    let fetched = h.world.fetched_bytes;
    h.world.hold_chunk_reads = true;
    // The read at the start: its own chunks, and two of the four runs
    // ahead; the other two wait their turn.
    let first = h.start_read(h.ino("Song"), 0, READ);
    h.pump();
    assert_eq!(
        h.world.held_chunk_reads.len(),
        1 + 2,
        "{:?}",
        h.world.held_chunk_reads
    );
    // A read of the last run's bytes does not wait for the turn of the
    // runs before it: that run goes to the disk at once.
    let ahead = 3 * MIB as u64 + 512 * 1024;
    let later = h.start_read(h.ino("Song"), ahead, READ);
    h.pump();
    assert_eq!(
        h.world.held_chunk_reads.len(),
        3 + 1,
        "the last run went at once, and holds what the read wants"
    );
    // The disk answers: both readers get the origin's bytes, and every
    // byte of the first 4 MiB is then read from memory.
    h.release_chunk_reads();
    assert_eq!(h.run_until_replied(first).unwrap(), want[..READ as usize]);
    let at = ahead as usize;
    assert_eq!(
        h.run_until_replied(later).unwrap(),
        want[at..at + READ as usize]
    );
    let before = h.exec.stats().clone();
    for at in (0..4 * MIB).step_by(READ as usize) {
        let got = h.read("Song", at as u64, READ).unwrap();
        assert_eq!(got, want[at..at + READ as usize]);
    }
    let after = h.exec.stats().clone();
    assert_eq!(
        after.served_from_disk, before.served_from_disk,
        "the queued runs were read too"
    );
    assert_eq!(h.world.fetched_bytes, fetched, "no origin fetch");
}

/// A harness with one 12 MiB song, read whole once: cached, its chunks on
/// the cache disk only (the memory cache let go of them after idling), as
/// for a track played again after a while. Returns it and the song's bytes.
fn song_on_the_cache_disk_only() -> (Harness, Vec<u8>) {
    let mut h = Harness::new(&[("Song", 12 * MIB)], Config::default()).with_memory(16 << 20);
    let want = h.origin_bytes("Song").to_vec();
    assert_eq!(read_whole(&mut h, "Song"), want);
    h.pump();
    h.now += h.exec.config().memory_idle;
    assert!(h.exec.release_idle_memory(h.now) > 0);
    (h, want)
}

/// The kernel lets go of a few pages of a cached file (memory pressure, a
/// proactive reclaimer) and asks for them again: that lone read reads its
/// own chunks from the cache disk and no more. Had it read ahead like a
/// stream, every few lost pages would cost half a MiB of disk reads and
/// hashing. A read that follows on from it is a stream, and is read ahead.
#[test]
fn a_lone_read_in_a_cached_file_is_not_read_ahead_of_until_a_stream_follows() {
    const READ: u32 = 8 * 1024;
    let (mut h, want) = song_on_the_cache_disk_only();
    let fetched = h.world.fetched_bytes;
    h.world.hold_chunk_reads = true;
    let ino = h.ino("Song");
    let at = 5 * MIB as u64 + 3000;
    let lone = h.start_read(ino, at, READ);
    h.pump();
    let held = h.held_chunks();
    assert!(
        (1..=2).contains(&held),
        "only the chunks under the read: {:?}",
        h.world.held_chunk_reads
    );
    h.release_chunk_reads();
    let at = at as usize;
    assert_eq!(
        h.run_until_replied(lone).unwrap(),
        want[at..at + READ as usize]
    );
    // The next read goes on from there: now it is read ahead of.
    h.world.hold_chunk_reads = true;
    let next = h.start_read(ino, (at + READ as usize) as u64, READ);
    h.pump();
    let held = h.held_chunks();
    assert!(held > 2, "read ahead: {:?}", h.world.held_chunk_reads);
    h.release_chunk_reads();
    let at = at + READ as usize;
    assert_eq!(
        h.run_until_replied(next).unwrap(),
        want[at..at + READ as usize]
    );
    assert_eq!(h.world.fetched_bytes, fetched, "no origin fetch");
}

#[test]
fn eviction_keeps_the_cache_under_its_limit_and_reads_stay_correct() {
    let config = Config {
        cache_capacity_bytes: 2 * MIB as u64,
        ..Config::default()
    };
    let mut h = Harness::new(&[("A", 3 * MIB), ("B", 3 * MIB)], config);
    for title in ["A", "B", "A"] {
        let want = h.origin_bytes(title).to_vec();
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.extend(h.read(title, got.len() as u64, 256 * 1024).unwrap());
        }
        assert_eq!(got, want);
        assert!(h.engine.cache().bytes() <= 2 * MIB as u64 * 9 / 10);
        let on_disk: u64 = h.world.disk.values().map(|b| b.len() as u64).sum();
        assert_eq!(on_disk, h.engine.cache().bytes(), "index matches disk");
    }
}

#[test]
fn a_full_disk_switches_to_passthrough_and_back() {
    let mut h = Harness::new(&[("Song", 2 * MIB)], Config::default());
    let want = h.origin_bytes("Song").to_vec();
    h.world.disk_full = true;
    assert_eq!(h.read("Song", 0, 100_000).unwrap(), want[..100_000]);
    assert!(h.engine.in_passthrough());
    assert_eq!(
        h.read("Song", MIB as u64, 100_000).unwrap(),
        want[MIB..MIB + 100_000]
    );
    h.world.disk_full = false;
    h.now += Duration::from_secs(11);
    h.engine.handle_timeout(h.now);
    h.pump();
    assert!(!h.engine.in_passthrough());
    assert_eq!(h.read("Song", 0, 2 * MIB as u32).unwrap(), want);
}

#[test]
fn many_concurrent_readers_all_complete() {
    let names: Vec<String> = (0..50).map(|i| format!("T{i:02}")).collect();
    let files: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 400_000)).collect();
    let mut h = Harness::new(&files, Config::default());
    h.world.hold_fetches = true;
    let reqs: Vec<(String, ReqId)> = names
        .iter()
        .map(|n| {
            let ino = h.ino(n);
            (n.clone(), h.start_read(ino, 1000, 200_000))
        })
        .collect();
    h.pump();
    h.release_held();
    for (name, req) in reqs {
        let want = h.origin_bytes(&name)[1000..201_000].to_vec();
        assert_eq!(h.run_until_replied(req).unwrap(), want);
    }
}

#[test]
fn test_failover_on_primary_death() {
    let mut h = Harness::with_origins(&[("Song", 3 * MIB)], 2, Config::default());
    let ino = h.ino("Song");
    let sources = h.engine.tree().file(ino).unwrap().sources.len();
    assert_eq!(sources, 2, "one entry, two mirrors");
    let want = h.origin_bytes("Song").to_vec();
    assert_eq!(h.read("Song", 0, 65536).unwrap(), want[..65536]);
    assert_eq!(
        h.world.fetches_by_origin[1], 0,
        "the primary serves while it is healthy"
    );
    h.set_down(0, true);
    let start = h.now;
    let got = h.read("Song", 65536, 3 * MIB as u32).unwrap();
    assert_eq!(got, want[65536..]);
    assert!(h.world.fetches_by_origin[1] > 0, "the mirror took over");
    assert!(
        h.now.saturating_since(start) < Duration::from_secs(5),
        "failover is quick"
    );
}

#[test]
fn test_all_origins_dead_returns_cached() {
    let mut h = Harness::with_origins(
        &[("Cached", 2 * MIB), ("Cold", 2 * MIB)],
        2,
        Config::default(),
    );
    let want = h.origin_bytes("Cached").to_vec();
    assert_eq!(h.read("Cached", 0, 2 * MIB as u32).unwrap(), want);
    h.set_down(0, true);
    h.set_down(1, true);
    let start = h.now;
    assert_eq!(h.read("Cold", 0, 4096), Err(Errno::Io), "uncached: EIO");
    assert!(
        h.now.saturating_since(start) <= Duration::from_secs(30),
        "within the read timeout"
    );
    assert_eq!(
        h.read("Cached", 1000, 100_000).unwrap(),
        want[1000..101_000],
        "cached music plays"
    );
    let healths: Vec<Health> = h
        .engine
        .origin_statuses()
        .iter()
        .map(|s| s.health)
        .collect();
    assert!(healths.iter().all(|&s| s != Health::Healthy), "{healths:?}");
    // Their tracks stay in the tree.
    assert!(
        h.engine
            .tree()
            .resolve("Artist/Album/01 - Cold.flac")
            .is_some()
    );
}

#[test]
fn test_origin_recovery_resumes_routing() {
    let mut h = Harness::with_origins(&[("A", MIB), ("B", MIB)], 2, Config::default());
    h.set_down(0, true);
    let want = h.origin_bytes("A").to_vec();
    // Reads go to the mirror while the primary is down...
    for _ in 0..4 {
        assert_eq!(h.read("A", 0, MIB as u32).unwrap(), want);
        h.now += Duration::from_secs(1);
    }
    assert_ne!(h.engine.origin_statuses()[0].health, Health::Healthy);
    // ...and back to the primary once its health checks pass again.
    h.set_down(0, false);
    for _ in 0..200 {
        h.now += Duration::from_secs(5);
        h.engine.handle_timeout(h.now);
        h.pump();
        if h.engine.origin_statuses()[0].health == Health::Healthy {
            break;
        }
    }
    assert_eq!(h.engine.origin_statuses()[0].health, Health::Healthy);
    let before = h.world.fetches_by_origin[0];
    let want_b = h.origin_bytes("B").to_vec();
    assert_eq!(h.read("B", 0, MIB as u32).unwrap(), want_b);
    assert!(
        h.world.fetches_by_origin[0] > before,
        "routing resumed on the primary"
    );
}

#[test]
fn shutdown_refuses_new_reads_and_aborts_what_is_left() {
    let mut h = Harness::new(&[("Song", MIB)], Config::default());
    h.world.hold_fetches = true;
    let ino = h.ino("Song");
    let stuck = h.start_read(ino, 0, 4096);
    h.pump();
    h.engine.begin_shutdown();
    let late = h.start_read(ino, 0, 4096);
    h.pump();
    assert_eq!(
        h.world.replies.remove(&late),
        Some(Err(Errno::Io)),
        "no new work"
    );
    assert!(
        !h.world.replies.contains_key(&stuck),
        "in-flight reads may still finish"
    );
    h.engine.abort_all();
    h.pump();
    assert_eq!(h.world.replies.remove(&stuck), Some(Err(Errno::Io)));
    assert_eq!(h.engine.reads_in_flight(), 0);
    assert_eq!(h.engine.fetches_in_flight(), 0);
}

/// Reads `title` whole through the engine, as the pin filler does.
fn read_whole(h: &mut Harness, title: &str) -> Vec<u8> {
    let len = h.origin_bytes(title).len();
    let mut got = Vec::new();
    while got.len() < len {
        got.extend(h.read(title, got.len() as u64, 256 * 1024).unwrap());
    }
    got
}

#[test]
fn pinned_files_are_never_evicted_and_play_with_the_origin_down() {
    let config = Config {
        cache_capacity_bytes: 4 * MIB as u64,
        ..Config::default()
    };
    let mut h = Harness::new(&[("A", 2 * MIB), ("B", 3 * MIB), ("C", 3 * MIB)], config);
    let a = h.ino("A");
    assert_eq!(h.engine.cached(a), Cached::None);
    let report = h.engine.pin(&[a]).expect("2 MiB fits 80% of 4 MiB");
    assert_eq!((report.files, report.new_files), (1, 1));
    assert_eq!(h.engine.pins_to_fill(), vec![a]);
    assert_eq!(h.engine.next_uncached(a, 0), Some(0));
    let want = h.origin_bytes("A").to_vec();
    assert_eq!(read_whole(&mut h, "A"), want);
    assert_eq!(h.engine.cached(a), Cached::Full);
    assert!(h.engine.pins_to_fill().is_empty());
    assert_eq!(h.engine.next_uncached(a, 0), None);
    // B and C do not fit beside A: eviction takes theirs, never A's.
    for title in ["B", "C", "B"] {
        let want = h.origin_bytes(title).to_vec();
        assert_eq!(read_whole(&mut h, title), want);
        assert_eq!(h.engine.cached(a), Cached::Full, "after reading {title}");
    }
    assert!(h.engine.stats().chunks_evicted > 0, "there was pressure");
    h.set_down(0, true);
    assert_eq!(read_whole(&mut h, "A"), h.origin_bytes("A").to_vec());
    // Released, its chunks go like any other.
    assert_eq!(h.engine.unpin(&[a]), 1);
    h.set_down(0, false);
    let want = h.origin_bytes("C").to_vec();
    assert_eq!(read_whole(&mut h, "C"), want);
    assert_ne!(h.engine.cached(a), Cached::Full);
}

#[test]
fn pins_past_their_share_of_the_cache_are_refused_with_the_numbers() {
    let config = Config {
        cache_capacity_bytes: 10 * MIB as u64,
        pin_share_pct: 50,
        ..Config::default()
    };
    let mut h = Harness::new(&[("A", 3 * MIB), ("B", 3 * MIB)], config);
    let (a, b) = (h.ino("A"), h.ino("B"));
    h.engine.pin(&[a]).expect("3 of 5 MiB");
    let refused = h.engine.pin(&[a, b]).expect_err("6 MiB > 5 MiB");
    assert_eq!(refused.adding_bytes, 3 * MIB as u64);
    assert_eq!(refused.pinned_bytes, 3 * MIB as u64);
    assert_eq!(refused.limit_bytes, 5 * MIB as u64);
    assert!(!h.engine.is_pinned(b));
    // Pinning again what is pinned adds nothing and is not refused.
    assert_eq!(h.engine.pin(&[a]).map(|r| r.new_files), Ok(0));
}

#[test]
fn pins_follow_moves_are_saved_and_shrink_to_fit_when_restored() {
    let config = Config {
        cache_capacity_bytes: 10 * MIB as u64,
        pin_share_pct: 50,
        ..Config::default()
    };
    let mut h = Harness::new(&[("A", 2 * MIB), ("B", 2 * MIB)], config.clone());
    let (a, b) = (h.ino("A"), h.ino("B"));
    h.engine.pin(&[a]).unwrap();
    h.engine.pin(&[b]).unwrap();
    h.engine.pause_pins(&[b]);
    assert_eq!(
        h.engine.pins_to_fill(),
        vec![a],
        "a paused pin is not fetched"
    );
    let saved: Vec<_> = h
        .engine
        .take_dirty_pins()
        .into_iter()
        .filter_map(|(k, p)| p.map(|p| (k, p)))
        .collect();
    assert_eq!(saved.len(), 2);
    // A move in the origin carries the pin to the new path.
    let old = h.engine.tree().file(a).unwrap().sources[0].clone();
    let mut moved = old.clone();
    moved.path = OriginPath::new(b"Elsewhere/A.flac".to_vec());
    h.engine
        .move_sources(&[((old.origin, old.path.clone()), moved.clone())]);
    let changes = h.engine.take_dirty_pins();
    assert!(changes.contains(&((old.origin, old.path.clone()), None)));
    assert!(
        changes
            .iter()
            .any(|(k, p)| *k == (moved.origin, moved.path.clone()) && p.is_some())
    );
    // Restored into a smaller cache, the newest pin (B) is released.
    let small = Config {
        cache_capacity_bytes: 6 * MIB as u64,
        ..config
    };
    let mut h2 = Harness::new(&[("A", 2 * MIB), ("B", 2 * MIB)], small);
    h2.engine.restore_pins(saved);
    assert!(h2.engine.is_pinned(h2.ino("A")));
    assert!(!h2.engine.is_pinned(h2.ino("B")));
    assert!(h2.engine.pinned_bytes() <= h2.engine.pin_limit_bytes());
    assert!(
        std::iter::from_fn(|| h2.engine.poll_output())
            .any(|o| matches!(o, Output::Notice(Notice::PinsReleased { files: 1, .. })))
    );
}

#[test]
fn a_cache_off_origin_is_read_straight_through_and_fails_over_to_a_mirror() {
    let config = uncached(&[0]);
    let mut h = Harness::with_origins(&[("A", 3 * MIB)], 2, config);
    let want = h.origin_bytes("A").to_vec();
    assert_eq!(read_whole(&mut h, "A"), want);
    assert!(h.world.passthroughs_by_origin[0] > 0);
    assert_eq!(
        h.world.fetches_by_origin[0], 0,
        "nothing fetched from a cache=off origin"
    );
    assert_eq!(h.engine.cache().bytes(), 0);
    assert!(
        h.engine.is_cacheable(h.ino("A")),
        "its mirror is in a cached origin"
    );
    // The cache=off origin fails: the read goes to the mirror (and is
    // cached there) instead of failing.
    h.set_down(0, true);
    assert_eq!(h.read("A", 0, 65536).unwrap(), want[..65536].to_vec());
    assert!(h.world.fetches_by_origin[1] > 0, "the mirror was asked");
}

#[test]
fn reads_past_the_in_flight_limit_get_eagain_and_the_others_complete() {
    let config = Config {
        reads_in_flight_max: 2,
        ..Config::default()
    };
    let files = [("A", 400_000), ("B", 400_000), ("C", 400_000)];
    // The engine alone: two reads over the limit, one notice.
    let mut h = Harness::new(&files, config.clone());
    for (i, title) in ["A", "B", "C", "C"].into_iter().enumerate() {
        let ino = h.ino(title);
        h.engine.read(h.now, ReqId(100 + i as u64), ino, 0, 4096);
    }
    let outputs: Vec<Output> = std::iter::from_fn(|| h.engine.poll_output()).collect();
    let refused = outputs
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::ReadError {
                    errno: Errno::Again,
                    ..
                }
            )
        })
        .count();
    let told = outputs
        .iter()
        .filter(|o| matches!(o, Output::Notice(Notice::TooManyReads(2))))
        .count();
    assert_eq!((refused, told), (2, 1), "{outputs:?}");
    // Through the harness: the refused read gets EAGAIN, the others their
    // bytes, and once they are done a new read is taken again.
    let mut h = Harness::new(&files, config);
    h.world.hold_fetches = true;
    let (a, b, c) = (h.ino("A"), h.ino("B"), h.ino("C"));
    let ra = h.start_read(a, 0, 4096);
    let rb = h.start_read(b, 0, 4096);
    let rc = h.start_read(c, 0, 4096);
    h.pump();
    assert_eq!(h.world.replies.get(&rc), Some(&Err(Errno::Again)));
    h.release_held();
    for (req, title) in [(ra, "A"), (rb, "B")] {
        let want = h.origin_bytes(title)[..4096].to_vec();
        assert_eq!(h.run_until_replied(req).unwrap(), want, "{title}");
    }
    let again = h.start_read(c, 0, 4096);
    let want = h.origin_bytes("C")[..4096].to_vec();
    assert_eq!(h.run_until_replied(again).unwrap(), want);
}

#[test]
fn the_memory_cache_is_let_go_once_reads_go_idle_and_reads_go_on_from_disk() {
    let mut h = Harness::new(&[("Song", 3 * MIB)], Config::default()).with_memory(16 << 20);
    let idle = h.exec.config().memory_idle;
    let want = h.origin_bytes("Song").to_vec();
    assert_eq!(h.read("Song", 0, 128 * 1024).unwrap(), want[..128 * 1024]);
    h.pump();
    // Just read: kept, however often the shell asks.
    assert_eq!(h.exec.release_idle_memory(h.now), 0);
    h.now += idle / 2;
    assert_eq!(h.exec.release_idle_memory(h.now), 0);
    // A read under way keeps it too, even past the idle time (the song's
    // last page: the first read's fetch and read-ahead stopped short of it).
    let ino = h.ino("Song");
    h.world.hold_fetches = true;
    let last = 3 * MIB - 4096;
    let req = h.start_read(ino, last as u64, 4096);
    h.pump();
    assert!(
        !h.world.replies.contains_key(&req),
        "it waits for the origin"
    );
    h.now += idle * 2;
    assert_eq!(h.exec.release_idle_memory(h.now), 0, "a read is under way");
    h.release_held();
    assert_eq!(h.run_until_replied(req).unwrap(), want[last..]);
    h.pump();
    // Idle long enough: the bytes go, and the next read finds them on disk.
    h.now += idle;
    let released = h.exec.release_idle_memory(h.now);
    assert!(released > 0, "nothing released");
    assert_eq!(h.exec.stats().memory_released_bytes, released);
    assert_eq!(h.exec.release_idle_memory(h.now), 0, "already empty");
    let disk_reads = h.world.chunk_reads;
    let fetched = h.world.fetched_bytes;
    assert_eq!(h.read("Song", 0, 128 * 1024).unwrap(), want[..128 * 1024]);
    assert!(h.world.chunk_reads > disk_reads, "served from disk");
    assert_eq!(h.world.fetched_bytes, fetched, "no origin fetch");
}

/// A sequential reader of a cached file whose bytes are on the cache disk
/// only (a reboot, a track played again) finds its chunks already read
/// into memory, side by side ahead of it, rather than one disk read per
/// kernel read.
#[test]
fn a_sequential_reader_of_a_cached_file_finds_its_chunks_read_ahead() {
    const READ: usize = 128 * 1024;
    let (mut h, want) = song_on_the_cache_disk_only();
    let before = h.exec.stats().clone();
    let fetched = h.world.fetched_bytes;
    for at in (0..want.len()).step_by(READ) {
        let got = h.read("Song", at as u64, READ as u32).unwrap();
        assert_eq!(got, want[at..(at + READ).min(want.len())]);
    }
    let after = h.exec.stats().clone();
    let from_memory = after.served_from_memory - before.served_from_memory;
    let from_disk = after.served_from_disk - before.served_from_disk;
    assert!(after.chunks_warmed > before.chunks_warmed, "{after:?}");
    assert!(
        from_disk * 10 < from_memory,
        "{from_memory} reads from memory, {from_disk} waited for the disk"
    );
    assert_eq!(h.world.fetched_bytes, fetched, "no origin fetch");
}

/// A player of a cached track whose reads run ahead of the cache disk:
/// each pass of its read-ahead starts with the chunk the last pass ended
/// in, still being read. The pass reads the rest of its run anyway, so
/// no megabyte is left for the player to read from the disk itself (this
/// once left one in ten: 15 of these 32 reads went to the disk).
#[test]
fn a_streams_next_read_ahead_is_read_though_its_first_chunk_is_still_on_the_way() {
    const READ: usize = 128 * 1024;
    let (mut h, want) = song_on_the_cache_disk_only();
    let ino = h.ino("Song");
    // The first 4 MiB read with the disk slower than the player: every
    // pass of read-ahead is planned while the ones before are unread.
    h.world.hold_chunk_reads = true;
    let before = h.exec.stats().clone();
    let reqs: Vec<(usize, ReqId)> = (0..4 * MIB)
        .step_by(READ)
        .map(|at| {
            let req = h.start_read(ino, at as u64, READ as u32);
            h.pump();
            (at, req)
        })
        .collect();
    h.release_chunk_reads();
    for &(at, req) in &reqs {
        assert_eq!(h.run_until_replied(req).unwrap(), want[at..at + READ]);
    }
    let after = h.exec.stats().clone();
    // The first read, before there was a stream to read ahead of, read
    // its own chunks; every later one waited for the read-ahead.
    assert_eq!(after.served_from_disk - before.served_from_disk, 1);
    assert_eq!(
        after.served_from_memory - before.served_from_memory,
        reqs.len() as u64 - 1
    );
}

/// Runs the clock until no read of a fill-behind origin waits to be
/// cached and no fetch is under way.
fn until_filled(h: &mut Harness) {
    h.run_clock_until("the fills never ended", |h| {
        let (files, _, fills) = h.engine.fills_waiting();
        files == 0 && fills == 0 && h.engine.fetches_in_flight() == 0
    });
}

#[test]
fn a_fill_behind_origin_answers_from_the_origin_then_caches_what_was_read() {
    let config = fill_behind(&[0]);
    let mut h = Harness::new(&[("A", 3 * MIB + 11), ("B", 4 * MIB)], config);
    let want_a = h.origin_bytes("A").to_vec();
    let want_b = h.origin_bytes("B").to_vec();
    // The reader is answered straight from the origin: nothing fetched, no
    // chunk written, while it reads.
    assert_eq!(read_whole(&mut h, "A"), want_a);
    let b_part = (MIB as u64, MIB as u32 / 2);
    assert_eq!(
        h.read("B", b_part.0, b_part.1).unwrap(),
        want_b[MIB..MIB + MIB / 2]
    );
    assert_eq!(h.world.fetches_by_origin[0], 0);
    assert!(h.world.passthroughs_by_origin[0] > 0);
    assert_eq!(h.engine.cache().bytes(), 0);
    let (files, bytes, fills) = h.engine.fills_waiting();
    assert_eq!(
        (files, bytes, fills),
        (2, want_a.len() as u64 + MIB as u64 / 2, 0)
    );
    // Once the files rest, what was read is fetched into the cache once:
    // all of A, B's part (to the chunk boundaries around it) and no more.
    until_filled(&mut h);
    assert_eq!(h.engine.cached(h.ino("A")), Cached::Full);
    let b_cached = h.engine.cached_bytes(h.ino("B"));
    assert!(
        (MIB as u64 / 2..2 * MIB as u64).contains(&b_cached),
        "B: {b_cached} bytes cached"
    );
    assert!(
        h.world.fetched_bytes <= want_a.len() as u64 + 2 * MIB as u64,
        "fetched {} bytes",
        h.world.fetched_bytes
    );
    assert_eq!(h.engine.stats().fills_behind, 2);
    // And it plays with the origin gone.
    h.set_down(0, true);
    assert_eq!(read_whole(&mut h, "A"), want_a);
    assert_eq!(
        h.read("B", b_part.0, b_part.1).unwrap(),
        want_b[MIB..MIB + MIB / 2]
    );
    assert_eq!(
        h.read("B", 3 * MIB as u64, 4096),
        Err(Errno::Io),
        "what nobody read was not cached"
    );
}

#[test]
fn a_fill_holds_at_most_the_write_queue_between_the_origin_and_the_disk() {
    let config = fill_behind(&[0]);
    let mut h = Harness::new(&[("A", 40 * MIB)], config);
    let want = h.origin_bytes("A").to_vec();
    assert_eq!(read_whole(&mut h, "A"), want);
    // A slow disk: the fill must stop asking the origin for more, not
    // pile its bytes up in memory (nobody waits for a fill, and its peak
    // is the daemon's).
    h.world.hold_writes = true;
    h.run_clock_until("the fill never reached the disk", |h| {
        !h.world.held_writes.is_empty()
    });
    let config = h.exec.config().clone();
    let bound = config.write_queue_bytes
        + u64::from(config.piece_bytes)
        + musicfs_core::chunk::CHUNK_MAX_BYTES as u64;
    let mut most = 0;
    loop {
        most = most.max(h.world.fetched_bytes - h.world.written_bytes);
        if !h.finish_held_write() {
            break;
        }
    }
    assert!(
        (MIB as u64..=bound).contains(&most),
        "{most} bytes fetched and not yet written (at most {bound})"
    );
    until_filled(&mut h);
    assert_eq!(h.engine.cached(h.ino("A")), Cached::Full);
    h.set_down(0, true);
    assert_eq!(read_whole(&mut h, "A"), want);
}

#[test]
fn a_fill_waits_for_the_reader_to_rest_and_a_pinned_file_fills_inline() {
    let config = Config {
        fill_behind_after: Duration::from_secs(2),
        ..fill_behind(&[0])
    };
    let mut h = Harness::new(&[("A", 2 * MIB), ("P", 2 * MIB)], config);
    let ino = h.ino("A");
    // A player reading a little every second never waits for a fill, and
    // none starts until it stops for fill_behind_after.
    for i in 0..4u64 {
        let want = h.origin_bytes("A")[(i * 256 * 1024) as usize..][..4096].to_vec();
        assert_eq!(h.read("A", i * 256 * 1024, 4096).unwrap(), want);
        h.now += Duration::from_secs(1);
        h.exec.handle_timeout(&mut h.engine, h.now);
        h.pump();
        assert_eq!(h.world.fetches_by_origin[0], 0, "read {i}");
    }
    until_filled(&mut h);
    assert!(h.world.fetches_by_origin[0] > 0);
    assert!(h.engine.cached_bytes(ino) >= 4 * 4096);
    // A pinned file's reads wait for the cache, as its filler needs.
    let p = h.ino("P");
    h.engine.pin(&[p]).unwrap();
    let before = h.world.fetches_by_origin[0];
    let want = h.origin_bytes("P")[..65536].to_vec();
    assert_eq!(h.read("P", 0, 65536).unwrap(), want);
    assert!(h.world.fetches_by_origin[0] > before);
    assert_eq!(h.engine.fills_waiting().0, 0);
}

/// Reads `len` bytes of `title` from `offset` on, 128 KiB at a time (the
/// kernel's reads of a sequential reader).
fn read_stream(h: &mut Harness, title: &str, offset: u64, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < len {
        let size = (len - got.len()).min(128 * 1024) as u32;
        got.extend(h.read(title, offset + got.len() as u64, size).unwrap());
    }
    got
}

#[test]
fn a_stream_answered_from_its_origin_is_read_ahead_of_in_memory() {
    let config = fill_behind(&[0]);
    let mut h = Harness::new(&[("A", 5 * MIB + 4321)], config);
    let want = h.origin_bytes("A").to_vec();
    assert_eq!(read_stream(&mut h, "A", 0, want.len()), want);
    // 42 kernel reads: the first megabyte's 8 asked the origin themselves
    // (a tag reader reads no further), the rest were answered from
    // megabytes read ahead of them.
    let reads = want.len().div_ceil(128 * 1024) as u64;
    assert_eq!(h.world.passthroughs_by_origin[0], 8);
    assert_eq!(h.exec.stats().served_read_ahead, reads - 8);
    // From 1 MiB on, 1 MiB at a time, to the end.
    let ahead = (want.len() - MIB).div_ceil(MIB) as u64;
    assert_eq!(h.world.read_aheads_by_origin[0], ahead);
    // What was read is still cached behind the reader, as before.
    assert_eq!(h.engine.fills_waiting().0, 1);
    until_filled(&mut h);
    assert_eq!(h.engine.cached(h.ino("A")), Cached::Full);
    // The bytes are let go with the rest once reads go idle.
    h.now += Duration::from_secs(60);
    h.exec.release_idle_memory(h.now);
    assert_eq!(h.exec.read_ahead_bytes(), 0);
}

#[test]
fn a_lone_read_from_an_origin_is_not_read_ahead_of() {
    let config = uncached(&[0]);
    let mut h = Harness::new(&[("A", 4 * MIB)], config);
    let want = h.origin_bytes("A").to_vec();
    // A tag reader at the end of the file, then a seek into the middle.
    let tail = (4 * MIB - 4096) as u64;
    assert_eq!(h.read("A", tail, 4096).unwrap(), want[tail as usize..]);
    assert_eq!(
        h.read("A", MIB as u64, 65536).unwrap(),
        want[MIB..MIB + 65536]
    );
    assert_eq!(h.world.read_aheads_by_origin[0], 0);
    // The reads after the seek follow on from it: once they ran a
    // megabyte, the stream is read ahead of.
    let mut next = MIB as u64 + 65536;
    while next < 2 * MIB as u64 {
        assert_eq!(h.world.read_aheads_by_origin[0], 0);
        assert_eq!(
            h.read("A", next, 65536).unwrap(),
            want[next as usize..next as usize + 65536]
        );
        next += 65536;
    }
    assert_eq!(h.world.read_aheads_by_origin[0], 1);
    assert!(h.exec.read_ahead_bytes() > 0);
}

#[test]
fn reads_wait_for_the_bytes_read_ahead_and_fail_over_if_that_read_fails() {
    let config = fill_behind(&[0, 1]);
    let mut h = Harness::with_origins(&[("A", 4 * MIB)], 2, config);
    let want = h.origin_bytes("A").to_vec();
    let k128 = 128 * 1024;
    h.world.hold_read_aheads = true;
    assert_eq!(read_stream(&mut h, "A", 0, MIB), want[..MIB]);
    assert_eq!(h.world.held_read_aheads.len(), 1, "1 MiB past the reader");
    // The next read's bytes are being read: it waits for them, and asks
    // the origin for nothing of its own.
    let second = h.start_read(h.ino("A"), MIB as u64, k128);
    h.pump();
    assert!(!h.world.replies.contains_key(&second));
    assert_eq!(h.world.passthroughs_by_origin, [8, 0, 0, 0]);
    h.release_read_aheads();
    assert_eq!(
        h.run_until_replied(second).unwrap(),
        want[MIB..MIB + k128 as usize]
    );
    assert_eq!(h.world.passthroughs_by_origin, [8, 0, 0, 0]);
    // Read on to where the next read ahead is under way, and make it fail:
    // the read waiting for it goes to the origin itself, whose failure
    // sends it to the mirror, as any read straight from an origin.
    h.world.hold_read_aheads = true;
    let mut at = MIB as u64 + u64::from(k128);
    while h.world.held_read_aheads.is_empty() {
        assert_eq!(
            h.read("A", at, k128).unwrap(),
            want[at as usize..(at + u64::from(k128)) as usize]
        );
        at += u64::from(k128);
    }
    // It reads the third megabyte; the reader may skip ahead into it.
    let Io::OriginRead { offset: from, .. } = h.world.held_read_aheads[0] else {
        unreachable!("only origin reads are held");
    };
    assert_eq!(from, 2 * MIB as u64);
    let waiting = h.start_read(h.ino("A"), from + u64::from(k128), k128);
    h.pump();
    assert!(!h.world.replies.contains_key(&waiting));
    h.set_down(0, true);
    h.release_read_aheads();
    let from = (from + u64::from(k128)) as usize;
    assert_eq!(
        h.run_until_replied(waiting).unwrap(),
        want[from..from + k128 as usize]
    );
    assert!(h.world.passthroughs_by_origin[1] > 0, "the mirror answered");
}

#[test]
fn at_most_four_streams_are_read_ahead_of_at_once() {
    let config = fill_behind(&[0]);
    let names = ["A", "B", "C", "D", "E", "F"];
    let files: Vec<(&str, usize)> = names.iter().map(|&n| (n, 3 * MIB)).collect();
    let mut h = Harness::new(&files, config);
    // Six readers side by side, each a little further on in turn.
    for round in 0..12u64 {
        for name in names {
            let at = round * 128 * 1024;
            let want = h.origin_bytes(name)[at as usize..at as usize + 128 * 1024].to_vec();
            assert_eq!(h.read(name, at, 128 * 1024).unwrap(), want);
        }
    }
    // Each was read ahead of once its run reached a megabyte; each holds
    // at most 2 MiB ahead of its reader, and only four are held: the
    // other two gave way.
    assert!(h.world.read_aheads_by_origin[0] >= 6);
    assert!(
        (3 * MIB as u64..=4 * 2 * MIB as u64).contains(&h.exec.read_ahead_bytes()),
        "{} bytes read ahead",
        h.exec.read_ahead_bytes()
    );
}
