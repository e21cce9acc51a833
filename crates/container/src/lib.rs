//! Disk image containers written straight from the disk's extent map: qcow2, VHD (fixed and
//! dynamic) and the GNU sparse tar Google Compute Engine takes.
//!
//! Which blocks a container stores is decided from the map before a byte is written (a block
//! is stored when it overlaps an extent with contents; free space and zero extents are not),
//! so every table is known up front and the container file is written front to back in one
//! pass, sequentially, into any [`std::io::Write`]: the caller can hash it, count it or
//! compress it on the way (the GCE tar goes through gzip). The disk's bytes come in once, as
//! a [`Sink`](imgbuild_diskmap::Sink) of [`imgbuild_diskmap::stream`].
//!
//! - [`Qcow2`]: qcow2 version 3, 64 KiB clusters, 16-bit refcounts, only clusters holding
//!   data stored;
//! - [`Vhd`]: dynamic VHD (2 MiB blocks, a block allocation table, only blocks holding data
//!   stored); [`vhd::fixed_footer`] is the 512 bytes that follow the raw disk in a fixed VHD
//!   (Azure's format), which the caller writes as a raw sparse file;
//! - [`Vhdx`]: dynamic VHDX (2 MiB blocks, no log entries), Hyper-V's format;
//! - [`Vmdk`]: stream-optimized VMDK (compressed grains, tables at the end), what OVA
//!   packages carry;
//! - [`Ova`]: an OVF package (descriptor, that VMDK, manifest) in a tar, the descriptor
//!   and the VMDK's tar header written last into space reserved at the front;
//! - [`Vma`]: Proxmox's VMA backup archive (configuration files and the disk in extents of
//!   64 KiB clusters, only non-zero 4 KiB blocks stored, MD5-checked headers);
//! - [`GceTar`]: `disk.raw` alone in an old-GNU sparse tar (holes not stored), to be
//!   gzip-compressed: Google Compute Engine's image format.
//!
//! Every id comes in as a parameter (derived from the build's seed by the caller) and every
//! time from `SOURCE_DATE_EPOCH`; no field records the writing program or its version. The
//! same disk and parameters give the same bytes. This crate knows nothing of Nix, partitions
//! or filesystems.

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

use std::io::Write;

mod blocks;
pub mod gce;
pub mod ova;
pub mod qcow2;
pub mod vhd;
pub mod vhdx;
pub mod vma;
pub mod vmdk;

pub use gce::GceTar;
pub use ova::{Members, Ova};
pub use qcow2::Qcow2;
pub use vhd::Vhd;
pub use vhdx::Vhdx;
pub use vma::Vma;
pub use vmdk::Vmdk;

/// What a container records about the disk besides its bytes.
#[derive(Clone, Debug)]
pub struct Params {
    /// Virtual disk size in bytes (the map's length).
    pub disk_size: u64,
    /// The container's own unique id (VHD unique id, VMDK CID...), derived from the seed.
    pub id: [u8; 16],
    /// `SOURCE_DATE_EPOCH`: the time containers record.
    pub time: i64,
}

/// Why a container cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The output refused a write.
    #[error("writing the {format} container at byte {offset}")]
    Write {
        /// The container format (`qcow2`, `vhd`, ...).
        format: &'static str,
        /// The container file's offset of the failed write.
        offset: u64,
        /// What the output said.
        #[source]
        source: std::io::Error,
    },
    /// A disk size that is not a whole number of the format's sectors.
    #[error("{format}: {disk_size} bytes is not a whole number of {sector}-byte sectors")]
    NotWholeSectors {
        /// The container format.
        format: &'static str,
        /// The disk size given, in bytes.
        disk_size: u64,
        /// The format's sector size, in bytes.
        sector: u64,
    },
    /// A disk larger than the format can describe.
    #[error("{format}: {disk_size} bytes is more than the {max} bytes it holds{hint}")]
    DiskTooLarge {
        /// The container format.
        format: &'static str,
        /// The disk size given, in bytes.
        disk_size: u64,
        /// The format's largest disk, in bytes.
        max: u64,
        /// What to use instead, when there is something (` (use vhdx)`), else empty.
        hint: &'static str,
    },
    /// A stream-optimized VMDK whose compressed grains reach past the 2 TiB its 32-bit
    /// sector numbers address.
    #[error("vmdk: the compressed disk exceeds 2 TiB")]
    VmdkTooLarge,
    /// A grain that could not be compressed.
    #[error("vmdk: compressing grains")]
    Compress(#[source] std::io::Error),
    /// A VMA blob (a configuration file, a name) longer than its 16-bit length field.
    #[error("vma: a header blob of {len} bytes is more than 65535")]
    VmaBlobTooLarge {
        /// The blob's length.
        len: usize,
    },
    /// More configuration files than a VMA header holds.
    #[error("vma: {count} configuration files, at most 256")]
    VmaTooManyConfigs {
        /// The number given.
        count: usize,
    },
    /// An OVA machine name with characters other than letters, digits, `-`, `_` and `.`.
    #[error("ova: the machine name `{name}` must be letters, digits, - _ .")]
    BadMachineName {
        /// The name given.
        name: String,
    },
}

/// The result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What disk sizes a format describes: whole sectors, up to a largest size.
pub(crate) struct DiskLimits {
    /// The format's name in errors.
    pub format: &'static str,
    /// Its sector size, in bytes.
    pub sector: u64,
    /// Its largest disk, in bytes.
    pub max: u64,
    /// What to use for a larger disk (` (use vhdx)`), or empty.
    pub hint: &'static str,
}

impl DiskLimits {
    /// Refuses a disk size that is not whole sectors or over the largest.
    pub(crate) fn check(&self, disk_size: u64) -> Result<()> {
        if !disk_size.is_multiple_of(self.sector) {
            return Err(Error::NotWholeSectors {
                format: self.format,
                disk_size,
                sector: self.sector,
            });
        }
        if disk_size > self.max {
            return Err(Error::DiskTooLarge {
                format: self.format,
                disk_size,
                max: self.max,
                hint: self.hint,
            });
        }
        Ok(())
    }
}

/// The container file being written front to back: where it is, errors naming the offset.
pub(crate) struct Out<W> {
    w: W,
    pos: u64,
    format: &'static str,
}

impl<W: Write> Out<W> {
    fn new(w: W, format: &'static str) -> Self {
        Out { w, pos: 0, format }
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).map_err(|source| Error::Write {
            format: self.format,
            offset: self.pos,
            source,
        })?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> Result<()> {
        static ZEROS: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            self.put(&ZEROS[..to_usize(k)])?;
            n -= k;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.w.flush().map_err(|source| Error::Write {
            format: self.format,
            offset: self.pos,
            source,
        })
    }
}

/// Every size handled in memory here is a block or a table, far below the address space.
pub(crate) use imgbuild_diskmap::to_usize;

/// Big-endian field writer over a fixed buffer.
pub(crate) fn put(buf: &mut [u8], at: usize, v: &[u8]) {
    buf[at..at + v.len()].copy_from_slice(v);
}

#[cfg(test)]
mod tests;
