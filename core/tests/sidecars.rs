//! What sits beside the tracks: lyrics under their track's name, other
//! images and cue sheets in the album folder, artist images in the artist's
//! folder, playlists rewritten into `Playlists/`.

use musicfs_core::catalog::{CatalogEntry, FileKind, SourceFile};
use musicfs_core::engine::{Config, Engine, Output, ReqId};
use musicfs_core::naming::is_valid_name;
use musicfs_core::tree::{FileRole, VirtualTree, diff};
use musicfs_core::{FileVersion, Layout, OriginId, OriginPath, Time, TrackTags};

fn src(origin: u16, path: &str, size: u64, mtime_ns: i64) -> SourceFile {
    SourceFile {
        origin: OriginId(origin),
        path: OriginPath::new(path.as_bytes().to_vec()),
        version: FileVersion {
            size,
            mtime_ns,
            token: None,
        },
    }
}

fn track(origin: u16, path: &str, artist: &str, album: &str, n: u32, title: &str) -> CatalogEntry {
    CatalogEntry {
        source: src(origin, path, 1000 + u64::from(n), 1_000),
        kind: FileKind::Track(TrackTags {
            artist: Some(artist.into()),
            album: Some(album.into()),
            track: Some(n),
            title: Some(title.into()),
            ..Default::default()
        }),
    }
}

fn side(origin: u16, path: &str, size: u64, kind: FileKind) -> CatalogEntry {
    CatalogEntry {
        source: src(origin, path, size, 2_000),
        kind,
    }
}

fn playlist(origin: u16, path: &str, text: &str) -> CatalogEntry {
    CatalogEntry {
        source: src(origin, path, text.len() as u64, 500),
        kind: FileKind::Playlist(text.as_bytes().into()),
    }
}

fn build(catalog: &[CatalogEntry]) -> (VirtualTree, musicfs_core::tree::BuildReport) {
    VirtualTree::build(&Layout::default_layout(), catalog)
}

fn paths(tree: &VirtualTree) -> Vec<String> {
    let mut v: Vec<String> = tree
        .files()
        .filter_map(|(ino, _)| tree.path_of(ino))
        .collect();
    v.sort();
    v
}

fn role_of(tree: &VirtualTree, path: &str) -> Option<FileRole> {
    tree.resolve(path)
        .and_then(|i| tree.file(i))
        .map(|f| f.role)
}

fn generated(tree: &VirtualTree, path: &str) -> String {
    let file = tree.resolve(path).and_then(|i| tree.file(i));
    let bytes = file.and_then(|f| f.generated.clone()).unwrap_or_default();
    assert_eq!(file.map(|f| f.size), Some(bytes.len() as u64), "{path}");
    String::from_utf8(bytes.to_vec()).unwrap_or_default()
}

/// A small library filed as `Artist/Album/NN x.flac` in one origin.
fn library() -> Vec<CatalogEntry> {
    vec![
        track(
            0,
            "Bjork/Homogenic/03 joga.flac",
            "Björk",
            "Homogenic",
            3,
            "Jóga",
        ),
        track(
            0,
            "Bjork/Homogenic/04 unravel.flac",
            "Björk",
            "Homogenic",
            4,
            "Unravel",
        ),
        track(
            0,
            "Bjork/Post/01 army.flac",
            "Björk",
            "Post",
            1,
            "Army of Me",
        ),
        side(0, "Bjork/Homogenic/03 joga.lrc", 40, FileKind::Lyrics),
        side(0, "Bjork/Homogenic/04 unravel.txt", 41, FileKind::Lyrics),
        side(0, "Bjork/Homogenic/notes.txt", 42, FileKind::Lyrics),
        side(0, "Bjork/Homogenic/cover.jpg", 10, FileKind::Cover),
        side(0, "Bjork/Homogenic/Back.JPG", 11, FileKind::Image),
        side(0, "Bjork/Homogenic/disc.png", 12, FileKind::Image),
        side(0, "Bjork/Homogenic/Homogenic.cue", 13, FileKind::Cue),
        side(0, "Bjork/artist.jpg", 14, FileKind::Image),
    ]
}

#[test]
fn lyrics_take_their_tracks_name_and_the_rest_their_own() {
    let (tree, report) = build(&library());
    assert_eq!(
        paths(&tree),
        [
            "Björk/Homogenic/03 - Jóga.flac",
            "Björk/Homogenic/03 - Jóga.lrc",
            "Björk/Homogenic/04 - Unravel.flac",
            "Björk/Homogenic/04 - Unravel.txt",
            "Björk/Homogenic/Back.jpg",
            "Björk/Homogenic/Homogenic.cue",
            "Björk/Homogenic/cover.jpg",
            "Björk/Homogenic/disc.png",
            "Björk/Post/01 - Army of Me.flac",
            "Björk/artist.jpg",
        ]
    );
    assert_eq!(
        role_of(&tree, "Björk/Homogenic/03 - Jóga.lrc"),
        Some(FileRole::Lyrics)
    );
    assert_eq!(
        role_of(&tree, "Björk/Homogenic/Back.jpg"),
        Some(FileRole::Image)
    );
    assert_eq!(
        role_of(&tree, "Björk/Homogenic/Homogenic.cue"),
        Some(FileRole::Cue)
    );
    assert_eq!(
        role_of(&tree, "Björk/artist.jpg"),
        Some(FileRole::ArtistImage)
    );
    let lrc = tree.resolve("Björk/Homogenic/03 - Jóga.lrc");
    let lrc = lrc.and_then(|i| tree.file(i)).map(|f| f.sources.clone());
    assert_eq!(
        lrc,
        Some(vec![src(0, "Bjork/Homogenic/03 joga.lrc", 40, 2_000)])
    );
    assert_eq!(report.tracks, 3);
    assert_eq!(report.lyrics, 2);
    assert_eq!(report.images, 2);
    assert_eq!(report.artist_images, 1);
    assert_eq!(report.cues, 1);
    assert_eq!(report.covers, 1);
    // notes.txt names no track.
    assert_eq!(report.sidecars_left_out, 1);
    for path in paths(&tree) {
        assert!(path.split('/').all(is_valid_name), "{path}");
    }
}

#[test]
fn lyrics_move_with_their_track_on_a_retag() {
    let mut lib = library();
    let (before, _) = build(&lib);
    lib[0] = track(
        0,
        "Bjork/Homogenic/03 joga.flac",
        "Björk",
        "Homogenic",
        3,
        "Jóga (Remix)",
    );
    let (after, _) = build(&lib);
    assert!(
        after
            .resolve("Björk/Homogenic/03 - Jóga (Remix).lrc")
            .is_some()
    );
    assert!(after.resolve("Björk/Homogenic/03 - Jóga.lrc").is_none());
    let d = diff(&before, &after);
    let album = after.resolve("Björk/Homogenic");
    assert!(album.is_some_and(|a| d.entries.contains(&(a, "03 - Jóga.lrc".to_owned()))));
    // A lyrics file added later appears; one of a track that is gone goes.
    lib.push(side(0, "Bjork/Post/01 army.lrc", 5, FileKind::Lyrics));
    lib.retain(|e| e.source.path.as_bytes() != b"Bjork/Homogenic/04 unravel.flac");
    let (later, _) = build(&lib);
    assert!(later.resolve("Björk/Post/01 - Army of Me.lrc").is_some());
    assert!(later.resolve("Björk/Homogenic/04 - Unravel.txt").is_none());
}

#[test]
fn artist_images_need_one_artist_and_an_artist_folder() {
    let mut lib = library();
    // Next to the tracks: the artist of those tracks.
    lib.push(side(0, "Bjork/Post/artist.png", 20, FileKind::Image));
    // A folder of two artists: no single artist folder.
    lib.push(track(0, "mixed/a.flac", "A", "X", 1, "a"));
    lib.push(track(0, "mixed/b.flac", "B", "Y", 1, "b"));
    lib.push(side(0, "mixed/artist.jpg", 21, FileKind::Image));
    lib.push(side(0, "mixed/back.jpg", 22, FileKind::Image));
    let (tree, report) = build(&lib);
    assert_eq!(
        role_of(&tree, "Björk/artist.png"),
        Some(FileRole::ArtistImage)
    );
    assert!(!paths(&tree).iter().any(|p| p.ends_with("back.jpg")));
    assert_eq!(
        report.sidecars_left_out, 3,
        "notes.txt, mixed/artist.jpg, mixed/back.jpg"
    );
    // A layout with no artist folder has nowhere for them.
    let layout = Layout::parse("$album/$track $title").unwrap_or_default();
    let (tree, report) = VirtualTree::build(&layout, &library());
    assert!(!paths(&tree).iter().any(|p| p.contains("artist")));
    assert_eq!(report.artist_images, 0);
    // A deeper layout puts them at its artist level.
    let layout = Layout::parse("Music/$albumartist/$album/$track $title").unwrap_or_default();
    let (tree, _) = VirtualTree::build(&layout, &library());
    assert_eq!(
        role_of(&tree, "Music/Björk/artist.jpg"),
        Some(FileRole::ArtistImage)
    );
}

#[test]
fn sidecar_names_are_valid_and_collision_safe_and_mirrors_merge() {
    let mut lib = library();
    // The same back cover in a mirror origin: one entry, two sources.
    lib.push(track(1, "x/03.flac", "Björk", "Homogenic", 3, "Jóga"));
    lib.push(side(1, "x/Back.JPG", 11, FileKind::Image));
    // A third origin's Back.JPG of another size: "(2)".
    lib.push(track(2, "z/03.flac", "Björk", "Homogenic", 3, "Jóga"));
    lib.push(side(2, "z/Back.JPG", 99, FileKind::Image));
    // Names that need fixing.
    lib.push(side(0, "Bjork/Post/.. ..jpg", 7, FileKind::Image));
    lib.push(side(0, "Bjork/Post/scan\u{1}01.png", 8, FileKind::Image));
    let (tree, report) = build(&lib);
    let back = tree
        .resolve("Björk/Homogenic/Back.jpg")
        .and_then(|i| tree.file(i));
    assert_eq!(back.map(|f| f.sources.len()), Some(2));
    assert_eq!(
        role_of(&tree, "Björk/Homogenic/Back (2).jpg"),
        Some(FileRole::Image)
    );
    assert_eq!(
        role_of(&tree, "Björk/Post/image.jpg"),
        Some(FileRole::Image)
    );
    assert_eq!(
        role_of(&tree, "Björk/Post/scan 01.png"),
        Some(FileRole::Image)
    );
    assert_eq!(report.mirrors, 3, "the track twice and its back cover");
    for path in paths(&tree) {
        assert!(path.split('/').all(is_valid_name), "{path}");
    }
}

#[test]
fn playlists_are_rewritten_to_mount_paths() {
    let mut lib = library();
    lib.push(playlist(
        0,
        "Bjork/best.m3u8",
        "#EXTM3U\n#EXTINF:1,Jóga\nHomogenic/03 joga.flac\n/home/me/Music/Bjork/Post/01 army.flac\n#EXTINF:2,Gone\nGone/x.mp3\n",
    ));
    lib.push(playlist(
        0,
        "lists/win.m3u",
        "..\\Bjork\\Homogenic\\04 unravel.flac\r\n",
    ));
    let (tree, report) = build(&lib);
    assert_eq!(
        generated(&tree, "Playlists/best.m3u8"),
        "#EXTM3U\n#EXTINF:1,Jóga\n../Björk/Homogenic/03 - Jóga.flac\n\
         ../Björk/Post/01 - Army of Me.flac\n# #EXTINF:2,Gone\n# not in the library: Gone/x.mp3\n"
    );
    assert_eq!(
        generated(&tree, "Playlists/win.m3u"),
        "../Björk/Homogenic/04 - Unravel.flac\n"
    );
    assert_eq!(report.playlists, 2);
    assert_eq!(report.playlist_entries_missing, 1);
    let file = tree
        .resolve("Playlists/best.m3u8")
        .and_then(|i| tree.file(i));
    assert!(file.is_some_and(|f| f.sources.is_empty() && f.role == FileRole::Playlist));
    // Its mtime is its tracks' when they are newer.
    let node = tree
        .resolve("Playlists/best.m3u8")
        .and_then(|i| tree.get(i));
    assert_eq!(node.map(|n| n.mtime_ns), Some(1_000));

    // A retag rewrites the playlist, and the diff says so.
    let mut retagged = lib.clone();
    retagged[0] = track(
        0,
        "Bjork/Homogenic/03 joga.flac",
        "Björk",
        "Homogenic",
        3,
        "Joga!",
    );
    let (after, _) = build(&retagged);
    assert!(
        generated(&after, "Playlists/best.m3u8").contains("../Björk/Homogenic/03 - Joga!.flac\n")
    );
    let ino = after.resolve("Playlists/best.m3u8");
    assert!(ino.is_some_and(|i| diff(&tree, &after).inodes.contains(&i)));
}

#[test]
fn playlists_folder_is_never_an_artists_and_mirrors_merge() {
    let mut lib = library();
    lib.push(track(0, "p/1.flac", "Playlists", "Album", 1, "One"));
    lib.push(playlist(0, "a.m3u", "p/1.flac\n"));
    // The same playlist in a mirror origin naming the mirror's path.
    lib.push(track(1, "p/1.flac", "Playlists", "Album", 1, "One"));
    lib.push(playlist(1, "a.m3u", "p/1.flac\n"));
    // Another one of the same name with other entries.
    lib.push(playlist(1, "sub/a.m3u", "nothing.flac\n"));
    let (tree, report) = build(&lib);
    assert_eq!(
        generated(&tree, "Playlists/a.m3u"),
        "../Playlists (2)/Album/01 - One.flac\n"
    );
    assert_eq!(
        generated(&tree, "Playlists/a (2).m3u"),
        "# not in the library: nothing.flac\n"
    );
    assert_eq!(
        role_of(&tree, "Playlists (2)/Album/01 - One.flac"),
        Some(FileRole::Track)
    );
    assert_eq!(report.playlists, 2);
    // No playlists, no folder.
    let (tree, _) = build(&library());
    assert!(tree.resolve("Playlists").is_none());
}

#[test]
fn the_engine_serves_generated_bytes_from_memory() {
    let mut lib = library();
    lib.push(playlist(0, "Bjork/best.m3u", "Homogenic/03 joga.flac\n"));
    let (tree, _) = build(&lib);
    let ino = tree.resolve("Playlists/best.m3u");
    let Some(ino) = ino else {
        panic!("no playlist")
    };
    let want = generated(&tree, "Playlists/best.m3u");
    let mut engine = Engine::new(Config::default(), tree, Vec::new(), Vec::new(), 1);
    let mut read = |offset: u64, size: u32| {
        engine.read(Time::ZERO, ReqId(offset + 1), ino, offset, size);
        let outputs: Vec<Output> = std::iter::from_fn(|| engine.poll_output()).collect();
        match outputs.as_slice() {
            [Output::Generated { data, .. }] => data.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(read(0, 4096), want.as_bytes());
    assert_eq!(read(3, 5), &want.as_bytes()[3..8]);
    assert!(read(want.len() as u64, 10).is_empty());
    assert!(read(u64::MAX - 1, 10).is_empty());
    assert_eq!(engine.cached(ino), musicfs_core::engine::Cached::Full);
}
