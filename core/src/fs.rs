//! The vocabulary the core answers FUSE in: attributes, directory entries and
//! errors. The io-shell converts these to fuser's types in one place.

use crate::ids::Ino;
use std::fmt;

/// Why an operation failed, as the kernel will be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Errno {
    /// No such entry.
    NoEnt,
    /// The bytes could not be had: origin unreachable past the read timeout,
    /// changed under a reader, or the cache and the origin both failed.
    Io,
    /// Every write gets this: the tree is read-only.
    ReadOnly,
    /// Not a directory.
    NotDir,
    /// Is a directory.
    IsDir,
    /// Invalid argument.
    Inval,
    /// Not implemented; the kernel remembers it for xattrs and stops asking.
    NoSys,
    /// No data for this attribute (xattr not present).
    NoData,
    /// Try again: too many reads are in flight.
    Again,
}

impl Errno {
    /// The Linux errno value.
    pub fn code(self) -> i32 {
        match self {
            Errno::NoEnt => 2,
            Errno::Io => 5,
            Errno::ReadOnly => 30,
            Errno::NotDir => 20,
            Errno::IsDir => 21,
            Errno::Inval => 22,
            Errno::NoSys => 38,
            Errno::NoData => 61,
            Errno::Again => 11,
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Errno::NoEnt => "ENOENT",
            Errno::Io => "EIO",
            Errno::ReadOnly => "EROFS",
            Errno::NotDir => "ENOTDIR",
            Errno::IsDir => "EISDIR",
            Errno::Inval => "EINVAL",
            Errno::NoSys => "ENOSYS",
            Errno::NoData => "ENODATA",
            Errno::Again => "EAGAIN",
        };
        f.write_str(s)
    }
}

/// The kind of a node in the virtual tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A regular, read-only file.
    File,
    /// A symbolic link (search results point into the tree).
    Symlink,
}

/// What `stat` shows for a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Size in bytes (for a directory: its number of entries).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch. A directory has
    /// the time of its newest descendant, so media servers' quick scans notice
    /// new music.
    pub mtime_ns: i64,
    /// Node kind.
    pub kind: NodeKind,
    /// Number of links: 2 + subdirectories for a directory, 1 otherwise.
    pub nlink: u32,
}

impl Attr {
    /// Permission bits: read and traverse for everyone, write for nobody.
    pub fn perm(&self) -> u16 {
        match self.kind {
            NodeKind::Dir => 0o555,
            NodeKind::File => 0o444,
            NodeKind::Symlink => 0o777,
        }
    }
}

/// One directory entry, as readdir returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's inode.
    pub ino: Ino,
    /// The offset of the *next* entry, as the kernel passes back to resume.
    pub next_offset: u64,
    /// Node kind.
    pub kind: NodeKind,
    /// Name within the directory.
    pub name: String,
}
