//! The search index on a real file system: durability across a real crash
//! (a child process that aborts), the shutdown flush, corruption recovery,
//! the query language (accents, case, typos, fields, years, operators), the
//! offline reader beside a live writer, and a 20,000-track library.

use musicfs::search::{
    DocDigests, MAX_LIMIT, OpenedIndex, SearchDoc, SearchError, SearchIndex, diff_docs,
    docs_from_tree, index_dir, search_offline,
};
use musicfs_core::catalog::{CatalogEntry, FileKind, SourceFile};
use musicfs_core::{FileVersion, Layout, OriginId, OriginPath, TrackTags};
use musicfs_tests::search::{GENRES, synthetic_doc, synthetic_docs};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

// ------------------------------------------------------------- fixtures --

#[allow(clippy::too_many_arguments)]
fn track(
    vpath: &str,
    artist: &str,
    album_artist: Option<&str>,
    album: &str,
    title: &str,
    genre: &str,
    year: Option<i32>,
    format: &str,
) -> SearchDoc {
    SearchDoc {
        vpath: vpath.to_owned(),
        artist: Some(artist.to_owned()),
        album_artist: Some(album_artist.unwrap_or(artist).to_owned()),
        album: Some(album.to_owned()),
        title: Some(title.to_owned()),
        genre: Some(genre.to_owned()),
        year,
        format: Some(format.to_owned()),
    }
}

const HUNTER: &str = "Björk/1997 - Homogenic/01 - Hunter.flac";
const ARMY: &str = "Björk/1995 - Post/01 - Army of Me.flac";
const SVEFN: &str = "Sigur Rós/1999 - Ágætis byrjun/01 - Svefn-g-englar.flac";
const PARANOID: &str = "Radiohead/1997 - OK Computer/02 - Paranoid Android.mp3";
const KID_A: &str = "Radiohead/2000 - Kid A/01 - Everything in Its Right Place.mp3";
const SO_WHAT: &str = "Miles Davis/1959 - Kind of Blue/01 - So What.flac";
const ACK: &str = "John Coltrane/1965 - A Love Supreme/01 - Acknowledgement.flac";
const ACE: &str = "Motörhead/1980 - Ace of Spades/01 - Ace of Spades.mp3";
const MYSTERONS: &str = "Portishead/1994 - Dummy/01 - Mysterons.opus";
const ANGEL: &str = "Massive Attack/1998 - Mezzanine/01 - Angel.opus";
const LOVE_SONG: &str = "Various Artists/2001 - Love Hits/01 - Love Song.mp3";
const SONG_LOVE: &str = "Zed/2005 - Misc/01 - Song Love.mp3";
const HUNGER: &str = "Zed/2005 - Misc/02 - Hunger.mp3";
const ROLLING: &str = "Adele/2011 - 21/01 - Rolling in the Deep.m4a";
const NO_YEAR: &str = "Unknown Artist/Unknown Album/01 - track01.wav";

#[rustfmt::skip]
fn library() -> Vec<SearchDoc> {
    vec![
        track(HUNTER, "Björk", None, "Homogenic", "Hunter", "Electronic", Some(1997), "FLAC"),
        track(ARMY, "Björk", None, "Post", "Army of Me", "Electronic", Some(1995), "FLAC"),
        track(SVEFN, "Sigur Rós", None, "Ágætis byrjun", "Svefn-g-englar", "Post-Rock", Some(1999), "FLAC"),
        track(PARANOID, "Radiohead", None, "OK Computer", "Paranoid Android", "Alternative", Some(1997), "MP3"),
        track(KID_A, "Radiohead", None, "Kid A", "Everything in Its Right Place", "Alternative", Some(2000), "MP3"),
        track(SO_WHAT, "Miles Davis", None, "Kind of Blue", "So What", "Jazz", Some(1959), "FLAC"),
        track(ACK, "John Coltrane", None, "A Love Supreme", "Acknowledgement", "Jazz", Some(1965), "FLAC"),
        track(ACE, "Motörhead", None, "Ace of Spades", "Ace of Spades", "Metal", Some(1980), "MP3"),
        track(MYSTERONS, "Portishead", None, "Dummy", "Mysterons", "Trip Hop", Some(1994), "Opus"),
        track(ANGEL, "Massive Attack", None, "Mezzanine", "Angel", "Trip Hop", Some(1998), "Opus"),
        track(LOVE_SONG, "The Cure", Some("Various Artists"), "Love Hits", "Love Song", "Pop", Some(2001), "MP3"),
        track(SONG_LOVE, "Zed", None, "Misc", "Song Love", "Pop", Some(2005), "MP3"),
        track(HUNGER, "Zed", None, "Misc", "Hunger", "Pop", Some(2005), "MP3"),
        track(ROLLING, "Adele", None, "21", "Rolling in the Deep", "Pop", Some(2011), "AAC"),
        SearchDoc {
            vpath: NO_YEAR.to_owned(),
            title: Some("track01".to_owned()),
            format: Some("WAV".to_owned()),
            ..SearchDoc::default()
        },
    ]
}

fn open(dir: &Path) -> SearchIndex {
    let opened = SearchIndex::open(dir).expect("open");
    assert_eq!(opened.rebuilt, None, "a healthy index was rebuilt");
    opened.index
}

/// An index of [`library`], committed.
fn library_index(dir: &Path) -> SearchIndex {
    let idx = open(dir);
    idx.replace_all(library()).unwrap();
    assert_eq!(idx.len(), library().len() as u64);
    idx
}

fn hits(idx: &SearchIndex, q: &str) -> Vec<String> {
    idx.search(q, 100)
        .unwrap_or_else(|e| panic!("{q:?} failed: {e}"))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn set(paths: &[&str]) -> Vec<String> {
    sorted(paths.iter().map(|p| p.to_string()).collect())
}

/// Asserts the set of hits, in any order.
#[track_caller]
fn assert_finds(idx: &SearchIndex, q: &str, want: &[&str]) {
    assert_eq!(sorted(hits(idx, q)), set(want), "query {q:?}");
}

fn bad_query(idx: &SearchIndex, q: &str) -> String {
    match idx.search(q, 10) {
        Err(SearchError::BadQuery(msg)) => msg,
        other => panic!("{q:?} should be a bad query, got {other:?}"),
    }
}

// ---------------------------------------------------------- durability --

const CRASH_CHILD_ENV: &str = "MUSICFS_SEARCH_CRASH_CHILD_DIR";

/// In the child: commit A, add B (and enough else to keep the writer
/// busy), never commit, and abort: no destructor, no flush, like a kill.
fn crash_child(dir: &Path) -> ! {
    // No core file for a deliberate abort.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let idx = SearchIndex::open(dir).unwrap().index;
    idx.upsert(&track(
        "A/a.flac",
        "Alpha",
        None,
        "Aleph",
        "Apple",
        "Rock",
        Some(1990),
        "FLAC",
    ))
    .unwrap();
    idx.commit().unwrap();
    idx.upsert(&track(
        "B/b.flac",
        "Bravo",
        None,
        "Beth",
        "Banana",
        "Rock",
        Some(1991),
        "FLAC",
    ))
    .unwrap();
    for i in 0..2_000 {
        idx.upsert(&synthetic_doc(i)).unwrap();
    }
    // Also change A without committing: the crash must keep the old A.
    idx.upsert(&track(
        "A/a.flac",
        "Alpha",
        None,
        "Aleph",
        "Avocado",
        "Rock",
        Some(1990),
        "FLAC",
    ))
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    fs::write(dir.join("../child-ready"), b"1").unwrap();
    std::process::abort();
}

#[test]
fn test_tantivy_survives_uncommitted_crash() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD_ENV) {
        crash_child(Path::new(&dir));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "test_tantivy_survives_uncommitted_crash",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, &dir)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "the child must die by abort, after doing its work: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tmp.path().join("child-ready").exists());

    // The dead child's lock file is still there; its flock died with it.
    let idx = open(&dir);
    assert_eq!(idx.len(), 1, "only the committed document survives");
    assert_eq!(hits(&idx, "alpha"), vec!["A/a.flac"]);
    assert_eq!(hits(&idx, "apple"), vec!["A/a.flac"]);
    assert!(
        hits(&idx, "avocado").is_empty(),
        "uncommitted change survived"
    );
    assert!(
        hits(&idx, "bravo").is_empty(),
        "uncommitted document survived"
    );
    assert!(hits(&idx, "banana").is_empty());
    // And the index takes writes again.
    idx.upsert(&track(
        "C/c.flac", "Charlie", None, "C", "Cherry", "Rock", None, "FLAC",
    ))
    .unwrap();
    idx.commit().unwrap();
    assert_eq!(hits(&idx, "charlie"), vec!["C/c.flac"]);
}

#[test]
fn test_shutdown_flushes_tantivy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    {
        let idx = open(&dir);
        for doc in library() {
            idx.upsert(&doc).unwrap();
        }
        idx.set_stamp("catalog-42");
        assert_eq!(idx.pending(), library().len() as u64);
        // The shutdown flush.
        idx.commit().unwrap();
        assert_eq!(idx.pending(), 0);
    }
    let idx = open(&dir);
    assert_eq!(idx.len(), library().len() as u64);
    assert_eq!(idx.stamp().as_deref(), Some("catalog-42"));
    assert_finds(&idx, "bjork", &[HUNTER, ARMY]);

    // Without the flush, a drop loses what was not committed.
    idx.upsert(&track(
        "X/x.flac", "Xylo", None, "X", "X", "Rock", None, "FLAC",
    ))
    .unwrap();
    drop(idx);
    let idx = open(&dir);
    assert!(hits(&idx, "xylo").is_empty());
    assert_eq!(idx.stamp().as_deref(), Some("catalog-42"));
}

#[test]
fn stamps_follow_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    let idx = open(&dir);
    assert_eq!(idx.stamp(), None, "a new index has no stamp");
    idx.set_stamp("gen-1");
    assert_eq!(idx.stamp(), None, "not before the commit");
    // A stamp alone is worth a commit.
    idx.commit().unwrap();
    assert_eq!(idx.stamp().as_deref(), Some("gen-1"));
    // Later commits keep it.
    idx.upsert(&library()[0]).unwrap();
    idx.commit().unwrap();
    idx.set_stamp("gen-2");
    idx.replace_all(library()).unwrap();
    drop(idx);
    let idx = open(&dir);
    assert_eq!(idx.stamp().as_deref(), Some("gen-2"));
}

// ---------------------------------------------------------- corruption --

/// A committed library index in `dir`, closed.
fn make_library_index(dir: &Path) {
    let idx = library_index(dir);
    idx.commit().unwrap();
}

fn segment_file(dir: &Path, ext: &str) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == ext))
        .unwrap_or_else(|| panic!("no .{ext} file in {}", dir.display()))
}

fn set_aside_dirs(parent: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("search.corrupt-")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn test_tantivy_corruption_triggers_rebuild() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 7] = [
        ("garbled meta.json", |d| {
            fs::write(d.join("meta.json"), b"{\"segments\": [garbage").unwrap()
        }),
        ("empty meta.json", |d| {
            fs::write(d.join("meta.json"), b"").unwrap()
        }),
        ("deleted term dictionary", |d| {
            fs::remove_file(segment_file(d, "term")).unwrap()
        }),
        ("deleted fast fields", |d| {
            fs::remove_file(segment_file(d, "fast")).unwrap()
        }),
        ("garbled postings", |d| {
            let path = segment_file(d, "idx");
            let mut bytes = fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            for b in &mut bytes[mid.saturating_sub(8)..mid + 8] {
                *b ^= 0x5a;
            }
            fs::write(&path, bytes).unwrap();
        }),
        ("truncated term dictionary", |d| {
            let path = segment_file(d, "term");
            let len = fs::metadata(&path).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }),
        ("segment files without meta.json", |d| {
            fs::remove_file(d.join("meta.json")).unwrap()
        }),
    ];
    for (what, damage) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("search");
        make_library_index(&dir);
        damage(&dir);

        let OpenedIndex { index, rebuilt } = SearchIndex::open(&dir).unwrap();
        let msg = rebuilt.unwrap_or_else(|| panic!("{what}: not detected"));
        assert!(msg.contains("search.corrupt-"), "{what}: {msg}");
        let aside = set_aside_dirs(tmp.path());
        assert_eq!(aside.len(), 1, "{what}: the old index is kept aside");
        assert!(fs::read_dir(&aside[0]).unwrap().count() > 0, "{what}");

        // Empty and usable: the caller refills it from the catalog.
        assert_eq!(index.len(), 0, "{what}");
        assert_eq!(index.stamp(), None, "{what}");
        assert!(hits(&index, "bjork").is_empty(), "{what}");
        index.replace_all(library()).unwrap();
        assert_finds(&index, "bjork", &[HUNTER, ARMY]);
        drop(index);
        // And it is healthy from then on.
        let index = open(&dir);
        assert_eq!(index.len(), library().len() as u64, "{what}");
    }
}

#[test]
fn other_schema_triggers_rebuild() {
    use tantivy::schema::{STORED, Schema, TEXT};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    fs::create_dir_all(&dir).unwrap();
    let mut builder = Schema::builder();
    let title = builder.add_text_field("title", TEXT | STORED);
    let index = tantivy::Index::create_in_dir(&dir, builder.build()).unwrap();
    let mut writer: tantivy::IndexWriter = index.writer(15_000_000).unwrap();
    writer
        .add_document(tantivy::doc!(title => "Hunter"))
        .unwrap();
    writer.commit().unwrap();
    drop(writer);

    let opened = SearchIndex::open(&dir).unwrap();
    let msg = opened.rebuilt.expect("schema mismatch not detected");
    assert!(msg.contains("schema"), "{msg}");
    assert_eq!(opened.index.len(), 0);
    assert_eq!(set_aside_dirs(tmp.path()).len(), 1);
}

#[test]
fn a_locked_index_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    let first = library_index(&dir);
    match SearchIndex::open(&dir) {
        Err(SearchError::Locked(path)) => assert_eq!(path, dir),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(
        set_aside_dirs(tmp.path()).is_empty(),
        "a live index was moved"
    );
    assert_finds(&first, "bjork", &[HUNTER, ARMY]);
    drop(first);
    assert_eq!(open(&dir).len(), library().len() as u64);
}

// ------------------------------------------------------------- queries --

#[test]
fn accents_and_case_do_not_matter() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = library_index(tmp.path());
    for q in ["bjork", "Björk", "BJÖRK", "BJORK", "björk"] {
        assert_finds(&idx, q, &[HUNTER, ARMY]);
    }
    for q in [
        "SIGUR ROS",
        "sigur rós",
        "Sigur Ros",
        "agaetis",
        "ÁGÆTIS BYRJUN",
    ] {
        assert_finds(&idx, q, &[SVEFN]);
    }
    assert_finds(&idx, "motorhead", &[ACE]);
    assert_finds(&idx, "artist:MOTÖRHEAD", &[ACE]);
    assert_finds(&idx, "svefn g englar", &[SVEFN]);
}

#[test]
fn typos_are_forgiven() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = library_index(tmp.path());
    assert_finds(&idx, "radiohed", &[PARANOID, KID_A]); // a deletion
    assert_finds(&idx, "raidohead", &[PARANOID, KID_A]); // a transposition
    assert_finds(&idx, "bjrok", &[HUNTER, ARMY]); // a transposition
    assert_finds(&idx, "coltrain", &[ACK]); // two edits in a long word
    assert_finds(&idx, "milse davis", &[SO_WHAT]);
    assert_finds(&idx, "artist:portishaed", &[MYSTERONS]);
    assert_finds(&idx, "mezanine", &[ANGEL]);
    // Exact matches rank above near misses.
    assert_eq!(hits(&idx, "hunter"), vec![HUNTER, HUNGER]);
    assert_eq!(hits(&idx, "hunger"), vec![HUNGER, HUNTER]);
    assert_eq!(hits(&idx, "angel")[0], ANGEL);
}

#[test]
fn typo_tolerance_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = library_index(tmp.path());
    for q in [
        "coldplay",  // vs coltrane: too far
        "metallica", // vs metal
        "beatles",
        "sofa", // vs so: two edits in a short word
        "xyz",
        "acw",             // three letters: exact only, no "ace"
        "radioheadz jazz", // AND: the second word matches other tracks
        "1996",            // numbers are exact: not 1997
        "year:1996",
        "mp4", // digits: exact, not mp3
    ] {
        assert!(
            hits(&idx, q).is_empty(),
            "{q:?} matched {:?}",
            hits(&idx, q)
        );
    }
    // Two edits are too many for a word under 8 letters.
    assert!(hits(&idx, "bjrkk").is_empty(), "2 edits in a 5-letter word");
}

#[test]
fn field_syntax() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = library_index(tmp.path());
    assert_finds(&idx, "artist:bjork album:homogenic", &[HUNTER]);
    assert_finds(&idx, "artist:homogenic", &[]);
    assert_finds(&idx, "Artist:Bjork Title:Hunter", &[HUNTER]);
    assert_finds(&idx, "genre:jazz", &[SO_WHAT, ACK]);
    assert_finds(&idx, "genre:\"trip hop\"", &[MYSTERONS, ANGEL]);
    assert_finds(&idx, "format:opus", &[MYSTERONS, ANGEL]);
    assert_finds(&idx, "format:FLAC", &[HUNTER, ARMY, SVEFN, SO_WHAT, ACK]);
    assert_finds(&idx, "albumartist:\"various artists\"", &[LOVE_SONG]);
    assert_finds(&idx, "album_artist:various", &[LOVE_SONG]);
    assert_finds(&idx, "artist:cure", &[LOVE_SONG]);
    assert_finds(&idx, "title:track01", &[NO_YEAR]);
    // Quotes: a phrase, in order, exactly.
    assert_finds(&idx, "title:\"love song\"", &[LOVE_SONG]);
    assert_finds(&idx, "\"song love\"", &[SONG_LOVE]);
    assert_finds(&idx, "\"radiohed\"", &[]);
    // A trailing * is a prefix.
    assert_finds(&idx, "radio*", &[PARANOID, KID_A]);
    assert_finds(&idx, "album:mezz*", &[ANGEL]);
    // A bare number is a word or a year.
    assert_finds(&idx, "adele 21", &[ROLLING]);
    assert_finds(&idx, "radiohead 1997", &[PARANOID]);
}

#[test]
fn year_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = library_index(tmp.path());
    assert_finds(&idx, "year:1997", &[HUNTER, PARANOID]);
    assert_finds(
        &idx,
        "year:[1990 TO 1999]",
        &[HUNTER, ARMY, SVEFN, PARANOID, MYSTERONS, ANGEL],
    );
    assert_finds(&idx, "year:{1994 TO 1998}", &[HUNTER, ARMY, PARANOID]);
    assert_finds(&idx, "year:1994..1995", &[MYSTERONS, ARMY]);
    assert_finds(&idx, "year:>2000", &[LOVE_SONG, SONG_LOVE, HUNGER, ROLLING]);
    assert_finds(&idx, "year:>=2005", &[SONG_LOVE, HUNGER, ROLLING]);
    assert_finds(&idx, "year:<1980", &[SO_WHAT, ACK]);
    assert_finds(&idx, "year:<=1980", &[SO_WHAT, ACK, ACE]);
    assert_finds(&idx, "year:[* TO 1960]", &[SO_WHAT]);
    assert_finds(&idx, "genre:jazz year:>1960", &[ACK]);
    assert_finds(&idx, "jazz 1965", &[ACK]);
    // Negative years are years too, and none here.
    assert_finds(&idx, "year:<0", &[]);
}

#[test]
fn words_are_anded_or_ored_and_excluded() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = library_index(tmp.path());
    assert_finds(&idx, "love song", &[LOVE_SONG, SONG_LOVE]);
    assert_finds(&idx, "love supreme", &[ACK]);
    assert_finds(&idx, "radiohead jazz", &[]);
    assert_finds(&idx, "bjork AND hunter", &[HUNTER]);
    assert_finds(&idx, "portishead OR massive", &[MYSTERONS, ANGEL]);
    assert_finds(&idx, "portishead OR massive angel", &[ANGEL]);
    assert_finds(&idx, "artist:radiohead -year:2000", &[PARANOID]);
    assert_finds(&idx, "genre:jazz NOT coltrane", &[SO_WHAT]);
    assert_finds(&idx, "pop -zed -adele", &[LOVE_SONG]);
    assert_eq!(hits(&idx, "-pop").len(), library().len() - 4);
    // Punctuation alone is not a word.
    assert_finds(&idx, "ace & spades", &[ACE]);
    assert_finds(&idx, "ace of spades!", &[ACE]);
}

#[test]
fn bad_queries_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = library_index(tmp.path());
    for (q, want) in [
        ("", "empty"),
        ("artst:bjork", "unknown field 'artst'"),
        ("year:abc", "bad year"),
        ("year:[1990 TO 1999", "unterminated"),
        ("title:\"love", "unterminated quote"),
        ("bjork OR", "'OR'"),
        ("year:[2000 TO 1990]", "empty"),
        ("!!!", "nothing to search for"),
    ] {
        let msg = bad_query(&idx, q);
        assert!(msg.contains(want), "{q:?}: {msg}");
        assert!(!msg.contains('\n'));
        let shown = SearchError::BadQuery(msg).to_string();
        assert!(shown.starts_with("bad query: "), "{shown}");
    }
}

#[test]
fn results_are_ordered_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = library_index(tmp.path());
    // Equal scores: virtual path order.
    assert_eq!(hits(&idx, "genre:jazz"), vec![ACK, SO_WHAT]);
    let all = hits(&idx, "format:flac");
    assert_eq!(all.len(), 5);
    for limit in 0..=5 {
        assert_eq!(idx.search("format:flac", limit).unwrap(), all[..limit]);
    }
    assert_eq!(
        idx.search("-zzz", usize::MAX).unwrap().len(),
        library().len()
    );

    // The same documents committed another way give the same answers.
    let tmp2 = tempfile::tempdir().unwrap();
    let idx2 = open(tmp2.path());
    for doc in library().into_iter().rev() {
        idx2.upsert(&doc).unwrap();
        idx2.commit().unwrap(); // one segment per document
    }
    for q in [
        "format:flac",
        "love song",
        "hunter",
        "pop",
        "year:>1990",
        "radiohed",
        "-zzz",
    ] {
        assert_eq!(hits(&idx, q), hits(&idx2, q), "{q:?}");
    }
    // Those commits start merges. A dropped index waits for them: one
    // still running wrote into the folder as it was removed, and the
    // folder stayed behind (5 runs in 12).
    drop(idx2);
    let dir2 = tmp2.path().to_path_buf();
    tmp2.close().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!dir2.exists(), "a merge wrote into the removed folder");
}

#[test]
fn upserts_and_removes_show_after_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = library_index(tmp.path());
    let mut hunter = library()[0].clone();
    hunter.title = Some("Hunter (Remastered)".to_owned());
    idx.upsert(&hunter).unwrap();
    idx.remove(ARMY).unwrap();
    idx.remove("not/in/the/index.flac").unwrap();
    // Not yet.
    assert!(hits(&idx, "remastered").is_empty());
    assert_finds(&idx, "bjork", &[HUNTER, ARMY]);
    idx.commit().unwrap();
    assert_eq!(hits(&idx, "remastered"), vec![HUNTER]);
    assert_finds(&idx, "bjork", &[HUNTER]);
    assert_eq!(idx.len(), library().len() as u64 - 1);
    // Nothing pending: a no-op.
    idx.commit().unwrap();
    // Upserting the same path twice keeps one document.
    idx.upsert(&hunter).unwrap();
    idx.upsert(&hunter).unwrap();
    idx.commit().unwrap();
    assert_eq!(hits(&idx, "remastered"), vec![HUNTER]);
    assert_eq!(idx.len(), library().len() as u64 - 1);

    // replace_all drops uncommitted changes and everything not given.
    idx.upsert(&track(
        "Y/y.flac", "Yankee", None, "Y", "Y", "Rock", None, "FLAC",
    ))
    .unwrap();
    idx.replace_all(library().into_iter().take(3)).unwrap();
    assert_eq!(idx.len(), 3);
    assert!(hits(&idx, "yankee").is_empty());
    assert!(hits(&idx, "radiohead").is_empty());
    idx.replace_all(Vec::new()).unwrap();
    assert_eq!(idx.len(), 0);
    assert!(idx.is_empty());
}

#[test]
fn a_rebuild_cut_short_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = library_index(tmp.path());
    let docs = library().into_iter().take(3).chain(std::iter::from_fn(|| {
        panic!("the catalog went away mid-rebuild");
    }));
    let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| idx.replace_all(docs)));
    assert!(cut.is_err());
    // The next commit must not publish the half-done rebuild.
    idx.upsert(&track(
        "X/x.flac", "Xylo", None, "X", "X", "Rock", None, "FLAC",
    ))
    .unwrap();
    idx.commit().unwrap();
    assert_eq!(idx.len(), library().len() as u64 + 1);
    assert_finds(&idx, "radiohead", &[PARANOID, KID_A]);
    assert_eq!(hits(&idx, "xylo"), vec!["X/x.flac"]);
}

// ------------------------------------------------------------- offline --

#[test]
fn offline_search_works_beside_a_live_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path();
    // A bad query is reported even before there is an index.
    assert!(matches!(
        search_offline(cache, "artst:x", 10),
        Err(SearchError::BadQuery(_))
    ));
    match search_offline(cache, "bjork", 10) {
        Err(e @ SearchError::NoIndex(_)) => assert!(e.to_string().contains("mount")),
        other => panic!("expected NoIndex, got {other:?}"),
    }

    // The daemon's index, writer and all.
    let idx = library_index(&index_dir(cache));
    assert_eq!(
        sorted(search_offline(cache, "bjork", 10).unwrap()),
        set(&[HUNTER, ARMY])
    );
    assert_eq!(
        search_offline(cache, "genre:jazz", 10).unwrap(),
        hits(&idx, "genre:jazz")
    );
    // Uncommitted changes are invisible offline as well.
    idx.upsert(&track(
        "Z/z.flac", "Zulu", None, "Z", "Z", "Rock", None, "FLAC",
    ))
    .unwrap();
    assert!(search_offline(cache, "zulu", 10).unwrap().is_empty());
    idx.commit().unwrap();
    assert_eq!(search_offline(cache, "zulu", 10).unwrap(), vec!["Z/z.flac"]);
    // The offline reader took no writer lock: the daemon still writes.
    idx.remove("Z/z.flac").unwrap();
    idx.commit().unwrap();
    assert!(search_offline(cache, "zulu", 10).unwrap().is_empty());

    // A damaged index is reported, and left for the next mount to rebuild.
    drop(idx);
    let dir = index_dir(cache);
    fs::write(dir.join("meta.json"), b"nonsense").unwrap();
    match search_offline(cache, "bjork", 10) {
        Err(SearchError::Unusable { path, .. }) => assert_eq!(path, dir),
        other => panic!("expected Unusable, got {other:?}"),
    }
    assert_eq!(fs::read(dir.join("meta.json")).unwrap(), b"nonsense");
}

// ----------------------------------------------------------- from tree --

#[test]
fn documents_come_from_the_tree() {
    let tags = |artist: &str, title: &str| TrackTags {
        artist: Some(artist.into()),
        album: Some("Homogenic".into()),
        title: Some(title.into()),
        track: Some(1),
        year: Some(1997),
        format: Some("FLAC".into()),
        ..TrackTags::default()
    };
    let entry = |path: &str, kind: FileKind| CatalogEntry {
        source: SourceFile {
            origin: OriginId(0),
            path: OriginPath::new(path.as_bytes()),
            version: FileVersion::default(),
        },
        kind,
    };
    let catalog = vec![
        entry("a/01.flac", FileKind::Track(tags("Björk", "Hunter"))),
        entry("a/cover.jpg", FileKind::Cover),
        entry("a/bad.flac", FileKind::Unreadable("truncated".to_owned())),
    ];
    let (tree, _) = musicfs_core::tree::VirtualTree::build(&Layout::default_layout(), &catalog);
    let docs = docs_from_tree(&tree, &catalog);
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert!(tree.resolve(&docs[0].vpath).is_some());
    assert_eq!(docs[0].artist.as_deref(), Some("Björk"));
    assert_eq!(docs[0].year, Some(1997));

    let tmp = tempfile::tempdir().unwrap();
    let idx = open(tmp.path());
    let changes = diff_docs(&DocDigests::default(), &docs);
    for d in &changes.upsert {
        idx.upsert(d).unwrap();
    }
    idx.commit().unwrap();
    assert_eq!(hits(&idx, "bjork hunter"), vec![docs[0].vpath.clone()]);
}

// -------------------------------------------------------------- 20,000 --

#[test]
fn twenty_thousand_tracks() {
    const N: usize = 20_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    let docs = synthetic_docs(N);
    let idx = open(&dir);
    idx.replace_all(docs.clone()).unwrap();
    assert_eq!(idx.len(), N as u64);

    // Unique words find exactly their track.
    for i in [0, 1, 9_999, 12_345, N - 1] {
        assert_eq!(hits(&idx, &format!("no{i}")), vec![docs[i].vpath.clone()]);
    }
    // Counts agree with the generator.
    let count = |pred: &dyn Fn(&SearchDoc) -> bool| docs.iter().filter(|d| pred(d)).count();
    let y = |d: &SearchDoc| d.year.unwrap();
    assert_eq!(
        idx.search("year:[1990 TO 1999]", MAX_LIMIT).unwrap().len(),
        count(&|d| (1990..=1999).contains(&y(d)))
    );
    assert_eq!(
        idx.search("year:<1965", MAX_LIMIT).unwrap().len(),
        count(&|d| y(d) < 1965)
    );
    let jazz = count(&|d| d.genre.as_deref() == Some(GENRES[1]));
    assert_eq!(idx.search("genre:\"jazz\"", MAX_LIMIT).unwrap().len(), jazz);
    let opus_1970 = count(&|d| d.format.as_deref() == Some("Opus") && y(d) == 1970);
    assert!(opus_1970 > 0);
    assert_eq!(
        idx.search("format:opus year:1970", MAX_LIMIT)
            .unwrap()
            .len(),
        opus_1970
    );
    // Accents and typos at scale: "Björk" is adjective 1, "Sigur Rós" 3 + 25.
    let bjork = count(&|d| d.artist.as_deref().unwrap().starts_with("Björk"));
    assert_eq!(idx.search("artist:bjork", MAX_LIMIT).unwrap().len(), bjork);
    assert_eq!(idx.search("artist:bjrok", MAX_LIMIT).unwrap().len(), bjork);
    let sigur_ros = count(&|d| d.artist.as_deref() == Some("Sigur Rós"));
    assert!(sigur_ros > 0);
    assert_eq!(
        idx.search("artist:\"sigur ros\"", MAX_LIMIT).unwrap().len(),
        sigur_ros
    );
    assert_eq!(
        sorted(idx.search("artist:\"sigur ros\"", MAX_LIMIT).unwrap()),
        sorted(idx.search("artist:SIGUR artist:RÓS", MAX_LIMIT).unwrap())
    );
    // The limit is bounded.
    assert_eq!(idx.search("-zzzz", usize::MAX).unwrap().len(), MAX_LIMIT);
    assert_eq!(idx.search("year:>=1960", 25).unwrap().len(), 25);

    // A sync's worth of changes.
    let mut new_docs = docs.clone();
    new_docs.truncate(N - 100);
    for d in new_docs.iter_mut().take(100) {
        d.title = Some(format!("{} (live)", d.title.as_deref().unwrap()));
    }
    let changes = diff_docs(&DocDigests::of(&docs), &new_docs);
    assert_eq!((changes.upsert.len(), changes.remove.len()), (100, 100));
    for d in &changes.upsert {
        idx.upsert(d).unwrap();
    }
    assert_eq!(
        idx.remove_keys(&changes.remove).unwrap(),
        100,
        "every path gone is found"
    );
    idx.commit().unwrap();
    assert_eq!(idx.len(), (N - 100) as u64);
    assert_eq!(idx.search("title:\"live\"", MAX_LIMIT).unwrap().len(), 100);
    assert!(hits(&idx, &format!("no{}", N - 1)).is_empty());
    drop(idx);
    let idx = open(&dir);
    assert_eq!(idx.len(), (N - 100) as u64);
}
