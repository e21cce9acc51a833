//! VMDK sparse extents: stream-optimized (grain markers, deflated grains, up to the
//! end-of-stream marker) and monolithic sparse (grain directory, grain tables, grains).

use super::{inflate, Container, Ends, NewOut, Out, Reader, Src, Unpacked, SECTOR};
use crate::bytes::{le32, le64, len64};
use crate::error::Result;

pub(super) const READER: Reader = Reader {
    kind: Container::Vmdk,
    name: "VMDK",
    detect: |e: &Ends<'_>| e.head.starts_with(b"KDMV"),
    open: |src, out| extent(src, 0, src.len, out).map(Unpacked::Out),
};

/// A VMDK sparse extent at `base` (`len` bytes) of the file.
pub(super) fn extent(src: &Src<'_>, base: u64, len: u64, out: NewOut<'_>) -> Result<Out> {
    let h = src.read(base, 512, "VMDK header")?;
    if &h[..4] != b"KDMV" {
        return Err(src.corrupt("VMDK sparse extent magic"));
    }
    let flags = le32(&h, 8);
    let capacity = le64(&h, 12);
    let grain = le64(&h, 20);
    if !grain.is_power_of_two() || !(8..=2048).contains(&grain) {
        return Err(src.corrupt(format!("VMDK grain of {grain} sectors")));
    }
    let size = capacity
        .checked_mul(SECTOR)
        .ok_or_else(|| src.corrupt("VMDK capacity"))?;
    let grain_bytes = grain * SECTOR;
    let compressed = flags & (1 << 16) != 0;
    let out = out(size)?;
    let end = base + len;
    // The byte offset of a sector the image names, refused past u64.
    let sector_at = |sector: u64| {
        sector
            .checked_mul(SECTOR)
            .and_then(|o| base.checked_add(o))
            .ok_or_else(|| src.corrupt(format!("VMDK sector {sector}")))
    };
    if compressed && flags & (1 << 17) != 0 {
        // Stream-optimized: grain markers in order, up to the end-of-stream marker.
        let mut pos = sector_at(le64(&h, 64))?;
        while pos.checked_add(16).is_some_and(|e| e <= end) {
            let m = src.read(pos, 16, "VMDK marker")?;
            let (val, size_field) = (le64(&m, 0), u64::from(le32(&m, 8)));
            if size_field == 0 {
                match le32(&m, 12) {
                    0 => return Ok(out),
                    1..=3 => pos = pos.saturating_add(SECTOR + val.saturating_mul(SECTOR)),
                    t => return Err(src.corrupt(format!("VMDK marker type {t}"))),
                }
                continue;
            }
            let data = src.read(pos + 12, size_field, "VMDK grain")?;
            let grain_data = inflate(&data, grain_bytes).map_err(|e| {
                src.corrupt(format!(
                    "VMDK grain at sector {val}: {}",
                    crate::error::chain(&e)
                ))
            })?;
            let guest = val
                .checked_mul(SECTOR)
                .ok_or_else(|| src.corrupt("VMDK grain LBA"))?;
            let keep = grain_data
                .len()
                .min(usize::try_from(size.saturating_sub(guest)).unwrap_or(usize::MAX));
            out.write(guest, &grain_data[..keep])?;
            pos = (pos + 12 + size_field).next_multiple_of(SECTOR);
        }
        return Err(src.corrupt("VMDK stream without its end-of-stream marker"));
    }
    if compressed {
        return Err(src.unsupported("compressed VMDK without markers"));
    }
    // Monolithic sparse: grain directory -> grain tables -> grains.
    let per_gt = u64::from(le32(&h, 44));
    if per_gt == 0 || per_gt > 1 << 16 {
        return Err(src.corrupt(format!("VMDK {per_gt} entries per grain table")));
    }
    let gd_sector = le64(&h, 56);
    let tables = capacity.div_ceil(grain * per_gt);
    let gd = src.read(sector_at(gd_sector)?, tables * 4, "VMDK grain directory")?;
    for (t, e) in gd.chunks(4).enumerate() {
        let gt_sector = u64::from(le32(e, 0));
        if gt_sector == 0 {
            continue;
        }
        let gt = src.read(sector_at(gt_sector)?, per_gt * 4, "VMDK grain table")?;
        for (g, e) in gt.chunks(4).enumerate() {
            let sector = u64::from(le32(e, 0));
            let guest = (len64(t) * per_gt + len64(g)) * grain_bytes;
            if sector <= 1 || guest >= size {
                continue;
            }
            let n = grain_bytes.min(size - guest);
            out.write(guest, &src.read(sector_at(sector)?, n, "VMDK grain")?)?;
        }
    }
    Ok(out)
}
