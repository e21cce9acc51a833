//! newc cpio archives (magic `070701`), the format of Linux's initramfs, written the same way
//! every time.
//!
//! A newc member is a 110-byte ASCII header (the magic, then thirteen 8-digit hexadecimal
//! fields: inode, mode, uid, gid, nlink, mtime, file size, device major and minor, rdev
//! major and minor, name size including its NUL, checksum), the name and its NUL, zeros up to
//! a multiple of 4, then the file's bytes and zeros up to a multiple of 4 again. The archive
//! ends with a member named `TRAILER!!!`. Offsets are counted from the archive's start, which
//! Linux wants at a multiple of 4 in the initramfs (it skips zeros between archives).
//!
//! [`header`] encodes one member's header (name and padding included) without its data, so a
//! caller can place a big file's bytes as a range of the file instead of copying them (the
//! netboot initrd: the closure's initrd, then a cpio holding the store image). [`Archive`]
//! builds a small archive in memory (the fixture initrd of `cargo xtask`). Nothing here reads
//! a clock or the host: inode numbers, owners and times are what the caller gives, so the
//! same members give the same bytes (GNU cpio needs `--reproducible` for that).

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![cfg_attr(
    not(test),
    warn(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )
)]

use std::collections::BTreeSet;

/// The newc magic: "new ASCII" without checksums.
pub const MAGIC: &[u8; 6] = b"070701";

/// The length of a header before its name: the magic and thirteen 8-digit fields.
pub const HEADER_LEN: usize = 110;

/// The name of the member that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

/// File type bits of `mode` (`S_IFDIR`, ...), as in `stat(2)`.
pub mod kind {
    /// A directory.
    pub const DIR: u32 = 0o040_000;
    /// A regular file.
    pub const FILE: u32 = 0o100_000;
    /// A symbolic link (its target is the member's data).
    pub const SYMLINK: u32 = 0o120_000;
    /// A character device.
    pub const CHAR: u32 = 0o020_000;
}

/// Why a member cannot be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// newc stores sizes in 32 bits: a file of 4 GiB or more does not fit.
    #[error("`{name}` is {size} bytes: a newc cpio member holds at most 4 GiB - 1")]
    TooLarge {
        /// The member's name.
        name: String,
        /// Its size in bytes.
        size: u64,
    },
    /// A name is empty, holds a NUL (which would end it early) or is longer than a header
    /// can say.
    #[error("`{name}` cannot be a cpio member name (empty, a NUL byte, or too long)")]
    BadName {
        /// The name, NULs shown as `\0`.
        name: String,
    },
    /// [`Archive`] was given the same name twice.
    #[error("`{name}` is already in the archive")]
    Duplicate {
        /// The name.
        name: String,
    },
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One member's metadata: everything its header says besides the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Inode number (members with the same number and `nlink > 1` are hard links).
    pub ino: u32,
    /// File type and permission bits (`kind::FILE | 0o644`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count (2 for a directory without subdirectories, 1 for other files).
    pub nlink: u32,
    /// Modification time, seconds since 1970.
    pub mtime: u32,
    /// The data's length: the file's bytes, or a symlink's target.
    pub size: u64,
    /// A device's major and minor number (0, 0 for other files).
    pub rdev: (u32, u32),
}

impl Member {
    /// A regular file of `size` bytes owned by root.
    pub fn file(ino: u32, perm: u32, mtime: u32, size: u64) -> Member {
        Member {
            ino,
            mode: kind::FILE | perm,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime,
            size,
            rdev: (0, 0),
        }
    }
}

/// Zeros that follow `len` bytes to reach a multiple of 4 (0 to 3).
pub fn padding(len: u64) -> u64 {
    (4 - len % 4) % 4
}

/// A member's header as it precedes its data: the 110 header bytes, `name`, its NUL and zeros
/// up to a multiple of 4 (the header starts at a multiple of 4, so the data does too). The
/// data that follows must be `m.size` bytes plus [`padding`]`(m.size)` zeros.
pub fn header(name: &str, m: &Member) -> Result<Vec<u8>> {
    let size = u32::try_from(m.size).map_err(|_| Error::TooLarge {
        name: name.to_string(),
        size: m.size,
    })?;
    let bad = || Error::BadName {
        name: name.replace('\0', "\\0"),
    };
    if name.is_empty() || name.contains('\0') {
        return Err(bad());
    }
    let namesize = name
        .len()
        .checked_add(1)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(bad)?;
    let fields = [
        m.ino, m.mode, m.uid, m.gid, m.nlink, m.mtime, size, 0, 0, m.rdev.0, m.rdev.1, namesize, 0,
    ];
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 4);
    out.extend_from_slice(MAGIC);
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(&mut out);
    Ok(out)
}

/// The archive's last member, `TRAILER!!!` (as GNU cpio writes it: nlink 1, every other
/// field 0), padded to a multiple of 4.
pub fn trailer() -> Vec<u8> {
    let end = Member {
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        mtime: 0,
        size: 0,
        rdev: (0, 0),
    };
    header(TRAILER, &end).expect("the trailer's name and size fit")
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// A small archive built in memory: members in the order added, inode numbers from 1 in
/// that order, owners root, one modification time for all.
pub struct Archive {
    buf: Vec<u8>,
    next_ino: u32,
    mtime: u32,
    names: BTreeSet<String>,
}

impl Archive {
    /// An empty archive whose members carry `mtime`.
    pub fn new(mtime: u32) -> Self {
        Archive {
            buf: Vec::new(),
            next_ino: 1,
            mtime,
            names: BTreeSet::new(),
        }
    }

    /// Adds directory `name` with permission bits `perm`.
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<()> {
        self.add(name, kind::DIR | perm, 2, (0, 0), b"")
    }

    /// Adds regular file `name` holding `data`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.add(name, kind::FILE | perm, 1, (0, 0), data)
    }

    /// Adds symbolic link `name` pointing to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<()> {
        self.add(name, kind::SYMLINK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds character device `name` (`major`, `minor`).
    pub fn chardev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.add(name, kind::CHAR | perm, 1, (major, minor), b"")
    }

    /// Adds `name` (leading `/` removed), after its missing parent directories (0755).
    fn add(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let name = name.trim_start_matches('/');
        if self.names.contains(name) {
            return Err(Error::Duplicate {
                name: name.to_string(),
            });
        }
        let mut at = 0;
        while let Some(i) = name[at..].find('/') {
            let parent = &name[..at + i];
            if !self.names.contains(parent) {
                self.raw(parent, kind::DIR | 0o755, 2, (0, 0), b"")?;
            }
            at += i + 1;
        }
        self.raw(name, mode, nlink, rdev, data)
    }

    fn raw(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let m = Member {
            ino: self.next_ino,
            mode,
            uid: 0,
            gid: 0,
            nlink,
            mtime: self.mtime,
            size: u64::try_from(data.len()).unwrap_or(u64::MAX),
            rdev,
        };
        let h = header(name, &m)?;
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(data);
        pad(&mut self.buf);
        self.next_ino += 1;
        self.names.insert(name.to_string());
        Ok(())
    }

    /// The archive: its members, the trailer, zeros to a multiple of `block` bytes (GNU cpio
    /// pads to 512; 1 or 4 adds nothing).
    pub fn finish(mut self, block: usize) -> Vec<u8> {
        self.buf.extend_from_slice(&trailer());
        while block > 1 && !self.buf.len().is_multiple_of(block) {
            self.buf.push(0);
        }
        self.buf
    }
}

#[cfg(test)]
mod tests;
