//! Just enough of ext4, read by hand, to get a symlink's target that `ext4-view` refuses:
//! Linux allows targets of up to 4095 bytes whatever their components, but ext4-view rejects
//! a target with a component over 255 bytes. Given a path without symlinks, this walks the
//! directories from the root inode (linear scan of every directory block, which also covers
//! hash-indexed directories), then reads the symlink inode's data through its extents (or
//! direct blocks). Every read is bounded: directory sizes, extent depth, entry counts.
//! The same reading gives what `ext4-view` does not expose: inode numbers and the blocks
//! each inode holds, for `inspect --sizes`.

use std::cell::RefCell;

use super::ext4_sb::Superblock;
use crate::bytes::{le16, le32, len64, to_usize};
use crate::error::{Error, Result, Where};
use crate::io::Slice;

/// Largest directory read (bytes) while looking a name up.
const MAX_DIR: u64 = 64 << 20;
/// Deepest extent tree followed.
const MAX_DEPTH: u16 = 5;
const ROOT_INO: u32 = 2;
const S_IFMT: u16 = 0o170000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;
const EXTENTS_FL: u32 = 0x80000;
const HUGE_FILE_FL: u32 = 0x40000;
const INLINE_DATA_FL: u32 = 0x1000_0000;

pub(crate) struct Raw {
    slice: RefCell<Slice>,
    block_size: u64,
    inodes_per_group: u64,
    inode_size: u64,
    desc_size: u64,
    first_data_block: u64,
    groups: u64,
    is64: bool,
}

impl Raw {
    pub(crate) fn new(slice: Slice, sb: &Superblock, inode_size: u64) -> Self {
        Raw {
            slice: RefCell::new(slice),
            block_size: sb.block_size(),
            inodes_per_group: sb.inodes_per_group(),
            inode_size,
            desc_size: sb.desc_size(),
            first_data_block: sb.first_data_block(),
            groups: sb.groups(),
            is64: sb.is64(),
        }
    }

    fn corrupt(&self, at: &Where, reason: String) -> Error {
        Error::Corrupt {
            at: at.clone(),
            reason: format!("ext4: {reason}"),
        }
    }

    fn read(&self, offset: u64, buf: &mut [u8], at: &Where) -> Result<()> {
        self.slice
            .borrow_mut()
            .read_exact_at(offset, buf)
            .map_err(|source| Error::Io {
                at: at.clone(),
                source,
            })
    }

    /// The raw inode `ino` (its first 160 bytes: mode, size, flags, i_block).
    fn inode(&self, ino: u32, at: &Where) -> Result<[u8; 160]> {
        let idx = u64::from(ino)
            .checked_sub(1)
            .ok_or_else(|| self.corrupt(at, "inode 0".into()))?;
        let group = idx / self.inodes_per_group;
        if group >= self.groups {
            return Err(self.corrupt(at, format!("inode {ino} is past the last group")));
        }
        let mut d = vec![0u8; to_usize(self.desc_size.clamp(32, 64))];
        let gdt = (self.first_data_block + 1) * self.block_size;
        self.read(gdt + group * self.desc_size, &mut d, at)?;
        let mut table = u64::from(le32(&d, 0x8));
        if self.is64 && d.len() >= 0x2c {
            table |= u64::from(le32(&d, 0x28)) << 32;
        }
        let off = table * self.block_size + (idx % self.inodes_per_group) * self.inode_size;
        let mut b = [0u8; 160];
        let n = to_usize(self.inode_size).min(160);
        self.read(off, &mut b[..n], at)?;
        Ok(b)
    }

    /// `(logical block, physical block, count)` runs of an inode's data.
    fn runs(&self, inode: &[u8; 160], at: &Where) -> Result<Vec<(u64, u64, u64)>> {
        let flags = le32(inode, 0x20);
        let iblock = &inode[0x28..0x28 + 60];
        if flags & INLINE_DATA_FL != 0 {
            return Err(Error::Unsupported {
                at: at.clone(),
                what: "ext4 inline data".into(),
            });
        }
        if flags & EXTENTS_FL == 0 {
            // Block map: the first 12 pointers are direct (enough for any symlink target and
            // small directories).
            return Ok((0..12)
                .map(|i| u64::from(le32(iblock, i * 4)))
                .enumerate()
                .filter(|&(_, p)| p != 0)
                .map(|(i, p)| (len64(i), p, 1))
                .collect());
        }
        let mut out = Vec::new();
        self.extents(iblock, MAX_DEPTH, &mut out, at)?;
        Ok(out)
    }

    fn extents(
        &self,
        node: &[u8],
        budget: u16,
        out: &mut Vec<(u64, u64, u64)>,
        at: &Where,
    ) -> Result<()> {
        if node.len() < 12 || le16(node, 0) != 0xF30A {
            return Err(self.corrupt(at, "bad extent header".into()));
        }
        let entries = usize::from(le16(node, 2));
        let depth = le16(node, 6);
        if depth > budget || 12 + entries * 12 > node.len() {
            return Err(self.corrupt(at, "extent tree too deep or too full".into()));
        }
        for k in 0..entries {
            let e = &node[12 + k * 12..24 + k * 12];
            if depth == 0 {
                let len = u64::from(le16(e, 4));
                let len = if len > 32768 { len - 32768 } else { len };
                let phys = (u64::from(le16(e, 6)) << 32) | u64::from(le32(e, 8));
                out.push((u64::from(le32(e, 0)), phys, len));
            } else {
                let child = (u64::from(le16(e, 8)) << 32) | u64::from(le32(e, 4));
                let mut b = vec![0u8; to_usize(self.block_size)];
                self.read(child * self.block_size, &mut b, at)?;
                self.extents(&b, depth - 1, out, at)?;
            }
        }
        Ok(())
    }

    /// The first `size` bytes of an inode's data (holes read as zeros).
    fn data(&self, inode: &[u8; 160], size: u64, at: &Where) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; to_usize(size)];
        let bs = self.block_size;
        for (l, p, n) in self.runs(inode, at)? {
            let from = l * bs;
            if from >= size {
                continue;
            }
            let len = (n * bs).min(size - from);
            self.read(p * bs, &mut buf[to_usize(from)..to_usize(from + len)], at)?;
        }
        Ok(buf)
    }

    fn mode(inode: &[u8; 160]) -> u16 {
        le16(inode, 0) & S_IFMT
    }

    fn size(inode: &[u8; 160]) -> u64 {
        u64::from(le32(inode, 0x4)) | (u64::from(le32(inode, 0x6c)) << 32)
    }

    /// The entries of directory inode `dir` (`.` and `..` left out): a linear scan of every
    /// block, which also reads hash-indexed directories (their index blocks look empty).
    pub(crate) fn entries(&self, dir: u32, at: &Where) -> Result<Vec<(Vec<u8>, u32)>> {
        let inode = self.inode(dir, at)?;
        if Self::mode(&inode) != S_IFDIR {
            return Err(Error::NotADirectory { at: at.clone() });
        }
        let size = Self::size(&inode);
        if size > MAX_DIR {
            return Err(Error::Limit {
                at: at.clone(),
                what: "bytes in one directory".into(),
                limit: MAX_DIR,
            });
        }
        let data = self.data(&inode, size, at)?;
        let mut out = Vec::new();
        for block in data.chunks(to_usize(self.block_size)) {
            let mut pos = 0;
            while pos + 8 <= block.len() {
                let ino = le32(block, pos);
                let rec = usize::from(le16(block, pos + 4));
                let len = usize::from(block[pos + 6]);
                if rec < 8 || pos + rec > block.len() || 8 + len > rec {
                    break;
                }
                let name = &block[pos + 8..pos + 8 + len];
                if ino != 0 && name != b"." && name != b".." {
                    out.push((name.to_vec(), ino));
                }
                pos += rec;
            }
        }
        Ok(out)
    }

    /// The inode named `name` in directory `dir`.
    fn lookup(&self, dir: u32, name: &[u8], at: &Where) -> Result<u32> {
        self.entries(dir, at)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, ino)| ino)
            .ok_or_else(|| Error::NotFound { at: at.clone() })
    }

    /// The inode at `path`, whose directories are not symlinks.
    pub(crate) fn resolve(&self, path: &[u8], at: &Where) -> Result<u32> {
        let mut ino = ROOT_INO;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            ino = self.lookup(ino, c, at)?;
        }
        Ok(ino)
    }

    /// Whether inode `ino` is a directory, and the bytes it holds on disk (`i_blocks`, as
    /// `du` counts them: data, extent tree blocks, the extended-attribute block).
    pub(crate) fn allocation(&self, ino: u32, at: &Where) -> Result<(bool, u64)> {
        let inode = self.inode(ino, at)?;
        let blocks = u64::from(le32(&inode, 0x1c)) | (u64::from(le16(&inode, 0x74)) << 32);
        let unit = if le32(&inode, 0x20) & HUGE_FILE_FL != 0 {
            self.block_size
        } else {
            512
        };
        Ok((Self::mode(&inode) == S_IFDIR, blocks.saturating_mul(unit)))
    }

    /// The target of the symlink at `path`, whose directories are not symlinks.
    pub(crate) fn symlink_target(&self, path: &[u8], max: u64, at: &Where) -> Result<Vec<u8>> {
        let ino = self.resolve(path, at)?;
        let inode = self.inode(ino, at)?;
        if Self::mode(&inode) != S_IFLNK {
            return Err(self.corrupt(at, "not a symlink".into()));
        }
        let size = Self::size(&inode);
        if size == 0 || size > max {
            return Err(self.corrupt(at, format!("symlink target of {size} bytes")));
        }
        if size < 60 {
            return Ok(inode[0x28..0x28 + to_usize(size)].to_vec());
        }
        self.data(&inode, size, at)
    }
}
