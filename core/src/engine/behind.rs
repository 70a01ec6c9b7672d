//! Fill behind: the bookkeeping of reads answered straight from a
//! fill-behind origin (`Config::fill_behind_origins`, a local folder by
//! default) whose bytes are still to be cached.
//!
//! A reader of such an origin never waits for the cutter, the hash or the
//! cache disk: its read is a `Passthrough`, as fast as the origin itself.
//! What it read is noted here, and once the file has had no such read for
//! `Config::fill_behind_after`, the engine fetches those ranges into the
//! cache the usual way (chunked, verified, durable before indexed), at
//! most [`FILL_FETCHES_MAX`] files at a time. Re-reading a local file is
//! cheap (the reader just brought it into the page cache), which is why
//! remote origins never fill behind: each byte of theirs is asked for once.
//!
//! Every figure here is bounded: the files waiting ([`FILES_MAX`]) and the
//! bytes read of them ([`BYTES_MAX`]): past either, readers of other files
//! wait for the cache as a remote origin's do, so a reader far ahead of
//! the fills (a copy of the whole library) still caches all it reads; and
//! the ranges of one file ([`RANGES_MAX`], beyond which they merge into
//! one).

use crate::catalog::SourceFile;
use crate::engine::{FetchId, SourceKey, key_of};
use crate::ids::Ino;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Files waiting to be filled, at most.
pub(super) const FILES_MAX: usize = 4096;
/// Bytes read of the files waiting, at most (then as for [`FILES_MAX`]).
pub(super) const BYTES_MAX: u64 = 1 << 30;
/// Separate ranges noted for one file, at most; one more merges them all
/// into the range from the first start to the last end.
pub(super) const RANGES_MAX: usize = 64;
/// Files being filled at once, at most: fills go one after another behind
/// the readers rather than all together beside them.
pub(super) const FILL_FETCHES_MAX: usize = 2;

/// What is still to be cached of one origin file.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    /// The file in the tree, when noted.
    pub ino: Ino,
    /// The origin file (and version) read.
    pub source: SourceFile,
    /// Ranges read, start to end, disjoint and not touching.
    pub ranges: BTreeMap<u64, u64>,
    /// The last read noted.
    pub last_read: Time,
}

impl Pending {
    /// Bytes read, the sum of the ranges' lengths.
    fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }
}

/// Reads of fill-behind origins still to be cached, and the fills under way.
#[derive(Debug, Default)]
pub(super) struct Behind {
    files: BTreeMap<SourceKey, Pending>,
    /// Bytes read of `files`, the sum of their ranges' lengths.
    bytes: u64,
    /// Fetches started by fills, still in flight.
    pub fetches: BTreeSet<FetchId>,
}

impl Behind {
    /// Notes that `offset..end` of `source` (file `ino`) was read at `now`.
    pub fn note(&mut self, now: Time, ino: Ino, source: &SourceFile, offset: u64, end: u64) {
        if offset >= end {
            return;
        }
        let key = key_of(source);
        if !self.files.contains_key(&key)
            && self.files.len() >= FILES_MAX
            && let Some(oldest) = self
                .files
                .iter()
                .min_by_key(|(_, p)| p.last_read)
                .map(|(k, _)| k.clone())
        {
            // Callers check `is_full` first; this only keeps the bound.
            self.remove(&oldest);
        }
        let p = self.files.entry(key).or_insert_with(|| Pending {
            ino,
            source: source.clone(),
            ranges: BTreeMap::new(),
            last_read: now,
        });
        let before = p.bytes();
        if p.source.version != source.version {
            // The file changed between two reads: only the newer version's
            // ranges are worth caching.
            p.source = source.clone();
            p.ranges.clear();
        }
        p.ino = ino;
        p.last_read = p.last_read.max(now);
        add_range(&mut p.ranges, offset, end);
        self.bytes = self.bytes - before + p.bytes();
    }

    fn remove(&mut self, key: &SourceKey) -> Option<Pending> {
        let p = self.files.remove(key)?;
        self.bytes -= p.bytes();
        Some(p)
    }

    /// Whether readers of files not yet waiting should fill inline.
    pub fn is_full(&self) -> bool {
        self.files.len() >= FILES_MAX || self.bytes >= BYTES_MAX
    }

    /// Whether reads of this origin file are waiting to be cached.
    pub fn is_waiting(&self, key: &SourceKey) -> bool {
        self.files.contains_key(key)
    }

    /// When the next file is due.
    pub fn next_due(&self, after: Duration) -> Option<Time> {
        self.files.values().map(|p| p.last_read + after).min()
    }

    /// Takes the longest-waiting file due at `now`, if a fill may start
    /// (fewer than [`FILL_FETCHES_MAX`] fetches of fills in flight; the
    /// engine drops the ended ones from `fetches` first).
    pub fn take_due(&mut self, now: Time, after: Duration) -> Option<Pending> {
        if self.fetches.len() >= FILL_FETCHES_MAX {
            return None;
        }
        let key = self
            .files
            .iter()
            .filter(|(_, p)| p.last_read + after <= now)
            .min_by_key(|(_, p)| p.last_read)
            .map(|(k, _)| k.clone())?;
        self.remove(&key)
    }

    /// Files waiting, and the bytes noted of them.
    pub fn waiting(&self) -> (usize, u64) {
        (self.files.len(), self.bytes)
    }

    /// Forgets every file waiting (shutdown, a failing cache disk).
    pub fn clear(&mut self) {
        self.files.clear();
        self.bytes = 0;
    }
}

/// Adds `start..end` to disjoint, non-touching `ranges`, merging what it
/// meets; past [`RANGES_MAX`] ranges, all become one.
fn add_range(ranges: &mut BTreeMap<u64, u64>, mut start: u64, mut end: u64) {
    // Every range that overlaps or touches start..end: those starting at or
    // before `end` whose end is at or after `start`.
    let met: Vec<(u64, u64)> = ranges
        .range(..=end)
        .rev()
        .take_while(|&(_, &e)| e >= start)
        .map(|(&s, &e)| (s, e))
        .collect();
    for (s, e) in met {
        ranges.remove(&s);
        start = start.min(s);
        end = end.max(e);
    }
    ranges.insert(start, end);
    if ranges.len() > RANGES_MAX {
        let first = ranges.keys().next().copied().unwrap_or(start);
        let last = ranges.values().max().copied().unwrap_or(end);
        ranges.clear();
        ranges.insert(first, last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[(u64, u64)]) -> BTreeMap<u64, u64> {
        let mut r = BTreeMap::new();
        for &(s, e) in list {
            add_range(&mut r, s, e);
        }
        r
    }

    #[test]
    fn ranges_merge_what_they_meet_and_keep_the_rest_apart() {
        let r = ranges(&[(0, 10), (20, 30), (10, 15), (29, 40), (50, 60)]);
        assert_eq!(
            r.into_iter().collect::<Vec<_>>(),
            vec![(0, 15), (20, 40), (50, 60)]
        );
        let r = ranges(&[(20, 30), (50, 60), (0, 100)]);
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![(0, 100)]);
        let r = ranges(&[(20, 30), (5, 21)]);
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![(5, 30)]);
    }

    #[test]
    fn too_many_ranges_become_one() {
        let list: Vec<(u64, u64)> = (0..=RANGES_MAX as u64)
            .map(|i| (i * 10, i * 10 + 5))
            .collect();
        let r = ranges(&list);
        assert_eq!(
            r.into_iter().collect::<Vec<_>>(),
            vec![(0, RANGES_MAX as u64 * 10 + 5)]
        );
    }

    #[test]
    fn the_bytes_waiting_are_counted_and_bounded() {
        use crate::catalog::SourceFile;
        use crate::ids::OriginId;
        use crate::{FileVersion, OriginPath};
        let src = |i: u32, size: u64| SourceFile {
            origin: OriginId(0),
            path: OriginPath::new(format!("f{i}").into_bytes()),
            version: FileVersion {
                size,
                mtime_ns: 1,
                token: None,
            },
        };
        let mut b = Behind::default();
        let t = Time::ZERO;
        b.note(t, Ino(2), &src(0, 100), 0, 50);
        b.note(t, Ino(2), &src(0, 100), 25, 75);
        b.note(t, Ino(3), &src(1, 100), 10, 20);
        assert_eq!(b.waiting(), (2, 85));
        // A new version of a file replaces what was read of the old one.
        b.note(t, Ino(2), &src(0, 200), 0, 5);
        assert_eq!(b.waiting(), (2, 15));
        assert!(!b.is_full());
        b.note(t, Ino(4), &src(2, BYTES_MAX), 0, BYTES_MAX);
        assert!(b.is_full());
        let due = b.take_due(t + Duration::from_secs(1), Duration::from_millis(500));
        assert!(due.is_some());
        b.clear();
        assert_eq!(b.waiting(), (0, 0));
        assert!(!b.is_full());
    }
}
