//! Google Compute Engine's image format: a file named `disk.raw` alone in a tar archive in
//! the old GNU format, holes stored as a sparse map (`tar --format=oldgnu -S`), the archive
//! gzip-compressed (by the caller, through any writer).
//!
//! The tar is written front to back: the member's header carries the sparse map, which comes
//! from the map's allocation at 4 KiB granularity, then the data regions' bytes in disk
//! order, then the end-of-archive blocks, padded to GNU tar's 10 KiB record. Owner and group
//! are 0 without names, the mode 0644 and the time `SOURCE_DATE_EPOCH`. Numbers that do not
//! fit their octal field (a disk of 8 GiB or more) are written in GNU's base-256 form.

use std::io::Write;

use imgbuild_diskmap::{Map, Piece, Sink};
use imgbuild_tar::header::{number, set_checksum, BLOCK};

use crate::blocks::{Allocation, BlockStream};
use crate::{put, Out, Params, Result};

/// Granularity of the sparse map.
const GRAIN: u64 = 4096;
/// GNU tar's default record: 20 blocks.
const RECORD: u64 = 20 * BLOCK as u64;
/// Sparse entries in the main header and in each extension header.
const IN_HEADER: usize = 4;
const IN_EXTENSION: usize = 21;
const NAME: &str = "disk.raw";

/// Data regions `(offset, length)` of the disk, from the allocation.
fn regions(map: &Map, disk_size: u64) -> (Allocation, Vec<(u64, u64)>) {
    let alloc = Allocation::of(map, GRAIN);
    let mut r: Vec<(u64, u64)> = alloc
        .ranges
        .iter()
        .map(|&(a, b)| {
            let start = a * GRAIN;
            (start, ((b + 1) * GRAIN).min(disk_size) - start)
        })
        .collect();
    // A disk ending in a hole: a last empty region at its end, as GNU tar writes it, so the
    // extracted file has its full length even to readers that ignore the real size.
    if r.last().is_none_or(|&(o, l)| o + l < disk_size) {
        r.push((disk_size, 0));
    }
    (alloc, r)
}

fn header(params: &Params, regions: &[(u64, u64)]) -> Vec<u8> {
    let stored: u64 = regions.iter().map(|r| r.1).sum();
    let mut h = [0u8; BLOCK];
    put(&mut h, 0, NAME.as_bytes());
    number(&mut h[100..108], 0o644);
    number(&mut h[108..116], 0);
    number(&mut h[116..124], 0);
    number(&mut h[124..136], stored);
    number(&mut h[136..148], u64::try_from(params.time).unwrap_or(0));
    h[156] = b'S';
    put(&mut h, 257, b"ustar  \0");
    let (first, rest) = regions.split_at(regions.len().min(IN_HEADER));
    for (i, &(o, l)) in first.iter().enumerate() {
        let at = 386 + i * 24;
        number(&mut h[at..at + 12], o);
        number(&mut h[at + 12..at + 24], l);
    }
    h[482] = u8::from(!rest.is_empty());
    number(&mut h[483..495], params.disk_size);
    set_checksum(&mut h);
    let mut h = h.to_vec();
    for (k, chunk) in rest.chunks(IN_EXTENSION).enumerate() {
        let mut x = [0u8; BLOCK];
        for (i, &(o, l)) in chunk.iter().enumerate() {
            let at = i * 24;
            number(&mut x[at..at + 12], o);
            number(&mut x[at + 12..at + 24], l);
        }
        x[504] = u8::from((k + 1) * IN_EXTENSION < rest.len());
        h.extend_from_slice(&x);
    }
    h
}

/// `disk.raw` in a GNU sparse tar, written front to back into `W`.
pub struct GceTar<W: Write> {
    out: Out<W>,
    stream: BlockStream,
    disk_size: u64,
}

impl<W: Write + Send> GceTar<W> {
    /// Writes the member's headers (with the sparse map) into `w` at once; the data regions
    /// follow as the disk streams in.
    pub fn new(map: &Map, params: &Params, w: W) -> Result<Self> {
        let (alloc, regions) = regions(map, params.disk_size);
        let mut out = Out::new(w, "tar");
        out.put(&header(params, &regions))?;
        Ok(GceTar {
            out,
            stream: BlockStream::new(alloc, params.disk_size),
            disk_size: params.disk_size,
        })
    }

    /// The writer, once the stream has finished the sink.
    pub fn into_inner(self) -> W {
        self.out.w
    }
}

/// A stored grain, cut at the end of the disk.
fn grain<W: Write>(out: &mut Out<W>, disk_size: u64, index: u64, bytes: &[u8]) -> Result<()> {
    let left = disk_size - index * GRAIN;
    let n = usize::try_from(left).map_or(bytes.len(), |l| l.min(bytes.len()));
    out.put(&bytes[..n])
}

impl<W: Write + Send> Sink for GceTar<W> {
    fn name(&self) -> String {
        "writing the GCE tar".into()
    }

    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (out, size) = (&mut self.out, self.disk_size);
        Ok(self.stream.feed(p, |i, b| grain(out, size, i, b))?)
    }

    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (out, size) = (&mut self.out, self.disk_size);
        self.stream.finish(|i, b| grain(out, size, i, b))?;
        let pad = out.pos.next_multiple_of(BLOCK as u64) - out.pos;
        out.zeros(pad)?;
        out.zeros(2 * BLOCK as u64)?;
        let pad = out.pos.next_multiple_of(RECORD) - out.pos;
        out.zeros(pad)?;
        out.flush()?;
        Ok(())
    }
}
