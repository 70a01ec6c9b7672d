//! Executes a [`Fetch`] plan over the bytes an origin returns.
//!
//! The io-shell streams origin bytes into a [`Cutter`], which cuts them into
//! chunks exactly as the plan says (content-defined cuts, forced at the hard
//! end; or the known cuts of a verify, each checked against its id). The
//! simulator uses the same type, so both run the code that decides chunk
//! boundaries.

use super::types::{Fetch, FetchPlan};
use crate::chunk::{ChunkId, Chunker};
use crate::manifest::Extent;

/// One chunk cut from the stream, with its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutChunk {
    /// Offset in the file.
    pub offset: u64,
    /// Content id.
    pub id: ChunkId,
    /// The bytes.
    pub data: Vec<u8>,
}

impl CutChunk {
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
    let chunker = Chunker::new();
    let mut out = Vec::new();
    let mut pos = 0usize;
    for len in chunker.cut_all(data) {
        let bytes = data[pos..pos + len].to_vec();
        out.push(CutChunk {
            offset: offset + pos as u64,
            id: ChunkId::of(&bytes),
            data: bytes,
        });
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
#[derive(Debug)]
pub struct Cutter {
    plan: FetchPlan,
    chunker: Chunker,
    /// File offset of `buf[head]`.
    pos: u64,
    /// Bytes of `buf` already cut (compacted away once per push, not per
    /// chunk, so each byte is copied a bounded number of times).
    head: usize,
    /// The next verify extent to match.
    verify_idx: usize,
    buf: Vec<u8>,
    done: bool,
}

impl Cutter {
    /// A cutter for `fetch`, expecting bytes from `fetch.start`.
    pub fn new(fetch: &Fetch) -> Cutter {
        Cutter {
            plan: fetch.plan.clone(),
            chunker: Chunker::new(),
            pos: fetch.start,
            head: 0,
            verify_idx: 0,
            buf: Vec::new(),
            done: false,
        }
    }

    /// The file offset of the next byte the cutter wants.
    pub fn next_offset(&self) -> u64 {
        self.pos + (self.buf.len() - self.head) as u64
    }

    /// True once every chunk of the plan has been cut.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds the next bytes of the stream; `end_of_input` says no more will
    /// come (the fetch's read range, or the file, ended). Returns the chunks
    /// now complete, in order.
    pub fn push(&mut self, data: &[u8], end_of_input: bool) -> Result<Vec<CutChunk>, CutError> {
        if self.done {
            return Ok(Vec::new());
        }
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        match self.plan.clone() {
            FetchPlan::Chunk { soft_end, hard_end } => {
                self.cut_content(soft_end, hard_end, end_of_input, &mut out)?
            }
            FetchPlan::Verify { extents } => self.cut_known(&extents, &mut out)?,
        }
        self.buf.drain(..self.head);
        self.head = 0;
        if !self.done && end_of_input {
            return Err(CutError::ShortRead);
        }
        Ok(out)
    }

    fn cut_content(
        &mut self,
        soft_end: u64,
        hard_end: u64,
        end_of_input: bool,
        out: &mut Vec<CutChunk>,
    ) -> Result<(), CutError> {
        loop {
            if self.pos >= soft_end || self.pos >= hard_end {
                self.done = true;
                return Ok(());
            }
            let room = usize::try_from(hard_end - self.pos).unwrap_or(usize::MAX);
            let avail = (self.buf.len() - self.head).min(room);
            // At the hard end the stream is, for chunking, at its end.
            let eof = avail == room || end_of_input;
            let window = &self.buf[self.head..self.head + avail];
            let Some(len) = self.chunker.next_cut(window, eof) else {
                return Ok(());
            };
            out.push(self.take(len));
        }
    }

    fn cut_known(
        &mut self,
        extents: &[(u64, Extent)],
        out: &mut Vec<CutChunk>,
    ) -> Result<(), CutError> {
        while let Some(&(offset, extent)) = extents.get(self.verify_idx) {
            debug_assert_eq!(offset, self.pos);
            let len = extent.len as usize;
            if self.buf.len() - self.head < len {
                return Ok(());
            }
            let chunk = self.take(len);
            if chunk.id != extent.id {
                return Err(CutError::Mismatch);
            }
            out.push(chunk);
            self.verify_idx += 1;
        }
        self.done = true;
        Ok(())
    }

    fn take(&mut self, len: usize) -> CutChunk {
        let data = self.buf[self.head..self.head + len].to_vec();
        self.head += len;
        let chunk = CutChunk {
            offset: self.pos,
            id: ChunkId::of(&data),
            data,
        };
        self.pos += len as u64;
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SourceFile;
    use crate::engine::FetchId;
    use crate::ids::{OriginId, OriginPath};
    use crate::manifest::FileVersion;

    #[test]
    fn a_run_cuts_as_a_fetch_of_that_range() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..700_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
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
        };
        let mut cutter = Cutter::new(&fetch);
        let by_fetch = cutter
            .push(&data[start as usize..end as usize], true)
            .unwrap();
        let by_run = cut_run(start, &data[start as usize..end as usize]);
        assert!(by_run.len() > 3);
        assert_eq!(by_fetch, by_run);
        assert_eq!(
            by_run.last().map(|c| c.offset + c.data.len() as u64),
            Some(end)
        );
    }
}
