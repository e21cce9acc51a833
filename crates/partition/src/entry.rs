//! One partition as imgbuild describes it: the JSON shape shared by the manifest written
//! beside an image (what was planned) and `imgbuild inspect` (what was read back), so a
//! script reads both the same way and a test can compare them field for field.

use serde::Serialize;
use uuid::Uuid;

use crate::{GptPartition, MbrPartition, SECTOR_SIZE};

/// A partition table entry, described.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// 1-based number (GPT entry index + 1; MBR 1-4 primary, 5+ logical); 0 = whole image.
    pub number: u32,
    /// Byte offset on the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// First 512-byte sector of the partition.
    pub first_lba: u64,
    /// Last 512-byte sector of the partition (inclusive).
    pub last_lba: u64,
    /// GPT type GUID (upper case) or MBR type byte (`0x83`).
    #[serde(rename = "type")]
    pub type_id: String,
    /// Human name of the type, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<&'static str>,
    /// GPT partition name (MBR entries have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// GPT unique partition GUID (upper case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// `boot` (MBR active), `extended`, `logical`, GPT attribute names.
    pub flags: Vec<String>,
    /// GPT attribute bits as a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<u64>,
}

/// What a partition's filesystem says of itself, as far as a listing needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FsSummary {
    /// `ext4`, `ext3`, `ext2`, `fat12`, `fat16`, `fat32`, or what else was recognised.
    pub kind: String,
    /// The volume label, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// ext4: the UUID; FAT: the volume id as `XXXX-XXXX`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Size of the filesystem in bytes.
    pub size: u64,
}

/// GPT attribute bits that have names.
const GPT_ATTRIBUTES: [(u32, &str); 6] = [
    (0, "required"),
    (1, "no-block-io"),
    (2, "legacy-bios-bootable"),
    (60, "read-only"),
    (62, "hidden"),
    (63, "no-automount"),
];

/// The MBR type bytes of extended partitions.
pub fn mbr_is_extended(type_byte: u8) -> bool {
    matches!(type_byte, 0x05 | 0x0f | 0x85)
}

impl Entry {
    /// The whole disk as partition 0: a disk without a partition table, whose one file
    /// system starts at byte 0 (what `inspect` lists for it, and a table-less image's
    /// manifest).
    pub fn whole_image(disk_size: u64) -> Self {
        Entry {
            number: 0,
            start: 0,
            size: disk_size,
            first_lba: 0,
            last_lba: (disk_size / SECTOR_SIZE).saturating_sub(1),
            type_id: "-".into(),
            type_name: Some("whole image"),
            name: None,
            guid: None,
            flags: Vec::new(),
            attributes: None,
        }
    }

    /// A GPT entry (`number` is 1-based). A last LBA before the first gives one sector; the
    /// reader that found it says so.
    pub fn gpt(number: u32, p: &GptPartition) -> Self {
        let flags = GPT_ATTRIBUTES
            .iter()
            .filter(|(bit, _)| p.attributes & (1u64 << bit) != 0)
            .map(|(_, name)| (*name).to_string())
            .collect();
        let type_id = p.type_guid.hyphenated().to_string().to_uppercase();
        Entry {
            number,
            start: p.first_lba.saturating_mul(SECTOR_SIZE),
            size: p
                .last_lba
                .saturating_sub(p.first_lba)
                .saturating_add(1)
                .saturating_mul(SECTOR_SIZE),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            type_name: gpt_type_name(&p.type_guid),
            type_id,
            name: Some(p.name.clone()),
            guid: Some(p.part_guid.hyphenated().to_string().to_uppercase()),
            flags,
            attributes: Some(p.attributes),
        }
    }

    /// An MBR entry: `number` 1-4 primary, 5 and up logical (inside an extended partition).
    pub fn mbr(number: u32, p: &MbrPartition) -> Self {
        let mut flags = Vec::new();
        if p.bootable {
            flags.push("boot".to_string());
        }
        if mbr_is_extended(p.type_byte) {
            flags.push("extended".to_string());
        }
        if number > 4 {
            flags.push("logical".to_string());
        }
        Entry {
            number,
            start: p.first_lba.saturating_mul(SECTOR_SIZE),
            size: p.sectors.saturating_mul(SECTOR_SIZE),
            first_lba: p.first_lba,
            last_lba: (p.first_lba.saturating_add(p.sectors)).saturating_sub(1),
            type_id: format!("{:#04x}", p.type_byte),
            type_name: mbr_type_name(p.type_byte),
            name: None,
            guid: None,
            flags,
            attributes: None,
        }
    }
}

/// Names of the GPT partition types seen in Linux images.
pub fn gpt_type_name(guid: &Uuid) -> Option<&'static str> {
    Some(match guid.as_u128() {
        0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B => "EFI System",
        0x0FC63DAF_8483_4772_8E79_3D69D8477DE4 => "Linux filesystem",
        0x4F68BCE3_E8CD_4DB1_96E7_FBCAF984B709 => "Linux root (x86-64)",
        0xB921B045_1DF0_41C3_AF44_4C6F280D3FAE => "Linux root (ARM-64)",
        0x44479540_F297_41B2_9AF7_D131D5F0458A => "Linux root (x86)",
        0x2C7357ED_EBD2_46D9_AEC1_23D437EC2BF5 => "Linux root verity (x86-64)",
        0xDF3300CE_D69F_4C92_978C_9BFB0F38D820 => "Linux root verity (ARM-64)",
        0x8484680C_9521_48C6_9C11_B0720656F69E => "Linux /usr (x86-64)",
        0xB0E01050_EE5F_4390_949A_9101B17104E9 => "Linux /usr (ARM-64)",
        0x77FF5F63_E7B6_4633_ACF4_1565B864C0E6 => "Linux /usr verity (x86-64)",
        0x6E11A4E7_FBCA_4DED_B9E9_E1A512BB664E => "Linux /usr verity (ARM-64)",
        0xBC13C2FF_59E6_4262_A352_B275FD6F7172 => "Linux extended boot (XBOOTLDR)",
        0x0657FD6D_A4AB_43C4_84E5_0933C84B4F4F => "Linux swap",
        0xE6D6D379_F507_44C2_A23C_238F2A3DF928 => "Linux LVM",
        0xA19D880F_05FC_4D3B_A006_743F0F84911E => "Linux RAID",
        0x933AC7E1_2EB4_4F13_B844_0E14E2AEF915 => "Linux home",
        0x21686148_6449_6E6F_744E_656564454649 => "BIOS boot",
        0xEBD0A0A2_B9E5_4433_87C0_68B6B72699C7 => "Microsoft basic data",
        _ => return None,
    })
}

/// Names of the MBR partition types seen in Linux images.
pub fn mbr_type_name(sys: u8) -> Option<&'static str> {
    Some(match sys {
        0x01 => "FAT12",
        0x04 | 0x06 => "FAT16",
        0x05 => "Extended",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x0e => "W95 FAT16 (LBA)",
        0x0f => "W95 Extended (LBA)",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xee => "GPT protective",
        0xef => "EFI (FAT-12/16/32)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt_entry_names_its_type_and_attributes() {
        let e = Entry::gpt(
            2,
            &GptPartition {
                name: "nixos".into(),
                type_guid: crate::types::LINUX_FILESYSTEM,
                part_guid: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
                first_lba: 2048,
                last_lba: 4095,
                attributes: (1 << 2) | (1 << 63),
            },
        );
        assert_eq!(e.start, 2048 * 512);
        assert_eq!(e.size, 2048 * 512);
        assert_eq!(e.type_id, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        assert_eq!(e.type_name, Some("Linux filesystem"));
        assert_eq!(
            e.guid.as_deref(),
            Some("01234567-89AB-CDEF-0123-456789ABCDEF")
        );
        assert_eq!(e.flags, ["legacy-bios-bootable", "no-automount"]);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        assert_eq!(json["attributes"], (1u64 << 2) | (1u64 << 63));
    }

    #[test]
    fn mbr_entry_flags() {
        let p = MbrPartition {
            first_lba: 16384,
            sectors: 61440,
            type_byte: 0x0b,
            bootable: true,
        };
        let e = Entry::mbr(1, &p);
        assert_eq!((e.first_lba, e.last_lba), (16384, 16384 + 61440 - 1));
        assert_eq!(e.type_id, "0x0b");
        assert_eq!(e.type_name, Some("W95 FAT32"));
        assert_eq!(e.flags, ["boot"]);
        let logical = Entry::mbr(
            5,
            &MbrPartition {
                type_byte: 0x83,
                bootable: false,
                ..p
            },
        );
        assert_eq!(logical.flags, ["logical"]);
        let json = serde_json::to_value(&logical).unwrap();
        assert!(json.get("name").is_none() && json.get("guid").is_none());
    }
}
