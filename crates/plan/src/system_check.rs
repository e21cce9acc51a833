//! Is the toplevel configured for the format? An image of a system whose `/etc/fstab` mounts
//! `/` from a disk the image does not have, or whose boot loader is not the format's, is
//! written without complaint by every tool and then does not boot (or does not survive its
//! first `nixos-rebuild`). This check reads the system's own fstab and boot spec and says what
//! does not match, and how to fix it. The live media (iso, netboot) have their own checks in
//! `live`, the container tarballs theirs in `container`.

use crate::format::{Bootloader, Contents, Filesystem, Format, TableType, Volume};
use crate::ids::{fat_volume_id_string, Ids};
use crate::{Error, Inputs, Result};
use imgbuild_nix::{BootSpec, LoaderKind};

mod container;
mod grub;
use grub::{grub_problem, grub_target, grub_writes_esp};
mod live;
use live::Live;

/// The system's `/etc/fstab`: a few lines.
const FSTAB: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "the system's fstab",
    max_bytes: 1 << 20,
};

/// One fstab line: device, mount point, type, options (`defaults` when the line has none).
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    device: String,
    point: String,
    fstype: String,
    options: String,
}

/// `\040` and friends, as fstab escapes spaces in fields.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_fstab(text: &str) -> Vec<Mount> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| Mount {
                device: unescape(f[0]),
                point: unescape(f[1]),
                fstype: f[2].to_string(),
                options: f
                    .get(3)
                    .map_or_else(|| "defaults".to_string(), |o| unescape(o)),
            })
        })
        .collect()
}

/// The ways an fstab may name a partition of this image.
fn names_of(format: &Format, ids: &Ids, i: usize) -> Vec<String> {
    let p = &format.partitions[i];
    let mut v = vec![
        format!("/dev/disk/by-label/{}", p.label),
        format!("LABEL={}", p.label),
    ];
    let uuid = match p.filesystem {
        Filesystem::Ext4 => ids.ext4_uuid(&p.name).to_string(),
        Filesystem::Fat | Filesystem::Fat32 => fat_volume_id_string(ids.fat_volume_id(&p.name)),
        // Raw sectors have no file system id; `check` never mounts them. A store image is
        // mounted through its dm-verity device, which `check` leaves to the initrd's side.
        Filesystem::None | Filesystem::Squashfs => return v,
    };
    v.push(format!("/dev/disk/by-uuid/{uuid}"));
    v.push(format!("UUID={uuid}"));
    if format.table.kind == TableType::Gpt {
        let g = ids.gpt_partition_guid(&p.name).to_string();
        v.push(format!("/dev/disk/by-partuuid/{g}"));
        v.push(format!("PARTUUID={g}"));
    }
    v
}

/// The refusal of a toplevel not configured for `format`, because of `reason`.
fn bad<T>(format: &str, reason: String) -> Result<T> {
    Err(Error::not_for_format(format, reason))
}

/// A format with a verity store needs an appliance's toplevel: the initrd side and the
/// image id and version (`"org.imgbuild.v1".appliance`); with B slots, a UKI named
/// `<id>_<version>.efi` where the toplevel records one.
fn check_appliance(format: &Format, spec: &BootSpec) -> Result<()> {
    if format.store_partition().is_none() {
        return Ok(());
    }
    let rec = crate::sysupdate::ApplianceRecord::of(spec)
        .map_err(|r| Error::not_for_format(&format.name, r))?;
    if format.empty_slots().is_empty() || !format.bootloader.uki {
        return Ok(());
    }
    let recorded = crate::trees::uki::recorded_file_name(spec)?;
    match recorded {
        Some(f) if f != rec.uki_file() => bad(
            &format.name,
            format!(
                "its UKI is named `{}` (system.boot.loader.ukiFile), but systemd-sysupdate \
                 replaces `{}` (`<system.image.id>_<system.image.version>.efi`): leave \
                 boot.uki.name and boot.uki.version at their defaults",
                crate::quote(&f),
                rec.uki_file()
            ),
        ),
        _ => Ok(()),
    }
}

/// The system's `/etc/fstab`, or `None` when it has none.
fn read_fstab(inputs: &Inputs) -> Result<Option<String>> {
    let link = inputs.toplevel.join("etc/fstab");
    match inputs.store.resolve_in_store(&link) {
        // A regular file of at most 1 MiB, opened without blocking.
        Ok(host) => {
            let bytes = imgbuild_blockio::read_input(&host, FSTAB)?;
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Err(_) => Ok(None),
    }
}

/// Checks a toplevel for a live medium: its boot.json record, kernel parameters and fstab.
fn check_live(format: &Format, live: Live, inputs: &Inputs) -> Result<()> {
    let fstab = read_fstab(inputs)?;
    let spec = &inputs.bootspec;
    match live {
        Live::Iso => live::check_iso(&format.name, fstab.as_deref(), spec),
        Live::Netboot => live::check_netboot(&format.name, fstab.as_deref(), spec),
    }
}

/// The boot loader imgbuild's NixOS module recorded (`org.imgbuild.v1.bootloader.type`), when
/// it did, must be the one the format installs.
fn recorded_loader(format: &Format, spec: &BootSpec) -> Result<()> {
    let recorded = spec
        .imgbuild
        .as_ref()
        .and_then(|e| e.bootloader.as_ref())
        .and_then(|b| b.kind);
    let format_kind = match format.bootloader.kind {
        Bootloader::SystemdBoot => LoaderKind::SystemdBoot,
        Bootloader::Extlinux => LoaderKind::Extlinux,
        Bootloader::Grub => LoaderKind::Grub,
    };
    match recorded {
        Some(kind) if kind != format_kind => Err(Error::NotForFormat {
            format: format.name.clone(),
            reason: format!(
                "boot.json says the system boots with {}, the format installs {}",
                kind.name(),
                format_kind.name()
            ),
            fix: format!(
                "enable {} in the NixOS configuration, or pass --no-system-check",
                format_kind.name()
            ),
        }),
        _ => Ok(()),
    }
}

/// Checks the system's fstab and boot loader against the format.
pub(crate) fn check(format: &Format, ids: &Ids, inputs: &Inputs) -> Result<()> {
    if let Some(live) = Live::of(format) {
        return check_live(format, live, inputs);
    }
    if format.volume == Volume::Tar {
        return container::check(format, inputs);
    }
    let bad = |reason: String| self::bad(&format.name, reason);
    if let Some(target) = grub_target(format) {
        if let Some(reason) = grub_problem(&format.name, target, &inputs.bootspec) {
            return bad(reason);
        }
    }
    recorded_loader(format, &inputs.bootspec)?;
    check_appliance(format, &inputs.bootspec)?;
    let ext = &inputs.bootspec.extensions;
    let sd_boot = ext.contains_key("org.nixos.systemd-boot");
    match format.bootloader.kind {
        Bootloader::SystemdBoot if !sd_boot => {
            return bad(
                "its boot loader is not systemd-boot (boot.json has no org.nixos.systemd-boot \
                 entry): the first nixos-rebuild would install another boot loader"
                    .into(),
            )
        }
        Bootloader::Extlinux if sd_boot => {
            return bad(
                "it uses systemd-boot, but the image boots through extlinux (U-Boot): \
                 nixos-rebuild would not update /boot/extlinux/extlinux.conf"
                    .into(),
            )
        }
        _ => {}
    }

    let Some(fstab) = read_fstab(inputs)? else {
        return bad(format!(
            "it has no /etc/fstab ({} does not exist), so it mounts no root file system",
            inputs.toplevel.join("etc/fstab").display()
        ));
    };
    let mounts = parse_fstab(&fstab);
    for (i, p) in format.partitions.iter().enumerate() {
        let needed = match p.contents {
            Contents::Root => true,
            // The boot loader's installer writes to the ESP: it must be mounted.
            Contents::Esp => {
                format.bootloader.kind == Bootloader::SystemdBoot
                    || grub_writes_esp(format, &inputs.bootspec)
            }
            Contents::Firmware | Contents::BiosBoot => false,
            // Mounted through the verity device (`/dev/mapper/usr`), which the initrd sets up
            // from `usrhash=`: no fstab line names the partition itself.
            Contents::Store | Contents::Verity | Contents::Empty => continue,
        };
        let Some(m) = mounts.iter().rev().find(|m| m.point == p.mount_point) else {
            if needed {
                return bad(format!(
                    "its /etc/fstab mounts nothing at {}, where the image's `{}` partition \
                     belongs (label {})",
                    p.mount_point, p.name, p.label
                ));
            }
            continue;
        };
        let names = names_of(format, ids, i);
        if !names.contains(&m.device) {
            return bad(format!(
                "its /etc/fstab mounts {} from {}, but the image's `{}` partition is {}",
                p.mount_point, m.device, p.name, names[0]
            ));
        }
        let want = match p.filesystem {
            Filesystem::Ext4 => "ext4",
            Filesystem::Fat | Filesystem::Fat32 => "vfat",
            Filesystem::None | Filesystem::Squashfs => continue,
        };
        if m.fstype != want && m.fstype != "auto" {
            return bad(format!(
                "its /etc/fstab mounts {} as {}, but the image has {want} there",
                p.mount_point, m.fstype
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn fstab_lines_and_escapes() {
        let m = parse_fstab(
            "# generated\n\n/dev/disk/by-label/nixos / ext4 x-initrd.mount 0 1\n\
             LABEL=ESP /boot vfat fmask=0077,dmask=0077 0 2\n/dev/x /mnt/a\\040b auto\n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].device, "/dev/disk/by-label/nixos");
        assert_eq!(m[0].point, "/");
        assert_eq!(m[1].fstype, "vfat");
        assert_eq!(m[2].point, "/mnt/a b");
    }

    #[test]
    fn a_partition_has_all_its_names() {
        let f = Format::load("raw-efi").unwrap();
        let ids = Ids::from_seed(b"s".to_vec());
        let n = names_of(&f, &ids, 1);
        assert_eq!(n[0], "/dev/disk/by-label/nixos");
        assert!(n.iter().any(|x| x.starts_with("PARTUUID=")));
        let sd = Format::load("sd-aarch64").unwrap();
        assert!(!names_of(&sd, &ids, 0)
            .iter()
            .any(|x| x.contains("PARTUUID")));
    }

    #[test]
    fn a_recorded_boot_loader_must_be_the_formats() {
        let spec = spec_with;
        let raw = Format::load("raw-efi").unwrap();
        let sd = Format::load("sd-aarch64").unwrap();
        let ext = r#", "org.imgbuild.v1": {"bootloader": {"type": "extlinux"}}"#;
        let err = recorded_loader(&raw, &spec(ext)).unwrap_err().to_string();
        assert!(
            err.contains("boots with extlinux, the format installs systemd-boot")
                && err.contains("--no-system-check"),
            "{err}"
        );
        recorded_loader(&sd, &spec(ext)).unwrap();
        let ext = r#", "org.imgbuild.v1": {"bootloader": {"type": "systemd-boot"}}"#;
        recorded_loader(&raw, &spec(ext)).unwrap();
        assert!(recorded_loader(&sd, &spec(ext)).is_err());
        // Nothing recorded: nothing to compare here.
        recorded_loader(&raw, &spec("")).unwrap();
        recorded_loader(&raw, &spec(r#", "org.imgbuild.v1": {"bootloader": {}}"#)).unwrap();
    }

    /// A boot spec whose top level has `ext` (`, "key": value ...`) after the v1 document.
    pub(crate) fn spec_with(ext: &str) -> BootSpec {
        let t = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x";
        let json = format!(
            r#"{{"org.nixos.bootspec.v1": {{"init": "{t}/init",
              "kernel": "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-linux/bzImage",
              "kernelParams": [], "label": "x", "system": "x86_64-linux",
              "toplevel": "{t}"}} {ext} }}"#
        );
        BootSpec::parse(json.as_bytes(), std::path::Path::new("boot.json")).unwrap()
    }
}
