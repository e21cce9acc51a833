//! qcow2 (versions 2 and 3): L1 and L2 tables to clusters, compressed clusters inflated;
//! backing files and encryption refused.

use super::{inflate_raw, Container, Ends, NewOut, Out, Reader, Src, Unpacked, SECTOR};
use crate::bytes::{be32, be64, len64};
use crate::error::Result;

pub(super) const READER: Reader = Reader {
    kind: Container::Qcow2,
    name: "qcow2",
    detect: |e: &Ends<'_>| e.head.starts_with(b"QFI\xfb"),
    open: |src, out| read(src, out).map(Unpacked::Out),
};

fn read(src: &Src<'_>, out: NewOut<'_>) -> Result<Out> {
    let h = src.read(0, 104.min(src.len), "qcow2 header")?;
    if h.len() < 72 {
        return Err(src.corrupt("qcow2 header too short"));
    }
    let version = be32(&h, 4);
    if !(2..=3).contains(&version) {
        return Err(src.unsupported(format!("qcow2 version {version}")));
    }
    if be64(&h, 8) != 0 {
        return Err(src.unsupported("a qcow2 image with a backing file (an overlay)"));
    }
    let bits = be32(&h, 20);
    if !(9..=21).contains(&bits) {
        return Err(src.corrupt(format!("qcow2 cluster bits {bits}")));
    }
    if be32(&h, 32) != 0 {
        return Err(src.unsupported("an encrypted qcow2 image"));
    }
    if version == 3 && h.len() >= 80 {
        let incompatible = be64(&h, 72);
        if incompatible & 2 != 0 {
            return Err(src.corrupt("qcow2 image marked corrupt"));
        }
        if incompatible & !1 != 0 {
            return Err(src.unsupported(format!("qcow2 incompatible features {incompatible:#x}")));
        }
    }
    let size = be64(&h, 24);
    let cluster = 1u64 << bits;
    let per_l2 = cluster / 8;
    let (l1_size, l1_off) = (u64::from(be32(&h, 36)), be64(&h, 40));
    if l1_size.saturating_mul(per_l2).saturating_mul(cluster) < size {
        return Err(src.corrupt("qcow2 L1 table too small for the disk size"));
    }
    let out = out(size)?;
    let l1 = src.read(l1_off, l1_size * 8, "qcow2 L1 table")?;
    const OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
    for (i, e) in l1.chunks(8).enumerate() {
        let l2_off = be64(e, 0) & OFFSET;
        // Past the disk (or past u64): no guest cluster of this entry or a later one.
        let Some(first) = len64(i).checked_mul(per_l2 * cluster) else {
            break;
        };
        if l2_off == 0 || first >= size {
            continue;
        }
        let l2 = src.read(l2_off, cluster, "qcow2 L2 table")?;
        for (j, e) in l2.chunks(8).enumerate() {
            let guest = first.saturating_add(len64(j) * cluster);
            if guest >= size {
                break;
            }
            let e = be64(e, 0);
            if e & (1 << 62) != 0 {
                // Compressed (qemu-img convert -c): raw deflate at a byte offset, in a run of
                // 512-byte sectors counted from that offset's sector.
                let x = 62 - (bits - 8);
                let off = e & ((1u64 << x) - 1);
                let sectors = ((e >> x) & ((1u64 << (bits - 8)) - 1)) + 1;
                let stored = (sectors * SECTOR)
                    .saturating_sub(off % SECTOR)
                    .min(src.len.saturating_sub(off));
                let data = src.read(off, stored, "qcow2 compressed cluster")?;
                let len = cluster.min(size - guest);
                let plain = inflate_raw(&data, len).map_err(|e| {
                    src.corrupt(format!(
                        "qcow2 compressed cluster at {guest}: {}",
                        crate::error::chain(&e)
                    ))
                })?;
                out.write(guest, &plain)?;
                continue;
            }
            let off = e & OFFSET;
            if e & 1 != 0 || off == 0 {
                continue;
            }
            let len = cluster.min(size - guest);
            out.write(guest, &src.read(off, len, "qcow2 cluster")?)?;
        }
    }
    Ok(out)
}
