//! Bootspec v1 (`<toplevel>/boot.json`, RFC 0125), with a fallback for toplevels without it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::{io_err, Error, Result, StorePath, StoreRoot, StoreSubpath};

mod container;
mod grub_settings;
mod settings;
mod text;
pub use container::IMGBUILD_JSON;
pub use grub_settings::{FsIdentifier, GrubSettings};
use settings::bootloader_settings;
pub use settings::{BootCounting, BootloaderSettings, LoaderKind, DEFAULT_BOOT_COUNTING_TRIES};
use text::setting_text;

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
    /// The initrd, if the system has one.
    pub initrd: Option<StoreSubpath>,
    /// Script appending secrets to the initrd at install time.
    pub initrd_secrets: Option<StoreSubpath>,
    /// The kernel image (`bzImage`, `Image`); `None` for a container system
    /// (`boot.isContainer`), whose toplevel has no kernel and no boot.json: then
    /// [`BootSpec::container`] holds the record imgbuild's module wrote instead.
    pub kernel: Option<StoreSubpath>,
    /// The kernel command line besides `init=`, in order.
    pub kernel_params: Vec<String>,
    /// What a boot menu shows, e.g. `NixOS 24.05 (Linux 6.6.32)`.
    pub label: String,
    /// e.g. `x86_64-linux`.
    pub system: String,
    /// `org.nixos.specialisation.v1`, by name.
    pub specialisations: BTreeMap<String, BootSpec>,
    /// Every other top-level key (`org.nixos.systemd-boot`, `org.imgbuild.v1`, ...), verbatim.
    pub extensions: BTreeMap<String, Value>,
    /// `org.imgbuild.v1`, parsed.
    pub imgbuild: Option<ImgbuildExt>,
    /// `"org.imgbuild.v1".container` of `<toplevel>/imgbuild.json` ([`IMGBUILD_JSON`]),
    /// verbatim: the record imgbuild's NixOS module writes for a container system (NixOS
    /// writes no boot.json for one). `None` when the toplevel has no imgbuild.json.
    pub container: Option<serde_json::Map<String, Value>>,
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

    /// Parses an `imgbuild.json` document ([`IMGBUILD_JSON`]): its
    /// `"org.imgbuild.v1".container` record, as [`BootSpec::container`] holds it. `file`
    /// names it in errors.
    pub fn parse_container(json: &[u8], file: &Path) -> Result<serde_json::Map<String, Value>> {
        container::parse(json, file)
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
    spec.container = container::read(root, toplevel)?;
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
        kernel: Some(path("kernel", &v1.kernel)?),
        kernel_params: v1.kernel_params,
        label: v1.label,
        system: v1.system,
        specialisations,
        extensions,
        imgbuild,
        container: None,
        synthesized: false,
        nixos_version: None,
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
    // A container system (boot.isContainer) has no kernel, initrd or kernel-params, and
    // imgbuild.json in their place; any other toplevel needs its kernel.
    let container = container::read(root, toplevel)?;
    let kernel = match (optional("kernel")?, &container) {
        (Some(k), _) => Some(k),
        (None, Some(_)) => None,
        (None, None) => {
            return Err(Error::NotToplevel {
                path: toplevel.to_path_buf(),
                reason: format!("no boot.json, no kernel and no {IMGBUILD_JSON}"),
            })
        }
    };
    let initrd = optional("initrd")?;
    // init is passed as `<toplevel>/init`, not its target, like NixOS' own boot.json.
    required("init")?;
    let init = StoreSubpath::new(toplevel.clone(), "init")?;
    let kernel_params = match (read_file("kernel-params")?, &kernel) {
        (Some(text), _) => text.split_whitespace().map(str::to_owned).collect(),
        (None, None) => Vec::new(),
        (None, Some(_)) => {
            return Err(Error::NotToplevel {
                path: toplevel.to_path_buf(),
                reason: "no boot.json and no kernel-params".into(),
            })
        }
    };
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
    let specialisations = match optional("specialisation")? {
        Some(dir) => synthesized_specialisations(root, &dir, depth)?,
        None => BTreeMap::new(),
    };
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
        container,
        synthesized: true,
        nixos_version,
    })
}

/// The toplevels under `<toplevel>/specialisation` (`dir`), by name, each read as a toplevel.
fn synthesized_specialisations(
    root: &StoreRoot,
    dir: &StoreSubpath,
    depth: usize,
) -> Result<BTreeMap<String, BootSpec>> {
    let mut specialisations = BTreeMap::new();
    let host = root.host_subpath(dir);
    if depth >= MAX_DEPTH || !host.is_dir() {
        return Ok(specialisations);
    }
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
    Ok(specialisations)
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
mod tests;
