//! The one trait every output kind implements, and the one list that registers them.
//!
//! A kind says everything about the file the disk is written as: its `type` in a format
//! file, its extension, which `--compress` and `--level` it takes, whether its size depends
//! on what the disk holds, and how it makes the writer that streams the disk into it.
//! Adding a container is its own file and one line in the `kinds!` list of `kinds/mod.rs`
//! (and its row in `formats/README.md`); nothing else names it.

use std::fmt;

use imgbuild_blockio::OutputFile;
use imgbuild_diskmap::sinks::Sha256Sink;
use imgbuild_diskmap::{Map, Sink};

use super::KINDS;
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
/// Compression of a raw image.
pub enum Compression {
    /// The raw disk, sparse.
    None,
    /// zstd frames of the raw disk (`.zst`), with checksums.
    Zstd,
}

/// The `--level` values a kind takes and the one it uses when none is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Levels {
    /// The compressor, for messages (`zstd`, `deflate`).
    pub codec: &'static str,
    pub min: i32,
    pub max: i32,
    pub default: i32,
}

/// One kind of output file (raw disk, qcow2, VHD, ...).
pub(crate) trait OutputKind: Sync {
    /// Its `type` in a format file's `[container]` table, and `container` in the manifest.
    fn name(&self) -> &'static str;
    /// The extension its files usually carry (the built-in formats use it).
    fn extension(&self) -> &'static str;
    /// What the default output name adds to the format's extension with this compression
    /// (`.zst`).
    fn suffix(&self, _compression: Compression) -> &'static str {
        ""
    }
    /// Whether a format's `compress` (and `--compress zstd`) applies to it.
    fn takes_compress(&self) -> bool {
        false
    }
    /// The `--level` values it takes; `None`: it compresses nothing and `--level` is refused.
    fn levels(&self) -> Option<Levels> {
        None
    }
    /// Whether the file's size depends on what the disk holds (it compresses the data), not
    /// only on the disk's size and written extents: the manifest then withholds the size of
    /// an image holding `--add` files.
    fn compressed(&self, compression: Compression) -> bool;
    /// Whether the image file is the raw disk itself: then it has no writer of its own.
    fn is_raw_disk(&self, _compression: Compression) -> bool {
        false
    }
    /// Whether a block map is written for the image even when no raw disk is kept beside it
    /// (bmaptool reads raw and zstd images).
    fn bmap(&self) -> bool {
        false
    }
    /// The image file's length when created (0: it grows as written).
    fn initial_len(&self, _disk_size: u64) -> u64 {
        0
    }
    /// The writer streaming the disk into `w.file`.
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>>;
}

/// What a writer is made from, every value final.
pub(crate) struct WriterInput<'a, 'f> {
    pub map: &'a Map,
    pub params: &'a imgbuild_container::Params,
    /// The image file (its temporary path until persisted).
    pub file: &'f OutputFile,
    pub compression: Compression,
    /// The compression level (the kind's default when none was given).
    pub level: i32,
    /// Worker threads (at least 1).
    pub workers: usize,
    /// The system toplevel's store path (an OVA names its machine after it).
    pub toplevel: &'a str,
}

/// A writer of an image file: a sink in the disk's stream, then finished.
pub(crate) trait ImageWriter: Send {
    /// The sink the disk is streamed into.
    fn sink(&mut self) -> &mut dyn Sink;
    /// After the stream: the image file's size and SHA-256 (`disk` holds the raw disk's).
    fn finish(self: Box<Self>, disk: &Sha256Sink) -> Result<Written>;
}

/// What a finished writer wrote.
pub(crate) struct Written {
    pub size: u64,
    pub sha256: String,
}

/// The kind of file the disk is written as: a format file's `[container] type`.
#[derive(Clone, Copy)]
pub struct ContainerType(&'static dyn OutputKind);

impl ContainerType {
    /// Its name in format files and manifests (`raw`, `qcow2`, `vhd-fixed`, ...).
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The registered kind named `name`.
    pub fn find(name: &str) -> Option<ContainerType> {
        KINDS
            .iter()
            .find(|k| k.name() == name)
            .map(|k| ContainerType(*k))
    }

    /// `raw, qcow2, ...`: every registered name.
    pub fn names() -> String {
        KINDS
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The extension its files usually carry: a format file's default `extension`.
    pub fn extension(self) -> &'static str {
        self.0.extension()
    }

    /// Whether a raw disk: its format's `compress` applies.
    pub fn takes_compress(self) -> bool {
        self.0.takes_compress()
    }

    /// Whether the file's size depends on what the disk holds with `compression`.
    pub fn compressed(self, compression: Compression) -> bool {
        self.0.compressed(compression)
    }

    pub(crate) fn kind(self) -> &'static dyn OutputKind {
        self.0
    }
}

impl Default for ContainerType {
    fn default() -> Self {
        ContainerType(KINDS[0])
    }
}

impl PartialEq for ContainerType {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}
impl Eq for ContainerType {}

impl fmt::Debug for ContainerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for ContainerType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for ContainerType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ContainerType::find(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown container type `{}`, expected one of {}",
                crate::quote(&name),
                ContainerType::names()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Format, BUILTIN};

    #[test]
    fn the_registration_list_is_consistent() {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS.len(), "a kind registered twice");
        assert_eq!(ContainerType::default().name(), "raw");
        for k in KINDS {
            let c = ContainerType::find(k.name()).expect("registered");
            assert_eq!(c.name(), k.name());
            if let Some(l) = k.levels() {
                assert!(
                    l.min >= 1 && l.min <= l.default && l.default <= l.max,
                    "{}: {l:?}",
                    k.name()
                );
            }
            // Only a kind that takes `compress` may depend on it.
            if !k.takes_compress() {
                assert_eq!(
                    k.compressed(Compression::None),
                    k.compressed(Compression::Zstd),
                    "{}",
                    k.name()
                );
                assert!(!k.is_raw_disk(Compression::None), "{}", k.name());
            }
            // A kind whose size depends on content compresses, so it has levels.
            if k.compressed(Compression::Zstd) || k.compressed(Compression::None) {
                assert!(k.levels().is_some(), "{}", k.name());
            }
        }
        assert!(ContainerType::find("qcow3").is_none());
    }

    #[test]
    fn every_format_file_names_a_registered_kind_with_its_extension() {
        for (name, _) in BUILTIN {
            let f = Format::load(name).expect("built-in formats parse");
            let kind = f.container.kind.kind();
            assert_eq!(kind.name(), f.container.kind.name());
            // An ISO 9660 volume is written raw, as `.iso`.
            let want = match f.volume {
                crate::format::Volume::Disk => kind.extension(),
                crate::format::Volume::Iso9660 => "iso",
                crate::format::Volume::Netboot => "netboot",
                crate::format::Volume::Kexec => "kexec.tar.gz",
            };
            assert_eq!(f.extension, want, "format {name}");
        }
        // A format naming no extension takes its container's.
        let raw = BUILTIN[0].1.replace("extension = \"img\"\n", "");
        let vhdx = Format::parse("x", &format!("{raw}\n[container]\ntype = \"vhdx\"\n"))
            .expect("a vhdx raw-efi parses");
        assert_eq!(vhdx.extension, "vhdx");
        assert_eq!(Format::parse("x", &raw).expect("parses").extension, "img");
        let e = Format::parse("x", "base = \"raw-efi\"\n[container]\ntype = \"qcow3\"\n")
            .expect_err("an unknown container is refused");
        let msg = e.to_string();
        assert!(msg.contains("unknown container type `qcow3`"), "{msg}");
        assert!(msg.contains(&ContainerType::names()), "{msg}");
    }
}
