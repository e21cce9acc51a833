//! The 256-byte on-disk inode (`struct ext4_inode`) with `i_extra_isize` = 32.

use crate::bits::*;
use crate::{csum, put16, put32, INODE_SIZE};

pub const S_IFIFO: u16 = 0o010000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFSOCK: u16 = 0o140000;

pub const EXT4_INDEX_FL: u32 = 0x1000;
pub const EXT4_EXTENTS_FL: u32 = 0x80000;

/// Bytes of the inode beyond the original 128 that we fill.
pub const EXTRA_ISIZE: u16 = 32;

/// The fields we set; everything else is zero.
#[derive(Debug, Clone)]
pub struct Fields {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// atime = ctime = mtime = crtime, in seconds since the epoch.
    pub time: i64,
    pub links: u16,
    /// Blocks of 4 KiB used (data and extent tree).
    pub blocks: u64,
    pub flags: u32,
    pub block: [u8; 60],
    /// `i_extra_isize`; 0 gives an old-style 128-byte inode (only for inode 1, like mke2fs).
    pub extra_isize: u16,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            time: 0,
            links: 0,
            blocks: 0,
            flags: 0,
            block: [0; 60],
            extra_isize: 0,
        }
    }
}

/// Latest time we store: 2310-04-04. The format reaches 2446, but e2fsck reads times from
/// 2310 on (epoch bits 3 with the sign bit set) as mis-encoded pre-1970 ones.
pub const MAX_TIME: i64 = (3i64 << 32) - (1i64 << 31) - 1;
/// Earliest time: 1901-12-13.
pub const MIN_TIME: i64 = -(1i64 << 31);

/// Split a time into the 32-bit seconds field and the 2 epoch bits of the `_extra` field
/// (nanoseconds are 0). Times outside [`MIN_TIME`, `MAX_TIME`] are clamped.
pub fn split_time(t: i64) -> (u32, u32) {
    let t = t.clamp(MIN_TIME, MAX_TIME);
    // The seconds field holds the low 32 bits, read as signed; the epoch bits count the
    // 2^32-second eras beyond that (two bits: the clamp keeps them in 0..=3).
    let [a, b, c, d, ..] = t.to_le_bytes();
    let lo = i32::from_le_bytes([a, b, c, d]);
    let epoch = narrow(((t - i64::from(lo)) >> 32) & 3, "two bits");
    (u32::from_le_bytes([a, b, c, d]), epoch)
}

pub fn encode(ino: u32, f: &Fields, fs_seed: u32) -> [u8; INODE_SIZE] {
    let mut b = [0u8; INODE_SIZE];
    let (t, epoch) = split_time(f.time);
    put16(&mut b, 0x00, f.mode); // i_mode
    put16(&mut b, 0x02, lo16(f.uid)); // i_uid
    put32(&mut b, 0x04, lo32(f.size)); // i_size_lo
    put32(&mut b, 0x08, t); // i_atime
    put32(&mut b, 0x0C, t); // i_ctime
    put32(&mut b, 0x10, t); // i_mtime
    put16(&mut b, 0x18, lo16(f.gid)); // i_gid
    put16(&mut b, 0x1A, f.links); // i_links_count
    let sectors = f.blocks * 8;
    put32(&mut b, 0x1C, lo32(sectors)); // i_blocks_lo (512-byte units, huge_file)
    put32(&mut b, 0x20, f.flags); // i_flags
    b[0x28..0x28 + 60].copy_from_slice(&f.block); // i_block
    put32(&mut b, 0x6C, hi32(f.size)); // i_size_high
    put16(&mut b, 0x74, lo16(hi32(sectors))); // l_i_blocks_high
    put16(&mut b, 0x78, hi16(f.uid)); // l_i_uid_high
    put16(&mut b, 0x7A, hi16(f.gid)); // l_i_gid_high
    if f.extra_isize >= 4 {
        put16(&mut b, 0x80, f.extra_isize); // i_extra_isize
        put32(&mut b, 0x84, epoch); // i_ctime_extra
        put32(&mut b, 0x88, epoch); // i_mtime_extra
        put32(&mut b, 0x8C, epoch); // i_atime_extra
        put32(&mut b, 0x90, t); // i_crtime
        put32(&mut b, 0x94, epoch); // i_crtime_extra
    }
    // i_checksum_lo at 0x7C and i_checksum_hi at 0x82 are zero while summing.
    let c = csum::raw(csum::inode_seed(fs_seed, ino, 0), &b);
    put16(&mut b, 0x7C, lo16(c));
    if f.extra_isize >= 4 {
        put16(&mut b, 0x82, hi16(c));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(split_time(0), (0, 0));
        assert_eq!(split_time(-1), (u32::MAX, 0));
        assert_eq!(split_time(1 << 31), (1 << 31, 1));
        assert_eq!(split_time((1 << 32) + 5), (5, 1));
    }
}
