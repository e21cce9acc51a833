//! [`Image::inspect`]: the table, the filesystems, the boot setup and the NixOS system in one
//! report.

use serde::Serialize;

use crate::boot::{self, Boot};
use crate::container::Container;
use crate::fs::FsInfo;
use crate::nixos::{self, Nixos};
use crate::open::Compression;
use crate::read_all::ReadAll;
use crate::table::{Partition, Table};
use crate::Image;

/// One partition in an [`Inspection`].
#[derive(Clone, Debug, Serialize)]
pub struct PartitionReport {
    #[serde(flatten)]
    /// The partition table's entry.
    pub partition: Partition,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The filesystem found on it, if one was recognised.
    pub filesystem: Option<FsInfo>,
    /// Why the partition's filesystem could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything [`Image::inspect`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    /// The image file, as given.
    pub image: String,
    /// Whether the file was compressed.
    pub compression: Compression,
    /// What holds the disk: `raw`, `qcow2`, `vhd`, `vhd-fixed`, `vhdx`, `vmdk`, `ova`,
    /// `gce-tar`.
    pub container: Container,
    /// Size of the file as stored (compressed, if it is).
    pub file_size: u64,
    /// Size of the disk it holds.
    pub disk_size: u64,
    /// The partition table.
    pub table: Table,
    /// Every partition with its filesystem.
    pub partitions: Vec<PartitionReport>,
    /// The boot setup found.
    pub boot: Boot,
    /// The dm-verity pairs: hash partition, data partition, superblock, the root hash
    /// recomputed from the data and what the disk claims it is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verity: Vec<crate::VerityPair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The NixOS system, when a root filesystem holds one.
    pub nixos: Option<Nixos>,
    /// Problems found that did not stop the inspection.
    pub warnings: Vec<String>,
    /// What [`Image::read_all`] read, when asked for (`imgbuild inspect --deep`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_all: Option<Vec<ReadAll>>,
}

impl Image {
    /// Explains the image. Problems found on the way are warnings in the result; only the
    /// image and its table must be readable (which [`Image::open`] already checked).
    pub fn inspect(&self) -> Inspection {
        let mut warnings = self.warnings.clone();
        let mut boot = Boot::default();
        for p in &self.parts {
            let Some(fs) = &p.fs else { continue };
            let n = p.partition.entry.number;
            if let Some(sb) = boot::systemd_boot(fs, n, &mut warnings) {
                boot.systemd_boot.push(sb);
            }
            boot.extlinux.extend(boot::extlinux(fs, n, &mut warnings));
            boot.grub.extend(boot::grub(fs, n, &mut warnings));
            if let Some(pi) = boot::raspberry_pi(fs, n, &mut warnings) {
                boot.raspberry_pi.push(pi);
            }
        }
        let parts: Vec<&Partition> = self.parts.iter().map(|p| &p.partition).collect();
        boot.grub_bios = boot::grub_bios(&self.disk, self.table.kind, &parts, &|n| {
            self.filesystem(&n.to_string()).ok()
        });
        // Every boot entry's kernel command line: systemd-boot's (type #1 entries, then the
        // UKIs' `.cmdline`), then extlinux's.
        let cmdlines: Vec<&str> = boot
            .systemd_boot
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter_map(|e| e.options.as_deref())
            .chain(
                boot.systemd_boot
                    .iter()
                    .flat_map(|s| s.ukis.iter())
                    .filter_map(|u| u.cmdline.as_deref()),
            )
            .chain(
                boot.extlinux
                    .iter()
                    .flat_map(|x| x.entries.iter())
                    .filter_map(|e| e.append.as_deref()),
            )
            .collect();
        let boot_toplevel = cmdlines
            .iter()
            .copied()
            .find_map(nixos::toplevel_from_cmdline);
        let verity = crate::verity::pairs(&self.disk, &parts, &cmdlines, &self.limits);
        let nixos = self.root_filesystem().ok().and_then(|fs| {
            let parts = self.root_partitions(fs);
            let &partition = parts.first()?;
            let looks_nixos = fs.exists(b"/nix/store").unwrap_or(false);
            looks_nixos.then(|| {
                let mut n = nixos::read(
                    fs,
                    partition,
                    boot_toplevel,
                    self.temp_dir.as_deref(),
                    &mut warnings,
                );
                n.store_partition = parts.get(1).copied();
                n
            })
        });
        Inspection {
            image: self.path.display().to_string(),
            compression: self.compression,
            container: self.container,
            file_size: self.file_size,
            disk_size: self.disk_size,
            table: self.table.clone(),
            partitions: self
                .parts
                .iter()
                .map(|p| PartitionReport {
                    partition: p.partition.clone(),
                    filesystem: p.info.clone(),
                    error: p.error.clone(),
                })
                .collect(),
            boot,
            verity,
            nixos,
            warnings,
            read_all: None,
        }
    }
}
