//! Pins: tracks the user asked to keep for offline play.
//!
//! A pin is on an origin file (a [`SourceKey`]), not on a path of the mount:
//! a retag renames the track in the mount but keeps its pin, and a move in
//! the origin carries the pin along ([`Engine::move_sources`]). Pinning a
//! track pins every source it has (its mirrors too).
//!
//! What a pin decides, here and nowhere else:
//! - eviction never takes a chunk of a pinned file's chunk map;
//! - pinned files never weigh more than `pin_share_pct` of the cache: a pin
//!   past that is refused with the numbers, and if files grow (a retag) or
//!   pins come back from a crash past it, the newest pins are released
//!   until they fit, with a [`Notice::PinsReleased`];
//! - which pinned files still need bytes ([`Engine::pins_to_fill`]); the
//!   io-shell fetches them by reading them through [`Engine::read`], like a
//!   reader would, so every fetched byte is cut, stored and verified as
//!   usual.

use super::{Engine, Notice, Output, SourceKey, key_of};
use crate::chunk::ChunkId;
use crate::ids::Ino;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One pinned origin file, as persisted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Order of pinning (higher is newer): the newest go first when pins
    /// must shrink to fit.
    pub seq: u64,
    /// The user stopped its fetch (Ctrl-C on `musicfs pin`): keep what is
    /// cached, fetch no more until pinned again.
    pub paused: bool,
}

/// A pin refused because it would take too much of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinRefused {
    /// Bytes of the files this request would add.
    pub adding_bytes: u64,
    /// Bytes already pinned.
    pub pinned_bytes: u64,
    /// The most that may be pinned.
    pub limit_bytes: u64,
}

/// What a pin request did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinReport {
    /// Files the request named.
    pub files: usize,
    /// Of those, files that were not pinned before.
    pub new_files: usize,
    /// Bytes of all the files the request named.
    pub bytes: u64,
    /// Files left out because every origin holding them is `cache=off`.
    pub uncacheable: usize,
}

/// How much of a file is in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cached {
    /// Every byte: it plays with no origin.
    Full,
    /// Some bytes.
    Partial,
    /// None.
    None,
}

impl Cached {
    /// `full`, `partial` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cached::Full => "full",
            Cached::Partial => "partial",
            Cached::None => "none",
        }
    }
}

/// One pinned file of the tree, for listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinnedFile {
    /// The file.
    pub ino: Ino,
    /// Its size.
    pub size: u64,
    /// Bytes of it in the cache (through its best source).
    pub cached_bytes: u64,
    /// Whether its fetch is paused.
    pub paused: bool,
}

impl Engine {
    /// Loads the persisted pins (at start, after the tree). Pins of files
    /// the tree no longer has are dropped, and if the rest weigh more than
    /// the pin limit (a crash lost a release), the newest are released.
    pub fn restore_pins(&mut self, pins: impl IntoIterator<Item = (SourceKey, Pin)>) {
        for (key, pin) in pins {
            self.next_pin_seq = self.next_pin_seq.max(pin.seq + 1);
            self.pins.insert(key, pin);
        }
        self.settle_pins();
    }

    /// Pins the files `inos` (folders and unknown inodes are skipped), or
    /// refuses if they would take more than the pin limit. Pinning a file
    /// already pinned resumes its fetch if it was paused.
    pub fn pin(&mut self, inos: &[Ino]) -> Result<PinReport, PinRefused> {
        let named: BTreeSet<Ino> = inos
            .iter()
            .copied()
            .filter(|&i| self.tree.file(i).is_some())
            .collect();
        let (files, uncacheable): (BTreeSet<Ino>, BTreeSet<Ino>) =
            named.into_iter().partition(|&i| self.is_cacheable(i));
        let mut report = PinReport {
            files: files.len(),
            uncacheable: uncacheable.len(),
            ..PinReport::default()
        };
        let mut adding = 0u64;
        for &ino in &files {
            let Some(f) = self.tree.file(ino) else {
                continue;
            };
            report.bytes += f.size;
            if !self.is_pinned(ino) {
                report.new_files += 1;
                adding += f.size;
            }
        }
        let pinned = self.pinned_bytes();
        let limit = self.pin_limit_bytes();
        if pinned.saturating_add(adding) > limit {
            return Err(PinRefused {
                adding_bytes: adding,
                pinned_bytes: pinned,
                limit_bytes: limit,
            });
        }
        let seq = self.next_pin_seq;
        self.next_pin_seq += 1;
        for &ino in &files {
            let keys = self.source_keys(ino);
            for key in keys {
                let pin = self
                    .pins
                    .entry(key.clone())
                    .or_insert(Pin { seq, paused: false });
                pin.paused = false;
                self.dirty_pins.insert(key);
            }
        }
        Ok(report)
    }

    /// Releases the pins of `inos`; returns how many files were pinned.
    /// Their chunks become evictable at once.
    pub fn unpin(&mut self, inos: &[Ino]) -> usize {
        let mut released = 0;
        for &ino in inos {
            let keys = self.source_keys(ino);
            let mut any = false;
            for key in keys {
                if self.pins.remove(&key).is_some() {
                    self.dirty_pins.insert(key);
                    any = true;
                }
            }
            released += usize::from(any);
        }
        if released > 0 {
            self.evict();
        }
        released
    }

    /// Stops fetching the pinned files `inos` (their pins and cached bytes
    /// stay); [`Engine::pin`] resumes them.
    pub fn pause_pins(&mut self, inos: &[Ino]) {
        for &ino in inos {
            let keys = self.source_keys(ino);
            for key in keys {
                if let Some(pin) = self.pins.get_mut(&key)
                    && !pin.paused
                {
                    pin.paused = true;
                    self.dirty_pins.insert(key);
                }
            }
        }
    }

    /// Whether some origin holding file `ino` caches its bytes.
    pub fn is_cacheable(&self, ino: Ino) -> bool {
        self.tree.file(ino).is_some_and(|f| {
            f.sources
                .iter()
                .any(|s| !self.config.uncached_origins.contains(&s.origin))
        })
    }

    /// Whether the file `ino` is pinned (through any of its sources).
    pub fn is_pinned(&self, ino: Ino) -> bool {
        self.tree
            .file(ino)
            .is_some_and(|f| f.sources.iter().any(|s| self.pins.contains_key(&key_of(s))))
    }

    /// Every pin, by origin file.
    pub fn pins(&self) -> &BTreeMap<SourceKey, Pin> {
        &self.pins
    }

    /// Pins changed since the last call (`None`: removed), for the io-shell
    /// to persist.
    pub fn take_dirty_pins(&mut self) -> Vec<(SourceKey, Option<Pin>)> {
        let keys = std::mem::take(&mut self.dirty_pins);
        keys.into_iter()
            .map(|k| {
                let p = self.pins.get(&k).copied();
                (k, p)
            })
            .collect()
    }

    /// The most bytes that may be pinned.
    pub fn pin_limit_bytes(&self) -> u64 {
        let limit = u128::from(self.cache.capacity_bytes()) * u128::from(self.config.pin_share_pct);
        u64::try_from(limit / 100).unwrap_or(u64::MAX)
    }

    /// Bytes of the pinned files of the tree (each file counted once).
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned_inos()
            .keys()
            .filter_map(|&i| self.tree.file(i))
            .map(|f| f.size)
            .sum()
    }

    /// The pinned files of the tree, with how much of each is cached.
    pub fn pinned_files(&self) -> Vec<PinnedFile> {
        self.pinned_inos()
            .into_iter()
            .filter_map(|(ino, (_, paused))| {
                let f = self.tree.file(ino)?;
                Some(PinnedFile {
                    ino,
                    size: f.size,
                    cached_bytes: self.cached_bytes(ino),
                    paused,
                })
            })
            .collect()
    }

    /// Pinned files (not paused) with bytes still to fetch, oldest pin
    /// first.
    pub fn pins_to_fill(&self) -> Vec<Ino> {
        let mut todo: Vec<(u64, Ino)> = self
            .pinned_inos()
            .into_iter()
            .filter(|(ino, (_, paused))| {
                !paused && self.is_cacheable(*ino) && self.cached(*ino) != Cached::Full
            })
            .map(|(ino, (seq, _))| (seq, ino))
            .collect();
        todo.sort_unstable();
        todo.into_iter().map(|(_, ino)| ino).collect()
    }

    /// How much of file `ino` is cached.
    pub fn cached(&self, ino: Ino) -> Cached {
        let Some(f) = self.tree.file(ino) else {
            return Cached::None;
        };
        if f.size == 0 {
            return Cached::Full;
        }
        let best = self.cached_bytes(ino);
        if best >= f.size {
            Cached::Full
        } else if best > 0 {
            Cached::Partial
        } else {
            Cached::None
        }
    }

    /// Bytes of file `ino` cached through its best source (a read is
    /// served from one source's chunk map).
    pub fn cached_bytes(&self, ino: Ino) -> u64 {
        match self.tree.file(ino) {
            Some(f) if f.generated.is_some() => f.size,
            Some(_) => self.best_manifest(ino).map_or(0, |(_, bytes)| bytes),
            None => 0,
        }
    }

    /// The chunk map of file `ino` with the most bytes cached, and how many.
    fn best_manifest(&self, ino: Ino) -> Option<(&crate::manifest::Manifest, u64)> {
        self.tree
            .file(ino)?
            .sources
            .iter()
            .filter_map(|s| self.manifests.get(&key_of(s)))
            .map(|m| {
                let cached = m
                    .extents()
                    .filter(|(_, e)| self.cache.contains(e.id))
                    .map(|(_, e)| u64::from(e.len))
                    .sum::<u64>();
                (m, cached)
            })
            .max_by_key(|&(_, cached)| cached)
    }

    /// The keys of every source of file `ino`.
    fn source_keys(&self, ino: Ino) -> Vec<SourceKey> {
        self.tree
            .file(ino)
            .map(|f| f.sources.iter().map(key_of).collect())
            .unwrap_or_default()
    }

    /// The first byte at or after `from` of file `ino` that its best source
    /// has not cached, or `None` if every byte from there on is.
    pub fn next_uncached(&self, ino: Ino, from: u64) -> Option<u64> {
        let f = self.tree.file(ino)?;
        if f.generated.is_some() {
            return None;
        }
        let best = self.best_manifest(ino).map(|(m, _)| m);
        let mut pos = from;
        if let Some(m) = best {
            for (o, e) in m.overlapping(from..f.size) {
                if o > pos || !self.cache.contains(e.id) {
                    break;
                }
                pos = o + u64::from(e.len);
            }
        }
        (pos < f.size).then_some(pos)
    }

    /// Chunks that eviction must keep: those of pinned files' chunk maps.
    pub fn held_chunks(&self) -> BTreeSet<ChunkId> {
        self.pins
            .keys()
            .filter_map(|k| self.manifests.get(k))
            .flat_map(|m| m.extents().map(|(_, e)| e.id))
            .collect()
    }

    /// Pinned files of the tree: inode to (newest pin seq, all paused).
    fn pinned_inos(&self) -> BTreeMap<Ino, (u64, bool)> {
        let mut out: BTreeMap<Ino, (u64, bool)> = BTreeMap::new();
        for (key, pin) in &self.pins {
            if let Some((ino, _)) = self.tree.find_source(key.0, &key.1) {
                let e = out.entry(ino).or_insert((pin.seq, pin.paused));
                e.0 = e.0.max(pin.seq);
                e.1 &= pin.paused;
            }
        }
        out
    }

    /// Drops pins of files the tree no longer has, then releases the newest
    /// pins until the rest fit the limit. Called after the tree or the pins
    /// changed other than by [`Engine::pin`].
    pub(super) fn settle_pins(&mut self) {
        let gone: Vec<SourceKey> = self
            .pins
            .keys()
            .filter(|k| self.tree.find_source(k.0, &k.1).is_none())
            .cloned()
            .collect();
        for key in gone {
            self.pins.remove(&key);
            self.dirty_pins.insert(key);
        }
        let limit = self.pin_limit_bytes();
        let mut pinned = self.pinned_bytes();
        if pinned <= limit {
            return;
        }
        let mut newest: Vec<(u64, Ino)> = self
            .pinned_inos()
            .into_iter()
            .map(|(ino, (seq, _))| (seq, ino))
            .collect();
        newest.sort_unstable_by(|a, b| b.cmp(a));
        let (mut files, mut bytes) = (0usize, 0u64);
        for (_, ino) in newest {
            if pinned <= limit {
                break;
            }
            let size = self.tree.file(ino).map_or(0, |f| f.size);
            let keys = self.source_keys(ino);
            for key in keys {
                if self.pins.remove(&key).is_some() {
                    self.dirty_pins.insert(key);
                }
            }
            pinned -= size;
            files += 1;
            bytes += size;
        }
        self.outputs.push_back(Output::Notice(Notice::PinsReleased {
            files,
            bytes,
            limit_bytes: limit,
        }));
    }

    /// Carries pins along with files that moved in their origin.
    pub(super) fn move_pins(&mut self, moves: &[(SourceKey, crate::catalog::SourceFile)]) {
        for (old, new) in moves {
            if let Some(pin) = self.pins.remove(old) {
                self.dirty_pins.insert(old.clone());
                let key = key_of(new);
                self.pins.insert(key.clone(), pin);
                self.dirty_pins.insert(key);
            }
        }
    }
}
