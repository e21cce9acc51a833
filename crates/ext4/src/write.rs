//! Filling the region: file data copied in parallel, metadata encoded in memory and
//! written in coalesced runs. Only non-zero blocks are ever written.

use std::fs::File;
use std::sync::atomic::AtomicBool;

use fstree::{FileData, Kind, Tree};
use rayon::prelude::*;

use crate::inode::{self, Fields};
use crate::layout::has_super;
use crate::sb::{self, Desc};
use crate::{
    blockio, csum, extent, fstree, journal, Error, Ino, Plan, Result, Type, BLOCKS_PER_GROUP,
    BLOCK_SIZE, DESC_SIZE, INODE_SIZE, JOURNAL_INO,
};

const BS: usize = BLOCK_SIZE as usize;
/// Metadata is written in runs of at most this many bytes.
const RUN: usize = 8 << 20;

pub fn write(
    plan: &Plan,
    tree: &Tree,
    region: &blockio::Region,
    progress: &dyn blockio::Progress,
    cancel: &AtomicBool,
) -> Result<()> {
    if region.len() != plan.size_bytes() {
        return Err(Error::RegionSize {
            expected: plan.size_bytes(),
            found: region.len(),
        });
    }
    let (data, meta) = rayon::join(
        || write_data(plan, tree, region, progress, cancel),
        || write_meta(plan, tree, region),
    );
    data?;
    meta
}

/// `(logical block, physical block, blocks)` runs of an inode: extents merged where they
/// continue each other on disk and in the file.
fn merged_extents(i: &Ino) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::with_capacity(i.extents.len());
    for e in &i.extents {
        let (l, p, n) = (e.logical as u64, e.physical, e.len as u64);
        match out.last_mut() {
            Some(last) if last.0 + last.2 == l && last.1 + last.2 == p => last.2 += n,
            _ => out.push((l, p, n)),
        }
    }
    out
}

/// Files up to this size, stored in one extent, are read into memory and written together
/// with their neighbours on disk: one big write instead of one per file.
const SMALL: u64 = 256 << 10;
/// Most bytes in one batch of small files.
const BATCH: u64 = 4 << 20;

/// A unit of data-copying work.
enum Job<'p> {
    /// One file, copied extent by extent with `copy_file_range`.
    One(&'p Ino),
    /// Small files stored back to back from disk block `.0` on.
    Batch(u64, Vec<&'p Ino>),
}

fn jobs(plan: &Plan) -> Vec<Job<'_>> {
    let mut jobs = Vec::new();
    // (first block, end block, files) of the batch being gathered.
    let mut batch: Option<(u64, u64, Vec<&Ino>)> = None;
    let files = plan
        .inos
        .iter()
        .filter(|i| i.typ == Type::Reg && i.node.is_some() && !i.extents.is_empty());
    for i in files {
        // One extent from the start covering the whole size: no holes.
        let small = i.size <= SMALL
            && i.extents.len() == 1
            && i.extents[0].logical == 0
            && i.extents[0].len as u64 * BLOCK_SIZE >= i.size;
        if !small {
            jobs.push(Job::One(i));
            continue;
        }
        let (p, n) = (i.extents[0].physical, i.extents[0].len as u64);
        match &mut batch {
            Some((start, end, files)) if *end == p && (*end + n - *start) * BLOCK_SIZE <= BATCH => {
                *end += n;
                files.push(i);
            }
            _ => {
                if let Some((start, _, files)) = batch.take() {
                    jobs.push(Job::Batch(start, files));
                }
                batch = Some((p, p + n, vec![i]));
            }
        }
    }
    if let Some((start, _, files)) = batch {
        jobs.push(Job::Batch(start, files));
    }
    jobs
}

fn file_data<'t>(tree: &'t Tree, i: &Ino) -> &'t FileData {
    let node = i.node.expect("data jobs only hold inodes with a node");
    match &tree.node(node).kind {
        Kind::File(data) => data,
        _ => unreachable!("a Reg inode with a node comes from a File node"),
    }
}

/// Open a host file and check it still has the planned size.
fn open_checked(path: &std::path::Path, size: u64) -> Result<File> {
    let unreadable = |source| Error::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(unreadable)?;
    let found = f.metadata().map_err(unreadable)?.len();
    if found != size {
        return Err(Error::SourceChanged {
            path: path.to_path_buf(),
            planned: size,
            found,
        });
    }
    Ok(f)
}

fn write_data(
    plan: &Plan,
    tree: &Tree,
    region: &blockio::Region,
    progress: &dyn blockio::Progress,
    cancel: &AtomicBool,
) -> Result<()> {
    jobs(plan).par_iter().try_for_each(|job| -> Result<()> {
        blockio::check_cancel(cancel)?;
        match job {
            Job::One(i) => copy_file(i, file_data(tree, i), region, progress, cancel),
            Job::Batch(start, files) => {
                let end = files
                    .last()
                    .map_or(*start, |i| i.extents[0].physical + i.extents[0].len as u64);
                let mut buf = vec![0u8; ((end - start) * BLOCK_SIZE) as usize];
                for i in files {
                    let off = ((i.extents[0].physical - start) * BLOCK_SIZE) as usize;
                    let dst = &mut buf[off..off + i.size as usize];
                    match file_data(tree, i) {
                        FileData::Host { path, size } => {
                            let f = open_checked(path, *size)?;
                            let got = blockio::read_full_at(&f, dst, 0).map_err(|source| {
                                Error::Unreadable {
                                    path: path.clone(),
                                    source,
                                }
                            })?;
                            if got as u64 != *size {
                                return Err(Error::SourceChanged {
                                    path: path.clone(),
                                    planned: *size,
                                    found: got as u64,
                                });
                            }
                        }
                        FileData::Bytes(b) => dst.copy_from_slice(b),
                    }
                    progress.add(i.size);
                }
                blockio::check_cancel(cancel)?;
                region.write_nonzero_at(start * BLOCK_SIZE, &buf, BS)?;
                Ok(())
            }
        }
    })
}

/// Copy one file's data extent by extent.
fn copy_file(
    i: &Ino,
    data: &FileData,
    region: &blockio::Region,
    progress: &dyn blockio::Progress,
    cancel: &AtomicBool,
) -> Result<()> {
    match data {
        FileData::Host { path, size } => {
            let f = open_checked(path, *size)?;
            for (l, p, n) in merged_extents(i) {
                let off = l * BLOCK_SIZE;
                let len = (n * BLOCK_SIZE).min(size - off);
                region.copy_from(p * BLOCK_SIZE, &f, path, off, len)?;
                progress.add(len);
                blockio::check_cancel(cancel)?;
            }
        }
        FileData::Bytes(b) => {
            for (l, p, n) in merged_extents(i) {
                let off = (l * BLOCK_SIZE) as usize;
                let end = (off + (n * BLOCK_SIZE) as usize).min(b.len());
                region.write_nonzero_at(p * BLOCK_SIZE, &b[off..end], BS)?;
                progress.add((end - off) as u64);
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
        links: i.links as u16,
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
            for e in &i.extents {
                let from = e.logical as usize * BS;
                let to = from + e.len as usize * BS;
                chunks.push((e.physical, d.data[from..to].to_vec()));
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
    bm[(bit / 8) as usize..(bit / 8 + whole) as usize].fill(0xFF);
    bit += whole * 8;
    while bit < to {
        bm[(bit / 8) as usize] |= 1 << (bit % 8);
        bit += 1;
    }
}

fn write_meta(plan: &Plan, tree: &Tree, region: &blockio::Region) -> Result<()> {
    let geo = &plan.geo;
    let ipg = geo.inodes_per_group as u64;
    let max_ino = plan.max_ino as u64;
    let encoded: Vec<(u32, [u8; INODE_SIZE], Vec<Chunk>)> = plan
        .inos
        .par_iter()
        .map(|i| {
            let (raw, chunks) = encode_inode(plan, tree, i);
            (i.ino, raw, chunks)
        })
        .collect();

    let mut chunks: Vec<Chunk> = Vec::new();
    let mut jnl_blocks = [0u32; 17];
    let mut used_dirs = vec![0u32; geo.groups as usize];
    // Inode tables: only the part holding used inodes.
    let mut tables: Vec<Vec<u8>> = (0..geo.groups as u64)
        .map(|g| {
            let used = max_ino.saturating_sub(g * ipg).min(ipg);
            vec![0u8; (used as usize * INODE_SIZE).div_ceil(BS) * BS]
        })
        .collect();
    let mut put_inode = |ino: u32, raw: &[u8; INODE_SIZE]| {
        let idx = (ino - 1) as u64;
        let (g, k) = ((idx / ipg) as usize, (idx % ipg) as usize);
        tables[g][k * INODE_SIZE..(k + 1) * INODE_SIZE].copy_from_slice(raw);
    };
    // Inode 1 (bad blocks): empty, with times, like mke2fs writes it.
    let bad = Fields {
        time: plan.opts.timestamp,
        ..Fields::default()
    };
    put_inode(1, &inode::encode(1, &bad, plan.fs_seed));
    for ((ino, raw, cs), i) in encoded.into_iter().zip(&plan.inos) {
        debug_assert_eq!(ino, i.ino);
        put_inode(ino, &raw);
        chunks.extend(cs);
        if i.typ == Type::Dir {
            used_dirs[((ino - 1) as u64 / ipg) as usize] += 1;
        }
        if ino == JOURNAL_INO {
            for (w, c) in jnl_blocks
                .iter_mut()
                .zip(raw[0x28..0x28 + 60].chunks_exact(4))
            {
                *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            jnl_blocks[15] = (i.size >> 32) as u32;
            jnl_blocks[16] = i.size as u32;
        }
    }
    for (g, t) in tables.into_iter().enumerate() {
        debug_assert!(t.len() as u64 <= geo.itable_blocks * BLOCK_SIZE);
        if !t.is_empty() {
            chunks.push((geo.inode_table[g], t));
        }
    }

    // Bitmaps and descriptors.
    let mut descs = Vec::with_capacity(geo.groups as usize);
    let mut free_blocks_total = 0u64;
    for g in 0..geo.groups {
        let start = geo.group_start(g);
        let len = geo.group_len(g);
        let end = start + len;
        let mut bb = vec![0u8; BS];
        set_bits(&mut bb, 0, plan.used_end.clamp(start, end) - start);
        let first = geo.reserved.partition_point(|r| r.1 <= start);
        for r in geo.reserved[first..].iter().take_while(|r| r.0 < end) {
            set_bits(&mut bb, r.0.max(start) - start, r.1.min(end) - start);
        }
        let used: u64 = bb.iter().map(|b| b.count_ones() as u64).sum();
        set_bits(&mut bb, len, BLOCKS_PER_GROUP);
        let free_blocks = len - used;
        free_blocks_total += free_blocks;

        let used_inodes = max_ino.saturating_sub(g as u64 * ipg).min(ipg);
        let mut ib = vec![0u8; BS];
        set_bits(&mut ib, 0, used_inodes);
        set_bits(&mut ib, ipg, BLOCK_SIZE * 8);

        descs.push(Desc {
            block_bitmap: geo.block_bitmap[g as usize],
            inode_bitmap: geo.inode_bitmap[g as usize],
            inode_table: geo.inode_table[g as usize],
            free_blocks: free_blocks as u32,
            free_inodes: (ipg - used_inodes) as u32,
            used_dirs: used_dirs[g as usize],
            flags: sb::BG_INODE_ZEROED,
            block_bitmap_csum: csum::raw(plan.fs_seed, &bb),
            inode_bitmap_csum: csum::raw(plan.fs_seed, &ib[..(ipg / 8) as usize]),
            itable_unused: (ipg - used_inodes) as u32,
        });
        chunks.push((geo.block_bitmap[g as usize], bb));
        chunks.push((geo.inode_bitmap[g as usize], ib));
    }
    let mut gdt = vec![0u8; geo.gdt_blocks as usize * BS];
    for (g, d) in descs.iter().enumerate() {
        gdt[g * DESC_SIZE..(g + 1) * DESC_SIZE].copy_from_slice(&sb::encode_desc(
            d,
            g as u32,
            plan.fs_seed,
        ));
    }
    let mut label = [0u8; 16];
    label[..plan.opts.label.len()].copy_from_slice(plan.opts.label.as_bytes());
    let sup = sb::Super {
        inodes: geo.inodes() as u32,
        blocks: geo.blocks,
        r_blocks: geo.blocks * plan.opts.reserved_percent as u64 / 100,
        free_blocks: free_blocks_total,
        free_inodes: (geo.inodes() - max_ino) as u32,
        inodes_per_group: geo.inodes_per_group,
        time: plan.opts.timestamp,
        uuid: plan.opts.uuid,
        label,
        hash_seed: plan.opts.hash_seed,
        jnl_blocks,
    };
    for g in (0..geo.groups).filter(|&g| has_super(g)) {
        let start = geo.group_start(g);
        let mut b = vec![0u8; BS];
        let at = if g == 0 { 1024 } else { 0 };
        b[at..at + 1024].copy_from_slice(&sb::encode(&sup, g));
        chunks.push((start, b));
        chunks.push((start + 1, gdt.clone()));
    }
    write_chunks(region, chunks)
}

/// Write chunks sorted by block, coalescing neighbours into runs of up to [`RUN`] bytes.
fn write_chunks(region: &blockio::Region, mut chunks: Vec<Chunk>) -> Result<()> {
    chunks.sort_unstable_by_key(|c| c.0);
    let mut run: Vec<u8> = Vec::with_capacity(RUN);
    let mut run_start = 0u64;
    for (block, data) in chunks {
        let run_end = run_start + (run.len() / BS) as u64;
        debug_assert!(
            run.is_empty() || block >= run_end,
            "metadata chunks overlap"
        );
        if run.is_empty() || block != run_end || run.len() + data.len() > RUN {
            if !run.is_empty() {
                region.write_nonzero_at(run_start * BLOCK_SIZE, &run, BS)?;
                run.clear();
            }
            run_start = block;
        }
        run.extend_from_slice(&data);
    }
    if !run.is_empty() {
        region.write_nonzero_at(run_start * BLOCK_SIZE, &run, BS)?;
    }
    Ok(())
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
                b[i as usize / 8] |= 1 << (i % 8);
            }
            assert_eq!(a, b, "{from}..{to}");
        }
    }
}
