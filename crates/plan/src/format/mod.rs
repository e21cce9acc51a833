//! Format files: one declarative TOML file per image format (`formats/*.toml`).
//!
//! A format names the partition table, each partition (type, name, label, start, size,
//! filesystem, what goes in it, where the booted system mounts it), what the root filesystem
//! carries besides the store, and the bootloader. The built-in formats are compiled in; any
//! other file can be given by path.

use serde::Deserialize;
use std::path::Path;

mod source;
mod systems;
mod validate;
mod verity;
mod volume;

use source::{resolve, source};
pub use systems::Systems;
use volume::check_volume_keys;
pub use volume::{TarLayout, TarOptions, Volume};

/// The formats shipped with imgbuild, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("raw-efi", include_str!("../../../../formats/raw-efi.toml")),
    (
        "sd-aarch64",
        include_str!("../../../../formats/sd-aarch64.toml"),
    ),
    (
        "qemu-efi",
        include_str!("../../../../formats/qemu-efi.toml"),
    ),
    ("amazon", include_str!("../../../../formats/amazon.toml")),
    ("azure", include_str!("../../../../formats/azure.toml")),
    ("gce", include_str!("../../../../formats/gce.toml")),
    ("hyperv", include_str!("../../../../formats/hyperv.toml")),
    ("vmware", include_str!("../../../../formats/vmware.toml")),
    (
        "virtualbox",
        include_str!("../../../../formats/virtualbox.toml"),
    ),
    ("proxmox", include_str!("../../../../formats/proxmox.toml")),
    (
        "openstack",
        include_str!("../../../../formats/openstack.toml"),
    ),
    (
        "kubevirt",
        include_str!("../../../../formats/kubevirt.toml"),
    ),
    ("oci", include_str!("../../../../formats/oci.toml")),
    (
        "vagrant-virtualbox",
        include_str!("../../../../formats/vagrant-virtualbox.toml"),
    ),
    ("iso", include_str!("../../../../formats/iso.toml")),
    (
        "iso-installer",
        include_str!("../../../../formats/iso-installer.toml"),
    ),
    ("netboot", include_str!("../../../../formats/netboot.toml")),
    ("kexec", include_str!("../../../../formats/kexec.toml")),
    ("raw", include_str!("../../../../formats/raw.toml")),
    ("qemu", include_str!("../../../../formats/qemu.toml")),
    (
        "digitalocean",
        include_str!("../../../../formats/digitalocean.toml"),
    ),
    ("hetzner", include_str!("../../../../formats/hetzner.toml")),
    (
        "cloudstack",
        include_str!("../../../../formats/cloudstack.toml"),
    ),
    ("linode", include_str!("../../../../formats/linode.toml")),
    ("lxc", include_str!("../../../../formats/lxc.toml")),
    (
        "lxc-metadata",
        include_str!("../../../../formats/lxc-metadata.toml"),
    ),
    (
        "proxmox-lxc",
        include_str!("../../../../formats/proxmox-lxc.toml"),
    ),
    ("incus", include_str!("../../../../formats/incus.toml")),
    (
        "appliance",
        include_str!("../../../../formats/appliance.toml"),
    ),
];

/// How deep `base` chains may go (a cycle ends here with an error).
const MAX_BASE_DEPTH: usize = 8;

/// A format file: the built-in ones are 2 KiB; anything past 1 MiB is not a format file.
pub const FORMAT_FILE: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "format file",
    max_bytes: 1 << 20,
};

pub(crate) use crate::{quote, QUOTE_MAX};

/// The most characters of a TOML parser's message, which may itself quote a key or a value:
/// cut any shorter and "expected ..." is lost.
const MESSAGE_MAX: usize = 4 * QUOTE_MAX;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
/// Why a format could not be loaded: unknown, unreadable, not TOML, or inconsistent.
pub enum FormatError {
    #[error(
        "unknown format `{0}` (built in: {names}; or give a path to a .toml file)",
        names = builtin_names()
    )]
    /// Neither a built-in format name nor a file.
    Unknown(String),
    #[error(transparent)]
    /// The format file could not be read, or is not a regular file of at most 1 MiB.
    Read(#[from] imgbuild_blockio::InputError),
    #[error("format file `{path}` is not UTF-8 text (invalid byte at offset {offset})")]
    /// The format file holds bytes that are not UTF-8.
    NotText {
        /// The file.
        path: String,
        /// The first byte that is not UTF-8.
        offset: usize,
    },
    /// A TOML or schema error: its message and position, and an excerpt of the line only
    /// when the file is the one named on the command line (a `base` may name any file).
    #[error("format `{name}`: {message}")]
    Parse {
        /// The format, quoted.
        name: String,
        /// The parser's message and position.
        message: String,
    },
    #[error("format `{name}`: {reason}")]
    /// The format parsed, but its parts disagree (`reason` says how).
    Invalid {
        /// The format, quoted.
        name: String,
        /// What disagrees.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
/// The partition table type.
pub enum TableType {
    /// GUID partition table (protective MBR, backup table at the end).
    Gpt,
    /// MBR (DOS) table: at most 4 primary partitions.
    Mbr,
    /// No table: the disk is one file system from its first byte (make-disk-image's
    /// `partitionTableType = "none"`, Linode's disks), so exactly one partition, the ext4
    /// root, with no `type`.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
/// A partition's filesystem.
pub enum Filesystem {
    /// FAT32, refused when the partition is too small for it.
    Fat32,
    /// FAT16 or FAT32, as mkfs.fat would choose for the size.
    Fat,
    /// ext4 (the root filesystem).
    Ext4,
    /// No file system: raw sectors (a GPT BIOS boot partition, which holds GRUB's core.img;
    /// a dm-verity hash partition, which holds the hash area of its `verity-of` partition).
    None,
    /// squashfs: the closure's store image (a `store` partition), written by imgbuild's own
    /// squashfs writer (nixpkgs' `image.repart.verityStore` uses erofs by default).
    Squashfs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
/// What a partition holds.
pub enum Contents {
    /// The EFI system partition: systemd-boot, kernels, loader entries; or, for GRUB with
    /// `efi`, `/boot`: GRUB's directory and `EFI/BOOT/BOOTX64.EFI`.
    Esp,
    /// The Raspberry Pi firmware directory (plus config.txt when it has none).
    Firmware,
    /// The root filesystem: store, Nix database, profiles, /etc/NIXOS, extlinux, GRUB's
    /// `/boot/grub`.
    Root,
    /// A GPT BIOS boot partition (`filesystem = "none"`): GRUB's core.img, embedded as
    /// `grub-bios-setup` does.
    BiosBoot,
    /// The closure's store image (`filesystem = "squashfs"`, `size = "auto"`: exactly the
    /// image, rounded to the table's alignment): `nix/store/<path>` for every store path, as
    /// nixpkgs' `image.repart.verityStore` lays out its store partition; a DPS `usr`
    /// partition, protected by its `verity` partner. The root file system then has
    /// `[root] store = false`.
    Store,
    /// The dm-verity hash area of the partition named by `verity-of` (`filesystem = "none"`,
    /// `size = "auto"`: exactly the hash area), as `veritysetup format` writes it; its root
    /// hash goes on the kernel command line (`usrhash=`) and into the manifest.
    Verity,
    /// An empty B slot of the `store` or `verity` partition named by `slot-of`, for A/B
    /// updates by systemd-sysupdate (`filesystem = "none"`, `size = "auto"`: its A slot's
    /// size, the same type): zeros, GPT name `_empty`, which systemd-sysupdate fills with the
    /// next version's artifacts.
    Empty,
}

/// The file the disk is written as and its compression: registered output kinds (see
/// `kinds/kind.rs`).
pub use crate::kinds::{Compression, ContainerType};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
/// A format's `[container]` table: the file the disk is written as.
pub struct ContainerOptions {
    #[serde(rename = "type", default)]
    /// The output kind (`type`, default `raw`).
    pub kind: ContainerType,
    /// The disk size is rounded up to a multiple of this (GCE: 1 GiB; Azure: 1 MiB).
    #[serde(default)]
    pub size_multiple: Option<Bytes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
/// The boot loader the image is set up for.
pub enum Bootloader {
    /// systemd-boot on the EFI system partition (needs GPT).
    SystemdBoot,
    /// `/boot/extlinux/extlinux.conf` for U-Boot's distro boot.
    Extlinux,
    /// GRUB for PC BIOS (i386-pc): boot.img in sector 0, core.img after the MBR (an MBR
    /// disk) or in the BIOS boot partition (GPT), `/boot/grub` on the root file system; with
    /// `efi`, also for UEFI (x86_64-efi) and `/boot` on the ESP.
    Grub,
}

/// A size in a format file: bytes, or a number with a K/M/G/T\[i\]\[B\] suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

/// A number or a string in a format file.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    N(u64),
    S(String),
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::N(n) => Ok(Bytes(n)),
            NumOrText::S(s) => parse_size(&s).map(Bytes).map_err(serde::de::Error::custom),
        }
    }
}

pub use imgbuild_units::parse_size;

/// A partition's size: fixed, or `auto` (the filesystem's exact minimum plus `free`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSize {
    /// Exactly this many bytes.
    Fixed(u64),
    /// The filesystem's minimum plus `free` (or what `--size` leaves).
    Auto,
}

impl<'de> Deserialize<'de> for PartSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::S(s) if s == "auto" => Ok(PartSize::Auto),
            NumOrText::N(n) => Ok(PartSize::Fixed(n)),
            NumOrText::S(s) => parse_size(&s)
                .map(PartSize::Fixed)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A partition type: a GPT type GUID or an MBR type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartType {
    /// A GPT partition type GUID.
    Gpt(uuid::Uuid),
    /// An MBR partition type byte.
    Mbr(u8),
}

impl std::fmt::Display for PartType {
    /// `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`, `0x0b`: as format files and sfdisk write them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartType::Gpt(g) => write!(
                f,
                "{}",
                g.hyphenated()
                    .encode_upper(&mut uuid::Uuid::encode_buffer())
            ),
            PartType::Mbr(b) => write!(f, "{b:#04x}"),
        }
    }
}

impl<'de> Deserialize<'de> for PartType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(g) = parse_guid(&s) {
            return Ok(PartType::Gpt(uuid::Uuid::from_bytes(g)));
        }
        parse_mbr_type(&s).map(PartType::Mbr).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "type `{}` is neither a GPT type GUID (C12A7328-F81F-11D2-BA4B-00A0C93EC93B) \
                 nor an MBR type byte (0x83)",
                quote(&s)
            ))
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
/// A format's `[table]`.
pub struct Table {
    #[serde(rename = "type")]
    /// GPT, MBR or none.
    pub kind: TableType,
    /// Partition alignment, and the disk size's multiple.
    pub align: Bytes,
}

impl Default for Table {
    /// What an ISO 9660 format (which has no `[table]`) carries: never read.
    fn default() -> Self {
        Table {
            kind: TableType::Gpt,
            align: Bytes(1 << 20),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
/// One `[[partition]]` of a format, in table order.
pub struct Partition {
    /// GPT partition name; for MBR only a name for messages and the manifest.
    pub name: String,
    /// GPT type GUID (`C12A7328-...`) or MBR type byte (`0x0b`), parsed once; absent on a
    /// disk without a table (`[table] type = "none"`), required otherwise.
    #[serde(rename = "type", default)]
    pub type_id: Option<PartType>,
    #[serde(default)]
    /// A fixed start (aligned); else right after the previous partition.
    pub start: Option<Bytes>,
    /// Its size, fixed or `auto`.
    pub size: PartSize,
    /// With `size = "auto"`: free space left in the filesystem.
    #[serde(default)]
    pub free: Option<Bytes>,
    /// The command-line flag that overrides `size` (e.g. `esp-size`).
    #[serde(default)]
    pub size_flag: Option<String>,
    /// The filesystem made in it.
    pub filesystem: Filesystem,
    /// The filesystem label (FAT 11 bytes, ext4 16); none for a `store` or `verity`
    /// partition, whose contents have no label.
    #[serde(default)]
    pub label: String,
    /// What goes in it.
    pub contents: Contents,
    /// Where the booted system mounts it; the root filesystem gets that directory. Empty
    /// (absent) for a BIOS boot partition, which is not mounted.
    #[serde(default)]
    pub mount_point: String,
    /// MBR bootable (active) flag.
    #[serde(default)]
    pub bootable: bool,
    /// For a `verity` partition: the name of the partition whose hash area it holds.
    #[serde(default)]
    pub verity_of: Option<String>,
    /// For an `empty` partition: the name of the `store` or `verity` partition (its A slot)
    /// whose B slot it is.
    #[serde(default)]
    pub slot_of: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
/// A format's `[root]`: what the root filesystem carries besides the store. An ISO 9660
/// format has none (its store image always carries `nix-path-registration`).
pub struct RootOptions {
    #[serde(default = "yes")]
    /// Write the Nix database, so the system is valid from the first boot.
    pub database: bool,
    #[serde(default)]
    /// Ship `/nix-path-registration` for registration at first boot.
    pub nix_path_registration: bool,
    #[serde(default = "yes")]
    /// The store paths' contents under `/nix/store`; `false` when a `store` partition holds
    /// them (`/nix/store` is then an empty mount point, the database and profile as always).
    pub store: bool,
}

impl Default for RootOptions {
    /// What an ISO 9660 format (which has no `[root]`) carries: never read.
    fn default() -> Self {
        RootOptions {
            database: true,
            nix_path_registration: false,
            store: true,
        }
    }
}

fn yes() -> bool {
    true
}

fn no_compression() -> Compression {
    Compression::None
}

/// `raw-efi, sd-aarch64, ...`: the built-in format names.
pub fn builtin_names() -> String {
    BUILTIN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
/// A format's `[bootloader]` (netboot, kexec and tar formats have none: the default).
pub struct BootloaderOptions {
    #[serde(rename = "type")]
    /// Which boot loader.
    pub kind: Bootloader,
    #[serde(default)]
    /// The menu timeout in seconds (default: the system's).
    pub timeout: Option<u32>,
    #[serde(default)]
    /// GRUB only: a hybrid BIOS + UEFI disk. GRUB is also installed for x86_64-efi
    /// (`EFI/BOOT/BOOTX64.EFI`, as `grub-install --removable`), the `esp` partition is
    /// `/boot` and holds GRUB's directory for both.
    pub efi: bool,
    #[serde(default)]
    /// systemd-boot only: boot a Unified Kernel Image in the ESP's `EFI/Linux/` (assembled
    /// from the closure's systemd stub, kernel, initrd, command line and os-release) instead
    /// of a type #1 entry with the kernel and initrd beside it.
    pub uki: bool,
}

impl Default for BootloaderOptions {
    /// What a netboot, kexec or tar format (which has no `[bootloader]`) carries: never read.
    fn default() -> Self {
        BootloaderOptions {
            kind: Bootloader::SystemdBoot,
            timeout: None,
            efi: false,
            uki: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
/// A parsed and validated format file.
pub struct Format {
    /// Its name (manifest, default `--seed`).
    pub name: String,
    #[serde(default)]
    /// One line, for `imgbuild formats`.
    pub description: String,
    /// The Nix systems the toplevel may be built for (`x86_64-linux`, or a list).
    pub system: Systems,
    /// A partitioned disk (the default), an ISO 9660 volume, netboot files, a kexec tarball
    /// or a tar archive.
    #[serde(default)]
    pub volume: Volume,
    /// The image's extension (default: the container's, `img` for a raw disk).
    pub extension: String,
    /// Compression of a raw image.
    #[serde(default = "no_compression")]
    pub compress: Compression,
    /// The file the disk is written as (default: raw).
    #[serde(default)]
    pub container: ContainerOptions,
    /// The partition table (a disk's; an ISO 9660 format has none: the default, never read).
    #[serde(default)]
    pub table: Table,
    #[serde(rename = "partition", default)]
    /// The partitions, in table order (none for an ISO 9660 format).
    pub partitions: Vec<Partition>,
    /// What the root filesystem carries (a disk's; an ISO 9660 format has none).
    #[serde(default)]
    pub root: RootOptions,
    /// The boot loader (netboot, kexec and tar formats have none: the default, never read).
    #[serde(default)]
    pub bootloader: BootloaderOptions,
    /// What a tar volume holds (only a tar format has one).
    #[serde(default)]
    pub tar: Option<TarOptions>,
}

impl Format {
    /// A built-in format by name, or a format file by path.
    pub fn load(name_or_path: &str) -> Result<Format, FormatError> {
        let (text, dir) = source(name_or_path, None)?;
        Format::parse_in(name_or_path, &text, dir.as_deref())
    }

    /// A format from its text; a `base` it names is a built-in format or a path relative to
    /// the working directory.
    pub fn parse(name: &str, text: &str) -> Result<Format, FormatError> {
        Format::parse_in(name, text, None)
    }

    fn parse_in(name: &str, text: &str, dir: Option<&Path>) -> Result<Format, FormatError> {
        let mut table = resolve(name, text, dir, 0)?;
        if !table.contains_key("extension") {
            // The container's own extension (an unknown type is refused just below).
            let kind = table
                .get("container")
                .and_then(|c| c.get("type"))
                .and_then(|t| t.as_str())
                .and_then(ContainerType::find)
                .unwrap_or_default();
            table.insert("extension".into(), kind.extension().into());
        }
        check_volume_keys(name, &table)?;
        let f = Format::deserialize(table).map_err(|e| FormatError::Parse {
            name: quote(name),
            message: quote_long(e.message(), MESSAGE_MAX),
        })?;
        f.validate()?;
        Ok(f)
    }

    /// The partition holding the root filesystem (validation made sure there is one).
    pub fn root_partition(&self) -> &Partition {
        self.partitions
            .iter()
            .find(|p| p.contents == Contents::Root)
            .expect("validate() checked there is exactly one root partition")
    }
}

fn quote_long(s: &str, max: usize) -> String {
    imgbuild_blockio::excerpt(s, max)
}

/// Parse a GUID written `C12A7328-F81F-11D2-BA4B-00A0C93EC93B` into its 16 bytes in the
/// textual (big-endian) order.
pub fn parse_guid(s: &str) -> Option<[u8; 16]> {
    // Only the hyphenated form, 36 characters (not braced, URN or bare hex).
    if s.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(s).ok().map(uuid::Uuid::into_bytes)
}

/// Parse an MBR partition type written `0x83` or `83` (hex).
pub fn parse_mbr_type(s: &str) -> Option<u8> {
    let t = s.trim_start_matches("0x").trim_start_matches("0X");
    if t.is_empty() || t.len() > 2 {
        return None;
    }
    u8::from_str_radix(t, 16).ok()
}

#[cfg(test)]
mod tests;
