//! Which NixOS release's boot files to write, with which settings. The truth is the closure:
//! the settings imgbuild's NixOS module records in `boot.json` (`org.imgbuild.v1`), else the
//! release named by `<toplevel>/nixos-version` or the bootspec label and that release's
//! defaults, with the format's `[bootloader] timeout` as the fallback timeout. When the module's
//! settings are absent, or the release is not one imgbuild knows, the choice made is written
//! down ([`BootNote::assumed`]) for the CLI to print and the manifest to keep.

use serde::Serialize;

use crate::format::{Bootloader, Format};
use crate::{Error, Result};
use imgbuild_boot::{Facts, Fit, Release};
use imgbuild_nix::{BootSpec, BootloaderSettings, IMGBUILD_V1};

/// Input text (nixos-version, the bootspec label) quoted in a note or an error is cut to this
/// many characters, control characters escaped.
const MAX_QUOTE: usize = 64;

/// The manifest's `boot` object: the release followed and how it was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootNote {
    /// The release whose installers' output was written (`26.11`).
    pub release: String,
    /// Where the closure's release came from: `boot.json` (the module's `release`),
    /// `nixos-version`, `label` (the bootspec label) or `none`.
    pub release_from: &'static str,
    /// What was assumed, when the module's settings were absent or the release unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assumed: Option<String>,
    /// The systemd-boot entry written (`loader/entries/nixos-<hash>+3.conf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Tries of the new entry, when boot counting is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_counting: Option<u32>,
    /// The unified kernel image on the ESP, for a `[bootloader] uki = true` format (then
    /// `entry` is `None`: there is no type #1 entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uki: Option<UkiNote>,
    /// The ESP's PE files signed for Secure Boot, the certificate's fingerprint and the
    /// enrolment files (`--secure-boot-key`/`--secure-boot-cert`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<crate::secure_boot::SecureBootNote>,
}

/// The manifest's record of the UKI (`boot.uki`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UkiNote {
    /// Its path on the ESP (`EFI/Linux/nixos.efi`).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// `.cmdline`.
    pub cmdline: String,
    /// `.uname`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uname: Option<String>,
    /// `PRETTY_NAME` of `.osrel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
    /// Every section, in table order.
    pub sections: Vec<UkiSection>,
}

/// One section of the UKI, as `objdump -h` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UkiSection {
    /// `.linux`, `.initrd`, ...
    pub name: String,
    /// File offset (`PointerToRawData`).
    pub offset: u64,
    /// The data's length.
    pub size: u64,
    /// `VirtualAddress`.
    pub virtual_address: u32,
    /// `VirtualSize`.
    pub virtual_size: u32,
}

/// The settings the boot files are written with, every default applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Choice {
    pub facts: Facts,
    /// `boot.loader.timeout`; `None` is null.
    pub timeout: Option<i64>,
    pub editor: bool,
    pub console_mode: String,
    pub reboot_for_bitlocker: bool,
    pub distro_name: String,
    /// `installDeviceTree` as recorded (`None`: follow the bootspec's `devicetree`).
    pub install_device_tree: Option<bool>,
    /// extlinux: `useGenerationDeviceTree` (default true: an `FDT`/`FDTDIR` line).
    pub use_generation_device_tree: bool,
    /// extlinux: `hardware.deviceTree.name` (`FDT <dtbs>/<name>` instead of `FDTDIR`).
    pub device_tree_name: Option<String>,
    pub boot_counting: Option<u32>,
    /// `boot.loader.grub.*` as recorded (`type = "grub"`).
    pub grub: Option<imgbuild_nix::GrubSettings>,
    pub note: BootNote,
}

/// Decides the release and settings for `spec` built as `format`. (A recorded boot loader
/// other than the format's is refused by `system_check::check`, with the other mismatches.)
pub(crate) fn choose(format: &Format, spec: &BootSpec) -> Result<Choice> {
    let ext = spec.imgbuild.as_ref();
    let settings = ext.and_then(|e| e.bootloader.clone());
    let (release, release_from, source_text) = detect(spec)?;
    let mut assumed = Vec::new();
    let facts = match release {
        Some(r) => {
            let (facts, fit) = r.facts();
            let newest = imgbuild_boot::RELEASES[imgbuild_boot::RELEASES.len() - 1].release;
            match fit {
                Fit::Known => {}
                Fit::Newer => assumed.push(format!(
                    "NixOS {r} is newer than the newest release imgbuild knows ({newest}); \
                     writing {}'s boot files",
                    facts.release
                )),
                Fit::Between | Fit::Older => assumed.push(format!(
                    "NixOS {r} is not a release imgbuild knows; writing {}'s boot files",
                    facts.release
                )),
            }
            facts
        }
        None => {
            let facts = imgbuild_boot::RELEASES[imgbuild_boot::RELEASES.len() - 1];
            assumed.push(format!(
                "no NixOS release in boot.json, nixos-version or the bootspec label; writing \
                 {}'s boot files",
                facts.release
            ));
            facts
        }
    };
    if settings.is_none() {
        let from = match release_from {
            "none" => String::new(),
            from => format!(
                " from {from} `{}`",
                imgbuild_blockio::excerpt(&source_text, MAX_QUOTE)
            ),
        };
        assumed.insert(
            0,
            format!(
                "no {IMGBUILD_V1}.bootloader in boot.json; assuming NixOS {} defaults{from}",
                facts.release
            ),
        );
    }
    let s = settings.unwrap_or_default();
    Ok(resolve(format, &s, facts, release_from, assumed))
}

fn resolve(
    format: &Format,
    s: &BootloaderSettings,
    facts: Facts,
    release_from: &'static str,
    assumed: Vec<String>,
) -> Choice {
    // Only systemd-boot counts boots; an extlinux image has no counter to record.
    let boot_counting = s
        .boot_counting
        .filter(|b| b.enable && format.bootloader.kind == Bootloader::SystemdBoot)
        .map(|b| b.tries);
    Choice {
        facts,
        timeout: match s.timeout {
            Some(recorded) => recorded,
            None => format.bootloader.timeout.map(i64::from),
        },
        editor: s.editor.unwrap_or(true),
        console_mode: s.console_mode.clone().unwrap_or_else(|| "keep".to_owned()),
        reboot_for_bitlocker: s.reboot_for_bitlocker.unwrap_or(false),
        distro_name: s.distro_name.clone().unwrap_or_else(|| "NixOS".to_owned()),
        install_device_tree: s.install_device_tree,
        use_generation_device_tree: s.use_generation_device_tree.unwrap_or(true),
        device_tree_name: s.device_tree_name.clone(),
        boot_counting,
        grub: s.grub.clone(),
        note: BootNote {
            release: facts.release.to_string(),
            release_from,
            assumed: (!assumed.is_empty()).then(|| assumed.join("; ")),
            entry: None,
            boot_counting,
            uki: None,
            secure_boot: None,
        },
    }
}

/// The closure's release: the module's `release`, else the first `YY.MM` of
/// `<toplevel>/nixos-version`, else of the bootspec label. Returns where it came from and
/// the text it was read from.
fn detect(spec: &BootSpec) -> Result<(Option<Release>, &'static str, String)> {
    if let Some(r) = spec.imgbuild.as_ref().and_then(|e| e.release.as_deref()) {
        let release = Release::find(r).ok_or_else(|| Error::BadBootSpec {
            toplevel: spec.toplevel.to_string(),
            reason: format!(
                "{IMGBUILD_V1}.release `{}` is not a NixOS release (YY.MM)",
                imgbuild_blockio::excerpt(r, MAX_QUOTE)
            ),
        })?;
        return Ok((Some(release), "boot.json", r.to_owned()));
    }
    if let Some(v) = &spec.nixos_version {
        if let Some(r) = Release::find(v) {
            return Ok((Some(r), "nixos-version", v.clone()));
        }
    }
    match Release::find(&spec.label) {
        Some(r) => Ok((Some(r), "label", spec.label.clone())),
        None => Ok((None, "none", String::new())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    const T: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x";

    fn spec(ext: &str, label: &str, version: Option<&str>) -> BootSpec {
        let json = format!(
            r#"{{"org.nixos.bootspec.v1": {{"init": "{T}/init",
              "kernel": "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-linux/bzImage",
              "kernelParams": [], "label": "{label}", "system": "x86_64-linux",
              "toplevel": "{T}"}}, "org.nixos.specialisation.v1": {{}} {ext} }}"#
        );
        let mut s = BootSpec::parse(json.as_bytes(), Path::new("boot.json")).unwrap();
        s.nixos_version = version.map(str::to_owned);
        s
    }

    fn raw_efi() -> Format {
        Format::load("raw-efi").unwrap()
    }

    #[test]
    fn without_the_module_the_release_comes_from_the_closure() {
        let c = choose(
            &raw_efi(),
            &spec(
                "",
                "NixOS Zokor 26.11.x (Linux 6.18)",
                Some("26.11.20261201.abcdef0"),
            ),
        )
        .unwrap();
        assert_eq!(c.facts.release, Release::new(26, 11));
        assert_eq!(c.note.release_from, "nixos-version");
        assert_eq!(
            c.note.assumed.as_deref(),
            Some(
                "no org.imgbuild.v1.bootloader in boot.json; assuming NixOS 26.11 defaults \
                 from nixos-version `26.11.20261201.abcdef0`"
            )
        );
        // Defaults of that release, the format's timeout.
        assert_eq!(
            (
                c.timeout,
                c.editor,
                c.console_mode.as_str(),
                c.boot_counting
            ),
            (Some(5), true, "keep", None)
        );
        // No nixos-version: the label.
        let c = choose(
            &raw_efi(),
            &spec("", "NixOS Uakari 24.05.1 (Linux 6.1)", None),
        )
        .unwrap();
        assert_eq!(
            (c.note.release.as_str(), c.note.release_from),
            ("24.05", "label")
        );
        // Nothing at all: the newest release, said so.
        let c = choose(&raw_efi(), &spec("", "custom", None)).unwrap();
        assert_eq!(c.note.release_from, "none");
        assert!(
            c.note
                .assumed
                .as_deref()
                .unwrap()
                .contains("no NixOS release in boot.json"),
            "{:?}",
            c.note.assumed
        );
        // The label is quoted short and escaped: it is printed and kept in the manifest.
        let label = format!("NixOS 24.05 \\u001b[2J {}", "x".repeat(200));
        let c = choose(&raw_efi(), &spec("", &label, None)).unwrap();
        let assumed = c.note.assumed.unwrap();
        assert!(
            assumed.ends_with(&format!(
                "from label `NixOS 24.05 \\u{{1b}}[2J {}…`",
                "x".repeat(64 - 17)
            )),
            "{assumed}"
        );
        // A future release: the newest known one, said so.
        let c = choose(&raw_efi(), &spec("", "x", Some("27.05.2027"))).unwrap();
        assert_eq!(c.facts.release, Release::new(26, 11));
        assert!(c
            .note
            .assumed
            .unwrap()
            .contains("27.05 is newer than the newest"));
    }

    #[test]
    fn the_module_settings_win() {
        let ext = r#", "org.imgbuild.v1": {"release": "26.11", "bootloader": {
            "type": "systemd-boot", "timeout": null, "editor": false, "consoleMode": "max",
            "rebootForBitlocker": true, "distroName": "MyOS", "installDeviceTree": false,
            "bootCounting": {"enable": true, "tries": 4}}}"#;
        let c = choose(&raw_efi(), &spec(ext, "x 24.05", Some("24.05.1"))).unwrap();
        assert_eq!(
            c.facts.release,
            Release::new(26, 11),
            "the module's release first"
        );
        assert_eq!(c.note.release_from, "boot.json");
        assert_eq!(c.note.assumed, None);
        assert_eq!(c.timeout, None, "null is recorded, not the format's 5");
        assert_eq!(
            (c.editor, c.console_mode.as_str(), c.reboot_for_bitlocker),
            (false, "max", true)
        );
        assert_eq!(c.distro_name, "MyOS");
        assert_eq!(c.install_device_tree, Some(false));
        assert_eq!(c.boot_counting, Some(4));
        // Counting recorded but off.
        let off = ext.replace(r#""enable": true"#, r#""enable": false"#);
        let c = choose(&raw_efi(), &spec(&off, "x", None)).unwrap();
        assert_eq!(c.boot_counting, None);
        // extlinux has no boot counting, whatever was recorded.
        let sd = Format::load("sd-aarch64").unwrap();
        let ext = ext.replace(r#""type": "systemd-boot""#, r#""type": "extlinux""#);
        let c = choose(&sd, &spec(&ext, "x", None)).unwrap();
        assert_eq!((c.boot_counting, c.note.boot_counting), (None, None));
        assert_eq!(
            (c.use_generation_device_tree, c.device_tree_name),
            (true, None)
        );
        // extlinux's device tree settings pass through.
        let dt = r#", "org.imgbuild.v1": {"bootloader": {"type": "extlinux",
            "useGenerationDeviceTree": false, "deviceTreeName": "rk3399-rock-pi-4b.dtb"}}"#;
        let c = choose(&sd, &spec(dt, "x", None)).unwrap();
        assert_eq!(
            (c.use_generation_device_tree, c.device_tree_name.as_deref()),
            (false, Some("rk3399-rock-pi-4b.dtb"))
        );
        // The other boot loader: not refused here (system_check::check does that).
        let ext = r#", "org.imgbuild.v1": {"bootloader": {"type": "extlinux"}}"#;
        choose(&raw_efi(), &spec(ext, "x", None)).unwrap();
        // A release that is not one.
        let ext = r#", "org.imgbuild.v1": {"release": "unstable"}"#;
        let err = choose(&raw_efi(), &spec(ext, "x", None)).unwrap_err();
        assert!(
            err.to_string()
                .contains("`unstable` is not a NixOS release"),
            "{err}"
        );
    }
}
