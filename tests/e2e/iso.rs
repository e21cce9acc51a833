//! The `iso` format judged by other people's tools: xorriso (El Torito report, extraction),
//! isoinfo, 7-Zip, unsquashfs, sgdisk and fsck.fat. The demo closures lack the ISO settings
//! imgbuild's NixOS module records, so each test copies a demo and patches its boot.json
//! (`"org.imgbuild.v1".iso`), with a stand-in syslinux (noise in syslinux's file names: no
//! test here boots; `cargo xtask boot` does, on the real fixture).

use crate::common::*;
use imgbuild_testutil::noise;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const VOLUME_ID: &str = "nixos-demo-24.05-x86_64";
/// A store path for the stand-in syslinux (not in the closure: imgbuild reads it from the
/// store root, as from any store).
const SYSLINUX: &str = "/nix/store/1m7b1zcsyfs6bl0ipzdcpq3x0jb5jsbb-syslinux-6.04";
/// A stand-in systemd for the aarch64 demo, whose toplevel has none.
const SYSTEMD_AA64: &str = "/nix/store/2pbxj7iymqlb4hzrwbl4vqzbcx6iq9dd-systemd-boot-aa64";

fn host(root: &Path, store_path: &str) -> PathBuf {
    root.join(store_path.trim_start_matches('/'))
}

fn toplevel(root: &Path) -> PathBuf {
    let link = std::fs::read_link(root.join("result")).unwrap();
    host(root, link.to_str().unwrap())
}

/// A copy of the demo closure `src` at `dir`, its boot.json's `"org.imgbuild.v1".iso` set to
/// `iso` (`None`: left out), with the stand-in syslinux in the store.
fn patched(src: &Path, dir: &Path, iso: Option<Value>) -> PathBuf {
    let root = dir.join("closure");
    std::fs::create_dir_all(dir).unwrap();
    ok(Command::new("cp").arg("-a").arg(src).arg(&root));
    let top = toplevel(&root);
    ok(Command::new("chmod").arg("-R").arg("u+w").arg(&top));
    let share = host(&root, SYSLINUX).join("share/syslinux");
    std::fs::create_dir_all(&share).unwrap();
    for (name, seed, len) in [
        ("isolinux.bin", 1, 24_576),
        ("ldlinux.c32", 2, 120_000),
        ("isohdpfx.bin", 3, 432),
    ] {
        std::fs::write(share.join(name), noise(seed, len)).unwrap();
    }
    let path = top.join("boot.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    if let Some(iso) = iso {
        spec["org.imgbuild.v1"] = json!({ "iso": iso });
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    root
}

/// The aarch64 demo, patched, with a stand-in systemd-boot (the demo boots with extlinux).
fn patched_aarch64(dir: &Path) -> PathBuf {
    let iso = json!({ "volumeID": "nixos-demo-24.05-aarch64" });
    let root = patched(&demo_aarch64(), dir, Some(iso));
    let efi = host(&root, SYSTEMD_AA64).join("lib/systemd/boot/efi");
    std::fs::create_dir_all(&efi).unwrap();
    std::fs::write(efi.join("systemd-bootaa64.efi"), noise(4, 50_000)).unwrap();
    let top = toplevel(&root);
    // The demo's `systemd` link names a systemd without boot loader files.
    let _ = std::fs::remove_file(top.join("systemd"));
    std::os::unix::fs::symlink(SYSTEMD_AA64, top.join("systemd")).unwrap();
    let path = top.join("boot.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["org.nixos.systemd-boot"] = json!({});
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    root
}

fn build(root: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = closure_args("iso", root, out);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--json".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_slice(&ok(&mut imgbuild(&refs)).stdout).unwrap()
}

fn iso_settings() -> Value {
    json!({ "volumeID": VOLUME_ID, "syslinux": SYSLINUX })
}

/// The closure's store paths (base names), sorted.
fn closure_names(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("closure-info/store-paths")).unwrap();
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.trim_start_matches("/nix/store/").to_string())
        .collect();
    v.sort();
    v
}

/// `xorriso -osirrox`: the whole volume extracted into `dest`.
fn extract_all(iso: &Path, dest: &Path) {
    ok(Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/"])
        .arg(dest));
}

fn same_bytes(a: &Path, b: &Path) {
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "{} differs from {}",
        a.display(),
        b.display()
    );
}

#[test]
fn iso_x86_64_judged_by_xorriso_isoinfo_7zz_unsquashfs_sgdisk_fsck() {
    let dir = tempfile::tempdir().unwrap();
    let root = patched(&demo(), dir.path(), Some(iso_settings()));
    let iso = dir.path().join("nixos.iso");
    let m = build(&root, &iso, &["-j", "1"]);
    let again = dir.path().join("again.iso");
    build(&root, &again, &["-j", "3"]);
    assert_eq!(sha256(&iso), sha256(&again), "-j 1 and -j 3 differ");
    assert_eq!(m["sha256"].as_str().unwrap(), sha256(&iso));
    assert!(!dir.path().join("nixos.iso.store.tmp").exists());

    // El Torito: BIOS (isolinux, boot info table) then UEFI (the EFI image), where the
    // manifest says.
    let report = stdout(
        Command::new("xorriso")
            .arg("-indev")
            .arg(&iso)
            .args(["-report_el_torito", "plain"]),
    );
    let mi = &m["iso"];
    let torito = mi["el_torito"].as_array().unwrap();
    assert_eq!(torito.len(), 2, "{m}");
    for (e, (n, pltf, path)) in torito.iter().zip([
        ("1", "BIOS", "/isolinux/isolinux.bin"),
        ("2", "UEFI", "/boot/efi.img"),
    ]) {
        let line = report
            .lines()
            .find(|l| l.starts_with("El Torito boot img :") && l.contains(pltf))
            .unwrap_or_else(|| panic!("no {pltf} entry:\n{report}"));
        let lba = line.split_whitespace().last().unwrap();
        assert_eq!(lba, e["lba"].to_string(), "{line}");
        assert!(
            report.contains(&format!("El Torito img path :   {n}  {path}")),
            "{report}"
        );
        assert_eq!(e["image"], path);
    }
    assert!(report.contains("boot-info-table"), "{report}");

    let info = stdout(Command::new("isoinfo").args(["-d", "-R", "-i"]).arg(&iso));
    assert!(info.contains(&format!("Volume id: {VOLUME_ID}")), "{info}");
    assert!(info.contains("Rock Ridge signatures"), "{info}");
    assert!(info.contains("El Torito VD version 1 found"), "{info}");

    let l = stdout(Command::new("7zz").arg("l").arg(&iso));
    for f in [
        "nix-store.squashfs",
        "boot/bzImage",
        "boot/initrd",
        "boot/efi.img",
        "version.txt",
        "isolinux/isolinux.bin",
        "isolinux/ldlinux.c32",
        "isolinux/isolinux.cfg",
    ] {
        assert!(l.contains(f), "7zz does not list {f}:\n{l}");
    }

    // The tree, extracted by xorriso, against the closure.
    let x = dir.path().join("x");
    extract_all(&iso, &x);
    let fixture: Value =
        serde_json::from_slice(&std::fs::read(demo().join("fixture.json")).unwrap()).unwrap();
    let kernel = fixture["kernel"].as_str().unwrap();
    let initrd = fixture["initrd"].as_str().unwrap();
    same_bytes(&x.join("boot/bzImage"), &host(&root, kernel));
    same_bytes(&x.join("boot/initrd"), &host(&root, initrd));
    let share = host(&root, SYSLINUX).join("share/syslinux");
    same_bytes(&x.join("isolinux/ldlinux.c32"), &share.join("ldlinux.c32"));
    // isolinux.bin with its boot information table (bytes 8..64): the primary volume
    // descriptor's block (16), its own block, its length, a checksum.
    let got = std::fs::read(x.join("isolinux/isolinux.bin")).unwrap();
    let orig = std::fs::read(share.join("isolinux.bin")).unwrap();
    assert_eq!((&got[..8], &got[64..]), (&orig[..8], &orig[64..]));
    let word = |i: usize| u32::from_le_bytes(got[i..i + 4].try_into().unwrap());
    assert_eq!(word(8), 16);
    assert_eq!(u64::from(word(12)), torito[0]["lba"].as_u64().unwrap());
    assert_eq!(word(16) as usize, got.len());
    let version = std::fs::read_to_string(x.join("version.txt")).unwrap();
    assert_eq!(version, "24.05.20240601.b3b2b28");
    let cfg = std::fs::read_to_string(x.join("isolinux/isolinux.cfg")).unwrap();
    let init = fixture["init"].as_str().unwrap();
    let params = fixture["kernelParams"].as_str().unwrap();
    for label in [
        "boot",
        "boot-nomodeset",
        "boot-copytoram",
        "boot-debug",
        "boot-serial",
    ] {
        assert!(cfg.contains(&format!("\nLABEL {label}\n")), "{cfg}");
    }
    assert!(cfg.contains("DEFAULT boot\n"), "{cfg}");
    assert!(
        cfg.contains(&format!(
            "APPEND init={init} {params}\nINITRD /boot/initrd\n"
        )),
        "{cfg}"
    );
    assert!(cfg.contains("LINUX /boot/bzImage\n"), "{cfg}");

    // The store image: the closure and the registration at its top.
    let sq = stdout(
        Command::new("unsquashfs")
            .arg("-l")
            .arg(x.join("nix-store.squashfs")),
    );
    let mut top: Vec<String> = sq
        .lines()
        .filter_map(|p| p.strip_prefix("squashfs-root/"))
        .filter(|p| !p.contains('/'))
        .map(str::to_string)
        .collect();
    top.sort();
    let mut want = closure_names(&root);
    want.push("nix-path-registration".into());
    want.sort();
    assert_eq!(top, want);
    assert_eq!(
        mi["store_image_size"].as_u64().unwrap(),
        std::fs::metadata(x.join("nix-store.squashfs"))
            .unwrap()
            .len()
    );

    // The EFI image: a clean FAT with systemd-boot, one entry booting the system.
    let efi = x.join("boot/efi.img");
    ok(Command::new("fsck.fat").arg("-n").arg(&efi));
    let entries = stdout(
        Command::new("mdir")
            .args(["-b", "-i"])
            .arg(&efi)
            .arg("::/loader/entries"),
    );
    assert_eq!(entries.lines().count(), 1, "{entries}");
    let entry = stdout(
        Command::new("mtype")
            .arg("-i")
            .arg(&efi)
            .arg(entries.trim()),
    );
    assert!(
        entry.contains(&format!("options init={init} {params}")),
        "{entry}"
    );
    let bootx64 = stdout(
        Command::new("mdir")
            .args(["-b", "-i"])
            .arg(&efi)
            .arg("::/EFI/BOOT"),
    );
    assert!(bootx64.contains("BOOTX64.EFI"), "{bootx64}");

    // The hybrid: a GPT sgdisk finds sound, its ESP the EFI image; the MBR's code is
    // isohdpfx.bin's, followed by isolinux.bin's first sector.
    let v = stdout(Command::new("sgdisk").arg("-v").arg(&iso));
    assert!(v.contains("No problems found"), "{v}");
    let p = stdout(Command::new("sgdisk").args(["-i", "1"]).arg(&iso));
    assert!(p.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), "{p}");
    let efi_lba = torito[1]["lba"].as_u64().unwrap();
    assert!(
        p.contains(&format!("First sector: {} ", efi_lba * 4)),
        "{p}"
    );
    let img = std::fs::read(&iso).unwrap();
    assert_eq!(&img[..432], &noise(3, 432)[..]);
    let bios_lba = torito[0]["lba"].as_u64().unwrap();
    let at = u32::from_le_bytes(img[432..436].try_into().unwrap());
    assert_eq!(u64::from(at), bios_lba * 4);
    assert_eq!(&img[510..512], &[0x55, 0xAA]);
    assert_eq!(img.len() as u64 % (1 << 20), 0);
}

#[test]
fn iso_aarch64_is_uefi_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = patched_aarch64(dir.path());
    let iso = dir.path().join("a.iso");
    let m = build(&root, &iso, &[]);
    assert_eq!(m["system"], "aarch64-linux");
    let report = stdout(
        Command::new("xorriso")
            .arg("-indev")
            .arg(&iso)
            .args(["-report_el_torito", "plain"]),
    );
    assert!(!report.contains("BIOS"), "{report}");
    assert!(
        report.contains("El Torito img path :   1  /boot/efi.img"),
        "{report}"
    );
    let x = dir.path().join("x");
    extract_all(&iso, &x);
    assert!(!x.join("isolinux").exists());
    assert!(x.join("boot/Image").is_file());
    let bootaa64 = stdout(
        Command::new("mdir")
            .args(["-b", "-i"])
            .arg(x.join("boot/efi.img"))
            .arg("::/EFI/BOOT"),
    );
    assert!(bootaa64.contains("BOOTAA64.EFI"), "{bootaa64}");
    let v = stdout(Command::new("sgdisk").arg("-v").arg(&iso));
    assert!(v.contains("No problems found"), "{v}");
    let img = std::fs::read(&iso).unwrap();
    assert!(
        img[..440].iter().all(|&b| b == 0),
        "no MBR code without BIOS"
    );
}

#[test]
fn iso_refuses_missing_settings_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("none", None, "\"org.imgbuild.v1\".iso.volumeID"),
        (
            "no-syslinux",
            Some(json!({ "volumeID": VOLUME_ID })),
            "\"org.imgbuild.v1\".iso.syslinux",
        ),
        (
            "long-volume-id",
            Some(json!({ "volumeID": "x".repeat(33), "syslinux": SYSLINUX })),
            "iso.volumeID `xxxxxxxx",
        ),
        (
            "bad-syslinux",
            Some(json!({ "volumeID": VOLUME_ID, "syslinux": "/nix/store/nothing-here" })),
            "nothing-here",
        ),
    ];
    for (name, iso, want) in cases {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        let root = patched(&demo(), &d, iso);
        let out = d.join("x.iso");
        let args = closure_args("iso", &root, &out);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&mut imgbuild(&refs));
        assert!(err.contains(want), "{name}: {err}");
        if iso_missing(name) {
            assert!(err.contains("imgbuild.format = \"iso\""), "{name}: {err}");
        }
        assert!(
            !out.exists() && !d.join("x.iso.store.tmp").exists(),
            "{name}"
        );
    }
    // Disk options an ISO has nothing for.
    let root = patched(&demo(), &dir.path().join("opts"), Some(iso_settings()));
    let out = dir.path().join("o.iso");
    let mut args = closure_args("iso", &root, &out);
    args.extend(["--size".to_string(), "1G".to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(&mut imgbuild(&refs));
    assert!(err.contains("--size"), "{err}");
}

fn iso_missing(case: &str) -> bool {
    matches!(case, "none" | "no-syslinux")
}
