//! The tree of the last mount, saved beside the database, so that a mount
//! whose catalog, layout and binary did not change loads it instead of
//! building it again (on a 200,000-track library the build was more than
//! half of a remount).
//!
//! The saved tree carries a key: a hash of this binary's identity, the
//! layout and the catalog's saved bytes. A tree build is deterministic, so
//! a tree saved under the key a build would have is the tree that build
//! gives. Any difference, or any trouble reading the file (missing, cut
//! short, from another version), means a build, as if it were not there:
//! the file is never trusted beyond its key, and losing it loses nothing.

use musicfs_core::tree::{BuildReport, VirtualTree};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

/// The file in the cache directory.
pub const TREE_FILE: &str = "tree.bin";

/// Bumped when what is saved changes shape (2: the key's two halves; 3:
/// whether the tree probed an inode).
const FORMAT: u32 = 3;

/// What a saved tree must match to be used: who built it (this binary,
/// this layout) and from what (the catalog), each a 64-bit hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeKey {
    builder: u64,
    catalog: u64,
}

impl TreeKey {
    /// The key of the tree `layout` builds from a catalog whose saved
    /// bytes hash to `catalog_digest` ([`crate::store::Db::load_catalog_digested`]),
    /// built by this binary. `None` when the binary cannot be identified
    /// (then nothing is saved or loaded).
    pub fn new(layout: &str, catalog_digest: u128) -> Option<TreeKey> {
        Some(TreeKey {
            builder: builder_hash(layout)?,
            // Already a hash: its low half is enough.
            catalog: catalog_digest as u64,
        })
    }
}

/// This binary with `layout`: what a tree saved by another build of
/// MusicFS, or under another layout, is told from before it is read.
fn builder_hash(layout: &str) -> Option<u64> {
    // The running binary's file: a rebuilt or upgraded binary is a new
    // file (another inode, size or mtime), and may build trees
    // differently.
    let exe = fs::metadata("/proc/self/exe").ok()?;
    let mut h = Xxh3::new();
    h.update(&FORMAT.to_le_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    for n in [exe.dev(), exe.ino(), exe.size()] {
        h.update(&n.to_le_bytes());
    }
    h.update(&exe.mtime().to_le_bytes());
    h.update(&exe.mtime_nsec().to_le_bytes());
    h.update(&(layout.len() as u64).to_le_bytes());
    h.update(layout.as_bytes());
    Some(h.digest())
}

/// The file: `FORMAT` and the key (20 bytes, little-endian), the XXH3-128
/// of the rest (16 bytes), then the build report and the tree
/// (MessagePack). The digest matters: a tree names the origin file each
/// of its files is read from, so a flipped bit that still decoded could
/// serve one track's bytes under another's name.
const KEY_LEN: usize = 4 + 16;

impl TreeKey {
    fn header(self) -> [u8; KEY_LEN] {
        let mut h = [0u8; KEY_LEN];
        h[..4].copy_from_slice(&FORMAT.to_le_bytes());
        h[4..12].copy_from_slice(&self.builder.to_le_bytes());
        h[12..].copy_from_slice(&self.catalog.to_le_bytes());
        h
    }

    /// The key of a header of this format.
    fn from_header(h: &[u8; KEY_LEN]) -> Option<TreeKey> {
        let (format, rest) = h.split_first_chunk::<4>()?;
        let (a, b) = rest.split_first_chunk::<8>()?;
        let b: &[u8; 8] = b.try_into().ok()?;
        (u32::from_le_bytes(*format) == FORMAT).then(|| TreeKey {
            builder: u64::from_le_bytes(*a),
            catalog: u64::from_le_bytes(*b),
        })
    }
}

/// The tree saved in `cache_dir` under `key`, if there is one.
pub fn load(cache_dir: &Path, key: TreeKey) -> Option<(VirtualTree, BuildReport)> {
    read_if(cache_dir, |saved| saved == key).map(|(_, tree, report)| (tree, report))
}

/// The tree saved in `cache_dir` by this binary under `layout`, and the
/// key it was saved under, if it reads: for a mount that reads it while
/// it works out the key it needs (and uses it only if the keys are
/// equal). A tree of another build of MusicFS or of another layout (an
/// upgrade, a new `--layout`) is not read at all: decoded, it would be
/// held beside the tree built instead (on 200,000 tracks, the first
/// mount of a new binary peaked at 460-470 MB, against 356-381 MB).
pub fn load_any(cache_dir: &Path, layout: &str) -> Option<(TreeKey, VirtualTree, BuildReport)> {
    let builder = builder_hash(layout)?;
    read_if(cache_dir, |saved| saved.builder == builder)
}

/// The saved tree and its key, if `wanted` accepts the key: the header is
/// read first, and a tree under a key it refuses is neither read further
/// nor decoded.
fn read_if(
    cache_dir: &Path,
    wanted: impl FnOnce(TreeKey) -> bool,
) -> Option<(TreeKey, VirtualTree, BuildReport)> {
    let mut file = fs::File::open(cache_dir.join(TREE_FILE)).ok()?;
    let mut header = [0u8; KEY_LEN];
    file.read_exact(&mut header).ok()?;
    let key = TreeKey::from_header(&header).filter(|&k| wanted(k))?;
    let mut rest = Vec::new();
    file.read_to_end(&mut rest).ok()?;
    let (tree, report) = decode(&rest)?;
    Some((key, tree, report))
}

/// The digest and the body after the key.
fn decode(rest: &[u8]) -> Option<(VirtualTree, BuildReport)> {
    let (digest, body) = rest.split_first_chunk::<16>()?;
    if u128::from_le_bytes(*digest) != xxh3_128(body) {
        tracing::warn!("the saved tree is damaged; building it");
        return None;
    }
    match rmp_serde::from_slice::<(BuildReport, VirtualTree)>(body) {
        Ok((report, tree)) => Some((tree, report)),
        Err(e) => {
            tracing::warn!(error = %e, "the saved tree does not read; building it");
            None
        }
    }
}

/// Saves `tree` (built from the catalog `key` was made of) in `cache_dir`:
/// written whole, synced, then renamed over the last one.
pub fn save(
    cache_dir: &Path,
    key: TreeKey,
    tree: &VirtualTree,
    report: &BuildReport,
) -> io::Result<()> {
    // One save at a time (the mount's, behind, and the shutdown's share
    // the temporary file).
    static SAVING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _one = SAVING.lock();
    let body = rmp_serde::to_vec(&(report, tree)).map_err(io::Error::other)?;
    let tmp = cache_dir.join(format!("{TREE_FILE}.tmp"));
    // A full disk keeps no half-written copy (tens of MB on a large
    // library); the last saved tree, if any, is still whole.
    super::replace_file(&cache_dir.join(TREE_FILE), &tmp, |f| {
        f.write_all(&key.header())?;
        f.write_all(&xxh3_128(&body).to_le_bytes())?;
        f.write_all(&body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicfs_core::layout::Layout;
    use musicfs_core::tags::TrackTags;
    use musicfs_core::{CatalogEntry, FileKind, FileVersion, OriginId, OriginPath, SourceFile};

    fn catalog() -> Vec<CatalogEntry> {
        (0..30)
            .map(|i| CatalogEntry {
                source: SourceFile {
                    origin: OriginId(0),
                    path: OriginPath::new(format!("a/{i:02}.flac").into_bytes()),
                    version: FileVersion {
                        size: 1000 + i,
                        mtime_ns: 7,
                        token: Some(format!("1:{i}:3").into()),
                    },
                },
                kind: FileKind::Track(TrackTags {
                    title: Some(format!("Song {i}").into()),
                    artist: Some("Band".into()),
                    album: Some(if i < 15 { "One" } else { "Two" }.into()),
                    track: Some(i as u32),
                    ..TrackTags::default()
                }),
            })
            .collect()
    }

    #[test]
    fn a_save_that_fails_leaves_no_temporary_file_and_the_tree_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::default_layout();
        let (tree, report) = VirtualTree::build(&layout, &catalog());
        let key = TreeKey::new(layout.source(), 42).unwrap();
        // Something that is not a file where the tree goes: the rename fails.
        fs::create_dir(dir.path().join(TREE_FILE)).unwrap();
        assert!(save(dir.path(), key, &tree, &report).is_err());
        assert!(!dir.path().join(format!("{TREE_FILE}.tmp")).exists());
        assert_eq!(load(dir.path(), key), None);
        assert!(load_any(dir.path(), layout.source()).is_none());
    }

    #[test]
    fn a_tree_read_before_its_key_is_known_carries_the_key_it_was_saved_under() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::default_layout();
        let (tree, report) = VirtualTree::build(&layout, &catalog());
        assert!(
            load_any(dir.path(), layout.source()).is_none(),
            "nothing saved yet"
        );
        let key = TreeKey::new(layout.source(), 42).unwrap();
        save(dir.path(), key, &tree, &report).unwrap();
        let (saved_key, loaded, loaded_report) = load_any(dir.path(), layout.source()).unwrap();
        assert_eq!(saved_key, key);
        assert_ne!(saved_key, TreeKey::new(layout.source(), 43).unwrap());
        assert_eq!((loaded, loaded_report), (tree, report));
        // Another layout's tree (or another binary's) is not read ahead:
        // it could never be used.
        assert!(load_any(dir.path(), "$artist/$title").is_none());
        // A damaged body is not decoded, whatever its key.
        let file = dir.path().join(TREE_FILE);
        let mut bytes = fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&file, &bytes).unwrap();
        assert!(load_any(dir.path(), layout.source()).is_none());
    }

    #[test]
    fn a_saved_tree_loads_under_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::default_layout();
        let (tree, report) = VirtualTree::build(&layout, &catalog());
        let key = TreeKey::new(layout.source(), 42).unwrap();
        assert_eq!(load(dir.path(), key), None, "nothing saved yet");
        save(dir.path(), key, &tree, &report).unwrap();
        let (loaded, loaded_report) = load(dir.path(), key).expect("saved under this key");
        assert_eq!(loaded, tree, "the same nodes and source index");
        assert_eq!(loaded_report, report);
        let path = &catalog()[3].source.path;
        assert_eq!(
            loaded.find_source(OriginId(0), path).map(|(ino, _)| ino),
            tree.find_source(OriginId(0), path).map(|(ino, _)| ino),
        );
        // Another catalog or another layout: not used.
        let other = TreeKey::new(layout.source(), 43).unwrap();
        assert_eq!(load(dir.path(), other), None);
        let other = TreeKey::new("$artist/$title", 42).unwrap();
        assert_eq!(load(dir.path(), other), None);
        // Nor is a file with one byte changed (it might still decode), or
        // one cut short.
        let file = dir.path().join(TREE_FILE);
        let bytes = fs::read(&file).unwrap();
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        fs::write(&file, &flipped).unwrap();
        assert_eq!(load(dir.path(), key), None);
        fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(load(dir.path(), key), None);
        fs::write(&file, &bytes).unwrap();
        assert!(load(dir.path(), key).is_some(), "the intact file loads");
    }
}
