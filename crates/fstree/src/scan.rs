//! [`Scanner`]: host directories to tree nodes, symlinks never followed; owners, modes and
//! times as [`ScanOptions`] say.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::{Error, FileData, Kind, Meta, Node, NodeId, Result, Tree, ROOT};

/// Who owns scanned entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// uid and gid as given (root:root is `Fixed(0, 0)`).
    Fixed(u32, u32),
    /// Keep the host's uid and gid.
    Preserve,
}

/// What permission bits scanned entries get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perms {
    /// Keep the host's permission bits (including setuid, setgid, sticky).
    Preserve,
    /// What Nix's store canonicalisation leaves: directories 0555, files 0444, or 0555 when
    /// any execute bit is set; no setuid/setgid/sticky. Makes the result independent of the
    /// umask and of how the files were checked out.
    NixStore,
    /// What a copy with a fixed policy gives (`--add-tree`): directories 0755, files 0755 when
    /// any execute bit is set, else 0644, symlinks 0777; no setuid/setgid/sticky. Independent
    /// of the umask.
    Normalized,
}

/// What modification time scanned entries get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mtime {
    /// Every entry gets this time.
    Fixed(i64),
    /// The host's mtime.
    Host,
    /// The host's mtime, but never later than this (`SOURCE_DATE_EPOCH` clamping: touching a
    /// file does not change the result).
    Clamp(i64),
}

/// How a host directory is turned into tree nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanOptions {
    /// Whose files they become.
    pub owner: Owner,
    /// Which permission bits they get.
    pub perms: Perms,
    /// Which modification times they get.
    pub mtime: Mtime,
    /// Keep hard links among scanned files as hard links. Off, every name gets its own node
    /// (what a NAR means: Nix store contents have no hard links, so a store copied with or
    /// without `auto-optimise-store` gives the same tree).
    pub hardlinks: bool,
}

/// Builds trees from host directories. Hard links among everything one scanner has seen
/// become one node. Symlinks are recorded as symlinks and never followed.
pub struct Scanner {
    opts: ScanOptions,
    seen: HashMap<(u64, u64), NodeId>,
}

impl Scanner {
    /// A scanner that has seen nothing yet.
    pub fn new(opts: ScanOptions) -> Self {
        Scanner {
            opts,
            seen: HashMap::new(),
        }
    }

    fn meta(&self, md: &std::fs::Metadata, is_dir: bool) -> Meta {
        let host = (md.mode() & 0o7777) as u16;
        let perm = match self.opts.perms {
            Perms::Preserve => host,
            Perms::NixStore if is_dir => 0o555,
            Perms::NixStore if md.file_type().is_symlink() => 0o777,
            Perms::NixStore if host & 0o111 != 0 => 0o555,
            Perms::NixStore => 0o444,
            Perms::Normalized if md.file_type().is_symlink() => 0o777,
            Perms::Normalized if is_dir || host & 0o111 != 0 => 0o755,
            Perms::Normalized => 0o644,
        };
        let (uid, gid) = match self.opts.owner {
            Owner::Fixed(u, g) => (u, g),
            Owner::Preserve => (md.uid(), md.gid()),
        };
        Meta::new(
            perm,
            uid,
            gid,
            match self.opts.mtime {
                Mtime::Fixed(t) => t,
                Mtime::Host => md.mtime(),
                Mtime::Clamp(t) => md.mtime().min(t),
            },
        )
    }

    /// Scan the host directory `src` into a new tree whose root takes `src`'s metadata.
    pub fn scan(&mut self, src: &Path) -> Result<Tree> {
        let md = lstat(src)?;
        if !md.is_dir() {
            return Err(Error::NotADir {
                path: src.display().to_string(),
            });
        }
        let mut tree = Tree::new(self.meta(&md, true));
        self.fill_dir(&mut tree, ROOT, src)?;
        Ok(tree)
    }

    /// Scan the host entry `src` (file, directory, symlink, ...) and name it `name` in `dir`.
    pub fn graft(
        &mut self,
        tree: &mut Tree,
        dir: NodeId,
        name: &[u8],
        src: &Path,
    ) -> Result<NodeId> {
        let md = lstat(src)?;
        if let Some(&id) = self.hardlink(&md) {
            tree.link(dir, name, id)?;
            return Ok(id);
        }
        let node = self.leaf(src, &md)?;
        let is_dir = node.is_dir();
        let id = tree.insert(dir, name, node)?;
        self.remember(&md, id);
        if is_dir {
            self.fill_dir(tree, id, src)?;
        }
        Ok(id)
    }

    fn hardlink(&self, md: &std::fs::Metadata) -> Option<&NodeId> {
        if !self.opts.hardlinks || md.is_dir() || md.nlink() < 2 {
            return None;
        }
        self.seen.get(&(md.dev(), md.ino()))
    }

    fn remember(&mut self, md: &std::fs::Metadata, id: NodeId) {
        if !md.is_dir() && md.nlink() >= 2 {
            self.seen.insert((md.dev(), md.ino()), id);
        }
    }

    fn leaf(&self, src: &Path, md: &std::fs::Metadata) -> Result<Node> {
        let ft = md.file_type();
        let meta = self.meta(md, ft.is_dir());
        let kind = if ft.is_dir() {
            Kind::Dir(BTreeMap::new())
        } else if ft.is_file() {
            Kind::File(FileData::Host {
                path: src.to_path_buf(),
                size: md.len(),
            })
        } else if ft.is_symlink() {
            let t = std::fs::read_link(src).map_err(|source| Error::Io {
                op: "reading symlink",
                path: src.to_path_buf(),
                source,
            })?;
            Kind::Symlink(t.into_os_string().into_encoded_bytes())
        } else {
            let rdev = md.rdev();
            let (major, minor) = (libc::major(rdev), libc::minor(rdev));
            if ft.is_char_device() {
                Kind::CharDev { major, minor }
            } else if ft.is_block_device() {
                Kind::BlockDev { major, minor }
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            }
        };
        Ok(Node { meta, kind })
    }

    fn fill_dir(&mut self, tree: &mut Tree, dir: NodeId, src: &Path) -> Result<()> {
        let rd = std::fs::read_dir(src).map_err(|source| Error::Io {
            op: "reading directory",
            path: src.to_path_buf(),
            source,
        })?;
        let mut names = Vec::new();
        for e in rd {
            let e = e.map_err(|source| Error::Io {
                op: "reading directory",
                path: src.to_path_buf(),
                source,
            })?;
            names.push(e.file_name());
        }
        // Sorted so that hard-link discovery (which name becomes the first) is deterministic.
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = src.join(&name);
            self.graft(tree, dir, OsStr::as_bytes(&name), &path)?;
        }
        Ok(())
    }
}

fn lstat(p: &Path) -> Result<std::fs::Metadata> {
    std::fs::symlink_metadata(p).map_err(|source| Error::Io {
        op: "reading metadata",
        path: p.to_path_buf(),
        source,
    })
}
