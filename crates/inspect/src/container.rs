//! Disk containers read back into a disk: qcow2, VHD (fixed and dynamic), VHDX, VMDK
//! (stream-optimized and monolithic sparse), an OVA's VMDK, and the GCE `disk.raw` in a
//! gzipped (sparse) tar. A fixed VHD is read in place; the others are unpacked into a sparse
//! temporary file (zero runs never written), like a `.zst` image.
//!
//! qcow2 compressed clusters (`qemu-img convert -c`) are inflated; VMDK grains too.
//!
//! Nothing in a container is trusted: every table offset and length is checked against the
//! file, every guest offset against the virtual size, the virtual size against the limit;
//! backing files, differencing disks, encryption and logs to replay are refused by name.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use crate::io::{Disk, TempDisk};
use crate::{Error, Result, Where};

/// What holds the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Container {
    /// The disk's bytes themselves (or a `.zst` of them).
    Raw,
    Qcow2,
    Vhd,
    VhdFixed,
    Vhdx,
    Vmdk,
    Ova,
    GceTar,
}

impl std::fmt::Display for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Container::Raw => "raw",
            Container::Qcow2 => "qcow2",
            Container::Vhd => "VHD (dynamic)",
            Container::VhdFixed => "VHD (fixed)",
            Container::Vhdx => "VHDX",
            Container::Vmdk => "VMDK",
            Container::Ova => "OVA",
            Container::GceTar => "GCE tar.gz",
        })
    }
}

const SECTOR: u64 = 512;
/// Largest table read into memory (a qcow2 L1, a VHD BAT, a VHDX BAT, a VMDK grain directory).
const MAX_TABLE: u64 = 256 << 20;

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}
fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

/// The container file, read only inside its bounds.
struct Src<'a> {
    file: &'a File,
    len: u64,
    at: Where,
}

impl Src<'_> {
    fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            at: self.at.clone(),
            reason: reason.into(),
        }
    }

    fn unsupported(&self, what: impl Into<String>) -> Error {
        Error::Unsupported {
            at: self.at.clone(),
            what: what.into(),
        }
    }

    fn read(&self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(self.corrupt(format!(
                "{what}: {len} bytes at {offset} lie past the end of the file ({} bytes)",
                self.len
            )));
        }
        if len > MAX_TABLE {
            return Err(Error::Limit {
                at: self.at.clone(),
                what: format!("bytes of one {what}"),
                limit: MAX_TABLE,
            });
        }
        let mut b = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        self.file
            .read_exact_at(&mut b, offset)
            .map_err(|source| Error::Io {
                at: self.at.clone(),
                source,
            })?;
        Ok(b)
    }
}

/// The disk being unpacked: a sparse temporary file of the virtual size, its data bounded
/// ([`TempDisk`]).
struct Out {
    tmp: TempDisk,
    size: u64,
    at: Where,
}

impl Out {
    /// `cap`: the data it may take ([`crate::io::data_cap`] of the container's size).
    fn new(size: u64, max: u64, cap: u64, temp_dir: Option<&Path>, at: &Where) -> Result<Self> {
        if size > max {
            return Err(Error::TooLarge {
                at: at.clone(),
                what: "disk in the container",
                size,
                max,
            });
        }
        Ok(Out {
            tmp: TempDisk::create(temp_dir, size, cap, at.clone())?,
            size,
            at: at.clone(),
        })
    }

    /// Writes `data` at guest offset `at`, leaving zero blocks as holes.
    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(Error::Corrupt {
                at: self.at.clone(),
                reason: format!(
                    "data for guest offset {offset} (+{}) past the disk's end ({})",
                    data.len(),
                    self.size
                ),
            });
        }
        self.tmp.write_at(offset, data)
    }

    fn disk(self) -> Result<Disk> {
        self.tmp.into_disk(self.size)
    }
}

/// Recognises a container by its magic numbers (a raw disk has none of them).
pub(crate) fn detect(file: &File, len: u64) -> io::Result<Container> {
    let mut head = [0u8; 512];
    let n = file.read_at(&mut head, 0)?;
    let head = &head[..n];
    let footer_type = |b: &[u8]| (b.len() >= 64 && &b[..8] == b"conectix").then(|| be32(b, 60));
    if head.starts_with(b"QFI\xfb") {
        return Ok(Container::Qcow2);
    }
    if head.starts_with(b"vhdxfile") {
        return Ok(Container::Vhdx);
    }
    if head.starts_with(b"KDMV") {
        return Ok(Container::Vmdk);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Container::GceTar);
    }
    if head.len() >= 263 && &head[257..262] == b"ustar" {
        return Ok(Container::Ova);
    }
    if footer_type(head) == Some(3) {
        return Ok(Container::Vhd);
    }
    if len >= 1024 {
        let mut tail = [0u8; 512];
        file.read_exact_at(&mut tail, len - 512)?;
        match footer_type(&tail) {
            Some(2) => return Ok(Container::VhdFixed),
            Some(3) => return Ok(Container::Vhd),
            _ => {}
        }
    }
    Ok(Container::Raw)
}

/// The disk inside `file`, of kind `kind` (not `Raw`).
pub(crate) fn open(
    kind: Container,
    file: File,
    len: u64,
    path: &Path,
    max: u64,
    temp_dir: Option<&Path>,
) -> Result<Disk> {
    let src = Src {
        file: &file,
        len,
        at: Where::image(path),
    };
    let cap = crate::io::data_cap(len, max);
    let out = |size: u64| Out::new(size, max, cap, temp_dir, &src.at);
    let disk = match kind {
        Container::Raw => return Ok(Disk::new(file, len)),
        Container::VhdFixed => {
            let size = vhd_fixed_size(&src)?;
            return Ok(Disk::new(file, size));
        }
        Container::Qcow2 => qcow2(&src, out)?,
        Container::Vhd => vhd(&src, out)?,
        Container::Vhdx => vhdx(&src, out)?,
        Container::Vmdk => vmdk(&src, 0, len, out)?,
        Container::Ova => {
            let (offset, size) = ova_vmdk(&src)?;
            vmdk(&src, offset, size, out)?
        }
        Container::GceTar => gce(&src, out)?,
    };
    disk.disk()
}

fn qcow2(src: &Src<'_>, out: impl Fn(u64) -> Result<Out>) -> Result<Out> {
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
        let first = i as u64 * per_l2 * cluster;
        if l2_off == 0 || first >= size {
            continue;
        }
        let l2 = src.read(l2_off, cluster, "qcow2 L2 table")?;
        for (j, e) in l2.chunks(8).enumerate() {
            let guest = first + j as u64 * cluster;
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
                    src.corrupt(format!("qcow2 compressed cluster at {guest}: {e}"))
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

fn vhd_fixed_size(src: &Src<'_>) -> Result<u64> {
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

fn vhd(src: &Src<'_>, out: impl Fn(u64) -> Result<Out>) -> Result<Out> {
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
        let guest = i as u64 * block;
        if sector == u32::MAX || guest >= size {
            continue;
        }
        let data = u64::from(sector) * SECTOR + bitmap;
        let len = block.min(size - guest);
        out.write(guest, &src.read(data, len, "VHD block")?)?;
    }
    Ok(out)
}

fn guid(s: &str) -> [u8; 16] {
    uuid::Uuid::parse_str(s).map_or([0; 16], |u| u.to_bytes_le())
}

fn vhdx(src: &Src<'_>, out: impl Fn(u64) -> Result<Out>) -> Result<Out> {
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
    let count = le32(&regions, 8).min(2047) as usize;
    let region = |id: &str| {
        (0..count)
            .map(|i| &regions[16 + i * 32..48 + i * 32])
            .find(|e| e[..16] == guid(id))
            .map(|e| (le64(e, 16), u64::from(le32(e, 24))))
            .ok_or_else(|| src.corrupt(format!("VHDX region {id} missing")))
    };
    let (bat_off, bat_len) = region("2DC27766-F623-4200-9D64-115E9BFD4A08")?;
    let (meta_off, meta_len) = region("8B7CA206-4790-4B9A-B8FE-575F050F886E")?;
    let meta = src.read(meta_off, meta_len, "VHDX metadata")?;
    if meta.len() < 32 || &meta[..8] != b"metadata" {
        return Err(src.corrupt("VHDX metadata signature"));
    }
    let entries = usize::from(le16(&meta, 10)).min(2047);
    let item = |id: &str, len: usize| -> Result<&[u8]> {
        (0..entries)
            .filter_map(|i| meta.get(32 + i * 32..64 + i * 32))
            .find(|e| e[..16] == guid(id))
            .and_then(|e| {
                let o = le32(e, 16) as usize;
                meta.get(o..o + len)
            })
            .ok_or_else(|| src.corrupt(format!("VHDX metadata item {id} missing")))
    };
    let params = item("CAA16737-FA36-4D43-B3B6-33F0AA44E76B", 8)?;
    let (block, flags) = (u64::from(le32(params, 0)), le32(params, 4));
    if flags & 2 != 0 {
        return Err(src.unsupported("a differencing VHDX (it needs its parent)"));
    }
    let size = le64(item("2FA54224-CD1B-4876-B211-5DBED83BF4B8", 8)?, 0);
    let lss = u64::from(le32(item("8141BF1D-A96F-4709-BA47-F233A8FAAB5F", 4)?, 0));
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

/// A VMDK sparse extent at `base` (`len` bytes) of the file.
fn vmdk(src: &Src<'_>, base: u64, len: u64, out: impl Fn(u64) -> Result<Out>) -> Result<Out> {
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
    if compressed && flags & (1 << 17) != 0 {
        // Stream-optimized: grain markers in order, up to the end-of-stream marker.
        let mut pos = base + le64(&h, 64) * SECTOR;
        while pos + 16 <= end {
            let m = src.read(pos, 16, "VMDK marker")?;
            let (val, size_field) = (le64(&m, 0), u64::from(le32(&m, 8)));
            if size_field == 0 {
                match le32(&m, 12) {
                    0 => return Ok(out),
                    1..=3 => pos += SECTOR + val.saturating_mul(SECTOR),
                    t => return Err(src.corrupt(format!("VMDK marker type {t}"))),
                }
                continue;
            }
            let data = src.read(pos + 12, size_field, "VMDK grain")?;
            let grain_data = inflate(&data, grain_bytes)
                .map_err(|e| src.corrupt(format!("VMDK grain at sector {val}: {e}")))?;
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
    let gd = src.read(
        base + gd_sector * SECTOR,
        tables * 4,
        "VMDK grain directory",
    )?;
    for (t, e) in gd.chunks(4).enumerate() {
        let gt_sector = u64::from(le32(e, 0));
        if gt_sector == 0 {
            continue;
        }
        let gt = src.read(base + gt_sector * SECTOR, per_gt * 4, "VMDK grain table")?;
        for (g, e) in gt.chunks(4).enumerate() {
            let sector = u64::from(le32(e, 0));
            let guest = (t as u64 * per_gt + g as u64) * grain_bytes;
            if sector <= 1 || guest >= size {
                continue;
            }
            let n = grain_bytes.min(size - guest);
            out.write(guest, &src.read(base + sector * SECTOR, n, "VMDK grain")?)?;
        }
    }
    Ok(out)
}

/// A zlib stream, inflated to at most `max` bytes.
fn inflate(data: &[u8], max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(max + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::other(format!(
            "inflates to more than {max} bytes"
        )));
    }
    Ok(out)
}

/// A raw deflate stream, inflated to exactly its first `len` bytes.
fn inflate_raw(data: &[u8], len: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .take(len)
        .read_to_end(&mut out)?;
    if (out.len() as u64) < len {
        return Err(io::Error::other(format!(
            "inflates to {} of {len} bytes",
            out.len()
        )));
    }
    Ok(out)
}

/// A tar number field: octal ASCII, or GNU base-256 (first byte 0x80).
fn tar_number(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|&b| b & 0x80 != 0) {
        return f[1..]
            .iter()
            .try_fold(0u64, |n, &b| n.checked_mul(256).map(|n| n | u64::from(b)));
    }
    let s: String = f
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Offset and size of the first `.vmdk` member of an OVA (a tar).
fn ova_vmdk(src: &Src<'_>) -> Result<(u64, u64)> {
    let mut pos = 0;
    while pos + 512 <= src.len {
        let h = src.read(pos, 512, "tar header")?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let size = tar_number(&h[124..136]).ok_or_else(|| src.corrupt("tar member size"))?;
        let name_len = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        if h[..name_len].ends_with(b".vmdk") && matches!(h[156], 0 | b'0') {
            return Ok((pos + 512, size));
        }
        pos = pos
            .checked_add(512 + size.next_multiple_of(512))
            .ok_or_else(|| src.corrupt("tar member size"))?;
    }
    Err(src.unsupported("a tar without a .vmdk member (an OVA holds one)"))
}

/// A reader that counts what it gave, bounded to `left` bytes.
fn read_exact(r: &mut impl Read, buf: &mut [u8], src: &Src<'_>) -> Result<()> {
    r.read_exact(buf).map_err(|source| Error::Decompress {
        at: src.at.clone(),
        source,
    })
}

/// The GCE image: `disk.raw` in a gzipped tar (GNU sparse or regular member).
fn gce(src: &Src<'_>, out: impl Fn(u64) -> Result<Out>) -> Result<Out> {
    let mut r = flate2::read::MultiGzDecoder::new(io::BufReader::new(src.file));
    let mut h = [0u8; 512];
    loop {
        read_exact(&mut r, &mut h, src)?;
        if h.iter().all(|&b| b == 0) {
            return Err(src.unsupported("a tar.gz without disk.raw"));
        }
        let size = tar_number(&h[124..136]).ok_or_else(|| src.corrupt("tar member size"))?;
        let name_len = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let is_disk = &h[..name_len] == b"disk.raw";
        match h[156] {
            b'S' if is_disk => return gce_sparse(&mut r, &h, size, src, out),
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
fn gce_sparse(
    r: &mut impl Read,
    h: &[u8; 512],
    stored: u64,
    src: &Src<'_>,
    out: impl Fn(u64) -> Result<Out>,
) -> Result<Out> {
    let num = |f: &[u8]| tar_number(f).ok_or_else(|| src.corrupt("tar sparse map number"));
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
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            read_exact(r, &mut buf[..n], src)?;
            out.write(off, &buf[..n])?;
            off += n as u64;
            left -= n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_numbers() {
        assert_eq!(tar_number(b"0000644\0"), Some(0o644));
        assert_eq!(tar_number(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(tar_number(b"9\0"), None);
    }
}
