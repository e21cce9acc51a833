//! Volume geometry chosen the way `mkfs.fat` 4.2 chooses it for a fixed disk (or an image
//! file) of a given size, with 512-byte sectors, two FATs and media byte 0xF8.
//!
//! The rules, checked against the `mkfs.fat` binary by the `geometry_matches_mkfs_fat` test:
//! - CHS: up to 524288 sectors, 2/4/8/16 heads (at most 32768/65536/262144/524288 sectors)
//!   and 16 (at most 4096 sectors) or 32 sectors per track; above, 63 sectors per track and
//!   16/32/64/128/255 heads at most that many times 63 * 1024 sectors.
//! - The sector count is rounded down to a multiple of the sectors per track.
//! - Volumes of 512 MiB and more get FAT32 unless a type is forced. FAT32 starts from
//!   1 sector per cluster up to 260 MiB, then 8, 16 (over 8 GiB), 32 (16 GiB), 64 (32 GiB);
//!   FAT12/16 start from 4 sectors per cluster. The cluster size doubles (up to 128 sectors)
//!   until the requested type has a legal cluster count: FAT12 at most 4084, FAT16 4087 to
//!   65524, FAT32 at least 65525 (unless forced) and at most 2^28 - 10.
//! - Without a forced type below 512 MiB, FAT16 is chosen when it has more clusters than
//!   FAT12, else FAT12.
//! - Above 8192 sectors, the reserved area, each FAT and the FAT12/16 root directory are
//!   rounded up to whole clusters, so data clusters are aligned (the root directory then
//!   holds more than 512 entries when clusters are bigger than 16 KiB).
//! - Reserved sectors: 32 for FAT32, 1 otherwise, before that rounding.

use crate::{Error, FatType, Result};

pub(crate) const SECTOR: u64 = 512;
const SECTOR32: u32 = 512;
pub(crate) const NUM_FATS: u32 = 2;
pub(crate) const MAX_CLUST_12: u32 = 4084;
pub(crate) const MIN_CLUST_16: u32 = 4087;
pub(crate) const MAX_CLUST_16: u32 = 65524;
pub(crate) const MIN_CLUST_32: u32 = 65525;
pub(crate) const MAX_CLUST_32: u32 = (1 << 28) - 10;
const FAT32_AUTO_BYTES: u64 = 512 << 20;

/// The layout of the non-data part of a FAT volume and the number of data clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// FAT12, FAT16 or FAT32, never `Auto`.
    pub fat_type: FatType,
    pub total_sectors: u32,
    pub sectors_per_cluster: u32,
    pub reserved_sectors: u32,
    /// Sectors of one FAT.
    pub fat_sectors: u32,
    /// Entries of the fixed FAT12/16 root directory; 0 on FAT32.
    pub root_entries: u32,
    /// Data clusters, numbered 2 ..= clusters + 1.
    pub clusters: u32,
    pub sectors_per_track: u16,
    pub heads: u16,
}

impl Geometry {
    pub fn cluster_bytes(&self) -> u64 {
        u64::from(self.sectors_per_cluster) * SECTOR
    }
    pub fn root_dir_sectors(&self) -> u32 {
        (self.root_entries * 32).div_ceil(SECTOR32)
    }
    pub fn fat_start(&self, copy: u32) -> u64 {
        u64::from(self.reserved_sectors + copy * self.fat_sectors) * SECTOR
    }
    pub fn root_dir_start(&self) -> u64 {
        self.fat_start(NUM_FATS)
    }
    pub fn data_start_sector(&self) -> u32 {
        self.reserved_sectors + NUM_FATS * self.fat_sectors + self.root_dir_sectors()
    }
    /// Byte offset of data cluster `c` (>= 2) from the start of the volume.
    pub fn cluster_offset(&self, c: u32) -> u64 {
        u64::from(self.data_start_sector()) * SECTOR + u64::from(c - 2) * self.cluster_bytes()
    }
    pub fn fs_bytes(&self) -> u64 {
        u64::from(self.total_sectors) * SECTOR
    }
}

/// Heads and sectors per track that mkfs.fat 4.2 derives from the size when the device
/// reports no geometry (image files, most modern disks).
fn chs(total_sectors: u64) -> (u16, u16) {
    if total_sectors <= 524_288 {
        let heads = match total_sectors {
            0..=32_768 => 2,
            32_769..=65_536 => 4,
            65_537..=262_144 => 8,
            _ => 16,
        };
        let spt = if total_sectors <= 4096 { 16 } else { 32 };
        (heads, spt)
    } else {
        const T: u64 = 63 * 1024;
        let heads = match total_sectors {
            s if s <= 16 * T => 16,
            s if s <= 32 * T => 32,
            s if s <= 64 * T => 64,
            s if s <= 128 * T => 128,
            _ => 255,
        };
        (heads, 63)
    }
}

/// Round `sectors` up to a multiple of the power of two `cs` when `align` is set.
fn align_to(sectors: u64, cs: u64, align: bool) -> u64 {
    if align {
        sectors.div_ceil(cs) * cs
    } else {
        sectors
    }
}

/// One candidate per FAT width for a given cluster size: (clusters, sectors per FAT);
/// clusters is 0 when the width is not usable.
#[derive(Clone, Copy, Debug, Default)]
struct Candidate {
    clusters: u64,
    fat_sectors: u64,
}

/// The cluster size, in sectors, mkfs.fat tries first: for FAT32 by the volume size, else 4.
fn first_cluster_sectors(bits: u32, raw_sectors: u64) -> u64 {
    if bits == 32 {
        match raw_sectors {
            s if s > 32 * 1024 * 1024 * 2 => 64,
            s if s > 16 * 1024 * 1024 * 2 => 32,
            s if s > 8 * 1024 * 1024 * 2 => 16,
            s if s > 260 * 1024 * 2 => 8,
            _ => 1,
        }
    } else {
        4
    }
}

/// The FAT12 and FAT16 candidates for `data` sectors (after the reserved area and the root
/// directory) at `cs` sectors per cluster.
fn fat1216(data: u64, cs: u64, align: bool) -> (Candidate, Candidate) {
    let (s, n) = (SECTOR, u64::from(NUM_FATS));
    let mut c12 = Candidate::default();
    let mut c16 = Candidate::default();
    // FAT12: 1.5 bytes per entry, two reserved entries.
    let guess = 2 * (data * s + n * 3) / (2 * cs * s + n * 3);
    let len = align_to((((guess + 2) * 3 + 1) >> 1).div_ceil(s), cs, align);
    let clusters = data.checked_sub(n * len).map_or(0, |d| d / cs);
    let max = (len * 2 * s / 3).min(u64::from(MAX_CLUST_12));
    if clusters <= max {
        c12 = Candidate {
            clusters,
            fat_sectors: len,
        };
    }
    // FAT16.
    let guess = (data * s + n * 4) / (cs * s + n * 2);
    let len = align_to(((guess + 2) * 2).div_ceil(s), cs, align);
    let clusters = data.checked_sub(n * len).map_or(0, |d| d / cs);
    let max = (len * s / 2).min(u64::from(MAX_CLUST_16));
    if clusters <= max && clusters >= u64::from(MIN_CLUST_16) {
        c16 = Candidate {
            clusters,
            fat_sectors: len,
        };
    }
    (c12, c16)
}

/// The FAT32 candidate for `data` sectors (after the reserved area) at `cs` sectors per
/// cluster; fewer than 65525 clusters only when FAT32 is `forced`.
fn fat32(data: u64, cs: u64, align: bool, forced: bool) -> Candidate {
    let (s, n) = (SECTOR, u64::from(NUM_FATS));
    let guess = (data * s + n * 8) / (cs * s + n * 4);
    let len = align_to(((guess + 2) * 4).div_ceil(s), cs, align);
    let clusters = data.checked_sub(n * len).map_or(0, |d| d / cs);
    let max = (len * s / 4).min(u64::from(MAX_CLUST_32));
    let enough = clusters >= u64::from(MIN_CLUST_32) || forced;
    if clusters <= max && enough {
        Candidate {
            clusters,
            fat_sectors: len,
        }
    } else {
        Candidate::default()
    }
}

/// Compute the geometry for a volume of `size_bytes` bytes.
pub(crate) fn compute(size_bytes: u64, requested: FatType) -> Result<Geometry> {
    let raw_sectors = size_bytes / SECTOR;
    if raw_sectors > u64::from(u32::MAX) {
        return Err(Error::TooLarge { size_bytes });
    }
    let (heads, spt) = chs(raw_sectors);
    // 0 means "FAT12 or FAT16, whichever has more clusters" like mkfs.fat's size_fat == 0.
    let bits: u32 = match requested {
        FatType::Auto if size_bytes >= FAT32_AUTO_BYTES => 32,
        FatType::Auto => 0,
        FatType::Fat12 => 12,
        FatType::Fat16 => 16,
        FatType::Fat32 => 32,
    };
    let forced32 = requested == FatType::Fat32;
    let mut cs = first_cluster_sectors(bits, raw_sectors);
    let num_sectors = raw_sectors / u64::from(spt) * u64::from(spt);
    let align = num_sectors > 8192;
    let reserved0: u64 = if bits == 32 { 32 } else { 1 };
    let root_sectors0: u64 = if bits == 32 { 0 } else { 512 * 32 / SECTOR };
    let s = SECTOR;
    let mut c12 = Candidate::default();
    let mut c16 = Candidate::default();
    let mut c32 = Candidate::default();
    let mut found = false;
    while cs <= 128 {
        let fatdata32 = num_sectors.checked_sub(align_to(reserved0, cs, align));
        let fatdata1216 = fatdata32.and_then(|d| d.checked_sub(align_to(root_sectors0, cs, align)));
        (c12, c16) = fatdata1216.map_or_else(Default::default, |d| fat1216(d, cs, align));
        c32 = fatdata32.map_or_else(Candidate::default, |d| fat32(d, cs, align, forced32));
        if (c12.clusters > 0 && (bits == 0 || bits == 12))
            || (c16.clusters > 0 && (bits == 0 || bits == 16))
            || (c32.clusters > 0 && bits == 32)
        {
            found = true;
            break;
        }
        cs <<= 1;
    }
    let fat_type = match bits {
        0 if c16.clusters > c12.clusters => FatType::Fat16,
        0 | 12 => FatType::Fat12,
        16 => FatType::Fat16,
        _ => FatType::Fat32,
    };
    let chosen = match fat_type {
        FatType::Fat12 => c12,
        FatType::Fat16 => c16,
        _ => c32,
    };
    if !found || chosen.clusters == 0 {
        return Err(Error::NoGeometry {
            size_bytes,
            fat_type: if bits == 0 { FatType::Auto } else { fat_type },
        });
    }
    if fat_type == FatType::Fat32 && chosen.clusters < u64::from(MIN_CLUST_32) {
        return Err(Error::TooSmallForFat32 {
            clusters: narrow(chosen.clusters),
            size_bytes,
        });
    }
    let reserved = align_to(reserved0, cs, align);
    let root_entries = if align {
        align_to(root_sectors0, cs, true) * (s / 32)
    } else {
        root_sectors0 * (s / 32)
    };
    let geo = Geometry {
        fat_type,
        total_sectors: narrow(num_sectors),
        sectors_per_cluster: narrow(cs),
        reserved_sectors: narrow(reserved),
        fat_sectors: narrow(chosen.fat_sectors),
        root_entries: narrow(root_entries),
        clusters: narrow(chosen.clusters),
        sectors_per_track: spt,
        heads,
    };
    // mkfs.fat refuses volumes whose data area would start less than 32 KiB before the end.
    let data_start_kib = u64::from(geo.data_start_sector()).div_ceil(2);
    if size_bytes / 1024 < data_start_kib + 32 {
        return Err(Error::NoGeometry {
            size_bytes,
            fat_type: requested,
        });
    }
    debug_assert!(
        geo.cluster_offset(geo.clusters + 2) <= geo.fs_bytes(),
        "the clusters fit in the volume because they were counted from the sectors left"
    );
    Ok(geo)
}

/// Every geometry count is bounded by the sector count, refused above `u32::MAX` at the start
/// of [`geometry`], so it fits the 32-bit fields.
fn narrow(v: u64) -> u32 {
    u32::try_from(v).expect("bounded by the sector count, at most u32::MAX")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_partition_is_fat16_like_mkfs() {
        // mkfs.fat -C img 30720 prints: 4 heads, 32 sectors/track, 4 sectors per cluster,
        // FAT of 60 sectors, 15321 clusters, 4 reserved sectors, 512 root entries.
        let g = compute(30 << 20, FatType::Auto).unwrap();
        assert_eq!(g.fat_type, FatType::Fat16);
        assert_eq!((g.heads, g.sectors_per_track), (4, 32));
        assert_eq!(g.sectors_per_cluster, 4);
        assert_eq!(g.fat_sectors, 60);
        assert_eq!(g.clusters, 15321);
        assert_eq!(g.reserved_sectors, 4);
        assert_eq!(g.root_entries, 512);
        assert_eq!(g.total_sectors, 61440);
    }

    #[test]
    fn esp_is_fat32_like_mkfs() {
        // mkfs.fat -C img 524288: 63 sectors/track, 32 heads, 1048572 sectors, 8 sectors per
        // cluster, 1024-sector FATs, 130811 clusters, 32 reserved sectors.
        let g = compute(512 << 20, FatType::Auto).unwrap();
        assert_eq!(g.fat_type, FatType::Fat32);
        assert_eq!((g.heads, g.sectors_per_track), (32, 63));
        assert_eq!(g.total_sectors, 1_048_572);
        assert_eq!(g.sectors_per_cluster, 8);
        assert_eq!(g.fat_sectors, 1024);
        assert_eq!(g.clusters, 130_811);
        assert_eq!(g.reserved_sectors, 32);
        assert_eq!(g.root_entries, 0);
    }

    #[test]
    fn forced_fat32_too_small_is_refused() {
        match compute(30 << 20, FatType::Fat32) {
            Err(Error::TooSmallForFat32 { clusters, .. }) => {
                assert!(clusters > 0 && clusters < MIN_CLUST_32)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            compute(64 << 20, FatType::Fat32).unwrap().fat_type,
            FatType::Fat32
        );
    }

    #[test]
    fn chs_table() {
        assert_eq!(chs(4096), (2, 16));
        assert_eq!(chs(4097), (2, 32));
        assert_eq!(chs(61440), (4, 32));
        assert_eq!(chs(524_288), (16, 32));
        assert_eq!(chs(524_289), (16, 63));
        assert_eq!(chs(8_388_608), (255, 63));
    }
}
