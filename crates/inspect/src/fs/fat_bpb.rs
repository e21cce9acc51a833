//! The FAT boot sector (BIOS parameter block): every field `fatfs` validates, checked in
//! 64-bit arithmetic, plus the volume inside its partition and a FAT big enough for its
//! clusters. The partition table reader uses it too, to tell a bare FAT volume from an MBR.

use crate::bytes::{le16, le32};

/// The FAT variant, from the cluster count (as the specification defines it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

/// The boot sector fields, checked.
#[derive(Clone, Debug)]
pub(crate) struct Bpb {
    pub(super) bytes_per_sector: u64,
    pub(super) sectors_per_cluster: u64,
    pub(super) reserved: u64,
    pub(super) fats: u64,
    pub(super) root_entries: u64,
    pub(super) total_sectors: u64,
    pub(super) sectors_per_fat: u64,
    pub(super) root_cluster: u32,
    pub(super) volume_id: Option<u32>,
    pub(super) label: Option<String>,
    pub(super) fat_type: FatType,
    pub(super) clusters: u64,
    pub(super) first_data_sector: u64,
}

/// True when `b` (512 bytes) is a plausible FAT boot sector.
pub(crate) fn looks_like_boot_sector(b: &[u8]) -> bool {
    b.len() >= 512 && (b[0] == 0xeb || b[0] == 0xe9) && Bpb::parse(b, None).is_ok()
}

/// The geometry fields of a boot sector, each checked on its own.
struct Geometry {
    bps: u64,
    spc: u64,
    reserved: u64,
    fats: u64,
    root_entries: u64,
    total: u64,
    spf: u64,
    is32: bool,
}

impl Geometry {
    fn read(b: &[u8]) -> Result<Self, String> {
        let w16 = |o| u64::from(le16(b, o));
        let bps = w16(11);
        let spc = u64::from(b[13]);
        let reserved = w16(14);
        let fats = u64::from(b[16]);
        let root_entries = w16(17);
        let total16 = w16(19);
        let spf16 = w16(22);
        let total32 = u64::from(le32(b, 32));
        if !bps.is_power_of_two() || !(512..=4096).contains(&bps) {
            return Err(format!("{bps} bytes per sector"));
        }
        if !spc.is_power_of_two() || spc > 128 {
            return Err(format!("{spc} sectors per cluster"));
        }
        if reserved == 0 {
            return Err("no reserved sectors".into());
        }
        if fats == 0 {
            return Err("no FATs".into());
        }
        let is32 = spf16 == 0;
        let spf = if is32 { u64::from(le32(b, 36)) } else { spf16 };
        if spf == 0 {
            return Err("zero sectors per FAT".into());
        }
        if (total16 == 0) == (total32 == 0) {
            return Err("both or neither of the 16- and 32-bit sector counts are set".into());
        }
        let total = if total16 != 0 { total16 } else { total32 };
        if is32 && (root_entries != 0 || total16 != 0) {
            return Err("FAT32 with a fixed root directory or a 16-bit sector count".into());
        }
        if !is32 && root_entries == 0 {
            return Err("FAT12/16 without root directory entries".into());
        }
        if is32 && le16(b, 42) != 0 {
            return Err(format!("unknown FAT32 version {}", le16(b, 42)));
        }
        Ok(Self {
            bps,
            spc,
            reserved,
            fats,
            root_entries,
            total,
            spf,
            is32,
        })
    }
}

impl Bpb {
    /// Parses and checks a boot sector; `part_len` bounds the volume when known.
    pub(crate) fn parse(b: &[u8], part_len: Option<u64>) -> Result<Self, String> {
        if b.len() < 512 {
            return Err("boot sector shorter than 512 bytes".into());
        }
        let g = Geometry::read(b)?;
        let (bps, total, spf) = (g.bps, g.total, g.spf);
        let root_dir_sectors = (g.root_entries * 32).div_ceil(bps);
        let first_data = g.reserved + g.fats * spf + root_dir_sectors;
        if first_data >= total {
            return Err(format!(
                "{total} sectors, but the data area would start at sector {first_data}"
            ));
        }
        let clusters = (total - first_data) / g.spc;
        let fat_type = if clusters < 4085 {
            FatType::Fat12
        } else if clusters < 65525 {
            FatType::Fat16
        } else {
            FatType::Fat32
        };
        if g.is32 != (fat_type == FatType::Fat32) {
            return Err(format!(
                "{clusters} clusters do not match the {} boot sector layout",
                if g.is32 { "FAT32" } else { "FAT12/16" }
            ));
        }
        if clusters == 0 {
            return Err("no data clusters".into());
        }
        let bits = match fat_type {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        };
        if spf * bps * 8 / bits < clusters + 2 {
            return Err(format!(
                "a FAT of {spf} sectors cannot hold {clusters} clusters"
            ));
        }
        if let Some(len) = part_len {
            if total * bps > len {
                return Err(format!(
                    "the volume ({} bytes) is larger than its partition ({len} bytes)",
                    total * bps
                ));
            }
        }
        let (root_cluster, ext) = if g.is32 {
            let rc = le32(b, 44);
            if rc < 2 || u64::from(rc) >= clusters + 2 {
                return Err(format!(
                    "root directory cluster {rc} is outside the data area"
                ));
            }
            if u64::from(le16(b, 48)) >= g.reserved || u64::from(le16(b, 50)) >= g.reserved {
                return Err("FSInfo or backup boot sector outside the reserved area".into());
            }
            (rc, 64)
        } else {
            (0, 36)
        };
        let (volume_id, label) = if b[ext + 2] == 0x29 {
            let l = String::from_utf8_lossy(&b[ext + 7..ext + 18])
                .trim_end()
                .to_string();
            (
                Some(le32(b, ext + 3)),
                (!l.is_empty() && l != "NO NAME").then_some(l),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            bytes_per_sector: bps,
            sectors_per_cluster: g.spc,
            reserved: g.reserved,
            fats: g.fats,
            root_entries: g.root_entries,
            total_sectors: total,
            sectors_per_fat: spf,
            root_cluster,
            volume_id,
            label,
            fat_type,
            clusters,
            first_data_sector: first_data,
        })
    }

    pub(super) fn cluster_size(&self) -> u64 {
        self.bytes_per_sector * self.sectors_per_cluster
    }
}
