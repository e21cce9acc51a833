//! A one-pass ext4 writer.
//!
//! [`plan`] takes an [`fstree::Tree`] and [`Options`], numbers the inodes, scans host files
//! for holes, builds every directory, and lays out the whole filesystem: the exact number of
//! blocks, where every group's metadata goes, every file's extents. [`Plan::map`] then
//! gives the filesystem's bytes as an [`imgbuild_diskmap::Map`]: metadata encoded in memory
//! (on rayon's current pool), file data referenced from the source files, zero blocks left
//! out. Nothing here writes an output.
//!
//! The result is what `mke2fs -t ext4` (e2fsprogs 1.47) makes by default, minus
//! `resize_inode`: 4 KiB blocks, 256-byte inodes, `has_journal ext_attr dir_index filetype
//! extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize
//! metadata_csum`. Nothing here reads a clock, a random source or the environment: the same
//! tree and options give the same bytes, whatever the thread count.
//!
//! Deliberate differences from mke2fs:
//! - no `resize_inode` and no reserved GDT blocks (U-Boot compatibility, simplicity);
//! - every group is initialized (no `INODE_UNINIT`/`BLOCK_UNINIT`), all with
//!   `ITABLE_ZEROED` since the output is zero wherever nothing is written;
//! - the journal follows the directories instead of sitting mid-filesystem;
//! - `s_overhead_clusters` and `s_kbytes_written` stay 0, the inode generation is 0, every
//!   inode time (atime, ctime, mtime, crtime) is the tree's mtime;
//! - inodes are numbered depth-first in name order; a directory needing more than one
//!   block is always hash-indexed, leaves packed full;
//! - the minimum size leaves no free blocks: the reserved-blocks count is only recorded,
//!   free space comes from [`Size::Auto`]'s `extra_free`, with one more inode per
//!   `inode_ratio` bytes of it;
//! - times after 2310-04-04 are clamped (e2fsck would take them for mis-encoded pre-1970
//!   times).

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
use std::fs::File;
use std::path::PathBuf;

use fstree::{FileData, Kind, Meta, NodeId, Tree, ROOT};
use imgbuild_blockio as blockio;
use imgbuild_fstree as fstree;
use rayon::prelude::*;

mod bits;
mod csum;
mod dir;
mod extent;
mod hash;
mod inode;
mod journal;
mod layout;
mod map;
mod sb;

use extent::Extent;
use layout::{Alloc, GeoError, Geometry};

/// Filesystem block size.
pub const BLOCK_SIZE: u64 = 4096;
pub(crate) const BLOCKS_PER_GROUP: u64 = 32768;
pub(crate) const INODE_SIZE: usize = 256;
pub(crate) const INODES_PER_BLOCK: u32 = 16;
const _: () = assert!(INODES_PER_BLOCK as usize * INODE_SIZE == 4096);
pub(crate) const DESC_SIZE: usize = 64;
pub(crate) const FLEX_GROUPS: u32 = 16;
pub(crate) const FIRST_INO: u32 = 11;
pub(crate) const ROOT_INO: u32 = 2;
pub(crate) const JOURNAL_INO: u32 = 8;
pub(crate) const LPF_INO: u32 = 11;
/// The smallest filesystem that gets a journal (mke2fs's limit): 8 MiB.
pub const MIN_BLOCKS: u64 = 2048;
/// The largest filesystem this writer plans: 2^32 blocks (16 TiB). Its plan holds a little
/// state per block group (bitmaps shared between groups with the same contents), so this
/// also bounds the plan's memory; ext4 itself (64bit) goes further.
pub const MAX_BLOCKS: u64 = 1 << 32;
pub const MAX_SIZE: u64 = MAX_BLOCKS * BLOCK_SIZE;
/// Blocks of the lost+found we create (16 KiB, like mke2fs).
const LPF_BLOCKS: usize = 4;
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_SYMLINK_LEN: usize = 4095;
/// Symlink targets shorter than this live in the inode.
const FAST_SYMLINK: usize = 60;
/// Largest regular file: 2^32 - 2 blocks (the extent format's logical block limit).
pub const MAX_FILE_SIZE: u64 = 0xFFFF_FFFE * BLOCK_SIZE;
/// Most names a non-directory may have (`EXT4_LINK_MAX`).
const LINK_MAX: u32 = 65000;

/// How big the filesystem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// The smallest size that holds the tree, plus `extra_free` bytes of free space
    /// (rounded up to whole blocks).
    Auto { extra_free: u64 },
    /// Exactly this many bytes (rounded down to whole blocks; a last block group too small
    /// for its own metadata is left out, like mke2fs does).
    Exact(u64),
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Volume label, at most 16 bytes.
    pub label: String,
    pub uuid: [u8; 16],
    /// `s_hash_seed` for directory hashing (all zero: the default half-MD4 state).
    pub hash_seed: [u8; 16],
    /// Seconds since the epoch for the superblock times, lost+found and the journal inode.
    pub timestamp: i64,
    pub size: Size,
    /// Blocks reserved for root, in percent of the filesystem (mke2fs `-m`, default 5).
    /// Only recorded in the superblock: the minimum size does not include them.
    pub reserved_percent: u8,
    /// One inode per this many bytes of filesystem (mke2fs `-i`, default 16384); there are
    /// always at least enough inodes for the tree.
    pub inode_ratio: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            label: String::new(),
            uuid: [0; 16],
            hash_seed: [0; 16],
            timestamp: 0,
            size: Size::Auto { extra_free: 0 },
            reserved_percent: 5,
            inode_ratio: 16384,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("`{path}`: name is {len} bytes long, ext4 allows at most 255")]
    NameTooLong { path: String, len: usize },
    #[error("`{path}`: symlink target is {len} bytes long, must be 1 to 4095 bytes without NUL")]
    BadSymlink { path: String, len: usize },
    #[error("`{path}`: a directory may have only one name (it is hard-linked)")]
    DirHardLink { path: String },
    #[error("`{path}`: has {links} names, ext4 allows at most 65000")]
    TooManyLinks { path: String, links: u32 },
    #[error("`/lost+found` must be a directory")]
    LostFoundNotDir,
    #[error("`{path}`: {size} bytes is more than ext4's largest file")]
    FileTooBig { path: String, size: u64 },
    #[error("directory `{path}` has too many entries ({entries}) for a two-level htree")]
    DirTooBig { path: String, entries: usize },
    #[error("`{}`: cannot read it", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` changed since it was scanned: planned {planned} bytes, found {found}", path.display())]
    SourceChanged {
        path: PathBuf,
        planned: u64,
        found: u64,
    },
    #[error("the tree needs {needed} bytes of ext4 filesystem, only {available} are available")]
    DoesNotFit { needed: u64, available: u64 },
    #[error(
        "{size} bytes of ext4 filesystem is more than this writer makes: at most {} bytes \
         (16 TiB, 2^32 blocks of 4 KiB)",
        MAX_SIZE
    )]
    TooBig { size: u64 },
    #[error("invalid option: {0}")]
    BadOption(String),
    /// The extent map refused an extent (a bug: the plan places everything inside the
    /// filesystem, without overlaps).
    #[error(transparent)]
    Map(#[from] imgbuild_diskmap::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Type {
    Dir,
    Reg,
    Symlink,
    Chr,
    Blk,
    Fifo,
    Sock,
}

/// Everything about one inode that the writer needs.
#[derive(Debug)]
pub(crate) struct Ino {
    pub ino: u32,
    /// The tree node; `None` for the journal and a lost+found we add.
    pub node: Option<NodeId>,
    pub typ: Type,
    pub meta: Meta,
    pub links: u32,
    pub size: u64,
    /// Logical block runs `(first, count)` that hold data (files, directories, slow
    /// symlinks).
    pub runs: Vec<(u64, u64)>,
    /// Where the runs landed.
    pub extents: Vec<Extent>,
    /// Extent tree blocks (leaves first).
    pub tree: Vec<u64>,
    /// Built directory blocks.
    pub dir: Option<dir::DirBlocks>,
}

impl Ino {
    fn data_blocks(&self) -> u64 {
        self.runs.iter().map(|r| r.1).sum()
    }
}

/// A complete layout of the filesystem, ready to be written.
#[derive(Debug)]
pub struct Plan {
    pub(crate) inos: Vec<Ino>,
    pub(crate) geo: Geometry,
    /// Every block below this is in use.
    pub(crate) used_end: u64,
    pub(crate) min_blocks: u64,
    pub(crate) max_ino: u32,
    pub(crate) opts: Options,
    pub(crate) fs_seed: u32,
    pub(crate) data_bytes: u64,
}

impl Plan {
    /// Size of the filesystem in bytes (the length of [`Plan::map`]).
    pub fn size_bytes(&self) -> u64 {
        self.geo.blocks * BLOCK_SIZE
    }

    /// The smallest filesystem that holds this tree (with no free space asked for).
    pub fn min_size_bytes(&self) -> u64 {
        self.min_blocks * BLOCK_SIZE
    }

    /// Bytes of file data the filesystem holds (for progress reports).
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Free blocks the filesystem will have.
    pub fn free_bytes(&self) -> u64 {
        (self.geo.blocks - self.used_blocks()) * BLOCK_SIZE
    }

    /// Number of inodes in the filesystem, and how many of them are used.
    pub fn inode_counts(&self) -> (u64, u64) {
        (self.geo.inodes(), u64::from(self.max_ino))
    }

    pub(crate) fn used_blocks(&self) -> u64 {
        let beyond: u64 = self
            .geo
            .reserved
            .iter()
            .filter(|r| r.1 > self.used_end)
            .map(|r| r.1 - r.0.max(self.used_end))
            .sum();
        self.used_end + beyond
    }

    /// The filesystem's bytes as an extent map of [`Plan::size_bytes`] bytes: metadata
    /// encoded in memory, file data referenced from the tree's host files (read when the map
    /// is streamed), zero blocks left out. `tree` must be the tree given to [`plan`].
    pub fn map(&self, tree: &Tree) -> Result<imgbuild_diskmap::Map> {
        map::map(self, tree)
    }
}

/// The htree hash (half-MD4, signed chars, with the filesystem's hash seed) of a file name,
/// as stored in index blocks (low bit clear). For tests and diagnostics.
pub fn dir_hash(name: &[u8], hash_seed: &[u8; 16]) -> u32 {
    hash::dx_hash(name, &hash::seed_words(hash_seed)).0
}

/// Human-readable path of a tree entry for error messages.
fn show(path: &[u8]) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        String::from_utf8_lossy(path).into_owned()
    }
}

fn joined(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Result of walking the tree: inodes in number order (without the journal).
struct Walked {
    inos: Vec<Ino>,
    /// Inode number of each node (0: unreachable).
    node_ino: Vec<u32>,
    /// Tree path of each directory inode, for error messages (index: ino).
    dir_paths: Vec<(u32, Vec<u8>)>,
    /// Parent inode of each directory (by ino).
    parent: Vec<(u32, u32)>,
    /// Whether we add lost+found ourselves.
    own_lpf: bool,
}

fn new_ino(ino: u32, node: Option<NodeId>, typ: Type, meta: Meta) -> Ino {
    Ino {
        ino,
        node,
        typ,
        meta,
        links: 0,
        size: 0,
        runs: Vec::new(),
        extents: Vec::new(),
        tree: Vec::new(),
        dir: None,
    }
}

/// Number the inodes in depth-first order (directories before their entries, entries in
/// name order) and check every name and node.
fn walk(tree: &Tree, timestamp: i64) -> Result<Walked> {
    let n = tree.len();
    let mut node_ino = vec![0u32; n];
    let mut visited = vec![false; n];
    let mut names = vec![0u32; n];
    let mut subdirs: Vec<u32> = vec![0; n];
    let mut inos = Vec::new();
    let mut dir_paths = Vec::new();
    let mut parent = Vec::new();

    let own_lpf = match tree.lookup_in(ROOT, b"lost+found") {
        Some(id) if tree.node(id).is_dir() => {
            node_ino[id as usize] = LPF_INO;
            false
        }
        Some(_) => return Err(Error::LostFoundNotDir),
        None => true,
    };
    node_ino[ROOT as usize] = ROOT_INO;
    visited[ROOT as usize] = true;
    inos.push(new_ino(
        ROOT_INO,
        Some(ROOT),
        Type::Dir,
        tree.node(ROOT).meta,
    ));
    dir_paths.push((ROOT_INO, Vec::new()));
    parent.push((ROOT_INO, ROOT_INO));
    if own_lpf {
        let mut lpf = new_ino(LPF_INO, None, Type::Dir, Meta::new(0o700, 0, 0, timestamp));
        lpf.links = 2;
        inos.push(lpf);
        subdirs[ROOT as usize] += 1;
        dir_paths.push((LPF_INO, b"/lost+found".to_vec()));
        parent.push((LPF_INO, ROOT_INO));
    }

    let mut next = FIRST_INO + 1;
    struct Frame<'t> {
        dir: NodeId,
        kids: Vec<(&'t [u8], NodeId)>,
        pos: usize,
        path: Vec<u8>,
    }
    let mut stack = vec![Frame {
        dir: ROOT,
        kids: tree.children(ROOT).collect(),
        pos: 0,
        path: Vec::new(),
    }];
    while let Some(top) = stack.last_mut() {
        let Some(&(name, child)) = top.kids.get(top.pos) else {
            stack.pop();
            continue;
        };
        top.pos += 1;
        let dir_node = top.dir;
        if name.len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong {
                path: show(&joined(&top.path, name)),
                len: name.len(),
            });
        }
        let c = child as usize;
        names[c] += 1;
        let node = tree.node(child);
        if names[c] > LINK_MAX && !node.is_dir() {
            return Err(Error::TooManyLinks {
                path: show(&joined(&top.path, name)),
                links: names[c],
            });
        }
        if visited[c] {
            if node.is_dir() {
                return Err(Error::DirHardLink {
                    path: show(&joined(&top.path, name)),
                });
            }
            continue;
        }
        visited[c] = true;
        let ino = if node_ino[c] != 0 {
            node_ino[c]
        } else {
            let i = next;
            next += 1;
            node_ino[c] = i;
            i
        };
        let path = || show(&joined(&top.path, name));
        let (typ, size) = match &node.kind {
            Kind::Dir(_) => (Type::Dir, 0),
            Kind::File(d) => {
                let size = d.size();
                if size > MAX_FILE_SIZE {
                    return Err(Error::FileTooBig { path: path(), size });
                }
                (Type::Reg, size)
            }
            Kind::Symlink(t) => {
                if t.is_empty() || t.len() > MAX_SYMLINK_LEN || t.contains(&0) {
                    return Err(Error::BadSymlink {
                        path: path(),
                        len: t.len(),
                    });
                }
                (Type::Symlink, t.len() as u64)
            }
            Kind::CharDev { .. } => (Type::Chr, 0),
            Kind::BlockDev { .. } => (Type::Blk, 0),
            Kind::Fifo => (Type::Fifo, 0),
            Kind::Socket => (Type::Sock, 0),
        };
        let mut i = new_ino(ino, Some(child), typ, node.meta);
        i.size = size;
        if typ == Type::Symlink && to_usize(size) >= FAST_SYMLINK {
            i.runs.push((0, 1));
        }
        inos.push(i);
        if typ == Type::Dir {
            subdirs[dir_node as usize] += 1;
            let p = joined(&top.path, name);
            let parent_ino = node_ino[dir_node as usize];
            dir_paths.push((ino, p.clone()));
            parent.push((ino, parent_ino));
            stack.push(Frame {
                dir: child,
                kids: tree.children(child).collect(),
                pos: 0,
                path: p,
            });
        }
    }
    for i in inos.iter_mut() {
        let Some(node) = i.node else { continue };
        let k = node as usize;
        i.links = if i.typ == Type::Dir {
            // dir_nlink: past the limit a directory's count is 1.
            let l = 2 + subdirs[k];
            if l > LINK_MAX {
                1
            } else {
                l
            }
        } else {
            names[k]
        };
    }
    inos.sort_unstable_by_key(|i| i.ino);
    dir_paths.sort_unstable_by_key(|p| p.0);
    parent.sort_unstable_by_key(|p| p.0);
    Ok(Walked {
        inos,
        node_ino,
        dir_paths,
        parent,
        own_lpf,
    })
}

/// Block runs of a host file's data (holes left out), and its size now.
fn scan_host(path: &std::path::Path, planned: u64) -> Result<Vec<(u64, u64)>> {
    let unreadable = |source| Error::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(unreadable)?;
    let md = f.metadata().map_err(unreadable)?;
    if md.len() != planned {
        return Err(Error::SourceChanged {
            path: path.to_path_buf(),
            planned,
            found: md.len(),
        });
    }
    // Enough blocks allocated to cover the size: no holes, no need to look for them.
    if std::os::unix::fs::MetadataExt::blocks(&md) * 512 >= planned {
        return Ok(block_runs(&[(0, planned)]));
    }
    let ranges = blockio::data_ranges(&f, planned).map_err(unreadable)?;
    Ok(block_runs(&ranges))
}

/// Byte ranges to the block runs that cover them (adjacent or overlapping runs merged).
fn block_runs(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in ranges {
        if len == 0 {
            continue;
        }
        let b0 = off / BLOCK_SIZE;
        let b1 = (off + len).div_ceil(BLOCK_SIZE);
        match out.last_mut() {
            Some(last) if last.0 + last.1 >= b0 => last.1 = last.1.max(b1 - last.0),
            _ => out.push((b0, b1 - b0)),
        }
    }
    out
}

fn file_type(kind: &Kind) -> u8 {
    match kind {
        Kind::Dir(_) => dir::FT_DIR,
        Kind::File(_) => dir::FT_REG,
        Kind::Symlink(_) => dir::FT_SYMLINK,
        Kind::CharDev { .. } => dir::FT_CHR,
        Kind::BlockDev { .. } => dir::FT_BLK,
        Kind::Fifo => dir::FT_FIFO,
        Kind::Socket => dir::FT_SOCK,
    }
}

/// Plan the filesystem for `tree` at `opts.size`: [`prepare`], then [`Prepared::plan`].
pub fn plan(tree: &Tree, opts: &Options) -> Result<Plan> {
    prepare(tree, opts)?.plan(opts.size)
}

/// The size-independent part of a plan: inodes numbered, host files scanned for holes,
/// directories built. [`Prepared::min_size`] and [`Prepared::plan`] then size and lay it out
/// as often as needed without looking at the tree again.
#[derive(Debug)]
pub struct Prepared {
    lay: Layouter,
    max_ino: u32,
    opts: Options,
    fs_seed: u32,
    data_bytes: u64,
}

/// Number the inodes, scan host files for holes and build the directories of `tree`
/// (`opts.size` is not used). Nothing is written.
pub fn prepare(tree: &Tree, opts: &Options) -> Result<Prepared> {
    if opts.label.len() > 16 {
        return Err(Error::BadOption(format!(
            "label `{}` is {} bytes long, at most 16 fit",
            opts.label,
            opts.label.len()
        )));
    }
    // s_volume_name is NUL-padded: a NUL inside cuts the label for every reader.
    if opts.label.contains('\0') {
        return Err(Error::BadOption(format!(
            "label {:?} contains NUL, which would end it early",
            opts.label
        )));
    }
    if opts.reserved_percent > 50 {
        return Err(Error::BadOption(format!(
            "reserved_percent {} is more than 50",
            opts.reserved_percent
        )));
    }
    if opts.inode_ratio < 1024 {
        return Err(Error::BadOption(format!(
            "inode_ratio {} is less than 1024",
            opts.inode_ratio
        )));
    }
    let Walked {
        mut inos,
        node_ino,
        dir_paths,
        parent,
        own_lpf,
    } = walk(tree, opts.timestamp)?;
    let fs_seed = csum::fs_seed(&opts.uuid);
    let seed = hash::seed_words(&opts.hash_seed);

    // Scan host files and build directories, in parallel; results are per inode, so the
    // order of work does not matter.
    inos.par_iter_mut().try_for_each(|i| -> Result<()> {
        match i.typ {
            Type::Reg => {
                let Some(node) = i.node else { return Ok(()) };
                let Kind::File(data) = &tree.node(node).kind else {
                    unreachable!("a Reg inode comes from a File node")
                };
                i.runs = match data {
                    FileData::Host { path, size } => scan_host(path, *size)?,
                    FileData::Bytes(b) if b.is_empty() => Vec::new(),
                    FileData::Bytes(b) => vec![(0, (b.len() as u64).div_ceil(BLOCK_SIZE))],
                };
            }
            Type::Dir => {
                let parent_ino = parent
                    .binary_search_by_key(&i.ino, |p| p.0)
                    .map(|k| parent[k].1)
                    .expect("every directory has a recorded parent");
                let mut entries: Vec<dir::Entry> = match i.node {
                    Some(node) => tree
                        .children(node)
                        .map(|(name, c)| dir::Entry {
                            name,
                            ino: node_ino[c as usize],
                            ftype: file_type(&tree.node(c).kind),
                        })
                        .collect(),
                    None => Vec::new(),
                };
                if own_lpf && i.ino == ROOT_INO {
                    let at = entries.partition_point(|e| e.name < &b"lost+found"[..]);
                    entries.insert(
                        at,
                        dir::Entry {
                            name: b"lost+found",
                            ino: LPF_INO,
                            ftype: dir::FT_DIR,
                        },
                    );
                }
                let spare = if i.node.is_none() { LPF_BLOCKS - 1 } else { 0 };
                let dseed = csum::inode_seed(fs_seed, i.ino, 0);
                let built =
                    dir::build(i.ino, parent_ino, &entries, &seed, dseed, spare).map_err(|_| {
                        Error::DirTooBig {
                            path: dir_paths
                                .binary_search_by_key(&i.ino, |p| p.0)
                                .map_or_else(|_| String::new(), |k| show(&dir_paths[k].1)),
                            entries: entries.len(),
                        }
                    })?;
                i.size = built.blocks() * BLOCK_SIZE;
                i.runs = vec![(0, built.blocks())];
                i.dir = Some(built);
            }
            _ => {}
        }
        Ok(())
    })?;

    let max_ino = inos.last().map_or(LPF_INO, |i| i.ino).max(LPF_INO);
    let data_bytes = inos
        .iter()
        .filter(|i| i.typ == Type::Reg)
        .map(|i| {
            i.runs
                .iter()
                .map(|&(b, n)| (n * BLOCK_SIZE).min(i.size - b * BLOCK_SIZE))
                .sum::<u64>()
        })
        .sum();

    // The journal: its runs are set per layout (its size depends on the fs size).
    let jpos = inos.partition_point(|i| i.ino < JOURNAL_INO);
    let jmeta = Meta::new(0o600, 0, 0, opts.timestamp);
    let mut j = new_ino(JOURNAL_INO, None, Type::Reg, jmeta);
    j.links = 1;
    inos.insert(jpos, j);

    Ok(Prepared {
        lay: Layouter {
            inos,
            min_inodes: u64::from(max_ino),
            ratio: u64::from(opts.inode_ratio),
        },
        max_ino,
        opts: opts.clone(),
        fs_seed,
        data_bytes,
    })
}

impl Prepared {
    /// Bytes of file data the filesystem will hold.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// The size [`Prepared::plan`] gives for [`Size::Auto`] with `extra_free` bytes free.
    pub fn min_size(&mut self, extra_free: u64) -> Result<u64> {
        Ok(self.blocks(Size::Auto { extra_free })?.0 * BLOCK_SIZE)
    }

    /// `(block count, minimum block count)` for `size`.
    fn blocks(&mut self, size: Size) -> Result<(u64, u64)> {
        let lay = &mut self.lay;
        let max_ino = u64::from(self.max_ino);
        lay.min_inodes = max_ino;
        let min_blocks = lay.smallest(0)?;
        // Free space comes with inodes to use it: one per `inode_ratio` bytes of it.
        let ratio = lay.ratio;
        let too_big = |size| Error::TooBig { size };
        let blocks = match size {
            Size::Auto { extra_free } if extra_free > MAX_SIZE => return Err(too_big(extra_free)),
            Size::Exact(bytes) if bytes / BLOCK_SIZE > MAX_BLOCKS => return Err(too_big(bytes)),
            Size::Auto { extra_free: 0 } => min_blocks,
            Size::Auto { extra_free } => {
                lay.min_inodes = max_ino + extra_free / ratio;
                lay.smallest(extra_free.div_ceil(BLOCK_SIZE))?
            }
            Size::Exact(bytes) => {
                let fail = Error::DoesNotFit {
                    needed: min_blocks * BLOCK_SIZE,
                    available: bytes,
                };
                let n = bytes / BLOCK_SIZE;
                lay.min_inodes = max_ino + bytes.saturating_sub(min_blocks * BLOCK_SIZE) / ratio;
                match lay.fit_exact(n) {
                    Some(n) => n,
                    None => {
                        lay.min_inodes = max_ino;
                        lay.fit_exact(n).ok_or(fail)?
                    }
                }
            }
        };
        Ok((blocks, min_blocks))
    }

    /// Size and lay out everything: every block address.
    pub fn plan(mut self, size: Size) -> Result<Plan> {
        let (blocks, min_blocks) = self.blocks(size)?;
        let (geo, used_end) = self.lay.layout(blocks).map_err(|_| Error::DoesNotFit {
            needed: min_blocks * BLOCK_SIZE,
            available: blocks * BLOCK_SIZE,
        })?;
        debug_assert!(used_end.max(geo.meta_end()) <= blocks);
        Ok(Plan {
            inos: self.lay.inos,
            geo,
            used_end,
            min_blocks,
            max_ino: self.max_ino,
            opts: Options { size, ..self.opts },
            fs_seed: self.fs_seed,
            data_bytes: self.data_bytes,
        })
    }
}

/// Lays the inodes out on filesystems of a given size.
#[derive(Debug)]
struct Layouter {
    inos: Vec<Ino>,
    min_inodes: u64,
    ratio: u64,
}

impl Layouter {
    /// Lay out everything on `blocks` blocks; returns the geometry and the end of the used
    /// blocks (which may exceed `blocks`: then it does not fit).
    fn layout(&mut self, blocks: u64) -> Result<(Geometry, u64), GeoError> {
        let geo = Geometry::new(blocks, self.min_inodes, self.ratio)?;
        let jlen = journal::default_blocks(blocks.max(MIN_BLOCKS))
            .expect("MIN_BLOCKS is large enough for a journal");
        let mut alloc = Alloc::new(&geo.reserved);
        let mut runs = Vec::new();
        let mut place = |i: &mut Ino, alloc: &mut Alloc| {
            i.extents.clear();
            i.tree.clear();
            for &(first, n) in &i.runs {
                runs.clear();
                alloc.take(n, &mut runs);
                extent::push_runs(&mut i.extents, first, &runs);
            }
            let t = extent::tree_blocks(i.extents.len());
            if t > 0 {
                runs.clear();
                alloc.take(t, &mut runs);
                i.tree.extend(runs.iter().flat_map(|&(s, n)| s..s + n));
            }
        };
        // Directories first (near the inode tables), then the journal, then files.
        for i in self.inos.iter_mut().filter(|i| i.typ == Type::Dir) {
            place(i, &mut alloc);
        }
        for i in self.inos.iter_mut().filter(|i| i.ino == JOURNAL_INO) {
            i.runs = vec![(0, jlen)];
            i.size = jlen * BLOCK_SIZE;
            place(i, &mut alloc);
        }
        for i in self
            .inos
            .iter_mut()
            .filter(|i| i.typ != Type::Dir && i.ino != JOURNAL_INO)
        {
            place(i, &mut alloc);
        }
        let end = alloc.end();
        Ok((geo, end))
    }

    /// The block count to use for an exact size of `n` blocks: `n`, or less when the last
    /// group cannot hold its own metadata (like mke2fs, which drops such a group); `None`
    /// if the tree does not fit.
    fn fit_exact(&mut self, mut n: u64) -> Option<u64> {
        if n < MIN_BLOCKS {
            return None;
        }
        if let Ok((g, _)) = self.layout(n) {
            if g.meta_end() > n && n > BLOCKS_PER_GROUP {
                n = (n - 1) / BLOCKS_PER_GROUP * BLOCKS_PER_GROUP;
            }
        }
        match self.layout(n) {
            Ok((g, end)) if end.max(g.meta_end()) <= n => Some(n),
            _ => None,
        }
    }

    /// Blocks needed when the fs has `blocks` blocks and `extra` must stay free.
    /// The block count this layout needs at `blocks` blocks: everything allocated must fit
    /// below it, and `extra` blocks must stay free. Free means not used by anything: the
    /// metadata of later groups (superblock backups, bitmaps, inode tables) beyond the last
    /// allocated block is used, not free, so it is counted, but not as a position: counting
    /// `extra` from the end of the last metadata instead would grow the filesystem by a group
    /// each time a backup moves past it.
    fn needed(&mut self, blocks: u64, extra: u64) -> u64 {
        match self.layout(blocks) {
            Ok((geo, end)) => {
                let within = |lim: u64| -> u64 {
                    geo.reserved
                        .iter()
                        .map(|&(s, e)| e.min(lim).saturating_sub(s.min(lim)))
                        .sum()
                };
                // Blocks handed out by the allocator lie below `end`, between the metadata.
                let allocated = end - within(end);
                let used = within(blocks) + allocated;
                (used + extra).max(end).max(geo.meta_end())
            }
            Err(GeoError::TooFewGroups { blocks: b }) => b.max(blocks + 1),
        }
    }

    /// The smallest block count at which everything fits with `extra` blocks free.
    fn smallest(&mut self, extra: u64) -> Result<u64> {
        let content: u64 = self.inos.iter().map(|i| i.data_blocks()).sum();
        let mut n = (content + extra).max(MIN_BLOCKS);
        for _ in 0..1000 {
            if n > MAX_BLOCKS {
                return Err(Error::TooBig {
                    size: n.saturating_mul(BLOCK_SIZE),
                });
            }
            let need = self.needed(n, extra).max(MIN_BLOCKS);
            if need <= n {
                return Ok(n);
            }
            n = need;
        }
        Err(Error::DoesNotFit {
            needed: n * BLOCK_SIZE,
            available: n * BLOCK_SIZE,
        })
    }
}

pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_from_ranges() {
        assert_eq!(block_runs(&[(0, 1)]), [(0, 1)]);
        assert_eq!(block_runs(&[(0, 4096), (4096, 10)]), [(0, 2)]);
        assert_eq!(block_runs(&[(0, 100), (8192, 4096)]), [(0, 1), (2, 1)]);
        assert_eq!(block_runs(&[(1024, 1024), (3072, 2048)]), [(0, 2)]);
    }
}
