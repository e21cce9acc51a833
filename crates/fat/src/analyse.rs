//! The size-independent part of a plan: every name checked and encoded, entries counted.

use std::collections::{HashMap, HashSet};

use fstree::{Kind, NodeId, Tree, ROOT};
use imgbuild_fstree as fstree;

use crate::names::{self, DirName};
use crate::{Error, Options, Result, MAX_DIR_ENTRIES, MAX_FILE_SIZE};

/// What a directory entry names.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A directory (its tree node).
    Dir(NodeId),
    /// A file copy (index into [`Analysis::files`]).
    File(usize),
}

/// One entry of a directory, its name encoded.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub name: DirName,
    pub target: Target,
    pub mtime: i64,
}

/// A directory: its parent, time and entries.
#[derive(Clone, Debug)]
pub(crate) struct DirInfo {
    /// Index of the parent directory (0, the root, for the root itself).
    pub parent: usize,
    pub mtime: i64,
    pub entries: Vec<Entry>,
    /// 32-byte entries used, including `.`, `..` or the label entry.
    pub slots: u32,
}

/// A file copy: each name of a hard-linked file is stored as a file of its own.
#[derive(Clone, Debug)]
pub(crate) struct FileInfo {
    pub node: NodeId,
    /// Its path in the tree, for error messages.
    pub path: String,
    pub size: u64,
}

/// The size-independent part of a plan: names and entry counts.
#[derive(Clone, Debug)]
pub(crate) struct Analysis {
    pub label: Option<[u8; 11]>,
    pub root_mtime: i64,
    /// Depth-first, name order; index 0 is the root.
    pub dirs: Vec<DirInfo>,
    pub dir_index: HashMap<NodeId, usize>,
    pub files: Vec<FileInfo>,
}

fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::Dir(_) => "directory",
        Kind::File(_) => "regular file",
        Kind::Symlink(_) => "symbolic link",
        Kind::CharDev { .. } => "character device",
        Kind::BlockDev { .. } => "block device",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
    }
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Checks every name and node of `tree` and encodes the names, directories depth first in
/// name order (index 0 the root); the label comes from `opts`.
pub(crate) fn analyse(tree: &Tree, opts: &Options) -> Result<Analysis> {
    let label = names::label(&opts.label)?;
    let mut dirs: Vec<DirInfo> = Vec::new();
    let mut dir_index = HashMap::new();
    let mut files = Vec::new();
    let mut seen: HashSet<NodeId> = HashSet::from([ROOT]);
    let mut stack: Vec<(NodeId, String, usize)> = vec![(ROOT, "/".to_string(), 0)];
    while let Some((node, path, parent)) = stack.pop() {
        let idx = dirs.len();
        dir_index.insert(node, idx);
        let children: Vec<(&[u8], NodeId)> = tree.children(node).collect();
        let raw: Vec<&[u8]> = children.iter().map(|c| c.0).collect();
        let dir_names = names::name_entries(&path, &raw)?;
        let mut entries = Vec::with_capacity(children.len());
        let mut subdirs = Vec::new();
        let mut slots: u32 = if idx == 0 {
            u32::from(label.is_some())
        } else {
            2
        };
        for ((name, child), dn) in children.into_iter().zip(dir_names) {
            let cpath = child_path(
                &path,
                std::str::from_utf8(name).expect("name_entries accepted only UTF-8 names"),
            );
            let n = tree.node(child);
            let target = match &n.kind {
                Kind::Dir(_) => {
                    if !seen.insert(child) {
                        return Err(Error::Unsupported {
                            path: cpath,
                            kind: "second name of a directory",
                        });
                    }
                    subdirs.push((child, cpath));
                    Target::Dir(child)
                }
                Kind::File(data) => {
                    let size = data.size();
                    if size > MAX_FILE_SIZE {
                        return Err(Error::FileTooLarge { path: cpath, size });
                    }
                    files.push(FileInfo {
                        node: child,
                        path: cpath,
                        size,
                    });
                    Target::File(files.len() - 1)
                }
                other => {
                    return Err(Error::Unsupported {
                        path: cpath,
                        kind: kind_name(other),
                    })
                }
            };
            slots = slots.saturating_add(dn.slots());
            entries.push(Entry {
                name: dn,
                target,
                mtime: n.meta.mtime,
            });
        }
        if slots > MAX_DIR_ENTRIES {
            return Err(Error::DirTooLarge {
                path,
                entries: slots,
            });
        }
        dirs.push(DirInfo {
            parent,
            mtime: tree.node(node).meta.mtime,
            entries,
            slots,
        });
        for (child, cpath) in subdirs.into_iter().rev() {
            stack.push((child, cpath, idx));
        }
    }
    Ok(Analysis {
        label,
        root_mtime: tree.node(ROOT).meta.mtime,
        dirs,
        dir_index,
        files,
    })
}
