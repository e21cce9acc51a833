//! A NixOS system assembled from a root tree and a store image mounted into it, read as the
//! booted system sees it:
//!
//! - a live ISO ([`LIVE`]): the ISO 9660 tree with `/nix-store.squashfs` mounted at
//!   `/nix/store`, as the live system's stage 1 mounts it (the overlay's lower layer); `/nix`
//!   is a directory of its own holding `store`;
//! - an appliance ([`APPLIANCE`], imgbuild's `appliance` format and images like nixpkgs'
//!   verity-store ones): the ext4 root with the active `usr` partition's squashfs (holding
//!   `nix/store/…`) mounted at `/usr`, and `/usr/nix/store` bound to `/nix/store`, as the
//!   appliance module's `fileSystems` do.
//!
//! Paths are resolved one component at a time over the root tree (its symlinks followed
//! there); a path reaching the mount goes on in the store image, and one leaving the store
//! image (an absolute symlink elsewhere, `..` above the mount) is routed again, at most
//! [`MAX_SYMLINK_HOPS`] times. A path below the bind mount's source is read below its
//! target; canonical paths are given in the source's form (`/nix/store/…`), as NixOS names
//! them.

use std::collections::VecDeque;

use super::ext4::{self, Ext4Fs};
use super::iso9660::{IsoFs, MAX_SYMLINK_HOPS};
use super::squashfs::{Found, SquashFs};
use super::squashfs_meta::Inode;
use super::{Entry, Kind};
use crate::bytes::len64;
use crate::error::{Error, Result, Where};
use crate::path::{components, from_components, join, normalize};

/// Where the store image is on a live ISO.
pub(crate) const STORE_IMAGE: &[u8] = b"/nix-store.squashfs";
/// Where a live ISO's store image is mounted.
pub(crate) const MOUNT: &[u8] = b"/nix/store";

/// Where a store image is mounted into the root tree.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mounts {
    /// Where the store image's root appears.
    pub mount: &'static [u8],
    /// A bind mount (where, of what): the target lies below [`Mounts::mount`].
    pub bind: Option<(&'static [u8], &'static [u8])>,
    /// `/nix` is made up when the root tree has none (an ISO).
    pub synthetic_nix: bool,
}

/// A live ISO: the store image at `/nix/store`.
pub(crate) const LIVE: Mounts = Mounts {
    mount: MOUNT,
    bind: None,
    synthetic_nix: true,
};

/// An appliance: the `usr` partition at `/usr`, `/usr/nix/store` bound to `/nix/store`.
pub(crate) const APPLIANCE: Mounts = Mounts {
    mount: b"/usr",
    bind: Some((b"/nix/store", b"/usr/nix/store")),
    synthetic_nix: false,
};

/// The root tree a store image is mounted into.
pub(crate) enum Base {
    Iso(IsoFs),
    Ext4(Ext4Fs),
}

impl Base {
    /// `lstat` of a path without symlinks but (perhaps) its last component.
    fn metadata(&self, path: &[u8], at: &Where) -> Result<Entry> {
        match self {
            Base::Iso(i) => i.metadata(path, at),
            Base::Ext4(e) => e.metadata(path, at),
        }
    }

    fn read_link(&self, path: &[u8], at: &Where) -> Result<Vec<u8>> {
        match self {
            Base::Iso(i) => i.read_link(path, at),
            Base::Ext4(e) => e.read_link(path, at),
        }
    }

    /// The directory at a canonical path (symlink-free: ext4 reads it as walked).
    fn read_dir(&self, path: &[u8], at: &Where, max: usize) -> Result<Vec<Entry>> {
        match self {
            Base::Iso(i) => i.read_dir(path, at, max),
            Base::Ext4(e) => e.read_dir(path, ext4::Path::Walked, at, max),
        }
    }

    fn open_file(&self, path: &[u8], at: &Where) -> Result<LiveFile> {
        match self {
            Base::Iso(i) => i.open_file(path, at).map(|(f, n)| LiveFile::Iso(f, n)),
            Base::Ext4(e) => e
                .open_file(path, ext4::Path::Walked, at)
                .map(|(f, n)| LiveFile::Ext4(Box::new(f), n)),
        }
    }
}

/// The root tree and the store image mounted into it.
pub(crate) struct LiveFs {
    pub base: Base,
    pub store: SquashFs,
    pub mounts: Mounts,
}

/// Which reader a path belongs to.
enum Route {
    /// `/nix` made up ([`Mounts::synthetic_nix`]).
    Nix,
    /// In the store image: its inode and canonical path.
    Store(Inode, Vec<u8>),
    /// In the root tree: the path with no symlink but, when not followed, its last component.
    Base(Vec<u8>),
}

/// `/nix`'s entry: a directory as the live system has it.
fn nix_dir(name: &[u8]) -> Entry {
    Entry {
        name: name.to_vec(),
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 0,
        target: None,
        id: Some(1 << 47),
    }
}

/// Whether `path` is `dir` or lies below it.
fn under(path: &[u8], dir: &[u8]) -> bool {
    path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

/// `path` (below `from`) moved below `to`.
fn rebase(path: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut p = to.to_vec();
    p.extend_from_slice(&path[from.len()..]);
    p
}

impl LiveFs {
    /// A path below the bind mount's target in the source's form.
    fn unbind(&self, path: Vec<u8>) -> Vec<u8> {
        match self.mounts.bind {
            Some((src, dst)) if under(&path, dst) => rebase(&path, dst, src),
            _ => path,
        }
    }

    fn route(&self, path: &[u8], follow_last: bool, at: &Where) -> Result<Route> {
        let mut queue: VecDeque<Vec<u8>> = components(&normalize(path)).collect();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        let mut hop = || {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(Error::Limit {
                    at: at.with_path(path),
                    what: "symlinks followed between the root tree and its store image".into(),
                    limit: len64(MAX_SYMLINK_HOPS),
                });
            }
            Ok(())
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
            let mut here = from_components(&done);
            if let Some((src, dst)) = self.mounts.bind {
                if under(&here, src) {
                    here = rebase(&here, src, dst);
                    done = components(&here).collect();
                }
            }
            if under(&here, self.mounts.mount) {
                let rest: Vec<Vec<u8>> = done.iter().chain(queue.iter()).cloned().collect();
                let rest = from_components(&rest);
                match self.store.resolve(&rest, follow_last, at)? {
                    Found::In(n, canon) => return Ok(Route::Store(n, self.unbind(canon))),
                    Found::Out(q) => {
                        hop()?;
                        queue = components(&q).collect();
                        done.clear();
                        continue;
                    }
                }
            }
            let last = queue.is_empty();
            if self.mounts.synthetic_nix && here == b"/nix" {
                if last {
                    return Ok(Route::Nix);
                }
                continue;
            }
            if last && !follow_last {
                return Ok(Route::Base(here));
            }
            let e = self.base.metadata(&here, at)?;
            if e.kind == Kind::Symlink {
                hop()?;
                let target = match e.target {
                    Some(t) => t,
                    None => self.base.read_link(&here, at)?,
                };
                done.pop();
                if target.starts_with(b"/") {
                    done.clear();
                }
                for t in components(&target).rev() {
                    queue.push_front(t);
                }
            } else if !last && e.kind != Kind::Dir {
                return Err(Error::NotADirectory {
                    at: at.with_path(&here),
                });
            }
        }
        Ok(Route::Base(from_components(&done)))
    }

    /// The entry of a mount point (the mounted tree's root) in a listing of the root tree.
    fn mounted(&self, path: &[u8], at: &Where) -> Result<Option<Entry>> {
        let is_mount =
            path == self.mounts.mount || self.mounts.bind.is_some_and(|(src, _)| path == src);
        if !is_mount {
            return Ok(None);
        }
        Ok(match self.route(path, true, at)? {
            Route::Store(n, _) => Some(self.store.entry_of(&n, path)),
            _ => None,
        })
    }

    pub(crate) fn metadata(&self, path: &[u8], at: &Where) -> Result<Entry> {
        match self.route(path, false, at)? {
            Route::Nix => Ok(nix_dir(b"nix")),
            Route::Store(n, _) => Ok(self.store.entry_of(&n, path)),
            Route::Base(p) => self.base.metadata(&p, at),
        }
    }

    pub(crate) fn canonicalize(&self, path: &[u8], at: &Where) -> Result<Vec<u8>> {
        match self.route(path, true, at)? {
            Route::Nix => Ok(b"/nix".to_vec()),
            Route::Store(_, c) => Ok(c),
            Route::Base(p) => {
                // the path must exist
                self.base.metadata(&p, at)?;
                Ok(p)
            }
        }
    }

    pub(crate) fn read_link(&self, path: &[u8], at: &Where) -> Result<Vec<u8>> {
        let not_a_link = || Error::Corrupt {
            at: at.with_path(path),
            reason: "not a symlink".into(),
        };
        match self.route(path, false, at)? {
            Route::Store(n, _) => match n.body {
                super::squashfs_meta::Body::Symlink(t) => Ok(t),
                _ => Err(not_a_link()),
            },
            Route::Nix => Err(not_a_link()),
            Route::Base(p) => self.base.read_link(&p, at),
        }
    }

    pub(crate) fn read_dir(&self, path: &[u8], at: &Where, max: usize) -> Result<Vec<Entry>> {
        match self.route(path, true, at)? {
            Route::Nix => {
                let mut store = nix_dir(b"store");
                if let Route::Store(n, _) = self.route(MOUNT, true, at)? {
                    store = self.store.entry_of(&n, MOUNT);
                }
                Ok(vec![store])
            }
            Route::Store(n, c) => self.store.list(&n, &c, at, max),
            Route::Base(p) => {
                let mut v = self.base.read_dir(&p, at, max)?;
                for e in &mut v {
                    if let Some(m) = self.mounted(&join(&p, &e.name), at)? {
                        *e = m;
                    }
                }
                if self.mounts.synthetic_nix && p == b"/" && !v.iter().any(|e| e.name == b"nix") {
                    v.push(nix_dir(b"nix"));
                }
                Ok(v)
            }
        }
    }

    /// Opens a regular file, in the root tree or in the store image.
    pub(crate) fn open_file(&self, path: &[u8], at: &Where) -> Result<LiveFile> {
        match self.route(path, true, at)? {
            Route::Nix => Err(Error::IsADirectory {
                at: at.with_path(b"/nix"),
            }),
            Route::Store(n, c) => {
                let (f, size) = self.store.open_inode(n, &c, at)?;
                Ok(LiveFile::Store(f, size))
            }
            Route::Base(p) => self.base.open_file(&p, at),
        }
    }

    /// The reader's name in messages.
    pub(crate) fn reader_name(&self) -> &'static str {
        match self.base {
            Base::Iso(_) => "ISO 9660 + squashfs",
            Base::Ext4(_) => "ext4 + squashfs",
        }
    }
}

/// A file opened in the root tree or the store image, and its size.
pub(crate) enum LiveFile {
    Iso(super::iso9660::IsoFile, u64),
    Ext4(Box<ext4_view::File>, u64),
    Store(super::squashfs::SquashFile, u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_and_rebase() {
        assert!(under(b"/usr", b"/usr"));
        assert!(under(b"/usr/nix", b"/usr"));
        assert!(!under(b"/usrx", b"/usr"));
        assert!(!under(b"/", b"/usr"));
        assert_eq!(
            rebase(b"/nix/store/abc", b"/nix/store", b"/usr/nix/store"),
            b"/usr/nix/store/abc"
        );
    }
}
