//! `imgbuild ext4`: a bare ext4 filesystem image from a host directory, through the same
//! stages as a disk image (tree, plan, extent map, sinks).
//!
//! Its ids derive from a documented seed when not given: the label, then for every entry in
//! tree order its path, a NUL, its permission bits (u16 LE), uid and gid (u32 LE), mtime (i64
//! LE), a kind byte (`d`, `f`, `l`, `c`, `b`, `p`, `s`) and, for files, the size (u64 LE)
//! and, for symlinks, the target. The UUID is `Ids::ext4_image_uuid` of that seed, the hash
//! seed `Ids::ext4_image_hash_seed`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use imgbuild_ext4 as ext4;
use imgbuild_fstree::{Kind, Mtime, Owner, Perms, ScanOptions, Scanner, Tree};

use crate::ids::Ids;
use crate::kinds::{Compression, ContainerType};
use crate::output::{self, Job, Outputs};
use crate::{Error, Reporter, Result};

/// The size of an `imgbuild ext4` filesystem: the minimum plus free space, or exact.
pub use imgbuild_ext4::Size as Ext4Size;

/// What `imgbuild ext4` was asked for.
#[derive(Clone, Debug)]
pub struct Ext4ImageOptions {
    /// The image file (written as `OUT.tmp`, renamed when complete).
    pub output: PathBuf,
    /// The volume label (at most 16 bytes).
    pub label: String,
    /// Filesystem UUID (default: derived, see the module docs).
    pub uuid: Option<[u8; 16]>,
    /// Directory hash seed (default: derived).
    pub hash_seed: Option<[u8; 16]>,
    /// The filesystem's size: the minimum plus free space, or exact.
    pub size: ext4::Size,
    /// Keep the source's uid/gid instead of root:root.
    pub preserve_owner: bool,
    /// Keep the source's mtimes instead of clamping them to `epoch`.
    pub preserve_times: bool,
    /// `SOURCE_DATE_EPOCH`: the superblock's time, and the latest mtime the image holds.
    pub epoch: i64,
    /// Worker threads (none or 0: every core).
    pub threads: Option<usize>,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Ext4Image {
    /// Where the image was written.
    pub path: PathBuf,
    /// The image's size in bytes.
    pub size: u64,
    /// SHA-256 of the image, hex.
    pub sha256: String,
    /// The filesystem UUID (given or derived).
    pub uuid: uuid::Uuid,
}

/// The stable seed of a tree's ids (see the module docs).
pub fn tree_seed(label: &str, tree: &Tree) -> Vec<u8> {
    let mut seed = label.as_bytes().to_vec();
    for (path, id) in tree.walk() {
        let n = tree.node(id);
        seed.extend_from_slice(&path);
        seed.push(0);
        seed.extend_from_slice(&n.meta.perm.to_le_bytes());
        seed.extend_from_slice(&n.meta.uid.to_le_bytes());
        seed.extend_from_slice(&n.meta.gid.to_le_bytes());
        seed.extend_from_slice(&n.meta.mtime.to_le_bytes());
        match &n.kind {
            Kind::Dir(_) => seed.push(b'd'),
            Kind::File(d) => {
                seed.push(b'f');
                seed.extend_from_slice(&d.size().to_le_bytes());
            }
            Kind::Symlink(t) => {
                seed.push(b'l');
                seed.extend_from_slice(t);
            }
            Kind::CharDev { .. } => seed.push(b'c'),
            Kind::BlockDev { .. } => seed.push(b'b'),
            Kind::Fifo => seed.push(b'p'),
            Kind::Socket => seed.push(b's'),
        }
    }
    seed
}

/// Scan `src`, plan the filesystem and write it to `opts.output` (as `OUT.tmp`, renamed when
/// complete).
pub fn ext4_image(
    src: &Path,
    opts: &Ext4ImageOptions,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<Ext4Image> {
    if let (Ok(s), Some(o)) = (
        std::fs::canonicalize(src),
        std::path::absolute(&opts.output).ok(),
    ) {
        if o.starts_with(&s) {
            return Err(Error::BadOutput {
                path: opts.output.clone(),
                reason: format!("is inside the source directory `{}`", src.display()),
            });
        }
    }
    reporter.phase("reading the source", 0);
    let mut scanner = Scanner::new(ScanOptions {
        owner: if opts.preserve_owner {
            Owner::Preserve
        } else {
            Owner::Fixed(0, 0)
        },
        perms: Perms::Preserve,
        mtime: if opts.preserve_times {
            Mtime::Host
        } else {
            Mtime::Clamp(opts.epoch)
        },
        hardlinks: true,
    });
    let tree = scanner.scan(src).map_err(|source| Error::Tree {
        what: src.display().to_string(),
        source,
    })?;
    let ids = Ids::from_seed(tree_seed(&opts.label, &tree));
    let uuid = opts.uuid.unwrap_or_else(|| ids.ext4_image_uuid());
    let fs_opts = ext4::Options {
        label: opts.label.clone(),
        uuid,
        hash_seed: opts.hash_seed.unwrap_or_else(|| ids.ext4_image_hash_seed()),
        timestamp: opts.epoch,
        size: opts.size,
        ..Default::default()
    };
    reporter.phase("planning", 0);
    let ext4_err = |source| Error::Ext4 {
        name: opts.output.display().to_string(),
        source,
    };
    let threads = crate::threads(opts.threads);
    let (plan, map) = crate::pool(threads)?.install(|| -> Result<_> {
        let plan = ext4::plan(&tree, &fs_opts).map_err(ext4_err)?;
        let map = plan.map(&tree).map_err(ext4_err)?;
        Ok((plan, map))
    })?;
    let outs = Outputs::bare(&opts.output);
    let job = Job {
        outs: &outs,
        container: ContainerType::default(),
        compression: Compression::None,
        level: 0,
        threads,
        mode: 0o666,
        params: imgbuild_container::Params {
            disk_size: plan.size_bytes(),
            id: uuid,
            time: opts.epoch,
        },
        toplevel: "",
        phase: "writing".into(),
    };
    let hashes = output::run(&job, &map, reporter, cancel, None, |h| Ok((None, h)))?;
    Ok(Ext4Image {
        path: opts.output.clone(),
        size: hashes.image_size,
        sha256: hashes.disk_sha256,
        uuid: uuid::Uuid::from_bytes(uuid),
    })
}
