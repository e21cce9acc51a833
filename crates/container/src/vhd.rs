//! VHD (Microsoft's "Virtual Hard Disk Image Format Specification", version 1.0).
//!
//! [`Vhd`] writes a dynamic VHD: a copy of the footer, the dynamic disk header, the block
//! allocation table (BAT), then 2 MiB blocks (a 512-byte sector bitmap, every sector marked
//! present, then the block's data) for the blocks of the disk holding data, in disk order, and
//! the footer. Blocks not stored read as zeros. Since the allocation comes from the map, the
//! BAT is written before the blocks, and the file front to back.
//!
//! A fixed VHD, Azure's format, is the raw disk followed by [`fixed_footer`]. Azure takes
//! only a virtual size that is a whole number of MiB; the disk's GPT backup header is then at
//! the last LBA of the virtual disk, as it must be.
//!
//! The footer's creator application is `win ` (Hyper-V): it tells readers, QEMU among them,
//! to take the size from the "current size" field rather than from the CHS geometry, which
//! cannot express most sizes. Creator version and host OS are fixed values, so the bytes do
//! not depend on imgbuild's version; the timestamp is `SOURCE_DATE_EPOCH`.

use std::io::Write;

use imgbuild_diskmap::{Map, Piece, Sink};

use crate::blocks::{Allocation, BlockStream};
use crate::{put, to_usize, DiskLimits, Out, Params, Result};

const SECTOR: u64 = 512;
/// Size of the footer a VHD ends with (a fixed VHD is the raw disk plus this).
pub const FOOTER: usize = 512;
/// The largest disk a VHD describes: 2040 GiB (the BAT holds 32-bit sector offsets, the
/// geometry at most 65535*16*255 sectors).
const MAX_DISK: u64 = 2040 << 30;
const DYN_HEADER: usize = 1024;
/// Dynamic VHD block size (the default, and what Hyper-V writes).
pub const BLOCK: u64 = 2 << 20;
/// Sector bitmap of a block: one bit per sector, padded to a sector.
const BITMAP: usize = to_usize((BLOCK / SECTOR / 8).div_ceil(SECTOR) * SECTOR);
/// Seconds from 1970-01-01 to 2000-01-01, VHD's epoch.
const VHD_EPOCH: i64 = 946_684_800;
/// Disk types.
const FIXED: u32 = 2;
const DYNAMIC: u32 = 3;

/// CHS geometry for `size` bytes, as the specification's appendix computes it.
pub fn geometry(size: u64) -> (u16, u8, u8) {
    let total = (size / SECTOR).min(65535 * 16 * 255);
    let (spt, heads, cth) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut spt = 17;
        let mut cth = total / spt;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
        (spt, heads, cth)
    };
    // Bounded above by the clamp: heads <= 16, spt <= 255, cylinders <= 65535.
    (
        u16::try_from(cth / heads).unwrap_or(u16::MAX),
        u8::try_from(heads).unwrap_or(16),
        u8::try_from(spt).unwrap_or(255),
    )
}

/// The one's complement of the byte sum, VHD's checksum.
fn checksum(b: &[u8]) -> u32 {
    !b.iter().fold(0u32, |a, &x| a.wrapping_add(u32::from(x)))
}

fn check(params: &Params) -> Result<()> {
    DiskLimits {
        format: "vhd",
        sector: SECTOR,
        max: MAX_DISK,
        hint: " (use vhdx)",
    }
    .check(params.disk_size)
}

fn footer(params: &Params, kind: u32) -> [u8; FOOTER] {
    let mut f = [0u8; FOOTER];
    put(&mut f, 0, b"conectix");
    put(&mut f, 8, &2u32.to_be_bytes()); // features: reserved bit, always set
    put(&mut f, 12, &0x0001_0000u32.to_be_bytes());
    let data_offset = if kind == FIXED {
        u64::MAX
    } else {
        FOOTER as u64
    };
    put(&mut f, 16, &data_offset.to_be_bytes());
    let stamp = u32::try_from((params.time - VHD_EPOCH).max(0)).unwrap_or(u32::MAX);
    put(&mut f, 24, &stamp.to_be_bytes());
    put(&mut f, 28, b"win ");
    put(&mut f, 32, &0x000a_0000u32.to_be_bytes());
    put(&mut f, 36, b"Wi2k");
    put(&mut f, 40, &params.disk_size.to_be_bytes());
    put(&mut f, 48, &params.disk_size.to_be_bytes());
    let (c, h, s) = geometry(params.disk_size);
    put(&mut f, 56, &c.to_be_bytes());
    put(&mut f, 58, &[h, s]);
    put(&mut f, 60, &kind.to_be_bytes());
    put(&mut f, 68, &params.id);
    let sum = checksum(&f);
    put(&mut f, 64, &sum.to_be_bytes());
    f
}

/// The footer that follows the raw disk in a fixed VHD.
pub fn fixed_footer(params: &Params) -> Result<[u8; FOOTER]> {
    check(params)?;
    Ok(footer(params, FIXED))
}

/// A dynamic VHD of the map's disk, written front to back into `W`.
pub struct Vhd<W: Write> {
    out: Out<W>,
    stream: BlockStream,
    footer: Box<[u8; FOOTER]>,
}

impl<W: Write + Send> Vhd<W> {
    /// Writes the footer copy, the dynamic header and the BAT into `w` at once; the blocks
    /// follow as the disk streams in.
    pub fn new(map: &Map, params: &Params, w: W) -> Result<Self> {
        check(params)?;
        let alloc = Allocation::of(map, BLOCK);
        let entries = params.disk_size.div_ceil(BLOCK);
        let bat_len = (entries * 4).div_ceil(SECTOR) * SECTOR;
        let first = FOOTER as u64 + DYN_HEADER as u64 + bat_len;
        let mut bat = vec![0xFFu8; to_usize(bat_len)];
        for (n, b) in alloc.blocks().enumerate() {
            let at = (first + n as u64 * (BITMAP as u64 + BLOCK)) / SECTOR;
            // check() bounds the disk, hence `at`, below 2^32 sectors.
            let at = u32::try_from(at).unwrap_or(u32::MAX);
            put(&mut bat, to_usize(b * 4), &at.to_be_bytes());
        }

        let mut d = [0u8; DYN_HEADER];
        put(&mut d, 0, b"cxsparse");
        put(&mut d, 8, &u64::MAX.to_be_bytes());
        put(
            &mut d,
            16,
            &(FOOTER as u64 + DYN_HEADER as u64).to_be_bytes(),
        );
        put(&mut d, 24, &0x0001_0000u32.to_be_bytes());
        let e = u32::try_from(entries).unwrap_or(u32::MAX);
        put(&mut d, 28, &e.to_be_bytes());
        put(
            &mut d,
            32,
            &u32::try_from(BLOCK).expect("2 MiB").to_be_bytes(),
        );
        let sum = checksum(&d);
        put(&mut d, 36, &sum.to_be_bytes());

        let footer = footer(params, DYNAMIC);
        let mut out = Out::new(w, "vhd");
        out.put(&footer)?;
        out.put(&d)?;
        out.put(&bat)?;
        Ok(Vhd {
            out,
            stream: BlockStream::new(alloc, params.disk_size),
            footer: Box::new(footer),
        })
    }

    /// The writer, once the stream has finished the sink.
    pub fn into_inner(self) -> W {
        self.out.w
    }
}

/// A stored block: its sector bitmap (every sector present), then its data.
fn block<W: Write>(out: &mut Out<W>, bytes: &[u8]) -> Result<()> {
    static BITMAP_ALL: [u8; BITMAP] = [0xFF; BITMAP];
    out.put(&BITMAP_ALL)?;
    out.put(bytes)
}

impl<W: Write + Send> Sink for Vhd<W> {
    fn name(&self) -> String {
        "writing the VHD image".into()
    }

    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let out = &mut self.out;
        Ok(self.stream.feed(p, |_, bytes| block(out, bytes))?)
    }

    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let out = &mut self.out;
        self.stream.finish(|_, bytes| block(out, bytes))?;
        out.put(&self.footer[..])?;
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_as_the_specification_computes_it() {
        // 262144 sectors: 17 sectors per track gives 15420 cylinder-heads, 16 heads.
        assert_eq!(geometry(128 << 20), (963, 16, 17));
        // 8 GiB: past 31*16*1024 sectors, so 63 sectors per track.
        assert_eq!(geometry(8 << 30), (16644, 16, 63));
        // Beyond 65535*16*63 sectors: 255 sectors per track.
        assert_eq!(geometry(127 << 30), (65278, 16, 255));
        // The maximum.
        assert_eq!(geometry(4 << 40), (65535, 16, 255));
    }

    #[test]
    fn checksum_is_the_complement_of_the_byte_sum() {
        let p = Params {
            disk_size: 1 << 20,
            id: [7; 16],
            time: 946_684_800 + 5,
        };
        let f = fixed_footer(&p).unwrap();
        let mut g = f;
        g[64..68].fill(0);
        assert_eq!(
            u32::from_be_bytes(f[64..68].try_into().unwrap()),
            checksum(&g)
        );
        assert_eq!(u32::from_be_bytes(f[24..28].try_into().unwrap()), 5);
        assert_eq!(&f[28..32], b"win ");
        assert!(fixed_footer(&Params {
            disk_size: 1000,
            ..p
        })
        .is_err());
    }
}
