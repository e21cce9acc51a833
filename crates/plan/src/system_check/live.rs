//! The live media (iso, iso-installer, netboot, kexec): the system runs from a read-only store
//! image under a tmpfs overlay, and stage 1 finds that image by what imgbuild's NixOS module
//! put into the toplevel (CONTRACT of issue 23, nixpkgs' iso-image.nix and netboot.nix). A
//! toplevel configured for a disk boots from none of these media: stage 1 waits for a root
//! partition the medium does not have. These checks read the toplevel's fstab, kernel
//! parameters and boot.json record and name what is missing.

use imgbuild_nix::{BootSpec, IMGBUILD_V1};
use serde_json::Value;

use super::{bad, parse_fstab, Mount};
use crate::format::{Format, Volume};
use crate::Result;

/// Which live medium the format writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Live {
    /// An ISO 9660 medium: the store image is `/nix-store.squashfs` on it, mounted at `/iso`.
    Iso,
    /// Kernel + initrd: the store image is `/nix-store.squashfs` in the initrd.
    Netboot,
}

impl Live {
    /// The live medium `format` writes, `None` for a disk.
    pub(crate) fn of(format: &Format) -> Option<Live> {
        match format.volume {
            Volume::Iso9660 => Some(Live::Iso),
            Volume::Netboot | Volume::Kexec => Some(Live::Netboot),
            Volume::Disk | Volume::Tar => None,
        }
    }

    /// Where fstab's `/nix/.ro-store` line takes the store image from (nixpkgs' values).
    fn store_image(self) -> &'static str {
        match self {
            Live::Iso => "/iso/nix-store.squashfs",
            // Relative to stage 1's /mnt-root: the file the initrd unpacked at its own root.
            Live::Netboot => "../nix-store.squashfs",
        }
    }
}

/// The `"org.imgbuild.v1"` record named `key`, when the toplevel has one.
fn record<'a>(spec: &'a BootSpec, key: &str) -> Option<&'a Value> {
    spec.imgbuild.as_ref().and_then(|e| e.other.get(key))
}

/// The ISO's volume ID as the toplevel's boot.json gives it (`"org.imgbuild.v1".iso.
/// volumeID`), when it does. Whether it is a usable volume ID is the ISO writer's check
/// (`iso::settings`), which refuses it by name.
fn volume_id(spec: &BootSpec) -> Option<&str> {
    record(spec, "iso")?.get("volumeID")?.as_str()
}

/// What the toplevel's `iso` record lacks, named by key as `iso::settings` names them:
/// `volumeID`, and on x86_64 `syslinux` (isolinux boots the ISO from BIOS).
fn iso_record_problems(spec: &BootSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if volume_id(spec).is_none() {
        problems.push(format!(
            "its boot.json has no \"{IMGBUILD_V1}\".iso.volumeID"
        ));
    }
    let syslinux = record(spec, "iso").and_then(|r| r.get("syslinux"));
    if spec.system == "x86_64-linux" && syslinux.is_none_or(Value::is_null) {
        problems.push(format!(
            "its boot.json has no \"{IMGBUILD_V1}\".iso.syslinux (isolinux, which boots the x86_64 \
             ISO from BIOS)"
        ));
    }
    problems
}

/// Whether the kernel parameters make stage 1 mount the volume `volume_id` (`root=LABEL=`;
/// stage 1 takes the last `root=`). With no volume ID known, any `root=LABEL=` will do.
fn root_problem(spec: &BootSpec, volume_id: Option<&str>) -> Option<String> {
    let root = spec
        .kernel_params
        .iter()
        .rev()
        .find(|p| p.starts_with("root="));
    match (root, volume_id) {
        (None, Some(v)) => Some(format!(
            "its kernel parameters have no `root=LABEL={v}`: stage 1 would not find the ISO"
        )),
        (Some(p), Some(v)) if *p != format!("root=LABEL={v}") => Some(format!(
            "its kernel parameters say `{p}`, but the ISO's volume ID is `{v}` \
             (`root=LABEL={v}`)"
        )),
        (None, None) => Some(
            "its kernel parameters have no `root=LABEL=<volume ID>`: stage 1 would not find \
             the ISO"
                .into(),
        ),
        (Some(p), None) if !p.starts_with("root=LABEL=") => Some(format!(
            "its kernel parameters say `{p}`, not `root=LABEL=<volume ID>`"
        )),
        _ => None,
    }
}

/// The refusal naming every problem, or `Ok` when there is none.
fn verdict(format: &str, problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        Ok(())
    } else {
        bad(format, problems.join("; "))
    }
}

/// Checks a toplevel for an ISO format: its boot.json's `iso` record, kernel parameters that
/// make stage 1 mount the volume it names, and the live mounts in `fstab` (`None`: the
/// toplevel has no fstab). Every problem is named.
pub(crate) fn check_iso(format: &str, fstab: Option<&str>, spec: &BootSpec) -> Result<()> {
    let volume = volume_id(spec);
    let mut problems = iso_record_problems(spec);
    problems.extend(root_problem(spec, volume));
    problems.extend(mount_problems(Live::Iso, fstab, volume));
    verdict(format, problems)
}

/// Checks a toplevel for netboot and kexec: its boot.json has the `netboot` record and its
/// fstab the live mounts, the store image taken from the initrd. Every problem is named.
pub(crate) fn check_netboot(format: &str, fstab: Option<&str>, spec: &BootSpec) -> Result<()> {
    let mut problems = Vec::new();
    match record(spec, "netboot") {
        Some(Value::Object(_)) => {}
        Some(_) => problems.push(format!(
            "its boot.json's \"{IMGBUILD_V1}\".netboot is not an object"
        )),
        None => problems.push(format!(
            "its boot.json has no \"{IMGBUILD_V1}\".netboot record (it is not configured to run \
             from a store image in its initrd)"
        )),
    }
    problems.extend(mount_problems(Live::Netboot, fstab, None));
    verdict(format, problems)
}

/// Whether `m`'s options include every one of `want`.
fn has_options(m: &Mount, want: &[&str]) -> bool {
    let opts: Vec<&str> = m.options.split(',').collect();
    want.iter().all(|w| opts.contains(w))
}

/// One mount the live system needs, and what it must be.
struct Need<'a> {
    point: &'static str,
    what: String,
    ok: Box<dyn Fn(&Mount) -> bool + 'a>,
}

/// The mounts of nixpkgs' `lib.isoFileSystems` (ISO) or netboot.nix that `fstab` lacks or
/// has otherwise: `/` tmpfs, `/iso` the medium (ISO only: `/dev/root`, or the volume by
/// label), `/nix/.ro-store` the store image (squashfs, loop), `/nix/.rw-store` tmpfs,
/// `/nix/store` their overlay.
fn mount_problems(live: Live, fstab: Option<&str>, volume_id: Option<&str>) -> Vec<String> {
    let Some(fstab) = fstab else {
        return vec![
            "it has no /etc/fstab, so it mounts neither its root tmpfs nor its store image".into(),
        ];
    };
    let mounts = parse_fstab(fstab);
    let image = live.store_image();
    let mut needs = vec![Need {
        point: "/",
        what: "a tmpfs".into(),
        ok: Box::new(|m| m.fstype == "tmpfs"),
    }];
    if live == Live::Iso {
        let mut devices = vec!["/dev/root".to_string()];
        if let Some(label) = volume_id {
            devices.push(format!("LABEL={label}"));
            devices.push(format!("/dev/disk/by-label/{label}"));
        }
        needs.push(Need {
            point: "/iso",
            what: "the ISO (/dev/root)".into(),
            ok: Box::new(move |m| devices.contains(&m.device)),
        });
    }
    needs.extend([
        Need {
            point: "/nix/.ro-store",
            what: format!("the store image (squashfs {image}, loop)"),
            ok: Box::new(move |m| {
                m.fstype == "squashfs" && m.device == image && has_options(m, &["loop"])
            }),
        },
        Need {
            point: "/nix/.rw-store",
            what: "a tmpfs".into(),
            ok: Box::new(|m| m.fstype == "tmpfs"),
        },
        Need {
            point: "/nix/store",
            what: "an overlay (lowerdir=/nix/.ro-store, upperdir=/nix/.rw-store/store, \
                   workdir=/nix/.rw-store/work)"
                .into(),
            ok: Box::new(|m| {
                m.fstype == "overlay"
                    && has_options(
                        m,
                        &[
                            "lowerdir=/nix/.ro-store",
                            "upperdir=/nix/.rw-store/store",
                            "workdir=/nix/.rw-store/work",
                        ],
                    )
            }),
        },
    ]);
    needs
        .iter()
        .filter_map(|n| match mounts.iter().rev().find(|m| m.point == n.point) {
            None => Some(format!(
                "its /etc/fstab mounts nothing at {}, which must be {}",
                n.point, n.what
            )),
            Some(m) if !(n.ok)(m) => Some(format!(
                "its /etc/fstab mounts {} {} at {}, which must be {}",
                m.fstype, m.device, n.point, n.what
            )),
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x";
    const SYSLINUX: &str = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-syslinux-6.04";

    /// The fstab NixOS writes for imgbuild.format = "iso" (filesystems.nix's format:
    /// x-initrd.mount on the file systems needed for boot).
    const ISO_FSTAB: &str = "# This is a generated file.  Do not edit!\n\n# Filesystems.\n\
        tmpfs / tmpfs mode=0755 0 0\n\
        /dev/root /iso auto x-initrd.mount 0 0\n\
        /iso/nix-store.squashfs /nix/.ro-store squashfs loop,x-initrd.mount 0 0\n\
        tmpfs /nix/.rw-store tmpfs mode=0755,x-initrd.mount 0 0\n\
        overlay /nix/store overlay lowerdir=/nix/.ro-store,upperdir=/nix/.rw-store/store,\
        workdir=/nix/.rw-store/work,x-initrd.mount,\
        x-systemd.requires-mounts-for=/nix/.ro-store 0 0\n";

    /// A raw-efi system's fstab: a disk, no live mounts.
    const DISK_FSTAB: &str = "/dev/disk/by-label/nixos / ext4 x-initrd.mount 0 1\n\
        /dev/disk/by-label/ESP /boot vfat fmask=0077,dmask=0077 0 2\n";

    fn netboot_fstab() -> String {
        ISO_FSTAB
            .replace("/dev/root /iso auto x-initrd.mount 0 0\n", "")
            .replace("/iso/nix-store.squashfs", "../nix-store.squashfs")
    }

    fn spec(system: &str, params: &[&str], ext: &str) -> BootSpec {
        let json = format!(
            r#"{{"org.nixos.bootspec.v1": {{"init": "{T}/init",
              "kernel": "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-linux/bzImage",
              "kernelParams": {}, "label": "x", "system": "{system}",
              "toplevel": "{T}"}} {ext} }}"#,
            serde_json::to_string(params).unwrap()
        );
        BootSpec::parse(json.as_bytes(), std::path::Path::new("boot.json")).unwrap()
    }

    fn iso_ext(record: &str) -> String {
        format!(r#", "org.imgbuild.v1": {{"release": "26.11", "iso": {record}}}"#)
    }

    const PARAMS: &[&str] = &["root=LABEL=nixos-26.11-x86_64", "boot.shell_on_fail"];

    fn x86_ext() -> String {
        iso_ext(&format!(
            r#"{{"volumeID": "nixos-26.11-x86_64", "syslinux": "{SYSLINUX}"}}"#
        ))
    }

    /// The message of a refusal, checked to name the format and how to fix it.
    fn refusal(r: Result<()>, format: &str) -> String {
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains(&format!("not configured for `{format}`"))
                && e.contains(&format!("imgbuild.format = \"{format}\"")),
            "{e}"
        );
        e
    }

    #[test]
    fn the_formats_media() {
        let live = |name: &str| Live::of(&Format::load(name).unwrap());
        assert_eq!(live("iso"), Some(Live::Iso));
        assert_eq!(live("iso-installer"), Some(Live::Iso));
        assert_eq!(live("netboot"), Some(Live::Netboot));
        assert_eq!(live("kexec"), Some(Live::Netboot));
        assert_eq!(live("raw-efi"), None);
        assert_eq!(live("sd-aarch64"), None);
    }

    #[test]
    fn a_configured_iso_toplevel_passes() {
        check_iso(
            "iso",
            Some(ISO_FSTAB),
            &spec("x86_64-linux", PARAMS, &x86_ext()),
        )
        .unwrap();
        // aarch64: UEFI only, no syslinux; the medium may also be named by its label.
        let arm = spec(
            "aarch64-linux",
            &["root=LABEL=NIXOS_ISO"],
            &iso_ext(r#"{"volumeID": "NIXOS_ISO"}"#),
        );
        let fstab = ISO_FSTAB.replace("/dev/root /iso", "LABEL=NIXOS_ISO /iso");
        check_iso("iso-installer", Some(&fstab), &arm).unwrap();
    }

    #[test]
    fn a_missing_iso_record_or_key_is_named() {
        let cases = [
            (
                "",
                "has no \"org.imgbuild.v1\".iso.volumeID; its boot.json has no \
                 \"org.imgbuild.v1\".iso.syslinux",
            ),
            (
                r#", "org.imgbuild.v1": {"release": "26.11"}"#,
                "has no \"org.imgbuild.v1\".iso.volumeID",
            ),
            (
                &iso_ext(&format!(r#"{{"syslinux": "{SYSLINUX}"}}"#)),
                "has no \"org.imgbuild.v1\".iso.volumeID",
            ),
            (&iso_ext(r#"{"volumeID": 7}"#), ".iso.volumeID"),
            (
                &iso_ext(r#"{"volumeID": "nixos-26.11-x86_64"}"#),
                "has no \"org.imgbuild.v1\".iso.syslinux (isolinux, which boots the x86_64 ISO \
                 from BIOS)",
            ),
            (
                &iso_ext(r#"{"volumeID": "nixos-26.11-x86_64", "syslinux": null}"#),
                ".iso.syslinux",
            ),
        ];
        for (ext, want) in cases {
            let s = spec("x86_64-linux", PARAMS, ext);
            let e = refusal(check_iso("iso", Some(ISO_FSTAB), &s), "iso");
            assert!(e.contains(want), "{ext}: {e}");
        }
        // The same record on aarch64 needs no syslinux.
        let arm = spec(
            "aarch64-linux",
            PARAMS,
            &iso_ext(r#"{"volumeID": "nixos-26.11-x86_64"}"#),
        );
        check_iso("iso", Some(ISO_FSTAB), &arm).unwrap();
    }

    #[test]
    fn kernel_parameters_must_mount_the_volume() {
        let check = |params: &[&str]| {
            check_iso(
                "iso",
                Some(ISO_FSTAB),
                &spec("x86_64-linux", params, &x86_ext()),
            )
        };
        let e = refusal(check(&["boot.shell_on_fail", "console=ttyS0"]), "iso");
        assert!(
            e.contains("kernel parameters have no `root=LABEL=nixos-26.11-x86_64`"),
            "{e}"
        );
        // A disk's root (a raw-efi toplevel), or another volume ID: named, with the right one.
        let e = refusal(check(&["root=/dev/disk/by-label/nixos"]), "iso");
        assert!(
            e.contains(
                "say `root=/dev/disk/by-label/nixos`, but the ISO's volume ID is \
                 `nixos-26.11-x86_64`"
            ),
            "{e}"
        );
        let e = refusal(check(&["root=LABEL=NIXOS_ISO"]), "iso");
        assert!(e.contains("say `root=LABEL=NIXOS_ISO`"), "{e}");
        // The last root= counts, as in stage 1.
        check(&["root=LABEL=old", "root=LABEL=nixos-26.11-x86_64"]).unwrap();
        assert!(check(&["root=LABEL=nixos-26.11-x86_64", "root=LABEL=old"]).is_err());
        // Without a volume ID, the parameters still need a root=LABEL=.
        let none = |params: &[&str]| {
            check_iso("iso", Some(ISO_FSTAB), &spec("x86_64-linux", params, ""))
                .unwrap_err()
                .to_string()
        };
        assert!(none(&["quiet"]).contains("have no `root=LABEL=<volume ID>`"));
        assert!(none(&["root=/dev/vda2"]).contains("say `root=/dev/vda2`, not `root=LABEL="));
        assert!(!none(&["root=LABEL=X"]).contains("kernel parameters"));
    }

    #[test]
    fn a_disk_toplevel_is_refused_with_everything_it_lacks() {
        let s = spec("x86_64-linux", &["root=/dev/disk/by-label/nixos"], "");
        let e = refusal(check_iso("iso", Some(DISK_FSTAB), &s), "iso");
        for want in [
            "its boot.json has no \"org.imgbuild.v1\".iso.volumeID",
            "kernel parameters say `root=/dev/disk/by-label/nixos`",
            "its /etc/fstab mounts ext4 /dev/disk/by-label/nixos at /, which must be a tmpfs",
            "mounts nothing at /iso, which must be the ISO (/dev/root)",
            "nothing at /nix/.ro-store, which must be the store image (squashfs \
             /iso/nix-store.squashfs, loop)",
            "nothing at /nix/.rw-store, which must be a tmpfs",
            "nothing at /nix/store, which must be an overlay",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = refusal(check_netboot("kexec", Some(DISK_FSTAB), &s), "kexec");
        assert!(
            e.contains("has no \"org.imgbuild.v1\".netboot record")
                && e.contains("ext4 /dev/disk/by-label/nixos at /")
                && !e.contains("/iso,"),
            "{e}"
        );
    }

    #[test]
    fn each_wrong_live_mount_is_named_alone() {
        let s = spec("x86_64-linux", PARAMS, &x86_ext());
        let off = [
            (
                "/dev/root /iso",
                "/dev/sr0 /iso",
                "mounts auto /dev/sr0 at /iso",
            ),
            (
                "squashfs loop,",
                "squashfs ro,",
                "at /nix/.ro-store, which must be",
            ),
            (
                "/iso/nix-store.squashfs",
                "/iso/store.sqfs",
                "squashfs /iso/store.sqfs at /nix/.ro-store",
            ),
            (
                "tmpfs /nix/.rw-store tmpfs",
                "/dev/vda2 /nix/.rw-store ext4",
                "at /nix/.rw-store, which must be a tmpfs",
            ),
            (
                "upperdir=/nix/.rw-store/store",
                "upperdir=/tmp",
                "at /nix/store, which must be an overlay",
            ),
        ];
        for (from, to, want) in off {
            let fstab = ISO_FSTAB.replace(from, to);
            let e = refusal(check_iso("iso", Some(&fstab), &s), "iso");
            assert!(
                e.contains(want) && e.matches("which must be").count() == 1,
                "{to}: {e}"
            );
        }
        let e = refusal(check_iso("iso", None, &s), "iso");
        assert!(e.contains("has no /etc/fstab"), "{e}");
        // A netboot fstab on an ISO: the medium is not mounted, the image is the initrd's.
        let e = refusal(check_iso("iso", Some(&netboot_fstab()), &s), "iso");
        assert!(
            e.contains("nothing at /iso") && e.contains("squashfs ../nix-store.squashfs"),
            "{e}"
        );
    }

    #[test]
    fn netboot_needs_its_record_and_mounts() {
        let ext = r#", "org.imgbuild.v1": {"release": "26.11", "netboot": {}}"#;
        let s = spec("aarch64-linux", &[], ext);
        check_netboot("netboot", Some(&netboot_fstab()), &s).unwrap();
        check_netboot("kexec", Some(&netboot_fstab()), &s).unwrap();
        // An ISO's toplevel is not a netboot one.
        let iso = spec("x86_64-linux", PARAMS, &x86_ext());
        let e = refusal(
            check_netboot("kexec", Some(&netboot_fstab()), &iso),
            "kexec",
        );
        assert!(
            e.contains("has no \"org.imgbuild.v1\".netboot record"),
            "{e}"
        );
        let e = refusal(check_netboot("netboot", Some(ISO_FSTAB), &s), "netboot");
        assert!(
            e.contains(
                "squashfs /iso/nix-store.squashfs at /nix/.ro-store, which must be the store \
                 image (squashfs ../nix-store.squashfs, loop)"
            ),
            "{e}"
        );
        let odd = r#", "org.imgbuild.v1": {"netboot": true}"#;
        let e = refusal(
            check_netboot(
                "netboot",
                Some(&netboot_fstab()),
                &spec("aarch64-linux", &[], odd),
            ),
            "netboot",
        );
        assert!(e.contains(".netboot is not an object"), "{e}");
    }
}
