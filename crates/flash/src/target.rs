//! The target of a flash: a regular file, or a whole block device that nothing uses. A block
//! device is refused when it, or a partition of it, holds `/`, is mounted, is swap, or is held
//! by another device (device-mapper, LVM, RAID), naming which; then it is opened with
//! `O_EXCL`, which the kernel refuses for a device in use, as a last guard.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};
use imgbuild_blockio::OutputFile;

/// An opened target.
pub struct Target {
    /// The path the user named.
    pub path: PathBuf,
    /// Open for reading and writing (a new file: its temporary copy).
    pub file: File,
    /// Whether it is a block device (sized by seeking to its end, opened `O_EXCL`).
    pub block_device: bool,
    /// Its size in bytes (a regular file's before writing).
    pub size: u64,
    /// What the target was before this flash, which decides what a failure leaves.
    pub was: Was,
    /// A new file is written as `PATH.tmp` and renamed by [`Target::finish`]; dropped
    /// unfinished, the temporary file is removed.
    pending: Option<OutputFile>,
}

/// What a target held before the flash: the safe rule for what a failed flash may undo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Was {
    /// Nothing: a new regular file, written as `PATH.tmp` (a stale one from an interrupted
    /// flash is replaced) and renamed only when written (and verified); a failure removes it.
    New,
    /// An empty regular file: a failure empties it again.
    Empty,
    /// A disk, or a regular file standing for one (a VM's disk image): a failure after the
    /// first write leaves a partial image, and says so.
    Disk,
}

impl Target {
    /// The flash succeeded: a new file is renamed into place.
    pub fn finish(mut self) -> Result<()> {
        if let Some(out) = self.pending.take() {
            out.persist().map_err(|e| Error::Open {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?;
        }
        Ok(())
    }

    /// The flash failed after `written` bytes: undo what may be undone; what the target now
    /// holds, for the error message.
    pub fn fail(mut self, written: u64, total: u64) -> String {
        let path = self.path.display().to_string();
        match self.was {
            Was::New => {
                let tmp = self
                    .pending
                    .take()
                    .map(|o| o.tmp().display().to_string())
                    .unwrap_or_default();
                format!("nothing was written at `{path}` (its partial copy `{tmp}` was removed)")
            }
            Was::Empty => match self.file.set_len(0) {
                Ok(()) => format!("`{path}` is empty again, as it was before"),
                Err(e) => format!(
                    "`{path}` now holds a partial image ({written} of {total} bytes written) \
                     and could not be emptied again ({e}): delete it before trying again"
                ),
            },
            Was::Disk if written == 0 => format!("nothing was written to `{path}`"),
            Was::Disk => format!(
                "`{path}` now holds a partial image ({written} of {total} bytes written, or \
                 read back wrong) and will not boot as it is: run `imgbuild flash` again to \
                 write it whole, or wipe it (`wipefs -a {path}` for a disk)"
            ),
        }
    }
}

fn major_minor(rdev: u64) -> (u64, u64) {
    (libc::major(rdev) as u64, libc::minor(rdev) as u64)
}

/// The device's directory in sysfs (`/sys/devices/.../block/sda`, `.../sda/sda1`).
fn sys_dir(major: u64, minor: u64) -> Option<PathBuf> {
    std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()
}

/// A device and every device below it (`slaves/`: the disks under a dm-crypt or LVM volume).
fn with_slaves(dir: PathBuf, out: &mut Vec<PathBuf>, depth: usize) {
    if depth < 16 {
        if let Ok(rd) = std::fs::read_dir(dir.join("slaves")) {
            for e in rd.flatten() {
                if let Ok(p) = std::fs::canonicalize(e.path()) {
                    with_slaves(p, out, depth + 1);
                }
            }
        }
    }
    out.push(dir);
}

fn underlying(major: u64, minor: u64) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = sys_dir(major, minor) {
        with_slaves(d, &mut v, 0);
    }
    v
}

/// Why the block device at sysfs `dir` must not be written, if it must not.
fn in_use(path: &Path, dir: &Path) -> Option<String> {
    let on_it = |devs: &[PathBuf]| devs.iter().any(|d| d.starts_with(dir));
    if let Ok(md) = std::fs::metadata("/") {
        let (ma, mi) = major_minor(md.dev());
        if ma != 0 && on_it(&underlying(ma, mi)) {
            return Some(format!(
                "it holds the running system's root file system `/`: `{}` is the disk this \
                 machine runs from",
                path.display()
            ));
        }
    }
    // /proc/self/mountinfo: field 3 is the mounted device's major:minor, field 5 the mount
    // point.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(dev), Some(at)) = (f.get(2), f.get(4)) else {
            continue;
        };
        let Some((ma, mi)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(ma), Ok(mi)) = (ma.parse::<u64>(), mi.parse::<u64>()) else {
            continue;
        };
        if ma != 0 && on_it(&underlying(ma, mi)) {
            return Some(format!("it (or a partition of it) is mounted at `{at}`"));
        }
    }
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let Some(dev) = line.split_whitespace().next() else {
            continue;
        };
        if let Ok(md) = std::fs::metadata(dev) {
            let (ma, mi) = major_minor(md.rdev());
            if md.file_type().is_block_device() && on_it(&underlying(ma, mi)) {
                return Some(format!(
                    "it (or a partition of it) is in use as swap (`{dev}`)"
                ));
            }
        }
    }
    // Holders: device-mapper, LVM, MD RAID on the device or a partition of it.
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        dirs.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("partition").exists()),
        );
    }
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(d.join("holders")) {
            if let Some(h) = rd.flatten().next() {
                return Some(format!(
                    "`{}` is held by `{}` (device-mapper, LVM or RAID)",
                    d.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into()),
                    h.file_name().to_string_lossy()
                ));
            }
        }
    }
    None
}

/// Opens `path` for writing an image of `image_size` bytes, or says why not. A path that
/// does not exist becomes a new regular file ([`Was::New`]), except under `/dev` (a mistyped
/// device name); an existing non-empty target smaller than the image is refused.
pub fn open(path: &Path, image_size: u64, image: &Path) -> Result<Target> {
    let refuse = |reason: String| Error::Refused {
        target: path.to_path_buf(),
        reason,
    };
    let Some(md) = existing(path, image)? else {
        return new_file(path, image_size);
    };
    let block_device = md.file_type().is_block_device();
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if block_device {
        // Refused by the kernel (EBUSY) while anything uses the device.
        o.custom_flags(libc::O_EXCL);
    }
    let file = o.open(path).map_err(|source| match source.raw_os_error() {
        Some(libc::EBUSY) => refuse("the kernel says it is busy (in use)".into()),
        _ => Error::Open {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let size = if block_device {
        use std::io::Seek;
        (&file)
            .seek(std::io::SeekFrom::End(0))
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?
    } else {
        file.metadata().map(|m| m.len()).unwrap_or(0)
    };
    // A regular file that already has a size stands for a disk too (a VM's disk file); an
    // empty or new one is simply written.
    if size != 0 && size < image_size {
        return Err(refuse(format!(
            "it holds {size} bytes ({}), the image {image_size} ({}){}",
            imgbuild_units::human_size(size),
            imgbuild_units::human_size(image_size),
            if block_device {
                ""
            } else {
                " (a file that stands for a smaller disk; delete it first if it is only a \
                 copy that was cut short)"
            }
        )));
    }
    let was = if size == 0 && !block_device {
        // As long as the image (sparse), like a new file.
        file.set_len(image_size).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Was::Empty
    } else {
        Was::Disk
    };
    Ok(Target {
        path: path.to_path_buf(),
        file,
        block_device,
        size,
        was,
        pending: None,
    })
}

/// The metadata of an existing target that may be written (`None`: there is none, and one may
/// be created), or why not: missing under `/dev`, the image itself, neither a block device nor
/// a regular file, a block device in use (mounted, swap, held by another device).
fn existing(path: &Path, image: &Path) -> Result<Option<std::fs::Metadata>> {
    let refuse = |reason: String| Error::Refused {
        target: path.to_path_buf(),
        reason,
    };
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if path.starts_with("/dev") {
                return Err(refuse("there is no such device".into()));
            }
            return Ok(None);
        }
        Err(source) => {
            return Err(Error::Open {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if let Ok(im) = std::fs::metadata(image) {
        if md.dev() == im.dev() && md.ino() == im.ino() {
            return Err(refuse("it is the image itself".into()));
        }
    }
    if md.file_type().is_block_device() {
        let (ma, mi) = major_minor(md.rdev());
        if let Some(why) = sys_dir(ma, mi).and_then(|dir| in_use(path, &dir)) {
            return Err(refuse(why));
        }
    } else if !md.is_file() {
        return Err(refuse(
            "it is neither a block device nor a regular file".into(),
        ));
    }
    Ok(Some(md))
}

/// A new regular file at `path` ([`Was::New`]): written as `path.tmp`, renamed on success.
fn new_file(path: &Path, image_size: u64) -> Result<Target> {
    let out = OutputFile::create(path, image_size).map_err(|source| Error::Create {
        path: path.to_path_buf(),
        source,
    })?;
    let file = out.file().try_clone().map_err(|source| Error::Open {
        path: out.tmp().to_path_buf(),
        source,
    })?;
    Ok(Target {
        path: path.to_path_buf(),
        file,
        block_device: false,
        size: 0,
        was: Was::New,
        pending: Some(out),
    })
}
