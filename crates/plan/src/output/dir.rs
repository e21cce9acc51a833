//! An output that is a directory (the netboot directory, an appliance's sysupdate
//! artifacts): made as `OUT.tmp/`, synced, then put in place; a previous directory at `OUT`
//! that holds nothing but what such a build writes is swapped out atomically
//! (`RENAME_EXCHANGE`) and removed, so a failure before the rename leaves `OUT` as it was.

use std::fs::DirEntry;
use std::path::Path;

use crate::{Error, Result};

/// Which entries a directory of this kind may hold (and a build may therefore remove).
pub(crate) type Allowed<'a> = &'a dyn Fn(&DirEntry) -> bool;

/// The first entry of `dir` (its name) that `allowed` refuses; `None` when it holds nothing
/// else.
pub(crate) fn stranger(dir: &Path, allowed: Allowed) -> Result<Option<String>> {
    let io = |source| Error::Io {
        op: "listing",
        path: dir.to_path_buf(),
        source,
    };
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        if !allowed(&e) {
            return Ok(Some(e.file_name().to_string_lossy().into_owned()));
        }
    }
    Ok(None)
}

/// Removes `dir`, which must hold only entries `allowed` accepts; `what` names the kind of
/// build in the refusal.
pub(crate) fn remove(dir: &Path, allowed: Allowed, what: &str) -> Result<()> {
    if stranger(dir, allowed)?.is_some() {
        return Err(Error::BadOutputDir {
            path: dir.to_path_buf(),
            reason: format!("holds files {what} does not write: not removed"),
        });
    }
    std::fs::remove_dir_all(dir).map_err(|source| Error::Io {
        op: "removing",
        path: dir.to_path_buf(),
        source,
    })
}

/// `fsync` of the directory `dir` (its entries' names made durable).
pub(crate) fn sync(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            op: "syncing",
            path: dir.to_path_buf(),
            source,
        })
}

/// `tmp` renamed to `out`; a previous directory at `out` exchanged with it atomically, then
/// removed (it must hold only entries `allowed` accepts; `what` names the build).
pub(crate) fn put_in_place(tmp: &Path, out: &Path, allowed: Allowed, what: &str) -> Result<()> {
    let io = |op, source| Error::Io {
        op,
        path: out.to_path_buf(),
        source,
    };
    if std::fs::symlink_metadata(out).is_err() {
        return std::fs::rename(tmp, out).map_err(|e| io("renaming into place", e));
    }
    exchange(tmp, out).map_err(|e| io("exchanging the previous directory with", e))?;
    // `tmp` is now the previous directory.
    remove(tmp, allowed, what)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync(parent)?;
    }
    Ok(())
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: `a` and `b` swap names in one step.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b): (std::ffi::CString, std::ffi::CString) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated strings that outlive the call, which only reads
    // them; AT_FDCWD makes them relative to the working directory as `rename` would.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}
