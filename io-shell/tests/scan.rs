//! The local scanner and tag reader against real audio files.
//!
//! The main test generates a library with the corpus generator
//! (`tests/corpus/make-library.py`, a copy of `shared/corpus/`; ffmpeg and
//! mutagen), scans it and checks every track against the generator's
//! manifest. The other tests build small hand-made fixtures for formats and
//! tag layouts the generator does not produce (WAV, AIFF, WavPack, ALAC,
//! APE, MP3 with only ID3v1 or APE tags) and for hostile files (empty,
//! random, truncated, FIFOs, dangling links).
//!
//! These tests need `python3` with `mutagen` and `ffmpeg` on PATH. Without
//! them they fail with a message saying so: a scanner test that quietly
//! passes without having read a single audio file proves nothing.

use musicfs::library::scan::{NoProgress, ScanOptions, ScanProgress, scan_file, scan_local};
use musicfs::library::tags::{TagErrorKind, read_tags, read_tags_from};
use musicfs_core::{CatalogEntry, FileKind, OriginId, TrackTags};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const ORIGIN: OriginId = OriginId(7);

/// Fails the test with a clear message unless python3+mutagen and ffmpeg
/// are available.
fn require_tools() {
    let ffmpeg = Command::new("ffmpeg").arg("-version").output();
    assert!(
        ffmpeg.as_ref().is_ok_and(|o| o.status.success()),
        "these tests need ffmpeg on PATH (apt-get install ffmpeg): {ffmpeg:?}"
    );
    let mutagen = Command::new("python3")
        .args(["-c", "import mutagen"])
        .output();
    assert!(
        mutagen.as_ref().is_ok_and(|o| o.status.success()),
        "these tests need python3 with mutagen (pip install mutagen): {mutagen:?}"
    );
}

/// The corpus generator: `$MUSICFS_MAKE_LIBRARY`, else the workspace's copy
/// (`tests/corpus/`), else the shared one beside the checkout.
fn generator_script() -> PathBuf {
    if let Some(p) = std::env::var_os("MUSICFS_MAKE_LIBRARY") {
        return PathBuf::from(p);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        here.join("../tests/corpus/make-library.py"),
        here.join("../../shared/corpus/make-library.py"),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!("library generator not found at {candidates:?} (set MUSICFS_MAKE_LIBRARY)")
        })
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Resolves `.` and `..` lexically: the generator writes paths such as
/// `Dots/../track-000068.opus` for an album literally named "..".
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

fn number(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n > 0)
}

fn pair(s: Option<&str>) -> (Option<u32>, Option<u32>) {
    match s {
        None => (None, None),
        Some(s) => match s.split_once('/') {
            Some((n, t)) => (number(n), number(t)),
            None => (number(s), None),
        },
    }
}

/// What the scanner should report for a manifest record.
fn expected_tags(rec: &Value) -> TrackTags {
    let tags = &rec["tags"];
    let text = |k: &str| {
        tags.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(Box::<str>::from)
    };
    let format = rec["format"].as_str().unwrap_or_default();
    let (mut track, track_total) = pair(tags.get("tracknumber").and_then(Value::as_str));
    if format == "m4a" {
        // MP4's `trkn` holds 16-bit numbers; mutagen clamps 99999 to 65535.
        track = track.map(|n| n.min(u32::from(u16::MAX)));
    }
    let (disc, disc_total) = pair(tags.get("discnumber").and_then(Value::as_str));
    TrackTags {
        title: text("title"),
        artist: text("artist"),
        album_artist: text("albumartist"),
        album: text("album"),
        track,
        track_total,
        disc,
        disc_total,
        year: text("date").and_then(|d| d.get(..4)?.parse().ok()),
        genre: text("genre"),
        compilation: text("compilation").as_deref() == Some("1"),
        format: Some(
            match format {
                "flac" => "FLAC",
                "mp3" => "MP3",
                "ogg" => "Vorbis",
                "opus" => "Opus",
                "m4a" => "AAC",
                other => panic!("unexpected format {other} in manifest"),
            }
            .into(),
        ),
    }
}

/// Counts progress callbacks, to check the scanner reports them.
#[derive(Default)]
struct Counting {
    discovered: AtomicU64,
    scanned: AtomicU64,
    finished: AtomicU64,
}

impl ScanProgress for Counting {
    fn discovered(&self, n: u64) {
        self.discovered.fetch_add(n, Ordering::Relaxed);
    }
    fn scanned(&self, n: u64) {
        self.scanned.fetch_add(n, Ordering::Relaxed);
    }
    fn finish(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

fn by_path(entries: &[CatalogEntry]) -> BTreeMap<Vec<u8>, &CatalogEntry> {
    entries
        .iter()
        .map(|e| (e.source.path.as_bytes().to_vec(), e))
        .collect()
}

#[test]
fn generated_library_matches_manifest() {
    require_tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("lib");
    let manifest = tmp.path().join("lib.manifest.jsonl");
    // 200 tracks with seed 324 give compilations in FLAC, MP3 (TCMP), M4A
    // (cpil) and Opus, multi-disc albums, "n/total" track numbers in every
    // format, plus the generator's edge cases.
    let t0 = Instant::now();
    run(Command::new("python3")
        .arg(generator_script())
        .arg("--out")
        .arg(&root)
        .args([
            "--tracks",
            "200",
            "--seed",
            "324",
            "--edge-cases",
            "--jobs",
            "4",
        ])
        .arg("--manifest")
        .arg(&manifest));
    eprintln!("generated library in {:.1} s", t0.elapsed().as_secs_f64());

    let records: Vec<Value> = std::fs::read_to_string(&manifest)
        .expect("manifest")
        .lines()
        .map(|l| serde_json::from_str(l).expect("manifest line"))
        .collect();

    let progress = Counting::default();
    let opts = ScanOptions {
        threads: 2,
        ..ScanOptions::default()
    };
    let report = scan_local(ORIGIN, &root, &opts, &progress).expect("scan");
    let files = report.entries.len();
    eprintln!(
        "scanned {files} files in {:.1} ms ({:.0} files/s; timing only, not a check)",
        report.elapsed.as_secs_f64() * 1e3,
        files as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );

    assert!(report.errors.is_empty(), "walk errors: {:?}", report.errors);
    let paths: Vec<&[u8]> = report
        .entries
        .iter()
        .map(|e| e.source.path.as_bytes())
        .collect();
    assert!(
        paths.windows(2).all(|w| w[0] < w[1]),
        "entries not sorted/unique"
    );
    assert_eq!(progress.discovered.load(Ordering::Relaxed), files as u64);
    assert_eq!(progress.scanned.load(Ordering::Relaxed), files as u64);
    assert_eq!(progress.finished.load(Ordering::Relaxed), 1);

    let found = by_path(&report.entries);
    let mut seen_formats = BTreeMap::<String, usize>::new();
    let (mut tracks, mut covers, mut broken, mut compilations, mut discs) = (0, 0, 0, 0, 0);
    let mut sidecars = 0;
    for rec in &records {
        let path = normalize(rec["path"].as_str().expect("path"));
        let entry = found.get(path.as_bytes());
        match rec["kind"].as_str().expect("kind") {
            "track" => {
                tracks += 1;
                let entry = entry.unwrap_or_else(|| panic!("track {path} not scanned"));
                let FileKind::Track(got) = &entry.kind else {
                    panic!("{path}: expected a track, got {:?}", entry.kind);
                };
                let want = expected_tags(rec);
                assert_eq!(got, &want, "{path}");
                assert_eq!(entry.source.origin, ORIGIN);
                assert_eq!(
                    entry.source.version.size,
                    rec["size"].as_u64().expect("size")
                );
                *seen_formats
                    .entry(want.format.as_deref().unwrap_or_default().to_owned())
                    .or_default() += 1;
                compilations += usize::from(want.compilation);
                discs += usize::from(want.disc.is_some());
            }
            "cover" => {
                covers += 1;
                let entry = entry.unwrap_or_else(|| panic!("cover {path} not scanned"));
                assert_eq!(entry.kind, FileKind::Cover, "{path}");
            }
            "broken" if path.rsplit('/').next().is_some_and(|n| n.starts_with('.')) => {
                assert!(entry.is_none(), "hidden file {path} was scanned");
            }
            "broken" => {
                broken += 1;
                let entry = entry.unwrap_or_else(|| panic!("broken file {path} not listed"));
                let FileKind::Unreadable(why) = &entry.kind else {
                    panic!("{path}: expected unreadable, got {:?}", entry.kind);
                };
                assert!(!why.is_empty() && !why.contains('\n'), "{path}: {why:?}");
            }
            // Sidecars are listed; the tree decides where they go.
            "other" if path.ends_with(".txt") => {
                sidecars += 1;
                assert_eq!(entry.map(|e| &e.kind), Some(&FileKind::Lyrics), "{path}");
            }
            "other" if path.ends_with(".m3u") => {
                sidecars += 1;
                let Some(FileKind::Playlist(bytes)) = entry.map(|e| &e.kind) else {
                    panic!("{path}: expected a playlist, got {entry:?}");
                };
                assert!(bytes.starts_with(b"#EXTM3U\n"), "{path}");
            }
            "other" => assert!(entry.is_none(), "{path} should be ignored"),
            other => panic!("unknown manifest kind {other}"),
        }
    }
    eprintln!(
        "formats checked: {seen_formats:?}; {compilations} compilation tracks, {discs} with a disc number"
    );
    for f in ["FLAC", "MP3", "Vorbis", "Opus", "AAC"] {
        assert!(seen_formats.contains_key(f), "no {f} track in the library");
    }
    assert!(compilations > 0 && discs > 0);
    assert_eq!(broken, 3, "empty.flac, garbage.mp3, truncated.flac");
    assert_eq!(report.tracks, tracks);
    assert_eq!(report.covers, covers);
    assert_eq!(report.unreadable, broken);
    assert_eq!(report.sidecars, sidecars);
    assert_eq!(sidecars, 2, "notes.txt and playlist.m3u");
    // The `odd/loop` symlink (not followed), counted by its extension.
    assert_eq!(report.skipped_other, 1);
    assert_eq!(report.skipped_summary(), "1 (none)");
    assert!(!paths.iter().any(|p| p.starts_with(b"odd/loop")));
    assert_eq!(files, tracks + covers + broken + sidecars);

    // The watcher's per-file entry point agrees with the scanner.
    for entry in &report.entries {
        let again = scan_file(ORIGIN, &root, entry.source.path.as_bytes())
            .expect("scan_file")
            .expect("scan_file entry");
        assert_eq!(&again, entry);
    }
    for ignored in [&b"odd/.hidden.flac"[..], b"odd/loop"] {
        assert_eq!(scan_file(ORIGIN, &root, ignored).expect("scan_file"), None);
    }
}

/// Writes the hand-made fixtures into `dir` with ffmpeg and mutagen.
fn make_fixtures(dir: &Path) {
    const SCRIPT: &str = r#"
import os, subprocess, sys
from mutagen.id3 import ID3, TIT2, TPE1, TPE2, TALB, TRCK, TPOS, TDRC, TCON, TCMP, TYER
from mutagen.wave import WAVE
from mutagen.aiff import AIFF
from mutagen.apev2 import APEv2
from mutagen.mp4 import MP4
from mutagen.flac import FLAC
from mutagen.oggvorbis import OggVorbis

out = sys.argv[1]

def enc(name, *codec):
    path = os.path.join(out, name)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "sine=frequency=440:sample_rate=44100:duration=0.5",
                    *codec, path], check=True)
    return path

def id3(tags, title, artist, aa, album, trck, tpos, date, genre, comp):
    tags.add(TIT2(encoding=3, text=title))
    tags.add(TPE1(encoding=3, text=artist))
    tags.add(TPE2(encoding=3, text=aa))
    tags.add(TALB(encoding=3, text=album))
    tags.add(TRCK(encoding=3, text=trck))
    tags.add(TPOS(encoding=3, text=tpos))
    tags.add(TDRC(encoding=3, text=date))
    tags.add(TCON(encoding=3, text=genre))
    if comp:
        tags.add(TCMP(encoding=3, text="1"))

p = enc("wave.wav", "-c:a", "pcm_s16le")
f = WAVE(p); f.add_tags()
id3(f.tags, "Wave Title", "Wave Artist", "Wave AA", "Wave Album", "3/12", "1/2", "2001-05-03", "(17)", True)
f.save()

p = enc("aiff.aiff", "-c:a", "pcm_s16be")
f = AIFF(p); f.add_tags()
id3(f.tags, "Aiff Title", "Aiff Artist", "Aiff AA", "Aiff Album", "5", "2/2", "1984", "8", False)
f.save()

p = enc("wavpack.wv", "-c:a", "wavpack")
a = APEv2()
for k, v in [("Title", "Wv Title"), ("Artist", "Wv Artist"), ("Album Artist", "Wv AA"),
             ("Album", "Wv Album"), ("Track", "5/9"), ("Disc", "2/3"), ("Year", "1999"),
             ("Genre", "Jazz"), ("Compilation", "1")]:
    a[k] = v
a.save(p)

p = enc("alac.m4a", "-c:a", "alac")
f = MP4(p)
f["\xa9nam"] = "Alac Title"; f["\xa9ART"] = "Alac Artist"; f["aART"] = "Alac AA"
f["\xa9alb"] = "Alac Album"; f["trkn"] = [(4, 10)]; f["disk"] = [(2, 2)]
f["\xa9day"] = "2010-01-01T00:00:00Z"; f["\xa9gen"] = "Ambient"; f["cpil"] = True
f.save()

mp3 = ["-c:a", "libmp3lame", "-b:a", "64k", "-id3v2_version", "0"]

def pad(s, n):
    return s.encode("latin-1").ljust(n, b"\0")

p = enc("id3v1.mp3", *mp3)
with open(p, "ab") as fh:
    fh.write(b"TAG" + pad("V1 Title", 30) + pad("V1 Artist", 30) + pad("V1 Album", 30)
             + b"1987" + pad("comment", 28) + b"\0" + bytes([7]) + bytes([8]))

p = enc("apeonly.mp3", *mp3)
a = APEv2()
for k, v in [("Title", "Ape Title"), ("Artist", "Ape Artist"), ("Album Artist", "Ape AA"),
             ("Album", "Ape Album"), ("Track", "2/5"), ("Year", "2005"), ("Genre", "Blues")]:
    a[k] = v
a.save(p)

p = enc("mixed.mp3", *mp3)
t = ID3(); t.add(TIT2(encoding=3, text="Mixed Title")); t.add(TRCK(encoding=3, text="9")); t.save(p)
a = APEv2(); a["Album"] = "Ape Album"; a["Artist"] = "Ape Artist"; a["Title"] = "Ape Title"; a.save(p)

p = enc("weird.mp3", *mp3)
t = ID3(); t.add(TIT2(encoding=1, text="Weird")); t.add(TRCK(encoding=1, text="-3/12"))
t.add(TCON(encoding=1, text="17")); t.add(TCMP(encoding=1, text="1"))
t.add(TYER(encoding=1, text="1999")); t.add(TPE2(encoding=1, text="Various Artists"))
t.save(p, v2_version=3)

p = os.path.join(out, "fake.ape")
with open(p, "wb") as fh:
    fh.write(b"MAC " + b"\x96\x0f\x00\x00" + b"\x00" * 200)
a = APEv2(); a["Title"] = "Monkey Title"; a["Artist"] = "Monkey Artist"; a["Track"] = "1"; a.save(p)

p = enc("blank.flac", "-c:a", "flac")
f = FLAC(p)
f["TITLE"] = "   "; f["ARTIST"] = "Flac Artist"; f["ALBUM"] = ""; f["TRACKNUMBER"] = "4"
f["TRACKTOTAL"] = "11"; f["DISCNUMBER"] = "2"; f["DISCTOTAL"] = "3"; f["DATE"] = "1998-07-14"
f["GENRE"] = " "; f["COMPILATION"] = "true"
f.save()

p = enc("year.ogg", "-c:a", "libvorbis")
f = OggVorbis(p)
f["TITLE"] = "Ogg Title"; f["YEAR"] = "1995"; f["TRACKNUMBER"] = "3/12"; f["DISCNUMBER"] = "1/2"
f["ALBUMARTIST"] = "Ogg AA"; f["COMPILATION"] = "0"
f.save()

enc("layer2.mp2", "-c:a", "mp2")
"#;
    run(Command::new("python3").arg("-c").arg(SCRIPT).arg(dir));
}

fn track(title: &str, artist: &str, format: &str) -> TrackTags {
    TrackTags {
        title: Some(title.into()),
        artist: Some(artist.into()),
        format: Some(format.into()),
        ..TrackTags::default()
    }
}

#[test]
fn other_formats_and_tag_layouts() {
    require_tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    make_fixtures(tmp.path());
    let read =
        |name: &str| read_tags(&tmp.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));

    assert_eq!(
        read("wave.wav"),
        TrackTags {
            album_artist: Some("Wave AA".into()),
            album: Some("Wave Album".into()),
            track: Some(3),
            track_total: Some(12),
            disc: Some(1),
            disc_total: Some(2),
            year: Some(2001),
            genre: Some("Rock".into()),
            compilation: true,
            ..track("Wave Title", "Wave Artist", "WAV")
        }
    );
    assert_eq!(
        read("aiff.aiff"),
        TrackTags {
            album_artist: Some("Aiff AA".into()),
            album: Some("Aiff Album".into()),
            track: Some(5),
            disc: Some(2),
            disc_total: Some(2),
            year: Some(1984),
            genre: Some("Jazz".into()),
            ..track("Aiff Title", "Aiff Artist", "AIFF")
        }
    );
    assert_eq!(
        read("wavpack.wv"),
        TrackTags {
            album_artist: Some("Wv AA".into()),
            album: Some("Wv Album".into()),
            track: Some(5),
            track_total: Some(9),
            disc: Some(2),
            disc_total: Some(3),
            year: Some(1999),
            genre: Some("Jazz".into()),
            compilation: true,
            ..track("Wv Title", "Wv Artist", "WavPack")
        }
    );
    assert_eq!(
        read("alac.m4a"),
        TrackTags {
            album_artist: Some("Alac AA".into()),
            album: Some("Alac Album".into()),
            track: Some(4),
            track_total: Some(10),
            disc: Some(2),
            disc_total: Some(2),
            year: Some(2010),
            genre: Some("Ambient".into()),
            compilation: true,
            ..track("Alac Title", "Alac Artist", "ALAC")
        }
    );
    assert_eq!(
        read("id3v1.mp3"),
        TrackTags {
            album: Some("V1 Album".into()),
            track: Some(7),
            year: Some(1987),
            genre: Some("Jazz".into()),
            ..track("V1 Title", "V1 Artist", "MP3")
        }
    );
    assert_eq!(
        read("apeonly.mp3"),
        TrackTags {
            album_artist: Some("Ape AA".into()),
            album: Some("Ape Album".into()),
            track: Some(2),
            track_total: Some(5),
            year: Some(2005),
            genre: Some("Blues".into()),
            ..track("Ape Title", "Ape Artist", "MP3")
        }
    );
    // ID3v2 is primary; fields it lacks come from the APE tag.
    assert_eq!(
        read("mixed.mp3"),
        TrackTags {
            album: Some("Ape Album".into()),
            track: Some(9),
            ..track("Mixed Title", "Ape Artist", "MP3")
        }
    );
    // ID3v2.3 (UTF-16, TYER), a track number lofty cannot split, a bare
    // numeric genre.
    assert_eq!(
        read("weird.mp3"),
        TrackTags {
            artist: None,
            album_artist: Some("Various Artists".into()),
            track_total: Some(12),
            year: Some(1999),
            genre: Some("Rock".into()),
            compilation: true,
            ..track("Weird", "", "MP3")
        }
    );
    assert_eq!(
        read("fake.ape"),
        TrackTags {
            track: Some(1),
            ..track("Monkey Title", "Monkey Artist", "APE")
        }
    );
    // Blank values are unset; separate TRACKTOTAL/DISCTOTAL fields count.
    assert_eq!(
        read("blank.flac"),
        TrackTags {
            title: None,
            track: Some(4),
            track_total: Some(11),
            disc: Some(2),
            disc_total: Some(3),
            year: Some(1998),
            compilation: true,
            ..track("", "Flac Artist", "FLAC")
        }
    );
    assert_eq!(
        read("year.ogg"),
        TrackTags {
            artist: None,
            album_artist: Some("Ogg AA".into()),
            track: Some(3),
            track_total: Some(12),
            disc: Some(1),
            disc_total: Some(2),
            year: Some(1995),
            ..track("Ogg Title", "", "Vorbis")
        }
    );
    assert_eq!(read("layer2.mp2").format.as_deref(), Some("MP2"));

    // The same bytes through the generic reader, with a misleading hint:
    // content decides the format.
    let bytes = std::fs::read(tmp.path().join("alac.m4a")).expect("read");
    let from = read_tags_from(std::io::Cursor::new(bytes), "mp3").expect("read_tags_from");
    assert_eq!(from, read("alac.m4a"));
}

/// A FLAC file cut in the middle of its VORBIS_COMMENT block.
fn truncate_in_comments(flac: &[u8]) -> Vec<u8> {
    assert_eq!(&flac[..4], b"fLaC");
    let mut at = 4;
    loop {
        let header = &flac[at..at + 4];
        let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        if header[0] & 0x7f == 4 {
            return flac[..at + 4 + len / 2].to_vec();
        }
        assert_eq!(header[0] & 0x80, 0, "no VORBIS_COMMENT block");
        at += 4 + len;
    }
}

#[test]
fn hostile_files_do_not_stop_a_scan() {
    require_tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("lib");
    let album = root.join("Artist/Album");
    std::fs::create_dir_all(&album).expect("mkdir");
    make_fixtures(&album);
    std::fs::remove_file(album.join("layer2.mp2")).expect("rm"); // not an audio extension

    let good = std::fs::read(album.join("blank.flac")).expect("read");
    let odd = root.join("odd");
    std::fs::create_dir_all(&odd).expect("mkdir");
    std::fs::write(odd.join("zero.flac"), b"").expect("write");
    let mut x: u32 = 12345;
    let noise: Vec<u8> = (0..20_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    std::fs::write(odd.join("random.m4a"), &noise).expect("write");
    std::fs::write(odd.join("random.mp3"), &noise).expect("write");
    std::fs::write(odd.join("cut.flac"), truncate_in_comments(&good)).expect("write");
    std::fs::write(
        odd.join("text.ogg"),
        b"OggS but not really an ogg stream at all",
    )
    .expect("write");
    // A FIFO named like audio: opening it for reading would block forever.
    let fifo = odd.join("pipe.mp3");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).expect("cstring");
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
    // A directory named like audio, links, and a name that is not UTF-8.
    std::fs::create_dir_all(odd.join("dir.flac")).expect("mkdir");
    std::os::unix::fs::symlink("../Artist/Album/blank.flac", odd.join("link.flac")).expect("ln");
    std::os::unix::fs::symlink("../Artist", odd.join("linkdir")).expect("ln");
    std::os::unix::fs::symlink("nowhere.flac", odd.join("dangling.flac")).expect("ln");
    std::os::unix::fs::symlink("loop2.flac", odd.join("loop1.flac")).expect("ln");
    std::os::unix::fs::symlink("loop1.flac", odd.join("loop2.flac")).expect("ln");
    std::fs::write(odd.join(OsStr::from_bytes(b"caf\xe9.flac")), &good).expect("write");
    // Hidden things are not part of the library.
    std::fs::create_dir_all(root.join(".git")).expect("mkdir");
    std::fs::write(root.join(".git/x.flac"), &good).expect("write");
    std::fs::write(album.join("._blank.flac"), b"\0\x05\x16\x07AppleDouble").expect("write");
    // A directory we may not read (root ignores the mode; then it is read).
    let locked = root.join("locked");
    std::fs::create_dir_all(&locked).expect("mkdir");
    std::fs::write(locked.join("in.flac"), &good).expect("write");
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000))
        .expect("chmod");
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;

    let started = Instant::now();
    let report = scan_local(ORIGIN, &root, &ScanOptions::default(), &NoProgress).expect("scan");
    assert!(
        started.elapsed().as_secs() < 30,
        "scan took {:?}",
        started.elapsed()
    );
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");

    let found = by_path(&report.entries);
    let kind = |p: &[u8]| found.get(p).map(|e| e.kind.clone());
    for broken in [
        &b"odd/zero.flac"[..],
        b"odd/random.m4a",
        b"odd/random.mp3",
        b"odd/cut.flac",
        b"odd/text.ogg",
    ] {
        match kind(broken) {
            Some(FileKind::Unreadable(why)) => {
                eprintln!("{}: {why}", String::from_utf8_lossy(broken));
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(broken)),
        }
    }
    assert_eq!(
        kind(b"odd/zero.flac"),
        Some(FileKind::Unreadable("empty file".into()))
    );
    match kind(b"odd/cut.flac") {
        Some(FileKind::Unreadable(why)) => assert!(why.starts_with("truncated FLAC"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(kind(b"odd/pipe.mp3"), None);
    assert_eq!(kind(b"odd/dir.flac"), None);
    // A link to a file is read through; a link to a directory is not walked.
    let link = found.get(&b"odd/link.flac"[..]).expect("link.flac");
    let target = found
        .get(&b"Artist/Album/blank.flac"[..])
        .expect("blank.flac");
    assert_eq!(link.kind, target.kind);
    assert_eq!(link.source.version, target.source.version);
    assert!(!found.keys().any(|p| p.starts_with(b"odd/linkdir")));
    for name in ["dangling.flac", "loop1.flac", "loop2.flac"] {
        assert!(
            report.errors.iter().any(|e| e.contains(name)),
            "{name}: {:?}",
            report.errors
        );
    }
    eprintln!("errors: {:?}", report.errors);
    assert!(matches!(
        kind(b"odd/caf\xe9.flac"),
        Some(FileKind::Track(_))
    ));
    assert!(
        !found
            .keys()
            .any(|p| p.starts_with(b".git") || p.ends_with(b"._blank.flac"))
    );
    if is_root {
        assert!(matches!(kind(b"locked/in.flac"), Some(FileKind::Track(_))));
    } else {
        assert!(
            report.errors.iter().any(|e| e.contains("locked")),
            "{:?}",
            report.errors
        );
    }
    assert_eq!(report.unreadable, 5);
    // The fixtures' tracks, the link, the Latin-1 name and (as root) the
    // locked one.
    assert_eq!(report.tracks, 11 + 1 + 1 + usize::from(is_root));
    // pipe.mp3, dir.flac is a directory (walked, empty), linkdir.
    assert_eq!(report.skipped_other, 2);

    // The per-file entry point on the same hostile cases.
    assert_eq!(
        scan_file(ORIGIN, &root, b"odd/pipe.mp3").expect("fifo"),
        None
    );
    assert_eq!(
        scan_file(ORIGIN, &root, b"odd/dir.flac").expect("dir"),
        None
    );
    assert_eq!(
        scan_file(ORIGIN, &root, b"odd/missing.flac").map_err(|e| e.kind()),
        Err(std::io::ErrorKind::NotFound)
    );
    assert_eq!(
        scan_file(ORIGIN, &root, b"../lib/odd/zero.flac").map_err(|e| e.kind()),
        Err(std::io::ErrorKind::InvalidInput)
    );
    assert_eq!(
        scan_file(ORIGIN, &root, b".git/x.flac").expect("hidden"),
        None
    );
    let err = read_tags(&odd.join("random.m4a")).expect_err("random bytes");
    assert!(
        matches!(
            err.kind(),
            TagErrorKind::NotAudio | TagErrorKind::Corrupt | TagErrorKind::Truncated
        ),
        "{err}"
    );
    assert_eq!(
        read_tags(&odd.join("pipe.mp3")).map_err(|e| e.kind()),
        Err(TagErrorKind::NotAudio)
    );
}

/// Truncations and byte flips of real files of every fixture format: lofty
/// must never take the process down nor hang, whatever it makes of them.
#[test]
fn mutilated_real_files_never_crash_or_hang() {
    require_tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    make_fixtures(tmp.path());
    let mut names: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .expect("readdir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    let (mut ok, mut failed, mut parser_failures) = (0usize, 0usize, Vec::new());
    for path in &names {
        let bytes = std::fs::read(path).expect("read");
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut variants: Vec<Vec<u8>> = Vec::new();
        // Cut everywhere in the first 16 KiB and near the end.
        let len = bytes.len();
        for cut in (0..len.min(16 * 1024))
            .step_by(53)
            .chain(len.saturating_sub(2048)..len)
        {
            variants.push(bytes[..cut].to_vec());
        }
        // Flip a few bytes in the headers, or in the trailing tags.
        for i in 0..300 {
            let mut v = bytes.clone();
            let region = if i % 3 == 0 {
                len.saturating_sub(1024)..len
            } else {
                0..len.min(8192)
            };
            let span = (region.end - region.start).max(1) as u64;
            for _ in 0..=(rand() % 6) {
                let at = region.start + (rand() % span) as usize;
                if let Some(b) = v.get_mut(at) {
                    *b = rand() as u8;
                }
            }
            variants.push(v);
        }
        for v in variants {
            match read_tags_from(std::io::Cursor::new(v), &ext) {
                Ok(_) => ok += 1,
                Err(e) if e.kind() == TagErrorKind::ParserFailure => {
                    parser_failures.push(format!("{}: {e}", path.display()));
                    failed += 1;
                }
                Err(_) => failed += 1,
            }
        }
    }
    eprintln!(
        "{} mutants in {:.1} s: {ok} still readable, {failed} rejected, {} parser failures caught",
        ok + failed,
        started.elapsed().as_secs_f64(),
        parser_failures.len()
    );
    for f in parser_failures.iter().take(20) {
        eprintln!("  {f}");
    }
    assert!(ok + failed > 1000);
}

#[test]
fn unreadable_root_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nope");
    assert!(scan_local(ORIGIN, &missing, &ScanOptions::default(), &NoProgress).is_err());
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    assert!(scan_local(ORIGIN, &file, &ScanOptions::default(), &NoProgress).is_err());
    // An empty library is fine.
    let report = scan_local(ORIGIN, tmp.path(), &ScanOptions::default(), &NoProgress)
        .expect("scan of a dir with one non-audio file");
    assert!(report.entries.is_empty());
    assert_eq!(report.skipped_other, 1);
}
