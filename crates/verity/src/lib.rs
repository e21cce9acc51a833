//! dm-verity hash trees, byte for byte as `veritysetup format` (cryptsetup) writes them, and
//! the GPT facts of a verity-protected partition pair.
//!
//! One layout only: superblock format (version) 1, hash type 1 (the salt hashed *before* each
//! block), SHA-256, 4 KiB data and hash blocks, the superblock at the start of the hash area.
//! The hash area is:
//!
//! 1. one 4 KiB block: the 512-byte [`Superblock`] (`"verity\0\0"`, version, hash type, the
//!    caller's UUID, `"sha256"`, block sizes, data block count, salt), then zeros;
//! 2. the hash levels, the level nearest the root first and the level of the data blocks'
//!    own hashes last. Level 0 holds `SHA-256(salt || data block)` for every data block, in
//!    order; level `i + 1` holds `SHA-256(salt || block)` for every 4 KiB block of level `i`.
//!    A hash block holds 128 hashes (32 bytes each, no padding between them); the last block
//!    of a level is padded with zeros. The top level is a single block.
//!
//! The root hash is `SHA-256(salt || top level block)`. With exactly one data block there is
//! no level at all (the hash area is the superblock alone) and the root hash is that block's
//! hash, as cryptsetup computes it. The number of levels is the smallest `L` with
//! `(blocks - 1) >> (7 * L) == 0`, level `i` has `ceil(blocks / 128^(i + 1))` blocks.
//!
//! [`Hasher`] computes this in one ordered pass over the data: [`Hasher::push`] takes the
//! data in pieces of any size, whole blocks are hashed on rayon's *current* pool (the digests
//! collected in order, so the thread count changes no byte), only level 0's hashes (32 bytes
//! per 4 KiB of data) are kept, and [`Hasher::finish`] builds the upper levels from them and
//! returns the [`Tree`]. [`hash_area_size`] gives the hash area's size from the data size
//! alone, for a planner that lays out partitions before any byte is hashed.
//!
//! Data must be a whole number of blocks: `veritysetup` silently leaves a partial last block
//! out of the tree (unprotected), so this crate refuses one ([`Error::PartialBlock`]).
//!
//! [`partition`] has the rest of what a disk needs: the partition UUIDs systemd-repart derives
//! from the root hash, and the Discoverable Partitions Specification's type GUIDs.
//!
//! Nothing here reads a clock, the environment or a random source: the salt and the UUID
//! come from the caller ([`Params`]), and the same inputs give the same bytes.

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
// Casts that may truncate, lose a sign or wrap are spelled out (`try_from` with a reason,
// `to_usize` for in-memory lengths); tests may cast freely.
#![cfg_attr(
    not(test),
    warn(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )
)]

pub mod partition;
mod superblock;
mod tree;

pub use superblock::{ParseError, Superblock, SUPERBLOCK_SIZE};
pub use tree::{hash_area_size, Hasher, Tree};

use std::fmt;

use uuid::Uuid;

/// Size of a data block and of a hash block, in bytes (4 KiB, the page size the kernel needs).
pub const BLOCK_SIZE: u64 = 4096;

/// Size of a SHA-256 digest, in bytes: one entry of a hash block.
pub const DIGEST_SIZE: usize = 32;

/// Hashes per hash block (4096 / 32).
pub const HASHES_PER_BLOCK: u64 = BLOCK_SIZE / DIGEST_SIZE as u64;

/// The largest salt a verity superblock can hold, in bytes.
pub const MAX_SALT_SIZE: usize = 256;

/// What cannot be turned into a hash tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A salt longer than the superblock's 256-byte field.
    #[error(
        "a verity salt of {len} bytes is longer than the {MAX_SALT_SIZE} bytes a superblock holds"
    )]
    SaltTooLong {
        /// The salt's length, in bytes.
        len: usize,
    },
    /// No data at all: a verity device needs at least one block.
    #[error("no data to protect: a verity device needs at least one {BLOCK_SIZE}-byte block")]
    Empty,
    /// Data that ends in a partial block, which `veritysetup` would leave unprotected.
    #[error(
        "{size} bytes of data end in a partial block of {tail} bytes: verity data must be a whole number of {BLOCK_SIZE}-byte blocks"
    )]
    PartialBlock {
        /// The data's size, in bytes.
        size: u64,
        /// The bytes past the last whole block.
        tail: u64,
    },
    /// Data so large that the hash area's size overflows 64 bits.
    #[error("{size} bytes of data give a hash area larger than 2^64 bytes")]
    TooLarge {
        /// The data's size, in bytes.
        size: u64,
    },
}

/// The salt hashed before every block: at most [`MAX_SALT_SIZE`] bytes, possibly none.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Salt(Vec<u8>);

impl Salt {
    /// A salt of these bytes; refused when longer than [`MAX_SALT_SIZE`].
    pub fn new(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_SALT_SIZE {
            return Err(Error::SaltTooLong { len: bytes.len() });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The salt's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The salt as lower-case hex, as `veritysetup --salt=` takes it (`-` for none).
    pub fn to_hex(&self) -> String {
        if self.0.is_empty() {
            "-".to_owned()
        } else {
            hex(&self.0)
        }
    }
}

/// What the caller chooses for a hash tree: the salt and the UUID written in the superblock.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Params {
    /// Hashed before every data and hash block.
    pub salt: Salt,
    /// The hash device's UUID, stored in the superblock in RFC 4122 byte order (as
    /// `veritysetup --uuid=` stores the text it is given).
    pub uuid: Uuid,
}

/// The root hash of a tree: what the kernel command line (`roothash=`, `usrhash=`) carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RootHash(pub [u8; DIGEST_SIZE]);

impl RootHash {
    /// The hash as 64 lower-case hex digits, as `veritysetup` prints it.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_is_bounded_and_printed_as_veritysetup_takes_it() {
        assert_eq!(Salt::new(&[0; 257]), Err(Error::SaltTooLong { len: 257 }));
        assert_eq!(Salt::new(&[0xab; 256]).unwrap().as_bytes().len(), 256);
        assert_eq!(Salt::new(&[0x01, 0xfe]).unwrap().to_hex(), "01fe");
        assert_eq!(Salt::new(&[]).unwrap().to_hex(), "-");
    }

    #[test]
    fn root_hash_prints_as_hex() {
        let mut h = [0u8; 32];
        h[0] = 0x0f;
        h[31] = 0xa0;
        let text = RootHash(h).to_string();
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("0f00"));
        assert!(text.ends_with("00a0"));
    }
}
