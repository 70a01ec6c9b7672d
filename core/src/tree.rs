//! The virtual tree: `Artist/Album/NN - Title.ext`, built from the catalog.
//!
//! The tree is a pure function of the catalog and the layout: the same
//! library gives the same names and the same inode numbers on every mount,
//! because names are decided in a fixed order and an inode number is a hash
//! of the node's virtual path. A sync rebuilds the tree and [`diff`]s it
//! against the old one to tell the kernel precisely what changed.

use crate::catalog::{CatalogEntry, FileKind, SourceFile};
use crate::fs::{Attr, DirEntry, Errno, NodeKind};
use crate::ids::{Ino, OriginId};
use crate::layout::{Layout, TrackView};
use crate::naming;
use crate::tags::TrackTags;
use std::collections::{BTreeMap, BTreeSet};

/// What a file node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    /// An audio track.
    Track,
    /// Cover art beside an album's tracks.
    Cover,
}

/// A file of the virtual tree and where its bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileNode {
    /// Size in bytes.
    pub size: u64,
    /// The origin files holding these bytes: one, or several mirrors (the
    /// same track, same size, in different origins), in priority order.
    pub sources: Vec<SourceFile>,
    /// Track or cover.
    pub role: FileRole,
}

/// A directory's entries, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirNode {
    /// Name to inode.
    pub children: BTreeMap<String, Ino>,
    subdirs: u32,
}

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A directory.
    Dir(DirNode),
    /// A file.
    File(FileNode),
}

/// One node of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The parent directory (the root is its own parent).
    pub parent: Ino,
    /// Name within the parent (empty for the root).
    pub name: String,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Directory or file.
    pub body: Body,
}

impl Node {
    fn kind(&self) -> NodeKind {
        match self.body {
            Body::Dir(_) => NodeKind::Dir,
            Body::File(_) => NodeKind::File,
        }
    }
}

/// Counts from building a tree, for the scan summary and the logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// Tracks placed in the tree (mirrors count once).
    pub tracks: usize,
    /// Extra origins found for tracks already placed.
    pub mirrors: usize,
    /// Tracks whose name was taken and got a " (n)" suffix.
    pub renamed: usize,
    /// Cover images placed beside an album.
    pub covers: usize,
    /// Cover images left out because their folder held several albums.
    pub covers_ambiguous: usize,
    /// Files whose tags could not be read.
    pub unreadable: usize,
}

/// The virtual tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualTree {
    nodes: BTreeMap<Ino, Node>,
    files: usize,
    /// Which file each origin file backs.
    by_source: BTreeMap<(OriginId, crate::ids::OriginPath), Ino>,
}

impl Default for VirtualTree {
    fn default() -> Self {
        VirtualTree::empty()
    }
}

impl VirtualTree {
    /// A tree with only its root.
    pub fn empty() -> VirtualTree {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            Ino::ROOT,
            Node {
                parent: Ino::ROOT,
                name: String::new(),
                mtime_ns: 0,
                body: Body::Dir(DirNode::default()),
            },
        );
        VirtualTree {
            nodes,
            files: 0,
            by_source: BTreeMap::new(),
        }
    }

    /// Builds the tree for `catalog` under `layout`.
    pub fn build(layout: &Layout, catalog: &[CatalogEntry]) -> (VirtualTree, BuildReport) {
        Builder::new(layout).build(catalog)
    }

    /// The node with inode `ino`.
    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The file node with inode `ino`.
    pub fn file(&self, ino: Ino) -> Option<&FileNode> {
        match self.nodes.get(&ino).map(|n| &n.body) {
            Some(Body::File(f)) => Some(f),
            _ => None,
        }
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when only the root exists.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// Number of file nodes.
    pub fn file_count(&self) -> usize {
        self.files
    }

    /// Every file node, in inode order.
    pub fn files(&self) -> impl Iterator<Item = (Ino, &FileNode)> + '_ {
        self.nodes.iter().filter_map(|(&ino, n)| match &n.body {
            Body::File(f) => Some((ino, f)),
            Body::Dir(_) => None,
        })
    }

    /// The file an origin file backs, and that source as the tree knows it
    /// (its version is the one the tree shows).
    pub fn find_source(
        &self,
        origin: OriginId,
        path: &crate::ids::OriginPath,
    ) -> Option<(Ino, &SourceFile)> {
        let ino = *self.by_source.get(&(origin, path.clone()))?;
        let file = self.file(ino)?;
        let src = file
            .sources
            .iter()
            .find(|s| s.origin == origin && &s.path == path)?;
        Some((ino, src))
    }

    /// The child of `parent` called `name`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Ino, Errno> {
        let dir = self.dir(parent)?;
        let name = std::str::from_utf8(name).map_err(|_| Errno::NoEnt)?;
        dir.children.get(name).copied().ok_or(Errno::NoEnt)
    }

    /// The attributes of `ino`.
    pub fn attr(&self, ino: Ino) -> Option<Attr> {
        let node = self.nodes.get(&ino)?;
        Some(match &node.body {
            Body::Dir(d) => Attr {
                ino,
                size: d.children.len() as u64,
                mtime_ns: node.mtime_ns,
                kind: NodeKind::Dir,
                nlink: 2 + d.subdirs,
            },
            Body::File(f) => Attr {
                ino,
                size: f.size,
                mtime_ns: node.mtime_ns,
                kind: NodeKind::File,
                nlink: 1,
            },
        })
    }

    /// Up to `limit` entries of directory `ino` from `offset` on, with "."
    /// and ".." first. Offsets are positions, so a listing resumes where the
    /// previous call stopped.
    pub fn readdir(&self, ino: Ino, offset: u64, limit: usize) -> Result<Vec<DirEntry>, Errno> {
        let node = self.nodes.get(&ino).ok_or(Errno::NoEnt)?;
        let Body::Dir(dir) = &node.body else {
            return Err(Errno::NotDir);
        };
        let dots = [(".", ino), ("..", node.parent)];
        let mut out = Vec::new();
        let dot_entries = dots
            .into_iter()
            .map(|(name, ino)| (name, ino, NodeKind::Dir));
        let children = dir.children.iter().map(|(name, &child)| {
            let kind = self.nodes.get(&child).map_or(NodeKind::File, Node::kind);
            (name.as_str(), child, kind)
        });
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (name, child, kind)) in dot_entries.chain(children).enumerate().skip(start) {
            if out.len() >= limit {
                break;
            }
            out.push(DirEntry {
                ino: child,
                next_offset: i as u64 + 1,
                kind,
                name: name.to_owned(),
            });
        }
        Ok(out)
    }

    /// The path of `ino` from the root, `/`-separated, without a leading `/`.
    pub fn path_of(&self, ino: Ino) -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != Ino::ROOT {
            let node = self.nodes.get(&cur)?;
            parts.push(node.name.as_str());
            cur = node.parent;
            if parts.len() > 4096 {
                return None; // a cycle would be a bug; never loop forever
            }
        }
        parts.reverse();
        Some(parts.join("/"))
    }

    /// Every file at or under `ino` (a file: itself), in tree order.
    pub fn files_under(&self, ino: Ino) -> Vec<Ino> {
        let mut out = Vec::new();
        let mut stack = vec![ino];
        while let Some(cur) = stack.pop() {
            match self.nodes.get(&cur).map(|n| &n.body) {
                Some(Body::File(_)) => out.push(cur),
                Some(Body::Dir(d)) => stack.extend(d.children.values().rev()),
                None => {}
            }
        }
        out
    }

    /// The inode at `path` (`/`-separated, relative to the root).
    pub fn resolve(&self, path: &str) -> Option<Ino> {
        path.split('/')
            .filter(|c| !c.is_empty())
            .try_fold(Ino::ROOT, |dir, name| {
                self.lookup(dir, name.as_bytes()).ok()
            })
    }

    fn dir(&self, ino: Ino) -> Result<&DirNode, Errno> {
        match self.nodes.get(&ino).map(|n| &n.body) {
            Some(Body::Dir(d)) => Ok(d),
            Some(Body::File(_)) => Err(Errno::NotDir),
            None => Err(Errno::NoEnt),
        }
    }
}

/// What the kernel must forget after a tree was replaced by a newer one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeDiff {
    /// Names that appeared or disappeared, as (parent, name).
    pub entries: Vec<(Ino, String)>,
    /// Of those, the ones whose old node is gone or replaced, as (parent,
    /// old child, name): the kernel can be told of a deletion
    /// (FUSE_NOTIFY_DELETE), which also tells inotify watchers.
    pub deleted: Vec<(Ino, Ino, String)>,
    /// Nodes whose attributes or listing changed.
    pub inodes: Vec<Ino>,
}

impl TreeDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.inodes.is_empty()
    }

    /// The folders of `new` (this diff's newer tree) a media server should
    /// look at again, as paths from the root (`""` is the root): a folder
    /// that appeared, the folder of a file that appeared or changed, the
    /// folder of anything that vanished. A folder inside another one of
    /// the set is left out (looking at a folder looks inside it). At most
    /// `max` folders; past that, the root alone.
    pub fn changed_folders(&self, new: &VirtualTree, max: usize) -> BTreeSet<String> {
        let mut inos: BTreeSet<Ino> = BTreeSet::new();
        for (parent, name) in &self.entries {
            match new.lookup(*parent, name.as_bytes()) {
                Ok(child) if new.file(child).is_none() => inos.insert(child),
                _ => inos.insert(*parent),
            };
        }
        for &ino in &self.inodes {
            if new.file(ino).is_some()
                && let Some(node) = new.get(ino)
            {
                inos.insert(node.parent);
            }
        }
        let paths: BTreeSet<String> = inos.iter().filter_map(|&i| new.path_of(i)).collect();
        if paths.len() > max || paths.contains("") {
            return if paths.is_empty() {
                paths
            } else {
                BTreeSet::from([String::new()])
            };
        }
        let inside_another = |p: &str| p.match_indices('/').any(|(i, _)| paths.contains(&p[..i]));
        paths
            .iter()
            .filter(|p| !inside_another(p))
            .cloned()
            .collect()
    }
}

/// What changed between `old` and `new`, for precise cache invalidation:
/// unchanged folders stay cached in the kernel.
pub fn diff(old: &VirtualTree, new: &VirtualTree) -> TreeDiff {
    let mut out = TreeDiff::default();
    for (&ino, old_node) in &old.nodes {
        let Some(new_node) = new.nodes.get(&ino) else {
            continue; // its parent's listing changed; reported there
        };
        match (&old_node.body, &new_node.body) {
            (Body::Dir(a), Body::Dir(b)) => {
                let names: BTreeSet<&String> = a.children.keys().chain(b.children.keys()).collect();
                let mut changed = false;
                for name in names {
                    let (was, is) = (a.children.get(name), b.children.get(name));
                    if was != is {
                        out.entries.push((ino, name.clone()));
                        if let Some(&old) = was {
                            out.deleted.push((ino, old, name.clone()));
                        }
                        changed = true;
                    }
                }
                if changed || old_node.mtime_ns != new_node.mtime_ns {
                    out.inodes.push(ino);
                }
            }
            (Body::File(a), Body::File(b)) => {
                if a.size != b.size
                    || old_node.mtime_ns != new_node.mtime_ns
                    || a.sources != b.sources
                {
                    out.inodes.push(ino);
                }
            }
            _ => out.inodes.push(ino),
        }
    }
    out
}

/// A node while the tree is being built, before inode numbers exist.
struct Proto {
    parent: usize,
    name: String,
    mtime_ns: i64,
    kind: ProtoKind,
}

enum ProtoKind {
    Dir(BTreeMap<String, usize>),
    File {
        /// The name the layout asked for, before any " (n)" suffix.
        wanted: String,
        file: FileNode,
    },
}

struct Builder<'a> {
    layout: &'a Layout,
    protos: Vec<Proto>,
    report: BuildReport,
}

/// A track with its rendered path, ready to be placed.
struct Placed<'a> {
    components: Vec<String>,
    ext: String,
    entry: &'a CatalogEntry,
}

const ROOT: usize = 0;

impl<'a> Builder<'a> {
    fn new(layout: &'a Layout) -> Builder<'a> {
        let root = Proto {
            parent: ROOT,
            name: String::new(),
            mtime_ns: 0,
            kind: ProtoKind::Dir(BTreeMap::new()),
        };
        Builder {
            layout,
            protos: vec![root],
            report: BuildReport::default(),
        }
    }

    fn build(mut self, catalog: &[CatalogEntry]) -> (VirtualTree, BuildReport) {
        let mut tracks = self.render_tracks(catalog);
        // A fixed order makes collision suffixes, mirrors and inode probing
        // the same on every mount, whatever order the scan finished in.
        tracks.sort_by(|a, b| {
            (&a.components, a.entry.source.origin, &a.entry.source.path).cmp(&(
                &b.components,
                b.entry.source.origin,
                &b.entry.source.path,
            ))
        });
        let mut album_of_folder: BTreeMap<(OriginId, &[u8]), BTreeSet<usize>> = BTreeMap::new();
        for track in &tracks {
            let dir = self.place_track(track);
            let src = &track.entry.source;
            album_of_folder
                .entry((src.origin, src.path.parent()))
                .or_default()
                .insert(dir);
        }
        self.place_covers(catalog, &album_of_folder);
        self.report.unreadable = catalog
            .iter()
            .filter(|e| matches!(e.kind, FileKind::Unreadable(_)))
            .count();
        let report = std::mem::take(&mut self.report);
        (self.finish(), report)
    }

    /// Renders every track, deciding per album whether it spans several discs.
    fn render_tracks(&self, catalog: &'a [CatalogEntry]) -> Vec<Placed<'a>> {
        let tracks: Vec<(&CatalogEntry, &TrackTags, String, String)> = catalog
            .iter()
            .filter_map(|e| match &e.kind {
                FileKind::Track(tags) => Some((
                    e,
                    tags,
                    e.source.path.extension_lower(),
                    e.source.path.stem_lossy(),
                )),
                _ => None,
            })
            .collect();
        fn view<'v>(
            tags: &'v TrackTags,
            ext: &'v str,
            stem: &'v str,
            multi_disc: bool,
        ) -> TrackView<'v> {
            TrackView {
                tags,
                ext,
                stem,
                multi_disc,
            }
        }
        let mut multi_disc_albums = BTreeSet::new();
        let mut album_keys = Vec::with_capacity(tracks.len());
        for (_, tags, ext, stem) in &tracks {
            let mut comps = self.layout.render(&view(tags, ext, stem, false));
            comps.pop();
            if tags.disc_total.is_some_and(|t| t > 1) || tags.disc.is_some_and(|d| d > 1) {
                multi_disc_albums.insert(comps.clone());
            }
            album_keys.push(comps);
        }
        tracks
            .into_iter()
            .zip(album_keys)
            .map(|((entry, tags, ext, stem), key)| {
                let multi = multi_disc_albums.contains(&key);
                let components = self.layout.render(&view(tags, &ext, &stem, multi));
                Placed {
                    components,
                    ext,
                    entry,
                }
            })
            .collect()
    }

    /// Places one track; returns the index of its directory.
    fn place_track(&mut self, track: &Placed<'_>) -> usize {
        let (file_name, dirs) = match track.components.split_last() {
            Some((last, dirs)) => (last.as_str(), dirs),
            None => ("_", &[][..]),
        };
        let mut dir = ROOT;
        for name in dirs {
            dir = self.child_dir(dir, name);
        }
        let src = &track.entry.source;
        let file = FileNode {
            size: src.version.size,
            sources: vec![src.clone()],
            role: FileRole::Track,
        };
        let ext = if file_name.ends_with(&format!(".{}", track.ext)) && !track.ext.is_empty() {
            track.ext.as_str()
        } else {
            ""
        };
        self.place_file(dir, file_name, ext, file, src.version.mtime_ns);
        dir
    }

    /// The directory `name` in `parent`, created if needed. A file already
    /// holding that name pushes the directory to "name (2)".
    fn child_dir(&mut self, parent: usize, name: &str) -> usize {
        for n in 1u32.. {
            let candidate = if n == 1 {
                name.to_owned()
            } else {
                naming::with_collision_suffix(name, "", n)
            };
            match self.children(parent).get(&candidate).copied() {
                Some(idx) if matches!(self.protos[idx].kind, ProtoKind::Dir(_)) => return idx,
                Some(_) => continue,
                None => return self.add(parent, candidate, 0, ProtoKind::Dir(BTreeMap::new())),
            }
        }
        unreachable!("u32 suffixes exhausted")
    }

    /// Adds a file under `parent` as `name`, or as a mirror of an equal file
    /// from another origin, or under the first free " (n)" variant.
    fn place_file(&mut self, parent: usize, name: &str, ext: &str, file: FileNode, mtime_ns: i64) {
        let base = name
            .strip_suffix(&format!(".{ext}"))
            .filter(|_| !ext.is_empty())
            .unwrap_or(name);
        for n in 1u32.. {
            let candidate = if n == 1 {
                name.to_owned()
            } else {
                naming::with_collision_suffix(base, ext, n)
            };
            let Some(idx) = self.children(parent).get(&candidate).copied() else {
                if n > 1 {
                    self.report.renamed += 1;
                }
                match file.role {
                    FileRole::Track => self.report.tracks += 1,
                    FileRole::Cover => self.report.covers += 1,
                }
                let kind = ProtoKind::File {
                    wanted: name.to_owned(),
                    file,
                };
                self.add(parent, candidate, mtime_ns, kind);
                return;
            };
            let proto = &mut self.protos[idx];
            if let ProtoKind::File {
                wanted,
                file: existing,
            } = &mut proto.kind
                && *wanted == name
                && is_mirror(existing, &file)
            {
                existing.sources.extend(file.sources);
                proto.mtime_ns = proto.mtime_ns.max(mtime_ns);
                self.report.mirrors += 1;
                return;
            }
        }
    }

    /// Puts each cover image in the album folder of the tracks beside it, if
    /// those tracks all went to one album. A messy "incoming" folder holding
    /// many albums would otherwise spread one cover over all of them.
    fn place_covers(
        &mut self,
        catalog: &[CatalogEntry],
        album_of_folder: &BTreeMap<(OriginId, &[u8]), BTreeSet<usize>>,
    ) {
        let mut covers: Vec<&CatalogEntry> = catalog
            .iter()
            .filter(|e| matches!(e.kind, FileKind::Cover))
            .collect();
        covers.sort_by(|a, b| {
            (a.source.origin, &a.source.path).cmp(&(b.source.origin, &b.source.path))
        });
        for cover in covers {
            let src = &cover.source;
            let albums = album_of_folder.get(&(src.origin, src.path.parent()));
            let Some(dir) = albums
                .filter(|a| a.len() == 1)
                .and_then(|a| a.first().copied())
            else {
                if albums.is_some() {
                    self.report.covers_ambiguous += 1;
                }
                continue;
            };
            let ext = src.path.extension_lower();
            let stem = naming::sanitize_component(&src.path.stem_lossy());
            let stem = if stem.is_empty() {
                "cover".to_owned()
            } else {
                stem
            };
            let name = naming::fit_name(&stem, &ext);
            let file = FileNode {
                size: src.version.size,
                sources: vec![src.clone()],
                role: FileRole::Cover,
            };
            self.place_file(dir, &name, &ext, file, src.version.mtime_ns);
        }
    }

    fn children(&self, dir: usize) -> &BTreeMap<String, usize> {
        match &self.protos[dir].kind {
            ProtoKind::Dir(children) => children,
            ProtoKind::File { .. } => unreachable!("only directories have children"),
        }
    }

    fn add(&mut self, parent: usize, name: String, mtime_ns: i64, kind: ProtoKind) -> usize {
        let idx = self.protos.len();
        match &mut self.protos[parent].kind {
            ProtoKind::Dir(children) => children.insert(name.clone(), idx),
            ProtoKind::File { .. } => unreachable!("files are never parents"),
        };
        self.protos.push(Proto {
            parent,
            name,
            mtime_ns,
            kind,
        });
        idx
    }

    /// Gives every node its inode (a hash of its path, probed past any
    /// collision in path order) and every directory the mtime of its newest
    /// descendant.
    fn finish(mut self) -> VirtualTree {
        let mut order = Vec::with_capacity(self.protos.len());
        let mut paths = vec![String::new(); self.protos.len()];
        let mut stack = vec![ROOT];
        while let Some(idx) = stack.pop() {
            order.push(idx);
            if let ProtoKind::Dir(children) = &self.protos[idx].kind {
                for &child in children.values().rev() {
                    paths[child] = if idx == ROOT {
                        self.protos[child].name.clone()
                    } else {
                        format!("{}/{}", paths[idx], self.protos[child].name)
                    };
                    stack.push(child);
                }
            }
        }
        // Children come after parents in `order`: walk it backwards to lift
        // each directory's mtime to its newest descendant.
        for &idx in order.iter().rev() {
            if idx != ROOT {
                let (parent, mtime) = (self.protos[idx].parent, self.protos[idx].mtime_ns);
                let p = &mut self.protos[parent];
                p.mtime_ns = p.mtime_ns.max(mtime);
            }
        }
        let mut inos = vec![Ino::ROOT; self.protos.len()];
        let mut taken = BTreeSet::from([Ino::ROOT.0]);
        for &idx in order.iter().skip(1) {
            let mut ino = inode_hash(&paths[idx]);
            while ino < 2 || !taken.insert(ino) {
                ino = ino.wrapping_add(1) & !(INO_RESERVED_BIT | INO_VIEW_BIT);
            }
            inos[idx] = Ino(ino);
        }
        let mut nodes = BTreeMap::new();
        let mut files = 0;
        for (idx, proto) in self.protos.into_iter().enumerate() {
            let body = match proto.kind {
                ProtoKind::Dir(children) => {
                    let children: BTreeMap<String, Ino> =
                        children.into_iter().map(|(n, c)| (n, inos[c])).collect();
                    Body::Dir(DirNode {
                        subdirs: 0,
                        children,
                    })
                }
                ProtoKind::File { file, .. } => {
                    files += 1;
                    Body::File(file)
                }
            };
            let node = Node {
                parent: inos[proto.parent],
                name: proto.name,
                mtime_ns: proto.mtime_ns,
                body,
            };
            nodes.insert(inos[idx], node);
        }
        let subdir_counts: Vec<(Ino, u32)> = nodes
            .iter()
            .filter_map(|(&ino, n)| match &n.body {
                Body::Dir(d) => Some((
                    ino,
                    d.children
                        .values()
                        .filter(|c| matches!(nodes.get(c).map(|n| &n.body), Some(Body::Dir(_))))
                        .count() as u32,
                )),
                Body::File(_) => None,
            })
            .collect();
        for (ino, count) in subdir_counts {
            if let Some(Node {
                body: Body::Dir(d), ..
            }) = nodes.get_mut(&ino)
            {
                d.subdirs = count;
            }
        }
        let by_source = nodes
            .iter()
            .filter_map(|(&ino, n)| match &n.body {
                Body::File(f) => Some((ino, f)),
                Body::Dir(_) => None,
            })
            .flat_map(|(ino, f)| {
                f.sources
                    .iter()
                    .map(move |s| ((s.origin, s.path.clone()), ino))
            })
            .collect();
        VirtualTree {
            nodes,
            files,
            by_source,
        }
    }
}

/// Two files are mirrors when they come from different origins and have the
/// same size (their names already agree): one entry, served by either.
fn is_mirror(existing: &FileNode, new: &FileNode) -> bool {
    existing.role == new.role
        && existing.size == new.size
        && new
            .sources
            .iter()
            .all(|n| existing.sources.iter().all(|e| e.origin != n.origin))
}

/// Inode numbers of the tree never have this bit: numbers with it are left
/// to nodes the io-shell makes up (the `.search` folder's).
pub const INO_RESERVED_BIT: u64 = 1 << 63;

/// Nor this one: a tree inode with it set is the same node seen through
/// the io-shell's `.offline` view (which shows only fully cached tracks).
pub const INO_VIEW_BIT: u64 = 1 << 62;

/// The inode number a path asks for: stable across mounts and machines.
fn inode_hash(path: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(path.as_bytes()) & !(INO_RESERVED_BIT | INO_VIEW_BIT)
}
