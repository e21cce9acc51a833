//! Partition tables: GPT (through the `gpt` crate) and MBR (through `mbrman`), each after
//! this module has checked everything those crates would trust: header sizes, entry counts
//! and sizes, CRCs, that the entry array and every partition lie inside the disk, the EBR
//! chain of an extended partition. Inconsistencies that do not endanger reading (a damaged
//! backup GPT, overlapping partitions, a partition past the end of a truncated image) are
//! reported as warnings; the partitions concerned are then not read.

use std::sync::Arc;

use imgbuild_partition::{self as partition, mbr_is_extended, Entry};
use serde::Serialize;

use crate::bytes::{le32, le64, len64, to_usize};
use crate::error::{chain, Error, Result, Where};
use crate::guard::guard;
use crate::io::{Budget, Disk, Slice, BASE_BUDGET};

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
/// table (the caller then probes the whole image for a filesystem).
pub(crate) fn read(image: &std::path::Path, disk: &Arc<Disk>) -> Result<Option<Parsed>> {
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
        return read_gpt(image, disk, protective).map(Some);
    }
    // A FAT boot sector also ends in 55 AA: a bare filesystem is not a partition table.
    if !mbr_sig || crate::fs::fat_bpb::looks_like_boot_sector(&lba0) {
        return Ok(None);
    }
    read_mbr(image, disk, &lba0).map(Some)
}

#[derive(Clone)]
struct GptHeader {
    guid_bytes: [u8; 16],
    lba: u64,
    backup_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: String,
    part_start: u64,
    num_parts: u32,
    part_size: u32,
    crc_parts: u32,
}

/// Reads and checks the header at `lba`. `Ok(None)`: no header there (bad signature or CRC).
/// `Err`: a header with a valid CRC whose fields are unusable.
fn gpt_header(
    image: &std::path::Path,
    disk: &Disk,
    lba: u64,
    which: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<GptHeader>> {
    let at = || Where::image(image);
    let corrupt = |reason: String| Error::Corrupt {
        at: at(),
        reason: format!("{which} GPT header (LBA {lba}): {reason}"),
    };
    let mut b = [0u8; 512];
    disk.read_exact_at(lba * SECTOR, &mut b)
        .map_err(|source| Error::Io { at: at(), source })?;
    if &b[..8] != b"EFI PART" {
        return Ok(None);
    }
    // A header counts as present when its CRC matches, computed over its header size (the
    // UEFI rule) or over 92 bytes (what the gpt crate does): every header the gpt crate could
    // pick is then checked below.
    let hsize = to_usize(u64::from(le32(&b, 12)));
    let stored = le32(&b, 16);
    let mut h = b;
    h[16..20].fill(0);
    let spec_ok = (92..=512).contains(&hsize) && crc32fast::hash(&h[..hsize]) == stored;
    if !spec_ok && crc32fast::hash(&h[..92]) != stored {
        return Ok(None);
    }
    let disk_sectors = disk.size() / SECTOR;
    let mut guid_bytes = [0u8; 16];
    guid_bytes.copy_from_slice(&b[56..72]);
    let hdr = GptHeader {
        guid_bytes,
        lba: le64(&b, 24),
        backup_lba: le64(&b, 32),
        first_usable: le64(&b, 40),
        last_usable: le64(&b, 48),
        disk_guid: guid_text(&b[56..72]),
        part_start: le64(&b, 72),
        num_parts: le32(&b, 80),
        part_size: le32(&b, 84),
        crc_parts: le32(&b, 88),
    };
    if hdr.lba != lba {
        return Err(corrupt(format!("says it is at LBA {}", hdr.lba)));
    }
    if hdr.part_size != 128 {
        return Err(Error::Unsupported {
            at: at(),
            what: format!(
                "{which} GPT header: partition entries of {} bytes (only 128 is read)",
                hdr.part_size
            ),
        });
    }
    if hdr.num_parts == 0 || hdr.num_parts > MAX_GPT_ENTRIES {
        return Err(corrupt(format!(
            "{} partition entries (at most {MAX_GPT_ENTRIES} are read)",
            hdr.num_parts
        )));
    }
    let array_sectors = (u64::from(hdr.num_parts) * 128).div_ceil(SECTOR);
    let array_end = hdr.part_start.checked_add(array_sectors);
    if hdr.part_start < 2 || array_end.is_none_or(|e| e > disk_sectors) {
        return Err(corrupt(format!(
            "entry array at LBA {} ({} entries) is not inside the disk ({disk_sectors} sectors)",
            hdr.part_start, hdr.num_parts
        )));
    }
    if hdr.first_usable > hdr.last_usable.saturating_add(1) || hdr.first_usable >= disk_sectors {
        return Err(corrupt(format!(
            "usable LBAs {}..={} are not inside the disk ({disk_sectors} sectors)",
            hdr.first_usable, hdr.last_usable
        )));
    }
    if hdr.last_usable >= disk_sectors {
        // A truncated image: the partitions past its end are reported and not read.
        warnings.push(format!(
            "{which} GPT header: usable LBAs end at {}, past the end of the image ({disk_sectors} sectors): truncated?",
            hdr.last_usable
        ));
    }
    Ok(Some(hdr))
}

fn read_gpt(image: &std::path::Path, disk: &Arc<Disk>, protective: bool) -> Result<Parsed> {
    let at = || Where::image(image);
    let mut warnings = Vec::new();
    let disk_sectors = disk.size() / SECTOR;
    if !disk.size().is_multiple_of(SECTOR) {
        warnings.push(format!(
            "the image size ({} bytes) is not a multiple of {SECTOR}",
            disk.size()
        ));
    }
    if !protective {
        warnings.push("GPT without a protective MBR (type 0xEE entry)".into());
    }
    // A header with a valid CRC but unusable fields is reported and treated as absent: the
    // other copy may still be good.
    let mut header_errors: Vec<Error> = Vec::new();
    let mut checked = |lba, which, warnings: &mut Vec<String>| {
        gpt_header(image, disk, lba, which, warnings).unwrap_or_else(|e| {
            header_errors.push(e);
            None
        })
    };
    let primary = checked(1, "primary", &mut warnings);
    let backup_lba = disk_sectors - 1;
    let backup = checked(backup_lba, "backup", &mut warnings);
    let array_ok = |h: &GptHeader| -> Result<bool> {
        let mut array = vec![0u8; to_usize(u64::from(h.num_parts)) * 128];
        disk.read_exact_at(h.part_start * SECTOR, &mut array)
            .map_err(|source| Error::Io { at: at(), source })?;
        Ok(crc32fast::hash(&array) == h.crc_parts)
    };
    let primary_ok = match &primary {
        Some(h) => array_ok(h)?,
        None => false,
    };
    let backup_ok = match &backup {
        Some(h) => array_ok(h)?,
        None => false,
    };
    // Like the kernel and sgdisk: the primary if it is whole, else the backup if it is.
    let (hdr, which) = match (&primary, &backup) {
        (Some(h), _) if primary_ok => (h.clone(), "primary"),
        (_, Some(b)) if backup_ok => {
            warnings.push(match &primary {
                Some(_) => "the primary GPT entry array is damaged (CRC); using the backup".into(),
                None => "the primary GPT header is damaged; using the backup header".into(),
            });
            (b.clone(), "backup")
        }
        (None, None) if !header_errors.is_empty() => {
            // The first unusable header's own error says why.
            return Err(header_errors.swap_remove(0));
        }
        (None, None) => {
            return Err(Error::Corrupt {
                at: at(),
                reason:
                    "protective MBR, but neither the primary nor the backup GPT header is valid \
                         (bad signature or CRC; a truncated image loses the backup)"
                        .into(),
            })
        }
        _ => {
            return Err(Error::Corrupt {
                at: at(),
                reason: "the GPT entry arrays do not match their CRCs (primary and backup)".into(),
            })
        }
    };
    warnings.extend(header_errors.iter().map(|e| chain(e)));
    if backup.is_none() {
        warnings.push(format!(
            "no valid backup GPT header at the last sector (LBA {backup_lba}): image truncated or extended?"
        ));
    } else if !backup_ok && which == "primary" {
        warnings.push("the backup GPT entry array is damaged (CRC)".into());
    } else if which == "primary" && hdr.backup_lba != backup_lba {
        warnings.push(format!(
            "the primary GPT header puts the backup at LBA {}, but the image ends at LBA {backup_lba}",
            hdr.backup_lba
        ));
    }
    // Everything the gpt crate trusts has been checked: entry size 128, a bounded entry count,
    // the array inside the disk and matching its CRC.
    let header = gpt::header::Header {
        signature: "EFI PART".into(),
        revision: (1, 0),
        header_size_le: 92,
        crc32: 0,
        reserved: 0,
        current_lba: hdr.lba,
        backup_lba: hdr.backup_lba,
        first_usable: hdr.first_usable,
        last_usable: hdr.last_usable,
        disk_guid: uuid::Uuid::from_bytes_le(hdr.guid_bytes),
        part_start: hdr.part_start,
        num_parts: hdr.num_parts,
        part_size: hdr.part_size,
        crc32_parts: hdr.crc_parts,
    };
    let mut slice = Slice::new(disk.clone(), 0, disk.size(), Budget::new(BASE_BUDGET));
    let entries = guard("gpt", at, || {
        gpt::partition::file_read_partitions(
            &mut slice,
            &header,
            gpt::disk::LogicalBlockSize::Lb512,
        )
        .map_err(|e| Error::Corrupt {
            at: at(),
            reason: format!("GPT entries: {}", chain(&e)),
        })
    })?;
    let mut partitions = Vec::new();
    for (&number, p) in &entries {
        if !p.is_used() {
            continue;
        }
        let mut part = Partition {
            entry: Entry::gpt(
                number,
                &partition::GptPartition {
                    name: p.name.clone(),
                    type_guid: p.part_type_guid.guid,
                    part_guid: p.part_guid,
                    first_lba: p.first_lba,
                    last_lba: p.last_lba,
                    attributes: p.flags,
                },
            ),
            readable: true,
        };
        if p.last_lba < p.first_lba {
            warnings.push(format!(
                "partition {number}: last LBA {} before first LBA {}",
                p.last_lba, p.first_lba
            ));
            part.readable = false;
            part.entry.size = 0;
        } else if p.first_lba < hdr.first_usable || p.last_lba > hdr.last_usable {
            warnings.push(format!(
                "partition {number}: LBAs {}..={} outside the usable range {}..={}",
                p.first_lba, p.last_lba, hdr.first_usable, hdr.last_usable
            ));
        }
        check_inside(&mut part, disk_sectors, &mut warnings);
        partitions.push(part);
    }
    check_overlaps(&partitions, &mut warnings);
    Ok(Parsed {
        table: Table {
            kind: TableKind::Gpt,
            disk_id: Some(hdr.disk_guid.clone()),
            sector_size: SECTOR,
            first_usable_lba: Some(hdr.first_usable),
            last_usable_lba: Some(hdr.last_usable),
            entries: Some(hdr.num_parts),
            header: Some(which),
            backup_ok: Some(backup.is_some() && backup_ok),
        },
        partitions,
        warnings,
    })
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

struct RawEntry {
    boot: u8,
    sys: u8,
    start: u64,
}

fn raw_entry(b: &[u8]) -> RawEntry {
    RawEntry {
        boot: b[0],
        sys: b[4],
        start: u64::from(le32(b, 8)),
    }
}

fn read_mbr(image: &std::path::Path, disk: &Arc<Disk>, lba0: &[u8; 512]) -> Result<Parsed> {
    let at = || Where::image(image);
    let corrupt = |reason: String| Error::Corrupt {
        at: at(),
        reason: format!("MBR: {reason}"),
    };
    let disk_sectors = disk.size() / SECTOR;
    // Check what mbrman trusts: boot flags, non-zero starts of used entries (its alignment
    // search unwraps an empty range otherwise), and an EBR chain that is bounded, strictly
    // increasing and whose sums fit in u32 (mbrman adds them unchecked).
    let mut extended = None;
    for i in 0..4 {
        let e = raw_entry(&lba0[446 + i * 16..462 + i * 16]);
        if e.boot != 0 && e.boot != 0x80 {
            return Err(corrupt(format!(
                "entry {}: boot flag {:#04x} (only 0x00 and 0x80 are valid)",
                i + 1,
                e.boot
            )));
        }
        if e.sys != 0 && e.start == 0 {
            return Err(corrupt(format!(
                "entry {} (type {:#04x}) starts at LBA 0",
                i + 1,
                e.sys
            )));
        }
        if mbr_is_extended(e.sys) && extended.is_none() {
            extended = Some(e);
        }
    }
    if let Some(ext) = &extended {
        walk_ebr_chain(image, disk, ext, disk_sectors)?;
    }
    let mut slice = Slice::new(disk.clone(), 0, disk.size(), Budget::new(BASE_BUDGET));
    let mbr = guard("mbrman", at, || {
        mbrman::MBR::read_from(&mut slice, SECTOR_U32).map_err(|e| corrupt(chain(&e)))
    })?;
    let mut warnings = Vec::new();
    let mut partitions = Vec::new();
    for (i, p) in mbr.iter() {
        if !p.is_used() {
            continue;
        }
        let number = u32::try_from(i).unwrap_or(u32::MAX);
        let start = u64::from(p.starting_lba);
        let sectors = u64::from(p.sectors);
        let mut part = Partition {
            entry: Entry::mbr(
                number,
                &partition::MbrPartition {
                    first_lba: start,
                    sectors,
                    type_byte: p.sys,
                    bootable: p.boot == 0x80,
                },
            ),
            readable: !p.is_extended(),
        };
        if sectors == 0 {
            warnings.push(format!("partition {number}: zero sectors: not read"));
            part.readable = false;
        }
        check_inside(&mut part, disk_sectors, &mut warnings);
        partitions.push(part);
    }
    check_overlaps(&partitions, &mut warnings);
    let sig = u32::from_le_bytes(mbr.header.disk_signature);
    Ok(Parsed {
        table: Table {
            kind: TableKind::Mbr,
            disk_id: Some(format!("{sig:#010x}")),
            sector_size: SECTOR,
            first_usable_lba: None,
            last_usable_lba: None,
            entries: None,
            header: None,
            backup_ok: None,
        },
        partitions,
        warnings,
    })
}

fn walk_ebr_chain(
    image: &std::path::Path,
    disk: &Disk,
    ext: &RawEntry,
    disk_sectors: u64,
) -> Result<()> {
    let corrupt = |reason: String| Error::Corrupt {
        at: Where::image(image),
        reason: format!("MBR extended partition: {reason}"),
    };
    let mut rel: u64 = 0;
    for n in 0.. {
        if n >= MAX_LOGICAL {
            return Err(Error::Limit {
                at: Where::image(image),
                what: "logical partitions in the extended partition".into(),
                limit: len64(MAX_LOGICAL),
            });
        }
        let lba = ext.start + rel;
        if lba >= disk_sectors || lba > u64::from(u32::MAX) {
            return Err(corrupt(format!(
                "EBR at LBA {lba} is past the end of the disk"
            )));
        }
        let mut b = [0u8; 512];
        disk.read_exact_at(lba * SECTOR, &mut b)
            .map_err(|source| Error::Io {
                at: Where::image(image),
                source,
            })?;
        if b[510] != 0x55 || b[511] != 0xaa {
            if n == 0 {
                return Ok(()); // an empty extended partition need not have an EBR
            }
            return Err(corrupt(format!("EBR at LBA {lba} has no 55 AA signature")));
        }
        let logical = raw_entry(&b[446..462]);
        let next = raw_entry(&b[462..478]);
        for (e, what) in [(&logical, "logical entry"), (&next, "next-EBR entry")] {
            if e.boot != 0 && e.boot != 0x80 {
                return Err(corrupt(format!(
                    "EBR at LBA {lba}: {what} has boot flag {:#04x}",
                    e.boot
                )));
            }
        }
        if logical.sys != 0 && (logical.start == 0 || lba + logical.start > u64::from(u32::MAX)) {
            return Err(corrupt(format!(
                "EBR at LBA {lba}: logical partition start {} is invalid",
                logical.start
            )));
        }
        if next.start == 0 {
            return Ok(());
        }
        if next.start <= rel || ext.start + next.start > u64::from(u32::MAX) {
            return Err(corrupt(format!(
                "EBR at LBA {lba}: next EBR at relative LBA {} does not move forward",
                next.start
            )));
        }
        rel = next.start;
    }
    Ok(())
}
