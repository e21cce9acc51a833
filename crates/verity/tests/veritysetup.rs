//! Our hash areas judged by cryptsetup's `veritysetup`: `verify` accepts them (and refuses a
//! flipped data byte), and `format` writes the same bytes and prints the same root hash.
//! Skipped, saying why, where `veritysetup` is not installed, except in CI (`CI` set), which
//! installs it (`cryptsetup-bin`) and where a missing tool is a failure.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use imgbuild_testutil::{output, run};
use imgbuild_verity::{hash_area_size, Error, Hasher, Params, RootHash, Salt, Superblock};
use uuid::Uuid;

const UUID: &str = "0b5e2f0c-1d4a-4c3b-9e8f-7a6d5c4b3a29";

/// `blocks` blocks of noise, each starting with its own index so no two are alike.
fn data(blocks: u64, seed: u64) -> Vec<u8> {
    let pattern = imgbuild_testutil::noise(seed, 64 * 4096);
    let mut v = Vec::with_capacity(blocks as usize * 4096);
    for i in 0..blocks {
        let at = (i % 64) as usize * 4096;
        v.extend_from_slice(&i.to_le_bytes());
        v.extend_from_slice(&pattern[at + 8..at + 4096]);
    }
    v
}

fn params(salt: &[u8]) -> Params {
    Params {
        salt: Salt::new(salt).unwrap(),
        uuid: Uuid::parse_str(UUID).unwrap(),
    }
}

/// Our hash area of `data`, pushed in uneven pieces as the disk pass will feed it.
fn ours(data: &[u8], params: &Params) -> (Vec<u8>, RootHash) {
    let mut h = Hasher::new(params.clone());
    for piece in data.chunks(1_000_003) {
        h.push(piece);
    }
    let tree = h.finish().unwrap();
    (tree.to_bytes(), tree.root_hash())
}

/// `veritysetup format` of `data_path` into `hash_path`: the root hash it prints.
fn their_format(data_path: &Path, hash_path: &Path, salt: &Salt) -> String {
    let text = run(Command::new("veritysetup")
        .args([
            "format",
            "--format=1",
            "--hash=sha256",
            "--data-block-size=4096",
            "--hash-block-size=4096",
        ])
        .arg(format!("--salt={}", salt.to_hex()))
        .arg(format!("--uuid={UUID}"))
        .arg(data_path)
        .arg(hash_path));
    text.lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap_or_else(|| panic!("no root hash in veritysetup's output:\n{text}"))
        .trim()
        .to_owned()
}

fn verify(data_path: &Path, hash_path: &Path, root: &str) -> (bool, String) {
    output(
        Command::new("veritysetup")
            .arg("verify")
            .arg(data_path)
            .arg(hash_path)
            .arg(root),
    )
}

/// The whole judgement for one data size and salt.
fn check(blocks: u64, salt: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let (data_path, ours_path, theirs_path) = (
        dir.path().join("data"),
        dir.path().join("ours"),
        dir.path().join("theirs"),
    );
    let bytes = data(blocks, blocks);
    std::fs::write(&data_path, &bytes).unwrap();
    let params = params(salt);
    let (hash_area, root) = ours(&bytes, &params);
    assert_eq!(
        hash_area.len() as u64,
        hash_area_size(bytes.len() as u64).unwrap(),
        "{blocks} blocks: size from the data size alone"
    );
    assert_eq!(
        ours(&bytes, &params),
        (hash_area.clone(), root),
        "reproducible"
    );
    std::fs::write(&ours_path, &hash_area).unwrap();

    let theirs_root = their_format(&data_path, &theirs_path, &params.salt);
    assert_eq!(root.to_hex(), theirs_root, "{blocks} blocks: root hash");
    let theirs = std::fs::read(&theirs_path).unwrap();
    assert_eq!(
        theirs.len(),
        hash_area.len(),
        "{blocks} blocks: hash area size"
    );
    if let Some(at) = theirs.iter().zip(&hash_area).position(|(a, b)| a != b) {
        panic!("{blocks} blocks: hash areas differ first at byte {at}");
    }
    let sb = Superblock::parse(&hash_area).unwrap();
    assert_eq!(sb.data_blocks(), blocks);
    assert_eq!(sb.uuid().to_string(), UUID);

    let (ok, text) = verify(&data_path, &ours_path, &root.to_hex());
    assert!(
        ok,
        "{blocks} blocks: veritysetup verify refused ours:\n{text}"
    );
    let mut flipped = bytes;
    let at = flipped.len() / 2 + 17;
    flipped[at] ^= 0x40;
    std::fs::write(&data_path, &flipped).unwrap();
    let (ok, text) = verify(&data_path, &ours_path, &root.to_hex());
    assert!(
        !ok,
        "{blocks} blocks: a flipped byte at {at} passed:\n{text}"
    );
}

#[test]
fn one_block_no_levels() {
    if common::have("veritysetup", "cryptsetup-bin") {
        check(1, &[0x5a; 32]);
    }
}

#[test]
fn one_hash_block_and_its_edges() {
    if common::have("veritysetup", "cryptsetup-bin") {
        for blocks in [2, 127, 128, 129] {
            check(blocks, &[0x5a; 32]);
        }
    }
}

#[test]
fn a_few_mib_and_three_levels() {
    if common::have("veritysetup", "cryptsetup-bin") {
        // 5 MiB (two levels), then 16385 blocks: one past 128 * 128, three levels.
        check(1280, &[0xc3; 32]);
        check(16_385, &[1, 2, 3]);
    }
}

#[test]
fn other_salts() {
    if common::have("veritysetup", "cryptsetup-bin") {
        check(3, &[]);
        check(130, &[0xff; 256]);
    }
}

/// veritysetup leaves a partial last block out of the tree (the tail is not protected), which
/// is why `Hasher` refuses one rather than follow it.
#[test]
fn a_partial_last_block_is_refused_because_veritysetup_ignores_it() {
    let bytes = data(2, 9);
    let mut h = Hasher::new(params(&[7; 32]));
    h.push(&bytes[..6000]);
    assert_eq!(
        h.finish().unwrap_err(),
        Error::PartialBlock {
            size: 6000,
            tail: 1904
        }
    );
    if !common::have("veritysetup", "cryptsetup-bin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_path = dir.path().join("data");
    std::fs::write(&data_path, &bytes[..6000]).unwrap();
    let theirs = their_format(
        &data_path,
        &dir.path().join("hash"),
        &Salt::new(&[7; 32]).unwrap(),
    );
    let (_, first_block_root) = ours(&bytes[..4096], &params(&[7; 32]));
    assert_eq!(theirs, first_block_root.to_hex());
}
