//! Deterministic tar archives of an [`fstree::Tree`], and the one tar header encoder of
//! imgbuild ([`header`]).
//!
//! [`Archive::new`] walks the tree once and fixes every member: entries in the tree's order
//! (depth first, parents before their entries, names in byte order), each with the owner,
//! permission bits and modification time the tree gives it (the caller already made them
//! what it wants: this crate reads no clock and no host metadata). Regular files,
//! directories (stored with a trailing `/`), symlinks, character and block devices and
//! FIFOs; a node that several names share (a hard link) is stored with its data under its
//! first name and as a hard-link member under the others; a socket is refused (tar cannot
//! hold one). Numeric owners only, no user or group names, no atime or ctime.
//!
//! Members are POSIX ustar where everything fits and get a pax extended header in front
//! where something does not (see [`header`]). The archive ends in two zero blocks, padded to
//! a 10 KiB record as GNU tar and bsdtar pad theirs. [`Archive::size`] is the exact length
//! before anything is written; [`Archive::write`] streams into any `Write`, reading host
//! files in 1 MiB pieces, never a whole file in memory. Host files are opened through
//! [`blockio::PlannedSource`] (regular files only, no blocking open, still the size the tree
//! records). The same tree and options give the same bytes. [`Archive::map`] gives the same
//! bytes as a [`diskmap::Map`] instead (headers in memory, file data as ranges of the host
//! files), for a caller that streams it into several outputs at once.
//!
//! With [`Options::sparse`], host files holding runs of zeros become GNU sparse 1.0 members
//! (the zeros left out, decided by content, never by the host's allocation); without it
//! every file is stored whole.
//!
//! # Sparse members
//!
//! A file's data regions are its 4 KiB grains holding a non-zero byte, merged when
//! adjacent, the last cut at the file's end; a file ending in zeros gets a last empty
//! region at its end (as GNU tar writes it). They depend on the file's bytes only, never on
//! how the host file system allocated it: holes the file system reports (`SEEK_DATA`) are
//! skipped without reading, since they read as zeros, and everything else is read and
//! looked at. So the same bytes give the same archive whatever the host.
//!
//! The member's data (format 1.0, `GNU.sparse.major=1`, `GNU.sparse.minor=0` in its pax
//! header) is the map as decimal text: the number of regions, then each region's offset and
//! length, every number followed by a newline, padded with zeros to a block; then the
//! regions' bytes one after another.

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

use imgbuild_blockio as blockio;
use imgbuild_diskmap as diskmap;
use imgbuild_fstree as fstree;

mod archive;
pub mod header;
mod sparse;

pub use archive::{Archive, Options, RootEntry};

/// Why an archive cannot be planned or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A host file the tree names cannot be read, or is no longer the regular file of the
    /// size the tree records.
    #[error(transparent)]
    Source(#[from] blockio::SourceError),
    /// The output refused bytes.
    #[error("writing the tar archive")]
    Write(#[source] std::io::Error),
    /// The archive's map could not be built (a planning bug: extents overlap or overrun).
    #[error("mapping the tar archive")]
    Map(#[source] diskmap::Error),
    /// The tree holds a socket, which no tar format can store.
    #[error("`{path}` is a socket: a tar archive cannot hold one")]
    Socket {
        /// The socket's path in the tree.
        path: String,
    },
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
