//! The cache's database: catalog, manifests, chunk index and metadata, in
//! one sled database at `<cache_dir>/db/`.
//!
//! Trees and encodings (all integers big-endian, so keys sort numerically):
//!
//! | tree        | key                                   | value                                   |
//! |-------------|---------------------------------------|-----------------------------------------|
//! | `catalog`   | origin id (u16) ++ origin path bytes  | MessagePack of [`CatalogEntry`]         |
//! | `manifests` | origin id (u16) ++ origin path bytes  | MessagePack of [`Manifest`]             |
//! | `chunks`    | [`ChunkId::to_be_bytes`] (16 bytes)   | len (u32) ++ last access (u64): 12 bytes |
//! | `meta`      | UTF-8 name                            | bytes; `schema_version` is a u32        |
//!
//! Everything here can be rebuilt (the chunk index from the chunk files, the
//! catalog and manifests by rescanning the origins), so a database that does
//! not open cleanly is moved aside and replaced rather than repaired.

use super::StoreError;
use musicfs_core::engine::{Pin, SourceKey};
use musicfs_core::{CatalogEntry, ChunkId, Manifest, OriginId, OriginPath};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The version of the encodings above. Bump it whenever the encoding of a
/// stored record changes (including a field added to [`CatalogEntry`] or
/// [`Manifest`]): a database with another version is set aside at open and
/// rebuilt, which is cheaper and safer than migrating a cache.
pub const SCHEMA_VERSION: u32 = 1;

/// `meta` key holding [`SCHEMA_VERSION`] (4 bytes, big-endian). Written by
/// [`Db::open`]; do not set it yourself.
pub const META_SCHEMA_VERSION: &str = "schema_version";

/// `meta` key for the caller's fingerprint of the configured library (for
/// example the list of origins), so a changed configuration can be noticed
/// at start and the catalog rescanned. The store does not interpret it.
pub const META_LIBRARY_FINGERPRINT: &str = "library_fingerprint";

/// sled keeps this much of the database in memory. Small, because the whole
/// daemon aims at under 100 MB of RSS; the hot data lives in the core's own
/// structures, the database is mostly written.
const CACHE_CAPACITY_BYTES: u64 = 8 * 1024 * 1024;

/// How often sled flushes in the background. Anything newer than this may be
/// lost in a crash, which only costs re-fetching a few chunks.
const FLUSH_EVERY_MS: u64 = 500;

/// How long an open waits for sled's lock on the database. sled releases it
/// from its own background threads a moment after the last handle of a
/// database is dropped, so a reopen right after a drop in the same process
/// can find it still held; a lock held by another process is reported after
/// this wait.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Records per write when a whole origin's catalog is replaced.
pub const CATALOG_WRITE_BATCH: usize = 512;

/// Length of a `chunks` value.
const CHUNK_VALUE_LEN: usize = 12;

/// The cache's sled database.
///
/// `Send + Sync`: share it behind an `Arc`. sled takes an exclusive lock on
/// the database, so a second daemon on the same cache directory fails to
/// open it (with an error that is neither a disk failure nor corruption).
pub struct Db {
    /// The `db/` directory, for [`Db::close`].
    dir: PathBuf,
    db: sled::Db,
    catalog: sled::Tree,
    manifests: sled::Tree,
    chunks: sled::Tree,
    meta: sled::Tree,
    /// Pinned origin files (`musicfs pin`), keyed like `catalog`.
    pins: sled::Tree,
    /// Whole-catalog loads so far (one per sync that changes the tree).
    catalog_loads: std::sync::atomic::AtomicU64,
    /// Records written (inserted, replaced or removed) since the open: what
    /// the next open would replay from sled's log (see
    /// [`Db::close_compacted`]).
    written: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the tree sizes: sled counts them by walking every record.
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

/// What [`Db::open`] found.
#[derive(Debug)]
pub struct OpenOutcome {
    /// The open database.
    pub db: Db,
    /// `Some(what happened)` when the old database could not be used and was
    /// moved aside: the new one is empty, so the caller must rebuild the
    /// chunk index from [`super::ChunkStore::scan`] and rescan the origins.
    pub repaired: Option<String>,
}

/// Why a database could not be used as it is.
enum OpenProblem {
    /// Corrupt or of another schema: move it aside and start afresh.
    Unusable(String),
    /// The disk, the lock, the descriptors: moving anything would not help.
    Fatal(StoreError),
}

impl Db {
    /// Opens the database under `cache_dir`, creating it if needed.
    ///
    /// If sled reports corruption (or panics, or refuses the files as of an
    /// unsupported format), or the database has another [`SCHEMA_VERSION`],
    /// the whole `db/` directory is renamed to `db.corrupt-<unix-time>/`
    /// (kept for a post-mortem, never read again), a warning is logged, and
    /// a fresh empty database is created; `repaired` then says what
    /// happened. A cache must come back up on its own after a crash or a
    /// bad disk block, and everything in it can be rebuilt.
    ///
    /// Errors that moving the directory would not fix are returned as they
    /// are: a failing or full disk, descriptor exhaustion, or sled's lock
    /// held by another process.
    ///
    /// The fail point `db-open-corrupt` (feature `failpoints`) forces the
    /// repair path on a healthy database.
    pub fn open(cache_dir: &Path) -> Result<OpenOutcome, StoreError> {
        fs::create_dir_all(cache_dir)
            .map_err(|e| StoreError::io("create directory", cache_dir, e))?;
        let dir = cache_dir.join("db");

        let problem = if let Some(msg) = forced_corruption() {
            msg
        } else {
            match Db::open_and_check(&dir) {
                Ok(db) => return Ok(OpenOutcome { db, repaired: None }),
                Err(OpenProblem::Fatal(e)) => return Err(e),
                Err(OpenProblem::Unusable(msg)) => msg,
            }
        };

        let aside = move_aside(cache_dir, &dir)?;
        let what = match &aside {
            Some(aside) => format!(
                "cache database unusable ({problem}); moved it to {} and started an empty one",
                aside.display()
            ),
            None => format!("cache database unusable ({problem}); started an empty one"),
        };
        tracing::warn!("{what}");
        match Db::open_and_check(&dir) {
            Ok(db) => Ok(OpenOutcome {
                db,
                repaired: Some(what),
            }),
            Err(OpenProblem::Fatal(e)) => Err(e),
            Err(OpenProblem::Unusable(msg)) => Err(StoreError::db(
                "open fresh database",
                sled::Error::Unsupported(msg),
            )),
        }
    }

    /// Opens `dir` with sled and checks the schema version, initialising it
    /// on a new database.
    fn open_and_check(dir: &Path) -> Result<Db, OpenProblem> {
        // sled silently starts empty on a data file it cannot read at all, so
        // "new" must be decided before it gets to look.
        let existed = ["db", "conf"]
            .iter()
            .any(|f| fs::symlink_metadata(dir.join(f)).is_ok());
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .mode(sled::Mode::LowSpace);
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match catch_unwind(AssertUnwindSafe(|| config.open())) {
                Ok(Ok(db)) => break db,
                Ok(Err(sled::Error::Io(e)))
                    if super::is_lock_error(&e) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(Err(e)) => return Err(classify_open_error("open", e)),
                Err(panic) => return Err(OpenProblem::Unusable(panic_message(&panic))),
            }
        };
        let tree = |name: &'static str| {
            db.open_tree(name)
                .map_err(|e| classify_open_error("open tree", e))
        };
        let db = Db {
            dir: dir.to_path_buf(),
            catalog: tree("catalog")?,
            manifests: tree("manifests")?,
            chunks: tree("chunks")?,
            meta: tree("meta")?,
            pins: tree("pins")?,
            catalog_loads: std::sync::atomic::AtomicU64::new(0),
            written: std::sync::atomic::AtomicU64::new(0),
            db,
        };
        db.check_schema(existed)?;
        Ok(db)
    }

    /// Checks the stored schema version. A database without one is only
    /// accepted (and stamped) if it did not exist before this open: an
    /// existing one that comes back without it has lost its contents, and
    /// the caller must be told so it rebuilds the chunk index.
    fn check_schema(&self, existed: bool) -> Result<(), OpenProblem> {
        let stored = self
            .meta
            .get(META_SCHEMA_VERSION)
            .map_err(|e| classify_open_error("read schema version", e))?;
        match stored {
            Some(v) => match <[u8; 4]>::try_from(v.as_ref()) {
                Ok(b) if u32::from_be_bytes(b) == SCHEMA_VERSION => Ok(()),
                Ok(b) => Err(OpenProblem::Unusable(format!(
                    "schema version {}, expected {SCHEMA_VERSION}",
                    u32::from_be_bytes(b)
                ))),
                Err(_) => Err(OpenProblem::Unusable(format!(
                    "undecodable schema version ({} bytes)",
                    v.len()
                ))),
            },
            None => {
                let empty = self.catalog.is_empty()
                    && self.manifests.is_empty()
                    && self.chunks.is_empty()
                    && self.meta.is_empty();
                if !empty {
                    return Err(OpenProblem::Unusable(
                        "data without a schema version".to_owned(),
                    ));
                }
                if existed {
                    return Err(OpenProblem::Unusable(
                        "the existing database came back empty".to_owned(),
                    ));
                }
                self.meta
                    .insert(META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(|e| classify_open_error("write schema version", e))?;
                self.db
                    .flush()
                    .map_err(|e| classify_open_error("flush", e))?;
                Ok(())
            }
        }
    }

    /// Every catalog entry, in (origin, path) order.
    ///
    /// An entry that does not decode (or whose key disagrees with its
    /// contents) is skipped, counted and logged, not fatal: its file is
    /// simply found again by the next scan.
    pub fn load_catalog(&self) -> Result<Vec<CatalogEntry>, StoreError> {
        self.load_catalog_counted().map(|(entries, _)| entries)
    }

    /// Like [`Db::load_catalog`], also returning how many records were
    /// damaged: a caller that sees any rescans before trusting the catalog
    /// (a damaged record is a track missing from the tree).
    pub fn load_catalog_counted(&self) -> Result<(Vec<CatalogEntry>, usize), StoreError> {
        self.load_catalog_digested()
            .map(|(entries, skipped, _)| (entries, skipped))
    }

    /// Like [`Db::load_catalog_counted`], also returning a hash of every
    /// record's saved bytes, in order: two loads with the same digest
    /// gave the same catalog (what a saved tree is keyed by).
    pub fn load_catalog_digested(&self) -> Result<(Vec<CatalogEntry>, usize, u128), StoreError> {
        self.catalog_loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The records are read (and hashed, in order) on this thread and
        // decoded on another, a batch at a time: on 200,000 tracks, reading
        // sled's pages and decoding each took about half of a catalog's
        // load, which is on the path of every mount.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Records>(4);
        let (read, (out, skipped)) = std::thread::scope(|s| {
            let decoder = std::thread::Builder::new()
                .name("catalog-decode".into())
                .spawn_scoped(s, move || {
                    let mut decoded = (Vec::new(), 0);
                    for batch in rx {
                        decode_records(batch, &mut decoded);
                    }
                    decoded
                });
            let mut inline = (Vec::new(), 0);
            let read = self.read_catalog_records(|batch| match &decoder {
                // The decoder stops only if it panicked: its join says so.
                Ok(_) => {
                    let _ = tx.send(batch);
                }
                // No thread to spare: decode here.
                Err(_) => decode_records(batch, &mut inline),
            });
            drop(tx);
            let decoded = match decoder {
                Ok(decoder) => decoder
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(_) => inline,
            };
            (read, decoded)
        });
        let digest = read?;
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "skipped catalog entries that could not be decoded; they will be rescanned"
            );
        }
        Ok((out, skipped, digest))
    }

    /// Hands every catalog record to `batch`, in key order and a batch at
    /// a time, and returns the digest of them all.
    fn read_catalog_records(&self, mut batch: impl FnMut(Records)) -> Result<u128, StoreError> {
        const BATCH: usize = 1024;
        let mut digest = xxhash_rust::xxh3::Xxh3::new();
        let mut records = Vec::with_capacity(BATCH);
        for item in self.catalog.iter() {
            let (k, v) = item.map_err(|e| StoreError::db("read catalog", e))?;
            digest_record(&mut digest, &k, &v);
            records.push((k, v));
            if records.len() == BATCH {
                batch(std::mem::replace(&mut records, Vec::with_capacity(BATCH)));
            }
        }
        if !records.is_empty() {
            batch(records);
        }
        Ok(digest.digest128())
    }

    /// The digest [`Db::load_catalog_digested`] gives now, read without
    /// holding the catalog: the key of the tree built from it.
    pub fn catalog_digest(&self) -> Result<u128, StoreError> {
        let mut digest = xxhash_rust::xxh3::Xxh3::new();
        for item in self.catalog.iter() {
            let (k, v) = item.map_err(|e| StoreError::db("read catalog", e))?;
            digest_record(&mut digest, &k, &v);
        }
        Ok(digest.digest128())
    }

    /// Every catalog entry, in (origin, path) order, decoded as the
    /// iterator is taken: for work that needs each entry once and may miss
    /// one (the search documents), without holding the whole catalog.
    /// Undecodable records are skipped as in [`Db::load_catalog`]; a read
    /// error ends the walk early and is logged. What must see every entry
    /// (a tree) uses [`Db::load_catalog`], which fails instead.
    pub fn catalog_entries(&self) -> impl Iterator<Item = CatalogEntry> + use<> {
        decoded(self.catalog.iter()).map_while(|entry| {
            entry
                .map_err(|e| tracing::warn!(error = %e, "stopped reading the catalog early"))
                .ok()
        })
    }

    /// The catalog entries of `origin`, in path order, decoded as the
    /// iterator is taken: what a sync of the whole origin plans against,
    /// without holding them all. Undecodable records are skipped as in
    /// [`Db::load_catalog`] (their files are new to the sync).
    pub fn catalog_of(
        &self,
        origin: OriginId,
    ) -> impl Iterator<Item = Result<CatalogEntry, StoreError>> + use<> {
        decoded(self.catalog.scan_prefix(origin.0.to_be_bytes()))
    }

    /// How many times the whole catalog was loaded since the database was
    /// opened.
    pub fn catalog_loads(&self) -> u64 {
        self.catalog_loads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The catalog entries of `origin` at or under each of `paths` (a file,
    /// or a folder and everything in it), in (origin, path) order, each
    /// once. What a sync of a few paths needs, without loading the whole
    /// catalog. Undecodable records are skipped, like in
    /// [`Db::load_catalog`].
    pub fn catalog_under(
        &self,
        origin: OriginId,
        paths: &BTreeSet<OriginPath>,
    ) -> Result<Vec<CatalogEntry>, StoreError> {
        let mut found = BTreeMap::new();
        let mut keep = |k: &[u8], v: &[u8]| {
            if let Some(entry) = decode_catalog_entry(k, v) {
                found.insert(k.to_vec(), entry);
            }
        };
        for path in paths {
            let key = entry_key(origin, path);
            if let Some(v) = self
                .catalog
                .get(&key)
                .map_err(|e| StoreError::db("read catalog", e))?
            {
                keep(&key, &v);
            }
            let mut folder = key;
            folder.push(b'/');
            for item in self.catalog.scan_prefix(&folder) {
                let (k, v) = item.map_err(|e| StoreError::db("read catalog", e))?;
                keep(&k, &v);
            }
        }
        Ok(found.into_values().collect())
    }

    /// The catalog entry of one file, if it has one that decodes.
    pub fn catalog_entry(
        &self,
        origin: OriginId,
        path: &OriginPath,
    ) -> Result<Option<CatalogEntry>, StoreError> {
        let key = entry_key(origin, path);
        let value = self
            .catalog
            .get(&key)
            .map_err(|e| StoreError::db("read catalog", e))?;
        Ok(value.and_then(|v| decode_catalog_entry(&key, &v)))
    }

    /// The catalog entries of those of `files` that have one (what a tree
    /// update asks for, [`musicfs_core::tree::update::Need`]).
    pub fn catalog_files(
        &self,
        files: &[(OriginId, OriginPath)],
    ) -> Result<Vec<CatalogEntry>, StoreError> {
        let mut out = Vec::with_capacity(files.len());
        for (origin, path) in files {
            out.extend(self.catalog_entry(*origin, path)?);
        }
        Ok(out)
    }

    /// Every catalog entry named as a playlist (`.m3u`, `.m3u8`), of every
    /// origin. Only those records are decoded.
    pub fn catalog_playlists(&self) -> Result<Vec<CatalogEntry>, StoreError> {
        use musicfs_core::catalog::{NameClass, classify_name};
        let mut out = Vec::new();
        for item in self.catalog.iter() {
            let (k, v) = item.map_err(|e| StoreError::db("read catalog", e))?;
            let name = k.rsplit(|&b| b == b'/').next().unwrap_or(&k);
            if classify_name(name) == Some(NameClass::Playlist) {
                out.extend(decode_catalog_entry(&k, &v));
            }
        }
        Ok(out)
    }

    /// The catalog entries of `origin` directly in `folder` (the origin's
    /// top when empty) and, with `children`, those one folder further
    /// down; nothing deeper.
    pub fn catalog_in_folder(
        &self,
        origin: OriginId,
        folder: &OriginPath,
        children: bool,
    ) -> Result<Vec<CatalogEntry>, StoreError> {
        let mut prefix = entry_key(origin, folder);
        if !folder.as_bytes().is_empty() {
            prefix.push(b'/');
        }
        let allowed = usize::from(children);
        let mut out = Vec::new();
        let mut from = prefix.clone();
        'seek: loop {
            for item in self.catalog.range(from.as_slice()..) {
                let (k, v) = item.map_err(|e| StoreError::db("read catalog", e))?;
                let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                    break 'seek;
                };
                // The folder too deep, if any: jump past all of it ('0'
                // is the byte after '/'), rather than read its records
                // (the top of an origin holds the whole library below).
                match rest
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'/')
                    .nth(allowed)
                {
                    Some((slash, _)) => {
                        from.clear();
                        from.extend_from_slice(&prefix);
                        from.extend_from_slice(&rest[..slash]);
                        from.push(b'/' + 1);
                        continue 'seek;
                    }
                    None => out.extend(decode_catalog_entry(&k, &v)),
                }
            }
            break;
        }
        Ok(out)
    }

    /// Stores catalog entries (inserting or replacing), all at once.
    pub fn put_catalog(&self, entries: &[CatalogEntry]) -> Result<(), StoreError> {
        self.note_written(entries.len());
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(
                entry_key(entry.source.origin, &entry.source.path),
                encode("catalog entry", entry)?,
            );
        }
        self.catalog
            .apply_batch(batch)
            .map_err(|e| StoreError::db("write catalog", e))
    }

    /// Makes `entries` the whole catalog of `origin`: entries of that origin
    /// not in the list are removed, the others inserted or replaced.
    ///
    /// Not atomic: the records are written in batches of
    /// [`CATALOG_WRITE_BATCH`], because sled holds a whole batch and the
    /// node splits it causes in memory at once (one batch of a
    /// 20,000-track first scan took 90 MB). A caller that needs all or
    /// nothing marks completion itself once this returns (the mount does:
    /// an origin counts as scanned only when its `origin/N` meta key is
    /// written, after this).
    ///
    /// Entries in `entries` that belong to another origin are stored too,
    /// under their own origin.
    pub fn replace_catalog_for_origin(
        &self,
        origin: OriginId,
        entries: &[CatalogEntry],
    ) -> Result<(), StoreError> {
        let keep: HashSet<Vec<u8>> = entries
            .iter()
            .map(|e| entry_key(e.source.origin, &e.source.path))
            .collect();
        let mut gone = sled::Batch::default();
        let mut removed = 0;
        for item in self.catalog.scan_prefix(origin.0.to_be_bytes()) {
            let (k, _) = item.map_err(|e| StoreError::db("read catalog", e))?;
            if !keep.contains(k.as_ref()) {
                gone.remove(k);
                removed += 1;
            }
        }
        drop(keep);
        self.note_written(removed);
        self.catalog
            .apply_batch(gone)
            .map_err(|e| StoreError::db("write catalog", e))?;
        for part in entries.chunks(CATALOG_WRITE_BATCH) {
            self.put_catalog(part)?;
        }
        Ok(())
    }

    /// Forgets one catalog entry (the file is gone from its origin). Absent
    /// is fine.
    pub fn remove_catalog(&self, origin: OriginId, path: &OriginPath) -> Result<(), StoreError> {
        self.note_written(1);
        self.catalog
            .remove(entry_key(origin, path))
            .map(drop)
            .map_err(|e| StoreError::db("remove catalog entry", e))
    }

    /// Every manifest with the file it maps, in (origin, path) order.
    /// Undecodable records are skipped, counted and logged, like in
    /// [`Db::load_catalog`]: the file is chunked again when read.
    pub fn load_manifests(&self) -> Result<Vec<(OriginId, OriginPath, Manifest)>, StoreError> {
        let mut out = Vec::new();
        let mut skipped = 0usize;
        for item in self.manifests.iter() {
            let (k, v) = item.map_err(|e| StoreError::db("read manifests", e))?;
            match (decode_key(&k), rmp_serde::from_slice::<Manifest>(&v)) {
                (Some((origin, path)), Ok(m)) => out.push((origin, path, m)),
                _ => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "skipped manifests that could not be decoded; those files will be chunked again"
            );
        }
        Ok(out)
    }

    /// Stores (or replaces) the manifest of one file.
    pub fn put_manifest(
        &self,
        origin: OriginId,
        path: &OriginPath,
        m: &Manifest,
    ) -> Result<(), StoreError> {
        self.note_written(1);
        self.manifests
            .insert(entry_key(origin, path), encode("manifest", m)?)
            .map(drop)
            .map_err(|e| StoreError::db("write manifest", e))
    }

    /// Forgets one file's manifest. Absent is fine.
    pub fn remove_manifest(&self, origin: OriginId, path: &OriginPath) -> Result<(), StoreError> {
        self.note_written(1);
        self.manifests
            .remove(entry_key(origin, path))
            .map(drop)
            .map_err(|e| StoreError::db("remove manifest", e))
    }

    /// Every pin, in (origin, path) order. Undecodable records are skipped
    /// and logged (the user pins again).
    pub fn load_pins(&self) -> Result<Vec<(SourceKey, Pin)>, StoreError> {
        let mut out = Vec::new();
        let mut skipped = 0usize;
        for item in self.pins.iter() {
            let (k, v) = item.map_err(|e| StoreError::db("read pins", e))?;
            match (decode_key(&k), rmp_serde::from_slice::<Pin>(&v)) {
                (Some(key), Ok(pin)) => out.push((key, pin)),
                _ => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(skipped, "skipped pins that could not be decoded");
        }
        Ok(out)
    }

    /// Writes pin changes (`None`: released) as one batch.
    pub fn put_pins(&self, changes: &[(SourceKey, Option<Pin>)]) -> Result<(), StoreError> {
        self.note_written(changes.len());
        let mut batch = sled::Batch::default();
        for ((origin, path), pin) in changes {
            let key = entry_key(*origin, path);
            match pin {
                Some(pin) => batch.insert(key, encode("pin", pin)?),
                None => batch.remove(key),
            }
        }
        self.pins
            .apply_batch(batch)
            .map_err(|e| StoreError::db("write pins", e))
    }

    /// The whole chunk index: `(id, length, last access)` in id order.
    /// Malformed records are skipped and logged (the chunk file, if any, is
    /// found again by [`super::ChunkStore::scan`]).
    pub fn load_chunk_index(&self) -> Result<Vec<(ChunkId, u32, u64)>, StoreError> {
        let mut out = Vec::new();
        let mut skipped = 0usize;
        for item in self.chunks.iter() {
            let (k, v) = item.map_err(|e| StoreError::db("read chunk index", e))?;
            match (ChunkId::from_be_slice(&k), decode_chunk_value(&v)) {
                (Some(id), Some((len, last))) => out.push((id, len, last)),
                _ => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(skipped, "skipped malformed chunk index records");
        }
        Ok(out)
    }

    /// Records chunks as present: `(id, length, last access)`, inserted or
    /// replaced, all at once.
    pub fn put_chunks(&self, chunks: &[(ChunkId, u32, u64)]) -> Result<(), StoreError> {
        self.note_written(chunks.len());
        let mut batch = sled::Batch::default();
        for &(id, len, last) in chunks {
            batch.insert(&id.to_be_bytes(), &encode_chunk_value(len, last));
        }
        self.chunks
            .apply_batch(batch)
            .map_err(|e| StoreError::db("write chunk index", e))
    }

    /// Forgets chunks (evicted or found corrupt), all at once. Absent ids are
    /// fine.
    pub fn remove_chunks(&self, ids: &[ChunkId]) -> Result<(), StoreError> {
        self.note_written(ids.len());
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(&id.to_be_bytes());
        }
        self.chunks
            .apply_batch(batch)
            .map_err(|e| StoreError::db("remove from chunk index", e))
    }

    /// Updates the last access of chunks that are in the index; ids that are
    /// not (evicted meanwhile) are ignored rather than brought back.
    ///
    /// Last access never moves backwards: the stored value becomes the larger
    /// of the old and the new, so touches applied out of order are harmless.
    /// Each id is updated atomically on its own (a compare-and-swap), so a
    /// concurrent [`Db::remove_chunks`] is never undone.
    pub fn touch_chunks(&self, touched: &[(ChunkId, u64)]) -> Result<(), StoreError> {
        self.note_written(touched.len());
        for &(id, at) in touched {
            self.chunks
                .fetch_and_update(id.to_be_bytes(), |old| {
                    let old = old?;
                    Some(match decode_chunk_value(old) {
                        Some((len, last)) => encode_chunk_value(len, last.max(at)).to_vec(),
                        None => old.to_vec(),
                    })
                })
                .map_err(|e| StoreError::db("touch chunk", e))?;
        }
        Ok(())
    }

    /// Reads a `meta` value (see [`META_LIBRARY_FINGERPRINT`]).
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.meta
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| StoreError::db("read meta", e))
    }

    /// Writes a `meta` value. [`META_SCHEMA_VERSION`] is the store's own.
    pub fn set_meta(&self, key: &str, v: &[u8]) -> Result<(), StoreError> {
        self.note_written(1);
        self.meta
            .insert(key, v)
            .map(drop)
            .map_err(|e| StoreError::db("write meta", e))
    }

    /// Makes everything written so far durable (sled otherwise flushes every
    /// 500 ms in the background). Call it before a clean shutdown and where
    /// the caller needs a write to survive a crash.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(drop)
            .map_err(|e| StoreError::db("flush", e))
    }

    /// Flushes and closes the database, and returns once sled's lock on it
    /// is released (at most [`LOCK_WAIT`]), so that the directory can be
    /// opened again at once. Dropping a `Db` closes it too, but sled lets go
    /// of its lock from background threads a moment later.
    pub fn close(self) -> Result<(), StoreError> {
        self.flush()?;
        let lock_file = self.dir.join("db");
        drop(self);
        let deadline = Instant::now() + LOCK_WAIT;
        while is_locked(&lock_file) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Records written (inserted, replaced or removed) since the open.
    pub fn records_written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn note_written(&self, records: usize) {
        self.written
            .fetch_add(records as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Closes the database ([`Db::close`]) and, if at least `min_records`
    /// records were written since the open, opens and closes it once more.
    /// Returns whether it did.
    ///
    /// Why: sled (0.34) writes the snapshot of its page table only when it
    /// opens a database, and an open replays every log record written since
    /// the last snapshot. After a first scan of 200,000 tracks the next
    /// mount's open took 0.7-0.9 s, from a cold page cache. Paid here, at a
    /// clean stop while the log is still in memory, it took 150 ms, and the
    /// next open 0.4 s.
    ///
    /// Between the close and the reopen another process may take the
    /// database: then nothing is done (the other process's own open writes
    /// the snapshot). Call it last, when nothing else uses the cache.
    pub fn close_compacted(self, min_records: u64) -> Result<bool, StoreError> {
        let dir = self.dir.clone();
        let written = self.records_written();
        self.close()?;
        if written < min_records {
            return Ok(false);
        }
        match Db::open_and_check(&dir) {
            Ok(db) => db.close().map(|()| true),
            Err(OpenProblem::Fatal(e)) if e.is_locked() => {
                tracing::debug!("the cache database was opened by another process meanwhile");
                Ok(false)
            }
            Err(OpenProblem::Fatal(e)) => Err(e),
            // The next mount's open finds the same and sets it aside.
            Err(OpenProblem::Unusable(what)) => {
                tracing::warn!(what = %what, "the cache database did not reopen at exit");
                Ok(false)
            }
        }
    }
}

/// Whether some open file description holds sled's exclusive `flock` on
/// `path` (this process's own count too: flock locks belong to descriptions,
/// not processes).
fn is_locked(path: &Path) -> bool {
    use rustix::fs::{FlockOperation, flock};
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            let _ = flock(&file, FlockOperation::Unlock);
            false
        }
        Err(_) => true,
    }
}

/// The key of a file in `catalog` and `manifests`.
fn entry_key(origin: OriginId, path: &OriginPath) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + path.as_bytes().len());
    key.extend_from_slice(&origin.0.to_be_bytes());
    key.extend_from_slice(path.as_bytes());
    key
}

/// Adds one catalog record to a catalog digest.
fn digest_record(digest: &mut xxhash_rust::xxh3::Xxh3, key: &[u8], value: &[u8]) {
    for part in [key, value] {
        digest.update(&(part.len() as u64).to_le_bytes());
        digest.update(part);
    }
}

/// The entries of catalog records as they are read, undecodable ones
/// skipped ([`decode_catalog_entry`]).
fn decoded(records: sled::Iter) -> impl Iterator<Item = Result<CatalogEntry, StoreError>> + use<> {
    records.filter_map(|item| match item {
        Ok((k, v)) => decode_catalog_entry(&k, &v).map(Ok),
        Err(e) => Some(Err(StoreError::db("read catalog", e))),
    })
}

/// Catalog records as read: keys and values.
type Records = Vec<(sled::IVec, sled::IVec)>;

/// Decodes `records` onto the entries in `into`, counting the ones that
/// do not decode ([`decode_catalog_entry`]).
fn decode_records(records: Records, into: &mut (Vec<CatalogEntry>, usize)) {
    for (k, v) in records {
        match decode_catalog_entry(&k, &v) {
            Some(entry) => into.0.push(entry),
            None => into.1 += 1,
        }
    }
}

/// A catalog record, if it decodes and its key agrees with its contents.
fn decode_catalog_entry(key: &[u8], value: &[u8]) -> Option<CatalogEntry> {
    let entry = rmp_serde::from_slice::<CatalogEntry>(value).ok()?;
    (*key == entry_key(entry.source.origin, &entry.source.path)[..]).then_some(entry)
}

fn decode_key(key: &[u8]) -> Option<(OriginId, OriginPath)> {
    let (origin, path) = key.split_first_chunk::<2>()?;
    Some((OriginId(u16::from_be_bytes(*origin)), OriginPath::new(path)))
}

fn encode_chunk_value(len: u32, last_access: u64) -> [u8; CHUNK_VALUE_LEN] {
    let mut v = [0u8; CHUNK_VALUE_LEN];
    v[..4].copy_from_slice(&len.to_be_bytes());
    v[4..].copy_from_slice(&last_access.to_be_bytes());
    v
}

fn decode_chunk_value(v: &[u8]) -> Option<(u32, u64)> {
    let v: &[u8; CHUNK_VALUE_LEN] = v.try_into().ok()?;
    let (len, last) = v.split_first_chunk::<4>()?;
    let last: [u8; 8] = last.try_into().ok()?;
    Some((u32::from_be_bytes(*len), u64::from_be_bytes(last)))
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec(value).map_err(|e| StoreError::Encode {
        what,
        detail: e.to_string(),
    })
}

/// Sorts sled's open errors into "set the database aside" and "give up".
fn classify_open_error(op: &'static str, e: sled::Error) -> OpenProblem {
    match e {
        sled::Error::Corruption { at, .. } => OpenProblem::Unusable(match at {
            Some(at) => format!("sled reports corruption at {at:?}"),
            None => "sled reports corruption".to_owned(),
        }),
        sled::Error::Unsupported(msg) => OpenProblem::Unusable(format!("sled: {msg}")),
        sled::Error::ReportableBug(msg) => OpenProblem::Unusable(format!("sled bug: {msg}")),
        sled::Error::Io(ioe)
            if matches!(
                ioe.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            OpenProblem::Unusable(format!("sled: {ioe}"))
        }
        other => OpenProblem::Fatal(StoreError::db(op, other)),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("sled panicked while opening: {msg}")
}

/// `Some(reason)` when the `db-open-corrupt` fail point is on.
fn forced_corruption() -> Option<String> {
    fail::fail_point!("db-open-corrupt", |_| Some(
        "forced by fail point db-open-corrupt".to_owned()
    ));
    None
}

/// Renames `<cache_dir>/db` to a fresh `db.corrupt-<unix-time>[-n]`.
/// Returns where it went, or `None` if there was nothing to move.
fn move_aside(cache_dir: &Path, dir: &Path) -> Result<Option<PathBuf>, StoreError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("stat database", dir, e)),
        Ok(_) => {}
    }
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for n in 0u32.. {
        let name = if n == 0 {
            format!("db.corrupt-{secs}")
        } else {
            format!("db.corrupt-{secs}-{n}")
        };
        let target = cache_dir.join(name);
        if fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        fs::rename(dir, &target).map_err(|e| StoreError::io("move database aside", dir, e))?;
        // Best effort: make the rename durable before a new db/ appears.
        if let Ok(d) = fs::File::open(cache_dir) {
            let _ = d.sync_all();
        }
        return Ok(Some(target));
    }
    unreachable!("u32 names ran out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let path = OriginPath::new(&b"Artist/\xffalbum/01.flac"[..]);
        let key = entry_key(OriginId(0x0102), &path);
        assert_eq!(&key[..2], &[1, 2]);
        assert_eq!(decode_key(&key), Some((OriginId(0x0102), path)));
        assert_eq!(decode_key(&[1]), None);
    }

    #[test]
    fn chunk_values_round_trip() {
        let v = encode_chunk_value(65_536, u64::MAX - 3);
        assert_eq!(decode_chunk_value(&v), Some((65_536, u64::MAX - 3)));
        assert_eq!(decode_chunk_value(&v[..11]), None);
    }

    #[test]
    fn touch_only_updates_existing_and_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap().db;
        let (a, b) = (ChunkId::of(b"a"), ChunkId::of(b"b"));
        db.put_chunks(&[(a, 1, 10)]).unwrap();
        db.touch_chunks(&[(a, 20), (b, 30)]).unwrap();
        assert_eq!(db.load_chunk_index().unwrap(), vec![(a, 1, 20)]);
        db.touch_chunks(&[(a, 5)]).unwrap();
        assert_eq!(db.load_chunk_index().unwrap(), vec![(a, 1, 20)]);
    }

    /// The log position of sled's newest snapshot of the database in `dir`.
    fn snapshot_lsn(dir: &Path) -> u64 {
        fs::read_dir(dir.join("db"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_prefix("snap.")?, 16).ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_close_after_many_writes_leaves_a_snapshot_that_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = |from: u64| -> Vec<(ChunkId, u32, u64)> {
            (from..from + 5_000)
                .map(|i| (ChunkId::of(&i.to_le_bytes()), 7, i))
                .collect()
        };

        // Few writes: a plain close, the snapshot stays where the open put it.
        let db = Db::open(dir.path()).unwrap().db;
        let at_open = snapshot_lsn(dir.path());
        db.put_chunks(&chunks(0)).unwrap();
        db.touch_chunks(&[(ChunkId::of(&0u64.to_le_bytes()), 9)])
            .unwrap();
        assert_eq!(db.records_written(), 5_001);
        assert!(!db.close_compacted(5_002).unwrap());
        assert_eq!(snapshot_lsn(dir.path()), at_open);

        // Enough writes: the snapshot moves past them before the call returns.
        let db = Db::open(dir.path()).unwrap().db;
        let reopened = snapshot_lsn(dir.path());
        assert!(
            reopened > at_open,
            "the open replayed the log and wrote a snapshot"
        );
        db.put_chunks(&chunks(5_000)).unwrap();
        assert!(db.close_compacted(5_000).unwrap());
        assert!(snapshot_lsn(dir.path()) > reopened);

        // Nothing lost, and the directory is free again.
        let db = Db::open(dir.path()).unwrap().db;
        let index = db.load_chunk_index().unwrap();
        assert_eq!(index.len(), 10_000);
        assert!(index.contains(&(ChunkId::of(&0u64.to_le_bytes()), 7, 9)));
        assert!(index.contains(&(ChunkId::of(&9_999u64.to_le_bytes()), 7, 9_999)));
    }

    #[test]
    fn a_catalog_read_whole_one_at_a_time_or_by_origin_is_the_same_and_has_one_digest() {
        use musicfs_core::tags::TrackTags;
        use musicfs_core::{FileKind, FileVersion, SourceFile};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap().db;
        let entry = |origin: u16, path: &str, title: &str| CatalogEntry {
            source: SourceFile {
                origin: OriginId(origin),
                path: OriginPath::new(path.as_bytes()),
                version: FileVersion {
                    size: 1000,
                    mtime_ns: 7,
                    token: Some("1:2:3".into()),
                },
            },
            kind: FileKind::Track(TrackTags {
                title: Some(title.into()),
                ..TrackTags::default()
            }),
        };
        // In the database's order: by origin (0x0100 after 0x00ff), then path.
        let entries = vec![
            entry(0x00ff, "z.flac", "Z"),
            entry(0x0100, "a/b.flac", "B"),
            entry(0x0100, "a/c.flac", "C"),
            entry(0x0100, "b.flac", "D"),
        ];
        db.put_catalog(&entries).unwrap();
        let (loaded, _, digest) = db.load_catalog_digested().unwrap();
        assert_eq!(loaded, entries);
        assert_eq!(db.catalog_digest().unwrap(), digest);
        // Read one at a time, and one origin's part, it is the same.
        assert_eq!(db.catalog_entries().collect::<Vec<_>>(), entries);
        assert_eq!(
            db.catalog_of(OriginId(0x0100))
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            entries[1..]
        );
        // Any other catalog has another digest: a retag...
        db.put_catalog(&[entry(0x0100, "a/c.flac", "C (live)")])
            .unwrap();
        let retagged = db.catalog_digest().unwrap();
        assert_ne!(retagged, digest);
        assert_eq!(db.load_catalog_digested().unwrap().2, retagged);
        // ...or a removal.
        db.remove_catalog(OriginId(0x00ff), &OriginPath::new(&b"z.flac"[..]))
            .unwrap();
        assert_ne!(db.catalog_digest().unwrap(), retagged);
        assert_eq!(db.catalog_of(OriginId(0x00ff)).count(), 0);
    }

    #[test]
    fn undecodable_records_are_skipped_not_fatal() {
        use musicfs_core::{FileKind, FileVersion, SourceFile};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap().db;
        let good = CatalogEntry {
            source: SourceFile {
                origin: OriginId(2),
                path: OriginPath::new(&b"a/b.flac"[..]),
                version: FileVersion::default(),
            },
            kind: FileKind::Cover,
        };
        db.put_catalog(std::slice::from_ref(&good)).unwrap();
        // Garbage, and a valid entry filed under another file's key.
        db.catalog
            .insert(b"\x00\x01garbage", &b"\xc1\xff"[..])
            .unwrap();
        db.catalog
            .insert(
                entry_key(OriginId(2), &OriginPath::new(&b"elsewhere"[..])),
                encode("catalog entry", &good).unwrap(),
            )
            .unwrap();
        assert_eq!(db.load_catalog().unwrap(), vec![good]);

        let m = Manifest::new(FileVersion::default());
        let p = OriginPath::new(&b"m"[..]);
        db.put_manifest(OriginId(0), &p, &m).unwrap();
        db.manifests.insert(b"\x00\x00n", &b"\x93"[..]).unwrap();
        db.manifests.insert(b"x", encode("m", &m).unwrap()).unwrap();
        assert_eq!(db.load_manifests().unwrap(), vec![(OriginId(0), p, m)]);

        db.put_chunks(&[(ChunkId(9), 1, 2)]).unwrap();
        db.chunks
            .insert(ChunkId(10).to_be_bytes(), &[1u8; 5][..])
            .unwrap();
        db.chunks.insert(b"short", &[0u8; 12][..]).unwrap();
        assert_eq!(db.load_chunk_index().unwrap(), vec![(ChunkId(9), 1, 2)]);
    }

    #[test]
    fn a_catalog_of_many_batches_loads_whole_in_order_and_counts_what_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap().db;
        // Some three decode batches, and damaged records in the first and
        // the last.
        let entries: Vec<CatalogEntry> = (0..2500)
            .map(|i| cover_at(1, &format!("f{i:05}/cover.jpg")))
            .collect();
        db.put_catalog(&entries).unwrap();
        for key in [&b"\x00\x01f00100/x"[..], &b"\x00\x01f02400/x"[..]] {
            db.catalog.insert(key, &b"\xc1"[..]).unwrap();
        }
        let (loaded, damaged, digest) = db.load_catalog_digested().unwrap();
        assert_eq!(damaged, 2);
        assert_eq!(loaded, entries);
        assert_eq!(digest, db.catalog_digest().unwrap());
    }

    /// A cover's catalog entry at `path` of `origin`.
    fn cover_at(origin: u16, path: &str) -> CatalogEntry {
        use musicfs_core::{FileKind, FileVersion, SourceFile};
        CatalogEntry {
            source: SourceFile {
                origin: OriginId(origin),
                path: OriginPath::new(path.as_bytes()),
                version: FileVersion::default(),
            },
            kind: FileKind::Cover,
        }
    }

    #[test]
    fn catalog_under_gives_a_file_or_a_folder_and_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap().db;
        let entry = cover_at;
        let all = [
            entry(0, "a/1.flac"),
            entry(0, "a/b/2.flac"),
            entry(0, "a b/3.flac"),
            entry(0, "ab/4.flac"),
            entry(0, "c.flac"),
            entry(1, "a/1.flac"),
        ];
        db.put_catalog(&all).unwrap();
        let under = |paths: &[&str]| {
            let set = paths
                .iter()
                .map(|p| OriginPath::new(p.as_bytes()))
                .collect();
            db.catalog_under(OriginId(0), &set).unwrap()
        };
        // A folder brings everything in it, not its namesakes ("a b", "ab")
        // nor another origin's; nested names give each entry once.
        assert_eq!(under(&["a"]), vec![all[0].clone(), all[1].clone()]);
        assert_eq!(under(&["a", "a/b", "a/1.flac"]), under(&["a"]));
        assert_eq!(under(&["c.flac", "gone"]), vec![all[4].clone()]);
        assert_eq!(under(&[]), vec![]);
    }

    #[test]
    fn the_playlists_are_the_entries_named_as_playlists_in_every_origin() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap().db;
        let all = [
            cover_at(0, "a/l.m3u"),
            cover_at(0, "a/l.m3u.txt"),
            cover_at(0, "b/c/M.M3U8"),
            cover_at(0, "m3u/x.flac"),
            cover_at(1, "top.m3u"),
        ];
        db.put_catalog(&all).unwrap();
        let found: Vec<CatalogEntry> = db.catalog_playlists().unwrap();
        assert_eq!(found, [all[0].clone(), all[2].clone(), all[4].clone()]);
    }

    #[test]
    fn a_folders_entries_are_those_in_it_or_one_folder_down_and_no_deeper() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap().db;
        let entry = cover_at;
        let all = [
            entry(0, "a.flac"),
            entry(0, "a/1.flac"),
            entry(0, "a/b/2.flac"),
            entry(0, "a/b/c/3.flac"),
            entry(0, "a/b0/4.flac"),
            entry(0, "a0/5.flac"),
            entry(0, "ab/6.flac"),
            entry(0, "top.flac"),
            entry(1, "x.flac"),
        ];
        db.put_catalog(&all).unwrap();
        let paths = |origin: u16, folder: &str, children: bool| -> Vec<String> {
            db.catalog_in_folder(
                OriginId(origin),
                &OriginPath::new(folder.as_bytes()),
                children,
            )
            .unwrap()
            .iter()
            .map(|e| String::from_utf8_lossy(e.source.path.as_bytes()).into_owned())
            .collect()
        };
        assert_eq!(paths(0, "", false), ["a.flac", "top.flac"]);
        assert_eq!(
            paths(0, "", true),
            ["a.flac", "a/1.flac", "a0/5.flac", "ab/6.flac", "top.flac"]
        );
        assert_eq!(paths(0, "a", false), ["a/1.flac"]);
        assert_eq!(
            paths(0, "a", true),
            ["a/1.flac", "a/b/2.flac", "a/b0/4.flac"]
        );
        assert_eq!(paths(0, "a/b", true), ["a/b/2.flac", "a/b/c/3.flac"]);
        assert_eq!(paths(1, "", false), ["x.flac"]);
        assert!(paths(0, "none", true).is_empty());
    }

    #[test]
    fn another_schema_version_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap().db;
            db.set_meta(META_SCHEMA_VERSION, &(SCHEMA_VERSION + 1).to_be_bytes())
                .unwrap();
            db.put_chunks(&[(ChunkId::of(b"a"), 1, 1)]).unwrap();
            db.flush().unwrap();
        }
        let out = Db::open(dir.path()).unwrap();
        let msg = out.repaired.expect("should have been repaired");
        assert!(msg.contains("schema version"), "{msg}");
        assert!(out.db.load_chunk_index().unwrap().is_empty());
        assert_eq!(
            out.db.get_meta(META_SCHEMA_VERSION).unwrap(),
            Some(SCHEMA_VERSION.to_be_bytes().to_vec())
        );
    }
}
