//! Proxmox VMA (pve-qemu's `vma_spec.txt`): a header (MD5-checked) naming the configuration
//! blobs and the devices, then extents of up to 59 clusters of 64 KiB, each a 512-byte header
//! (MD5-checked, the archive's uuid) listing its clusters with masks of their non-zero 4 KiB
//! blocks, then those blocks. The disk read back is the largest device (a VM's second device
//! is usually its small `efidisk0`); `vmstate` (a saved RAM image) is not a disk.

use md5::{Digest, Md5};

use super::{Container, Ends, NewOut, Out, Reader, Src, Unpacked};
use crate::bytes::{be32, be64, le16, len64, to_usize};
use crate::error::Result;

pub(super) const READER: Reader = Reader {
    kind: Container::Vma,
    name: "Proxmox VMA",
    detect: |e: &Ends<'_>| e.head.starts_with(b"VMA\0") && be32(e.head, 4) == 1,
    open: |src, out| read(src, out).map(Unpacked::Out),
};

const FIXED: u64 = 12288;
/// The header Proxmox's writer makes is at most 512 KiB.
const MAX_HEADER: u64 = 1 << 20;
const EXTENT_HEADER: u64 = 512;
const BLOCK: u64 = 4096;
const CLUSTER: u64 = 16 * BLOCK;
const DEV_INFO: usize = 4096;

/// Whether the MD5 of `b`, its field at `at` taken as zeros, is that field.
fn md5_ok(b: &[u8], at: usize) -> bool {
    let mut h = Md5::new();
    h.update(&b[..at]);
    h.update([0u8; 16]);
    h.update(&b[at + 16..]);
    h.finalize()[..] == b[at..at + 16]
}

/// The device read back: its id and size.
struct Device {
    id: u8,
    size: u64,
}

fn read(src: &Src<'_>, out: NewOut<'_>) -> Result<Out> {
    let fixed = src.read(0, FIXED, "VMA header")?;
    let size = u64::from(be32(&fixed, 56));
    if !(FIXED..=MAX_HEADER).contains(&size) {
        return Err(src.corrupt(format!("VMA header size {size}")));
    }
    let head = src.read(0, size, "VMA header")?;
    if !md5_ok(&head, 32) {
        return Err(src.corrupt("VMA header checksum mismatch"));
    }
    let uuid = &head[8..24];
    let (devices, disk) = devices(src, &head)?;
    let out = out(disk.size)?;
    let mut pos = size;
    while pos < src.len {
        pos = extent(src, &out, pos, uuid, &devices, &disk)?;
    }
    Ok(out)
}

/// The registered device ids (a bitmap) and the largest device that is not `vmstate`.
fn devices(src: &Src<'_>, head: &[u8]) -> Result<([bool; 256], Device)> {
    let blob_at = to_usize(u64::from(be32(head, 48)));
    let blob_len = to_usize(u64::from(be32(head, 52)));
    let blobs = blob_at
        .checked_add(blob_len)
        .and_then(|end| head.get(blob_at..end))
        .ok_or_else(|| src.corrupt("VMA blob buffer outside the header"))?;
    let name = |off: u32| -> Option<&[u8]> {
        let off = to_usize(u64::from(off));
        let n = usize::from(le16(blobs, off));
        let b = blobs.get(off.checked_add(2)?..off.checked_add(2 + n)?)?;
        b.strip_suffix(b"\0")
    };
    let mut ids = [false; 256];
    let mut disk: Option<Device> = None;
    for id in 1..=255u8 {
        let e = DEV_INFO + 32 * usize::from(id);
        let (ptr, size) = (be32(head, e), be64(head, e + 8));
        if ptr == 0 && size == 0 {
            continue;
        }
        let n = name(ptr).ok_or_else(|| src.corrupt(format!("VMA device {id}: bad name")))?;
        ids[usize::from(id)] = true;
        if n != b"vmstate" && disk.as_ref().is_none_or(|d| size > d.size) {
            disk = Some(Device { id, size });
        }
    }
    let disk = disk.ok_or_else(|| src.corrupt("a VMA archive without a disk"))?;
    Ok((ids, disk))
}

/// Reads the extent at `pos` into `out`; returns where the next one starts.
fn extent(
    src: &Src<'_>,
    out: &Out,
    pos: u64,
    uuid: &[u8],
    ids: &[bool; 256],
    disk: &Device,
) -> Result<u64> {
    let h = src.read(pos, EXTENT_HEADER, "VMA extent header")?;
    if &h[..4] != b"VMAE" {
        return Err(src.corrupt(format!("no VMA extent at {pos}")));
    }
    if &h[8..24] != uuid {
        return Err(src.corrupt(format!("VMA extent at {pos}: another archive's uuid")));
    }
    if !md5_ok(&h, 24) {
        return Err(src.corrupt(format!("VMA extent at {pos}: checksum mismatch")));
    }
    let infos: Vec<u64> = (0..59).map(|i| be64(&h, 40 + 8 * i)).collect();
    let blocks: u64 = infos
        .iter()
        .map(|i| u64::from((i >> 48).count_ones()))
        .sum();
    if blocks != u64::from(u16::from_be_bytes([h[6], h[7]])) {
        return Err(src.corrupt(format!("VMA extent at {pos}: block count mismatch")));
    }
    let data = src.read(pos + EXTENT_HEADER, blocks * BLOCK, "VMA extent data")?;
    let mut at = 0usize;
    for info in infos.into_iter().filter(|&i| i != 0) {
        let id = info.to_be_bytes()[3];
        let mask = info >> 48;
        let cluster = info & 0xffff_ffff;
        if !ids[usize::from(id)] {
            return Err(src.corrupt(format!("VMA extent at {pos}: unknown device {id}")));
        }
        for b in 0..16 {
            if mask & (1 << b) == 0 {
                continue;
            }
            let block = &data[at..at + to_usize(BLOCK)];
            at += to_usize(BLOCK);
            if id != disk.id {
                continue;
            }
            let guest = cluster * CLUSTER + b * BLOCK;
            if guest >= disk.size {
                return Err(src.corrupt(format!("VMA block past the disk's end at {guest}")));
            }
            let n = to_usize(BLOCK.min(disk.size - guest));
            out.write(guest, &block[..n])?;
        }
    }
    Ok(pos + EXTENT_HEADER + len64(at))
}
