//! Shared by the tests that judge our images against Debian's GRUB: the platform directory
//! read from disk, and raw LZMA1 decompression of a core image's payload.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use imgbuild_grub::Platform;

/// Debian's i386-pc GRUB files (package grub-pc-bin).
pub const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";

/// Debian's x86_64-efi GRUB files (package grub-efi-amd64-bin).
pub const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// Every file of GRUB's i386-pc directory, or `None` (with the reason printed) when it is
/// not installed.
pub fn platform() -> Option<Platform> {
    platform_at(GRUB_DIR, "grub-pc-bin")
}

/// Every file of the GRUB platform directory `dir` (Debian package `package`), or `None`
/// (with the reason printed) when it is not installed.
pub fn platform_at(dir: &str, package: &str) -> Option<Platform> {
    let name = dir;
    let dir = Path::new(dir);
    if !dir.join("kernel.img").exists() {
        eprintln!("skipped: {name} is absent (apt-get install {package})");
        return None;
    }
    let mut p = Platform::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            let name = entry.file_name().into_string().unwrap();
            p.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    Some(p)
}

/// Whether `tool` runs; prints why a test is skipped when it does not.
pub fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: {tool} is not installed");
    }
    ok
}

pub fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// A core image's parts: (diskboot sector, decompressor, uncompressed payload).
pub fn split_core(core: &[u8], decompressor_len: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let diskboot = core[..512].to_vec();
    let dec = core[512..512 + decompressor_len].to_vec();
    let compressed_len = le32(&dec, 8);
    let uncompressed_len = le32(&dec, 12);
    let start = 512 + decompressor_len;
    assert_eq!(core.len(), start + compressed_len, "compressed size field");
    let payload = imgbuild_grub::decompress(&core[start..], uncompressed_len).unwrap();
    (diskboot, dec, payload)
}

/// What `grub-mkimage -O TARGET -d DIR -p PREFIX [-c CONFIG] MODULES...` writes, made in
/// `scratch`.
pub fn mkimage(
    scratch: &Path,
    target: &str,
    dir: &str,
    prefix: &str,
    config: Option<&[u8]>,
    modules: &[&str],
) -> Vec<u8> {
    let out = scratch.join(format!("{target}.img"));
    let mut cmd = Command::new("grub-mkimage");
    cmd.args(["-O", target, "-d", dir, "-p", prefix, "-o"])
        .arg(&out);
    if let Some(config) = config {
        let path = scratch.join("load.cfg");
        std::fs::write(&path, config).unwrap();
        cmd.arg("-c").arg(path);
    }
    let status = cmd.args(modules).status().unwrap();
    assert!(status.success(), "grub-mkimage -O {target} failed");
    std::fs::read(&out).unwrap()
}
