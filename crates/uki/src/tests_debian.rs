//! Against Debian's systemd stub (`systemd-boot-efi`, the .deb `cargo xtask fixture` fetches
//! into its cache: `$IMGBUILD_CACHE/x/systemd-boot-efi_*`, default `<workspace>/.cache`), and
//! checked by binutils' `objdump -h`. Skips, saying so, when the .deb or objdump is missing.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cache() -> PathBuf {
    match std::env::var_os("IMGBUILD_CACHE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache"),
    }
}

/// The first file under `<cache>/x/<prefix>*/<rel>`.
fn cached(prefix: &str, rel: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cache().join("x"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with("_amd64"))
        })
        .collect();
    dirs.sort();
    dirs.into_iter().map(|d| d.join(rel)).find(|p| p.is_file())
}

/// `objdump -h`'s rows: (name, size, VMA, file offset).
fn objdump_sections(path: &Path) -> Option<Vec<(String, u64, u64, u64)>> {
    let out = Command::new("objdump").arg("-h").arg(path).output().ok()?;
    assert!(out.status.success(), "objdump -h failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    Some(
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 7 && f[0].parse::<u32>().is_ok())
                    .then(|| (f[1].to_string(), hex(f[2]), hex(f[3]), hex(f[5])))
            })
            .collect(),
    )
}

#[test]
fn debian_stub_assembles_and_objdump_agrees() {
    let Some(stub_path) = cached(
        "systemd-boot-efi_",
        "usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    ) else {
        eprintln!(
            "skipped: no systemd-boot-efi .deb unpacked under {} (cargo xtask fixture fetches it)",
            cache().display()
        );
        return;
    };
    let stub = std::fs::read(&stub_path).unwrap();
    // A real EFI-stub kernel when the fixture's kernel .deb is there, else made-up bytes.
    let kernel = std::fs::read_dir(cache().join("x"))
        .ok()
        .and_then(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains("/linux-image-"))
                .flat_map(|d| {
                    std::fs::read_dir(d.join("boot"))
                        .into_iter()
                        .flatten()
                        .flatten()
                })
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().contains("vmlinuz"))
        })
        .map(|p| std::fs::read(p).unwrap())
        .unwrap_or_else(|| vec![0x5a; 100_000]);
    let initrd = vec![0x42u8; 123_457];
    let s = Sections {
        os_release: b"NAME=NixOS\nID=nixos\nPRETTY_NAME=\"NixOS 25.11 (Xantusia)\"\n".to_vec(),
        cmdline: "init=/nix/store/00000000000000000000000000000000-nixos-system/init console=ttyS0"
            .into(),
        devicetree: None,
        uname: Some("6.1.0-57-cloud-amd64".into()),
        initrd: initrd.len() as u64,
        linux: Kernel::read(&kernel),
    };
    let parts = s.parts(&stub).unwrap();
    let layout = assemble(&stub, &parts).unwrap();
    let img = layout.to_vec(&[&initrd, &kernel]).unwrap();
    let again = assemble(&stub, &s.parts(&stub).unwrap())
        .unwrap()
        .to_vec(&[&initrd, &kernel])
        .unwrap();
    assert!(img == again, "two assemblies differ");
    let pe = pe::Pe::parse(&img).unwrap();
    let stub_pe = pe::Pe::parse(&stub).unwrap();
    let n = stub_pe.sections.len();
    let names: Vec<String> = pe.sections[n..]
        .iter()
        .map(pe::SectionHeader::name)
        .collect();
    assert_eq!(names, [".osrel", ".cmdline", ".uname", ".initrd", ".linux"]);
    let info = read(&img).unwrap();
    assert_eq!(info.uname.as_deref(), Some("6.1.0-57-cloud-amd64"));
    let sbat = pe.section(".sbat").unwrap().data(&img).unwrap();
    let sbat = std::str::from_utf8(sbat).unwrap();
    assert!(sbat.starts_with("sbat,1,SBAT Version,"), "{sbat}");
    assert!(
        sbat.contains("\nsystemd,") || sbat.contains("\nsystemd-"),
        "{sbat}"
    );
    assert!(sbat.ends_with(
        "uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/\n\0"
    ));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nixos.efi");
    std::fs::write(&out, &img).unwrap();
    let Some(rows) = objdump_sections(&out) else {
        eprintln!("skipped the objdump check: objdump (binutils) is not installed");
        return;
    };
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let ours: Vec<String> = pe.sections.iter().map(pe::SectionHeader::name).collect();
    assert_eq!(names, ours, "objdump's section list");
    for ((name, _size, vma, off), s) in rows.iter().zip(&pe.sections) {
        assert_eq!(
            *off,
            u64::from(s.pointer_to_raw_data),
            "{name}: file offset"
        );
        assert_eq!(*vma, u64::from(s.virtual_address), "{name}: VMA");
    }
    for (name, _size, vma, off) in &rows[n..] {
        assert_eq!(
            off % u64::from(pe.file_alignment),
            0,
            "{name}: FileAlignment"
        );
        assert_eq!(
            vma % u64::from(pe.section_alignment),
            0,
            "{name}: SectionAlignment"
        );
    }
    for (name, size, vma, off) in &rows {
        eprintln!("objdump -h: {name:<9} size {size:#10x} vma {vma:#10x} file off {off:#10x}");
    }
    eprintln!(
        "debian stub {}: {} sections, UKI {} bytes, SizeOfImage {:#x}",
        stub_path.display(),
        pe.sections.len(),
        img.len(),
        pe.size_of_image
    );
}
