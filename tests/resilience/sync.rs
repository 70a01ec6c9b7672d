//! Delta sync on the real daemon without FUSE: resumable batches (seed 2.5)
//! and chunk reuse after a retag (NFR-6.4).

use musicfs::library::sync::{SyncSource, Syncer};
use musicfs_core::engine::Config;
use musicfs_core::{Layout, OriginId};
use musicfs_tests::disk::cached_bytes;
use musicfs_tests::fixtures::TestDaemon;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A syncer that does not know the tree served: its first sync builds whole.
fn syncer(d: &TestDaemon, root: &Path) -> Syncer {
    syncer_of(d, root, None)
}

/// A syncer told the build report of the tree served, which is the saved
/// catalog's: its syncs patch that tree.
fn syncer_of(
    d: &TestDaemon,
    root: &Path,
    served: Option<musicfs_core::tree::BuildReport>,
) -> Syncer {
    Syncer::new(
        Arc::clone(&d.daemon),
        Arc::clone(&d.db),
        Layout::default_layout(),
        vec![SyncSource::Local(root.to_path_buf())],
        served,
        None,
    )
}

/// Writes new text tags and a new cover picture into a real audio file.
fn retag(path: &Path) {
    use lofty::config::WriteOptions;
    use lofty::picture::{MimeType, Picture, PictureType};
    use lofty::prelude::*;
    let mut tagged = lofty::read_from_path(path).expect("readable");
    if tagged.primary_tag().is_none() {
        let kind = tagged.primary_tag_type();
        tagged.insert_tag(lofty::tag::Tag::new(kind));
    }
    let tag = tagged.primary_tag_mut().expect("a tag");
    tag.set_title("A Brand New Title".into());
    tag.set_artist("Someone Else Entirely".into());
    tag.set_album("Remastered Deluxe Edition".into());
    tag.set_comment("retagged by the chunk reuse test".into());
    let cover: Vec<u8> = (0..120_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    tag.push_picture(
        Picture::unchecked(cover)
            .pic_type(PictureType::CoverFront)
            .mime_type(MimeType::Png)
            .build(),
    );
    tag.save_to_path(path, WriteOptions::default())
        .expect("tags written");
}

fn encode(path: &Path, args: &[&str]) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .args(args)
        .arg(path)
        .status()
        .expect("ffmpeg must be installed (apt install ffmpeg)");
    assert!(status.success());
}

#[test]
fn a_retagged_track_reuses_its_cached_audio_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lib");
    std::fs::create_dir_all(&root).unwrap();
    let flac = root.join("long.flac");
    let mp3 = root.join("long.mp3");
    encode(
        &flac,
        &[
            "anoisesrc=color=pink:amplitude=0.4:seed=3:duration=240",
            "-ac",
            "2",
            "-c:a",
            "flac",
            "-compression_level",
            "0",
        ],
    );
    encode(
        &mp3,
        &[
            "anoisesrc=color=pink:amplitude=0.4:seed=4:duration=250",
            "-ac",
            "2",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "320k",
        ],
    );
    let cache = dir.path().join("cache");
    let d = TestDaemon::local(&root, &cache, Config::default());
    let s = syncer(&d, &root);
    let mut report = Vec::new();
    for file in [&flac, &mp3] {
        let size = std::fs::metadata(file).unwrap().len();
        let path_of = |d: &TestDaemon| {
            d.paths()
                .into_iter()
                .find(|p| p.ends_with(file.extension().unwrap().to_str().unwrap()))
                .unwrap()
        };
        let before_path = path_of(&d);
        assert_eq!(
            d.read_all(&before_path, T).unwrap(),
            std::fs::read(file).unwrap()
        );
        // Reads are answered before their chunks are durable: count the
        // store once the writes behind them are done.
        d.flush_writes();
        let stored_before = cached_bytes(&cache);
        let fetched_before = d.daemon.inspect(|e| e.stats().fetched_bytes);
        retag(file);
        s.sync_origin(OriginId(0)).unwrap();
        let after_path = path_of(&d);
        assert_ne!(before_path, after_path, "the retag moved the track");
        assert_eq!(
            d.read_all(&after_path, T).unwrap(),
            std::fs::read(file).unwrap()
        );
        d.flush_writes();
        let new_bytes = cached_bytes(&cache) - stored_before;
        let fetched = d.daemon.inspect(|e| e.stats().fetched_bytes) - fetched_before;
        let new_size = std::fs::metadata(file).unwrap().len();
        report.push(format!(
            "{}: {:.1} MB; after retag {} new bytes cached ({:.2}%), {} bytes fetched to learn it",
            file.file_name().unwrap().to_string_lossy(),
            size as f64 / 1e6,
            new_bytes,
            100.0 * new_bytes as f64 / new_size as f64,
            fetched
        ));
        assert!(
            new_bytes * 10 < new_size,
            "{new_bytes} of {new_size} bytes stored anew after a retag of {}",
            file.display()
        );
    }
    println!("{}", report.join("\n"));
}

/// The syncer keeps no catalog in memory: a watcher's sync of a few files
/// (new, retagged, removed) and a sync of the whole origin each patch the
/// tree served without loading the saved catalog, and a sync that finds
/// nothing to change loads none. The tree the engine then shows is the one
/// a full rebuild from the database gives. A syncer that does not know the
/// served tree's build report builds whole, from one load.
#[test]
fn a_sync_patches_the_tree_without_loading_the_catalog_into_the_one_it_gives() {
    use musicfs_core::OriginPath;
    use musicfs_core::tree::VirtualTree;
    use musicfs_tests::fixtures::write_wav;
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lib");
    for i in 0..40 {
        let title = format!("Song {i:02}");
        write_wav(
            &root.join(format!("a/{i:02}.wav")),
            20_000,
            i,
            &title,
            "Band",
            "Album",
        );
    }
    let cache = dir.path().join("cache");
    let d = TestDaemon::local(&root, &cache, Config::default());
    // As a mount's first scan leaves it: the catalog saved, and the tree
    // served is its tree, with its build report.
    let scanned = musicfs_tests::fixtures::scan(&root);
    d.db.put_catalog(&scanned).unwrap();
    let (_, built) = VirtualTree::build(&Layout::default_layout(), &scanned);
    let s = syncer_of(&d, &root, Some(built));
    let loads = d.db.catalog_loads();
    let is_the_catalogs_tree = || {
        let (want, _) =
            VirtualTree::build(&Layout::default_layout(), &d.db.load_catalog().unwrap());
        d.daemon.inspect(|e| e.tree() == &want)
    };
    let paths = |names: &[&str]| -> BTreeSet<OriginPath> {
        names
            .iter()
            .map(|n| OriginPath::new(n.as_bytes().to_vec()))
            .collect()
    };
    // A new file, a retagged one, a removed one: one watcher sync each.
    write_wav(
        &root.join("b/new.wav"),
        30_000,
        99,
        "New",
        "Other Band",
        "Other",
    );
    s.sync_paths(OriginId(0), &paths(&["b/new.wav"])).unwrap();
    write_wav(
        &root.join("a/03.wav"),
        20_000,
        3,
        "Renamed",
        "Band",
        "Album",
    );
    s.sync_paths(OriginId(0), &paths(&["a/03.wav"])).unwrap();
    std::fs::remove_file(root.join("a/07.wav")).unwrap();
    s.sync_paths(OriginId(0), &paths(&["a/07.wav"])).unwrap();
    // Each sync patched the tree: none loaded the catalog.
    assert_eq!(
        d.db.catalog_loads(),
        loads,
        "a sync of a few files loads no catalog"
    );
    assert!(
        is_the_catalogs_tree(),
        "the patched tree is the saved catalog's"
    );
    let shown = d.paths();
    assert!(
        shown
            .iter()
            .any(|p| p.ends_with("Other Band/Other/00 - New.wav")),
        "{shown:?}"
    );
    assert!(
        shown.iter().any(|p| p.ends_with("00 - Renamed.wav")),
        "{shown:?}"
    );
    assert!(
        !shown.iter().any(|p| p.ends_with("00 - Song 07.wav")),
        "{shown:?}"
    );
    assert!(
        !shown.iter().any(|p| p.ends_with("00 - Song 03.wav")),
        "{shown:?}"
    );
    // A whole-origin sync (at mount, after lost events, `musicfs rescan`)
    // plans against the origin's saved entries: one more removal and one
    // more new file, seen by the listing alone.
    let loads = d.db.catalog_loads();
    std::fs::remove_file(root.join("a/08.wav")).unwrap();
    write_wav(
        &root.join("c/unwatched.wav"),
        25_000,
        98,
        "Unwatched",
        "Third Band",
        "Third",
    );
    let report = s.sync_origin(OriginId(0)).unwrap();
    assert_eq!((report.reread, report.removed), (1, 1), "{report:?}");
    assert_eq!(d.db.catalog_loads(), loads, "patched again");
    let shown = d.paths();
    assert!(
        shown
            .iter()
            .any(|p| p.ends_with("Third Band/Third/00 - Unwatched.wav")),
        "{shown:?}"
    );
    assert!(
        !shown.iter().any(|p| p.ends_with("00 - Song 08.wav")),
        "{shown:?}"
    );
    assert!(
        is_the_catalogs_tree(),
        "tree differs from the saved catalog's"
    );
    // Nothing changed since: nothing to build, nothing loaded.
    let loads = d.db.catalog_loads();
    let report = s.sync_origin(OriginId(0)).unwrap();
    assert_eq!((report.reread, report.removed), (0, 0), "{report:?}");
    assert_eq!(d.db.catalog_loads(), loads, "nothing loaded");
    // Without the served tree's report, a sync builds whole: one load.
    let blind = syncer(&d, &root);
    std::fs::remove_file(root.join("a/09.wav")).unwrap();
    blind
        .sync_paths(OriginId(0), &paths(&["a/09.wav"]))
        .unwrap();
    assert_eq!(d.db.catalog_loads(), loads + 1, "one load");
    assert!(
        is_the_catalogs_tree(),
        "tree differs from the saved catalog's"
    );
}

/// Tests that configure fail points: `scripts/test` runs only these with
/// the `failpoints` feature (`-- failpoints::`).
#[cfg(feature = "failpoints")]
mod failpoints {
    use super::*;

    #[test]
    fn test_sync_resumes_after_crash() {
        use musicfs::library::sync::SYNC_BATCH_FILES;
        use musicfs_core::tree::VirtualTree;
        use musicfs_tests::fixtures::{local_origin, scan, write_wav};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("lib");
        let n = SYNC_BATCH_FILES * 2 + 88;
        for i in 0..n {
            write_wav(
                &root.join(format!("d{}/{i}.wav", i % 7)),
                6_000,
                i as u64,
                &format!("T{i:04}"),
                "A",
                "B",
            );
        }
        let store = Arc::new(musicfs::store::ChunkStore::open(&dir.path().join("cache")).unwrap());
        let d = TestDaemon::start(
            &[],
            vec![local_origin(&root)],
            store,
            &dir.path().join("cache"),
            Config::default(),
        );
        // The syncer knows the (empty) tree served is the (empty)
        // catalog's, so it would patch: the cut sync must make the next
        // one build whole, as it missed the changes saved before the cut.
        let (_, empty) = VirtualTree::build(&Layout::default_layout(), &[]);
        let s = syncer_of(&d, &root, Some(empty));
        let scenario = fail::FailScenario::setup();
        // The first batch goes through, the sync is cut after the second.
        fail::cfg("delta-sync-after-batch", "1*off->return").unwrap();
        let err = s.sync_origin(OriginId(0)).unwrap_err();
        assert!(
            matches!(err, musicfs::library::sync::SyncError::Interrupted(_)),
            "{err}"
        );
        assert_eq!(
            d.db.load_catalog().unwrap().len(),
            2 * SYNC_BATCH_FILES,
            "two batches were saved"
        );
        fail::remove("delta-sync-after-batch");
        let resumed = s.sync_origin(OriginId(0)).unwrap();
        scenario.teardown();
        assert_eq!(
            resumed.reread,
            n - 2 * SYNC_BATCH_FILES,
            "only the unfinished files are read again"
        );
        let catalog = d.db.load_catalog().unwrap();
        assert_eq!(catalog.len(), n, "nothing missed, nothing twice");
        // The tree is the one a fresh scan gives.
        let fresh = VirtualTree::build(&Layout::default_layout(), &scan(&root)).0;
        assert_eq!(d.daemon.inspect(|e| e.tree().clone()), fresh);
    }
}
