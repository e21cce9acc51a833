//! GRUB for i386-pc (PC BIOS) and x86_64-efi (UEFI) installed without running it: the two
//! pieces `grub-install` leaves on an MBR or GPT disk, and the EFI image it puts on an ESP,
//! built from the bytes of GRUB's platform directory (`lib/grub/i386-pc`,
//! `lib/grub/x86_64-efi`) that the caller reads.
//!
//! - [`CoreImage`]: `core.img` as `grub-mkimage -O i386-pc -p PREFIX [-c CONFIG] MODULES...`
//!   assembles it: modules resolved from `moddep.lst` in `grub-mkimage`'s order, `kernel.img`
//!   laid out from its ELF sections, the module info section (every module, the embedded
//!   config, the prefix), the whole LZMA-compressed behind `lzma_decompress.img` (its size
//!   fields patched), and `diskboot.img` in front. [`CoreImage::placed_at`] gives the bytes
//!   for a given first sector, as `grub-bios-setup` patches `diskboot.img`'s block list.
//! - [`boot_sector`]: `boot.img` for sector 0, with the caller's BPB area, disk signature and
//!   partition table kept and the core's sector and the boot drive fields patched, as
//!   `grub-bios-setup` does for a hard disk.
//!
//! - [`EfiImage`]: GRUB's x86_64-efi image (`BOOTX64.EFI`) as `grub-mkimage -O x86_64-efi`
//!   makes it: the relocatable `kernel.img` laid out and relocated, the same module section
//!   (8-byte aligned, uncompressed), wrapped in a PE32+ with a base relocation table; byte
//!   for byte equal to Debian's GRUB 2.06 `grub-mkimage` (`tests/efi_mkimage.rs`).
//!
//! [`Install`] gives the modules and prefix `grub-install` passes for a plain disk, and
//! [`installed_files`] the files it leaves in `GRUB_DIR/i386-pc`; [`core_sector`] and
//! [`read_core`] read an installed setup back (for `inspect`).
//! [`CoreImage::embedded`] is `grub-bios-setup`'s default (Reed-Solomon redundancy in the
//! room after the image), [`CoreImage::placed_at`] its `--no-rs-codes`.
//!
//! Judged against Debian's GRUB 2.06 (the crate's tests): the uncompressed payload equals
//! `grub-mkimage`'s byte for byte, and `grub-bios-setup` given our core writes the same
//! sectors as [`boot_sector`] and [`CoreImage::embedded`]. One difference from
//! `grub-mkimage`: the LZMA bytes come from xz's encoder (`liblzma`, pinned), not the LZMA
//! SDK encoder it links. Same parameters, but the two encoders choose matches differently
//! after the first ~1300 bytes, and xz's raw LZMA1 stream ends with an end-of-payload
//! marker (the SDK's, called without one, has none; GRUB's decompressor stops at the
//! uncompressed size and never reads it): sizes differ by a few bytes either way.
//!
//! Reproducible: the output is a function of the input bytes and the options alone.

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
// Casts that may truncate, lose a sign or wrap are spelled out (`try_from` with a reason);
// tests may cast freely.
#![cfg_attr(
    not(test),
    warn(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )
)]

mod boot;
mod core_img;
mod efi;
#[cfg(test)]
mod efi_tests;
mod elf;
mod elf64;
mod install;
mod kernel;
mod lzma;
mod moddep;
mod platform;
mod read;
mod rs;
#[cfg(test)]
mod tests;

pub use boot::boot_sector;
pub use core_img::{CoreImage, CoreOptions};
pub use efi::EfiImage;
pub use install::{
    installed_efi_files, installed_files, EfiInstall, Install, PartTable, REMOVABLE_EFI_PATH,
};
pub use lzma::{compress, decompress, MAX_PAYLOAD};
pub use moddep::{resolve, ModDeps};
pub use platform::Platform;
pub use read::{core_sector, read_core, CoreContents};

/// The size of a disk sector as GRUB's i386-pc boot code reads it.
pub const SECTOR: usize = 512;

/// What can go wrong assembling GRUB's boot images from the platform directory's files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file the image needs is not among the platform files the caller gave.
    #[error("GRUB platform file {0} is missing")]
    MissingFile(String),
    /// A fixed-size boot image (`boot.img`, `diskboot.img`) has the wrong size.
    #[error("GRUB platform file {name} is {size} bytes, expected {expected}")]
    WrongSize {
        /// The file.
        name: String,
        /// Its size.
        size: usize,
        /// The size GRUB's tools require.
        expected: usize,
    },
    /// A line of `moddep.lst` has no `:`.
    #[error("moddep.lst line {line}: no ':' after the module name")]
    ModDepLine {
        /// 1-based line number.
        line: usize,
    },
    /// A module's dependencies lead back to itself.
    #[error("moddep.lst: module {0} depends on itself")]
    ModDepCycle(String),
    /// A module name that is empty, has a path separator or is not a plain name.
    #[error("GRUB module name {0:?} is not a plain module name")]
    BadModuleName(String),
    /// `kernel.img` is not the 32-bit little-endian ELF that `grub-mkimage` expects.
    #[error("kernel.img: {0}")]
    Kernel(&'static str),
    /// `kernel.img` refers to a symbol it does not define (other than the two the layout
    /// defines, `__bss_start` and `_end`).
    #[error("kernel.img: undefined symbol {0}")]
    UndefinedSymbol(String),
    /// `kernel.img` has a relocation `grub-mkimage` cannot turn into a PE image.
    #[error("kernel.img: relocation type {0:#x} is not supported for x86_64-efi")]
    Relocation(u32),
    /// The prefix or embedded config contains a NUL byte, which would cut it short.
    #[error("the {0} contains a NUL byte")]
    Nul(&'static str),
    /// The image exceeds one of the limits of GRUB's i386-pc boot path.
    #[error("{what} is {size:#x} bytes, over GRUB's i386-pc limit of {limit:#x}")]
    TooBig {
        /// Which part.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An [`Install`] that `grub-install` could not have produced.
    #[error("GRUB install location: {0}")]
    BadInstall(&'static str),
    /// The space given for an embedded core image is smaller than the image.
    #[error("core.img needs {needed} sectors, only {available} are available")]
    NoRoom {
        /// Sectors available.
        available: u64,
        /// Sectors the image takes.
        needed: u64,
    },
    /// `lzma_decompress.img`'s no-Reed-Solomon length is unset (0xffff) or past the image.
    #[error("lzma_decompress.img's unprotected length {0:#x} does not fit the image")]
    NoRsLength(usize),
    /// A core image read from a disk is not one this crate can read.
    #[error("core image on the disk: {0}")]
    BadCore(&'static str),
    /// `diskboot.img`'s block list runs to the start of the sector without an empty entry.
    #[error("diskboot.img has no block list terminator")]
    NoBlocklistTerminator,
    /// The first sector given for the core image cannot hold it (sector 0 is the MBR).
    #[error("core.img cannot start at sector {0}")]
    BadCoreSector(u64),
    /// An LZMA payload ends (or its stream does) before its uncompressed size.
    #[error("the LZMA payload holds {got} bytes, its size field says {size}")]
    ShortPayload {
        /// Bytes decoded.
        got: usize,
        /// Bytes expected.
        size: usize,
    },
    /// liblzma failed, encoding or decoding.
    #[error("LZMA coding of core.img failed")]
    Lzma(#[source] liblzma::stream::Error),
}
