//! Generated music libraries with a manifest of what they hold.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One file of a generated library, as its manifest records it.
#[derive(Clone, Debug, Deserialize)]
pub struct ManifestEntry {
    /// Path relative to the library root.
    pub path: String,
    /// "track", "cover", "broken" or "other".
    pub kind: String,
    /// Audio format (tracks only).
    #[serde(default)]
    pub format: Option<String>,
    /// Tags as written (tracks only).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: String,
}

/// A generated library on disk.
#[derive(Debug)]
pub struct Library {
    /// Its root directory.
    pub root: PathBuf,
    /// What it holds.
    pub manifest: Vec<ManifestEntry>,
}

impl Library {
    /// Generates a library under `dir` (its `lib/` subdirectory) by running
    /// `tests/corpus/make-library.py` with `args` (e.g. `["--tracks", "50"]`).
    /// Panics with a clear message if ffmpeg or mutagen is missing: such a
    /// test must fail, never pass silently.
    pub fn generate(dir: &Path, args: &[&str]) -> Library {
        let root = dir.join("lib");
        let manifest = dir.join("lib.manifest.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/make-library.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg("--out")
            .arg(&root)
            .arg("--manifest")
            .arg(&manifest)
            .args(args)
            .output()
            .expect("python3 must be installed to generate test libraries");
        assert!(
            out.status.success(),
            "make-library.py failed (needs ffmpeg and `pip install mutagen`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Library::open(&root, &manifest)
    }

    /// The library `make-library.py` generates with `args`, kept under
    /// `cache` (a test target's `CARGO_TARGET_TMPDIR`) and generated only
    /// when no earlier run left it there. For libraries the tests only read.
    /// A test binary holds its shared library in a static, which is never
    /// dropped: a temporary directory would be left behind by every run.
    /// The key covers the generator's source and the arguments, and a kept
    /// library whose files do not have their manifest's sizes is generated
    /// again, so a stale or damaged copy is never used.
    pub fn cached(cache: &Path, args: &[&str]) -> Library {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/make-library.py");
        let mut key = std::fs::read(&script).expect("make-library.py readable");
        for a in args {
            key.push(0);
            key.extend_from_slice(a.as_bytes());
        }
        let dir = cache
            .join("libraries")
            .join(&crate::sha256_bytes(&key)[..16]);
        if let Some(lib) = Library::open_intact(&dir) {
            return lib;
        }
        let _ = std::fs::remove_dir_all(&dir);
        let staging = dir.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).expect("library cache directory");
        Library::generate(&staging, args);
        // Another test binary may have raced us here: either copy will do.
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        Library::open_intact(&dir).expect("a generated library is intact")
    }

    /// The library generated into `dir`, if every file of its manifest is
    /// there with its recorded size.
    fn open_intact(dir: &Path) -> Option<Library> {
        let manifest = dir.join("lib.manifest.jsonl");
        if !manifest.exists() {
            return None;
        }
        let lib = Library::open(&dir.join("lib"), &manifest);
        let intact = lib
            .manifest
            .iter()
            .all(|e| std::fs::metadata(lib.root.join(&e.path)).is_ok_and(|m| m.len() == e.size));
        intact.then_some(lib)
    }

    /// Opens a library generated earlier.
    pub fn open(root: &Path, manifest: &Path) -> Library {
        let text = std::fs::read_to_string(manifest).expect("manifest readable");
        let manifest = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("manifest line is JSON"))
            .collect();
        Library {
            root: root.to_path_buf(),
            manifest,
        }
    }

    /// The tracks.
    pub fn tracks(&self) -> impl Iterator<Item = &ManifestEntry> {
        self.manifest.iter().filter(|e| e.kind == "track")
    }
}
