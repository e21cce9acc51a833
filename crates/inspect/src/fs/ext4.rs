//! ext2/3/4 through `ext4-view`, after our own superblock checks ([`super::ext4_sb`]).

use ext4_view::{Ext4, Ext4Error, FileType, Metadata};

use super::ext4_sb::Superblock;
use super::{last_name, Entry, Kind};
use crate::bytes::len64;
use crate::error::{Error, Result, Where};
use crate::io::Slice;
use crate::path::join;

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
            source: std::io::Error::other(e),
        },
        Ext4Error::Incompatible(i) => Error::Unsupported {
            at,
            what: format!("ext4: {i}"),
        },
        e => Error::Corrupt {
            at,
            reason: format!("ext4: {}", crate::error::chain(&e)),
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
        reason: format!("unusable path: {}", crate::error::chain(&e)),
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
                    limit: len64(limits.max_depth),
                });
            }
            let mut entries = self.raw.entries(ino, &here)?;
            visited += len64(entries.len());
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
                        limit: len64(MAX_FOLLOW),
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
                    limit: len64(max),
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
