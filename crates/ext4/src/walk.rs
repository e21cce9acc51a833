//! Numbering the inodes: a depth-first walk of the tree that checks every name and node.

use fstree::{Kind, Meta, NodeId, Tree, ROOT};
use imgbuild_blockio::to_usize;
use imgbuild_fstree as fstree;

use crate::{dir, Error, Ino, Result, Type, FAST_SYMLINK, FIRST_INO, LINK_MAX, LPF_INO};
use crate::{MAX_FILE_SIZE, MAX_NAME_LEN, MAX_SYMLINK_LEN, ROOT_INO};

/// Human-readable path of a tree entry for error messages.
pub(crate) fn show(path: &[u8]) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        String::from_utf8_lossy(path).into_owned()
    }
}

fn joined(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Result of walking the tree: inodes in number order (without the journal).
pub(crate) struct Walked {
    pub inos: Vec<Ino>,
    /// Inode number of each node (0: unreachable).
    pub node_ino: Vec<u32>,
    /// Tree path of each directory inode, for error messages (index: ino).
    pub dir_paths: Vec<(u32, Vec<u8>)>,
    /// Parent inode of each directory (by ino).
    pub parent: Vec<(u32, u32)>,
    /// Whether we add lost+found ourselves.
    pub own_lpf: bool,
}

pub(crate) fn new_ino(ino: u32, node: Option<NodeId>, typ: Type, meta: Meta) -> Ino {
    Ino {
        ino,
        node,
        typ,
        meta,
        links: 0,
        size: 0,
        runs: Vec::new(),
        extents: Vec::new(),
        tree: Vec::new(),
        dir: None,
    }
}

/// Number the inodes in depth-first order (directories before their entries, entries in
/// name order) and check every name and node.
pub(crate) fn walk(tree: &Tree, timestamp: i64) -> Result<Walked> {
    let mut w = Walker::new(tree, timestamp)?;
    let mut stack = vec![Frame {
        dir: ROOT,
        kids: tree.children(ROOT).collect(),
        pos: 0,
        path: Vec::new(),
    }];
    while let Some(top) = stack.last_mut() {
        let Some(&(name, child)) = top.kids.get(top.pos) else {
            stack.pop();
            continue;
        };
        top.pos += 1;
        if let Some(path) = w.visit(top.dir, &top.path, name, child)? {
            stack.push(Frame {
                dir: child,
                kids: tree.children(child).collect(),
                pos: 0,
                path,
            });
        }
    }
    Ok(w.finish())
}

/// A directory being walked: its entries and the next one to visit.
struct Frame<'t> {
    dir: NodeId,
    kids: Vec<(&'t [u8], NodeId)>,
    pos: usize,
    path: Vec<u8>,
}

/// The walk's state: what is numbered and counted so far, per tree node.
struct Walker<'t> {
    tree: &'t Tree,
    node_ino: Vec<u32>,
    visited: Vec<bool>,
    /// Names seen for each node.
    names: Vec<u32>,
    /// Subdirectories of each directory node.
    subdirs: Vec<u32>,
    inos: Vec<Ino>,
    dir_paths: Vec<(u32, Vec<u8>)>,
    parent: Vec<(u32, u32)>,
    own_lpf: bool,
    /// The next free inode number.
    next: u32,
}

impl<'t> Walker<'t> {
    /// The root numbered, and lost+found: the tree's (numbered `LPF_INO`) or our own.
    fn new(tree: &'t Tree, timestamp: i64) -> Result<Self> {
        let n = tree.len();
        let mut w = Walker {
            tree,
            node_ino: vec![0u32; n],
            visited: vec![false; n],
            names: vec![0u32; n],
            subdirs: vec![0; n],
            inos: Vec::new(),
            dir_paths: Vec::new(),
            parent: Vec::new(),
            own_lpf: false,
            next: FIRST_INO + 1,
        };
        w.own_lpf = match tree.lookup_in(ROOT, b"lost+found") {
            Some(id) if tree.node(id).is_dir() => {
                w.node_ino[id as usize] = LPF_INO;
                false
            }
            Some(_) => return Err(Error::LostFoundNotDir),
            None => true,
        };
        w.node_ino[ROOT as usize] = ROOT_INO;
        w.visited[ROOT as usize] = true;
        w.inos.push(new_ino(
            ROOT_INO,
            Some(ROOT),
            Type::Dir,
            tree.node(ROOT).meta,
        ));
        w.dir_paths.push((ROOT_INO, Vec::new()));
        w.parent.push((ROOT_INO, ROOT_INO));
        if w.own_lpf {
            let mut lpf = new_ino(LPF_INO, None, Type::Dir, Meta::new(0o700, 0, 0, timestamp));
            lpf.links = 2;
            w.inos.push(lpf);
            w.subdirs[ROOT as usize] += 1;
            w.dir_paths.push((LPF_INO, b"/lost+found".to_vec()));
            w.parent.push((LPF_INO, ROOT_INO));
        }
        Ok(w)
    }

    /// Counts the entry `name` -> `child` of directory `dir_node` (at `dir_path`) and
    /// numbers `child` when first seen; returns its path when it is a directory to walk.
    fn visit(
        &mut self,
        dir_node: NodeId,
        dir_path: &[u8],
        name: &[u8],
        child: NodeId,
    ) -> Result<Option<Vec<u8>>> {
        let path = || show(&joined(dir_path, name));
        if name.len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong {
                path: path(),
                len: name.len(),
            });
        }
        let c = child as usize;
        self.names[c] += 1;
        let node = self.tree.node(child);
        if self.names[c] > LINK_MAX && !node.is_dir() {
            return Err(Error::TooManyLinks {
                path: path(),
                links: self.names[c],
            });
        }
        if self.visited[c] {
            if node.is_dir() {
                return Err(Error::DirHardLink { path: path() });
            }
            return Ok(None);
        }
        self.visited[c] = true;
        let ino = if self.node_ino[c] != 0 {
            self.node_ino[c]
        } else {
            let i = self.next;
            self.next += 1;
            self.node_ino[c] = i;
            i
        };
        let (typ, size) = type_and_size(&node.kind, path)?;
        let mut i = new_ino(ino, Some(child), typ, node.meta);
        i.size = size;
        if typ == Type::Symlink && to_usize(size) >= FAST_SYMLINK {
            i.runs.push((0, 1));
        }
        self.inos.push(i);
        if typ != Type::Dir {
            return Ok(None);
        }
        self.subdirs[dir_node as usize] += 1;
        let p = joined(dir_path, name);
        let parent_ino = self.node_ino[dir_node as usize];
        self.dir_paths.push((ino, p.clone()));
        self.parent.push((ino, parent_ino));
        Ok(Some(p))
    }

    /// Link counts set, everything sorted by inode number.
    fn finish(self) -> Walked {
        let Walker {
            mut inos,
            names,
            subdirs,
            mut dir_paths,
            mut parent,
            node_ino,
            own_lpf,
            ..
        } = self;
        for i in inos.iter_mut() {
            let Some(node) = i.node else { continue };
            let k = node as usize;
            i.links = if i.typ == Type::Dir {
                // dir_nlink: past the limit a directory's count is 1.
                let l = 2 + subdirs[k];
                if l > LINK_MAX {
                    1
                } else {
                    l
                }
            } else {
                names[k]
            };
        }
        inos.sort_unstable_by_key(|i| i.ino);
        dir_paths.sort_unstable_by_key(|p| p.0);
        parent.sort_unstable_by_key(|p| p.0);
        Walked {
            inos,
            node_ino,
            dir_paths,
            parent,
            own_lpf,
        }
    }
}

/// The inode type and size of a node, checked against ext4's limits (`path` names it).
fn type_and_size(kind: &Kind, path: impl Fn() -> String) -> Result<(Type, u64)> {
    Ok(match kind {
        Kind::Dir(_) => (Type::Dir, 0),
        Kind::File(d) => {
            let size = d.size();
            if size > MAX_FILE_SIZE {
                return Err(Error::FileTooBig { path: path(), size });
            }
            (Type::Reg, size)
        }
        Kind::Symlink(t) => {
            if t.is_empty() || t.len() > MAX_SYMLINK_LEN || t.contains(&0) {
                return Err(Error::BadSymlink {
                    path: path(),
                    len: t.len(),
                });
            }
            (Type::Symlink, t.len() as u64)
        }
        Kind::CharDev { .. } => (Type::Chr, 0),
        Kind::BlockDev { .. } => (Type::Blk, 0),
        Kind::Fifo => (Type::Fifo, 0),
        Kind::Socket => (Type::Sock, 0),
    })
}

/// The directory entry file type (`FT_*`) of a node.
pub(crate) fn file_type(kind: &Kind) -> u8 {
    match kind {
        Kind::Dir(_) => dir::FT_DIR,
        Kind::File(_) => dir::FT_REG,
        Kind::Symlink(_) => dir::FT_SYMLINK,
        Kind::CharDev { .. } => dir::FT_CHR,
        Kind::BlockDev { .. } => dir::FT_BLK,
        Kind::Fifo => dir::FT_FIFO,
        Kind::Socket => dir::FT_SOCK,
    }
}
