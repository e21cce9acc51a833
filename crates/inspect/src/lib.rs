//! Reading disk images without trusting them.
//!
//! [`Image::open`] takes a raw image, a zstd- or gzip-compressed one (decompressed to a
//! sparse anonymous temporary file) or a container (also compressed), reads its partition table (GPT through the `gpt` crate, MBR
//! through `mbrman`, each after our own checks), and probes every partition for ext4 (read
//! by the independent `ext4-view` crate), FAT (read by `fs::fat`, our own bounded reader)
//! ISO 9660 (`fs::iso9660`, ours too: Rock Ridge, El Torito; an isohybrid image's volume
//! is read over the whole image, as partition 0 or as the table's entry from LBA 0; Joliet is
//! not read) or squashfs (`fs::squashfs`, ours: a live ISO's `/nix-store.squashfs` appears at
//! `/nix/store`; an appliance's ext4 root reads with its `usr` partition's store mounted, as
//! it boots). [`Image::inspect`] explains the image: table, filesystems, the boot setup
//! (systemd-boot, extlinux/isolinux, GRUB configs and GRUB for BIOS, Raspberry Pi firmware)
//! and the NixOS system (profile, toplevel, version, registered store paths), for images
//! built by imgbuild or by nixpkgs.
//! [`Filesystem`] lists, reads and copies files.
//!
//! The image is untrusted input. A corrupt or hostile image gives an [`Error`], never a
//! panic, a hang or an allocation out of proportion to the image:
//!
//! - every read goes through a bounded [`io`] slice of one partition, with a read budget per
//!   operation (so a reader sent into a loop stops);
//! - numbers from the image are checked before a third-party reader sees them
//!   ([`table`], the ext4 superblock, the FAT boot sector), and limits ([`Limits`]) cap
//!   directory sizes, walk depth and breadth, in-memory reads and copies;
//! - third-party readers run under `catch_unwind` as a last line of defence ([`guard`]).
//!
//! `tests/fuzz.rs` corrupts real images' metadata and checks all of this.
//!
//! This crate knows nothing of argv or terminals; it reads no clock and no environment
//! variable (temporary files go to `OpenOptions::temp_dir`, else the system default).

#![warn(missing_docs)]
// Casts that may truncate, lose a sign or wrap are spelled out (`try_from`, `u64::from`,
// checked arithmetic): the numbers come from hostile images. Tests may cast freely.
#![cfg_attr(
    not(test),
    warn(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )
)]

mod boot;
mod bytes;
mod container;
mod copy;
mod diff;
mod error;
pub mod fs;
pub mod guard;
mod inspection;
pub mod io;
mod nixos;
mod open;
pub mod path;
mod read_all;
mod sizes;
mod system;
pub mod table;
mod verity;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use boot::{
    boot_counters, Boot, BootEntry, EfiBinary, Extlinux, ExtlinuxEntry, Grub, GrubBios, PiKernel,
    RaspberryPi, Signature, SystemdBoot, Uki, UkiSection,
};
pub use container::Container;
pub use copy::{copy_out, CopyStats};
pub use diff::{diff, split_version, Diff, Fact, PathChange, StoreDiff};
pub use error::{Error, Result, Where};
pub use fs::{Allocation, ElTorito, Entry, FileReader, Filesystem, FsInfo, IsoFacts, Kind};
pub use inspection::{Inspection, PartitionReport};
pub use nixos::{Nixos, Registration, Store};
pub use open::Compression;
pub use read_all::ReadAll;
pub use sizes::{store_name, Named, PartitionUse, Sizes, StorePathSize};
pub use table::{Partition, Table, TableKind};
pub use verity::{RootHashClaim, VerityPair, VeritySuperblock};

/// Limits that keep a hostile image from exhausting memory, disk or time.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest decompressed size of a `.zst` image.
    pub max_image_size: u64,
    /// Entries returned by one directory listing.
    pub max_dir_entries: usize,
    /// Entries visited by one walk (`ls -R`, copies).
    pub max_walk_entries: u64,
    /// Directory depth of a walk.
    pub max_depth: usize,
    /// Bytes one file may put in memory (config files, boot entries, EFI binaries).
    pub max_in_memory: u64,
    /// Bytes one copy may write; `None`: four times the filesystem's size plus 1 GiB.
    pub max_copy_bytes: Option<u64>,
    /// Bytes of a verity data partition hashed to recompute its root hash (the tree takes
    /// 1/128 of that in memory); more is reported, not hashed.
    pub max_verity_data: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_image_size: 64 << 30,
            max_dir_entries: 1 << 20,
            max_walk_entries: 20_000_000,
            max_depth: 256,
            max_in_memory: 64 << 20,
            max_copy_bytes: None,
            max_verity_data: 16 << 30,
        }
    }
}

/// How to open an image.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Bounds on what a hostile image may make the readers do.
    pub limits: Limits,
    /// Directory for temporary files (decompressed image, database copy).
    pub temp_dir: Option<PathBuf>,
    /// Record which byte ranges of the image are read ([`Image::traced_reads`]); the fuzz
    /// test uses it to find the metadata it corrupts.
    pub trace_reads: bool,
}

struct Part {
    partition: Partition,
    info: Option<FsInfo>,
    fs: Option<Filesystem>,
    error: Option<String>,
}

/// An opened disk image: its table and the filesystems of its partitions.
pub struct Image {
    disk: Arc<io::Disk>,
    path: PathBuf,
    compression: Compression,
    container: Container,
    file_size: u64,
    disk_size: u64,
    table: Table,
    parts: Vec<Part>,
    /// An appliance's root and store partitions read as one system.
    system: Option<system::System>,
    warnings: Vec<String>,
    temp_dir: Option<PathBuf>,
    limits: Limits,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// Splits a `[PART:]PATH` argument: a leading `/` means no partition.
pub fn split_location(arg: &[u8]) -> (Option<String>, Vec<u8>) {
    if arg.starts_with(b"/") {
        return (None, arg.to_vec());
    }
    match arg.iter().position(|&b| b == b':') {
        Some(i) => (
            Some(String::from_utf8_lossy(&arg[..i]).into_owned()),
            arg[i + 1..].to_vec(),
        ),
        None => (None, arg.to_vec()),
    }
}

impl Image {
    /// Opens an image with the default limits.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &OpenOptions::default())
    }

    /// Opens an image: decompresses it if needed, reads the table, probes the partitions.
    pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<Self> {
        let (disk, compression, file_size, container) =
            open::open_disk(path, opts.limits.max_image_size, opts.temp_dir.as_deref())?;
        let mut disk = disk;
        disk.set_tracing(opts.trace_reads);
        let disk = Arc::new(disk);
        let disk_size = disk.size();
        // An isohybrid ISO: its MBR or GPT describes the volume (or not, or only part of
        // it), so the volume is read over the whole image as partition 0, before the table's
        // partitions (an appended ESP stays readable by its number); a table our checks
        // refuse (xorriso's MBR entry 1 starts at LBA 0) is a warning, not an error.
        let iso = {
            let mut whole = io::Slice::new(disk.clone(), 0, disk_size, io::Budget::new(1 << 20));
            fs::iso9660::looks_like_iso(&mut whole)
        };
        // A squashfs file has no table, whatever its byte 510 holds.
        let squash = {
            let mut magic = [0u8; 4];
            disk.read_exact_at(0, &mut magic).is_ok() && &magic == b"hsqs"
        };
        let mut iso_warning = None;
        let read = match table::read(path, &disk, iso) {
            _ if squash => None,
            Err(e) if iso => {
                iso_warning = Some(format!(
                    "the partition table is not read ({}); the image is read as an ISO 9660 \
                     volume",
                    error::chain(&e)
                ));
                None
            }
            r => r?,
        };
        let (table, partitions, mut warnings) = match read {
            Some(p) => (p.table, p.partitions, p.warnings),
            None => (
                Table {
                    kind: TableKind::None,
                    disk_id: None,
                    sector_size: table::SECTOR,
                    first_usable_lba: None,
                    last_usable_lba: None,
                    entries: None,
                    header: None,
                    backup_ok: None,
                },
                vec![whole_image(disk_size)],
                Vec::new(),
            ),
        };
        let mut partitions = partitions;
        // Unless the table's own entry is the volume (syslinux's isohybrid MBR: entry 1 from
        // LBA 0).
        let volume_listed = partitions
            .iter()
            .any(|p| p.readable && p.entry.start == 0 && p.entry.number != 0);
        if iso && !volume_listed && partitions.first().is_some_and(|p| p.entry.number != 0) {
            partitions.insert(0, whole_image(disk_size));
        }
        warnings.extend(iso_warning);
        let parts = open_partitions(path, &disk, partitions, iso, &opts.limits);
        if table_is_none(&parts) && parts[0].fs.is_none() {
            warnings.push("no partition table and no filesystem recognised".into());
        }
        let system = system::appliance(path, &disk, &parts, &opts.limits);
        Ok(Self {
            disk,
            path: path.to_path_buf(),
            compression,
            container,
            file_size,
            disk_size,
            table,
            parts,
            system,
            warnings,
            temp_dir: opts.temp_dir.clone(),
            limits: opts.limits.clone(),
        })
    }

    /// Whether anything was recognised: a partition table, or a filesystem on the whole image.
    pub fn recognised(&self) -> bool {
        !(table_is_none(&self.parts) && self.parts[0].fs.is_none())
    }

    /// The image file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the (decompressed) disk.
    pub fn disk_size(&self) -> u64 {
        self.disk_size
    }

    /// Whether the image file was zstd-compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// What holds the disk.
    pub fn container(&self) -> Container {
        self.container
    }

    /// The partition table read from the disk.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Partitions in table order (partition 0 = the whole image when there is no table).
    pub fn partitions(&self) -> impl Iterator<Item = &Partition> {
        self.parts.iter().map(|p| &p.partition)
    }

    /// Table-level warnings (damaged backup GPT, overlaps, partitions past the end).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Byte ranges of the (decompressed) image read so far, one per read request, sorted;
    /// empty unless opened with [`OpenOptions::trace_reads`].
    pub fn traced_reads(&self) -> Vec<(u64, u64)> {
        self.disk.traced()
    }

    fn available(&self) -> String {
        let v: Vec<String> = self
            .parts
            .iter()
            .map(|p| {
                p.partition
                    .describe(p.info.as_ref().and_then(|i| i.summary.label.as_deref()))
            })
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    fn part_fs<'a>(&self, p: &'a Part) -> Result<&'a Filesystem> {
        let at = Where {
            image: self.path.clone(),
            partition: Some(
                p.partition
                    .describe(p.info.as_ref().and_then(|i| i.summary.label.as_deref())),
            ),
            path: None,
        };
        if !p.partition.readable {
            return Err(Error::Corrupt {
                at,
                reason: "the partition is not inside the image".into(),
            });
        }
        p.fs.as_ref().ok_or_else(|| Error::NoFilesystem {
            at,
            detail: p.error.clone(),
        })
    }

    /// The filesystem of a partition given by number (`2`) or by filesystem label or GPT
    /// partition name (`ESP`, `nixos`; case-sensitive first, then case-insensitive).
    pub fn filesystem(&self, spec: &str) -> Result<&Filesystem> {
        let label = |p: &Part| p.info.as_ref().and_then(|i| i.summary.label.clone());
        let found = if let Ok(n) = spec.parse::<u32>() {
            self.parts.iter().find(|p| p.partition.entry.number == n)
        } else {
            let exact = |p: &&Part| {
                label(p).as_deref() == Some(spec) || p.partition.entry.name.as_deref() == Some(spec)
            };
            let loose = |p: &&Part| {
                label(p).is_some_and(|l| l.eq_ignore_ascii_case(spec))
                    || p.partition
                        .entry
                        .name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(spec))
            };
            self.parts
                .iter()
                .find(exact)
                .or_else(|| self.parts.iter().find(loose))
        };
        match found {
            Some(p) => self.part_fs(p),
            None => Err(Error::NoSuchPartition {
                image: self.path.clone(),
                spec: spec.to_string(),
                available: self.available(),
            }),
        }
    }

    /// The root filesystem: an appliance's root with its store partition mounted (see
    /// `system.rs`), else the one holding `/nix/store`, else one labelled like a NixOS root,
    /// else the biggest ext filesystem, else the only filesystem.
    pub fn root_filesystem(&self) -> Result<&Filesystem> {
        if let Some(s) = &self.system {
            return Ok(&s.fs);
        }
        let readable: Vec<&Part> = self.parts.iter().filter(|p| p.fs.is_some()).collect();
        let pick = readable
            .iter()
            .find(|p| {
                p.fs.as_ref().is_some_and(
                    |f| matches!(f.metadata(b"/nix/store"), Ok(m) if m.kind == Kind::Dir),
                )
            })
            .or_else(|| {
                // An ISO's own tree, not the ESP its hybrid table shows.
                readable
                    .iter()
                    .find(|p| p.info.as_ref().is_some_and(|i| i.summary.kind == "iso9660"))
            })
            .or_else(|| {
                readable.iter().find(|p| {
                    p.info
                        .as_ref()
                        .and_then(|i| i.summary.label.as_deref())
                        .is_some_and(|l| l.eq_ignore_ascii_case("nixos") || l == "NIXOS_SD")
                })
            })
            .or_else(|| {
                readable
                    .iter()
                    .filter(|p| {
                        p.info
                            .as_ref()
                            .is_some_and(|i| i.summary.kind.starts_with("ext"))
                    })
                    .max_by_key(|p| p.partition.entry.size)
            })
            .or_else(|| {
                // The only filesystem is the root only when no other partition is missing: a
                // truncated image must not pass its ESP off as `/`.
                let unreadable = self.parts.iter().filter(|p| p.fs.is_none()).count();
                if readable.len() == 1 && unreadable == 0 {
                    readable.first()
                } else {
                    None
                }
            });
        match pick {
            Some(p) => self.part_fs(p),
            None => {
                let missing: Vec<String> = self
                    .parts
                    .iter()
                    .filter(|p| p.fs.is_none())
                    .map(|p| {
                        let why = if !p.partition.readable {
                            "lies past the end of the image (truncated?)".to_string()
                        } else {
                            p.error
                                .clone()
                                .unwrap_or_else(|| "has no filesystem imgbuild reads".into())
                        };
                        format!("partition {} {why}", p.partition.entry.number)
                    })
                    .collect();
                Err(Error::NoFilesystem {
                    at: Where::image(&self.path),
                    detail: Some(if missing.is_empty() {
                        format!("no root filesystem among partitions: {}", self.available())
                    } else {
                        format!(
                            "no root filesystem: {}; readable: {}",
                            missing.join(", "),
                            self.available()
                        )
                    }),
                })
            }
        }
    }

    /// The partitions `root` (from [`Image::root_filesystem`]) is read from: the root's, and
    /// an appliance's store partition after it.
    pub(crate) fn root_partitions(&self, root: &Filesystem) -> Vec<u32> {
        if let Some(s) = self.system.as_ref().filter(|s| std::ptr::eq(&s.fs, root)) {
            return vec![s.root, s.store];
        }
        self.parts
            .iter()
            .filter(|p| p.fs.as_ref().is_some_and(|f| std::ptr::eq(f, root)))
            .map(|p| p.partition.entry.number)
            .collect()
    }

    /// `PART` given, or the root filesystem.
    pub fn select(&self, spec: Option<&str>) -> Result<&Filesystem> {
        match spec {
            Some(s) => self.filesystem(s),
            None => self.root_filesystem(),
        }
    }
}

/// Probes every readable partition for a filesystem (an isohybrid table's entry from LBA 0
/// over the whole image).
fn open_partitions(
    path: &Path,
    disk: &Arc<io::Disk>,
    partitions: Vec<Partition>,
    iso: bool,
    limits: &Limits,
) -> Vec<Part> {
    let disk_size = disk.size();
    let mut parts = Vec::new();
    for p in partitions {
        if !p.readable {
            parts.push(Part {
                partition: p,
                info: None,
                fs: None,
                error: None,
            });
            continue;
        }
        let at = Where {
            image: path.to_path_buf(),
            partition: Some(p.describe(None)),
            path: None,
        };
        // An isohybrid table's entry from LBA 0 is the volume, which may run past the
        // entry (xorriso's GPT entry ends before its backup GPT): read over the image.
        let o = if iso && p.entry.start == 0 {
            let mut whole = p.clone();
            whole.entry.size = disk_size;
            fs::open(disk, &whole, at, limits)
        } else {
            fs::open(disk, &p, at, limits)
        };
        let at_label = o
            .info
            .as_ref()
            .and_then(|i| i.summary.label.clone())
            .map(|l| p.describe(Some(&l)));
        let mut fs = o.fs;
        if let (Some(f), Some(d)) = (&mut fs, at_label) {
            f.set_partition_name(d);
        }
        parts.push(Part {
            partition: p,
            info: o.info,
            fs,
            error: o.error.map(|e| error::chain(&e)),
        });
    }
    parts
}

/// The whole image as partition 0 (no table, or an ISO 9660 volume over a hybrid table).
fn whole_image(disk_size: u64) -> Partition {
    Partition {
        entry: imgbuild_partition::Entry::whole_image(disk_size),
        readable: true,
    }
}

fn table_is_none(parts: &[Part]) -> bool {
    parts.len() == 1 && parts[0].partition.entry.number == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            split_location(b"/nix/store"),
            (None, b"/nix/store".to_vec())
        );
        assert_eq!(
            split_location(b"ESP:/loader"),
            (Some("ESP".into()), b"/loader".to_vec())
        );
        assert_eq!(
            split_location(b"2:etc"),
            (Some("2".into()), b"etc".to_vec())
        );
        assert_eq!(split_location(b"etc"), (None, b"etc".to_vec()));
    }
}
