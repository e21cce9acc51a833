//! The squashfs fields of a seed: every superblock field, the header of every metadata
//! block of the inode and directory tables (compressed size and the uncompressed bit), and
//! the id and fragment tables' block pointers. Inodes, listings and block size words lie
//! inside metadata blocks: an uncompressed seed (`mksquashfs -noI -noD -noF`) exposes them
//! to the byte mutations of the hot ranges.

use std::fs::File;

use super::{le16, le32, le64, read, Endian, Map};

/// Metadata blocks mapped per table.
const MAX_BLOCKS: usize = 4000;

/// A squashfs at byte `base` of the seed (0 for a squashfs file, the store image's extent
/// in a live ISO).
fn squashfs(f: &File, base: u64, m: &mut Map) {
    let sb = read(f, base, 96);
    if sb.len() < 96 || &sb[..4] != b"hsqs" {
        return;
    }
    m.push(
        base,
        &[
            (4, 4, "squashfs.sb.inode_count"),
            (12, 4, "squashfs.sb.block_size"),
            (16, 4, "squashfs.sb.fragment_count"),
            (20, 2, "squashfs.sb.compressor"),
            (22, 2, "squashfs.sb.block_log"),
            (24, 2, "squashfs.sb.flags"),
            (26, 2, "squashfs.sb.id_count"),
            (28, 2, "squashfs.sb.version_major"),
            (32, 8, "squashfs.sb.root_inode"),
            (40, 8, "squashfs.sb.bytes_used"),
            (48, 8, "squashfs.sb.id_table"),
            (64, 8, "squashfs.sb.inode_table"),
            (72, 8, "squashfs.sb.directory_table"),
            (80, 8, "squashfs.sb.fragment_table"),
        ],
        Endian::Le,
    );
    let (inodes, dirs, frags, ids) = (le64(&sb, 64), le64(&sb, 72), le64(&sb, 80), le64(&sb, 48));
    blocks(f, base, inodes, dirs, "squashfs.meta.inode_block", m);
    let dir_end = [frags, ids, le64(&sb, 40)]
        .into_iter()
        .filter(|&e| e > dirs && e != u64::MAX)
        .min()
        .unwrap_or(dirs);
    blocks(f, base, dirs, dir_end, "squashfs.meta.dir_block", m);
    let id_ptrs = (u64::from(le16(&sb, 26)) * 4).div_ceil(8192);
    for i in 0..id_ptrs.min(64) {
        m.push(
            base + ids,
            &[(i * 8, 8, "squashfs.id_table.pointer")],
            Endian::Le,
        );
    }
    if frags != u64::MAX {
        let frag_ptrs = u64::from(le32(&sb, 16)).div_ceil(512);
        for i in 0..frag_ptrs.min(64) {
            m.push(
                base + frags,
                &[(i * 8, 8, "squashfs.fragment_table.pointer")],
                Endian::Le,
            );
        }
    }
}

/// The metadata block headers from `start` to `end` (offsets in the squashfs).
fn blocks(f: &File, base: u64, start: u64, end: u64, kind: &'static str, m: &mut Map) {
    let mut pos = start;
    for _ in 0..MAX_BLOCKS {
        if pos >= end {
            break;
        }
        let h = le16(&read(f, base + pos, 2), 0);
        m.push(base + pos, &[(0, 2, kind)], Endian::Le);
        pos += 2 + u64::from(h & 0x7fff);
    }
}

/// A squashfs seed's fields; a live ISO's: the ISO's and its store image's (at the first
/// 2 KiB block past the volume descriptors that starts with the magic).
pub fn seed(f: &File, len: u64, m: &mut Map) {
    if read(f, 0, 4) == b"hsqs" {
        return squashfs(f, 0, m);
    }
    if let Some(at) = (16..len / 2048)
        .map(|b| b * 2048)
        .find(|&at| read(f, at, 4) == b"hsqs")
    {
        super::iso9660(f, len, m);
        squashfs(f, at, m);
    }
}
