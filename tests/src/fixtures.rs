//! A daemon driven in-process: the real engine, store, database and
//! origins, without a FUSE mount, so reads can be issued directly and their
//! errors seen exactly.

use musicfs::exec::daemon::{Daemon, ReadReply};
use musicfs::library::scan::{NoProgress, ScanOptions, scan_local};
use musicfs::origin::{LocalOrigin, Origin};
use musicfs::store::{ChunkBackend, ChunkStore, Db};
use musicfs_core::engine::{Config, Engine};
use musicfs_core::fs::Errno;
use musicfs_core::tree::VirtualTree;
use musicfs_core::{CatalogEntry, Ino, Layout, OriginId};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

struct ChannelReply(mpsc::Sender<Result<Vec<u8>, Errno>>);

impl ReadReply for ChannelReply {
    fn data(self: Box<Self>, data: &[u8]) {
        let _ = self.0.send(Ok(data.to_vec()));
    }
    fn error(self: Box<Self>, errno: Errno) {
        let _ = self.0.send(Err(errno));
    }
}

/// The daemon of a mount, without the mount.
pub struct TestDaemon {
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// Its runtime (dropped last).
    pub runtime: tokio::runtime::Runtime,
    /// The database.
    pub db: Arc<Db>,
}

/// Scans `root` as origin 0.
pub fn scan(root: &Path) -> Vec<CatalogEntry> {
    scan_local(OriginId(0), root, &ScanOptions::default(), &NoProgress)
        .expect("scan")
        .entries
}

/// A plain local origin as origin 0.
pub fn local_origin(root: &Path) -> Arc<dyn Origin> {
    Arc::new(LocalOrigin::new(OriginId(0), root.to_path_buf()))
}

impl TestDaemon {
    /// Starts a daemon over `catalog`, reading through `origins` and storing
    /// into `store`, with its database in `cache_dir`.
    pub fn start(
        catalog: &[CatalogEntry],
        origins: Vec<Arc<dyn Origin>>,
        store: Arc<dyn ChunkBackend>,
        cache_dir: &Path,
        config: Config,
    ) -> TestDaemon {
        let db = Arc::new(Db::open(cache_dir).expect("db").db);
        let manifests = db
            .load_manifests()
            .expect("manifests")
            .into_iter()
            .map(|(o, p, m)| ((o, p), m));
        let chunks = db.load_chunk_index().expect("chunk index");
        let (tree, _) = VirtualTree::build(&Layout::default_layout(), catalog);
        let engine = Engine::new(config, tree, manifests, chunks, 7);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let daemon = Daemon::new(
            engine,
            runtime.handle().clone(),
            origins,
            store,
            Arc::clone(&db),
        );
        runtime.spawn(Arc::clone(&daemon).run_timers());
        TestDaemon {
            daemon,
            runtime,
            db,
        }
    }

    /// Starts a daemon over a local library with a real store in `cache_dir`.
    pub fn local(root: &Path, cache_dir: &Path, config: Config) -> TestDaemon {
        let store = Arc::new(ChunkStore::open(cache_dir).expect("store"));
        TestDaemon::start(
            &scan(root),
            vec![local_origin(root)],
            store,
            cache_dir,
            config,
        )
    }

    /// The inode of a virtual path.
    pub fn ino(&self, path: &str) -> Ino {
        self.daemon
            .inspect(|e| e.tree().resolve(path))
            .unwrap_or_else(|| panic!("{path} not in the tree"))
    }

    /// Every file's virtual path.
    pub fn paths(&self) -> Vec<String> {
        self.daemon.inspect(|e| {
            e.tree()
                .files()
                .filter_map(|(ino, _)| e.tree().path_of(ino))
                .collect()
        })
    }

    /// Reads `len` bytes at `offset` of `path`; waits at most `timeout`.
    pub fn read(
        &self,
        path: &str,
        offset: u64,
        len: u32,
        timeout: Duration,
    ) -> Result<Vec<u8>, Errno> {
        let ino = self.ino(path);
        let (tx, rx) = mpsc::channel();
        self.daemon
            .read(ino.0, offset, len, Box::new(ChannelReply(tx)));
        rx.recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("read of {path} got no reply within {timeout:?}"))
    }

    /// Reads a whole file in 128 KiB reads, as the kernel would.
    pub fn read_all(&self, path: &str, timeout: Duration) -> Result<Vec<u8>, Errno> {
        let ino = self.ino(path);
        let size = self.daemon.inspect(|e| e.getattr(ino).map(|a| a.size))?;
        let mut out = Vec::with_capacity(size as usize);
        while (out.len() as u64) < size {
            let chunk = self.read(path, out.len() as u64, 128 * 1024, timeout)?;
            if chunk.is_empty() {
                break;
            }
            out.extend(chunk);
        }
        Ok(out)
    }

    /// Waits until every chunk already served from memory is written (as
    /// the daemon's shutdown does): reads are answered before their chunks
    /// are durable.
    pub fn flush_writes(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.daemon.writes_pending() {
            assert!(
                std::time::Instant::now() < deadline,
                "chunk writes still pending after 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Writes the chunks already served, then saves the engine's state to
    /// the database and flushes it (what a clean shutdown leaves).
    pub fn persist(&self) {
        self.flush_writes();
        self.daemon.persist().expect("persist");
        self.db.flush().expect("flush");
    }
}

/// Tags a generated WAV file carries (RIFF INFO).
#[derive(Clone, Debug, Default)]
pub struct WavTags<'a> {
    /// INAM.
    pub title: &'a str,
    /// IART.
    pub artist: &'a str,
    /// IPRD (the album).
    pub album: &'a str,
    /// IGNR.
    pub genre: Option<&'a str>,
    /// ICRD.
    pub year: Option<i32>,
}

/// Writes a valid WAV file of about `bytes` bytes of seeded noise, with
/// RIFF INFO tags (title, artist, album), so the scanner files it as
/// `artist/album/00 - title.wav`. Fast, and needs no ffmpeg.
pub fn write_wav(path: &Path, bytes: usize, seed: u64, title: &str, artist: &str, album: &str) {
    let tags = WavTags {
        title,
        artist,
        album,
        ..WavTags::default()
    };
    write_wav_tagged(path, bytes, seed, &tags);
}

/// [`write_wav`] with more tags.
pub fn write_wav_tagged(path: &Path, bytes: usize, seed: u64, tags: &WavTags<'_>) {
    let (title, artist, album) = (tags.title, tags.artist, tags.album);
    fn sub(id: &[u8; 4], text: &str) -> Vec<u8> {
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        if data.len() % 2 == 1 {
            data.push(0);
        }
        let mut out = id.to_vec();
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        out
    }
    let mut info = b"INFO".to_vec();
    info.extend(sub(b"INAM", title));
    info.extend(sub(b"IART", artist));
    info.extend(sub(b"IPRD", album));
    if let Some(genre) = tags.genre {
        info.extend(sub(b"IGNR", genre));
    }
    if let Some(year) = tags.year {
        info.extend(sub(b"ICRD", &year.to_string()));
    }
    let pcm_len = (bytes.saturating_sub(44 + info.len() + 8) / 4 * 4).max(4);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let pcm: Vec<u8> = (0..pcm_len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let mut out = b"RIFF".to_vec();
    let riff_len = 4 + (8 + 16) + (8 + info.len()) + (8 + pcm.len());
    out.extend((riff_len as u32).to_le_bytes());
    out.extend(b"WAVEfmt ");
    out.extend(16u32.to_le_bytes());
    out.extend(1u16.to_le_bytes()); // PCM
    out.extend(2u16.to_le_bytes()); // stereo
    out.extend(44_100u32.to_le_bytes());
    out.extend((44_100u32 * 4).to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend(16u16.to_le_bytes());
    out.extend(b"LIST");
    out.extend((info.len() as u32).to_le_bytes());
    out.extend(info);
    out.extend(b"data");
    out.extend((pcm.len() as u32).to_le_bytes());
    out.extend(pcm);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("dir");
    }
    std::fs::write(path, out).expect("write wav");
}
