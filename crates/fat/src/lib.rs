//! A one-pass FAT12/16/32 writer for a file tree known in advance.
//!
//! [`plan`] lays out the whole volume for an [`fstree::Tree`]: geometry as `mkfs.fat` 4.2
//! would choose it for the size (see `geometry.rs`), one contiguous cluster run per directory
//! and per file, short and long names. [`Plan::map`] then gives the volume's bytes as an
//! [`imgbuild_diskmap::Map`]: boot sector, FSInfo and backup boot sector, both FATs and the
//! directories encoded in memory, each file's data referenced from its source file (its holes
//! as zeros). Metadata is mapped whole, zeros included (a copy onto a used device must
//! clear the free FAT entries and directory ends); nothing here writes an output.
//!
//! Layout: the FAT32 root directory starts at cluster 2; then every other directory, in
//! depth-first name order; then every file's data in the same order. Directory entries are
//! in the tree's (byte) name order; the root starts with the volume-label entry, the other
//! directories with `.` and `..` (short entries only; `..` is cluster 0 when the parent is
//! the root). A file named twice (a hard link) gets two copies: FAT has no hard links.
//!
//! Everything written comes from the tree and [`Options`]: every timestamp is the node's
//! mtime read as UTC (clamped to 1980..2107, 2-second resolution, plus the creation
//! time's 10 ms field for odd seconds), so the same input gives the same bytes.
//!
//! # Compared with `mkfs.fat` 4.2
//!
//! For an empty tree, the bytes up to the end of the root directory are those of
//! `mkfs.fat --invariant [-F N] [-n LABEL] [-h HIDDEN]` on a file of the same size, except
//! the boot code (tested over 34 sizes from 60 KiB to 33 GiB): same FAT type and cluster
//! size choice, sector count rounded down to whole tracks, CHS values (its size-based
//! table), reserved sectors (32 on FAT32, 1 on FAT12/16, both rounded up to a cluster),
//! FAT sizes, root directory of 512 entries (more with clusters over 16 KiB), media byte
//! 0xF8, drive number 0x80, "mkfs.fat" OEM name, extended boot signature, FSInfo in sector 1
//! with a backup of the boot sector in sector 6 and of the FSInfo in sector 7, FAT entry 0
//! 0x?FFFFFF8, entry 1 all ones, chain ends 0x?FFFFFF8, the label in the boot sector and as
//! the root's first entry. Deliberate differences:
//! - the boot code is ours (`int 18h`: "try the next boot device"), not mkfs.fat's message;
//! - the label is upper-cased (mkfs.fat keeps lower case and warns) and the label entry is
//!   dated with the root directory's mtime;
//! - forcing FAT32 on fewer than 65525 clusters is an error ([`Error::TooSmallForFat32`]),
//!   where mkfs.fat only warns: FAT32 with fewer clusters is read as FAT16 by firmware that
//!   follows the specification;
//! - sizes of 360, 720, 1200, 1440 and 2880 KiB get hard-disk values, not floppy formats;
//! - the FSInfo free count and next-free hint describe the written volume.
//!
//! This crate knows nothing of Nix, partitions or boot loaders.

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
// Casts that may truncate, lose a sign or wrap are spelled out (`try_from` with a reason,
// `to_usize` for in-memory lengths); tests may cast freely.
#![cfg_attr(
    not(test),
    warn(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )
)]

use std::fmt;

use imgbuild_fstree as fstree;

use fstree::Tree;

mod analyse;
mod boot;
mod dirent;
mod geometry;
mod map;
mod names;

use analyse::{analyse, Analysis};
use dirent::ENTRY;
use geometry::{Geometry, SECTOR};
pub use names::{LabelProblem, NameProblem};

/// Most 32-byte entries a directory may have (Linux refuses bigger FAT directories).
pub const MAX_DIR_ENTRIES: u32 = 65536;
/// Largest FAT file.
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// FAT width. [`Auto`](FatType::Auto) chooses as `mkfs.fat` does: FAT32 from 512 MiB,
/// otherwise FAT16, or FAT12 for volumes too small for 4087 FAT16 clusters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FatType {
    /// Chosen from the size, as mkfs.fat does.
    #[default]
    Auto,
    /// 12-bit FAT entries: at most 4084 clusters.
    Fat12,
    /// 16-bit FAT entries: 4087 to 65524 clusters.
    Fat16,
    /// 28-bit FAT entries: at least 65525 clusters.
    Fat32,
}

impl fmt::Display for FatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FatType::Auto => "FAT",
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        })
    }
}

/// What the caller decides about the volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Up to 11 ASCII characters, upper-cased; empty for none ("NO NAME" in the boot
    /// sector and no label entry, as mkfs.fat).
    pub label: String,
    /// The volume id (serial number) in the boot sector, shown as `XXXX-XXXX`.
    pub volume_id: u32,
    /// FAT width, or `Auto`.
    pub fat_type: FatType,
    /// Boot sector bytes 3..11.
    pub oem_name: [u8; 8],
    /// BPB hidden sectors: the LBA where the partition starts (some firmware checks it).
    pub hidden_sectors: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            label: String::new(),
            volume_id: 0,
            fat_type: FatType::Auto,
            oem_name: *b"mkfs.fat",
            hidden_sectors: 0,
        }
    }
}

/// Why a tree cannot become a FAT volume of the size asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The files and directories need more clusters than the volume has.
    #[error("the files need {needed} bytes of FAT clusters but the volume has {available}")]
    DoesNotFit {
        /// Bytes of clusters needed.
        needed: u64,
        /// Bytes of clusters the volume has.
        available: u64,
    },
    /// FAT32 asked for on a volume too small for 65525 clusters.
    #[error("a FAT32 volume of {size_bytes} bytes has only {clusters} clusters; FAT32 needs at least 65525")]
    TooSmallForFat32 {
        /// Clusters the volume would have.
        clusters: u32,
        /// The volume size given.
        size_bytes: u64,
    },
    /// No cluster size gives a cluster count within the FAT type's limits.
    #[error("no {fat_type} layout fits in {size_bytes} bytes (mkfs.fat's limits: FAT12 at most 4084 clusters, FAT16 4087 to 65524, FAT32 at least 65525, clusters of at most 64 KiB)")]
    NoGeometry {
        /// The volume size given.
        size_bytes: u64,
        /// The FAT type asked for.
        fat_type: FatType,
    },
    /// A volume beyond the 32-bit sector count.
    #[error("a FAT volume of {size_bytes} bytes has more than 2^32 sectors")]
    TooLarge {
        /// The volume size given.
        size_bytes: u64,
    },
    /// A file name FAT cannot store.
    #[error("file name `{path}`: {reason}")]
    BadName {
        /// The entry's path in the tree.
        path: String,
        /// What is wrong with it.
        reason: NameProblem,
    },
    /// A volume label FAT cannot store.
    #[error("volume label {label:?}: {reason}")]
    BadLabel {
        /// The label given.
        label: String,
        /// What is wrong with it.
        reason: LabelProblem,
    },
    /// A FAT12/16 root directory with more entries than its fixed size holds.
    #[error("the FAT root directory needs {entries} entries but holds {capacity}")]
    RootDirFull {
        /// 32-byte entries needed.
        entries: u32,
        /// 32-byte entries it holds.
        capacity: u32,
    },
    /// A directory with more than [`MAX_DIR_ENTRIES`] entries.
    #[error("directory `{path}` needs {entries} entries; FAT directories hold at most {MAX_DIR_ENTRIES}")]
    DirTooLarge {
        /// The directory's path in the tree.
        path: String,
        /// 32-byte entries needed.
        entries: u32,
    },
    /// A file larger than [`MAX_FILE_SIZE`].
    #[error("`{path}` is {size} bytes; FAT files are at most {MAX_FILE_SIZE} bytes")]
    FileTooLarge {
        /// The file's path in the tree.
        path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// A node FAT cannot hold: a symlink, device, FIFO, socket, or a directory's second name.
    #[error("`{path}` is a {kind}, which FAT cannot store")]
    Unsupported {
        /// The node's path in the tree.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// The host file of a tree entry cannot be read, or is no longer the regular file of
    /// the size the tree records.
    #[error("the source of `{path}`")]
    Source {
        /// The entry's path in the tree.
        path: String,
        /// What is wrong with the host file.
        #[source]
        source: imgbuild_blockio::SourceError,
    },
    /// [`Plan::map`] given a tree other than the planned one.
    #[error("the tree given to map differs from the planned one at `{path}`")]
    TreeChanged {
        /// The first path found different.
        path: String,
    },
    /// The extent map refused an extent (a bug: the plan places everything inside the
    /// volume, without overlaps).
    #[error(transparent)]
    Map(#[from] imgbuild_diskmap::Error),
}

/// The result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where everything goes for one geometry.
#[derive(Clone, Debug)]
struct Allocation {
    /// First cluster and cluster count of each directory (0, 0 for a FAT12/16 root).
    dirs: Vec<(u32, u32)>,
    /// First cluster and cluster count of each file (0, 0 when empty).
    files: Vec<(u32, u32)>,
    /// First cluster after everything allocated.
    end: u32,
}

fn allocate(a: &Analysis, g: &Geometry) -> Result<Allocation> {
    let cb = g.cluster_bytes();
    let mut next: u64 = 2;
    let mut dirs = Vec::with_capacity(a.dirs.len());
    for (i, d) in a.dirs.iter().enumerate() {
        if i == 0 && g.fat_type != FatType::Fat32 {
            if d.slots > g.root_entries {
                return Err(Error::RootDirFull {
                    entries: d.slots,
                    capacity: g.root_entries,
                });
            }
            dirs.push((0, 0));
            continue;
        }
        let n = (u64::from(d.slots) * ENTRY as u64).div_ceil(cb).max(1);
        dirs.push((next, n));
        next += n;
    }
    let mut files = Vec::with_capacity(a.files.len());
    for f in &a.files {
        let n = f.size.div_ceil(cb);
        files.push((if n == 0 { 0 } else { next }, n));
        next += n;
    }
    let used = next - 2;
    if used > u64::from(g.clusters) {
        return Err(Error::DoesNotFit {
            needed: used * cb,
            available: u64::from(g.clusters) * cb,
        });
    }
    // Every count is at most g.clusters < 2^28 now.
    let fit = |v: u64| u32::try_from(v).expect("at most the cluster count, below 2^28");
    let narrow = |v: Vec<(u64, u64)>| v.into_iter().map(|(s, n)| (fit(s), fit(n))).collect();
    Ok(Allocation {
        dirs: narrow(dirs),
        files: narrow(files),
        end: fit(next),
    })
}

/// The complete layout of a FAT volume for one tree; [`Plan::map`] gives its bytes.
#[derive(Clone, Debug)]
pub struct Plan {
    geo: Geometry,
    a: Analysis,
    alloc: Allocation,
    volume_id: u32,
    oem_name: [u8; 8],
    hidden_sectors: u32,
}

/// Lay out a FAT volume of `size_bytes` bytes (rounded down to whole sectors, then to whole
/// tracks, like mkfs.fat) holding `tree`.
pub fn plan(tree: &Tree, size_bytes: u64, opts: &Options) -> Result<Plan> {
    let a = analyse(tree, opts)?;
    let geo = geometry::compute(size_bytes, opts.fat_type)?;
    let alloc = allocate(&a, &geo)?;
    Ok(Plan {
        geo,
        a,
        alloc,
        volume_id: opts.volume_id,
        oem_name: opts.oem_name,
        hidden_sectors: opts.hidden_sectors,
    })
}

/// The smallest size in bytes (a multiple of 512) for which [`plan`] succeeds with `opts`,
/// found by bisection. Near the sizes where mkfs.fat's rules change the cluster size or the
/// FAT type, a slightly smaller size may also fit; the result always does.
pub fn min_size(tree: &Tree, opts: &Options) -> Result<u64> {
    let a = analyse(tree, opts)?;
    let fits = |sectors: u64| -> Result<bool> {
        match geometry::compute(sectors * SECTOR, opts.fat_type)
            .and_then(|g| allocate(&a, &g).map(|_| ()))
        {
            Ok(()) => Ok(true),
            Err(
                Error::DoesNotFit { .. }
                | Error::NoGeometry { .. }
                | Error::TooSmallForFat32 { .. }
                | Error::RootDirFull { .. },
            ) => Ok(false),
            Err(e) => Err(e),
        }
    };
    let max = u64::from(u32::MAX);
    let (mut lo, mut hi) = (0u64, 2048u64);
    while !fits(hi)? {
        if hi == max {
            // Nothing fits: report why the largest volume does not.
            return Err(geometry::compute(max * SECTOR, opts.fat_type)
                .and_then(|g| allocate(&a, &g).map(|_| ()))
                .err()
                .unwrap_or(Error::TooLarge {
                    size_bytes: max * SECTOR,
                }));
        }
        lo = hi;
        hi = (hi * 2).min(max);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi * SECTOR)
}

impl Plan {
    /// FAT12, FAT16 or FAT32 (never `Auto`).
    pub fn fat_type(&self) -> FatType {
        self.geo.fat_type
    }
    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u32 {
        // At most 128 sectors of 512 bytes.
        u32::try_from(self.geo.cluster_bytes()).expect("at most 64 KiB")
    }
    /// Data clusters of the volume.
    pub fn clusters(&self) -> u32 {
        self.geo.clusters
    }
    /// Data clusters in use (directories and files).
    pub fn used_clusters(&self) -> u32 {
        self.alloc.end - 2
    }
    /// Bytes the filesystem spans: the size given to [`plan`], rounded down to whole tracks.
    pub fn fs_bytes(&self) -> u64 {
        self.geo.fs_bytes()
    }
    /// Bytes in use: reserved sectors, FATs, FAT12/16 root directory and used clusters.
    pub fn used_bytes(&self) -> u64 {
        u64::from(self.geo.data_start_sector()) * SECTOR
            + u64::from(self.used_clusters()) * self.geo.cluster_bytes()
    }
    /// Bytes of file content.
    pub fn data_bytes(&self) -> u64 {
        self.a.files.iter().map(|f| f.size).sum()
    }

    /// Number of file copies (a file named twice is stored twice).
    pub fn file_count(&self) -> usize {
        self.a.files.len()
    }
}
