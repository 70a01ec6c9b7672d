//! A `Read + Seek` view of one remote file that fetches blocks on demand.
//!
//! lofty reads tags through `Read + Seek` with many small reads and seeks
//! (a header here, a skip over cover art, four bytes back, a jump to the
//! end for an ID3v1 tag). Over a network each of those would be a round
//! trip, and downloading whole files to read a few KiB of tags would cost a
//! library's size in traffic. [`RangedReader`] sits between the two:
//!
//! - reads are served from a few cached blocks; a miss fetches the aligned
//!   block around the position (64 KiB by default), or, near the end of
//!   the file, the file's last `tail_size` bytes, so the backwards reads of
//!   ID3v1, APE and Lyrics3 footers cost one request;
//! - a read at least a block long (a whole ID3v2 tag with big artwork, an
//!   MP4 `moov` atom) is fetched as exactly that range, in one request,
//!   and not cached;
//! - the first block (and, for formats whose tags live at the end, the
//!   tail) can be fetched up front, concurrently ([`RangedReader::prefetch`]);
//! - every fetch is charged to a byte budget: a parser that wanders through
//!   the audio of a big file fails with a clear reason instead of quietly
//!   downloading it;
//! - every fetch goes through [`Origin::read_at`] with the version from the
//!   listing, so tags are never read from a mix of two versions.
//!
//! The reader is blocking (lofty is): it must be used on a blocking thread
//! (`spawn_blocking`), where it waits for fetches with
//! [`tokio::runtime::Handle::block_on`].

use super::{Origin, OriginError};
use musicfs_core::{FileVersion, OriginPath};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// How a [`RangedReader`] fetches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangedOptions {
    /// Size (and alignment) of a fetched block.
    pub block_size: usize,
    /// Bytes fetched at once for a read within that distance of the end.
    pub tail_size: usize,
    /// Blocks kept in memory (least recently used goes first).
    pub max_blocks: usize,
    /// Bytes this reader may fetch in all.
    pub max_bytes: u64,
    /// Deadline for one fetch, on top of the origin's own.
    pub fetch_timeout: Duration,
}

impl Default for RangedOptions {
    fn default() -> RangedOptions {
        RangedOptions {
            block_size: 64 * 1024,
            tail_size: 16 * 1024,
            max_blocks: 8,
            // A whole ID3v2 tag or FLAC picture block is read in one go
            // whatever read_cover_art says, and the tag reader allows one
            // item of up to 32 MiB: leave room for that and a little more.
            max_bytes: 40 * 1024 * 1024,
            fetch_timeout: Duration::from_secs(30),
        }
    }
}

/// What a reader fetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Bytes received.
    pub bytes: u64,
    /// Requests made.
    pub requests: u64,
}

/// Why a [`RangedReader`] stopped serving reads.
#[derive(Debug)]
pub enum ReadFailure {
    /// The origin failed or reported the file gone or changed.
    Origin(OriginError),
    /// Reading on would fetch more than [`RangedOptions::max_bytes`].
    OverBudget(u64),
}

impl fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadFailure::Origin(e) => write!(f, "{e}"),
            ReadFailure::OverBudget(max) => write!(
                f,
                "reading the tags would fetch more than {} MiB of the file",
                max / (1024 * 1024)
            ),
        }
    }
}

struct Block {
    start: u64,
    data: Vec<u8>,
}

/// A remote file at one version as a blocking `Read + Seek`.
pub struct RangedReader {
    origin: Arc<dyn Origin>,
    path: OriginPath,
    version: FileVersion,
    rt: Handle,
    opts: RangedOptions,
    pos: u64,
    /// Least recently used first.
    blocks: VecDeque<Block>,
    stats: FetchStats,
    failure: Option<ReadFailure>,
}

impl RangedReader {
    /// A reader of `path` at `version`, fetching through `origin` on `rt`.
    pub fn new(
        origin: Arc<dyn Origin>,
        path: OriginPath,
        version: FileVersion,
        rt: Handle,
        opts: RangedOptions,
    ) -> RangedReader {
        RangedReader {
            origin,
            path,
            version,
            rt,
            opts,
            pos: 0,
            blocks: VecDeque::new(),
            stats: FetchStats::default(),
            failure: None,
        }
    }

    /// Fetches the first block, and with `tail` the last `tail_size` bytes,
    /// concurrently. Call from async code before handing the reader to a
    /// blocking thread. A failure is kept and fails the first read.
    pub async fn prefetch(&mut self, tail: bool) {
        let size = self.version.size;
        let head_end = size.min(self.opts.block_size as u64);
        let tail_start = size
            .saturating_sub(self.opts.tail_size as u64)
            .max(head_end);
        let want_tail = tail && tail_start < size;
        let head = self.fetch_async(0, head_end);
        let (head, tail_data) = if want_tail {
            let tail_fut = self.fetch_async(tail_start, size);
            let (h, t) = tokio::join!(head, tail_fut);
            (h, Some(t))
        } else {
            (head.await, None)
        };
        for (start, result) in [(0, Some(head)), (tail_start, tail_data)] {
            match result {
                Some(Ok(data)) => self.insert(start, data),
                Some(Err(failure)) => {
                    self.failure.get_or_insert(failure);
                }
                None => {}
            }
        }
    }

    /// What has been fetched so far.
    pub fn stats(&self) -> FetchStats {
        self.stats
    }

    /// Why reads stopped, if they did.
    pub fn failure(&self) -> Option<&ReadFailure> {
        self.failure.as_ref()
    }

    /// Takes the failure out, for the caller to act on.
    pub fn take_failure(&mut self) -> Option<ReadFailure> {
        self.failure.take()
    }

    /// Charges the budget and builds the fetch of `[start, end)`; the
    /// future borrows nothing from `self`, so two can run at once.
    fn fetch_async(
        &mut self,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<Vec<u8>, ReadFailure>> + Send + 'static {
        let len = end.saturating_sub(start);
        let over = self.stats.bytes.saturating_add(len) > self.opts.max_bytes;
        if !over && len > 0 {
            self.stats.bytes += len;
            self.stats.requests += 1;
        }
        let origin = Arc::clone(&self.origin);
        let path = self.path.clone();
        let version = self.version.clone();
        let limit = self.opts.fetch_timeout;
        let max = self.opts.max_bytes;
        async move {
            if over {
                return Err(ReadFailure::OverBudget(max));
            }
            if len == 0 {
                return Ok(Vec::new());
            }
            let want = usize::try_from(len).map_err(|_| ReadFailure::OverBudget(max))?;
            let read = origin.read_at(&path, &version, start, want);
            match tokio::time::timeout(limit, read).await {
                Ok(Ok(data)) if data.len() == want => Ok(data),
                // Shorter than the listed size: not the listed version.
                Ok(Ok(_)) => Err(ReadFailure::Origin(OriginError::Changed)),
                Ok(Err(e)) => Err(ReadFailure::Origin(e)),
                Err(_) => Err(ReadFailure::Origin(OriginError::Unavailable(format!(
                    "read timed out after {:.1} s",
                    limit.as_secs_f64()
                )))),
            }
        }
    }

    /// Fetches `[start, end)` from a blocking thread.
    fn fetch(&mut self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let fut = self.fetch_async(start, end);
        match self.rt.block_on(fut) {
            Ok(data) => Ok(data),
            Err(failure) => {
                let err = io::Error::other(failure.to_string());
                self.failure = Some(failure);
                Err(err)
            }
        }
    }

    fn insert(&mut self, start: u64, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        while self.blocks.len() >= self.opts.max_blocks.max(1) {
            self.blocks.pop_front();
        }
        self.blocks.push_back(Block { start, data });
    }

    /// Copies from a cached block holding `pos`, marking it recently used.
    fn copy_cached(&mut self, buf: &mut [u8]) -> Option<usize> {
        let pos = self.pos;
        let i = self
            .blocks
            .iter()
            .position(|b| pos >= b.start && pos - b.start < b.data.len() as u64)?;
        let block = self.blocks.remove(i)?;
        let off = (pos - block.start) as usize;
        let n = (block.data.len() - off).min(buf.len());
        buf[..n].copy_from_slice(&block.data[off..off + n]);
        self.blocks.push_back(block);
        Some(n)
    }

    /// The range to fetch for a small read at `pos`.
    fn block_around(&self, pos: u64) -> (u64, u64) {
        let size = self.version.size;
        let tail = self.opts.tail_size as u64;
        if size - pos <= tail {
            return (size.saturating_sub(tail), size);
        }
        let block = self.opts.block_size.max(1) as u64;
        let start = pos / block * block;
        (start, (start + block).min(size))
    }
}

impl Read for RangedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(failure) = &self.failure {
            // Once a fetch failed, nothing more is served: a parse that
            // goes on around a hole cannot be trusted.
            return Err(io::Error::other(failure.to_string()));
        }
        let size = self.version.size;
        if buf.is_empty() || self.pos >= size {
            return Ok(0);
        }
        if let Some(n) = self.copy_cached(buf) {
            self.pos += n as u64;
            return Ok(n);
        }
        let want = (buf.len() as u64).min(size - self.pos);
        if want >= self.opts.block_size as u64 {
            let data = self.fetch(self.pos, self.pos + want)?;
            buf[..data.len()].copy_from_slice(&data);
            self.pos += data.len() as u64;
            return Ok(data.len());
        }
        let (start, end) = self.block_around(self.pos);
        let data = self.fetch(start, end)?;
        self.insert(start, data);
        let n = self.copy_cached(buf).unwrap_or(0);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangedReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(self.pos, self.version.size, to)?;
        Ok(self.pos)
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos)
    }
}

/// Test helper: `r` gives the same bytes as `want` (a plain cursor over
/// the file) for each seek and read length in `steps`. Either may return
/// short reads; what the shorter gave is compared, and both are put back
/// at the same position.
#[cfg(test)]
pub(crate) fn assert_reads_like(
    r: &mut (impl Read + Seek),
    want: &mut (impl Read + Seek),
    steps: &[(SeekFrom, usize)],
) {
    for (seek, len) in steps {
        assert_eq!(r.seek(*seek).unwrap(), want.seek(*seek).unwrap());
        let mut a = vec![0; *len];
        let mut b = vec![0; *len];
        let na = r.read(&mut a).unwrap();
        let nb = want.read(&mut b).unwrap();
        let n = na.min(nb);
        assert_eq!(a[..n], b[..n]);
        want.seek(SeekFrom::Current(n as i64 - nb as i64)).unwrap();
        r.seek(SeekFrom::Current(n as i64 - na as i64)).unwrap();
    }
}

/// Where a seek of a reader at `pos` in a file of `size` bytes lands (past
/// the end is allowed, as for files; before the start is an error).
pub(crate) fn seek_target(pos: u64, size: u64, to: SeekFrom) -> io::Result<u64> {
    let new = match to {
        SeekFrom::Start(p) => Some(p),
        SeekFrom::End(d) => size.checked_add_signed(d),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
    };
    new.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "seek to a negative or overflowing position",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::BoxFuture;
    use musicfs_core::OriginId;
    use parking_lot::Mutex;
    use std::io::Cursor;

    /// Serves bytes from memory and records the ranges asked for.
    struct Memory {
        data: Vec<u8>,
        asked: Mutex<Vec<(u64, usize)>>,
    }

    impl Origin for Memory {
        fn describe(&self) -> String {
            "memory".into()
        }
        fn read_at<'a>(
            &'a self,
            _: &'a OriginPath,
            _: &'a FileVersion,
            offset: u64,
            len: usize,
        ) -> BoxFuture<'a, Result<Vec<u8>, OriginError>> {
            self.asked.lock().push((offset, len));
            let start = (offset as usize).min(self.data.len());
            let end = (start + len).min(self.data.len());
            let out = self.data[start..end].to_vec();
            Box::pin(async move { Ok(out) })
        }
        fn check(&self) -> BoxFuture<'_, Result<(), OriginError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn setup(
        size: usize,
        opts: RangedOptions,
    ) -> (Arc<Memory>, RangedReader, tokio::runtime::Runtime) {
        let data: Vec<u8> = (0..size as u32).map(|i| (i * 7 + i / 256) as u8).collect();
        let origin = Arc::new(Memory {
            data,
            asked: Mutex::new(Vec::new()),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let version = FileVersion {
            size: size as u64,
            ..FileVersion::default()
        };
        let reader = RangedReader::new(
            Arc::clone(&origin) as Arc<dyn Origin>,
            OriginPath::new(&b"x"[..]),
            version,
            rt.handle().clone(),
            opts,
        );
        let _ = OriginId(0);
        (origin, reader, rt)
    }

    #[test]
    fn reads_match_the_bytes_and_fetch_little() {
        let (origin, mut r, _rt) = setup(1_000_000, RangedOptions::default());
        let mut cur = Cursor::new(origin.data.clone());
        let steps: &[(SeekFrom, usize)] = &[
            (SeekFrom::Start(0), 10),
            (SeekFrom::Current(5), 40_000),
            (SeekFrom::End(-128), 128),
            (SeekFrom::Current(-32), 3),
            (SeekFrom::Start(500_000), 7),
            (SeekFrom::Start(65_530), 10),
            (SeekFrom::Start(200_000), 300_000),
            (SeekFrom::End(10), 10),
            (SeekFrom::Start(999_990), 100),
        ];
        assert_reads_like(&mut r, &mut cur, steps);
        let stats = r.stats();
        let asked = origin.asked.lock().clone();
        assert_eq!(stats.requests as usize, asked.len());
        assert!(stats.bytes < 600_000, "{stats:?} {asked:?}");
        // The big read went out as one exact request.
        assert!(asked.contains(&(200_000, 300_000)), "{asked:?}");
    }

    #[test]
    fn prefetch_serves_head_and_tail() {
        let (origin, mut r, rt) = setup(300_000, RangedOptions::default());
        rt.block_on(r.prefetch(true));
        assert_eq!(origin.asked.lock().len(), 2);
        let mut buf = [0u8; 128];
        r.seek(SeekFrom::End(-128)).unwrap();
        r.read_exact(&mut buf).unwrap();
        r.seek(SeekFrom::Start(100)).unwrap();
        r.read_exact(&mut buf).unwrap();
        assert_eq!(
            origin.asked.lock().len(),
            2,
            "served from the prefetched blocks"
        );
    }

    #[test]
    fn the_budget_stops_a_wandering_parser() {
        let opts = RangedOptions {
            max_bytes: 200_000,
            ..RangedOptions::default()
        };
        let (_origin, mut r, _rt) = setup(1_000_000, opts);
        let mut sink = Vec::new();
        let err = r.read_to_end(&mut sink).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        assert!(matches!(r.failure(), Some(ReadFailure::OverBudget(_))));
        assert!(r.stats().bytes <= 200_000);
    }
}
