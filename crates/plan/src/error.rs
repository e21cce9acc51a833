//! The planner's errors: each names the path, partition, size or option at fault.

use std::path::{Path, PathBuf};

use crate::format;
use imgbuild_blockio as blockio;
use imgbuild_boot as boot;
use imgbuild_ext4 as ext4;
use imgbuild_fat as fat;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Format(#[from] format::FormatError),
    #[error("{what}")]
    Nix {
        what: String,
        #[source]
        source: imgbuild_nix::Error,
    },
    #[error("store path {path} of the closure cannot be read at `{}`", host.display())]
    StorePath {
        path: String,
        host: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the tree at `{what}`")]
    Tree {
        what: String,
        #[source]
        source: imgbuild_fstree::Error,
    },
    #[error("{op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("`{}`: directories nest too deep", path.display())]
    TooDeep { path: PathBuf },
    #[error("the toplevel is built for `{found}`, but format `{format}` is for `{expected}`")]
    WrongSystem {
        format: String,
        expected: String,
        found: String,
    },
    /// The toplevel is not configured for the format: the image would not boot, or not
    /// survive its first `nixos-rebuild`.
    #[error("the system is not configured for `{format}`: {reason}; {fix}")]
    NotForFormat {
        format: String,
        reason: String,
        fix: String,
    },
    #[error(
        "the Raspberry Pi firmware directory `{}` lacks what its config.txt makes the \
         firmware load: {missing} (the README says what the directory must hold)",
        dir.display()
    )]
    FirmwareIncomplete { dir: PathBuf, missing: String },
    #[error("no Raspberry Pi firmware directory: set `\"org.imgbuild.v1\": {{\"firmware\": \"/nix/store/...\"}}` in the toplevel's boot.json (the imgbuild NixOS module does), or pass --firmware DIR")]
    NoFirmware,
    #[error("no systemd-boot in the closure: looked for `{0}`")]
    NoSystemdBoot(String),
    #[error(
        "the image needs at least {needed} bytes ({}), but --size is {available} bytes ({}); \
         nothing was written",
        human_size(*.needed),
        human_size(*.available)
    )]
    DiskTooSmall { needed: u64, available: u64 },
    #[error(
        "{what} is {size} bytes ({}), more than {limit}: at most {max} bytes ({}); nothing was \
         written",
        human_size(*.size),
        human_size(*.max)
    )]
    DiskTooBig {
        /// What was too big: `--size`, `the disk`, `--free`, a partition.
        what: String,
        size: u64,
        max: u64,
        /// The limit, named: `the largest disk imgbuild builds`, `an MBR's 2^32 sectors`.
        limit: &'static str,
    },
    #[error("partition `{name}`: {source}")]
    Ext4 {
        name: String,
        #[source]
        source: ext4::Error,
    },
    #[error("partition `{name}`: {source}")]
    Fat {
        name: String,
        #[source]
        source: fat::Error,
    },
    #[error("boot loader files: {0}")]
    Boot(#[from] boot::Error),
    #[error("partition table: {0}")]
    Partition(#[from] imgbuild_partition::Error),
    #[error(transparent)]
    Block(#[from] blockio::Error),
    #[error("compressing: {0}")]
    Compress(#[from] imgbuild_compress::Error),
    #[error(transparent)]
    Container(#[from] imgbuild_container::Error),
    /// Streaming the disk's extent map: a source that cannot be read or changed, or a sink
    /// (the output, a hasher, the compressor) that failed.
    #[error(transparent)]
    Map(imgbuild_diskmap::Error),
    #[error("the output `{}` {reason}", path.display())]
    BadOutput { path: PathBuf, reason: String },
    /// The output could not be grown or written: its file system is full, or a file size
    /// limit (`ulimit -f`) or quota was hit.
    #[error("cannot write the output `{}`: {reason}", path.display())]
    OutputFull {
        path: PathBuf,
        reason: &'static str,
        #[source]
        source: Box<Error>,
    },
    #[error("--add to `{dest}`: {reason}")]
    AddClash { dest: String, reason: String },
    #[error("--add source `{}` {reason}", src.display())]
    AddSource { src: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    /// `--compress zstd` for a container, which is not compressed again.
    #[error(
        "--compress zstd: format `{format}` writes a `{container}` container, which is not \
         compressed again"
    )]
    NotRecompressed {
        format: String,
        container: &'static str,
    },
    /// `--level` for an output kind that compresses nothing.
    #[error("--level: format `{format}` writes an uncompressed `{container}` container")]
    LevelUnused {
        format: String,
        container: &'static str,
    },
    /// `--level` outside the output kind's levels.
    #[error(
        "--level {level}: format `{format}` is {codec}-compressed, whose levels are {min} to {max}"
    )]
    LevelOutOfRange {
        format: String,
        level: i32,
        codec: &'static str,
        min: i32,
        max: i32,
    },
    /// An option for a partition or table the format does not have.
    #[error("{option}: format `{format}` {reason}")]
    OptionNotApplicable {
        option: &'static str,
        format: String,
        reason: &'static str,
    },
    /// The worker thread pool could not be started.
    #[error("starting {threads} threads")]
    Threads {
        threads: usize,
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
    /// A file an input named that is not a regular file, too big, or not what its size says.
    #[error(transparent)]
    Input(#[from] imgbuild_blockio::InputError),
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use imgbuild_units::human_size;

/// Wraps an error whose cause is a full file system (`ENOSPC`), a file size limit (`EFBIG`,
/// e.g. `ulimit -f`) or a quota (`EDQUOT`) as [`Error::OutputFull`] naming `path`; other
/// errors pass through unchanged.
pub(crate) fn output_full(path: &Path) -> impl FnOnce(Error) -> Error + '_ {
    move |e| {
        let mut errno = None;
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cur {
            if let Some(n) = c
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.raw_os_error())
            {
                errno = Some(n);
                break;
            }
            cur = c.source();
        }
        let reason = match errno {
            Some(libc::ENOSPC) => "its file system is full (ENOSPC)",
            Some(libc::EFBIG) => {
                "the file would exceed the file size limit (`ulimit -f`) or the file system's \
                 largest file (EFBIG)"
            }
            Some(libc::EDQUOT) => "the disk quota is exhausted (EDQUOT)",
            _ => return e,
        };
        Error::OutputFull {
            path: path.to_path_buf(),
            reason,
            source: Box::new(e),
        }
    }
}

impl From<imgbuild_diskmap::Error> for Error {
    fn from(e: imgbuild_diskmap::Error) -> Self {
        match e {
            imgbuild_diskmap::Error::Interrupted => Error::Interrupted,
            e => Error::Map(e),
        }
    }
}

/// Wraps a Nix error with what was being done.
pub(crate) fn nix(what: impl Into<String>) -> impl FnOnce(imgbuild_nix::Error) -> Error {
    let what = what.into();
    move |source| Error::Nix { what, source }
}
