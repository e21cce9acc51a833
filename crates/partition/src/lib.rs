//! GPT and MBR partition tables as exact byte writes.
//!
//! Pure encoding: a layout (plain data) goes in, a list of [`Write`]s (absolute disk offset +
//! bytes) comes out; the caller puts them into the image. Nothing here touches a file, a clock
//! or a random number generator: GUIDs come in as parameters (the planner derives them from
//! its seed), so the same layout always gives the same bytes.
//!
//! * [`encode_gpt`]: protective MBR (LBA 0), primary header (LBA 1), 128 entries (LBA 2-33),
//!   backup entries (LBA N-33..N-2) and backup header (LBA N-1); 512-byte sectors. The tables
//!   are built by the `gpt` crate on a small sparse in-memory device of the disk's size, whose
//!   written sectors become the writes (the whole disk is never allocated).
//! * [`encode_mbr`]: the 512-byte DOS MBR at LBA 0 (disk signature, up to four primary
//!   partitions, boot flag), via `mbrman`, with the CHS fields `sfdisk` writes for an image file.

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
// Casts that may truncate, lose a sign or wrap are spelled out (`try_from` with a reason,
// `to_usize` for in-memory lengths); tests may cast freely.
#![cfg_attr(
    not(test),
    warn(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )
)]

mod entry;
mod sparse;

use std::collections::BTreeMap;

pub use uuid::Uuid;

use sparse::SparseDisk;

pub use entry::{gpt_type_name, mbr_is_extended, mbr_type_name, Entry, FsSummary};

/// Logical sector size of every table written here.
pub const SECTOR_SIZE: u64 = 512;
/// Number of GPT partition entries (each 128 bytes, so 32 sectors).
pub const GPT_ENTRY_COUNT: u32 = 128;
/// Sectors at the start of a GPT disk: protective MBR, header, 32 sectors of entries.
pub const GPT_HEAD_SECTORS: u64 = 34;
/// Sectors at the end of a GPT disk: 32 sectors of backup entries and the backup header.
pub const GPT_TAIL_SECTORS: u64 = 33;
/// Most primary partitions an MBR holds.
pub const MBR_MAX_PARTITIONS: usize = 4;

/// Well-known GPT partition type GUIDs.
pub mod types {
    use uuid::Uuid;

    /// EFI System Partition, `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
    pub const EFI_SYSTEM: Uuid = Uuid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
    /// Linux filesystem data, `0FC63DAF-8483-4772-8E79-3D69D8477DE4`.
    pub const LINUX_FILESYSTEM: Uuid = Uuid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);
    /// Extended Boot Loader Partition (XBOOTLDR), `BC13C2FF-59E6-4262-A352-B275FD6F7172`.
    pub const XBOOTLDR: Uuid = Uuid::from_u128(0xBC13C2FF_59E6_4262_A352_B275FD6F7172);
    /// BIOS boot partition (GRUB core.img), `21686148-6449-6E6F-744E-656564454649`.
    pub const BIOS_BOOT: Uuid = Uuid::from_u128(0x21686148_6449_6E6F_744E_656564454649);
}

/// Bytes to write at an absolute offset of the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Byte offset from the start of the disk (a multiple of 512).
    pub offset: u64,
    /// The bytes (a multiple of 512 long: whole sectors, zero padding included).
    pub bytes: Vec<u8>,
}

/// A GPT disk: 512-byte sectors, 128 entries, tables at both ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptLayout {
    /// Disk size in bytes, a multiple of 512. The backup header goes into the last sector.
    pub disk_size: u64,
    /// Disk GUID (in the usual string byte order; stored mixed-endian on disk).
    pub disk_guid: Uuid,
    /// If set, every partition must start on a multiple of this many bytes (e.g. 1 MiB).
    /// Must be a positive multiple of 512.
    pub require_alignment: Option<u64>,
    /// Partitions in table order: the first becomes partition 1 (entry 0).
    pub partitions: Vec<GptPartition>,
}

/// One GPT partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptPartition {
    /// Partition name, at most 36 UTF-16 code units.
    pub name: String,
    /// Partition type GUID (see [`types`]); must not be nil (nil marks an unused entry).
    pub type_guid: Uuid,
    /// Unique partition GUID; must not be nil and must differ from every other partition's.
    pub part_guid: Uuid,
    /// First sector of the partition.
    pub first_lba: u64,
    /// Last sector of the partition, inclusive.
    pub last_lba: u64,
    /// Attribute bits (bit 0 required, bit 2 legacy BIOS bootable, 48-63 type-specific).
    pub attributes: u64,
}

/// A DOS/MBR disk: 512-byte sectors, up to four primary partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MbrLayout {
    /// Disk size in bytes, a multiple of 512.
    pub disk_size: u64,
    /// Disk signature (`label-id` in sfdisk), stored little-endian at byte 440.
    pub disk_id: u32,
    /// If set, every partition must start on a multiple of this many bytes.
    /// Must be a positive multiple of 512.
    pub require_alignment: Option<u64>,
    /// Primary partitions in table order (entry 1..=4).
    pub partitions: Vec<MbrPartition>,
}

/// One primary MBR partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MbrPartition {
    /// First sector (< 2^32).
    pub first_lba: u64,
    /// Length in sectors (> 0, < 2^32).
    pub sectors: u64,
    /// Partition type byte, e.g. 0x0b (W95 FAT32), 0x0c (FAT32 LBA), 0x83 (Linux).
    /// Must not be 0 (unused) or an extended-partition type.
    pub type_byte: u8,
    /// Active flag (0x80).
    pub bootable: bool,
}

/// Why a layout cannot be encoded. Partition numbers are 1-based, as `sfdisk` prints them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The disk size is not a whole number of sectors.
    #[error("disk size {disk_size} is not a multiple of {SECTOR_SIZE} bytes")]
    DiskSizeNotSectorMultiple {
        /// The size given.
        disk_size: u64,
    },
    /// The disk cannot even hold the tables (plus one sector).
    #[error("disk size {disk_size} is too small: at least {min} bytes needed")]
    DiskTooSmall {
        /// The size given.
        disk_size: u64,
        /// The smallest size accepted.
        min: u64,
    },
    /// An alignment that is zero or not a whole number of sectors.
    #[error("alignment {align} is not a positive multiple of {SECTOR_SIZE} bytes")]
    InvalidAlignment {
        /// The alignment given, in bytes.
        align: u64,
    },
    /// More partitions than the table has entries.
    #[error("{count} partitions given, the table holds at most {max}")]
    TooManyPartitions {
        /// Partitions given.
        count: usize,
        /// Entries available.
        max: usize,
    },
    /// `last_lba < first_lba` (GPT) or zero sectors (MBR).
    #[error(
        "partition {partition} is empty or reversed: first LBA {first_lba}, last LBA {last_lba}"
    )]
    EmptyPartition {
        /// 1-based partition number.
        partition: usize,
        /// First sector given.
        first_lba: u64,
        /// Last sector (inclusive) given or computed; may be `first_lba - 1` for an empty one.
        last_lba: i128,
    },
    /// A partition that does not lie inside the usable sectors of the disk.
    #[error(
        "partition {partition} (LBA {first_lba}..={last_lba}) is outside the usable sectors \
         {first_usable}..={last_usable}"
    )]
    OutsideUsable {
        /// 1-based partition number.
        partition: usize,
        /// First sector given.
        first_lba: u64,
        /// Last sector (inclusive).
        last_lba: u64,
        /// First usable sector of the disk.
        first_usable: u64,
        /// Last usable sector of the disk (inclusive).
        last_usable: u64,
    },
    /// Two partitions share sectors.
    #[error(
        "partition {a} (LBA {a_first}..={a_last}) overlaps partition {b} (LBA {b_first}..={b_last})"
    )]
    Overlap {
        /// 1-based number of the first partition.
        a: usize,
        /// Its first sector.
        a_first: u64,
        /// Its last sector.
        a_last: u64,
        /// 1-based number of the second partition.
        b: usize,
        /// Its first sector.
        b_first: u64,
        /// Its last sector.
        b_last: u64,
    },
    /// A partition start that is not a multiple of the required alignment.
    #[error("partition {partition} starts at LBA {first_lba}, not a multiple of {align} bytes")]
    Misaligned {
        /// 1-based partition number.
        partition: usize,
        /// First sector given.
        first_lba: u64,
        /// Required alignment in bytes.
        align: u64,
    },
    /// A GPT partition name longer than the 36 UTF-16 units of an entry.
    #[error("partition {partition} name `{name}` is {units} UTF-16 units long, at most 36 fit")]
    NameTooLong {
        /// 1-based partition number.
        partition: usize,
        /// The name given.
        name: String,
        /// Its length in UTF-16 code units.
        units: usize,
    },
    /// A GPT partition name holding NUL, which ends a name shorter than 36 units: readers
    /// would see only what comes before it.
    #[error("partition {partition} name {name:?} contains NUL, which would end it early")]
    NameHasNul {
        /// 1-based partition number.
        partition: usize,
        /// The name given.
        name: String,
    },
    /// A nil type GUID (nil marks an unused GPT entry).
    #[error("partition {partition} has the nil type GUID (marks an unused entry)")]
    NilTypeGuid {
        /// 1-based partition number.
        partition: usize,
    },
    /// A nil unique partition GUID.
    #[error("partition {partition} has a nil unique partition GUID")]
    NilPartGuid {
        /// 1-based partition number.
        partition: usize,
    },
    /// Two partitions with the same unique GUID.
    #[error("partitions {a} and {b} share the unique partition GUID {guid}")]
    DuplicatePartGuid {
        /// 1-based number of the first partition.
        a: usize,
        /// 1-based number of the second partition.
        b: usize,
        /// The shared GUID.
        guid: Uuid,
    },
    /// An MBR entry whose start or length does not fit the 32-bit fields.
    #[error(
        "partition {partition} (first LBA {first_lba}, {sectors} sectors) does not fit \
         the 32-bit MBR fields"
    )]
    MbrOutOfRange {
        /// 1-based partition number.
        partition: usize,
        /// First sector given.
        first_lba: u64,
        /// Length given.
        sectors: u64,
    },
    /// MBR type 0 (unused) or an extended-partition type (logical partitions are not written).
    #[error("partition {partition} has MBR type {type_byte:#04x}, which is unused or extended")]
    MbrBadType {
        /// 1-based partition number.
        partition: usize,
        /// The type byte given.
        type_byte: u8,
    },
    /// The `gpt` crate refused the table (should not happen after validation).
    #[error("gpt encoder failed")]
    Gpt(#[source] gpt::GptError),
    /// The `gpt` crate failed to write the protective MBR.
    #[error("protective MBR encoder failed")]
    ProtectiveMbr(#[source] gpt::mbr::MBRError),
    /// The `mbrman` crate failed to write the MBR.
    #[error("MBR encoder failed")]
    Mbr(#[source] mbrman::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Sectors a GPT needs at the start and at the end of the disk: `(34, 33)`
/// (protective MBR + header + 32 entry sectors; 32 backup entry sectors + backup header).
pub const fn gpt_overhead_sectors() -> (u64, u64) {
    (GPT_HEAD_SECTORS, GPT_TAIL_SECTORS)
}

/// First and last (inclusive) usable LBA of a GPT disk of `disk_size` bytes:
/// `(34, disk_size/512 - 34)`.
pub fn gpt_usable_range(disk_size: u64) -> Result<(u64, u64)> {
    if !disk_size.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::DiskSizeNotSectorMultiple { disk_size });
    }
    let min = (GPT_HEAD_SECTORS + GPT_TAIL_SECTORS + 1) * SECTOR_SIZE;
    if disk_size < min {
        return Err(Error::DiskTooSmall { disk_size, min });
    }
    let sectors = disk_size / SECTOR_SIZE;
    Ok((GPT_HEAD_SECTORS, sectors - GPT_TAIL_SECTORS - 1))
}

fn check_alignment(align: Option<u64>) -> Result<Option<u64>> {
    match align {
        Some(a) if a == 0 || a % SECTOR_SIZE != 0 => Err(Error::InvalidAlignment { align: a }),
        a => Ok(a.map(|a| a / SECTOR_SIZE)),
    }
}

/// Checks that the inclusive ranges `(number, first, last)` are pairwise disjoint.
fn check_disjoint(mut ranges: Vec<(usize, u64, u64)>) -> Result<()> {
    ranges.sort_by_key(|&(n, first, _)| (first, n));
    for w in ranges.windows(2) {
        let ((a, a_first, a_last), (b, b_first, b_last)) = (w[0], w[1]);
        if b_first <= a_last {
            let (a, a_first, a_last, b, b_first, b_last) = if a < b {
                (a, a_first, a_last, b, b_first, b_last)
            } else {
                (b, b_first, b_last, a, a_first, a_last)
            };
            return Err(Error::Overlap {
                a,
                a_first,
                a_last,
                b,
                b_first,
                b_last,
            });
        }
    }
    Ok(())
}

/// Checks a GPT layout without encoding it.
pub fn validate_gpt(layout: &GptLayout) -> Result<()> {
    let (first_usable, last_usable) = gpt_usable_range(layout.disk_size)?;
    let align = check_alignment(layout.require_alignment)?;
    if layout.partitions.len() > GPT_ENTRY_COUNT as usize {
        return Err(Error::TooManyPartitions {
            count: layout.partitions.len(),
            max: GPT_ENTRY_COUNT as usize,
        });
    }
    let mut guids: BTreeMap<Uuid, usize> = BTreeMap::new();
    for (i, p) in layout.partitions.iter().enumerate() {
        let partition = i + 1;
        if p.last_lba < p.first_lba {
            return Err(Error::EmptyPartition {
                partition,
                first_lba: p.first_lba,
                last_lba: i128::from(p.last_lba),
            });
        }
        if p.first_lba < first_usable || p.last_lba > last_usable {
            return Err(Error::OutsideUsable {
                partition,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                first_usable,
                last_usable,
            });
        }
        if let Some(a) = align {
            if p.first_lba % a != 0 {
                return Err(Error::Misaligned {
                    partition,
                    first_lba: p.first_lba,
                    align: a * SECTOR_SIZE,
                });
            }
        }
        let units = p.name.encode_utf16().count();
        if units > 36 {
            return Err(Error::NameTooLong {
                partition,
                name: p.name.clone(),
                units,
            });
        }
        if p.name.contains('\0') {
            return Err(Error::NameHasNul {
                partition,
                name: p.name.clone(),
            });
        }
        if p.type_guid.is_nil() {
            return Err(Error::NilTypeGuid { partition });
        }
        if p.part_guid.is_nil() {
            return Err(Error::NilPartGuid { partition });
        }
        if let Some(&a) = guids.get(&p.part_guid) {
            return Err(Error::DuplicatePartGuid {
                a,
                b: partition,
                guid: p.part_guid,
            });
        }
        guids.insert(p.part_guid, partition);
    }
    check_disjoint(
        layout
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (i + 1, p.first_lba, p.last_lba))
            .collect(),
    )
}

/// Encodes a GPT disk: protective MBR, primary header and entries, backup entries and header.
///
/// Returns the writes in ascending offset order: `[0, 34*512)` and
/// `[disk_size - 33*512, disk_size)`. Unused entries are written as zeros, so the result is
/// correct on a disk that is not zero-filled. The protective MBR covers LBA 1 to the end of
/// the disk (size capped at `0xFFFFFFFF` sectors) and has disk signature 0.
pub fn encode_gpt(layout: &GptLayout) -> Result<Vec<Write>> {
    validate_gpt(layout)?;
    let sectors = layout.disk_size / SECTOR_SIZE;
    let device = SparseDisk::new(layout.disk_size);
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(device, Some(layout.disk_guid))
        .map_err(Error::Gpt)?;
    let entries: BTreeMap<u32, gpt::partition::Partition> = layout
        .partitions
        .iter()
        .zip(1u32..)
        .map(|(p, number)| {
            (
                number,
                gpt::partition::Partition {
                    part_type_guid: gpt::partition_types::Type {
                        guid: p.type_guid,
                        os: gpt::partition_types::OperatingSystem::None,
                    },
                    part_guid: p.part_guid,
                    first_lba: p.first_lba,
                    last_lba: p.last_lba,
                    flags: p.attributes,
                    name: p.name.clone(),
                },
            )
        })
        .collect();
    disk.update_partitions(entries).map_err(Error::Gpt)?;
    let mut device = disk.write().map_err(Error::Gpt)?;
    let protective_size = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    gpt::mbr::ProtectiveMBR::with_lb_size(protective_size)
        .overwrite_lba0(&mut device)
        .map_err(Error::ProtectiveMbr)?;
    Ok(device.into_writes())
}

/// Checks an MBR layout without encoding it.
pub fn validate_mbr(layout: &MbrLayout) -> Result<()> {
    if !layout.disk_size.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::DiskSizeNotSectorMultiple {
            disk_size: layout.disk_size,
        });
    }
    let min = 2 * SECTOR_SIZE;
    if layout.disk_size < min {
        return Err(Error::DiskTooSmall {
            disk_size: layout.disk_size,
            min,
        });
    }
    let align = check_alignment(layout.require_alignment)?;
    if layout.partitions.len() > MBR_MAX_PARTITIONS {
        return Err(Error::TooManyPartitions {
            count: layout.partitions.len(),
            max: MBR_MAX_PARTITIONS,
        });
    }
    let last_sector = layout.disk_size / SECTOR_SIZE - 1;
    for (i, p) in layout.partitions.iter().enumerate() {
        let partition = i + 1;
        if p.sectors == 0 {
            return Err(Error::EmptyPartition {
                partition,
                first_lba: p.first_lba,
                last_lba: i128::from(p.first_lba) - 1,
            });
        }
        if u32::try_from(p.first_lba).is_err() || u32::try_from(p.sectors).is_err() {
            return Err(Error::MbrOutOfRange {
                partition,
                first_lba: p.first_lba,
                sectors: p.sectors,
            });
        }
        let last_lba = p.first_lba + p.sectors - 1;
        if p.first_lba < 1 || last_lba > last_sector {
            return Err(Error::OutsideUsable {
                partition,
                first_lba: p.first_lba,
                last_lba,
                first_usable: 1,
                last_usable: last_sector,
            });
        }
        if let Some(a) = align {
            if p.first_lba % a != 0 {
                return Err(Error::Misaligned {
                    partition,
                    first_lba: p.first_lba,
                    align: a * SECTOR_SIZE,
                });
            }
        }
        if matches!(p.type_byte, 0x00 | 0x05 | 0x0f | 0x85 | 0xc5 | 0xd5) {
            return Err(Error::MbrBadType {
                partition,
                type_byte: p.type_byte,
            });
        }
    }
    check_disjoint(
        layout
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (i + 1, p.first_lba, p.first_lba + p.sectors - 1))
            .collect(),
    )
}

/// Heads and sectors per track `sfdisk` assumes for an image file (no real geometry).
const CHS_HEADS: u64 = 255;
const CHS_SECTORS: u64 = 63;

/// CHS address of `lba` as libfdisk (`sfdisk`) writes it for an image file: geometry 255
/// heads x 63 sectors; an address past cylinder 1023 is clamped to the last CHS address
/// (1023/254/63, bytes `fe ff ff`).
fn chs(lba: u64) -> mbrman::CHS {
    let lba = lba.min(CHS_HEADS * CHS_SECTORS * 1024 - 1);
    // Bounded by the clamp: sector 1..=63, head 0..=254, cylinder 0..=1023.
    let sector = u8::try_from(lba % CHS_SECTORS + 1).expect("1..=63");
    let track = lba / CHS_SECTORS;
    let head = u8::try_from(track % CHS_HEADS).expect("0..=254");
    let cylinder = u16::try_from(track / CHS_HEADS).expect("0..=1023");
    mbrman::CHS::new(cylinder, head, sector)
}

/// Encodes a DOS MBR: one 512-byte write at offset 0 (zero boot code, disk signature,
/// partition entries 1..=4, unused entries zero, 0x55AA).
pub fn encode_mbr(layout: &MbrLayout) -> Result<Vec<Write>> {
    validate_mbr(layout)?;
    let mut header = mbrman::MBRHeader::new(layout.disk_id.to_le_bytes());
    for (i, p) in layout.partitions.iter().enumerate() {
        let entry = header
            .get_mut(i + 1)
            .expect("an MBR has 4 entries and validate_mbr allowed at most 4 partitions");
        *entry = mbrman::MBRPartitionEntry {
            boot: if p.bootable { 0x80 } else { 0x00 },
            first_chs: chs(p.first_lba),
            sys: p.type_byte,
            last_chs: chs(p.first_lba + p.sectors - 1),
            starting_lba: u32::try_from(p.first_lba)
                .expect("validate_mbr checked that first_lba fits 32 bits"),
            sectors: u32::try_from(p.sectors)
                .expect("validate_mbr checked that sectors fits 32 bits"),
        };
    }
    let mut device = SparseDisk::new(layout.disk_size);
    header.write_into(&mut device).map_err(Error::Mbr)?;
    Ok(device.into_writes())
}

#[cfg(test)]
mod tests;
