//! Reading a block map in bmaptool's format (1.x and 2.0): the image size, the block size and
//! the mapped ranges with their SHA-256, the file's own checksum verified.

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A parsed bmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bmap {
    /// The size of the image it maps, in bytes.
    pub image_size: u64,
    /// Its block size (4096 for imgbuild's and bmaptool's maps).
    pub block_size: u64,
    /// Mapped ranges: byte offset, length (the last one cut at the image size), SHA-256.
    pub ranges: Vec<Range>,
}

/// A mapped range of the image: the bytes a flash writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// Where it starts in the image.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// The SHA-256 its bytes must have (bmap files of format 2+; absent in older ones).
    pub sha256: Option<[u8; 32]>,
}

impl Bmap {
    /// Bytes in mapped ranges.
    pub fn mapped(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }
}

/// The text between `<tag>` and `</tag>`, trimmed.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(d)
}

/// Parses `xml`, the text of the bmap file `name` (for errors).
pub fn parse(name: &str, xml: &str) -> Result<Bmap> {
    let bad = |reason: String| Error::Bmap {
        path: name.to_string(),
        reason,
    };
    let num = |tag: &str| -> Result<u64> {
        element(xml, tag)
            .ok_or_else(|| bad(format!("no <{tag}>")))?
            .parse()
            .map_err(|e| bad(format!("<{tag}>: {e}")))
    };
    let image_size = num("ImageSize")?;
    let block_size = num("BlockSize")?;
    if block_size == 0 || block_size % 512 != 0 {
        return Err(bad(format!(
            "block size {block_size} is not a multiple of 512"
        )));
    }
    let kind = element(xml, "ChecksumType").unwrap_or("sha256");
    if kind != "sha256" {
        return Err(bad(format!(
            "checksum type `{kind}` (only sha256 is read; bmaptool 2.0 writes it)"
        )));
    }
    if let Some(sum) = element(xml, "BmapFileChecksum") {
        let zeroed = xml.replacen(sum, &"0".repeat(sum.len()), 1);
        let own = Sha256::digest(zeroed.as_bytes());
        if hex32(sum) != Some(own.into()) {
            return Err(bad(
                "its own checksum does not match: the file is damaged".into()
            ));
        }
    }
    let map = element(xml, "BlockMap").ok_or_else(|| bad("no <BlockMap>".into()))?;
    let mut ranges: Vec<Range> = Vec::new();
    for part in map.split("<Range").skip(1) {
        let (attrs, rest) = part
            .split_once('>')
            .ok_or_else(|| bad("an unterminated <Range>".into()))?;
        let body = rest
            .split_once("</Range>")
            .ok_or_else(|| bad("a <Range> without </Range>".into()))?
            .0
            .trim();
        let sha256 = match attrs.split_once("chksum=\"") {
            Some((_, v)) => Some(
                v.split('"')
                    .next()
                    .and_then(hex32)
                    .ok_or_else(|| bad(format!("range {body}: a bad chksum")))?,
            ),
            None => None,
        };
        let (first, last) = match body.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (body, body),
        };
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|e| bad(format!("range `{body}`: {e}")))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        // Checked: a block number times the block size past u64 is an error, never a small
        // wrapped offset; the end is clamped to the image.
        let Some((offset, end)) =
            imgbuild_blockio::block_range_bytes(first, last, block_size, image_size)
        else {
            return Err(bad(format!(
                "range `{body}` is empty or past the image's end"
            )));
        };
        if ranges.last().is_some_and(|r| r.offset + r.len > offset) {
            return Err(bad(format!(
                "range `{body}` overlaps or precedes the one before"
            )));
        }
        ranges.push(Range {
            offset,
            len: end - offset,
            sha256,
        });
    }
    Ok(Bmap {
        image_size,
        block_size,
        ranges,
    })
}

#[cfg(test)]
mod edge_tests {
    /// Block numbers whose byte offsets pass u64 are refused, not wrapped (issue 27 item 6).
    #[test]
    fn ranges_past_u64_are_refused_not_wrapped() {
        let head = |size: u64, block: u64| {
            format!(
                "<bmap version=\"2.0\">\n<ImageSize> {size} </ImageSize>\n\
                 <BlockSize> {block} </BlockSize>\n<BlockMap>\n"
            )
        };
        let max = u64::MAX;
        for (size, block, range) in [
            // 2^52 * 4096 = 2^64: wrapped, it was offset 0.
            (max, 4096, format!("{}", 1u64 << 52)),
            (max, 4096, format!("{max}")),
            (max, 4096, format!("0-{max}x")),
            (4096, 4096, format!("{max}-{max}")),
            (max, 1 << 63, "2".to_string()),
        ] {
            let x =
                head(size, block) + &format!("<Range> {range} </Range>\n</BlockMap>\n</bmap>\n");
            let e = super::parse("edge.bmap", &x).unwrap_err();
            let s = e.to_string();
            assert!(s.contains("edge.bmap"), "{range}: {s}");
        }
        // The last block of a disk near 16 EiB: `last + 1` blocks pass u64, clamped.
        let last = max / 4096;
        let x = head(max, 4096) + &format!("<Range> {last} </Range>\n</BlockMap>\n</bmap>\n");
        let b = super::parse("edge.bmap", &x).unwrap();
        assert_eq!(b.ranges[0].offset, last * 4096);
        assert_eq!(b.ranges[0].offset + b.ranges[0].len, max);
    }
}
