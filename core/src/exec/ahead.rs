//! Origin bytes read ahead of a streaming reader that is answered straight
//! from its origin: a fill-behind folder's reader, a `cache=off` origin's
//! when the kernel cannot pass it through, any reader while the cache disk
//! fails.
//!
//! The kernel asks for such a file 128 KiB at a time and waits for each
//! answer: read by read, the reader paid the origin's latency (a disk read,
//! a hop to a blocking thread) while the disk rested as each reply went out.
//! Here the executor keeps one origin read of
//! [`ExecConfig::passthrough_ahead_bytes`](super::ExecConfig::passthrough_ahead_bytes)
//! under way past the reader. A read whose bytes are at hand is answered
//! from memory at once; one whose bytes are being read waits for that read;
//! any other reads the origin itself, as before.
//!
//! The bytes are the origin's, at the version the engine named (the origin
//! refuses another), and are never cached: they are let go once the reader
//! is past them, when the stream gives way to another ([`STREAMS_MAX`]),
//! and when reads go idle. A read ahead that fails or comes back short is
//! dropped, and the reads waiting for it go to the origin themselves, so
//! they fail (or fail over) as any passthrough does.

use super::{OpId, Slice};
use crate::catalog::SourceFile;
use crate::engine::ReqId;
use std::collections::VecDeque;
use std::sync::Arc;

/// Streams read ahead of at once, at most: the one read least recently
/// gives way to a new one.
pub(super) const STREAMS_MAX: usize = 4;

/// A read to send to the origin itself: (read, source, offset, length).
pub(super) type Direct = (ReqId, SourceFile, u64, u32);

#[derive(Debug)]
struct Stream {
    /// The file, at the version read.
    source: SourceFile,
    /// Bytes at hand, back to back in ascending order: (offset, bytes).
    have: VecDeque<(u64, Arc<[u8]>)>,
    /// The origin read under way: (op, offset, end). It starts where
    /// `have` ends.
    in_flight: Option<(OpId, u64, u64)>,
    /// Reads waiting for `in_flight`: (read, offset, length).
    waiting: Vec<(ReqId, u64, u32)>,
    /// When it was last read (a tick), to choose which gives way.
    used: u64,
}

impl Stream {
    fn start(&self) -> Option<u64> {
        self.have.front().map(|(o, _)| *o)
    }

    fn end(&self) -> Option<u64> {
        self.have.back().map(|(o, b)| o + b.len() as u64)
    }

    fn bytes(&self) -> u64 {
        self.have.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// `offset..offset + len` as slices of the bytes at hand, if all are.
    fn slices(&self, offset: u64, len: u32) -> Option<Vec<Slice>> {
        let end = offset + u64::from(len);
        if offset < self.start()? || end > self.end()? {
            return None;
        }
        let mut out = Vec::new();
        let mut pos = offset;
        for (at, bytes) in &self.have {
            let seg_end = at + bytes.len() as u64;
            if pos >= end {
                break;
            }
            if seg_end <= pos {
                continue;
            }
            let take = seg_end.min(end) - pos;
            out.push(Slice {
                chunk: Arc::clone(bytes),
                from: u32::try_from(pos - at).ok()?,
                len: u32::try_from(take).ok()?,
            });
            pos += take;
        }
        (pos == end).then_some(out)
    }

    /// Lets go of the bytes wholly before `offset`; returns how many.
    fn trim(&mut self, offset: u64) -> u64 {
        let mut freed = 0;
        while let Some((at, bytes)) = self.have.front() {
            if at + bytes.len() as u64 > offset {
                break;
            }
            freed += bytes.len() as u64;
            self.have.pop_front();
        }
        freed
    }

    /// The reads waiting, to go to the origin themselves.
    fn direct(&mut self) -> Vec<Direct> {
        let source = &self.source;
        self.waiting
            .drain(..)
            .map(|(req, offset, len)| (req, source.clone(), offset, len))
            .collect()
    }
}

/// What became of a passthrough read ([`Ahead::take`]).
#[derive(Debug)]
pub(super) enum Take {
    /// Every byte is at hand: answer with these.
    Ready(Vec<Slice>),
    /// Its bytes are being read: it waits for them ([`Ahead::landed`]).
    Waiting,
    /// Read the origin for it.
    Miss,
}

/// What a stream that gave way, or a read ahead that ended, leaves to do.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Reads answered: (read, slices).
    pub ready: Vec<(ReqId, Vec<Slice>)>,
    /// Reads to send to the origin themselves.
    pub direct: Vec<Direct>,
    /// Origin reads no longer wanted.
    pub abort: Vec<OpId>,
}

/// The streams read ahead of.
#[derive(Debug, Default)]
pub(super) struct Ahead {
    /// At most [`STREAMS_MAX`]; two readers of one file far apart are two
    /// streams.
    streams: Vec<Stream>,
    tick: u64,
    /// Bytes at hand, in all streams.
    bytes: u64,
}

impl Ahead {
    /// Bytes at hand.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Answers read `req` of `offset..offset + len` of `source` from the
    /// bytes at hand, or has it wait for those being read.
    pub fn take(&mut self, req: ReqId, source: &SourceFile, offset: u64, len: u32) -> Take {
        self.tick += 1;
        let end = offset + u64::from(len);
        let mine = |s: &&mut Stream| s.source == *source;
        if let Some(s) = self.streams.iter_mut().filter(mine).find(|s| {
            s.start().is_some_and(|start| start <= offset) && s.end().is_some_and(|e| end <= e)
        }) && let Some(slices) = s.slices(offset, len)
        {
            s.used = self.tick;
            // The reader is here now: what lies before it is not read again
            // (the kernel keeps what it was given; a seek back reads the
            // origin).
            self.bytes -= s.trim(offset);
            return Take::Ready(slices);
        }
        if let Some(s) = self.streams.iter_mut().filter(mine).find(|s| {
            s.in_flight
                .is_some_and(|(_, start, e)| offset >= s.start().unwrap_or(start) && end <= e)
        }) {
            s.used = self.tick;
            s.waiting.push((req, offset, len));
            return Take::Waiting;
        }
        Take::Miss
    }

    /// The stream of `source` whose bytes at hand or under way reach
    /// `end`.
    fn reaching(&self, source: &SourceFile, end: u64) -> Option<usize> {
        self.streams.iter().position(|s| {
            let reach = s.in_flight.map(|(_, _, e)| e).or(s.end());
            let start = s.start().or(s.in_flight.map(|(_, o, _)| o));
            s.source == *source
                && start.is_some_and(|o| o <= end)
                && reach.is_some_and(|e| end <= e)
        })
    }

    /// Where to read `source` next for a stream that has read up to `end`:
    /// (offset, length), if no read of it is under way and what is at hand
    /// reaches less than `window` bytes past `end`.
    pub fn next(&self, source: &SourceFile, end: u64, window: u32) -> Option<(u64, u32)> {
        let from = match self.reaching(source, end).map(|i| &self.streams[i]) {
            Some(s) if s.in_flight.is_some() => return None,
            Some(s) => {
                let have_end = s.end().unwrap_or(end);
                if have_end - end >= u64::from(window) {
                    return None;
                }
                have_end
            }
            None => end,
        };
        let left = source.version.size.checked_sub(from).filter(|&n| n > 0)?;
        Some((from, u32::try_from(left.min(u64::from(window))).ok()?))
    }

    /// Notes that op `op` reads `offset..offset + len` of `source` (as
    /// [`Ahead::next`] said): for the stream whose bytes end there, or a
    /// new one, for which the least recently read gives way beyond
    /// [`STREAMS_MAX`].
    pub fn started(&mut self, source: &SourceFile, op: OpId, offset: u64, len: u32) -> Outcome {
        self.tick += 1;
        let mut out = Outcome::default();
        let found = self
            .streams
            .iter()
            .position(|s| s.source == *source && s.in_flight.is_none() && s.end() == Some(offset));
        let i = match found {
            Some(i) => i,
            None => {
                if self.streams.len() >= STREAMS_MAX
                    && let Some(oldest) =
                        (0..self.streams.len()).min_by_key(|&i| self.streams[i].used)
                {
                    self.drop_stream(oldest, &mut out);
                }
                self.streams.push(Stream {
                    source: source.clone(),
                    have: VecDeque::new(),
                    in_flight: None,
                    waiting: Vec::new(),
                    used: 0,
                });
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[i];
        s.used = self.tick;
        s.in_flight = Some((op, offset, offset + u64::from(len)));
        out
    }

    /// Op `op` ended: its bytes (`None` if it failed or came back short).
    /// The reads waiting for it are answered, or sent to the origin
    /// themselves. `misplace` is the planted bug of that name.
    pub fn landed(&mut self, op: OpId, bytes: Option<Arc<[u8]>>, misplace: bool) -> Outcome {
        let mut out = Outcome::default();
        let Some(i) = self
            .streams
            .iter()
            .position(|s| s.in_flight.is_some_and(|(o, _, _)| o == op))
        else {
            return out;
        };
        let s = &mut self.streams[i];
        let Some((_, offset, end)) = s.in_flight.take() else {
            return out;
        };
        match bytes.filter(|b| b.len() as u64 == end - offset) {
            Some(bytes) => {
                self.bytes += bytes.len() as u64;
                s.have.push_back((offset + u64::from(misplace), bytes));
                for (req, at, len) in std::mem::take(&mut s.waiting) {
                    match s.slices(at, len) {
                        Some(slices) => out.ready.push((req, slices)),
                        None => out.direct.push((req, s.source.clone(), at, len)),
                    }
                }
            }
            None => self.drop_stream(i, &mut out),
        }
        out
    }

    /// Lets go of every byte at hand (reads went idle); returns how many.
    /// Streams with a read under way stay, empty.
    pub fn release(&mut self) -> u64 {
        let freed = self.bytes;
        self.streams.retain_mut(|s| {
            s.have.clear();
            s.in_flight.is_some()
        });
        self.bytes = 0;
        freed
    }

    fn drop_stream(&mut self, i: usize, out: &mut Outcome) {
        let mut s = self.streams.swap_remove(i);
        self.bytes -= s.bytes();
        if let Some((op, _, _)) = s.in_flight.take() {
            out.abort.push(op);
        }
        out.direct.extend(s.direct());
    }
}
