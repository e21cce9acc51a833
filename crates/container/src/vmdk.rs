//! VMDK, the stream-optimized kind (VMware's "Virtual Disk Format 1.1", section "Stream-
//! Optimized Compressed Sparse Extents"): what OVA/OVF packages carry and what VMware ESXi,
//! Workstation and VirtualBox import.
//!
//! Layout: the sparse extent header (with the grain directory "at the end"), the embedded
//! descriptor, then, in disk order, every 64 KiB grain holding data as a grain marker (its
//! LBA and compressed size) followed by its zlib stream, padded to a sector; after the grains
//! of each 32 MiB stretch, that stretch's grain table (behind a GT marker); then the grain
//! directory (GD marker), a footer (a copy of the header with the grain directory's offset)
//! and the end-of-stream marker. Grains are compressed on a pool of threads and written in
//! order, so the bytes do not depend on the thread count. The descriptor's CID and
//! `ddb.uuid.image` come from the id parameter; no time is recorded.

use std::io::Write;

use imgbuild_compress::pool::Ordered;
use imgbuild_diskmap::{Map, Piece, Sink};

use crate::blocks::{Allocation, BlockStream};
use crate::{to_usize, DiskLimits, Error, Out, Params, Result};

const SECTOR: u64 = 512;
/// Grain size: 128 sectors.
pub const GRAIN: u64 = 64 << 10;
/// Grain table entries per table: a table covers 32 MiB.
const GT_ENTRIES: u64 = 512;
/// Sectors before the first grain: header, descriptor, padding to a grain.
const OVERHEAD: u64 = GRAIN / SECTOR;
/// Grains compressed per pool job.
const GRAINS_PER_JOB: usize = 16;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
/// Grains by index: their bytes going to the pool, their records coming back.
type Grains = Vec<(u64, Vec<u8>)>;

/// The file's name in its own extent line (and in an OVA).
pub const FILE_NAME: &str = "disk.vmdk";

/// A stream-optimized VMDK of the map's disk, written front to back into `W`.
pub struct Vmdk<W: Write> {
    out: Out<W>,
    stream: BlockStream,
    pool: Ordered<Grains, Grains>,
    batch: Grains,
    tables: Tables,
    capacity: u64,
}

/// The grain tables being filled and the directory of those written.
struct Tables {
    /// The table being filled, and its index.
    current: Vec<u32>,
    index: u64,
    directory: Vec<u32>,
}

/// The sparse extent header: at the start with the directory "at the end", or as the
/// footer with its offset.
fn header(capacity: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let mut at = 0;
    let mut put = |v: &[u8]| {
        h[at..at + v.len()].copy_from_slice(v);
        at += v.len();
    };
    put(b"KDMV");
    put(&3u32.to_le_bytes());
    // Valid newline detection, compressed grains, markers.
    put(&0x0003_0001u32.to_le_bytes());
    put(&capacity.to_le_bytes());
    put(&(GRAIN / SECTOR).to_le_bytes());
    put(&1u64.to_le_bytes()); // descriptor offset
    put(&(OVERHEAD - 1).to_le_bytes()); // descriptor size, sectors
    put(&u32::try_from(GT_ENTRIES).expect("512").to_le_bytes());
    put(&0u64.to_le_bytes()); // no redundant directory
    put(&gd_offset.to_le_bytes());
    put(&OVERHEAD.to_le_bytes());
    put(&[0, b'\n', b' ', b'\r', b'\n']);
    put(&1u16.to_le_bytes()); // deflate
    h
}

/// A metadata marker: `sectors` of metadata of `kind` follow.
fn marker(sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[..8].copy_from_slice(&sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

fn descriptor(params: &Params, capacity: u64) -> String {
    let cid = u32::from_le_bytes([params.id[0], params.id[1], params.id[2], params.id[3]]);
    let uuid = uuid::Uuid::from_bytes(params.id).hyphenated();
    let cylinders = (capacity / (255 * 63)).min(65535);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"{FILE_NAME}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.uuid.image = \"{uuid}\"\n"
    )
}

/// Compresses grains into their on-disk records: marker (LBA, size) and zlib data, padded
/// to a sector.
fn compress(grains: Grains, level: u32) -> std::io::Result<Grains> {
    grains
        .into_iter()
        .map(|(g, bytes)| {
            let z = imgbuild_compress::zlib(&bytes, level)?;
            let mut rec = Vec::with_capacity(12 + z.len() + 512);
            rec.extend_from_slice(&(g * GRAIN / SECTOR).to_le_bytes());
            rec.extend_from_slice(&u32::try_from(z.len()).unwrap_or(u32::MAX).to_le_bytes());
            rec.extend_from_slice(&z);
            rec.resize(to_usize((rec.len() as u64).next_multiple_of(SECTOR)), 0);
            Ok((g, rec))
        })
        .collect()
}

impl<W: Write + Send> Vmdk<W> {
    /// Writes the header and descriptor into `w` at once; grains are compressed by
    /// `workers` threads at zlib `level` as the disk streams in.
    pub fn new(map: &Map, params: &Params, w: W, workers: usize, level: u32) -> Result<Self> {
        DiskLimits {
            format: "vmdk",
            sector: SECTOR,
            max: u64::MAX,
            hint: "",
        }
        .check(params.disk_size)?;
        let capacity = params.disk_size / SECTOR;
        let desc = descriptor(params, capacity);
        let mut out = Out::new(w, "vmdk");
        out.put(&header(capacity, u64::MAX))?;
        out.put(desc.as_bytes())?;
        out.zeros(OVERHEAD * SECTOR - SECTOR - desc.len() as u64)?;
        let alloc = Allocation::of(map, GRAIN);
        Ok(Vmdk {
            out,
            stream: BlockStream::new(alloc, params.disk_size),
            pool: Ordered::new(workers, move |g| compress(g, level)),
            batch: Vec::with_capacity(GRAINS_PER_JOB),
            tables: Tables {
                current: vec![0; to_usize(GT_ENTRIES)],
                index: 0,
                directory: Vec::new(),
            },
            capacity,
        })
    }

    /// The writer, once the stream has finished the sink.
    pub fn into_inner(self) -> W {
        self.out.w
    }
}

impl Tables {
    /// Writes the current table and every empty one before table `upto`.
    fn close_until<W: Write>(&mut self, out: &mut Out<W>, upto: u64) -> Result<()> {
        while self.index < upto {
            out.put(&marker(GT_ENTRIES * 4 / SECTOR, MARKER_GT))?;
            self.directory.push(sector(out.pos)?);
            let bytes: Vec<u8> = self.current.iter().flat_map(|e| e.to_le_bytes()).collect();
            out.put(&bytes)?;
            self.current.fill(0);
            self.index += 1;
        }
        Ok(())
    }

    /// Writes a grain's record, after the tables of the stretches before it.
    fn grain<W: Write>(&mut self, out: &mut Out<W>, g: u64, rec: &[u8]) -> Result<()> {
        self.close_until(out, g / GT_ENTRIES)?;
        self.current[to_usize(g % GT_ENTRIES)] = sector(out.pos)?;
        out.put(rec)
    }
}

/// A file offset as the 32-bit sector number grain tables hold.
fn sector(pos: u64) -> Result<u32> {
    u32::try_from(pos / SECTOR).map_err(|_| Error::VmdkTooLarge)
}

fn io(e: std::io::Error) -> Error {
    Error::Compress(e)
}

/// Runs a pool call whose results are written out as grains; an error writing them is
/// reported rather than the pool's.
fn run_pool<W: Write>(
    out: &mut Out<W>,
    tables: &mut Tables,
    call: impl FnOnce(&mut dyn FnMut(Grains) -> std::io::Result<()>) -> std::io::Result<()>,
) -> Result<()> {
    let mut failed = None;
    let r = {
        let mut put = |recs: Grains| {
            for (g, rec) in recs {
                if let Err(e) = tables.grain(out, g, &rec) {
                    failed = Some(e);
                    return Err(std::io::Error::other("writing"));
                }
            }
            Ok(())
        };
        call(&mut put)
    };
    r.map_err(|e| failed.take().unwrap_or_else(|| io(e)))
}

impl<W: Write + Send> Vmdk<W> {
    fn submit(&mut self, job: Grains) -> Result<()> {
        if job.is_empty() {
            return Ok(());
        }
        let pool = &mut self.pool;
        run_pool(&mut self.out, &mut self.tables, |put| pool.submit(job, put))
    }
}

impl<W: Write + Send> Sink for Vmdk<W> {
    fn name(&self) -> String {
        "writing the VMDK image".into()
    }

    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut full = Vec::new();
        let batch = &mut self.batch;
        self.stream.feed(p, |g, bytes| {
            batch.push((g, bytes.to_vec()));
            if batch.len() == GRAINS_PER_JOB {
                full.push(std::mem::take(batch));
            }
            Ok(())
        })?;
        for job in full {
            self.submit(job)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let batch = &mut self.batch;
        self.stream.finish(|g, bytes| {
            batch.push((g, bytes.to_vec()));
            Ok(())
        })?;
        let last = std::mem::take(&mut self.batch);
        self.submit(last)?;
        let pool = &mut self.pool;
        run_pool(&mut self.out, &mut self.tables, |put| pool.finish(put))?;
        let (out, tables) = (&mut self.out, &mut self.tables);
        let tables_total = self.capacity.div_ceil(GRAIN / SECTOR).div_ceil(GT_ENTRIES);
        tables.close_until(out, tables_total)?;
        let mut gd: Vec<u8> = tables
            .directory
            .iter()
            .flat_map(|e| e.to_le_bytes())
            .collect();
        gd.resize(to_usize((gd.len() as u64).next_multiple_of(SECTOR)), 0);
        out.put(&marker(gd.len() as u64 / SECTOR, MARKER_GD))?;
        let gd_at = out.pos / SECTOR;
        out.put(&gd)?;
        out.put(&marker(1, MARKER_FOOTER))?;
        out.put(&header(self.capacity, gd_at))?;
        out.put(&[0u8; 512])?; // end of stream
        out.flush()?;
        Ok(())
    }
}
