//! FAT12/16/32, read by our own code.
//!
//! Not `fatfs`: its 0.3 reader computes cluster offsets and table sizes with unchecked
//! `u32` arithmetic on values taken from the image (`cluster - 2` for a directory entry
//! naming cluster 1, `sectors_per_fat * bytes_per_sector * 8`), which panics in debug builds
//! and reads elsewhere in release builds, and it follows cluster chains without a bound. A
//! read-only FAT reader is small; this one checks every number before using it:
//!
//! - the boot sector ([`super::fat_bpb`]): every field fatfs validates, in 64-bit
//!   arithmetic, plus the volume inside the partition and a FAT big enough for its clusters;
//! - the table is read once (at most [`MAX_CLUSTERS`] entries) and kept in memory;
//! - every chain step must name a data cluster, and a chain ends after at most as many
//!   steps as there are clusters (so a loop is an error, not a hang);
//! - directories are at most 65536 entries (the FAT limit), names go through LFN checksum
//!   and sequence checks, short names are used otherwise.
//!
//! `fatfs` reads the same images in the tests, as an independent oracle.

use std::cell::RefCell;

use super::fat_bpb::{Bpb, FatType};
use super::fat_names::{dos_time, short_name, Lfn};
use super::{last_name, Entry, FsInfo, Kind};
use crate::bytes::{le16, le32, len64, to_usize};
use crate::error::{chain, Error, Result, Where};
use crate::io::Slice;

/// Largest cluster count read (the table is kept in memory: 4 bytes per cluster).
pub const MAX_CLUSTERS: u64 = 16 << 20;
/// Largest directory, in entries (FAT's own limit).
pub const MAX_DIR_ENTRIES: u64 = 65536;

/// Where a directory's entries live.
#[derive(Clone, Copy, Debug)]
enum DirLoc {
    /// The FAT12/16 root directory region.
    FixedRoot,
    /// A cluster chain starting here.
    Chain(u32),
}

/// A parsed directory entry.
#[derive(Clone, Debug)]
struct RawEntry {
    name: String,
    short: String,
    attr: u8,
    first_cluster: u32,
    size: u32,
    mtime: i64,
}

const ATTR_RO: u8 = 0x01;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const ATTR_LFN: u8 = 0x0f;

/// Why a volume could not be opened, with the facts read before that.
pub(crate) type OpenFailure = Box<(Option<FsInfo>, Error)>;

/// A FAT volume.
pub(crate) struct FatFs {
    slice: RefCell<Slice>,
    bpb: Bpb,
    /// Entries for clusters 0..clusters+2, as stored (12-, 16- or 28-bit values).
    fat: Vec<u32>,
}

/// An open FAT file: its clusters and read position.
pub(crate) struct FatFile {
    chain: Vec<u32>,
    size: u64,
    pos: u64,
}

pub(crate) fn map_err(e: std::io::Error, at: Where) -> Error {
    Error::Io { at, source: e }
}

impl FatFs {
    /// Checks the boot sector, reads the table. On error, whatever facts were read.
    pub(crate) fn open(
        mut slice: Slice,
        at: &Where,
    ) -> std::result::Result<(Self, FsInfo), OpenFailure> {
        let corrupt = |reason: String| Error::Corrupt {
            at: at.clone(),
            reason: format!("FAT: {reason}"),
        };
        let mut b = [0u8; 512];
        if let Err(source) = slice.read_exact_at(0, &mut b) {
            return Err(Box::new((
                None,
                Error::Io {
                    at: at.clone(),
                    source,
                },
            )));
        }
        let bpb = Bpb::parse(&b, Some(slice.len())).map_err(|r| Box::new((None, corrupt(r))))?;
        let kind = match bpb.fat_type {
            FatType::Fat12 => "fat12",
            FatType::Fat16 => "fat16",
            FatType::Fat32 => "fat32",
        };
        let mut info = FsInfo {
            summary: imgbuild_partition::FsSummary {
                kind: kind.into(),
                label: bpb.label.clone(),
                uuid: bpb
                    .volume_id
                    .map(|v| format!("{:04X}-{:04X}", v >> 16, v & 0xffff)),
                size: bpb.total_sectors * bpb.bytes_per_sector,
            },
            used: 0,
            block_size: bpb.cluster_size(),
            ..FsInfo::default()
        };
        if bpb.clusters > MAX_CLUSTERS {
            let e = Error::Unsupported {
                at: at.clone(),
                what: format!(
                    "FAT with {} clusters (at most {MAX_CLUSTERS} are read)",
                    bpb.clusters
                ),
            };
            info.error = Some(chain(&e));
            return Err(Box::new((Some(info), e)));
        }
        let fat = match read_fat(&mut slice, &bpb) {
            Ok(f) => f,
            Err(source) => {
                let e = Error::Io {
                    at: at.clone(),
                    source,
                };
                info.error = Some(chain(&e));
                return Err(Box::new((Some(info), e)));
            }
        };
        let free = len64(fat[2..].iter().filter(|&&v| v == 0).count());
        info.used = (bpb.clusters - free) * bpb.cluster_size();
        info.free = free * bpb.cluster_size();
        let fs = Self {
            slice: RefCell::new(slice),
            bpb,
            fat,
        };
        // The root directory's volume label entry wins over the boot sector's (as in blkid).
        match fs.read_raw_dir(fs.root(), at, true) {
            Ok(entries) => {
                if let Some(l) = entries
                    .iter()
                    .find(|e| e.attr & ATTR_VOLUME != 0)
                    .map(|e| e.short.replace('.', "").trim_end().to_string())
                {
                    info.summary.label = Some(l);
                }
            }
            Err(e) => {
                info.error = Some(chain(&e));
                return Err(Box::new((Some(info), e)));
            }
        }
        Ok((fs, info))
    }

    fn root(&self) -> DirLoc {
        match self.bpb.fat_type {
            FatType::Fat32 => DirLoc::Chain(self.bpb.root_cluster),
            _ => DirLoc::FixedRoot,
        }
    }

    fn is_eoc(&self, v: u32) -> bool {
        match self.bpb.fat_type {
            FatType::Fat12 => v >= 0xff8,
            FatType::Fat16 => v >= 0xfff8,
            FatType::Fat32 => v >= 0x0fff_fff8,
        }
    }

    /// The clusters of a chain, checked: every step a data cluster, no loop.
    fn chain(&self, first: u32, at: &Where) -> Result<Vec<u32>> {
        let n = self.bpb.clusters + 2;
        let corrupt = |reason: String| Error::Corrupt {
            at: at.clone(),
            reason: format!("FAT: {reason}"),
        };
        let mut out = Vec::new();
        let mut c = first;
        loop {
            if c < 2 || u64::from(c) >= n {
                return Err(corrupt(format!(
                    "cluster chain reaches cluster {c}, outside the data area"
                )));
            }
            if len64(out.len()) >= self.bpb.clusters {
                return Err(corrupt(format!(
                    "the cluster chain from cluster {first} loops"
                )));
            }
            out.push(c);
            let next = self.fat[to_usize(u64::from(c))];
            if self.is_eoc(next) {
                return Ok(out);
            }
            if next == 0 {
                return Err(corrupt(format!(
                    "cluster chain reaches free cluster (after {c})"
                )));
            }
            c = next;
        }
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        (self.bpb.first_data_sector + (u64::from(c) - 2) * self.bpb.sectors_per_cluster)
            * self.bpb.bytes_per_sector
    }

    /// All entries of a directory (volume label entries included only if asked).
    fn read_raw_dir(&self, loc: DirLoc, at: &Where, with_volume: bool) -> Result<Vec<RawEntry>> {
        let io = |source| Error::Io {
            at: at.clone(),
            source,
        };
        let data = match loc {
            DirLoc::FixedRoot => {
                let off = (self.bpb.reserved + self.bpb.fats * self.bpb.sectors_per_fat)
                    * self.bpb.bytes_per_sector;
                let mut d = vec![0u8; to_usize(self.bpb.root_entries * 32)];
                self.slice
                    .borrow_mut()
                    .read_exact_at(off, &mut d)
                    .map_err(io)?;
                d
            }
            DirLoc::Chain(first) => {
                let chain = self.chain(first, at)?;
                let cs = self.bpb.cluster_size();
                if len64(chain.len()) * cs > MAX_DIR_ENTRIES * 32 {
                    return Err(Error::Limit {
                        at: at.clone(),
                        what: "directory size in entries".into(),
                        limit: MAX_DIR_ENTRIES,
                    });
                }
                let cs_len = to_usize(cs);
                let mut d = vec![0u8; chain.len() * cs_len];
                for (i, &c) in chain.iter().enumerate() {
                    let dst = &mut d[i * cs_len..(i + 1) * cs_len];
                    self.slice
                        .borrow_mut()
                        .read_exact_at(self.cluster_offset(c), dst)
                        .map_err(io)?;
                }
                d
            }
        };
        let mut out = Vec::new();
        let mut lfn = Lfn::default();
        for e in data.chunks_exact(32) {
            match e[0] {
                0x00 => break,
                0xe5 => {
                    lfn.reset();
                    continue;
                }
                _ => {}
            }
            let attr = e[11];
            if attr & 0x3f == ATTR_LFN {
                lfn.push(e);
                continue;
            }
            let short = short_name(&e[..11], e[12]);
            let long = lfn.take(&e[..11]);
            if attr & ATTR_VOLUME != 0 && attr & ATTR_DIR == 0 {
                if with_volume {
                    let raw = String::from_utf8_lossy(&e[..11]).trim_end().to_string();
                    out.push(RawEntry {
                        name: raw.clone(),
                        short: raw,
                        attr,
                        first_cluster: 0,
                        size: 0,
                        mtime: 0,
                    });
                }
                continue;
            }
            let hi = if self.bpb.fat_type == FatType::Fat32 {
                u32::from(le16(e, 20))
            } else {
                0
            };
            out.push(RawEntry {
                name: long.unwrap_or_else(|| short.clone()),
                short,
                attr,
                first_cluster: hi << 16 | u32::from(le16(e, 26)),
                size: le32(e, 28),
                mtime: dos_time(le16(e, 24), le16(e, 22)),
            });
        }
        Ok(out)
    }

    fn to_entry(&self, e: &RawEntry) -> Entry {
        let dir = e.attr & ATTR_DIR != 0;
        let mode = match (dir, e.attr & ATTR_RO != 0) {
            (true, _) => 0o755,
            (false, true) => 0o444,
            (false, false) => 0o644,
        };
        Entry {
            name: e.name.as_bytes().to_vec(),
            kind: if dir { Kind::Dir } else { Kind::File },
            mode,
            uid: 0,
            gid: 0,
            size: if dir { 0 } else { u64::from(e.size) },
            mtime: e.mtime,
            target: None,
            id: dir.then_some(u64::from(e.first_cluster)),
        }
    }

    fn dir_loc(&self, e: &RawEntry, at: &Where) -> Result<DirLoc> {
        if e.first_cluster == 0 {
            return Err(Error::Corrupt {
                at: at.clone(),
                reason: "FAT: a subdirectory without clusters".into(),
            });
        }
        Ok(DirLoc::Chain(e.first_cluster))
    }

    /// The entry at `path` (`None`: the root directory).
    fn lookup(&self, path: &[u8], at: &Where) -> Result<Option<RawEntry>> {
        let path = std::str::from_utf8(path).map_err(|_| Error::NotFound {
            at: at.with_path(path),
        })?;
        let mut loc = self.root();
        let mut found: Option<RawEntry> = None;
        let mut walked = String::new();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            if let Some(f) = &found {
                if f.attr & ATTR_DIR == 0 {
                    return Err(Error::NotADirectory {
                        at: at.with_path(walked.as_bytes()),
                    });
                }
                loc = self.dir_loc(f, &at.with_path(walked.as_bytes()))?;
            }
            walked.push('/');
            walked.push_str(comp);
            let want = comp.to_lowercase();
            let entries = self.read_raw_dir(loc, &at.with_path(walked.as_bytes()), false)?;
            found = entries
                .into_iter()
                .filter(|e| e.name != "." && e.name != "..")
                .find(|e| e.name.to_lowercase() == want || e.short.to_lowercase() == want);
            if found.is_none() {
                return Err(Error::NotFound {
                    at: at.with_path(walked.as_bytes()),
                });
            }
        }
        Ok(found)
    }

    pub(crate) fn metadata(&self, path: &[u8], at: &Where) -> Result<Entry> {
        Ok(match self.lookup(path, at)? {
            None => Entry {
                name: last_name(path),
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: 0,
                target: None,
                id: Some(match self.root() {
                    DirLoc::Chain(c) => u64::from(c),
                    DirLoc::FixedRoot => 0,
                }),
            },
            Some(e) => self.to_entry(&e),
        })
    }

    pub(crate) fn read_dir(&self, path: &[u8], at: &Where, max: usize) -> Result<Vec<Entry>> {
        let here = at.with_path(path);
        let loc = match self.lookup(path, at)? {
            None => self.root(),
            Some(e) if e.attr & ATTR_DIR != 0 => self.dir_loc(&e, &here)?,
            Some(_) => return Err(Error::NotADirectory { at: here }),
        };
        let raw = self.read_raw_dir(loc, &here, false)?;
        let mut out = Vec::new();
        for e in raw.iter().filter(|e| e.name != "." && e.name != "..") {
            if out.len() >= max {
                return Err(Error::Limit {
                    at: here,
                    what: "entries in one directory".into(),
                    limit: len64(max),
                });
            }
            out.push(self.to_entry(e));
        }
        Ok(out)
    }

    pub(crate) fn open_file(&self, path: &[u8], at: &Where) -> Result<(FatFile, u64)> {
        let here = at.with_path(path);
        let e = match self.lookup(path, at)? {
            None => return Err(Error::IsADirectory { at: here }),
            Some(e) if e.attr & ATTR_DIR != 0 => return Err(Error::IsADirectory { at: here }),
            Some(e) => e,
        };
        let size = u64::from(e.size);
        let chain = if size == 0 {
            Vec::new()
        } else {
            if e.first_cluster == 0 {
                return Err(Error::Corrupt {
                    at: here,
                    reason: format!("FAT: a file of {size} bytes without clusters"),
                });
            }
            self.chain(e.first_cluster, &here)?
        };
        let need = size.div_ceil(self.bpb.cluster_size());
        if len64(chain.len()) < need {
            return Err(Error::Corrupt {
                at: here,
                reason: format!(
                    "FAT: the file's {size} bytes need {need} clusters, its chain has {}",
                    chain.len()
                ),
            });
        }
        Ok((
            FatFile {
                chain,
                size,
                pos: 0,
            },
            size,
        ))
    }

    /// Reads from `f` at its position, within one cluster.
    pub(crate) fn read(&self, f: &mut FatFile, buf: &mut [u8]) -> std::io::Result<usize> {
        if f.pos >= f.size || buf.is_empty() {
            return Ok(0);
        }
        let cs = self.bpb.cluster_size();
        let idx = to_usize(f.pos / cs);
        let within = f.pos % cs;
        let n = to_usize((cs - within).min(f.size - f.pos)).min(buf.len());
        let off = self.cluster_offset(f.chain[idx]) + within;
        self.slice.borrow_mut().read_exact_at(off, &mut buf[..n])?;
        f.pos += len64(n);
        Ok(n)
    }
}

/// Reads and decodes the first FAT: entries for clusters 0..clusters+2.
fn read_fat(slice: &mut Slice, bpb: &Bpb) -> std::io::Result<Vec<u32>> {
    let n = to_usize(bpb.clusters + 2);
    let off = bpb.reserved * bpb.bytes_per_sector;
    let bytes = match bpb.fat_type {
        FatType::Fat12 => (n * 3).div_ceil(2),
        FatType::Fat16 => n * 2,
        FatType::Fat32 => n * 4,
    };
    let mut raw = vec![0u8; bytes];
    for (i, chunk) in raw.chunks_mut(1 << 20).enumerate() {
        slice.read_exact_at(off + len64(i) * (1 << 20), chunk)?;
    }
    let fat = (0..n)
        .map(|i| match bpb.fat_type {
            FatType::Fat12 => {
                let o = i * 3 / 2;
                let v = u16::from_le_bytes([raw[o], raw.get(o + 1).copied().unwrap_or(0)]);
                u32::from(if i % 2 == 0 { v & 0xfff } else { v >> 4 })
            }
            FatType::Fat16 => u32::from(u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]])),
            FatType::Fat32 => {
                u32::from_le_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]])
                    & 0x0fff_ffff
            }
        })
        .collect();
    Ok(fat)
}
