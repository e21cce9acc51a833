//! The files of a closure's description read whole (closureInfo's `store-paths` and
//! `registration`, `boot.json`): through [`imgbuild_blockio::open_input`], so a FIFO, a
//! device or a `/proc` file named by an input is refused at once instead of blocking or
//! filling memory, and each kind has its own size bound.

use std::path::Path;

use imgbuild_blockio::{InputError, InputKind};

use crate::{Error, Result};

/// closureInfo's `store-paths`: one line of about 80 bytes per path; 64 MiB is some 800 000
/// paths, far beyond any system closure.
pub(crate) const STORE_PATHS: InputKind = InputKind {
    what: "closureInfo store-paths",
    max_bytes: 64 << 20,
};

/// closureInfo's `registration`: about 1 KiB per path with its references.
pub(crate) const REGISTRATION: InputKind = InputKind {
    what: "closureInfo registration",
    max_bytes: 64 << 20,
};

/// The whole of `path`, a regular file of `kind`; a missing file is [`Error::NotFound`].
pub(crate) fn read(path: &Path, kind: InputKind) -> Result<Vec<u8>> {
    nix_error(path, imgbuild_blockio::read_input(path, kind))
}

/// A missing file is [`Error::NotFound`]; other input errors pass through.
fn nix_error<T>(path: &Path, r: imgbuild_blockio::InputResult<T>) -> Result<T> {
    r.map_err(|e| match e {
        InputError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::NotFound {
                path: path.to_owned(),
            }
        }
        e => Error::Input(e),
    })
}

/// The UTF-8 text of a regular file of `kind` that must not be a symlink: closureInfo writes its files as
/// regular files, and a Nix build's output could otherwise point them at any file of the
/// host (`registration -> /etc/shadow`), whose first line an error would quote.
/// Checked and read on one descriptor opened `O_NOFOLLOW`: a symlink swapped in after the
/// check fails the open instead of being followed.
pub(crate) fn read_text_no_symlink(path: &Path, kind: InputKind) -> Result<String> {
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.file_type().is_symlink() {
            return Err(Error::Inconsistent {
                file: path.to_owned(),
                reason: format!("is a symlink; a {} is a regular file", kind.what),
            });
        }
    }
    let bytes = nix_error(path, imgbuild_blockio::read_input_no_follow(path, kind))?;
    text(path, bytes)
}

/// `bytes` of `path` as UTF-8 text.
fn text(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| Error::Inconsistent {
        file: path.to_owned(),
        reason: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}
