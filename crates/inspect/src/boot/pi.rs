//! The Raspberry Pi firmware partition: config.txt's `kernel=` and `armstub=` settings, the
//! firmware files and device trees present.

use crate::fs::{Filesystem, Kind};
use crate::path::normalize;

use super::{is_file, read_text, PiKernel, RaspberryPi};

/// Raspberry Pi firmware on `fs`, if it has config.txt and firmware files.
pub(crate) fn raspberry_pi(
    fs: &Filesystem,
    partition: u32,
    warnings: &mut Vec<String>,
) -> Option<RaspberryPi> {
    let top = fs.read_dir(b"/").ok()?;
    let lower = |e: &crate::fs::Entry| String::from_utf8_lossy(&e.name).to_lowercase();
    let firmware: Vec<String> = top
        .iter()
        .filter(|e| e.kind == Kind::File)
        .map(lower)
        .filter(|n| {
            n == "bootcode.bin"
                || (n.starts_with("start") && n.ends_with(".elf"))
                || (n.starts_with("fixup") && n.ends_with(".dat"))
        })
        .collect();
    let has_config = top.iter().any(|e| lower(e) == "config.txt");
    if !has_config || firmware.is_empty() {
        return None;
    }
    let text = read_text(fs, b"/config.txt", warnings).unwrap_or_default();
    let mut pi = RaspberryPi {
        partition,
        firmware,
        dtbs: top
            .iter()
            .filter(|e| e.kind == Kind::File && lower(e).ends_with(".dtb"))
            .count(),
        ..RaspberryPi::default()
    };
    let mut section = "all".to_string();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let (k, v) = (k.trim(), v.trim());
            if k == "kernel" {
                pi.kernels.push(PiKernel {
                    section: section.clone(),
                    file: v.to_string(),
                    present: is_file(fs, &normalize(v.as_bytes())),
                });
            } else if k == "armstub" {
                pi.armstub = Some(v.to_string());
            }
        }
    }
    Some(pi)
}
