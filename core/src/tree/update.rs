//! Patching a tree after a few catalog entries changed, instead of building
//! it whole: what keeps a sync of one retagged file from holding the whole
//! catalog and a second whole tree (on 200,000 tracks, some 230 MB above
//! the daemon's idle size, and seconds of work).
//!
//! The tree is a pure function of the catalog, and the patch must give
//! exactly what a whole build gives. It can, because with a layout whose
//! top folder follows from a track's own tags
//! ([`Layout::top_folder_is_per_track`]) every naming decision of a build
//! is made among entries that share a top folder or an origin folder:
//!
//! - a track's name, its collision suffix, its mirrors and its album's
//!   disc count are decided among the tracks of its top folder;
//! - a cover, cue sheet, other image or lyrics file is placed by the tracks
//!   of its own origin folder, and an artist image also by the tracks one
//!   folder down;
//! - an inode is its path's hash, as long as no two paths of the tree hash
//!   alike (then the build probes, and only a whole build knows);
//! - a playlist names tracks anywhere: the library's playlists are rebuilt
//!   with the touched folders, and name the tracks outside them as the old
//!   tree shows those (unchanged, as they are outside).
//!
//! [`TreeUpdate`] grows a working set from the changed entries until it is
//! closed under those rules: every entry placed in a top folder it
//! touches, and every entry of an origin folder whose placement a touched
//! track decides. It asks the caller for those entries ([`Need`]; the core
//! reads no database), builds the touched top folders from the working set
//! alone, and splices them into a copy of the old tree. Whatever it cannot
//! vouch for (files at the top; a top folder called like the playlists'
//! one; a probed inode; a working set past its limit; an old tree that is
//! not what the old entries give) makes it decline, and the caller builds
//! whole.

use super::{Body, Builder, DirNode, Node, Outside, Table, VirtualTree};
use crate::catalog::{self, CatalogEntry, FileKind};
use crate::ids::{Ino, OriginId, OriginPath};
use crate::layout::{Layout, TrackView};
use crate::tree::{BuildReport, FileRole, PLAYLISTS_DIR};
use std::collections::{BTreeMap, BTreeSet};

/// An origin file, as the catalog keys it.
pub type FileKey = (OriginId, OriginPath);

/// One changed catalog entry: what the catalog held before the change and
/// what it holds now (`None`: no entry).
#[derive(Clone, Debug)]
pub struct Change {
    /// The entry before.
    pub old: Option<CatalogEntry>,
    /// The entry now.
    pub new: Option<CatalogEntry>,
}

/// Entries the update needs from the catalog as it is now, to be handed
/// to [`TreeUpdate::supply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// The entries of these files (every one of them is in the tree).
    Files(Vec<FileKey>),
    /// Every entry named as a playlist (`.m3u`, `.m3u8`), of every origin:
    /// a library's playlists are rebuilt together.
    Playlists,
    /// Every entry directly in `folder` of `origin` (the origin's top when
    /// empty) and, with `children`, every entry one folder further down.
    Folder {
        /// The origin.
        origin: OriginId,
        /// The folder, without a trailing `/`.
        folder: OriginPath,
        /// Also the entries of its subfolders (not deeper).
        children: bool,
    },
}

impl Need {
    /// Whether `entry` is one of those asked for: how a caller that holds
    /// the catalog in memory answers (the io-shell reads its database by
    /// key ranges instead).
    pub fn asks_for(&self, entry: &CatalogEntry) -> bool {
        let (origin, path) = (entry.source.origin, &entry.source.path);
        match self {
            Need::Files(files) => files.iter().any(|(o, p)| *o == origin && p == path),
            Need::Playlists => {
                catalog::classify_name(path.file_name()) == Some(catalog::NameClass::Playlist)
            }
            Need::Folder {
                origin: o,
                folder,
                children,
            } => {
                let parent = path.parent();
                *o == origin
                    && (parent == folder.as_bytes()
                        || (*children
                            && !parent.is_empty()
                            && OriginPath::new(parent).parent() == folder.as_bytes()))
            }
        }
    }
}

/// Why an update declined: the caller builds the tree whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declined {
    /// The layout's top folder depends on more than a track's own tags.
    Layout,
    /// A top folder is called like the playlists' folder.
    Playlists,
    /// A file sits at the top of the tree.
    FileAtTop,
    /// Two paths of the tree hash to one inode.
    Probed,
    /// The change reaches too much of the library to be worth patching.
    TooLarge,
    /// The old tree is not what the old entries give (a change the caller
    /// did not report), or the catalog lacks a file the tree shows.
    Inconsistent,
}

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Declined::Layout => "the layout's top folder shows the track number",
            Declined::Playlists => "a top folder is called like the playlists' folder",
            Declined::FileAtTop => "a file sits at the top of the tree",
            Declined::Probed => "two paths of the tree share an inode hash",
            Declined::TooLarge => "the change reaches too much of the library",
            Declined::Inconsistent => "the tree does not match the catalog",
        })
    }
}

/// A patched tree.
#[derive(Debug)]
pub struct Updated {
    /// The new tree: equal to a whole build of the new catalog.
    pub tree: VirtualTree,
    /// Its build report: equal to a whole build's.
    pub report: BuildReport,
    /// The top folders rebuilt: nothing outside them changed.
    pub tops: BTreeSet<String>,
    /// The entries now in the catalog that the rebuilt folders were built
    /// from (every entry placed in them is one).
    pub entries: Vec<CatalogEntry>,
}

/// An entry of the working set.
enum Versions {
    /// Unchanged.
    Same(CatalogEntry),
    /// Changed: before and now.
    Changed(Change),
}

impl Versions {
    fn before(&self) -> Option<&CatalogEntry> {
        match self {
            Versions::Same(e) => Some(e),
            Versions::Changed(c) => c.old.as_ref(),
        }
    }

    fn now(&self) -> Option<&CatalogEntry> {
        match self {
            Versions::Same(e) => Some(e),
            Versions::Changed(c) => c.new.as_ref(),
        }
    }
}

/// A folder of an origin.
type FolderKey = (OriginId, OriginPath);

/// An update of one tree, driven by its caller: ask [`TreeUpdate::need`]
/// what to read, [`TreeUpdate::supply`] it, until `need` says nothing;
/// then [`TreeUpdate::finish`].
pub struct TreeUpdate<'t> {
    old: &'t VirtualTree,
    old_report: &'t BuildReport,
    layout: &'t Layout,
    work: BTreeMap<FileKey, Versions>,
    /// Entries whose rules were applied.
    ruled: BTreeSet<FileKey>,
    /// Top folders touched.
    tops: BTreeSet<String>,
    /// Of those, the ones whose old entries were asked for.
    expanded: BTreeSet<String>,
    /// Folders read: with their subfolders (true) or not.
    folders: BTreeMap<FolderKey, bool>,
    /// Folders to read.
    wanted: BTreeMap<FolderKey, bool>,
    /// What was asked last.
    asked: Option<Need>,
    /// The library has playlists, before or after the change: all of them
    /// are rebuilt (a playlist names tracks anywhere).
    playlists: bool,
    /// They were read.
    playlists_read: bool,
    /// The old tree's nodes in the touched top folders, once closed.
    replaced: BTreeSet<Ino>,
    /// The working set's tree, once it is closed.
    built: Option<(VirtualTree, BuildReport)>,
    limit: usize,
    declined: Option<Declined>,
}

impl<'t> TreeUpdate<'t> {
    /// An update of `old` (built from the catalog before `changes` under
    /// `layout`, with `old_report`) for `changes`, one per changed file.
    pub fn new(
        old: &'t VirtualTree,
        old_report: &'t BuildReport,
        layout: &'t Layout,
        changes: impl IntoIterator<Item = Change>,
    ) -> TreeUpdate<'t> {
        let mut update = TreeUpdate {
            old,
            old_report,
            layout,
            work: BTreeMap::new(),
            ruled: BTreeSet::new(),
            tops: BTreeSet::new(),
            expanded: BTreeSet::new(),
            folders: BTreeMap::new(),
            wanted: BTreeMap::new(),
            asked: None,
            playlists: false,
            playlists_read: false,
            replaced: BTreeSet::new(),
            built: None,
            // A patch that needs an eighth of the library costs about what
            // a whole build does.
            limit: (old.file_count() / 8).max(4096),
            declined: None,
        };
        update.declined = update.check_old();
        update.playlists = update
            .old
            .lookup(Ino::ROOT, PLAYLISTS_DIR.as_bytes())
            .is_ok_and(|dir| update.has_playlists(dir));
        for change in changes {
            let Some(key) = change.new.as_ref().or(change.old.as_ref()).map(key_of) else {
                continue;
            };
            update.work.insert(key, Versions::Changed(change));
        }
        update
    }

    /// Why the old tree cannot be patched at all, if it cannot.
    fn check_old(&self) -> Option<Declined> {
        if !self.layout.top_folder_is_per_track() {
            return Some(Declined::Layout);
        }
        if self.old.probed {
            return Some(Declined::Probed);
        }
        let Some(Body::Dir(root)) = self.old.get(Ino::ROOT).map(|n| &n.body) else {
            return Some(Declined::Inconsistent);
        };
        for (name, &ino) in root.children.iter() {
            match self.old.get(ino).map(|n| &n.body) {
                _ if is_playlists_namesake(name) => return Some(Declined::Playlists),
                Some(Body::Dir(_)) => {}
                _ => return Some(Declined::FileAtTop),
            }
        }
        None
    }

    fn has_playlists(&self, dir: Ino) -> bool {
        self.old
            .files_in(dir)
            .any(|(_, f)| f.role == FileRole::Playlist)
    }

    /// What to read next from the catalog as it is now, or `None` when the
    /// update has all it needs (or declined): then [`TreeUpdate::finish`].
    pub fn need(&mut self) -> Option<Need> {
        loop {
            if self.declined.is_some() {
                return None;
            }
            if self.work.len() > self.limit {
                self.declined = Some(Declined::TooLarge);
                return None;
            }
            self.apply_rules();
            if self.declined.is_some() {
                return None;
            }
            if self.playlists && !self.playlists_read {
                self.tops.insert(PLAYLISTS_DIR.to_owned());
                self.asked = Some(Need::Playlists);
                return Some(Need::Playlists);
            }
            if let Some(need) = self.next_top() {
                return Some(need);
            }
            if let Some(((origin, folder), children)) = self.wanted.pop_first() {
                if self.folders.get(&(origin, folder.clone())) >= Some(&children) {
                    continue;
                }
                let need = Need::Folder {
                    origin,
                    folder,
                    children,
                };
                self.asked = Some(need.clone());
                return Some(need);
            }
            self.build_new();
            return None;
        }
    }

    /// The entries [`TreeUpdate::need`] asked for, as the catalog holds
    /// them now. Entries already known are ignored.
    pub fn supply(&mut self, entries: impl IntoIterator<Item = CatalogEntry>) {
        let asked = self.asked.take();
        let entries: Vec<CatalogEntry> = entries.into_iter().collect();
        if let Some(Need::Folder {
            origin,
            folder,
            children: false,
        }) = &asked
            && !self.has_sidecars(*origin, folder, &entries)
        {
            // The tracks of a folder place only the sidecars beside them
            // (and an artist image one folder up, which asks for them
            // itself): with none, they matter to nothing but their own
            // top folders. A messy `incoming/` folder of many artists
            // would otherwise pull half the library in.
            self.folder_read((*origin, folder.clone()), false);
            return;
        }
        let mut subfolders = BTreeSet::new();
        for entry in entries {
            let key = key_of(&entry);
            if let Some(Need::Folder { folder, .. }) = &asked
                && key.1.parent() != folder.as_bytes()
            {
                subfolders.insert((key.0, OriginPath::new(key.1.parent())));
            }
            self.work.entry(key).or_insert(Versions::Same(entry));
        }
        match asked {
            // The tree shows a file the catalog does not hold, and no
            // change said it went.
            Some(Need::Files(keys)) if keys.iter().any(|k| !self.work.contains_key(k)) => {
                self.declined = Some(Declined::Inconsistent);
            }
            Some(Need::Folder {
                origin,
                folder,
                children,
            }) => {
                self.folder_read((origin, folder), children);
                // Its subfolders were read whole too.
                for sub in subfolders.into_iter().filter(|_| children) {
                    self.folder_read(sub, false);
                }
            }
            Some(Need::Playlists) => self.playlists_read = true,
            Some(Need::Files(_)) | None => {}
        }
    }

    /// Whether `folder` has a sidecar now (in `entries`, its entries) or
    /// had one before the change.
    fn has_sidecars(
        &self,
        origin: OriginId,
        folder: &OriginPath,
        entries: &[CatalogEntry],
    ) -> bool {
        let in_folder = |e: &CatalogEntry| {
            e.source.origin == origin && e.source.path.parent() == folder.as_bytes()
        };
        entries.iter().filter(|e| in_folder(e)).any(is_sidecar)
            || self
                .work
                .values()
                .flat_map(|v| [v.before(), v.now()])
                .flatten()
                .filter(|e| in_folder(e))
                .any(is_sidecar)
    }

    fn folder_read(&mut self, folder: FolderKey, children: bool) {
        let read = self.folders.entry(folder).or_insert(children);
        *read |= children;
    }

    /// Applies the closure rules to every entry not yet ruled.
    fn apply_rules(&mut self) {
        let fresh: Vec<FileKey> = self
            .work
            .keys()
            .filter(|k| !self.ruled.contains(*k))
            .cloned()
            .collect();
        for key in fresh {
            self.ruled.insert(key.clone());
            let Some(versions) = self.work.get(&key) else {
                continue;
            };
            let (old, new) = (versions.before().cloned(), versions.now().cloned());
            // Where the old version was placed: its top folder is rebuilt.
            if let Some(top) = self.old_top(&key) {
                self.tops.insert(top);
            }
            for (entry, is_new) in [(old, false), (new, true)] {
                let Some(entry) = entry else { continue };
                self.rule(&key, &entry, is_new);
            }
        }
    }

    /// The rules for one version of one entry.
    fn rule(&mut self, key: &FileKey, entry: &CatalogEntry, is_new: bool) {
        let (origin, path) = key;
        let folder = OriginPath::new(path.parent());
        match &entry.kind {
            FileKind::Playlist(_) => self.playlists = true,
            FileKind::Unreadable(_) => {}
            FileKind::Track(tags) => {
                // Its folder's sidecars are placed by it; so are the
                // artist images one folder up.
                if !folder.as_bytes().is_empty() {
                    let up = OriginPath::new(folder.parent());
                    self.want(*origin, up, false);
                }
                self.want(*origin, folder, false);
                if is_new {
                    let ext = path.extension_lower();
                    let stem = path.stem_lossy();
                    let view = TrackView {
                        tags,
                        ext: &ext,
                        stem: &stem,
                        multi_disc: false,
                    };
                    let rendered = self.layout.render(&view);
                    if let Some(top) = rendered.first().filter(|_| rendered.len() > 1) {
                        self.tops.insert(top.replace('\0', " "));
                    } else {
                        self.declined = Some(Declined::FileAtTop);
                    }
                }
            }
            FileKind::Image if catalog::is_artist_image_name(path.file_name()) => {
                self.want(*origin, folder, true);
            }
            FileKind::Cover | FileKind::Cue | FileKind::Image | FileKind::Lyrics => {
                self.want(*origin, folder, false);
            }
        }
    }

    fn want(&mut self, origin: OriginId, folder: OriginPath, children: bool) {
        let key = (origin, folder);
        if self.folders.get(&key) >= Some(&children) {
            return;
        }
        let wanted = self.wanted.entry(key).or_insert(children);
        *wanted |= children;
    }

    /// The top folder the old tree shows an origin file in.
    fn old_top(&self, key: &FileKey) -> Option<String> {
        let (mut ino, _) = self.old.find_source(key.0, &key.1)?;
        for _ in 0..4096 {
            let node = self.old.get(ino)?;
            if node.parent == Ino::ROOT {
                return Some(node.name.clone());
            }
            ino = node.parent;
        }
        None
    }

    /// Asks for the old tree's files in a touched top folder not yet
    /// expanded.
    fn next_top(&mut self) -> Option<Need> {
        loop {
            let top = self
                .tops
                .iter()
                .find(|t| !self.expanded.contains(*t))?
                .clone();
            self.expanded.insert(top.clone());
            let Ok(ino) = self.old.lookup(Ino::ROOT, top.as_bytes()) else {
                continue; // a new top folder
            };
            let keys: Vec<FileKey> = self
                .old
                .files_under(ino)
                .into_iter()
                .filter_map(|f| self.old.file(f))
                .flat_map(|f| f.sources.iter().map(|s| (s.origin, s.path.clone())))
                .filter(|k| !self.work.contains_key(k))
                .collect();
            if keys.is_empty() {
                continue;
            }
            let need = Need::Files(keys);
            self.asked = Some(need.clone());
            return Some(need);
        }
    }

    /// Builds the working set as it is now. Every top folder it fills must
    /// be touched already: a sidecar goes where the tracks of its folder
    /// go, and those tracks are in the set with their top folders.
    fn build_new(&mut self) {
        self.replaced = self.replaced_nodes();
        let (tree, report) = self.build(self.work.values().filter_map(Versions::now).collect());
        if let Some(Body::Dir(root)) = tree.get(Ino::ROOT).map(|n| &n.body) {
            if root.children.keys().any(|name| !self.tops.contains(name)) {
                self.declined = Some(Declined::Inconsistent);
                return;
            }
            if root.children.keys().any(|name| is_playlists_namesake(name)) {
                self.declined = Some(Declined::Playlists);
                return;
            }
        }
        self.built = Some((tree, report));
    }

    /// Builds `entries` as the touched top folders of the tree, their
    /// playlists naming tracks outside them as the old tree shows those.
    fn build(&self, entries: Vec<&CatalogEntry>) -> (VirtualTree, BuildReport) {
        let (old, replaced) = (self.old, &self.replaced);
        // Only playlists ask (a walk of every file otherwise wasted).
        let origins = if self.playlists {
            old.files()
                .filter(|(ino, f)| f.role == FileRole::Track && !replaced.contains(ino))
                .flat_map(|(_, f)| f.sources.iter().map(|s| s.origin))
                .collect()
        } else {
            BTreeSet::new()
        };
        let outside = Outside {
            track: Box::new(move |origin: OriginId, path: &[u8]| {
                let (ino, _) = old.find_source(origin, &OriginPath::new(path))?;
                let file = old.file(ino)?;
                if file.role != FileRole::Track || replaced.contains(&ino) {
                    return None;
                }
                Some((old.path_of(ino)?, old.get(ino)?.mtime_ns))
            }),
            origins,
        };
        let mut builder = Builder::new(self.layout);
        builder.outside = Some(&outside);
        builder.build(&entries)
    }

    /// The patched tree, or why the update declined.
    pub fn finish(mut self) -> Result<Updated, Declined> {
        if let Some(why) = self.declined {
            return Err(why);
        }
        let Some((new, new_report)) = self.built.take() else {
            return Err(Declined::Inconsistent);
        };
        // The old entries must give exactly the old tree's top folders:
        // that is what says the change was reported whole.
        let (before, before_report) =
            self.build(self.work.values().filter_map(Versions::before).collect());
        let replaced = std::mem::take(&mut self.replaced);
        if before.probed || new.probed {
            return Err(Declined::Probed);
        }
        if before.nodes.len() != replaced.len() + 1
            || before
                .nodes
                .iter()
                .filter(|(ino, _)| **ino != Ino::ROOT)
                .any(|(ino, node)| self.old.get(*ino) != Some(node) || !replaced.contains(ino))
        {
            return Err(Declined::Inconsistent);
        }
        drop(before);
        let report = patch_report(self.old_report, &before_report, &new_report)
            .ok_or(Declined::Inconsistent)?;
        let tree = self.splice(&replaced, new)?;
        let entries = std::mem::take(&mut self.work)
            .into_values()
            .filter_map(|v| match v {
                Versions::Same(e) => Some(e),
                Versions::Changed(c) => c.new,
            })
            .collect();
        Ok(Updated {
            tree,
            report,
            tops: self.tops,
            entries,
        })
    }

    /// The old tree's nodes in the touched top folders (the folders too).
    fn replaced_nodes(&self) -> BTreeSet<Ino> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<Ino> = self
            .tops
            .iter()
            .filter_map(|t| self.old.lookup(Ino::ROOT, t.as_bytes()).ok())
            .collect();
        while let Some(ino) = stack.pop() {
            if !out.insert(ino) {
                continue;
            }
            if let Some(Body::Dir(d)) = self.old.get(ino).map(|n| &n.body) {
                stack.extend(d.children.values().copied());
            }
        }
        out
    }

    /// The old tree with the touched top folders replaced by `new`'s.
    fn splice(&self, replaced: &BTreeSet<Ino>, new: VirtualTree) -> Result<VirtualTree, Declined> {
        let old = self.old;
        let Some(Body::Dir(old_root)) = old.get(Ino::ROOT).map(|n| &n.body) else {
            return Err(Declined::Inconsistent);
        };
        // A new node may not take an inode the rest of the tree holds: a
        // whole build would have probed.
        if new
            .nodes
            .keys()
            .any(|ino| *ino != Ino::ROOT && old.get(*ino).is_some() && !replaced.contains(ino))
        {
            return Err(Declined::Probed);
        }
        let (new_keys, new_values) = new.nodes.into_parts();
        let mut root_children: BTreeMap<String, Ino> = old_root
            .children
            .iter()
            .filter(|(name, _)| !self.tops.contains(*name))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        let mut files = old.files;
        let mut bytes = old.bytes;
        for ino in replaced {
            if let Some(Body::File(f)) = old.get(*ino).map(|n| &n.body) {
                files -= 1;
                bytes -= f.size;
            }
        }
        for (ino, node) in new_keys.iter().zip(&new_values) {
            match &node.body {
                Body::File(f) if *ino != Ino::ROOT => {
                    if node.parent == Ino::ROOT {
                        return Err(Declined::FileAtTop);
                    }
                    files += 1;
                    bytes += f.size;
                }
                Body::Dir(_) if *ino != Ino::ROOT && node.parent == Ino::ROOT => {
                    root_children.insert(node.name.clone(), *ino);
                }
                _ => {}
            }
        }
        // Merge the two ino-ordered node lists, the new root in place of
        // the old one.
        let mut keys = Vec::with_capacity(old.nodes.len() + new_keys.len());
        let mut values = Vec::with_capacity(keys.capacity());
        let kept = old
            .nodes
            .iter()
            .filter(|(ino, _)| **ino != Ino::ROOT && !replaced.contains(*ino))
            .map(|(ino, node)| (*ino, node.clone()));
        let added = new_keys
            .into_iter()
            .zip(new_values)
            .filter(|(ino, _)| *ino != Ino::ROOT);
        let mut kept = kept.peekable();
        let mut added = added.peekable();
        loop {
            let take_kept = match (kept.peek(), added.peek()) {
                (Some(a), Some(b)) => a.0 < b.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let (ino, node) =
                if take_kept { kept.next() } else { added.next() }.ok_or(Declined::Inconsistent)?;
            keys.push(ino);
            values.push(node);
        }
        let mtime_of = |ino: &Ino| -> i64 {
            match keys.binary_search(ino) {
                Ok(i) => values[i].mtime_ns,
                Err(_) => 0,
            }
        };
        let root = Node {
            parent: Ino::ROOT,
            name: String::new(),
            mtime_ns: root_children.values().map(mtime_of).max().unwrap_or(0),
            body: Body::Dir(DirNode {
                subdirs: root_children.len() as u32,
                children: root_children.into_iter().collect(),
            }),
        };
        let at = keys.partition_point(|ino| *ino < Ino::ROOT);
        keys.insert(at, Ino::ROOT);
        values.insert(at, root);
        Ok(VirtualTree::from_nodes(
            Table::from_sorted(keys, values),
            files,
            bytes,
            false,
        ))
    }
}

/// A top folder's name that a build gives an artist called like the
/// playlists' folder ("Playlists (2)"): which name goes to whom depends on
/// the whole library.
fn is_playlists_namesake(name: &str) -> bool {
    name.strip_prefix(PLAYLISTS_DIR)
        .is_some_and(|rest| rest.starts_with(" ("))
}

/// A file placed by the tracks beside it.
fn is_sidecar(entry: &CatalogEntry) -> bool {
    matches!(
        entry.kind,
        FileKind::Cover | FileKind::Cue | FileKind::Image | FileKind::Lyrics
    )
}

fn key_of(entry: &CatalogEntry) -> FileKey {
    (entry.source.origin, entry.source.path.clone())
}

/// `old` without what `minus` counted, plus what `plus` counted; `None` if
/// `minus` counted more than `old` (then `old` was not this catalog's).
fn patch_report(old: &BuildReport, minus: &BuildReport, plus: &BuildReport) -> Option<BuildReport> {
    // Every field, each named once (a new field fails to compile here).
    macro_rules! patched {
        ($($field:ident),* $(,)?) => {
            BuildReport {
                $($field: old.$field.checked_sub(minus.$field)? + plus.$field),*
            }
        };
    }
    Some(patched!(
        tracks,
        mirrors,
        renamed,
        covers,
        covers_ambiguous,
        unreadable,
        lyrics,
        images,
        artist_images,
        cues,
        playlists,
        playlist_entries_missing,
        sidecars_left_out,
    ))
}
