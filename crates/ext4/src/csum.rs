//! CRC32C as ext4's metadata_csum uses it.
//!
//! The kernel and e2fsprogs call a *raw* CRC32C update: no inversion before or after. The
//! `crc32c` crate computes the standard (inverted) form, so `raw(seed, data)` is
//! `!crc32c_append(!seed, data)`.

/// Raw CRC32C update of `seed` with `data` (what ext4 calls `ext4_chksum(seed, data)`).
pub fn raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// The filesystem checksum seed: `crc32c(~0, uuid)`.
pub fn fs_seed(uuid: &[u8; 16]) -> u32 {
    raw(!0, uuid)
}

/// Per-inode seed: the fs seed extended with the inode number and generation (both
/// little-endian), used by inode, extent-block and directory-block checksums.
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    raw(raw(fs_seed, &ino.to_le_bytes()), &generation.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_matches_the_textbook_crc32c() {
        // The standard CRC-32C check value of "123456789" is 0xE3069283; the raw form
        // starting from ~0 is its complement.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(raw(!0, b"123456789"), !0xE306_9283);
        // Chaining raw updates equals one update over the concatenation.
        assert_eq!(raw(raw(7, b"abc"), b"def"), raw(7, b"abcdef"));
    }
}
