//! The ext4 fields of a seed: superblock, group descriptors, the first inodes and their
//! extent headers, directory entries and htree roots in the hot ranges.

use std::fs::File;

use super::{le16, le32, read, Endian, Map};

/// An ext4 filesystem at `base`: superblock, descriptors, the first inodes, their extent
/// headers, and the directory entries of the blocks the readers read.
pub fn ext4(f: &File, base: u64, size: u64, m: &mut Map) {
    let sb = read(f, base + 1024, 1024);
    if le16(&sb, 56) != 0xEF53 {
        return;
    }
    m.push(
        base + 1024,
        &[
            (0, 4, "ext4.sb.inodes_count"),
            (4, 4, "ext4.sb.blocks_count"),
            (12, 4, "ext4.sb.free_blocks"),
            (16, 4, "ext4.sb.free_inodes"),
            (20, 4, "ext4.sb.first_data_block"),
            (24, 4, "ext4.sb.log_block_size"),
            (32, 4, "ext4.sb.blocks_per_group"),
            (40, 4, "ext4.sb.inodes_per_group"),
            (76, 4, "ext4.sb.rev_level"),
            (84, 4, "ext4.sb.first_ino"),
            (88, 2, "ext4.sb.inode_size"),
            (92, 4, "ext4.sb.feature_compat"),
            (96, 4, "ext4.sb.feature_incompat"),
            (100, 4, "ext4.sb.feature_ro_compat"),
            (254, 2, "ext4.sb.desc_size"),
            (336, 4, "ext4.sb.blocks_count_hi"),
            (372, 1, "ext4.sb.log_groups_per_flex"),
            (0xE8, 4, "ext4.sb.hash_seed"),
            (0xFC, 1, "ext4.sb.def_hash_version"),
        ],
        Endian::Le,
    );
    let bs = 1024u64 << le32(&sb, 24).min(6);
    let desc = if le32(&sb, 96) & 0x80 != 0 {
        u64::from(le16(&sb, 254)).clamp(32, 64)
    } else {
        32
    };
    let gdt = base + (u64::from(le32(&sb, 20)) + 1) * bs;
    let groups = u64::from(le32(&sb, 4)).div_ceil(u64::from(le32(&sb, 32)).max(1));
    for g in 0..groups.min(4) {
        m.push(
            gdt + g * desc,
            &[
                (0, 4, "ext4.gd.block_bitmap"),
                (4, 4, "ext4.gd.inode_bitmap"),
                (8, 4, "ext4.gd.inode_table"),
                (12, 2, "ext4.gd.free_blocks"),
                (14, 2, "ext4.gd.free_inodes"),
                (18, 2, "ext4.gd.flags"),
                (28, 2, "ext4.gd.itable_unused"),
            ],
            Endian::Le,
        );
    }
    let geo = Geometry {
        base,
        size,
        bs,
        gdt,
        ipg: u64::from(le32(&sb, 40)),
        isz: u64::from(le16(&sb, 88)).max(128),
    };
    inodes(f, &geo, m);
    directories(f, &geo, m);
}

/// Where an ext4 filesystem's structures are.
struct Geometry {
    base: u64,
    size: u64,
    /// Block size.
    bs: u64,
    /// The group descriptor table.
    gdt: u64,
    /// Inodes per group.
    ipg: u64,
    /// Inode size.
    isz: u64,
}

/// Inodes of group 0: the root (2), the journal (8), lost+found (11) and the first files.
fn inodes(f: &File, g: &Geometry, m: &mut Map) {
    let d0 = read(f, g.gdt, 64);
    let table = g.base + u64::from(le32(&d0, 8)) * g.bs;
    for ino in (1..=40u64).filter(|&i| i <= g.ipg) {
        let at = table + (ino - 1) * g.isz;
        if at + g.isz > g.base + g.size {
            break;
        }
        let inode = read(f, at, 160);
        if le16(&inode, 0) == 0 {
            continue;
        }
        m.push(
            at,
            &[
                (0, 2, "ext4.inode.mode"),
                (4, 4, "ext4.inode.size"),
                (26, 2, "ext4.inode.links"),
                (28, 4, "ext4.inode.blocks"),
                (32, 4, "ext4.inode.flags"),
                (108, 4, "ext4.inode.size_high"),
                (128, 2, "ext4.inode.extra_isize"),
            ],
            Endian::Le,
        );
        if le16(&inode, 40) == 0xF30A {
            m.push(
                at + 40,
                &[
                    (2, 2, "ext4.extent.header.entries"),
                    (4, 2, "ext4.extent.header.max"),
                    (6, 2, "ext4.extent.header.depth"),
                    (12, 4, "ext4.extent.logical"),
                    (16, 2, "ext4.extent.len"),
                    (18, 2, "ext4.extent.start_hi"),
                    (20, 4, "ext4.extent.start_lo"),
                ],
                Endian::Le,
            );
        }
    }
}

/// The offsets of a block's directory entries when they chain exactly to its end.
fn dirents(b: &[u8]) -> Option<Vec<usize>> {
    let mut pos = 0usize;
    let mut entries = Vec::new();
    while pos + 8 <= b.len() {
        let rec = usize::from(le16(b, pos + 4));
        if rec < 8 || rec % 4 != 0 || pos + rec > b.len() || usize::from(b[pos + 6]) + 8 > rec {
            break;
        }
        entries.push(pos);
        pos += rec;
    }
    (pos == b.len() && !entries.is_empty()).then_some(entries)
}

/// Directory blocks among the hot ranges: blocks whose entries chain to the block's end.
fn directories(f: &File, g: &Geometry, m: &mut Map) {
    let (base, size, bs) = (g.base, g.size, g.bs);
    let mut dir_fields = Vec::new();
    for (s, e) in m.ranges.clone() {
        let mut blk = s.max(base).next_multiple_of(bs);
        while blk + bs <= e.min(base + size) && dir_fields.len() < 4000 {
            let b = read(f, blk, bs as usize);
            if let Some(entries) = dirents(&b) {
                for p in entries {
                    dir_fields.push(blk + p as u64);
                }
                // An htree root: the dx_root info after `.` and `..`.
                if b.get(0x1D) == Some(&8) {
                    m.push(
                        blk,
                        &[
                            (0x1C, 1, "ext4.htree.hash_version"),
                            (0x1E, 1, "ext4.htree.levels"),
                            (0x20, 2, "ext4.htree.limit"),
                            (0x22, 2, "ext4.htree.count"),
                            (0x28, 4, "ext4.htree.block"),
                        ],
                        Endian::Le,
                    );
                }
            }
            blk += bs;
        }
    }
    for at in dir_fields {
        m.push(
            at,
            &[
                (0, 4, "ext4.dirent.inode"),
                (4, 2, "ext4.dirent.rec_len"),
                (6, 1, "ext4.dirent.name_len"),
                (7, 1, "ext4.dirent.file_type"),
            ],
            Endian::Le,
        );
    }
}
