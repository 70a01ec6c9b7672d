//! The pin filler: fetches the bytes pinned files still lack.
//!
//! It reads each file through the engine, like a player would
//! ([`Daemon::read`]), from its first uncached byte on, so every byte it
//! brings in is cut, stored, indexed and verified as usual, and a file
//! being filled is also a file being read ahead. The core says which files
//! need bytes and where ([`musicfs_core::engine::Engine::pins_to_fill`],
//! `next_uncached`); this only walks them, one read at a time.
//!
//! It wakes when pins are added ([`PinFiller::kick`]), after a sync changed
//! the tree (a retagged pinned file is fetched again), at start (a pin
//! whose fetch a crash cut short is finished), and every
//! [`RETRY_AFTER_FAILURE`] while some file could not be fetched (its
//! origin was down). Each read is bounded by the engine's read timeout, so
//! a pass never hangs; the supervisor aborts it at shutdown.

use crate::exec::daemon::{Daemon, ReadReply};
use musicfs_core::Ino;
use musicfs_core::fs::Errno;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// Why a pinned file was not fetched (shown by `musicfs pin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    /// The read through the engine failed (the origin is down, the file
    /// changed, ...).
    #[error("read failed ({0:?})")]
    Read(Errno),
    /// The daemon dropped the read (it is shutting down).
    #[error("read dropped")]
    Dropped,
}

/// Bytes asked per read: a big player read (the engine reads ahead of it).
const READ_BYTES: u32 = 1 << 20;
/// After a pass where some file could not be fetched, try again this often.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Fetches what pinned files lack; see the module docs.
pub struct PinFiller {
    daemon: Arc<Daemon>,
    kick: Notify,
    /// Bumped when pins are paused or released: a pass under way stops and
    /// a new one looks again.
    generation: AtomicU64,
    /// Work was asked for since the last pass began.
    pending: AtomicBool,
    /// A pass runs.
    in_pass: AtomicBool,
    /// Files the last pass could not fetch, and why.
    failed: Mutex<BTreeMap<Ino, FillError>>,
}

/// A read's answer, delivered to the filler instead of the kernel.
struct Reply(oneshot::Sender<Result<usize, Errno>>);

impl ReadReply for Reply {
    fn data(self: Box<Self>, data: &[u8]) {
        let _ = self.0.send(Ok(data.len()));
    }
    fn error(self: Box<Self>, errno: Errno) {
        let _ = self.0.send(Err(errno));
    }
}

impl PinFiller {
    /// A filler over `daemon`; [`PinFiller::run`] does the work.
    pub fn new(daemon: Arc<Daemon>) -> Arc<PinFiller> {
        Arc::new(PinFiller {
            daemon,
            kick: Notify::new(),
            generation: AtomicU64::new(0),
            pending: AtomicBool::new(false),
            in_pass: AtomicBool::new(false),
            failed: Mutex::new(BTreeMap::new()),
        })
    }

    /// Look for work (pins were added, or the tree changed).
    pub fn kick(&self) {
        self.pending.store(true, Ordering::SeqCst);
        self.kick.notify_one();
    }

    /// Pins were paused or released: stop the pass under way, look again.
    pub fn interrupt(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.kick();
    }

    /// Whether a pass runs or is about to.
    pub fn is_busy(&self) -> bool {
        self.pending.load(Ordering::SeqCst) || self.in_pass.load(Ordering::SeqCst)
    }

    /// Files the last pass could not fetch, with the reason.
    pub fn failed(&self) -> BTreeMap<Ino, FillError> {
        self.failed.lock().clone()
    }

    /// Runs passes until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        // At start: pins a crash or a shutdown cut short are finished.
        self.kick();
        loop {
            if !self.pending.load(Ordering::SeqCst) {
                let retry = !self.failed.lock().is_empty();
                if retry {
                    tokio::select! {
                        () = self.kick.notified() => {}
                        () = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
                    }
                } else {
                    self.kick.notified().await;
                }
            }
            // Busy from before `pending` clears until the pass ends, so a
            // client never sees a gap between a kick and its pass.
            self.in_pass.store(true, Ordering::SeqCst);
            self.pending.store(false, Ordering::SeqCst);
            self.pass().await;
            self.in_pass.store(false, Ordering::SeqCst);
        }
    }

    /// One walk over the pinned files that lack bytes.
    async fn pass(&self) {
        let generation = self.generation.load(Ordering::SeqCst);
        let todo = self.daemon.inspect(|e| e.pins_to_fill());
        if todo.is_empty() {
            self.failed.lock().clear();
            return;
        }
        tracing::info!(files = todo.len(), "fetching pinned files");
        let mut failed = BTreeMap::new();
        let (mut done, started) = (0usize, std::time::Instant::now());
        for ino in todo {
            if self.generation.load(Ordering::SeqCst) != generation {
                // Paused or released: the next pass sees what is left.
                break;
            }
            match self.fill(ino, generation).await {
                Ok(()) => done += 1,
                Err(why) => {
                    tracing::debug!(ino = ino.0, why = %why, "pinned file not fetched");
                    failed.insert(ino, why);
                }
            }
        }
        if failed.is_empty() {
            tracing::info!(
                files = done,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "pinned files fetched"
            );
        } else {
            tracing::warn!(
                fetched = done,
                failed = failed.len(),
                retry_in = ?RETRY_AFTER_FAILURE,
                "some pinned files could not be fetched (origin down?); trying again later"
            );
        }
        *self.failed.lock() = failed;
    }

    /// Reads `ino` from its first uncached byte to its end.
    async fn fill(&self, ino: Ino, generation: u64) -> Result<(), FillError> {
        let mut pos = 0;
        while let Some(at) = self.daemon.inspect(|e| e.next_uncached(ino, pos)) {
            if self.generation.load(Ordering::SeqCst) != generation {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            self.daemon.read(ino.0, at, READ_BYTES, Box::new(Reply(tx)));
            match rx.await {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => pos = at + n as u64,
                Ok(Err(errno)) => return Err(FillError::Read(errno)),
                Err(_) => return Err(FillError::Dropped),
            }
        }
        Ok(())
    }
}
