//! What the user asked for, in typed form, and the context every stage of a build reads:
//! the format, the ids and the time, decided once.

use std::path::PathBuf;

use crate::add::Add;
use crate::format::{Compression, ContainerType, Contents, Format};
use crate::ids::Ids;
use crate::{Error, Inputs, Result};

/// How big the disk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskSize {
    /// The minimum, with this much free space in the root filesystem (default: the format's
    /// `free`).
    Auto { free: Option<u64> },
    /// Exactly this many bytes; the root partition takes what the others leave.
    Exact(u64),
}

/// How the image is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputOptions {
    /// The image file (`nixos.img`, `nixos.img.zst`).
    pub path: PathBuf,
    /// Compression (default: the format's).
    pub compression: Option<Compression>,
    /// Compression level (zstd 1..=22, default 3; gzip 1..=9, default 6).
    pub level: Option<i32>,
    /// Also write the uncompressed image when compressing.
    pub keep_raw: bool,
}

/// Identical store files stored once (as `nix-store --optimise` leaves a store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dedup {
    /// Every file its own inode.
    Off,
    /// Files with equal contents and executable bit share one inode.
    On,
    /// As `On`, and `/nix/store/.links` holds every store file under Nix's name for it.
    OptimiseStore,
}

/// Everything one build takes besides its inputs.
#[derive(Clone, Debug)]
pub struct Options {
    pub output: OutputOptions,
    /// Seed for every GUID, UUID, volume id and hash seed; default: format + toplevel.
    pub seed: Option<String>,
    pub size: DiskSize,
    /// Size of the EFI system partition (the format's `esp` partition).
    pub esp_size: Option<u64>,
    /// Worker threads (at least 1; the output is the same for any count).
    pub threads: usize,
    /// Raspberry Pi firmware directory on the host (when boot.json does not name one).
    pub firmware: Option<PathBuf>,
    /// MBR disk signature (default: derived from the seed).
    pub disk_id: Option<u32>,
    /// Time for everything generated (`SOURCE_DATE_EPOCH`).
    pub epoch: i64,
    /// Ship `/nix-path-registration` (default: the format's).
    pub nix_path_registration: Option<bool>,
    /// Host files to add (`--add`, `--add-tree`, `--add-boot`).
    pub adds: Vec<Add>,
    pub dedup: Dedup,
    /// Refuse a toplevel whose fstab and boot loader do not match the format.
    pub check_system: bool,
}

impl Options {
    /// Options for `output` with every default.
    pub fn new(output: impl Into<PathBuf>) -> Options {
        Options {
            output: OutputOptions {
                path: output.into(),
                compression: None,
                level: None,
                keep_raw: false,
            },
            seed: None,
            size: DiskSize::Auto { free: None },
            esp_size: None,
            threads: 1,
            firmware: None,
            disk_id: None,
            epoch: crate::DEFAULT_EPOCH,
            nix_path_registration: None,
            adds: Vec::new(),
            dedup: Dedup::Off,
            check_system: true,
        }
    }
}

/// One build's decisions, made once: the format, the ids, the time, the options.
pub struct Context<'a> {
    pub format: &'a Format,
    pub opts: &'a Options,
    pub ids: Ids,
    /// `SOURCE_DATE_EPOCH`: the time of everything generated.
    pub time: i64,
    pub compression: Compression,
}

impl<'a> Context<'a> {
    /// Checks the options against the format and the inputs.
    pub fn new(format: &'a Format, inputs: &Inputs, opts: &'a Options) -> Result<Context<'a>> {
        if inputs.bootspec.system != format.system {
            return Err(Error::WrongSystem {
                format: format.name.clone(),
                expected: format.system.clone(),
                found: inputs.bootspec.system.clone(),
            });
        }
        let has = |c: Contents| format.partitions.iter().any(|p| p.contents == c);
        let container = format.container.kind;
        if container != ContainerType::Raw && opts.output.compression == Some(Compression::Zstd) {
            return Err(Error::Invalid(format!(
                "--compress zstd: format `{}` writes a `{}` container, which is not compressed \
                 again",
                format.name,
                container.name()
            )));
        }
        match (container, opts.output.level) {
            (ContainerType::GceTar | ContainerType::Vmdk | ContainerType::Ova, Some(l))
                if !(1..=9).contains(&l) =>
            {
                return Err(Error::Invalid(format!(
                    "--level {l}: format `{}` is deflate-compressed, whose levels are 1 to 9",
                    format.name
                )))
            }
            (
                ContainerType::Qcow2
                | ContainerType::Vhd
                | ContainerType::VhdFixed
                | ContainerType::Vhdx,
                Some(_),
            ) => {
                return Err(Error::Invalid(format!(
                    "--level: format `{}` writes an uncompressed `{}` container",
                    format.name,
                    container.name()
                )))
            }
            _ => {}
        }
        if opts.esp_size.is_some() && !has(Contents::Esp) {
            return Err(Error::Invalid(format!(
                "--esp-size: format `{}` has no EFI system partition",
                format.name
            )));
        }
        if opts.firmware.is_some() && !has(Contents::Firmware) {
            return Err(Error::Invalid(format!(
                "--firmware: format `{}` has no Raspberry Pi firmware partition",
                format.name
            )));
        }
        if opts.disk_id.is_some() && format.table.kind != crate::format::TableType::Mbr {
            return Err(Error::Invalid(format!(
                "--disk-id: format `{}` has a GPT table, whose disk GUID derives from --seed",
                format.name
            )));
        }
        if opts
            .adds
            .iter()
            .any(|a| a.target == crate::add::AddTarget::Boot)
            && !has(Contents::Esp)
            && !has(Contents::Firmware)
        {
            return Err(Error::Invalid(format!(
                "--add-boot: format `{}` has no boot partition",
                format.name
            )));
        }
        Ok(Context {
            format,
            opts,
            ids: Ids::new(
                opts.seed.as_deref(),
                &format.name,
                &inputs.toplevel.to_string(),
            ),
            time: opts.epoch,
            compression: opts.output.compression.unwrap_or(format.compress),
        })
    }

    /// The free space asked for in the `auto`-sized root filesystem.
    pub fn root_free(&self) -> u64 {
        match self.opts.size {
            DiskSize::Auto { free: Some(f) } => f,
            _ => self.format.root_partition().free.map_or(0, |b| b.0),
        }
    }
}
