//! # sim: deterministic simulation of the MusicFS core
//!
//! Drives the real [`musicfs_core::engine::Engine`] (never a copy of its
//! logic) through simulated FUSE clients, origins on a turmoil network, a
//! simulated cache disk and a simulated clock, with faults drawn per seed,
//! and checks invariants after every step. Everything derives from one
//! `u64` seed: a seed replays exactly, and `--trace` prints every event.
//!
//! - [`world`]: the discrete-event loop, phases, crashes, rescans.
//! - [`shell`]: the simulated io-shell, mirroring `io-shell/src/exec/daemon.rs`.
//! - [`net`], [`origin`]: turmoil hosts, the wire protocol, the library.
//! - [`disk`]: chunk files and database with their durability rules.
//! - [`client`]: players, seekers, bursts, walkers and the verifier.
//! - [`swarm`]: seeds, random streams, and the faults a seed turns on.
//! - `faults`: the fault schedule and what each fault does.
//! - [`invariants`]: the rules.
//! - [`trace`]: the event trace, its hash and its last events.
//!
//! The test harness is `tests/dst.rs` (`cargo test -p sim -- --help`); the
//! event model is described in `sim/README.md`.

mod client;
pub mod disk;
mod faults;
pub mod invariants;
pub mod net;
pub mod origin;
mod shell;
pub mod swarm;
pub mod trace;
pub mod world;

pub use invariants::Violation;
pub use musicfs_core::engine::PlantedBugs;
pub use swarm::Swarm;
pub use world::{RunStats, World};

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use trace::Stamped;

/// How to run a seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Bugs to plant in the engine.
    pub planted: PlantedBugs,
    /// Print every event as it happens.
    pub live_trace: bool,
}

/// How one seed ended.
#[derive(Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// What it drew.
    pub swarm: Swarm,
    /// The first broken invariant (a panic counts as one).
    pub violation: Option<Violation>,
    /// Hash of the whole event trace.
    pub trace_hash: u64,
    /// Number of events.
    pub events: u64,
    /// The last events, oldest first.
    pub last: Vec<Stamped>,
    /// Counters.
    pub stats: RunStats,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Routes panic messages to the failing seed's report instead of stderr.
fn quiet_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let msg = match info.location() {
                Some(l) => format!("{info} (at {}:{})", l.file(), l.line()),
                None => info.to_string(),
            };
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
        }));
    });
}

fn panic_violation() -> Violation {
    let msg = LAST_PANIC.with(|p| p.borrow_mut().take());
    Violation::new("no panic", msg.unwrap_or_else(|| "panicked".into()))
}

/// Runs one seed to its end.
pub fn run_seed(seed: u64, opts: &RunOptions) -> Outcome {
    quiet_panics();
    let swarm = Swarm::draw(seed, opts.planted);
    let built = catch_unwind(AssertUnwindSafe(|| {
        World::new(seed, swarm.clone(), opts.live_trace)
    }));
    let mut world = match built {
        Ok(w) => w,
        Err(_) => {
            return Outcome {
                seed,
                swarm,
                violation: Some(panic_violation()),
                trace_hash: 0,
                events: 0,
                last: Vec::new(),
                stats: RunStats::default(),
            };
        }
    };
    let violation = match catch_unwind(AssertUnwindSafe(|| world.run())) {
        Ok(v) => v,
        Err(_) => Some(panic_violation()),
    };
    Outcome {
        seed,
        swarm,
        violation,
        trace_hash: world.trace().hash(),
        events: world.trace().count(),
        last: world.trace().last().cloned().collect(),
        stats: world.stats().clone(),
    }
}
