//! The squashfs 4.0 superblock and the block compressors: the 96-byte header checked before
//! anything else is read (version, block size and its log agree, every table inside
//! `bytes_used`), and one bounded decompression per compressor (zstd, gzip's zlib streams,
//! xz); lzma, lzo and lz4 are refused by name.

use std::io::Read;

use crate::bytes::{le16, le32, le64, to_usize};

/// Bytes of the superblock.
pub(crate) const SIZE: usize = 96;
/// Decompressed bytes of one metadata block.
pub(crate) const META: usize = 8192;

/// What a superblock can be wrong about.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SbError {
    /// Not `hsqs` at byte 0.
    #[error("no squashfs magic")]
    Magic,
    /// A version other than 4.0.
    #[error("squashfs version {0}.{1} (only 4.0 is read)")]
    Version(u16, u16),
    /// A block size that is not a power of two in 4 KiB..=1 MiB, or whose log disagrees.
    #[error("block size {size} with log {log}")]
    BlockSize {
        /// `block_size`.
        size: u32,
        /// `block_log`.
        log: u16,
    },
    /// `bytes_used` past the image, or a table outside it.
    #[error("the {what} at byte {at} lies outside the {used} bytes the superblock says are used")]
    Outside {
        /// Which table.
        what: &'static str,
        /// Its offset.
        at: u64,
        /// `bytes_used`.
        used: u64,
    },
    /// `bytes_used` is more than the image holds.
    #[error("the superblock says {used} bytes are used, the image holds {len}")]
    Truncated {
        /// `bytes_used`.
        used: u64,
        /// Bytes available.
        len: u64,
    },
}

/// Compressors squashfs names in its superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compressor {
    Gzip,
    Xz,
    Zstd,
    /// Known but not read: the name for the message.
    Refused(&'static str),
}

impl Compressor {
    fn from_id(id: u16) -> Self {
        match id {
            1 => Self::Gzip,
            2 => Self::Refused("lzma"),
            3 => Self::Refused("lzo"),
            4 => Self::Xz,
            5 => Self::Refused("lz4"),
            6 => Self::Zstd,
            _ => Self::Refused("an unknown compressor"),
        }
    }

    /// The name `mksquashfs -comp` uses.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
            Self::Refused(n) => n,
        }
    }
}

/// The superblock's fields that reading uses.
#[derive(Clone, Debug)]
pub(crate) struct Superblock {
    pub inodes: u32,
    pub block_size: u32,
    pub fragments: u32,
    pub compressor: Compressor,
    pub ids: u16,
    pub root: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub inode_table: u64,
    pub dir_table: u64,
    pub frag_table: u64,
}

impl Superblock {
    /// Parses and checks the first [`SIZE`] bytes of an image of `len` bytes.
    pub(crate) fn parse(b: &[u8], len: u64) -> Result<Self, SbError> {
        if b.get(..4) != Some(b"hsqs") {
            return Err(SbError::Magic);
        }
        let (major, minor) = (le16(b, 28), le16(b, 30));
        if (major, minor) != (4, 0) {
            return Err(SbError::Version(major, minor));
        }
        let block_size = le32(b, 12);
        let log = le16(b, 22);
        if !(12..=20).contains(&log) || 1u32.checked_shl(u32::from(log)) != Some(block_size) {
            return Err(SbError::BlockSize {
                size: block_size,
                log,
            });
        }
        let sb = Self {
            inodes: le32(b, 4),
            block_size,
            fragments: le32(b, 16),
            compressor: Compressor::from_id(le16(b, 20)),
            ids: le16(b, 26),
            root: le64(b, 32),
            bytes_used: le64(b, 40),
            id_table: le64(b, 48),
            inode_table: le64(b, 64),
            dir_table: le64(b, 72),
            frag_table: le64(b, 80),
        };
        if sb.bytes_used > len {
            return Err(SbError::Truncated {
                used: sb.bytes_used,
                len,
            });
        }
        let used = sb.bytes_used;
        let inside = |what, at: u64| {
            if at < 96 || at >= used {
                Err(SbError::Outside { what, at, used })
            } else {
                Ok(())
            }
        };
        inside("inode table", sb.inode_table)?;
        inside("directory table", sb.dir_table)?;
        inside("id table", sb.id_table)?;
        if sb.fragments > 0 {
            inside("fragment table", sb.frag_table)?;
        }
        Ok(sb)
    }
}

/// Why a block did not decompress.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecompressError {
    /// The compressor's decoder refused the bytes.
    #[error("{0} data does not decompress")]
    Bad(&'static str, #[source] std::io::Error),
    /// More than the block may hold.
    #[error("a block decompresses to more than {0} bytes")]
    TooBig(usize),
}

/// Decompresses one block of `data` into at most `max` bytes.
pub(crate) fn decompress(
    c: Compressor,
    data: &[u8],
    max: usize,
) -> Result<Vec<u8>, DecompressError> {
    let cap = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    let r = match c {
        Compressor::Zstd => {
            zstd::stream::read::Decoder::new(data).and_then(|d| d.take(cap).read_to_end(&mut out))
        }
        Compressor::Gzip => flate2::read::ZlibDecoder::new(data)
            .take(cap)
            .read_to_end(&mut out),
        Compressor::Xz => liblzma::read::XzDecoder::new(data)
            .take(cap)
            .read_to_end(&mut out),
        Compressor::Refused(n) => Err(std::io::Error::other(format!("{n} is not read"))),
    };
    r.map_err(|e| DecompressError::Bad(c.name(), e))?;
    if out.len() > max {
        return Err(DecompressError::TooBig(max));
    }
    Ok(out)
}

/// Splits a metadata block header: (bytes on disk, whether compressed).
pub(crate) fn meta_header(h: u16) -> (usize, bool) {
    (usize::from(h & 0x7fff), h & 0x8000 == 0)
}

/// Splits a data block size word: (bytes on disk, whether compressed).
pub(crate) fn block_word(w: u32) -> (u64, bool) {
    (u64::from(w & 0x00ff_ffff), w & 0x0100_0000 == 0)
}

/// A metadata reference's block (from its table's start) and offset inside the block.
pub(crate) fn split_ref(r: u64) -> (u64, usize) {
    (r >> 16, to_usize(r & 0xffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Vec<u8> {
        let mut b = vec![0u8; SIZE];
        b[..4].copy_from_slice(b"hsqs");
        b[12..16].copy_from_slice(&131_072u32.to_le_bytes());
        b[20..22].copy_from_slice(&6u16.to_le_bytes());
        b[22..24].copy_from_slice(&17u16.to_le_bytes());
        b[28..30].copy_from_slice(&4u16.to_le_bytes());
        b[40..48].copy_from_slice(&4096u64.to_le_bytes());
        for o in [48, 64, 72] {
            b[o..o + 8].copy_from_slice(&200u64.to_le_bytes());
        }
        b
    }

    #[test]
    fn checks() {
        let s = Superblock::parse(&sb(), 4096).expect("valid");
        assert_eq!(s.compressor, Compressor::Zstd);
        assert_eq!(
            Superblock::parse(&sb(), 4000).err(),
            Some(SbError::Truncated {
                used: 4096,
                len: 4000
            })
        );
        let mut b = sb();
        b[22] = 16;
        assert!(matches!(
            Superblock::parse(&b, 4096),
            Err(SbError::BlockSize { .. })
        ));
        let mut b = sb();
        b[64..72].copy_from_slice(&5000u64.to_le_bytes());
        assert!(matches!(
            Superblock::parse(&b, 4096),
            Err(SbError::Outside {
                what: "inode table",
                ..
            })
        ));
        let mut b = sb();
        b[20] = 5;
        assert_eq!(
            Superblock::parse(&b, 4096).map(|s| s.compressor.name()),
            Ok("lz4")
        );
    }

    #[test]
    fn decompression_is_bounded() {
        let z = zstd::bulk::compress(&[7u8; 10_000], 3).expect("compress");
        assert_eq!(
            decompress(Compressor::Zstd, &z, 10_000)
                .map(|v| v.len())
                .ok(),
            Some(10_000)
        );
        assert!(matches!(
            decompress(Compressor::Zstd, &z, 9_999),
            Err(DecompressError::TooBig(9_999))
        ));
        assert!(matches!(
            decompress(Compressor::Gzip, b"not zlib", 100),
            Err(DecompressError::Bad("gzip", _))
        ));
    }
}
