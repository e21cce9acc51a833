//! Extent trees: the inode's 60-byte `i_block` holds a header and up to four entries;
//! more extents go into 4 KiB leaf blocks (340 entries each) under index levels as deep as
//! needed. Each tree block ends with a CRC32C tail.

use crate::bits::*;
use crate::{csum, put16, put32, BLOCK_SIZE};
use imgbuild_blockio::to_usize;

pub const MAGIC: u16 = 0xF30A;
/// Longest initialized extent.
pub const MAX_LEN: u64 = 32768;
/// Entries in a tree block: (4096 - 12-byte header - 4-byte tail) / 12.
pub const PER_BLOCK: usize = (to_usize(BLOCK_SIZE) - 12 - 4) / 12;
/// Entries in the inode.
pub const IN_INODE: usize = 4;

/// One mapping of `len` file blocks starting at `logical` to disk blocks from `physical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u32,
    pub len: u16,
    pub physical: u64,
}

/// Append extents for `len` file blocks from `logical`, stored at the disk runs `runs`,
/// splitting at [`MAX_LEN`].
pub fn push_runs(out: &mut Vec<Extent>, mut logical: u64, runs: &[(u64, u64)]) {
    for &(mut phys, mut n) in runs {
        while n > 0 {
            let k = n.min(MAX_LEN);
            out.push(Extent {
                logical: narrow(
                    logical,
                    "file block numbers are below 2^32, ext4's limit (checked when planning)",
                ),
                len: k as u16,
                physical: phys,
            });
            logical += k;
            phys += k;
            n -= k;
        }
    }
}

/// Number of tree blocks (leaves and index blocks) needed for `n` extents.
pub fn tree_blocks(n: usize) -> u64 {
    let mut total = 0u64;
    let mut level = n;
    while level > IN_INODE {
        level = level.div_ceil(PER_BLOCK);
        total += level as u64;
    }
    total
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put16(buf, 0, MAGIC);
    put16(buf, 2, narrow(entries, "at most the node's capacity"));
    put16(
        buf,
        4,
        narrow(max, "a node's capacity, within a 4 KiB block"),
    );
    put16(buf, 6, depth);
    put32(buf, 8, 0); // eh_generation
}

fn leaf_entry(buf: &mut [u8], off: usize, e: &Extent) {
    put32(buf, off, e.logical);
    put16(buf, off + 4, e.len);
    put16(buf, off + 6, lo16(hi32(e.physical)));
    put32(buf, off + 8, lo32(e.physical));
}

fn index_entry(buf: &mut [u8], off: usize, logical: u32, child: u64) {
    put32(buf, off, logical);
    put32(buf, off + 4, lo32(child));
    put16(buf, off + 8, lo16(hi32(child)));
    put16(buf, off + 10, 0);
}

/// Build the tree for `extents` using `blocks` (exactly [`tree_blocks`] of them, leaves
/// first, then each index level). Returns `i_block` and the tree blocks as
/// `(disk block, contents)`, checksummed with the inode's seed.
pub fn build(
    extents: &[Extent],
    blocks: &[u64],
    inode_seed: u32,
) -> ([u8; 60], Vec<(u64, Vec<u8>)>) {
    let mut iblock = [0u8; 60];
    let mut out = Vec::with_capacity(blocks.len());
    if extents.len() <= IN_INODE {
        header(&mut iblock, extents.len(), IN_INODE, 0);
        for (i, e) in extents.iter().enumerate() {
            leaf_entry(&mut iblock, 12 + 12 * i, e);
        }
        return (iblock, out);
    }
    let mut next = blocks.iter().copied();
    // (first logical block, disk block) of the nodes of the level being built.
    let mut level: Vec<(u32, u64)> = Vec::new();
    for chunk in extents.chunks(PER_BLOCK) {
        let disk = next.next().expect("tree_blocks() counted every leaf");
        let mut b = vec![0u8; to_usize(BLOCK_SIZE)];
        header(&mut b, chunk.len(), PER_BLOCK, 0);
        for (i, e) in chunk.iter().enumerate() {
            leaf_entry(&mut b, 12 + 12 * i, e);
        }
        seal(&mut b, inode_seed);
        level.push((chunk[0].logical, disk));
        out.push((disk, b));
    }
    let mut depth = 1u16;
    while level.len() > IN_INODE {
        let mut upper = Vec::new();
        for chunk in level.chunks(PER_BLOCK) {
            let disk = next
                .next()
                .expect("tree_blocks() counted every index block");
            let mut b = vec![0u8; to_usize(BLOCK_SIZE)];
            header(&mut b, chunk.len(), PER_BLOCK, depth);
            for (i, &(lg, child)) in chunk.iter().enumerate() {
                index_entry(&mut b, 12 + 12 * i, lg, child);
            }
            seal(&mut b, inode_seed);
            upper.push((chunk[0].0, disk));
            out.push((disk, b));
        }
        level = upper;
        depth += 1;
    }
    header(&mut iblock, level.len(), IN_INODE, depth);
    for (i, &(lg, child)) in level.iter().enumerate() {
        index_entry(&mut iblock, 12 + 12 * i, lg, child);
    }
    (iblock, out)
}

/// Write the `ext4_extent_tail` checksum after the last possible entry.
fn seal(b: &mut [u8], inode_seed: u32) {
    let off = 12 + 12 * PER_BLOCK;
    let c = csum::raw(inode_seed, &b[..off]);
    put32(b, off, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_counts() {
        assert_eq!(PER_BLOCK, 340);
        assert_eq!(tree_blocks(4), 0);
        assert_eq!(tree_blocks(5), 1);
        assert_eq!(tree_blocks(340 * 4), 4);
        assert_eq!(tree_blocks(340 * 4 + 1), 5 + 1);
    }

    #[test]
    fn two_levels() {
        let ext: Vec<Extent> = (0..2000u32)
            .map(|i| Extent {
                logical: i * 2,
                len: 1,
                physical: 1000 + i as u64 * 3,
            })
            .collect();
        let n = to_usize(tree_blocks(ext.len()));
        let blocks: Vec<u64> = (0..n as u64).map(|i| 50 + i).collect();
        let (ib, tree) = build(&ext, &blocks, 1);
        assert_eq!(tree.len(), n);
        assert_eq!(u16::from_le_bytes([ib[6], ib[7]]), 2); // depth
        assert_eq!(u16::from_le_bytes([ib[2], ib[3]]), 1); // one index block at the top
    }
}
