//! The ESP of a system that boots a Unified Kernel Image: systemd-boot installed as
//! [`crate::systemd_boot_esp`] installs it, but with no type #1 entry (no
//! `loader/entries/*.conf` and no kernel, initrd or device tree copies in `EFI/nixos`):
//! systemd-boot finds the UKI in `EFI/Linux/` itself (Boot Loader Specification, type #2),
//! as the ESPs of nixpkgs' `image.repart` appliances hold it. `loader.conf`'s `default` (and
//! a boot-counting `preferred`) line names the UKI by its entry id: the file name without a
//! `+LEFT[-DONE]` counter.

use crate::{check_line, BootFile, Content, Error, Esp, Result};

/// The UKI's command line as NixOS's `boot.uki.settings.UKI.Cmdline` writes it:
/// `init=<toplevel>/init <kernelParams>`, then the caller's extra arguments (e.g. `usrhash=`),
/// each checked to be one line.
pub fn uki_cmdline(init: &str, params: &[String], extra: &[String]) -> Result<String> {
    let mut s = crate::command_line(init, params)?;
    for a in extra {
        check_line("extra kernel argument", a, false)?;
        s.push(' ');
        s.push_str(a);
    }
    Ok(s)
}

/// The UKI's path on the ESP: `EFI/Linux/<file>`. `file` is NixOS's
/// `system.boot.loader.ukiFile` (`<boot.uki.name>[_<version>][+<tries>].efi`).
pub fn uki_path(file: &str) -> Result<String> {
    let ok = file.len() > 4
        && file.len() <= 255
        && file.ends_with(".efi")
        && !file.contains(['/', '\\', '\0'])
        && !file.starts_with('.');
    check_line("UKI file name", file, false)?;
    if !ok {
        return Err(Error::BadText {
            what: "UKI file name",
            value: file.to_owned(),
        });
    }
    Ok(format!("EFI/Linux/{file}"))
}

/// The entry id of a UKI file: its name without a boot counter (`nixos+3.efi`, `nixos+2-1.efi`
/// -> `nixos.efi`).
fn entry_id(file: &str) -> String {
    let stem = &file[..file.len() - 4];
    match stem.rsplit_once('+') {
        Some((base, counter))
            if !counter.is_empty()
                && counter
                    .split('-')
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            format!("{base}.efi")
        }
        _ => file.to_owned(),
    }
}

/// The ESP `esp` with its type #1 entries and their copies removed and `loader.conf`
/// pointing at the UKI `file` (see [`uki_path`]), or at the entries `default` matches (a
/// glob, e.g. `<id>_*` for A/B updates: the newest version a later update adds, not the
/// image's own); the UKI itself is the caller's to add.
pub fn uki_esp(esp: Esp, file: &str, default: Option<&str>) -> Result<Vec<BootFile>> {
    uki_path(file)?;
    let id = match default {
        Some(d) => {
            check_line("the default entry pattern", d, false)?;
            d.to_owned()
        }
        None => entry_id(file),
    };
    let mut out = Vec::with_capacity(esp.files.len());
    for f in esp.files {
        let dir = f.content == Content::Dir;
        if !dir && (f.path.starts_with("loader/entries/") || f.path.starts_with("EFI/nixos/")) {
            continue;
        }
        if f.path == "loader/loader.conf" {
            let Content::Text(t) = &f.content else {
                out.push(f);
                continue;
            };
            let text = String::from_utf8_lossy(t);
            let mut s = String::new();
            let mut named = false;
            for line in text.lines() {
                if line.starts_with("default ") || line.starts_with("preferred ") {
                    if !named {
                        s.push_str(&format!("default {id}\n"));
                        named = true;
                    }
                } else {
                    s.push_str(line);
                    s.push('\n');
                }
            }
            out.push(BootFile {
                path: f.path,
                content: Content::Text(s.into_bytes()),
            });
            continue;
        }
        out.push(f);
    }
    Ok(out)
}
