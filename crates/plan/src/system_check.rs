//! Is the toplevel configured for the format? An image of a system whose `/etc/fstab` mounts
//! `/` from a disk the image does not have, or whose boot loader is not the format's, is
//! written without complaint by every tool and then does not boot (or does not survive its
//! first `nixos-rebuild`). This check reads the system's own fstab and boot spec and says what
//! does not match, and how to fix it.

use crate::format::{Bootloader, Contents, Filesystem, Format, TableType};
use crate::ids::{fat_volume_id_string, Ids};
use crate::{Error, Inputs, Result};
use imgbuild_nix::{BootSpec, LoaderKind};

/// The system's `/etc/fstab`: a few lines.
const FSTAB: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "the system's fstab",
    max_bytes: 1 << 20,
};

/// One fstab line: device, mount point, type.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    device: String,
    point: String,
    fstype: String,
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

/// What the user should do about a mismatch.
fn fix(format: &Format) -> String {
    format!(
        "import imgbuild's NixOS module (nixosModules.imgbuild; `lib.mkNodes` does) and set \
         imgbuild.format = \"{}\", or pass --no-system-check to build anyway",
        format.name
    )
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
    let bad = |reason: String| {
        Err(Error::NotForFormat {
            format: format.name.clone(),
            reason,
            fix: fix(format),
        })
    };
    if let Some(target) = grub_target(&format.name) {
        if let Some(reason) = grub_problem(&format.name, target, &inputs.bootspec) {
            return bad(reason);
        }
    }
    recorded_loader(format, &inputs.bootspec)?;
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

    let link = inputs.toplevel.join("etc/fstab");
    let fstab = match inputs.store.resolve_in_store(&link) {
        // A regular file of at most 1 MiB, opened without blocking.
        Ok(host) => {
            let bytes = imgbuild_blockio::read_input(&host, FSTAB)?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Err(_) => {
            return bad(format!(
                "it has no /etc/fstab ({} does not exist), so it mounts no root file system",
                link.display()
            ))
        }
    };
    let mounts = parse_fstab(&fstab);
    for (i, p) in format.partitions.iter().enumerate() {
        let needed = match p.contents {
            Contents::Root => true,
            // The boot loader's installer writes to the ESP: it must be mounted.
            Contents::Esp => {
                format.bootloader.kind == Bootloader::SystemdBoot
                    || grub_writes_esp(&format.name, &inputs.bootspec)
            }
            Contents::Firmware => false,
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

// --- GRUB on a PC BIOS disk (issue 24) ------------------------------------------------------
//
// The BIOS formats' GRUB must be the system's own boot loader (the first `nixos-rebuild`
// runs GRUB's installer), and `boot.loader.grub.devices` must name the disk the image
// becomes: that is where the installer writes boot.img and core.img again. Read from
// boot.json's `"org.imgbuild.v1".bootloader` record as the module writes it (CONTRACT-24),
// verbatim, so this check does not depend on how the rest of imgbuild types that record.

/// What a PC BIOS format asks of the system's GRUB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GrubTarget {
    /// The disk names the platform gives the image; `None`: any whole disk (a generic disk
    /// image may become `/dev/vda`, `/dev/sda`, `/dev/nvme0n1`, ...).
    disks: Option<&'static [&'static str]>,
    /// The disk has an ESP (the hybrid), so GRUB may be installed for UEFI too.
    esp: bool,
}

/// The BIOS formats by name, with the disk each becomes on its platform (as nixpkgs'
/// modules and the module's `grubDevice` name it).
fn grub_target(format: &str) -> Option<GrubTarget> {
    match format {
        "raw" => Some(GrubTarget {
            disks: None,
            esp: false,
        }),
        "qemu" => Some(GrubTarget {
            disks: None,
            esp: true,
        }),
        "digitalocean" => Some(GrubTarget {
            disks: Some(&["/dev/vda"]),
            esp: false,
        }),
        "hetzner" => Some(GrubTarget {
            disks: Some(&["/dev/sda"]),
            esp: false,
        }),
        _ => None,
    }
}

/// The fields of boot.json's GRUB record the check reads.
#[derive(Debug, Default, PartialEq, Eq)]
struct GrubRecord {
    /// `type`: `grub`, `systemd-boot`, `extlinux`, or absent.
    kind: Option<String>,
    /// `devices` (`boot.loader.grub.devices`).
    devices: Vec<String>,
    /// `grub`: the GRUB package.
    package: Option<String>,
    /// `efiSupport`.
    efi_support: bool,
}

/// `"org.imgbuild.v1".bootloader` of the boot spec's extensions; `None` when absent.
fn grub_record(spec: &BootSpec) -> std::result::Result<Option<GrubRecord>, String> {
    let Some(b) = spec
        .extensions
        .get(imgbuild_nix::IMGBUILD_V1)
        .and_then(|e| e.get("bootloader"))
        .filter(|b| !b.is_null())
    else {
        return Ok(None);
    };
    let text = |k: &str| {
        b.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let devices = match b.get("devices") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|d| d.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("boot.json's GRUB record has a device that is not a string")?,
        Some(_) => return Err("boot.json's GRUB record's `devices` is not a list".into()),
    };
    Ok(Some(GrubRecord {
        kind: text("type"),
        devices,
        package: text("grub"),
        efi_support: b
            .get("efiSupport")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
    }))
}

/// Whether `dev` names a partition or a file system rather than a whole disk:
/// `/dev/sda1`, `/dev/vda2`, `/dev/nvme0n1p1`, `/dev/mmcblk0p1`, `/dev/disk/by-id/...-part1`,
/// `/dev/disk/by-uuid/...` (and by-label, by-partuuid, by-partlabel).
fn names_a_partition(dev: &str) -> bool {
    if ["by-uuid/", "by-label/", "by-partuuid/", "by-partlabel/"]
        .iter()
        .any(|k| dev.starts_with(&format!("/dev/disk/{k}")))
    {
        return true;
    }
    let name = dev.rsplit('/').next().unwrap_or(dev);
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return false;
    }
    let stem = &name[..name.len() - digits];
    if dev.starts_with("/dev/disk/by-") {
        return stem.ends_with("-part");
    }
    // nvme0n1 and mmcblk0 end in digits: their partitions add `p<N>`.
    let whole_with_digits = ["nvme", "mmcblk", "loop", "nbd", "md"]
        .iter()
        .any(|p| name.starts_with(p));
    if whole_with_digits {
        return stem.ends_with('p') && stem.len() > 1;
    }
    // sda1, vda2, xvda1, hda1: a letter-named disk with a number.
    ["sd", "vd", "xvd", "hd"]
        .iter()
        .any(|p| stem.starts_with(p))
}

/// What is wrong with a BIOS format's boot loader, if anything: the system must boot with
/// GRUB (boot.json's record says so and names the GRUB package), on the disk the image
/// becomes (never `nodev`, never a partition), and may install GRUB for UEFI only where
/// the disk has an ESP.
fn grub_problem(format: &str, target: GrubTarget, spec: &BootSpec) -> Option<String> {
    let rec = match grub_record(spec) {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    let sd_boot = spec.extensions.contains_key("org.nixos.systemd-boot");
    let kind = rec.as_ref().and_then(|r| r.kind.as_deref());
    match kind {
        Some("grub") => {}
        Some(other) => {
            return Some(format!(
                "boot.json says the system boots with {other}, but a {format} image boots \
                 from a PC BIOS through GRUB: set boot.loader.grub.enable = true (imgbuild's \
                 module does for imgbuild.format = \"{format}\")"
            ))
        }
        None if sd_boot => {
            return Some(format!(
                "it boots with systemd-boot only (boot.json has org.nixos.systemd-boot and no \
                 GRUB record), but a {format} image boots from a PC BIOS through GRUB"
            ))
        }
        None => {
            return Some(format!(
                "boot.json has no GRUB record (\"org.imgbuild.v1\".bootloader with type \
                 \"grub\" and the GRUB package), which a {format} image installs GRUB from"
            ))
        }
    }
    let rec = rec?;
    if rec
        .package
        .as_deref()
        .is_none_or(|p| !p.starts_with("/nix/store/"))
    {
        return Some(
            "boot.json's GRUB record names no GRUB package (\"org.imgbuild.v1\".bootloader.grub)"
                .into(),
        );
    }
    if rec.devices.is_empty() {
        return Some(format!(
            "boot.loader.grub.devices is empty: the first nixos-rebuild would not know where \
             to install GRUB; set boot.loader.grub.device to the disk the {format} image becomes{}",
            disk_hint(target)
        ));
    }
    for d in &rec.devices {
        let ok = match target.disks {
            _ if d == "nodev" => false,
            Some(disks) => disks.contains(&d.as_str()),
            None => d.starts_with("/dev/") && !names_a_partition(d),
        };
        if !ok {
            return Some(format!(
                "boot.loader.grub.devices names {d}, but GRUB must be installed on the disk \
                 the {format} image becomes{}: its boot sector is where a PC BIOS starts",
                disk_hint(target)
            ));
        }
    }
    if rec.efi_support && !target.esp {
        return Some(format!(
            "boot.loader.grub.efiSupport is on, but a {format} image has no EFI system \
             partition for GRUB's installer to write to"
        ));
    }
    None
}

/// Whether GRUB's installer writes to the format's ESP (the hybrid, with `efiSupport`), so
/// that the system must mount it.
fn grub_writes_esp(format: &str, spec: &BootSpec) -> bool {
    grub_target(format).is_some_and(|t| t.esp)
        && grub_record(spec).is_ok_and(|r| r.is_some_and(|r| r.efi_support))
}

/// `(/dev/vda)`, for messages; nothing for a generic disk.
fn disk_hint(target: GrubTarget) -> String {
    match target.disks {
        Some(d) => format!(" ({})", d.join(" or ")),
        None => " (a whole disk such as /dev/vda or /dev/sda)".into(),
    }
}

#[cfg(test)]
mod tests {
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
    fn spec_with(ext: &str) -> BootSpec {
        let t = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x";
        let json = format!(
            r#"{{"org.nixos.bootspec.v1": {{"init": "{t}/init",
              "kernel": "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-linux/bzImage",
              "kernelParams": [], "label": "x", "system": "x86_64-linux",
              "toplevel": "{t}"}} {ext} }}"#
        );
        BootSpec::parse(json.as_bytes(), std::path::Path::new("boot.json")).unwrap()
    }

    const GRUB: &str = "/nix/store/abcdfghijklmnpqrsvwxyz0123456789-grub-2.12";

    /// The record's JSON as the module writes it, with `devices` and `efiSupport`.
    fn grub_json(devices: &str, efi: bool) -> String {
        format!(
            r#"{{"type": "grub", "timeout": 5, "devices": {devices}, "grub": "{GRUB}",
                "efiSupport": {efi}, "efiInstallAsRemovable": {efi}, "fsIdentifier": "uuid",
                "configurationLimit": 100, "distroName": "NixOS"}}"#
        )
    }

    /// `grub_problem` for format `f` and the record `bootloader` (raw JSON); the record is
    /// given to the boot spec verbatim, unparsed by `imgbuild_nix` (which may not know the
    /// GRUB record), through the `other` extension keys.
    fn problem(f: &str, bootloader: &str, systemd_boot: bool) -> Option<String> {
        let mut ext = String::new();
        if systemd_boot {
            ext.push_str(r#", "org.nixos.systemd-boot": {"sortKey": "nixos"}"#);
        }
        let mut spec = spec_with(&ext);
        if !bootloader.is_empty() {
            let v: serde_json::Value = serde_json::from_str(bootloader).unwrap();
            spec.extensions.insert(
                imgbuild_nix::IMGBUILD_V1.into(),
                serde_json::json!({ "bootloader": v, "release": "25.11" }),
            );
        }
        grub_problem(f, grub_target(f).unwrap(), &spec)
    }

    #[test]
    fn grub_on_the_platforms_disk_passes() {
        for (f, dev) in [
            ("raw", "/dev/vda"),
            ("raw", "/dev/sda"),
            ("raw", "/dev/nvme0n1"),
            ("raw", "/dev/disk/by-id/virtio-root"),
            ("qemu", "/dev/vda"),
            ("digitalocean", "/dev/vda"),
            ("hetzner", "/dev/sda"),
        ] {
            let p = problem(f, &grub_json(&format!(r#"["{dev}"]"#), false), false);
            assert_eq!(p, None, "{f} {dev}");
        }
        // The hybrid installs GRUB for UEFI too, on its ESP.
        assert_eq!(
            problem("qemu", &grub_json(r#"["/dev/vda"]"#, true), false),
            None
        );
        // Only the BIOS formats are checked here.
        assert!(grub_target("raw-efi").is_none() && grub_target("sd-aarch64").is_none());
    }

    #[test]
    fn grub_on_the_wrong_device_is_refused_naming_it() {
        for (f, devices, want) in [
            ("raw", r#"["nodev"]"#, "names nodev"),
            ("qemu", r#"["nodev"]"#, "names nodev"),
            ("raw", r#"["/dev/vda1"]"#, "names /dev/vda1"),
            ("raw", r#"["/dev/nvme0n1p2"]"#, "names /dev/nvme0n1p2"),
            ("raw", r#"["/dev/disk/by-label/nixos"]"#, "by-label/nixos"),
            ("raw", r#"["/dev/disk/by-id/ata-X-part1"]"#, "-part1"),
            ("raw", r#"["vda"]"#, "names vda"),
            ("raw", r#"["/dev/vda", "nodev"]"#, "names nodev"),
            ("hetzner", r#"["/dev/vda"]"#, "(/dev/sda)"),
            ("digitalocean", r#"["/dev/sda"]"#, "(/dev/vda)"),
            ("raw", "[]", "boot.loader.grub.devices is empty"),
        ] {
            let p = problem(f, &grub_json(devices, false), false)
                .unwrap_or_else(|| panic!("{f} {devices} passed"));
            assert!(p.contains(want), "{f} {devices}: {p}");
        }
    }

    #[test]
    fn a_bios_format_refuses_other_boot_loaders_and_missing_records() {
        let sd = r#"{"type": "systemd-boot", "timeout": 5}"#;
        let p = problem("raw", sd, true).unwrap();
        assert!(
            p.contains("boots with systemd-boot") && p.contains("GRUB"),
            "{p}"
        );
        let p = problem("qemu", sd, true).unwrap();
        assert!(p.contains("boots with systemd-boot"), "{p}");
        // systemd-boot without imgbuild's record.
        let p = problem("hetzner", "", true).unwrap();
        assert!(p.contains("systemd-boot only"), "{p}");
        let p = problem("raw", r#"{"type": "extlinux"}"#, false).unwrap();
        assert!(p.contains("boots with extlinux"), "{p}");
        let p = problem("raw", "", false).unwrap();
        assert!(p.contains("no GRUB record"), "{p}");
        let p = problem("raw", r#"{"type": "grub", "devices": ["/dev/vda"]}"#, false).unwrap();
        assert!(p.contains("names no GRUB package"), "{p}");
        let p = problem("raw", &grub_json(r#"["/dev/vda"]"#, true), false).unwrap();
        assert!(
            p.contains("efiSupport") && p.contains("no EFI system partition"),
            "{p}"
        );
        let p = problem("raw", r#"{"type": "grub", "devices": "/dev/vda"}"#, false).unwrap();
        assert!(p.contains("not a list"), "{p}");
        let p = problem("raw", r#"{"type": "grub", "devices": [1]}"#, false).unwrap();
        assert!(p.contains("not a string"), "{p}");
    }

    #[test]
    fn whole_disks_and_partitions() {
        for d in [
            "/dev/sda",
            "/dev/vda",
            "/dev/xvda",
            "/dev/hda",
            "/dev/nvme0n1",
            "/dev/mmcblk0",
            "/dev/disk/by-id/virtio-abc",
            "/dev/disk/by-path/pci-0000:00:04.0",
        ] {
            assert!(!names_a_partition(d), "{d}");
        }
        for d in [
            "/dev/sda1",
            "/dev/vda15",
            "/dev/xvda1",
            "/dev/nvme0n1p1",
            "/dev/mmcblk0p2",
            "/dev/disk/by-id/nvme-X-part3",
            "/dev/disk/by-uuid/1234-ABCD",
            "/dev/disk/by-partuuid/x",
            "/dev/disk/by-partlabel/ESP",
        ] {
            assert!(names_a_partition(d), "{d}");
        }
    }

    #[test]
    fn the_hybrid_must_mount_its_esp_when_grub_installs_there() {
        let with = |efi: bool| {
            let mut spec = spec_with("");
            let v: serde_json::Value =
                serde_json::from_str(&grub_json(r#"["/dev/vda"]"#, efi)).unwrap();
            spec.extensions.insert(
                imgbuild_nix::IMGBUILD_V1.into(),
                serde_json::json!({ "bootloader": v }),
            );
            spec
        };
        assert!(grub_writes_esp("qemu", &with(true)));
        assert!(!grub_writes_esp("qemu", &with(false)));
        assert!(!grub_writes_esp("raw", &with(true)));
        assert!(!grub_writes_esp("raw-efi", &with(true)));
    }
}
