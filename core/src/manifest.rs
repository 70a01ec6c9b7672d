//! A file's chunk map: which chunk holds which byte range of one version.
//!
//! A manifest is filled in runs: a read at the start of a file chunks it from
//! offset 0, a seek into the middle starts a second run there, and runs stop
//! where they meet. Extents therefore tile a *subset* of the file without
//! overlapping; gaps are the bytes nobody has needed yet.

use crate::chunk::ChunkId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::Range;

/// Which version of an origin file a manifest describes. A manifest is only
/// valid while the origin still reports the same version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileVersion {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// An origin-specific change token (an S3 ETag, a local inode/ctime pair).
    pub token: Option<Box<str>>,
}

/// One chunk placed in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Extent {
    /// Length in bytes.
    pub len: u32,
    /// Content id of those bytes.
    pub id: ChunkId,
}

/// Why an extent was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentError {
    /// Empty extent, or one past the end of the file.
    OutOfBounds,
    /// It overlaps an extent already in the manifest.
    Overlaps,
}

/// The part of a file a tag scan kept: its first `head` bytes and its last
/// `tail` bytes, where tags, cover art and the headers players and media
/// servers look at live. Chunks there are evicted last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Bytes from the start of the file.
    pub head: u64,
    /// Bytes up to the end of the file.
    pub tail: u64,
}

/// The chunk map of one version of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The version these extents were cut from.
    pub version: FileVersion,
    extents: Extents,
    /// What a tag scan kept of this version (manifests saved before there
    /// was such a thing read as nothing kept).
    #[serde(default)]
    kept: Kept,
}

impl Manifest {
    /// An empty manifest for `version`.
    pub fn new(version: FileVersion) -> Manifest {
        Manifest {
            version,
            extents: Extents::default(),
            kept: Kept::default(),
        }
    }

    /// What a tag scan kept of this version.
    pub fn kept(&self) -> Kept {
        self.kept
    }

    /// Records what a tag scan kept (widening what was kept before; both
    /// ends are clamped to the file).
    pub fn keep(&mut self, kept: Kept) {
        let size = self.size();
        self.kept.head = self.kept.head.max(kept.head).min(size);
        self.kept.tail = self.kept.tail.max(kept.tail).min(size);
    }

    /// Whether `offset..end` lies wholly inside the kept head or the kept
    /// tail.
    pub fn within_kept(&self, offset: u64, end: u64) -> bool {
        end <= self.kept.head || offset >= self.size().saturating_sub(self.kept.tail)
    }

    /// The extents holding kept bytes (see [`Manifest::kept`]).
    pub fn kept_extents(&self) -> impl Iterator<Item = (u64, Extent)> + '_ {
        let head = self.kept.head;
        let tail_start = self.size().saturating_sub(self.kept.tail);
        let heads = self.extents.before(head).iter().copied();
        let tails = (self.kept.tail > 0)
            .then(|| self.overlapping(tail_start.max(head)..self.size()))
            .into_iter()
            .flatten()
            .filter(move |(o, _)| *o >= head);
        heads.chain(tails)
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.version.size
    }

    /// Adds an extent at `offset`. Extents never overlap and never pass EOF.
    pub fn insert(&mut self, offset: u64, extent: Extent) -> Result<(), ExtentError> {
        let end = offset.saturating_add(u64::from(extent.len));
        if extent.len == 0 || end > self.version.size {
            return Err(ExtentError::OutOfBounds);
        }
        let at = self.extents.first_at_or_after(offset);
        if let Some(&(prev, e)) = at.checked_sub(1).and_then(|i| self.extents.0.get(i))
            && prev + u64::from(e.len) > offset
        {
            return Err(ExtentError::Overlaps);
        }
        if let Some(&(next, _)) = self.extents.0.get(at)
            && next < end
        {
            return Err(ExtentError::Overlaps);
        }
        self.extents.0.insert(at, (offset, extent));
        Ok(())
    }

    /// All extents, in file order, with their offsets.
    pub fn extents(&self) -> impl Iterator<Item = (u64, Extent)> + '_ {
        self.extents.0.iter().copied()
    }

    /// Number of extents.
    pub fn len(&self) -> usize {
        self.extents.0.len()
    }

    /// True when no byte is mapped.
    pub fn is_empty(&self) -> bool {
        self.extents.0.is_empty()
    }

    /// True when every byte of the file is mapped.
    pub fn is_complete(&self) -> bool {
        self.first_gap(0, self.size()).is_none()
    }

    /// The extents that intersect `range`, in order, with their offsets.
    pub fn overlapping(&self, range: Range<u64>) -> impl Iterator<Item = (u64, Extent)> + '_ {
        let all = &self.extents.0;
        let at = self.extents.first_at_or_after(range.start);
        // The extent before `range.start` reaches into it, or not.
        let from = match at.checked_sub(1).map(|i| (i, all[i])) {
            Some((i, (o, e))) if o + u64::from(e.len) > range.start => i,
            _ => at,
        };
        let to = self.extents.first_at_or_after(range.end).max(from);
        all[from..to].iter().copied()
    }

    /// The first unmapped byte range inside `start..end`, if any.
    pub fn first_gap(&self, start: u64, end: u64) -> Option<Range<u64>> {
        let end = end.min(self.size());
        let mut pos = start;
        for (o, e) in self.overlapping(start..end) {
            if o > pos {
                return Some(pos..o.min(end));
            }
            pos = pos.max(o + u64::from(e.len));
        }
        (pos < end).then_some(pos..end)
    }

    /// Where the next mapped extent at or after `offset` starts (EOF if none).
    pub fn next_mapped_start(&self, offset: u64) -> u64 {
        let at = self.extents.first_at_or_after(offset);
        self.extents.0.get(at).map_or(self.size(), |&(o, _)| o)
    }

    /// Forgets every extent (the file changed at its origin).
    pub fn reset(&mut self, version: FileVersion) {
        self.version = version;
        self.extents.0 = Vec::new();
        self.kept = Kept::default();
    }
}

/// A manifest's extents, sorted by offset and never overlapping. A sorted
/// vector rather than a map: a cache holds one manifest per file a scan
/// kept the tags of (200,000 in a large collection), most with a handful
/// of extents, and a `BTreeMap`'s first node alone takes ~450 bytes.
/// Saved as a map from offset to extent, as it always was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Extents(Vec<(u64, Extent)>);

impl Extents {
    /// Index of the first extent starting at or after `offset`.
    fn first_at_or_after(&self, offset: u64) -> usize {
        self.0.partition_point(|&(o, _)| o < offset)
    }

    /// The extents starting before `offset`.
    fn before(&self, offset: u64) -> &[(u64, Extent)] {
        &self.0[..self.first_at_or_after(offset)]
    }
}

impl Serialize for Extents {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(o, e)| (o, e)))
    }
}

impl<'de> Deserialize<'de> for Extents {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Extents, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Extents;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map from offset to extent")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Extents, A::Error> {
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some(entry) = map.next_entry::<u64, Extent>()? {
                    v.push(entry);
                }
                // Saved from a sorted map, so sorted already; a later
                // duplicate wins, as it did when this was a map.
                v.reverse();
                v.sort_by_key(|&(o, _)| o);
                v.dedup_by_key(|&mut (o, _)| o);
                v.shrink_to_fit();
                Ok(Extents(v))
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ext(len: u32) -> Extent {
        Extent {
            len,
            id: ChunkId(u128::from(len)),
        }
    }

    fn manifest(size: u64) -> Manifest {
        Manifest::new(FileVersion {
            size,
            ..Default::default()
        })
    }

    #[test]
    fn gaps_and_overlaps() {
        let mut m = manifest(100);
        assert_eq!(m.first_gap(0, 100), Some(0..100));
        m.insert(10, ext(10)).unwrap();
        m.insert(40, ext(20)).unwrap();
        assert_eq!(m.insert(15, ext(10)), Err(ExtentError::Overlaps));
        assert_eq!(m.insert(5, ext(6)), Err(ExtentError::Overlaps));
        assert_eq!(m.insert(95, ext(6)), Err(ExtentError::OutOfBounds));
        assert_eq!(m.insert(20, ext(0)), Err(ExtentError::OutOfBounds));
        assert_eq!(m.first_gap(0, 100), Some(0..10));
        assert_eq!(m.first_gap(12, 100), Some(20..40));
        assert_eq!(m.first_gap(12, 30), Some(20..30));
        assert_eq!(m.first_gap(41, 55), None);
        assert_eq!(m.first_gap(41, 100), Some(60..100));
        assert_eq!(m.next_mapped_start(21), 40);
        assert_eq!(m.next_mapped_start(61), 100);
        let got: Vec<u64> = m.overlapping(15..45).map(|(o, _)| o).collect();
        assert_eq!(got, vec![10, 40]);
        m.insert(0, ext(10)).unwrap();
        m.insert(20, ext(20)).unwrap();
        m.insert(60, ext(40)).unwrap();
        assert!(m.is_complete());
    }

    #[test]
    fn kept_head_and_tail() {
        let mut m = manifest(100);
        for (o, l) in [(0, 10), (10, 10), (20, 40), (60, 30), (90, 10)] {
            m.insert(o, ext(l)).unwrap();
        }
        assert_eq!(m.kept_extents().count(), 0, "nothing kept yet");
        m.keep(Kept { head: 15, tail: 5 });
        let kept: Vec<u64> = m.kept_extents().map(|(o, _)| o).collect();
        assert_eq!(kept, vec![0, 10, 90]);
        assert!(m.within_kept(10, 15) && m.within_kept(95, 100) && !m.within_kept(10, 20));
        // Widening only; clamped to the file.
        m.keep(Kept { head: 5, tail: 500 });
        assert_eq!(
            m.kept(),
            Kept {
                head: 15,
                tail: 100
            }
        );
        assert_eq!(m.kept_extents().count(), 5, "each extent once");
        m.reset(m.version.clone());
        assert_eq!(m.kept(), Kept::default());
    }

    #[test]
    fn a_manifest_saved_before_kept_existed_still_reads() {
        #[derive(Serialize)]
        struct Old {
            version: FileVersion,
            extents: BTreeMap<u64, Extent>,
        }
        let old = Old {
            version: FileVersion {
                size: 10,
                ..Default::default()
            },
            extents: [(0, ext(10))].into_iter().collect(),
        };
        let bytes = rmp_serde::to_vec(&old).unwrap();
        let m: Manifest = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m.kept(), Kept::default());
    }

    #[test]
    fn extents_are_saved_as_the_map_they_always_were() {
        let mut m = manifest(100);
        for (o, l) in [(60, 30), (0, 10), (20, 40), (10, 10)] {
            m.insert(o, ext(l)).unwrap();
        }
        let offsets: Vec<u64> = m.extents().map(|(o, _)| o).collect();
        assert_eq!(offsets, vec![0, 10, 20, 60], "kept in file order");
        #[derive(Deserialize)]
        struct AsMap {
            #[allow(dead_code)]
            version: FileVersion,
            extents: BTreeMap<u64, Extent>,
            #[allow(dead_code)]
            kept: Kept,
        }
        let bytes = rmp_serde::to_vec(&m).unwrap();
        let old: AsMap = rmp_serde::from_slice(&bytes).unwrap();
        let want: BTreeMap<u64, Extent> = m.extents().collect();
        assert_eq!(old.extents, want);
        let back: Manifest = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, m);
    }
}
