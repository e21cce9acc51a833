//! What the user asked for, in typed form, and the context every stage of a build reads:
//! the format, the ids and the time, decided once.

use std::path::PathBuf;

use crate::add::{Add, AddTarget};
use crate::format::{Compression, ContainerType, Contents, Format, PartSize, TableType};
use crate::ids::Ids;
use crate::{Error, Inputs, Result};

/// How big the disk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskSize {
    /// The minimum, with this much free space in the root filesystem (default: the format's
    /// `free`).
    Auto {
        /// Free space in the root filesystem (default: the format's `free`).
        free: Option<u64>,
    },
    /// Exactly this many bytes; the root partition takes what the others leave.
    Exact(u64),
}

/// How the image is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputOptions {
    /// The image file (`nixos.img`, `nixos.img.zst`); default: `nixos.EXT` (see
    /// [`Options::output_path`]).
    pub path: Option<PathBuf>,
    /// Compression (default: the format's).
    pub compression: Option<Compression>,
    /// Compression level (default: the output kind's; zstd 1..=22, default 3; deflate
    /// 1..=9, default 6).
    pub level: Option<i32>,
    /// Also write the uncompressed image when compressing.
    pub keep_raw: bool,
    /// The zstd level of the store image (squashfs) of a format with one (the ISOs, netboot,
    /// kexec, appliance): 1..=22, default 19 (nixpkgs' for its ISOs).
    pub store_level: Option<i32>,
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
    /// The image file and how it is written.
    pub output: OutputOptions,
    /// Seed for every GUID, UUID, volume id and hash seed; default: format + toplevel.
    pub seed: Option<String>,
    /// The disk's size: the minimum plus free space, or exact.
    pub size: DiskSize,
    /// Size of the EFI system partition (the format's `esp` partition).
    pub esp_size: Option<u64>,
    /// Worker threads (none or 0: every core; the output is the same for any count).
    pub threads: Option<usize>,
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
    /// Whether identical store files share one inode.
    pub dedup: Dedup,
    /// Refuse a toplevel whose fstab and boot loader do not match the format.
    pub check_system: bool,
    /// Sign the ESP's PE files and write systemd-boot's key enrolment files (systemd-boot
    /// formats).
    pub secure_boot: Option<crate::secure_boot::SecureBootOptions>,
}

impl Options {
    /// Options for `output` with every default.
    pub fn new(output: impl Into<PathBuf>) -> Options {
        Options {
            output: OutputOptions {
                path: Some(output.into()),
                compression: None,
                level: None,
                keep_raw: false,
                store_level: None,
            },
            seed: None,
            size: DiskSize::Auto { free: None },
            esp_size: None,
            threads: Some(1),
            firmware: None,
            disk_id: None,
            epoch: crate::DEFAULT_EPOCH,
            nix_path_registration: None,
            adds: Vec::new(),
            dedup: Dedup::Off,
            check_system: true,
            secure_boot: None,
        }
    }
}

/// The output of one build, every default resolved.
#[derive(Clone, Debug)]
pub struct Output {
    /// The image file: `--output`, or `nixos.EXT` (`.zst` added when compressed).
    pub path: PathBuf,
    /// The file the disk is written as (the format's container).
    pub container: ContainerType,
    /// `--compress`, or the format's.
    pub compression: Compression,
    /// `--level`, or the output kind's default (unused by a kind that compresses nothing).
    pub level: i32,
    /// Also write the raw disk beside a compressed image or a container.
    pub keep_raw: bool,
    /// `--store-level`, or 19: the store image's zstd level (a format with a store image).
    pub store_level: i32,
}

/// One build's decisions, made once: the format, the ids, the time, the options, and every
/// default resolved. The stages read these values; none re-defaults an option.
pub struct Context<'a> {
    /// The image format.
    pub format: &'a Format,
    /// The options as given (what has a default is read from the fields below).
    pub opts: &'a Options,
    /// Every GUID, UUID and volume id, derived from the seed.
    pub ids: Ids,
    /// `SOURCE_DATE_EPOCH`: the time of everything generated.
    pub time: i64,
    /// The output file and how it is written.
    pub output: Output,
    /// Worker threads: `--threads`, or every core for none or 0 (at least 1).
    pub threads: usize,
    /// The MBR disk signature: `--disk-id`, or derived from the seed (GPT disks ignore it).
    pub mbr_disk_id: u32,
    /// Whether the root filesystem carries `/nix-path-registration`: the option or the
    /// format's `[root] nix-path-registration`.
    pub nix_path_registration: bool,
    /// The free space asked for in the `auto`-sized root filesystem: `--free` or the
    /// format's.
    pub root_free: u64,
    /// Each partition's size in table order: `--esp-size` for the ESP, else the format's;
    /// `None` for the `auto`-sized one.
    pub partition_sizes: Vec<Option<u64>>,
}

/// Worker threads for `threads` as given: that many, or every core for none or 0.
pub fn threads(threads: Option<usize>) -> usize {
    match threads {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

impl Options {
    /// The output's compression: `--compress`, or the format's.
    fn compression(&self, format: &Format) -> Compression {
        self.output.compression.unwrap_or(format.compress)
    }

    /// The image path: `--output`, or `nixos.EXT` in the working directory, with the output
    /// kind's suffix for the compression (`nixos.img.zst`).
    pub fn output_path(&self, format: &Format) -> PathBuf {
        match &self.output.path {
            Some(p) => p.clone(),
            None => {
                let suffix = format
                    .container
                    .kind
                    .kind()
                    .suffix(self.compression(format));
                PathBuf::from(format!("nixos.{}{suffix}", format.extension))
            }
        }
    }
}

impl<'a> Context<'a> {
    /// Checks the options against the format and the inputs, and resolves every default.
    pub fn new(format: &'a Format, inputs: &Inputs, opts: &'a Options) -> Result<Context<'a>> {
        if !format.system.contains(&inputs.bootspec.system) {
            return Err(Error::WrongSystem {
                format: format.name.clone(),
                expected: format.system.to_string(),
                found: inputs.bootspec.system.clone(),
            });
        }
        check_applies(format, opts)?;
        let ids = Ids::new(
            opts.seed.as_deref(),
            &format.name,
            &inputs.toplevel.to_string(),
        );
        Ok(Context {
            format,
            opts,
            time: opts.epoch,
            output: Output {
                path: opts.output_path(format),
                container: format.container.kind,
                compression: opts.compression(format),
                level: level(format, opts.output.level)?,
                keep_raw: opts.output.keep_raw,
                store_level: store_level(format, opts.output.store_level)?,
            },
            threads: threads(opts.threads),
            mbr_disk_id: opts.disk_id.unwrap_or_else(|| ids.mbr_disk_id()),
            nix_path_registration: opts
                .nix_path_registration
                .unwrap_or(format.root.nix_path_registration),
            partition_sizes: format
                .partitions
                .iter()
                .map(|p| match (p.contents, opts.esp_size, p.size) {
                    (Contents::Esp, Some(n), _) => Some(n),
                    (_, _, PartSize::Fixed(n)) => Some(n),
                    (_, _, PartSize::Auto) => None,
                })
                .collect(),
            root_free: match opts.size {
                DiskSize::Auto { free: Some(f) } => f,
                // An ISO 9660 format has no root partition, so no free space in one.
                _ => format
                    .partitions
                    .iter()
                    .find(|p| p.contents == Contents::Root)
                    .and_then(|p| p.free)
                    .map_or(0, |b| b.0),
            },
            ids,
        })
    }
}

/// The compression level: `--level` within the output kind's levels, or its default.
fn level(format: &Format, given: Option<i32>) -> Result<i32> {
    let container = format.container.kind;
    match (container.kind().levels(), given) {
        (None, None) => Ok(0),
        (None, Some(_)) => Err(Error::LevelUnused {
            format: format.name.clone(),
            container: container.name(),
        }),
        (Some(l), Some(n)) if !(l.min..=l.max).contains(&n) => Err(Error::LevelOutOfRange {
            format: format.name.clone(),
            level: n,
            codec: l.codec,
            min: l.min,
            max: l.max,
        }),
        (Some(l), given) => Ok(given.unwrap_or(l.default)),
    }
}

/// The store image's default zstd level: nixpkgs' for ISOs (`isoImage.squashfsCompression`'s
/// default) and netboot.
pub(crate) const STORE_ZSTD_LEVEL: i32 = 19;

/// The store image's zstd level: `--store-level` (1..=22) for a format with a store image,
/// else nixpkgs' 19; refused for a format without one.
fn store_level(format: &Format, given: Option<i32>) -> Result<i32> {
    use crate::format::Volume;
    let has_image = matches!(
        format.volume,
        Volume::Iso9660 | Volume::Netboot | Volume::Kexec
    ) || format.store_partition().is_some();
    match given {
        None => Ok(STORE_ZSTD_LEVEL),
        Some(_) if !has_image => Err(Error::StoreLevelUnused {
            format: format.name.clone(),
        }),
        Some(n) if !(1..=22).contains(&n) => Err(Error::LevelOutOfRange {
            format: format.name.clone(),
            level: n,
            codec: "zstd (the store image)",
            min: 1,
            max: 22,
        }),
        Some(n) => Ok(n),
    }
}

/// Refuses an option the format has nothing for.
fn check_applies(format: &Format, opts: &Options) -> Result<()> {
    let container = format.container.kind;
    if !container.takes_compress() && opts.output.compression == Some(Compression::Zstd) {
        return Err(Error::NotRecompressed {
            format: format.name.clone(),
            container: container.name(),
        });
    }
    let has = |c: Contents| format.partitions.iter().any(|p| p.contents == c);
    let boot_adds = opts.adds.iter().any(|a| a.target == AddTarget::Boot);
    let refused = [
        (
            opts.esp_size.is_some() && !has(Contents::Esp),
            "--esp-size",
            "has no EFI system partition",
        ),
        (
            opts.firmware.is_some() && !has(Contents::Firmware),
            "--firmware",
            "has no Raspberry Pi firmware partition",
        ),
        (
            opts.disk_id.is_some() && format.table.kind != TableType::Mbr,
            "--disk-id",
            "has a GPT table, whose disk GUID derives from --seed",
        ),
        (
            !opts.adds.is_empty() && !has(Contents::Root),
            "--add",
            "has no root file system (an ISO's files are the system's)",
        ),
        (
            opts.size != DiskSize::Auto { free: None } && !has(Contents::Root),
            "--size",
            "is as large as its contents (no root file system to size)",
        ),
        (
            opts.secure_boot.is_some()
                && (!has(Contents::Esp)
                    || format.bootloader.kind != crate::format::Bootloader::SystemdBoot),
            "--secure-boot-key",
            "has no systemd-boot EFI system partition",
        ),
        (
            boot_adds && !has(Contents::Esp) && !has(Contents::Firmware),
            "--add-boot",
            "has no boot partition",
        ),
    ];
    match refused.into_iter().find(|(bad, _, _)| *bad) {
        Some((_, option, reason)) => Err(Error::OptionNotApplicable {
            option,
            format: format.name.clone(),
            reason,
        }),
        None => Ok(()),
    }
}
