//! How long the tree of a 200,000-track library takes to build: what a
//! remount without a saved tree waits for (`bench/run --tracks 200000`
//! prints the whole remount). A synthetic catalog, in the order the
//! database gives it (origin, path), shaped like `make-library.py`'s:
//! artist and album folders with a cover each, loose tracks in messy
//! "incoming" folders, a few multi-disc albums and a second origin that
//! mirrors part of the first.
//!
//! `cargo bench -p musicfs-core --bench tree_build [-- TRACKS]`

use musicfs_core::catalog::{CatalogEntry, FileKind, SourceFile};
use musicfs_core::tree::VirtualTree;
use musicfs_core::{FileVersion, Layout, OriginId, OriginPath, TrackTags};
use std::time::Instant;

/// A fixed xorshift: the same catalog on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn entry(origin: u16, path: String, size: u64, kind: FileKind) -> CatalogEntry {
    CatalogEntry {
        source: SourceFile {
            origin: OriginId(origin),
            path: OriginPath::new(path.into_bytes()),
            version: FileVersion {
                size,
                mtime_ns: 1_700_000_000_000_000_000 + size as i64,
                token: None,
            },
        },
        kind,
    }
}

fn catalog(tracks: usize) -> Vec<CatalogEntry> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(tracks + tracks / 8);
    let mut made = 0;
    let mut album: u32 = 0;
    while made < tracks {
        let artist = rng.below((tracks as u64 / 40).max(1));
        let discs = if rng.below(20) == 0 { 2 } else { 1 };
        let per_disc = 8 + rng.below(8) as u32;
        let loose = rng.below(50) == 0;
        let folder = if loose {
            format!("incoming/batch-{}", album % 97)
        } else {
            format!("Artist {artist}/Album {album}")
        };
        for disc in 1..=discs {
            for n in 1..=per_disc {
                let tags = TrackTags {
                    title: Some(format!("Song {} of {album}", n).into()),
                    artist: Some(format!("Artist {artist}").into()),
                    album: Some(format!("Album {album}").into()),
                    track: Some(n),
                    track_total: Some(per_disc),
                    disc: (discs > 1).then_some(disc),
                    disc_total: (discs > 1).then_some(discs),
                    year: Some(1960 + (album % 60) as i32),
                    genre: Some(["Rock", "Jazz", "Pop", "Folk"][album as usize % 4].into()),
                    format: Some("FLAC".into()),
                    ..TrackTags::default()
                };
                let path = format!("{folder}/{disc}-{n:02} Song {n}.flac");
                out.push(entry(
                    0,
                    path,
                    20_000 + rng.below(100_000),
                    FileKind::Track(tags),
                ));
                made += 1;
            }
        }
        if !loose {
            out.push(entry(
                0,
                format!("{folder}/cover.jpg"),
                50_000,
                FileKind::Cover,
            ));
        }
        album += 1;
    }
    // A second origin mirrors every 20th track.
    let mirrored: Vec<CatalogEntry> = out
        .iter()
        .step_by(20)
        .filter(|e| matches!(e.kind, FileKind::Track(_)))
        .map(|e| CatalogEntry {
            source: SourceFile {
                origin: OriginId(1),
                ..e.source.clone()
            },
            kind: e.kind.clone(),
        })
        .collect();
    out.extend(mirrored);
    out.sort_by(|a, b| (a.source.origin, &a.source.path).cmp(&(b.source.origin, &b.source.path)));
    out
}

// The bench times the build with the machine's clock; the core itself
// never reads one (clippy.toml keeps it out of `core/src`).
#[allow(clippy::disallowed_methods)]
fn main() {
    let tracks = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(200_000);
    let catalog = catalog(tracks);
    let layout = Layout::default_layout();
    let mut times = Vec::new();
    let mut nodes = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let (tree, _report) = VirtualTree::build(&layout, &catalog);
        times.push(started.elapsed().as_secs_f64() * 1e3);
        nodes = tree.len();
        drop(tree);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "tree build: {} catalog entries, {} nodes: median {:.0} ms (min {:.0}, max {:.0}) of {}",
        catalog.len(),
        nodes,
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
}
