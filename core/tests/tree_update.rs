//! A patched tree ([`musicfs_core::tree::update`]) is exactly the tree a
//! whole build of the new catalog gives: names, collision suffixes,
//! mirrors, disc folders, sidecars, inodes, mtimes and the build report.

use musicfs_core::catalog::{CatalogEntry, FileKind, SourceFile};
use musicfs_core::tree::VirtualTree;
use musicfs_core::tree::update::{Change, Declined, FileKey, Need, TreeUpdate};
use musicfs_core::{FileVersion, Layout, OriginId, OriginPath, TrackTags};
use proptest::prelude::*;
use std::collections::BTreeMap;

type Catalog = BTreeMap<FileKey, CatalogEntry>;

/// Origin folders: artist and album folders, a loose folder, the top.
const FOLDERS: &[&str] = &["A/X", "A/Y", "A", "B/Z", "C", ""];
const TRACK_NAMES: &[&str] = &["01.flac", "02.flac", "03.mp3", "a.flac"];
/// Playlist lines: tracks beside the playlist, below it, above it, at an
/// absolute path, and a comment.
const PLAYLIST_LINES: &[&str] = &[
    "#EXTM3U",
    "01.flac",
    "X/02.flac",
    "../A/X/01.flac",
    "../../C/a.flac",
    "a.flac",
    "/abs/none.flac",
];
/// Layouts: the default, a deeper one whose artist folder is the second, one
/// with the disc in a folder, and one with no artist folder (artist images
/// have nowhere to go).
const LAYOUTS: &[&str] = &[
    "$albumartist/$album/$track - $title",
    "$genre/$albumartist/$album/$track - $title",
    "$albumartist/$album/Disc $disc/$track $title",
    "$album/$title",
];

fn track_tags() -> impl Strategy<Value = TrackTags> {
    (
        prop::sample::select(vec!["Ann", "Bob", "Cy"]),
        prop::option::of(prop::sample::select(vec!["Ann", "Various Artists"])),
        prop::sample::select(vec!["One", "Two"]),
        prop::option::of(1u32..4),
        prop::sample::select(vec!["t", "u", "01"]),
        prop::option::of(1u32..3),
        prop::option::of(1u32..3),
        prop::option::of(prop::sample::select(vec!["Pop", "Jazz"])),
    )
        .prop_map(
            |(artist, album_artist, album, track, title, disc, disc_total, genre)| TrackTags {
                artist: Some(artist.into()),
                album_artist: album_artist.map(Into::into),
                album: Some(album.into()),
                track,
                title: Some(title.into()),
                disc,
                disc_total,
                genre: genre.map(Into::into),
                ..Default::default()
            },
        )
}

/// One origin file: where it is and what it is.
fn entry() -> impl Strategy<Value = CatalogEntry> {
    let folder = 0..FOLDERS.len();
    let origin = 0u16..2;
    let version = (1u64..3, 0i64..3);
    let kind_and_name = prop_oneof![
        6 => (track_tags(), prop::sample::select(TRACK_NAMES.to_vec()))
            .prop_map(|(t, n)| (FileKind::Track(t), n)),
        1 => Just((FileKind::Cover, "cover.jpg")),
        1 => Just((FileKind::Image, "back.jpg")),
        1 => Just((FileKind::Image, "artist.jpg")),
        1 => prop::sample::select(vec!["01.lrc", "a.lrc"]).prop_map(|n| (FileKind::Lyrics, n)),
        1 => Just((FileKind::Cue, "x.cue")),
        1 => Just((FileKind::Unreadable("bad".into()), "bad.flac")),
        1 => (prop::sample::subsequence(PLAYLIST_LINES.to_vec(), 1..4), prop::sample::select(vec!["l.m3u", "m.m3u8"]))
            .prop_map(|(lines, name)| (FileKind::Playlist(lines.join("\n").into_bytes().into()), name)),
    ];
    (origin, folder, version, kind_and_name).prop_map(
        |(origin, folder, (size, mtime), (kind, name))| {
            let folder = FOLDERS[folder];
            let path = if folder.is_empty() {
                name.to_owned()
            } else {
                format!("{folder}/{name}")
            };
            CatalogEntry {
                source: SourceFile {
                    origin: OriginId(origin),
                    path: OriginPath::new(path.into_bytes()),
                    version: FileVersion {
                        size,
                        mtime_ns: 1_000 + mtime,
                        token: None,
                    },
                },
                kind,
            }
        },
    )
}

fn key(e: &CatalogEntry) -> FileKey {
    (e.source.origin, e.source.path.clone())
}

fn catalog(entries: Vec<CatalogEntry>) -> Catalog {
    entries.into_iter().map(|e| (key(&e), e)).collect()
}

/// A change to a catalog: an entry added or replaced (a retag, a new
/// version), or the `n`th entry removed.
#[derive(Clone, Debug)]
enum Edit {
    Put(CatalogEntry),
    Remove(usize),
    /// The `n`th entry moves to another folder (same tags and version).
    Move(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => entry().prop_map(Edit::Put),
        2 => any::<usize>().prop_map(Edit::Remove),
        1 => (any::<usize>(), 0..FOLDERS.len()).prop_map(|(n, f)| Edit::Move(n, f)),
    ]
}

fn apply(old: &Catalog, edits: &[Edit]) -> Catalog {
    let mut new = old.clone();
    for edit in edits {
        match edit {
            Edit::Put(e) => {
                new.insert(key(e), e.clone());
            }
            Edit::Remove(n) if !new.is_empty() => {
                let k = new.keys().nth(n % new.len()).cloned();
                if let Some(k) = k {
                    new.remove(&k);
                }
            }
            Edit::Move(n, f) if !new.is_empty() => {
                let Some(k) = new.keys().nth(n % new.len()).cloned() else {
                    continue;
                };
                let Some(mut e) = new.remove(&k) else {
                    continue;
                };
                let name = String::from_utf8_lossy(e.source.path.file_name()).into_owned();
                let folder = FOLDERS[*f];
                let path = if folder.is_empty() {
                    name
                } else {
                    format!("{folder}/{name}")
                };
                e.source.path = OriginPath::new(path.into_bytes());
                new.insert(key(&e), e);
            }
            _ => {}
        }
    }
    new
}

/// The changes between two catalogs, as a sync reports them.
fn changes(old: &Catalog, new: &Catalog) -> Vec<Change> {
    let mut keys: Vec<&FileKey> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| Change {
            old: old.get(k).cloned(),
            new: new.get(k).cloned(),
        })
        .collect()
}

/// Answers what the update asks, as the io-shell does from its database.
fn supply(catalog: &Catalog, need: &Need) -> Vec<CatalogEntry> {
    catalog
        .values()
        .filter(|e| need.asks_for(e))
        .cloned()
        .collect()
}

/// The update of `old` to `new`, driven to its end, and how many
/// questions it asked.
fn update(
    layout: &Layout,
    old: &Catalog,
    new: &Catalog,
) -> (
    Result<musicfs_core::tree::update::Updated, Declined>,
    VirtualTree,
) {
    let entries: Vec<CatalogEntry> = old.values().cloned().collect();
    let (tree, report) = VirtualTree::build(layout, &entries);
    let mut up = TreeUpdate::new(&tree, &report, layout, changes(old, new));
    let mut asked = 0;
    while let Some(need) = up.need() {
        asked += 1;
        assert!(asked < 1000, "the update keeps asking");
        up.supply(supply(new, &need));
    }
    let result = up.finish();
    (result, tree)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_patched_tree_is_the_tree_a_whole_build_gives(
        old in prop::collection::vec(entry(), 0..40),
        edits in prop::collection::vec(edit(), 1..4),
        layout in prop::sample::select(LAYOUTS.to_vec()),
    ) {
        let layout = Layout::parse(layout).expect("a valid layout");
        let old = catalog(old);
        let new = apply(&old, &edits);
        let (result, _) = update(&layout, &old, &new);
        let entries: Vec<CatalogEntry> = new.values().cloned().collect();
        let (whole, whole_report) = VirtualTree::build(&layout, &entries);
        // A catalog in another order than the database's builds the same.
        let backwards = VirtualTree::build_from(&layout, entries.iter().rev());
        prop_assert_eq!(&backwards, &(whole.clone(), whole_report.clone()));
        match result {
            Ok(updated) => {
                prop_assert_eq!(&updated.tree, &whole);
                prop_assert_eq!(&updated.report, &whole_report);
                // Every track placed in a rebuilt folder came with the update.
                for e in &updated.entries {
                    prop_assert_eq!(new.get(&key(e)), Some(e));
                }
            }
            // A whole build never probed for these few paths, and nothing
            // here is a file at the top or called "Playlists": declining
            // would be a bug.
            Err(why) => prop_assert!(false, "declined: {}", why),
        }
    }
}

#[test]
fn an_update_touches_only_the_top_folders_of_what_changed() {
    let layout = Layout::default_layout();
    let track = |path: &str, artist: &str, title: &str| CatalogEntry {
        source: SourceFile {
            origin: OriginId(0),
            path: OriginPath::new(path.as_bytes().to_vec()),
            version: FileVersion {
                size: 10,
                mtime_ns: 5,
                token: None,
            },
        },
        kind: FileKind::Track(TrackTags {
            artist: Some(artist.into()),
            album: Some("Al".into()),
            track: Some(1),
            title: Some(title.into()),
            ..Default::default()
        }),
    };
    let old = catalog(
        (0..50)
            .map(|i| track(&format!("a{i}/x.flac"), &format!("Artist {i}"), "t"))
            .collect(),
    );
    let mut new = old.clone();
    let retagged = track("a7/x.flac", "Artist 7", "new title");
    new.insert(key(&retagged), retagged);
    let (result, old_tree) = update(&layout, &old, &new);
    let updated = result.expect("a retag is patched");
    assert_eq!(
        updated.tops.iter().map(String::as_str).collect::<Vec<_>>(),
        ["Artist 7"]
    );
    // Only the retagged track and what shares its folders was read.
    assert_eq!(updated.entries.len(), 1);
    assert!(old_tree.resolve("Artist 7/Al/01 - t.flac").is_some());
    assert!(
        updated
            .tree
            .resolve("Artist 7/Al/01 - new title.flac")
            .is_some()
    );
    assert!(updated.tree.resolve("Artist 7/Al/01 - t.flac").is_none());
    assert!(updated.tree.resolve("Artist 8/Al/01 - t.flac").is_some());
}

/// An origin-0 file of 1 byte at `path`.
fn at(path: &str, kind: FileKind) -> CatalogEntry {
    CatalogEntry {
        source: SourceFile {
            origin: OriginId(0),
            path: OriginPath::new(path.as_bytes().to_vec()),
            version: FileVersion {
                size: 1,
                mtime_ns: 1,
                token: None,
            },
        },
        kind,
    }
}

#[test]
fn a_layout_without_folders_is_built_whole_and_playlists_are_patched() {
    let folderless = Layout::parse("$artist - $title").expect("a valid layout");
    let mut old = Catalog::new();
    let t = at(
        "a.flac",
        FileKind::Track(TrackTags {
            title: Some("t".into()),
            ..Default::default()
        }),
    );
    old.insert(key(&t), t.clone());
    let mut new = old.clone();
    let mut t2 = t.clone();
    t2.source.path = OriginPath::new(b"b.flac".to_vec());
    new.insert(key(&t2), t2);
    let (result, _) = update(&folderless, &old, &new);
    assert_eq!(result.err(), Some(Declined::Layout));

    // Playlists are rebuilt with the folders a change reaches, naming
    // tracks outside them as the old tree shows those.
    let layout = Layout::default_layout();
    let mut old = Catalog::new();
    for (path, artist) in [("a/1.flac", "Ann"), ("b/2.flac", "Bob")] {
        let e = at(
            path,
            FileKind::Track(TrackTags {
                artist: Some(artist.into()),
                title: Some("t".into()),
                ..Default::default()
            }),
        );
        old.insert(key(&e), e);
    }
    let list = at(
        "l.m3u",
        FileKind::Playlist(b"a/1.flac\nb/2.flac".to_vec().into()),
    );
    old.insert(key(&list), list);
    let mut new = old.clone();
    let retag = at(
        "a/1.flac",
        FileKind::Track(TrackTags {
            artist: Some("Ann".into()),
            title: Some("new".into()),
            ..Default::default()
        }),
    );
    new.insert(key(&retag), retag);
    let (result, _) = update(&layout, &old, &new);
    let updated = result.expect("patched");
    let entries: Vec<CatalogEntry> = new.values().cloned().collect();
    assert_eq!(updated.tree, VirtualTree::build(&layout, &entries).0);
    assert!(updated.tops.contains("Playlists") && !updated.tops.contains("Bob"));
    let ino = updated
        .tree
        .resolve("Playlists/l.m3u")
        .expect("the playlist");
    let text = String::from_utf8(
        updated
            .tree
            .file(ino)
            .and_then(|f| f.generated.clone())
            .expect("bytes")
            .to_vec(),
    )
    .expect("utf-8");
    assert!(
        text.contains("Ann/Unknown Album/00 - new.flac")
            && text.contains("Bob/Unknown Album/00 - t.flac"),
        "{text}"
    );
}
