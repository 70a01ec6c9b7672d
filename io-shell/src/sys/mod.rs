//! The system: every libc call of the io-shell has one safe wrapper here,
//! returning `io::Result` where the call can fail (mount(2), umount2(2),
//! statfs(2), statvfs(2), syncfs(2), pread(2), fallocate(2), setrlimit(2), the process's ids, a child
//! tied to its parent thread (prctl(2), sigwait(3)), a client's Ctrl-C handler; the allocator in [`memory`]); and what is mounted where
//! (`/proc/self/mountinfo`). Nothing else in the crate calls libc
//! functions (it uses libc's constants and types).

pub mod memory;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (unescaped).
    pub mount_point: PathBuf,
    /// The device numbers `major:minor` (FUSE: the connection's number is
    /// the minor).
    pub device: String,
    /// The file-system type: `tmpfs`, `fuse`, `fuse.musicfs`, ...
    pub fstype: String,
    /// The mount source, as the file system named it (unescaped).
    pub source: String,
    /// FUSE: the user who mounted it (its daemon's user), from the
    /// `user_id=` super option.
    pub user_id: Option<u32>,
}

impl MountEntry {
    /// Whether MusicFS mounted this: type `fuse.musicfs` (what it mounts
    /// with since 0.1; mount(8) shows the same), or type `fuse` and a source
    /// of `musicfs:<first origin>` (older builds, whose mounts may still be
    /// there, dead, after an upgrade).
    pub fn is_musicfs(&self) -> bool {
        self.fstype == "fuse.musicfs"
            || (self.fstype == "fuse" && self.source.starts_with("musicfs"))
    }

    /// Whether this is any FUSE mount.
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }
}

/// Parses the text of a mountinfo file. Lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut left = left.split(' ');
            let device = left.nth(2)?;
            let mount_point = left.nth(1)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let source = right.next().unwrap_or("");
            let user_id = right
                .next()
                .unwrap_or("")
                .split(',')
                .find_map(|o| o.strip_prefix("user_id="))
                .and_then(|id| id.parse().ok());
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                device: device.to_owned(),
                fstype: fstype.to_owned(),
                source: unescape(source),
                user_id,
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|d| (b'0'..=b'7').contains(d))
            && let Ok(s) = std::str::from_utf8(&bytes[i + 1..i + 4])
            && let Ok(b) = u8::from_str_radix(s, 8)
        {
            out.push(b);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `path` as the mount table shows it: absolute, with symbolic links
/// resolved. A dead FUSE mount cannot be resolved itself (ENOTCONN), so
/// its parent is resolved instead.
pub fn mount_table_path(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map_or_else(|_| abs.clone(), |p| p.join(name)),
        _ => abs,
    }
}

/// Every mount, in mount order.
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// The mount at `path` (the top one, if several are stacked there), or
/// `None` if `path` is not a mount point.
pub fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    let target = mount_table_path(path);
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&info)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == target))
}

/// How to unmount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmount {
    /// Fails with `EBUSY` while anything has files open there.
    Normal,
    /// `MNT_DETACH`: the mount disappears now; open files keep working and
    /// the file system ends when the last one is closed.
    Lazy,
}

/// umount2(2) on `path`; the error keeps its errno.
pub fn umount(path: &Path, how: Unmount) -> io::Result<()> {
    let c = c_path(path)?;
    let flags = match how {
        Unmount::Normal => 0,
        Unmount::Lazy => libc::MNT_DETACH,
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `path` as a C string; a NUL byte in it is `InvalidInput`.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// statfs(2) on `path`, for its answer only: on a FUSE mount it goes to
/// the daemon (stat may be answered from the kernel's cache), so it tells
/// whether the daemon answers (`ENOTCONN`: it is dead).
pub fn statfs(path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `buf` a writable struct
    // statfs; neither outlives the call.
    match unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The real user id of this process.
pub fn getuid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The real group id of this process.
pub fn getgid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

/// The effective user id of this process (0: root).
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The kernel's page size in bytes (4096 where it cannot be asked).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Spawns `cmd` so that it gets SIGTERM when the calling thread ends
/// (PR_SET_PDEATHSIG: the parent, for this, is the thread), however it
/// ends: SIGKILL of the whole process too. The child starts with SIGTERM
/// blocked, to wait for it with [`wait_for_parent_death`].
pub fn spawn_tied_to_this_thread(
    cmd: &mut std::process::Command,
) -> io::Result<std::process::Child> {
    let signal = libc::SIGTERM;
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // Blocked first (the mask outlives exec): the child waits for
            // the signal (`wait_for_parent_death`) rather than die of it.
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), signal);
            let rc = libc::sigprocmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            let sig = libc::c_ulong::try_from(signal).unwrap_or(0);
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    cmd.spawn()
}

/// The parent process's id (1, or a subreaper's, once it is gone).
pub fn getppid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    let pid = unsafe { libc::getppid() };
    u32::try_from(pid).unwrap_or(0)
}

/// In a child of [`spawn_tied_to_this_thread`]: waits for the SIGTERM that
/// tells of its parent thread's end.
pub fn wait_for_parent_death() -> io::Result<()> {
    let signal = libc::SIGTERM;
    // SAFETY: `set` is initialized by sigemptyset before use; the calls
    // have no other preconditions.
    unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), signal);
        let set = set.assume_init();
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let mut got = 0;
        let rc = libc::sigwait(&set, &mut got);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// syncfs(2): flushes the whole file system that holds `file`.
pub fn syncfs(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is owned by `file`, open for the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads exactly `len` bytes of `file` at `offset` (pread(2)) straight into
/// a shared buffer: no zeroing first and no copy after, for the cache's
/// chunk reads, whose bytes go on to memory and to readers as they are.
/// `UnexpectedEof` if the file ends first.
pub fn read_shared_at(
    file: &std::fs::File,
    offset: u64,
    len: usize,
) -> io::Result<std::sync::Arc<[u8]>> {
    use std::os::fd::AsRawFd;
    let mut buf = std::sync::Arc::<[u8]>::new_uninit_slice(len);
    let Some(dst) = std::sync::Arc::get_mut(&mut buf) else {
        unreachable!("a buffer just made has no other owner");
    };
    let mut done = 0;
    while done < len {
        let Ok(at) = libc::off_t::try_from(offset + done as u64) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        // SAFETY: the descriptor is owned by `file`, open for the call, and
        // pread writes at most `len - done` bytes from `done`, inside `dst`.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                dst[done..].as_mut_ptr().cast(),
                len - done,
                at,
            )
        };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => done += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    // SAFETY: the loop above wrote every one of the `len` bytes.
    Ok(unsafe { buf.assume_init() })
}

/// Frees the blocks of `len` bytes at `offset` in `file` without changing
/// its length (`fallocate` with `FALLOC_FL_PUNCH_HOLE`): the range then
/// reads as zeros. `EOPNOTSUPP` where the file system cannot.
pub fn punch_hole(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: the descriptor is owned by `file`, open for the call.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises this process's soft limit of open files to its hard limit
/// (`RLIMIT_NOFILE`), as daemons that keep many files open do: the soft
/// limit is often 1,024 where the hard one is 500,000 or more. Returns
/// the soft limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit, read by the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur)
}

/// The nice value of background work: it runs when serving leaves the
/// CPU free, and gets about a tenth of a busy one beside a reader.
pub const BACKGROUND_NICE: i32 = 10;

/// ioprio_set(2)'s "idle" class: the thread's disk requests are served
/// when nobody else's wait (the block layer ages them, so they are never
/// starved for long).
const IOPRIO_CLASS_IDLE: libc::c_int = 3;
const IOPRIO_CLASS_SHIFT: libc::c_int = 13;
const IOPRIO_WHO_PROCESS: libc::c_int = 1;

/// Lowers the calling thread's CPU priority to [`BACKGROUND_NICE`]
/// (setpriority(2)) and its disk priority to the idle class
/// (ioprio_set(2)). Linux keeps both per thread, and threads it starts
/// inherit them. Without privileges they cannot be raised again, so call
/// it only on a thread of its own.
pub fn lower_this_threads_priority() -> io::Result<()> {
    // SAFETY: gettid takes nothing.
    let tid = unsafe { libc::gettid() };
    // SAFETY: integers only; a scheduler without I/O priorities accepts
    // and ignores it. Best effort: the CPU priority below matters more.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if this_threads_nice()? >= BACKGROUND_NICE {
        return Ok(());
    }
    let id = libc::id_t::try_from(tid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: integers only.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, id, BACKGROUND_NICE) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's I/O priority class (ioprio_get(2)): 0 none (it
/// follows its nice value), 1 real time, 2 best effort, 3 idle.
pub fn this_threads_io_class() -> io::Result<i32> {
    // SAFETY: integers only.
    let tid = unsafe { libc::gettid() };
    // SAFETY: as above.
    let prio = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    if prio < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((prio >> IOPRIO_CLASS_SHIFT) as i32)
}

/// The calling thread's nice value (getpriority(2)).
pub fn this_threads_nice() -> io::Result<i32> {
    // SAFETY: as in `lower_this_threads_priority`.
    let tid = unsafe { libc::gettid() };
    let id = libc::id_t::try_from(tid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // getpriority may return -1 as a value: clear errno first.
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: integers only.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, id) };
    match io::Error::last_os_error().raw_os_error() {
        Some(0) | None => Ok(nice),
        Some(_) => Err(io::Error::last_os_error()),
    }
}

/// Runs `job` on a thread of its own at background priority (see
/// [`lower_this_threads_priority`]), and waits for it: for work the
/// daemon does beside serving (building the search index, saving the
/// tree), so that it takes the CPU readers leave.
pub fn in_background<R: Send>(name: &str, job: impl FnOnce() -> R + Send) -> io::Result<R> {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn_scoped(s, || {
                if let Err(e) = lower_this_threads_priority() {
                    tracing::debug!(error = %e, "cannot lower the priority of background work");
                }
                job()
            })?;
        handle
            .join()
            .map_err(|_| io::Error::other("background work panicked"))
    })
}

/// statvfs(2) on `path`: the bytes an unprivileged user may still write
/// there (`f_bavail` blocks of `f_frsize`).
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    let c = c_path(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` a writable struct
    // statvfs; neither outlives the call.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field widths differ between targets
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// What [`mount`] mounts.
#[derive(Clone, Debug)]
pub struct Mount<'a> {
    /// The source the mount table shows.
    pub source: &'a str,
    /// Where.
    pub target: &'a Path,
    /// The file-system type (`fuse.musicfs`).
    pub fstype: &'a str,
    /// `MS_*` flags.
    pub flags: libc::c_ulong,
    /// The file system's own options, as text.
    pub data: &'a str,
}

/// mount(2); the error keeps its errno (`EPERM`: no privilege to mount).
pub fn mount(m: &Mount<'_>) -> io::Result<()> {
    let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte");
    let source = CString::new(m.source).map_err(nul)?;
    let target = c_path(m.target)?;
    let fstype = CString::new(m.fstype).map_err(nul)?;
    let data = CString::new(m.data).map_err(nul)?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call; `data` is the text options string the file system expects.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            m.flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set by [`catch_interrupts`]' handler.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// For a command-line client with work to stop cleanly: from now on,
/// Ctrl-C (SIGINT) and SIGTERM set the returned flag instead of killing
/// the process; the client checks it between steps.
pub fn catch_interrupts() -> &'static std::sync::atomic::AtomicBool {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; `signal` has no other preconditions.
        unsafe {
            libc::signal(signal, handler);
        }
    }
    &INTERRUPTED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_one() {
        let limit = raise_open_files_limit().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid rlimit for the call to fill.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(limit, lim.rlim_cur);
    }

    #[test]
    fn holes_punched_in_a_file_read_as_zeros_and_free_their_blocks() {
        use std::io::{Read, Write};
        use std::os::unix::fs::MetadataExt;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        let before = f.metadata().unwrap().blocks();
        punch_hole(&f, 256 << 10, 512 << 10).unwrap();
        let meta = f.metadata().unwrap();
        assert_eq!(meta.len(), 1 << 20, "the length stays");
        assert!(meta.blocks() * 512 + (512 << 10) <= before * 512);
        let mut back = Vec::new();
        std::io::Seek::rewind(&mut f).unwrap();
        f.read_to_end(&mut back).unwrap();
        assert!(back[..256 << 10].iter().all(|&b| b == 7));
        assert!(back[256 << 10..768 << 10].iter().all(|&b| b == 0));
        assert!(back[768 << 10..].iter().all(|&b| b == 7));
    }

    #[test]
    fn shared_reads_get_exactly_the_bytes_asked_for_or_say_the_file_ended() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        for (at, len) in [
            (0, 300_000),
            (1, 4095),
            (123_457, 65_536),
            (299_999, 1),
            (5, 0),
        ] {
            let got = read_shared_at(&f, at as u64, len).unwrap();
            assert_eq!(&got[..], &data[at..at + len], "{at} {len}");
        }
        let short = read_shared_at(&f, 299_000, 1001).unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof);
        let past = read_shared_at(&f, 400_000, 1).unwrap_err();
        assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn background_work_runs_at_background_priority_and_leaves_the_caller_as_it_was() {
        let before = this_threads_nice().unwrap();
        let io_before = this_threads_io_class().unwrap();
        let (inside, io_inside, name) = in_background("bg-test", || {
            (
                this_threads_nice().unwrap(),
                this_threads_io_class().unwrap(),
                std::thread::current().name().map(str::to_owned),
            )
        })
        .unwrap();
        assert_eq!(inside, BACKGROUND_NICE.max(before));
        assert_eq!(io_inside, IOPRIO_CLASS_IDLE);
        assert_eq!(name.as_deref(), Some("bg-test"));
        assert_eq!(this_threads_nice().unwrap(), before);
        assert_eq!(this_threads_io_class().unwrap(), io_before);
    }

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /tmp/with\\040space rw,relatime shared:20 - tmpfs tmpfs rw,size=1024k
41 22 0:36 / /mnt/music ro,nosuid,nodev,noatime shared:21 - fuse musicfs:/srv/music ro,user_id=0
42 22 0:37 / /mnt/other rw shared:22 - fuse.sshfs me@host:/x rw
43 22 0:38 / /mnt/typed rw - fuse.musicfs musicfs rw
garbage line
";

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let all = parse_mountinfo(SAMPLE);
        assert_eq!(all.len(), 5, "{all:?}");
        assert_eq!(all[1].mount_point, PathBuf::from("/tmp/with space"));
        assert_eq!(all[1].fstype, "tmpfs");
        assert_eq!(all[2].device, "0:36");
        assert_eq!(all[2].source, "musicfs:/srv/music");
        assert_eq!(all[2].user_id, Some(0), "FUSE: who mounted it");
        assert_eq!(all[1].user_id, None);
    }

    #[test]
    fn only_musicfs_mounts_are_musicfs() {
        let all = parse_mountinfo(SAMPLE);
        let musicfs: Vec<bool> = all.iter().map(MountEntry::is_musicfs).collect();
        assert_eq!(musicfs, [false, false, true, false, true]);
        let fuse: Vec<bool> = all.iter().map(MountEntry::is_fuse).collect();
        assert_eq!(fuse, [false, false, true, true, true]);
    }

    #[test]
    fn escapes_are_undone_and_odd_backslashes_kept() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("end\\04"), "end\\04");
        assert_eq!(unescape("\\x41"), "\\x41");
    }

    #[test]
    fn the_root_is_a_mount_and_a_plain_directory_is_not() {
        assert!(mount_at(Path::new("/")).unwrap().is_some());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(mount_at(dir.path()).unwrap(), None);
    }

    #[test]
    fn umount_of_a_plain_directory_says_einval() {
        let dir = tempfile::tempdir().unwrap();
        let e = umount(dir.path(), Unmount::Normal).unwrap_err();
        // EINVAL (not a mount point), or EPERM when not root.
        assert!(
            matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM)),
            "{e}"
        );
    }
}
