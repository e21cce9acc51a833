//! Nix's own formats, and nothing about disk images, command lines or clocks.
//!
//! - [`StorePath`], [`StoreSubpath`], [`StoreRoot`]: logical `/nix/store/...` paths and where they
//!   live on the host (`<store_root>/nix/store/...`, e.g. a `nix-build --store DIR` chroot store).
//! - [`resolve_toplevel`]: `./result` (or a store path) to the NixOS system toplevel.
//! - [`Closure`] with [`PathInfo`]s from a closureInfo directory, a Nix `db.sqlite` (read-only) or
//!   a scan of the store (NAR hashing and reference scanning done here, like Nix does).
//! - [`nar_hash`], [`nar_dump`]: NAR serialisation exactly as `nix-store --dump`.
//! - [`Closure::registration_text`], [`write_db`], [`nix_state_files`]: what an image needs so
//!   that Nix on the target knows its store.
//! - [`BootSpec`]: bootspec v1 `boot.json` (or synthesised from an old toplevel).
//!
//! Registration time is a parameter; nothing here reads a clock or the environment.

mod bootspec;
mod closure;
mod db;
pub mod encoding;
mod hash;
mod input;
mod nar;
mod store_path;
#[cfg(feature = "testutil")]
pub mod testutil;
mod toplevel;

use std::io;
use std::path::PathBuf;

pub use bootspec::{
    BootCounting, BootSpec, BootloaderSettings, ImgbuildExt, LoaderKind, BOOTSPEC_V1,
    DEFAULT_BOOT_COUNTING_TRIES, IMGBUILD_V1, SPECIALISATION_V1,
};
pub use closure::{parse_registration, Closure, PathInfo};
pub use db::{
    nix_state_files, write_db, StateEntry, StateEntryKind, DB_PATH, NIX_SCHEMA_SQL,
    NIX_SCHEMA_VERSION,
};
pub use hash::NarHash;
pub use nar::{nar_dump, nar_hash};
pub use store_path::{StorePath, StoreRoot, StoreSubpath, STORE_DIR};
pub use toplevel::resolve_toplevel;

/// Everything that can go wrong in this crate. Messages name the offending path or input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid store path `{}`: {reason}", short(path))]
    InvalidStorePath { path: String, reason: &'static str },

    #[error("invalid NAR hash `{}`: {reason}", short(input))]
    InvalidHash { input: String, reason: &'static str },

    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path}: does not exist")]
    NotFound { path: PathBuf },

    #[error("store path {path} is missing on disk (looked at {host})")]
    MissingStorePath { path: StorePath, host: PathBuf },

    #[error("store path {path} is not readable at {host}")]
    UnreadableStorePath {
        path: StorePath,
        host: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path}: not in the Nix store {store}")]
    NotInStore { path: PathBuf, store: PathBuf },

    #[error("{path}: leaves the Nix store ({})", short(detail))]
    EscapesStore { path: PathBuf, detail: String },

    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: PathBuf },

    #[error("{path}: {component} is not a directory")]
    NotADirectory { path: PathBuf, component: PathBuf },

    #[error("{path}: not a NixOS system toplevel: {}", short(reason))]
    NotToplevel { path: PathBuf, reason: String },

    #[error("{file}:{line}: {}", short(reason))]
    Malformed {
        file: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("{file}: {}", short(reason))]
    Inconsistent { file: PathBuf, reason: String },

    #[error("toplevel {toplevel} is not in {source_desc}")]
    ToplevelNotInClosure {
        toplevel: StorePath,
        source_desc: String,
    },

    #[error("{path} references {reference}, which is not in the closure")]
    ReferenceOutsideClosure {
        path: StorePath,
        reference: StorePath,
    },

    #[error("nix database {db}")]
    Sqlite {
        db: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("nix database {db}: {path} is not a valid path")]
    NotValidInDb { db: PathBuf, path: StorePath },

    #[error("nix database {db}: {}: {}", short(path), short(reason))]
    BadDbRow {
        db: PathBuf,
        path: String,
        reason: String,
    },

    #[error("{path}: file changed while reading ({expected} bytes expected, {actual} read)")]
    FileChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },

    #[error("{path}: unsupported file type for a NAR (only regular files, directories, symlinks)")]
    UnsupportedFileType { path: PathBuf },

    #[error(
        "hash part {hash} found in {referrer} matches several store entries: {}",
        candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
    )]
    AmbiguousHashPart {
        hash: String,
        referrer: StorePath,
        candidates: Vec<StorePath>,
    },

    /// Not chained but quoted, shortened: serde_json's message can quote the input (an
    /// unknown field's name, a string of the wrong type) at any length.
    #[error("{file}: invalid JSON: {}", short(&error.to_string()))]
    Json {
        file: PathBuf,
        error: serde_json::Error,
    },

    #[error("{file}: {}", short(reason))]
    Bootspec { file: PathBuf, reason: String },

    /// An input file that is not a regular file, too big, or not what its size says.
    #[error(transparent)]
    Input(#[from] imgbuild_blockio::InputError),
}

/// The most characters of an input's text (a path, a value, a reason quoting one) an error
/// message shows: a huge line or value is not echoed whole; the longest store path (255)
/// still is.
const QUOTE_MAX: usize = 256;

/// `s` for a message: control characters escaped, at most [`QUOTE_MAX`] characters (then `…`).
fn short(s: &str) -> String {
    imgbuild_blockio::excerpt(s, QUOTE_MAX)
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}
