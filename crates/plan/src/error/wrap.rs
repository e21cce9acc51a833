//! Errors made from other errors: a full output file system, the disk map's, Nix's; and the
//! refusal of a toplevel not configured for a format.

use std::path::Path;

use super::Error;

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

impl Error {
    /// The refusal of a toplevel not configured for the format named `format`, because of
    /// `reason`, with what to do about it.
    pub(crate) fn not_for_format(format: &str, reason: String) -> Error {
        Error::NotForFormat {
            format: format.to_string(),
            reason,
            fix: format!(
                "import imgbuild's NixOS module (nixosModules.imgbuild; `lib.mkNodes` does) and \
                 set imgbuild.format = \"{format}\", or pass --no-system-check to build anyway"
            ),
        }
    }
}
