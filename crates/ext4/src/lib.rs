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

use fstree::{Meta, NodeId, Tree};
use imgbuild_fstree as fstree;

mod bits;
mod csum;
mod dir;
mod extent;
mod fit;
mod hash;
mod inode;
mod journal;
mod layout;
mod map;
mod prepare;
mod sb;
mod walk;

use extent::Extent;
use layout::Geometry;
pub use prepare::{prepare, Prepared};

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
/// The largest filesystem this writer plans, in bytes ([`MAX_BLOCKS`] blocks).
pub const MAX_SIZE: u64 = MAX_BLOCKS * BLOCK_SIZE;
/// Blocks of the lost+found we create (16 KiB, like mke2fs).
const LPF_BLOCKS: usize = 4;
/// Longest name a directory entry holds, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target, in bytes (`PATH_MAX` less its terminating NUL).
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
    Auto {
        /// Free bytes asked for beyond the minimum.
        extra_free: u64,
    },
    /// Exactly this many bytes (rounded down to whole blocks; a last block group too small
    /// for its own metadata is left out, like mke2fs does).
    Exact(u64),
}

/// What the filesystem is made with besides the tree: its identity, time and size.
#[derive(Clone, Debug)]
pub struct Options {
    /// Volume label, at most 16 bytes.
    pub label: String,
    /// Filesystem UUID (`s_uuid`); also seeds every metadata checksum.
    pub uuid: [u8; 16],
    /// `s_hash_seed` for directory hashing (all zero: the default half-MD4 state).
    pub hash_seed: [u8; 16],
    /// Seconds since the epoch for the superblock times, lost+found and the journal inode.
    pub timestamp: i64,
    /// How big the filesystem is.
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

/// Why a tree cannot become an ext4 filesystem, or a filesystem cannot be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name longer than a directory entry holds.
    #[error("`{path}`: name is {len} bytes long, ext4 allows at most 255")]
    NameTooLong {
        /// The entry's path in the tree.
        path: String,
        /// The name's length in bytes.
        len: usize,
    },
    /// A symlink target that is empty, too long or contains NUL.
    #[error("`{path}`: symlink target is {len} bytes long, must be 1 to 4095 bytes without NUL")]
    BadSymlink {
        /// The symlink's path in the tree.
        path: String,
        /// The target's length in bytes.
        len: usize,
    },
    /// A directory reached by a second name (ext4 directories have one parent).
    #[error("`{path}`: a directory may have only one name (it is hard-linked)")]
    DirHardLink {
        /// The second name's path.
        path: String,
    },
    /// A file with more names than `i_links_count` may count.
    #[error("`{path}`: has {links} names, ext4 allows at most 65000")]
    TooManyLinks {
        /// The path of the name over the limit.
        path: String,
        /// Names counted so far.
        links: u32,
    },
    /// The tree has a `/lost+found` that is not a directory.
    #[error("`/lost+found` must be a directory")]
    LostFoundNotDir,
    /// A file larger than the extent format addresses ([`MAX_FILE_SIZE`]).
    #[error("`{path}`: {size} bytes is more than ext4's largest file")]
    FileTooBig {
        /// The file's path in the tree.
        path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// A directory whose entries need more than a two-level hash tree.
    #[error("directory `{path}` has too many entries ({entries}) for a two-level htree")]
    DirTooBig {
        /// The directory's path in the tree.
        path: String,
        /// Its number of entries.
        entries: usize,
    },
    /// A host file of the tree cannot be read, or is no longer the regular file of the size
    /// the tree records.
    #[error(transparent)]
    Source(#[from] imgbuild_blockio::SourceError),
    /// An exact size smaller than the tree needs.
    #[error("the tree needs {needed} bytes of ext4 filesystem, only {available} are available")]
    DoesNotFit {
        /// The smallest filesystem that holds the tree, in bytes.
        needed: u64,
        /// The size asked for, in bytes.
        available: u64,
    },
    /// A size (asked for or needed) beyond [`MAX_SIZE`].
    #[error(
        "{size} bytes of ext4 filesystem is more than this writer makes: at most {} bytes \
         (16 TiB, 2^32 blocks of 4 KiB)",
        MAX_SIZE
    )]
    TooBig {
        /// The size in bytes.
        size: u64,
    },
    /// A volume label longer than `s_volume_name`'s 16 bytes.
    #[error("label `{label}` is {len} bytes long, at most 16 fit")]
    LabelTooLong {
        /// The label given.
        label: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A volume label with a NUL, which would cut it short for every reader.
    #[error("label {label:?} contains NUL, which would end it early")]
    LabelHasNul {
        /// The label given.
        label: String,
    },
    /// [`Options::reserved_percent`] over 50 (mke2fs's limit).
    #[error("reserved_percent {percent} is more than 50")]
    ReservedTooHigh {
        /// The percentage given.
        percent: u8,
    },
    /// [`Options::inode_ratio`] under 1024 bytes (mke2fs's limit).
    #[error("inode_ratio {ratio} is less than 1024")]
    InodeRatioTooLow {
        /// The ratio given.
        ratio: u32,
    },
    /// The extent map refused an extent (a bug: the plan places everything inside the
    /// filesystem, without overlaps).
    #[error(transparent)]
    Map(#[from] imgbuild_diskmap::Error),
}

/// The result of this crate's operations.
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

/// Plan the filesystem for `tree` at `opts.size`: [`prepare`], then [`Prepared::plan`].
pub fn plan(tree: &Tree, opts: &Options) -> Result<Plan> {
    prepare(tree, opts)?.plan(opts.size)
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
