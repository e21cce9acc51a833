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
    ("qemu-efi", include_str!("../../../formats/qemu-efi.toml")),
    ("amazon", include_str!("../../../formats/amazon.toml")),
    ("azure", include_str!("../../../formats/azure.toml")),
    ("gce", include_str!("../../../formats/gce.toml")),
    ("hyperv", include_str!("../../../formats/hyperv.toml")),
    ("vmware", include_str!("../../../formats/vmware.toml")),
    (
        "virtualbox",
        include_str!("../../../formats/virtualbox.toml"),
    ),
];

/// How deep `base` chains may go (a cycle ends here with an error).
const MAX_BASE_DEPTH: usize = 8;

/// A format file: the built-in ones are 2 KiB; anything past 1 MiB is not a format file.
pub const FORMAT_FILE: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "format file",
    max_bytes: 1 << 20,
};

/// The most characters of a value or a line an error message quotes.
const QUOTE_MAX: usize = 48;

/// The most characters of a TOML parser's message, which may itself quote a key or a value:
/// cut any shorter and "expected ..." is lost.
const MESSAGE_MAX: usize = 4 * QUOTE_MAX;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error(
        "unknown format `{0}` (built in: {names}; or give a path to a .toml file)",
        names = builtin_names()
    )]
    Unknown(String),
    #[error(transparent)]
    Read(#[from] imgbuild_blockio::InputError),
    #[error("format file `{path}` is not UTF-8 text (invalid byte at offset {offset})")]
    NotText { path: String, offset: usize },
    /// A TOML or schema error: its message and position, and an excerpt of the line only
    /// when the file is the one named on the command line (a `base` may name any file).
    #[error("format `{name}`: {message}")]
    Parse { name: String, message: String },
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

/// The file the disk is written as: a registered output kind (see `output/kind.rs`).
pub use crate::output::ContainerType;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ContainerOptions {
    #[serde(rename = "type", default)]
    pub kind: ContainerType,
    /// The disk size is rounded up to a multiple of this (GCE: 1 GiB; Azure: 1 MiB).
    #[serde(default)]
    pub size_multiple: Option<Bytes>,
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
                "type `{}` is neither a GPT type GUID (C12A7328-F81F-11D2-BA4B-00A0C93EC93B) \
                 nor an MBR type byte (0x83)",
                quote(&s)
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
    /// The image's extension (default: the container's, `img` for a raw disk).
    pub extension: String,
    /// Compression of a raw image.
    #[serde(default = "no_compression")]
    pub compress: Compression,
    /// The file the disk is written as (default: raw).
    #[serde(default)]
    pub container: ContainerOptions,
    pub table: Table,
    #[serde(rename = "partition")]
    pub partitions: Vec<Partition>,
    pub root: RootOptions,
    pub bootloader: BootloaderOptions,
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
        let f = Format::deserialize(table).map_err(|e| FormatError::Parse {
            name: quote(name),
            message: quote_long(e.message(), MESSAGE_MAX),
        })?;
        f.validate()?;
        Ok(f)
    }

    fn validate(&self) -> Result<(), FormatError> {
        let bad = |reason: String| {
            Err(FormatError::Invalid {
                name: quote(&self.name),
                reason,
            })
        };
        if let Err(why) = check_extension(&self.extension) {
            return bad(why);
        }
        if !self.container.kind.takes_compress() && self.compress != Compression::None {
            return bad(format!(
                "`compress` applies to raw images; a `{}` container is not compressed again",
                self.container.kind.name()
            ));
        }
        if let Some(m) = self.container.size_multiple {
            if m.0 == 0 || !m.0.is_multiple_of(self.table.align.0) {
                return bad(format!(
                    "container size-multiple {} is not a multiple of the table's align {}",
                    m.0, self.table.align.0
                ));
            }
        }
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
            let pname = quote(&p.name);
            if let Err(why) = check_name(&p.name) {
                return bad(format!("partition `{pname}`: name {why}"));
            }
            if let Err(why) = check_name(&p.label) {
                return bad(format!(
                    "partition `{pname}`: label `{}` {why}",
                    quote(&p.label)
                ));
            }
            match self.table.kind {
                TableType::Gpt => {
                    if !matches!(p.type_id, PartType::Gpt(_)) {
                        return bad(format!(
                            "partition `{}`: type `{}` is not a GUID",
                            pname, p.type_id
                        ));
                    }
                    if p.bootable {
                        return bad(format!("partition `{}`: `bootable` is an MBR flag", pname));
                    }
                    if p.name.encode_utf16().count() > 36 {
                        return bad(format!(
                            "partition `{}`: GPT names hold 36 characters",
                            pname
                        ));
                    }
                }
                TableType::Mbr => {
                    if !matches!(p.type_id, PartType::Mbr(_)) {
                        return bad(format!(
                            "partition `{}`: type `{}` is not an MBR type byte like 0x83",
                            pname, p.type_id
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
                    pname
                ));
            }
            if p.size == PartSize::Auto && p.filesystem != Filesystem::Ext4 {
                return bad(format!(
                    "partition `{}`: `auto` size needs an ext4 filesystem",
                    pname
                ));
            }
            if (p.contents == Contents::Root) != (p.filesystem == Filesystem::Ext4) {
                return bad(format!(
                    "partition `{}`: the root partition, and only it, is ext4",
                    pname
                ));
            }
            if !p.mount_point.starts_with('/') {
                return bad(format!(
                    "partition `{}`: mount-point must be absolute",
                    pname
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
                    pname,
                    quote(&p.label)
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

/// The text of a built-in format or a format file, and the file's directory.
fn source(
    name_or_path: &str,
    relative_to: Option<&Path>,
) -> Result<(String, Option<std::path::PathBuf>), FormatError> {
    if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
        return Ok(((*text).to_string(), None));
    }
    let p = match relative_to {
        Some(d) => d.join(name_or_path),
        None => Path::new(name_or_path).to_path_buf(),
    };
    if p.extension().is_some_and(|e| e == "toml") || p.symlink_metadata().is_ok() {
        // A regular file of at most 1 MiB, opened without blocking: `base` may name a FIFO,
        // a device or a /proc file.
        let bytes = imgbuild_blockio::read_input(&p, FORMAT_FILE)?;
        let text = String::from_utf8(bytes).map_err(|e| FormatError::NotText {
            path: p.display().to_string(),
            offset: e.utf8_error().valid_up_to(),
        })?;
        return Ok((text, p.parent().map(Path::to_path_buf)));
    }
    Err(FormatError::Unknown(quote(name_or_path)))
}

/// The format's TOML table with its `base` chain merged in: tables merge key by key, every
/// other value (arrays of partitions included) is replaced by the derived format's. Errors in
/// a `base` file (depth > 0) give the position but quote nothing of it.
fn resolve(
    name: &str,
    text: &str,
    dir: Option<&Path>,
    depth: usize,
) -> Result<toml::Table, FormatError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| FormatError::Parse {
        name: quote(name),
        message: toml_message(&e, text, depth == 0),
    })?;
    let Some(base) = table.remove("base") else {
        return Ok(table);
    };
    let invalid = |reason: String| FormatError::Invalid {
        name: quote(name),
        reason,
    };
    let toml::Value::String(base) = base else {
        return Err(invalid("`base` must be a format name or path".into()));
    };
    if depth >= MAX_BASE_DEPTH {
        return Err(invalid(format!(
            "`base` chains deeper than {MAX_BASE_DEPTH} (a cycle?) at `{}`",
            quote(&base)
        )));
    }
    let (base_text, base_dir) = source(&base, dir)?;
    let mut merged = resolve(&base, &base_text, base_dir.as_deref(), depth + 1)?;
    merge(&mut merged, table);
    Ok(merged)
}

/// A TOML error as `line L, column C: message`, with an escaped excerpt of at most
/// [`QUOTE_MAX`] characters of the line when `excerpt` (the file given by the user; never a
/// `base`, which may be any file on the host). The message alone is bounded too, to
/// [`MESSAGE_MAX`]: it may quote a key or a value.
fn toml_message(e: &toml::de::Error, text: &str, excerpt: bool) -> String {
    let message = quote_long(e.message().trim_end(), MESSAGE_MAX);
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let before = text.as_bytes().get(..start).unwrap_or_default();
    let line_no = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = start - line_start + 1;
    if !excerpt {
        return format!("line {line_no}, column {column}: {message}");
    }
    // The excerpt starts a little before the error, at a char boundary.
    let mut from = start.saturating_sub(QUOTE_MAX / 2).max(line_start);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let rest = text.get(from..).unwrap_or_default();
    let line = rest.split('\n').next().unwrap_or_default();
    format!(
        "line {line_no}, column {column}: {message}: `{}{}`",
        if from > line_start { "…" } else { "" },
        quote(line)
    )
}

/// `s` for an error message: control characters escaped, at most [`QUOTE_MAX`] characters
/// (then `…`).
pub(crate) fn quote(s: &str) -> String {
    quote_long(s, QUOTE_MAX)
}

fn quote_long(s: &str, max: usize) -> String {
    imgbuild_blockio::excerpt(s, max)
}

/// A partition name or label: no NUL (GPT names and ext4 labels end at one), no other
/// control character, no `/` (udev turns it into `\x2f` in /dev/disk/by-label and
/// by-partlabel, so a mount by that name would not find it).
fn check_name(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err("contains NUL, which would end it early".into());
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    if s.contains('/') {
        return Err("contains `/` (/dev/disk/by-label and by-partlabel names cannot)".into());
    }
    Ok(())
}

/// The image's file-name extension: letters, digits, `.`, `_`, `-`, `+`, no `..`, at most 32
/// bytes (it is appended to `nixos.` in the working directory; a `/` would leave it).
fn check_extension(e: &str) -> Result<(), String> {
    let ok = !e.is_empty()
        && e.len() <= 32
        && !e.contains("..")
        && !e.starts_with('.')
        && e.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "extension `{}` is not a file-name extension like `img` or `raw.tar.gz` (letters, \
             digits, `.`, `_`, `-`, `+`; no `/` or `..`; at most 32 bytes)",
            quote(e)
        ))
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
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

    /// Writes a format file deriving from `base` into `dir` and loads it.
    fn load_with_base(dir: &Path, base: &str) -> Result<Format, FormatError> {
        let f = dir.join("derived.toml");
        std::fs::write(&f, format!("base = {base:?}\nname = \"derived\"\n")).unwrap();
        Format::load(f.to_str().unwrap())
    }

    /// Issue 27 item 1: `base` naming a device, a FIFO, a /proc file, a huge one-line file or
    /// another file of the host is refused at once, and the error quotes none of it.
    #[test]
    fn hostile_bases_are_refused_fast_and_quote_nothing() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", d.path().join("zero.toml")).unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", d.path().join("env.toml")).unwrap();
        // A shadow-like file: its one line must not appear in any message.
        let secret = "root:$6$Zq1secretHASHvalue$abcdefghijklmnop:19000:0:99999:7:::";
        std::fs::write(d.path().join("shadow"), format!("{secret}\n")).unwrap();
        let sub = d.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        // 50 MB on one line.
        let huge = d.path().join("huge.toml");
        std::fs::write(&huge, vec![b'x'; 50_000_000]).unwrap();
        // A TOML file holding a long secret value where a format expects a partition type:
        // the value is quoted, but only its first characters.
        let long_secret = format!("token-{}-END", "s".repeat(200));
        std::fs::write(
            d.path().join("valid.toml"),
            BUILTIN[0]
                .1
                .replace("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", &long_secret),
        )
        .unwrap();
        // The environment as it is (setting a variable here would race getenv in the
        // other test threads): no `NAME=value` entry of it may be quoted.
        let environ: Vec<String> = std::env::vars_os()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .filter(|e| e.len() >= 8)
            .collect();
        let t = std::time::Instant::now();
        for (base, needle) in [
            ("/dev/zero", "a character device, not a regular file"),
            ("zero.toml", "a character device"),
            ("fifo.toml", "a FIFO, not a regular file"),
            ("env.toml", "a /proc or /sys file"),
            ("/proc/self/environ", "a /proc or /sys file"),
            ("shadow", "line 1, column"),
            ("../../shadow", "line 1, column"),
            ("huge.toml", "more than 1048576 bytes"),
            ("valid.toml", "is neither a GPT type GUID"),
        ] {
            let dir = if base.starts_with("..") {
                &sub
            } else {
                d.path()
            };
            let e = load_with_base(dir, base).unwrap_err();
            let msg = format!("{e}");
            assert!(msg.contains(needle), "{base}: {msg}");
            assert!(
                !msg.contains("Zq1secret"),
                "{base} quotes the secret: {msg}"
            );
            assert!(
                !environ.iter().any(|e| msg.contains(e.as_str())),
                "{base} quotes the environment"
            );
            assert!(!msg.contains("-END"), "{base} quotes a whole value: {msg}");
            assert!(msg.len() < 600, "{base}: {} bytes of message", msg.len());
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // The file named on the command line, 50 MB on one line: refused by size.
        let e = Format::load(huge.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().len() < 300, "{e}");
        // Its own bad line is quoted, but short and escaped.
        let long = format!("name = \"x\"\nbad line {}\u{1b}[2J\n", "y".repeat(500_000));
        let e = Format::parse("mine", &long).unwrap_err().to_string();
        assert!(e.contains("line 2, column"), "{e}");
        assert!(e.len() < 300 && !e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn extensions_names_and_labels_stay_in_their_place() {
        let raw = BUILTIN[0].1;
        // As TOML strings.
        for ext in [
            r#""../../tmp/x""#,
            r#""img/x""#,
            "\"..\"",
            r#"".img""#,
            r#""""#,
            r#""a\u0000b""#,
            r#""a b""#,
        ] {
            let t = raw.replace("extension = \"img\"", &format!("extension = {ext}"));
            assert_ne!(t, raw);
            let e = Format::parse("x", &t).unwrap_err().to_string();
            assert!(e.contains("is not a file-name extension"), "{ext:?}: {e}");
        }
        let ok = raw.replace("extension = \"img\"", "extension = \"raw.tar.gz\"");
        Format::parse("x", &ok).unwrap();
        for (label, why) in [
            (r#""ni\u0000xos""#, "NUL"),
            (r#""nix/os""#, "`/`"),
            (r#""nix\nos""#, "control"),
        ] {
            let t = raw.replace("label = \"nixos\"", &format!("label = {label}"));
            let e = Format::parse("x", &t).unwrap_err().to_string();
            assert!(e.contains(why), "{label:?}: {e}");
        }
        // 16 bytes is the most an ext4 label holds; 16 is fine.
        let t = raw.replace("label = \"nixos\"", "label = \"0123456789abcdef\"");
        Format::parse("x", &t).unwrap();
        for (name, why) in [(r#""ro\u0000ot""#, "NUL"), (r#""a/b""#, "`/`")] {
            let t = raw.replace("name = \"primary\"", &format!("name = {name}"));
            assert_ne!(t, raw);
            let e = Format::parse("x", &t).unwrap_err().to_string();
            assert!(e.contains(why), "{name:?}: {e}");
        }
        // GPT names: 36 UTF-16 units; a character outside the BMP takes two.
        let t = raw.replace(
            "name = \"primary\"",
            &format!("name = \"{}\"", "é".repeat(36)),
        );
        Format::parse("x", &t).unwrap();
        let t = raw.replace(
            "name = \"primary\"",
            &format!("name = \"{}\"", "😀".repeat(18)),
        );
        Format::parse("x", &t).unwrap();
        let t = raw.replace(
            "name = \"primary\"",
            &format!("name = \"{}\"", "😀".repeat(19)),
        );
        assert!(Format::parse("x", &t).is_err());
    }

    #[test]
    fn guids() {
        let g = parse_guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(g[0], 0xC1);
        assert_eq!(g[15], 0x3B);
        assert!(parse_guid("97FD5997-D90B-4AA3-8D16-C1723AEA73C").is_none());
    }
}
