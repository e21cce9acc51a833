//! The superblock (`struct ext4_super_block`, 1024 bytes at byte 1024) and the 64-byte
//! group descriptors (`struct ext4_group_desc`).

use crate::bits::*;
use crate::{csum, put16, put32, put64, BLOCKS_PER_GROUP, DESC_SIZE, INODE_SIZE};

pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub const COMPAT_EXT_ATTR: u32 = 0x8;
pub const COMPAT_DIR_INDEX: u32 = 0x20;
pub const INCOMPAT_FILETYPE: u32 = 0x2;
pub const INCOMPAT_EXTENTS: u32 = 0x40;
pub const INCOMPAT_64BIT: u32 = 0x80;
pub const INCOMPAT_FLEX_BG: u32 = 0x200;
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
pub const RO_COMPAT_LARGE_FILE: u32 = 0x2;
pub const RO_COMPAT_HUGE_FILE: u32 = 0x8;
pub const RO_COMPAT_DIR_NLINK: u32 = 0x20;
pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// Every feature we set, and so implement.
pub const COMPAT: u32 = COMPAT_HAS_JOURNAL | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX;
pub const INCOMPAT: u32 = INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG;
pub const RO_COMPAT: u32 = RO_COMPAT_SPARSE_SUPER
    | RO_COMPAT_LARGE_FILE
    | RO_COMPAT_HUGE_FILE
    | RO_COMPAT_DIR_NLINK
    | RO_COMPAT_EXTRA_ISIZE
    | RO_COMPAT_METADATA_CSUM;

pub const BG_INODE_ZEROED: u16 = 0x4;

/// What goes into the superblock.
#[derive(Debug, Clone)]
pub struct Super {
    pub inodes: u32,
    pub blocks: u64,
    pub r_blocks: u64,
    pub free_blocks: u64,
    pub free_inodes: u32,
    pub inodes_per_group: u32,
    pub time: i64,
    pub uuid: [u8; 16],
    pub label: [u8; 16],
    pub hash_seed: [u8; 16],
    /// The journal inode's `i_block`, `i_size_high` and `i_size` (`s_jnl_blocks`).
    pub jnl_blocks: [u32; 17],
}

/// The superblock copy stored in group `group`.
pub fn encode(s: &Super, group: u32) -> [u8; 1024] {
    let mut b = [0u8; 1024];
    let (t, t_hi) = sb_time(s.time);
    put32(&mut b, 0x00, s.inodes); // s_inodes_count
    put32(&mut b, 0x04, lo32(s.blocks)); // s_blocks_count_lo
    put32(&mut b, 0x08, lo32(s.r_blocks)); // s_r_blocks_count_lo
    put32(&mut b, 0x0C, lo32(s.free_blocks)); // s_free_blocks_count_lo
    put32(&mut b, 0x10, s.free_inodes); // s_free_inodes_count
    put32(&mut b, 0x14, 0); // s_first_data_block
    put32(&mut b, 0x18, 2); // s_log_block_size: 1024 << 2
    put32(&mut b, 0x1C, 2); // s_log_cluster_size
    put32(&mut b, 0x20, narrow(BLOCKS_PER_GROUP, "32768")); // s_blocks_per_group
    put32(&mut b, 0x24, narrow(BLOCKS_PER_GROUP, "32768")); // s_clusters_per_group
    put32(&mut b, 0x28, s.inodes_per_group); // s_inodes_per_group
    put32(&mut b, 0x2C, 0); // s_mtime: never mounted
    put32(&mut b, 0x30, t); // s_wtime
    put16(&mut b, 0x34, 0); // s_mnt_count
    put16(&mut b, 0x36, 0xFFFF); // s_max_mnt_count: -1
    put16(&mut b, 0x38, 0xEF53); // s_magic
    put16(&mut b, 0x3A, 1); // s_state: clean
    put16(&mut b, 0x3C, 1); // s_errors: continue
    put32(&mut b, 0x40, t); // s_lastcheck
    put32(&mut b, 0x48, 0); // s_creator_os: Linux
    put32(&mut b, 0x4C, 1); // s_rev_level: dynamic
    put32(&mut b, 0x54, crate::FIRST_INO); // s_first_ino
    put16(&mut b, 0x58, narrow(INODE_SIZE, "256")); // s_inode_size
                                                    // Backup superblocks sit in groups 0, 1 and powers of 3, 5, 7 below 2^16.
    put16(&mut b, 0x5A, lo16(group)); // s_block_group_nr
    put32(&mut b, 0x5C, COMPAT); // s_feature_compat
    put32(&mut b, 0x60, INCOMPAT); // s_feature_incompat
    put32(&mut b, 0x64, RO_COMPAT); // s_feature_ro_compat
    b[0x68..0x78].copy_from_slice(&s.uuid); // s_uuid
    b[0x78..0x88].copy_from_slice(&s.label); // s_volume_name
    put32(&mut b, 0xE0, crate::JOURNAL_INO); // s_journal_inum
    b[0xEC..0xFC].copy_from_slice(&s.hash_seed); // s_hash_seed
    b[0xFC] = 1; // s_def_hash_version: half_md4
    b[0xFD] = 1; // s_jnl_backup_type: EXT3_JNL_BACKUP_BLOCKS
    put16(&mut b, 0xFE, narrow(DESC_SIZE, "64")); // s_desc_size
    put32(&mut b, 0x100, 0x0004 | 0x0008); // s_default_mount_opts: user_xattr, acl
    put32(&mut b, 0x108, t); // s_mkfs_time
    for (i, w) in s.jnl_blocks.iter().enumerate() {
        put32(&mut b, 0x10C + 4 * i, *w); // s_jnl_blocks
    }
    put32(&mut b, 0x150, (s.blocks >> 32) as u32); // s_blocks_count_hi
    put32(&mut b, 0x154, (s.r_blocks >> 32) as u32); // s_r_blocks_count_hi
    put32(&mut b, 0x158, (s.free_blocks >> 32) as u32); // s_free_blocks_count_hi
    put16(&mut b, 0x15C, crate::inode::EXTRA_ISIZE); // s_min_extra_isize
    put16(&mut b, 0x15E, crate::inode::EXTRA_ISIZE); // s_want_extra_isize
    put32(&mut b, 0x160, 0x1); // s_flags: EXT2_FLAGS_SIGNED_HASH
    b[0x174] = 4; // s_log_groups_per_flex: 16
    b[0x175] = 1; // s_checksum_type: crc32c
    put64(&mut b, 0x178, 0); // s_kbytes_written
    b[0x274] = t_hi; // s_wtime_hi
    b[0x276] = t_hi; // s_mkfs_time_hi
    b[0x277] = t_hi; // s_lastcheck_hi
    let c = csum::raw(!0, &b[..0x3FC]);
    put32(&mut b, 0x3FC, c); // s_checksum
    b
}

/// Superblock times are unsigned 40-bit (32 + 8 high bits); earlier times become 0.
fn sb_time(t: i64) -> (u32, u8) {
    let t = t.clamp(0, (1i64 << 40) - 1);
    let [a, b, c, d, e, ..] = t.to_le_bytes();
    (u32::from_le_bytes([a, b, c, d]), e)
}

/// One group's descriptor fields.
#[derive(Debug, Clone, Default)]
pub struct Desc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub used_dirs: u32,
    pub flags: u16,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
    pub itable_unused: u32,
}

pub fn encode_desc(d: &Desc, group: u32, fs_seed: u32) -> [u8; DESC_SIZE] {
    let mut b = [0u8; DESC_SIZE];
    put32(&mut b, 0x00, lo32(d.block_bitmap)); // bg_block_bitmap_lo
    put32(&mut b, 0x04, lo32(d.inode_bitmap)); // bg_inode_bitmap_lo
    put32(&mut b, 0x08, lo32(d.inode_table)); // bg_inode_table_lo
    put16(&mut b, 0x0C, lo16(d.free_blocks)); // bg_free_blocks_count_lo
    put16(&mut b, 0x0E, lo16(d.free_inodes)); // bg_free_inodes_count_lo
    put16(&mut b, 0x10, lo16(d.used_dirs)); // bg_used_dirs_count_lo
    put16(&mut b, 0x12, d.flags); // bg_flags
    put16(&mut b, 0x18, lo16(d.block_bitmap_csum)); // bg_block_bitmap_csum_lo
    put16(&mut b, 0x1A, lo16(d.inode_bitmap_csum)); // bg_inode_bitmap_csum_lo
    put16(&mut b, 0x1C, lo16(d.itable_unused)); // bg_itable_unused_lo
    put32(&mut b, 0x20, hi32(d.block_bitmap)); // bg_block_bitmap_hi
    put32(&mut b, 0x24, hi32(d.inode_bitmap)); // bg_inode_bitmap_hi
    put32(&mut b, 0x28, hi32(d.inode_table)); // bg_inode_table_hi
    put16(&mut b, 0x2C, hi16(d.free_blocks)); // bg_free_blocks_count_hi
    put16(&mut b, 0x2E, hi16(d.free_inodes)); // bg_free_inodes_count_hi
    put16(&mut b, 0x30, hi16(d.used_dirs)); // bg_used_dirs_count_hi
    put16(&mut b, 0x32, hi16(d.itable_unused)); // bg_itable_unused_hi
    put16(&mut b, 0x38, hi16(d.block_bitmap_csum)); // bg_block_bitmap_csum_hi
    put16(&mut b, 0x3A, hi16(d.inode_bitmap_csum)); // bg_inode_bitmap_csum_hi
                                                    // bg_checksum (0x1E): crc32c over the group number and the descriptor, low 16 bits.
    let c = csum::raw(csum::raw(fs_seed, &group.to_le_bytes()), &b);
    put16(&mut b, 0x1E, lo16(c));
    b
}
