//! Errors: every one names the image, and where known the partition and the path in it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Where in an image something went wrong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Where {
    /// The image file.
    pub image: PathBuf,
    /// The partition, e.g. `2 (nixos)`; `None` for the image as a whole.
    pub partition: Option<String>,
    /// The path inside the filesystem.
    pub path: Option<String>,
}

impl Where {
    pub(crate) fn image(image: &Path) -> Self {
        Self {
            image: image.to_path_buf(),
            ..Self::default()
        }
    }

    /// The same place, at `path` (a very long path, from a directory loop, is shortened to
    /// its last 200 bytes in messages).
    pub(crate) fn with_path(&self, path: &[u8]) -> Self {
        let shown = if path.len() > 256 {
            format!("…{}", String::from_utf8_lossy(&path[path.len() - 200..]))
        } else {
            String::from_utf8_lossy(path).into_owned()
        };
        Self {
            path: Some(shown),
            ..self.clone()
        }
    }
}

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.image.display())?;
        if let Some(p) = &self.partition {
            write!(f, " partition {p}")?;
        }
        if let Some(p) = &self.path {
            write!(f, " `{p}`")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong reading an image. Corrupt or hostile images end here, never
/// in a panic, a hang or a huge allocation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the image failed (including reads past its end).
    #[error("{at}: {source}")]
    Io {
        at: Where,
        #[source]
        source: io::Error,
    },
    /// A host file (temporary file, copy destination) could not be written or created.
    #[error("`{}`: {source}", path.display())]
    Host {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The zstd stream is damaged.
    #[error("{at}: decompressing: {source}")]
    Decompress {
        at: Where,
        #[source]
        source: io::Error,
    },
    /// Something is bigger than we accept.
    #[error("{at}: {what} is {size} bytes, more than the limit of {max} bytes")]
    TooLarge {
        at: Where,
        what: &'static str,
        size: u64,
        max: u64,
    },
    /// A structure of the image is inconsistent.
    #[error("{at}: corrupt: {reason}")]
    Corrupt { at: Where, reason: String },
    /// A limit that protects against loops and resource exhaustion was reached.
    #[error("{at}: stopped: {what} (limit {limit})")]
    Limit { at: Where, what: String, limit: u64 },
    /// Something we deliberately do not read.
    #[error("{at}: unsupported: {what}")]
    Unsupported { at: Where, what: String },
    /// No partition matches the given number or label.
    #[error("`{}`: no partition `{spec}` (partitions: {available})", image.display())]
    NoSuchPartition {
        image: PathBuf,
        spec: String,
        available: String,
    },
    /// The partition holds no filesystem we can read.
    #[error("{at}: no ext4 or FAT filesystem{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    NoFilesystem { at: Where, detail: Option<String> },
    /// The path does not exist.
    #[error("{at}: no such file or directory")]
    NotFound { at: Where },
    /// A directory was expected.
    #[error("{at}: not a directory")]
    NotADirectory { at: Where },
    /// A file was expected.
    #[error("{at}: is a directory")]
    IsADirectory { at: Where },
    /// A symlink, device, fifo or socket where file data was expected.
    #[error("{at}: not a regular file")]
    NotAFile { at: Where },
    /// A directory entry name that cannot be copied safely (`/`, NUL, `.`, `..`, empty).
    #[error("{at}: refusing unsafe name {name:?}")]
    UnsafeName { at: Where, name: String },
    /// A name appears twice in one directory.
    #[error("{at}: the name {name:?} appears twice in the directory")]
    DuplicateName { at: Where, name: String },
    /// A third-party reader panicked; caught and turned into an error (see [`crate::guard`]).
    #[error("{at}: the {reader} reader failed on this image: {message}")]
    ReaderPanic {
        at: Where,
        reader: &'static str,
        message: String,
    },
    /// The copied-out Nix database could not be queried.
    #[error("{at}: reading the Nix database: {source}")]
    Sqlite {
        at: Where,
        #[source]
        source: Box<rusqlite::Error>,
    },
}

impl Error {
    /// Where the error happened, when it is inside the image.
    pub fn location(&self) -> Option<&Where> {
        match self {
            Error::Io { at, .. }
            | Error::Decompress { at, .. }
            | Error::TooLarge { at, .. }
            | Error::Corrupt { at, .. }
            | Error::Limit { at, .. }
            | Error::Unsupported { at, .. }
            | Error::NoFilesystem { at, .. }
            | Error::NotFound { at }
            | Error::NotADirectory { at }
            | Error::IsADirectory { at }
            | Error::NotAFile { at }
            | Error::UnsafeName { at, .. }
            | Error::DuplicateName { at, .. }
            | Error::ReaderPanic { at, .. }
            | Error::Sqlite { at, .. } => Some(at),
            Error::Host { .. } | Error::NoSuchPartition { .. } => None,
        }
    }

    /// True for "no such file" (used to probe optional files).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
