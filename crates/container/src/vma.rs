//! Proxmox VMA (Virtual Machine Archive, pve-qemu's `vma_spec.txt`): the backup format
//! `qmrestore` turns into a VM, holding its configuration files and one disk.
//!
//! Layout, big-endian: a header (magic `VMA\0`, version 1, uuid, time, MD5 of the header,
//! the offsets of the configuration blobs and the device table), then the disk in extents
//! of up to 59 clusters of 64 KiB. An extent's 512-byte header (magic `VMAE`, the uuid, the
//! count of 4 KiB blocks that follow, its own MD5) lists each cluster with a 16-bit mask of
//! its non-zero 4 KiB blocks; only those blocks follow, in order. Every cluster of the disk
//! is listed (as Proxmox's writer does: a restore and `vma verify` expect them all), one
//! whose mask is 0 holds no bytes.
//!
//! The masks are decided from the map (a 4 KiB block is stored when it overlaps a file or
//! non-zero bytes, see the crate's `blocks` module), so every extent header is known before
//! its data and the archive is written front to back in one pass; its length is known up
//! front (`Vma::len`), which a compressor pledges.
//!
//! Quirks of Proxmox's writer kept: blob offsets start at 1 (0 is "none"); a blob's 2-byte
//! length is little-endian although every other number is big-endian; names are stored
//! with their terminating NUL; device ids start at 1.

use std::io::Write;

use imgbuild_diskmap::{Map, Piece, Sink};
use md5::{Digest, Md5};

use crate::blocks::{Allocation, BlockStream};
use crate::{put, to_usize, DiskLimits, Error, Out, Params, Result};

/// The archive's magic.
pub const MAGIC: &[u8; 4] = b"VMA\0";
/// An extent header's magic.
pub const EXTENT_MAGIC: &[u8; 4] = b"VMAE";
/// The 4 KiB blocks a cluster's mask describes.
pub const BLOCK: u64 = 4096;
/// A cluster: 16 blocks.
pub const CLUSTER: u64 = 16 * BLOCK;
/// Clusters listed in one extent header.
pub const CLUSTERS_PER_EXTENT: u64 = 59;
/// An extent header's size.
pub const EXTENT_HEADER: usize = 512;
/// The fixed part of the header; the blob buffer follows it.
pub const HEADER_FIXED: usize = 12288;
/// Configuration files an archive holds at most.
pub const MAX_CONFIGS: usize = 256;
/// The device id of the one disk (ids start at 1).
pub const DEV_ID: u8 = 1;
/// Offsets in the header.
pub mod at {
    /// Header MD5 (zero while it is computed).
    pub const MD5: usize = 32;
    /// `blob_buffer_offset`, `blob_buffer_size`, `header_size`.
    pub const BLOB_OFFSET: usize = 48;
    /// Offsets of the configuration names, 256 u32.
    pub const CONFIG_NAMES: usize = 2044;
    /// Offsets of the configuration data, 256 u32.
    pub const CONFIG_DATA: usize = 3068;
    /// The device table: 256 entries of 32 bytes, entry 0 unused.
    pub const DEV_INFO: usize = 4096;
    /// An extent header's MD5.
    pub const EXTENT_MD5: usize = 24;
    /// An extent header's cluster entries.
    pub const BLOCKINFO: usize = 40;
}

const LIMITS: DiskLimits = DiskLimits {
    format: "vma",
    sector: 512,
    // Cluster numbers are 32-bit.
    max: (1 << 32) * CLUSTER,
    hint: "",
};

/// A configuration file the archive carries (`qemu-server.conf`).
#[derive(Clone, Debug)]
pub struct Config<'a> {
    /// Its file name.
    pub name: &'a str,
    /// Its bytes (at most 65535).
    pub data: &'a [u8],
}

/// The blob buffer: blobs from offset 1 on, each a little-endian u16 length then its bytes.
struct Blobs(Vec<u8>);

impl Blobs {
    fn add(&mut self, data: &[u8]) -> Result<u32> {
        let len =
            u16::try_from(data.len()).map_err(|_| Error::VmaBlobTooLarge { len: data.len() })?;
        let at =
            u32::try_from(self.0.len()).map_err(|_| Error::VmaBlobTooLarge { len: data.len() })?;
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(data);
        Ok(at)
    }
    fn add_str(&mut self, s: &str) -> Result<u32> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.add(&b)
    }
}

/// The archive's header: the configuration files, the disk's name and size.
pub fn header(params: &Params, device: &str, configs: &[Config<'_>]) -> Result<Vec<u8>> {
    if configs.len() > MAX_CONFIGS {
        return Err(Error::VmaTooManyConfigs {
            count: configs.len(),
        });
    }
    let mut blobs = Blobs(vec![0]);
    let mut h = vec![0u8; HEADER_FIXED];
    for (i, c) in configs.iter().enumerate() {
        let name = blobs.add_str(c.name)?;
        let data = blobs.add(c.data)?;
        put(&mut h, at::CONFIG_NAMES + 4 * i, &name.to_be_bytes());
        put(&mut h, at::CONFIG_DATA + 4 * i, &data.to_be_bytes());
    }
    let dev = at::DEV_INFO + 32 * usize::from(DEV_ID);
    put(&mut h, dev, &blobs.add_str(device)?.to_be_bytes());
    put(&mut h, dev + 8, &params.disk_size.to_be_bytes());

    let used = blobs.0.len();
    let table = used.div_ceil(512) * 512;
    let size = |n: usize| u32::try_from(n).map_err(|_| Error::VmaBlobTooLarge { len: n });
    put(&mut h, 0, MAGIC);
    put(&mut h, 4, &1u32.to_be_bytes());
    put(&mut h, 8, &params.id);
    put(&mut h, 24, &params.time.to_be_bytes());
    put(&mut h, at::BLOB_OFFSET, &size(HEADER_FIXED)?.to_be_bytes());
    put(&mut h, at::BLOB_OFFSET + 4, &size(used)?.to_be_bytes());
    put(
        &mut h,
        at::BLOB_OFFSET + 8,
        &size(HEADER_FIXED + table)?.to_be_bytes(),
    );
    h.extend_from_slice(&blobs.0);
    h.resize(HEADER_FIXED + table, 0);
    let sum = Md5::digest(&h);
    put(&mut h, at::MD5, &sum);
    Ok(h)
}

/// The MD5 of a header or extent header whose MD5 field at `md5_at` is taken as zeros.
pub fn md5_zeroed(bytes: &[u8], md5_at: usize) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(&bytes[..md5_at]);
    h.update([0u8; 16]);
    h.update(&bytes[md5_at + 16..]);
    h.finalize().into()
}

/// The masks of the clusters `[first, first + n)`: bit `i` set when block `i` is stored.
fn masks(alloc: &Allocation, cursor: &mut usize, first: u64, n: u64) -> Vec<u16> {
    let per = CLUSTER / BLOCK;
    let (lo, hi) = (first * per, (first + n) * per);
    let mut m = vec![0u16; to_usize(n)];
    let ranges = &alloc.ranges;
    while let Some(&(a, b)) = ranges.get(*cursor) {
        if a >= hi {
            break;
        }
        for blk in a.max(lo)..=b.min(hi - 1) {
            m[to_usize(blk / per - first)] |= 1 << (blk % per);
        }
        if b >= hi {
            break;
        }
        *cursor += 1;
    }
    m
}

/// Everything about an archive decided before a byte is written: its header, which blocks
/// it stores, its length.
pub struct Archive {
    head: Vec<u8>,
    alloc: Allocation,
    params: Params,
    len: u64,
}

impl Archive {
    /// The archive of `map`'s disk named `device` (`drive-virtio0`) with `configs`.
    pub fn new(map: &Map, params: &Params, device: &str, configs: &[Config<'_>]) -> Result<Self> {
        LIMITS.check(params.disk_size)?;
        let head = header(params, device, configs)?;
        let alloc = Allocation::of(map, BLOCK);
        let extents = params
            .disk_size
            .div_ceil(CLUSTER)
            .div_ceil(CLUSTERS_PER_EXTENT);
        let len = head.len() as u64 + extents * EXTENT_HEADER as u64 + alloc.count() * BLOCK;
        Ok(Archive {
            head,
            alloc,
            params: params.clone(),
            len,
        })
    }

    /// The archive's length in bytes (what a compressor pledges).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the archive is empty: never (it has a header).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the header into `w`; extents follow as the disk streams into the result.
    pub fn write<W: Write + Send>(self, w: W) -> Result<Vma<W>> {
        let mut out = Out::new(w, "vma");
        out.put(&self.head)?;
        Ok(Vma {
            out,
            stream: BlockStream::new(self.alloc.clone(), self.params.disk_size),
            alloc: self.alloc,
            uuid: self.params.id,
            clusters: self.params.disk_size.div_ceil(CLUSTER),
            next: 0,
            cursor: 0,
            len: self.len,
        })
    }
}

/// A VMA archive of the map's disk, written front to back into `W`: a [`Sink`] of the disk.
pub struct Vma<W: Write> {
    out: Out<W>,
    stream: BlockStream,
    alloc: Allocation,
    uuid: [u8; 16],
    clusters: u64,
    /// The next extent whose header is due, and the allocation range it starts looking at.
    next: u64,
    cursor: usize,
    len: u64,
}

impl<W: Write + Send> Vma<W> {
    /// The archive of `map`'s disk named `device` with `configs`, its header written into
    /// `w` ([`Archive::new`] then [`Archive::write`]).
    pub fn new(
        map: &Map,
        params: &Params,
        device: &str,
        configs: &[Config<'_>],
        w: W,
    ) -> Result<Self> {
        Archive::new(map, params, device, configs)?.write(w)
    }

    /// The writer, once the stream has finished the sink.
    pub fn into_inner(self) -> W {
        self.out.w
    }

    /// Writes the headers of every extent before `upto`.
    fn headers(&mut self, upto: u64) -> Result<()> {
        while self.next < upto {
            let first = self.next * CLUSTERS_PER_EXTENT;
            let n = CLUSTERS_PER_EXTENT.min(self.clusters - first);
            let m = masks(&self.alloc, &mut self.cursor, first, n);
            let mut h = [0u8; EXTENT_HEADER];
            put(&mut h, 0, EXTENT_MAGIC);
            let blocks: u32 = m.iter().map(|x| x.count_ones()).sum();
            // At most 59 * 16 blocks.
            let blocks = u16::try_from(blocks).unwrap_or(u16::MAX);
            put(&mut h, 6, &blocks.to_be_bytes());
            put(&mut h, 8, &self.uuid);
            for (i, (mask, c)) in m.iter().zip(first..).enumerate() {
                // Cluster numbers fit 32 bits: the disk size was checked.
                let c = u32::try_from(c).unwrap_or(u32::MAX);
                let info = u64::from(*mask) << 48 | u64::from(DEV_ID) << 32 | u64::from(c);
                put(&mut h, at::BLOCKINFO + 8 * i, &info.to_be_bytes());
            }
            let sum = md5_zeroed(&h, at::EXTENT_MD5);
            put(&mut h, at::EXTENT_MD5, &sum);
            self.out.put(&h)?;
            self.next += 1;
        }
        Ok(())
    }

    fn block(&mut self, b: u64, bytes: &[u8]) -> Result<()> {
        self.headers(b / (CLUSTERS_PER_EXTENT * CLUSTER / BLOCK) + 1)?;
        self.out.put(bytes)
    }
}

impl<W: Write + Send> Sink for Vma<W> {
    fn name(&self) -> String {
        "writing the VMA archive".into()
    }

    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut stream =
            std::mem::replace(&mut self.stream, BlockStream::new(Allocation::default(), 0));
        let r = stream.feed(p, |b, bytes| self.block(b, bytes));
        self.stream = stream;
        Ok(r?)
    }

    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut stream =
            std::mem::replace(&mut self.stream, BlockStream::new(Allocation::default(), 0));
        let r = stream.finish(|b, bytes| self.block(b, bytes));
        self.stream = stream;
        r?;
        self.headers(self.clusters.div_ceil(CLUSTERS_PER_EXTENT))?;
        debug_assert_eq!(self.out.pos, self.len);
        Ok(self.out.flush()?)
    }
}
