//! `--metrics-addr`: Prometheus metrics over HTTP (`GET /metrics`).
//!
//! Nothing is counted for the metrics alone in the read path: at each
//! scrape, one [`Collector`] reads what the daemon already keeps (the
//! engine's [`Stats`](musicfs_core::engine::Stats), the cache, origin
//! health, pins, the io-shell's per-origin [`IoStats`](crate::exec::daemon::IoStats)
//! and the syncer's counters) and writes it in the text format. The
//! exposition format comes from `prometheus-client`, the Prometheus
//! project's own Rust client (small: no HTTP stack of its own, which a
//! one-route server on the daemon's tokio runtime does not need).

use crate::exec::daemon::Daemon;
use crate::library::sync::Syncer;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads the daemon's state at each scrape.
pub struct Metrics {
    daemon: Arc<Daemon>,
    syncer: Arc<Syncer>,
    /// The `origin` label of each origin: its name, else its number.
    origins: Vec<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

/// A value read at scrape time.
fn load(v: &AtomicU64) -> u64 {
    v.load(Ordering::Relaxed)
}

/// Writes one metric with no labels.
fn one(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}

/// Writes one metric per label set.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(Vec<(&str, String)>, M)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in series {
        metric.encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Metrics {
    /// The metrics of this daemon; `origins` names them for the labels.
    pub fn new(daemon: Arc<Daemon>, syncer: Arc<Syncer>, origins: Vec<String>) -> Metrics {
        Metrics {
            daemon,
            syncer,
            origins,
        }
    }

    fn label(&self, i: usize) -> Vec<(&'static str, String)> {
        let name = self
            .origins
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string());
        vec![("origin", name)]
    }

    /// A counter per origin, from `value(i)`.
    fn per_origin_counter(
        &self,
        enc: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        value: impl Fn(usize) -> u64,
    ) -> std::fmt::Result {
        let series: Vec<_> = (0..self.origins.len())
            .map(|i| (self.label(i), ConstCounter::new(value(i))))
            .collect();
        family(enc, name, help, MetricType::Counter, &series)
    }
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let d = &self.daemon;
        struct Snapshot {
            stats: musicfs_core::engine::Stats,
            cache_bytes: u64,
            capacity: u64,
            chunks: u64,
            passthrough: bool,
            reads_in_flight: u64,
            fetches_in_flight: u64,
            fill_waiting: (usize, u64, usize),
            tracks: u64,
            health: Vec<(usize, String, u32)>,
            pinned_files: u64,
            pinned_bytes: u64,
            pinned_cached: u64,
        }
        // One short look under the engine's lock.
        let s = d.inspect(|e| {
            let pins = e.pinned_files();
            Snapshot {
                stats: e.stats().clone(),
                cache_bytes: e.cache().bytes(),
                capacity: e.cache().capacity_bytes(),
                chunks: e.cache().len() as u64,
                passthrough: e.in_passthrough(),
                reads_in_flight: e.reads_in_flight() as u64,
                fetches_in_flight: e.fetches_in_flight() as u64,
                fill_waiting: e.fills_waiting(),
                tracks: e.tree().file_count() as u64,
                health: e
                    .origin_statuses()
                    .into_iter()
                    .map(|h| {
                        (
                            usize::from(h.origin.0),
                            h.health.to_string(),
                            h.consecutive_failures,
                        )
                    })
                    .collect(),
                pinned_files: pins.len() as u64,
                pinned_bytes: e.pinned_bytes(),
                pinned_cached: pins.iter().map(|p| p.cached_bytes.min(p.size)).sum(),
            }
        });
        let st = &s.stats;
        let io = &d.io_stats;
        let counter = |v: u64| ConstCounter::new(v);
        let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));

        // Reads.
        family(
            &mut enc,
            "musicfs_reads",
            "Reads answered, by how: from the cache, passed through to an origin (cache disk failing), or failed (EIO)",
            MetricType::Counter,
            &[
                (
                    vec![("result", "cache".to_owned())],
                    counter(st.reads_served),
                ),
                (
                    vec![("result", "passthrough".to_owned())],
                    counter(st.reads_passthrough),
                ),
                (
                    vec![("result", "failed".to_owned())],
                    counter(st.reads_failed),
                ),
            ],
        )?;
        one(
            &mut enc,
            "musicfs_read_cache_hits",
            "Reads answered from the cache without waiting for an origin",
            &counter(st.reads_hit),
        )?;
        one(
            &mut enc,
            "musicfs_read_cache_bytes",
            "Bytes answered from the cache",
            &counter(load(&io.served_bytes)),
        )?;
        one(
            &mut enc,
            "musicfs_pages_primed_bytes",
            "Cached bytes handed to the kernel's page cache ahead of a tag scan's reads",
            &counter(load(&io.primed_bytes)),
        )?;
        one(
            &mut enc,
            "musicfs_reads_in_flight",
            "Reads waiting for an answer",
            &gauge(s.reads_in_flight),
        )?;

        // Origins.
        self.per_origin_counter(
            &mut enc,
            "musicfs_origin_passthrough_reads",
            "Reads answered straight from the origin (cache disk failing)",
            |i| io.origins.get(i).map_or(0, |o| load(&o.passthrough_reads)),
        )?;
        self.per_origin_counter(
            &mut enc,
            "musicfs_origin_passthrough_bytes",
            "Bytes answered straight from the origin",
            |i| io.origins.get(i).map_or(0, |o| load(&o.passthrough_bytes)),
        )?;
        self.per_origin_counter(
            &mut enc,
            "musicfs_origin_requests",
            "Requests to the origin to fill the cache (fetches ask in pieces), well or not",
            |i| io.origins.get(i).map_or(0, |o| load(&o.requests)),
        )?;
        self.per_origin_counter(
            &mut enc,
            "musicfs_origin_fetch_bytes",
            "Bytes read from the origin to fill the cache",
            |i| io.origins.get(i).map_or(0, |o| load(&o.fetched_bytes)),
        )?;
        self.per_origin_counter(
            &mut enc,
            "musicfs_origin_errors",
            "Requests and passthrough reads that failed (unreachable, timed out, file changed or gone)",
            |i| {
                io.origins.get(i).map_or(0, |o| {
                    load(&o.request_errors) + load(&o.passthrough_errors)
                })
            },
        )?;
        {
            let mut m = enc.encode_descriptor(
                "musicfs_origin_request_duration_seconds",
                "How long requests to the origin to fill the cache took",
                None,
                MetricType::Histogram,
            )?;
            for (i, o) in io.origins.iter().enumerate() {
                let labels = self.label(i);
                o.request_seconds.encode(m.encode_family(&labels)?)?;
            }
        }
        let states = ["healthy", "degraded", "unhealthy"];
        let mut health = Vec::new();
        for (i, state, _) in &s.health {
            for st in states {
                let mut labels = self.label(*i);
                labels.push(("state", st.to_owned()));
                health.push((labels, gauge(u64::from(state == st))));
            }
        }
        family(
            &mut enc,
            "musicfs_origin_health",
            "1 for the origin's health state (healthy, degraded, unhealthy), 0 for the others",
            MetricType::Gauge,
            &health,
        )?;
        let failures: Vec<_> = s
            .health
            .iter()
            .map(|(i, _, f)| (self.label(*i), gauge(u64::from(*f))))
            .collect();
        family(
            &mut enc,
            "musicfs_origin_consecutive_failures",
            "Failed health checks and reads in a row",
            MetricType::Gauge,
            &failures,
        )?;
        one(
            &mut enc,
            "musicfs_fetches_in_flight",
            "Fetches running",
            &gauge(s.fetches_in_flight),
        )?;
        let (fill_files, fill_bytes, _) = s.fill_waiting;
        one(
            &mut enc,
            "musicfs_fill_behind_waiting_files",
            "Files read from fill=behind origins whose bytes are not cached yet",
            &gauge(fill_files as u64),
        )?;
        one(
            &mut enc,
            "musicfs_fill_behind_waiting_bytes",
            "Bytes read from fill=behind origins not cached yet",
            &gauge(fill_bytes),
        )?;
        one(
            &mut enc,
            "musicfs_fill_behind_files",
            "Files whose reads were cached behind their readers",
            &counter(st.fills_behind),
        )?;

        // Cache.
        one(
            &mut enc,
            "musicfs_cache_size_bytes",
            "Bytes in the chunk cache",
            &gauge(s.cache_bytes),
        )?;
        one(
            &mut enc,
            "musicfs_cache_capacity_bytes",
            "The chunk cache's limit (--cache-size)",
            &gauge(s.capacity),
        )?;
        one(
            &mut enc,
            "musicfs_cache_chunks",
            "Chunks in the cache",
            &gauge(s.chunks),
        )?;
        one(
            &mut enc,
            "musicfs_cache_evicted_chunks",
            "Chunks evicted to make room",
            &counter(st.chunks_evicted),
        )?;
        one(
            &mut enc,
            "musicfs_cache_dropped_chunks",
            "Chunks dropped because their file was missing or corrupt",
            &counter(st.chunks_dropped),
        )?;
        one(
            &mut enc,
            "musicfs_cache_stored_bytes",
            "Chunk bytes written to the cache disk",
            &counter(load(&io.stored_bytes)),
        )?;
        one(
            &mut enc,
            "musicfs_cache_passthrough",
            "1 while the cache disk is failing and reads pass through to the origins",
            &gauge(u64::from(s.passthrough)),
        )?;

        // Syncs.
        let sync = &self.syncer.stats;
        self.per_origin_counter(
            &mut enc,
            "musicfs_sync_runs",
            "Syncs of the origin that ran to their end",
            |i| sync.get(i).map_or(0, |x| load(&x.runs)),
        )?;
        self.per_origin_counter(
            &mut enc,
            "musicfs_sync_failures",
            "Syncs of the origin that failed or stopped early",
            |i| sync.get(i).map_or(0, |x| load(&x.failures)),
        )?;
        let mut changes = Vec::new();
        for (i, x) in sync.iter().enumerate() {
            for (kind, v) in [
                ("read", &x.read),
                ("removed", &x.removed),
                ("moved", &x.moved),
            ] {
                let mut labels = self.label(i);
                labels.push(("change", kind.to_owned()));
                changes.push((labels, counter(load(v))));
            }
        }
        family(
            &mut enc,
            "musicfs_sync_changes",
            "Files that syncs read again (new or changed), removed or moved",
            MetricType::Counter,
            &changes,
        )?;
        one(
            &mut enc,
            "musicfs_tracks",
            "Tracks in the tree",
            &gauge(s.tracks),
        )?;

        // Pins.
        one(
            &mut enc,
            "musicfs_pinned_files",
            "Files pinned for offline play",
            &gauge(s.pinned_files),
        )?;
        one(
            &mut enc,
            "musicfs_pinned_bytes",
            "Size of the pinned files",
            &gauge(s.pinned_bytes),
        )?;
        one(
            &mut enc,
            "musicfs_pinned_cached_bytes",
            "Bytes of the pinned files in the cache",
            &gauge(s.pinned_cached),
        )?;
        Ok(())
    }
}

/// Longest request head read.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// A client that sends no request within this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the metrics address (before anything slow, so that a taken port
/// fails the mount at once).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `GET /metrics` on `listener` until the runtime stops.
pub fn serve(
    listener: std::net::TcpListener,
    metrics: Metrics,
    rt: &tokio::runtime::Handle,
) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(metrics));
    let registry = Arc::new(registry);
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors, most likely: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, registry)).await;
            });
        }
    });
    Ok(addr)
}

/// Reads one request head and answers it; the connection is closed after.
async fn answer(mut stream: tokio::net::TcpStream, registry: Arc<Registry>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > REQUEST_BYTES_MAX {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or_default())
        .trim()
        .to_owned();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let encoded = tokio::task::spawn_blocking(move || {
                let mut text = String::new();
                prometheus_client::encoding::text::encode(&mut text, &registry).map(|()| text)
            })
            .await;
            match encoded {
                Ok(Ok(text)) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
                _ => (
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    "could not encode the metrics\n".to_owned(),
                ),
            }
        }
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "MusicFS: the metrics are at /metrics\n".to_owned(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
}
