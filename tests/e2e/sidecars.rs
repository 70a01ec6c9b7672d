//! End to end: what sits beside the tracks follows them into the mount.
//! Lyrics take their track's name (and follow a retag), other images and
//! cue sheets stay in the album folder, artist images go to the artist's
//! folder, playlists appear in `Playlists/` with entries that resolve to
//! the tracks of the mount, and a lyrics file added while mounted shows up.

use musicfs_tests::disk::noise;
use musicfs_tests::fixtures::write_wav;
use musicfs_tests::mount::{MountCommand, Mounted};
use musicfs_tests::{is_listed, sha256_file, wait_for};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

fn write(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("dir");
    }
    std::fs::write(path, bytes).expect("write");
}

/// The library: two albums of one artist, with lyrics, images, a cue
/// sheet, an artist image, playlists and files MusicFS does not show.
fn library(lib: &Path) {
    write_wav(
        &lib.join("Bjork/Homogenic/03 joga.wav"),
        120_000,
        1,
        "Jóga",
        "Björk",
        "Homogenic",
    );
    write_wav(
        &lib.join("Bjork/Homogenic/04 unravel.wav"),
        110_000,
        2,
        "Unravel",
        "Björk",
        "Homogenic",
    );
    write_wav(
        &lib.join("Bjork/Post/01 army.wav"),
        100_000,
        3,
        "Army of Me",
        "Björk",
        "Post",
    );
    write(
        &lib.join("Bjork/Homogenic/03 joga.lrc"),
        "[00:01.00]Jóga\n".as_bytes(),
    );
    write(
        &lib.join("Bjork/Homogenic/04 unravel.txt"),
        b"Unravel lyrics\n",
    );
    write(&lib.join("Bjork/Homogenic/cover.jpg"), &noise(5000, 10));
    write(&lib.join("Bjork/Homogenic/back.jpg"), &noise(6000, 11));
    write(&lib.join("Bjork/Homogenic/Disc 1.png"), &noise(7000, 12));
    write(
        &lib.join("Bjork/Homogenic/Homogenic.cue"),
        b"FILE \"x.wav\" WAVE\n",
    );
    write(&lib.join("Bjork/artist.jpg"), &noise(8000, 13));
    let abs = lib.join("Bjork/Post/01 army.wav");
    let mix = format!(
        "#EXTM3U\n#EXTINF:1,Jóga\n../Bjork/Homogenic/03 joga.wav\n{}\n#EXTINF:2,Gone\nmissing/gone.mp3\n",
        abs.display()
    );
    write(&lib.join("lists/mix.m3u8"), mix.as_bytes());
    // Windows-style, Latin-1 (a path written by an old player).
    write(
        &lib.join("lists/old.m3u"),
        b"..\\Bjork\\Homogenic\\04 unravel.wav\r\n#J\xf3ga\r\n",
    );
    write(&lib.join("lists/huge.m3u"), &vec![b'#'; (1 << 20) + 10]);
    write(&lib.join("Bjork/Homogenic/info.nfo"), b"nfo");
    write(&lib.join("Bjork/Homogenic/rip.log"), b"log");
    write(&lib.join("Bjork/Post/rip.log"), b"log");
}

fn mount(dir: &Path) -> Mounted {
    MountCommand::in_dir(Path::new(BIN), dir).start(Duration::from_secs(60))
}

/// Each entry of a playlist of the mount, resolved as a player would:
/// relative to the playlist's folder.
fn entries(playlist: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(playlist).expect("playlist is UTF-8");
    let folder = playlist.parent().expect("folder");
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            std::fs::canonicalize(folder.join(l))
                .unwrap_or_else(|e| panic!("{l} in {}: {e}", playlist.display()))
        })
        .collect()
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn sidecars_follow_their_music() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lib = tmp.path().join("lib");
    library(&lib);
    let m = mount(tmp.path());
    let mnt = m.mountpoint.clone();
    let album = mnt.join("Björk/Homogenic");

    // Lyrics under their track's name, the rest under their own, bytes
    // as in the origin.
    for (shown, origin) in [
        (
            "Björk/Homogenic/00 - Jóga.lrc",
            "Bjork/Homogenic/03 joga.lrc",
        ),
        (
            "Björk/Homogenic/00 - Unravel.txt",
            "Bjork/Homogenic/04 unravel.txt",
        ),
        ("Björk/Homogenic/cover.jpg", "Bjork/Homogenic/cover.jpg"),
        ("Björk/Homogenic/back.jpg", "Bjork/Homogenic/back.jpg"),
        ("Björk/Homogenic/Disc 1.png", "Bjork/Homogenic/Disc 1.png"),
        (
            "Björk/Homogenic/Homogenic.cue",
            "Bjork/Homogenic/Homogenic.cue",
        ),
        ("Björk/artist.jpg", "Bjork/artist.jpg"),
    ] {
        let path = mnt.join(shown);
        assert!(is_listed(&path), "{shown} not listed:\n{}", m.log_text());
        assert_eq!(
            sha256_file(&path).expect(shown),
            sha256_file(&lib.join(origin)).expect(origin),
            "{shown}"
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(&album)
        .expect("album")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "00 - Jóga.lrc",
            "00 - Jóga.wav",
            "00 - Unravel.txt",
            "00 - Unravel.wav",
            "Disc 1.png",
            "Homogenic.cue",
            "back.jpg",
            "cover.jpg"
        ],
        "no .nfo, no .log"
    );

    // Playlists: rewritten, sized exactly, and every entry lands on its track.
    let mix = mnt.join("Playlists/mix.m3u8");
    let text = std::fs::read(&mix).expect("mix");
    assert_eq!(
        std::fs::metadata(&mix).expect("stat").len(),
        text.len() as u64
    );
    let text = String::from_utf8(text).expect("UTF-8");
    assert!(
        text.contains("../Björk/Homogenic/00 - Jóga.wav\n")
            && text.contains("# not in the library: missing/gone.mp3\n")
            && text.contains("# #EXTINF:2,Gone\n"),
        "{text}"
    );
    assert_eq!(
        entries(&mix),
        [
            canonical(&album.join("00 - Jóga.wav")),
            canonical(&mnt.join("Björk/Post/00 - Army of Me.wav")),
        ]
    );
    let old = mnt.join("Playlists/old.m3u");
    assert_eq!(entries(&old), [canonical(&album.join("00 - Unravel.wav"))]);
    assert!(
        std::fs::read_to_string(&old)
            .expect("old")
            .contains("#Jóga\n")
    );
    assert!(!mnt.join("Playlists/huge.m3u").exists());
    let log = m.log_text();
    assert!(
        log.contains("huge.m3u left out") && log.contains("over the 1024 KiB playlist limit"),
        "{log}"
    );
    assert!(log.contains("skipped: 2 .log, 1 .nfo"), "{log}");

    // A lyrics file added while mounted shows up beside its track.
    write(&lib.join("Bjork/Post/01 army.lrc"), b"[00:00.00]Army\n");
    let added = mnt.join("Björk/Post/00 - Army of Me.lrc");
    assert!(
        wait_for(Duration::from_secs(15), || is_listed(&added)),
        "added lyrics never showed:\n{}",
        m.log_text()
    );
    assert_eq!(std::fs::read(&added).expect("added"), b"[00:00.00]Army\n");

    // A retag moves the lyrics with the track and rewrites the playlist.
    let before = std::fs::read_to_string(&mix).expect("mix");
    write_wav(
        &lib.join("Bjork/Homogenic/03 joga.wav"),
        120_000,
        1,
        "Jóga (Live)",
        "Björk",
        "Homogenic",
    );
    let moved = album.join("00 - Jóga (Live).lrc");
    assert!(
        wait_for(Duration::from_secs(15), || is_listed(&moved)),
        "lyrics did not follow the retag:\n{}",
        m.log_text()
    );
    assert!(!album.join("00 - Jóga.lrc").exists());
    assert_eq!(
        std::fs::read(&moved).expect("moved"),
        "[00:01.00]Jóga\n".as_bytes()
    );
    let after = std::fs::read_to_string(&mix).expect("mix");
    assert_ne!(before, after);
    assert_eq!(
        std::fs::metadata(&mix).expect("stat").len(),
        after.len() as u64
    );
    assert_eq!(
        entries(&mix)[0],
        canonical(&album.join("00 - Jóga (Live).wav"))
    );
    m.stop();
}
