//! Executes a [`Fetch`] plan over the bytes an origin returns.
//!
//! The io-shell streams origin bytes into a [`Cutter`], which cuts them into
//! chunks exactly as the plan says (content-defined cuts, forced at the hard
//! end; or the known cuts of a verify, each checked against its id). The
//! simulator uses the same type, so both run the code that decides chunk
//! boundaries.

use super::types::{Fetch, FetchPlan};
use crate::chunk::{CHUNK_MAX_BYTES, ChunkId, Chunker};
use crate::manifest::Extent;
use std::sync::Arc;

/// One chunk cut from the stream, with its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutChunk {
    /// Offset in the file.
    pub offset: u64,
    /// Content id.
    pub id: ChunkId,
    /// The bytes (shared as they are with the memory cache and the write
    /// queue: a chunk's bytes are copied once, out of the stream).
    pub data: Arc<[u8]>,
}

impl CutChunk {
    fn of(offset: u64, bytes: &[u8]) -> CutChunk {
        CutChunk {
            offset,
            id: ChunkId::of(bytes),
            data: Arc::from(bytes),
        }
    }

    /// The chunk as a manifest extent.
    pub fn extent(&self) -> Extent {
        Extent {
            len: u32::try_from(self.data.len()).unwrap_or(u32::MAX),
            id: self.id,
        }
    }
}

/// Cuts `data`, the bytes of a file from `offset`, into chunks exactly as
/// a fetch of that range would: content-defined cuts, the last one forced
/// at the end of the range. A tag scan keeps what it read this way.
pub fn cut_run(offset: u64, data: &[u8]) -> Vec<CutChunk> {
    cut_points(offset, data)
        .into_iter()
        .map(|(at, extent)| {
            let from = (at - offset) as usize;
            CutChunk {
                offset: at,
                id: extent.id,
                data: Arc::from(&data[from..from + extent.len as usize]),
            }
        })
        .collect()
}

/// Where [`cut_run`] cuts `data` (the bytes of a file from `offset`), and
/// each chunk's id, without copying the bytes: the chunks are
/// `data[from..from + len]`, each at `offset + from` in the file.
pub fn cut_points(offset: u64, data: &[u8]) -> Vec<(u64, Extent)> {
    let chunker = Chunker::new();
    let mut out = Vec::new();
    let mut pos = 0usize;
    for len in chunker.cut_all(data) {
        let bytes = &data[pos..pos + len];
        out.push((
            offset + pos as u64,
            Extent {
                len: u32::try_from(len).unwrap_or(u32::MAX),
                id: ChunkId::of(bytes),
            },
        ));
        pos += len;
    }
    out
}

/// Why the stream does not fit the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutError {
    /// A verified chunk hashed to another id: the file changed.
    Mismatch,
    /// The origin ended before the bytes the plan needs.
    ShortRead,
}

/// Cuts one fetch's byte stream into chunks.
///
/// Each pushed buffer is cut where it lies; only the bytes after its last
/// decided cut (less than one chunk) are carried to the next push. A chunk
/// that straddles two pushes is cut from the carry topped up with at most
/// one chunk's worth of the next. So each byte is copied once into its
/// chunk, and at most twice more while carried, however the origin
/// splits the stream.
#[derive(Debug)]
pub struct Cutter {
    plan: FetchPlan,
    chunker: Chunker,
    /// File offset of `carry[0]`, the next byte to cut.
    pos: u64,
    /// The next verify extent to match.
    verify_idx: usize,
    /// Bytes pushed but not cut yet (less than [`CHUNK_MAX_BYTES`]).
    carry: Vec<u8>,
    done: bool,
}

impl Cutter {
    /// A cutter for `fetch`, expecting bytes from `fetch.start`.
    pub fn new(fetch: &Fetch) -> Cutter {
        Cutter {
            plan: fetch.plan.clone(),
            chunker: Chunker::new(),
            pos: fetch.start,
            verify_idx: 0,
            carry: Vec::new(),
            done: false,
        }
    }

    /// The file offset of the next byte the cutter wants.
    pub fn next_offset(&self) -> u64 {
        self.pos + self.carry.len() as u64
    }

    /// True once every chunk of the plan has been cut.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds the next bytes of the stream; `end_of_input` says no more will
    /// come (the fetch's read range, or the file, ended). Returns the chunks
    /// now complete, in order.
    pub fn push(&mut self, data: &[u8], end_of_input: bool) -> Result<Vec<CutChunk>, CutError> {
        let mut out = Vec::new();
        // Bytes of `data` moved into the carry so far.
        let mut taken = 0;
        // Where in `data` the cut goes on in place.
        let mut from = 0;
        while !self.done && !self.carry.is_empty() {
            // The chunk that straddles the last push and this one: top the
            // carry up to what decides the next cut, and cut it there.
            let carried = self.carry.len();
            let top = self
                .window_bytes()
                .saturating_sub(carried)
                .min(data.len() - taken);
            let mut window = std::mem::take(&mut self.carry);
            window.extend_from_slice(&data[taken..taken + top]);
            taken += top;
            let eof = end_of_input && taken == data.len();
            let used = self.cut_from(&window, eof, &mut out)?;
            if used >= carried {
                // Past the carry: the rest is cut where it lies.
                from = taken - (window.len() - used);
                break;
            }
            window.drain(..used);
            self.carry = window;
            if taken == data.len() {
                return self.finish(out, end_of_input);
            }
        }
        if !self.done {
            let used = self.cut_from(&data[from..], end_of_input, &mut out)?;
            self.carry.extend_from_slice(&data[from + used..]);
        }
        self.finish(out, end_of_input)
    }

    /// Bytes from `self.pos` that always decide the next cut.
    fn window_bytes(&self) -> usize {
        match &self.plan {
            FetchPlan::Chunk { .. } => CHUNK_MAX_BYTES,
            FetchPlan::Verify { extents } => extents
                .get(self.verify_idx)
                .map_or(CHUNK_MAX_BYTES, |(_, e)| {
                    (e.len as usize).max(CHUNK_MAX_BYTES)
                }),
        }
    }

    fn finish(
        &mut self,
        out: Vec<CutChunk>,
        end_of_input: bool,
    ) -> Result<Vec<CutChunk>, CutError> {
        if self.done {
            self.carry = Vec::new();
        } else if end_of_input {
            return Err(CutError::ShortRead);
        }
        Ok(out)
    }

    /// Cuts every chunk the plan decides off the front of `window` (the
    /// stream from `self.pos`); returns the bytes cut.
    fn cut_from(
        &mut self,
        window: &[u8],
        end_of_input: bool,
        out: &mut Vec<CutChunk>,
    ) -> Result<usize, CutError> {
        let mut used = 0;
        while !self.done {
            let rest = &window[used..];
            let (len, expect) = match &self.plan {
                FetchPlan::Chunk { soft_end, hard_end } => {
                    if self.pos >= *soft_end || self.pos >= *hard_end {
                        self.done = true;
                        break;
                    }
                    let room = usize::try_from(hard_end - self.pos).unwrap_or(usize::MAX);
                    let avail = rest.len().min(room);
                    // At the hard end the stream is, for chunking, at its end.
                    let eof = avail == room || end_of_input;
                    match self.chunker.next_cut(&rest[..avail], eof) {
                        Some(len) => (len, None),
                        None => break,
                    }
                }
                FetchPlan::Verify { extents } => {
                    let Some(&(offset, extent)) = extents.get(self.verify_idx) else {
                        self.done = true;
                        break;
                    };
                    debug_assert_eq!(offset, self.pos);
                    if rest.len() < extent.len as usize {
                        break;
                    }
                    self.verify_idx += 1;
                    (extent.len as usize, Some(extent.id))
                }
            };
            let chunk = CutChunk::of(self.pos, &rest[..len]);
            if expect.is_some_and(|id| id != chunk.id) {
                return Err(CutError::Mismatch);
            }
            out.push(chunk);
            self.pos += len as u64;
            used += len;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SourceFile;
    use crate::chunk::noise;
    use crate::engine::FetchId;
    use crate::ids::{OriginId, OriginPath};
    use crate::manifest::FileVersion;

    #[test]
    fn a_run_cuts_as_a_fetch_of_that_range() {
        let data = noise(700_000, 0x9E37_79B9_7F4A_7C15);
        let (start, end) = (10_000u64, 600_000u64);
        let fetch = Fetch {
            id: FetchId(1),
            source: SourceFile {
                origin: OriginId(0),
                path: OriginPath::new(b"a.flac".to_vec()),
                version: FileVersion {
                    size: data.len() as u64,
                    ..Default::default()
                },
            },
            start,
            plan: FetchPlan::Chunk {
                soft_end: end,
                hard_end: end,
            },
            store: true,
            after_failure: false,
            behind: false,
        };
        let mut cutter = Cutter::new(&fetch);
        let by_fetch = cutter
            .push(&data[start as usize..end as usize], true)
            .unwrap();
        let by_run = cut_run(start, &data[start as usize..end as usize]);
        assert!(by_run.len() > 3);
        assert_eq!(by_fetch, by_run);
        // The same cuts and ids without the copies.
        let points = cut_points(start, &data[start as usize..end as usize]);
        let by_points: Vec<(u64, Extent)> = by_run.iter().map(|c| (c.offset, c.extent())).collect();
        assert_eq!(points, by_points);
        assert_eq!(
            by_run.last().map(|c| c.offset + c.data.len() as u64),
            Some(end)
        );
    }

    fn fetch(start: u64, size: u64, plan: FetchPlan) -> Fetch {
        Fetch {
            id: FetchId(1),
            source: SourceFile {
                origin: OriginId(0),
                path: OriginPath::new(b"a.flac".to_vec()),
                version: FileVersion {
                    size,
                    ..Default::default()
                },
            },
            start,
            plan,
            store: true,
            after_failure: false,
            behind: false,
        }
    }

    /// What a fetch must cut, worked out from the chunker alone: chunks
    /// from `start` while one would start before `soft_end`, a cut forced
    /// at `hard_end`.
    fn expected(data: &[u8], start: usize, soft_end: usize, hard_end: usize) -> Vec<CutChunk> {
        let chunker = Chunker::new();
        let mut pos = start;
        let mut out = Vec::new();
        while pos < soft_end && pos < hard_end {
            let Some(len) = chunker.next_cut(&data[pos..hard_end], true) else {
                break;
            };
            out.push(CutChunk::of(pos as u64, &data[pos..pos + len]));
            pos += len;
        }
        out
    }

    /// Pushes `data[start..end]` split at `splits` (offsets into it).
    fn push_split(
        cutter: &mut Cutter,
        data: &[u8],
        start: usize,
        end: usize,
        splits: &[usize],
    ) -> Result<Vec<CutChunk>, CutError> {
        let mut cuts: Vec<usize> = splits
            .iter()
            .map(|s| start + s % (end - start + 1))
            .collect();
        cuts.push(end);
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut at = start;
        for c in cuts {
            out.extend(cutter.push(&data[at..c], c == end)?);
            at = c;
        }
        Ok(out)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// However the origin splits the stream (pieces of one byte, of
        /// megabytes, empty ones), a fetch cuts the same chunks, with the
        /// same ids and bytes, as the chunker over the whole range.
        #[test]
        fn any_split_of_the_stream_cuts_the_same_chunks(
            seed in 1u64..u64::MAX,
            size in 1usize..1_500_000,
            start_at in 0.0f64..1.0,
            soft_at in 0.0f64..1.0,
            hard_at in 0.0f64..1.0,
            splits in proptest::collection::vec(0usize..2_000_000, 0..40),
        ) {
            let data = noise(size, seed);
            let start = (start_at * size as f64) as usize;
            let hard_end = start + 1 + ((hard_at * (size - start) as f64) as usize).min(size - start - 1);
            let soft_end = start + 1 + ((soft_at * (hard_end - start) as f64) as usize).min(hard_end - start - 1);
            let plan = FetchPlan::Chunk { soft_end: soft_end as u64, hard_end: hard_end as u64 };
            let want = expected(&data, start, soft_end, hard_end);
            let read_end = want.last().map_or(start, |c| c.offset as usize + c.data.len());
            // The fetch reads exactly up to the end of its last chunk.
            let mut cutter = Cutter::new(&fetch(start as u64, size as u64, plan.clone()));
            let got = push_split(&mut cutter, &data, start, read_end.max(start + 1).min(size), &splits);
            proptest::prop_assert_eq!(got, Ok(want.clone()));
            proptest::prop_assert!(cutter.is_done());

            // A verify of those chunks, split anywhere, gives them back...
            let extents: Vec<(u64, Extent)> = want.iter().map(|c| (c.offset, c.extent())).collect();
            let verify = FetchPlan::Verify { extents };
            let mut cutter = Cutter::new(&fetch(start as u64, size as u64, verify.clone()));
            let got = push_split(&mut cutter, &data, start, read_end, &splits);
            proptest::prop_assert_eq!(got, Ok(want));
            // ...and one changed byte is a mismatch.
            if read_end > start {
                let mut changed = data.clone();
                changed[(start + read_end) / 2] ^= 0x55;
                let mut cutter = Cutter::new(&fetch(start as u64, size as u64, verify));
                let got = push_split(&mut cutter, &changed, start, read_end, &splits);
                proptest::prop_assert_eq!(got, Err(CutError::Mismatch));
            }
        }
    }

    #[test]
    fn a_stream_that_ends_early_is_a_short_read() {
        let data = noise(600_000, 7);
        let plan = FetchPlan::Chunk {
            soft_end: 600_000,
            hard_end: 600_000,
        };
        let mut cutter = Cutter::new(&fetch(0, 600_000, plan));
        assert!(cutter.push(&data[..300_000], false).is_ok());
        assert_eq!(
            cutter.push(&data[300_000..400_000], true),
            Err(CutError::ShortRead)
        );
    }
}
