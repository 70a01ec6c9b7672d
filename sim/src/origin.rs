//! Simulated origins: a generated music library spread over several
//! origins, the changes made to it, and the server each origin runs on the
//! turmoil network.
//!
//! Every version any file ever had is kept in a [`History`], keyed by
//! (origin, path, version): that is what a read's bytes are checked against,
//! so a file may change under a reader and the check still knows which
//! bytes each version had.
//!
//! The wire protocol is deliberately tiny. A request is a length-prefixed
//! frame `offset u64, len u32, size u64, mtime i64, token, path` (little
//! endian; token and path as u16 length + bytes); the answer is
//! `status u8, len u32, data`. One request per connection.

use crate::net::{Request, Wakes};
use crate::swarm::{Flaky, Stream, stream};
use musicfs_core::catalog::{CatalogEntry, FileKind, SourceFile};
use musicfs_core::{FileVersion, OriginId, OriginPath, TrackTags};
use rand::Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The port every origin listens on.
pub const PORT: u16 = 7070;
/// Answer status: the bytes follow.
pub const STATUS_OK: u8 = 0;
/// Answer status: no such file.
pub const STATUS_NOT_FOUND: u8 = 1;
/// Answer status: the file is at another version.
pub const STATUS_CHANGED: u8 = 2;
/// Answer status: the origin failed.
pub const STATUS_ERROR: u8 = 3;

/// A version of one origin file, as a map key (`FileVersion` is not `Ord`).
pub type VersionKey = (OriginId, OriginPath, u64, i64, Option<Box<str>>);

/// The key of a source file at its version.
pub fn version_key(src: &SourceFile) -> VersionKey {
    (
        src.origin,
        src.path.clone(),
        src.version.size,
        src.version.mtime_ns,
        src.version.token.clone(),
    )
}

/// The bytes of every version every origin file ever had.
pub type History = BTreeMap<VersionKey, Rc<[u8]>>;

/// One file of an origin.
#[derive(Clone, Debug)]
pub struct OriginFile {
    /// Its bytes now.
    pub bytes: Rc<[u8]>,
    /// Its version now.
    pub version: FileVersion,
    /// What a scan finds it to be.
    pub kind: FileKind,
}

/// One origin: its files, and whether it misbehaves right now.
pub struct OriginState {
    /// Its id.
    pub id: OriginId,
    /// Its files.
    pub files: BTreeMap<OriginPath, OriginFile>,
    /// The faults of the flaky episode under way, if any.
    pub flaky: Option<Flaky>,
    rng: Stream,
}

/// What a flaky origin does to one request.
enum Misbehaviour {
    None,
    Slow(Duration),
    Hang,
    Drop,
    Cut,
    Short,
    Error,
}

impl OriginState {
    fn misbehaviour(&mut self) -> Misbehaviour {
        let Some(f) = self.flaky else {
            return Misbehaviour::None;
        };
        let roll = self.rng.random_range(0..100u32);
        let mut edge = 0u32;
        let mut hit = |pct: u8| {
            edge += u32::from(pct);
            roll < edge
        };
        if hit(f.hang_pct) {
            Misbehaviour::Hang
        } else if hit(f.drop_pct) {
            Misbehaviour::Drop
        } else if hit(f.cut_pct) {
            Misbehaviour::Cut
        } else if hit(f.short_pct) {
            Misbehaviour::Short
        } else if hit(f.error_pct) {
            Misbehaviour::Error
        } else if hit(f.slow_pct) {
            let ms = self.rng.random_range(1..=f.slow_max_ms.max(1));
            Misbehaviour::Slow(Duration::from_millis(ms))
        } else {
            Misbehaviour::None
        }
    }

    fn answer(&self, req: &Request) -> (u8, Vec<u8>) {
        if req.path.as_bytes().is_empty() {
            return (STATUS_OK, Vec::new()); // a health check
        }
        match self.files.get(&req.path) {
            None => (STATUS_NOT_FOUND, Vec::new()),
            Some(f) if f.version != req.version => (STATUS_CHANGED, Vec::new()),
            Some(f) => {
                let size = f.bytes.len() as u64;
                let start = req.offset.min(size) as usize;
                let end = req.offset.saturating_add(u64::from(req.len)).min(size) as usize;
                (STATUS_OK, f.bytes[start..end].to_vec())
            }
        }
    }

    /// What a scan of this origin finds now.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        self.files
            .iter()
            .map(|(path, f)| CatalogEntry {
                source: SourceFile {
                    origin: self.id,
                    path: path.clone(),
                    version: f.version.clone(),
                },
                kind: f.kind.clone(),
            })
            .collect()
    }
}

/// An origin host: accepts connections and answers one request on each.
pub async fn serve(state: Rc<RefCell<OriginState>>, wakes: Rc<Wakes>) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)).await?;
    loop {
        let (conn, _) = listener.accept().await?;
        tokio::task::spawn_local(answer(conn, Rc::clone(&state), Rc::clone(&wakes)));
    }
}

async fn answer(
    mut conn: turmoil::net::TcpStream,
    state: Rc<RefCell<OriginState>>,
    wakes: Rc<Wakes>,
) {
    let mut len = [0u8; 4];
    if conn.read_exact(&mut len).await.is_err() {
        return;
    }
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    if conn.read_exact(&mut body).await.is_err() {
        return;
    }
    let Some(req) = decode_request(state.borrow().id, &body) else {
        return;
    };
    let misbehaviour = state.borrow_mut().misbehaviour();
    match misbehaviour {
        Misbehaviour::Hang => std::future::pending::<()>().await,
        Misbehaviour::Drop => return,
        Misbehaviour::Slow(d) => wakes.sleep(d).await,
        _ => {}
    }
    // Read the file when answering, not when asked: a slow answer sees the
    // file as it is by then.
    let (mut status, mut data) = state.borrow().answer(&req);
    let mut announced = data.len();
    match misbehaviour {
        Misbehaviour::Error => {
            status = STATUS_ERROR;
            data.clear();
            announced = 0;
        }
        Misbehaviour::Short if data.len() > 1 => {
            data.truncate(data.len() / 2);
            announced = data.len();
        }
        Misbehaviour::Cut => data.truncate(data.len() / 2),
        _ => {}
    }
    let mut head = [0u8; 5];
    head[0] = status;
    head[1..].copy_from_slice(&(announced as u32).to_le_bytes());
    if conn.write_all(&head).await.is_err() {
        return;
    }
    let _ = conn.write_all(&data).await;
}

/// Encodes a request frame.
pub fn encode_request(req: &Request) -> Vec<u8> {
    let token = req.version.token.as_deref().unwrap_or("").as_bytes();
    let path = req.path.as_bytes();
    let mut body = Vec::with_capacity(40 + token.len() + path.len());
    body.extend_from_slice(&req.offset.to_le_bytes());
    body.extend_from_slice(&req.len.to_le_bytes());
    body.extend_from_slice(&req.version.size.to_le_bytes());
    body.extend_from_slice(&req.version.mtime_ns.to_le_bytes());
    body.extend_from_slice(&(token.len() as u16).to_le_bytes());
    body.extend_from_slice(token);
    body.extend_from_slice(&(path.len() as u16).to_le_bytes());
    body.extend_from_slice(path);
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

fn decode_request(origin: OriginId, b: &[u8]) -> Option<Request> {
    let mut at = 0usize;
    let mut take = |n: usize| {
        let s = b.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let offset = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let len = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let size = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let mtime_ns = i64::from_le_bytes(take(8)?.try_into().ok()?);
    let tlen = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let token = take(tlen)?;
    let token = (!token.is_empty()).then(|| String::from_utf8_lossy(token).into());
    let plen = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let path = OriginPath::new(take(plen)?.to_vec());
    Some(Request {
        origin,
        path,
        version: FileVersion {
            size,
            mtime_ns,
            token,
        },
        offset,
        len,
    })
}

// ----- the library -----------------------------------------------------------

const ARTISTS: &[&str] = &[
    "Alpha",
    "AC/DC",
    "...",
    "  Spaced Out  ",
    "Ünïcödé Band",
    "Dots.",
    "Ctl\u{7}Char",
    "Various Artists",
];
const ALBUMS: &[&str] = &["First", "Vol. 2", "", "Live/Unplugged", "Ω", ".hidden"];
const EXTS: &[&str] = &["flac", "mp3", "ogg", "opus"];

/// Generates the library and keeps changing it.
pub struct Library {
    /// The origins.
    pub origins: Vec<Rc<RefCell<OriginState>>>,
    /// Every version of every file.
    pub history: History,
    rng: Stream,
    next_inode: u64,
    next_title: u32,
    mtime_base: i64,
}

impl Library {
    /// A library for `seed` as the swarm describes it.
    pub fn generate(seed: u64, swarm: &crate::swarm::Swarm) -> Library {
        let origins = (0..swarm.origins)
            .map(|i| {
                Rc::new(RefCell::new(OriginState {
                    id: OriginId(i),
                    files: BTreeMap::new(),
                    flaky: None,
                    rng: stream(seed, &format!("origin{i}")),
                }))
            })
            .collect();
        let mut lib = Library {
            origins,
            history: History::new(),
            rng: stream(seed, "library"),
            next_inode: 1,
            next_title: 0,
            mtime_base: 1_700_000_000_000_000_000,
        };
        for _ in 0..swarm.tracks {
            let o = lib.pick_origin();
            let (path, file) = lib.new_track(swarm.size_max);
            if lib.origins.len() > 1 && lib.rng.random_range(0..100) < swarm.mirror_pct {
                let m =
                    (o + 1 + lib.rng.random_range(0..lib.origins.len() - 1)) % lib.origins.len();
                let mirror_path = if lib.rng.random_bool(0.5) {
                    path.clone()
                } else {
                    OriginPath::new(format!("mirror/{}", path).into_bytes())
                };
                lib.put(m, mirror_path, file.bytes.clone(), file.kind.clone());
            }
            if lib.rng.random_range(0..100) < swarm.twin_pct {
                let extra = lib.rng.random_range(1..4096usize);
                let bytes = lib.noise(file.bytes.len() + extra);
                let twin = OriginPath::new(format!("twins/{}", path).into_bytes());
                let t = lib.pick_origin();
                lib.put(t, twin, bytes, file.kind.clone());
            }
            let dir = String::from_utf8_lossy(path.parent()).into_owned();
            lib.put(o, path, file.bytes, file.kind);
            if lib.rng.random_range(0..100) < swarm.cover_pct {
                let size = lib.rng.random_range(1_000..60_000);
                let bytes = lib.noise(size);
                let name = OriginPath::new(format!("{dir}/cover.jpg").into_bytes());
                lib.put(o, name, bytes, FileKind::Cover);
            }
        }
        lib
    }

    fn pick_origin(&mut self) -> usize {
        self.rng.random_range(0..self.origins.len())
    }

    /// Incompressible bytes, so content-defined chunking cuts as it does
    /// on audio. xorshift seeded from the library stream, eight bytes a
    /// step: ChaCha's byte-wise fill was most of a run's time.
    fn noise(&mut self, len: usize) -> Rc<[u8]> {
        let mut x: u64 = self.rng.random::<u64>() | 1;
        let mut v = vec![0u8; len];
        for chunk in v.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        v.into()
    }

    fn new_tags(&mut self) -> TrackTags {
        let n = self.next_title;
        self.next_title += 1;
        let decorate = self.rng.random_range(0..10);
        let title = match decorate {
            0 => format!(".Intro {n}"),
            1 => format!("Slash/Title {n}"),
            2 => format!("{} {n}", "Long ".repeat(60)),
            3 => format!("Dot. Com {n}."),
            _ => format!("Song {n}"),
        };
        let artist = ARTISTS[self.rng.random_range(0..ARTISTS.len())].to_owned();
        TrackTags {
            title: Some(title.into()),
            artist: Some(artist.clone().into()),
            album_artist: self.rng.random_bool(0.3).then_some(artist.into()),
            album: Some(ALBUMS[self.rng.random_range(0..ALBUMS.len())].into()),
            track: self
                .rng
                .random_bool(0.8)
                .then(|| self.rng.random_range(1..20)),
            disc: self
                .rng
                .random_bool(0.1)
                .then(|| self.rng.random_range(1..3)),
            year: Some(1990),
            ..TrackTags::default()
        }
    }

    fn new_track(&mut self, size_max: u64) -> (OriginPath, OriginFile) {
        let tags = self.new_tags();
        let size = self.rng.random_range(0..=size_max) as usize;
        let ext = EXTS[self.rng.random_range(0..EXTS.len())];
        let album = tags.album.clone().unwrap_or_default().replace('/', "-");
        let path = format!(
            "{album}/{:02} t{}.{ext}",
            tags.track.unwrap_or(0),
            self.next_title
        );
        let file = OriginFile {
            bytes: self.noise(size),
            version: FileVersion::default(),
            kind: FileKind::Track(tags),
        };
        (OriginPath::new(path.into_bytes()), file)
    }

    /// Creates or replaces a file, with a fresh version (a new mtime, and a
    /// new inode number as its change token), and records its bytes.
    fn put(&mut self, origin: usize, path: OriginPath, bytes: Rc<[u8]>, kind: FileKind) {
        let version = FileVersion {
            size: bytes.len() as u64,
            mtime_ns: self.mtime_base + self.next_inode as i64 * 1_000_000_000,
            token: Some(format!("ino{}", self.next_inode).into()),
        };
        self.next_inode += 1;
        self.record(origin, &path, &version, &bytes);
        let file = OriginFile {
            bytes,
            version,
            kind,
        };
        self.origins[origin].borrow_mut().files.insert(path, file);
    }

    fn record(
        &mut self,
        origin: usize,
        path: &OriginPath,
        version: &FileVersion,
        bytes: &Rc<[u8]>,
    ) {
        let src = SourceFile {
            origin: OriginId(origin as u16),
            path: path.clone(),
            version: version.clone(),
        };
        self.history.insert(version_key(&src), Rc::clone(bytes));
    }

    /// Changes one origin's content at random: retags a file (new bytes and
    /// size, and new tags that may or may not rename it), deletes one, adds
    /// one, or renames one (same bytes and version, other path). Returns a
    /// description for the trace, or `None` if nothing could change.
    pub fn mutate(&mut self, size_max: u64) -> Option<String> {
        let o = self.pick_origin();
        let paths: Vec<OriginPath> = self.origins[o].borrow().files.keys().cloned().collect();
        let what = self.rng.random_range(0..4);
        if paths.is_empty() || what == 2 {
            let (path, file) = self.new_track(size_max);
            let desc = format!("origin{o}: add {path}");
            self.put(o, path, file.bytes, file.kind);
            return Some(desc);
        }
        let path = paths[self.rng.random_range(0..paths.len())].clone();
        let old = self.origins[o].borrow().files.get(&path).cloned()?;
        match what {
            0 => self.retag(o, &path),
            1 => {
                self.origins[o].borrow_mut().files.remove(&path);
                Some(format!("origin{o}: delete {path}"))
            }
            _ => {
                let to = OriginPath::new(format!("moved/{path}").into_bytes());
                if to.as_bytes().len() > 1000 {
                    return None;
                }
                self.record(o, &to, &old.version, &old.bytes);
                let mut st = self.origins[o].borrow_mut();
                st.files.remove(&path);
                st.files.insert(to.clone(), old);
                Some(format!("origin{o}: rename {path} -> {to}"))
            }
        }
    }

    /// Rewrites the tags of `path` on origin `o`: the header changes size,
    /// the audio stays, so content-defined chunks after the header
    /// survive.
    pub fn retag(&mut self, o: usize, path: &OriginPath) -> Option<String> {
        let old = self.origins.get(o)?.borrow().files.get(path).cloned()?;
        let cut = self.rng.random_range(0..=old.bytes.len().min(8192));
        let mut head = self.rng.random_range(1..8192usize);
        if head == cut {
            head += 1;
        }
        let mut bytes = self.noise(head).to_vec();
        bytes.extend_from_slice(&old.bytes[cut..]);
        let kind = match old.kind {
            FileKind::Track(mut tags) => {
                if self.rng.random_bool(0.5) {
                    tags.year = tags.year.map(|y| y + 1);
                } else {
                    tags.title = Some(format!("Retagged {}", self.next_title).into());
                    self.next_title += 1;
                }
                FileKind::Track(tags)
            }
            k => k,
        };
        self.put(o, path.clone(), bytes.into(), kind);
        Some(format!("origin{o}: retag {path}"))
    }

    /// The bytes of a version, if it ever existed.
    pub fn bytes_of(&self, src: &SourceFile) -> Option<&Rc<[u8]>> {
        self.history.get(&version_key(src))
    }

    /// Whether `src` is what its origin holds right now.
    pub fn is_current(&self, src: &SourceFile) -> bool {
        self.origins
            .get(usize::from(src.origin.0))
            .is_some_and(|o| {
                o.borrow()
                    .files
                    .get(&src.path)
                    .is_some_and(|f| f.version == src.version)
            })
    }
}
