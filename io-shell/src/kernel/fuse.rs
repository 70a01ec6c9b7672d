//! The FUSE shim: fuser callbacks translated to engine calls, and the
//! engine's answers (and errors) translated back, in one place.
//!
//! The tree is read-only and changes only when a sync says so (and then the
//! kernel is told precisely what changed), so the kernel may cache entries,
//! attributes, directory listings and file pages for a long time. That is
//! what makes a warm `find` or `ls -lR` nearly as fast as on a local disk.

use crate::exec::daemon::{Daemon, ReadReply};
use crate::kernel::offline::{self, OfflineView};
use crate::kernel::passthrough::{self, KernelPassthrough};
use crate::search::folder::{self, SearchFolder};
use crate::search::live::SearchSlot;
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request,
};
use musicfs_core::Ino;
use musicfs_core::fs::{Attr, NodeKind};
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may trust an entry or attribute. Changes are pushed
/// with explicit invalidations, so this only bounds the damage of a missed
/// one.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// Entries per readdir call asked of the engine; the kernel's buffer decides
/// how many are sent.
const READDIR_BATCH: usize = 512;

/// The filesystem fuser drives.
pub struct MusicFs {
    daemon: Arc<Daemon>,
    search: SearchFolder,
    offline: OfflineView,
    /// Kernel passthrough for `cache=off` origins.
    passthrough: KernelPassthrough,
    owner: Ownership,
    /// The kernel opens directories without asking (see `opendir`).
    no_opendir: bool,
    /// The kernel can stop sending OPEN and RELEASE for files (see `open`).
    no_open_support: bool,
    /// Serve the user.musicfs.* extended attributes (`--xattrs`).
    xattrs: bool,
}

/// Search results change with the library, and `.offline` with the cache:
/// the kernel may keep them briefly.
const SEARCH_TTL: Duration = Duration::from_secs(1);

/// The extended attribute that tells how much of a file is cached.
const XATTR_CACHED: &str = "user.musicfs.cached";
/// The one that tells whether a file is pinned (`musicfs pin`).
const XATTR_PINNED: &str = "user.musicfs.pinned";

/// Who owns every file and folder of the mount, and which permission bits
/// are taken away (`--uid`, `--gid`, `--umask`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// The owner shown.
    pub uid: u32,
    /// The group shown.
    pub gid: u32,
    /// Bits taken away from folders' 0555 and files' 0444.
    pub umask: u16,
}

impl Ownership {
    /// The permission bits of a node of `kind`: the core's (which never
    /// have a write bit) less the umask. Symbolic links keep 0777, as on
    /// every Linux file system (their bits are never checked).
    pub fn perm(&self, a: &Attr) -> u16 {
        match a.kind {
            NodeKind::Symlink => a.perm(),
            NodeKind::Dir | NodeKind::File => a.perm() & !self.umask & 0o555,
        }
    }
}

impl MusicFs {
    /// A filesystem over `daemon`, owned and masked as `owner` says.
    pub fn new(daemon: Arc<Daemon>, owner: Ownership, search: Arc<SearchSlot>) -> MusicFs {
        MusicFs {
            daemon,
            search: SearchFolder::new(search),
            offline: OfflineView::default(),
            passthrough: KernelPassthrough::new(Default::default()),
            owner,
            no_opendir: false,
            no_open_support: false,
            xattrs: false,
        }
    }

    /// Serves the user.musicfs.* extended attributes when `on`.
    pub fn with_xattrs(mut self, on: bool) -> MusicFs {
        self.xattrs = on;
        self
    }

    /// Lets the kernel read the files of these `cache=off` local origins
    /// itself, where it can (see `passthrough.rs`).
    pub fn with_kernel_passthrough(
        mut self,
        roots: std::collections::BTreeMap<musicfs_core::OriginId, std::path::PathBuf>,
    ) -> MusicFs {
        self.passthrough = KernelPassthrough::new(roots);
        self
    }

    /// Lookup, getattr and readdir of the tree or of the `.search` folder.
    fn attr_of(&self, ino: u64) -> Result<(Attr, Duration), musicfs_core::fs::Errno> {
        if folder::owns(ino) {
            return self.search.getattr(ino).map(|a| (a, SEARCH_TTL));
        }
        if offline::owns(ino) {
            return self
                .offline
                .getattr(&self.daemon, ino)
                .map(|a| (a, SEARCH_TTL));
        }
        self.daemon.tree().getattr(Ino(ino)).map(|a| (a, TTL))
    }

    fn entries_of(
        &self,
        ino: u64,
        offset: u64,
    ) -> Result<Vec<musicfs_core::fs::DirEntry>, musicfs_core::fs::Errno> {
        if folder::owns(ino) {
            return self.search.readdir(ino, offset);
        }
        if offline::owns(ino) {
            return self.offline.readdir(&self.daemon, ino, offset);
        }
        self.daemon.tree().readdir(Ino(ino), offset, READDIR_BATCH)
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        let mtime = system_time(a.mtime_ns);
        FileAttr {
            ino: INodeNo(a.ino.0),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind: file_type(a.kind),
            perm: self.owner.perm(a),
            nlink: a.nlink,
            uid: self.owner.uid,
            gid: self.owner.gid,
            rdev: 0,
            // Tools size their buffers by this (cp, tar): ask for big reads.
            blksize: 128 * 1024,
            flags: 0,
        }
    }
}

/// The single place engine errors become kernel errors.
fn errno(e: musicfs_core::fs::Errno) -> Errno {
    Errno::from_i32(e.code())
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Dir => FileType::Directory,
        NodeKind::File => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
    }
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// The tree's inode behind `ino` (an inode of the `.offline` view stands
/// for the tree's node).
fn tree_ino(ino: u64) -> Ino {
    if offline::owns(ino) {
        offline::tree_ino(ino)
    } else {
        Ino(ino)
    }
}

/// An xattr answer: its size when asked with size 0, else the bytes (or
/// ERANGE when they do not fit).
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len);
    } else if size < len {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

impl ReadReply for ReplyData {
    fn data(self: Box<Self>, data: &[u8]) {
        (*self).data(data);
    }
    fn error(self: Box<Self>, e: musicfs_core::fs::Errno) {
        (*self).error(errno(e));
    }
}

/// The FUSE protocol version the kernel offered at this process's mount,
/// for `musicfs status` (and the log).
static KERNEL_PROTOCOL: OnceLock<String> = OnceLock::new();

/// The FUSE protocol the kernel offered (`7.41`), once mounted.
pub fn kernel_protocol() -> Option<&'static str> {
    KERNEL_PROTOCOL.get().map(String::as_str)
}

impl Filesystem for MusicFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let abi = config.kernel_abi();
        let protocol = format!("{}.{}", abi.0, abi.1);
        tracing::info!(protocol = %protocol, "FUSE session started");
        let _ = KERNEL_PROTOCOL.set(protocol);
        // Each capability is optional: take what this kernel offers.
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_MAX_PAGES,
        ] {
            let _ = config.add_capabilities(flag);
        }
        self.no_opendir = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        // The kernel caps this at the mount device's read-ahead, 128 KiB
        // unless root widens it in sysfs (`/sys/class/bdi/<dev>/read_ahead_kb`).
        // MusicFS leaves it there: the heads a first scan keeps are sized for
        // it, and with 1 MiB a tag reader going through a big picture made
        // the kernel read past them, so tag reading with the origin gone got
        // EIO (measured: cached reads of a big file were 20% faster).
        if let Err(nearest) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(nearest);
        }
        // Many players and scanners read at once; let the kernel queue them.
        let _ = config.set_max_background(128);
        let _ = config.set_congestion_threshold(96);
        // Files need no open either, unless cache=off origins get kernel
        // passthrough (which attaches the backing file at open): see `open`.
        self.no_open_support = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        if self.passthrough.wanted() {
            // Backing files live on ordinary file systems (stack depth 0):
            // a depth of 1 lets the kernel pass reads through to them.
            let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if granted {
                self.passthrough.enable();
                tracing::info!(
                    "kernel passthrough on: cache=off origins are read by the kernel directly"
                );
            } else {
                tracing::info!(
                    "this kernel has no FUSE passthrough (Linux 6.9+): cache=off origins are read by the daemon"
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        use std::os::unix::ffi::OsStrExt;
        let result = if parent.0 == Ino::ROOT.0 && name.as_bytes() == folder::NAME.as_bytes() {
            Ok((self.search.root_attr(), SEARCH_TTL))
        } else if parent.0 == Ino::ROOT.0 && name.as_bytes() == offline::NAME.as_bytes() {
            self.offline
                .getattr(&self.daemon, offline::ROOT)
                .map(|a| (a, SEARCH_TTL))
        } else if folder::owns(parent.0) {
            self.search
                .lookup(parent.0, name.as_bytes())
                .map(|a| (a, SEARCH_TTL))
        } else if offline::owns(parent.0) {
            self.offline
                .lookup(&self.daemon, parent.0, name.as_bytes())
                .map(|a| (a, SEARCH_TTL))
        } else {
            self.daemon
                .tree()
                .lookup_attr(Ino(parent.0), name.as_bytes())
                .map(|a| (a, TTL))
        };
        match result {
            Ok((attr, ttl)) => reply.entry(&ttl, &self.file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino.0) {
            Ok((attr, ttl)) => reply.attr(&ttl, &self.file_attr(&attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Files need no open: the mount is read-only (the kernel refuses every
    /// write open before asking) and every read names its inode. Where the
    /// kernel supports it (FUSE_NO_OPEN_SUPPORT), an OPEN of an existing
    /// file is answered ENOSYS: the kernel then opens files by itself,
    /// sends no OPEN and no RELEASE, and keeps their pages across opens
    /// (FOPEN_KEEP_CACHE is then its default), which a media server's scan
    /// of thousands of files spares two round trips each (a warm rescan of
    /// 20,000 files ran at 0.43x native with them, 1.0x without).
    ///
    /// Not while `cache=off` origins get kernel passthrough: the backing
    /// file is given at open, so every open must reach the daemon. Once
    /// passthrough is off (the kernel has none, or refused the backing
    /// file for want of CAP_SYS_ADMIN), the next OPEN is answered ENOSYS
    /// and the kernel stops asking.
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let tree = tree_ino(ino.0);
        self.daemon
            .io_stats
            .file_opens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot = self.daemon.tree();
        match snapshot.open(tree, write) {
            Ok(()) if self.no_open_support && !self.passthrough.on() => reply.error(Errno::ENOSYS),
            Ok(()) => {
                let Some(reply) = self.passthrough.try_open(&snapshot, tree, reply) else {
                    return; // the kernel reads the origin file itself
                };
                // The bytes of a version never change: keep the kernel's
                // pages across opens. A changed file is a new version
                // (invalidated).
                reply.opened(
                    FileHandle(passthrough::PLAIN_HANDLE),
                    FopenFlags::FOPEN_KEEP_CACHE,
                );
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.passthrough.release(fh.0);
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        tracing::trace!(ino = ino.0, offset, size, "read");
        self.daemon
            .read(tree_ino(ino.0).0, offset, size, Box::new(reply));
    }

    /// Directories need no open. Where the kernel supports it (Linux 5.1+,
    /// FUSE_NO_OPENDIR_SUPPORT), the first OPENDIR is answered ENOSYS: the
    /// kernel then stops sending OPENDIR and RELEASEDIR and caches every
    /// listing (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR is then its default).
    /// That spares two round trips per directory: on the 20,000-track
    /// bench library a warm `find` sent 5,600 requests, now none. A
    /// listing that changes is dropped from the kernel's cache all the
    /// same: a sync invalidates the folders it changed, and a search
    /// folder gets a new mtime when its results change.
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            return reply.error(Errno::ENOSYS);
        }
        if folder::owns(ino.0) || offline::owns(ino.0) {
            // Contents change: no cached listing for the search folder or
            // the offline view.
            return match self.attr_of(ino.0) {
                Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
                Err(e) => reply.error(errno(e)),
            };
        }
        match self.daemon.tree().opendir(Ino(ino.0)) {
            Ok(()) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.entries_of(ino.0, offset) {
            Ok(entries) => {
                for ent in entries {
                    if reply.add(
                        INodeNo(ent.ino.0),
                        ent.next_offset,
                        file_type(ent.kind),
                        &ent.name,
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = if folder::owns(ino.0) {
            self.search.readdir(ino.0, offset).map(|list| {
                list.into_iter()
                    .filter_map(|ent| {
                        self.search
                            .getattr(ent.ino.0)
                            .ok()
                            .map(|a| (ent, a, SEARCH_TTL))
                    })
                    .collect::<Vec<_>>()
            })
        } else if offline::owns(ino.0) {
            self.offline
                .readdir(&self.daemon, ino.0, offset)
                .map(|list| {
                    list.into_iter()
                        .filter_map(|ent| {
                            let attr = self.attr_of(ent.ino.0).ok()?;
                            Some((ent, attr.0, attr.1))
                        })
                        .collect::<Vec<_>>()
                })
        } else {
            let tree = self.daemon.tree();
            tree.readdir(Ino(ino.0), offset, READDIR_BATCH).map(|list| {
                list.into_iter()
                    .filter_map(|ent| tree.getattr(ent.ino).ok().map(|a| (ent, a, TTL)))
                    .collect::<Vec<_>>()
            })
        };
        // The tree's files the kernel now holds: their pages can go to it
        // before it asks (`Daemon::listed`).
        let in_tree = !folder::owns(ino.0) && !offline::owns(ino.0);
        let mut files = Vec::new();
        match entries {
            Ok(entries) => {
                for (ent, attr, ttl) in entries {
                    let kind = attr.kind;
                    let attr = self.file_attr(&attr);
                    let full = reply.add(
                        INodeNo(ent.ino.0),
                        ent.next_offset,
                        &ent.name,
                        &ttl,
                        &attr,
                        Generation(0),
                    );
                    if full {
                        break;
                    }
                    if in_tree && kind == NodeKind::File {
                        files.push(ent.ino);
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
        self.daemon.listed(&files);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A wedged FUSE loop, for the watchdog test.
        fail::fail_point!("fuse-statfs-hang");
        let tree = self.daemon.tree();
        let (bytes, files) = (tree.total_bytes(), tree.len() as u64);
        const BLOCK: u64 = 4096;
        reply.statfs(
            bytes.div_ceil(BLOCK),
            0,
            0,
            files,
            0,
            BLOCK as u32,
            255,
            BLOCK as u32,
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.search.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.attr_of(ino.0) {
            Ok(_) if mask.contains(AccessFlags::W_OK) => reply.error(Errno::EROFS),
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// With `--xattrs`: `user.musicfs.cached` (`full`, `partial`, `none`)
    /// and `user.musicfs.pinned` (`yes`, `no`) on every file: what plays
    /// with no origin. Any other name (`ls -l` asks for the SELinux label
    /// of every file) is answered at once, without the engine. Without
    /// it: ENOSYS once, and the kernel stops asking, which keeps `ls -lR`
    /// at native speed.
    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let name = name.to_str().unwrap_or_default();
        if name != XATTR_CACHED && name != XATTR_PINNED {
            return reply.error(Errno::NO_XATTR);
        }
        let tree = tree_ino(ino.0);
        let value = self.daemon.inspect(|e| {
            e.tree().file(tree)?;
            Some(if name == XATTR_CACHED {
                e.cached(tree).as_str()
            } else if e.is_pinned(tree) {
                "yes"
            } else {
                "no"
            })
        });
        match value {
            Some(v) => reply_xattr(reply, size, v.as_bytes()),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let tree = tree_ino(ino.0);
        let is_file = self.daemon.tree().file(tree).is_some();
        let names = if is_file {
            format!("{XATTR_CACHED}\0{XATTR_PINNED}\0")
        } else {
            String::new()
        };
        reply_xattr(reply, size, names.as_bytes());
    }

    // Every write operation: EROFS.
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    // Terminal and file-system ioctls (players probe for a tty): not a tty.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    /// Nothing is ever written, so a close has nothing to flush. ENOSYS
    /// tells the kernel so once (it then sends no FLUSH on any close, and
    /// the close succeeds): a scan that opens and closes every track spares
    /// a round trip per file.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.daemon
            .io_stats
            .file_flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        reply.error(Errno::ENOSYS);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: NodeKind) -> Attr {
        Attr {
            ino: Ino(2),
            size: 0,
            mtime_ns: 0,
            kind,
            nlink: 1,
        }
    }

    #[test]
    fn the_umask_takes_bits_away_and_never_gives_write() {
        let owner = |umask| Ownership {
            uid: 1,
            gid: 2,
            umask,
        };
        let (dir, file, link) = (
            attr(NodeKind::Dir),
            attr(NodeKind::File),
            attr(NodeKind::Symlink),
        );
        assert_eq!(owner(0o022).perm(&dir), 0o555);
        assert_eq!(owner(0o022).perm(&file), 0o444);
        assert_eq!(owner(0o027).perm(&dir), 0o550);
        assert_eq!(owner(0o027).perm(&file), 0o440);
        assert_eq!(owner(0o077).perm(&dir), 0o500);
        assert_eq!(owner(0o777).perm(&file), 0);
        assert_eq!(owner(0).perm(&dir), 0o555, "a zero umask adds no write bit");
        assert_eq!(owner(0o077).perm(&link), 0o777, "links keep 0777");
    }
}
