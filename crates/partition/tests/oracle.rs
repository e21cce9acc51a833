//! Oracle tests: the encoded tables, written into a sparse file, as read back by
//! `sgdisk` (gdisk) and `sfdisk` (util-linux). Both tools are required; missing tools fail.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use imgbuild_partition::{
    encode_gpt, encode_mbr, types, GptLayout, GptPartition, MbrLayout, MbrPartition, Uuid, Write,
};
use proptest::prelude::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn run(tool: &str, args: &[&str]) -> (bool, String) {
    imgbuild_testutil::output(Command::new(tool).args(args).env("LC_ALL", "C"))
}

fn image(dir: &Path, disk_size: u64, writes: &[Write]) -> std::path::PathBuf {
    let path = dir.join("disk.img");
    let f = File::create(&path).unwrap();
    f.set_len(disk_size).unwrap();
    for w in writes {
        f.write_all_at(&w.bytes, w.offset).unwrap();
    }
    path
}

fn sgdisk_verify(path: &Path) {
    let (ok, text) = run("sgdisk", &["-v", path.to_str().unwrap()]);
    assert!(ok, "sgdisk -v failed:\n{text}");
    assert!(
        text.contains("No problems found."),
        "sgdisk -v found problems:\n{text}"
    );
}

fn sfdisk_json(path: &Path) -> Value {
    let (ok, text) = run("sfdisk", &["--json", path.to_str().unwrap()]);
    assert!(ok, "sfdisk --json failed:\n{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad sfdisk json ({e}):\n{text}"))
}

/// Checks what sfdisk reads from a GPT image against the layout, field by field.
fn check_gpt_with_sfdisk(path: &Path, l: &GptLayout) {
    let j = sfdisk_json(path);
    let t = &j["partitiontable"];
    assert_eq!(t["label"], "gpt");
    // sfdisk prints GUIDs in upper case, from the mixed-endian bytes on disk.
    assert_eq!(t["id"], l.disk_guid.to_string().to_uppercase());
    assert_eq!(t["firstlba"], 34);
    assert_eq!(t["lastlba"], l.disk_size / 512 - 34);
    assert_eq!(t["sectorsize"], 512);
    let empty = Vec::new();
    let parts = t["partitions"].as_array().unwrap_or(&empty);
    assert_eq!(parts.len(), l.partitions.len(), "{j}");
    for (p, e) in parts.iter().zip(&l.partitions) {
        assert_eq!(p["start"], e.first_lba, "{p}");
        assert_eq!(p["size"], e.last_lba - e.first_lba + 1, "{p}");
        assert_eq!(p["type"], e.type_guid.to_string().to_uppercase(), "{p}");
        assert_eq!(p["uuid"], e.part_guid.to_string().to_uppercase(), "{p}");
        if e.name.is_empty() {
            assert!(p.get("name").is_none(), "{p}");
        } else {
            assert_eq!(p["name"], e.name.as_str(), "{p}");
        }
    }
}

fn nixpkgs_efi(disk_size: u64) -> GptLayout {
    // nixpkgs make-disk-image.nix, partitionTableType = "efi", bootSize 256M (-> 257 MiB).
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
                last_lba: disk_size / 512 - 34,
                attributes: 0,
            },
        ],
    }
}

#[test]
fn gpt_nixpkgs_efi_layout_read_back_by_sgdisk_and_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let l = nixpkgs_efi(3 * 1024 * MIB + 512 * 34);
    let w = encode_gpt(&l).unwrap();
    let path = image(dir.path(), l.disk_size, &w);
    sgdisk_verify(&path);
    check_gpt_with_sfdisk(&path, &l);

    // sgdisk's own view of partition 1: names, GUIDs, type.
    let (ok, text) = run("sgdisk", &["-i", "1", path.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "Partition GUID code: C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI system partition)"
        ),
        "{text}"
    );
    assert!(
        text.contains("Partition unique GUID: 1C06F03B-704E-4657-B9CD-681A087A2FDC"),
        "{text}"
    );
    assert!(text.contains("First sector: 16384 (at 8.0 MiB)"), "{text}");
    assert!(
        text.contains("Last sector: 526335 (at 257.0 MiB)"),
        "{text}"
    );
    assert!(text.contains("Partition name: 'ESP'"), "{text}");
}

#[test]
fn sgdisk_notices_a_corrupted_entry_array() {
    // The oracle is sensitive: one flipped bit in the entries breaks the CRC.
    let dir = tempfile::tempdir().unwrap();
    let l = nixpkgs_efi(512 * MIB);
    let mut w = encode_gpt(&l).unwrap();
    w[0].bytes[1024 + 56] ^= 1;
    let path = image(dir.path(), l.disk_size, &w);
    let (_, text) = run("sgdisk", &["-v", path.to_str().unwrap()]);
    assert!(!text.contains("No problems found."), "{text}");
}

#[test]
fn gpt_tables_equal_the_ones_sgdisk_writes() {
    // Same layout made by sgdisk itself: headers and entry arrays must be identical bytes.
    let dir = tempfile::tempdir().unwrap();
    let l = nixpkgs_efi(2 * 1024 * MIB);
    let mut l = l;
    l.partitions[1].attributes = 1 << 2; // legacy BIOS bootable, to cover the field
    let ours = image(dir.path(), l.disk_size, &encode_gpt(&l).unwrap());

    let theirs = dir.path().join("sgdisk.img");
    File::create(&theirs).unwrap().set_len(l.disk_size).unwrap();
    let last = l.partitions[1].last_lba.to_string();
    let args = [
        "-o".to_string(),
        format!("-U={}", l.disk_guid),
        "-n=1:16384:526335".to_string(),
        "-t=1:EF00".to_string(),
        "-c=1:ESP".to_string(),
        format!("-u=1:{}", l.partitions[0].part_guid),
        format!("-n=2:526336:{last}"),
        "-t=2:8300".to_string(),
        "-c=2:primary".to_string(),
        format!("-u=2:{}", l.partitions[1].part_guid),
        "-A=2:set:2".to_string(),
        theirs.to_str().unwrap().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = run("sgdisk", &args);
    assert!(ok, "sgdisk failed:\n{text}");

    let read = |p: &Path, off: u64, len: usize| {
        let mut f = File::open(p).unwrap();
        f.seek(SeekFrom::Start(off)).unwrap();
        let mut b = vec![0; len];
        f.read_exact(&mut b).unwrap();
        b
    };
    // Primary header + entries (LBA 1..=33).
    assert!(
        read(&ours, 512, 33 * 512) == read(&theirs, 512, 33 * 512),
        "primary GPT differs from sgdisk's"
    );
    // Backup entries + header (last 33 sectors).
    let tail = l.disk_size - 33 * 512;
    assert!(
        read(&ours, tail, 33 * 512) == read(&theirs, tail, 33 * 512),
        "backup GPT differs from sgdisk's"
    );
    // Protective MBR: same partition record type/start/size as sgdisk's.
    let (a, b) = (read(&ours, 0, 512), read(&theirs, 0, 512));
    assert_eq!(a[446 + 4], b[446 + 4]);
    assert_eq!(&a[446 + 8..446 + 16], &b[446 + 8..446 + 16]);
    assert_eq!(&a[510..], &b[510..]);
}

#[test]
fn gpt_attributes_as_sfdisk_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = nixpkgs_efi(64 * MIB * 16);
    l.partitions[0].attributes = 1; // RequiredPartition
    l.partitions[1].attributes = (1 << 2) | (1 << 60); // LegacyBIOSBootable GUID:60
    let path = image(dir.path(), l.disk_size, &encode_gpt(&l).unwrap());
    sgdisk_verify(&path);
    let j = sfdisk_json(&path);
    let parts = &j["partitiontable"]["partitions"];
    assert_eq!(parts[0]["attrs"], "RequiredPartition", "{j}");
    assert_eq!(parts[1]["attrs"], "LegacyBIOSBootable GUID:60", "{j}");
}

fn sd_layout(disk_size: u64, root_bootable: bool) -> MbrLayout {
    // nixpkgs sd-image.nix: label-id 0x2178694e, FIRMWARE 0x0b at 8 MiB (30 MiB),
    // root 0x83 at 38 MiB to the end; bootable flag on the root partition.
    MbrLayout {
        disk_size,
        disk_id: 0x2178_694e,
        require_alignment: Some(MIB),
        partitions: vec![
            MbrPartition {
                first_lba: 16384,
                sectors: 61440,
                type_byte: 0x0b,
                bootable: !root_bootable,
            },
            MbrPartition {
                first_lba: 77824,
                sectors: disk_size / 512 - 77824,
                type_byte: 0x83,
                bootable: root_bootable,
            },
        ],
    }
}

#[test]
fn mbr_sd_layout_read_back_by_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let l = sd_layout(1500 * MIB, true);
    let path = image(dir.path(), l.disk_size, &encode_mbr(&l).unwrap());
    let j = sfdisk_json(&path);
    let t = &j["partitiontable"];
    assert_eq!(t["label"], "dos");
    assert_eq!(t["id"], "0x2178694e");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["start"], 16384);
    assert_eq!(parts[0]["size"], 61440);
    assert_eq!(parts[0]["type"], "b");
    assert!(parts[0].get("bootable").is_none(), "{j}");
    assert_eq!(parts[1]["start"], 77824);
    assert_eq!(parts[1]["size"], l.disk_size / 512 - 77824);
    assert_eq!(parts[1]["type"], "83");
    assert_eq!(parts[1]["bootable"], true);
    let (ok, text) = run("sfdisk", &["--verify", path.to_str().unwrap()]);
    assert!(
        ok && text.contains("No errors detected."),
        "sfdisk --verify:\n{text}"
    );
}

/// The MBR sector equals the one sfdisk writes for the same script (CHS fields included).
fn assert_mbr_equals_sfdisk(l: &MbrLayout) {
    let dir = tempfile::tempdir().unwrap();
    let ours = image(dir.path(), l.disk_size, &encode_mbr(l).unwrap());
    let theirs = dir.path().join("sfdisk.img");
    File::create(&theirs).unwrap().set_len(l.disk_size).unwrap();
    let mut script = format!("label: dos\nlabel-id: {:#010x}\n", l.disk_id);
    for p in &l.partitions {
        script.push_str(&format!(
            "start={}, size={}, type={:x}{}\n",
            p.first_lba,
            p.sectors,
            p.type_byte,
            if p.bootable { ", bootable" } else { "" }
        ));
    }
    let mut child = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "--wipe", "never"])
        .arg(&theirs)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run sfdisk (install fdisk)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk failed on\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read0 = |p: &Path| {
        let mut b = vec![0; 512];
        File::open(p).unwrap().read_exact(&mut b).unwrap();
        b
    };
    let (a, b) = (read0(&ours), read0(&theirs));
    assert!(
        a == b,
        "MBR differs from sfdisk's for\n{script}\nours   {:02x?}\ntheirs {:02x?}",
        &a[440..],
        &b[440..]
    );
}

#[test]
fn mbr_equals_sfdisk_bytes() {
    assert_mbr_equals_sfdisk(&sd_layout(1500 * MIB, true));
    assert_mbr_equals_sfdisk(&sd_layout(1500 * MIB, false));
    // Beyond the CHS limit (~8 GiB): CHS clamped to 1023/254/63 as libfdisk does.
    assert_mbr_equals_sfdisk(&sd_layout(20 * 1024 * MIB, true));
}

fn gpt_strategy() -> impl Strategy<Value = GptLayout> {
    // Disk sizes from just above the minimum to 256 GiB (sparse files), 0..=8 partitions.
    (68u64..(1 << 29), 0usize..=8, any::<u128>(), any::<bool>())
        .prop_flat_map(|(sectors, n, seed, big)| {
            let sectors = if big { sectors } else { 68 + sectors % 4096 };
            let last_usable = sectors - 34;
            // As many partitions as distinct points fit (a tiny disk has room for few).
            let n = n.min((last_usable - 34).div_ceil(2) as usize);
            let points = prop::collection::btree_set(34..=last_usable, 2 * n);
            let names = prop::collection::vec("[A-Za-z0-9 _-]{0,36}", n);
            let attrs = prop::collection::vec(any::<u64>(), n);
            (Just(sectors), Just(seed), points, names, attrs)
        })
        .prop_map(|(sectors, seed, points, names, attrs)| {
            let points: Vec<u64> = points.into_iter().collect();
            let partitions = points
                .chunks(2)
                .zip(names)
                .zip(attrs)
                .enumerate()
                .map(|(i, ((pair, name), attributes))| GptPartition {
                    name,
                    type_guid: if i % 2 == 0 {
                        types::EFI_SYSTEM
                    } else {
                        types::LINUX_FILESYSTEM
                    },
                    part_guid: Uuid::from_u128((seed ^ ((i as u128 + 1) << 64)) | 1),
                    first_lba: pair[0],
                    last_lba: pair[1],
                    attributes,
                })
                .collect();
            GptLayout {
                disk_size: sectors * 512,
                disk_guid: Uuid::from_u128(seed | 1),
                require_alignment: None,
                partitions,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_gpt_layouts_pass_sgdisk_and_sfdisk(l in gpt_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let w = encode_gpt(&l).unwrap();
        prop_assert_eq!(&w, &encode_gpt(&l).unwrap());
        let path = image(dir.path(), l.disk_size, &w);
        sgdisk_verify(&path);
        check_gpt_with_sfdisk(&path, &l);
    }
}
