//! The packs' tables, saved at a clean exit so that the next open need not
//! read each pack (see the format in `super`'s docs). Both ways in bounded
//! memory: a large cache holds millions of packed chunks (24 bytes each
//! here), and a mount's peak is what counts.

use super::{CHUNK_MAX_BYTES, ENTRY_BYTES, PackReads, State, entry, entry_bytes};
use musicfs_core::ChunkId;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;
use xxhash_rust::xxh3::Xxh3;

/// The file, in the cache folder.
pub(super) const FILE: &str = "packs.tables";
const MAGIC: &[u8; 8] = b"MFSPTAB1";
/// A pack's record: number, inode number, kind, chunks.
const HEAD_BYTES: usize = 17;
const CHECKSUM_BYTES: u64 = 8;

/// Writes the tables of `st`'s packs, what is live of each, to `out`. A
/// pack whose inode is not known is left out (its table is read at the
/// next open).
pub(super) fn write(st: &State, out: &File) -> io::Result<()> {
    let mut by_pack: HashMap<u32, Vec<(ChunkId, u32, u32)>> = HashMap::new();
    for (&id, p) in &st.chunks {
        by_pack
            .entry(p.pack)
            .or_default()
            .push((id, p.offset, p.len));
    }
    let mut packs: Vec<_> = by_pack.into_iter().collect();
    packs.sort_unstable_by_key(|&(n, _)| n);
    let mut w = Hashed {
        inner: BufWriter::new(out),
        hash: Xxh3::new(),
    };
    w.write_all(MAGIC)?;
    for (n, mut table) in packs {
        let Some(&inode) = st.inodes.get(&n) else {
            continue;
        };
        table.sort_unstable_by_key(|&(_, offset, _)| offset);
        w.write_all(&n.to_le_bytes())?;
        w.write_all(&inode.to_le_bytes())?;
        w.write_all(&[u8::from(st.sequential.contains(&n))])?;
        w.write_all(&(table.len() as u32).to_le_bytes())?;
        for (id, offset, len) in table {
            w.write_all(&entry_bytes(id, offset, len))?;
        }
    }
    let checksum = w.hash.digest();
    w.inner.write_all(&checksum.to_le_bytes())?;
    w.inner.flush()
}

struct Hashed<W> {
    inner: W,
    hash: Xxh3,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why a saved file cannot be used.
#[derive(Debug)]
pub(super) enum Unusable {
    Io(io::Error),
    Damaged(&'static str),
}

impl From<io::Error> for Unusable {
    fn from(e: io::Error) -> Unusable {
        Unusable::Io(e)
    }
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Io(e) => write!(f, "{e}"),
            Unusable::Damaged(why) => f.write_str(why),
        }
    }
}

/// What [`load`] added.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    /// The packs whose tables were added, whole.
    pub added: HashSet<u32>,
    /// Whether the file named packs that are not in place (any more).
    pub stale: bool,
    /// The highest pack number the file names: no new pack takes it, so
    /// a saved table never describes a later pack of the same number.
    pub last: Option<u32>,
    /// Why the file could not be used, or stopped being readable half way.
    pub unusable: Option<Unusable>,
}

/// Adds to `st` the saved tables of the packs in place: those `listed`
/// (number to inode number) with the inode they were saved with. The
/// caller reads the others' tables. The file is read twice: checked
/// first, its checksum and every record, then added from, so that a
/// damaged file adds nothing.
pub(super) fn load(path: &Path, listed: &HashMap<u32, u64>, st: &mut State) -> Loaded {
    let mut loaded = Loaded::default();
    let result = File::open(path).map_err(Unusable::from).and_then(|file| {
        loaded.last = check(&file)?;
        add(&file, listed, st, &mut loaded)
    });
    match result {
        Ok(()) => {}
        Err(Unusable::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => loaded.unusable = Some(e),
    }
    loaded
}

/// The file's records, read in order.
struct Records<'a> {
    inner: BufReader<&'a File>,
    /// Bytes left before the checksum.
    left: u64,
    hash: Option<Xxh3>,
}

/// A pack's record, before its entries.
struct Head {
    n: u32,
    inode: u64,
    reads: PackReads,
    count: u32,
}

impl<'a> Records<'a> {
    /// Starts at the file's beginning; checks its magic.
    fn new(file: &'a File, hashed: bool) -> Result<Records<'a>, Unusable> {
        let size = file.metadata()?.len();
        let mut inner = BufReader::with_capacity(64 * 1024, file);
        inner.rewind()?;
        let left = size
            .checked_sub(CHECKSUM_BYTES)
            .ok_or(Unusable::Damaged("shorter than its checksum"))?;
        let mut records = Records {
            inner,
            left,
            hash: hashed.then(Xxh3::new),
        };
        if records.take::<8>()? != *MAGIC {
            return Err(Unusable::Damaged("not a saved-tables file"));
        }
        Ok(records)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], Unusable> {
        if self.left < N as u64 {
            return Err(Unusable::Damaged("cut short"));
        }
        let mut bytes = [0u8; N];
        self.inner.read_exact(&mut bytes)?;
        self.left -= N as u64;
        if let Some(hash) = &mut self.hash {
            hash.update(&bytes);
        }
        Ok(bytes)
    }

    /// The next pack's record, `None` at the end.
    fn head(&mut self) -> Result<Option<Head>, Unusable> {
        if self.left == 0 {
            return Ok(None);
        }
        let head = self.take::<HEAD_BYTES>()?;
        let (n, rest) = head
            .split_first_chunk::<4>()
            .ok_or(Unusable::Damaged("cut short"))?;
        let (inode, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(Unusable::Damaged("cut short"))?;
        let (kind, count) = rest.split_first().ok_or(Unusable::Damaged("cut short"))?;
        let count: [u8; 4] = count
            .try_into()
            .map_err(|_| Unusable::Damaged("cut short"))?;
        let reads = match kind {
            0 => PackReads::Random,
            1 => PackReads::Sequential,
            _ => return Err(Unusable::Damaged("unknown pack kind")),
        };
        Ok(Some(Head {
            n: u32::from_le_bytes(*n),
            inode: u64::from_le_bytes(*inode),
            reads,
            count: u32::from_le_bytes(count),
        }))
    }

    fn entry(&mut self) -> Result<(ChunkId, u32, u32), Unusable> {
        let (id, offset, len) =
            entry(&self.take::<ENTRY_BYTES>()?).ok_or(Unusable::Damaged("bad id"))?;
        if len == 0 || len as usize > CHUNK_MAX_BYTES || offset.checked_add(len).is_none() {
            return Err(Unusable::Damaged("chunk outside its pack"));
        }
        Ok((id, offset, len))
    }

    fn skip(&mut self, count: u32) -> Result<(), Unusable> {
        let bytes = u64::from(count) * ENTRY_BYTES as u64;
        if self.left < bytes {
            return Err(Unusable::Damaged("cut short"));
        }
        self.left -= bytes;
        self.inner.seek_relative(bytes as i64)?;
        Ok(())
    }
}

/// Reads the whole file: every record decodes, no pack twice, and the
/// checksum holds. Returns the highest pack number it names.
fn check(file: &File) -> Result<Option<u32>, Unusable> {
    let mut r = Records::new(file, true)?;
    let mut seen = HashSet::new();
    let mut last = None;
    while let Some(head) = r.head()? {
        if !seen.insert(head.n) {
            return Err(Unusable::Damaged("a pack named twice"));
        }
        last = last.max(Some(head.n));
        for _ in 0..head.count {
            r.entry()?;
        }
    }
    let digest = r.hash.take().map(|h| h.digest());
    let mut checksum = [0u8; CHECKSUM_BYTES as usize];
    r.inner.read_exact(&mut checksum)?;
    if digest != Some(u64::from_le_bytes(checksum)) {
        return Err(Unusable::Damaged("checksum mismatch"));
    }
    Ok(last)
}

fn add(
    file: &File,
    listed: &HashMap<u32, u64>,
    st: &mut State,
    loaded: &mut Loaded,
) -> Result<(), Unusable> {
    let mut r = Records::new(file, false)?;
    while let Some(head) = r.head()? {
        if listed.get(&head.n) != Some(&head.inode) {
            loaded.stale = true;
            r.skip(head.count)?;
            continue;
        }
        let mut failed = None;
        let entries = (0..head.count).map_while(|_| r.entry().map_err(|e| failed = Some(e)).ok());
        st.add(head.n, entries, head.reads);
        if let Some(e) = failed {
            return Err(e);
        }
        st.inodes.insert(head.n, head.inode);
        loaded.added.insert(head.n);
    }
    Ok(())
}
