//! MBR: the four primary entries and the EBR chain of an extended partition checked before
//! `mbrman` reads them.

use std::sync::Arc;

use imgbuild_partition::{self as partition, mbr_is_extended, Entry};

use super::{
    check_inside, check_overlaps, Parsed, Partition, Table, TableKind, MAX_LOGICAL, SECTOR,
    SECTOR_U32,
};
use crate::bytes::{le32, len64};
use crate::error::{chain, Error, Result, Where};
use crate::guard::guard;
use crate::io::{Budget, Disk, Slice, BASE_BUDGET};

struct RawEntry {
    boot: u8,
    sys: u8,
    start: u64,
    sectors: u64,
}

fn raw_entry(b: &[u8]) -> RawEntry {
    RawEntry {
        boot: b[0],
        sys: b[4],
        start: u64::from(le32(b, 8)),
        sectors: u64::from(le32(b, 12)),
    }
}

/// Reads an MBR; `iso`: the image holds an ISO 9660 volume (an entry from LBA 0 is then
/// syslinux's isohybrid entry, not corruption).
pub(super) fn read_mbr(
    image: &std::path::Path,
    disk: &Arc<Disk>,
    lba0: &[u8; 512],
    iso: bool,
) -> Result<Parsed> {
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
        if e.sys != 0 && e.start == 0 && iso {
            return isohybrid(image, disk, lba0);
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
    Ok(parsed(sig, partitions, warnings))
}

fn parsed(sig: u32, partitions: Vec<Partition>, warnings: Vec<String>) -> Parsed {
    Parsed {
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
    }
}

/// syslinux's isohybrid MBR (as `xorriso -isohybrid-mbr` writes it): entry 1 spans the ISO
/// from LBA 0 (it is the volume itself, read as that partition), the others (an EFI image
/// with `-isohybrid-gpt-basdat`) as usual. Read here, not by `mbrman` (which cannot take an
/// entry at LBA 0); no extended partitions.
fn isohybrid(image: &std::path::Path, disk: &Disk, lba0: &[u8; 512]) -> Result<Parsed> {
    let disk_sectors = disk.size() / SECTOR;
    let mut warnings = Vec::new();
    let mut partitions = Vec::new();
    for i in 0..4u32 {
        let o = 446 + 16 * usize::try_from(i).unwrap_or(0);
        let e = raw_entry(&lba0[o..o + 16]);
        if e.sys == 0 {
            continue;
        }
        if mbr_is_extended(e.sys) {
            return Err(Error::Unsupported {
                at: Where::image(image),
                what: "an extended partition in an isohybrid MBR".into(),
            });
        }
        let mut part = Partition {
            entry: Entry::mbr(
                i + 1,
                &partition::MbrPartition {
                    first_lba: e.start,
                    sectors: e.sectors,
                    type_byte: e.sys,
                    bootable: e.boot == 0x80,
                },
            ),
            readable: e.sectors > 0,
        };
        if e.sectors == 0 {
            warnings.push(format!("partition {}: zero sectors: not read", i + 1));
        }
        if e.start == 0 {
            // The volume: only its end is checked (it starts over the table by design).
            if part.entry.last_lba >= disk_sectors {
                warnings.push(format!(
                    "partition {}: the isohybrid entry ends past the image: not read",
                    i + 1
                ));
                part.readable = false;
            }
        } else {
            check_inside(&mut part, disk_sectors, &mut warnings);
        }
        partitions.push(part);
    }
    Ok(parsed(le32(lba0, 440), partitions, warnings))
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
