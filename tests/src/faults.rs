//! Fault injection around the real origin and the real chunk store.

use musicfs::origin::{BoxFuture, Origin, OriginError};
use musicfs::store::{ChunkBackend, ChunkReadError, ChunkStore, StoreError};
use musicfs_core::{ChunkId, FileVersion, OriginPath};
use parking_lot::Mutex;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How a [`FaultyOrigin`] misbehaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Pass every call through.
    Healthy,
    /// Fail every n-th call (1 = every call).
    FailEveryNth(usize),
    /// Succeed n times, then fail every call.
    FailAfterN(usize),
    /// Wait this long before answering (a hung server looks like a long wait).
    TimeoutMs(u64),
    /// Return at most this many bytes per call (a truncated response).
    PartialRead {
        /// Bytes returned at most.
        max_bytes: usize,
    },
    /// Fail every read with an error of this kind, classified as a real
    /// origin classifies it: `NotFound` is a missing file (the origin itself
    /// answers, so its checks pass), any other kind an unavailable origin
    /// (its checks fail too).
    ReturnError(io::ErrorKind),
}

/// An origin that misbehaves on demand; the mode can change mid-test.
pub struct FaultyOrigin {
    inner: Arc<dyn Origin>,
    mode: Mutex<FailMode>,
    calls: AtomicUsize,
}

impl FaultyOrigin {
    /// Wraps `inner`, starting in `mode`.
    pub fn new(inner: Arc<dyn Origin>, mode: FailMode) -> FaultyOrigin {
        FaultyOrigin {
            inner,
            mode: Mutex::new(mode),
            calls: AtomicUsize::new(0),
        }
    }

    /// Switches the failure mode.
    pub fn set_mode(&self, mode: FailMode) {
        *self.mode.lock() = mode;
    }

    /// Reads made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Origin for FaultyOrigin {
    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }

    fn check(&self) -> BoxFuture<'_, Result<(), OriginError>> {
        let mode = self.mode.lock().clone();
        Box::pin(async move {
            match mode {
                FailMode::Healthy | FailMode::PartialRead { .. } | FailMode::FailEveryNth(_) => {
                    self.inner.check().await
                }
                FailMode::FailAfterN(k) if self.calls() < k => self.inner.check().await,
                FailMode::TimeoutMs(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    self.inner.check().await
                }
                FailMode::ReturnError(io::ErrorKind::NotFound) => self.inner.check().await,
                _ => Err(OriginError::Unavailable("injected: check failed".into())),
            }
        })
    }

    fn read_at<'a>(
        &'a self,
        path: &'a OriginPath,
        version: &'a FileVersion,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, OriginError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mode = self.mode.lock().clone();
        Box::pin(async move {
            let fail = |why: &str| Err(OriginError::Unavailable(format!("injected: {why}")));
            match mode {
                FailMode::Healthy => self.inner.read_at(path, version, offset, len).await,
                FailMode::FailEveryNth(k) if k > 0 && n.is_multiple_of(k) => fail("every nth"),
                FailMode::FailEveryNth(_) => self.inner.read_at(path, version, offset, len).await,
                FailMode::FailAfterN(k) if n > k => fail("after n"),
                FailMode::FailAfterN(_) => self.inner.read_at(path, version, offset, len).await,
                FailMode::TimeoutMs(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    self.inner.read_at(path, version, offset, len).await
                }
                FailMode::PartialRead { max_bytes } => {
                    let mut data = self.inner.read_at(path, version, offset, len).await?;
                    data.truncate(max_bytes);
                    Ok(data)
                }
                FailMode::ReturnError(io::ErrorKind::NotFound) => Err(OriginError::NotFound),
                FailMode::ReturnError(kind) => fail(&io::Error::from(kind).to_string()),
            }
        })
    }
}

/// A chunk store whose disk can be made full, failing or corrupting.
pub struct FaultyCasStore {
    inner: ChunkStore,
    /// Every put fails with ENOSPC.
    pub inject_enospc: AtomicBool,
    /// Every get fails with EIO.
    pub inject_eio_on_read: AtomicBool,
    /// Every get returns the stored bytes with one bit flipped (the store's
    /// own verification must then report the chunk corrupt).
    pub inject_corruption: AtomicBool,
}

impl FaultyCasStore {
    /// Wraps a real store.
    pub fn new(inner: ChunkStore) -> FaultyCasStore {
        FaultyCasStore {
            inner,
            inject_enospc: AtomicBool::new(false),
            inject_eio_on_read: AtomicBool::new(false),
            inject_corruption: AtomicBool::new(false),
        }
    }

    /// The real store underneath.
    pub fn inner(&self) -> &ChunkStore {
        &self.inner
    }
}

fn os_error(code: i32, op: &'static str) -> StoreError {
    StoreError::Io {
        op,
        path: "injected".into(),
        source: io::Error::from_raw_os_error(code),
    }
}

impl ChunkBackend for FaultyCasStore {
    fn put(&self, id: ChunkId, data: &[u8]) -> Result<(), StoreError> {
        if self.inject_enospc.load(Ordering::SeqCst) {
            return Err(os_error(libc::ENOSPC, "write chunk"));
        }
        self.inner.put(id, data)
    }

    fn get(&self, id: ChunkId) -> Result<Vec<u8>, ChunkReadError> {
        if self.inject_eio_on_read.load(Ordering::SeqCst) {
            return Err(ChunkReadError::Io(os_error(libc::EIO, "read chunk")));
        }
        if self.inject_corruption.load(Ordering::SeqCst) {
            // Corrupt the file (or the chunk's bytes in its pack) for
            // real, then let the store's check find it.
            let (path, at) = match self.inner.packed_at(id) {
                Some((pack, offset, _)) => (pack, offset as usize),
                None => (self.inner.path_of(id), 0),
            };
            if let Ok(mut bytes) = std::fs::read(&path)
                && let Some(b) = bytes.get_mut(at)
            {
                *b ^= 0x01;
                let _ = std::fs::write(&path, &bytes);
            }
        }
        self.inner.get(id)
    }

    fn remove(&self, id: ChunkId) -> Result<(), StoreError> {
        self.inner.remove(id)
    }
}
