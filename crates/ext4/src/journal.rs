//! The internal jbd2 journal: its size (as mke2fs picks it) and its superblock (v2,
//! big-endian, empty: `s_start` = 0 means nothing to replay).

use crate::bits::*;
use crate::BLOCK_SIZE;
use imgbuild_blockio::to_usize;

/// Journal blocks mke2fs gives a filesystem of `blocks` 4 KiB blocks
/// (`ext2fs_default_journal_size`); `None` below 2048 blocks.
pub fn default_blocks(blocks: u64) -> Option<u64> {
    Some(match blocks {
        0..2048 => return None,
        2048..32768 => 1024,
        32768..262_144 => 4096,
        262_144..524_288 => 8192,
        524_288..4_194_304 => 16384,
        4_194_304..8_388_608 => 32768,
        8_388_608..16_777_216 => 65536,
        16_777_216..33_554_432 => 131_072,
        _ => 262_144,
    })
}

fn be32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// The journal superblock (first block of the journal) for a journal of `len` blocks.
pub fn superblock(len: u64, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; to_usize(BLOCK_SIZE)];
    be32(&mut b, 0x00, 0xC03B_3998); // h_magic
    be32(&mut b, 0x04, 4); // h_blocktype: JBD2_SUPERBLOCK_V2
    be32(&mut b, 0x08, 0); // h_sequence
    be32(&mut b, 0x0C, narrow(BLOCK_SIZE, "4096")); // s_blocksize
    be32(
        &mut b,
        0x10,
        narrow(len, "journals are at most 2^18 blocks"),
    ); // s_maxlen
    be32(&mut b, 0x14, 1); // s_first
    be32(&mut b, 0x18, 1); // s_sequence
    be32(&mut b, 0x1C, 0); // s_start: clean
    b[0x30..0x40].copy_from_slice(uuid); // s_uuid: the filesystem's, like mke2fs
    be32(&mut b, 0x40, 1); // s_nr_users
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_mke2fs() {
        assert_eq!(default_blocks(2047), None);
        assert_eq!(default_blocks(2048), Some(1024));
        assert_eq!(default_blocks(262_144), Some(8192)); // 1 GiB: 32 MiB, as dumpe2fs shows
        assert_eq!(default_blocks(1 << 30), Some(262_144));
    }
}
