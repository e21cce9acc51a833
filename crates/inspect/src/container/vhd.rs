//! VHD: fixed (the disk, then a 512-byte footer: read in place) and dynamic (a block
//! allocation table; each block a sector bitmap, then its data); differencing disks refused.

use super::{Container, Ends, NewOut, Out, Reader, Src, Unpacked, SECTOR};
use crate::bytes::{be32, be64, len64};
use crate::error::Result;

/// The disk type a VHD footer (`conectix` cookie) declares: 2 fixed, 3 dynamic.
fn footer_type(b: &[u8]) -> Option<u32> {
    (b.len() >= 64 && b.starts_with(b"conectix")).then(|| be32(b, 60))
}

pub(super) const DYNAMIC: Reader = Reader {
    kind: Container::Vhd,
    name: "VHD (dynamic)",
    detect: |e: &Ends<'_>| {
        footer_type(e.head) == Some(3) || e.tail.and_then(footer_type) == Some(3)
    },
    open: |src, out| dynamic(src, out).map(Unpacked::Out),
};

pub(super) const FIXED: Reader = Reader {
    kind: Container::VhdFixed,
    name: "VHD (fixed)",
    detect: |e: &Ends<'_>| e.tail.and_then(footer_type) == Some(2),
    open: |src, _| fixed_size(src).map(|size| Unpacked::InPlace { size }),
};

fn fixed_size(src: &Src<'_>) -> Result<u64> {
    let f = src.read(src.len - 512, 512, "VHD footer")?;
    let size = be64(&f, 48);
    if size > src.len - 512 {
        return Err(src.corrupt(format!(
            "fixed VHD of {size} bytes in a file of {} bytes",
            src.len
        )));
    }
    Ok(size)
}

fn dynamic(src: &Src<'_>, out: NewOut<'_>) -> Result<Out> {
    let f = src.read(0, 512, "VHD footer copy")?;
    let f = if &f[..8] == b"conectix" {
        f
    } else {
        src.read(src.len - 512, 512, "VHD footer")?
    };
    match be32(&f, 60) {
        3 => {}
        4 => return Err(src.unsupported("a differencing VHD (it needs its parent)")),
        t => return Err(src.unsupported(format!("VHD disk type {t}"))),
    }
    let size = be64(&f, 48);
    let d = src.read(be64(&f, 16), 1024, "VHD dynamic header")?;
    if &d[..8] != b"cxsparse" {
        return Err(src.corrupt("VHD dynamic header without its cookie"));
    }
    let (table, entries, block) = (
        be64(&d, 16),
        u64::from(be32(&d, 28)),
        u64::from(be32(&d, 32)),
    );
    if !block.is_power_of_two() || !(SECTOR..=(256 << 20)).contains(&block) {
        return Err(src.corrupt(format!("VHD block size {block}")));
    }
    if entries.saturating_mul(block) < size {
        return Err(src.corrupt("VHD block table too small for the disk size"));
    }
    let bitmap = (block / SECTOR).div_ceil(8).next_multiple_of(SECTOR);
    let out = out(size)?;
    let bat = src.read(table, entries * 4, "VHD block table")?;
    for (i, e) in bat.chunks(4).enumerate() {
        let sector = be32(e, 0);
        let guest = len64(i) * block;
        if sector == u32::MAX || guest >= size {
            continue;
        }
        let data = u64::from(sector) * SECTOR + bitmap;
        let len = block.min(size - guest);
        out.write(guest, &src.read(data, len, "VHD block")?)?;
    }
    Ok(out)
}
