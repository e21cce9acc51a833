//! NAR serialisation checked against the real `nix-store --dump` and `nix-hash` (Nix 2.8,
//! Debian `nix-bin`). Fails if those tools are missing.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use imgbuild_nix::encoding::nix32_encode;
use imgbuild_nix::testutil::{nix_command, run};
use imgbuild_nix::{nar_dump, nar_hash, NarHash};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn real_dump(path: &Path) -> Vec<u8> {
    let out = nix_command("nix-store")
        .arg("--dump")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix-store --dump {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn check_against_nix(path: &Path) {
    let real = real_dump(path);
    let mut ours = Vec::new();
    let size = nar_dump(path, &mut ours).unwrap();
    assert_eq!(size, ours.len() as u64);
    assert!(
        ours == real,
        "NAR of {} differs from nix-store --dump ({} vs {} bytes)",
        path.display(),
        ours.len(),
        real.len()
    );
    let (h, n) = nar_hash(path).unwrap();
    assert_eq!(n, real.len() as u64);
    assert_eq!(h.0, <[u8; 32]>::from(Sha256::digest(&real)));
    let nix32 = run(nix_command("nix-hash")
        .args(["--type", "sha256", "--base32"])
        .arg(path))
    .unwrap();
    assert_eq!(
        h.to_nix32(),
        nix32.trim(),
        "nix-hash --base32 of {}",
        path.display()
    );
    let b16 = run(nix_command("nix-hash").args(["--type", "sha256"]).arg(path)).unwrap();
    assert_eq!(h.to_base16(), b16.trim());
}

fn write(p: &Path, data: &[u8], mode: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn generated_tree_matches_nix_store_dump() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("tree");
    // Pseudo-random but reproducible content, 3 MiB + 5: several read chunks.
    let big = imgbuild_testutil::noise(0x9e37_79b9_7f4a_7c15, (3 << 20) + 5);
    write(&t.join("big.bin"), &big, 0o444);
    write(&t.join("exec"), b"#!/bin/sh\necho hi\n", 0o755);
    write(&t.join("owner-exec-only"), b"x", 0o700);
    write(&t.join("group-exec-only"), b"x", 0o654);
    write(&t.join("empty"), b"", 0o644);
    write(&t.join("empty-exec"), b"", 0o555);
    for n in 0..=17 {
        write(
            &t.join(format!("len/{n:02}")),
            &vec![b'a' + n as u8; n],
            0o444,
        );
    }
    write(&t.join("nested/a/b/c/d/e/f/leaf"), b"leaf\n", 0o444);
    std::fs::create_dir_all(t.join("empty-dir")).unwrap();
    std::fs::create_dir_all(t.join("nested/empty")).unwrap();
    // Names that sort differently by bytes than by locale / case, and odd bytes.
    for name in [
        "B",
        "a",
        "a.b",
        "a0",
        "a-b",
        "_x",
        "Z",
        "é",
        "ü-2",
        "with space",
        "tab\tname",
        "new\nline",
        ".dot",
        "-dash",
        "#hash",
        "\u{1F600}",
    ] {
        write(&t.join("names").join(name), name.as_bytes(), 0o444);
    }
    let long = "l".repeat(255);
    write(&t.join("names").join(&long), b"long", 0o444);
    symlink("exec", t.join("rel-link")).unwrap();
    symlink(
        "/nix/store/00000000000000000000000000000000-missing/bin/x",
        t.join("abs-link"),
    )
    .unwrap();
    symlink("../..", t.join("nested/a/up")).unwrap();
    symlink("dangling target with spaces", t.join("dangling")).unwrap();
    symlink("empty-dir", t.join("dir-link")).unwrap();
    symlink("t".repeat(1000), t.join("long-target")).unwrap();
    std::fs::hard_link(t.join("exec"), t.join("hardlink-to-exec")).unwrap();

    check_against_nix(&t);
    // Single nodes as the root of a NAR.
    check_against_nix(&t.join("exec"));
    check_against_nix(&t.join("empty"));
    check_against_nix(&t.join("rel-link"));
    check_against_nix(&t.join("empty-dir"));
    check_against_nix(&t.join("big.bin"));
}

#[test]
fn nix32_matches_nix_hash_to_base32() {
    let mut x: u64 = 1;
    for round in 0..24 {
        let mut bytes = [0u8; 32];
        for b in &mut bytes {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (x >> 56) as u8;
        }
        if round == 0 {
            bytes = [0; 32];
        } else if round == 1 {
            bytes = [0xff; 32];
        }
        let h = NarHash(bytes);
        let b16 = h.to_base16();
        let real =
            run(Command::new("nix-hash").args(["--type", "sha256", "--to-base32", &b16])).unwrap();
        assert_eq!(h.to_nix32(), real.trim(), "hash {b16}");
        assert_eq!(nix32_encode(&bytes), real.trim());
        assert_eq!(NarHash::parse(real.trim()).unwrap(), h);
        let back =
            run(Command::new("nix-hash").args(["--type", "sha256", "--to-base16", &h.to_nix32()]))
                .unwrap();
        assert_eq!(back.trim(), b16);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    /// Random small trees: file contents, modes and names, compared with nix-store --dump.
    #[test]
    fn random_trees_match(entries in proptest::collection::vec(
        ("[a-zA-Z0-9._ -]{1,12}", proptest::collection::vec(any::<u8>(), 0..300), any::<bool>(), 0u8..4),
        1..12,
    )) {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        std::fs::create_dir(&t).unwrap();
        for (i, (name, data, exec, kind)) in entries.iter().enumerate() {
            if name == "." || name == ".." { continue; }
            let sub = t.join(format!("d{}", i % 3));
            std::fs::create_dir_all(&sub).unwrap();
            let p = sub.join(name);
            if p.symlink_metadata().is_ok() { continue; }
            match kind {
                0 => symlink(String::from_utf8_lossy(data).replace('\0', "").chars().take(40).collect::<String>() + "x", &p).unwrap(),
                1 => std::fs::create_dir(&p).unwrap(),
                _ => write(&p, data, if *exec { 0o755 } else { 0o644 }),
            }
        }
        let real = real_dump(&t);
        let mut ours = Vec::new();
        nar_dump(&t, &mut ours).unwrap();
        prop_assert!(ours == real);
    }
}
