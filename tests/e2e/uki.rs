//! `[bootloader] uki = true` (issue 26 step 2): a format made from `raw-efi` by `base` puts a
//! Unified Kernel Image in the ESP's `EFI/Linux/` and no type #1 entry. The demo closure has
//! no systemd stub, so a copy of it gets `imgbuild-uki`'s sample stub (the Debian stub is
//! checked by the crate's own test). The UKI is read back from the image with `imgbuild cat`:
//! its `.linux` and `.initrd` are the closure's kernel and initrd byte for byte, the
//! manifest's sections are `objdump -h`'s (when binutils is installed), two builds are equal.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;

const UKI_FORMAT: &str = "base = \"raw-efi\"\nname = \"raw-efi-uki\"\n[bootloader]\nuki = true\n";

fn build(root: &Path, format: &Path, out: &Path) -> Value {
    let mut args = closure_args(&format.display().to_string(), root, out);
    args.push("--json".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_slice(&ok(&mut imgbuild(&refs)).stdout).unwrap()
}

fn cat(img: &Path, path: &str) -> Vec<u8> {
    ok(&mut imgbuild(&["cat", &img.display().to_string(), path])).stdout
}

fn ls(img: &Path, dir: &str) -> String {
    String::from_utf8(ok(&mut imgbuild(&["ls", &img.display().to_string(), dir])).stdout).unwrap()
}

/// The store file a toplevel link names (`kernel`, `initrd`), read.
fn linked(top: &Path, store: &Path, name: &str) -> Vec<u8> {
    let target = std::fs::read_link(top.join(name)).unwrap();
    let rel = target.strip_prefix("/nix/store").unwrap();
    std::fs::read(store.join(rel)).unwrap()
}

#[test]
fn uki_format_puts_a_uki_in_efi_linux_and_no_type1_entry() {
    let t = tempfile::tempdir().unwrap();
    let (root, top, store) = demo_with_stub(t.path());
    let format = t.path().join("raw-efi-uki.toml");
    std::fs::write(&format, UKI_FORMAT).unwrap();
    let img = t.path().join("a.img");
    let m = build(&root, &format, &img);
    let uki = &m["boot"]["uki"];
    assert_eq!(uki["path"], "EFI/Linux/nixos.efi");
    assert!(m["boot"]["entry"].is_null(), "{}", m["boot"]);
    let toplevel = m["toplevel"].as_str().unwrap();
    let params = std::fs::read_to_string(top.join("kernel-params")).unwrap();
    assert_eq!(
        uki["cmdline"],
        format!("init={toplevel}/init {}", params.trim())
    );
    assert_eq!(uki["uname"], "6.1.0");
    assert_eq!(uki["pretty_name"], "NixOS 24.05 (Uakari)");
    let names: Vec<&str> = uki["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [".text", ".sbat", ".sdmagic", ".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
    );

    // The file on the ESP is the one the manifest describes, and holds the closure's files.
    let bytes = cat(&img, "1:/EFI/Linux/nixos.efi");
    assert_eq!(bytes.len() as u64, uki["size"].as_u64().unwrap());
    assert_eq!(sha256_of(&bytes), uki["sha256"].as_str().unwrap());
    let pe = imgbuild_uki::pe::Pe::parse(&bytes).unwrap();
    for (name, link) in [(".linux", "kernel"), (".initrd", "initrd")] {
        let data = pe.section(name).unwrap().data(&bytes).unwrap();
        assert!(
            data == linked(&top, &store, link),
            "{name} is not the {link}"
        );
    }
    let loader = String::from_utf8(cat(&img, "1:/loader/loader.conf")).unwrap();
    assert!(loader.contains("default nixos.efi\n"), "{loader}");
    let entries = ls(&img, "1:/loader/entries");
    assert!(
        !entries.contains(".conf"),
        "a type #1 entry is left: {entries}"
    );
    let copies = ls(&img, "1:/EFI/nixos");
    assert!(
        !copies.contains("bzImage"),
        "a kernel copy is left: {copies}"
    );

    // objdump -h lists the sections where the manifest says.
    let efi = t.path().join("nixos.efi");
    std::fs::write(&efi, &bytes).unwrap();
    match Command::new("objdump").arg("-h").arg(&efi).output() {
        Err(_) => eprintln!("skipped the objdump check: objdump (binutils) is not installed"),
        Ok(o) => {
            assert!(o.status.success(), "{o:?}");
            let text = String::from_utf8(o.stdout).unwrap();
            let rows: Vec<(String, u64, u64)> = text
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() == 7 && f[0].parse::<u32>().is_ok()).then(|| {
                        let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
                        (f[1].to_string(), hex(f[3]), hex(f[5]))
                    })
                })
                .collect();
            let want: Vec<(String, u64, u64)> = uki["sections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap().to_string(),
                        s["virtual_address"].as_u64().unwrap(),
                        s["offset"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(rows, want, "objdump -h: {text}");
        }
    }

    // inspect reads the UKI back from the ESP: the manifest's sections and texts, and the
    // entry systemd-boot boots.
    let o = ok(&mut imgbuild(&[
        "inspect",
        "--json",
        &img.display().to_string(),
    ]));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let u = &r["boot"]["systemd_boot"][0]["ukis"][0];
    assert_eq!(u["path"], "/EFI/Linux/nixos.efi", "{r}");
    assert_eq!(u["default"], true);
    for key in ["cmdline", "uname", "pretty_name", "size"] {
        assert_eq!(u[key], uki[key], "{key}");
    }
    let seen: Vec<(&Value, &Value, &Value)> = u["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (&s["name"], &s["offset"], &s["size"]))
        .collect();
    let want: Vec<(&Value, &Value, &Value)> = uki["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (&s["name"], &s["offset"], &s["size"]))
        .collect();
    assert_eq!(seen, want);
    let text =
        String::from_utf8(ok(&mut imgbuild(&["inspect", &img.display().to_string()])).stdout)
            .unwrap();
    for want in [
        "* /EFI/Linux/nixos.efi".to_string(),
        ": NixOS 24.05 (Uakari)".to_string(),
        format!("cmdline  {}", uki["cmdline"].as_str().unwrap()),
        "uname    6.1.0".to_string(),
        "sections .text @0x400".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} not in {text}");
    }

    // Reproducible: a second build is the same disk.
    let again = build(&root, &format, &t.path().join("b.img"));
    assert_eq!(again["disk_sha256"], m["disk_sha256"]);
    assert_eq!(again["boot"]["uki"], m["boot"]["uki"]);
}

#[test]
fn uki_file_name_comes_from_boot_json_and_a_missing_stub_is_named() {
    let t = tempfile::tempdir().unwrap();
    let (root, top, _) = demo_with_stub(t.path());
    let bj = top.join("boot.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&bj).unwrap()).unwrap();
    doc["org.imgbuild.v1"] = json!({ "ukiFile": "appliance_1.2+3.efi" });
    std::fs::write(&bj, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let format = t.path().join("raw-efi-uki.toml");
    std::fs::write(&format, UKI_FORMAT).unwrap();
    let img = t.path().join("a.img");
    let m = build(&root, &format, &img);
    assert_eq!(m["boot"]["uki"]["path"], "EFI/Linux/appliance_1.2+3.efi");
    let loader = String::from_utf8(cat(&img, "1:/loader/loader.conf")).unwrap();
    assert!(loader.contains("default appliance_1.2.efi\n"), "{loader}");

    // The committed demo has no stub: the error names where it looked.
    let mut args = closure_args(
        &format.display().to_string(),
        &demo(),
        &t.path().join("c.img"),
    );
    args.push("--dry-run".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(&mut imgbuild(&refs));
    assert!(
        err.contains("no systemd EFI stub in the closure for the unified kernel image")
            && err.contains("lib/systemd/boot/efi/linuxx64.efi.stub"),
        "{err}"
    );
}
