//! One inotify watch per folder of a local origin, kept compactly.
//!
//! inotify watches folders, not trees: every folder of the origin gets its
//! own watch, new folders get theirs as they appear, and an event names a
//! watch descriptor plus an entry name. So the watcher keeps, for each
//! descriptor, which folder it is: here its parent's descriptor and its own
//! name (some 60 bytes a folder), and a path is rebuilt only for an event.
//!
//! Why not the `notify` crate, which did this before: it keeps two
//! absolute `PathBuf`s and a metadata record per folder (some 500 bytes).
//! An origin of 200,000 tracks has 32,000 folders: 17 MB of a daemon
//! serving in 255 MB. The `inotify` crate (the one `notify` itself uses)
//! does the system calls and the async reading here.
//!
//! Like the origin scan, symlinks to folders are not followed.

use inotify::{Event, EventMask, WatchDescriptor, WatchMask, Watches};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the kernel reports: changes and a written file's close, not opens
/// or reads (an origin of 200,000 tracks has some 32,000 folders; the
/// catch-up sync's own walk opens each, and with opens watched that alone
/// would overflow inotify's queue, as would any backup or player reading
/// the origin directly).
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
}

/// Folders deeper than this are not watched (a loop through a bind mount
/// would otherwise never end).
const DEPTH_MAX: usize = 256;

/// What an event means for the sync loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// This path (a file or a folder) may have changed.
    Path(PathBuf),
    /// Events were lost, or the origin's folder itself went away: only a
    /// sync of everything can tell what changed.
    Rescan(String),
}

/// A watched folder: its watch, its parent's watch (by id; none for the
/// origin's folder) and its name in that parent.
#[derive(Debug)]
struct Folder {
    wd: WatchDescriptor,
    parent: Option<i32>,
    name: Box<[u8]>,
}

/// The watches of one origin's folders, by watch id.
#[derive(Debug)]
pub struct FolderWatch {
    root: PathBuf,
    watches: Watches,
    folders: HashMap<i32, Folder>,
    root_wd: Option<i32>,
}

impl FolderWatch {
    /// Watches `root` and every folder beneath it (a walk of the tree).
    pub fn new(root: &Path, watches: Watches) -> io::Result<FolderWatch> {
        let mut w = FolderWatch {
            root: root.to_path_buf(),
            watches,
            folders: HashMap::new(),
            root_wd: None,
        };
        let wd = w.watches.add(root, mask())?;
        let id = wd.get_watch_descriptor_id();
        w.folders.insert(
            id,
            Folder {
                wd,
                parent: None,
                name: Box::default(),
            },
        );
        w.root_wd = Some(id);
        w.add_beneath(root.to_path_buf(), id, 0)?;
        Ok(w)
    }

    /// Folders watched.
    pub fn len(&self) -> usize {
        self.folders.len()
    }

    /// Whether no folder is watched (the origin's folder is gone).
    pub fn is_empty(&self) -> bool {
        self.folders.is_empty()
    }

    /// Whether `event` names a folder that appeared and whose tree must be
    /// walked (see [`FolderWatch::event`]): callers may want to do that
    /// off an async worker.
    pub fn walks(event: &Event<impl AsRef<OsStr>>) -> bool {
        event.mask.contains(EventMask::ISDIR)
            && event
                .mask
                .intersects(EventMask::CREATE | EventMask::MOVED_TO)
    }

    /// What one event means, keeping the watches in step: a new or
    /// moved-in folder and everything beneath it are watched, a moved-out
    /// folder's watches are dropped.
    pub fn event(&mut self, event: &Event<impl AsRef<OsStr>>) -> Option<Change> {
        let mask = event.mask;
        let wd = event.wd.get_watch_descriptor_id();
        if mask.contains(EventMask::Q_OVERFLOW) {
            return Some(Change::Rescan("the kernel dropped file events".into()));
        }
        if mask.contains(EventMask::IGNORED) {
            // The watch is gone (its folder deleted, or removed by us).
            self.folders.remove(&wd);
            if self.root_wd == Some(wd) {
                self.root_wd = None;
                return Some(Change::Rescan("the origin's folder went away".into()));
            }
            return None;
        }
        if mask.contains(EventMask::UNMOUNT) {
            return Some(Change::Rescan(
                "the origin's file system was unmounted".into(),
            ));
        }
        if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
            // Its parent reports the same as an entry, except for the
            // origin's own folder.
            return (self.root_wd == Some(wd))
                .then(|| Change::Rescan("the origin's folder was moved or deleted".into()));
        }
        let dir = self.path_of(wd)?;
        let name = event.name.as_ref().map(AsRef::as_ref);
        let path = match name {
            Some(n) => dir.join(n),
            None => dir,
        };
        if let Some(name) = name
            && mask.contains(EventMask::ISDIR)
        {
            if mask.contains(EventMask::MOVED_FROM) {
                self.forget(wd, name.as_bytes());
            } else if Self::walks(event)
                && let Err(e) = self.add_folder(&path, wd, name.as_bytes())
            {
                return Some(Change::Rescan(format!(
                    "cannot watch the new folder '{}': {e}",
                    path.display()
                )));
            }
        }
        Some(Change::Path(path))
    }

    /// The folder watched as `wd`, then its parent, and so on up to the
    /// origin's folder (fewer if one is missing; at most `DEPTH_MAX + 2`).
    fn chain(&self, wd: i32) -> impl Iterator<Item = &Folder> {
        let mut next = self.folders.get(&wd);
        std::iter::from_fn(move || {
            let at = next?;
            next = at.parent.and_then(|p| self.folders.get(&p));
            Some(at)
        })
        .take(DEPTH_MAX + 2)
    }

    /// The path of a watched folder; `None` if its chain of parents does
    /// not reach the origin's folder (a watch being dropped).
    fn path_of(&self, wd: i32) -> Option<PathBuf> {
        let chain: Vec<&Folder> = self.chain(wd).collect();
        if chain.last()?.parent.is_some() {
            return None;
        }
        let mut path = self.root.clone();
        for folder in chain.iter().rev().skip(1) {
            path.push(OsStr::from_bytes(&folder.name));
        }
        Some(path)
    }

    /// Watches a folder that appeared in `parent`, and its tree.
    fn add_folder(&mut self, path: &Path, parent: i32, name: &[u8]) -> io::Result<()> {
        // The parent's depth: the origin's folder is at 0.
        let depth = self.chain(parent).count().saturating_sub(1);
        let Some(wd) = self.watch(path, parent, name)? else {
            return Ok(());
        };
        self.add_beneath(path.to_path_buf(), wd, depth + 1)
    }

    /// Adds one watch. A folder gone meanwhile, or one we may not read,
    /// is skipped (`None`); running out of watches is an error.
    fn watch(&mut self, path: &Path, parent: i32, name: &[u8]) -> io::Result<Option<i32>> {
        match self.watches.add(path, mask()) {
            Ok(wd) => {
                // inotify gives a folder watched already its old
                // descriptor: it just gets its new place.
                let id = wd.get_watch_descriptor_id();
                self.folders.insert(
                    id,
                    Folder {
                        wd,
                        parent: Some(parent),
                        name: name.into(),
                    },
                );
                Ok(Some(id))
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTDIR | libc::EACCES | libc::ELOOP)
                ) =>
            {
                tracing::debug!(path = %path.display(), error = %e, "folder not watched");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Watches every folder beneath `dir` (watched as `wd`, at `depth`).
    fn add_beneath(&mut self, dir: PathBuf, wd: i32, depth: usize) -> io::Result<()> {
        let mut stack = vec![(dir, wd, depth)];
        while let Some((dir, wd, depth)) = stack.pop() {
            if depth >= DEPTH_MAX {
                tracing::warn!(path = %dir.display(), "folders nested too deep: not watched further");
                continue;
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::debug!(path = %dir.display(), error = %e, "cannot list a watched folder");
                    continue;
                }
            };
            for entry in entries.flatten() {
                // The entry's own type: a symlink to a folder is not one.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let path = entry.path();
                let name = entry.file_name();
                if let Some(child) = self.watch(&path, wd, name.as_bytes())? {
                    stack.push((path, child, depth + 1));
                }
            }
        }
        Ok(())
    }

    /// Drops the watches of the folder `name` of `parent` and of its tree
    /// (it moved away; if it moved within the origin, its new place is
    /// watched afresh when that is reported).
    fn forget(&mut self, parent: i32, name: &[u8]) {
        let Some(top) = self
            .folders
            .iter()
            .find(|(_, f)| f.parent == Some(parent) && &*f.name == name)
            .map(|(&id, _)| id)
        else {
            return;
        };
        let mut gone = vec![top];
        let mut i = 0;
        while i < gone.len() {
            let at = gone[i];
            gone.extend(
                self.folders
                    .iter()
                    .filter(|(_, f)| f.parent == Some(at))
                    .map(|(&id, _)| id),
            );
            i += 1;
        }
        for id in gone {
            if let Some(f) = self.folders.remove(&id) {
                // Already gone if the kernel dropped it first: nothing to do.
                let _ = self.watches.remove(f.wd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inotify::Inotify;
    use std::fs;

    /// Runs `action`, then hands every event the kernel queued meanwhile
    /// (inotify queues them during the system calls) to `w`.
    fn changes(inotify: &mut Inotify, w: &mut FolderWatch, action: impl FnOnce()) -> Vec<Change> {
        action();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        loop {
            match inotify.read_events(&mut buffer) {
                Ok(events) => {
                    let events: Vec<_> = events.map(|e| e.to_owned()).collect();
                    if events.is_empty() {
                        break;
                    }
                    out.extend(events.iter().filter_map(|e| w.event(e)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading inotify: {e}"),
            }
        }
        out
    }

    fn paths(changes: &[Change]) -> Vec<PathBuf> {
        changes
            .iter()
            .map(|c| match c {
                Change::Path(p) => p.clone(),
                Change::Rescan(why) => panic!("unexpected rescan: {why}"),
            })
            .collect()
    }

    #[test]
    fn reading_an_origin_reports_nothing_but_writing_does() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("album")).unwrap();
        let track = dir.path().join("album/01.flac");
        std::fs::write(&track, b"fLaC and some audio").unwrap();
        // What a player, a scanner or our own sync walk does, over many
        // folders: the kernel is not even asked to report it, so no walk
        // can overflow its queue.
        for i in 0..200 {
            std::fs::create_dir(dir.path().join(format!("album/{i}"))).unwrap();
        }
        let mut inotify = Inotify::init().unwrap();
        let mut w = FolderWatch::new(dir.path(), inotify.watches()).unwrap();
        assert_eq!(w.len(), 202);
        let seen = changes(&mut inotify, &mut w, || {
            let mut bytes = Vec::new();
            fs::File::open(&track)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            for entry in walkdir::WalkDir::new(dir.path()) {
                entry.unwrap().metadata().unwrap();
            }
        });
        assert!(seen.is_empty(), "reads and walks were reported: {seen:?}");
        let seen = paths(&changes(&mut inotify, &mut w, || {
            let mut f = fs::OpenOptions::new().append(true).open(&track).unwrap();
            f.write_all(b" retagged").unwrap();
        }));
        assert!(seen.contains(&track), "{seen:?}");
    }

    #[test]
    fn new_moved_and_removed_folders_are_followed_with_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("A/Album")).unwrap();
        fs::write(root.join("A/Album/01.flac"), b"x").unwrap();
        // A symlink to a folder (here, outside the origin) is not followed.
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();

        let mut inotify = Inotify::init().unwrap();
        let mut w = FolderWatch::new(root, inotify.watches()).unwrap();
        assert_eq!(w.len(), 3, "the origin, A and A/Album");

        // A change deep down names its full path.
        let seen = paths(&changes(&mut inotify, &mut w, || {
            fs::write(root.join("A/Album/01.flac"), b"retagged").unwrap();
        }));
        assert!(seen.contains(&root.join("A/Album/01.flac")), "{seen:?}");

        // Nothing outside the origin is watched through the symlink.
        let seen = changes(&mut inotify, &mut w, || {
            fs::write(outside.path().join("x.flac"), b"x").unwrap();
        });
        assert!(seen.is_empty(), "{seen:?}");

        // A new tree: every folder of it is watched at once.
        let seen = paths(&changes(&mut inotify, &mut w, || {
            fs::create_dir_all(root.join("B/One/Two")).unwrap();
        }));
        assert!(seen.contains(&root.join("B")), "{seen:?}");
        let seen = paths(&changes(&mut inotify, &mut w, || {
            fs::write(root.join("B/One/Two/t.flac"), b"x").unwrap();
        }));
        assert!(seen.contains(&root.join("B/One/Two/t.flac")), "{seen:?}");

        // A folder renamed within the origin: events beneath it carry the
        // new path, never the old one.
        let seen = paths(&changes(&mut inotify, &mut w, || {
            fs::rename(root.join("B"), root.join("C")).unwrap();
        }));
        assert!(
            seen.contains(&root.join("B")) && seen.contains(&root.join("C")),
            "{seen:?}"
        );
        let seen = paths(&changes(&mut inotify, &mut w, || {
            fs::write(root.join("C/One/Two/t.flac"), b"y").unwrap();
        }));
        assert!(seen.contains(&root.join("C/One/Two/t.flac")), "{seen:?}");
        assert!(
            !seen.iter().any(|p| p.starts_with(root.join("B"))),
            "{seen:?}"
        );

        // Moved out of the origin: its watches go, and so do its events.
        let away = outside.path().join("away");
        let seen = paths(&changes(&mut inotify, &mut w, || {
            fs::rename(root.join("C"), &away).unwrap();
        }));
        assert!(seen.contains(&root.join("C")), "{seen:?}");
        let before = w.len();
        let seen = changes(&mut inotify, &mut w, || {
            fs::write(away.join("One/Two/t.flac"), b"z").unwrap();
        });
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(w.len(), before);
        assert_eq!(w.len(), 3, "the origin, A and A/Album again");

        // A deleted folder's watch goes with it.
        let seen = paths(&changes(&mut inotify, &mut w, || {
            fs::remove_dir_all(root.join("A")).unwrap();
        }));
        assert!(seen.contains(&root.join("A")), "{seen:?}");
        assert_eq!(w.len(), 1, "only the origin's folder is left");

        // The origin's folder itself going away: only a full sync can tell.
        let moved = outside.path().join("origin-moved");
        let seen = changes(&mut inotify, &mut w, || {
            fs::rename(root, &moved).unwrap();
        });
        assert!(
            seen.iter().any(|c| matches!(c, Change::Rescan(_))),
            "{seen:?}"
        );
        fs::rename(&moved, root).unwrap();
    }
}
