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

use imgbuild_blockio::to_usize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use imgbuild_blockio as blockio;
use imgbuild_diskmap::{Map, MapBuilder, SourceFile};
use imgbuild_fstree as fstree;

use fstree::{FileData, Kind, NodeId, Tree, ROOT};

mod boot;
mod dirent;
mod geometry;
mod names;

use dirent::{ATTR_ARCHIVE, ATTR_DIRECTORY, ENTRY};
use geometry::{Geometry, SECTOR};
use names::DirName;

/// Most 32-byte entries a directory may have (Linux refuses bigger FAT directories).
pub const MAX_DIR_ENTRIES: u32 = 65536;
/// Largest FAT file.
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// FAT width. [`Auto`](FatType::Auto) chooses as `mkfs.fat` does: FAT32 from 512 MiB,
/// otherwise FAT16, or FAT12 for volumes too small for 4087 FAT16 clusters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FatType {
    #[default]
    Auto,
    Fat12,
    Fat16,
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
    pub volume_id: u32,
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

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("the files need {needed} bytes of FAT clusters but the volume has {available}")]
    DoesNotFit { needed: u64, available: u64 },
    #[error("a FAT32 volume of {size_bytes} bytes has only {clusters} clusters; FAT32 needs at least 65525")]
    TooSmallForFat32 { clusters: u32, size_bytes: u64 },
    #[error("no {fat_type} layout fits in {size_bytes} bytes (mkfs.fat's limits: FAT12 at most 4084 clusters, FAT16 4087 to 65524, FAT32 at least 65525, clusters of at most 64 KiB)")]
    NoGeometry { size_bytes: u64, fat_type: FatType },
    #[error("a FAT volume of {size_bytes} bytes has more than 2^32 sectors")]
    TooLarge { size_bytes: u64 },
    #[error("file name `{path}`: {reason}")]
    BadName { path: String, reason: String },
    #[error("volume label {label:?}: {reason}")]
    BadLabel { label: String, reason: String },
    #[error("the FAT root directory needs {entries} entries but holds {capacity}")]
    RootDirFull { entries: u32, capacity: u32 },
    #[error("directory `{path}` needs {entries} entries; FAT directories hold at most {MAX_DIR_ENTRIES}")]
    DirTooLarge { path: String, entries: u32 },
    #[error("`{path}` is {size} bytes; FAT files are at most {MAX_FILE_SIZE} bytes")]
    FileTooLarge { path: String, size: u64 },
    #[error("`{path}` is a {kind}, which FAT cannot store")]
    Unsupported { path: String, kind: &'static str },
    #[error("`{path}` changed since the plan was made: {planned} bytes planned, {found} found")]
    SourceChanged {
        path: String,
        planned: u64,
        found: u64,
    },
    #[error("the tree given to map differs from the planned one at `{path}`")]
    TreeChanged { path: String },
    #[error("opening `{}` (the source of `{path}`)", host.display())]
    Open {
        path: String,
        host: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The extent map refused an extent (a bug: the plan places everything inside the
    /// volume, without overlaps).
    #[error(transparent)]
    Map(#[from] imgbuild_diskmap::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
enum Target {
    Dir(NodeId),
    File(usize),
}

#[derive(Clone, Debug)]
struct Entry {
    name: DirName,
    target: Target,
    mtime: i64,
}

#[derive(Clone, Debug)]
struct DirInfo {
    /// Index of the parent directory (0, the root, for the root itself).
    parent: usize,
    mtime: i64,
    entries: Vec<Entry>,
    /// 32-byte entries used, including `.`, `..` or the label entry.
    slots: u32,
}

#[derive(Clone, Debug)]
struct FileInfo {
    node: NodeId,
    path: String,
    size: u64,
}

/// The size-independent part of a plan: names and entry counts.
#[derive(Clone, Debug)]
struct Analysis {
    label: Option<[u8; 11]>,
    root_mtime: i64,
    /// Depth-first, name order; index 0 is the root.
    dirs: Vec<DirInfo>,
    dir_index: HashMap<NodeId, usize>,
    files: Vec<FileInfo>,
}

fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::Dir(_) => "directory",
        Kind::File(_) => "regular file",
        Kind::Symlink(_) => "symbolic link",
        Kind::CharDev { .. } => "character device",
        Kind::BlockDev { .. } => "block device",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
    }
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn analyse(tree: &Tree, opts: &Options) -> Result<Analysis> {
    let label = names::label(&opts.label)?;
    let mut dirs: Vec<DirInfo> = Vec::new();
    let mut dir_index = HashMap::new();
    let mut files = Vec::new();
    let mut seen: HashSet<NodeId> = HashSet::from([ROOT]);
    let mut stack: Vec<(NodeId, String, usize)> = vec![(ROOT, "/".to_string(), 0)];
    while let Some((node, path, parent)) = stack.pop() {
        let idx = dirs.len();
        dir_index.insert(node, idx);
        let children: Vec<(&[u8], NodeId)> = tree.children(node).collect();
        let raw: Vec<&[u8]> = children.iter().map(|c| c.0).collect();
        let dir_names = names::name_entries(&path, &raw)?;
        let mut entries = Vec::with_capacity(children.len());
        let mut subdirs = Vec::new();
        let mut slots: u32 = if idx == 0 {
            u32::from(label.is_some())
        } else {
            2
        };
        for ((name, child), dn) in children.into_iter().zip(dir_names) {
            let cpath = child_path(
                &path,
                std::str::from_utf8(name).expect("name_entries accepted only UTF-8 names"),
            );
            let n = tree.node(child);
            let target = match &n.kind {
                Kind::Dir(_) => {
                    if !seen.insert(child) {
                        return Err(Error::Unsupported {
                            path: cpath,
                            kind: "second name of a directory",
                        });
                    }
                    subdirs.push((child, cpath));
                    Target::Dir(child)
                }
                Kind::File(data) => {
                    let size = data.size();
                    if size > MAX_FILE_SIZE {
                        return Err(Error::FileTooLarge { path: cpath, size });
                    }
                    files.push(FileInfo {
                        node: child,
                        path: cpath,
                        size,
                    });
                    Target::File(files.len() - 1)
                }
                other => {
                    return Err(Error::Unsupported {
                        path: cpath,
                        kind: kind_name(other),
                    })
                }
            };
            slots = slots.saturating_add(dn.slots());
            entries.push(Entry {
                name: dn,
                target,
                mtime: n.meta.mtime,
            });
        }
        if slots > MAX_DIR_ENTRIES {
            return Err(Error::DirTooLarge {
                path,
                entries: slots,
            });
        }
        dirs.push(DirInfo {
            parent,
            mtime: tree.node(node).meta.mtime,
            entries,
            slots,
        });
        for (child, cpath) in subdirs.into_iter().rev() {
            stack.push((child, cpath, idx));
        }
    }
    Ok(Analysis {
        label,
        root_mtime: tree.node(ROOT).meta.mtime,
        dirs,
        dir_index,
        files,
    })
}

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

    /// The volume's bytes as an extent map of [`Plan::fs_bytes`] bytes. Files are taken from
    /// `tree`, which must be the tree given to [`plan`]; host files are opened to check their
    /// size and find their holes, and referenced, not read.
    pub fn map(&self, tree: &Tree) -> Result<Map> {
        let mut b = MapBuilder::new("fat", self.fs_bytes());
        self.map_metadata(&mut b)?;
        for i in 0..self.a.files.len() {
            self.map_file(i, tree, &mut b)?;
        }
        Ok(b.finish()?)
    }

    /// Everything but the file contents: boot sectors, FATs and directories.
    fn map_metadata(&self, b: &mut MapBuilder) -> Result<()> {
        let g = &self.geo;
        let label = self.a.label.unwrap_or(*b"NO NAME    ");
        let id = boot::Identity {
            oem_name: &self.oem_name,
            volume_id: self.volume_id,
            label: &label,
            hidden_sectors: self.hidden_sectors,
        };
        let bs = boot::boot_sector(g, &id);
        let mut reserved = vec![0u8; g.reserved_sectors as usize * to_usize(SECTOR)];
        reserved[..512].copy_from_slice(&bs);
        if g.fat_type == FatType::Fat32 {
            let free = g.clusters - self.used_clusters();
            let fsi = boot::fsinfo(free, self.alloc.end - 1);
            let at = |s: u16| usize::from(s) * to_usize(SECTOR);
            reserved[at(boot::FSINFO_SECTOR)..][..512].copy_from_slice(&fsi);
            // Backup boot sector and, right after it, a copy of the FSInfo sector.
            reserved[at(boot::BACKUP_BOOT_SECTOR)..][..512].copy_from_slice(&bs);
            reserved[at(boot::BACKUP_BOOT_SECTOR + 1)..][..512].copy_from_slice(&fsi);
        }
        b.bytes(0, reserved)?;

        // The FATs: the used entries, then free entries (zeros that matter).
        let fat: Arc<[u8]> = boot::fat_bytes(g.fat_type, &self.fat_entries()).into();
        let fat_len = u64::from(g.fat_sectors) * SECTOR;
        debug_assert!(fat.len() as u64 <= fat_len);
        for copy in 0..geometry::NUM_FATS {
            let at = g.fat_start(copy);
            b.bytes_range(at, &fat, 0..fat.len())?;
            b.zeros(at + fat.len() as u64, fat_len - fat.len() as u64)?;
        }

        if g.fat_type != FatType::Fat32 {
            let mut root = vec![0u8; g.root_entries as usize * ENTRY];
            self.encode_dir(0, &mut root);
            b.bytes(g.root_dir_start(), root)?;
        }
        // The directories occupy one run of clusters starting at cluster 2.
        let first_dir = usize::from(g.fat_type != FatType::Fat32);
        let cb = to_usize(g.cluster_bytes());
        let dir_clusters: usize = self.alloc.dirs.iter().map(|d| d.1 as usize).sum();
        if dir_clusters > 0 {
            let mut buf = vec![0u8; dir_clusters * cb];
            for i in first_dir..self.a.dirs.len() {
                let (start, n) = self.alloc.dirs[i];
                let off = (start as usize - 2) * cb;
                self.encode_dir(i, &mut buf[off..off + n as usize * cb]);
            }
            b.bytes(g.cluster_offset(2), buf)?;
        }
        Ok(())
    }

    /// FAT entries 0 .. end of allocation (`u32::MAX` marks an end of chain).
    fn fat_entries(&self) -> Vec<u32> {
        let mut next = vec![0u32; self.alloc.end as usize];
        for &(start, n) in self.alloc.dirs.iter().chain(&self.alloc.files) {
            if n == 0 {
                continue;
            }
            for c in start..start + n - 1 {
                next[c as usize] = c + 1;
            }
            next[(start + n - 1) as usize] = u32::MAX;
        }
        next
    }

    fn dir_cluster(&self, i: usize) -> u32 {
        if i == 0 && self.geo.fat_type != FatType::Fat32 {
            0
        } else {
            self.alloc.dirs[i].0
        }
    }

    fn encode_dir(&self, i: usize, out: &mut [u8]) {
        let d = &self.a.dirs[i];
        let mut pos = 0;
        if i == 0 {
            if let Some(label) = &self.a.label {
                dirent::label_entry(&mut out[pos..], label, self.a.root_mtime);
                pos += ENTRY;
            }
        } else {
            let parent = if d.parent == 0 {
                0
            } else {
                self.dir_cluster(d.parent)
            };
            let me = self.dir_cluster(i);
            dirent::short_entry(
                &mut out[pos..],
                b".          ",
                0,
                ATTR_DIRECTORY,
                me,
                0,
                d.mtime,
            );
            pos += ENTRY;
            dirent::short_entry(
                &mut out[pos..],
                b"..         ",
                0,
                ATTR_DIRECTORY,
                parent,
                0,
                d.mtime,
            );
            pos += ENTRY;
        }
        for e in &d.entries {
            let (attr, cluster, size) = match e.target {
                Target::Dir(node) => (ATTR_DIRECTORY, self.dir_cluster(self.a.dir_index[&node]), 0),
                Target::File(f) => (
                    ATTR_ARCHIVE,
                    self.alloc.files[f].0,
                    // Files over MAX_FILE_SIZE (u32::MAX) were refused when planning.
                    u32::try_from(self.a.files[f].size).expect("at most MAX_FILE_SIZE"),
                ),
            };
            pos += dirent::named_entry(&mut out[pos..], &e.name, attr, cluster, size, e.mtime);
        }
        debug_assert_eq!(pos, d.slots as usize * ENTRY);
    }

    /// The content of file copy `index`: in-memory bytes, or the data ranges of its host
    /// file (its holes as zeros).
    fn map_file(&self, index: usize, tree: &Tree, b: &mut MapBuilder) -> Result<()> {
        let f = &self.a.files[index];
        let kind = (f.node as usize) < tree.len();
        let data = match kind.then(|| &tree.node(f.node).kind) {
            Some(Kind::File(d)) if d.size() == f.size => d,
            _ => {
                return Err(Error::TreeChanged {
                    path: f.path.clone(),
                })
            }
        };
        // An empty file has no cluster.
        let at = || self.geo.cluster_offset(self.alloc.files[index].0);
        match data {
            FileData::Bytes(_) if f.size == 0 => {}
            FileData::Bytes(bytes) => b.bytes_range(at(), bytes, 0..bytes.len())?,
            FileData::Host { path: host, .. } => {
                let open_err = |source| Error::Open {
                    path: f.path.clone(),
                    host: host.clone(),
                    source,
                };
                let src = File::open(host).map_err(open_err)?;
                let found = src.metadata().map_err(open_err)?.len();
                if found != f.size {
                    return Err(Error::SourceChanged {
                        path: f.path.clone(),
                        planned: f.size,
                        found,
                    });
                }
                if f.size == 0 {
                    return Ok(());
                }
                // Data ranges from the file, holes as zeros (FAT files have no holes).
                let at = at();
                let source = SourceFile::new(host, f.size);
                let mut pos = 0;
                for (start, len) in blockio::data_ranges(&src, f.size).map_err(open_err)? {
                    b.zeros(at + pos, start - pos)?;
                    b.file(at + start, &source, start, len)?;
                    pos = start + len;
                }
                b.zeros(at + pos, f.size - pos)?;
            }
        }
        Ok(())
    }
}
