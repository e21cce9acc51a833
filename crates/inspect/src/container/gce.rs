//! GCE: `disk.raw` in a gzipped tar, a GNU sparse member (old-GNU sparse map, extension
//! headers) or a regular one; other members skipped.

use std::io::{self, Read};

use super::{tar, Container, Ends, NewOut, Out, Reader, Src, Unpacked};
use crate::bytes::{len64, to_usize};
use crate::error::{Error, Result};

pub(super) const READER: Reader = Reader {
    kind: Container::GceTar,
    name: "GCE tar.gz",
    detect: |e: &Ends<'_>| e.head.starts_with(&[0x1f, 0x8b]),
    open: |src, out| read(src, out).map(Unpacked::Out),
};

/// A reader that counts what it gave, bounded to `left` bytes.
fn read_exact(r: &mut impl Read, buf: &mut [u8], src: &Src<'_>) -> Result<()> {
    r.read_exact(buf).map_err(|source| Error::Decompress {
        at: src.at.clone(),
        source,
    })
}

/// The GCE image: `disk.raw` in a gzipped tar (GNU sparse or regular member).
fn read(src: &Src<'_>, out: NewOut<'_>) -> Result<Out> {
    let mut r = flate2::read::MultiGzDecoder::new(io::BufReader::new(src.file));
    let mut h = [0u8; 512];
    loop {
        read_exact(&mut r, &mut h, src)?;
        if h.iter().all(|&b| b == 0) {
            return Err(src.unsupported("a tar.gz without disk.raw"));
        }
        let size = tar::number(&h[124..136]).ok_or_else(|| src.corrupt("tar member size"))?;
        let name_len = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let is_disk = &h[..name_len] == b"disk.raw";
        match h[156] {
            b'S' if is_disk => return sparse(&mut r, &h, size, src, out),
            0 | b'0' if is_disk => {
                let out = out(size)?;
                copy_regions(&mut r, &[(0, size)], &out, src)?;
                return Ok(out);
            }
            _ => {
                // Another member: skip it.
                let skip = size.next_multiple_of(512);
                io::copy(&mut (&mut r).take(skip), &mut io::sink()).map_err(|source| {
                    Error::Decompress {
                        at: src.at.clone(),
                        source,
                    }
                })?;
            }
        }
    }
}

/// An old-GNU sparse member: the map in the header (and extension headers), then the data
/// of each region, in order.
fn sparse(
    r: &mut impl Read,
    h: &[u8; 512],
    stored: u64,
    src: &Src<'_>,
    out: NewOut<'_>,
) -> Result<Out> {
    let num = |f: &[u8]| tar::number(f).ok_or_else(|| src.corrupt("tar sparse map number"));
    let mut regions = Vec::new();
    let add = |regions: &mut Vec<(u64, u64)>, block: &[u8], count: usize| -> Result<()> {
        for i in 0..count {
            let e = &block[i * 24..i * 24 + 24];
            let (off, len) = (num(&e[..12])?, num(&e[12..])?);
            if len > 0 || off > 0 {
                regions.push((off, len));
            }
        }
        Ok(())
    };
    add(&mut regions, &h[386..482], 4)?;
    let size = num(&h[483..495])?;
    let mut extended = h[482] != 0;
    let mut ext = [0u8; 512];
    while extended {
        read_exact(r, &mut ext, src)?;
        add(&mut regions, &ext[..504], 21)?;
        extended = ext[504] != 0;
        if regions.len() > 1 << 24 {
            return Err(src.corrupt("tar sparse map too long"));
        }
    }
    let total: u64 = regions.iter().map(|r| r.1).sum();
    if total != stored {
        return Err(src.corrupt(format!(
            "tar sparse map holds {total} bytes, the member {stored}"
        )));
    }
    let out = out(size)?;
    copy_regions(r, &regions, &out, src)?;
    Ok(out)
}

fn copy_regions(r: &mut impl Read, regions: &[(u64, u64)], out: &Out, src: &Src<'_>) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    for &(mut off, len) in regions {
        let mut left = len;
        while left > 0 {
            let n = to_usize(left).min(buf.len());
            read_exact(r, &mut buf[..n], src)?;
            out.write(off, &buf[..n])?;
            off += len64(n);
            left -= len64(n);
        }
    }
    Ok(())
}
