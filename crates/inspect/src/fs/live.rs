//! A NixOS live ISO read as the system it boots: the ISO 9660 tree, with its store image
//! (`/nix-store.squashfs`) mounted at `/nix/store` as the live system's stage 1 mounts it
//! (the overlay's lower layer). `/nix` is a directory of its own holding `store`.
//!
//! Paths under `/nix/store` go to the squashfs reader; one leaving it (an absolute symlink
//! elsewhere, `..` above it) is routed again, at most [`MAX_SYMLINK_HOPS`] times. Symlinks
//! on the ISO itself are resolved on the ISO only (the ISO's tree holds no links into the
//! store).

use super::iso9660::{IsoFs, MAX_SYMLINK_HOPS};
use super::squashfs::{Found, SquashFs};
use super::squashfs_meta::Inode;
use super::{Entry, Kind};
use crate::bytes::len64;
use crate::error::{Error, Result, Where};
use crate::path::normalize;

/// Where the store image is on the ISO.
pub(crate) const STORE_IMAGE: &[u8] = b"/nix-store.squashfs";
/// Where it is mounted.
pub(crate) const MOUNT: &[u8] = b"/nix/store";

/// The ISO and its store image.
pub(crate) struct LiveFs {
    pub iso: IsoFs,
    pub store: SquashFs,
}

/// Which reader a path belongs to.
enum Route {
    /// `/nix`, which neither holds.
    Nix,
    Store(Inode, Vec<u8>),
    Iso(Vec<u8>),
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

impl LiveFs {
    fn route(&self, path: &[u8], follow_last: bool, at: &Where) -> Result<Route> {
        let mut p = normalize(path);
        for _ in 0..=MAX_SYMLINK_HOPS {
            if p == b"/nix" {
                return Ok(Route::Nix);
            }
            if p == MOUNT || p.starts_with(b"/nix/store/") {
                match self.store.resolve(&p, follow_last, at)? {
                    Found::In(n, canon) => return Ok(Route::Store(n, canon)),
                    Found::Out(q) => p = normalize(&q),
                }
            } else {
                return Ok(Route::Iso(p));
            }
        }
        Err(Error::Limit {
            at: at.with_path(path),
            what: "symlinks followed between the ISO and its store image".into(),
            limit: len64(MAX_SYMLINK_HOPS),
        })
    }

    pub(crate) fn metadata(&self, path: &[u8], at: &Where) -> Result<Entry> {
        match self.route(path, false, at)? {
            Route::Nix => Ok(nix_dir(b"nix")),
            Route::Store(n, _) => Ok(self.store.entry_of(&n, path)),
            Route::Iso(p) => self.iso.metadata(&p, at),
        }
    }

    pub(crate) fn canonicalize(&self, path: &[u8], at: &Where) -> Result<Vec<u8>> {
        match self.route(path, true, at)? {
            Route::Nix => Ok(b"/nix".to_vec()),
            Route::Store(_, c) => Ok(c),
            Route::Iso(p) => self.iso.canonicalize(&p, at),
        }
    }

    pub(crate) fn read_link(&self, path: &[u8], at: &Where) -> Result<Vec<u8>> {
        match self.route(path, false, at)? {
            Route::Store(n, _) => match n.body {
                super::squashfs_meta::Body::Symlink(t) => Ok(t),
                _ => Err(Error::Corrupt {
                    at: at.with_path(path),
                    reason: "not a symlink".into(),
                }),
            },
            Route::Nix => Err(Error::Corrupt {
                at: at.with_path(path),
                reason: "not a symlink".into(),
            }),
            Route::Iso(p) => self.iso.read_link(&p, at),
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
            Route::Iso(p) => {
                let mut v = self.iso.read_dir(&p, at, max)?;
                if self.iso.canonicalize(&p, at)? == b"/" && !v.iter().any(|e| e.name == b"nix") {
                    v.push(nix_dir(b"nix"));
                }
                Ok(v)
            }
        }
    }

    /// Opens a regular file, on the ISO or in the store image.
    pub(crate) fn open_file(&self, path: &[u8], at: &Where) -> Result<LiveFile> {
        match self.route(path, true, at)? {
            Route::Nix => Err(Error::IsADirectory {
                at: at.with_path(b"/nix"),
            }),
            Route::Store(n, c) => {
                let (f, size) = self.store.open_inode(n, &c, at)?;
                Ok(LiveFile::Store(f, size))
            }
            Route::Iso(p) => {
                let (f, size) = self.iso.open_file(&p, at)?;
                Ok(LiveFile::Iso(f, size))
            }
        }
    }
}

/// A file opened on a live ISO, and its size.
pub(crate) enum LiveFile {
    Iso(super::iso9660::IsoFile, u64),
    Store(super::squashfs::SquashFile, u64),
}
