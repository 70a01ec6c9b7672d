//! Seeds, random streams and the swarm: which faults a seed turns on, and
//! the engine configuration it runs with.
//!
//! Everything in a run derives from one `u64` seed. Each subsystem (the
//! library, the clients, the disk, each origin, the fault schedule) draws
//! from its own ChaCha stream, so adding a draw to one subsystem does not
//! reshuffle every other: a seed that found a bug keeps finding it while the
//! harness grows around it.
//!
//! Swarm testing (as TigerBeetle's VOPR and FoundationDB's BUGGIFY do): each
//! seed first draws which fault kinds are on at all and how hard they hit,
//! some at zero. A run with every fault on at once tests mostly the error
//! paths; runs with few faults reach the deep states where bugs hide.

use crate::trace::Fnv;
use musicfs_core::OriginId;
use musicfs_core::engine::{Config, DiskFault, HealthConfig, PlantedBugs};
use musicfs_core::exec::ExecConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// The random stream of one subsystem of one seed.
pub type Stream = ChaCha8Rng;

/// SplitMix64's finaliser: spreads neighbouring seeds far apart.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The stream called `name` of `seed`.
pub fn stream(seed: u64, name: &str) -> Stream {
    let mut h = Fnv::default();
    name.hash(&mut h);
    ChaCha8Rng::seed_from_u64(splitmix(seed ^ h.finish()))
}

/// A draw from an exponential distribution of mean `mean_ms`, in ms
/// (at least 1): the gaps between independent fault episodes.
pub fn exp_ms(rng: &mut Stream, mean_ms: u64) -> u64 {
    let u: f64 = rng.random_range(0.0..1.0);
    let x = -(mean_ms as f64) * (1.0 - u).ln();
    (x as u64).clamp(1, mean_ms.saturating_mul(20))
}

/// Episodes of a fault: on for about `len_ms`, off for about `gap_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Episodes {
    /// Mean time between episodes.
    pub gap_ms: u64,
    /// Mean length of one episode.
    pub len_ms: u64,
}

/// How a flaky origin misbehaves while an episode lasts: each request draws
/// one of these (percentages, the rest is answered normally).
#[derive(Clone, Copy, Debug)]
pub struct Flaky {
    /// When the origin is flaky.
    pub episodes: Episodes,
    /// Answer after a delay of up to `slow_max_ms`.
    pub slow_pct: u8,
    /// Longest delay.
    pub slow_max_ms: u64,
    /// Never answer.
    pub hang_pct: u8,
    /// Close the connection without answering.
    pub drop_pct: u8,
    /// Announce the full length, send part of it, close.
    pub cut_pct: u8,
    /// A well-formed answer shorter than asked (a misbehaving server; the
    /// io-shell takes it as a changed file, as the daemon does).
    pub short_pct: u8,
    /// Answer with an error.
    pub error_pct: u8,
}

/// Faults on the cache disk while an episode lasts.
#[derive(Clone, Copy, Debug)]
pub struct DiskEpisodes {
    /// When.
    pub episodes: Episodes,
    /// Share of operations that fail.
    pub pct: u8,
    /// How stores fail.
    pub kind: DiskFault,
}

/// Everything a seed decided about its run before it starts.
#[derive(Clone, Debug)]
pub struct Swarm {
    /// Number of origins.
    pub origins: u16,
    /// Distinct tracks in the library at the start.
    pub tracks: usize,
    /// Share of tracks also held by a second origin (a mirror).
    pub mirror_pct: u8,
    /// Share of tracks with a twin: same tags, other bytes and size, so the
    /// tree must name one of them " (2)".
    pub twin_pct: u8,
    /// Share of albums with a cover image.
    pub cover_pct: u8,
    /// Largest file.
    pub size_max: u64,
    /// Cache limit.
    pub cache_capacity: u64,
    /// Concurrent simulated FUSE clients.
    pub clients: usize,
    /// Length of the phase with faults.
    pub chaos_ms: u64,
    /// Largest one-way network latency.
    pub latency_max_ms: u64,
    /// Largest cache-disk operation latency.
    pub disk_latency_max_us: u64,
    /// Which origins partitions, stalls and flakiness hit (bit i: origin
    /// i). Often not all: a clean mirror is what failover needs.
    pub faulty_origins: u8,
    /// Network partitions between the daemon and each faulty origin.
    pub partitions: Option<Episodes>,
    /// Origins that stop answering altogether for a while.
    pub stalls: Option<Episodes>,
    /// Slow, hung, dropped, cut and short answers.
    pub flaky: Option<Flaky>,
    /// Mean time between content changes at the origins.
    pub mutations_gap_ms: Option<u64>,
    /// Time between rescans.
    pub rescan_ms: u64,
    /// Mean time between daemon crashes.
    pub crash_gap_ms: Option<u64>,
    /// The disk acknowledges writes before they are durable: a crash tears
    /// chunk files whose index entries may survive.
    pub lying_disk: bool,
    /// EIO/ENOSPC when storing chunks.
    pub store_faults: Option<DiskEpisodes>,
    /// EIO when reading chunks.
    pub read_faults: Option<DiskEpisodes>,
    /// Mean time between bit flips in chunk files.
    pub bitflip_gap_ms: Option<u64>,
    /// Mean time between chunk files vanishing.
    pub lost_chunk_gap_ms: Option<u64>,
    /// Mean time between forward clock jumps, and the largest jump.
    pub clock_jumps: Option<(u64, u64)>,
    /// Pause between health checks of a healthy origin: some shorter than
    /// the read timeout (checks find a stalled origin first), some longer,
    /// as the daemon's defaults are (only fetch failures can).
    pub health_check_ms: u64,
    /// Origins whose reads bypass the cache (`cache=off`), as a bit set:
    /// one seed in five has one (drawn from its own stream, `"uncached"`,
    /// so the other options of a seed stay what they were).
    pub uncached_origins: u32,
    /// Origins whose readers are answered straight from them while the
    /// cache fills behind (`fill=behind`), as a bit set: one seed in three
    /// has one (drawn from its own stream, `"behind"`, so the other
    /// options of a seed stay what they were).
    pub fill_behind_origins: u32,
    /// Origin requests of one fetch in flight together.
    pub pieces_in_flight: usize,
    /// Group writes of the cache in flight together: 1 in half the seeds,
    /// else 2 or 3 (drawn from their own stream, `"writes"`, so the other
    /// options of a seed stay what they were).
    pub writes_in_flight: usize,
    /// Streams' read-ahead reads of the cache disk under way together: 1 to 4, or
    /// 64 (as good as no limit) in a quarter of the seeds (drawn from their
    /// own stream, `"warms"`, so the other options of a seed stay what
    /// they were).
    pub warm_reads_in_flight: usize,
    /// What a first scan kept of every track of a cached origin (head and
    /// tail bytes), in half the seeds (drawn from their own stream,
    /// `"kept"`, so the other options of a seed stay what they were).
    pub kept: Option<(u64, u64)>,
    /// Bugs planted in the engine and the executor for this run.
    pub planted: PlantedBugs,
}

/// How often a fault kind is on at all (FoundationDB uses 1 in 4; the
/// liveness rules excuse a read from most checks while any fault touches it,
/// so more faults per seed would mean fewer reads checked in full).
const FAULT_ON_PCT: f64 = 0.45;

fn maybe<T>(rng: &mut Stream, p: f64, f: impl FnOnce(&mut Stream) -> T) -> Option<T> {
    if rng.random_bool(p) {
        Some(f(rng))
    } else {
        None
    }
}

fn episodes(rng: &mut Stream, gap: (u64, u64), len: (u64, u64)) -> Episodes {
    Episodes {
        gap_ms: rng.random_range(gap.0..=gap.1),
        len_ms: rng.random_range(len.0..=len.1),
    }
}

impl Swarm {
    /// Draws the swarm of `seed`, with `planted` bugs.
    pub fn draw(seed: u64, planted: PlantedBugs) -> Swarm {
        let rng = &mut stream(seed, "swarm");
        let p = FAULT_ON_PCT;
        let origins = rng.random_range(1..=3u16);
        Swarm {
            origins,
            tracks: rng.random_range(3..=14),
            mirror_pct: if origins > 1 {
                rng.random_range(10..=90)
            } else {
                0
            },
            twin_pct: rng.random_range(0..=15),
            cover_pct: rng.random_range(0..=50),
            size_max: [64 << 10, 400 << 10, 1200 << 10][rng.random_range(0..3)],
            cache_capacity: [1536 << 10, 3 << 20, 8 << 20, 64 << 20][rng.random_range(0..4)],
            clients: rng.random_range(1..=5),
            chaos_ms: rng.random_range(8_000..=24_000),
            latency_max_ms: rng.random_range(1..=15),
            disk_latency_max_us: [50, 2_000, 40_000][rng.random_range(0..3)],
            faulty_origins: (0..origins)
                .filter(|_| rng.random_bool(0.6))
                .fold(0, |m, i| m | 1 << i),
            partitions: maybe(rng, p, |r| episodes(r, (1_000, 8_000), (100, 4_000))),
            stalls: maybe(rng, p, |r| episodes(r, (1_000, 8_000), (3_000, 15_000))),
            flaky: maybe(rng, p, |r| Flaky {
                episodes: episodes(r, (500, 6_000), (200, 5_000)),
                slow_pct: r.random_range(0..=40),
                slow_max_ms: r.random_range(50..=3_000),
                hang_pct: r.random_range(0..=20),
                drop_pct: r.random_range(0..=20),
                cut_pct: r.random_range(0..=15),
                short_pct: r.random_range(0..=5),
                error_pct: r.random_range(0..=15),
            }),
            mutations_gap_ms: maybe(rng, p, |r| r.random_range(500..=6_000)),
            rescan_ms: rng.random_range(1_000..=8_000),
            crash_gap_ms: maybe(rng, p * 0.7, |r| r.random_range(3_000..=15_000)),
            lying_disk: rng.random_bool(0.5),
            store_faults: maybe(rng, p * 0.6, |r| DiskEpisodes {
                episodes: episodes(r, (2_000, 10_000), (100, 3_000)),
                pct: r.random_range(10..=100),
                kind: [DiskFault::NoSpace, DiskFault::Io, DiskFault::NoDescriptors]
                    [r.random_range(0..3)],
            }),
            read_faults: maybe(rng, p * 0.6, |r| DiskEpisodes {
                episodes: episodes(r, (2_000, 10_000), (100, 2_000)),
                pct: r.random_range(5..=60),
                kind: DiskFault::Io,
            }),
            bitflip_gap_ms: maybe(rng, p, |r| r.random_range(200..=3_000)),
            lost_chunk_gap_ms: maybe(rng, p * 0.6, |r| r.random_range(500..=5_000)),
            clock_jumps: maybe(rng, p * 0.5, |r| {
                (r.random_range(2_000..=10_000), r.random_range(100..=40_000))
            }),
            health_check_ms: [2_000, 8_000, 20_000, 30_000][rng.random_range(0..4)],
            uncached_origins: {
                let r = &mut stream(seed, "uncached");
                if r.random_bool(0.2) {
                    1 << r.random_range(0..origins)
                } else {
                    0
                }
            },
            fill_behind_origins: {
                let r = &mut stream(seed, "behind");
                if r.random_bool(1.0 / 3.0) {
                    1 << r.random_range(0..origins)
                } else {
                    0
                }
            },
            pieces_in_flight: stream(seed, "exec").random_range(1..=4),
            writes_in_flight: {
                // One at a time in half the seeds: the executor as it was
                // before writes overlapped, so older seeds replay as they did.
                let r = &mut stream(seed, "writes");
                if r.random_bool(0.5) {
                    1
                } else {
                    r.random_range(2..=3)
                }
            },
            warm_reads_in_flight: {
                let r = &mut stream(seed, "warms");
                if r.random_bool(0.25) {
                    64
                } else {
                    r.random_range(1..=4)
                }
            },
            kept: {
                let r = &mut stream(seed, "kept");
                r.random_bool(0.5)
                    .then(|| (r.random_range(1..=64) << 12, r.random_range(0..=16) << 12))
            },
            planted,
        }
    }

    /// The executor's limits, scaled to simulated files: small pieces, a
    /// small memory (so most serves read the disk), small write batches
    /// (1 to 3 in flight), and 1 to 4 requests per fetch in flight (drawn from their own
    /// stream, `"exec"`, so the other options of a seed stay what they were).
    pub fn exec_config(&self) -> ExecConfig {
        let base = ExecConfig::for_engine(&self.engine_config());
        ExecConfig {
            piece_bytes: 256 << 10,
            pieces_in_flight: self.pieces_in_flight,
            memory_bytes: 256 << 10,
            write_batch_bytes: 1 << 20,
            writes_in_flight: self.writes_in_flight,
            warm_reads_in_flight: self.warm_reads_in_flight,
            write_queue_bytes: 2 << 20,
            passthrough_ahead_bytes: 64 << 10,
            ..base
        }
    }

    /// The engine's configuration: the defaults scaled down to the size of a
    /// simulated library and a simulated minute, with this seed's cache size.
    pub fn engine_config(&self) -> Config {
        Config {
            read_timeout: Duration::from_secs(8),
            fetch_stall_timeout: Duration::from_millis(1_500),
            fetch_retries_max: 4,
            retry_backoff_base: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(1),
            cache_capacity_bytes: self.cache_capacity,
            evict_start_pct: 90,
            evict_stop_pct: 80,
            readahead_min_bytes: 256 << 10,
            readahead_max_bytes: 1 << 20,
            // Simulated tracks are a few hundred KiB: read them ahead of
            // after a few reads, in small pieces.
            passthrough_ahead_after: 64 << 10,
            seek_align_bytes: 512 << 10,
            verify_batch_bytes: 1 << 20,
            disk_probe_interval: Duration::from_secs(2),
            reads_in_flight_max: 4096,
            pin_share_pct: 60,
            uncached_origins: (0..self.origins)
                .filter(|i| self.uncached_origins & (1 << i) != 0)
                .map(OriginId)
                .collect(),
            fill_behind_origins: (0..self.origins)
                .filter(|i| self.fill_behind_origins & (1 << i) != 0)
                .map(OriginId)
                .collect(),
            fill_behind_after: Duration::from_millis(300),
            health: HealthConfig {
                check_interval: Duration::from_millis(self.health_check_ms),
                check_timeout: Duration::from_secs(1),
                unhealthy_after_failures: 3,
                healthy_after_successes: 2,
                dead_backoff_base: Duration::from_millis(500),
                dead_backoff_max: Duration::from_secs(5),
                on_demand_gap: Duration::from_millis(300),
            },
            planted: self.planted,
        }
    }

    /// How long after an origin fault ends its effects may still be felt:
    /// a request or health check sent during the fault may hang until the
    /// stall or check timeout, or answer after the longest delay; the
    /// failure it caused pauses the source for up to the longest backoff,
    /// and a failed check keeps the next one away for the on-demand gap. The
    /// EIO rule only judges reads whose source was clean this long before.
    pub fn fault_shadow(&self, config: &Config) -> Duration {
        let slow = Duration::from_millis(self.flaky.map_or(0, |f| f.slow_max_ms));
        let hang = slow
            .max(config.fetch_stall_timeout)
            .max(config.health.check_timeout);
        hang + config.retry_backoff_max + config.health.on_demand_gap + Duration::from_millis(200)
    }
}

fn onoff<T: fmt::Debug>(v: &Option<T>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "off".into(),
    }
}

impl fmt::Display for Swarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  library: {} origins, {} tracks, mirrors {}%, twins {}%, covers {}%, files up to {} KiB",
            self.origins,
            self.tracks,
            self.mirror_pct,
            self.twin_pct,
            self.cover_pct,
            self.size_max >> 10
        )?;
        writeln!(
            f,
            "  run: {} clients, chaos {} ms, cache {} KiB, net latency <= {} ms, disk latency <= {} us, rescan every {} ms, health checks every {} ms",
            self.clients,
            self.chaos_ms,
            self.cache_capacity >> 10,
            self.latency_max_ms,
            self.disk_latency_max_us,
            self.rescan_ms,
            self.health_check_ms
        )?;
        let faulty: Vec<u16> = (0..self.origins)
            .filter(|i| self.faulty_origins & 1 << i != 0)
            .collect();
        writeln!(f, "  origin faults hit origins {faulty:?}")?;
        writeln!(f, "  partitions: {}", onoff(&self.partitions))?;
        writeln!(f, "  stalled origins: {}", onoff(&self.stalls))?;
        writeln!(f, "  flaky origins: {}", onoff(&self.flaky))?;
        writeln!(
            f,
            "  content changes every ~ms: {}",
            onoff(&self.mutations_gap_ms)
        )?;
        writeln!(
            f,
            "  crashes every ~ms: {}, lying disk (torn writes): {}",
            onoff(&self.crash_gap_ms),
            self.lying_disk
        )?;
        writeln!(f, "  store faults: {}", onoff(&self.store_faults))?;
        writeln!(f, "  read faults: {}", onoff(&self.read_faults))?;
        writeln!(
            f,
            "  bit flips every ~ms: {}, lost chunks every ~ms: {}",
            onoff(&self.bitflip_gap_ms),
            onoff(&self.lost_chunk_gap_ms)
        )?;
        writeln!(
            f,
            "  clock jumps (gap ms, max ms): {}",
            onoff(&self.clock_jumps)
        )?;
        writeln!(
            f,
            "  cache=off origins (bit set): {:#b}",
            self.uncached_origins
        )?;
        writeln!(
            f,
            "  fill=behind origins (bit set): {:#b}",
            self.fill_behind_origins
        )?;
        write!(f, "  planted bugs: {:?}", self.planted)
    }
}
