//! The store image: the closure as a squashfs filesystem, what NixOS's ISOs and netboot
//! initrds mount at `/nix/.ro-store`.
//!
//! Laid out as nixpkgs' `make-squashfs.nix` lays it out (`mksquashfs nix-path-registration
//! $(cat store-paths) OUT -keep-as-directory -all-root -no-hardlinks -b 1048576 -comp zstd
//! -Xcompression-level 19 -root-mode 0755`): at the top one directory per store path of the
//! closure, named by its base name, and `nix-path-registration` (closureInfo's registration
//! text, what the root filesystem's `/nix-path-registration` holds); every owner root; store
//! files with Nix's canonical modes and mtime 1, the top directory and the registration with
//! the build's time. The superblock's time is the build's time too.
//!
//! It is written once to a temporary file beside the output (see [`temp_path`]), whose
//! ranges the ISO's or the initrd's map then reference; the file is removed when the
//! [`StoreImage`] is dropped. The bytes depend on the closure and the time only: the
//! squashfs writer compresses on the current rayon pool, whatever its size, in order.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use imgbuild_fstree::{Node, Tree};
use imgbuild_squashfs as squashfs;

use crate::options::Context;
use crate::trees::{dir_meta, file_meta, graft_closure};
use crate::{Error, Inputs, Reporter, Result};

/// nixpkgs' data block size for the store image (`-b 1048576`).
pub(crate) const BLOCK_SIZE: u32 = 1 << 20;
/// The name of the registration file at the image's top.
pub(crate) const REGISTRATION: &str = "nix-path-registration";

/// A store image written to a temporary file; the file is removed when this is dropped.
#[derive(Debug)]
pub(crate) struct StoreImage {
    /// The file holding the image.
    pub path: PathBuf,
    /// Its size in bytes (a multiple of 4 KiB).
    pub size: u64,
    /// What the squashfs writer reports (inodes, blocks, duplicate files).
    pub summary: squashfs::Summary,
}

impl Drop for StoreImage {
    fn drop(&mut self) {
        // Best effort: a file already gone (or never renamed anywhere) is no error.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where a build writing `output` keeps its store image: `OUT.store.tmp`, beside it (same
/// file system, so the space is checked where the output goes).
pub(crate) fn temp_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_os_string();
    s.push(".store.tmp");
    PathBuf::from(s)
}

/// The store image's tree: the closure's store paths and `nix-path-registration` at the top.
pub(crate) fn tree(cx: &Context, inputs: &Inputs, cancel: &AtomicBool) -> Result<Tree> {
    let mut tree = Tree::new(dir_meta(cx.time));
    let root = imgbuild_fstree::ROOT;
    graft_closure(&mut tree, root, inputs, cancel)?;
    let reg = inputs.closure.registration_text();
    tree.insert(
        root,
        REGISTRATION.as_bytes(),
        Node::bytes(file_meta(cx.time), reg.into_bytes()),
    )
    .map_err(|source| Error::Tree {
        what: REGISTRATION.into(),
        source,
    })?;
    Ok(tree)
}

/// The squashfs options of the store image at time `time`, zstd at `level`.
pub(crate) fn options(time: i64, level: i32) -> squashfs::Options {
    squashfs::Options {
        block_size: BLOCK_SIZE,
        compression: squashfs::Compression::Zstd { level },
        mkfs_time: time,
        fragments: true,
        dedup: true,
    }
}

/// The store partition's tree (nixpkgs' `image.repart.verityStore`: systemd-repart copies
/// every store path of the closure to its own path, `CopyFiles=/nix/store/<path>`): the
/// store paths under `nix/store`, no registration (the root file system has the Nix
/// database). `nix` and `nix/store` are root's, 0755, with the build's time.
pub(crate) fn usr_tree(cx: &Context, inputs: &Inputs, cancel: &AtomicBool) -> Result<Tree> {
    let mut tree = Tree::new(dir_meta(cx.time));
    let store = tree
        .mkdir_p(b"/nix/store", dir_meta(cx.time))
        .map_err(|source| Error::Tree {
            what: "/nix/store".into(),
            source,
        })?;
    graft_closure(&mut tree, store, inputs, cancel)?;
    Ok(tree)
}

/// Write the closure's store image to `path` (created or truncated, never followed if a
/// symlink), compressing on the current rayon pool. Progress counts the image's bytes as
/// they are written; `cancel` stops the write (the file is removed, [`Error::Interrupted`]).
pub(crate) fn write(
    cx: &Context,
    inputs: &Inputs,
    path: &Path,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<StoreImage> {
    let tree = tree(cx, inputs, cancel)?;
    write_tree(cx, &tree, path, reporter, cancel)
}

/// [`write`] of any store image tree (`tree` or `usr_tree`).
pub(crate) fn write_tree(
    cx: &Context,
    tree: &Tree,
    path: &Path,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<StoreImage> {
    reporter.phase("writing the store image", 0);
    let io_err = |op| {
        move |source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("creating"))?;
    // From here the file is ours: dropping `image` on any error removes it.
    let mut image = StoreImage {
        path: path.to_path_buf(),
        size: 0,
        summary: squashfs::Summary {
            bytes_used: 0,
            size: 0,
            inodes: 0,
            fragments: 0,
            blocks: 0,
            duplicate_files: 0,
        },
    };
    let out = Watched {
        file,
        progress: reporter,
        cancel,
    };
    let summary =
        squashfs::write(tree, &options(cx.time, cx.output.store_level), out).map_err(|source| {
            if cancel.load(Ordering::Relaxed) {
                Error::Interrupted
            } else {
                crate::error::output_full(path)(Error::Squashfs {
                    path: path.to_path_buf(),
                    source,
                })
            }
        })?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing"))?;
    image.size = summary.size;
    image.summary = summary;
    Ok(image)
}

/// The output file, counting bytes written and refusing to go on once cancelled.
struct Watched<'a> {
    file: File,
    progress: &'a dyn Reporter,
    cancel: &'a AtomicBool,
}

impl Write for Watched<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("interrupted"));
        }
        let n = self.file.write(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Watched<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

#[cfg(test)]
mod tests;
