//! The filesystem as an extent map: file data referenced from the source files, metadata
//! (superblocks, descriptors, bitmaps, inode tables, directories, extent tree blocks, the
//! journal superblock) encoded in memory. Zero blocks are never mapped.

use crate::bits::*;
use imgbuild_blockio::to_usize;
use std::collections::HashMap;
use std::sync::Arc;

use fstree::{FileData, Kind, Tree};
use imgbuild_diskmap::{Map, MapBuilder, SourceFile};
use rayon::prelude::*;

use crate::inode::{self, Fields};
use crate::layout::has_super;
use crate::sb::{self, Desc};
use crate::{
    csum, extent, fstree, journal, Ino, Plan, Result, Type, BLOCKS_PER_GROUP, BLOCK_SIZE,
    DESC_SIZE, INODE_SIZE, JOURNAL_INO,
};

const BS: usize = to_usize(BLOCK_SIZE);

pub fn map(plan: &Plan, tree: &Tree) -> Result<Map> {
    let mut b = MapBuilder::new("ext4", plan.size_bytes());
    map_data(plan, tree, &mut b)?;
    map_meta(plan, tree, &mut b)?;
    Ok(b.finish()?)
}

/// `(logical block, physical block, blocks)` runs of an inode: extents merged where they
/// continue each other on disk and in the file.
fn merged_extents(i: &Ino) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::with_capacity(i.extents.len());
    for e in &i.extents {
        let (l, p, n) = (u64::from(e.logical), e.physical, u64::from(e.len));
        match out.last_mut() {
            Some(last) if last.0 + last.2 == l && last.1 + last.2 == p => last.2 += n,
            _ => out.push((l, p, n)),
        }
    }
    out
}

/// File data: host files by reference (only their data runs: holes stay holes), in-memory
/// files by their bytes.
fn map_data(plan: &Plan, tree: &Tree, b: &mut MapBuilder) -> Result<()> {
    let files = plan
        .inos
        .iter()
        .filter(|i| i.typ == Type::Reg && !i.extents.is_empty());
    for i in files {
        let Some(node) = i.node else { continue };
        let Kind::File(data) = &tree.node(node).kind else {
            unreachable!("a Reg inode with a node comes from a File node")
        };
        match data {
            FileData::Host { path, size } => {
                let src = SourceFile::new(path, *size);
                for (l, p, n) in merged_extents(i) {
                    let off = l * BLOCK_SIZE;
                    let len = (n * BLOCK_SIZE).min(size - off);
                    b.file(p * BLOCK_SIZE, &src, off, len)?;
                }
            }
            FileData::Bytes(bytes) => {
                for (l, p, n) in merged_extents(i) {
                    let off = to_usize(l * BLOCK_SIZE);
                    let end = (off + to_usize(n * BLOCK_SIZE)).min(bytes.len());
                    b.bytes_range(p * BLOCK_SIZE, bytes, off..end)?;
                }
            }
        }
    }
    Ok(())
}

/// A piece of metadata: contents for blocks from `.0` on.
type Chunk = (u64, Vec<u8>);

/// The inode's on-disk image, plus the blocks it owns besides file data (extent tree,
/// directory blocks, a slow symlink's block).
fn encode_inode(plan: &Plan, tree: &Tree, i: &Ino) -> ([u8; INODE_SIZE], Vec<Chunk>) {
    let seed = csum::inode_seed(plan.fs_seed, i.ino, 0);
    let mut chunks = Vec::new();
    let mut f = Fields {
        uid: i.meta.uid,
        gid: i.meta.gid,
        size: i.size,
        time: i.meta.mtime,
        links: narrow(i.links, "link counts over 65000 are refused when planning"),
        blocks: i.data_blocks() + i.tree.len() as u64,
        extra_isize: inode::EXTRA_ISIZE,
        ..Fields::default()
    };
    let perm = i.meta.perm & 0o7777;
    let node = i.node.map(|n| tree.node(n));
    let mut extents = || {
        let (block, tree_blocks) = extent::build(&i.extents, &i.tree, seed);
        chunks.extend(tree_blocks);
        block
    };
    match i.typ {
        Type::Dir => {
            f.mode = inode::S_IFDIR | perm;
            f.flags = inode::EXT4_EXTENTS_FL;
            f.block = extents();
            let d = i.dir.as_ref().expect("directories are built by plan()");
            if d.indexed {
                f.flags |= inode::EXT4_INDEX_FL;
            }
        }
        Type::Reg => {
            f.mode = inode::S_IFREG | perm;
            f.flags = inode::EXT4_EXTENTS_FL;
            f.block = extents();
            if i.ino == JOURNAL_INO {
                let first = i.extents[0].physical;
                chunks.push((
                    first,
                    journal::superblock(i.size / BLOCK_SIZE, &plan.opts.uuid),
                ));
            }
        }
        Type::Symlink => {
            f.mode = inode::S_IFLNK | perm;
            let Some(Kind::Symlink(target)) = node.map(|n| &n.kind) else {
                unreachable!("a Symlink inode comes from a Symlink node")
            };
            if i.runs.is_empty() {
                f.block[..target.len()].copy_from_slice(target);
            } else {
                f.flags = inode::EXT4_EXTENTS_FL;
                f.block = extents();
                let mut b = vec![0u8; BS];
                b[..target.len()].copy_from_slice(target);
                chunks.push((i.extents[0].physical, b));
            }
        }
        Type::Chr | Type::Blk => {
            let (major, minor) = match node.map(|n| &n.kind) {
                Some(Kind::CharDev { major, minor } | Kind::BlockDev { major, minor }) => {
                    (*major, *minor)
                }
                _ => unreachable!("a device inode comes from a device node"),
            };
            f.mode = perm
                | if i.typ == Type::Chr {
                    inode::S_IFCHR
                } else {
                    inode::S_IFBLK
                };
            if major < 256 && minor < 256 {
                crate::put32(&mut f.block, 0, (major << 8) | minor);
            } else {
                let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
                crate::put32(&mut f.block, 4, new);
            }
        }
        Type::Fifo => f.mode = inode::S_IFIFO | perm,
        Type::Sock => f.mode = inode::S_IFSOCK | perm,
    }
    (inode::encode(i.ino, &f, plan.fs_seed), chunks)
}

/// Set bits `[from, to)` of a bitmap (bit `i` is bit `i % 8` of byte `i / 8`).
fn set_bits(bm: &mut [u8], from: u64, to: u64) {
    let mut bit = from;
    while bit < to && bit & 7 != 0 {
        bm[(bit / 8) as usize] |= 1 << (bit % 8);
        bit += 1;
    }
    let whole = (to.saturating_sub(bit)) / 8;
    bm[(bit / 8) as usize..to_usize(bit / 8 + whole)].fill(0xFF);
    bit += whole * 8;
    while bit < to {
        bm[(bit / 8) as usize] |= 1 << (bit % 8);
        bit += 1;
    }
}

/// Inode tables (only the part holding used inodes), each inode encoded straight into its
/// group's table, with the blocks the inodes own besides file data.
fn inode_tables(plan: &Plan, tree: &Tree) -> (Vec<Vec<u8>>, Vec<Chunk>) {
    let geo = &plan.geo;
    let ipg = u64::from(geo.inodes_per_group);
    let max_ino = u64::from(plan.max_ino);
    let per_group: Vec<(Vec<u8>, Vec<Chunk>)> = (0..u64::from(geo.groups))
        .into_par_iter()
        .map(|g| {
            let used = max_ino.saturating_sub(g * ipg).min(ipg);
            let mut table = vec![0u8; (to_usize(used) * INODE_SIZE).div_ceil(BS) * BS];
            let mut chunks = Vec::new();
            let first: u32 = narrow(g * ipg + 1, "inode numbers are below 2^32 (layout)");
            let last: u32 = narrow(g * ipg + used, "inode numbers are below 2^32 (layout)");
            let mut put = |ino: u32, raw: &[u8; INODE_SIZE]| {
                let k = (ino - first) as usize;
                table[k * INODE_SIZE..(k + 1) * INODE_SIZE].copy_from_slice(raw);
            };
            if first == 1 && used > 0 {
                // Inode 1 (bad blocks): empty, with times, like mke2fs writes it.
                let bad = Fields {
                    time: plan.opts.timestamp,
                    ..Fields::default()
                };
                put(1, &inode::encode(1, &bad, plan.fs_seed));
            }
            let from = plan.inos.partition_point(|i| i.ino < first);
            for i in plan.inos[from..].iter().take_while(|i| i.ino <= last) {
                let (raw, cs) = encode_inode(plan, tree, i);
                put(i.ino, &raw);
                chunks.extend(cs);
            }
            (table, chunks)
        })
        .collect();
    let mut chunks = Vec::new();
    let mut tables = Vec::with_capacity(per_group.len());
    for (t, c) in per_group {
        tables.push(t);
        chunks.extend(c);
    }
    (tables, chunks)
}

/// Every metadata block: directories, inode tables, the journal's zeros, bitmaps, group
/// descriptors and superblocks.
fn map_meta(plan: &Plan, tree: &Tree, b: &mut MapBuilder) -> Result<()> {
    let geo = &plan.geo;
    let (tables, mut chunks) = inode_tables(plan, tree);
    // Directory blocks: straight from the plan's buffers.
    for i in plan.inos.iter().filter(|i| i.typ == Type::Dir) {
        let d = i.dir.as_ref().expect("directories are built by plan()");
        for e in &i.extents {
            let from = e.logical as usize * BS;
            let to = from + e.len as usize * BS;
            b.bytes_range(e.physical * BLOCK_SIZE, &d.data, from..to)?;
        }
    }
    let jnl_blocks = journal_backup(plan, &tables[0]);
    for (g, t) in tables.into_iter().enumerate() {
        let whole = geo.itable_blocks * BLOCK_SIZE;
        debug_assert!(t.len() as u64 <= whole);
        // The unused rest is zeros that matter: the groups say ITABLE_ZEROED.
        b.zeros(
            geo.inode_table[g] * BLOCK_SIZE + t.len() as u64,
            whole - t.len() as u64,
        )?;
        if !t.is_empty() {
            chunks.push((geo.inode_table[g], t));
        }
    }
    // The journal is zeros after its superblock (as mke2fs leaves it), so that no stale
    // block on a reused device can look like a transaction.
    if let Some(j) = plan.inos.iter().find(|i| i.ino == JOURNAL_INO) {
        for (l, p, n) in merged_extents(j) {
            let skip = u64::from(l == 0);
            b.zeros((p + skip) * BLOCK_SIZE, (n - skip) * BLOCK_SIZE)?;
        }
    }
    let (descs, free_blocks) = map_bitmaps(plan, b)?;
    map_supers(plan, &descs, free_blocks, jnl_blocks, &mut chunks, b)?;
    for (block, data) in chunks {
        b.bytes(block * BLOCK_SIZE, data)?;
    }
    Ok(())
}

/// `s_jnl_blocks`: a copy of the journal inode's block map (`i_block`) and its size.
/// `table0` is the first group's inode table.
fn journal_backup(plan: &Plan, table0: &[u8]) -> [u32; 17] {
    let mut jnl_blocks = [0u32; 17];
    if let Some(j) = plan.inos.iter().find(|i| i.ino == JOURNAL_INO) {
        let k = (JOURNAL_INO - 1) as usize * INODE_SIZE;
        let raw = &table0[k..k + INODE_SIZE];
        for (w, c) in jnl_blocks
            .iter_mut()
            .zip(raw[0x28..0x28 + 60].chunks_exact(4))
        {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        jnl_blocks[15] = hi32(j.size);
        jnl_blocks[16] = lo32(j.size);
    }
    jnl_blocks
}

/// Maps every group's block and inode bitmaps; returns the group descriptors and the
/// filesystem's free block count. Most groups of a large filesystem are empty and their
/// bitmaps repeat a few patterns: identical bitmaps share one buffer (and one checksum), so
/// the memory grows with the content, not with the number of groups.
fn map_bitmaps(plan: &Plan, b: &mut MapBuilder) -> Result<(Vec<Desc>, u64)> {
    let geo = &plan.geo;
    let ipg = u64::from(geo.inodes_per_group);
    let max_ino = u64::from(plan.max_ino);
    let mut used_dirs = vec![0u32; geo.groups as usize];
    for i in plan.inos.iter().filter(|i| i.typ == Type::Dir) {
        used_dirs[to_usize(u64::from(i.ino - 1) / ipg)] += 1;
    }
    let (mut block_bitmaps, mut inode_bitmaps) = (Bitmaps::default(), Bitmaps::default());
    let mut descs = Vec::with_capacity(geo.groups as usize);
    let mut free_blocks_total = 0u64;
    for g in 0..geo.groups {
        let start = geo.group_start(g);
        let len = geo.group_len(g);
        let end = start + len;
        let mut bb = vec![0u8; BS];
        // Allocated blocks are a prefix of the group; the reserved ranges are disjoint.
        let allocated_end = plan.used_end.clamp(start, end);
        set_bits(&mut bb, 0, allocated_end - start);
        let mut used = allocated_end - start;
        let first = geo.reserved.partition_point(|r| r.1 <= start);
        for r in geo.reserved[first..].iter().take_while(|r| r.0 < end) {
            set_bits(&mut bb, r.0.max(start) - start, r.1.min(end) - start);
            used += r.1.min(end).saturating_sub(r.0.max(allocated_end));
        }
        set_bits(&mut bb, len, BLOCKS_PER_GROUP);
        let free_blocks = len - used;
        free_blocks_total += free_blocks;

        let used_inodes = max_ino.saturating_sub(u64::from(g) * ipg).min(ipg);
        let mut ib = vec![0u8; BS];
        set_bits(&mut ib, 0, used_inodes);
        set_bits(&mut ib, ipg, BLOCK_SIZE * 8);

        let (bb, block_bitmap_csum) = block_bitmaps.share(bb, |b| csum::raw(plan.fs_seed, b));
        let (ib, inode_bitmap_csum) =
            inode_bitmaps.share(ib, |b| csum::raw(plan.fs_seed, &b[..(ipg / 8) as usize]));
        descs.push(Desc {
            block_bitmap: geo.block_bitmap[g as usize],
            inode_bitmap: geo.inode_bitmap[g as usize],
            inode_table: geo.inode_table[g as usize],
            free_blocks: narrow(free_blocks, "at most a group's 32768 blocks"),
            free_inodes: narrow(ipg - used_inodes, "at most a group's inodes"),
            used_dirs: used_dirs[g as usize],
            flags: sb::BG_INODE_ZEROED,
            block_bitmap_csum,
            inode_bitmap_csum,
            itable_unused: narrow(ipg - used_inodes, "at most a group's inodes"),
        });
        b.bytes_range(geo.block_bitmap[g as usize] * BLOCK_SIZE, &bb, 0..BS)?;
        b.bytes_range(geo.inode_bitmap[g as usize] * BLOCK_SIZE, &ib, 0..BS)?;
    }
    Ok((descs, free_blocks_total))
}

/// The superblock and its backups (pushed to `chunks`), each followed by the group
/// descriptor table (mapped).
fn map_supers(
    plan: &Plan,
    descs: &[Desc],
    free_blocks: u64,
    jnl_blocks: [u32; 17],
    chunks: &mut Vec<(u64, Vec<u8>)>,
    b: &mut MapBuilder,
) -> Result<()> {
    let geo = &plan.geo;
    let max_ino = u64::from(plan.max_ino);
    let mut gdt = vec![0u8; to_usize(geo.gdt_blocks) * BS];
    for (g, d) in descs.iter().enumerate() {
        gdt[g * DESC_SIZE..(g + 1) * DESC_SIZE].copy_from_slice(&sb::encode_desc(
            d,
            narrow(g, "group numbers are below 2^32"),
            plan.fs_seed,
        ));
    }
    let gdt: Arc<[u8]> = gdt.into();
    let mut label = [0u8; 16];
    label[..plan.opts.label.len()].copy_from_slice(plan.opts.label.as_bytes());
    let sup = sb::Super {
        inodes: narrow(geo.inodes(), "inode counts are below 2^32 (layout)"),
        blocks: geo.blocks,
        r_blocks: geo.blocks * u64::from(plan.opts.reserved_percent) / 100,
        free_blocks,
        free_inodes: narrow(
            geo.inodes() - max_ino,
            "inode counts are below 2^32 (layout)",
        ),
        inodes_per_group: geo.inodes_per_group,
        time: plan.opts.timestamp,
        uuid: plan.opts.uuid,
        label,
        hash_seed: plan.opts.hash_seed,
        jnl_blocks,
    };
    for g in (0..geo.groups).filter(|&g| has_super(g)) {
        let start = geo.group_start(g);
        let mut sbb = vec![0u8; BS];
        let at = if g == 0 { 1024 } else { 0 };
        sbb[at..at + 1024].copy_from_slice(&sb::encode(&sup, g));
        chunks.push((start, sbb));
        b.bytes_range((start + 1) * BLOCK_SIZE, &gdt, 0..gdt.len())?;
    }
    Ok(())
}

/// Bitmap blocks of one kind by content: one buffer (and one checksum) per distinct bitmap.
/// Runs of empty groups repeat the last bitmap, which is compared first.
#[derive(Default)]
struct Bitmaps {
    seen: HashMap<Arc<[u8]>, u32>,
    last: Option<(Arc<[u8]>, u32)>,
}

impl Bitmaps {
    /// The shared buffer holding `block`'s bytes, and `csum(block)`.
    fn share(&mut self, block: Vec<u8>, csum: impl Fn(&[u8]) -> u32) -> (Arc<[u8]>, u32) {
        if let Some((data, c)) = &self.last {
            if **data == *block {
                return (data.clone(), *c);
            }
        }
        let got = match self.seen.get_key_value(block.as_slice()) {
            Some((data, c)) => (data.clone(), *c),
            None => {
                let c = csum(&block);
                let data: Arc<[u8]> = block.into();
                self.seen.insert(data.clone(), c);
                (data, c)
            }
        };
        self.last = Some(got.clone());
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_ranges() {
        for (from, to) in [
            (0, 0),
            (0, 1),
            (3, 5),
            (7, 9),
            (0, 64),
            (5, 61),
            (8, 16),
            (9, 9),
        ] {
            let mut a = [0u8; 8];
            set_bits(&mut a, from, to);
            let mut b = [0u8; 8];
            for i in from..to {
                b[to_usize(i) / 8] |= 1 << (i % 8);
            }
            assert_eq!(a, b, "{from}..{to}");
        }
    }
}
