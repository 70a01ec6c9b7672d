//! Cache accounting: which chunks are on disk, how big the cache is, which
//! chunks are in use, and which to evict.
//!
//! The io-shell owns the bytes; this owns the decisions. A chunk is *pinned*
//! while a reply is being assembled from it, and a pinned chunk is never
//! chosen for eviction (seed 2.8).

use crate::chunk::ChunkId;
use std::collections::{BTreeMap, BTreeSet};

/// What the core remembers of one cached chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkMeta {
    /// Length in bytes.
    pub len: u32,
    /// Logical time of the last use (a counter, persisted, so LRU order
    /// survives restarts without reading a clock).
    pub last_access: u64,
    /// Replies being assembled from this chunk right now.
    pub pins: u32,
}

/// The chunk index with LRU order and watermarks.
#[derive(Clone, Debug)]
pub struct ChunkCache {
    chunks: BTreeMap<ChunkId, ChunkMeta>,
    lru: BTreeSet<(u64, ChunkId)>,
    bytes: u64,
    capacity_bytes: u64,
    evict_start_pct: u64,
    evict_stop_pct: u64,
    clock: u64,
    touched: BTreeMap<ChunkId, u64>,
    /// Chunks added or removed so far (tells views of the cache when to
    /// look again).
    changes: u64,
    /// Pins held, over all chunks (a running sum).
    pins: u64,
}

impl ChunkCache {
    /// An empty cache of `capacity_bytes`, evicting from `start_pct` down to
    /// `stop_pct` of it.
    pub fn new(capacity_bytes: u64, start_pct: u8, stop_pct: u8) -> ChunkCache {
        assert!(
            stop_pct <= start_pct && start_pct <= 100,
            "watermarks out of order"
        );
        ChunkCache {
            chunks: BTreeMap::new(),
            lru: BTreeSet::new(),
            bytes: 0,
            capacity_bytes,
            evict_start_pct: u64::from(start_pct),
            evict_stop_pct: u64::from(stop_pct),
            clock: 0,
            touched: BTreeMap::new(),
            changes: 0,
            pins: 0,
        }
    }

    /// Loads one persisted index entry.
    pub fn load(&mut self, id: ChunkId, len: u32, last_access: u64) {
        self.clock = self.clock.max(last_access);
        self.insert_meta(
            id,
            ChunkMeta {
                len,
                last_access,
                pins: 0,
            },
        );
    }

    /// Records the chunks of a saved index, `(id, len, last_access)`. Into
    /// an empty cache (a mount) the maps are built in bulk: filled one by
    /// one in ascending order, as an index is read, a `BTreeMap`'s nodes
    /// stay half full.
    pub fn load_all(&mut self, entries: impl IntoIterator<Item = (ChunkId, u32, u64)>) {
        if !self.chunks.is_empty() {
            for (id, len, last_access) in entries {
                self.load(id, len, last_access);
            }
            return;
        }
        let mut clock = self.clock;
        let chunks: BTreeMap<ChunkId, ChunkMeta> = entries
            .into_iter()
            .map(|(id, len, last_access)| {
                clock = clock.max(last_access);
                let meta = ChunkMeta {
                    len,
                    last_access,
                    pins: 0,
                };
                (id, meta)
            })
            .collect();
        self.lru = chunks.iter().map(|(&id, m)| (m.last_access, id)).collect();
        self.bytes = chunks.values().map(|m| u64::from(m.len)).sum();
        self.clock = clock;
        self.changes += chunks.len() as u64;
        self.chunks = chunks;
    }

    /// Records a chunk that has just been stored (or found already stored).
    pub fn insert(&mut self, id: ChunkId, len: u32) {
        if self.chunks.contains_key(&id) {
            self.touch(id);
            return;
        }
        self.clock += 1;
        let meta = ChunkMeta {
            len,
            last_access: self.clock,
            pins: 0,
        };
        self.insert_meta(id, meta);
    }

    fn insert_meta(&mut self, id: ChunkId, meta: ChunkMeta) {
        self.changes += 1;
        if let Some(old) = self.chunks.insert(id, meta) {
            self.lru.remove(&(old.last_access, id));
            self.bytes -= u64::from(old.len);
            self.pins -= u64::from(old.pins);
        }
        self.lru.insert((meta.last_access, id));
        self.bytes += u64::from(meta.len);
        self.pins += u64::from(meta.pins);
    }

    /// Whether the chunk is believed to be on disk.
    pub fn contains(&self, id: ChunkId) -> bool {
        self.chunks.contains_key(&id)
    }

    /// The chunk's entry.
    pub fn get(&self, id: ChunkId) -> Option<&ChunkMeta> {
        self.chunks.get(&id)
    }

    /// Marks a use of the chunk (moves it to the young end of the LRU).
    pub fn touch(&mut self, id: ChunkId) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(meta) = self.chunks.get_mut(&id) {
            self.lru.remove(&(meta.last_access, id));
            meta.last_access = clock;
            self.lru.insert((clock, id));
            self.touched.insert(id, clock);
        }
    }

    /// Pins a chunk for the duration of one reply.
    pub fn pin(&mut self, id: ChunkId) {
        if let Some(meta) = self.chunks.get_mut(&id) {
            meta.pins += 1;
            self.pins += 1;
        }
    }

    /// Releases one pin.
    pub fn unpin(&mut self, id: ChunkId) {
        if let Some(meta) = self.chunks.get_mut(&id) {
            debug_assert!(meta.pins > 0, "unpin of an unpinned chunk");
            if meta.pins > 0 {
                meta.pins -= 1;
                self.pins -= 1;
            }
        }
    }

    /// Forgets a chunk (its file is bad or gone). Returns whether it was known.
    pub fn remove(&mut self, id: ChunkId) -> bool {
        match self.chunks.remove(&id) {
            Some(meta) => {
                self.changes += 1;
                self.lru.remove(&(meta.last_access, id));
                self.bytes -= u64::from(meta.len);
                self.pins -= u64::from(meta.pins);
                self.touched.remove(&id);
                true
            }
            None => false,
        }
    }

    /// How many times a chunk was added or removed: equal numbers, same
    /// contents.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Bytes in the cache.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The configured limit.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// True once the cache has grown past the start watermark.
    pub fn over_start_watermark(&self) -> bool {
        self.bytes.saturating_mul(100) > self.capacity_bytes.saturating_mul(self.evict_start_pct)
    }

    /// Picks least-recently-used chunks, neither pinned by a reply nor
    /// `held` (chunks of files the user pinned), until the cache would be
    /// at or below the stop watermark, and forgets them. Chunks for which
    /// `last` holds (the tags a scan kept) go only once every other
    /// candidate has gone. The caller deletes their files.
    pub fn evict(
        &mut self,
        held: impl Fn(ChunkId) -> bool,
        last: impl Fn(ChunkId) -> bool,
    ) -> Vec<ChunkId> {
        if !self.over_start_watermark() {
            return Vec::new();
        }
        let target = self.capacity_bytes.saturating_mul(self.evict_stop_pct) / 100;
        let mut victims = Vec::new();
        let mut remaining = self.bytes;
        let mut deferred = Vec::new();
        for &(_, id) in &self.lru {
            if remaining <= target {
                break;
            }
            let Some(meta) = self.chunks.get(&id) else {
                continue;
            };
            if meta.pins > 0 || held(id) {
                continue;
            }
            if last(id) {
                deferred.push((id, meta.len));
                continue;
            }
            remaining -= u64::from(meta.len);
            victims.push(id);
        }
        for (id, len) in deferred {
            if remaining <= target {
                break;
            }
            remaining -= u64::from(len);
            victims.push(id);
        }
        for &id in &victims {
            self.remove(id);
        }
        victims
    }

    /// Access times changed since the last call, for the io-shell to persist.
    pub fn take_touched(&mut self) -> Vec<(ChunkId, u64)> {
        std::mem::take(&mut self.touched).into_iter().collect()
    }

    /// Total pins held, for invariant checks.
    pub fn total_pins(&self) -> u64 {
        self.pins
    }

    /// Every chunk entry, for invariant checks.
    pub fn iter(&self) -> impl Iterator<Item = (ChunkId, &ChunkMeta)> + '_ {
        self.chunks.iter().map(|(&id, m)| (id, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> ChunkId {
        ChunkId(n)
    }

    #[test]
    fn evicts_lru_between_watermarks_and_spares_pinned() {
        let mut c = ChunkCache::new(1000, 90, 80);
        for n in 0..9 {
            c.insert(id(n), 100);
        }
        assert_eq!(c.bytes(), 900);
        assert!(
            c.evict(|_| false, |_| false).is_empty(),
            "at 90% nothing is evicted yet"
        );
        c.pin(id(0));
        c.touch(id(1)); // 1 becomes the youngest
        c.insert(id(9), 100);
        assert!(c.over_start_watermark());
        let victims = c.evict(|_| false, |_| false);
        // Down to 80%: two chunks go, the oldest unpinned ones: 2 and 3.
        assert_eq!(victims, vec![id(2), id(3)]);
        assert_eq!(c.bytes(), 800);
        assert!(c.contains(id(0)) && c.contains(id(1)));
        c.unpin(id(0));
        assert_eq!(c.total_pins(), 0);
    }

    #[test]
    fn kept_chunks_go_last() {
        let mut c = ChunkCache::new(1000, 90, 50);
        for n in 0..10 {
            c.insert(id(n), 100);
        }
        // 0..4 are kept tags, and the oldest: the others go first.
        let kept = |i: ChunkId| i.0 < 4;
        assert_eq!(
            c.evict(|_| false, kept),
            vec![id(4), id(5), id(6), id(7), id(8)]
        );
        // Only kept chunks left to take: the oldest of them go.
        for n in 10..15 {
            c.insert(id(n), 100);
        }
        c.pin(id(10));
        assert_eq!(
            c.evict(|i| i == id(11), kept),
            vec![id(9), id(12), id(13), id(14), id(0)]
        );
        assert!(c.contains(id(10)) && c.contains(id(11)));
    }

    #[test]
    fn a_bulk_load_is_the_same_cache_as_loads_one_by_one() {
        let entries = [
            (id(3), 10, 7),
            (id(1), 20, 9),
            (id(2), 30, 2),
            (id(1), 25, 4),
        ];
        let mut one_by_one = ChunkCache::new(100, 50, 0);
        for (i, len, at) in entries {
            one_by_one.load(i, len, at);
        }
        let mut bulk = ChunkCache::new(100, 50, 0);
        bulk.load_all(entries);
        assert_eq!(bulk.bytes(), one_by_one.bytes());
        assert_eq!(bulk.bytes(), 65);
        for i in 0..5 {
            assert_eq!(bulk.get(id(i)), one_by_one.get(id(i)), "chunk {i}");
        }
        bulk.insert(id(4), 5);
        one_by_one.insert(id(4), 5);
        assert_eq!(
            bulk.get(id(4)),
            one_by_one.get(id(4)),
            "the clock goes on alike"
        );
        // Into a cache that holds chunks, a load adds to them.
        bulk.load_all([(id(7), 1, 1)]);
        one_by_one.load(id(7), 1, 1);
        let never = |_| false;
        let evicted = bulk.evict(never, never);
        assert_eq!(
            evicted,
            vec![id(7), id(2), id(1), id(3), id(4)],
            "oldest use first"
        );
        assert_eq!(evicted, one_by_one.evict(never, never));
    }

    #[test]
    fn reloaded_entries_keep_their_order() {
        let mut c = ChunkCache::new(300, 50, 0);
        c.load(id(7), 100, 5);
        c.load(id(8), 100, 3);
        c.insert(id(9), 100);
        assert_eq!(c.get(id(9)).map(|m| m.last_access), Some(6));
        assert_eq!(c.evict(|_| false, |_| false), vec![id(8), id(7), id(9)]);
        assert_eq!(c.bytes(), 0);
    }
}
