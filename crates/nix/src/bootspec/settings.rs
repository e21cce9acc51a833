//! `org.imgbuild.v1.bootloader` and the other text settings of the `org.imgbuild.v1`
//! extension: typed, bounded, every key optional.

use serde_json::Value;

use super::grub_settings::GrubSettings;
use super::text::{json_kind, setting_text};
use super::IMGBUILD_V1;

/// `org.imgbuild.v1.bootloader`: the NixOS options that shape the boot files. Every field is
/// optional; absent means the option's default (or, for `timeout`, the format's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootloaderSettings {
    /// Which installer the system uses.
    pub kind: Option<LoaderKind>,
    /// `boot.loader.timeout`: `None` absent, `Some(None)` null, `Some(Some(s))` seconds.
    pub timeout: Option<Option<i64>>,
    /// `boot.loader.systemd-boot.editor`.
    pub editor: Option<bool>,
    /// `boot.loader.systemd-boot.consoleMode`.
    pub console_mode: Option<String>,
    /// `boot.loader.systemd-boot.rebootForBitlocker`.
    pub reboot_for_bitlocker: Option<bool>,
    /// `system.nixos.distroName`.
    pub distro_name: Option<String>,
    /// `boot.loader.systemd-boot.installDeviceTree`.
    pub install_device_tree: Option<bool>,
    /// `boot.loader.systemd-boot.bootCounting` (only where the release has the option).
    pub boot_counting: Option<BootCounting>,
    /// `boot.loader.generic-extlinux-compatible.useGenerationDeviceTree`.
    pub use_generation_device_tree: Option<bool>,
    /// `hardware.deviceTree.name` (extlinux: `FDT <dtbs>/<name>` instead of `FDTDIR`).
    pub device_tree_name: Option<String>,
    /// `boot.loader.grub.*`, when `type` is `grub`.
    pub grub: Option<GrubSettings>,
}

/// Which boot loader installer a system uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderKind {
    /// systemd-boot (`boot.loader.systemd-boot.enable`): UEFI, entries on the ESP.
    SystemdBoot,
    /// extlinux (`boot.loader.generic-extlinux-compatible.enable`): `extlinux.conf`, read
    /// by U-Boot.
    Extlinux,
    /// GRUB (`boot.loader.grub.enable`): `/boot/grub/grub.cfg`, GRUB in the MBR (PC BIOS).
    Grub,
}

impl LoaderKind {
    /// The name the module writes (`systemd-boot`, `extlinux`).
    pub fn name(self) -> &'static str {
        match self {
            LoaderKind::SystemdBoot => "systemd-boot",
            LoaderKind::Extlinux => "extlinux",
            LoaderKind::Grub => "grub",
        }
    }
}

/// `boot.loader.systemd-boot.bootCounting.{enable,tries}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootCounting {
    /// Whether new entries count boot attempts.
    pub enable: bool,
    /// Tries of a new entry (nixpkgs' default: 3).
    pub tries: u32,
}

/// nixpkgs' `boot.loader.systemd-boot.bootCounting.tries` default.
pub const DEFAULT_BOOT_COUNTING_TRIES: u32 = 3;

/// `org.imgbuild.v1.bootloader`, every key optional, unknown keys ignored.
pub(super) fn bootloader_settings(v: &Value) -> std::result::Result<BootloaderSettings, String> {
    let Value::Object(map) = v else {
        return Err(format!(
            "\"{IMGBUILD_V1}\".bootloader is {}, not an object",
            json_kind(v)
        ));
    };
    let key = |k: &str| map.get(k).filter(|v| !v.is_null());
    let boolean = |k: &str| -> std::result::Result<Option<bool>, String> {
        match key(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(format!(
                "\"{IMGBUILD_V1}\".bootloader.{k} is {}, not a boolean",
                json_kind(other)
            )),
        }
    };
    let text = |k: &str| {
        key(k)
            .map(|v| setting_text(v, &format!("bootloader.{k}")))
            .transpose()
    };
    let kind = match text("type")?.as_deref() {
        None => None,
        Some("systemd-boot") => Some(LoaderKind::SystemdBoot),
        Some("extlinux") => Some(LoaderKind::Extlinux),
        Some("grub") => Some(LoaderKind::Grub),
        Some(other) => {
            return Err(format!(
                "\"{IMGBUILD_V1}\".bootloader.type `{other}` is not `systemd-boot`, \
                 `extlinux` or `grub`"
            ))
        }
    };
    let grub = match kind {
        Some(LoaderKind::Grub) => Some(super::grub_settings::grub_settings(map)?),
        _ => None,
    };
    Ok(BootloaderSettings {
        kind,
        timeout: timeout(map.get("timeout"))?,
        editor: boolean("editor")?,
        console_mode: text("consoleMode")?,
        reboot_for_bitlocker: boolean("rebootForBitlocker")?,
        distro_name: text("distroName")?,
        install_device_tree: boolean("installDeviceTree")?,
        boot_counting: key("bootCounting").map(boot_counting).transpose()?,
        use_generation_device_tree: boolean("useGenerationDeviceTree")?,
        device_tree_name: text("deviceTreeName")?,
        grub,
    })
}

/// `bootloader.timeout`: absent, null (wait for a choice) or whole seconds that fit an `i32`.
fn timeout(v: Option<&Value>) -> std::result::Result<Option<Option<i64>>, String> {
    match v {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(t) if i32::try_from(t).is_ok() => Ok(Some(Some(t))),
            _ => Err(format!(
                "\"{IMGBUILD_V1}\".bootloader.timeout {n} is not a whole number of seconds \
                 in range"
            )),
        },
        Some(other) => Err(format!(
            "\"{IMGBUILD_V1}\".bootloader.timeout is {}, not a number or null",
            json_kind(other)
        )),
    }
}

/// `bootloader.bootCounting` (not null): an object whose `enable` (default false) and `tries`
/// (default [`DEFAULT_BOOT_COUNTING_TRIES`]) may be absent or null.
fn boot_counting(v: &Value) -> std::result::Result<BootCounting, String> {
    let Value::Object(bc) = v else {
        return Err(format!(
            "\"{IMGBUILD_V1}\".bootloader.bootCounting is {}, not an object",
            json_kind(v)
        ));
    };
    let enable = match bc.get("enable") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(format!(
                "\"{IMGBUILD_V1}\".bootloader.bootCounting.enable is {}, not a boolean",
                json_kind(other)
            ))
        }
    };
    let tries = match bc.get("tries") {
        None | Some(Value::Null) => DEFAULT_BOOT_COUNTING_TRIES,
        Some(Value::Number(n)) => {
            n.as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .ok_or_else(|| {
                    format!(
                    "\"{IMGBUILD_V1}\".bootloader.bootCounting.tries {n} is not a count from 0 \
                     to {}",
                    u32::MAX
                )
                })?
        }
        Some(other) => {
            return Err(format!(
                "\"{IMGBUILD_V1}\".bootloader.bootCounting.tries is {}, not a number",
                json_kind(other)
            ))
        }
    };
    Ok(BootCounting { enable, tries })
}
