//! The event trace: what happened in a run, in order, with its time.
//!
//! Every run keeps three things of its trace: a running hash of every event
//! (two runs of one seed must end with the same hash: that is the
//! determinism check), the last [`RING_EVENTS`] events (printed when an
//! invariant breaks), and, with `--trace`, every event printed as it happens.
//! Events are small enums formatted only when printed, so tracing costs a
//! hash update per event, not a `format!`.

use musicfs_core::Time;
use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};

/// How many of the last events a failure report shows.
pub const RING_EVENTS: usize = 50;

/// How a FUSE read was answered, as the trace shows it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum ReplyKind {
    /// Bytes, this many.
    Data(usize),
    /// An errno.
    Error(i32),
    /// The daemon crashed: the kernel answered ENOTCONN.
    Aborted,
}

/// One thing that happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Ev {
    /// A simulated phase began (chaos, heal, verify).
    Phase(&'static str),
    /// A FUSE read reached the engine.
    Read {
        req: u64,
        client: usize,
        ino: u64,
        offset: u64,
        size: u32,
    },
    /// A FUSE read was answered.
    Reply { req: u64, reply: ReplyKind },
    /// The engine asked for a fetch.
    Fetch {
        id: u64,
        origin: u16,
        path: String,
        start: u64,
        end: u64,
        verify: bool,
    },
    /// A fetch reported chunks.
    Progress { id: u64, chunks: usize, stored: u8 },
    /// A group write ended: chunks durable and indexed, chunks failed.
    Durable { chunks: usize, failed: usize },
    /// A fetch ended.
    FetchDone { id: u64, result: String },
    /// The engine cancelled a fetch.
    Cancel { id: u64 },
    /// The engine asked for chunks to be served from disk.
    Serve { req: u64, pieces: usize },
    /// Reading chunk files failed (`req` is the executor's op); the engine
    /// is told.
    ServeFaults { req: u64, faults: usize },
    /// The engine asked for a passthrough read.
    Passthrough {
        req: u64,
        origin: u16,
        offset: u64,
        len: u32,
    },
    /// The engine evicted chunks.
    Evict { chunks: usize },
    /// The engine asked for runs of kept chunks to be read ahead.
    Warm { runs: usize },
    /// The executor handed pages of a file to the kernel.
    Prime { ino: u64, offset: u64, len: usize },
    /// The executor deletes chunk files (evicted ones, once no store of
    /// them is under way).
    Delete { chunks: usize },
    /// The engine asked to probe the disk.
    Probe { ok: bool },
    /// A notice the engine emitted.
    Notice(String),
    /// A request to an origin went on the network.
    NetOp {
        op: u64,
        origin: u16,
        offset: u64,
        len: u32,
    },
    /// Its answer arrived (`len` bytes, or an error).
    NetDone { op: u64, result: String },
    /// A fault began or ended, or content changed.
    Fault(String),
    /// A pin command and what the engine made of it.
    Pin(String),
    /// A rescan replaced the tree.
    Rescan { files: usize, changed: usize },
    /// The daemon crashed.
    Crash,
    /// The daemon restarted with this much persisted state.
    Restart { chunks: usize, manifests: usize },
}

/// An event and its time.
#[derive(Clone, Debug)]
pub struct Stamped {
    /// When.
    pub at: Time,
    /// What.
    pub ev: Ev,
}

impl fmt::Display for Stamped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.at.as_nanos() as f64 / 1e6;
        write!(f, "{ms:>12.3}ms  {:?}", self.ev)
    }
}

/// FNV-1a, 64 bits: a hasher whose output depends only on its input, on
/// every platform and in every process (std's `DefaultHasher` promises no
/// such thing across Rust versions).
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The trace of one run.
#[derive(Debug)]
pub struct Trace {
    ring: VecDeque<Stamped>,
    hash: Fnv,
    count: u64,
    live: bool,
}

impl Trace {
    /// A trace that prints every event when `live`.
    pub fn new(live: bool) -> Trace {
        Trace {
            ring: VecDeque::with_capacity(RING_EVENTS),
            hash: Fnv::default(),
            count: 0,
            live,
        }
    }

    /// Records one event.
    pub fn push(&mut self, at: Time, ev: Ev) {
        at.hash(&mut self.hash);
        ev.hash(&mut self.hash);
        self.count += 1;
        let stamped = Stamped { at, ev };
        if self.live {
            println!("{stamped}");
        }
        if self.ring.len() == RING_EVENTS {
            self.ring.pop_front();
        }
        self.ring.push_back(stamped);
    }

    /// Whether every event is being printed (callers skip building costly
    /// text otherwise).
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    /// Number of events so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The last events, oldest first.
    pub fn last(&self) -> impl Iterator<Item = &Stamped> {
        self.ring.iter()
    }
}
