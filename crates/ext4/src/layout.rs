//! Block-group geometry and block allocation.
//!
//! Every group is 32768 blocks of 4 KiB (the last one may be shorter). Groups 0, 1 and the
//! powers of 3, 5 and 7 start with a copy of the superblock and the group descriptor table
//! (`sparse_super`). Block bitmaps, inode bitmaps and inode tables of each flex group of 16
//! groups sit together at the start of its first group (`flex_bg`), like mke2fs lays them
//! out. Everything else is handed out by [`Alloc`], which walks the free blocks in order.

use crate::bits::narrow;
use crate::{BLOCKS_PER_GROUP, BLOCK_SIZE, DESC_SIZE, FLEX_GROUPS, INODES_PER_BLOCK, INODE_SIZE};

/// Why a geometry cannot be built for a block count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoError {
    /// Not enough groups to hold this many inodes; at least `blocks` blocks are needed.
    TooFewGroups { blocks: u64 },
}

/// The fixed metadata layout of a filesystem of `blocks` blocks.
#[derive(Debug, Clone)]
pub struct Geometry {
    pub blocks: u64,
    pub groups: u32,
    pub inodes_per_group: u32,
    /// Inode table blocks per group.
    pub itable_blocks: u64,
    /// Blocks of group descriptors (64 descriptors per block).
    pub gdt_blocks: u64,
    pub block_bitmap: Vec<u64>,
    pub inode_bitmap: Vec<u64>,
    pub inode_table: Vec<u64>,
    /// Sorted, disjoint `[start, end)` ranges of all fixed metadata (superblock copies,
    /// descriptor tables, bitmaps, inode tables).
    pub reserved: Vec<(u64, u64)>,
}

/// Whether group `g` holds a superblock backup under `sparse_super`.
pub fn has_super(g: u32) -> bool {
    fn power_of(g: u32, base: u64) -> bool {
        let mut p = base;
        while p < u64::from(g) {
            p *= base;
        }
        p == u64::from(g)
    }
    g <= 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
}

impl Geometry {
    /// Lay out `blocks` blocks with at least `min_inodes` inodes, and one inode per
    /// `inode_ratio` bytes otherwise (mke2fs's `-i`).
    pub fn new(blocks: u64, min_inodes: u64, inode_ratio: u64) -> Result<Geometry, GeoError> {
        let groups64 = blocks.div_ceil(BLOCKS_PER_GROUP);
        let groups = u32::try_from(groups64).unwrap_or(u32::MAX);
        let by_ratio = blocks.saturating_mul(BLOCK_SIZE) / inode_ratio.max(1);
        let want = by_ratio.max(min_inodes);
        let per_block = u64::from(INODES_PER_BLOCK);
        let max_ipg = BLOCK_SIZE * 8;
        let mut ipg = want.div_ceil(groups64).div_ceil(per_block) * per_block;
        ipg = ipg.max(per_block);
        if ipg > max_ipg {
            if min_inodes.div_ceil(groups64) > max_ipg {
                let need_groups = min_inodes.div_ceil(max_ipg);
                return Err(GeoError::TooFewGroups {
                    blocks: (need_groups - 1) * BLOCKS_PER_GROUP + 1,
                });
            }
            ipg = max_ipg;
        }
        // The total inode count is a 32-bit field.
        while ipg * groups64 > u64::from(u32::MAX) {
            ipg -= per_block;
        }
        let itable_blocks = ipg * INODE_SIZE as u64 / BLOCK_SIZE;
        let gdt_blocks = (groups64 * DESC_SIZE as u64).div_ceil(BLOCK_SIZE);

        let mut backups = Vec::new();
        for g in 0..groups {
            if has_super(g) {
                let start = u64::from(g) * BLOCKS_PER_GROUP;
                backups.push((start, start + 1 + gdt_blocks));
            }
        }
        // Place each flex group's bitmaps and tables after the previous one's, never
        // across a superblock copy.
        let n = groups as usize;
        let mut block_bitmap = vec![0; n];
        let mut inode_bitmap = vec![0; n];
        let mut inode_table = vec![0; n];
        let mut cursor = 0u64;
        let mut flex_start = 0u32;
        while flex_start < groups {
            let flex_end = (flex_start + FLEX_GROUPS).min(groups);
            cursor = cursor.max(u64::from(flex_start) * BLOCKS_PER_GROUP);
            for g in flex_start..flex_end {
                let b = fit(&backups, cursor, 1);
                block_bitmap[g as usize] = b;
                cursor = b + 1;
            }
            for g in flex_start..flex_end {
                let b = fit(&backups, cursor, 1);
                inode_bitmap[g as usize] = b;
                cursor = b + 1;
            }
            for g in flex_start..flex_end {
                let b = fit(&backups, cursor, itable_blocks);
                inode_table[g as usize] = b;
                cursor = b + itable_blocks;
            }
            flex_start = flex_end;
        }
        let mut reserved = backups;
        for g in 0..n {
            reserved.push((block_bitmap[g], block_bitmap[g] + 1));
            reserved.push((inode_bitmap[g], inode_bitmap[g] + 1));
            reserved.push((inode_table[g], inode_table[g] + itable_blocks));
        }
        reserved.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(reserved.len());
        for (s, e) in reserved {
            match merged.last_mut() {
                Some(last) if last.1 >= s => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        Ok(Geometry {
            blocks,
            groups,
            inodes_per_group: narrow(ipg, "at most 8 inodes per block of a 32768-block group"),
            itable_blocks,
            gdt_blocks,
            block_bitmap,
            inode_bitmap,
            inode_table,
            reserved: merged,
        })
    }

    pub fn inodes(&self) -> u64 {
        u64::from(self.inodes_per_group) * u64::from(self.groups)
    }

    /// One past the last fixed metadata block.
    pub fn meta_end(&self) -> u64 {
        self.reserved.last().map_or(0, |r| r.1)
    }

    pub fn group_start(&self, g: u32) -> u64 {
        u64::from(g) * BLOCKS_PER_GROUP
    }

    /// Number of blocks in group `g` (the last one may be short).
    pub fn group_len(&self, g: u32) -> u64 {
        (self.blocks - self.group_start(g)).min(BLOCKS_PER_GROUP)
    }
}

/// The first `start >= from` such that `[start, start + len)` avoids every range in `avoid`
/// (sorted, disjoint).
fn fit(avoid: &[(u64, u64)], from: u64, len: u64) -> u64 {
    let mut start = from;
    for &(s, e) in avoid {
        if e <= start {
            continue;
        }
        if s >= start + len {
            break;
        }
        start = e;
    }
    start
}

/// Hands out free blocks in increasing order, skipping the reserved ranges.
pub struct Alloc<'a> {
    reserved: &'a [(u64, u64)],
    idx: usize,
    pos: u64,
}

impl<'a> Alloc<'a> {
    pub fn new(reserved: &'a [(u64, u64)]) -> Self {
        Alloc {
            reserved,
            idx: 0,
            pos: 0,
        }
    }

    /// One past the last block handed out (every free block below it has been used).
    pub fn end(&self) -> u64 {
        self.pos
    }

    /// Take `n` blocks, appending them to `out` as `(start, len)` runs (adjacent runs
    /// merged).
    pub fn take(&mut self, mut n: u64, out: &mut Vec<(u64, u64)>) {
        while n > 0 {
            while self.idx < self.reserved.len() && self.reserved[self.idx].1 <= self.pos {
                self.idx += 1;
            }
            if let Some(&(s, e)) = self.reserved.get(self.idx) {
                if s <= self.pos {
                    self.pos = e;
                    self.idx += 1;
                    continue;
                }
            }
            let limit = self.reserved.get(self.idx).map_or(u64::MAX, |r| r.0);
            let k = n.min(limit - self.pos);
            match out.last_mut() {
                Some(last) if last.0 + last.1 == self.pos => last.1 += k,
                _ => out.push((self.pos, k)),
            }
            self.pos += k;
            n -= k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_groups() {
        let got: Vec<u32> = (0..130).filter(|&g| has_super(g)).collect();
        assert_eq!(got, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125]);
    }

    #[test]
    fn like_mke2fs_for_one_gib() {
        // mke2fs -t ext4 on 1 GiB (minus the reserved GDT blocks we do not have).
        let g = Geometry::new(262_144, 0, 16384).unwrap();
        assert_eq!(
            (g.groups, g.inodes_per_group, g.itable_blocks),
            (8, 8192, 512)
        );
        assert_eq!(g.block_bitmap[0], 2);
        assert_eq!(g.inode_bitmap[0], 10);
        assert_eq!(g.inode_table[0], 18);
        assert_eq!(g.inode_table[1], 18 + 512);
        assert_eq!(g.reserved[0], (0, 18 + 8 * 512));
    }

    #[test]
    fn alloc_skips_reserved() {
        let r = [(0, 10), (20, 30)];
        let mut a = Alloc::new(&r);
        let mut out = Vec::new();
        a.take(5, &mut out);
        a.take(10, &mut out);
        assert_eq!(out, [(10, 10), (30, 5)]);
        assert_eq!(a.end(), 35);
    }
}
