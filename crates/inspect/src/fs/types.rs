//! What the filesystem readers report: facts about a filesystem, its entries as `lstat`
//! describes them, the allocations a walk meets; and the checks on names read from an image.

use imgbuild_partition::FsSummary;
use serde::Serialize;

use crate::error::{Error, Result, Where};
use crate::path::parent_and_name;

/// Facts about a filesystem, from its superblock or boot sector.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FsInfo {
    /// Kind, label, id and size: the part the manifest shows too.
    #[serde(flatten)]
    pub summary: FsSummary,
    /// Bytes in use: ext4 blocks (metadata included); FAT data clusters (as `fsck.fat`
    /// counts them; the reserved sectors and the FATs are outside).
    pub used: u64,
    /// Bytes free for new data: ext4 free blocks, FAT free clusters.
    pub free: u64,
    /// Block size (ext4) or cluster size (FAT).
    pub block_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Inodes in all (ext4), when the filesystem counts them.
    pub inodes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Inodes in use (ext4), when the filesystem counts them.
    pub inodes_used: Option<u64>,
    /// ext4 feature names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// ISO 9660 only: Rock Ridge, Joliet, the El Torito boot entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iso9660: Option<super::IsoFacts>,
    /// A live ISO's store image (`/nix-store.squashfs`, read as its `/nix/store`): its
    /// facts, or why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_image: Option<Box<FsInfo>>,
    /// Why the filesystem could not be opened for reading files, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One file, directory or link met by [`Filesystem::allocations`](super::Filesystem::allocations).
#[derive(Clone, Copy, Debug)]
pub struct Allocation<'a> {
    /// The path of the entry, from the filesystem's root.
    pub path: &'a [u8],
    /// 0 for the walk's root.
    pub depth: usize,
    /// ext4, squashfs: the inode number (hard links share it); FAT, ISO 9660: a number of
    /// its own per entry.
    pub id: u64,
    /// Bytes it holds on disk: ext4 `i_blocks` (as `du` counts), FAT whole clusters of a
    /// file (directories count as filesystem metadata there); squashfs: a file's size
    /// (its data is compressed and shared, so the bytes it takes once unpacked).
    pub bytes: u64,
    /// Whether the allocation is a directory's.
    pub dir: bool,
}

/// Type of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDev,
    /// A block device.
    BlockDev,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl Kind {
    /// The `ls -l` type letter.
    pub fn letter(self) -> char {
        match self {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::CharDev => 'c',
            Kind::BlockDev => 'b',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
        }
    }
}

/// A file, directory or link, as `lstat` would describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Name bytes (the last path component; `/` for the root).
    pub name: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (including setuid, setgid, sticky).
    pub mode: u16,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Size in bytes (a symlink: its target's length).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// An identity of a directory that the reader exposes (FAT: its first cluster; ext4: the
    /// inode number, in walks), used to stop at directory loops and cross-linked
    /// directories; `None` when there is none (ext4 outside walks, as `ext4-view` does not
    /// expose inode numbers; walks are also bounded by depth and entry count).
    pub id: Option<u64>,
}

impl Entry {
    /// `drwxr-xr-x`-style mode string.
    pub fn mode_string(&self) -> String {
        let m = self.mode;
        let mut s = String::with_capacity(10);
        s.push(self.kind.letter());
        let bit = |b: u16, c: char| if m & b != 0 { c } else { '-' };
        let exec =
            |x: u16, special: u16, set: char, unset: char| match (m & x != 0, m & special != 0) {
                (true, true) => set,
                (false, true) => unset,
                (true, false) => 'x',
                (false, false) => '-',
            };
        s.push(bit(0o400, 'r'));
        s.push(bit(0o200, 'w'));
        s.push(exec(0o100, 0o4000, 's', 'S'));
        s.push(bit(0o040, 'r'));
        s.push(bit(0o020, 'w'));
        s.push(exec(0o010, 0o2000, 's', 'S'));
        s.push(bit(0o004, 'r'));
        s.push(bit(0o002, 'w'));
        s.push(exec(0o001, 0o1000, 't', 'T'));
        s
    }
}

/// Names that must not become host paths, or appear twice in one directory.
pub(crate) fn check_names(entries: &[Entry], at: &Where) -> Result<()> {
    for (i, e) in entries.iter().enumerate() {
        if e.name.is_empty()
            || e.name == b"."
            || e.name == b".."
            || e.name.contains(&b'/')
            || e.name.contains(&0)
        {
            return Err(Error::UnsafeName {
                at: at.clone(),
                name: String::from_utf8_lossy(&e.name).into_owned(),
            });
        }
        // Sorted by name, so duplicates are adjacent.
        if i > 0 && entries[i - 1].name == e.name {
            return Err(Error::DuplicateName {
                at: at.clone(),
                name: String::from_utf8_lossy(&e.name).into_owned(),
            });
        }
    }
    Ok(())
}

/// The name of the last component, for a metadata result.
pub(crate) fn last_name(path: &[u8]) -> Vec<u8> {
    match parent_and_name(path) {
        Some((_, name)) => name.to_vec(),
        None => b"/".to_vec(),
    }
}
