//! A one-pass ISO 9660 writer for a file tree known in advance, with Rock Ridge and El
//! Torito.
//!
//! [`plan`] decides every block of the volume for an [`fstree::Tree`] and [`Options`];
//! [`Plan::map`] then gives the volume's bytes as an [`imgbuild_diskmap::Map`]: descriptors,
//! path tables, boot catalog, directories and continuation areas encoded in memory, each
//! file's data referenced from its source file (holes as zeros), never copied into memory
//! (but the BIOS boot image when its boot information table is patched in, bounded by
//! [`MAX_PATCHED_IMAGE`]).
//!
//! Layout, in blocks of 2048 bytes: the system area (blocks 0..16, bytes the caller gives to
//! [`Plan::map`]: an isohybrid MBR and GPT), the primary volume descriptor (16), the El
//! Torito boot record (17, with boot entries), the terminator, the little-endian then the
//! big-endian path table, the boot catalog when no path in the tree shows it, every
//! directory in path table order (breadth first, each directory's subdirectories in
//! identifier order), the Rock Ridge continuation areas, then the file data in the same
//! order, each file contiguous (a node named twice is stored once). Empty files, symlinks and
//! devices point at block 0 with length 0.
//!
//! Names: ISO 9660 identifiers of d-characters, at most 30 (files) or 31 (directories)
//! characters (see `names.rs`),
//! collisions resolved in the tree's byte order with `~N`; Rock Ridge (`RRIP_1991A`: `SP`
//! and `ER` on the root, `PX`, `TF`, `NM`, `SL`, `PN`, `CE` continuation areas) carries the
//! real names, modes, owners, times, symlink targets and device numbers (7-Zip reads no
//! continuation areas: there, a name too long for its record, about 100 bytes, shows as its
//! ISO 9660 identifier, and a symlink whose target went to one shows as an empty file).
//! Records are sorted
//! as ECMA-119 9.3 says. Directories deeper than ECMA-119's 8 levels are written as they are
//! (no Rock Ridge relocation; every reader used in the tests accepts them) up to
//! [`MAX_DEPTH`]. A file over 4 GiB - 2 KiB is written as a multi-extent file: consecutive
//! records of the same name, each for at most [`MAX_EXTENT`] bytes of one contiguous run.
//!
//! Everything written comes from the tree and the options: the descriptors' times are
//! [`Options::time`], the records' dates the nodes' mtimes (UTC), so the same input gives
//! the same bytes.
//!
//! # Compared with nixpkgs' ISO
//!
//! nixpkgs (`nixos/lib/make-iso9660-image.sh`) runs `xorriso -as mkisofs -iso-level 3
//! -full-iso9660-filenames -joliet -r` with `-eltorito-boot` (`-no-emul-boot
//! -boot-load-size 4 -boot-info-table`, isolinux sorted first), `-eltorito-alt-boot -e
//! EFI_IMAGE -no-emul-boot -isohybrid-gpt-basdat`, `-isohybrid-mbr` (syslinux's
//! `isohdpfx.bin`) and every file date set to `SOURCE_DATE_EPOCH`. Here: no Joliet tree;
//! the same 30-character identifiers (ECMA-119 level 3 only allows more extents, which is
//! what a file over 4 GiB uses); modes and owners as the tree says (`-r` would rationalise
//! them: the caller sets them in the tree); no 300 KiB tail padding; file data in tree
//! order (the caller can keep boot files near the start by naming); the MBR and GPT are
//! the caller's, in the system area, from [`Plan::efi_image`] and [`Plan::bios_image`].
//!
//! This crate knows nothing of Nix, partitions, boot loaders or clocks.

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
// Casts that may truncate, lose a sign or wrap are spelled out (`try_from` with a reason,
// `to_usize` for in-memory lengths); tests may cast freely.
#![cfg_attr(
    not(test),
    warn(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )
)]

use imgbuild_fstree as fstree;

mod encode;
mod layout;
mod map;
mod names;
mod susp;

pub use encode::BLOCK;
pub use layout::Plan;

/// Deepest directory (the root is depth 0). ECMA-119 allows 8; Rock Ridge readers read more.
pub const MAX_DEPTH: usize = 128;
/// Longest name of an entry, in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Longest symlink target, in bytes (Linux's `PATH_MAX` minus its NUL).
pub const MAX_SYMLINK: usize = 4095;
/// Most directories: path table records name their parent with 16 bits.
pub const MAX_DIRS: usize = 65535;
/// Most bytes in one extent of a file (4 GiB - 2 KiB, a whole number of blocks).
pub const MAX_EXTENT: u64 = 0xFFFF_F800;
/// Largest boot image whose boot information table is patched (read into memory).
pub const MAX_PATCHED_IMAGE: u64 = 16 << 20;
/// Bytes of the system area (blocks 0..16).
pub const SYSTEM_AREA: usize = 32768;

/// The BIOS El Torito entry: a no-emulation image, e.g. isolinux's `isolinux.bin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BiosBoot {
    /// Path of the image in the tree (`isolinux/isolinux.bin`).
    pub image: Vec<u8>,
    /// 512-byte sectors the BIOS loads (`-boot-load-size`, 4 for isolinux).
    pub load_sectors: u16,
    /// Patch the boot information table into bytes 8..64 of the image, in the map only
    /// (`-boot-info-table`: isolinux needs it to find the rest of itself).
    pub boot_info_table: bool,
}

/// The UEFI El Torito entry (platform 0xEF): an image of a FAT file system (the ESP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EfiBoot {
    /// Path of the image in the tree (`boot/efi.img`).
    pub image: Vec<u8>,
    /// 512-byte sectors in the catalog entry; `None`: the image's size in sectors, at most
    /// 65535 (what xorriso writes for `-e`).
    pub load_sectors: Option<u16>,
}

/// A file whose bytes the caller gives as a map to [`Plan::map_with`] (e.g. a FAT image
/// planned but not written); its tree node only gives its size.
#[derive(Debug)]
pub struct Supplied {
    /// The file's path in the tree (`boot/efi.img`).
    pub path: Vec<u8>,
    /// Its bytes: a map exactly as long as the file.
    pub map: imgbuild_diskmap::Map,
}

/// What the caller decides about the volume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Volume identifier, at most 32 printable ASCII characters, kept as given (NixOS finds
    /// its ISO by this label).
    pub volume_id: String,
    /// System identifier, at most 32 printable ASCII characters.
    pub system_id: String,
    /// Publisher identifier, at most 128 printable ASCII characters.
    pub publisher_id: String,
    /// Data preparer identifier, at most 128 printable ASCII characters.
    pub preparer_id: String,
    /// Application identifier, at most 128 printable ASCII characters.
    pub application_id: String,
    /// Creation and modification time of the volume, Unix seconds.
    pub time: i64,
    /// The BIOS boot entry, the default entry when present.
    pub bios: Option<BiosBoot>,
    /// The UEFI boot entry.
    pub efi: Option<EfiBoot>,
    /// Where the boot catalog shows in the tree (`isolinux/boot.cat`): a regular file of
    /// exactly one block (2048 bytes) that the caller put there, whose bytes become the
    /// catalog's. `None`: the catalog is in a block no directory names.
    pub catalog: Option<Vec<u8>>,
}

/// Why a volume cannot be planned or mapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An identifier in [`Options`] is too long or not printable ASCII.
    #[error("the {field} {value:?} must be at most {max} printable ASCII characters")]
    BadIdentifier {
        /// Which option.
        field: &'static str,
        /// Its value.
        value: String,
        /// Its limit.
        max: usize,
    },
    /// A name longer than [`MAX_NAME`].
    #[error("`{path}`: a name of {len} bytes is longer than {MAX_NAME}")]
    NameTooLong {
        /// The entry.
        path: String,
        /// Its name's length.
        len: usize,
    },
    /// A directory deeper than [`MAX_DEPTH`].
    #[error("`{path}` is {depth} directories deep, more than {MAX_DEPTH}")]
    TooDeep {
        /// The directory.
        path: String,
        /// Its depth.
        depth: usize,
    },
    /// More directories than [`MAX_DIRS`].
    #[error("the tree has more than {MAX_DIRS} directories (path tables number them in 16 bits)")]
    TooManyDirs,
    /// A symlink target longer than [`MAX_SYMLINK`] or empty.
    #[error("`{path}`: a symlink target of {len} bytes (1 to {MAX_SYMLINK} allowed)")]
    BadSymlink {
        /// The symlink.
        path: String,
        /// Its target's length.
        len: usize,
    },
    /// The volume would have 2^32 blocks or more.
    #[error("the volume needs {blocks} blocks of 2048 bytes; ISO 9660 addresses fewer than 2^32")]
    TooBig {
        /// Blocks needed.
        blocks: u64,
    },
    /// A boot image or the catalog path names no regular file in the tree.
    #[error("the {what} `{path}` is not a regular file in the tree")]
    NotAFile {
        /// `BIOS boot image`, `UEFI boot image` or `boot catalog`.
        what: &'static str,
        /// The path.
        path: String,
    },
    /// The catalog placeholder is not one block.
    #[error("the boot catalog placeholder `{path}` has {size} bytes; it must have 2048")]
    CatalogSize {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
    },
    /// A boot image too big for its entry.
    #[error("the {what} `{path}` has {size} bytes, more than {max}")]
    BootImageTooBig {
        /// `BIOS boot image` or `UEFI boot image`.
        what: &'static str,
        /// The path.
        path: String,
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// A supplied map whose length is not its file's size, or that names the BIOS boot
    /// image or the catalog (whose bytes this crate writes).
    #[error("the map supplied for `{path}` has {map_len} bytes, the file {size} (or it is the BIOS boot image or the catalog)")]
    SuppliedMismatch {
        /// The file.
        path: String,
        /// Its planned size.
        size: u64,
        /// The supplied map's length.
        map_len: u64,
    },
    /// The system area given to [`Plan::map`] is over 32 KiB.
    #[error("a system area of {len} bytes is more than {SYSTEM_AREA}")]
    SystemAreaTooBig {
        /// Its length.
        len: usize,
    },
    /// The tree given to [`Plan::map`] is not the planned one.
    #[error("`{path}` is not what was planned (the tree changed between plan and map)")]
    TreeChanged {
        /// The entry.
        path: String,
    },
    /// The host file of a tree entry cannot be read, or is no longer the regular file of
    /// the size the tree records.
    #[error("the source of `{path}`")]
    Source {
        /// The entry's path in the tree.
        path: String,
        /// What is wrong with the host file.
        #[source]
        source: imgbuild_blockio::SourceError,
    },
    /// The map could not be built.
    #[error("building the ISO 9660 map")]
    Map(#[from] imgbuild_diskmap::Error),
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a file's data lies in the volume: `bytes` bytes from block `lba` on, contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First block (2048 bytes).
    pub lba: u32,
    /// Bytes of data (the last block is padded with zeros).
    pub bytes: u64,
}

/// Plans the volume for `tree`.
pub fn plan(tree: &fstree::Tree, opts: &Options) -> Result<Plan> {
    layout::plan(tree, opts)
}
