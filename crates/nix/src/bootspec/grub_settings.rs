//! `org.imgbuild.v1.bootloader` for GRUB (`"type": "grub"`): the `boot.loader.grub` options
//! NixOS's installer (`install-grub.pl`, `grub-install`) reads that change what it writes.

use serde_json::{Map, Value};

use super::text::{json_kind, setting_text};
use super::IMGBUILD_V1;
use crate::{StorePath, StoreSubpath};

/// Free-text GRUB settings (`extraConfig`, `extraEntries`, ...) longer than this are refused.
const MAX_GRUB_TEXT: usize = 64 << 10;
/// Install devices listed at most (`boot.loader.grub.devices`).
const MAX_DEVICES: usize = 16;

/// `boot.loader.grub.fsIdentifier`: how `grub.cfg` finds the file systems.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsIdentifier {
    /// `search --fs-uuid` (the default).
    #[default]
    Uuid,
    /// `search --label`.
    Label,
    /// The fstab device as given (a `/dev/disk/by-uuid|by-label` name, else no search).
    Provided,
}

/// The GRUB part of `org.imgbuild.v1.bootloader`. Absent keys are nixpkgs' defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrubSettings {
    /// `boot.loader.grub.package` as installed: its `lib/grub/i386-pc` is what goes on the
    /// disk. `None` when the record has no `grub` key (refused by the image builder).
    pub package: Option<StorePath>,
    /// The GRUB built with `efiSupport` (`grubEfi` of the record, written when `efiSupport`
    /// is on): its `lib/grub/x86_64-efi` is what `grub-install --target=x86_64-efi` installs.
    pub efi_package: Option<StorePath>,
    /// `boot.loader.grub.devices` (`/dev/vda`, or `nodev`).
    pub devices: Vec<String>,
    /// `fsIdentifier`.
    pub fs_identifier: FsIdentifier,
    /// `efiSupport`.
    pub efi_support: bool,
    /// `efiInstallAsRemovable`.
    pub efi_install_as_removable: bool,
    /// `boot.loader.efi.efiSysMountPoint` (default `/boot`): a line of `/boot/grub/state`.
    pub efi_sys_mount_point: String,
    /// `configurationLimit` (default 100).
    pub configuration_limit: u32,
    /// `copyKernels`.
    pub copy_kernels: bool,
    /// `default` (default `0`; `saved` adds `savedefault`).
    pub default: String,
    /// `entryOptions` (default `--class nixos --unrestricted`).
    pub entry_options: String,
    /// `subEntryOptions` (default `--class nixos`).
    pub sub_entry_options: String,
    /// `timeoutStyle` (default `menu`).
    pub timeout_style: String,
    /// `gfxmodeEfi`, `gfxmodeBios`, `gfxpayloadEfi`, `gfxpayloadBios`.
    pub gfxmode_efi: String,
    /// See `gfxmode_efi`.
    pub gfxmode_bios: String,
    /// See `gfxmode_efi`.
    pub gfxpayload_efi: String,
    /// See `gfxmode_efi`.
    pub gfxpayload_bios: String,
    /// `font` as the installer gets it (a `.pf2` in the store), copied to
    /// `/boot/converted-font.pf2`; `None`: no font section.
    pub font: Option<StoreSubpath>,
    /// `splashImage`, copied to `/boot/background.<ext>`; `None`: text mode.
    pub splash_image: Option<StoreSubpath>,
    /// `splashMode` (`normal`, `stretch`).
    pub splash_mode: String,
    /// `backgroundColor`.
    pub background_color: Option<String>,
    /// `extraConfig`, `extraPerEntryConfig`, `extraEntries` (free text).
    pub extra_config: String,
    /// See `extra_config`.
    pub extra_per_entry_config: String,
    /// See `extra_config`.
    pub extra_entries: String,
    /// `extraEntriesBeforeNixOS`.
    pub extra_entries_before_nixos: bool,
    /// Settings recorded that imgbuild cannot follow without running the installer
    /// (`theme`, `users`, `extraPrepareConfig`, `useOSProber`, `extraGrubInstallArgs`): their
    /// names, for the image builder to refuse.
    pub unsupported: Vec<&'static str>,
}

impl Default for GrubSettings {
    fn default() -> Self {
        Self {
            package: None,
            efi_package: None,
            devices: Vec::new(),
            fs_identifier: FsIdentifier::Uuid,
            efi_support: false,
            efi_install_as_removable: false,
            efi_sys_mount_point: "/boot".into(),
            configuration_limit: 100,
            copy_kernels: false,
            default: "0".into(),
            entry_options: "--class nixos --unrestricted".into(),
            sub_entry_options: "--class nixos".into(),
            timeout_style: "menu".into(),
            gfxmode_efi: "auto".into(),
            gfxmode_bios: "1024x768".into(),
            gfxpayload_efi: "keep".into(),
            gfxpayload_bios: "text".into(),
            font: None,
            splash_image: None,
            splash_mode: "stretch".into(),
            background_color: None,
            extra_config: String::new(),
            extra_per_entry_config: String::new(),
            extra_entries: String::new(),
            extra_entries_before_nixos: false,
            unsupported: Vec::new(),
        }
    }
}

fn err(k: &str, what: &str, v: &Value) -> String {
    format!(
        "\"{IMGBUILD_V1}\".bootloader.{k} is {}, not {what}",
        json_kind(v)
    )
}

/// A free-text GRUB setting: a string of at most [`MAX_GRUB_TEXT`] bytes without NUL.
fn long_text(map: &Map<String, Value>, k: &str) -> Result<Option<String>, String> {
    match map.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_GRUB_TEXT => Err(format!(
            "\"{IMGBUILD_V1}\".bootloader.{k} is longer than {MAX_GRUB_TEXT} bytes"
        )),
        Some(Value::String(s)) if s.contains('\0') => Err(format!(
            "\"{IMGBUILD_V1}\".bootloader.{k} contains a NUL byte"
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(err(k, "a string", other)),
    }
}

fn store_file(map: &Map<String, Value>, k: &str) -> Result<Option<StoreSubpath>, String> {
    match map.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => StoreSubpath::parse(std::path::Path::new(s))
            .map(Some)
            .map_err(|e| format!("\"{IMGBUILD_V1}\".bootloader.{k}: {e}")),
        Some(other) => Err(err(k, "a store path", other)),
    }
}

/// Whether a setting that imgbuild cannot follow was given a value that does something.
fn in_use(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// The GRUB keys of `org.imgbuild.v1.bootloader` (an object whose `type` is `grub`).
pub(super) fn grub_settings(map: &Map<String, Value>) -> Result<GrubSettings, String> {
    let mut s = GrubSettings::default();
    let text = |k: &str| {
        map.get(k)
            .filter(|v| !v.is_null())
            .map(|v| setting_text(v, &format!("bootloader.{k}")))
            .transpose()
    };
    let boolean = |k: &str| match map.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(err(k, "a boolean", other)),
    };
    for (k, field) in [("grub", &mut s.package), ("grubEfi", &mut s.efi_package)] {
        if let Some(p) = text(k)? {
            *field = Some(
                StorePath::parse(&p)
                    .map_err(|e| format!("\"{IMGBUILD_V1}\".bootloader.{k}: {e}"))?,
            );
        }
    }
    match map.get("devices") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.len() > MAX_DEVICES => {
            return Err(format!(
                "\"{IMGBUILD_V1}\".bootloader.devices lists more than {MAX_DEVICES} devices"
            ))
        }
        Some(Value::Array(a)) => {
            for d in a {
                s.devices.push(setting_text(d, "bootloader.devices[]")?);
            }
        }
        Some(other) => return Err(err("devices", "a list of strings", other)),
    }
    s.fs_identifier = match text("fsIdentifier")?.as_deref() {
        None | Some("uuid") => FsIdentifier::Uuid,
        Some("label") => FsIdentifier::Label,
        Some("provided") => FsIdentifier::Provided,
        Some(other) => {
            return Err(format!(
                "\"{IMGBUILD_V1}\".bootloader.fsIdentifier `{other}` is not uuid, label or \
                 provided"
            ))
        }
    };
    s.efi_support = boolean("efiSupport")?.unwrap_or(false);
    s.efi_install_as_removable = boolean("efiInstallAsRemovable")?.unwrap_or(false);
    s.copy_kernels = boolean("copyKernels")?.unwrap_or(false);
    s.extra_entries_before_nixos = boolean("extraEntriesBeforeNixOS")?.unwrap_or(false);
    match map.get("configurationLimit") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            s.configuration_limit =
                n.as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| {
                        format!(
                            "\"{IMGBUILD_V1}\".bootloader.configurationLimit {n} is not a count"
                        )
                    })?
        }
        Some(other) => return Err(err("configurationLimit", "a number", other)),
    }
    // `default` is an int or a string in NixOS (`apply = toString`).
    match map.get("default") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => s.default = n.to_string(),
        Some(v) => s.default = setting_text(v, "bootloader.default")?,
    }
    texts(map, &mut s)?;
    s.background_color = text("backgroundColor")?.filter(|c| !c.is_empty());
    s.font = store_file(map, "font")?;
    s.splash_image = store_file(map, "splashImage")?;
    s.extra_config = long_text(map, "extraConfig")?.unwrap_or_default();
    s.extra_per_entry_config = long_text(map, "extraPerEntryConfig")?.unwrap_or_default();
    s.extra_entries = long_text(map, "extraEntries")?.unwrap_or_default();
    for k in [
        "theme",
        "users",
        "extraPrepareConfig",
        "useOSProber",
        "extraGrubInstallArgs",
    ] {
        if in_use(map.get(k)) {
            s.unsupported.push(k);
        }
    }
    Ok(s)
}

/// The short text settings that replace a default when given.
fn texts(map: &Map<String, Value>, s: &mut GrubSettings) -> Result<(), String> {
    for (k, field) in [
        ("efiSysMountPoint", &mut s.efi_sys_mount_point),
        ("entryOptions", &mut s.entry_options),
        ("subEntryOptions", &mut s.sub_entry_options),
        ("timeoutStyle", &mut s.timeout_style),
        ("gfxmodeEfi", &mut s.gfxmode_efi),
        ("gfxmodeBios", &mut s.gfxmode_bios),
        ("gfxpayloadEfi", &mut s.gfxpayload_efi),
        ("gfxpayloadBios", &mut s.gfxpayload_bios),
        ("splashMode", &mut s.splash_mode),
    ] {
        if let Some(v) = map.get(k).filter(|v| !v.is_null()) {
            *field = setting_text(v, &format!("bootloader.{k}"))?;
        }
    }
    Ok(())
}
