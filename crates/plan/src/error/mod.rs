//! The planner's errors: each names the path, partition, size or option at fault.

use std::path::PathBuf;

use crate::format;
use imgbuild_blockio as blockio;
use imgbuild_boot as boot;
use imgbuild_ext4 as ext4;
use imgbuild_fat as fat;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
/// Why a build, a dry run or `imgbuild ext4` failed.
pub enum Error {
    #[error(transparent)]
    /// The format file.
    Format(#[from] format::FormatError),
    #[error("{what}")]
    /// Reading the closure or the Nix database (`what` says which).
    Nix {
        /// What was being read.
        what: String,
        #[source]
        /// The Nix reader's error.
        source: imgbuild_nix::Error,
    },
    #[error("store path {path} of the closure cannot be read at `{}`", host.display())]
    /// A store path of the closure that is missing or unreadable on the host.
    StorePath {
        /// The store path, as Nix names it.
        path: String,
        /// Where it was looked for on the host.
        host: PathBuf,
        #[source]
        /// Why it could not be read.
        source: std::io::Error,
    },
    #[error("building the tree at `{what}`")]
    /// A host tree (store path, `--add-tree`, firmware) that could not be scanned.
    Tree {
        /// The tree's root.
        what: String,
        #[source]
        /// Why it could not be scanned.
        source: imgbuild_fstree::Error,
    },
    #[error("{op} `{}`", path.display())]
    /// A host file operation that failed.
    Io {
        /// The operation (`reading`, `writing`).
        op: &'static str,
        /// The file.
        path: PathBuf,
        #[source]
        /// The host's error.
        source: std::io::Error,
    },
    #[error("`{}` is not a regular file", path.display())]
    /// An input that should be a regular file is not.
    NotAFile {
        /// The input.
        path: PathBuf,
    },
    #[error("`{}`: directories nest too deep", path.display())]
    /// A host tree nests deeper than imgbuild follows.
    TooDeep {
        /// The tree's root.
        path: PathBuf,
    },
    #[error("the toplevel is built for `{found}`, but format `{format}` is for `{expected}`")]
    /// The toplevel is for another Nix system than the format.
    WrongSystem {
        /// The format's name.
        format: String,
        /// The format's system.
        expected: String,
        /// The toplevel's system.
        found: String,
    },
    /// The toplevel is not configured for the format: the image would not boot, or not
    /// survive its first `nixos-rebuild`.
    #[error("the system is not configured for `{format}`: {reason}; {fix}")]
    NotForFormat {
        /// The format's name.
        format: String,
        /// What does not match.
        reason: String,
        /// What to change in the NixOS configuration.
        fix: String,
    },
    #[error(
        "the Raspberry Pi firmware directory `{}` lacks what its config.txt makes the \
         firmware load: {missing} (the README says what the directory must hold)",
        dir.display()
    )]
    /// The firmware directory lacks a file its config.txt makes the firmware load.
    FirmwareIncomplete {
        /// The firmware directory.
        dir: PathBuf,
        /// The files it lacks.
        missing: String,
    },
    #[error("no Raspberry Pi firmware directory: set `\"org.imgbuild.v1\": {{\"firmware\": \"/nix/store/...\"}}` in the toplevel's boot.json (the imgbuild NixOS module does), or pass --firmware DIR")]
    /// No Raspberry Pi firmware: neither boot.json nor `--firmware` names it.
    NoFirmware,
    #[error(
        "format `{format}` installs GRUB, but boot.json has no \
         `org.imgbuild.v1.bootloader.{key}` for it: build the system with imgbuild's NixOS \
         module and `imgbuild.format = \"{format}\"` (it records boot.loader.grub), or \
         choose a format for the system's boot loader"
    )]
    /// A GRUB format, but the closure's boot.json lacks the GRUB record (`key`: `type` when
    /// the recorded boot loader is not GRUB or absent, `grub` when the package is missing).
    NoGrubRecord {
        /// The format.
        format: String,
        /// The key of `org.imgbuild.v1.bootloader` that is missing.
        key: &'static str,
    },
    #[error("boot.loader.grub: {setting} is not supported: {reason}")]
    /// A recorded GRUB setting imgbuild cannot install as NixOS would.
    GrubUnsupported {
        /// The setting.
        setting: String,
        /// Why.
        reason: &'static str,
    },
    #[error("GRUB: {what}")]
    /// Building GRUB's boot images from the closure's GRUB package failed.
    Grub {
        /// What was being done.
        what: String,
        #[source]
        /// The GRUB crate's error.
        source: imgbuild_grub::Error,
    },
    #[error("building the unified kernel image: {what}")]
    /// The UKI could not be assembled (`[bootloader] uki = true`).
    Uki {
        /// What was being done.
        what: String,
        #[source]
        /// The UKI crate's error.
        source: imgbuild_uki::Error,
    },
    #[error("no systemd EFI stub in the closure for the unified kernel image: looked for `{0}`")]
    /// `[bootloader] uki = true` and the closure's systemd has no `linux<arch>.efi.stub`.
    NoUkiStub(String),
    #[error("the unified kernel image's {what} would be {size} bytes, more than the {max} held in memory")]
    /// The kernel, initrd and device tree of a UKI exceed what is read into memory.
    UkiTooBig {
        /// Which part.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
    },
    #[error("Secure Boot: {what}")]
    /// Signing the ESP's files or writing the key enrolment files failed.
    SecureBoot {
        /// What was being done (`signing `/EFI/BOOT/BOOTX64.EFI``).
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "--secure-boot-enroll {value}: the closure's systemd {systemd} does not know it \
         (systemd-boot 252 knows off, manual and force; if-safe came with 253)"
    )]
    /// A `secure-boot-enroll` value the closure's systemd-boot does not read.
    EnrollNotKnown {
        /// The value asked for.
        value: &'static str,
        /// The closure's systemd major version.
        systemd: u32,
    },
    #[error(
        "Secure Boot: {} signature(s) missing in `{}`: sign each .tbs there (e.g. `openssl dgst \
         -sha256 -sign KEY -out NAME.sig NAME.tbs`) and build again: {}",
        missing.len(),
        dir.display(),
        missing.join(", ")
    )]
    /// The two-step mode's first step: what must be signed was written.
    SignaturesNeeded {
        /// The signatures directory.
        dir: std::path::PathBuf,
        /// The `.tbs` files written.
        missing: Vec<String>,
    },
    #[error("the ESP has no loader/loader.conf in memory to add secure-boot-enroll to")]
    /// The systemd-boot ESP lacks the loader.conf the boot crate writes.
    NoLoaderConf,
    #[error("no systemd-boot in the closure: looked for `{0}`")]
    /// The closure holds no systemd-boot EFI binary (the path looked for).
    NoSystemdBoot(String),
    #[error(
        "the image needs at least {needed} bytes ({}), but --size is {available} bytes ({}); \
         nothing was written",
        human_size(*.needed),
        human_size(*.available)
    )]
    /// `--size` below what the image needs.
    DiskTooSmall {
        /// The smallest disk that holds the image, in bytes.
        needed: u64,
        /// `--size`, in bytes.
        available: u64,
    },
    #[error(
        "{what} is {size} bytes ({}), more than {limit}: at most {max} bytes ({}); nothing was \
         written",
        human_size(*.size),
        human_size(*.max)
    )]
    /// A size past a limit of the table, the filesystems or imgbuild.
    DiskTooBig {
        /// What was too big: `--size`, `the disk`, `--free`, a partition.
        what: String,
        /// The size asked for or needed, in bytes.
        size: u64,
        /// The largest allowed, in bytes.
        max: u64,
        /// The limit, named: `the largest disk imgbuild builds`, `an MBR's 2^32 sectors`.
        limit: &'static str,
    },
    #[error("partition `{name}`")]
    /// Planning or writing an ext4 filesystem failed.
    Ext4 {
        /// The partition's name (or the image's, for `imgbuild ext4`).
        name: String,
        #[source]
        /// The ext4 writer's error.
        source: ext4::Error,
    },
    #[error("partition `{name}`")]
    /// Planning or writing a FAT filesystem failed.
    Fat {
        /// The partition's name.
        name: String,
        #[source]
        /// The FAT writer's error.
        source: fat::Error,
    },
    #[error("boot loader files")]
    /// The boot loader's files or configuration could not be made.
    Boot(#[from] boot::Error),
    #[error("partition table")]
    /// The partition table could not be encoded.
    Partition(#[from] imgbuild_partition::Error),
    #[error(transparent)]
    /// Reading or writing a file range.
    Block(#[from] blockio::Error),
    #[error("compressing")]
    /// The zstd compressor failed.
    Compress(#[from] imgbuild_compress::Error),
    #[error(transparent)]
    /// A container (qcow2, VHD, ...) could not be written or cannot hold the disk.
    Container(#[from] imgbuild_container::Error),
    /// Streaming the disk's extent map: a source that cannot be read or changed, or a sink
    /// (the output, a hasher, the compressor) that failed.
    #[error(transparent)]
    Map(imgbuild_diskmap::Error),
    #[error("the output `{}` {reason}", path.display())]
    /// An output path that cannot be written or would replace an input.
    BadOutput {
        /// The output path given.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// The output could not be grown or written: its file system is full, or a file size
    /// limit (`ulimit -f`) or quota was hit.
    #[error("cannot write the output `{}`: {reason}", path.display())]
    OutputFull {
        /// The output file.
        path: PathBuf,
        /// Which limit was hit.
        reason: &'static str,
        #[source]
        /// The write that failed.
        source: Box<Error>,
    },
    #[error("--add to `{dest}`: {reason}")]
    /// An `--add` that clashes with the closure or another `--add`.
    AddClash {
        /// The destination in the image.
        dest: String,
        /// What it clashes with.
        reason: String,
    },
    #[error("--add source `{}` {reason}", src.display())]
    /// An `--add` source that cannot be added.
    AddSource {
        /// The host path.
        src: PathBuf,
        /// Why.
        reason: String,
    },
    /// The toplevel's boot.json holds a value imgbuild cannot use.
    #[error("boot.json of {toplevel}: {reason}")]
    BadBootSpec {
        /// The toplevel's store path.
        toplevel: String,
        /// What is wrong.
        reason: String,
    },
    /// A partition whose type is not of the format's table (validation refuses these).
    #[error("partition `{name}`: not {table} type")]
    WrongPartitionType {
        /// The partition's name.
        name: String,
        /// The table's type, with its article (`a GPT`).
        table: &'static str,
    },
    /// `--size` that is not a whole number of sectors.
    #[error("--size {size} is not a multiple of the {sector}-byte sector")]
    SizeNotSectors {
        /// The `--size` given, in bytes.
        size: u64,
        /// The sector size.
        sector: u64,
    },
    /// `--size` that is not a multiple of the container's `size-multiple`.
    #[error(
        "--size {size} ({}) is not a multiple of {}, which format `{format}` needs for its \
         `{container}` container",
        human_size(*.size),
        human_size(*.multiple)
    )]
    SizeNotContainerMultiple {
        /// The `--size` given, in bytes.
        size: u64,
        /// The container's `size-multiple`.
        multiple: u64,
        /// The format's name.
        format: String,
        /// The container's name.
        container: &'static str,
    },
    /// A partition's fixed `start` inside the space before it.
    #[error("partition `{name}` starts at {start} but the space before it ends at {free_from}")]
    PartitionOverlaps {
        /// The partition's name.
        name: String,
        /// Its fixed start.
        start: u64,
        /// Where the space before it ends.
        free_from: u64,
    },
    /// A partition's fixed `start` off the table's alignment.
    #[error("partition `{name}` start {start} is not aligned to {align}")]
    PartitionUnaligned {
        /// The partition's name.
        name: String,
        /// Its fixed start.
        start: u64,
        /// The table's alignment.
        align: u64,
    },
    /// A partition size that is zero or not a whole number of sectors.
    #[error("partition `{name}`: size {size} is not a positive multiple of 512")]
    PartitionSize {
        /// The partition's name.
        name: String,
        /// Its size in bytes.
        size: u64,
    },
    /// A boot loader timeout the boot loader's configuration cannot hold.
    #[error("boot loader timeout {seconds} s is out of range")]
    TimeoutOutOfRange {
        /// The timeout asked for.
        seconds: i64,
    },
    /// The Raspberry Pi firmware directory's `config.txt` is not a regular file.
    #[error("`{}`: config.txt is not a file", dir.display())]
    ConfigTxtNotAFile {
        /// The firmware directory.
        dir: PathBuf,
    },
    /// `--compress zstd` for a container, which is not compressed again.
    #[error(
        "--compress zstd: format `{format}` writes a `{container}` container, which is not \
         compressed again"
    )]
    NotRecompressed {
        /// The format's name.
        format: String,
        /// The container's name.
        container: &'static str,
    },
    /// `--level` for an output kind that compresses nothing.
    #[error("--level: format `{format}` writes an uncompressed `{container}` container")]
    LevelUnused {
        /// The format's name.
        format: String,
        /// The container's name.
        container: &'static str,
    },
    /// `--store-level` for a format without a store image.
    #[error(
        "--store-level: format `{format}` has no store image (only the ISOs, netboot, kexec \
         and formats with a `store` partition do)"
    )]
    StoreLevelUnused {
        /// The format's name.
        format: String,
    },
    /// `--level` outside the output kind's levels.
    #[error(
        "--level {level}: format `{format}` is {codec}-compressed, whose levels are {min} to {max}"
    )]
    LevelOutOfRange {
        /// The format's name.
        format: String,
        /// The level given.
        level: i32,
        /// The compressor (`zstd`, `deflate`).
        codec: &'static str,
        /// The fastest level.
        min: i32,
        /// The smallest-output level.
        max: i32,
    },
    /// An option for a partition or table the format does not have.
    #[error("{option}: format `{format}` {reason}")]
    OptionNotApplicable {
        /// The option (`--esp-size`).
        option: &'static str,
        /// The format's name.
        format: String,
        /// What the format lacks.
        reason: &'static str,
    },
    /// The worker thread pool could not be started.
    #[error("starting {threads} threads")]
    Threads {
        /// How many were asked for.
        threads: usize,
        #[source]
        /// Why the pool did not start.
        source: rayon::ThreadPoolBuildError,
    },
    /// A file an input named that is not a regular file, too big, or not what its size says.
    #[error(transparent)]
    Input(#[from] imgbuild_blockio::InputError),
    #[error("the dm-verity hash area of partition `{partition}`")]
    /// The store image could not be given a hash tree (empty, or not whole 4 KiB blocks).
    Verity {
        /// The data partition the hash area protects.
        partition: String,
        #[source]
        /// The hash tree's error.
        source: imgbuild_verity::Error,
    },
    #[error("writing the store image `{}`", path.display())]
    /// The squashfs store image (ISO, netboot) could not be written.
    Squashfs {
        /// The image file.
        path: PathBuf,
        #[source]
        /// The squashfs writer's error.
        source: imgbuild_squashfs::Error,
    },
    #[error(
        "boot.json has no \"org.imgbuild.v1\".iso.{key}: build the system with imgbuild's NixOS \
         module and imgbuild.format = \"{format}\""
    )]
    /// An ISO format's setting that the toplevel's boot.json lacks.
    IsoSettingMissing {
        /// The key under `"org.imgbuild.v1".iso` (`volumeID`, `syslinux`).
        key: &'static str,
        /// The format asked for.
        format: String,
    },
    #[error("boot.json's \"org.imgbuild.v1\".iso.{key} {reason}")]
    /// An ISO format's setting that is malformed.
    IsoSettingInvalid {
        /// The key under `"org.imgbuild.v1".iso`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    #[error(
        "the toplevel's imgbuild.json has no \"org.imgbuild.v1\".container.{key}: build the \
         system with imgbuild's NixOS module and imgbuild.format = \"{format}\""
    )]
    /// A container format's setting (metadata.yaml's properties) that imgbuild.json lacks.
    ContainerSettingMissing {
        /// The key under `"org.imgbuild.v1".container` (`description`, `os`, `release`).
        key: &'static str,
        /// The format asked for.
        format: String,
    },
    #[error("imgbuild.json's \"org.imgbuild.v1\".container.{key} {reason}")]
    /// A container format's setting that is malformed.
    ContainerSettingInvalid {
        /// The key under `"org.imgbuild.v1".container`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    #[error(
        "format `{format}` boots a kernel, but {toplevel} has none: no boot.json and no \
         kernel link, only the imgbuild.json of a container system (boot.isContainer); build \
         it as a container (lxc, lxc-metadata, proxmox-lxc, incus), or build a system for \
         `{format}`"
    )]
    /// A disk, ISO or netboot format given a container system's toplevel.
    NoKernel {
        /// The format asked for.
        format: String,
        /// The toplevel.
        toplevel: String,
    },
    #[error("planning the tar archive")]
    /// The tar volume could not be planned or mapped.
    Tar(#[from] imgbuild_tar::Error),
    #[error("planning the ISO 9660 volume")]
    /// The ISO 9660 volume could not be planned or mapped.
    Iso9660(#[from] imgbuild_iso9660::Error),
    #[error("the netboot initrd's cpio archive")]
    /// The store image does not fit a newc cpio member (4 GiB at most).
    Cpio(#[from] imgbuild_cpio::Error),
    #[error("the output directory `{}` {reason}", path.display())]
    /// A netboot directory that cannot be replaced.
    BadOutputDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    #[error("interrupted")]
    /// The build was interrupted (SIGINT, SIGTERM, SIGHUP); nothing was left at the output paths.
    Interrupted,
}

/// The planner's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use imgbuild_units::human_size;

mod wrap;
pub(crate) use wrap::{nix, output_full};
