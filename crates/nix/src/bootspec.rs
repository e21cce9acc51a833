//! Bootspec v1 (`<toplevel>/boot.json`, RFC 0125), with a fallback for toplevels without it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::{io_err, Error, Result, StorePath, StoreRoot, StoreSubpath};

/// Key of the bootspec v1 document.
pub const BOOTSPEC_V1: &str = "org.nixos.bootspec.v1";
/// Key of the specialisation map.
pub const SPECIALISATION_V1: &str = "org.nixos.specialisation.v1";
/// Key of imgbuild's own extension.
pub const IMGBUILD_V1: &str = "org.imgbuild.v1";

/// boot.json files larger than this are refused (real ones are a few KiB).
const MAX_BOOT_JSON: u64 = 16 << 20;
/// `<toplevel>/nixos-version` files larger than this are ignored (real ones are ~25 bytes).
const MAX_NIXOS_VERSION: u64 = 4 << 10;
/// Specialisations nest at most this deep.
const MAX_DEPTH: usize = 4;

/// What a boot loader needs to boot one NixOS generation.
#[derive(Clone, Debug, PartialEq)]
pub struct BootSpec {
    /// The system toplevel this document describes.
    pub toplevel: StorePath,
    /// Stage-2 init, passed as `init=` (normally `<toplevel>/init`).
    pub init: StoreSubpath,
    pub initrd: Option<StoreSubpath>,
    /// Script appending secrets to the initrd at install time.
    pub initrd_secrets: Option<StoreSubpath>,
    pub kernel: StoreSubpath,
    pub kernel_params: Vec<String>,
    pub label: String,
    /// e.g. `x86_64-linux`.
    pub system: String,
    /// `org.nixos.specialisation.v1`, by name.
    pub specialisations: BTreeMap<String, BootSpec>,
    /// Every other top-level key (`org.nixos.systemd-boot`, `org.imgbuild.v1`, ...), verbatim.
    pub extensions: BTreeMap<String, Value>,
    /// `org.imgbuild.v1`, parsed.
    pub imgbuild: Option<ImgbuildExt>,
    /// True when there was no boot.json and this was built from the toplevel's files.
    pub synthesized: bool,
    /// `<toplevel>/nixos-version` (`system.nixos.label`, e.g. `26.11.20261201.abcdef0`),
    /// trimmed; `None` when the toplevel has none, or for a document parsed on its own.
    pub nixos_version: Option<String>,
}

/// The `org.imgbuild.v1` bootspec extension, written by imgbuild's NixOS module.
#[derive(Clone, Debug, PartialEq)]
pub struct ImgbuildExt {
    /// Raspberry Pi firmware directory (`bootcode.bin`, `start*.elf`, ...), a path at or
    /// below a store path, e.g. `/nix/store/<h>-raspberrypi-firmware/share/raspberrypi/boot`.
    pub firmware: Option<StoreSubpath>,
    /// `config.system.nixos.release`, e.g. `26.11`.
    pub release: Option<String>,
    /// The boot loader settings the module recorded.
    pub bootloader: Option<BootloaderSettings>,
    /// The other keys of the extension, verbatim (unknown keys are kept, not refused).
    pub other: BTreeMap<String, Value>,
}

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
}

/// Which boot loader installer a system uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderKind {
    SystemdBoot,
    Extlinux,
}

impl LoaderKind {
    /// The name the module writes (`systemd-boot`, `extlinux`).
    pub fn name(self) -> &'static str {
        match self {
            LoaderKind::SystemdBoot => "systemd-boot",
            LoaderKind::Extlinux => "extlinux",
        }
    }
}

/// `boot.loader.systemd-boot.bootCounting.{enable,tries}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootCounting {
    pub enable: bool,
    /// Tries of a new entry (nixpkgs' default: 3).
    pub tries: u32,
}

/// Text settings (release, console mode, distro name) longer than this are refused.
const MAX_SETTING: usize = 256;
/// nixpkgs' `boot.loader.systemd-boot.bootCounting.tries` default.
pub const DEFAULT_BOOT_COUNTING_TRIES: u32 = 3;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1 {
    init: String,
    #[serde(default)]
    initrd: Option<String>,
    #[serde(default)]
    initrd_secrets: Option<String>,
    kernel: String,
    kernel_params: Vec<String>,
    label: String,
    system: String,
    toplevel: String,
}

impl BootSpec {
    /// Reads `<toplevel>/boot.json` from the store at `store_root`, or, when the toplevel has no
    /// boot.json, synthesises the document from its `kernel`, `initrd`, `init`, `kernel-params`,
    /// `system` and `nixos-version` (symlinks resolved logically inside the store). The
    /// document's `toplevel` must be `toplevel`. Errors name the file and the reason.
    pub fn read(store_root: &Path, toplevel: &StorePath) -> Result<Self> {
        read_toplevel(&StoreRoot::new(store_root), toplevel, 0)
    }

    /// Parses a boot.json document. `file` names it in errors.
    pub fn parse(json: &[u8], file: &Path) -> Result<Self> {
        let value: Value = serde_json::from_slice(json).map_err(|error| Error::Json {
            file: file.to_owned(),
            error,
        })?;
        from_document(value, file, 0)
    }
}

fn read_toplevel(root: &StoreRoot, toplevel: &StorePath, depth: usize) -> Result<BootSpec> {
    let logical = toplevel.join("boot.json");
    let host = match root.resolve_in_store(&logical) {
        Ok(h) => h,
        Err(Error::NotFound { .. }) => return synthesize(root, toplevel, depth),
        Err(e) => return Err(e),
    };
    let bytes = read_limited(&host, &logical)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|error| Error::Json {
        file: logical.clone(),
        error,
    })?;
    let mut spec = from_document(value, &logical, depth)?;
    if spec.toplevel != *toplevel {
        return Err(Error::Bootspec {
            file: logical,
            reason: format!("describes toplevel {}, not {toplevel}", spec.toplevel),
        });
    }
    spec.nixos_version = read_nixos_version(root, toplevel)?;
    Ok(spec)
}

/// `<toplevel>/nixos-version`, trimmed, if the toplevel has one. It is a hint (the release to
/// follow, the label of a toplevel without boot.json), so a file larger than
/// [`MAX_NIXOS_VERSION`], not UTF-8 or holding a control character counts as none rather than
/// failing the build. A FIFO or an I/O error still fails.
fn read_nixos_version(root: &StoreRoot, toplevel: &StorePath) -> Result<Option<String>> {
    let logical = toplevel.join("nixos-version");
    let host = match root.resolve_in_store(&logical) {
        Ok(h) => h,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let kind = imgbuild_blockio::InputKind {
        what: "nixos-version",
        max_bytes: MAX_NIXOS_VERSION,
    };
    let bytes = match crate::input::read(&host, kind) {
        Ok(b) => b,
        Err(Error::NotFound { .. })
        | Err(Error::Input(imgbuild_blockio::InputError::TooBig { .. })) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(String::from_utf8(bytes)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.contains(char::is_control)))
}

fn from_document(value: Value, file: &Path, depth: usize) -> Result<BootSpec> {
    let bad = |reason: String| Error::Bootspec {
        file: file.to_owned(),
        reason,
    };
    let Value::Object(mut top) = value else {
        return Err(bad("top level is not a JSON object".into()));
    };
    let Some(v1) = top.remove(BOOTSPEC_V1) else {
        if top.contains_key("v1") {
            return Err(bad(
                "pre-23.05 bootspec preview format ({\"v1\": ...}) is not supported; \
                 rebuild the system with NixOS 23.05 or later"
                    .into(),
            ));
        }
        return Err(bad(format!("no \"{BOOTSPEC_V1}\" key")));
    };
    let v1: V1 = serde_json::from_value(v1).map_err(|e| bad(format!("\"{BOOTSPEC_V1}\": {e}")))?;
    let path = |what: &str, p: &str| {
        StoreSubpath::parse(Path::new(p)).map_err(|e| bad(format!("{what}: {e}")))
    };
    let toplevel = StorePath::parse(&v1.toplevel).map_err(|e| bad(format!("toplevel: {e}")))?;
    let mut specialisations = BTreeMap::new();
    match top.remove(SPECIALISATION_V1) {
        None => {}
        Some(Value::Object(map)) => {
            if depth >= MAX_DEPTH && !map.is_empty() {
                return Err(bad("specialisations nested too deep".into()));
            }
            for (name, doc) in map {
                let child = from_document(doc, file, depth + 1).map_err(|e| match e {
                    Error::Bootspec { reason, .. } => {
                        bad(format!("specialisation `{name}`: {reason}"))
                    }
                    other => other,
                })?;
                specialisations.insert(name, child);
            }
        }
        Some(_) => return Err(bad(format!("\"{SPECIALISATION_V1}\" is not an object"))),
    }
    let extensions: BTreeMap<String, Value> = top.into_iter().collect();
    let imgbuild = match extensions.get(IMGBUILD_V1) {
        None => None,
        Some(Value::Object(map)) => {
            let mut other: BTreeMap<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let firmware = match other.remove("firmware") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(path("org.imgbuild.v1 firmware", &s)?),
                Some(_) => return Err(bad("\"org.imgbuild.v1\".firmware is not a string".into())),
            };
            let release = match other.remove("release") {
                None | Some(Value::Null) => None,
                Some(v) => Some(setting_text(&v, "release").map_err(bad)?),
            };
            let bootloader = match other.remove("bootloader") {
                None | Some(Value::Null) => None,
                Some(v) => Some(bootloader_settings(&v).map_err(bad)?),
            };
            Some(ImgbuildExt {
                firmware,
                release,
                bootloader,
                other,
            })
        }
        Some(_) => return Err(bad(format!("\"{IMGBUILD_V1}\" is not an object"))),
    };
    Ok(BootSpec {
        toplevel,
        init: path("init", &v1.init)?,
        initrd: v1
            .initrd
            .as_deref()
            .map(|p| path("initrd", p))
            .transpose()?,
        initrd_secrets: v1
            .initrd_secrets
            .as_deref()
            .map(|p| path("initrdSecrets", p))
            .transpose()?,
        kernel: path("kernel", &v1.kernel)?,
        kernel_params: v1.kernel_params,
        label: v1.label,
        system: v1.system,
        specialisations,
        extensions,
        imgbuild,
        synthesized: false,
        nixos_version: None,
    })
}

/// A string setting of `org.imgbuild.v1` (`what` names it in errors): at most
/// [`MAX_SETTING`] bytes, no control character (line breaks, escapes, NUL).
fn setting_text(v: &Value, what: &str) -> std::result::Result<String, String> {
    match v {
        Value::String(s) if s.len() > MAX_SETTING => Err(format!(
            "\"{IMGBUILD_V1}\".{what} is longer than {MAX_SETTING} bytes"
        )),
        Value::String(s) if s.contains(char::is_control) => Err(format!(
            "\"{IMGBUILD_V1}\".{what} contains a control character"
        )),
        Value::String(s) => Ok(s.clone()),
        other => Err(format!(
            "\"{IMGBUILD_V1}\".{what} is {}, not a string",
            json_kind(other)
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `org.imgbuild.v1.bootloader`, every key optional, unknown keys ignored.
fn bootloader_settings(v: &Value) -> std::result::Result<BootloaderSettings, String> {
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
        Some(other) => {
            return Err(format!(
                "\"{IMGBUILD_V1}\".bootloader.type `{other}` is neither `systemd-boot` nor \
                 `extlinux`"
            ))
        }
    };
    let timeout = match map.get("timeout") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(t) if i32::try_from(t).is_ok() => Some(Some(t)),
            _ => {
                return Err(format!(
                    "\"{IMGBUILD_V1}\".bootloader.timeout {n} is not a whole number of seconds \
                     in range"
                ))
            }
        },
        Some(other) => {
            return Err(format!(
                "\"{IMGBUILD_V1}\".bootloader.timeout is {}, not a number or null",
                json_kind(other)
            ))
        }
    };
    let boot_counting = match key("bootCounting") {
        None => None,
        Some(Value::Object(bc)) => {
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
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(|| {
                        format!(
                            "\"{IMGBUILD_V1}\".bootloader.bootCounting.tries {n} is not a \
                             count from 0 to {}",
                            u32::MAX
                        )
                    })?,
                Some(other) => {
                    return Err(format!(
                        "\"{IMGBUILD_V1}\".bootloader.bootCounting.tries is {}, not a number",
                        json_kind(other)
                    ))
                }
            };
            Some(BootCounting { enable, tries })
        }
        Some(other) => {
            return Err(format!(
                "\"{IMGBUILD_V1}\".bootloader.bootCounting is {}, not an object",
                json_kind(other)
            ))
        }
    };
    Ok(BootloaderSettings {
        kind,
        timeout,
        editor: boolean("editor")?,
        console_mode: text("consoleMode")?,
        reboot_for_bitlocker: boolean("rebootForBitlocker")?,
        distro_name: text("distroName")?,
        install_device_tree: boolean("installDeviceTree")?,
        boot_counting,
        use_generation_device_tree: boolean("useGenerationDeviceTree")?,
        device_tree_name: text("deviceTreeName")?,
    })
}

/// A bootspec for a toplevel without boot.json, as systemd-boot-builder and the bootspec crate
/// do: kernel/initrd are the resolved targets of `<toplevel>/kernel` and `<toplevel>/initrd`,
/// init is `<toplevel>/init`, the label is `NixOS <nixos-version> (Linux <modules dir>)`.
fn synthesize(root: &StoreRoot, toplevel: &StorePath, depth: usize) -> Result<BootSpec> {
    let entry = |name: &str| toplevel.join(name);
    let optional = |name: &str| match root.canonicalize_logical(&entry(name)) {
        Ok(p) => Ok(Some(p)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    };
    let required = |name: &str| {
        optional(name)?.ok_or_else(|| Error::NotToplevel {
            path: toplevel.to_path_buf(),
            reason: format!("no boot.json and no {name}"),
        })
    };
    let read_file = |name: &str| -> Result<Option<String>> {
        let Some(p) = optional(name)? else {
            return Ok(None);
        };
        let bytes = read_limited(&root.host_subpath(&p), &entry(name))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::Bootspec {
                file: entry(name),
                reason: "not valid UTF-8".into(),
            })
    };
    let kernel = required("kernel")?;
    let initrd = optional("initrd")?;
    // init is passed as `<toplevel>/init`, not its target, like NixOS' own boot.json.
    required("init")?;
    let init = StoreSubpath::new(toplevel.clone(), "init")?;
    let kernel_params = read_file("kernel-params")?
        .ok_or_else(|| Error::NotToplevel {
            path: toplevel.to_path_buf(),
            reason: "no boot.json and no kernel-params".into(),
        })?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let system = read_file("system")?
        .ok_or_else(|| Error::NotToplevel {
            path: toplevel.to_path_buf(),
            reason: "no boot.json and no system".into(),
        })?
        .trim()
        .to_owned();
    let nixos_version = read_nixos_version(root, toplevel)?;
    let version = nixos_version.as_deref().unwrap_or("Unknown");
    let label = match kernel_version(root, toplevel)? {
        Some(kver) => format!("NixOS {version} (Linux {kver})"),
        None => format!("NixOS {version}"),
    };
    let mut specialisations = BTreeMap::new();
    if let Some(dir) = optional("specialisation")? {
        let host = root.host_subpath(&dir);
        if depth < MAX_DEPTH && host.is_dir() {
            let mut names = Vec::new();
            for e in std::fs::read_dir(&host).map_err(io_err("listing", &host))? {
                let e = e.map_err(io_err("listing", &host))?;
                names.push(e.file_name());
            }
            names.sort();
            for name in names {
                let child = root.canonicalize_logical(&dir.to_path_buf().join(&name))?;
                if !child.subpath().as_os_str().is_empty() {
                    return Err(Error::NotToplevel {
                        path: child.to_path_buf(),
                        reason: "a specialisation must be a store path".into(),
                    });
                }
                let spec = read_toplevel(root, child.store_path(), depth + 1)?;
                specialisations.insert(name.to_string_lossy().into_owned(), spec);
            }
        }
    }
    Ok(BootSpec {
        toplevel: toplevel.clone(),
        init,
        initrd,
        initrd_secrets: None,
        kernel,
        kernel_params,
        label,
        system,
        specialisations,
        extensions: BTreeMap::new(),
        imgbuild: None,
        synthesized: true,
        nixos_version,
    })
}

/// The single directory name under `<toplevel>/kernel-modules/lib/modules`, if there is one.
fn kernel_version(root: &StoreRoot, toplevel: &StorePath) -> Result<Option<String>> {
    let dir = match root.resolve_in_store(&toplevel.join("kernel-modules/lib/modules")) {
        Ok(d) => d,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
        names.push(e.map_err(io_err("listing", &dir))?.file_name());
    }
    Ok(match names.as_slice() {
        [one] => Some(one.to_string_lossy().into_owned()),
        _ => None,
    })
}

/// `host` (the store file behind `logical`), a regular file of at most [`MAX_BOOT_JSON`]
/// bytes, opened without blocking (`crate::input`).
fn read_limited(host: &Path, logical: &Path) -> Result<Vec<u8>> {
    let kind = imgbuild_blockio::InputKind {
        what: "boot file",
        max_bytes: MAX_BOOT_JSON,
    };
    crate::input::read(host, kind).map_err(|e| match e {
        Error::NotFound { .. } => Error::NotFound {
            path: logical.to_owned(),
        },
        e => e,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    const T: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    const K: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";
    const I: &str = "11111111111111111111111111111111";
    const C: &str = "22222222222222222222222222222222";

    fn doc(top: &str) -> String {
        let child = format!(
            r#"{{"org.nixos.bootspec.v1": {{"init": "/nix/store/{C}-alt/init",
            "kernel": "/nix/store/{K}-linux-6.1/bzImage", "kernelParams": [],
            "label": "alt", "system": "x86_64-linux", "toplevel": "/nix/store/{C}-alt"}},
            "org.nixos.specialisation.v1": {{}}}}"#
        );
        format!(
            r#"{{
  "org.nixos.bootspec.v1": {{
    "init": "/nix/store/{top}/init",
    "initrd": "/nix/store/{I}-initrd/initrd",
    "kernel": "/nix/store/{K}-linux-6.1/bzImage",
    "kernelParams": ["console=ttyS0", "quiet"],
    "label": "NixOS 24.05 (Linux 6.1)",
    "system": "x86_64-linux",
    "toplevel": "/nix/store/{top}"
  }},
  "org.nixos.specialisation.v1": {{ "alt": {child} }},
  "org.nixos.systemd-boot": {{ "sortKey": "nixos" }},
  "org.imgbuild.v1": {{ "firmware": "/nix/store/{K}-fw/share/boot", "x": 1 }}
}}"#
        )
    }

    #[test]
    fn parses_v1_with_specialisations_and_extensions() {
        let top = format!("{T}-nixos-system-x");
        let spec = BootSpec::parse(doc(&top).as_bytes(), Path::new("boot.json")).unwrap();
        assert_eq!(spec.toplevel.base_name(), top);
        assert_eq!(spec.kernel.store_path().name(), "linux-6.1");
        assert_eq!(spec.kernel.subpath(), Path::new("bzImage"));
        assert_eq!(spec.init.subpath(), Path::new("init"));
        assert_eq!(spec.initrd.as_ref().unwrap().store_path().hash_part(), I);
        assert_eq!(spec.initrd_secrets, None);
        assert_eq!(spec.kernel_params, ["console=ttyS0", "quiet"]);
        assert_eq!(spec.system, "x86_64-linux");
        assert!(!spec.synthesized);
        let alt = &spec.specialisations["alt"];
        assert_eq!(alt.toplevel.name(), "alt");
        assert_eq!(alt.initrd, None);
        assert_eq!(
            spec.extensions.keys().collect::<Vec<_>>(),
            ["org.imgbuild.v1", "org.nixos.systemd-boot"]
        );
        let ext = spec.imgbuild.unwrap();
        assert_eq!(ext.firmware.unwrap().subpath(), Path::new("share/boot"));
        assert_eq!(ext.other["x"], 1);
    }

    /// The boot loader settings of imgbuild's NixOS module (CONTRACT: every key optional,
    /// unknown keys kept, wrong types refused naming the file and the key).
    #[test]
    fn imgbuild_boot_loader_settings() {
        let top = format!("{T}-nixos-system-x");
        let with = |ext: &str| {
            let d = doc(&top).replace(
                r#""org.imgbuild.v1": { "firmware": "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-fw/share/boot", "x": 1 }"#,
                &format!(r#""org.imgbuild.v1": {ext}"#),
            );
            assert!(d.contains(ext), "replacement failed");
            BootSpec::parse(d.as_bytes(), Path::new("/s/boot.json"))
        };
        let full = r#"{ "release": "26.11", "future": [1],
            "bootloader": { "type": "systemd-boot", "timeout": 7, "editor": false,
              "consoleMode": "max", "rebootForBitlocker": true, "distroName": "MyOS",
              "installDeviceTree": true, "bootCounting": { "enable": true, "tries": 5 },
              "unknownLater": "x" } }"#;
        let ext = with(full).unwrap().imgbuild.unwrap();
        assert_eq!(ext.release.as_deref(), Some("26.11"));
        assert_eq!(ext.other.keys().collect::<Vec<_>>(), ["future"]);
        assert_eq!(
            ext.bootloader.unwrap(),
            BootloaderSettings {
                kind: Some(LoaderKind::SystemdBoot),
                timeout: Some(Some(7)),
                editor: Some(false),
                console_mode: Some("max".into()),
                reboot_for_bitlocker: Some(true),
                distro_name: Some("MyOS".into()),
                install_device_tree: Some(true),
                boot_counting: Some(BootCounting {
                    enable: true,
                    tries: 5
                }),
                use_generation_device_tree: None,
                device_tree_name: None,
            }
        );
        // extlinux's device tree settings; a null name is an absent one.
        let b = with(
            r#"{ "bootloader": { "type": "extlinux", "useGenerationDeviceTree": false, "deviceTreeName": "broadcom/bcm2711-rpi-4-b.dtb" } }"#,
        )
        .unwrap()
        .imgbuild
        .unwrap()
        .bootloader
        .unwrap();
        assert_eq!(b.use_generation_device_tree, Some(false));
        assert_eq!(
            b.device_tree_name.as_deref(),
            Some("broadcom/bcm2711-rpi-4-b.dtb")
        );
        let b = with(r#"{ "bootloader": { "deviceTreeName": null } }"#)
            .unwrap()
            .imgbuild
            .unwrap()
            .bootloader
            .unwrap();
        assert_eq!(b.device_tree_name, None);
        // null timeout is not an absent one; absent keys stay absent; tries defaults to 3.
        let b = with(r#"{ "bootloader": { "type": "extlinux", "timeout": null, "bootCounting": { "enable": false } } }"#)
            .unwrap()
            .imgbuild
            .unwrap()
            .bootloader
            .unwrap();
        assert_eq!(b.kind, Some(LoaderKind::Extlinux));
        assert_eq!(b.timeout, Some(None));
        assert_eq!(b.editor, None);
        assert_eq!(
            b.boot_counting,
            Some(BootCounting {
                enable: false,
                tries: DEFAULT_BOOT_COUNTING_TRIES
            })
        );
        let b = with(r#"{ "bootloader": {} }"#).unwrap().imgbuild.unwrap();
        assert_eq!(b.bootloader, Some(BootloaderSettings::default()));
        assert_eq!(with("{}").unwrap().imgbuild.unwrap().bootloader, None);

        for (ext, want) in [
            (
                r#"{ "release": 26.11 }"#,
                "\"org.imgbuild.v1\".release is a number, not a string",
            ),
            (
                r#"{ "bootloader": [] }"#,
                "bootloader is an array, not an object",
            ),
            (
                r#"{ "bootloader": { "type": "grub" } }"#,
                "`grub` is neither",
            ),
            (
                r#"{ "bootloader": { "timeout": "5" } }"#,
                "timeout is a string, not a number or null",
            ),
            (
                r#"{ "bootloader": { "timeout": 1.5 } }"#,
                "timeout 1.5 is not a whole number",
            ),
            (
                r#"{ "bootloader": { "timeout": 99999999999 } }"#,
                "not a whole number of seconds in range",
            ),
            (
                r#"{ "bootloader": { "editor": "no" } }"#,
                "editor is a string, not a boolean",
            ),
            (
                r#"{ "bootloader": { "consoleMode": "a\nb" } }"#,
                "consoleMode contains a control character",
            ),
            (
                r#"{ "bootloader": { "distroName": "a\u001b[2Jb" } }"#,
                "distroName contains a control character",
            ),
            (
                r#"{ "release": "26.11\u0000" }"#,
                "release contains a control character",
            ),
            (
                r#"{ "bootloader": { "useGenerationDeviceTree": 1 } }"#,
                "useGenerationDeviceTree is a number, not a boolean",
            ),
            (
                r#"{ "bootloader": { "deviceTreeName": 5 } }"#,
                "deviceTreeName is a number, not a string",
            ),
            (
                r#"{ "bootloader": { "bootCounting": true } }"#,
                "bootCounting is a boolean, not an object",
            ),
            (
                r#"{ "bootloader": { "bootCounting": { "enable": 1 } } }"#,
                "enable is a number, not a boolean",
            ),
            (
                r#"{ "bootloader": { "bootCounting": { "tries": -1 } } }"#,
                "tries -1 is not a count",
            ),
            (
                r#"{ "bootloader": { "bootCounting": { "tries": 4294967296 } } }"#,
                "tries 4294967296 is not a count",
            ),
        ] {
            let err = with(ext).unwrap_err().to_string();
            assert!(
                err.starts_with("/s/boot.json: ") && err.contains(want),
                "{ext}: {err}"
            );
        }
        let long = format!(
            r#"{{ "bootloader": {{ "distroName": "{}" }} }}"#,
            "x".repeat(257)
        );
        let err = with(&long).unwrap_err().to_string();
        assert!(err.contains("distroName is longer than 256 bytes"), "{err}");
    }

    #[test]
    fn errors_name_file_and_reason() {
        let f = Path::new("/s/boot.json");
        let err = BootSpec::parse(b"{\n  \"a\": [1,\n}", f).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/s/boot.json: invalid JSON") && msg.contains("line 3"),
            "{msg}"
        );
        let err = BootSpec::parse(br#"{"v1": {"init": "/x"}}"#, f).unwrap_err();
        assert!(err.to_string().contains("pre-23.05"), "{err}");
        let err = BootSpec::parse(br#"{"org.nixos.bootspec.v1": {"init": "/x"}}"#, f).unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
        let bad_kernel =
            doc(&format!("{T}-x")).replace(&format!("/nix/store/{K}-linux-6.1"), "/boot");
        let err = BootSpec::parse(bad_kernel.as_bytes(), f).unwrap_err();
        assert!(err.to_string().contains("kernel:"), "{err}");
        let err = BootSpec::parse(b"[]", f).unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
    }

    #[test]
    fn reads_and_synthesizes_from_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = root.join("nix/store");
        let top = store.join(format!("{T}-nixos-system-x"));
        let kernel = store.join(format!("{K}-linux-6.1"));
        let initrd = store.join(format!("{I}-initrd"));
        std::fs::create_dir_all(kernel.join("lib/modules/6.1.77")).unwrap();
        std::fs::write(kernel.join("bzImage"), b"k").unwrap();
        std::fs::create_dir_all(&initrd).unwrap();
        std::fs::write(initrd.join("initrd"), b"i").unwrap();
        std::fs::create_dir_all(&top).unwrap();
        symlink(
            format!("/nix/store/{K}-linux-6.1/bzImage"),
            top.join("kernel"),
        )
        .unwrap();
        symlink(
            format!("/nix/store/{K}-linux-6.1"),
            top.join("kernel-modules"),
        )
        .unwrap();
        symlink(format!("/nix/store/{I}-initrd/initrd"), top.join("initrd")).unwrap();
        std::fs::write(top.join("init"), b"#!/bin/sh").unwrap();
        std::fs::write(top.join("kernel-params"), b"console=ttyS0  quiet").unwrap();
        std::fs::write(top.join("system"), b"x86_64-linux").unwrap();
        std::fs::write(top.join("nixos-version"), b"24.05").unwrap();
        let tp = StorePath::parse(&format!("/nix/store/{T}-nixos-system-x")).unwrap();

        let spec = BootSpec::read(root, &tp).unwrap();
        assert!(spec.synthesized);
        assert_eq!(
            spec.kernel.to_string(),
            format!("/nix/store/{K}-linux-6.1/bzImage")
        );
        assert_eq!(
            spec.initrd.unwrap().to_string(),
            format!("/nix/store/{I}-initrd/initrd")
        );
        assert_eq!(spec.init.to_string(), format!("{tp}/init"));
        assert_eq!(spec.kernel_params, ["console=ttyS0", "quiet"]);
        assert_eq!(spec.label, "NixOS 24.05 (Linux 6.1.77)");
        assert_eq!(spec.nixos_version.as_deref(), Some("24.05"));
        assert_eq!(spec.system, "x86_64-linux");

        // A kernel link escaping the store is refused.
        std::fs::remove_file(top.join("kernel")).unwrap();
        symlink("/boot/vmlinuz", top.join("kernel")).unwrap();
        let err = BootSpec::read(root, &tp).unwrap_err();
        assert!(matches!(err, Error::EscapesStore { .. }), "{err}");

        // With boot.json present it wins; its toplevel must match.
        let json = doc(&format!("{T}-nixos-system-x"));
        std::fs::write(top.join("boot.json"), &json).unwrap();
        let spec = BootSpec::read(root, &tp).unwrap();
        assert!(!spec.synthesized);
        assert_eq!(
            spec.nixos_version.as_deref(),
            Some("24.05"),
            "read beside boot.json"
        );
        // nixos-version is a hint: too big, not UTF-8 or with a control character, it is none.
        for bad in [
            vec![b'2'; 4097],
            b"24.05\xff".to_vec(),
            b"24.05\x1b[2J".to_vec(),
        ] {
            std::fs::write(top.join("nixos-version"), &bad).unwrap();
            assert_eq!(BootSpec::read(root, &tp).unwrap().nixos_version, None);
        }
        std::fs::write(top.join("nixos-version"), vec![b'2'; 4096]).unwrap();
        assert_eq!(
            BootSpec::read(root, &tp)
                .unwrap()
                .nixos_version
                .map(|v| v.len()),
            Some(4096),
            "4 KiB is within the bound"
        );
        std::fs::write(top.join("nixos-version"), b"24.05").unwrap();
        let other = StorePath::parse(&format!("/nix/store/{C}-nixos-system-x")).unwrap();
        let odir = store.join(other.base_name());
        std::fs::create_dir_all(&odir).unwrap();
        std::fs::write(odir.join("boot.json"), &json).unwrap();
        let err = BootSpec::read(root, &other).unwrap_err();
        assert!(err.to_string().contains("describes toplevel"), "{err}");
        std::fs::write(top.join("boot.json"), b"{").unwrap();
        let err = BootSpec::read(root, &tp).unwrap_err();
        assert!(err.to_string().contains("boot.json: invalid JSON"), "{err}");
    }
}
