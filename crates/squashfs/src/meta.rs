//! Compression of blocks, and metadata blocks: up to 8 KiB of a table (inodes, directories,
//! fragment entries, ids), each behind a 2-byte header holding its stored length, with bit 15
//! set when the block is stored uncompressed.

use std::cell::RefCell;

use crate::{Error, Result};

/// Uncompressed bytes in one metadata block (`SQUASHFS_METADATA_SIZE`).
pub const METADATA_SIZE: usize = 8192;
/// Header bit of a metadata block stored uncompressed.
const META_UNCOMPRESSED: u16 = 0x8000;

/// How blocks are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    None,
    Zstd(i32),
}

thread_local! {
    /// One zstd context per thread, kept between blocks (its level with it).
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

impl Codec {
    /// `data` compressed, or `None` when compression would not make it smaller (the block
    /// is then stored as it is, as squashfs allows for every block).
    pub fn compress(self, data: &[u8]) -> Result<Option<Vec<u8>>> {
        let Codec::Zstd(level) = self else {
            return Ok(None);
        };
        if data.is_empty() {
            return Ok(None);
        }
        let out = ZSTD.with(|cell| -> std::io::Result<Vec<u8>> {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(l, _)| *l != level) {
                *slot = Some((level, zstd::bulk::Compressor::new(level)?));
            }
            let (_, c) = slot.as_mut().expect("set on the line before");
            c.compress(data)
        });
        let out = out.map_err(|source| Error::Compress { source })?;
        Ok((out.len() < data.len()).then_some(out))
    }
}

/// One metadata block: its 2-byte header and stored bytes, appended to `out`.
pub(crate) fn encode_block(codec: Codec, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
    debug_assert!(!data.is_empty() && data.len() <= METADATA_SIZE);
    let (body, flag) = match codec.compress(data)? {
        Some(c) => (c, 0),
        None => (data.to_vec(), META_UNCOMPRESSED),
    };
    let header = u16::try_from(body.len()).expect("a metadata block holds at most 8 KiB");
    out.extend_from_slice(&(header | flag).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// A table written as a stream of metadata blocks. Each block is compressed as soon as it
/// is full, so the stored position of the block being filled is always known: that is what
/// references into the table (`block start << 16 | offset`) need.
pub(crate) struct MetaWriter {
    codec: Codec,
    /// The stored blocks so far.
    out: Vec<u8>,
    /// The block being filled (less than [`METADATA_SIZE`] bytes).
    cur: Vec<u8>,
    /// Stored position of every block, the one being filled last.
    starts: Vec<u64>,
}

impl MetaWriter {
    pub fn new(codec: Codec) -> Self {
        MetaWriter {
            codec,
            out: Vec::new(),
            cur: Vec::with_capacity(METADATA_SIZE),
            starts: vec![0],
        }
    }

    /// Where the next byte goes: the stored position of its block (relative to the table's
    /// start) and the offset inside the uncompressed block.
    pub fn pos(&self) -> (u64, u16) {
        let off = u16::try_from(self.cur.len()).expect("a block being filled is under 8 KiB");
        (self.out.len() as u64, off)
    }

    /// Position of the next byte in the uncompressed table.
    pub fn uncompressed_pos(&self) -> u64 {
        (self.starts.len() as u64 - 1) * METADATA_SIZE as u64 + self.cur.len() as u64
    }

    /// Stored position of the block holding uncompressed position `upos` (a block already
    /// written or being filled).
    pub fn block_start(&self, upos: u64) -> u64 {
        let k = imgbuild_blockio::to_usize(upos / METADATA_SIZE as u64);
        self.starts[k]
    }

    pub fn push(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(METADATA_SIZE - self.cur.len());
            self.cur.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.cur.len() == METADATA_SIZE {
                encode_block(self.codec, &self.cur, &mut self.out)?;
                self.cur.clear();
                self.starts.push(self.out.len() as u64);
            }
        }
        Ok(())
    }

    /// The stored table; with the stored position of each block.
    pub fn finish(mut self) -> Result<(Vec<u8>, Vec<u64>)> {
        if self.cur.is_empty() {
            self.starts.pop();
        } else {
            encode_block(self.codec, &self.cur, &mut self.out)?;
        }
        Ok((self.out, self.starts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_headers() {
        // Incompressible bytes are stored with bit 15 set and their own length.
        let noise = imgbuild_testutil::noise(1, 100);
        let mut out = Vec::new();
        encode_block(Codec::Zstd(15), &noise, &mut out).unwrap();
        assert_eq!(&out[..2], &(100u16 | 0x8000).to_le_bytes());
        assert_eq!(&out[2..], &noise[..]);
        // Compressible bytes: the stored length, bit 15 clear, and a zstd frame.
        let zeros = vec![0u8; METADATA_SIZE];
        let mut out = Vec::new();
        encode_block(Codec::Zstd(15), &zeros, &mut out).unwrap();
        let len = u16::from_le_bytes([out[0], out[1]]);
        assert_eq!(len & 0x8000, 0);
        assert_eq!(usize::from(len), out.len() - 2);
        assert_eq!(
            zstd::bulk::decompress(&out[2..], METADATA_SIZE).unwrap(),
            zeros
        );
        // No compression: always stored.
        let mut out = Vec::new();
        encode_block(Codec::None, &zeros, &mut out).unwrap();
        assert_eq!(&out[..2], &(8192u16 | 0x8000).to_le_bytes());
    }

    #[test]
    fn writer_positions() {
        let mut w = MetaWriter::new(Codec::None);
        assert_eq!(w.pos(), (0, 0));
        w.push(&[7; 8000]).unwrap();
        assert_eq!(w.pos(), (0, 8000));
        w.push(&[7; 200]).unwrap();
        // The first block (8192 bytes, stored) is out: the next starts after it and its
        // header.
        assert_eq!(w.pos(), (8194, 8));
        assert_eq!(w.uncompressed_pos(), 8200);
        assert_eq!(w.block_start(8199), 8194);
        assert_eq!(w.block_start(10), 0);
        let (bytes, starts) = w.finish().unwrap();
        assert_eq!(starts, [0, 8194]);
        assert_eq!(bytes.len(), 8194 + 2 + 8);
        // Exactly one full block: no empty block after it.
        let mut w = MetaWriter::new(Codec::None);
        w.push(&[1; METADATA_SIZE]).unwrap();
        let (bytes, starts) = w.finish().unwrap();
        assert_eq!((bytes.len(), starts), (METADATA_SIZE + 2, vec![0]));
    }
}
