//! The target of a flash: a regular file, or a whole block device that nothing uses. A block
//! device is refused when it, or a partition of it, holds `/`, is mounted, is swap, or is held
//! by another device (device-mapper, LVM, RAID), naming which; then it is opened with
//! `O_EXCL`, which the kernel refuses for a device in use, as a last guard.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// An opened target.
pub struct Target {
    pub path: PathBuf,
    pub file: File,
    pub block_device: bool,
    /// Its size in bytes (a regular file's before writing).
    pub size: u64,
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
/// does not exist becomes a new regular file, except under `/dev` (a mistyped device name);
/// an existing non-empty target smaller than the image is refused.
pub fn open(path: &Path, image_size: u64, image: &Path) -> Result<Target> {
    let refuse = |reason: String| Error::Refused {
        target: path.to_path_buf(),
        reason,
    };
    let md = match std::fs::metadata(path) {
        Ok(md) => Some(md),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if path.starts_with("/dev") {
                return Err(refuse("there is no such device".into()));
            }
            None
        }
        Err(source) => {
            return Err(Error::Open {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if let (Some(md), Ok(im)) = (&md, std::fs::metadata(image)) {
        if md.dev() == im.dev() && md.ino() == im.ino() {
            return Err(refuse("it is the image itself".into()));
        }
    }
    let block_device = md.as_ref().is_some_and(|m| m.file_type().is_block_device());
    if let Some(md) = &md {
        if !block_device && !md.is_file() {
            return Err(refuse(
                "it is neither a block device nor a regular file".into(),
            ));
        }
    }
    if block_device {
        let (ma, mi) = major_minor(md.as_ref().map_or(0, MetadataExt::rdev));
        if let Some(dir) = sys_dir(ma, mi) {
            if let Some(why) = in_use(path, &dir) {
                return Err(refuse(why));
            }
        }
    }
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if block_device {
        // Refused by the kernel (EBUSY) while anything uses the device.
        o.custom_flags(libc::O_EXCL);
    } else {
        o.create(true);
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
            "it holds {size} bytes ({}), the image {image_size} ({})",
            imgbuild_units::human_size(size),
            imgbuild_units::human_size(image_size)
        )));
    }
    Ok(Target {
        path: path.to_path_buf(),
        file,
        block_device,
        size,
    })
}
