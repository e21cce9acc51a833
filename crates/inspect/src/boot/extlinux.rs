//! extlinux.conf (U-Boot distro boot, NixOS generic-extlinux-compatible), and isolinux.cfg
//! (a NixOS ISO's BIOS boot), which has the same syntax.

use crate::fs::{Filesystem, Kind};
use crate::path::{join, normalize, parent_and_name};

use super::{is_file, key_value, read_text, Extlinux, ExtlinuxEntry};

/// extlinux.conf files on `fs`.
pub(crate) fn extlinux(
    fs: &Filesystem,
    partition: u32,
    warnings: &mut Vec<String>,
) -> Vec<Extlinux> {
    let mut out = Vec::new();
    for config in [
        &b"/boot/extlinux/extlinux.conf"[..],
        b"/extlinux/extlinux.conf",
        // A NixOS ISO's BIOS boot (same syntax; paths from the ISO's root).
        b"/isolinux/isolinux.cfg",
    ] {
        let Some(text) = read_text(fs, config, warnings) else {
            continue;
        };
        let base = parent_and_name(config).map_or(&b"/"[..], |(d, _)| d);
        let mut ex = Extlinux {
            partition,
            config: String::from_utf8_lossy(config).into_owned(),
            ..Extlinux::default()
        };
        let mut cur: Option<ExtlinuxEntry> = None;
        for line in text.lines() {
            let Some((k, v)) = key_value(line) else {
                continue;
            };
            let v = v.to_string();
            let k = k.to_ascii_uppercase();
            if k == "LABEL" {
                ex.entries.extend(cur.take());
                cur = Some(ExtlinuxEntry {
                    label: v,
                    ..ExtlinuxEntry::default()
                });
                continue;
            }
            let menu = k == "MENU";
            let (mk, mv) = if menu {
                match v.split_once(char::is_whitespace) {
                    Some((a, b)) => (a.to_ascii_uppercase(), b.trim().to_string()),
                    None => (v.to_ascii_uppercase(), String::new()),
                }
            } else {
                (String::new(), String::new())
            };
            match (&mut cur, k.as_str()) {
                (_, "DEFAULT") => ex.default = Some(v),
                (_, "TIMEOUT") => ex.timeout = Some(v),
                (None, "MENU") if mk == "TITLE" => ex.menu_title = Some(mv),
                (Some(e), "MENU") if mk == "LABEL" => e.menu_label = Some(mv),
                (Some(e), "LINUX" | "KERNEL") => e.linux = Some(v),
                (Some(e), "INITRD") => e.initrd = Some(v),
                (Some(e), "APPEND") => e.append = Some(v),
                (Some(e), "FDTDIR" | "DEVICETREEDIR") => e.fdtdir = Some(v),
                (Some(e), "FDT" | "DEVICETREE") => e.fdt = Some(v),
                _ => {}
            }
        }
        ex.entries.extend(cur.take());
        for e in &mut ex.entries {
            e.default = ex.default.as_deref() == Some(e.label.as_str());
            let files = e.linux.iter().chain(&e.initrd).chain(&e.fdt);
            let mut missing: Vec<String> = files
                .filter(|p| !is_file(fs, &resolve(base, p)))
                .cloned()
                .collect();
            if let Some(d) = &e.fdtdir {
                if !matches!(fs.metadata(&resolve(base, d)), Ok(m) if m.kind == Kind::Dir) {
                    missing.push(d.clone());
                }
            }
            e.missing = missing;
        }
        out.push(ex);
    }
    out
}

/// A path in a boot config: absolute, or relative to the config's directory.
fn resolve(base: &[u8], p: &str) -> Vec<u8> {
    if p.starts_with('/') {
        normalize(p.as_bytes())
    } else {
        normalize(&join(base, p.as_bytes()))
    }
}
