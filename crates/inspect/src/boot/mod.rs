//! The boot setup found on an image: systemd-boot (loader.conf + type 1 entries), extlinux,
//! GRUB (its configs, and for BIOS `boot.img` and the core image), Raspberry Pi firmware. Every file is read with a size cap; absent parts are absent.

mod bios;
mod extlinux;
mod grub;
mod pi;
mod signature;
mod systemd;

use serde::Serialize;

use crate::fs::Filesystem;

pub(crate) use bios::grub_bios;
pub use bios::GrubBios;
pub(crate) use extlinux::extlinux;
pub(crate) use grub::grub;
pub(crate) use pi::raspberry_pi;
pub use signature::Signature;
pub use systemd::boot_counters;
pub(crate) use systemd::{systemd_boot, version_cmp};

/// Config files bigger than this are not parsed.
pub const MAX_CONFIG: u64 = 1 << 20;
/// At most this many systemd-boot entry files are read.
pub const MAX_ENTRIES: usize = 256;
/// EFI binaries are searched for a version string up to this size.
pub const MAX_EFI: u64 = 16 << 20;
/// Of a unified kernel image, only its first bytes are read (headers and the small text
/// sections ukify puts before the initrd and kernel).
pub const MAX_UKI_PREFIX: u64 = 1 << 20;

/// Everything boot-related found on the image's filesystems.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Boot {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    /// systemd-boot setups, one per ESP or XBOOTLDR partition that has one.
    pub systemd_boot: Vec<SystemdBoot>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    /// extlinux.conf files (U-Boot distro boot).
    pub extlinux: Vec<Extlinux>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    /// GRUB configurations.
    pub grub: Vec<Grub>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    /// Raspberry Pi firmware partitions.
    pub raspberry_pi: Vec<RaspberryPi>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// GRUB for BIOS: `boot.img` in sector 0 and the core image it loads.
    pub grub_bios: Option<GrubBios>,
}

impl Boot {
    /// True when no boot setup was found.
    pub fn is_empty(&self) -> bool {
        self.systemd_boot.is_empty()
            && self.extlinux.is_empty()
            && self.grub.is_empty()
            && self.raspberry_pi.is_empty()
            && self.grub_bios.is_none()
    }
}

/// systemd-boot on an ESP (or XBOOTLDR) partition.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SystemdBoot {
    /// The partition number it is on.
    pub partition: u32,
    /// `loader/loader.conf` settings, in file order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loader_conf: Vec<(String, String)>,
    /// The `default` setting (an entry id or glob, e.g. `nixos-*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The `preferred` setting (systemd-boot 260+: tried first unless its tries ran out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred: Option<String>,
    /// Boot Loader Specification entries (`loader/entries/*.conf`), in menu order.
    pub entries: Vec<BootEntry>,
    /// EFI binaries: `EFI/BOOT/BOOT*.EFI`, `EFI/systemd/*.efi`, with the version found in them.
    pub binaries: Vec<EfiBinary>,
    /// Unified kernel images in `EFI/Linux/` (Boot Loader Specification type #2 entries).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ukis: Vec<Uki>,
}

/// A unified kernel image (`EFI/Linux/*.efi`), read from its first MiB.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Uki {
    /// Its path on the partition.
    pub path: String,
    /// Its entry id: the file name without boot counters.
    pub id: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether loader.conf's `default` names it (and no type #1 entry is booted instead).
    pub default: bool,
    /// Its PE sections, in table order.
    pub sections: Vec<UkiSection>,
    /// `.cmdline`: the kernel command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// `.uname`: the kernel version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uname: Option<String>,
    /// `PRETTY_NAME` of `.osrel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
    /// Its Secure Boot signature (none: unsigned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// A section of a [`Uki`], as `objdump -h` lists it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UkiSection {
    /// `.linux`, `.initrd`, ...
    pub name: String,
    /// Its file offset.
    pub offset: u64,
    /// Its data's length.
    pub size: u64,
    /// Its address once loaded (relative to the image base).
    pub virtual_address: u32,
}

/// One `loader/entries/*.conf` file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BootEntry {
    /// File name in `loader/entries`.
    pub file: String,
    /// The entry's id: the file name without boot counters (`nixos-<hash>.conf` for
    /// `nixos-<hash>+2-1.conf`), what `default` and `preferred` name.
    pub id: String,
    /// Boot counting (automatic boot assessment): tries left, from a `+LEFT` or
    /// `+LEFT-DONE` before `.conf`; absent when the entry is not counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tries_left: Option<u32>,
    /// Tries done (`-DONE`, 0 when only `+LEFT` is there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tries_done: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `title` key.
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `version` key.
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `sort-key` key.
    pub sort_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `linux` key: the kernel, a path on the partition.
    pub linux: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    /// The `initrd` keys, in order.
    pub initrd: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `options` key: the kernel command line.
    pub options: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `devicetree` key.
    pub devicetree: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `machine-id` key.
    pub machine_id: Option<String>,
    /// Whether systemd-boot would boot this entry: loader.conf's `preferred` if it names an
    /// entry with tries left, else the first entry `default` matches in menu order.
    pub default: bool,
    /// Files the entry names that are not on the partition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// An EFI binary and the version string found in it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EfiBinary {
    /// Its path on the partition.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// e.g. `systemd-boot 252.39-1~deb12u1` (from its `LoaderInfo` marker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its Secure Boot signature (none: unsigned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// An extlinux.conf (U-Boot distro boot, NixOS generic-extlinux-compatible).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Extlinux {
    /// The partition number it is on.
    pub partition: u32,
    /// The path of the configuration file on the partition.
    pub config: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `DEFAULT` label.
    pub default: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `TIMEOUT` setting (tenths of a second).
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `MENU TITLE` setting.
    pub menu_title: Option<String>,
    /// The `LABEL`s, in file order.
    pub entries: Vec<ExtlinuxEntry>,
}

/// One `LABEL` of an extlinux.conf.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExtlinuxEntry {
    /// The `LABEL` name.
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `MENU LABEL` text.
    pub menu_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `LINUX` (or `KERNEL`) path.
    pub linux: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `INITRD` path.
    pub initrd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `APPEND` line: the kernel command line.
    pub append: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `FDTDIR` directory of device trees.
    pub fdtdir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `FDT` device tree file.
    pub fdt: Option<String>,
    /// Whether this is the `DEFAULT` label.
    pub default: bool,
    /// Files (kernel, initrd, fdt, fdtdir) named but not found, relative to the config.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// A GRUB configuration.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Grub {
    /// The partition number it is on.
    pub partition: u32,
    /// The path of the configuration file on the partition.
    pub config: String,
    /// `menuentry` titles.
    pub entries: Vec<String>,
}

/// Raspberry Pi firmware partition.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RaspberryPi {
    /// The partition number it is on.
    pub partition: u32,
    /// `kernel=` settings of config.txt, with their `[section]`.
    pub kernels: Vec<PiKernel>,
    /// `armstub=` setting, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub armstub: Option<String>,
    /// Firmware files present (bootcode.bin, start*.elf, fixup*.dat).
    pub firmware: Vec<String>,
    /// Number of `*.dtb` files at the top level.
    pub dtbs: usize,
}

/// A `kernel=` line of config.txt.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PiKernel {
    /// The config.txt `[section]` (filter) the line is in; `all` before any.
    pub section: String,
    /// The kernel file named.
    pub file: String,
    /// Whether that file is on the partition.
    pub present: bool,
}

fn read_text(fs: &Filesystem, path: &[u8], warnings: &mut Vec<String>) -> Option<String> {
    match fs.read_to_vec(path, MAX_CONFIG) {
        Ok(v) => Some(String::from_utf8_lossy(&v).into_owned()),
        Err(e) => {
            if !e.is_not_found() {
                warnings.push(crate::error::chain(&e));
            }
            None
        }
    }
}

fn is_file(fs: &Filesystem, path: &[u8]) -> bool {
    fs.open(path).is_ok()
}

/// `key value` (the first run of whitespace separates them).
fn key_value(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    match line.split_once(char::is_whitespace) {
        Some((k, v)) => Some((k, v.trim())),
        None => Some((line, "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(key_value("  title   NixOS  "), Some(("title", "NixOS")));
        assert_eq!(key_value("# comment"), None);
        assert_eq!(key_value("editor"), Some(("editor", "")));
    }
}
