//! Format files: one declarative TOML file per image format (`formats/*.toml`).
//!
//! A format names the partition table, each partition (type, name, label, start, size,
//! filesystem, what goes in it, where the booted system mounts it), what the root filesystem
//! carries besides the store, and the bootloader. The built-in formats are compiled in; any
//! other file can be given by path.

use serde::Deserialize;
use std::path::Path;

/// The formats shipped with imgbuild, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("raw-efi", include_str!("../../../formats/raw-efi.toml")),
    (
        "sd-aarch64",
        include_str!("../../../formats/sd-aarch64.toml"),
    ),
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error(
        "unknown format `{0}` (built in: raw-efi, sd-aarch64; or give a path to a .toml file)"
    )]
    Unknown(String),
    #[error("reading format file `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("format `{name}`: {source}")]
    Parse {
        name: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("format `{name}`: {reason}")]
    Invalid { name: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableType {
    Gpt,
    Mbr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filesystem {
    /// FAT32, refused when the partition is too small for it.
    Fat32,
    /// FAT16 or FAT32, as mkfs.fat would choose for the size.
    Fat,
    Ext4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contents {
    /// The EFI system partition: systemd-boot, kernels, loader entries.
    Esp,
    /// The Raspberry Pi firmware directory (plus config.txt when it has none).
    Firmware,
    /// The root filesystem: store, Nix database, profiles, /etc/NIXOS, extlinux.
    Root,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    SystemdBoot,
    Extlinux,
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
    Fixed(u64),
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
    Gpt(uuid::Uuid),
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
                "type `{s}` is neither a GPT type GUID (C12A7328-F81F-11D2-BA4B-00A0C93EC93B) \
                 nor an MBR type byte (0x83)"
            ))
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Table {
    #[serde(rename = "type")]
    pub kind: TableType,
    pub align: Bytes,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Partition {
    /// GPT partition name; for MBR only a name for messages and the manifest.
    pub name: String,
    /// GPT type GUID (`C12A7328-...`) or MBR type byte (`0x0b`), parsed once.
    #[serde(rename = "type")]
    pub type_id: PartType,
    #[serde(default)]
    pub start: Option<Bytes>,
    pub size: PartSize,
    /// With `size = "auto"`: free space left in the filesystem.
    #[serde(default)]
    pub free: Option<Bytes>,
    /// The command-line flag that overrides `size` (e.g. `esp-size`).
    #[serde(default)]
    pub size_flag: Option<String>,
    pub filesystem: Filesystem,
    pub label: String,
    pub contents: Contents,
    /// Where the booted system mounts it; the root filesystem gets that directory.
    pub mount_point: String,
    /// MBR bootable (active) flag.
    #[serde(default)]
    pub bootable: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RootOptions {
    #[serde(default = "yes")]
    pub database: bool,
    #[serde(default)]
    pub nix_path_registration: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BootloaderOptions {
    #[serde(rename = "type")]
    pub kind: Bootloader,
    #[serde(default)]
    pub timeout: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Format {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The Nix system the toplevel must be built for (`x86_64-linux`).
    pub system: String,
    pub extension: String,
    pub compress: Compression,
    pub table: Table,
    #[serde(rename = "partition")]
    pub partitions: Vec<Partition>,
    pub root: RootOptions,
    pub bootloader: BootloaderOptions,
}

impl Format {
    /// A built-in format by name, or a format file by path.
    pub fn load(name_or_path: &str) -> Result<Format, FormatError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Format::parse(name_or_path, text);
        }
        let p = Path::new(name_or_path);
        if p.extension().is_some_and(|e| e == "toml") || p.exists() {
            let text = std::fs::read_to_string(p).map_err(|source| FormatError::Read {
                path: name_or_path.to_string(),
                source,
            })?;
            return Format::parse(name_or_path, &text);
        }
        Err(FormatError::Unknown(name_or_path.to_string()))
    }

    pub fn parse(name: &str, text: &str) -> Result<Format, FormatError> {
        let f: Format = toml::from_str(text).map_err(|source| FormatError::Parse {
            name: name.to_string(),
            source,
        })?;
        f.validate()?;
        Ok(f)
    }

    fn validate(&self) -> Result<(), FormatError> {
        let bad = |reason: String| {
            Err(FormatError::Invalid {
                name: self.name.clone(),
                reason,
            })
        };
        if self.partitions.is_empty() {
            return bad("no partitions".into());
        }
        if self.table.align.0 == 0 || !self.table.align.0.is_multiple_of(512) {
            return bad(format!(
                "align {} is not a multiple of 512",
                self.table.align.0
            ));
        }
        let roots = self
            .partitions
            .iter()
            .filter(|p| p.contents == Contents::Root)
            .count();
        if roots != 1 {
            return bad(format!("needs exactly one root partition, has {roots}"));
        }
        for (i, p) in self.partitions.iter().enumerate() {
            match self.table.kind {
                TableType::Gpt => {
                    if !matches!(p.type_id, PartType::Gpt(_)) {
                        return bad(format!(
                            "partition `{}`: type `{}` is not a GUID",
                            p.name, p.type_id
                        ));
                    }
                    if p.bootable {
                        return bad(format!("partition `{}`: `bootable` is an MBR flag", p.name));
                    }
                    if p.name.encode_utf16().count() > 36 {
                        return bad(format!(
                            "partition `{}`: GPT names hold 36 characters",
                            p.name
                        ));
                    }
                }
                TableType::Mbr => {
                    if !matches!(p.type_id, PartType::Mbr(_)) {
                        return bad(format!(
                            "partition `{}`: type `{}` is not an MBR type byte like 0x83",
                            p.name, p.type_id
                        ));
                    }
                    if i >= 4 {
                        return bad("MBR tables hold 4 primary partitions".into());
                    }
                }
            }
            if p.size == PartSize::Auto && i + 1 != self.partitions.len() {
                return bad(format!(
                    "partition `{}`: only the last partition can be sized `auto`",
                    p.name
                ));
            }
            if p.size == PartSize::Auto && p.filesystem != Filesystem::Ext4 {
                return bad(format!(
                    "partition `{}`: `auto` size needs an ext4 filesystem",
                    p.name
                ));
            }
            if (p.contents == Contents::Root) != (p.filesystem == Filesystem::Ext4) {
                return bad(format!(
                    "partition `{}`: the root partition, and only it, is ext4",
                    p.name
                ));
            }
            if !p.mount_point.starts_with('/') {
                return bad(format!(
                    "partition `{}`: mount-point must be absolute",
                    p.name
                ));
            }
            let label_max = if p.filesystem == Filesystem::Ext4 {
                16
            } else {
                11
            };
            if p.label.len() > label_max {
                return bad(format!(
                    "partition `{}`: label `{}` is longer than {label_max} bytes",
                    p.name, p.label
                ));
            }
        }
        match (self.bootloader.kind, self.table.kind) {
            (Bootloader::SystemdBoot, TableType::Gpt) => {
                if !self.partitions.iter().any(|p| p.contents == Contents::Esp) {
                    return bad("systemd-boot needs an `esp` partition".into());
                }
            }
            (Bootloader::SystemdBoot, TableType::Mbr) => {
                return bad("systemd-boot needs a GPT table".into());
            }
            (Bootloader::Extlinux, _) => {}
        }
        Ok(())
    }

    pub fn root_partition(&self) -> &Partition {
        self.partitions
            .iter()
            .find(|p| p.contents == Contents::Root)
            .expect("validate() checked there is exactly one root partition")
    }
}

/// Parse a GUID written `C12A7328-F81F-11D2-BA4B-00A0C93EC93B` into its 16 bytes in the
/// textual (big-endian) order.
pub fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    let groups: Vec<usize> = s.split('-').map(str::len).collect();
    if hex.len() != 32 || groups != [8, 4, 4, 4, 12] {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
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
mod tests {
    use super::*;

    #[test]
    fn builtin_formats_parse() {
        for (name, _) in BUILTIN {
            let f = Format::load(name).unwrap();
            assert_eq!(&f.name, name);
        }
        let raw = Format::load("raw-efi").unwrap();
        assert_eq!(raw.table.kind, TableType::Gpt);
        assert_eq!(raw.partitions[0].start, Some(Bytes(8 << 20)));
        assert_eq!(raw.partitions[0].size, PartSize::Fixed(512 << 20));
        assert_eq!(raw.root_partition().label, "nixos");
        let sd = Format::load("sd-aarch64").unwrap();
        assert_eq!(sd.compress, Compression::Zstd);
        assert!(sd.root_partition().bootable);
        assert_eq!(sd.partitions[0].type_id, PartType::Mbr(0x0b));
        assert_eq!(sd.partitions[0].type_id.to_string(), "0x0b");
        assert_eq!(
            raw.partitions[0].type_id.to_string(),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
    }

    #[test]
    fn invalid_formats_are_refused_with_reasons() {
        let raw = BUILTIN[0].1;
        let e = Format::parse(
            "x",
            &raw.replace("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "nope"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("type `nope` is neither a GPT type GUID"),
            "{e}"
        );
        // An MBR byte on a GPT table.
        let e = Format::parse(
            "x",
            &raw.replace("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "0x0b"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not a GUID"), "{e}");
        let e = Format::parse(
            "x",
            &raw.replace("label = \"nixos\"", "label = \"a-very-long-label-indeed\""),
        )
        .unwrap_err();
        assert!(e.to_string().contains("longer than 16"), "{e}");
        let e = Format::parse("x", &raw.replace("[root]", "[root]\nbogus = 1")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn guids() {
        let g = parse_guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(g[0], 0xC1);
        assert_eq!(g[15], 0x3B);
        assert!(parse_guid("97FD5997-D90B-4AA3-8D16-C1723AEA73C").is_none());
    }
}
