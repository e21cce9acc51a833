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

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

mod scan;
pub use scan::{Mtime, Owner, Perms, ScanOptions, Scanner};

/// Index of a node in a [`Tree`].
pub type NodeId = u32;

/// Permission bits (including setuid, setgid and sticky), owner and modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Meta {
    /// Permission bits only, `0o7777` at most; the file type lives in [`Kind`].
    pub perm: u16,
    /// Owner's user id.
    pub uid: u32,
    /// Owner's group id.
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

impl Meta {
    /// Metadata with `perm` cut to its permission bits (`& 0o7777`).
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
    Host {
        /// Where it is on the host.
        path: PathBuf,
        /// Its size when it was scanned.
        size: u64,
    },
    /// Bytes held in memory (generated files: configs, databases).
    Bytes(Arc<[u8]>),
}

impl FileData {
    /// The file's size in bytes (a host file's as scanned).
    pub fn size(&self) -> u64 {
        match self {
            FileData::Host { size, .. } => *size,
            FileData::Bytes(b) => b.len() as u64,
        }
    }
}

/// What a node is, with what only that type has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory: its entries by name (bytes, sorted), without `.` and `..`.
    Dir(BTreeMap<Vec<u8>, NodeId>),
    /// A regular file.
    File(FileData),
    /// A symbolic link and its target (bytes, not resolved).
    Symlink(Vec<u8>),
    /// A character device node.
    CharDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device node.
    BlockDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket (as a file system entry only).
    Socket,
}

/// One file of the tree; several names (hard links) may lead to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its permissions, owner and time.
    pub meta: Meta,
    /// Its type and content.
    pub kind: Kind,
}

impl Node {
    /// An empty directory.
    pub fn dir(meta: Meta) -> Self {
        Node {
            meta,
            kind: Kind::Dir(BTreeMap::new()),
        }
    }
    /// A regular file with the content `data`.
    pub fn file(meta: Meta, data: FileData) -> Self {
        Node {
            meta,
            kind: Kind::File(data),
        }
    }
    /// A regular file holding `bytes` (in memory).
    pub fn bytes(meta: Meta, bytes: impl Into<Arc<[u8]>>) -> Self {
        Self::file(meta, FileData::Bytes(bytes.into()))
    }
    /// A symlink to `target`.
    pub fn symlink(meta: Meta, target: impl Into<Vec<u8>>) -> Self {
        Node {
            meta,
            kind: Kind::Symlink(target.into()),
        }
    }
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }
}

/// Why a tree could not be built or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name that no directory entry may have.
    #[error("invalid file name {name:?} in `{parent}`: names must be non-empty, not `.` or `..`, and contain no `/` or NUL")]
    BadName {
        /// The directory it was to go in.
        parent: String,
        /// The name (lossy UTF-8).
        name: String,
    },
    /// The name is taken.
    #[error("`{path}` already exists")]
    Exists {
        /// The path in the tree.
        path: String,
    },
    /// A path goes through something that is not a directory.
    #[error("`{path}` is not a directory")]
    NotADir {
        /// The path in the tree.
        path: String,
    },
    /// A path names nothing.
    #[error("`{path}` does not exist")]
    NotFound {
        /// The path in the tree.
        path: String,
    },
    /// Reading a host directory or file failed while scanning.
    #[error("`{}`: {op}", path.display())]
    Io {
        /// What was being done (`reading directory`, `reading symlink`, ...).
        op: &'static str,
        /// The host path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Results of building trees.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A file tree. Node 0 is the root directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    nodes: Vec<Node>,
}

/// The root directory's id in every tree.
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

    /// Nodes in the tree (files, not names: hard links count once), the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a tree has at least its root.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Node `id`; panics on an id this tree did not give out.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// Node `id`, to change; panics on an id this tree did not give out.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// Every node with its id, in id order.
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

    /// The node named `name` in directory `dir`, if any (not a path: one name).
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

#[cfg(test)]
mod tests;
