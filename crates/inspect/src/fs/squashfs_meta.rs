//! Squashfs metadata: 8 KiB metadata blocks (cached, bounded), inodes of every type (basic
//! and extended; xattr indexes skipped), directory listings, the id and fragment tables.
//!
//! Every position read from the image is checked against `bytes_used` before it is read;
//! metadata runs only forward (a block's successor starts after it), so no chain loops.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::squashfs_sb::{self as sb, Superblock, META};
use super::Kind;
use crate::bytes::{le16, le32, le64, len64, to_usize};
use crate::error::{Error, Result, Where};
use crate::io::Slice;

/// Decompressed metadata blocks kept (8 KiB each: 32 MiB).
const MAX_CACHED: usize = 4096;
/// Longest symlink target read.
pub(crate) const MAX_TARGET: u32 = 64 << 10;
/// Largest directory listing read, in bytes.
pub(crate) const MAX_DIR_BYTES: u32 = 64 << 20;

pub(crate) fn corrupt(at: &Where, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        at: at.clone(),
        reason: format!("squashfs: {}", reason.into()),
    }
}

/// What an inode holds besides its header.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    /// A listing of `size` bytes at `block` (from the directory table) and `offset`.
    Dir {
        block: u64,
        offset: usize,
        size: u32,
    },
    /// A file's data blocks from `start` (their size words) and its tail in a fragment.
    File {
        start: u64,
        size: u64,
        frag: Option<(u32, u32)>,
        blocks: Vec<u32>,
    },
    Symlink(Vec<u8>),
    /// Devices, FIFOs and sockets.
    Special,
}

/// One inode, its owners resolved through the id table.
#[derive(Clone, Debug)]
pub(crate) struct Inode {
    pub number: u32,
    pub kind: Kind,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub body: Body,
}

impl Inode {
    /// Bytes `lstat` reports: file size, target length, listing size (as Linux, +3).
    pub(crate) fn size(&self) -> u64 {
        match &self.body {
            Body::Dir { size, .. } => u64::from(*size) + 3,
            Body::File { size, .. } => *size,
            Body::Symlink(t) => len64(t.len()),
            Body::Special => 0,
        }
    }
}

/// A decompressed metadata block and where the next one starts.
type Block = (Rc<Vec<u8>>, u64);

/// One directory entry: its name and where its inode is.
pub(crate) struct DirEntry {
    pub name: Vec<u8>,
    pub inode: u64,
}

/// The metadata side of an open squashfs: superblock, the image, cached blocks, ids.
pub(crate) struct Meta {
    pub slice: RefCell<Slice>,
    pub sb: Superblock,
    cache: RefCell<HashMap<u64, Block>>,
    pub ids: Vec<u32>,
}

/// A position in a metadata stream: a block's absolute position and an offset in it.
#[derive(Clone, Copy)]
struct Cursor {
    pos: u64,
    offset: usize,
}

impl Meta {
    pub(crate) fn new(slice: Slice, sb: Superblock) -> Self {
        Self {
            slice: RefCell::new(slice),
            sb,
            cache: RefCell::new(HashMap::new()),
            ids: Vec::new(),
        }
    }

    /// Reads raw bytes at `pos`, inside `bytes_used`.
    pub(crate) fn read_raw(&self, pos: u64, buf: &mut [u8], at: &Where) -> Result<()> {
        if pos
            .checked_add(len64(buf.len()))
            .is_none_or(|e| e > self.sb.bytes_used)
        {
            return Err(corrupt(
                at,
                format!(
                    "{} bytes at byte {pos} run past the {} bytes used",
                    buf.len(),
                    self.sb.bytes_used
                ),
            ));
        }
        self.slice
            .borrow_mut()
            .read_exact_at(pos, buf)
            .map_err(|source| Error::Io {
                at: at.clone(),
                source,
            })
    }

    /// The metadata block at `pos`, decompressed, and where the next one starts.
    fn block(&self, pos: u64, at: &Where) -> Result<Block> {
        if let Some(b) = self.cache.borrow().get(&pos) {
            return Ok(b.clone());
        }
        let mut h = [0u8; 2];
        self.read_raw(pos, &mut h, at)?;
        let (n, compressed) = sb::meta_header(u16::from_le_bytes(h));
        if n == 0 || n > META {
            return Err(corrupt(
                at,
                format!("a metadata block at byte {pos} of {n} bytes"),
            ));
        }
        let mut raw = vec![0u8; n];
        self.read_raw(pos + 2, &mut raw, at)?;
        let data = if compressed {
            sb::decompress(self.sb.compressor, &raw, META).map_err(|e| Error::Corrupt {
                at: at.clone(),
                reason: format!(
                    "squashfs: the metadata block at byte {pos}: {}",
                    crate::error::chain(&e)
                ),
            })?
        } else {
            raw
        };
        let next = pos + 2 + len64(n);
        let entry = (Rc::new(data), next);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(pos, entry.clone());
        Ok(entry)
    }

    /// `n` bytes of a metadata stream from `cur`, crossing blocks; `cur` moves past them.
    fn read(&self, cur: &mut Cursor, n: usize, at: &Where) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n.min(1 << 20));
        while out.len() < n {
            let (data, next) = self.block(cur.pos, at)?;
            if cur.offset >= data.len() {
                if cur.offset == data.len() && cur.offset == META {
                    cur.pos = next;
                    cur.offset = 0;
                    continue;
                }
                return Err(corrupt(
                    at,
                    format!(
                        "offset {} in a metadata block of {} bytes",
                        cur.offset,
                        data.len()
                    ),
                ));
            }
            let take = (n - out.len()).min(data.len() - cur.offset);
            out.extend_from_slice(&data[cur.offset..cur.offset + take]);
            cur.offset += take;
            if cur.offset == data.len() {
                cur.pos = next;
                cur.offset = 0;
            }
        }
        Ok(out)
    }

    /// The id table, read once.
    pub(crate) fn read_ids(&mut self, at: &Where) -> Result<()> {
        let n = usize::from(self.sb.ids);
        let blocks = (n * 4).div_ceil(META);
        let mut ptrs = vec![0u8; blocks * 8];
        self.read_raw(self.sb.id_table, &mut ptrs, at)?;
        let mut ids = Vec::with_capacity(n);
        for i in 0..blocks {
            let mut cur = Cursor {
                pos: le64(&ptrs, i * 8),
                offset: 0,
            };
            let want = (n - ids.len()).min(META / 4);
            let b = self.read(&mut cur, want * 4, at)?;
            ids.extend(b.chunks_exact(4).map(|c| le32(c, 0)));
        }
        self.ids = ids;
        Ok(())
    }

    fn id(&self, i: u16, at: &Where) -> Result<u32> {
        self.ids
            .get(usize::from(i))
            .copied()
            .ok_or_else(|| corrupt(at, format!("id index {i} past the {} ids", self.ids.len())))
    }

    /// Fragment `i`: where its block is and its size word.
    pub(crate) fn fragment(&self, i: u32, at: &Where) -> Result<(u64, u32)> {
        if i >= self.sb.fragments {
            return Err(corrupt(
                at,
                format!("fragment {i} past the {} fragments", self.sb.fragments),
            ));
        }
        let mut p = [0u8; 8];
        self.read_raw(self.sb.frag_table + u64::from(i / 512) * 8, &mut p, at)?;
        let mut cur = Cursor {
            pos: u64::from_le_bytes(p),
            offset: to_usize(u64::from(i % 512) * 16),
        };
        let e = self.read(&mut cur, 16, at)?;
        Ok((le64(&e, 0), le32(&e, 8)))
    }

    /// The inode a reference points at (inode table block, offset).
    // tidy:long-fn: one match over the 14 inode types, each a few fields.
    pub(crate) fn inode(&self, r: u64, at: &Where) -> Result<Inode> {
        let (block, offset) = sb::split_ref(r);
        let pos = self
            .sb
            .inode_table
            .checked_add(block)
            .filter(|&p| p < self.sb.bytes_used)
            .ok_or_else(|| corrupt(at, format!("an inode reference {r:#x} outside the image")))?;
        let mut cur = Cursor { pos, offset };
        let h = self.read(&mut cur, 16, at)?;
        let ty = le16(&h, 0);
        let mut node = Inode {
            number: le32(&h, 12),
            kind: Kind::File,
            mode: le16(&h, 2) & 0o7777,
            uid: self.id(le16(&h, 4), at)?,
            gid: self.id(le16(&h, 6), at)?,
            mtime: le32(&h, 8),
            body: Body::Special,
        };
        let bs = u64::from(self.sb.block_size);
        match ty {
            1 => {
                let b = self.read(&mut cur, 16, at)?;
                node.kind = Kind::Dir;
                node.body = dir_body(
                    u64::from(le32(&b, 0)),
                    le16(&b, 10),
                    u32::from(le16(&b, 8)),
                    at,
                )?;
            }
            8 => {
                let b = self.read(&mut cur, 24, at)?;
                node.kind = Kind::Dir;
                node.body = dir_body(u64::from(le32(&b, 8)), le16(&b, 18), le32(&b, 4), at)?;
            }
            2 | 9 => {
                let (start, size, frag, foff) = if ty == 2 {
                    let b = self.read(&mut cur, 16, at)?;
                    (
                        u64::from(le32(&b, 0)),
                        u64::from(le32(&b, 12)),
                        le32(&b, 4),
                        le32(&b, 8),
                    )
                } else {
                    let b = self.read(&mut cur, 40, at)?;
                    (le64(&b, 0), le64(&b, 8), le32(&b, 28), le32(&b, 32))
                };
                let frag = (frag != u32::MAX).then_some((frag, foff));
                let n = if frag.is_some() {
                    size / bs
                } else {
                    size.div_ceil(bs)
                };
                // Each block's size word is in the inode table, inside the image.
                if n.saturating_mul(4) > self.sb.bytes_used {
                    return Err(corrupt(
                        at,
                        format!("a file of {size} bytes has more blocks than the image holds"),
                    ));
                }
                let b = self.read(&mut cur, to_usize(n * 4), at)?;
                node.body = Body::File {
                    start,
                    size,
                    frag,
                    blocks: b.chunks_exact(4).map(|c| le32(c, 0)).collect(),
                };
            }
            3 | 10 => {
                let b = self.read(&mut cur, 8, at)?;
                let n = le32(&b, 4);
                if n > MAX_TARGET {
                    return Err(corrupt(at, format!("a symlink target of {n} bytes")));
                }
                node.kind = Kind::Symlink;
                node.body = Body::Symlink(self.read(&mut cur, to_usize(u64::from(n)), at)?);
            }
            4 | 11 => node.kind = Kind::BlockDev,
            5 | 12 => node.kind = Kind::CharDev,
            6 | 13 => node.kind = Kind::Fifo,
            7 | 14 => node.kind = Kind::Socket,
            _ => return Err(corrupt(at, format!("inode type {ty}"))),
        }
        Ok(node)
    }

    /// The entries of directory `d`, in listing order, at most `max`.
    pub(crate) fn entries(&self, d: &Inode, at: &Where, max: usize) -> Result<Vec<DirEntry>> {
        let Body::Dir {
            block,
            offset,
            size,
        } = d.body
        else {
            return Err(Error::NotADirectory { at: at.clone() });
        };
        let pos = self
            .sb
            .dir_table
            .checked_add(block)
            .filter(|&p| p < self.sb.bytes_used)
            .ok_or_else(|| corrupt(at, format!("a listing at block {block} outside the image")))?;
        let mut cur = Cursor { pos, offset };
        let data = self.read(&mut cur, to_usize(u64::from(size)), at)?;
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            let h = data
                .get(i..i + 12)
                .ok_or_else(|| corrupt(at, "a listing header cut short"))?;
            let count = le32(h, 0);
            if count >= 256 {
                return Err(corrupt(
                    at,
                    format!("a listing header of {count}+1 entries"),
                ));
            }
            let start = u64::from(le32(h, 4));
            i += 12;
            for _ in 0..=count {
                let e = data
                    .get(i..i + 8)
                    .ok_or_else(|| corrupt(at, "a listing entry cut short"))?;
                let off = u64::from(le16(e, 0));
                let n = usize::from(le16(e, 6)) + 1;
                if n > 256 {
                    return Err(corrupt(at, format!("a name of {n} bytes")));
                }
                let name = data
                    .get(i + 8..i + 8 + n)
                    .ok_or_else(|| corrupt(at, "a name cut short"))?;
                if out.len() >= max {
                    return Err(Error::Limit {
                        at: at.clone(),
                        what: "entries in one directory".into(),
                        limit: len64(max),
                    });
                }
                out.push(DirEntry {
                    name: name.to_vec(),
                    inode: (start << 16) | off,
                });
                i += 8 + n;
            }
        }
        Ok(out)
    }
}

/// A directory's listing position, its `file_size` (3 more than the listing) checked.
fn dir_body(block: u64, offset: u16, file_size: u32, at: &Where) -> Result<Body> {
    if file_size < 3 || file_size - 3 > MAX_DIR_BYTES {
        return Err(corrupt(at, format!("a directory of {file_size} bytes")));
    }
    Ok(Body::Dir {
        block,
        offset: usize::from(offset),
        size: file_size - 3,
    })
}
