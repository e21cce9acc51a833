//! Directory blocks: linear (one block) or hash-indexed (htree, one or two index levels),
//! each block checksummed (`ext4_dir_entry_tail` for entry blocks, `dx_tail` for index
//! blocks).

use crate::bits::*;
use crate::hash::dx_hash;
use crate::{csum, put16, put32, BLOCK_SIZE};
use imgbuild_blockio::to_usize;

const BS: usize = to_usize(BLOCK_SIZE);
/// Space for entries in an entry block: the last 12 bytes are the checksum tail.
const LEAF_SPACE: usize = BS - 12;
/// Index entries in the root: after "." (12), ".." (12) and dx_root_info (8), before the
/// 8-byte dx_tail.
const ROOT_LIMIT: usize = (BS - 32 - 8) / 8;
/// Index entries in an interior node: after an 8-byte empty dirent, before the dx_tail.
const NODE_LIMIT: usize = (BS - 8 - 8) / 8;

pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHR: u8 = 3;
pub const FT_BLK: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;

#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub name: &'a [u8],
    pub ino: u32,
    pub ftype: u8,
}

/// A directory's blocks, in logical order.
#[derive(Debug, Clone)]
pub struct DirBlocks {
    /// The blocks, shared with the filesystem's extent map.
    pub data: std::sync::Arc<[u8]>,
    /// Hash-indexed (needs `EXT4_INDEX_FL`).
    pub indexed: bool,
}

impl DirBlocks {
    pub fn blocks(&self) -> u64 {
        (self.data.len() / BS) as u64
    }
}

/// Too many entries for a two-level htree.
#[derive(Debug, Clone, Copy)]
pub struct TooBig;

/// A directory's block number (its size is capped well below 2^32 blocks by `TooBig`).
fn block_no(i: usize) -> u32 {
    narrow(i, "a directory block number")
}

fn rec_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

fn dirent(b: &mut [u8], off: usize, ino: u32, rec: usize, name: &[u8], ftype: u8) {
    put32(b, off, ino);
    put16(b, off + 4, narrow(rec, "within a 4 KiB block"));
    b[off + 6] = narrow(name.len(), "names over 255 bytes are refused when planning");
    b[off + 7] = ftype;
    b[off + 8..off + 8 + name.len()].copy_from_slice(name);
}

/// Fill the checksum tail of an entry block.
fn seal_leaf(b: &mut [u8], dir_seed: u32) {
    put32(b, LEAF_SPACE, 0);
    put16(b, LEAF_SPACE + 4, 12);
    b[LEAF_SPACE + 6] = 0;
    b[LEAF_SPACE + 7] = 0xDE;
    let c = csum::raw(dir_seed, &b[..LEAF_SPACE]);
    put32(b, LEAF_SPACE + 8, c);
}

/// Lay out `entries` into entry blocks, the first of which is `first`, already filled up to
/// byte `off`.
fn pack(entries: &[Entry], mut off: usize, first: Vec<u8>) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut b = first;
    for e in entries {
        let rl = rec_len(e.name.len());
        if off + rl > LEAF_SPACE {
            blocks.push(std::mem::replace(&mut b, vec![0u8; BS]));
            off = 0;
        }
        dirent(&mut b, off, e.ino, rl, e.name, e.ftype);
        off += rl;
    }
    blocks.push(b);
    blocks
}

/// Stretch the last entry of each block to the tail and checksum the blocks.
fn finish_leaves(blocks: &mut [Vec<u8>], dir_seed: u32) {
    for b in blocks.iter_mut() {
        // Walk the chain to find the last entry.
        let mut off = 0usize;
        let mut last = None;
        while off < LEAF_SPACE {
            let rl = u16::from_le_bytes([b[off + 4], b[off + 5]]) as usize;
            if rl == 0 {
                break;
            }
            last = Some(off);
            off += rl;
        }
        match last {
            Some(l) => put16(b, l + 4, narrow(LEAF_SPACE - l, "within a 4 KiB block")),
            // An empty block: one unused entry spanning it.
            None => put16(b, 4, narrow(LEAF_SPACE, "within a 4 KiB block")),
        }
        seal_leaf(b, dir_seed);
    }
}

/// The blocks of a directory `ino` whose parent is `parent`, holding `entries` (in the
/// tree's name order). One block if everything fits, an htree otherwise.
pub fn build(
    ino: u32,
    parent: u32,
    entries: &[Entry],
    hash_seed: &[u32; 4],
    dir_seed: u32,
    spare_blocks: usize,
) -> Result<DirBlocks, TooBig> {
    let linear: usize = 24 + entries.iter().map(|e| rec_len(e.name.len())).sum::<usize>();
    if linear <= LEAF_SPACE {
        let mut b = vec![0u8; BS];
        dirent(&mut b, 0, ino, 12, b".", FT_DIR);
        dirent(&mut b, 12, parent, 12, b"..", FT_DIR);
        let mut blocks = pack(entries, 24, b);
        for _ in 0..spare_blocks {
            blocks.push(vec![0u8; BS]);
        }
        finish_leaves(&mut blocks, dir_seed);
        return Ok(DirBlocks {
            data: blocks.concat().into(),
            indexed: false,
        });
    }
    let (leaves, leaf_hash) = hashed_leaves(entries, hash_seed, dir_seed);
    indexed(ino, parent, &leaves, &leaf_hash, dir_seed)
}

/// The leaf blocks of an htree, sealed: entries in (hash, minor hash, name) order, packed
/// full; with the index hash of each leaf (its first entry's hash, low bit set when the leaf
/// continues a run of equal hashes).
fn hashed_leaves(
    entries: &[Entry],
    hash_seed: &[u32; 4],
    dir_seed: u32,
) -> (Vec<Vec<u8>>, Vec<u32>) {
    let mut hashed: Vec<(u32, u32, &Entry)> = entries
        .iter()
        .map(|e| {
            let (h, m) = dx_hash(e.name, hash_seed);
            (h, m, e)
        })
        .collect();
    hashed.sort_unstable_by(|a, b| (a.0, a.1, a.2.name).cmp(&(b.0, b.1, b.2.name)));
    let mut leaves: Vec<Vec<u8>> = Vec::new();
    // (index hash, first entry's hash) of each leaf.
    let mut leaf_hash: Vec<u32> = Vec::new();
    let mut b = vec![0u8; BS];
    let mut off = 0usize;
    let mut prev_hash: Option<u32> = None;
    for &(h, _, e) in &hashed {
        let rl = rec_len(e.name.len());
        if off == 0 || off + rl > LEAF_SPACE {
            if off != 0 {
                leaves.push(std::mem::replace(&mut b, vec![0u8; BS]));
                off = 0;
            }
            // A leaf starting in the middle of a run of equal hashes is flagged with the
            // low bit so lookups continue into it.
            let collide = prev_hash == Some(h);
            leaf_hash.push(if collide { h | 1 } else { h });
        }
        dirent(&mut b, off, e.ino, rl, e.name, e.ftype);
        off += rl;
        prev_hash = Some(h);
    }
    leaves.push(b);
    finish_leaves(&mut leaves, dir_seed);
    (leaves, leaf_hash)
}

/// An htree directory: the root block (`.`, `..` and the index), interior nodes when the
/// root cannot point at every leaf, then `leaves`.
fn indexed(
    ino: u32,
    parent: u32,
    leaves: &[Vec<u8>],
    leaf_hash: &[u32],
    dir_seed: u32,
) -> Result<DirBlocks, TooBig> {
    let nleaves = leaves.len();
    // Index levels: the root alone, or the root over interior nodes.
    let (levels, nodes) = if nleaves <= ROOT_LIMIT {
        (0u8, 0usize)
    } else {
        let nodes = nleaves.div_ceil(NODE_LIMIT);
        if nodes > ROOT_LIMIT {
            return Err(TooBig);
        }
        (1u8, nodes)
    };
    let first_leaf = 1 + nodes;
    let mut root = vec![0u8; BS];
    dirent(&mut root, 0, ino, 12, b".", FT_DIR);
    dirent(&mut root, 12, parent, BS - 12, b"..", FT_DIR);
    put32(&mut root, 24, 0); // reserved_zero
    root[28] = 1; // hash_version: DX_HASH_HALF_MD4
    root[29] = 8; // info_length
    root[30] = levels; // indirect_levels
    root[31] = 0; // unused_flags
    let mut node_blocks = Vec::new();
    if levels == 0 {
        let targets: Vec<(u32, u32)> = (0..nleaves)
            .map(|i| (leaf_hash[i], block_no(first_leaf + i)))
            .collect();
        write_index(&mut root, 32, ROOT_LIMIT, &targets, dir_seed);
    } else {
        let mut root_targets = Vec::new();
        for (n, chunk) in (0..nleaves)
            .collect::<Vec<_>>()
            .chunks(NODE_LIMIT)
            .enumerate()
        {
            let mut node = vec![0u8; BS];
            put32(&mut node, 0, 0);
            put16(&mut node, 4, narrow(BS, "4096"));
            let targets: Vec<(u32, u32)> = chunk
                .iter()
                .map(|&i| (leaf_hash[i], block_no(first_leaf + i)))
                .collect();
            write_index(&mut node, 8, NODE_LIMIT, &targets, dir_seed);
            root_targets.push((leaf_hash[chunk[0]], block_no(1 + n)));
            node_blocks.push(node);
        }
        write_index(&mut root, 32, ROOT_LIMIT, &root_targets, dir_seed);
    }
    let mut data = Vec::with_capacity((1 + nodes + nleaves) * BS);
    data.extend_from_slice(&root);
    for n in &node_blocks {
        data.extend_from_slice(n);
    }
    for l in leaves {
        data.extend_from_slice(l);
    }
    Ok(DirBlocks {
        data: data.into(),
        indexed: true,
    })
}

/// Write a dx_countlimit + entries at `at` (the first entry's hash slot holds the
/// count/limit), then the dx_tail checksum.
fn write_index(b: &mut [u8], at: usize, limit: usize, targets: &[(u32, u32)], dir_seed: u32) {
    put16(b, at, narrow(limit, "a dx limit, within a 4 KiB block"));
    put16(b, at + 2, narrow(targets.len(), "at most the limit"));
    for (i, &(hash, block)) in targets.iter().enumerate() {
        let off = at + 8 * i;
        if i > 0 {
            put32(b, off, hash);
        }
        put32(b, off + 4, block);
    }
    let tail = at + 8 * limit;
    put32(b, tail, 0); // dt_reserved
    put32(b, tail + 4, 0); // dt_checksum, zero while summing
    let mut c = csum::raw(dir_seed, &b[..at + 8 * targets.len()]);
    c = csum::raw(c, &b[tail..tail + 8]);
    put32(b, tail + 4, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(ROOT_LIMIT, 507);
        assert_eq!(NODE_LIMIT, 510);
    }

    #[test]
    fn small_dir_is_one_block() {
        let names: Vec<Vec<u8>> = (0..10).map(|i| format!("f{i}").into_bytes()).collect();
        let entries: Vec<Entry> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Entry {
                name: n,
                ino: 20 + i as u32,
                ftype: FT_REG,
            })
            .collect();
        let d = build(12, 2, &entries, &[0; 4], 1, 0).unwrap();
        assert!(!d.indexed);
        assert_eq!(d.blocks(), 1);
    }

    #[test]
    fn big_dir_is_two_levels() {
        let names: Vec<Vec<u8>> = (0..200_000)
            .map(|i| format!("a-fairly-long-file-name-{i:08}").into_bytes())
            .collect();
        let entries: Vec<Entry> = names
            .iter()
            .map(|n| Entry {
                name: n,
                ino: 20,
                ftype: FT_REG,
            })
            .collect();
        let d = build(12, 2, &entries, &[1, 2, 3, 4], 1, 0).unwrap();
        assert!(d.indexed);
        assert_eq!(d.data[30], 1);
    }
}
