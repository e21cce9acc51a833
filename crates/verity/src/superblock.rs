//! The verity superblock: 512 bytes at the start of the hash area, all integers little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | `signature`, `"verity\0\0"` |
//! | 8 | 4 | `version`, 1 |
//! | 12 | 4 | `hash_type`, 1 (salt first; 0 is Chrome OS's, salt last) |
//! | 16 | 16 | `uuid`, RFC 4122 byte order |
//! | 32 | 32 | `algorithm`, NUL-padded (`"sha256"`) |
//! | 64 | 4 | `data_block_size` |
//! | 68 | 4 | `hash_block_size` |
//! | 72 | 8 | `data_blocks` |
//! | 80 | 2 | `salt_size` |
//! | 82 | 6 | padding |
//! | 88 | 256 | `salt`, zero-padded |
//! | 344 | 168 | padding |

use uuid::Uuid;

use crate::{Params, Salt, BLOCK_SIZE, MAX_SALT_SIZE};

/// Size of the superblock record, in bytes (it sits in a whole 4 KiB block, zeros after it).
pub const SUPERBLOCK_SIZE: usize = 512;

const SIGNATURE: &[u8; 8] = b"verity\0\0";
const ALGORITHM: &str = "sha256";
const SALT_OFFSET: usize = 88;

/// The fields of a verity superblock, as written by [`crate::Hasher`] or read back by
/// [`Superblock::parse`] (which accepts any hash type, algorithm name and block size the
/// format allows, so a reader can say what an image holds).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Superblock {
    hash_type: u32,
    uuid: Uuid,
    algorithm: String,
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    salt: Salt,
}

/// Why bytes are not a verity superblock this crate understands.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Fewer than 512 bytes.
    #[error("a verity superblock needs {SUPERBLOCK_SIZE} bytes, got {len}")]
    TooShort {
        /// The bytes given.
        len: usize,
    },
    /// The first 8 bytes are not `"verity\0\0"`.
    #[error("no verity signature")]
    Signature,
    /// A superblock version other than 1.
    #[error("verity superblock version {0} (only 1 exists)")]
    Version(u32),
    /// A hash type other than 0 (Chrome OS) or 1 (normal).
    #[error("verity hash type {0} (0 or 1 expected)")]
    HashType(u32),
    /// An algorithm name that is empty or not printable ASCII.
    #[error("verity algorithm name is empty or not printable ASCII")]
    Algorithm,
    /// A block size that is not a power of two from 512 bytes to 512 KiB.
    #[error("verity {which} block size {size} is not a power of two from 512 to 524288")]
    BlockSize {
        /// `data` or `hash`.
        which: &'static str,
        /// The size read.
        size: u32,
    },
    /// A salt size above the 256 bytes of the field.
    #[error("verity salt size {0} exceeds the field's {MAX_SALT_SIZE} bytes")]
    SaltSize(u16),
}

impl Superblock {
    /// The superblock [`crate::Hasher`] writes for `data_blocks` blocks with `params`.
    pub(crate) fn new(params: &Params, data_blocks: u64) -> Self {
        Self {
            hash_type: 1,
            uuid: params.uuid,
            algorithm: ALGORITHM.to_owned(),
            data_block_size: block_size_u32(),
            hash_block_size: block_size_u32(),
            data_blocks,
            salt: params.salt.clone(),
        }
    }

    /// 1 for the normal format (salt hashed first), 0 for Chrome OS's (salt last).
    pub fn hash_type(&self) -> u32 {
        self.hash_type
    }

    /// The hash device's UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The hash algorithm's name, as the kernel's crypto API knows it (`sha256`).
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// Size of a data block, in bytes.
    pub fn data_block_size(&self) -> u32 {
        self.data_block_size
    }

    /// Size of a hash block, in bytes.
    pub fn hash_block_size(&self) -> u32 {
        self.hash_block_size
    }

    /// How many data blocks the tree covers.
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// The salt.
    pub fn salt(&self) -> &Salt {
        &self.salt
    }

    /// The 512 bytes on disk.
    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&self.hash_type.to_le_bytes());
        b[16..32].copy_from_slice(self.uuid.as_bytes());
        // The name is at most 32 bytes: `parse` and `new` only make such names.
        let name = self.algorithm.as_bytes();
        b[32..32 + name.len().min(32)].copy_from_slice(&name[..name.len().min(32)]);
        b[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        b[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        let salt = self.salt.as_bytes();
        // A Salt holds at most 256 bytes.
        let salt_size = u16::try_from(salt.len()).unwrap_or(u16::MAX);
        b[80..82].copy_from_slice(&salt_size.to_le_bytes());
        b[SALT_OFFSET..SALT_OFFSET + salt.len()].copy_from_slice(salt);
        b
    }

    /// Reads a superblock from the first 512 bytes of `bytes`, checking every field the way
    /// cryptsetup does before it trusts one (signature, version, hash type, block sizes, salt
    /// size); the data block count is returned as read, unchecked against any device size.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let b: &[u8; SUPERBLOCK_SIZE] = bytes
            .get(..SUPERBLOCK_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or(ParseError::TooShort { len: bytes.len() })?;
        if &b[0..8] != SIGNATURE {
            return Err(ParseError::Signature);
        }
        let version = le32(b, 8);
        if version != 1 {
            return Err(ParseError::Version(version));
        }
        let hash_type = le32(b, 12);
        if hash_type > 1 {
            return Err(ParseError::HashType(hash_type));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        let field = &b[32..64];
        let name = &field[..field.iter().position(|&c| c == 0).unwrap_or(field.len())];
        if name.is_empty() || !name.iter().all(|c| c.is_ascii_graphic()) {
            return Err(ParseError::Algorithm);
        }
        let data_block_size = block_size(le32(b, 64), "data")?;
        let hash_block_size = block_size(le32(b, 68), "hash")?;
        let mut blocks = [0u8; 8];
        blocks.copy_from_slice(&b[72..80]);
        let salt_size = u16::from_le_bytes([b[80], b[81]]);
        let salt = b
            .get(SALT_OFFSET..SALT_OFFSET + usize::from(salt_size))
            .filter(|_| usize::from(salt_size) <= MAX_SALT_SIZE)
            .ok_or(ParseError::SaltSize(salt_size))?;
        Ok(Self {
            hash_type,
            uuid: Uuid::from_bytes(uuid),
            algorithm: String::from_utf8_lossy(name).into_owned(),
            data_block_size,
            hash_block_size,
            data_blocks: u64::from_le_bytes(blocks),
            salt: Salt(salt.to_vec()),
        })
    }
}

/// [`BLOCK_SIZE`] as the superblock's 32-bit field.
fn block_size_u32() -> u32 {
    // 4096 fits in 32 bits.
    u32::try_from(BLOCK_SIZE).unwrap_or(u32::MAX)
}

fn le32(b: &[u8; SUPERBLOCK_SIZE], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `size` when it is a power of two from 512 bytes to 512 KiB (cryptsetup's bounds).
fn block_size(size: u32, which: &'static str) -> Result<u32, ParseError> {
    if size.is_power_of_two() && (512..=512 * 1024).contains(&size) {
        Ok(size)
    } else {
        Err(ParseError::BlockSize { which, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params() -> Params {
        Params {
            salt: Salt::new(&[0x00, 0x11, 0x22, 0x33]).unwrap(),
            uuid: Uuid::parse_str("12345678-9abc-def0-1234-56789abcdef0").unwrap(),
        }
    }

    #[test]
    fn encodes_the_fields_at_their_offsets() {
        let b = Superblock::new(&params(), 0x0102_0304_0506).encode();
        assert_eq!(&b[0..8], b"verity\0\0");
        assert_eq!(&b[8..16], &[1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(
            &b[16..32],
            &[
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc,
                0xde, 0xf0
            ]
        );
        assert_eq!(&b[32..39], b"sha256\0");
        assert!(b[38..64].iter().all(|&c| c == 0));
        assert_eq!(&b[64..72], &[0, 0x10, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(&b[72..80], &[6, 5, 4, 3, 2, 1, 0, 0]);
        assert_eq!(&b[80..82], &[4, 0]);
        assert_eq!(&b[88..92], &[0x00, 0x11, 0x22, 0x33]);
        assert!(b[92..].iter().all(|&c| c == 0));
    }

    #[test]
    fn parses_back_what_it_encodes() {
        let sb = Superblock::new(&params(), 129);
        let back = Superblock::parse(&sb.encode()).unwrap();
        assert_eq!(back, sb);
        assert_eq!(back.algorithm(), "sha256");
        assert_eq!(back.data_blocks(), 129);
        assert_eq!(back.salt().as_bytes(), &[0x00, 0x11, 0x22, 0x33]);
        let full = Superblock::new(
            &Params {
                salt: Salt::new(&[0xee; 256]).unwrap(),
                ..params()
            },
            1,
        );
        assert_eq!(Superblock::parse(&full.encode()).unwrap(), full);
    }

    #[test]
    fn refuses_what_cryptsetup_refuses() {
        let good = Superblock::new(&params(), 1).encode();
        let with = |at: usize, bytes: &[u8]| {
            let mut b = good;
            b[at..at + bytes.len()].copy_from_slice(bytes);
            Superblock::parse(&b)
        };
        assert_eq!(
            Superblock::parse(&good[..511]),
            Err(ParseError::TooShort { len: 511 })
        );
        assert_eq!(with(0, b"Verity"), Err(ParseError::Signature));
        assert_eq!(with(8, &[2]), Err(ParseError::Version(2)));
        assert_eq!(with(12, &[2]), Err(ParseError::HashType(2)));
        assert_eq!(with(32, &[0]), Err(ParseError::Algorithm));
        assert_eq!(with(32, b"sha\x01"), Err(ParseError::Algorithm));
        assert_eq!(
            with(64, &[0, 0x30, 0, 0]),
            Err(ParseError::BlockSize {
                which: "data",
                size: 0x3000
            })
        );
        assert_eq!(
            with(68, &[0, 1, 0, 0]),
            Err(ParseError::BlockSize {
                which: "hash",
                size: 256
            })
        );
        assert_eq!(with(80, &[1, 1]), Err(ParseError::SaltSize(257)));
        // Hash type 0 (Chrome OS) and other algorithms are read, not refused.
        assert_eq!(with(12, &[0]).unwrap().hash_type(), 0);
        assert_eq!(with(32, b"sha512").unwrap().algorithm(), "sha512");
    }

    proptest! {
        /// Any bytes give a superblock or an error, never a panic; what parses re-encodes to
        /// the same fields.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), sig in any::<bool>()) {
            let mut bytes = bytes;
            if sig && bytes.len() >= 16 {
                bytes[..8].copy_from_slice(SIGNATURE);
                bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
                bytes[12..16].copy_from_slice(&1u32.to_le_bytes());
            }
            if let Ok(sb) = Superblock::parse(&bytes) {
                prop_assert_eq!(Superblock::parse(&sb.encode()).unwrap(), sb);
            }
        }
    }
}
