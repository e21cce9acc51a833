//! The inode and directory tables: every inode and directory listing, written depth first.

use fstree::{Kind, Meta, NodeId, Tree, ROOT};
use imgbuild_fstree as fstree;

use crate::inode::{self, Base, DirInfo, IndexEntry};
use crate::meta::{MetaWriter, METADATA_SIZE};
use crate::{data, dir, secs, Error, Numbered, Result};

/// A reference to an inode: stored position of its metadata block (relative to the inode
/// table) and offset in the block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ref {
    block: u64,
    offset: u16,
}

impl Ref {
    pub(crate) fn encode(self) -> u64 {
        (self.block << 16) | u64::from(self.offset)
    }
}

/// The inode and directory tables, being written.
pub(crate) struct Tables<'a> {
    pub tree: &'a Tree,
    pub n: &'a Numbered,
    pub links: Vec<u32>,
    pub plan: &'a data::Plan<'a>,
    pub inodes: MetaWriter,
    pub dirs: MetaWriter,
    pub refs: Vec<Option<Ref>>,
}

fn basic_type(kind: &Kind) -> u16 {
    match kind {
        Kind::Dir(_) => inode::DIR,
        Kind::File(_) => inode::REG,
        Kind::Symlink(_) => inode::SYMLINK,
        Kind::BlockDev { .. } => inode::BLKDEV,
        Kind::CharDev { .. } => inode::CHRDEV,
        Kind::Fifo => inode::FIFO,
        Kind::Socket => inode::SOCKET,
    }
}

impl Tables<'_> {
    fn base(&self, id: NodeId) -> Base {
        let node = self.tree.node(id);
        let Meta {
            perm,
            uid,
            gid,
            mtime,
        } = node.meta;
        Base {
            typ: basic_type(&node.kind),
            perm,
            uid: self.n.id_index[&uid],
            gid: self.n.id_index[&gid],
            mtime: secs(mtime),
            number: self.n.numbers[id as usize],
        }
    }

    fn push_inode(&mut self, id: NodeId, bytes: &[u8]) -> Result<()> {
        let (block, offset) = self.inodes.pos();
        self.inodes.push(bytes)?;
        self.refs[id as usize] = Some(Ref { block, offset });
        Ok(())
    }

    /// The inode of a non-directory.
    fn leaf(&mut self, id: NodeId) -> Result<()> {
        let b = self.base(id);
        let nlink = self.links[id as usize];
        let mut out = Vec::new();
        match &self.tree.node(id).kind {
            Kind::File(_) => {
                let s = self.plan.stored[&id];
                inode::file(&mut out, &b, &self.plan.infos[s], nlink);
            }
            Kind::Symlink(t) => inode::symlink(&mut out, &b, nlink, t),
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                let rdev = inode::encode_dev(*major, *minor).ok_or(Error::BadDevice {
                    path: format!("inode {}", b.number),
                    major: *major,
                    minor: *minor,
                })?;
                inode::device(&mut out, &b, nlink, rdev);
            }
            Kind::Fifo | Kind::Socket => inode::ipc(&mut out, &b, nlink),
            Kind::Dir(_) => unreachable!("directories are written by `directory`"),
        }
        self.push_inode(id, &out)
    }

    /// A directory's listing and inode; its entries' inodes are written.
    fn directory(&mut self, id: NodeId, parent: u32) -> Result<()> {
        let tree = self.tree;
        let mut entries = Vec::new();
        let mut subdirs = 0u32;
        for (name, child) in tree.children(id) {
            let r = self.refs[child as usize].expect("entries are written before their directory");
            let kind = &tree.node(child).kind;
            if matches!(kind, Kind::Dir(_)) {
                subdirs += 1;
            }
            entries.push(dir::Entry {
                name,
                block: u32::try_from(r.block).map_err(|_| Error::TooBig {
                    what: "inode table",
                })?,
                offset: r.offset,
                number: self.n.numbers[child as usize],
                typ: basic_type(kind),
            });
        }
        let listing = dir::listing(&entries);
        let upos = self.dirs.uncompressed_pos();
        let (start_block, offset) = self.dirs.pos();
        self.dirs.push(&listing.bytes)?;
        let mut index = Vec::new();
        let mut last_block = upos / METADATA_SIZE as u64;
        for &(at, first) in listing.headers.iter().skip(1) {
            let hpos = upos + at as u64;
            if hpos / METADATA_SIZE as u64 != last_block {
                last_block = hpos / METADATA_SIZE as u64;
                index.push(IndexEntry {
                    index: u32::try_from(at).map_err(|_| Error::TooBig { what: "directory" })?,
                    start_block: u32::try_from(self.dirs.block_start(hpos)).map_err(|_| {
                        Error::TooBig {
                            what: "directory table",
                        }
                    })?,
                    name: entries[first].name.to_vec(),
                });
            }
        }
        if index.len() > usize::from(u16::MAX) {
            return Err(Error::TooBig { what: "directory" });
        }
        let info = DirInfo {
            start_block: u32::try_from(start_block).map_err(|_| Error::TooBig {
                what: "directory table",
            })?,
            offset,
            file_size: u32::try_from(listing.bytes.len() + 3)
                .map_err(|_| Error::TooBig { what: "directory" })?,
            nlink: subdirs + 2,
            parent,
        };
        let mut out = Vec::new();
        inode::dir(&mut out, &self.base(id), &info, &index);
        self.push_inode(id, &out)
    }

    /// Every inode and listing, entries before their directory, depth first.
    pub(crate) fn write_all(&mut self) -> Result<Ref> {
        let tree = self.tree;
        // (directory, its entries, how many are done)
        let mut stack: Vec<(NodeId, Vec<NodeId>, usize)> =
            vec![(ROOT, tree.children(ROOT).map(|(_, c)| c).collect(), 0)];
        while let Some((dir, kids, done)) = stack.last_mut() {
            if let Some(&child) = kids.get(*done) {
                *done += 1;
                if self.refs[child as usize].is_some() {
                    continue; // another name of a file already written
                }
                if tree.node(child).is_dir() {
                    stack.push((child, tree.children(child).map(|(_, c)| c).collect(), 0));
                } else {
                    self.leaf(child)?;
                }
                continue;
            }
            let dir = *dir;
            stack.pop();
            // The root's parent is one past the last inode, as mksquashfs records it.
            let parent = match stack.last() {
                Some((p, _, _)) => self.n.numbers[*p as usize],
                None => self.n.count + 1,
            };
            self.directory(dir, parent)?;
        }
        Ok(self.refs[ROOT as usize].expect("the root is written last"))
    }
}
