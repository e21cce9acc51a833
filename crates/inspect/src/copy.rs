//! Copying files and trees out of an image onto the host.

use std::ffi::OsStr;
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::fs::{Entry, Filesystem, Kind};
use crate::path::normalize;
use crate::path::parent_and_name;
use crate::{Error, Result};
use serde::Serialize;

fn host(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Host {
        path: path.to_path_buf(),
        source,
    }
}

/// Seconds since the epoch as a `SystemTime`; out-of-range values (a corrupt inode) become
/// the epoch rather than an overflow.
fn time(secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// Sets atime and mtime; best effort (a time the host filesystem cannot store is not worth
/// failing a copy for).
fn set_time(f: &File, secs: i64) {
    let _ = f.set_times(
        FileTimes::new()
            .set_modified(time(secs))
            .set_accessed(time(secs)),
    );
}

/// What [`copy_out`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CopyStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Devices, fifos and sockets, which are not copied.
    pub skipped: u64,
    /// Bytes of file data.
    pub bytes: u64,
}

/// Copies `path` of `fs` (a file, symlink or whole tree) to the host path `dest`, like
/// `cp -a` without owners: modes and mtimes kept, symlinks copied as symlinks, holes (zero
/// 4 KiB blocks) left as holes. If `dest` is an existing directory, the copy goes inside it
/// under the source's name. Never writes outside `dest`: unsafe names and names seen twice
/// are errors, and nothing existing is overwritten.
pub fn copy_out(fs: &Filesystem, path: &[u8], dest: &Path) -> Result<CopyStats> {
    copy_normalized(fs, &normalize(path), dest)
}

fn copy_normalized(fs: &Filesystem, src: &[u8], dest: &Path) -> Result<CopyStats> {
    // `cp SRC DEST`: into DEST when it is an existing directory, else as DEST.
    let (target, merge_root) = match fs::metadata(dest) {
        Ok(m) if m.is_dir() => match parent_and_name(src) {
            Some((_, name)) => (dest.join(OsStr::from_bytes(name)), false),
            // The root of the filesystem goes into DEST itself.
            None => (dest.to_path_buf(), true),
        },
        _ => (dest.to_path_buf(), false),
    };
    if !merge_root && fs::symlink_metadata(&target).is_ok() {
        return Err(Error::Host {
            path: target,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists; refusing to overwrite",
            ),
        });
    }
    let max_bytes = fs.limits().max_copy_bytes.unwrap_or_else(|| {
        fs.info()
            .summary
            .size
            .saturating_mul(4)
            .saturating_add(1 << 30)
    });
    let mut stats = CopyStats::default();
    // Directories get their real (possibly read-only) modes and mtimes after their contents.
    let mut dirs: Vec<(PathBuf, u16, i64)> = Vec::new();
    // The walk reports paths under the canonical form of `src`.
    let src_len = match fs.metadata(src) {
        Ok(m) if m.kind == Kind::Dir => fs.canonicalize(src)?.len(),
        _ => src.len(),
    };
    let mut buf = vec![0u8; 256 << 10];
    fs.walk(src, |path, e, _depth| {
        let rel = &path[src_len.min(path.len())..];
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        let to = if rel.is_empty() {
            target.clone()
        } else {
            target.join(OsStr::from_bytes(rel))
        };
        match e.kind {
            Kind::Dir => {
                if !(merge_root && rel.is_empty()) {
                    fs::create_dir(&to).map_err(host(&to))?;
                    fs::set_permissions(&to, Permissions::from_mode(0o700)).map_err(host(&to))?;
                }
                dirs.push((to, e.mode, e.mtime));
                stats.dirs += 1;
                Ok(true)
            }
            Kind::File => {
                stats.bytes += e.size;
                if stats.bytes > max_bytes {
                    return Err(Error::Limit {
                        at: fs.at().with_path(path),
                        what: "bytes copied (hard-linked or looping directories?)".into(),
                        limit: max_bytes,
                    });
                }
                copy_file(fs, path, e, &to, &mut buf)?;
                stats.files += 1;
                Ok(false)
            }
            Kind::Symlink => {
                let t = e.target.clone().unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(&t), &to).map_err(host(&to))?;
                stats.symlinks += 1;
                Ok(false)
            }
            _ => {
                stats.skipped += 1;
                Ok(false)
            }
        }
    })?;
    for (d, mode, mtime) in dirs.into_iter().rev() {
        let f = File::open(&d).map_err(host(&d))?;
        set_time(&f, mtime);
        fs::set_permissions(&d, Permissions::from_mode(u32::from(mode))).map_err(host(&d))?;
    }
    Ok(stats)
}

/// One regular file, zero 4 KiB blocks left as holes.
fn copy_file(fs: &Filesystem, path: &[u8], e: &Entry, to: &Path, buf: &mut [u8]) -> Result<()> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)
        .map_err(host(to))?;
    let mut r = fs.open_walked(path)?;
    let size = r.remaining();
    loop {
        let n = r.read(buf)?;
        if n == 0 {
            break;
        }
        for block in buf[..n].chunks(4096) {
            if block.iter().all(|&b| b == 0) {
                out.seek(SeekFrom::Current(
                    i64::try_from(block.len()).unwrap_or(i64::MAX),
                ))
                .map_err(host(to))?;
            } else {
                out.write_all(block).map_err(host(to))?;
            }
        }
    }
    out.set_len(size).map_err(host(to))?;
    set_time(&out, e.mtime);
    out.set_permissions(Permissions::from_mode(u32::from(e.mode)))
        .map_err(host(to))?;
    Ok(())
}
