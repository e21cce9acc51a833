//! Partition tables: GPT (through the `gpt` crate) and MBR (through `mbrman`), each after
//! this module has checked everything those crates would trust: header sizes, entry counts
//! and sizes, CRCs, that the entry array and every partition lie inside the disk, the EBR
//! chain of an extended partition. Inconsistencies that do not endanger reading (a damaged
//! backup GPT, overlapping partitions, a partition past the end of a truncated image) are
//! reported as warnings; the partitions concerned are then not read.

mod gpt;
mod mbr;

use std::sync::Arc;

use imgbuild_partition::Entry;
use serde::Serialize;

use crate::error::{Error, Result, Where};
use crate::io::Disk;

/// Sector size assumed for partition tables (4 KiB-sector images are not supported).
pub const SECTOR: u64 = 512;
/// [`SECTOR`] as `mbrman` takes it.
const SECTOR_U32: u32 = 512;
/// At most this many GPT entries (the usual 128 needs 16 KiB; 4096 is 512 KiB).
pub const MAX_GPT_ENTRIES: u32 = 4096;
/// At most this many logical partitions in an MBR extended partition.
pub const MAX_LOGICAL: usize = 128;

/// The partition table of an image.
#[derive(Clone, Debug, Serialize)]
pub struct Table {
    /// `gpt`, `mbr` or `none` (a filesystem spanning the whole image, or nothing).
    pub kind: TableKind,
    /// GPT disk GUID or MBR disk signature (`0x2178694e`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<String>,
    /// Sector size the table was read with.
    pub sector_size: u64,
    /// GPT: first and last LBA usable for partitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_usable_lba: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// GPT: the last LBA usable for partitions.
    pub last_usable_lba: Option<u64>,
    /// GPT: number of entries in the partition entry array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u32>,
    /// GPT: which header was used (`primary`, or `backup` when the primary is damaged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<&'static str>,
    /// GPT: whether the backup header at the end of the disk is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_ok: Option<bool>,
}

/// Kind of partition table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// A GUID partition table.
    Gpt,
    /// An MBR (DOS) partition table.
    Mbr,
    /// No partition table: the whole disk is one filesystem.
    None,
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TableKind::Gpt => "GPT",
            TableKind::Mbr => "MBR (dos)",
            TableKind::None => "none",
        })
    }
}

/// One partition (or, without a table, the whole image as partition 0): the table entry in
/// the shape the manifest uses too, and whether it can be read.
#[derive(Clone, Debug, Serialize)]
pub struct Partition {
    #[serde(flatten)]
    /// The table's entry for it.
    pub entry: Entry,
    /// False when the partition is not inside the image (then it is not read).
    pub readable: bool,
}

impl Partition {
    /// `2 (nixos)`-style description used in messages.
    pub fn describe(&self, label: Option<&str>) -> String {
        let name = label
            .or(self.entry.name.as_deref())
            .filter(|n| !n.is_empty());
        match (self.entry.number, name) {
            (0, _) => "0 (whole image)".to_string(),
            (n, Some(l)) => format!("{n} ({l})"),
            (n, None) => n.to_string(),
        }
    }
}

pub(crate) struct Parsed {
    pub table: Table,
    pub partitions: Vec<Partition>,
    pub warnings: Vec<String>,
}

/// GUID in the mixed-endian on-disk layout -> upper-case text.
pub(crate) fn guid_text(b: &[u8]) -> String {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    uuid::Uuid::from_bytes_le(a)
        .hyphenated()
        .to_string()
        .to_uppercase()
}

/// Reads the partition table. `Ok(None)` when there is neither a GPT nor an MBR partition
/// table (the caller then probes the whole image for a filesystem). `iso`: the image holds
/// an ISO 9660 volume, so an MBR entry from LBA 0 is syslinux's isohybrid one.
pub(crate) fn read(image: &std::path::Path, disk: &Arc<Disk>, iso: bool) -> Result<Option<Parsed>> {
    let at = || Where::image(image);
    let size = disk.size();
    if size < SECTOR * 2 {
        return Ok(None);
    }
    let mut lba0 = [0u8; 512];
    let mut lba1 = [0u8; 512];
    disk.read_exact_at(0, &mut lba0)
        .map_err(|source| Error::Io { at: at(), source })?;
    disk.read_exact_at(SECTOR, &mut lba1)
        .map_err(|source| Error::Io { at: at(), source })?;
    let mbr_sig = lba0[510] == 0x55 && lba0[511] == 0xaa;
    let protective = mbr_sig && (0..4).any(|i| lba0[446 + i * 16 + 4] == 0xee);
    if &lba1[..8] == b"EFI PART" || protective {
        return gpt::read_gpt(image, disk, protective, iso).map(Some);
    }
    // A FAT boot sector also ends in 55 AA: a bare filesystem is not a partition table.
    if !mbr_sig || crate::fs::fat_bpb::looks_like_boot_sector(&lba0) {
        return Ok(None);
    }
    mbr::read_mbr(image, disk, &lba0, iso).map(Some)
}

fn check_inside(part: &mut Partition, disk_sectors: u64, warnings: &mut Vec<String>) {
    if part.readable && part.entry.last_lba >= disk_sectors {
        warnings.push(format!(
            "partition {}: ends at LBA {}, past the end of the image (LBA {}): not read",
            part.entry.number,
            part.entry.last_lba,
            disk_sectors.saturating_sub(1)
        ));
        part.readable = false;
    }
    if part.readable && part.entry.first_lba == 0 {
        warnings.push(format!(
            "partition {}: starts at LBA 0, over the partition table: not read",
            part.entry.number
        ));
        part.readable = false;
    }
}

fn check_overlaps(parts: &[Partition], warnings: &mut Vec<String>) {
    let mut sorted: Vec<&Partition> = parts
        .iter()
        .filter(|p| p.entry.size > 0 && !p.entry.flags.iter().any(|f| f == "extended"))
        .collect();
    sorted.sort_by_key(|p| (p.entry.first_lba, p.entry.number));
    for w in sorted.windows(2) {
        if w[1].entry.first_lba <= w[0].entry.last_lba {
            warnings.push(format!(
                "partitions {} (LBA {}..={}) and {} (LBA {}..={}) overlap",
                w[0].entry.number,
                w[0].entry.first_lba,
                w[0].entry.last_lba,
                w[1].entry.number,
                w[1].entry.first_lba,
                w[1].entry.last_lba
            ));
        }
    }
}
