//! Filesystems inside partitions: probing, and one read-only interface over ext4 (through
//! `ext4-view`) and FAT (through `fatfs`), with every call bounded and guarded.

pub(crate) mod ext4;
mod ext4_raw;
mod ext4_sb;
pub(crate) mod fat;
pub(crate) mod fat_bpb;
mod fat_names;
pub(crate) mod iso9660;
pub(crate) mod iso9660_susp;
pub(crate) mod iso9660_vd;
mod live;
mod probe;
pub(crate) mod squashfs;
mod squashfs_meta;
mod squashfs_sb;
mod types;

pub use iso9660_vd::{ElTorito, IsoFacts};
pub(crate) use probe::{open, open_appliance};
pub(crate) use types::{check_names, last_name};
pub use types::{Allocation, Entry, FsInfo, Kind};

use crate::bytes::{len64, to_usize};
use crate::guard::guard;
use crate::io::{Budget, BASE_BUDGET};
use crate::path::{join, normalize};
use crate::{Error, Limits, Result, Where};
use std::cell::Cell;
use std::io::Write;

enum Inner {
    Ext4(ext4::Ext4Fs),
    Fat(Box<fat::FatFs>),
    Iso(Box<iso9660::IsoFs>),
    Squash(Box<squashfs::SquashFs>),
    Live(Box<live::LiveFs>),
}

/// A readable filesystem in one partition of an image.
///
/// Every operation runs under a read budget and inside [`crate::guard`]; after a reader
/// panic the object is poisoned and every later call fails.
pub struct Filesystem {
    at: Where,
    info: FsInfo,
    inner: Inner,
    budget: Budget,
    poisoned: Cell<bool>,
    limits: Limits,
}

impl std::fmt::Debug for Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filesystem")
            .field("at", &self.at)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// One open file, read in chunks.
pub struct FileReader<'a> {
    fs: &'a Filesystem,
    inner: ReaderInner,
    path: Vec<u8>,
    left: u64,
}

enum ReaderInner {
    Ext4(Box<ext4_view::File>),
    Fat(fat::FatFile),
    Iso(iso9660::IsoFile),
    Squash(squashfs::SquashFile),
}

impl FileReader<'_> {
    /// The file's size.
    pub fn remaining(&self) -> u64 {
        self.left
    }

    /// Reads up to `buf.len()` bytes; 0 at the end of the file.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let buf = &mut buf[..want];
        let at = || self.fs.at.with_path(&self.path);
        let n = self.fs.call(&self.path, || match &mut self.inner {
            ReaderInner::Ext4(f) => f.read_bytes(buf).map_err(|e| ext4::map_err(e, at())),
            ReaderInner::Fat(f) => match &self.fs.inner {
                Inner::Fat(fs) => fs.read(f, buf).map_err(|e| fat::map_err(e, at())),
                // A FAT file is only ever opened on a FAT filesystem.
                _ => Ok(0),
            },
            ReaderInner::Iso(f) => match &self.fs.inner {
                Inner::Iso(fs) => fs.read(f, buf, &at()),
                Inner::Live(fs) => match &fs.base {
                    live::Base::Iso(i) => i.read(f, buf, &at()),
                    live::Base::Ext4(_) => Ok(0),
                },
                // An ISO file is only ever opened on an ISO 9660 filesystem.
                _ => Ok(0),
            },
            ReaderInner::Squash(f) => match &self.fs.inner {
                Inner::Squash(fs) => fs.read(f, buf, &at()),
                Inner::Live(fs) => fs.store.read(f, buf, &at()),
                // A squashfs file is only ever opened on a squashfs.
                _ => Ok(0),
            },
        })?;
        if n == 0 {
            return Err(Error::Corrupt {
                at: at(),
                reason: format!("the file ends {} bytes before its recorded size", self.left),
            });
        }
        self.left -= len64(n);
        Ok(n)
    }
}

impl Filesystem {
    /// Label, UUID, size and use.
    pub fn info(&self) -> &FsInfo {
        &self.info
    }

    /// Image and partition, for messages.
    pub fn location(&self) -> &Where {
        &self.at
    }

    /// The largest file size believed (a bigger recorded size is corruption).
    fn max_file_size(&self) -> u64 {
        let own = self.info.summary.size.max(1 << 20);
        match &self.inner {
            Inner::Squash(s) => s.max_file_size(),
            Inner::Live(l) => own.max(l.store.max_file_size()),
            _ => own,
        }
    }

    /// Runs one reader operation: poison check, fresh budget, panic guard, and a budget
    /// error turned into [`Error::Limit`].
    fn call<T>(&self, path: &[u8], f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.call_with_budget(path, BASE_BUDGET, f)
    }

    fn call_with_budget<T>(
        &self,
        path: &[u8],
        budget: u64,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let at = || self.at.with_path(path);
        if self.poisoned.get() {
            return Err(Error::ReaderPanic {
                at: at(),
                reader: self.reader_name(),
                message: "an earlier call on this filesystem panicked".into(),
            });
        }
        self.budget.set(budget);
        let r = guard(self.reader_name(), at, f);
        if matches!(r, Err(Error::ReaderPanic { .. })) {
            self.poisoned.set(true);
        }
        if r.is_err() && self.budget.exhausted() {
            return Err(Error::Limit {
                at: at(),
                what: "read budget exhausted: the filesystem's metadata makes the reader loop"
                    .into(),
                limit: budget,
            });
        }
        r
    }

    fn reader_name(&self) -> &'static str {
        match &self.inner {
            Inner::Ext4(_) => "ext4-view",
            Inner::Fat(_) => "FAT",
            Inner::Iso(_) => "ISO 9660",
            Inner::Squash(_) => "squashfs",
            Inner::Live(l) => l.reader_name(),
        }
    }

    /// `lstat`: the entry at `path` itself (a symlink is not followed).
    pub fn metadata(&self, path: &[u8]) -> Result<Entry> {
        let path = normalize(path);
        self.call(&path, || match &self.inner {
            Inner::Ext4(e) => e.metadata(&path, &self.at),
            Inner::Fat(f) => f.metadata(&path, &self.at),
            Inner::Iso(i) => i.metadata(&path, &self.at),
            Inner::Squash(q) => q.metadata(&path, &self.at),
            Inner::Live(l) => l.metadata(&path, &self.at),
        })
    }

    /// Whether `path` exists (without following a final symlink).
    pub fn exists(&self, path: &[u8]) -> Result<bool> {
        match self.metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The entries of the directory at `path` (following symlinks to it), sorted by name
    /// bytes, without `.` and `..`. Symlink entries carry their targets.
    pub fn read_dir(&self, path: &[u8]) -> Result<Vec<Entry>> {
        self.read_dir_as(path, ext4::Path::User)
    }

    /// `read_dir` of a path a walk built from directory entries (no symlinks in it).
    pub(crate) fn read_dir_walked(&self, path: &[u8]) -> Result<Vec<Entry>> {
        self.read_dir_as(path, ext4::Path::Walked)
    }

    fn read_dir_as(&self, path: &[u8], kind: ext4::Path) -> Result<Vec<Entry>> {
        let path = normalize(path);
        let max = self.limits.max_dir_entries;
        let mut entries = self.call(&path, || match &self.inner {
            Inner::Ext4(e) => e.read_dir(&path, kind, &self.at, max),
            Inner::Fat(f) => f.read_dir(&path, &self.at, max),
            Inner::Iso(i) => i.read_dir(&path, &self.at, max),
            Inner::Squash(q) => q.read_dir(&path, &self.at, max),
            Inner::Live(l) => l.read_dir(&path, &self.at, max),
        })?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The target of the symlink at `path`.
    pub fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        let path = normalize(path);
        self.call(&path, || match &self.inner {
            Inner::Ext4(e) => e.read_link(&path, &self.at),
            Inner::Fat(_) => Err(Error::Corrupt {
                at: self.at.with_path(&path),
                reason: "FAT has no symlinks".into(),
            }),
            Inner::Iso(i) => i.read_link(&path, &self.at),
            Inner::Squash(q) => q.read_link(&path, &self.at),
            Inner::Live(l) => l.read_link(&path, &self.at),
        })
    }

    /// Resolves every symlink in `path` (inside this filesystem: absolute targets are taken
    /// relative to its root, as they are once it is mounted at `/`).
    pub fn canonicalize(&self, path: &[u8]) -> Result<Vec<u8>> {
        let path = normalize(path);
        self.call(&path, || match &self.inner {
            Inner::Ext4(e) => e.canonicalize(&path, &self.at),
            Inner::Fat(f) => f.metadata(&path, &self.at).map(|_| path.clone()),
            Inner::Iso(i) => i.canonicalize(&path, &self.at),
            Inner::Squash(q) => q.canonicalize(&path, &self.at),
            Inner::Live(l) => l.canonicalize(&path, &self.at),
        })
    }

    /// Visits everything below `root` (following symlinks to it, never below it), depth
    /// first with children in name order, with the bytes each holds on disk. One budget for
    /// the whole walk: a few times the filesystem's size.
    pub fn allocations(&self, root: &[u8], mut visit: impl FnMut(&Allocation<'_>)) -> Result<()> {
        let root = self.canonicalize(root)?;
        match &self.inner {
            Inner::Ext4(e) => {
                let budget = BASE_BUDGET.saturating_add(self.info.summary.size.saturating_mul(4));
                self.call_with_budget(&root, budget, || {
                    e.allocations(&root, &self.limits, &self.at, &mut visit)
                })
            }
            Inner::Fat(_) | Inner::Iso(_) | Inner::Squash(_) | Inner::Live(_) => {
                // Squashfs data is compressed, shared and packed in fragments: a file counts
                // its size, and hard links (one inode number) once.
                let squash = matches!(self.inner, Inner::Squash(_) | Inner::Live(_));
                let cluster = if squash {
                    1
                } else {
                    self.info.block_size.max(1)
                };
                let mut n = 0u64;
                self.walk(&root, |path, e, depth| {
                    n += 1;
                    let id = if squash {
                        e.id.unwrap_or((1 << 62) + n)
                    } else {
                        n
                    };
                    let dir = e.kind == Kind::Dir;
                    // ISO 9660 symlinks and devices hold no extent.
                    let bytes = if e.kind != Kind::File {
                        0
                    } else {
                        e.size.div_ceil(cluster).saturating_mul(cluster)
                    };
                    visit(&Allocation {
                        path,
                        depth,
                        id,
                        bytes,
                        dir,
                    });
                    Ok(true)
                })
            }
        }
    }

    /// Opens the regular file at `path` (following symlinks).
    pub fn open(&self, path: &[u8]) -> Result<FileReader<'_>> {
        self.open_as(path, ext4::Path::User)
    }

    /// `open` of a path a walk built from directory entries (no symlinks in it).
    pub(crate) fn open_walked(&self, path: &[u8]) -> Result<FileReader<'_>> {
        self.open_as(path, ext4::Path::Walked)
    }

    fn open_as(&self, path: &[u8], kind: ext4::Path) -> Result<FileReader<'_>> {
        let path = normalize(path);
        let max = self.max_file_size();
        let (inner, size) = self.call(&path, || match &self.inner {
            Inner::Ext4(e) => e
                .open_file(&path, kind, &self.at)
                .map(|(f, n)| (ReaderInner::Ext4(Box::new(f)), n)),
            Inner::Fat(f) => f
                .open_file(&path, &self.at)
                .map(|(f, n)| (ReaderInner::Fat(f), n)),
            Inner::Iso(i) => i
                .open_file(&path, &self.at)
                .map(|(f, n)| (ReaderInner::Iso(f), n)),
            Inner::Squash(q) => q
                .open_file(&path, &self.at)
                .map(|(f, n)| (ReaderInner::Squash(f), n)),
            Inner::Live(l) => l.open_file(&path, &self.at).map(|f| match f {
                live::LiveFile::Iso(f, n) => (ReaderInner::Iso(f), n),
                live::LiveFile::Ext4(f, n) => (ReaderInner::Ext4(f), n),
                live::LiveFile::Store(f, n) => (ReaderInner::Squash(f), n),
            }),
        })?;
        if size > max {
            return Err(Error::TooLarge {
                at: self.at.with_path(&path),
                what: "file (larger than its filesystem)",
                size,
                max,
            });
        }
        Ok(FileReader {
            fs: self,
            inner,
            path,
            left: size,
        })
    }

    /// Streams the file at `path` into `out`; returns its size.
    pub fn copy_file(&self, path: &[u8], out: &mut dyn Write) -> Result<u64> {
        let mut r = self.open(path)?;
        let total = r.remaining();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(|source| Error::Host {
                path: "<output>".into(),
                source,
            })?;
        }
        Ok(total)
    }

    /// Reads the whole file at `path` into memory, refusing more than `max` bytes.
    pub fn read_to_vec(&self, path: &[u8], max: u64) -> Result<Vec<u8>> {
        let mut r = self.open(path)?;
        let size = r.remaining();
        let max = max.min(self.limits.max_in_memory);
        if size > max {
            return Err(Error::TooLarge {
                at: self.at.with_path(&normalize(path)),
                what: "file to read into memory",
                size,
                max,
            });
        }
        let mut v = vec![0u8; to_usize(size)];
        let mut done = 0;
        while done < v.len() {
            done += r.read(&mut v[done..])?;
        }
        Ok(v)
    }

    /// Visits `root` and everything below it, depth first, children sorted by name.
    /// `visit(path, entry, depth)` returns whether to descend into a directory; when `root`
    /// is a directory (possibly through symlinks), paths start with its canonical form.
    /// Bounded by [`Limits::max_depth`] and [`Limits::max_walk_entries`]; symlinks below the
    /// root are never followed.
    pub fn walk(
        &self,
        root: &[u8],
        mut visit: impl FnMut(&[u8], &Entry, usize) -> Result<bool>,
    ) -> Result<()> {
        let root = normalize(root);
        let top = self.metadata(&root)?;
        // Below a directory, paths are built from the canonical root, so they hold no
        // symlinks and are read without resolving them again.
        let root = if top.kind == Kind::Dir {
            self.canonicalize(&root)?
        } else {
            root
        };
        let mut visited: u64 = 1;
        let max_entries = self.limits.max_walk_entries;
        if !visit(&root, &top, 0)? || top.kind != Kind::Dir {
            return Ok(());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(id) = top.id {
            seen.insert(id);
        }
        let mut stack: Vec<(Vec<u8>, usize)> = vec![(root, 0)];
        while let Some((dir, depth)) = stack.pop() {
            if depth >= self.limits.max_depth {
                return Err(Error::Limit {
                    at: self.at.with_path(&dir),
                    what: "directory depth (a directory loop?)".into(),
                    limit: len64(self.limits.max_depth),
                });
            }
            let entries = self.read_dir_walked(&dir)?;
            check_names(&entries, &self.at.with_path(&dir))?;
            let mut subdirs = Vec::new();
            for e in entries {
                visited += 1;
                if visited > max_entries {
                    return Err(Error::Limit {
                        at: self.at.with_path(&dir),
                        what: "entries visited (a directory loop?)".into(),
                        limit: max_entries,
                    });
                }
                let p = join(&dir, &e.name);
                if e.kind == Kind::Dir {
                    if let Some(id) = e.id {
                        if !seen.insert(id) {
                            return Err(Error::Corrupt {
                                at: self.at.with_path(&p),
                                reason: "directory loop or cross-linked directory (seen before)"
                                    .into(),
                            });
                        }
                    }
                }
                if visit(&p, &e, depth + 1)? && e.kind == Kind::Dir {
                    subdirs.push(p);
                }
            }
            for p in subdirs.into_iter().rev() {
                stack.push((p, depth + 1));
            }
        }
        Ok(())
    }

    pub(crate) fn set_partition_name(&mut self, name: String) {
        self.at.partition = Some(name);
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn at(&self) -> &Where {
        &self.at
    }
}
