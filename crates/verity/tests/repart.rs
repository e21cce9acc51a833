//! The partition facts judged by systemd-repart itself: it builds a `usr` + `usr-verity` pair
//! from our data; the partition UUIDs in its GPT are what this crate derives from the root
//! hash it reports, the type GUIDs are this crate's, and (where repart uses 4 KiB verity
//! blocks) its hash partition and root hash are what this crate computes for the same data,
//! salt and superblock UUID (read back from the superblock repart wrote). Skipped, saying why, where `systemd-repart` or `sfdisk` is not
//! installed, except in CI (`CI` set), whose .ci/run installs them (`systemd`, `fdisk`).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use imgbuild_testutil::run;
use imgbuild_verity::partition::{partition_types, Arch, Designator};
use imgbuild_verity::{Hasher, Params, RootHash, Superblock};
use uuid::Uuid;

const DATA_SIZE: usize = 256 * 4096;

#[test]
fn repart_derives_what_we_derive() {
    let arch = match std::env::consts::ARCH {
        "x86_64" => Arch::X86_64,
        "aarch64" => Arch::Arm64,
        other => {
            eprintln!("skipped: no partition types here for {other}");
            return;
        }
    };
    if !common::have("systemd-repart", "systemd") || !common::have("sfdisk", "fdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = imgbuild_testutil::noise(26, DATA_SIZE);
    let data_path = dir.path().join("data.img");
    std::fs::write(&data_path, &data).unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    // Both partitions exactly 1 MiB, so the data partition holds our data and nothing else.
    std::fs::write(
        defs.join("00-usr.conf"),
        format!(
            "[Partition]\nType=usr\nCopyBlocks={}\nVerity=data\nVerityMatchKey=usr\n\
             SizeMinBytes=1M\nSizeMaxBytes=1M\n",
            data_path.display()
        ),
    )
    .unwrap();
    std::fs::write(
        defs.join("01-usr-verity.conf"),
        "[Partition]\nType=usr-verity\nVerity=hash\nVerityMatchKey=usr\n\
         SizeMinBytes=1M\nSizeMaxBytes=1M\n",
    )
    .unwrap();
    let image = dir.path().join("image.raw");
    let report: serde_json::Value = serde_json::from_str(&run(Command::new("systemd-repart")
        .args([
            "--empty=create",
            "--size=auto",
            "--dry-run=no",
            "--json=short",
        ])
        .arg(format!("--definitions={}", defs.display()))
        .arg("--seed=0b5e2f0c-1d4a-4c3b-9e8f-7a6d5c4b3a29")
        .arg(&image)))
    .unwrap();
    let their_root = report
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p["roothash"].as_str())
        .unwrap_or_else(|| panic!("no root hash in repart's report: {report}"));
    let mut root = [0u8; 32];
    for (i, b) in root.iter_mut().enumerate() {
        *b = u8::from_str_radix(&their_root[2 * i..2 * i + 2], 16).unwrap();
    }
    let root = RootHash(root);

    let table: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(&image))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{table}");
    let field = |i: usize, name: &str| Uuid::parse_str(parts[i][name].as_str().unwrap()).unwrap();
    let start = |i: usize| parts[i]["start"].as_u64().unwrap() as usize * 512;

    // The UUIDs as they are in the GPT (sfdisk decodes the mixed-endian entries) against the
    // root hash repart reports, and the types for this architecture.
    let uuids = root.partition_uuids();
    assert_eq!(field(0, "uuid"), uuids.data, "data partition UUID");
    assert_eq!(field(1, "uuid"), uuids.verity, "verity partition UUID");
    let types = partition_types(Designator::Usr, arch);
    assert_eq!(field(0, "type"), types.data, "data partition type");
    assert_eq!(field(1, "type"), types.verity, "verity partition type");

    let disk = std::fs::read(&image).unwrap();
    assert!(
        disk[start(0)..start(0) + DATA_SIZE] == data[..],
        "data not copied as is"
    );
    let hash_partition = &disk[start(1)..start(1) + (1 << 20)];
    let sb = Superblock::parse(hash_partition).unwrap();
    assert_eq!(sb.salt().as_bytes().len(), 32, "repart's salt is 32 bytes");
    // systemd 252 (Debian 12) formats with the image's sector size (512-byte blocks here) and
    // has no setting for it; later releases take VerityDataBlockSizeBytes=. Our trees have
    // 4 KiB blocks only, so the hash area is compared where repart used 4 KiB blocks.
    if sb.data_block_size() != 4096 || sb.hash_block_size() != 4096 {
        eprintln!(
            "hash area not compared: this systemd-repart used {}-byte verity blocks",
            sb.data_block_size()
        );
        return;
    }
    let mut h = Hasher::new(Params {
        salt: sb.salt().clone(),
        uuid: sb.uuid(),
    });
    h.push(&data);
    let tree = h.finish().unwrap();
    assert_eq!(tree.root_hash(), root, "root hash");
    let ours = tree.to_bytes();
    assert!(
        hash_partition[..ours.len()] == ours[..],
        "hash area differs"
    );
    assert!(hash_partition[ours.len()..].iter().all(|&b| b == 0));
}
