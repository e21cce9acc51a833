//! Shared by the tests that judge our images against Debian's GRUB: the platform directory
//! read from disk, and raw LZMA1 decompression of a core image's payload.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use imgbuild_grub::Platform;
use liblzma::stream::{Action, Filters, LzmaOptions, Stream};

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

/// Decodes `size` bytes of a raw LZMA1 stream with i386-pc core.img's properties (lc=3,
/// lp=0, pb=2, 64 KiB dictionary), stopping at `size` like GRUB's decompressor: the stream
/// may or may not carry an end marker.
pub fn unlzma(data: &[u8], size: usize) -> Vec<u8> {
    let mut opts = LzmaOptions::new();
    opts.dict_size(1 << 16)
        .literal_context_bits(3)
        .literal_position_bits(0)
        .position_bits(2);
    let mut filters = Filters::new();
    filters.lzma1(&opts);
    let mut s = Stream::new_raw_decoder(&filters).unwrap();
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let before = (s.total_in(), out.len());
        let rest = &data[s.total_in() as usize..];
        s.process_vec(rest, &mut out, Action::Run).unwrap();
        assert_ne!(before, (s.total_in(), out.len()), "LZMA stream ended early");
    }
    out
}

/// A core image's parts: (diskboot sector, decompressor, uncompressed payload).
pub fn split_core(core: &[u8], decompressor_len: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let diskboot = core[..512].to_vec();
    let dec = core[512..512 + decompressor_len].to_vec();
    let compressed_len = le32(&dec, 8);
    let uncompressed_len = le32(&dec, 12);
    let start = 512 + decompressor_len;
    assert_eq!(core.len(), start + compressed_len, "compressed size field");
    let payload = unlzma(&core[start..], uncompressed_len);
    (diskboot, dec, payload)
}
