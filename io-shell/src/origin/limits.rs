//! Bounds on how a remote origin talks to its server.
//!
//! A FUSE read must never hang on a dead network, and a scan of a big
//! bucket must not turn into a flood of requests. So every remote origin
//! keeps to a [`RemoteLimits`]: each network call has a timeout, retries of
//! idempotent metadata requests are few and spaced out, and a
//! [`RequestGate`] caps the requests in flight and the rate at which new
//! ones start, whoever asks (the scanner's workers, the daemon's fetches).

use super::OriginError;
use parking_lot::Mutex;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long and how hard a remote origin may try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteLimits {
    /// Longest wait to establish a connection: TCP connect plus the TLS or
    /// SSH handshake and authentication.
    pub connect_timeout: Duration,
    /// Longest wait for one request: a ranged GET or SFTP read, a stat, one
    /// listing page. The daemon puts its own deadline around whole reads on
    /// top of this; the scanner relies on this one.
    pub request_timeout: Duration,
    /// Further attempts after a transient failure of an idempotent metadata
    /// request (stat, listing page). Reads are not retried inside the
    /// origin: the engine retries fetches with its own backoff, and a scan
    /// retries a file as a whole.
    pub retries: u32,
    /// Requests in flight to this origin at most.
    pub max_in_flight: usize,
    /// New requests per second at most: a sanity cap so that a bug or a
    /// huge scan cannot hammer a server, not a tuning knob.
    pub max_requests_per_sec: u32,
}

impl Default for RemoteLimits {
    fn default() -> RemoteLimits {
        RemoteLimits {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            retries: 2,
            max_in_flight: 32,
            max_requests_per_sec: 1000,
        }
    }
}

/// Admits requests to one origin: at most `max_in_flight` at once, started
/// at most `max_requests_per_sec` per second (evenly spaced).
pub(crate) struct RequestGate {
    permits: Arc<Semaphore>,
    interval: Duration,
    next_slot: Mutex<Instant>,
}

impl RequestGate {
    pub(crate) fn new(limits: &RemoteLimits) -> RequestGate {
        let rate = limits.max_requests_per_sec.max(1);
        RequestGate {
            permits: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            interval: Duration::from_secs(1) / rate,
            next_slot: Mutex::new(Instant::now()),
        }
    }

    /// Waits for a slot; the request may run while the permit is held.
    pub(crate) async fn enter(&self) -> Result<OwnedSemaphorePermit, OriginError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| OriginError::Unavailable("origin is shutting down".into()))?;
        let wait = {
            let mut next = self.next_slot.lock();
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(permit)
    }
}

/// Runs `fut`, turning a timeout after `limit` into `Unavailable`.
pub(crate) async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, OriginError>>,
) -> Result<T, OriginError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(OriginError::Unavailable(format!(
            "{what} timed out after {:.1} s",
            limit.as_secs_f64()
        ))),
    }
}

/// Runs an idempotent request up to `1 + limits.retries` times, each
/// attempt bounded by `limits.request_timeout`, retrying only
/// `Unavailable` (a missing or changed file is an answer, not a failure),
/// with a short growing pause between attempts.
pub(crate) async fn with_retries<T, F, Fut>(
    limits: &RemoteLimits,
    what: &str,
    mut attempt: F,
) -> Result<T, OriginError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OriginError>>,
{
    let mut pause = Duration::from_millis(200);
    let mut tries = 0;
    loop {
        match bounded(limits.request_timeout, what, attempt()).await {
            Err(OriginError::Unavailable(why)) if tries < limits.retries => {
                tracing::debug!(what, why = %why, "transient origin failure; retrying");
                tries += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 4).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gate_spaces_requests() {
        let limits = RemoteLimits {
            max_requests_per_sec: 100,
            ..RemoteLimits::default()
        };
        let gate = RequestGate::new(&limits);
        let start = Instant::now();
        for _ in 0..5 {
            drop(gate.enter().await.unwrap());
        }
        // Five starts at 100/s: the fifth waits four intervals.
        assert!(start.elapsed() >= Duration::from_millis(39));
    }

    #[tokio::test]
    async fn retries_only_transient_failures() {
        let limits = RemoteLimits::default();
        let mut calls = 0;
        let r: Result<(), _> = with_retries(&limits, "stat", || {
            calls += 1;
            async { Err(OriginError::NotFound) }
        })
        .await;
        assert!(matches!(r, Err(OriginError::NotFound)));
        assert_eq!(calls, 1);

        let mut calls = 0;
        let r: Result<(), _> = with_retries(&limits, "stat", || {
            calls += 1;
            async { Err(OriginError::Unavailable("down".into())) }
        })
        .await;
        assert!(matches!(r, Err(OriginError::Unavailable(_))));
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn a_hung_request_times_out() {
        let limits = RemoteLimits {
            retries: 0,
            request_timeout: Duration::from_millis(200),
            ..RemoteLimits::default()
        };
        let r: Result<(), _> =
            with_retries(&limits, "read", std::future::pending::<Result<(), _>>).await;
        match r {
            Err(OriginError::Unavailable(why)) => assert!(why.contains("timed out"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
