//! Boot sector (BPB), FAT32 FSInfo sector and the FAT tables.

use crate::geometry::{Geometry, NUM_FATS, SECTOR};
use crate::FatType;
use imgbuild_blockio::to_usize;

pub(crate) const MEDIA_FIXED: u8 = 0xF8;
const DRIVE_NUMBER: u8 = 0x80;
const EXT_BOOT_SIGNATURE: u8 = 0x29;
pub(crate) const FSINFO_SECTOR: u16 = 1;
pub(crate) const BACKUP_BOOT_SECTOR: u16 = 6;

/// Boot code of a volume that is not bootable: `int 18h` (tells the BIOS to try the next
/// boot device), then `hlt` in a loop. Ours, not mkfs.fat's message-printing stub.
const BOOT_STUB: [u8; 5] = [0xCD, 0x18, 0xF4, 0xEB, 0xFD];

/// Fields of the boot sector that do not come from the geometry.
pub(crate) struct Identity<'a> {
    pub oem_name: &'a [u8; 8],
    pub volume_id: u32,
    /// The label as stored in the boot sector ("NO NAME    " when there is none).
    pub label: &'a [u8; 11],
    pub hidden_sectors: u32,
}

/// The 512-byte boot sector.
pub(crate) fn boot_sector(g: &Geometry, id: &Identity) -> [u8; 512] {
    let mut b = [0u8; 512];
    let fat32 = g.fat_type == FatType::Fat32;
    // Offset of the boot code: after the FAT32 or the FAT12/16 extended BPB.
    let code: usize = if fat32 { 0x5A } else { 0x3E };
    // Every BPB field below is within its width: geometry() chose the values inside FAT's
    // limits (at most 128 sectors per cluster, 16-bit reserved/root/FAT16 sizes).
    let u8_of = |v: u32| u8::try_from(v).expect("an 8-bit BPB field, bounded by geometry()");
    let u16_of = |v: u32| {
        u16::try_from(v)
            .expect("a 16-bit BPB field, bounded by geometry()")
            .to_le_bytes()
    };
    b[0..3].copy_from_slice(&[0xEB, (code - 2).to_le_bytes()[0], 0x90]); // BS_jmpBoot
    b[3..11].copy_from_slice(id.oem_name); // BS_OEMName
    b[11..13].copy_from_slice(&u16_of(u32::try_from(SECTOR).expect("512"))); // BPB_BytsPerSec
    b[13] = u8_of(g.sectors_per_cluster); // BPB_SecPerClus
    b[14..16].copy_from_slice(&u16_of(g.reserved_sectors)); // BPB_RsvdSecCnt
    b[16] = u8_of(NUM_FATS); // BPB_NumFATs
    b[17..19].copy_from_slice(&u16_of(g.root_entries)); // BPB_RootEntCnt
    if g.total_sectors < 65536 {
        b[19..21].copy_from_slice(&u16_of(g.total_sectors)); // BPB_TotSec16
    } else {
        b[32..36].copy_from_slice(&g.total_sectors.to_le_bytes()); // BPB_TotSec32
    }
    b[21] = MEDIA_FIXED; // BPB_Media
    if !fat32 {
        b[22..24].copy_from_slice(&u16_of(g.fat_sectors)); // BPB_FATSz16
    }
    b[24..26].copy_from_slice(&g.sectors_per_track.to_le_bytes()); // BPB_SecPerTrk
    b[26..28].copy_from_slice(&g.heads.to_le_bytes()); // BPB_NumHeads
    b[28..32].copy_from_slice(&id.hidden_sectors.to_le_bytes()); // BPB_HiddSec
    let ext = if fat32 {
        b[36..40].copy_from_slice(&g.fat_sectors.to_le_bytes()); // BPB_FATSz32
                                                                 // 40: BPB_ExtFlags 0 (FATs mirrored), 42: BPB_FSVer 0.0
        b[44..48].copy_from_slice(&2u32.to_le_bytes()); // BPB_RootClus
        b[48..50].copy_from_slice(&FSINFO_SECTOR.to_le_bytes()); // BPB_FSInfo
        b[50..52].copy_from_slice(&BACKUP_BOOT_SECTOR.to_le_bytes()); // BPB_BkBootSec
        64
    } else {
        36
    };
    b[ext] = DRIVE_NUMBER; // BS_DrvNum
    b[ext + 2] = EXT_BOOT_SIGNATURE; // BS_BootSig
    b[ext + 3..ext + 7].copy_from_slice(&id.volume_id.to_le_bytes()); // BS_VolID
    b[ext + 7..ext + 18].copy_from_slice(id.label); // BS_VolLab
    let fs_type: &[u8; 8] = match g.fat_type {
        FatType::Fat12 => b"FAT12   ",
        FatType::Fat16 => b"FAT16   ",
        _ => b"FAT32   ",
    };
    b[ext + 18..ext + 26].copy_from_slice(fs_type); // BS_FilSysType
    debug_assert_eq!(ext + 26, code);
    b[code..code + BOOT_STUB.len()].copy_from_slice(&BOOT_STUB);
    b[510] = 0x55;
    b[511] = 0xAA;
    b
}

/// The FAT32 FSInfo sector.
pub(crate) fn fsinfo(free_clusters: u32, next_free_hint: u32) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes()); // FSI_LeadSig "RRaA"
    b[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes()); // FSI_StrucSig "rrAa"
    b[488..492].copy_from_slice(&free_clusters.to_le_bytes()); // FSI_Free_Count
    b[492..496].copy_from_slice(&next_free_hint.to_le_bytes()); // FSI_Nxt_Free
    b[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes()); // FSI_TrailSig
    b
}

/// One FAT, covering entries `0 .. next.len()` and padded to whole sectors; `next[c]` is the
/// entry of cluster `c` (0 free, `u32::MAX` end of chain, else the next cluster).
pub(crate) fn fat_bytes(fat_type: FatType, next: &[u32]) -> Vec<u8> {
    let mask: u32 = match fat_type {
        FatType::Fat12 => 0xFFF,
        FatType::Fat16 => 0xFFFF,
        _ => 0x0FFF_FFFF,
    };
    // Entry 0 holds the media byte, entry 1 is all ones, chains end with ...FF8 (as mkfs.fat).
    let value = |c: usize| -> u32 {
        let v = match c {
            0 => 0x0FFF_FF00 | u32::from(MEDIA_FIXED),
            1 => 0x0FFF_FFFF,
            _ if next[c] == u32::MAX => 0x0FFF_FFF8,
            _ => next[c],
        };
        v & mask
    };
    let n = next.len().max(2);
    let bytes = match fat_type {
        FatType::Fat12 => (n * 3).div_ceil(2),
        FatType::Fat16 => n * 2,
        _ => n * 4,
    };
    let mut out = vec![0u8; bytes.div_ceil(to_usize(SECTOR)) * to_usize(SECTOR)];
    for c in 0..n {
        let v = if c < next.len() || c < 2 { value(c) } else { 0 };
        match fat_type {
            FatType::Fat12 => {
                // Two 12-bit entries in three bytes, low nibble first.
                let i = c * 3 / 2;
                let [lo, hi, ..] = v.to_le_bytes();
                if c % 2 == 0 {
                    out[i] = lo;
                    out[i + 1] = (out[i + 1] & 0xF0) | (hi & 0x0F);
                } else {
                    out[i] = (out[i] & 0x0F) | ((lo & 0x0F) << 4);
                    out[i + 1] = (v >> 4).to_le_bytes()[0];
                }
            }
            FatType::Fat16 => out[c * 2..c * 2 + 2].copy_from_slice(&v.to_le_bytes()[..2]),
            _ => out[c * 4..c * 4 + 4].copy_from_slice(&v.to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat12_packing() {
        // Clusters 2 -> 3 -> end, 4 -> end.
        let next = [0, 0, 3, u32::MAX, u32::MAX];
        let b = fat_bytes(FatType::Fat12, &next);
        assert_eq!(b.len(), 512);
        // Entries F8F FFF 003 FF8 FF8 packed two per three bytes.
        assert_eq!(&b[..8], &[0xF8, 0xFF, 0xFF, 0x03, 0x80, 0xFF, 0xF8, 0x0F]);
    }

    #[test]
    fn fat16_and_fat32_entries() {
        let next = [0, 0, u32::MAX, 4, u32::MAX];
        let b = fat_bytes(FatType::Fat16, &next);
        assert_eq!(
            &b[..10],
            &[0xF8, 0xFF, 0xFF, 0xFF, 0xF8, 0xFF, 4, 0, 0xF8, 0xFF]
        );
        let b = fat_bytes(FatType::Fat32, &next);
        assert_eq!(
            &b[..12],
            &[0xF8, 0xFF, 0xFF, 0x0F, 0xFF, 0xFF, 0xFF, 0x0F, 0xF8, 0xFF, 0xFF, 0x0F]
        );
    }
}
