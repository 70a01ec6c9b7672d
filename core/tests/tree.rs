//! The virtual tree: names from tags, collisions, covers, mirrors, and
//! stability across builds.

use musicfs_core::catalog::{CatalogEntry, FileKind, SourceFile};
use musicfs_core::fs::NodeKind;
use musicfs_core::naming::is_valid_name;
use musicfs_core::tree::{Body, VirtualTree, diff};
use musicfs_core::{FileVersion, Ino, Layout, OriginId, OriginPath, TrackTags};

fn src(origin: u16, path: &str, size: u64) -> SourceFile {
    SourceFile {
        origin: OriginId(origin),
        path: OriginPath::new(path.as_bytes().to_vec()),
        version: FileVersion {
            size,
            mtime_ns: 1_000 + size as i64,
            token: None,
        },
    }
}

fn tags(artist: &str, album: &str, track: u32, title: &str) -> TrackTags {
    TrackTags {
        artist: Some(artist.into()),
        album: Some(album.into()),
        track: Some(track),
        title: Some(title.into()),
        ..Default::default()
    }
}

fn entry(origin: u16, path: &str, size: u64, t: TrackTags) -> CatalogEntry {
    CatalogEntry {
        source: src(origin, path, size),
        kind: FileKind::Track(t),
    }
}

fn cover(origin: u16, path: &str) -> CatalogEntry {
    CatalogEntry {
        source: src(origin, path, 10),
        kind: FileKind::Cover,
    }
}

fn paths(tree: &VirtualTree) -> Vec<String> {
    let mut v: Vec<String> = tree
        .files()
        .filter_map(|(ino, _)| tree.path_of(ino))
        .collect();
    v.sort();
    v
}

fn build(catalog: &[CatalogEntry]) -> VirtualTree {
    VirtualTree::build(&Layout::default_layout(), catalog).0
}

#[test]
fn tags_decide_the_path_not_folders() {
    let tree = build(&[
        entry(
            0,
            "incoming/x/track-1.flac",
            100,
            tags("Björk", "Homogenic", 3, "Jóga"),
        ),
        entry(
            0,
            "old/rips/track-2.mp3",
            200,
            tags("Björk", "Homogenic", 4, "Unravel"),
        ),
    ]);
    assert_eq!(
        paths(&tree),
        [
            "Björk/Homogenic/03 - Jóga.flac",
            "Björk/Homogenic/04 - Unravel.mp3"
        ]
    );
    let ino = tree.resolve("Björk/Homogenic/03 - Jóga.flac").unwrap();
    let attr = tree.attr(ino).unwrap();
    assert_eq!((attr.size, attr.kind), (100, NodeKind::File));
    let album = tree.resolve("Björk/Homogenic").unwrap();
    assert_eq!(
        tree.attr(album).unwrap().mtime_ns,
        1_200,
        "dir has newest child's mtime"
    );
}

#[test]
fn compilations_and_multi_disc_albums() {
    let mut comp = tags("Someone", "Hits", 1, "Song");
    comp.compilation = true;
    let mut d1 = tags("Band", "Double", 3, "Three");
    d1.disc = Some(1);
    let mut d2 = tags("Band", "Double", 1, "One");
    d2.disc = Some(2);
    let mut va = tags("Other", "Hits", 2, "Other Song");
    va.album_artist = Some("Various Artists".into());
    let tree = build(&[
        entry(0, "a.flac", 1, comp),
        entry(0, "b.flac", 2, d1),
        entry(0, "c.flac", 3, d2),
        entry(0, "d.flac", 4, va),
    ]);
    assert_eq!(
        paths(&tree),
        [
            "Band/Double/1-03 - Three.flac",
            "Band/Double/2-01 - One.flac",
            "Various Artists/Hits/01 - Song.flac",
            "Various Artists/Hits/02 - Other Song.flac",
        ]
    );
}

#[test]
fn collisions_get_stable_suffixes_and_every_track_appears_once() {
    let same = tags("Same Title", "Twins", 1, "Intro");
    let catalog = vec![
        entry(0, "z.flac", 10, same.clone()),
        entry(0, "a.flac", 11, same.clone()),
        entry(0, "m.flac", 12, same),
    ];
    let tree = build(&catalog);
    assert_eq!(
        paths(&tree),
        [
            "Same Title/Twins/01 - Intro (2).flac",
            "Same Title/Twins/01 - Intro (3).flac",
            "Same Title/Twins/01 - Intro.flac",
        ]
    );
    // The scan order never matters.
    let mut reversed = catalog.clone();
    reversed.reverse();
    assert_eq!(build(&reversed), tree);
    let first = tree.resolve("Same Title/Twins/01 - Intro.flac").unwrap();
    let node = tree.file(first).unwrap();
    assert_eq!(node.sources[0].path.as_bytes(), b"a.flac");
}

#[test]
fn same_track_in_two_origins_is_one_mirrored_entry() {
    let t = tags("A", "B", 1, "C");
    let (tree, report) = VirtualTree::build(
        &Layout::default_layout(),
        &[
            entry(1, "x/c.flac", 500, t.clone()),
            entry(0, "c.flac", 500, t.clone()),
            entry(0, "dup/c.flac", 500, t),
        ],
    );
    // Same origin twice is two tracks; another origin with the same size is a mirror.
    assert_eq!(paths(&tree), ["A/B/01 - C (2).flac", "A/B/01 - C.flac"]);
    assert_eq!(report.mirrors, 1);
    let ino = tree.resolve("A/B/01 - C.flac").unwrap();
    let origins: Vec<u16> = tree
        .file(ino)
        .unwrap()
        .sources
        .iter()
        .map(|s| s.origin.0)
        .collect();
    assert_eq!(origins, [0, 1]);
}

#[test]
fn covers_join_a_single_album_folder_only() {
    let (tree, report) = VirtualTree::build(
        &Layout::default_layout(),
        &[
            entry(0, "tidy/1.flac", 1, tags("A", "Tidy", 1, "One")),
            entry(0, "tidy/2.flac", 1, tags("A", "Tidy", 2, "Two")),
            cover(0, "tidy/Cover.png"),
            entry(0, "mixed/1.flac", 1, tags("B", "X", 1, "One")),
            entry(0, "mixed/2.flac", 1, tags("C", "Y", 1, "One")),
            cover(0, "mixed/folder.jpg"),
        ],
    );
    assert!(tree.resolve("A/Tidy/Cover.png").is_some());
    assert_eq!(report.covers, 1);
    assert_eq!(report.covers_ambiguous, 1);
}

#[test]
fn awkward_tags_still_give_valid_names() {
    let cases = [
        ("AC/DC", "Back in Black", "Hells Bells"),
        ("Null\0Byte", "Control\tChars\n", "Bell\x07"),
        ("Dots", "..", "."),
        ("", "", ""),
        ("  Spaces  ", " Padded ", " Padded Title "),
    ];
    let catalog: Vec<CatalogEntry> = cases
        .iter()
        .enumerate()
        .map(|(i, (a, b, c))| entry(0, &format!("f{i}.ogg"), i as u64, tags(a, b, 1, c)))
        .collect();
    let tree = build(&catalog);
    assert_eq!(tree.file_count(), cases.len());
    let mut stack = vec![Ino::ROOT];
    while let Some(ino) = stack.pop() {
        if let Some(Body::Dir(d)) = tree.get(ino).map(|n| &n.body) {
            for (name, &child) in &d.children {
                assert!(is_valid_name(name), "{name:?}");
                stack.push(child);
            }
        }
    }
    assert!(
        tree.resolve("AC_DC/Back in Black/01 - Hells Bells.ogg")
            .is_some()
    );
}

#[test]
fn inodes_are_stable_and_diff_names_only_what_changed() {
    let a = entry(0, "a.flac", 1, tags("A", "One", 1, "x"));
    let b = entry(0, "b.flac", 2, tags("B", "Two", 1, "y"));
    let c = entry(0, "c.flac", 3, tags("B", "Two", 2, "z"));
    let old = build(&[a.clone(), b.clone()]);
    let new = build(&[c, b, a]);
    let same = "A/One/01 - x.flac";
    assert_eq!(old.resolve(same), new.resolve(same));
    assert_eq!(new.total_bytes(), 1 + 2 + 3, "kept as the tree is built");
    assert_eq!(old.total_bytes(), 1 + 2);
    let d = diff(&old, &new);
    let album = new.resolve("B/Two").unwrap();
    assert_eq!(d.entries, vec![(album, "02 - z.flac".to_string())]);
    assert!(d.inodes.contains(&album));
    assert!(
        !d.inodes.contains(&new.resolve("A/One").unwrap()),
        "untouched folder stays cached"
    );
}

#[test]
fn readdir_pages_through_a_directory() {
    let catalog: Vec<CatalogEntry> = (1..=30)
        .map(|i| entry(0, &format!("{i}.mp3"), i, tags("A", "B", i as u32, "t")))
        .collect();
    let tree = build(&catalog);
    let album = tree.resolve("A/B").unwrap();
    let mut names = Vec::new();
    let mut offset = 0;
    loop {
        let page = tree.readdir(album, offset, 7).unwrap();
        let Some(last) = page.last() else { break };
        offset = last.next_offset;
        names.extend(page.into_iter().map(|e| e.name));
    }
    assert_eq!(names.len(), 32);
    assert_eq!(&names[..3], [".", "..", "01 - t.mp3"]);
}

#[test]
fn diff_names_deletions_and_the_folders_a_media_server_should_rescan() {
    let a = entry(0, "a.flac", 1, tags("A", "One", 1, "x"));
    let a2 = entry(0, "a2.flac", 4, tags("A", "One", 2, "x2"));
    let b = entry(0, "b.flac", 2, tags("B", "Two", 1, "y"));
    let c = entry(0, "c.flac", 3, tags("A B", "Three", 1, "z"));
    let old = build(&[a.clone(), a2.clone(), b.clone()]);
    // a2 retagged onto a new album of A, b removed, a new artist "A B".
    let a2_moved = entry(0, "a2.flac", 4, tags("A", "Four", 1, "x2"));
    let new = build(&[a.clone(), a2_moved, c]);
    let d = diff(&old, &new);
    let gone = old.resolve("B").unwrap();
    assert!(
        d.deleted.contains(&(Ino::ROOT, gone, "B".to_string())),
        "{:?}",
        d.deleted
    );
    let old_a2 = old.resolve("A/One/02 - x2.flac").unwrap();
    let one = old.resolve("A/One").unwrap();
    assert!(
        d.deleted
            .contains(&(one, old_a2, "02 - x2.flac".to_string()))
    );
    // B vanished from the root, so the root is named: it covers everything.
    let folders = d.changed_folders(&new, 100);
    assert_eq!(folders.into_iter().collect::<Vec<_>>(), vec![String::new()]);

    // Without a change at the root: the deepest folders, none inside another.
    let old = build(&[a.clone(), b.clone()]);
    let new = build(&[
        a.clone(),
        b.clone(),
        entry(0, "d.flac", 5, tags("A", "One", 3, "w")),
        entry(0, "e.flac", 6, tags("A", "Five", 1, "v")),
        entry(0, "f.flac", 7, tags("A", "Five", 2, "u")),
    ]);
    let folders = diff(&old, &new).changed_folders(&new, 100);
    assert_eq!(
        folders.into_iter().collect::<Vec<_>>(),
        vec!["A/Five".to_string(), "A/One".to_string()]
    );
    // Past the bound, the root alone.
    let folders = diff(&old, &new).changed_folders(&new, 1);
    assert_eq!(folders.into_iter().collect::<Vec<_>>(), vec![String::new()]);
}

/// Every folder and file as a depth-first walk in listing order finds
/// them (what `find` and a media server's scan see), through `readdir`.
fn walk(tree: &VirtualTree, dir: Ino, folders: &mut Vec<Ino>, files: &mut Vec<(Ino, Ino)>) {
    folders.push(dir);
    let entries = tree.readdir(dir, 2, usize::MAX).unwrap();
    for e in &entries {
        if e.kind == NodeKind::File {
            files.push((dir, e.ino));
        }
    }
    for e in entries {
        if e.kind == NodeKind::Dir {
            walk(tree, e.ino, folders, files);
        }
    }
}

#[test]
fn next_folder_follows_a_walk_in_listing_order_and_files_in_lists_a_folders_files() {
    // Artists with one and several albums, a multi-disc album, covers,
    // and a compilation: folders at several depths, some with no file.
    let mut catalog = Vec::new();
    for (artist, albums) in [("Zed", 1), ("Abba", 3), ("Mika", 2)] {
        for a in 0..albums {
            for t in 1..=3 {
                let path = format!("{artist}/{a}/{t}.flac");
                catalog.push(entry(
                    0,
                    &path,
                    100 + t,
                    tags(artist, &format!("Album {a}"), t as u32, "t"),
                ));
            }
            catalog.push(cover(0, &format!("{artist}/{a}/cover.jpg")));
        }
    }
    let mut disc2 = tags("Abba", "Double", 1, "second disc");
    disc2.disc = Some(2);
    catalog.push(entry(0, "Abba/Double/d2.flac", 7, disc2));
    catalog.push(entry(
        0,
        "Abba/Double/d1.flac",
        8,
        tags("Abba", "Double", 1, "first disc"),
    ));
    let mut various = tags("Various", "Hits", 1, "hit");
    various.compilation = true;
    catalog.push(entry(0, "comp/1.flac", 9, various));
    let tree = build(&catalog);

    let (mut folders, mut files) = (Vec::new(), Vec::new());
    walk(&tree, Ino::ROOT, &mut folders, &mut files);
    assert!(folders.len() > 8, "{folders:?}");
    let mut chained = vec![Ino::ROOT];
    while let Some(next) = tree.next_folder(*chained.last().unwrap()) {
        chained.push(next);
        assert!(chained.len() <= folders.len(), "next_folder went round");
    }
    assert_eq!(chained, folders);

    let mut listed = Vec::new();
    for &dir in &folders {
        listed.extend(tree.files_in(dir).map(|(ino, _)| (dir, ino)));
    }
    assert_eq!(listed, files);
    assert_eq!(
        tree.files_in(files[0].1).count(),
        0,
        "a file has no files in it"
    );
}
