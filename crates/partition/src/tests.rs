//! Unit tests: byte layout and validation. Oracle tests with sgdisk/sfdisk live in `tests/`.

use super::*;

const MIB: u64 = 1 << 20;

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The nixpkgs `make-disk-image.nix` efi layout on a 1 GiB disk.
fn efi_layout() -> GptLayout {
    let disk_size = 1024 * MIB;
    let last_usable = disk_size / 512 - 34;
    GptLayout {
        disk_size,
        disk_guid: Uuid::parse_str("97FD5997-D90B-4AA3-8D16-C1723AEA73C1").unwrap(),
        require_alignment: Some(MIB),
        partitions: vec![
            GptPartition {
                name: "ESP".into(),
                type_guid: types::EFI_SYSTEM,
                part_guid: Uuid::parse_str("1C06F03B-704E-4657-B9CD-681A087A2FDC").unwrap(),
                first_lba: 16384,
                last_lba: 526335,
                attributes: 0,
            },
            GptPartition {
                name: "primary".into(),
                type_guid: types::LINUX_FILESYSTEM,
                part_guid: Uuid::parse_str("F222513B-DED1-49FA-B591-20CE86A2FE7F").unwrap(),
                first_lba: 526336,
                last_lba: last_usable,
                attributes: 0,
            },
        ],
    }
}

use imgbuild_testutil::crc32;

#[test]
fn gpt_writes_cover_head_and_tail_only() {
    let l = efi_layout();
    let w = encode_gpt(&l).unwrap();
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].offset, 0);
    assert_eq!(w[0].bytes.len() as u64, 34 * 512);
    assert_eq!(w[1].offset, l.disk_size - 33 * 512);
    assert_eq!(w[1].bytes.len() as u64, 33 * 512);
    assert_eq!(encode_gpt(&l).unwrap(), w, "same layout, same bytes");
}

#[test]
fn gpt_header_fields_and_crcs() {
    let l = efi_layout();
    let w = encode_gpt(&l).unwrap();
    let n = l.disk_size / 512;
    let head = &w[0].bytes;
    let tail = &w[1].bytes;

    // Protective MBR: one 0xEE entry from LBA 1 covering the disk, 0x55AA.
    assert_eq!(head[446 + 4], 0xEE);
    assert_eq!(le_u32(head, 446 + 8), 1);
    assert_eq!(u64::from(le_u32(head, 446 + 12)), n - 1);
    assert_eq!(&head[510..512], &[0x55, 0xAA]);

    let entries = &head[1024..34 * 512];
    let backup_entries = &tail[..32 * 512];
    assert_eq!(entries, backup_entries);

    for (hdr, my, alt, entries_lba) in [
        (&head[512..1024], 1, n - 1, 2),
        (&tail[32 * 512..], n - 1, 1, n - 33),
    ] {
        assert_eq!(&hdr[0..8], b"EFI PART");
        assert_eq!(le_u32(hdr, 8), 0x0001_0000, "revision 1.0");
        assert_eq!(le_u32(hdr, 12), 92, "header size");
        let mut h = hdr[..92].to_vec();
        h[16..20].fill(0);
        assert_eq!(le_u32(hdr, 16), crc32(&h), "header CRC32");
        assert_eq!(le_u64(hdr, 24), my);
        assert_eq!(le_u64(hdr, 32), alt);
        assert_eq!(le_u64(hdr, 40), 34, "first usable");
        assert_eq!(le_u64(hdr, 48), n - 34, "last usable");
        // Disk GUID 97FD5997-D90B-4AA3-8D16-C1723AEA73C1, mixed-endian.
        assert_eq!(
            &hdr[56..72],
            &[
                0x97, 0x59, 0xFD, 0x97, 0x0B, 0xD9, 0xA3, 0x4A, 0x8D, 0x16, 0xC1, 0x72, 0x3A, 0xEA,
                0x73, 0xC1
            ]
        );
        assert_eq!(le_u64(hdr, 72), entries_lba);
        assert_eq!(le_u32(hdr, 80), 128);
        assert_eq!(le_u32(hdr, 84), 128);
        assert_eq!(le_u32(hdr, 88), crc32(entries), "entries CRC32");
        assert!(hdr[92..].iter().all(|&b| b == 0));
    }

    // Entry 1: type EFI System, mixed-endian; unique GUID; LBAs; name UTF-16LE.
    let e = &entries[..128];
    assert_eq!(
        &e[0..16],
        &[
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
            0xC9, 0x3B
        ]
    );
    assert_eq!(
        &e[16..32],
        &[
            0x3B, 0xF0, 0x06, 0x1C, 0x4E, 0x70, 0x57, 0x46, 0xB9, 0xCD, 0x68, 0x1A, 0x08, 0x7A,
            0x2F, 0xDC
        ]
    );
    assert_eq!(le_u64(e, 32), 16384);
    assert_eq!(le_u64(e, 40), 526335);
    assert_eq!(le_u64(e, 48), 0);
    assert_eq!(&e[56..62], &[b'E', 0, b'S', 0, b'P', 0]);
    assert!(e[62..].iter().all(|&b| b == 0));
    assert!(
        entries[256..].iter().all(|&b| b == 0),
        "unused entries zero"
    );
}

#[test]
fn gpt_attributes_and_long_name() {
    let mut l = efi_layout();
    l.partitions[0].attributes = (1 << 63) | (1 << 2) | 1;
    l.partitions[0].name = "é".repeat(36);
    let w = encode_gpt(&l).unwrap();
    let e = &w[0].bytes[1024..1024 + 128];
    assert_eq!(le_u64(e, 48), (1 << 63) | 5);
    assert_eq!(&e[56..58], &0x00E9u16.to_le_bytes());
    assert_eq!(&e[126..128], &0x00E9u16.to_le_bytes());
}

#[test]
fn gpt_huge_disk_is_cheap_and_caps_protective_size() {
    let mut l = efi_layout();
    l.disk_size = 4 << 40; // 4 TiB: more sectors than 32 bits hold
    l.partitions[1].last_lba = l.disk_size / 512 - 34;
    let w = encode_gpt(&l).unwrap();
    assert_eq!(le_u32(&w[0].bytes, 446 + 12), u32::MAX);
    assert_eq!(w[1].offset, l.disk_size - 33 * 512);
}

#[test]
fn gpt_empty_table() {
    let mut l = efi_layout();
    l.partitions.clear();
    let w = encode_gpt(&l).unwrap();
    assert!(w[0].bytes[1024..].iter().all(|&b| b == 0));
}

#[test]
fn overhead_and_usable_range() {
    assert_eq!(gpt_overhead_sectors(), (34, 33));
    assert_eq!(gpt_usable_range(100 * 512).unwrap(), (34, 66));
    assert!(matches!(
        gpt_usable_range(1000),
        Err(Error::DiskSizeNotSectorMultiple { disk_size: 1000 })
    ));
    assert!(matches!(
        gpt_usable_range(67 * 512),
        Err(Error::DiskTooSmall { min: 34816, .. })
    ));
    assert_eq!(gpt_usable_range(68 * 512).unwrap(), (34, 34));
}

#[test]
fn gpt_validation_errors_carry_numbers() {
    let base = efi_layout();
    let n = base.disk_size / 512;

    let mut l = base.clone();
    l.partitions[1].last_lba = n - 33;
    match encode_gpt(&l) {
        Err(Error::OutsideUsable {
            partition: 2,
            last_lba,
            last_usable,
            first_usable: 34,
            ..
        }) => assert_eq!((last_lba, last_usable), (n - 33, n - 34)),
        other => panic!("{other:?}"),
    }

    let mut l = base.clone();
    l.partitions[0].first_lba = 33;
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::OutsideUsable {
            partition: 1,
            first_lba: 33,
            ..
        })
    ));

    let mut l = base.clone();
    l.partitions[1].first_lba = 526335;
    l.require_alignment = None;
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::Overlap {
            a: 1,
            a_first: 16384,
            a_last: 526335,
            b: 2,
            b_first: 526335,
            ..
        })
    ));

    // Overlap reported with a < b even when the later partition comes first on disk.
    let mut l = base.clone();
    l.partitions.swap(0, 1);
    l.partitions[0].first_lba = 500000;
    l.require_alignment = None;
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::Overlap {
            a: 1,
            a_first: 500000,
            b: 2,
            b_first: 16384,
            ..
        })
    ));

    let mut l = base.clone();
    l.partitions[1].first_lba = 526337;
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::Misaligned {
            partition: 2,
            first_lba: 526337,
            align: MIB
        })
    ));
    l.require_alignment = None;
    assert!(encode_gpt(&l).is_ok());

    let mut l = base.clone();
    l.require_alignment = Some(1000);
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::InvalidAlignment { align: 1000 })
    ));

    let mut l = base.clone();
    l.partitions[0].name = "x".repeat(37);
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::NameTooLong {
            partition: 1,
            units: 37,
            ..
        })
    ));
    // 18 astral-plane characters = 36 UTF-16 units: fits.
    l.partitions[0].name = "\u{1F600}".repeat(18);
    assert!(encode_gpt(&l).is_ok());
    l.partitions[0].name.push('a');
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::NameTooLong { units: 37, .. })
    ));
    // NUL ends a name shorter than 36 units: refused, not cut.
    l.partitions[0].name = "ro\0ot".into();
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::NameHasNul { partition: 1, .. })
    ));

    let mut l = base.clone();
    l.partitions[1].last_lba = l.partitions[1].first_lba - 1;
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::EmptyPartition { partition: 2, .. })
    ));

    let mut l = base.clone();
    l.partitions[1].type_guid = Uuid::nil();
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::NilTypeGuid { partition: 2 })
    ));

    let mut l = base.clone();
    l.partitions[0].part_guid = Uuid::nil();
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::NilPartGuid { partition: 1 })
    ));

    let mut l = base.clone();
    l.partitions[1].part_guid = l.partitions[0].part_guid;
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::DuplicatePartGuid { a: 1, b: 2, .. })
    ));

    let mut l = base.clone();
    l.require_alignment = None;
    l.partitions = (0..129u64)
        .map(|i| GptPartition {
            name: String::new(),
            type_guid: types::LINUX_FILESYSTEM,
            part_guid: Uuid::from_u128(u128::from(i) + 1),
            first_lba: 34 + i,
            last_lba: 34 + i,
            attributes: 0,
        })
        .collect();
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::TooManyPartitions {
            count: 129,
            max: 128
        })
    ));
    l.partitions.pop();
    assert!(encode_gpt(&l).is_ok(), "128 partitions fit");

    let mut l = base;
    l.disk_size += 1;
    assert!(matches!(
        encode_gpt(&l),
        Err(Error::DiskSizeNotSectorMultiple { .. })
    ));
}

/// nixpkgs sd-image layout: FIRMWARE 0x0b at 8 MiB (30 MiB), root 0x83 bootable at 38 MiB.
fn sd_layout() -> MbrLayout {
    let disk_size = 2048 * MIB;
    MbrLayout {
        disk_size,
        disk_id: 0x2178_694e,
        require_alignment: Some(MIB),
        partitions: vec![
            MbrPartition {
                first_lba: 16384,
                sectors: 61440,
                type_byte: 0x0b,
                bootable: false,
            },
            MbrPartition {
                first_lba: 77824,
                sectors: disk_size / 512 - 77824,
                type_byte: 0x83,
                bootable: true,
            },
        ],
    }
}

#[test]
fn mbr_bytes() {
    let l = sd_layout();
    let w = encode_mbr(&l).unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].offset, 0);
    let b = &w[0].bytes;
    assert_eq!(b.len(), 512);
    assert!(b[..440].iter().all(|&x| x == 0));
    assert_eq!(&b[440..444], &[0x4e, 0x69, 0x78, 0x21]);
    assert_eq!(&b[444..446], &[0, 0]);
    let p1 = &b[446..462];
    assert_eq!(p1[0], 0x00);
    // LBA 16384 = C/H/S 1/5/5 with 255 heads, 63 sectors.
    assert_eq!(&p1[1..4], &[5, 5, 1]);
    assert_eq!(p1[4], 0x0b);
    // LBA 77823 = track 1235, sector 19: C/H/S 4/215/19.
    assert_eq!(&p1[5..8], &[215, 19, 4]);
    assert_eq!(le_u32(p1, 8), 16384);
    assert_eq!(le_u32(p1, 12), 61440);
    let p2 = &b[462..478];
    assert_eq!(p2[0], 0x80);
    assert_eq!(p2[4], 0x83);
    assert_eq!(le_u32(p2, 8), 77824);
    assert_eq!(u64::from(le_u32(p2, 12)), l.disk_size / 512 - 77824);
    assert!(b[478..510].iter().all(|&x| x == 0));
    assert_eq!(&b[510..], &[0x55, 0xAA]);
}

#[test]
fn chs_encoding_clamps_like_libfdisk() {
    // LBA 0 -> 0/0/1.
    let c = chs(0);
    assert_eq!((c.cylinder, c.head, c.sector), (0, 0, 1));
    // 2 GiB - 1 sector: track 66576 (sector 16), cylinder 261, head 21.
    let c = chs(4_194_303);
    assert_eq!((c.cylinder, c.head, c.sector), (261, 21, 16));
    // Last CHS-addressable sector and everything beyond: 1023/254/63.
    for lba in [1024 * 255 * 63 - 1, 1024 * 255 * 63, u64::from(u32::MAX)] {
        let c = chs(lba);
        assert_eq!((c.cylinder, c.head, c.sector), (1023, 254, 63));
    }
}

#[test]
fn mbr_validation_errors() {
    let base = sd_layout();

    let mut l = base.clone();
    l.partitions[1].sectors += 1;
    assert!(matches!(
        encode_mbr(&l),
        Err(Error::OutsideUsable { partition: 2, .. })
    ));

    let mut l = base.clone();
    l.partitions[1].first_lba = 77823;
    l.partitions[1].sectors = 10;
    l.require_alignment = None;
    assert!(matches!(
        encode_mbr(&l),
        Err(Error::Overlap {
            a: 1,
            b: 2,
            a_last: 77823,
            b_first: 77823,
            ..
        })
    ));

    let mut l = base.clone();
    l.partitions[0].first_lba = 0;
    l.require_alignment = None;
    assert!(matches!(
        encode_mbr(&l),
        Err(Error::OutsideUsable {
            partition: 1,
            first_lba: 0,
            ..
        })
    ));

    let mut l = base.clone();
    l.partitions[0].first_lba = 2048 + 1;
    assert!(matches!(
        encode_mbr(&l),
        Err(Error::Misaligned { partition: 1, .. })
    ));

    let mut l = base.clone();
    l.partitions[0].sectors = 0;
    assert!(matches!(
        encode_mbr(&l),
        Err(Error::EmptyPartition { partition: 1, .. })
    ));

    let mut l = base.clone();
    l.partitions[1].type_byte = 0x05;
    assert!(matches!(
        encode_mbr(&l),
        Err(Error::MbrBadType {
            partition: 2,
            type_byte: 0x05
        })
    ));
    l.partitions[1].type_byte = 0;
    assert!(matches!(encode_mbr(&l), Err(Error::MbrBadType { .. })));

    let mut l = base.clone();
    l.disk_size = 4 << 40;
    l.partitions[1].sectors = 1 << 32;
    assert!(matches!(
        encode_mbr(&l),
        Err(Error::MbrOutOfRange { partition: 2, .. })
    ));

    let mut l = base;
    l.require_alignment = None;
    l.partitions = (0..5)
        .map(|i| MbrPartition {
            first_lba: 1 + i,
            sectors: 1,
            type_byte: 0x83,
            bootable: false,
        })
        .collect();
    assert!(matches!(
        encode_mbr(&l),
        Err(Error::TooManyPartitions { count: 5, max: 4 })
    ));
    l.partitions.pop();
    let w = encode_mbr(&l).unwrap();
    assert_eq!(le_u32(&w[0].bytes, 446 + 3 * 16 + 8), 4);
}
