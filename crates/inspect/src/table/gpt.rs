//! GPT: both headers and their entry arrays checked (CRCs, sizes, counts, inside the disk)
//! before the `gpt` crate reads the entries of the one chosen.

use std::collections::BTreeMap;
use std::sync::Arc;

use imgbuild_partition::{self as partition, Entry};

use super::{
    check_inside, check_overlaps, guid_text, Parsed, Partition, Table, TableKind, MAX_GPT_ENTRIES,
    SECTOR,
};
use crate::bytes::{le32, le64, to_usize};
use crate::error::{chain, Error, Result, Where};
use crate::guard::guard;
use crate::io::{Budget, Disk, Slice, BASE_BUDGET};

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

/// Reads a GPT: both headers checked, one chosen, its entries read through the `gpt` crate.
/// `iso`: the image holds an ISO 9660 volume, so an entry from LBA 0 is the volume itself
/// (`xorriso -isohybrid-gpt-basdat`): read as that partition, not checked against the usable
/// range, and other partitions may lie inside it (the EFI image is a file of the ISO); its
/// hybrid MBR has no protective entry by design.
pub(super) fn read_gpt(
    image: &std::path::Path,
    disk: &Arc<Disk>,
    protective: bool,
    iso: bool,
) -> Result<Parsed> {
    let mut warnings = Vec::new();
    let disk_sectors = disk.size() / SECTOR;
    if !disk.size().is_multiple_of(SECTOR) {
        warnings.push(format!(
            "the image size ({} bytes) is not a multiple of {SECTOR}",
            disk.size()
        ));
    }
    if !protective && !iso {
        warnings.push("GPT without a protective MBR (type 0xEE entry)".into());
    }
    let Chosen {
        hdr,
        which,
        backup_ok,
    } = choose_header(image, disk, &mut warnings)?;
    let entries = read_entries(image, disk, &hdr)?;
    let partitions = partitions(&entries, &hdr, disk_sectors, iso, &mut warnings);
    let others: Vec<Partition> = partitions
        .iter()
        .filter(|p| !(iso && p.entry.first_lba == 0))
        .cloned()
        .collect();
    check_overlaps(&others, &mut warnings);
    Ok(Parsed {
        table: Table {
            kind: TableKind::Gpt,
            disk_id: Some(hdr.disk_guid.clone()),
            sector_size: SECTOR,
            first_usable_lba: Some(hdr.first_usable),
            last_usable_lba: Some(hdr.last_usable),
            entries: Some(hdr.num_parts),
            header: Some(which),
            backup_ok: Some(backup_ok),
        },
        partitions,
        warnings,
    })
}

/// The GPT header read: the primary if it and its entry array are whole, else the backup if
/// it is (like the kernel and sgdisk).
struct Chosen {
    hdr: GptHeader,
    /// `primary` or `backup`.
    which: &'static str,
    /// Whether the backup header and its entry array are valid.
    backup_ok: bool,
}

/// Reads both headers, picks one, and warns about the other.
fn choose_header(
    image: &std::path::Path,
    disk: &Arc<Disk>,
    warnings: &mut Vec<String>,
) -> Result<Chosen> {
    let at = || Where::image(image);
    let disk_sectors = disk.size() / SECTOR;
    // A header with a valid CRC but unusable fields is reported and treated as absent: the
    // other copy may still be good.
    let mut header_errors: Vec<Error> = Vec::new();
    let mut checked = |lba, which, warnings: &mut Vec<String>| {
        gpt_header(image, disk, lba, which, warnings).unwrap_or_else(|e| {
            header_errors.push(e);
            None
        })
    };
    let primary = checked(1, "primary", warnings);
    let backup_lba = disk_sectors - 1;
    let backup = checked(backup_lba, "backup", warnings);
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
    Ok(Chosen {
        hdr,
        which,
        backup_ok: backup.is_some() && backup_ok,
    })
}

/// The entries of the chosen header's array, through the `gpt` crate.
fn read_entries(
    image: &std::path::Path,
    disk: &Arc<Disk>,
    hdr: &GptHeader,
) -> Result<BTreeMap<u32, gpt::partition::Partition>> {
    let at = || Where::image(image);
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
    guard("gpt", at, || {
        gpt::partition::file_read_partitions(
            &mut slice,
            &header,
            gpt::disk::LogicalBlockSize::Lb512,
        )
        .map_err(|e| Error::Corrupt {
            at: at(),
            reason: format!("GPT entries: {}", chain(&e)),
        })
    })
}

/// The used entries as partitions, each checked against the usable range and the disk.
fn partitions(
    entries: &BTreeMap<u32, gpt::partition::Partition>,
    hdr: &GptHeader,
    disk_sectors: u64,
    iso: bool,
    warnings: &mut Vec<String>,
) -> Vec<Partition> {
    let mut partitions = Vec::new();
    for (&number, p) in entries {
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
        } else if iso && p.first_lba == 0 {
            // The ISO volume itself: only its end is checked.
            if p.last_lba >= disk_sectors {
                warnings.push(format!(
                    "partition {number}: the isohybrid entry ends past the image: not read"
                ));
                part.readable = false;
            }
            partitions.push(part);
            continue;
        } else if p.first_lba < hdr.first_usable || p.last_lba > hdr.last_usable {
            warnings.push(format!(
                "partition {number}: LBAs {}..={} outside the usable range {}..={}",
                p.first_lba, p.last_lba, hdr.first_usable, hdr.last_usable
            ));
        }
        check_inside(&mut part, disk_sectors, warnings);
        partitions.push(part);
    }
    partitions
}
