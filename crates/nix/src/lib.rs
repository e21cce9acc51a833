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

#![warn(missing_docs)]

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
    BootCounting, BootSpec, BootloaderSettings, FsIdentifier, GrubSettings, ImgbuildExt,
    LoaderKind, BOOTSPEC_V1, DEFAULT_BOOT_COUNTING_TRIES, IMGBUILD_JSON, IMGBUILD_V1,
    SPECIALISATION_V1,
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
    /// Text that is not a store path (`/nix/store/<32 base-32 chars>-<name>`).
    #[error("invalid store path `{}`: {reason}", short(path))]
    InvalidStorePath {
        /// The text.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Text that is not a NAR hash (`sha256:` + base-32 or hex, or SRI).
    #[error("invalid NAR hash `{}`: {reason}", short(input))]
    InvalidHash {
        /// The text.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A host file or directory could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// What was being done (`reading`, `opening`, `renaming into place`, ...).
        op: &'static str,
        /// The host path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A path that must exist does not.
    #[error("{path}: does not exist")]
    NotFound {
        /// The path (logical or host).
        path: PathBuf,
    },

    /// A store path of the closure is not in the store root.
    #[error("store path {path} is missing on disk (looked at {host})")]
    MissingStorePath {
        /// The store path.
        path: StorePath,
        /// Where it was looked for on the host.
        host: PathBuf,
    },

    /// A store path exists but cannot be read (permissions, I/O).
    #[error("store path {path} is not readable at {host}")]
    UnreadableStorePath {
        /// The store path.
        path: StorePath,
        /// Where it is on the host.
        host: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A path (`./result`, a symlink's target) that is not under the Nix store.
    #[error("{path}: not in the Nix store {store}")]
    NotInStore {
        /// The path.
        path: PathBuf,
        /// The store directory it should be in.
        store: PathBuf,
    },

    /// A symlink inside the store resolves to somewhere outside it.
    #[error("{path}: leaves the Nix store ({})", short(detail))]
    EscapesStore {
        /// The path being resolved.
        path: PathBuf,
        /// Where it leads.
        detail: String,
    },

    /// Resolving a path met more symlinks than Linux follows (40).
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop {
        /// The path being resolved.
        path: PathBuf,
    },

    /// A component of a path being resolved is not a directory.
    #[error("{path}: {component} is not a directory")]
    NotADirectory {
        /// The path being resolved.
        path: PathBuf,
        /// The component that is not a directory.
        component: PathBuf,
    },

    /// The path given as the system is not a NixOS toplevel.
    #[error("{path}: not a NixOS system toplevel: {}", short(reason))]
    NotToplevel {
        /// The path given.
        path: PathBuf,
        /// What it lacks.
        reason: String,
    },

    /// A line of a closureInfo file (`store-paths`, `registration`) cannot be parsed.
    #[error("{file}:{line}: {}", short(reason))]
    Malformed {
        /// The file.
        file: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },

    /// Inputs that contradict each other (a path listed twice, two files that disagree).
    #[error("{file}: {}", short(reason))]
    Inconsistent {
        /// The input (file, database or description).
        file: PathBuf,
        /// What contradicts what.
        reason: String,
    },

    /// The toplevel is not one of the closure's paths.
    #[error("toplevel {toplevel} is not in {source_desc}")]
    ToplevelNotInClosure {
        /// The toplevel.
        toplevel: StorePath,
        /// Where the closure came from (a closureInfo directory, a database).
        source_desc: String,
    },

    /// A path refers to a path the closure does not hold (it would not be complete).
    #[error("{path} references {reference}, which is not in the closure")]
    ReferenceOutsideClosure {
        /// The referring path.
        path: StorePath,
        /// The missing reference.
        reference: StorePath,
    },

    /// SQLite failed on a Nix database (read or written).
    #[error("nix database {db}")]
    Sqlite {
        /// The database file.
        db: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// A path is not registered as valid in the database.
    #[error("nix database {db}: {path} is not a valid path")]
    NotValidInDb {
        /// The database file.
        db: PathBuf,
        /// The path looked up.
        path: StorePath,
    },

    /// A row of the database holds what Nix would not write there.
    #[error("nix database {db}: {}: {}", short(path), short(reason))]
    BadDbRow {
        /// The database file.
        db: PathBuf,
        /// The row's path column.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A file's size changed while it was being hashed (NAR serialisation).
    #[error("{path}: file changed while reading ({expected} bytes expected, {actual} read)")]
    FileChanged {
        /// The host file.
        path: PathBuf,
        /// Its size when it was listed.
        expected: u64,
        /// The bytes read.
        actual: u64,
    },

    /// A store file that a NAR cannot hold (a FIFO, a device, a socket).
    #[error("{path}: unsupported file type for a NAR (only regular files, directories, symlinks)")]
    UnsupportedFileType {
        /// The host path.
        path: PathBuf,
    },

    /// A reference scan found a hash part that several store entries share.
    #[error(
        "hash part {hash} found in {referrer} matches several store entries: {}",
        candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
    )]
    AmbiguousHashPart {
        /// The 32-character hash part.
        hash: String,
        /// The path whose bytes hold it.
        referrer: StorePath,
        /// The store entries it matches.
        candidates: Vec<StorePath>,
    },

    /// Not chained but quoted, shortened: serde_json's message can quote the input (an
    /// unknown field's name, a string of the wrong type) at any length.
    #[error("{file}: invalid JSON: {}", short(&error.to_string()))]
    Json {
        /// The JSON file (`boot.json`).
        file: PathBuf,
        /// serde_json's error.
        error: serde_json::Error,
    },

    /// A `boot.json` that is JSON but not a bootspec imgbuild can use.
    #[error("{file}: {}", short(reason))]
    Bootspec {
        /// The file.
        file: PathBuf,
        /// What is wrong or missing.
        reason: String,
    },

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
