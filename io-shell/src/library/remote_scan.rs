//! Scanning a remote origin into catalog entries, through ranged reads.
//!
//! The listing ([`RemoteOrigin::list`]) gives every file with its version
//! (S3: size, last-modified and ETag; SFTP: size and mtime), page by page.
//! Cover art needs nothing more. Audio files are read with lofty through a
//! [`RangedReader`]: the first block (and, for MP3, AAC, WavPack, APE and
//! Musepack, whose tags may sit at the end, the last few KiB) is fetched up
//! front, and lofty pulls in whatever else it needs block by block, so a
//! file's tags cost one or two requests and tens of KiB instead of the
//! whole file. [`ScanReport::bytes_fetched`] and
//! [`ScanReport::fetch_requests`] say how much that was.
//!
//! Up to [`RemoteScanOptions::concurrency`] files are read at once (each
//! one's parsing on a blocking thread), and tag reading starts while the
//! listing is still paging through a big bucket. The origin's own
//! [`RemoteLimits`](crate::origin::RemoteLimits) bound every request and the
//! request rate.
//!
//! Every read carries the listed version, so tags always describe exactly
//! the version put in the catalog; a file that changes mid-scan is stat'ed
//! again and re-read. A file that still cannot be read after a few
//! attempts fails the scan (beyond [`RemoteScanOptions::max_failed_files`]):
//! an origin that cannot be scanned is unhealthy, and a catalog missing
//! tracks that are really there would make them vanish from the tree.

use super::keep::{self, KeptBytes, Recording, TagKeeper, Touched};
use super::scan::{self, ErrorList, ScanProgress, ScanReport};
use super::tags;
use crate::origin::path::is_hidden;
use crate::origin::ranged::{RangedOptions, RangedReader, ReadFailure};
use crate::origin::{ListPage, Origin, OriginError, RemoteFile, RemoteOrigin};
use musicfs_core::catalog::NameClass;
use musicfs_core::{CatalogEntry, FileKind, OriginId, SourceFile, catalog};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// How a remote scan runs.
#[derive(Clone, Debug)]
pub struct RemoteScanOptions {
    /// Files whose tags are read at once. Each waits mostly on the network,
    /// so this is well above the core count; the origin's
    /// `max_in_flight` still caps its requests.
    pub concurrency: usize,
    /// How each file is fetched (block size, tail size, budget).
    pub ranged: RangedOptions,
    /// Attempts per file when reads fail or the file changes under the scan.
    pub file_attempts: u32,
    /// Files that may still fail after their attempts (listed as
    /// unreadable) before the whole scan fails.
    pub max_failed_files: usize,
    /// How many problem messages [`ScanReport::errors`] keeps.
    pub max_errors: usize,
    /// Where the bytes the tag parser read are kept (the first scan, before
    /// any engine runs), if anywhere.
    pub keep: Option<Arc<TagKeeper>>,
}

impl Default for RemoteScanOptions {
    fn default() -> RemoteScanOptions {
        RemoteScanOptions {
            concurrency: 16,
            ranged: RangedOptions::default(),
            file_attempts: 3,
            max_failed_files: 0,
            max_errors: 1000,
            keep: None,
        }
    }
}

/// Scans a remote origin: lists it, reads every audio file's tags through
/// ranged reads, and returns the sorted catalog entries with counts and
/// the bytes fetched.
///
/// Fails when the origin cannot be listed, or when more than
/// `max_failed_files` files cannot be read: the caller must then keep what
/// it knew of this origin rather than take it for empty.
pub async fn scan_remote(
    origin_id: OriginId,
    origin: Arc<dyn RemoteOrigin>,
    opts: &RemoteScanOptions,
    progress: &dyn ScanProgress,
) -> Result<ScanReport, OriginError> {
    let result = scan_inner(origin_id, origin, None, opts, progress).await;
    progress.finish();
    result
}

/// Reads the tags of `files` only (new or changed since the last sync),
/// as [`scan_remote`] reads every file: for a delta sync, after
/// [`list_remote`] and a comparison of versions with the catalog. The
/// report's entries are those of `files` (covers included), sorted.
pub async fn scan_remote_files(
    origin_id: OriginId,
    origin: Arc<dyn RemoteOrigin>,
    files: Vec<RemoteFile>,
    opts: &RemoteScanOptions,
    progress: &dyn ScanProgress,
) -> Result<ScanReport, OriginError> {
    let result = scan_inner(origin_id, origin, Some(files), opts, progress).await;
    progress.finish();
    result
}

/// Lists a remote origin for a delta sync: every file a scan would read
/// (audio and cover art, hidden paths left out) with its version, and no
/// tags read; plus the listing's problem messages. Fails as
/// [`RemoteOrigin::list`] does: never an empty list for an unreachable
/// origin.
pub async fn list_remote(
    origin: &dyn RemoteOrigin,
) -> Result<(Vec<RemoteFile>, Vec<String>), OriginError> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    origin
        .list(&mut |page: ListPage| {
            errors.extend(page.errors);
            files.extend(page.files.into_iter().filter(|f| {
                let bytes = f.path.as_bytes();
                let name = bytes.rsplit(|&b| b == b'/').next().unwrap_or_default();
                !bytes.split(|&b| b == b'/').any(is_hidden)
                    && catalog::classify_name(name).is_some()
            }));
        })
        .await?;
    files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok((files, errors))
}

/// [`scan_remote`] for synchronous callers: runs it on `rt` and waits.
///
/// Must not be called from async code (a runtime worker thread): use it
/// from the main thread or a `spawn_blocking` task.
pub fn scan_remote_blocking(
    rt: &Handle,
    origin_id: OriginId,
    origin: Arc<dyn RemoteOrigin>,
    opts: &RemoteScanOptions,
    progress: &dyn ScanProgress,
) -> Result<ScanReport, OriginError> {
    rt.block_on(scan_remote(origin_id, origin, opts, progress))
}

/// What reading one audio file came to.
struct Outcome {
    entry: Option<CatalogEntry>,
    error: Option<String>,
    /// Could not be read after every attempt (counts towards
    /// `max_failed_files`).
    failed: bool,
    bytes: u64,
    requests: u64,
}

/// Aborts the listing task if the scan is dropped or fails.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn scan_inner(
    origin_id: OriginId,
    origin: Arc<dyn RemoteOrigin>,
    only: Option<Vec<RemoteFile>>,
    opts: &RemoteScanOptions,
    progress: &dyn ScanProgress,
) -> Result<ScanReport, OriginError> {
    let started = Instant::now();
    let description = origin.describe();
    let (tx, mut pages) = mpsc::unbounded_channel::<ListPage>();
    let lister = {
        let origin = Arc::clone(&origin);
        tokio::spawn(async move {
            match only {
                // Given files: one page, no listing.
                Some(files) => {
                    let _ = tx.send(ListPage {
                        files,
                        errors: Vec::new(),
                    });
                    Ok(())
                }
                None => {
                    let mut send = move |page: ListPage| {
                        let _ = tx.send(page);
                    };
                    origin.list(&mut send).await
                }
            }
        })
    };
    let _abort_lister = AbortOnDrop(lister.abort_handle());

    let opts = Arc::new(opts.clone());
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut report = ScanReport::default();
    let mut errors = ErrorList::new(opts.max_errors);
    let mut entries = Vec::new();
    let mut failed = 0usize;
    let mut listed = 0usize;

    let mut collect = |outcome: Outcome,
                       report: &mut ScanReport,
                       errors: &mut ErrorList,
                       entries: &mut Vec<CatalogEntry>|
     -> Result<(), OriginError> {
        report.bytes_fetched += outcome.bytes;
        report.fetch_requests += outcome.requests;
        if let Some(message) = outcome.error {
            errors.push(message);
        }
        if outcome.failed {
            failed += 1;
            if failed > opts.max_failed_files {
                return Err(OriginError::Unavailable(format!(
                    "{failed} files could not be read from {description}: {}",
                    errors.last().unwrap_or("no detail")
                )));
            }
        }
        if let Some(entry) = outcome.entry {
            report.count(&entry.kind);
            entries.push(entry);
        }
        progress.scanned(1);
        Ok(())
    };

    while let Some(page) = pages.recv().await {
        for message in page.errors {
            tracing::warn!(origin = %description, "scan: {message}");
            errors.push(message);
        }
        let mut audio = Vec::new();
        for file in page.files {
            listed += 1;
            let name = file
                .path
                .as_bytes()
                .rsplit(|&b| b == b'/')
                .next()
                .unwrap_or_default();
            if file.path.as_bytes().split(|&b| b == b'/').any(is_hidden) {
                continue;
            }
            let kind = match catalog::classify_name(name) {
                // Audio is read for its tags, playlists for their entries.
                Some(NameClass::Audio | NameClass::Playlist) => {
                    audio.push(file);
                    continue;
                }
                Some(NameClass::Cover) => FileKind::Cover,
                Some(NameClass::Lyrics) => FileKind::Lyrics,
                Some(NameClass::Image) => FileKind::Image,
                Some(NameClass::Cue) => FileKind::Cue,
                None => {
                    report.skip(name);
                    continue;
                }
            };
            report.count(&kind);
            entries.push(CatalogEntry {
                source: source(origin_id, &file),
                kind,
            });
        }
        progress.discovered(audio.len() as u64);
        for file in audio {
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .map_err(|_| OriginError::Unavailable("scan cancelled".into()))?;
            let origin = Arc::clone(&origin);
            let opts = Arc::clone(&opts);
            tasks.spawn(async move {
                let outcome =
                    if catalog::classify_name(file.path.file_name()) == Some(NameClass::Playlist) {
                        read_playlist(origin_id, origin, file, &opts).await
                    } else {
                        read_file(origin_id, origin, file, &opts).await
                    };
                drop(permit);
                outcome
            });
            while let Some(done) = tasks.try_join_next() {
                collect(joined(done), &mut report, &mut errors, &mut entries)?;
            }
        }
    }
    match lister.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => {
            return Err(OriginError::Unavailable(format!(
                "listing task failed: {e}"
            )));
        }
    }
    while let Some(done) = tasks.join_next().await {
        collect(joined(done), &mut report, &mut errors, &mut entries)?;
    }

    entries.sort_unstable_by(|a, b| a.source.path.cmp(&b.source.path));
    report.entries = entries;
    report.errors = errors.finish().0;
    report.elapsed = started.elapsed();
    let secs = report.elapsed.as_secs_f64();
    let read = report.tracks + report.unreadable;
    tracing::info!(
        "scanned {listed} files of {description} in {secs:.2} s ({rate:.0} files/s): {} tracks, {} covers, {} lyrics, images, cue sheets and playlists, {} unreadable; {} KiB fetched for tags ({:.1} KiB and {:.2} requests per audio file)",
        report.tracks,
        report.covers,
        report.sidecars,
        report.unreadable,
        report.bytes_fetched / 1024,
        report.bytes_fetched as f64 / 1024.0 / read.max(1) as f64,
        report.fetch_requests as f64 / read.max(1) as f64,
        rate = if secs > 0.0 {
            listed as f64 / secs
        } else {
            0.0
        },
    );
    if listed == 0 {
        tracing::warn!(origin = %description, "the origin lists no files: check the bucket, prefix or path");
    }
    Ok(report)
}

fn joined(done: Result<Outcome, tokio::task::JoinError>) -> Outcome {
    done.unwrap_or_else(|e| Outcome {
        entry: None,
        error: Some(format!("tag reading task failed: {e}")),
        failed: true,
        bytes: 0,
        requests: 0,
    })
}

fn source(origin: OriginId, file: &RemoteFile) -> SourceFile {
    SourceFile {
        origin,
        path: file.path.clone(),
        version: file.version.clone(),
    }
}

/// Whether tags or data lofty needs may sit at the end of the file: ID3v1,
/// APE and Lyrics3 footers on MP3 and ADTS, APE tags on WavPack, Monkey's
/// Audio and Musepack. Their tail is fetched up front with the head.
fn wants_tail(ext: &str) -> bool {
    matches!(ext, "mp3" | "aac" | "wv" | "ape" | "mpc")
}

/// Reads what a scan keeps of a remote file (see `library::keep`): the
/// reader still holds most of it from the tag parse.
fn read_kept(
    reader: &mut RangedReader,
    ext: &str,
    source: SourceFile,
    touched: &Touched,
) -> std::io::Result<KeptBytes> {
    let size = source.version.size;
    let region = keep::kept_region(size, keep::tail_bytes(ext), touched);
    let len = |n: u64| usize::try_from(n).map_err(std::io::Error::other);
    let mut head = vec![0; len(region.head)?];
    reader.seek(SeekFrom::Start(0))?;
    reader.read_exact(&mut head)?;
    let mut tail = vec![0; len(size - region.tail)?];
    reader.seek(SeekFrom::Start(region.tail))?;
    reader.read_exact(&mut tail)?;
    Ok(KeptBytes {
        source,
        head,
        tail_at: region.tail,
        tail,
    })
}

/// The file vanished from the origin while it was being read.
struct Vanished;

/// Gets a file of the scan ready for another attempt after `e`: one that
/// changed since the listing is stat'ed again (the next attempt reads the
/// new version); after an origin failure, a pause that doubles each time
/// (none after the last attempt). A file that is gone ends the attempts.
async fn before_retry(
    origin: &dyn RemoteOrigin,
    file: &mut RemoteFile,
    e: OriginError,
    last_attempt: bool,
    pause: &mut Duration,
    last_failure: &mut String,
) -> Result<(), Vanished> {
    match e {
        OriginError::NotFound => return Err(Vanished),
        OriginError::Changed => {
            *last_failure = "changed during the scan".into();
            match origin.stat(&file.path).await {
                Ok(version) => file.version = version,
                Err(OriginError::NotFound) => return Err(Vanished),
                Err(e) => *last_failure = e.to_string(),
            }
        }
        OriginError::Unavailable(why) => {
            *last_failure = why;
            if !last_attempt {
                tokio::time::sleep(*pause).await;
                *pause *= 2;
            }
        }
    }
    Ok(())
}

/// Reads one playlist whole (it is small: at most
/// [`catalog::PLAYLIST_MAX_BYTES`]; a bigger one is logged and listed
/// unreadable), retrying as [`read_file`] does.
async fn read_playlist(
    origin_id: OriginId,
    origin: Arc<dyn RemoteOrigin>,
    mut file: RemoteFile,
    opts: &RemoteScanOptions,
) -> Outcome {
    let shown = file.path.to_string();
    let mut outcome = Outcome {
        entry: None,
        error: None,
        failed: false,
        bytes: 0,
        requests: 0,
    };
    let max = catalog::PLAYLIST_MAX_BYTES;
    let mut last_failure = String::new();
    let mut pause = Duration::from_millis(250);
    let attempts = opts.file_attempts.max(1);
    for attempt in 1..=attempts {
        let entry = |file: &RemoteFile, kind| CatalogEntry {
            source: source(origin_id, file),
            kind,
        };
        if file.version.size > max {
            let reason = scan::PlaylistError::TooBig(file.version.size).to_string();
            tracing::warn!(
                "playlist {shown} at {} left out: {reason}",
                origin.describe()
            );
            outcome.entry = Some(entry(&file, FileKind::Unreadable(reason)));
            return outcome;
        }
        let len = usize::try_from(file.version.size).unwrap_or(0);
        outcome.requests += 1;
        let read = if len == 0 {
            Ok(Vec::new())
        } else {
            origin.read_at(&file.path, &file.version, 0, len).await
        };
        match read {
            Ok(bytes) => {
                outcome.bytes += bytes.len() as u64;
                let bytes: Box<[u8]> = bytes.into_iter().take(len).collect();
                outcome.entry = Some(entry(&file, FileKind::Playlist(bytes)));
                return outcome;
            }
            Err(e) => {
                let last = attempt == attempts;
                let next = before_retry(
                    origin.as_ref(),
                    &mut file,
                    e,
                    last,
                    &mut pause,
                    &mut last_failure,
                );
                if next.await.is_err() {
                    outcome.error = Some(format!("{shown}: vanished during the scan"));
                    return outcome;
                }
            }
        }
    }
    tracing::warn!(
        "scan: playlist {shown} at {}: could not be read: {last_failure}",
        origin.describe()
    );
    // Not a failed file of the scan: no track is missing without it, and
    // the next sync reads it again.
    outcome.error = Some(format!("{shown}: could not be read: {last_failure}"));
    outcome
}

/// Reads one audio file's tags, retrying when the file changes under the
/// scan or the origin fails.
async fn read_file(
    origin_id: OriginId,
    origin: Arc<dyn RemoteOrigin>,
    mut file: RemoteFile,
    opts: &RemoteScanOptions,
) -> Outcome {
    let shown = file.path.to_string();
    let ext = file.path.extension_lower();
    let mut outcome = Outcome {
        entry: None,
        error: None,
        failed: false,
        bytes: 0,
        requests: 0,
    };
    let attempts = opts.file_attempts.max(1);
    let mut pause = Duration::from_millis(250);
    let mut last_failure = String::new();
    for attempt in 1..=attempts {
        if file.version.size == 0 {
            outcome.entry = Some(CatalogEntry {
                source: source(origin_id, &file),
                kind: FileKind::Unreadable("empty file".into()),
            });
            return outcome;
        }
        let mut reader = RangedReader::new(
            Arc::clone(&origin) as Arc<dyn Origin>,
            file.path.clone(),
            file.version.clone(),
            Handle::current(),
            opts.ranged.clone(),
        );
        reader.prefetch(wants_tail(&ext)).await;
        let ext_owned = ext.clone();
        let keep = opts.keep.clone().filter(|k| k.wants_more());
        let kept_source = source(origin_id, &file);
        let parsed = tokio::task::spawn_blocking(move || {
            if reader.failure().is_some() {
                return (None, reader);
            }
            let mut recording = Recording::new(&mut reader);
            let result = tags::read_tags_from(&mut recording, &ext_owned);
            let touched = std::mem::take(&mut recording.touched);
            if let Some(keeper) = keep
                && result.is_ok()
                && reader.failure().is_none()
            {
                match read_kept(&mut reader, &ext_owned, kept_source, &touched) {
                    Ok(kept) => keeper.keep(kept),
                    Err(e) => {
                        // Not kept; the tags stand.
                        reader.take_failure();
                        tracing::debug!(error = %e, "tag bytes not kept");
                    }
                }
            }
            (Some(result), reader)
        })
        .await;
        let (result, mut reader) = match parsed {
            Ok(pair) => pair,
            Err(e) => {
                last_failure = format!("tag reading task failed: {e}");
                break;
            }
        };
        let stats = reader.stats();
        outcome.bytes += stats.bytes;
        outcome.requests += stats.requests;
        match reader.take_failure() {
            None => {
                let kind = match result {
                    Some(Ok(tags)) => FileKind::Track(tags),
                    Some(Err(e)) => {
                        tracing::warn!(
                            "unreadable audio file {shown} at {}: {e}",
                            origin.describe()
                        );
                        FileKind::Unreadable(e.to_string())
                    }
                    None => FileKind::Unreadable("not read".into()),
                };
                outcome.entry = Some(CatalogEntry {
                    source: source(origin_id, &file),
                    kind,
                });
                return outcome;
            }
            Some(ReadFailure::OverBudget(_)) => {
                let reason = ReadFailure::OverBudget(opts.ranged.max_bytes).to_string();
                tracing::warn!(
                    "unreadable audio file {shown} at {}: {reason}",
                    origin.describe()
                );
                outcome.entry = Some(CatalogEntry {
                    source: source(origin_id, &file),
                    kind: FileKind::Unreadable(reason),
                });
                return outcome;
            }
            Some(ReadFailure::Origin(e)) => {
                let last = attempt == attempts;
                let next = before_retry(
                    origin.as_ref(),
                    &mut file,
                    e,
                    last,
                    &mut pause,
                    &mut last_failure,
                );
                if next.await.is_err() {
                    outcome.error = Some(format!("{shown}: vanished during the scan"));
                    return outcome;
                }
            }
        }
    }
    tracing::warn!(
        "scan: {shown} at {}: could not be read: {last_failure}",
        origin.describe()
    );
    outcome.error = Some(format!("{shown}: could not be read: {last_failure}"));
    outcome.failed = true;
    outcome.entry = Some(CatalogEntry {
        source: source(origin_id, &file),
        kind: FileKind::Unreadable(format!("could not be read from the origin: {last_failure}")),
    });
    outcome
}
