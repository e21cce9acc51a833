//! The live media (iso, iso-installer, netboot, kexec): the system runs from a read-only store
//! image under a tmpfs overlay, and stage 1 finds that image by what imgbuild's NixOS module
//! put into the toplevel (CONTRACT of issue 23, nixpkgs' iso-image.nix and netboot.nix). A
//! toplevel configured for a disk boots from none of these media: stage 1 waits for a root
//! partition the medium does not have. These checks read the toplevel's fstab, kernel
//! parameters and boot.json record and name what is missing.

use imgbuild_nix::{BootSpec, IMGBUILD_V1};
use serde_json::Value;

use super::{bad, parse_fstab, Mount};
use crate::Result;

/// The longest ISO 9660 volume identifier (its field in the primary volume descriptor).
const MAX_VOLUME_ID: usize = 32;

/// Which live medium the format writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Live {
    /// An ISO 9660 medium: the store image is `/nix-store.squashfs` on it, mounted at `/iso`.
    Iso,
    /// Kernel + initrd: the store image is `/nix-store.squashfs` in the initrd.
    Netboot,
}

impl Live {
    /// The live medium of the format named `name`, `None` for a disk format.
    pub(crate) fn of_format(name: &str) -> Option<Live> {
        match name {
            "iso" | "iso-installer" => Some(Live::Iso),
            "netboot" | "kexec" => Some(Live::Netboot),
            _ => None,
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

/// The `"org.imgbuild.v1".iso` record: what imgbuild needs from the system to write its ISO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IsoRecord {
    /// The ISO's volume ID, also the label stage 1 mounts (`root=LABEL=`).
    pub(crate) volume_id: String,
    /// The syslinux package (x86_64: isolinux for BIOS); `None` on aarch64.
    pub(crate) syslinux: Option<String>,
}

/// The `"org.imgbuild.v1"` record named `key`, when the toplevel has one.
fn record<'a>(spec: &'a BootSpec, key: &str) -> Option<&'a Value> {
    spec.imgbuild.as_ref().and_then(|e| e.other.get(key))
}

/// Reads and checks the `iso` record: present, `volumeID` a usable ISO 9660 volume ID and,
/// on x86_64, `syslinux` a path. Errors name the missing or bad key.
pub(crate) fn iso_record(format: &str, spec: &BootSpec) -> Result<IsoRecord> {
    let Some(rec) = record(spec, "iso") else {
        return bad(
            format,
            format!(
                "its boot.json has no \"{IMGBUILD_V1}\".iso record (the volume ID and the BIOS \
                 boot loader of the ISO)"
            ),
        );
    };
    let Some(rec) = rec.as_object() else {
        return bad(
            format,
            format!("its boot.json's \"{IMGBUILD_V1}\".iso is not an object"),
        );
    };
    let volume_id = match rec.get("volumeID") {
        None => {
            return bad(
                format,
                format!("its boot.json's \"{IMGBUILD_V1}\".iso has no volumeID"),
            )
        }
        Some(Value::String(v)) => v.clone(),
        Some(_) => {
            return bad(
                format,
                format!("its boot.json's \"{IMGBUILD_V1}\".iso.volumeID is not a string"),
            )
        }
    };
    let usable = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if volume_id.is_empty() || volume_id.len() > MAX_VOLUME_ID || !volume_id.chars().all(usable) {
        return bad(
            format,
            format!(
                "its ISO volume ID `{volume_id}` (\"{IMGBUILD_V1}\".iso.volumeID) is not 1 to \
                 {MAX_VOLUME_ID} letters, digits, `_`, `-` or `.`"
            ),
        );
    }
    let syslinux = match rec.get("syslinux") {
        Some(Value::String(s)) if s.starts_with('/') => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(_) => {
            return bad(
                format,
                format!("its boot.json's \"{IMGBUILD_V1}\".iso.syslinux is not a path"),
            )
        }
    };
    if syslinux.is_none() && spec.system == "x86_64-linux" {
        return bad(
            format,
            format!(
                "its boot.json's \"{IMGBUILD_V1}\".iso has no syslinux, which boots the x86_64 \
                 ISO from BIOS (isolinux)"
            ),
        );
    }
    Ok(IsoRecord {
        volume_id,
        syslinux,
    })
}

/// Checks a toplevel for the ISO whose volume ID is `volume_id`: its kernel parameters make
/// stage 1 mount that volume, and its fstab has the live mounts.
pub(crate) fn check_iso(
    format: &str,
    fstab: Option<&str>,
    spec: &BootSpec,
    volume_id: &str,
) -> Result<()> {
    let want = format!("root=LABEL={volume_id}");
    // Stage 1 takes the last `root=`.
    match spec
        .kernel_params
        .iter()
        .rev()
        .find(|p| p.starts_with("root="))
    {
        None => {
            return bad(
                format,
                format!(
                    "its kernel parameters have no `{want}`: stage 1 would not find the ISO \
                     (volume ID `{volume_id}`)"
                ),
            )
        }
        Some(p) if *p != want => {
            return bad(
                format,
                format!(
                    "its kernel parameters say `{p}`, but the ISO's volume ID is `{volume_id}` \
                     (`{want}`)"
                ),
            )
        }
        Some(_) => {}
    }
    check_mounts(format, Live::Iso, fstab, Some(volume_id))
}

/// Checks a toplevel for netboot and kexec: its boot.json has the `netboot` record and its
/// fstab the live mounts, the store image taken from the initrd.
pub(crate) fn check_netboot(format: &str, fstab: Option<&str>, spec: &BootSpec) -> Result<()> {
    match record(spec, "netboot") {
        Some(Value::Object(_)) => {}
        Some(_) => {
            return bad(
                format,
                format!("its boot.json's \"{IMGBUILD_V1}\".netboot is not an object"),
            )
        }
        None => {
            return bad(
                format,
                format!(
                    "its boot.json has no \"{IMGBUILD_V1}\".netboot record (the system is not \
                     configured to run from a store image in its initrd)"
                ),
            )
        }
    }
    check_mounts(format, Live::Netboot, fstab, None)
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

/// The mounts of nixpkgs' `lib.isoFileSystems` (ISO) or netboot.nix: `/` tmpfs, `/iso` the
/// medium (ISO only), `/nix/.ro-store` the store image (squashfs, loop), `/nix/.rw-store`
/// tmpfs, `/nix/store` their overlay. Every one missing or different is named.
fn check_mounts(
    format: &str,
    live: Live,
    fstab: Option<&str>,
    volume_id: Option<&str>,
) -> Result<()> {
    let Some(fstab) = fstab else {
        return bad(
            format,
            "it has no /etc/fstab, so it mounts neither its root tmpfs nor its store image".into(),
        );
    };
    let mounts = parse_fstab(fstab);
    let image = live.store_image();
    let mut needs = vec![Need {
        point: "/",
        what: "a tmpfs".into(),
        ok: Box::new(|m| m.fstype == "tmpfs"),
    }];
    if live == Live::Iso {
        let label = volume_id.unwrap_or_default();
        let devices = [
            "/dev/root".to_string(),
            format!("LABEL={label}"),
            format!("/dev/disk/by-label/{label}"),
        ];
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
    let problems: Vec<String> = needs
        .iter()
        .filter_map(|n| match mounts.iter().rev().find(|m| m.point == n.point) {
            None => Some(format!(
                "it mounts nothing at {}, which must be {}",
                n.point, n.what
            )),
            Some(m) if !(n.ok)(m) => Some(format!(
                "it mounts {} {} at {}, which must be {}",
                m.fstype, m.device, n.point, n.what
            )),
            Some(_) => None,
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        bad(format, format!("its /etc/fstab: {}", problems.join("; ")))
    }
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
    fn refusal(r: Result<impl std::fmt::Debug>, format: &str) -> String {
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains(&format!("not configured for `{format}`"))
                && e.contains(&format!("imgbuild.format = \"{format}\"")),
            "{e}"
        );
        e
    }

    #[test]
    fn a_configured_iso_toplevel_passes() {
        let s = spec("x86_64-linux", PARAMS, &x86_ext());
        let rec = iso_record("iso", &s).unwrap();
        assert_eq!(
            rec,
            IsoRecord {
                volume_id: "nixos-26.11-x86_64".into(),
                syslinux: Some(SYSLINUX.into()),
            }
        );
        check_iso("iso", Some(ISO_FSTAB), &s, &rec.volume_id).unwrap();
        // aarch64: UEFI only, no syslinux; the medium may also be named by label.
        let arm = spec(
            "aarch64-linux",
            &["root=LABEL=NIXOS_ISO"],
            &iso_ext(r#"{"volumeID": "NIXOS_ISO"}"#),
        );
        let rec = iso_record("iso-installer", &arm).unwrap();
        assert_eq!(rec.syslinux, None);
        let fstab = ISO_FSTAB.replace("/dev/root /iso", "LABEL=NIXOS_ISO /iso");
        check_iso("iso-installer", Some(&fstab), &arm, "NIXOS_ISO").unwrap();
    }

    #[test]
    fn an_iso_record_that_is_missing_or_bad_is_named() {
        let cases = [
            ("", "has no \"org.imgbuild.v1\".iso record"),
            (
                r#", "org.imgbuild.v1": {"release": "26.11"}"#,
                "has no \"org.imgbuild.v1\".iso record",
            ),
            (&iso_ext("[]"), "\"org.imgbuild.v1\".iso is not an object"),
            (
                &iso_ext(&format!(r#"{{"syslinux": "{SYSLINUX}"}}"#)),
                ".iso has no volumeID",
            ),
            (
                &iso_ext(r#"{"volumeID": 7}"#),
                ".iso.volumeID is not a string",
            ),
            (
                &iso_ext(&format!(
                    r#"{{"volumeID": "NIXOS ISO", "syslinux": "{SYSLINUX}"}}"#
                )),
                "volume ID `NIXOS ISO`",
            ),
            (
                &iso_ext(&format!(
                    r#"{{"volumeID": "{}", "syslinux": "{SYSLINUX}"}}"#,
                    "a".repeat(33)
                )),
                "is not 1 to 32 letters",
            ),
            (
                &iso_ext(r#"{"volumeID": "nixos-26.11-x86_64"}"#),
                ".iso has no syslinux, which boots the x86_64 ISO from BIOS",
            ),
            (
                &iso_ext(r#"{"volumeID": "v", "syslinux": true}"#),
                ".iso.syslinux is not a path",
            ),
        ];
        for (ext, want) in cases {
            let e = refusal(iso_record("iso", &spec("x86_64-linux", PARAMS, ext)), "iso");
            assert!(e.contains(want), "{ext}: {e}");
        }
        // The longest volume ID is fine.
        let ok = iso_ext(&format!(
            r#"{{"volumeID": "{}", "syslinux": "{SYSLINUX}"}}"#,
            "A".repeat(32)
        ));
        iso_record("iso", &spec("x86_64-linux", PARAMS, &ok)).unwrap();
    }

    #[test]
    fn kernel_parameters_must_mount_the_volume() {
        let vol = "nixos-26.11-x86_64";
        let check = |params: &[&str]| {
            check_iso(
                "iso",
                Some(ISO_FSTAB),
                &spec("x86_64-linux", params, &x86_ext()),
                vol,
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
            e.contains("say `root=/dev/disk/by-label/nixos`, but the ISO's volume ID is `nixos-26.11-x86_64`"),
            "{e}"
        );
        let e = refusal(check(&["root=LABEL=NIXOS_ISO"]), "iso");
        assert!(e.contains("say `root=LABEL=NIXOS_ISO`"), "{e}");
        // The last root= counts, as in stage 1.
        check(&["root=LABEL=old", "root=LABEL=nixos-26.11-x86_64"]).unwrap();
        assert!(check(&["root=LABEL=nixos-26.11-x86_64", "root=LABEL=old"]).is_err());
    }

    #[test]
    fn every_missing_or_wrong_live_mount_is_named() {
        let s = spec("x86_64-linux", PARAMS, &x86_ext());
        let vol = "nixos-26.11-x86_64";
        // A raw-efi system's fstab: every live mount is wrong or missing, and said so.
        let disk = "/dev/disk/by-label/nixos / ext4 x-initrd.mount 0 1\n\
                    /dev/disk/by-label/ESP /boot vfat fmask=0077,dmask=0077 0 2\n";
        let e = refusal(check_iso("iso", Some(disk), &s, vol), "iso");
        for want in [
            "it mounts ext4 /dev/disk/by-label/nixos at /, which must be a tmpfs",
            "it mounts nothing at /iso, which must be the ISO (/dev/root)",
            "nothing at /nix/.ro-store, which must be the store image (squashfs \
             /iso/nix-store.squashfs, loop)",
            "nothing at /nix/.rw-store, which must be a tmpfs",
            "nothing at /nix/store, which must be an overlay",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        // One line off at a time: only that one is named.
        let off = [
            (
                "/dev/root /iso",
                "/dev/sr0 /iso",
                "it mounts auto /dev/sr0 at /iso",
            ),
            (
                "squashfs loop,",
                "squashfs ro,",
                "/nix/.ro-store, which must be",
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
            let e = refusal(check_iso("iso", Some(&fstab), &s, vol), "iso");
            assert!(
                e.contains(want) && e.matches("which must be").count() == 1,
                "{to}: {e}"
            );
        }
        let e = refusal(check_iso("iso", None, &s, vol), "iso");
        assert!(e.contains("has no /etc/fstab"), "{e}");
        // A netboot fstab on an ISO: the medium is not mounted, the image is the initrd's.
        let e = refusal(check_iso("iso", Some(&netboot_fstab()), &s, vol), "iso");
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
            e.contains("squashfs /iso/nix-store.squashfs at /nix/.ro-store, which must be the store image (squashfs ../nix-store.squashfs, loop)"),
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
