//! A block map in bmaptool's format 2.0: the mapped (non-zero) block ranges of the disk,
//! taken from the map rather than from the output file's holes, each with the SHA-256 of its
//! bytes, so `bmaptool copy` writes only those ranges and verifies them.

use crate::to_usize;
use sha2::{Digest, Sha256};

use crate::{Data, Map, Piece, Sink};

/// bmaptool's block size.
pub const BLOCK: u64 = 4096;

/// A sink that makes the disk's block map (bmaptool's XML): which 4 KiB blocks hold data,
/// with the SHA-256 of each mapped range, hashed as the pieces stream past.
pub struct Bmap {
    image_size: u64,
    /// Mapped block ranges, `[first, last]` inclusive.
    ranges: Vec<(u64, u64)>,
    /// The range being hashed, and its hasher.
    at: usize,
    hash: Sha256,
    sums: Vec<String>,
    xml: Option<String>,
}

use imgbuild_units::human_size as human;

impl Bmap {
    /// A block map of `map`'s disk: its mapped ranges come from the map, their sums from
    /// the stream.
    pub fn new(map: &Map) -> Self {
        Bmap {
            image_size: map.len(),
            ranges: map.mapped_blocks(BLOCK),
            at: 0,
            hash: Sha256::new(),
            sums: Vec::new(),
            xml: None,
        }
    }

    /// Byte range `[start, end)` of mapped range `i` (the last block may be partial).
    fn bytes_of(&self, i: usize) -> (u64, u64) {
        let (first, last) = self.ranges[i];
        imgbuild_blockio::block_range_bytes(first, last, BLOCK, self.image_size)
            .expect("the ranges come from the map's own extents, inside the image")
    }

    /// The bmap file's text, once the stream has finished the sink.
    pub fn xml(&self) -> Option<&str> {
        self.xml.as_deref()
    }

    fn render(&self) -> String {
        use std::fmt::Write;
        let blocks = self.image_size.div_ceil(BLOCK);
        // Ranges are disjoint blocks of the image: their count is at most `blocks`.
        let mapped: u64 = self.ranges.iter().map(|r| r.1 - r.0 + 1).sum();
        let percent = if blocks == 0 {
            0.0
        } else {
            mapped as f64 * 100.0 / blocks as f64
        };
        let mut x = String::new();
        let _ = write!(
            x,
            "<?xml version=\"1.0\" ?>\n\
             <!-- The block map of a disk image for bmaptool (bmap-tools): the ranges of blocks\n     \
             that hold data. Only these have to be written to the target device; the other\n     \
             blocks read as zeros. Written by imgbuild from the image's plan. -->\n\n\
             <bmap version=\"2.0\">\n    \
             <!-- Image size in bytes: {} -->\n    \
             <ImageSize> {} </ImageSize>\n\n    \
             <!-- Size of a block in bytes -->\n    \
             <BlockSize> {BLOCK} </BlockSize>\n\n    \
             <!-- Count of blocks in the image file -->\n    \
             <BlocksCount> {blocks} </BlocksCount>\n\n    \
             <!-- Count of mapped blocks: {} or {percent:.1}% -->\n    \
             <MappedBlocksCount> {mapped} </MappedBlocksCount>\n\n    \
             <!-- Type of checksum used in this file -->\n    \
             <ChecksumType> sha256 </ChecksumType>\n\n    \
             <!-- The checksum of this bmap file. When it is calculated, the value of\n         \
             the checksum has be zero (all ASCII \"0\" symbols).  -->\n    \
             <BmapFileChecksum> {} </BmapFileChecksum>\n\n    \
             <!-- The block map which consists of elements which may either be a\n         \
             range of blocks or a single block. The 'chksum' attribute\n         \
             (if present) is the checksum of this blocks range. -->\n    \
             <BlockMap>\n",
            human(self.image_size),
            self.image_size,
            human(mapped.saturating_mul(BLOCK).min(self.image_size)),
            "0".repeat(64),
        );
        for (&(first, last), sum) in self.ranges.iter().zip(&self.sums) {
            if first == last {
                let _ = writeln!(x, "        <Range chksum=\"{sum}\"> {first} </Range>");
            } else {
                let _ = writeln!(
                    x,
                    "        <Range chksum=\"{sum}\"> {first}-{last} </Range>"
                );
            }
        }
        x.push_str("    </BlockMap>\n</bmap>\n");
        let sum = super::hex(&Sha256::digest(x.as_bytes()));
        x.replacen(&"0".repeat(64), &sum, 1)
    }
}

impl Sink for Bmap {
    fn name(&self) -> String {
        "making the block map (bmap)".into()
    }

    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let end = p.offset + p.len;
        while self.at < self.ranges.len() {
            let (rs, re) = self.bytes_of(self.at);
            if rs >= end {
                break;
            }
            let from = rs.max(p.offset);
            let to = re.min(end);
            if from < to {
                match &p.data {
                    Data::Zero => super::for_zeros(to - from, |z| self.hash.update(z)),
                    _ => {
                        let b = p.bytes().unwrap_or_default();
                        self.hash
                            .update(&b[to_usize(from - p.offset)..to_usize(to - p.offset)]);
                    }
                }
            }
            if re > end {
                break;
            }
            let h = std::mem::take(&mut self.hash);
            self.sums.push(super::hex(&h.finalize()));
            self.at += 1;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        debug_assert_eq!(self.sums.len(), self.ranges.len());
        self.xml = Some(self.render());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map of almost 16 EiB: the bmap's ranges and counts come out without overflow.
    #[test]
    fn a_map_at_the_end_of_u64_gives_a_bmap() {
        let len = u64::MAX - 100;
        let mut b = crate::MapBuilder::new("edge", len);
        b.bytes(len - 10, vec![1u8; 10]).unwrap();
        let map = b.finish().unwrap();
        let bmap = Bmap::new(&map);
        assert_eq!(bmap.ranges, vec![((len - 10) / BLOCK, (len - 1) / BLOCK)]);
        assert_eq!(bmap.bytes_of(0), ((len - 10) / BLOCK * BLOCK, len));
        let x = bmap.render();
        assert!(
            x.contains(&format!("<ImageSize> {len} </ImageSize>")),
            "{x}"
        );
    }
}
