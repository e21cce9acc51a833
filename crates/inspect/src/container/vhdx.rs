//! VHDX (dynamic): the current header, the region table (BAT and metadata regions), the
//! metadata items (block size, disk size, logical sector size), then the BAT's fully present
//! blocks; differencing disks and logs to replay refused.

use uuid::{uuid, Uuid};

use super::{Container, Ends, NewOut, Out, Reader, Src, Unpacked};
use crate::bytes::{le16, le32, le64, to_usize};
use crate::error::Result;

pub(super) const READER: Reader = Reader {
    kind: Container::Vhdx,
    name: "VHDX",
    detect: |e: &Ends<'_>| e.head.starts_with(b"vhdxfile"),
    open: |src, out| read(src, out).map(Unpacked::Out),
};

/// Region: the block allocation table.
const BAT: Uuid = uuid!("2DC27766-F623-4200-9D64-115E9BFD4A08");
/// Region: the metadata.
const METADATA: Uuid = uuid!("8B7CA206-4790-4B9A-B8FE-575F050F886E");
/// Metadata item: block size and flags.
const FILE_PARAMETERS: Uuid = uuid!("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
/// Metadata item: the disk's size.
const VIRTUAL_DISK_SIZE: Uuid = uuid!("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
/// Metadata item: the logical sector size.
const LOGICAL_SECTOR_SIZE: Uuid = uuid!("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");

fn read(src: &Src<'_>, out: NewOut<'_>) -> Result<Out> {
    const KIB64: u64 = 64 << 10;
    let crc_ok = |b: &[u8]| {
        let mut c = b.to_vec();
        c[4..8].fill(0);
        crc32c::crc32c(&c) == le32(b, 4)
    };
    // The current header: the valid one with the higher sequence number.
    let mut header: Option<Vec<u8>> = None;
    for off in [KIB64, 2 * KIB64] {
        let h = src.read(off, 4096, "VHDX header")?;
        if &h[..4] == b"head"
            && crc_ok(&h)
            && header.as_ref().is_none_or(|c| le64(&h, 8) > le64(c, 8))
        {
            header = Some(h);
        }
    }
    let header = header.ok_or_else(|| src.corrupt("no valid VHDX header"))?;
    if header[48..64].iter().any(|&b| b != 0) {
        return Err(src.unsupported(
            "a VHDX with a log to replay (open it once with Hyper-V or qemu-img check -r all)",
        ));
    }
    let regions = src.read(3 * KIB64, KIB64, "VHDX region table")?;
    if &regions[..4] != b"regi" || !crc_ok(&regions) {
        return Err(src.corrupt("VHDX region table signature or checksum"));
    }
    let count = to_usize(u64::from(le32(&regions, 8)).min(2047));
    let region = |id: Uuid| {
        (0..count)
            .map(|i| &regions[16 + i * 32..48 + i * 32])
            .find(|e| e[..16] == id.to_bytes_le())
            .map(|e| (le64(e, 16), u64::from(le32(e, 24))))
            .ok_or_else(|| src.corrupt(format!("VHDX region {id:X} missing")))
    };
    let (bat_off, bat_len) = region(BAT)?;
    let (meta_off, meta_len) = region(METADATA)?;
    let meta = src.read(meta_off, meta_len, "VHDX metadata")?;
    if meta.len() < 32 || &meta[..8] != b"metadata" {
        return Err(src.corrupt("VHDX metadata signature"));
    }
    let entries = usize::from(le16(&meta, 10)).min(2047);
    let item = |id: Uuid, len: usize| -> Result<&[u8]> {
        (0..entries)
            .filter_map(|i| meta.get(32 + i * 32..64 + i * 32))
            .find(|e| e[..16] == id.to_bytes_le())
            .and_then(|e| {
                let o = to_usize(u64::from(le32(e, 16)));
                meta.get(o..o + len)
            })
            .ok_or_else(|| src.corrupt(format!("VHDX metadata item {id:X} missing")))
    };
    let params = item(FILE_PARAMETERS, 8)?;
    let (block, flags) = (u64::from(le32(params, 0)), le32(params, 4));
    if flags & 2 != 0 {
        return Err(src.unsupported("a differencing VHDX (it needs its parent)"));
    }
    let size = le64(item(VIRTUAL_DISK_SIZE, 8)?, 0);
    let lss = u64::from(le32(item(LOGICAL_SECTOR_SIZE, 4)?, 0));
    if !block.is_power_of_two()
        || !((1 << 20)..=(256 << 20)).contains(&block)
        || !(lss == 512 || lss == 4096)
    {
        return Err(src.corrupt(format!("VHDX block size {block}, sector size {lss}")));
    }
    let chunk_ratio = (1u64 << 23) * lss / block;
    let blocks = size.div_ceil(block);
    let needed = (blocks + blocks.saturating_sub(1) / chunk_ratio + 1) * 8;
    let bat = src.read(bat_off, bat_len.min(needed.max(8)), "VHDX BAT")?;
    let out = out(size)?;
    for i in 0..blocks {
        let at = usize::try_from((i + i / chunk_ratio) * 8).unwrap_or(usize::MAX);
        let Some(e) = bat.get(at..at + 8) else {
            return Err(src.corrupt("VHDX BAT too small for the disk size"));
        };
        let e = le64(e, 0);
        match e & 7 {
            0..=3 => continue,
            6 => {}
            7 => return Err(src.unsupported("partially present VHDX blocks (a differencing disk)")),
            s => return Err(src.corrupt(format!("VHDX block state {s}"))),
        }
        let guest = i * block;
        let len = block.min(size - guest);
        out.write(guest, &src.read((e >> 20) << 20, len, "VHDX block")?)?;
    }
    Ok(out)
}
