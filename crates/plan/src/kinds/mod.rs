//! The output kinds: the file a disk is written as (raw, zstd, qcow2, VHD, ...), each in
//! its own file implementing [`kind::OutputKind`], registered by one line of `kinds!` below.
//!
//! A kind knows its name in format files, its extension, its compression and level rules and
//! how it makes the writer the disk is streamed into; it knows nothing of how the disk was
//! planned, so format files (which name kinds) and the output stage (which runs them) both
//! depend on this module and it on neither.

mod hashing;
mod kind;
mod zstd;

/// Declares each output kind's module and registers its type, in one line per kind.
macro_rules! kinds {
    ($($module:ident :: $kind:ident),* $(,)?) => {
        $(mod $module;)*
        /// Every output kind, by its format-file name; the first is the default (`raw`).
        const KINDS: &[&dyn kind::OutputKind] = &[$(&$module::$kind),*];
    };
}

// The registration list: `file::Type` of every output kind.
kinds! {
    raw::Raw,
    qcow2::Qcow2,
    vhd::Vhd,
    vhd_fixed::VhdFixed,
    gce::GceTar,
    vhdx::Vhdx,
    vmdk::Vmdk,
    ova::Ova,
    vma::Vma,
    gzip::Gzip,
}

pub use kind::{Compression, ContainerType};
pub(crate) use kind::{ImageWriter, WriterInput, Written};
