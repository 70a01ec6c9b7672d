//! Scanning a local origin directory into catalog entries.
//!
//! A scan walks the tree once, keeps the files whose names say audio, cover
//! art, lyrics, images, cue sheets or playlists
//! ([`catalog::classify_name`]), then reads them on `threads` workers (tag parsing is the cost;
//! the walk is a few `getdents` per directory). The result is sorted by path
//! bytes, so the same tree always gives the same catalog and so the same
//! virtual tree.
//!
//! Walk rules, and why:
//!
//! - **Symlinks to directories are not followed.** They are how loops get
//!   into libraries (`odd/loop -> ..`), and when they are not loops they
//!   show the same files twice under two paths, i.e. duplicate tracks.
//! - **Symlinks to files are followed.** People link single tracks into a
//!   library from elsewhere; a file link cannot loop, and the catalog entry
//!   then describes the target's bytes (size, mtime, inode) under the link's
//!   path, which is the path the FUSE layer will open.
//! - **Hidden entries (names starting with `.`) are skipped**, files and
//!   whole directories: they are tool state (`.AppleDouble`, `._x.flac`
//!   resource forks that *look* like audio, `.sync`, `.Trash-1000`), never
//!   part of the collection. Names starting with `..` are not hidden: those
//!   are albums like `...And Justice for All`. The root itself may be hidden
//!   (`~/.music`).
//! - **Special files (FIFOs, sockets, devices) are never opened**, and files
//!   are opened non-blocking, so a FIFO named `x.mp3` cannot hang a scan.
//!
//! Paths are kept as raw bytes (`/`-separated, relative to the root), so file
//! names that are not UTF-8 survive untouched.

use crate::library::keep::{self, KeptBytes, TagKeeper};
use crate::library::tags;
use crate::origin::beneath::{self, Purpose};
use crate::origin::path::file_version;
use crate::origin::path::{is_hidden, validate_rel};
use musicfs_core::catalog::NameClass;
use musicfs_core::sync::Listed;
use musicfs_core::{CatalogEntry, FileKind, OriginId, OriginPath, SourceFile, catalog};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How a scan runs.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// Worker threads reading tags. Tag parsing is CPU work on files that are
    /// usually in the page cache, so one per core is right; more helps only
    /// on slow (network, spinning) storage where workers wait on I/O.
    /// Zero is treated as one.
    pub threads: usize,
    /// How many walk errors [`ScanReport::errors`] keeps. A tree with one
    /// unreadable directory per album would otherwise fill memory and logs
    /// with the same message; the count of the rest is still reported.
    pub max_errors: usize,
    /// Where the bytes the tag parser read are kept (the first scan of a
    /// cached origin, before any engine runs), if anywhere.
    pub keep: Option<Arc<TagKeeper>>,
}

impl Default for ScanOptions {
    fn default() -> ScanOptions {
        ScanOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_errors: 1000,
            keep: None,
        }
    }
}

/// What a scan found.
#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    /// Tracks, covers and unreadable audio files, sorted by path bytes.
    pub entries: Vec<CatalogEntry>,
    /// Entries whose tags were read.
    pub tracks: usize,
    /// Cover-art entries.
    pub covers: usize,
    /// Lyrics, other images, cue sheets and playlists (the tree decides
    /// where each goes, or that it has nowhere to go).
    pub sidecars: usize,
    /// Audio-named files whose tags could not be read (each logged at warn).
    pub unreadable: usize,
    /// Files looked at and left out: neither audio nor cover art by name, or
    /// not regular files (FIFOs, sockets, links to directories). Hidden
    /// entries are not counted: they are not part of the library.
    pub skipped_other: usize,
    /// The files of [`ScanReport::skipped_other`] left out for their name,
    /// by extension (`.nfo`, `(none)`); the rest were not regular files.
    pub skipped_by_ext: BTreeMap<String, usize>,
    /// Paths the walk could not look into (a folder it could not read, with
    /// `EMFILE`, `EACCES`, `EIO`...), relative to the root: a sync must not
    /// take what is under them for gone.
    pub unseen: Vec<OriginPath>,
    /// Problems with the tree rather than with a file's content: directories
    /// that cannot be read, files that vanished or dangling links. At most
    /// [`ScanOptions::max_errors`] messages, then one saying how many more.
    pub errors: Vec<String>,
    /// Wall time of the whole scan.
    pub elapsed: Duration,
    /// Bytes fetched from the origin to read tags (remote scans; zero for
    /// local scans, which read through the page cache).
    pub bytes_fetched: u64,
    /// Requests made to the origin to read tags (remote scans; zero for
    /// local scans).
    pub fetch_requests: u64,
}

/// Hears how far a scan is, to show progress; called from worker threads.
///
/// Counts are deltas, not totals, so workers need no shared counter of their
/// own: `discovered` when the walk finds files to read, `scanned` when they
/// have been read, `finish` once at the end.
pub trait ScanProgress: Send + Sync {
    /// `n` more files were found that will be read.
    fn discovered(&self, n: u64);
    /// `n` more files have been read.
    fn scanned(&self, n: u64);
    /// The scan is over (also after an error).
    fn finish(&self);
}

/// A [`ScanProgress`] that shows nothing: for tests, the live watcher, and
/// callers that report on their own.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl ScanProgress for NoProgress {
    fn discovered(&self, _: u64) {}
    fn scanned(&self, _: u64) {}
    fn finish(&self) {}
}

/// Classifies and reads one file of a local origin.
///
/// Used by the scanner and by the live watcher, so both treat a file the
/// same way. `rel` is the `/`-separated path relative to `root`, raw bytes.
/// Returns:
/// - `Ok(Some(Track))` for an audio file whose tags were read;
/// - `Ok(Some(Unreadable(reason)))` for an audio-named file that could not be
///   read (corrupt, empty, permission denied); logged at warn;
/// - `Ok(Some(Cover))` for cover art, `Lyrics`, `Image` and `Cue` for those
///   (by name; only stat'ed), `Playlist(bytes)` for a playlist (read, up to
///   [`catalog::PLAYLIST_MAX_BYTES`]; a bigger one is logged and listed
///   unreadable);
/// - `Ok(None)` for anything else: other names, hidden paths, and things
///   that are not regular files (FIFOs, directories named `x.flac`);
/// - `Err` when the file is gone (`NotFound`, also a dangling link) or cannot
///   even be stat'ed, and `InvalidInput` for a `rel` that is absolute or has
///   `.`, `..` or empty components (it would escape or alias the origin).
pub fn scan_file(origin: OriginId, root: &Path, rel: &[u8]) -> io::Result<Option<CatalogEntry>> {
    validate_rel(rel)?;
    if rel.split(|&b| b == b'/').any(is_hidden) {
        return Ok(None);
    }
    let name = rel.rsplit(|&b| b == b'/').next().unwrap_or(rel);
    let class = match catalog::classify_name(name) {
        Some(class) => class,
        None => return Ok(None),
    };
    read_one(origin, root, rel, class, None).map(|o| o.entry)
}

/// Scans a local origin: walks `root`, reads every audio file's tags in
/// parallel, and returns the sorted catalog entries with counts.
///
/// Fails only when `root` itself cannot be read (missing, not a directory,
/// no permission): anything below it that goes wrong is counted, logged and
/// listed in [`ScanReport::errors`], because one bad directory must not hide
/// the rest of a library.
pub fn scan_local(
    origin: OriginId,
    root: &Path,
    opts: &ScanOptions,
    progress: &dyn ScanProgress,
) -> io::Result<ScanReport> {
    let result = scan_local_inner(origin, root, opts, progress);
    progress.finish();
    result
}

fn scan_local_inner(
    origin: OriginId,
    root: &Path,
    opts: &ScanOptions,
    progress: &dyn ScanProgress,
) -> io::Result<ScanReport> {
    let started = Instant::now();
    let meta = std::fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", root.display()),
        ));
    }
    // Fail here, not as a walk error, when the root itself is unreadable.
    drop(std::fs::read_dir(root)?);

    let mut report = ScanReport::default();
    let mut errors = ErrorList::new(opts.max_errors);
    let work = walk(root, &mut report, &mut errors, progress);

    let outcomes = read_all(
        origin,
        root,
        &work,
        opts.threads.max(1),
        opts.keep.as_deref(),
        progress,
    );
    let mut entries = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        if let Some(message) = outcome.error {
            errors.push(message);
        }
        match outcome.entry {
            Some(entry) => {
                report.count(&entry.kind);
                entries.push(entry);
            }
            None if outcome.skipped => report.skipped_other += 1,
            None => {}
        }
    }
    entries.sort_unstable_by(|a, b| a.source.path.cmp(&b.source.path));
    report.entries = entries;
    let (error_list, error_total) = errors.finish();
    report.errors = error_list;
    report.elapsed = started.elapsed();

    let secs = report.elapsed.as_secs_f64();
    let files = work.len();
    tracing::info!(
        "scanned {files} files in {secs:.2} s ({rate:.0} files/s): {} tracks, {} covers, {} lyrics, images, cue sheets and playlists, {} unreadable",
        report.tracks,
        report.covers,
        report.sidecars,
        report.unreadable,
        rate = if secs > 0.0 { files as f64 / secs } else { 0.0 },
    );
    if report.skipped_other > 0 || !report.errors.is_empty() {
        tracing::info!(
            "{}: skipped: {}; {} walk errors",
            root.display(),
            report.skipped_summary(),
            error_total,
        );
    }
    Ok(report)
}

impl ScanReport {
    /// Counts a catalog entry.
    pub(crate) fn count(&mut self, kind: &FileKind) {
        match kind {
            FileKind::Track(_) => self.tracks += 1,
            FileKind::Cover => self.covers += 1,
            FileKind::Unreadable(_) => self.unreadable += 1,
            FileKind::Lyrics | FileKind::Image | FileKind::Cue | FileKind::Playlist(_) => {
                self.sidecars += 1
            }
        }
    }

    /// Counts a file left out for its name, by its extension.
    pub(crate) fn skip(&mut self, name: &[u8]) {
        self.skipped_other += 1;
        *self
            .skipped_by_ext
            .entry(catalog::skipped_label(name))
            .or_default() += 1;
    }

    /// The skipped files by extension, most first: `3 .nfo, 2 .log`
    /// (`nothing` when none; the twelve commonest, then how many more).
    pub fn skipped_summary(&self) -> String {
        const SHOWN: usize = 12;
        let mut kinds: Vec<(&String, &usize)> = self.skipped_by_ext.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let mut parts: Vec<String> = kinds
            .iter()
            .take(SHOWN)
            .map(|(ext, n)| format!("{n} {ext}"))
            .collect();
        let rest: usize = kinds.iter().skip(SHOWN).map(|(_, n)| **n).sum();
        if rest > 0 {
            parts.push(format!("{rest} other"));
        }
        let unnamed = self
            .skipped_other
            .saturating_sub(self.skipped_by_ext.values().sum());
        if unnamed > 0 {
            parts.push(format!("{unnamed} not regular files"));
        }
        if parts.is_empty() {
            "nothing".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// A file the walk kept for reading.
struct Work {
    rel: Box<[u8]>,
    class: NameClass,
}

/// Walks the tree, counting what it leaves out, and returns the files to
/// read.
///
/// `walkdir` rather than a hand-written `read_dir` recursion or `jwalk`: it
/// keeps an explicit stack (no recursion limit on deep trees), caps open
/// directory handles, reports each error with its path and goes on, and
/// with `follow_links(false)` takes file types from `d_type` so the walk
/// makes no `stat` call per entry. `jwalk` parallelises directory reading,
/// which pays on cold network storage; here the walk is a few percent of a
/// scan (tag reading is the rest, and that is what runs in parallel).
fn walk(
    root: &Path,
    report: &mut ScanReport,
    errors: &mut ErrorList,
    progress: &dyn ScanProgress,
) -> Vec<Work> {
    let mut work = Vec::new();
    let mut pending: u64 = 0;
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !is_hidden(e.file_name().as_bytes()));
    for item in walker {
        let entry = match item {
            Ok(entry) => entry,
            Err(err) => {
                let path = err.path().unwrap_or(root);
                let reason = err
                    .io_error()
                    .map_or_else(|| err.to_string(), ToString::to_string);
                tracing::warn!("scan: cannot read {}: {reason}", path.display());
                // Listed relative to the root, like the entries.
                let rel = path.strip_prefix(root).unwrap_or(path);
                errors.push(format!("{}: {reason}", rel.display()));
                if err.io_error().is_some_and(could_not_look) {
                    report
                        .unseen
                        .push(OriginPath::new(rel.as_os_str().as_bytes().to_vec()));
                }
                continue;
            }
        };
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        // Regular files and links (a link to a file is read through; one to
        // a directory is found out when opened and skipped). Everything else
        // is a special file and is never opened.
        if !(ft.is_file() || ft.is_symlink()) {
            report.skipped_other += 1;
            continue;
        }
        let Some(class) = catalog::classify_name(entry.file_name().as_bytes()) else {
            report.skip(entry.file_name().as_bytes());
            continue;
        };
        let rel = match entry.path().strip_prefix(root) {
            Ok(rel) => rel.as_os_str().as_bytes(),
            // walkdir yields paths under the root it was given.
            Err(_) => continue,
        };
        work.push(Work {
            rel: rel.into(),
            class,
        });
        pending += 1;
        if pending == 256 {
            progress.discovered(pending);
            pending = 0;
        }
    }
    if pending > 0 {
        progress.discovered(pending);
    }
    work
}

/// The result of reading one file.
struct Outcome {
    /// The catalog entry, if the file belongs in the catalog.
    entry: Option<CatalogEntry>,
    /// Left out because it is not a regular file.
    skipped: bool,
    /// A walk-level problem to report (file vanished, dangling link).
    error: Option<String>,
}

/// Reads every file of `work` on `threads` scoped threads. Workers take the
/// next index from a shared counter, so a slow file (a big ID3 tag on a
/// network mount) holds up one worker, not a pre-assigned share of files.
fn read_all(
    origin: OriginId,
    root: &Path,
    work: &[Work],
    threads: usize,
    keep: Option<&TagKeeper>,
    progress: &dyn ScanProgress,
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Vec<(usize, Outcome)>>> = Mutex::new(Vec::new());
    let threads = threads.min(work.len()).max(1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut local = Vec::new();
                let mut done: u64 = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = work.get(i) else { break };
                    let outcome = match read_one(origin, root, &item.rel, item.class, keep) {
                        Ok(outcome) => outcome,
                        Err(err) => {
                            let rel = Path::new(OsStr::from_bytes(&item.rel));
                            tracing::warn!("scan: {}: {err}", root.join(rel).display());
                            Outcome {
                                entry: None,
                                skipped: false,
                                error: Some(format!("{}: {err}", rel.display())),
                            }
                        }
                    };
                    local.push((i, outcome));
                    done += 1;
                    if done == 32 {
                        progress.scanned(done);
                        done = 0;
                    }
                }
                if done > 0 {
                    progress.scanned(done);
                }
                // A poisoned lock only means another worker panicked after
                // pushing; its data is still whole.
                results
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(local);
            });
        }
    });
    let mut all: Vec<(usize, Outcome)> = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect();
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, o)| o).collect()
}

/// Opens, stats and (for audio) parses one file: one `open`, one `fstat`,
/// so the recorded version is the one of the bytes that were parsed, even if
/// the file is replaced mid-scan.
fn read_one(
    origin: OriginId,
    root: &Path,
    rel: &[u8],
    class: NameClass,
    keep: Option<&TagKeeper>,
) -> io::Result<Outcome> {
    let path: PathBuf = root.join(OsStr::from_bytes(rel));
    let source = |version| SourceFile {
        origin,
        path: OriginPath::new(rel),
        version,
    };
    let skipped = Outcome {
        entry: None,
        skipped: true,
        error: None,
    };
    let entry = |source, kind| Outcome {
        entry: Some(CatalogEntry { source, kind }),
        skipped: false,
        error: None,
    };

    // Every open resolves beneath the root: a link out of it is refused
    // here (and again at every read), never listed.
    match class {
        NameClass::Cover | NameClass::Lyrics | NameClass::Image | NameClass::Cue => {
            let meta = beneath::stat(root, rel)?;
            if !meta.is_file() {
                return Ok(skipped);
            }
            let kind = match class {
                NameClass::Cover => FileKind::Cover,
                NameClass::Lyrics => FileKind::Lyrics,
                NameClass::Cue => FileKind::Cue,
                _ => FileKind::Image,
            };
            let version = file_version(&meta);
            // Media servers read covers and lyrics with the tags: small
            // ones are kept whole as well.
            if let Some(keeper) = keep.filter(|k| k.wants_more())
                && meta.len() > 0
                && meta.len() <= keep::SIDECAR_KEEP_MAX_BYTES
            {
                match read_whole(root, rel, &version) {
                    Ok(Some(bytes)) => keeper.keep(KeptBytes {
                        source: source(version.clone()),
                        tail_at: meta.len(),
                        head: bytes,
                        tail: Vec::new(),
                    }),
                    Ok(None) => {}
                    Err(e) => tracing::debug!(
                        path = %path.display(),
                        error = %e,
                        "sidecar not kept"
                    ),
                }
            }
            Ok(entry(source(version), kind))
        }
        NameClass::Playlist => {
            let file = beneath::open(root, rel, Purpose::Read)?;
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Ok(skipped);
            }
            let kind = match read_playlist(&file, meta.len()) {
                Ok(bytes) => FileKind::Playlist(bytes.into()),
                Err(why) => {
                    tracing::warn!("playlist {} left out: {why}", path.display());
                    FileKind::Unreadable(why.to_string())
                }
            };
            Ok(entry(source(file_version(&meta)), kind))
        }
        NameClass::Audio => {
            let file = match beneath::open(root, rel, Purpose::Read) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound || beneath::is_outside(&err) => {
                    return Err(err);
                }
                Err(err) => {
                    // Permission denied and friends: the file is there, and
                    // a stat usually still works, so list it as unreadable.
                    let meta = beneath::stat(root, rel)?;
                    if !meta.is_file() {
                        return Ok(skipped);
                    }
                    let reason = format!("cannot open: {err}");
                    warn_unreadable(&path, &reason);
                    return Ok(entry(
                        source(file_version(&meta)),
                        FileKind::Unreadable(reason),
                    ));
                }
            };
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Ok(skipped);
            }
            let ext = OriginPath::new(rel).extension_lower();
            let version = file_version(&meta);
            let parsed = match keep.filter(|k| k.wants_more()) {
                Some(keeper) => {
                    let (parsed, trace) = tags::read_tags_file_touched(
                        &file,
                        meta.len(),
                        &ext,
                        keep::KEEP_HEAD_BYTES as usize,
                    );
                    if parsed.is_ok() {
                        match read_kept(&file, &ext, source(version.clone()), trace) {
                            Ok(Some(kept)) => keeper.keep(kept),
                            Ok(None) => {}
                            Err(e) => tracing::debug!(
                                path = %path.display(),
                                error = %e,
                                "tag bytes not kept"
                            ),
                        }
                    }
                    parsed
                }
                None => tags::read_tags_file(&file, meta.len(), &ext),
            };
            let kind = match parsed {
                Ok(tags) => FileKind::Track(tags),
                Err(err) => {
                    let reason = err.to_string();
                    warn_unreadable(&path, &reason);
                    FileKind::Unreadable(reason)
                }
            };
            Ok(entry(source(version), kind))
        }
    }
}

/// Reads what a scan keeps of a file (its head and tail, see
/// `library::keep`), reusing the head the parser read. `None` if the file
/// changed while it was read: bytes of another version are never kept.
fn read_kept(
    file: &std::fs::File,
    ext: &str,
    source: SourceFile,
    trace: tags::ReadTrace,
) -> io::Result<Option<KeptBytes>> {
    let size = source.version.size;
    let region = keep::kept_region(size, keep::tail_bytes(ext), &trace.touched);
    let mut head = trace.head;
    let have = head.len();
    let head_len = usize::try_from(region.head).map_err(io::Error::other)?;
    if head_len < have {
        head.truncate(head_len);
    } else if head_len > have {
        head.resize(head_len, 0);
        file.read_exact_at(&mut head[have..], have as u64)?;
    }
    let mut tail = vec![0; usize::try_from(size - region.tail).map_err(io::Error::other)?];
    file.read_exact_at(&mut tail, region.tail)?;
    if file_version(&file.metadata()?) != source.version {
        return Ok(None);
    }
    Ok(Some(KeptBytes {
        source,
        head,
        tail_at: region.tail,
        tail,
    }))
}

/// A small file whole, if it is still `version` after the read.
fn read_whole(
    root: &Path,
    rel: &[u8],
    version: &musicfs_core::FileVersion,
) -> io::Result<Option<Vec<u8>>> {
    let file = beneath::open(root, rel, Purpose::Read)?;
    let mut bytes = vec![0; usize::try_from(version.size).map_err(io::Error::other)?];
    file.read_exact_at(&mut bytes, 0)?;
    Ok((file_version(&file.metadata()?) == *version).then_some(bytes))
}

/// Why a playlist is left out (the catalog lists it unreadable with this
/// text as the reason).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlaylistError {
    /// Over [`catalog::PLAYLIST_MAX_BYTES`].
    #[error("{0} bytes, over the {max} KiB playlist limit", max = catalog::PLAYLIST_MAX_BYTES / 1024)]
    TooBig(u64),
    /// Reading it failed.
    #[error("cannot read: {0}")]
    Read(#[source] io::Error),
}

/// Reads a playlist of `size` bytes (as stat'ed), refusing one over
/// [`catalog::PLAYLIST_MAX_BYTES`].
pub(crate) fn read_playlist(file: &std::fs::File, size: u64) -> Result<Vec<u8>, PlaylistError> {
    let max = catalog::PLAYLIST_MAX_BYTES;
    if size > max {
        return Err(PlaylistError::TooBig(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // One byte past the limit tells a file that grew since the stat.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(PlaylistError::Read)?;
    if bytes.len() as u64 > max {
        return Err(PlaylistError::TooBig(bytes.len() as u64));
    }
    Ok(bytes)
}

fn warn_unreadable(path: &Path, reason: &str) {
    tracing::warn!("unreadable audio file {}: {reason}", path.display());
}

/// Problem messages (walk errors, unreadable files), capped, with a count
/// of the rest.
pub(crate) struct ErrorList {
    cap: usize,
    kept: Vec<String>,
    dropped: usize,
}

impl ErrorList {
    pub(crate) fn new(cap: usize) -> ErrorList {
        ErrorList {
            cap,
            kept: Vec::new(),
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, message: String) {
        if self.kept.len() < self.cap {
            self.kept.push(message);
        } else {
            self.dropped += 1;
        }
    }

    /// The last message kept.
    pub(crate) fn last(&self) -> Option<&str> {
        self.kept.last().map(String::as_str)
    }

    /// The kept messages (plus one counting the dropped ones) and the total.
    pub(crate) fn finish(mut self) -> (Vec<String>, usize) {
        let total = self.kept.len() + self.dropped;
        if self.dropped > 0 {
            self.kept
                .push(format!("... and {} more errors", self.dropped));
        }
        (self.kept, total)
    }
}

/// What a listing of a local origin saw, and what it could not see.
#[derive(Debug, Default)]
pub struct Listing {
    /// The files, by path.
    pub files: Vec<Listed>,
    /// Folders that could not be read and files that could not be
    /// `stat`ed (for another reason than being gone), relative to the
    /// root: unreachable is unhealthy, never empty, so a sync keeps what
    /// the catalog has under them ([`Listing::keep_unseen`]).
    pub unseen: Vec<OriginPath>,
}

impl Listing {
    /// Whether `path` is, or is under, a path the listing could not see.
    pub fn is_unseen(&self, path: &OriginPath) -> bool {
        self.unseen.iter().any(|u| {
            let (u, p) = (u.as_bytes(), path.as_bytes());
            u.is_empty() || p == u || (p.starts_with(u) && p.get(u.len()) == Some(&b'/'))
        })
    }

    /// Drops from `plan` the removals of files the listing could not see
    /// (out of descriptors, a folder without permission, a disk error):
    /// they are not gone, and the next sync looks again.
    pub fn keep_unseen(&self, plan: &mut musicfs_core::sync::SyncPlan) {
        if self.unseen.is_empty() {
            return;
        }
        let before = plan.removed.len();
        plan.removed.retain(|p| !self.is_unseen(p));
        let kept = before - plan.removed.len();
        if kept > 0 {
            tracing::warn!(
                kept,
                unseen = self.unseen.len(),
                "kept files the listing could not see; the next sync looks again"
            );
        }
    }
}

/// Lists a local origin for a delta sync: every file the scanner would read,
/// with its version from a `stat`, but no tags read. This is what makes a
/// later mount's catch-up cheap: only files whose version changed are
/// opened.
pub fn list_local(root: &Path) -> io::Result<Listing> {
    drop(std::fs::read_dir(root)?);
    let mut report = ScanReport::default();
    let mut errors = ErrorList::new(100);
    let work = walk(root, &mut report, &mut errors, &NoProgress);
    let (files, mut unseen) = stat_all(root, work);
    unseen.extend(report.unseen);
    // The origin went away while it was listed (unmounted, renamed): what
    // the walk missed is not gone from the origin, and a sync must not
    // remove it. Unreachable is unhealthy, never empty.
    drop(std::fs::read_dir(root)?);
    Ok(Listing { files, unseen })
}

/// Lists what is now at `paths` (relative to `root`): a file is stat'ed, a
/// directory walked (a folder moved in brings its files), a missing path
/// contributes nothing (the plan removes what the catalog had under it).
pub fn list_paths(root: &Path, paths: &BTreeSet<OriginPath>) -> Listing {
    let mut work = Vec::new();
    let mut unseen = Vec::new();
    for rel in paths {
        if validate_rel(rel.as_bytes()).is_err()
            || rel.as_bytes().split(|&b| b == b'/').any(is_hidden)
        {
            continue;
        }
        let full = root.join(OsStr::from_bytes(rel.as_bytes()));
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {
                let mut report = ScanReport::default();
                let mut errors = ErrorList::new(100);
                let join = |sub: &[u8]| {
                    let mut joined = rel.as_bytes().to_vec();
                    if !sub.is_empty() {
                        joined.push(b'/');
                        joined.extend_from_slice(sub);
                    }
                    joined
                };
                for mut w in walk(&full, &mut report, &mut errors, &NoProgress) {
                    w.rel = join(&w.rel).into();
                    work.push(w);
                }
                unseen.extend(
                    report
                        .unseen
                        .iter()
                        .map(|u| OriginPath::new(join(u.as_bytes()))),
                );
            }
            Ok(_) => {
                if let Some(class) = catalog::classify_name(rel.file_name()) {
                    work.push(Work {
                        rel: rel.as_bytes().into(),
                        class,
                    });
                }
            }
            Err(e) if could_not_look(&e) => unseen.push(rel.clone()),
            Err(_) => {}
        }
    }
    let (files, stat_unseen) = stat_all(root, work);
    unseen.extend(stat_unseen);
    Listing { files, unseen }
}

/// Whether an error says the listing could not look (out of descriptors or
/// memory, a disk or network error, no permission), rather than that the
/// path is gone or is not a file of the origin (`ENOENT`, `ENOTDIR`, a link
/// out of the root refused with `EXDEV` or `ELOOP`).
fn could_not_look(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::EIO
                | libc::EAGAIN
                | libc::EINTR
                | libc::EACCES
                | libc::EPERM
                | libc::ETIMEDOUT
                | libc::ESTALE
                | libc::ENOTCONN
        )
    )
}

/// `stat`s each file: the listed ones, and those that could not be looked
/// at for another reason than being gone. Each walked path is dropped as
/// it is listed: a catch-up sync of 200,000 files otherwise held both
/// copies of every path at once (some 10 MB).
fn stat_all(root: &Path, work: Vec<Work>) -> (Vec<Listed>, Vec<OriginPath>) {
    let mut unseen = Vec::new();
    let mut out: Vec<Listed> = work
        .into_iter()
        .filter_map(|w| match beneath::stat(root, &w.rel) {
            Ok(meta) => meta.is_file().then(|| Listed {
                path: OriginPath::new(w.rel),
                version: file_version(&meta),
            }),
            Err(e) if could_not_look(&e) => {
                unseen.push(OriginPath::new(w.rel));
                None
            }
            // Gone, or no longer a file of the origin (a link swapped in
            // that leads out of it: refused beneath the root).
            Err(_) => None,
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|a, b| a.path == b.path);
    (out, unseen)
}

/// Reads the named files of a local origin (tags for audio), in parallel,
/// as a scan would. Files that vanished are left out.
pub fn read_files(
    origin: OriginId,
    root: &Path,
    files: &[Listed],
    threads: usize,
) -> Vec<CatalogEntry> {
    let work: Vec<Work> = files
        .iter()
        .filter_map(|l| {
            catalog::classify_name(l.path.file_name()).map(|class| Work {
                rel: l.path.as_bytes().into(),
                class,
            })
        })
        .collect();
    read_all(origin, root, &work, threads, None, &NoProgress)
        .into_iter()
        .filter_map(|o| o.entry)
        .collect()
}

#[cfg(test)]
mod unseen_tests {
    use super::*;
    use musicfs_core::sync::SyncPlan;

    fn p(s: &str) -> OriginPath {
        OriginPath::new(s.as_bytes().to_vec())
    }

    #[test]
    fn removals_under_what_the_listing_could_not_see_are_kept() {
        let listing = Listing {
            files: Vec::new(),
            unseen: vec![p("a"), p("c/file.flac")],
        };
        let mut plan = SyncPlan {
            removed: vec![
                p("a/x.flac"),
                p("ab/y.flac"),
                p("b.flac"),
                p("c/file.flac"),
                p("a"),
            ],
            ..SyncPlan::default()
        };
        listing.keep_unseen(&mut plan);
        assert_eq!(plan.removed, vec![p("ab/y.flac"), p("b.flac")]);
        // The root itself unseen: nothing is removed.
        let all = Listing {
            files: Vec::new(),
            unseen: vec![p("")],
        };
        let mut plan = SyncPlan {
            removed: vec![p("x.flac")],
            ..SyncPlan::default()
        };
        all.keep_unseen(&mut plan);
        assert!(plan.removed.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_files_are_summed_up_by_extension() {
        let mut report = ScanReport::default();
        assert_eq!(report.skipped_summary(), "nothing");
        for name in [
            &b"a.nfo"[..],
            b"b.NFO",
            b"c.nfo",
            b"x.log",
            b"y.log",
            b"README",
        ] {
            report.skip(name);
        }
        report.skipped_other += 1; // a FIFO
        assert_eq!(
            report.skipped_summary(),
            "3 .nfo, 2 .log, 1 (none), 1 not regular files"
        );
        for i in 0..20 {
            report.skip(format!("f.e{i}").as_bytes());
        }
        assert!(
            report
                .skipped_summary()
                .ends_with(", 11 other, 1 not regular files")
        );
    }

    #[test]
    fn big_playlists_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.m3u");
        std::fs::write(&path, vec![b'#'; 2 << 20]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let why = read_playlist(&file, 2 << 20).unwrap_err().to_string();
        assert!(why.contains("over the 1024 KiB playlist limit"), "{why}");
        // Grown since the stat: still refused.
        let file = std::fs::File::open(&path).unwrap();
        assert!(read_playlist(&file, 10).is_err());
        std::fs::write(&path, b"a.flac\n").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(read_playlist(&file, 7).unwrap(), b"a.flac\n");
    }

    #[test]
    fn error_list_caps_and_counts() {
        let mut list = ErrorList::new(2);
        for i in 0..5 {
            list.push(format!("e{i}"));
        }
        let (out, total) = list.finish();
        assert_eq!(out, vec!["e0", "e1", "... and 3 more errors"]);
        assert_eq!(total, 5);
    }
}
