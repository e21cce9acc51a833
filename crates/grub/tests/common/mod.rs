//! Shared by the tests that judge our images against Debian's GRUB: the platform directory
//! read from disk, and raw LZMA1 decompression of a core image's payload.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use imgbuild_grub::Platform;

/// Debian's i386-pc GRUB files (package grub-pc-bin).
pub const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";

/// Every file of GRUB's i386-pc directory, or `None` (with the reason printed) when it is
/// not installed.
pub fn platform() -> Option<Platform> {
    let dir = Path::new(GRUB_DIR);
    if !dir.join("kernel.img").exists() {
        eprintln!("skipped: {GRUB_DIR} is absent (apt-get install grub-pc-bin)");
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
