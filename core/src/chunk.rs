//! Content-defined chunking and content ids.
//!
//! Files are cut with FastCDC (v2020) into chunks of 16/64/256 KiB
//! (min/avg/max). A chunk's id is the 128-bit XXH3 hash of its bytes: 128 bits
//! rather than 64 because a collision would serve one file's bytes in place of
//! another's, and a multi-terabyte cache holds tens of millions of chunks.
//!
//! Cutting is pure computation, so it lives here and the io-shell and the
//! simulator run exactly the same code.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Smallest chunk, except the last chunk of a run.
pub const CHUNK_MIN_BYTES: usize = 16 * 1024;
/// Average chunk size the cut points aim for.
pub const CHUNK_AVG_BYTES: usize = 64 * 1024;
/// Largest chunk: a cut is forced here.
pub const CHUNK_MAX_BYTES: usize = 256 * 1024;

/// The content id of a chunk: XXH3-128 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkId(pub u128);

impl ChunkId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(xxhash_rust::xxh3::xxh3_128(data))
    }

    /// Whether `data` is the content this id names.
    pub fn matches(self, data: &[u8]) -> bool {
        ChunkId::of(data) == self
    }

    /// 32 lower-case hex digits.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Parses 32 hex digits.
    pub fn from_hex(s: &str) -> Option<ChunkId> {
        if s.len() != 32 {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(ChunkId)
    }

    /// The cache shard (0..=255) this chunk's file lives in.
    pub fn shard(self) -> u8 {
        (self.0 >> 120) as u8
    }

    /// The big-endian bytes, for use as a sorted key.
    pub fn to_be_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Reads a key written by [`ChunkId::to_be_bytes`].
    pub fn from_be_slice(b: &[u8]) -> Option<ChunkId> {
        <[u8; 16]>::try_from(b)
            .ok()
            .map(|a| ChunkId(u128::from_be_bytes(a)))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({:016x}…)", (self.0 >> 64) as u64)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// FastCDC with MusicFS's fixed parameters.
///
/// Parameters are fixed forever: changing them would change every chunk id
/// and orphan every cache.
#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    mask_s: u64,
    mask_l: u64,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker::new()
    }
}

impl Chunker {
    /// The chunker.
    pub fn new() -> Chunker {
        let (mask_s, mask_l) =
            fastcdc::v2020::select_masks(CHUNK_AVG_BYTES, fastcdc::v2020::Normalization::Level1);
        Chunker { mask_s, mask_l }
    }

    /// The length of the next chunk at the start of `data`, if it is decided.
    ///
    /// With `eof` false, `data` is a prefix of a longer stream: a cut is only
    /// decided once `data` holds at least [`CHUNK_MAX_BYTES`] (the cut point
    /// never depends on bytes after it, and is forced there). With `eof` true,
    /// the stream ends with `data` and the remainder is the last chunk.
    /// Returns `None` for empty data or when more bytes are needed.
    pub fn next_cut(&self, data: &[u8], eof: bool) -> Option<usize> {
        if data.is_empty() {
            return None;
        }
        if !eof && data.len() < CHUNK_MAX_BYTES {
            return None;
        }
        let window = &data[..data.len().min(CHUNK_MAX_BYTES)];
        let (_, cut) = fastcdc::v2020::cut(
            window,
            CHUNK_MIN_BYTES,
            CHUNK_AVG_BYTES,
            CHUNK_MAX_BYTES,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        debug_assert!(cut > 0 && cut <= window.len());
        Some(cut.max(1))
    }

    /// Cuts a whole buffer that ends a stream into chunk lengths.
    pub fn cut_all(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(n) = self.next_cut(data, true) {
            out.push(n);
            data = &data[n..];
        }
        out
    }
}

/// Tests: `len` bytes of xorshift noise from `seed` (content that cuts
/// like real audio does).
#[cfg(test)]
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_cover_the_input_within_bounds() {
        let data = noise(3 * 1024 * 1024 + 17, 7);
        let cuts = Chunker::new().cut_all(&data);
        assert_eq!(cuts.iter().sum::<usize>(), data.len());
        for &c in &cuts[..cuts.len() - 1] {
            assert!(
                (CHUNK_MIN_BYTES..=CHUNK_MAX_BYTES).contains(&c),
                "chunk of {c}"
            );
        }
        let avg = data.len() / cuts.len();
        assert!(
            avg > CHUNK_AVG_BYTES / 2 && avg < CHUNK_AVG_BYTES * 2,
            "avg {avg}"
        );
    }

    #[test]
    fn streaming_cuts_equal_whole_buffer_cuts() {
        let data = noise(2 * 1024 * 1024, 3);
        let chunker = Chunker::new();
        let whole = chunker.cut_all(&data);
        // Feed the stream in awkward pieces, as a network would.
        let mut streamed = Vec::new();
        let (mut start, mut have) = (0, 0);
        while start < data.len() {
            have = (have + 100_003).min(data.len());
            let eof = have == data.len();
            while let Some(n) = chunker.next_cut(&data[start..have], eof) {
                streamed.push(n);
                start += n;
            }
        }
        assert_eq!(whole, streamed);
    }

    #[test]
    fn an_insertion_only_changes_nearby_chunks() {
        let data = noise(4 * 1024 * 1024, 11);
        let mut edited = data[..1000].to_vec();
        edited.extend_from_slice(b"a new cover picture and longer tags");
        edited.extend_from_slice(&data[1000..]);
        let ids = |d: &[u8]| {
            let mut off = 0;
            Chunker::new()
                .cut_all(d)
                .into_iter()
                .map(|n| {
                    let id = ChunkId::of(&d[off..off + n]);
                    off += n;
                    id
                })
                .collect::<std::collections::BTreeSet<_>>()
        };
        let before = ids(&data);
        let after = ids(&edited);
        let new = after.difference(&before).count();
        assert!(new <= 2, "{new} chunks changed after a small insertion");
    }

    #[test]
    fn hex_round_trips() {
        let id = ChunkId::of(b"hello");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_be_slice(&id.to_be_bytes()), Some(id));
        assert_eq!(ChunkId::from_hex("xyz"), None);
    }
}
