//! The isohybrid system area: what makes the ISO a disk too, so `dd` to a USB stick boots.
//!
//! - Sector 0, the MBR: syslinux's `isohdpfx.bin` code (432 bytes) followed, as `isohybrid`
//!   and `xorriso -isohybrid-mbr` write it, by the BIOS boot image's first 512-byte sector
//!   (u32 LE at byte 432, then 4 zero bytes), which that code loads; the disk signature; two
//!   entries: a protective `0xEE` partition over the primary GPT (sectors 1 up to the EFI
//!   image) and, active, the EFI image as an `0xEF` partition, the one `xorriso
//!   -isohybrid-gpt-basdat` adds. This is a hybrid MBR as `gdisk` makes one (so `sgdisk -v`
//!   accepts it); xorriso's own first entry (type 0, sector 0 to the end, overlapping the
//!   second) is refused by `sgdisk` and is left out.
//! - Sectors 1 to 33: the primary GPT, one partition: the EFI image, typed as an ESP, so a
//!   UEFI firmware reading the stick as a disk finds systemd-boot there.
//! - After the volume: the backup GPT, the image padded to a whole MiB (xorriso's cylinder
//!   alignment, 64 heads of 32 sectors).
//!
//! aarch64 ISOs have no BIOS image and no MBR code (the sector's code bytes are zero); their
//! tables are the same.

use imgbuild_iso9660::{Extent, BLOCK, SYSTEM_AREA};
use imgbuild_partition as partition;

use crate::Result;

/// 512-byte sectors.
const SECTOR: u64 = 512;
/// The image is padded to a whole number of these (xorriso's cylinder alignment).
const ALIGN: u64 = 1 << 20;
/// The ESP type GUID.
const ESP_TYPE: uuid::Uuid = uuid::uuid!("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// The geometry `isohybrid` and xorriso give the MBR's CHS fields.
const HEADS: u64 = 64;
const SECTORS_PER_TRACK: u64 = 32;

/// What the hybrid tables are made from.
pub(crate) struct Input<'a> {
    /// Bytes of the ISO 9660 volume.
    pub volume_bytes: u64,
    /// The EFI image's extent in the volume.
    pub efi: Extent,
    /// The BIOS boot image's extent (x86_64).
    pub bios: Option<Extent>,
    /// The MBR boot code (`isohdpfx.bin`'s first 432 bytes), x86_64.
    pub mbr_code: Option<&'a [u8]>,
    /// The MBR disk signature.
    pub disk_id: u32,
    /// The GPT disk GUID.
    pub disk_guid: uuid::Uuid,
    /// The ESP entry's unique GUID.
    pub esp_guid: uuid::Uuid,
}

/// The hybrid tables as bytes.
pub(crate) struct Hybrid {
    /// The volume's system area: MBR and primary GPT (at most 32 KiB).
    pub system_area: Vec<u8>,
    /// The backup GPT, at offsets past the volume.
    pub tail: Vec<partition::Write>,
    /// Bytes of the whole image.
    pub image_size: u64,
    /// The GPT disk GUID.
    pub disk_guid: uuid::Uuid,
}

impl Hybrid {
    /// The MBR and both GPTs for `i`.
    pub(crate) fn new(i: &Input) -> Result<Hybrid> {
        let (_, tail_sectors) = partition::gpt_overhead_sectors();
        let image_size = (i.volume_bytes + tail_sectors * SECTOR).next_multiple_of(ALIGN);
        let efi_first = u64::from(i.efi.lba) * (BLOCK / SECTOR);
        let efi_sectors = i.efi.bytes.div_ceil(SECTOR);
        let writes = partition::encode_gpt(&partition::GptLayout {
            disk_size: image_size,
            disk_guid: i.disk_guid,
            require_alignment: None,
            partitions: vec![partition::GptPartition {
                name: "EFI boot image".into(),
                type_guid: ESP_TYPE,
                part_guid: i.esp_guid,
                first_lba: efi_first,
                last_lba: efi_first + efi_sectors - 1,
                attributes: 0,
            }],
        })?;
        let mut system_area = vec![0u8; SYSTEM_AREA];
        let mut tail = Vec::new();
        for w in writes {
            let end = w.offset + w.bytes.len() as u64;
            if end <= SYSTEM_AREA as u64 {
                let at = imgbuild_blockio::to_usize(w.offset);
                system_area[at..at + w.bytes.len()].copy_from_slice(&w.bytes);
            } else {
                tail.push(w);
            }
        }
        system_area[..512].copy_from_slice(&mbr(i, efi_first, efi_sectors));
        // Only what the tables use: the rest of the system area is zeros anyway.
        let (head_sectors, _) = partition::gpt_overhead_sectors();
        system_area.truncate(imgbuild_blockio::to_usize(head_sectors * SECTOR));
        Ok(Hybrid {
            system_area,
            tail,
            image_size,
            disk_guid: i.disk_guid,
        })
    }
}

/// A sector number in a 32-bit MBR field, saturated (an image past 2 TiB cannot say more).
fn lba32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The CHS address of sector `lba` in the 64-head, 32-sector geometry; past cylinder 1023,
/// the conventional `FE FF FF`.
fn chs(lba: u64) -> [u8; 3] {
    let c = lba / (HEADS * SECTORS_PER_TRACK);
    if c > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let h = (lba / SECTORS_PER_TRACK) % HEADS;
    let s = lba % SECTORS_PER_TRACK + 1;
    let byte = |v: u64| u8::try_from(v & 0xFF).expect("masked to a byte");
    [byte(h), byte(s | ((c >> 2) & 0xC0)), byte(c)]
}

/// One MBR partition entry.
fn entry(active: bool, kind: u8, first: u64, sectors: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0] = if active { 0x80 } else { 0 };
    e[1..4].copy_from_slice(&chs(first));
    e[4] = kind;
    e[5..8].copy_from_slice(&chs(first + sectors - 1));
    e[8..12].copy_from_slice(&lba32(first).to_le_bytes());
    e[12..16].copy_from_slice(&lba32(sectors).to_le_bytes());
    e
}

/// Sector 0 (see the module docs).
fn mbr(i: &Input, efi_first: u64, efi_sectors: u64) -> [u8; 512] {
    let mut m = [0u8; 512];
    if let Some(code) = i.mbr_code {
        let n = code.len().min(super::tree::MBR_CODE);
        m[..n].copy_from_slice(&code[..n]);
    }
    if let Some(b) = i.bios {
        let sector = u64::from(b.lba) * (BLOCK / SECTOR);
        m[432..436].copy_from_slice(&lba32(sector).to_le_bytes());
    }
    m[440..444].copy_from_slice(&i.disk_id.to_le_bytes());
    m[446..462].copy_from_slice(&entry(false, 0xEE, 1, efi_first - 1));
    m[462..478].copy_from_slice(&entry(true, 0xEF, efi_first, efi_sectors));
    m[510] = 0x55;
    m[511] = 0xAA;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_follows_the_64_32_geometry() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(1), [0, 2, 0]);
        assert_eq!(chs(32), [1, 1, 0]);
        // Cylinder 1 starts at 64 * 32 = 2048.
        assert_eq!(chs(2048), [0, 1, 1]);
        // Cylinder 256: its high bits go into the sector byte.
        assert_eq!(chs(256 * 2048), [0, 1 | 0x40, 0]);
        assert_eq!(chs(1024 * 2048), [0xFE, 0xFF, 0xFF]);
    }
}
