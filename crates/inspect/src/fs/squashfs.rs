//! Our own bounded squashfs 4.0 reader, written from the format's description: the
//! superblock ([`super::squashfs_sb`]), inodes, listings, ids and fragments
//! ([`super::squashfs_meta`]), and here path resolution and file data. Reads images from
//! our writer and from `mksquashfs` (zstd, gzip, xz; any block size; fragments or not;
//! hard links share an inode). Extended attributes are skipped.
//!
//! Nothing read is trusted: positions are checked against `bytes_used`, blocks decompress
//! into at most the block size, a file's blocks must sum to bytes inside the image,
//! symlink resolution stops after [`MAX_SYMLINK_HOPS`] links, and walks stop at a directory
//! seen twice (by inode number).
//!
//! The tree may be mounted below the namespace's root (an ISO's store image at
//! `/nix/store`): then a path that leaves it (`..` above the mount, an absolute symlink
//! elsewhere) comes back as [`Found::Out`] for the caller to resolve.

use imgbuild_partition::FsSummary;

use super::iso9660::MAX_SYMLINK_HOPS;
use super::squashfs_meta::{corrupt, Body, Inode, Meta};
use super::squashfs_sb::{self as sb, Compressor, Superblock};
use super::types::last_name;
use super::{Entry, FsInfo, Kind};
use crate::bytes::{len64, to_usize};
use crate::error::{Error, Result, Where};
use crate::io::Slice;
use crate::path::{components as comps, from_components as canon, normalize};

/// An open squashfs.
pub(crate) struct SquashFs {
    meta: Meta,
    root: Inode,
    /// The components of the path the tree is mounted at (none: at `/`).
    mount: Vec<Vec<u8>>,
    /// Added to inode numbers in entry ids (a mounted tree's ids must not meet its
    /// parent's).
    id_base: u64,
}

/// Where a path led.
pub(crate) enum Found {
    /// To an inode of this tree, with the canonical path.
    In(Inode, Vec<u8>),
    /// Out of the tree: the path to resolve instead (absolute, not normalized).
    Out(Vec<u8>),
}

/// A file being read: its blocks, its tail, the last block decompressed.
pub(crate) struct SquashFile {
    /// `(position, size word)` of each block.
    blocks: Vec<(u64, u32)>,
    frag: Option<(u32, u32)>,
    size: u64,
    pos: u64,
    last: Option<(u64, Vec<u8>)>,
}

impl SquashFs {
    /// Reads the superblock, the id table and the root inode; `mount` is where the tree
    /// appears (`/` for a squashfs file itself).
    pub(crate) fn open(mut slice: Slice, mount: &[u8], at: &Where) -> Result<(Self, FsInfo)> {
        let mut b = [0u8; sb::SIZE];
        slice.read_exact_at(0, &mut b).map_err(|source| Error::Io {
            at: at.clone(),
            source,
        })?;
        let sb = Superblock::parse(&b, slice.len()).map_err(|e| corrupt(at, e.to_string()))?;
        if let Compressor::Refused(name) = sb.compressor {
            return Err(Error::Unsupported {
                at: at.clone(),
                what: format!("squashfs compressed with {name} (zstd, gzip and xz are read)"),
            });
        }
        let info = FsInfo {
            summary: FsSummary {
                kind: "squashfs".into(),
                size: sb.bytes_used,
                ..FsSummary::default()
            },
            used: sb.bytes_used,
            free: 0,
            block_size: u64::from(sb.block_size),
            inodes: Some(u64::from(sb.inodes)),
            inodes_used: Some(u64::from(sb.inodes)),
            features: vec![format!("compressor={}", sb.compressor.name())],
            ..FsInfo::default()
        };
        let root_ref = sb.root;
        let mut meta = Meta::new(slice, sb);
        meta.read_ids(at)?;
        let root = meta.inode(root_ref, at)?;
        if root.kind != Kind::Dir {
            return Err(corrupt(at, "the root inode is not a directory"));
        }
        let fs = Self {
            meta,
            root,
            mount: comps(mount).collect(),
            id_base: if mount == b"/" { 0 } else { 1 << 48 },
        };
        Ok((fs, info))
    }

    /// The largest file size believable: every block's size word (4 bytes) lies in the
    /// image, and a block holds at most the block size.
    pub(crate) fn max_file_size(&self) -> u64 {
        let bs = u64::from(self.meta.sb.block_size);
        (self.meta.sb.bytes_used / 4 + 1).saturating_mul(bs)
    }

    fn entry(&self, n: &Inode, name: Vec<u8>) -> Entry {
        Entry {
            name,
            kind: n.kind,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            size: n.size(),
            mtime: i64::from(n.mtime),
            target: match &n.body {
                Body::Symlink(t) => Some(t.clone()),
                _ => None,
            },
            id: Some(self.id_base + u64::from(n.number)),
        }
    }

    /// Resolves `path` (absolute, in the namespace the tree is mounted in; it must lie
    /// below the mount), following symlinks (the last one only when `follow_last`).
    pub(crate) fn resolve(&self, path: &[u8], follow_last: bool, at: &Where) -> Result<Found> {
        let mut todo: Vec<Vec<u8>> = comps(path).rev().collect();
        for m in &self.mount {
            if todo.pop().as_ref() != Some(m) {
                return Ok(Found::Out(path.to_vec()));
            }
        }
        let mut stack: Vec<Inode> = Vec::new();
        let mut names: Vec<Vec<u8>> = self.mount.clone();
        let base = self.mount.len();
        let mut hops = 0;
        let out = |names: &[Vec<u8>], todo: &[Vec<u8>]| {
            let all: Vec<Vec<u8>> = names.iter().chain(todo.iter().rev()).cloned().collect();
            canon(&all)
        };
        while let Some(c) = todo.pop() {
            if c == b"." {
                continue;
            }
            if c == b".." {
                if names.len() == base {
                    if base == 0 {
                        continue;
                    }
                    names.pop();
                    return Ok(Found::Out(out(&names, &todo)));
                }
                stack.pop();
                names.pop();
                continue;
            }
            let dir = stack.last().unwrap_or(&self.root);
            let here = at.with_path(&canon(&names));
            if dir.kind != Kind::Dir {
                return Err(Error::NotADirectory { at: here });
            }
            let found = self
                .meta
                .entries(dir, &here, usize::MAX)?
                .into_iter()
                .find(|e| e.name == c)
                .ok_or_else(|| {
                    let mut p = names.clone();
                    p.push(c.clone());
                    Error::NotFound {
                        at: at.with_path(&canon(&p)),
                    }
                })?;
            let node = self.meta.inode(found.inode, &here)?;
            if let (Body::Symlink(t), true) = (&node.body, follow_last || !todo.is_empty()) {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Error::Limit {
                        at: here,
                        what: "symlinks followed".into(),
                        limit: len64(MAX_SYMLINK_HOPS),
                    });
                }
                todo.extend(comps(t).rev());
                if t.starts_with(b"/") {
                    let inside = self
                        .mount
                        .iter()
                        .enumerate()
                        .all(|(i, m)| todo.len() > i && todo[todo.len() - 1 - i] == *m);
                    if !inside {
                        return Ok(Found::Out(out(&[], &todo)));
                    }
                    todo.truncate(todo.len() - base);
                    stack.clear();
                    names.truncate(base);
                }
                continue;
            }
            stack.push(node);
            names.push(c);
        }
        let p = canon(&names);
        Ok(Found::In(
            stack.pop().unwrap_or_else(|| self.root.clone()),
            p,
        ))
    }

    /// `resolve`, with a path that leaves the tree an error (a squashfs file on its own).
    fn resolve_in(&self, path: &[u8], follow_last: bool, at: &Where) -> Result<(Inode, Vec<u8>)> {
        match self.resolve(path, follow_last, at)? {
            Found::In(n, p) => Ok((n, p)),
            Found::Out(p) => Err(Error::NotFound {
                at: at.with_path(&p),
            }),
        }
    }

    /// `lstat` of a resolved inode, named as the caller's path.
    pub(crate) fn entry_of(&self, n: &Inode, path: &[u8]) -> Entry {
        self.entry(n, last_name(&normalize(path)))
    }

    /// The entries of directory `d` (reached by `canon`), each inode read.
    pub(crate) fn list(
        &self,
        d: &Inode,
        canon: &[u8],
        at: &Where,
        max: usize,
    ) -> Result<Vec<Entry>> {
        let here = at.with_path(canon);
        if d.kind != Kind::Dir {
            return Err(Error::NotADirectory { at: here });
        }
        self.meta
            .entries(d, &here, max)?
            .into_iter()
            .map(|e| {
                let n = self.meta.inode(e.inode, &here)?;
                Ok(self.entry(&n, e.name))
            })
            .collect()
    }

    /// Opens the regular file `n` (reached by `canon`): its blocks' positions checked.
    pub(crate) fn open_inode(
        &self,
        n: Inode,
        canon: &[u8],
        at: &Where,
    ) -> Result<(SquashFile, u64)> {
        let here = at.with_path(canon);
        let Body::File {
            start,
            size,
            frag,
            blocks,
        } = n.body
        else {
            return Err(match n.kind {
                Kind::Dir => Error::IsADirectory { at: here },
                _ => Error::NotAFile { at: here },
            });
        };
        let mut pos = start;
        let mut placed = Vec::with_capacity(blocks.len());
        for w in blocks {
            let (len, _) = sb::block_word(w);
            placed.push((pos, w));
            pos = pos
                .checked_add(len)
                .filter(|&e| e <= self.meta.sb.bytes_used)
                .ok_or_else(|| corrupt(&here, "the file's blocks run past the image"))?;
        }
        Ok((
            SquashFile {
                blocks: placed,
                frag,
                size,
                pos: 0,
                last: None,
            },
            size,
        ))
    }

    /// One data block (or fragment block) decompressed; it must hold `want` bytes at least.
    fn data_block(&self, pos: u64, word: u32, want: usize, at: &Where) -> Result<Vec<u8>> {
        let (len, compressed) = sb::block_word(word);
        let bs = to_usize(u64::from(self.meta.sb.block_size));
        if len == 0 {
            return Ok(vec![0u8; want]);
        }
        if len > u64::from(self.meta.sb.block_size) {
            return Err(corrupt(at, format!("a data block of {len} bytes")));
        }
        let mut raw = vec![0u8; to_usize(len)];
        self.meta.read_raw(pos, &mut raw, at)?;
        let data = if compressed {
            sb::decompress(self.meta.sb.compressor, &raw, bs).map_err(|e| Error::Corrupt {
                at: at.clone(),
                reason: format!(
                    "squashfs: the data block at byte {pos}: {}",
                    crate::error::chain(&e)
                ),
            })?
        } else {
            raw
        };
        if data.len() < want {
            return Err(corrupt(
                at,
                format!(
                    "a data block of {} bytes where {want} are needed",
                    data.len()
                ),
            ));
        }
        Ok(data)
    }

    /// Reads from `f` at its position, within one block.
    pub(crate) fn read(&self, f: &mut SquashFile, buf: &mut [u8], at: &Where) -> Result<usize> {
        if f.pos >= f.size || buf.is_empty() {
            return Ok(0);
        }
        let bs = u64::from(self.meta.sb.block_size);
        let index = f.pos / bs;
        let block_start = index * bs;
        let in_block = (f.size - block_start).min(bs);
        if f.last.as_ref().is_none_or(|(i, _)| *i != index) {
            let data = match f.blocks.get(to_usize(index)) {
                Some(&(pos, word)) => {
                    let mut d = self.data_block(pos, word, to_usize(in_block), at)?;
                    d.truncate(to_usize(in_block));
                    d
                }
                None => {
                    let (i, offset) = f
                        .frag
                        .ok_or_else(|| corrupt(at, "the file's blocks end before its size"))?;
                    let (pos, word) = self.meta.fragment(i, at)?;
                    let end = u64::from(offset) + in_block;
                    let d = self.data_block(pos, word, to_usize(end), at)?;
                    d[to_usize(u64::from(offset))..to_usize(end)].to_vec()
                }
            };
            f.last = Some((index, data));
        }
        let data = f.last.as_ref().map(|(_, d)| d.as_slice()).unwrap_or(&[]);
        let from = to_usize(f.pos - block_start);
        let n = buf.len().min(data.len().saturating_sub(from));
        buf[..n].copy_from_slice(&data[from..from + n]);
        f.pos += len64(n);
        Ok(n)
    }

    pub(crate) fn metadata(&self, path: &[u8], at: &Where) -> Result<Entry> {
        let (n, _) = self.resolve_in(path, false, at)?;
        Ok(self.entry_of(&n, path))
    }

    pub(crate) fn canonicalize(&self, path: &[u8], at: &Where) -> Result<Vec<u8>> {
        Ok(self.resolve_in(path, true, at)?.1)
    }

    pub(crate) fn read_link(&self, path: &[u8], at: &Where) -> Result<Vec<u8>> {
        match self.resolve_in(path, false, at)?.0.body {
            Body::Symlink(t) => Ok(t),
            _ => Err(Error::Corrupt {
                at: at.with_path(path),
                reason: "not a symlink".into(),
            }),
        }
    }

    pub(crate) fn read_dir(&self, path: &[u8], at: &Where, max: usize) -> Result<Vec<Entry>> {
        let (d, canon) = self.resolve_in(path, true, at)?;
        self.list(&d, &canon, at, max)
    }

    pub(crate) fn open_file(&self, path: &[u8], at: &Where) -> Result<(SquashFile, u64)> {
        let (n, canon) = self.resolve_in(path, true, at)?;
        self.open_inode(n, &canon, at)
    }
}
