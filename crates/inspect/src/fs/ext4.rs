//! ext2/3/4 through `ext4-view`, after our own superblock checks.
//!
//! The superblock is parsed here too (offsets from the kernel's `struct ext4_super_block`),
//! for the facts `ext4-view` does not expose (size, use, inode counts, features) and to
//! refuse what would make `ext4-view` allocate in proportion to a number read from the
//! image rather than to the image (it reserves a vector for every block group descriptor).

use ext4_view::{Ext4, Ext4Error, FileType, Metadata};

use super::{last_name, Entry, FsInfo, Kind};
use crate::io::Slice;
use crate::path::join;
use crate::{Error, Result, Where};

/// The fields of the superblock this crate uses.
#[derive(Clone, Debug)]
pub(crate) struct Superblock {
    inodes_count: u64,
    blocks_count: u64,
    free_blocks: u64,
    free_inodes: u64,
    block_size: u64,
    blocks_per_group: u64,
    inodes_per_group: u64,
    first_data_block: u64,
    desc_size: u64,
    inode_size: u64,
    compat: u32,
    incompat: u32,
    ro_compat: u32,
    uuid: [u8; 16],
    label: [u8; 16],
    part_size: u64,
}

const COMPAT: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];
const INCOMPAT: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
const RO_COMPAT: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x8000, "verity"),
    (0x10000, "orphan_present"),
];

fn u16le(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}
fn u32le(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]))
}

impl Superblock {
    pub(crate) fn block_size(&self) -> u64 {
        self.block_size
    }
    pub(crate) fn inodes_per_group(&self) -> u64 {
        self.inodes_per_group
    }
    pub(crate) fn desc_size(&self) -> u64 {
        self.desc_size
    }
    pub(crate) fn first_data_block(&self) -> u64 {
        self.first_data_block
    }
    pub(crate) fn is64(&self) -> bool {
        self.incompat & 0x80 != 0
    }

    /// Reads and checks the superblock at byte 1024 of the partition.
    pub(crate) fn read(slice: &mut Slice, at: &Where) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            at: at.clone(),
            reason: format!("ext4 superblock: {reason}"),
        };
        let mut b = [0u8; 1024];
        slice
            .read_exact_at(1024, &mut b)
            .map_err(|source| Error::Io {
                at: at.clone(),
                source,
            })?;
        if u16le(&b, 0x38) != 0xef53 {
            return Err(corrupt("no ext2/3/4 magic".into()));
        }
        let incompat = u32le(&b, 0x60) as u32;
        let is64 = incompat & 0x80 != 0;
        let log = u32le(&b, 0x18);
        if log > 6 {
            return Err(corrupt(format!(
                "block size 2^{} is above 64 KiB",
                10 + log
            )));
        }
        let block_size = 1024u64 << log;
        let hi = |o| if is64 { u32le(&b, o) << 32 } else { 0 };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[0x68..0x78]);
        let mut label = [0u8; 16];
        label.copy_from_slice(&b[0x78..0x88]);
        let sb = Self {
            inodes_count: u32le(&b, 0x0),
            blocks_count: u32le(&b, 0x4) | hi(0x150),
            free_blocks: u32le(&b, 0xc) | hi(0x158),
            free_inodes: u32le(&b, 0x10),
            block_size,
            first_data_block: u32le(&b, 0x14),
            blocks_per_group: u32le(&b, 0x20),
            inodes_per_group: u32le(&b, 0x28),
            desc_size: if is64 { u16le(&b, 0xfe) } else { 32 },
            // Revision 0 filesystems have 128-byte inodes and no s_inode_size.
            inode_size: if u32le(&b, 0x4c) == 0 {
                128
            } else {
                u16le(&b, 0x58)
            },
            compat: u32le(&b, 0x5c) as u32,
            incompat,
            ro_compat: u32le(&b, 0x64) as u32,
            uuid,
            label,
            part_size: slice.len(),
        };
        if sb.blocks_count == 0 || sb.blocks_per_group == 0 || sb.inodes_per_group == 0 {
            return Err(corrupt(format!(
                "{} blocks, {} blocks per group, {} inodes per group",
                sb.blocks_count, sb.blocks_per_group, sb.inodes_per_group
            )));
        }
        if sb.blocks_per_group > 8 * block_size || sb.inodes_per_group > 8 * block_size {
            return Err(corrupt(format!(
                "{} blocks and {} inodes per group do not fit a {block_size}-byte bitmap",
                sb.blocks_per_group, sb.inodes_per_group
            )));
        }
        Ok(sb)
    }

    pub(crate) fn groups(&self) -> u64 {
        self.blocks_count
            .saturating_sub(self.first_data_block)
            .div_ceil(self.blocks_per_group)
    }

    fn size(&self) -> u64 {
        self.blocks_count.saturating_mul(self.block_size)
    }

    /// Label, UUID, size, use and features.
    pub(crate) fn info(&self) -> FsInfo {
        let mut features = Vec::new();
        for (set, names) in [
            (self.compat, COMPAT),
            (self.incompat, INCOMPAT),
            (self.ro_compat, RO_COMPAT),
        ] {
            for &(bit, name) in names {
                if set & bit != 0 {
                    features.push(name.to_string());
                }
            }
        }
        let kind = if self.incompat & (0x40 | 0x80 | 0x200) != 0 {
            "ext4"
        } else if self.compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let label_len = self.label.iter().position(|&c| c == 0).unwrap_or(16);
        let label = String::from_utf8_lossy(&self.label[..label_len]).into_owned();
        FsInfo {
            summary: imgbuild_partition::FsSummary {
                kind: kind.into(),
                label: (!label.is_empty()).then_some(label),
                uuid: Some(uuid::Uuid::from_bytes(self.uuid).hyphenated().to_string()),
                size: self.size(),
            },
            used: self
                .blocks_count
                .saturating_sub(self.free_blocks)
                .saturating_mul(self.block_size),
            free: self.free_blocks.saturating_mul(self.block_size),
            block_size: self.block_size,
            inodes: Some(self.inodes_count),
            inodes_used: Some(self.inodes_count.saturating_sub(self.free_inodes)),
            features,
            error: None,
        }
    }

    /// What must hold before `ext4-view` may load the filesystem.
    fn check_loadable(&self, at: &Where) -> Result<()> {
        if self.size() > self.part_size {
            return Err(Error::Corrupt {
                at: at.clone(),
                reason: format!(
                    "the ext4 filesystem ({} bytes) is larger than its partition ({} bytes): truncated image?",
                    self.size(),
                    self.part_size
                ),
            });
        }
        // With the filesystem inside the partition, the descriptor table ext4-view allocates
        // is bounded by the partition size.
        let gdt = self.groups().saturating_mul(self.desc_size.max(32));
        if gdt > self.part_size {
            return Err(Error::Corrupt {
                at: at.clone(),
                reason: format!("{} block groups do not fit the partition", self.groups()),
            });
        }
        Ok(())
    }
}

/// An ext4 filesystem opened by `ext4-view`.
pub(crate) struct Ext4Fs {
    fs: Ext4,
    /// For what ext4-view refuses (long symlink components), and inode numbers.
    raw: super::ext4_raw::Raw,
    /// Inode numbers of directories a walk listed and has not read yet (path -> inode): the
    /// walk reads them next, and their inode numbers become the ids of their entries.
    walked: std::sync::Mutex<std::collections::HashMap<Vec<u8>, u32>>,
}

/// Directories remembered for walks at most (past it, the map starts again: ids are then
/// found by resolving the path).
const MAX_WALKED: usize = 1 << 16;

pub(crate) fn map_err(e: Ext4Error, at: Where) -> Error {
    match e {
        Ext4Error::NotFound => Error::NotFound { at },
        Ext4Error::NotADirectory => Error::NotADirectory { at },
        Ext4Error::IsADirectory => Error::IsADirectory { at },
        Ext4Error::IsASpecialFile => Error::NotAFile { at },
        Ext4Error::TooManySymlinks => Error::Limit {
            at,
            what: "symlinks followed (a symlink loop?)".into(),
            limit: 40,
        },
        Ext4Error::Io(e) => Error::Io {
            at,
            source: std::io::Error::other(e.to_string()),
        },
        Ext4Error::Incompatible(i) => Error::Unsupported {
            at,
            what: format!("ext4: {i}"),
        },
        e => Error::Corrupt {
            at,
            reason: format!("ext4: {e}"),
        },
    }
}

fn kind(t: FileType) -> Kind {
    if t.is_dir() {
        Kind::Dir
    } else if t.is_symlink() {
        Kind::Symlink
    } else if t.is_char_dev() {
        Kind::CharDev
    } else if t.is_block_dev() {
        Kind::BlockDev
    } else if t.is_fifo() {
        Kind::Fifo
    } else if t.is_socket() {
        Kind::Socket
    } else {
        Kind::File
    }
}

fn entry(name: Vec<u8>, m: &Metadata, target: Option<Vec<u8>>) -> Entry {
    Entry {
        name,
        kind: kind(m.file_type()),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: m.len(),
        mtime: m.modified().seconds(),
        target,
        id: None,
    }
}

fn ext_path(path: &[u8], at: &Where) -> Result<ext4_view::PathBuf> {
    ext4_view::PathBuf::try_from(path).map_err(|e| Error::Corrupt {
        at: at.with_path(path),
        reason: format!("unusable path: {e}"),
    })
}

/// Longest symlink target read (Linux's PATH_MAX is 4096 with the NUL).
pub const MAX_SYMLINK: u64 = 4095;
/// Symlinks followed in one path resolution (Linux's limit).
pub const MAX_FOLLOW: usize = 40;

/// Whether a path given to [`Ext4Fs`] may contain symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// From a user: resolved here, component by component (see [`Ext4Fs::resolve`]).
    User,
    /// Built by a walk from directory entries whose inodes are directories (and names
    /// checked unique): no symlinks, passed to `ext4-view` as is.
    Walked,
}

impl Ext4Fs {
    pub(crate) fn open(slice: Slice, raw: Slice, sb: &Superblock, at: &Where) -> Result<Self> {
        sb.check_loadable(at)?;
        let fs = crate::guard::guard(
            "ext4-view",
            || at.clone(),
            || Ext4::load(Box::new(slice)).map_err(|e| map_err(e, at.clone())),
        )?;
        Ok(Self {
            fs,
            raw: super::ext4_raw::Raw::new(raw, sb, sb.inode_size),
            walked: std::sync::Mutex::default(),
        })
    }

    /// Every inode below `root` (a path without symlinks), depth first, children in name
    /// order, each with the bytes it holds on disk.
    pub(crate) fn allocations(
        &self,
        root: &[u8],
        limits: &crate::Limits,
        at: &Where,
        visit: &mut dyn FnMut(&super::Allocation<'_>),
    ) -> Result<()> {
        let ino = self.raw.resolve(root, &at.with_path(root))?;
        let mut stack = vec![(root.to_vec(), ino, 0usize)];
        let mut dirs = std::collections::HashSet::new();
        let mut visited: u64 = 1;
        while let Some((path, ino, depth)) = stack.pop() {
            let here = at.with_path(&path);
            let (dir, bytes) = self.raw.allocation(ino, &here)?;
            visit(&super::Allocation {
                path: &path,
                depth,
                id: u64::from(ino),
                bytes,
                dir,
            });
            if !dir {
                continue;
            }
            if depth >= limits.max_depth || !dirs.insert(ino) {
                return Err(Error::Limit {
                    at: here,
                    what: "directory depth (a directory loop?)".into(),
                    limit: limits.max_depth as u64,
                });
            }
            let mut entries = self.raw.entries(ino, &here)?;
            visited += entries.len() as u64;
            if visited > limits.max_walk_entries {
                return Err(Error::Limit {
                    at: here,
                    what: "entries visited".into(),
                    limit: limits.max_walk_entries,
                });
            }
            entries.sort();
            for (name, child) in entries.into_iter().rev() {
                stack.push((join(&path, &name), child, depth + 1));
            }
        }
        Ok(())
    }

    /// `lstat` through ext4-view, for a path whose directories are not symlinks.
    fn lstat(&self, path: &[u8], at: &Where) -> Result<Metadata> {
        let p = ext_path(path, at)?;
        self.fs
            .symlink_metadata(&p)
            .map_err(|e| map_err(e, at.with_path(path)))
    }

    /// The target of the symlink at `path` (described by `m`), after checking its size:
    /// ext4-view allocates a symlink's recorded size before reading it, so a corrupt inode
    /// claiming a 500 GB target would abort the process.
    fn link_target(&self, path: &[u8], m: &Metadata, at: &Where) -> Result<Vec<u8>> {
        if m.len() > MAX_SYMLINK {
            return Err(Error::Corrupt {
                at: at.with_path(path),
                reason: format!(
                    "symlink target of {} bytes (at most {MAX_SYMLINK})",
                    m.len()
                ),
            });
        }
        let p = ext_path(path, at)?;
        match self.fs.read_link(&p) {
            Ok(t) => Ok(t.as_ref().to_vec()),
            // ext4-view refuses targets with a component over 255 bytes, which Linux allows:
            // read those by hand.
            Err(Ext4Error::Corrupt(_)) if m.len() > 255 => {
                self.raw
                    .symlink_target(path, MAX_SYMLINK, &at.with_path(path))
            }
            Err(e) => Err(map_err(e, at.with_path(path))),
        }
    }

    /// Resolves the symlinks of `path` (all of them, or all but the last component), one
    /// component at a time, so that ext4-view is only ever given symlink-free paths and never
    /// reads a symlink we have not size-checked. Absolute targets restart at the root of this
    /// filesystem; `..` is taken lexically on the already-resolved (symlink-free) prefix.
    pub(crate) fn resolve(&self, path: &[u8], follow_last: bool, at: &Where) -> Result<Vec<u8>> {
        let mut queue: std::collections::VecDeque<Vec<u8>> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut follows = 0;
        let joined = |done: &[Vec<u8>]| -> Vec<u8> {
            let mut p = Vec::new();
            for c in done {
                p.push(b'/');
                p.extend_from_slice(c);
            }
            if p.is_empty() {
                p.push(b'/');
            }
            p
        };
        while let Some(c) = queue.pop_front() {
            if c == b"." {
                continue;
            }
            if c == b".." {
                done.pop();
                continue;
            }
            done.push(c);
            let here = joined(&done);
            let last = queue.is_empty();
            let m = self.lstat(&here, at)?;
            if m.is_symlink() && (!last || follow_last) {
                follows += 1;
                if follows > MAX_FOLLOW {
                    return Err(Error::Limit {
                        at: at.with_path(path),
                        what: "symlinks followed (a symlink loop?)".into(),
                        limit: MAX_FOLLOW as u64,
                    });
                }
                let target = self.link_target(&here, &m, at)?;
                done.pop();
                if target.starts_with(b"/") {
                    done.clear();
                }
                for t in target.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev() {
                    queue.push_front(t.to_vec());
                }
            } else if !last && !m.is_dir() {
                return Err(Error::NotADirectory {
                    at: at.with_path(&here),
                });
            }
        }
        Ok(joined(&done))
    }

    pub(crate) fn metadata(&self, path: &[u8], at: &Where) -> Result<Entry> {
        let real = self.resolve(path, false, at)?;
        let m = self.lstat(&real, at)?;
        let target = if m.is_symlink() {
            Some(self.link_target(&real, &m, at)?)
        } else {
            None
        };
        Ok(entry(last_name(path), &m, target))
    }

    pub(crate) fn read_link(&self, path: &[u8], at: &Where) -> Result<Vec<u8>> {
        let real = self.resolve(path, false, at)?;
        let m = self.lstat(&real, at)?;
        if !m.is_symlink() {
            return Err(Error::Corrupt {
                at: at.with_path(path),
                reason: "not a symlink".into(),
            });
        }
        self.link_target(&real, &m, at)
    }

    pub(crate) fn canonicalize(&self, path: &[u8], at: &Where) -> Result<Vec<u8>> {
        self.resolve(path, true, at)
    }

    pub(crate) fn read_dir(
        &self,
        path: &[u8],
        kind: Path,
        at: &Where,
        max: usize,
    ) -> Result<Vec<Entry>> {
        let real = match kind {
            Path::User => self.resolve(path, true, at)?,
            Path::Walked => path.to_vec(),
        };
        let p = ext_path(&real, at)?;
        let here = || at.with_path(path);
        let rd = self.fs.read_dir(&p).map_err(|e| map_err(e, here()))?;
        // A walk's directories get their inode numbers as ids (our own reading of the
        // directory, beside ext4-view's), so a directory entry pointing back up the tree is a
        // loop the walk stops at, instead of a walk as deep as its depth limit.
        let inos: std::collections::HashMap<Vec<u8>, u32> = match kind {
            Path::User => Default::default(),
            Path::Walked => {
                let known = self.walked.lock().ok().and_then(|mut w| w.remove(&real));
                known
                    .or_else(|| self.raw.resolve(&real, &here()).ok())
                    .and_then(|d| self.raw.entries(d, &here()).ok())
                    .map(|v| v.into_iter().collect())
                    .unwrap_or_default()
            }
        };
        let mut out = Vec::new();
        for de in rd {
            let de = de.map_err(|e| map_err(e, here()))?;
            let name = de.file_name().as_ref().to_vec();
            if name == b"." || name == b".." {
                continue;
            }
            if out.len() >= max {
                return Err(Error::Limit {
                    at: here(),
                    what: "entries in one directory".into(),
                    limit: max as u64,
                });
            }
            let full = join(&real, &name);
            let m = de.metadata().map_err(|e| map_err(e, at.with_path(&full)))?;
            let target = if m.is_symlink() {
                Some(self.link_target(&full, &m, at)?)
            } else {
                None
            };
            let mut e = entry(name, &m, target);
            if e.kind == Kind::Dir {
                if let Some(&ino) = inos.get(&e.name) {
                    e.id = Some(u64::from(ino));
                    if let Ok(mut w) = self.walked.lock() {
                        if w.len() >= MAX_WALKED {
                            w.clear();
                        }
                        w.insert(full, ino);
                    }
                }
            }
            out.push(e);
        }
        Ok(out)
    }

    pub(crate) fn open_file(
        &self,
        path: &[u8],
        kind: Path,
        at: &Where,
    ) -> Result<(ext4_view::File, u64)> {
        let real = match kind {
            Path::User => self.resolve(path, true, at)?,
            Path::Walked => path.to_vec(),
        };
        let p = ext_path(&real, at)?;
        let f = self
            .fs
            .open(&p)
            .map_err(|e| map_err(e, at.with_path(path)))?;
        let size = f.metadata().len();
        Ok((f, size))
    }
}
