//! `boot.img`, GRUB's i386-pc boot sector, patched as `grub-bios-setup` does.

use crate::{Error, Platform, SECTOR};

/// The BIOS parameter block area kept from the disk's sector (`GRUB_BOOT_MACHINE_BPB_*`).
const BPB: std::ops::Range<usize> = 0x03..0x5a;
/// The first sector of the core image, u64 little-endian.
const KERNEL_SECTOR: usize = 0x5c;
/// The boot drive: 0xff means "the drive the BIOS booted from".
const BOOT_DRIVE: usize = 0x64;
/// The jump over the boot-drive workaround, replaced by two NOPs for a hard disk.
const DRIVE_CHECK: usize = 0x66;
/// Disk signature, its two reserved bytes and the partition table, kept from the disk.
const PARTITION_AREA: std::ops::Range<usize> = 0x1b8..0x1fe;

/// Sector 0 of the disk: GRUB's `boot.img` with the BPB area, the disk signature and the
/// partition table taken from `existing` (the sector the partition table writer made), the
/// core image's first sector `core_sector` patched in, the boot drive left to the BIOS and
/// the buggy-BIOS drive check enabled, as `grub-bios-setup` does for a hard disk.
pub fn boot_sector(
    platform: &Platform,
    existing: &[u8; SECTOR],
    core_sector: u64,
) -> Result<[u8; SECTOR], Error> {
    if core_sector == 0 {
        return Err(Error::BadCoreSector(core_sector));
    }
    let mut out = [0u8; SECTOR];
    out.copy_from_slice(platform.get_sized("boot.img", SECTOR)?);
    out[BPB].copy_from_slice(&existing[BPB]);
    out[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_sector.to_le_bytes());
    out[BOOT_DRIVE] = 0xff;
    out[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    out[PARTITION_AREA].copy_from_slice(&existing[PARTITION_AREA]);
    Ok(out)
}
