//! GRUB configurations: where they are and their `menuentry` titles.

use crate::fs::Filesystem;

use super::{read_text, Grub};

/// GRUB configurations on `fs`.
pub(crate) fn grub(fs: &Filesystem, partition: u32, warnings: &mut Vec<String>) -> Vec<Grub> {
    let mut out = Vec::new();
    for config in [
        &b"/boot/grub/grub.cfg"[..],
        b"/grub/grub.cfg",
        b"/EFI/BOOT/grub.cfg",
    ] {
        let Some(text) = read_text(fs, config, warnings) else {
            continue;
        };
        let entries = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("menuentry"))
            .filter_map(|rest| {
                let rest = rest.trim_start();
                let q = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
                rest[1..].split(q).next().map(str::to_string)
            })
            .collect();
        out.push(Grub {
            partition,
            config: String::from_utf8_lossy(config).into_owned(),
            entries,
        });
    }
    out
}
