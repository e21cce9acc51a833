//! The in-memory file tree that imgbuild's filesystem writers take as input.
//!
//! A [`Tree`] is an arena of [`Node`]s; node 0 is the root directory. Directories map names
//! (arbitrary bytes but `/` and NUL) to node ids in byte order, so iteration order never
//! depends on the order in which entries were added or on the host's readdir order. A node
//! named by several directory entries is a hard link. Regular files either point at a host
//! file (copied by the writer, never read into memory) or carry their bytes inline.
//!
//! This crate knows nothing of Nix or of any on-disk format. [`Scanner`] builds trees from host
//! directories without ever following a symlink; what it does with owners, modes and times is
//! decided by [`ScanOptions`], given by the caller.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Index of a node in a [`Tree`].
pub type NodeId = u32;

/// Permission bits (including setuid, setgid and sticky), owner and modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Meta {
    /// Permission bits only, `0o7777` at most; the file type lives in [`Kind`].
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

impl Meta {
    pub fn new(perm: u16, uid: u32, gid: u32, mtime: i64) -> Self {
        Meta {
            perm: perm & 0o7777,
            uid,
            gid,
            mtime,
        }
    }
}

/// Where a regular file's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileData {
    /// A file on the host, `size` bytes when it was scanned. Writers copy it and fail if its
    /// size changed in the meantime.
    Host { path: PathBuf, size: u64 },
    /// Bytes held in memory (generated files: configs, databases).
    Bytes(Arc<[u8]>),
}

impl FileData {
    pub fn size(&self) -> u64 {
        match self {
            FileData::Host { size, .. } => *size,
            FileData::Bytes(b) => b.len() as u64,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir(BTreeMap<Vec<u8>, NodeId>),
    File(FileData),
    Symlink(Vec<u8>),
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
    Fifo,
    Socket,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub meta: Meta,
    pub kind: Kind,
}

impl Node {
    pub fn dir(meta: Meta) -> Self {
        Node {
            meta,
            kind: Kind::Dir(BTreeMap::new()),
        }
    }
    pub fn file(meta: Meta, data: FileData) -> Self {
        Node {
            meta,
            kind: Kind::File(data),
        }
    }
    pub fn bytes(meta: Meta, bytes: impl Into<Arc<[u8]>>) -> Self {
        Self::file(meta, FileData::Bytes(bytes.into()))
    }
    pub fn symlink(meta: Meta, target: impl Into<Vec<u8>>) -> Self {
        Node {
            meta,
            kind: Kind::Symlink(target.into()),
        }
    }
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid file name {name:?} in `{parent}`: names must be non-empty, not `.` or `..`, and contain no `/` or NUL")]
    BadName { parent: String, name: String },
    #[error("`{path}` already exists")]
    Exists { path: String },
    #[error("`{path}` is not a directory")]
    NotADir { path: String },
    #[error("`{path}` does not exist")]
    NotFound { path: String },
    #[error("`{}`: {op}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A file tree. Node 0 is the root directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    nodes: Vec<Node>,
}

pub const ROOT: NodeId = 0;

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    /// A tree holding only a root directory with `root` metadata.
    pub fn new(root: Meta) -> Self {
        Tree {
            nodes: vec![Node::dir(root)],
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes.iter().enumerate().map(|(i, n)| (i as NodeId, n))
    }

    /// Add a node that no directory names yet.
    pub fn add(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        (self.nodes.len() - 1) as NodeId
    }

    /// The entries of directory `dir` in name order (empty for non-directories).
    pub fn children(&self, dir: NodeId) -> impl Iterator<Item = (&[u8], NodeId)> {
        let map = match &self.node(dir).kind {
            Kind::Dir(m) => Some(m),
            _ => None,
        };
        map.into_iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_slice(), *v)))
    }

    /// Name `child` as `name` in directory `dir`.
    pub fn link(&mut self, dir: NodeId, name: &[u8], child: NodeId) -> Result<()> {
        if !valid_name(name) {
            return Err(Error::BadName {
                parent: format!("#{dir}"),
                name: show(name),
            });
        }
        match &mut self.nodes[dir as usize].kind {
            Kind::Dir(m) => {
                if m.contains_key(name) {
                    return Err(Error::Exists { path: show(name) });
                }
                m.insert(name.to_vec(), child);
                Ok(())
            }
            _ => Err(Error::NotADir {
                path: format!("#{dir}"),
            }),
        }
    }

    /// Make the existing entry `name` of `dir` name `child` instead; returns the node it named
    /// (which stays in the tree, unreachable unless named elsewhere).
    pub fn relink(&mut self, dir: NodeId, name: &[u8], child: NodeId) -> Result<NodeId> {
        match &mut self.nodes[dir as usize].kind {
            Kind::Dir(m) => match m.get_mut(name) {
                Some(slot) => Ok(std::mem::replace(slot, child)),
                None => Err(Error::NotFound { path: show(name) }),
            },
            _ => Err(Error::NotADir {
                path: format!("#{dir}"),
            }),
        }
    }

    /// Add `node` and name it `name` in `dir`.
    pub fn insert(&mut self, dir: NodeId, name: &[u8], node: Node) -> Result<NodeId> {
        if !valid_name(name) {
            return Err(Error::BadName {
                parent: format!("#{dir}"),
                name: show(name),
            });
        }
        if !self.node(dir).is_dir() {
            return Err(Error::NotADir {
                path: format!("#{dir}"),
            });
        }
        if self.lookup_in(dir, name).is_some() {
            return Err(Error::Exists { path: show(name) });
        }
        let id = self.add(node);
        self.link(dir, name, id)?;
        Ok(id)
    }

    pub fn lookup_in(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.node(dir).kind {
            Kind::Dir(m) => m.get(name).copied(),
            _ => None,
        }
    }

    /// Look up a `/`-separated path relative to the root (leading `/` allowed). Symlinks are
    /// not followed.
    pub fn lookup(&self, path: &[u8]) -> Option<NodeId> {
        let mut cur = ROOT;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            cur = self.lookup_in(cur, comp)?;
        }
        Some(cur)
    }

    /// Make sure every directory of `path` exists, creating missing ones with `meta`.
    pub fn mkdir_p(&mut self, path: &[u8], meta: Meta) -> Result<NodeId> {
        let mut cur = ROOT;
        let mut walked = Vec::new();
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            walked.push(b'/');
            walked.extend_from_slice(comp);
            cur = match self.lookup_in(cur, comp) {
                Some(id) if self.node(id).is_dir() => id,
                Some(_) => {
                    return Err(Error::NotADir {
                        path: show(&walked),
                    })
                }
                None => self.insert(cur, comp, Node::dir(meta))?,
            };
        }
        Ok(cur)
    }

    /// Insert `node` at `path`, whose parent directories must already exist.
    pub fn insert_path(&mut self, path: &[u8], node: Node) -> Result<NodeId> {
        let (parent, name) = split_parent(path);
        let dir = self
            .lookup(parent)
            .ok_or_else(|| Error::NotFound { path: show(parent) })?;
        if !self.node(dir).is_dir() {
            return Err(Error::NotADir { path: show(parent) });
        }
        if self.lookup_in(dir, name).is_some() {
            return Err(Error::Exists { path: show(path) });
        }
        self.insert(dir, name, node)
    }

    /// How many directory entries name each node (the root counts once). Nodes that no
    /// directory names have 0.
    pub fn link_counts(&self) -> Vec<u32> {
        let mut c = vec![0u32; self.nodes.len()];
        c[ROOT as usize] = 1;
        for n in &self.nodes {
            if let Kind::Dir(m) = &n.kind {
                for &id in m.values() {
                    c[id as usize] += 1;
                }
            }
        }
        c
    }

    /// Every reachable node with its path, depth first, directories before their entries,
    /// entries in name order; a hard-linked node appears once per name.
    pub fn walk(&self) -> Vec<(Vec<u8>, NodeId)> {
        let mut out = Vec::new();
        let mut stack = vec![(Vec::new(), ROOT)];
        while let Some((path, id)) = stack.pop() {
            let kids: Vec<_> = self
                .children(id)
                .map(|(name, c)| {
                    let mut p = path.clone();
                    p.push(b'/');
                    p.extend_from_slice(name);
                    (p, c)
                })
                .collect();
            out.push((path, id));
            stack.extend(kids.into_iter().rev());
        }
        out
    }
}

/// Split `a/b/c` into (`a/b`, `c`).
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    let trimmed = match path.iter().rposition(|&b| b != b'/') {
        Some(end) => &path[..=end],
        None => &path[..0],
    };
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (&trimmed[..0], trimmed),
    }
}

/// Who owns scanned entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// uid and gid as given (root:root is `Fixed(0, 0)`).
    Fixed(u32, u32),
    /// Keep the host's uid and gid.
    Preserve,
}

/// What permission bits scanned entries get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perms {
    /// Keep the host's permission bits (including setuid, setgid, sticky).
    Preserve,
    /// What Nix's store canonicalisation leaves: directories 0555, files 0444, or 0555 when
    /// any execute bit is set; no setuid/setgid/sticky. Makes the result independent of the
    /// umask and of how the files were checked out.
    NixStore,
    /// What a copy with a fixed policy gives (`--add-tree`): directories 0755, files 0755 when
    /// any execute bit is set, else 0644, symlinks 0777; no setuid/setgid/sticky. Independent
    /// of the umask.
    Normalized,
}

/// What modification time scanned entries get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mtime {
    /// Every entry gets this time.
    Fixed(i64),
    /// The host's mtime.
    Host,
    /// The host's mtime, but never later than this (`SOURCE_DATE_EPOCH` clamping: touching a
    /// file does not change the result).
    Clamp(i64),
}

/// How a host directory is turned into tree nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanOptions {
    pub owner: Owner,
    pub perms: Perms,
    pub mtime: Mtime,
    /// Keep hard links among scanned files as hard links. Off, every name gets its own node
    /// (what a NAR means: Nix store contents have no hard links, so a store copied with or
    /// without `auto-optimise-store` gives the same tree).
    pub hardlinks: bool,
}

/// Builds trees from host directories. Hard links among everything one scanner has seen
/// become one node. Symlinks are recorded as symlinks and never followed.
pub struct Scanner {
    opts: ScanOptions,
    seen: HashMap<(u64, u64), NodeId>,
}

impl Scanner {
    pub fn new(opts: ScanOptions) -> Self {
        Scanner {
            opts,
            seen: HashMap::new(),
        }
    }

    fn meta(&self, md: &std::fs::Metadata, is_dir: bool) -> Meta {
        let host = (md.mode() & 0o7777) as u16;
        let perm = match self.opts.perms {
            Perms::Preserve => host,
            Perms::NixStore if is_dir => 0o555,
            Perms::NixStore if md.file_type().is_symlink() => 0o777,
            Perms::NixStore if host & 0o111 != 0 => 0o555,
            Perms::NixStore => 0o444,
            Perms::Normalized if md.file_type().is_symlink() => 0o777,
            Perms::Normalized if is_dir || host & 0o111 != 0 => 0o755,
            Perms::Normalized => 0o644,
        };
        let (uid, gid) = match self.opts.owner {
            Owner::Fixed(u, g) => (u, g),
            Owner::Preserve => (md.uid(), md.gid()),
        };
        Meta::new(
            perm,
            uid,
            gid,
            match self.opts.mtime {
                Mtime::Fixed(t) => t,
                Mtime::Host => md.mtime(),
                Mtime::Clamp(t) => md.mtime().min(t),
            },
        )
    }

    /// Scan the host directory `src` into a new tree whose root takes `src`'s metadata.
    pub fn scan(&mut self, src: &Path) -> Result<Tree> {
        let md = lstat(src)?;
        if !md.is_dir() {
            return Err(Error::NotADir {
                path: src.display().to_string(),
            });
        }
        let mut tree = Tree::new(self.meta(&md, true));
        self.fill_dir(&mut tree, ROOT, src)?;
        Ok(tree)
    }

    /// Scan the host entry `src` (file, directory, symlink, ...) and name it `name` in `dir`.
    pub fn graft(
        &mut self,
        tree: &mut Tree,
        dir: NodeId,
        name: &[u8],
        src: &Path,
    ) -> Result<NodeId> {
        let md = lstat(src)?;
        if let Some(&id) = self.hardlink(&md) {
            tree.link(dir, name, id)?;
            return Ok(id);
        }
        let node = self.leaf(src, &md)?;
        let is_dir = node.is_dir();
        let id = tree.insert(dir, name, node)?;
        self.remember(&md, id);
        if is_dir {
            self.fill_dir(tree, id, src)?;
        }
        Ok(id)
    }

    fn hardlink(&self, md: &std::fs::Metadata) -> Option<&NodeId> {
        if !self.opts.hardlinks || md.is_dir() || md.nlink() < 2 {
            return None;
        }
        self.seen.get(&(md.dev(), md.ino()))
    }

    fn remember(&mut self, md: &std::fs::Metadata, id: NodeId) {
        if !md.is_dir() && md.nlink() >= 2 {
            self.seen.insert((md.dev(), md.ino()), id);
        }
    }

    fn leaf(&self, src: &Path, md: &std::fs::Metadata) -> Result<Node> {
        let ft = md.file_type();
        let meta = self.meta(md, ft.is_dir());
        let kind = if ft.is_dir() {
            Kind::Dir(BTreeMap::new())
        } else if ft.is_file() {
            Kind::File(FileData::Host {
                path: src.to_path_buf(),
                size: md.len(),
            })
        } else if ft.is_symlink() {
            let t = std::fs::read_link(src).map_err(|source| Error::Io {
                op: "reading symlink",
                path: src.to_path_buf(),
                source,
            })?;
            Kind::Symlink(t.into_os_string().into_encoded_bytes())
        } else {
            let rdev = md.rdev();
            let (major, minor) = (libc::major(rdev), libc::minor(rdev));
            if ft.is_char_device() {
                Kind::CharDev { major, minor }
            } else if ft.is_block_device() {
                Kind::BlockDev { major, minor }
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            }
        };
        Ok(Node { meta, kind })
    }

    fn fill_dir(&mut self, tree: &mut Tree, dir: NodeId, src: &Path) -> Result<()> {
        let rd = std::fs::read_dir(src).map_err(|source| Error::Io {
            op: "reading directory",
            path: src.to_path_buf(),
            source,
        })?;
        let mut names = Vec::new();
        for e in rd {
            let e = e.map_err(|source| Error::Io {
                op: "reading directory",
                path: src.to_path_buf(),
                source,
            })?;
            names.push(e.file_name());
        }
        // Sorted so that hard-link discovery (which name becomes the first) is deterministic.
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = src.join(&name);
            self.graft(tree, dir, OsStr::as_bytes(&name), &path)?;
        }
        Ok(())
    }
}

fn lstat(p: &Path) -> Result<std::fs::Metadata> {
    std::fs::symlink_metadata(p).map_err(|source| Error::Io {
        op: "reading metadata",
        path: p.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
