//! The GRUB part of the system check (issue 24): the BIOS formats' GRUB must be the system's
//! own boot loader (the first `nixos-rebuild` runs GRUB's installer), and
//! `boot.loader.grub.devices` must name the disk the image becomes: that is where the
//! installer writes boot.img and core.img again. Read from boot.json's
//! `"org.imgbuild.v1".bootloader` record as the module writes it (CONTRACT-24), verbatim, so
//! this check does not depend on how the rest of imgbuild types that record.

use crate::format::{Bootloader, Contents, Format, TableType};
use imgbuild_nix::BootSpec;

/// What a PC BIOS format asks of the system's GRUB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GrubTarget {
    /// The disk names the platform gives the image; `None`: any whole disk (a generic disk
    /// image may become `/dev/vda`, `/dev/sda`, `/dev/nvme0n1`, ...).
    disks: Option<&'static [&'static str]>,
    /// The disk has an ESP, so GRUB may be installed for UEFI too.
    esp: bool,
    /// The disk has no partition table (`linode`): no room for GRUB's boot code, so the
    /// devices must be `nodev` (install-grub.pl then writes grub.cfg only, which the
    /// platform's own GRUB reads), and nothing else.
    nodev: bool,
}

/// The disk each BIOS format becomes on its platform (as nixpkgs' modules and imgbuild's
/// module name it); `None` for a format that does not boot through GRUB from a PC BIOS.
pub(super) fn grub_target(format: &Format) -> Option<GrubTarget> {
    if format.bootloader.kind != Bootloader::Grub {
        return None;
    }
    let disks: Option<&'static [&'static str]> = match format.name.as_str() {
        "digitalocean" => Some(&["/dev/vda"]),
        "hetzner" => Some(&["/dev/sda"]),
        "cloudstack" => Some(&["/dev/vda"]),
        _ => None,
    };
    Some(GrubTarget {
        disks,
        esp: format
            .partitions
            .iter()
            .any(|p| p.contents == Contents::Esp),
        nodev: format.table.kind == TableType::None,
    })
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
    /// `efiInstallAsRemovable`.
    removable: bool,
    /// `grubEfi`: the GRUB package built with EFI support.
    efi_package: Option<String>,
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
        removable: b
            .get("efiInstallAsRemovable")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        efi_package: text("grubEfi"),
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
pub(super) fn grub_problem(format: &str, target: GrubTarget, spec: &BootSpec) -> Option<String> {
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
    if target.nodev {
        return rec.devices.iter().find(|d| *d != "nodev").map(|d| {
            format!(
                "boot.loader.grub.devices names {d}, but a {format} image is a file system \
                 without a partition table, with no room for GRUB's boot code: set \
                 boot.loader.grub.device = \"nodev\" (the platform's GRUB reads \
                 /boot/grub/grub.cfg)"
            )
        });
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
    if target.esp {
        return hybrid_problem(format, &rec);
    }
    None
}

/// A hybrid disk (BIOS boot partition and ESP) boots UEFI through GRUB too, installed as
/// `grub-install --target=x86_64-efi --removable` leaves it: the system's GRUB must have
/// EFI support (so that `nixos-rebuild` keeps the UEFI side up to date as well) and install
/// to the removable path (the image has no NVRAM boot entry to register).
fn hybrid_problem(format: &str, rec: &GrubRecord) -> Option<String> {
    if !rec.efi_support {
        return Some(format!(
            "boot.loader.grub.efiSupport is off, but a {format} image also boots with UEFI \
             through GRUB: set boot.loader.grub.efiSupport = true (imgbuild's module does for \
             imgbuild.format = \"{format}\")"
        ));
    }
    if !rec.removable {
        return Some(format!(
            "boot.loader.grub.efiInstallAsRemovable is off, but a {format} image has no \
             firmware boot entry: GRUB must be at EFI/BOOT/BOOTX64.EFI; set \
             boot.loader.grub.efiInstallAsRemovable = true"
        ));
    }
    if rec
        .efi_package
        .as_deref()
        .is_none_or(|p| !p.starts_with("/nix/store/"))
    {
        return Some(
            "boot.json's GRUB record names no EFI GRUB package (\"org.imgbuild.v1\".bootloader.\
             grubEfi, written when efiSupport is on)"
                .into(),
        );
    }
    None
}

/// Whether GRUB's installer writes to the format's ESP (the hybrid, with `efiSupport`), so
/// that the system must mount it.
pub(super) fn grub_writes_esp(format: &Format, spec: &BootSpec) -> bool {
    grub_target(format).is_some_and(|t| t.esp)
        && grub_record(spec).is_ok_and(|r| r.is_some_and(|r| r.efi_support))
}

/// `(/dev/vda)`, for messages; nothing for a generic disk.
fn disk_hint(target: GrubTarget) -> String {
    if target.nodev {
        return " (\"nodev\": it has no partition table)".into();
    }
    match target.disks {
        Some(d) => format!(" ({})", d.join(" or ")),
        None => " (a whole disk such as /dev/vda or /dev/sda)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system_check::tests::spec_with;

    const GRUB: &str = "/nix/store/abcdfghijklmnpqrsvwxyz0123456789-grub-2.12";

    const GRUB_EFI: &str = "/nix/store/abcdfghijklmnpqrsvwxyz0123456789-grub-efi-2.12";

    /// The record's JSON as the module writes it, with `devices` and `efiSupport` (and
    /// then `grubEfi`).
    fn grub_json(devices: &str, efi: bool) -> String {
        let grub_efi = if efi {
            format!(r#""grubEfi": "{GRUB_EFI}","#)
        } else {
            String::new()
        };
        format!(
            r#"{{"type": "grub", "timeout": 5, "devices": {devices}, "grub": "{GRUB}", {grub_efi}
                "efiSupport": {efi}, "efiInstallAsRemovable": {efi}, "fsIdentifier": "uuid",
                "configurationLimit": 100, "distroName": "NixOS"}}"#
        )
    }

    /// `grub_problem` for format `f`, the GRUB record `bootloader` (raw JSON; empty: none)
    /// and, with `systemd_boot`, systemd-boot's extension.
    fn problem(f: &str, bootloader: &str, systemd_boot: bool) -> Option<String> {
        let ext = if systemd_boot {
            r#", "org.nixos.systemd-boot": {"sortKey": "nixos"}"#
        } else {
            ""
        };
        let mut spec = spec_with(ext);
        if !bootloader.is_empty() {
            spec = with_record(spec, bootloader);
        }
        let format = Format::load(f).unwrap();
        grub_problem(f, grub_target(&format).unwrap(), &spec)
    }

    /// `spec` with `"org.imgbuild.v1".bootloader` = `bootloader` (raw JSON), put into the
    /// extensions verbatim (as the check reads it), unparsed by `imgbuild_nix`.
    fn with_record(mut spec: BootSpec, bootloader: &str) -> BootSpec {
        let v: serde_json::Value = serde_json::from_str(bootloader).unwrap();
        spec.extensions.insert(
            imgbuild_nix::IMGBUILD_V1.into(),
            serde_json::json!({ "bootloader": v, "release": "25.11" }),
        );
        spec
    }

    #[test]
    fn grub_on_the_platforms_disk_passes() {
        for (f, dev, efi) in [
            ("raw", "/dev/vda", false),
            ("raw", "/dev/sda", false),
            ("raw", "/dev/nvme0n1", false),
            ("raw", "/dev/disk/by-id/virtio-root", false),
            ("qemu", "/dev/vda", true),
            ("digitalocean", "/dev/vda", false),
            ("hetzner", "/dev/sda", false),
            ("cloudstack", "/dev/vda", false),
            ("linode", "nodev", false),
        ] {
            let p = problem(f, &grub_json(&format!(r#"["{dev}"]"#), efi), false);
            assert_eq!(p, None, "{f} {dev}");
        }
        // qemu is the hybrid: an ESP, GRUB for UEFI too.
        let qemu = grub_target(&Format::load("qemu").unwrap()).unwrap();
        assert!(qemu.esp);
        // Only the BIOS formats are checked here.
        for f in ["raw-efi", "qemu-efi", "sd-aarch64"] {
            assert!(grub_target(&Format::load(f).unwrap()).is_none(), "{f}");
        }
    }

    #[test]
    fn grub_on_the_wrong_device_is_refused_naming_it() {
        for (f, devices, want) in [
            ("raw", r#"["nodev"]"#, "names nodev"),
            ("digitalocean", r#"["nodev"]"#, "names nodev"),
            ("raw", r#"["/dev/vda1"]"#, "names /dev/vda1"),
            ("raw", r#"["/dev/nvme0n1p2"]"#, "names /dev/nvme0n1p2"),
            ("raw", r#"["/dev/disk/by-label/nixos"]"#, "by-label/nixos"),
            ("raw", r#"["/dev/disk/by-id/ata-X-part1"]"#, "-part1"),
            ("raw", r#"["vda"]"#, "names vda"),
            ("raw", r#"["/dev/vda", "nodev"]"#, "names nodev"),
            ("hetzner", r#"["/dev/vda"]"#, "(/dev/sda)"),
            ("digitalocean", r#"["/dev/sda"]"#, "(/dev/vda)"),
            ("cloudstack", r#"["/dev/sda"]"#, "(/dev/vda)"),
            ("linode", r#"["/dev/sda"]"#, "names /dev/sda"),
            ("linode", r#"["nodev", "/dev/sda"]"#, "device = \"nodev\""),
            ("linode", "[]", "boot.loader.grub.devices is empty"),
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
        // The hybrid: GRUB for UEFI too, at the removable path, from the EFI package.
        let bios_only = grub_json(r#"["/dev/vda"]"#, false);
        let p = problem("qemu", &bios_only, false).unwrap();
        assert!(
            p.contains("boot.loader.grub.efiSupport is off") && p.contains("= true"),
            "{p}"
        );
        let not_removable = grub_json(r#"["/dev/vda"]"#, true).replace(
            r#""efiInstallAsRemovable": true"#,
            r#""efiInstallAsRemovable": false"#,
        );
        let p = problem("qemu", &not_removable, false).unwrap();
        assert!(p.contains("efiInstallAsRemovable"), "{p}");
        let no_package = grub_json(r#"["/dev/vda"]"#, true).replace(r#""grubEfi""#, r#""x""#);
        let p = problem("qemu", &no_package, false).unwrap();
        assert!(p.contains("grubEfi"), "{p}");
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
    fn only_a_disk_with_an_esp_has_grub_write_there() {
        let spec = with_record(spec_with(""), &grub_json(r#"["/dev/vda"]"#, true));
        for f in ["raw", "raw-efi"] {
            assert!(!grub_writes_esp(&Format::load(f).unwrap(), &spec), "{f}");
        }
        assert!(grub_writes_esp(&Format::load("qemu").unwrap(), &spec));
    }

    /// The record nixosModules.imgbuild writes for `imgbuild.format = "raw"` with nixpkgs'
    /// defaults (every key nix/tests/real-modules.nix's grubFormats expects), through the
    /// boot spec reader and this check.
    #[test]
    fn the_modules_whole_record_is_read_and_passes() {
        let record = format!(
            r#"{{"type": "grub", "timeout": 5, "devices": ["/dev/vda"], "grub": "{GRUB}",
                "efiSupport": false, "efiInstallAsRemovable": false, "fsIdentifier": "uuid",
                "configurationLimit": 100, "configurationName": "", "default": 0,
                "copyKernels": false, "storePath": "/nix/store", "extraConfig": "",
                "extraEntries": "", "extraEntriesBeforeNixOS": false,
                "extraPerEntryConfig": "", "backgroundColor": null,
                "gfxmodeBios": "1024x768", "gfxpayloadBios": "text", "gfxmodeEfi": "auto",
                "gfxpayloadEfi": "keep", "extraPrepareConfig": "", "extraGrubInstallArgs": [],
                "users": [], "useOSProber": false, "splashImage": null,
                "font": "{GRUB}/share/grub/unicode.pf2", "theme": null, "distroName": "NixOS",
                "timeoutStyle": "menu", "splashMode": "stretch",
                "entryOptions": "--class nixos --unrestricted", "subEntryOptions": "--class nixos"}}"#
        );
        let ext = format!(r#", "org.imgbuild.v1": {{"bootloader": {record}, "release": "25.11"}}"#);
        let spec = spec_with(&ext);
        let typed = spec.imgbuild.as_ref().and_then(|e| e.bootloader.as_ref());
        assert!(typed.is_some(), "the typed reader kept no bootloader");
        let format = Format::load("raw").unwrap();
        assert_eq!(
            grub_problem("raw", grub_target(&format).unwrap(), &spec),
            None
        );
    }
}
