//! The network: origins and the daemon's origin client as hosts of a
//! turmoil simulation, stepped in lock-step with the discrete-event loop.
//!
//! turmoil owns the network: TCP connections between the `daemon` client
//! host and the `origin{i}` hosts, their latencies, partitions and the
//! dropped segments of a partitioned connection. The discrete-event loop owns
//! everything else, and the clock.
//!
//! Stepping turmoil costs a few microseconds per tick even when nothing
//! happens, and a run spans minutes of simulated time, so the loop only steps
//! it while something is on the wire: a message in flight on a link, or a
//! task just handed work (a new request, an abort, a delayed answer now
//! due). Nothing inside turmoil waits on a timer of its own: a slow origin
//! asks the loop to wake it ([`Wakes`]), so a network that is only waiting
//! costs no steps, and idle stretches are skipped in one jump. turmoil's
//! clock therefore runs behind the loop's; only its differences (latencies)
//! matter.

use crate::origin::{self, OriginState};
use musicfs_core::{FileVersion, OriginId, OriginPath, Time};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

/// One tick of the network, in simulated time.
pub const TICK: Duration = Duration::from_millis(1);

/// Why an origin request failed, as the io-shell's `Origin` trait says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginError {
    /// The file is not there.
    NotFound,
    /// The file is not the version asked for (or came back short).
    Changed,
    /// No usable answer: refused, dropped, cut off, or an error reply.
    Unavailable(String),
}

/// A ranged read of one origin file at one version.
#[derive(Clone, Debug)]
pub struct Request {
    /// Which origin.
    pub origin: OriginId,
    /// Which file.
    pub path: OriginPath,
    /// At which version.
    pub version: FileVersion,
    /// First byte.
    pub offset: u64,
    /// Bytes wanted.
    pub len: u32,
}

/// The answer to one request, by its op id.
pub type Completion = (u64, Result<Vec<u8>, OriginError>);

/// Delays the loop owns: an origin task that must answer late registers a
/// wake-up and waits for the loop to fire it at the right simulated time.
#[derive(Default)]
pub struct Wakes {
    next: Cell<u64>,
    requested: RefCell<Vec<(u64, Duration)>>,
    waiting: RefCell<BTreeMap<u64, Rc<Notify>>>,
}

impl Wakes {
    /// Waits `delay` of the loop's time.
    pub async fn sleep(&self, delay: Duration) {
        let id = self.next.get();
        self.next.set(id + 1);
        let notify = Rc::new(Notify::new());
        self.waiting.borrow_mut().insert(id, Rc::clone(&notify));
        self.requested.borrow_mut().push((id, delay));
        notify.notified().await;
    }

    fn take_requested(&self) -> Vec<(u64, Duration)> {
        std::mem::take(&mut *self.requested.borrow_mut())
    }

    fn fire(&self, id: u64) {
        if let Some(n) = self.waiting.borrow_mut().remove(&id) {
            n.notify_one();
        }
    }
}

/// What the loop hands the daemon host.
enum Cmd {
    Op(u64, Request),
}

#[derive(Default)]
struct Shared {
    completions: RefCell<VecDeque<Completion>>,
    aborts: RefCell<BTreeMap<u64, AbortHandle>>,
}

/// The simulated network and the daemon's side of it.
pub struct Net {
    sim: turmoil::Sim<'static>,
    shared: Rc<Shared>,
    wakes: Rc<Wakes>,
    tx: mpsc::UnboundedSender<Cmd>,
    next_op: u64,
    outstanding: BTreeSet<u64>,
    kicked: bool,
    next_step: Option<Time>,
    partitioned: Vec<bool>,
    stalled: Vec<bool>,
    origin_ips: Vec<std::net::IpAddr>,
    steps: u64,
}

fn host_name(origin: OriginId) -> String {
    format!("origin{}", origin.0)
}

impl Net {
    /// A network of `origins`, with turmoil seeded from `seed`.
    pub fn new(seed: u64, latency_max: Duration, origins: &[Rc<RefCell<OriginState>>]) -> Net {
        let mut sim = turmoil::Builder::new()
            // Pinned: the default is the real time of day.
            .epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .simulation_duration(Duration::from_secs(10 * 365 * 24 * 3600))
            .tick_duration(TICK)
            .min_message_latency(Duration::from_micros(200))
            .max_message_latency(latency_max)
            .rng_seed(seed)
            // A stalled origin's release delivers every SYN held meanwhile at
            // once; turmoil panics when a listener's backlog overflows.
            .tcp_capacity(1 << 16)
            .build();
        let wakes = Rc::new(Wakes::default());
        for state in origins {
            let id = state.borrow().id;
            let (state, wakes) = (Rc::clone(state), Rc::clone(&wakes));
            sim.host(host_name(id), move || {
                origin::serve(Rc::clone(&state), Rc::clone(&wakes))
            });
        }
        let shared = Rc::new(Shared::default());
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        let client_shared = Rc::clone(&shared);
        sim.client("daemon", async move {
            while let Some(Cmd::Op(id, req)) = rx.recv().await {
                let done = Rc::clone(&client_shared);
                let task = tokio::task::spawn_local(async move {
                    let result = request(&req).await;
                    done.completions.borrow_mut().push_back((id, result));
                });
                client_shared
                    .aborts
                    .borrow_mut()
                    .insert(id, task.abort_handle());
            }
            Ok(())
        });
        let origin_ips = origins
            .iter()
            .map(|o| sim.lookup(host_name(o.borrow().id)))
            .collect();
        Net {
            sim,
            shared,
            wakes,
            tx,
            next_op: 1,
            outstanding: BTreeSet::new(),
            kicked: false,
            next_step: None,
            partitioned: vec![false; origins.len()],
            stalled: vec![false; origins.len()],
            origin_ips,
            steps: 0,
        }
    }

    /// Sends a request; its answer comes back from [`Net::step`] by op id.
    pub fn submit(&mut self, req: Request) -> u64 {
        let id = self.next_op;
        self.next_op += 1;
        self.outstanding.insert(id);
        // The receiver lives as long as the simulation.
        let _ = self.tx.send(Cmd::Op(id, req));
        self.kicked = true;
        id
    }

    /// Gives up on a request: its connection is dropped, its answer never
    /// reported.
    pub fn abort(&mut self, op: u64) {
        self.outstanding.remove(&op);
        if let Some(h) = self.shared.aborts.borrow_mut().remove(&op) {
            h.abort();
            self.kicked = true;
        }
    }

    /// Gives up on every request (the daemon crashed).
    pub fn abort_all(&mut self) {
        let ops: Vec<u64> = self.outstanding.iter().copied().collect();
        for op in ops {
            self.abort(op);
        }
    }

    /// Fires a delayed answer's wake-up.
    pub fn wake(&mut self, id: u64) {
        self.wakes.fire(id);
        self.kicked = true;
    }

    /// Cuts or heals the link between the daemon and an origin. Messages on a
    /// cut link are dropped: new connections are refused, open ones hang.
    pub fn set_partition(&mut self, origin: OriginId, cut: bool) {
        self.partitioned[usize::from(origin.0)] = cut;
        self.apply_link(origin);
    }

    /// Stalls or resumes an origin: while stalled, every message to and from
    /// it is held (connections and requests hang); resuming delivers them.
    pub fn set_stall(&mut self, origin: OriginId, stalled: bool) {
        self.stalled[usize::from(origin.0)] = stalled;
        self.apply_link(origin);
    }

    /// A cut wins over a stall; a link with neither is healthy.
    fn apply_link(&mut self, origin: OriginId) {
        let i = usize::from(origin.0);
        let name = host_name(origin);
        if self.partitioned[i] {
            self.sim.partition("daemon", name.as_str());
        } else if self.stalled[i] {
            self.sim.hold("daemon", name.as_str());
        } else {
            self.sim.release("daemon", name.as_str());
            self.kicked = true;
        }
    }

    /// Whether the daemon cannot reach `origin`.
    pub fn is_partitioned(&self, origin: OriginId) -> bool {
        self.partitioned[usize::from(origin.0)]
    }

    /// Whether a scan of `origin` would finish: not cut off, not stalled.
    pub fn is_reachable(&self, origin: OriginId) -> bool {
        let i = usize::from(origin.0);
        !self.partitioned[i] && !self.stalled[i]
    }

    /// Requests not yet answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Whether a message is on its way (held messages wait for a release
    /// and need no ticks).
    fn on_the_wire(&self) -> bool {
        let held: Vec<std::net::IpAddr> = (0..self.stalled.len())
            .filter(|&i| self.stalled[i] && !self.partitioned[i])
            .map(|i| self.origin_ips[i])
            .collect();
        let mut any = false;
        self.sim.links(|links| {
            for mut link in links {
                let (a, b) = link.pair();
                if !held.contains(&a) && !held.contains(&b) && link.next().is_some() {
                    any = true;
                }
            }
        });
        any
    }

    /// When the network must next be stepped, if it has anything to do.
    /// Once decided, a step time stays put, so a stream of other events
    /// cannot starve the network.
    pub fn next_step(&mut self, now: Time) -> Option<Time> {
        if self.next_step.is_none() && (self.kicked || self.on_the_wire()) {
            self.next_step = Some(now + TICK);
        }
        self.next_step
    }

    /// Runs one tick. Returns the answers that arrived and the delays that
    /// origins asked for (wake-up id, delay).
    pub fn step(&mut self) -> (Vec<Completion>, Vec<(u64, Duration)>) {
        self.next_step = None;
        self.kicked = false;
        self.steps += 1;
        if let Err(e) = self.sim.step() {
            panic!("turmoil failed: {e}");
        }
        let done: Vec<Completion> = self.shared.completions.borrow_mut().drain(..).collect();
        let mut out = Vec::with_capacity(done.len());
        for (op, result) in done {
            self.shared.aborts.borrow_mut().remove(&op);
            if self.outstanding.remove(&op) {
                out.push((op, result));
            }
        }
        (out, self.wakes.take_requested())
    }

    /// Ticks run so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Turmoil's own clock, for the trace's summary.
    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }
}

/// Writes one request on a fresh connection and reads its answer: the
/// simulated `Origin::read_at`. Like the io-shell's local origin, an answer
/// shorter than the file's size allows means the file changed.
async fn request(req: &Request) -> Result<Vec<u8>, OriginError> {
    let unavailable = |what: &str| OriginError::Unavailable(what.to_owned());
    let mut s = turmoil::net::TcpStream::connect((host_name(req.origin), origin::PORT))
        .await
        .map_err(|_| unavailable("connection refused"))?;
    s.write_all(&origin::encode_request(req))
        .await
        .map_err(|_| unavailable("send failed"))?;
    let mut head = [0u8; 5];
    s.read_exact(&mut head)
        .await
        .map_err(|_| unavailable("closed without answer"))?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut data = vec![0u8; len];
    s.read_exact(&mut data)
        .await
        .map_err(|_| unavailable("answer cut off"))?;
    match head[0] {
        origin::STATUS_OK => {
            let want = u64::from(req.len).min(req.version.size.saturating_sub(req.offset));
            if (data.len() as u64) < want {
                Err(OriginError::Changed)
            } else {
                Ok(data)
            }
        }
        origin::STATUS_NOT_FOUND => Err(OriginError::NotFound),
        origin::STATUS_CHANGED => Err(OriginError::Changed),
        _ => Err(unavailable("error answer")),
    }
}
