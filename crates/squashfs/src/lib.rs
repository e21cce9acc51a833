//! A squashfs 4.0 writer: the read-only, compressed store image that NixOS's ISOs and
//! netboot initrds mount.
//!
//! [`write()`] takes an [`fstree::Tree`] and [`Options`] and writes the filesystem to any
//! `Write + Seek`, front to back, with the superblock written last at the start:
//!
//! 1. superblock (96 bytes, zeros until the end), then the zstd options when the level is
//!    not zstd's squashfs default (15);
//! 2. the data: every regular file once in tree order (a file whose bytes equal an earlier
//!    file's points at that file's blocks, as mksquashfs does), cut into blocks; files smaller
//!    than a block packed into fragment blocks (unless [`Options::fragments`] is off); blocks
//!    of zeros are holes, not stored. Blocks are read and compressed on rayon's *current*
//!    pool, at most a window (8 per thread) ahead of the one being written, in order. Each
//!    source file is opened once (`blockio::open_input`: regular files only, no blocking on
//!    a FIFO) and must still have the size the tree gives it;
//! 3. the inode table and the directory table, as 8 KiB metadata blocks: inodes of a
//!    directory's entries before the directory's own (so every reference points backwards
//!    and is known when written), listings split into headers of at most 256 entries that
//!    share one inode block and a base number within ±32767, extended directories with an
//!    index entry per metadata block;
//! 4. the fragment table, the id table (uids and gids, in order of first use), each as
//!    metadata blocks followed by the positions of those blocks; no export table, no xattrs;
//! 5. zeros up to a multiple of 4 KiB (what loop devices need); then the superblock.
//!
//! Inode numbers follow the tree: depth first, names in byte order, the root 1. Nothing here
//! reads a clock, the environment or a random source, and the thread count changes no byte.
//! Times before 1970 or after 2106 (squashfs keeps unsigned 32-bit seconds) are clamped.

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

use std::collections::HashMap;
use std::io::{BufWriter, Seek, SeekFrom, Write};

use fstree::{Kind, NodeId, Tree};
use imgbuild_fstree as fstree;

mod data;
mod dir;
mod inode;
mod meta;
mod tables;

use meta::{Codec, MetaWriter};
use tables::Tables;

/// `hsqs`.
pub const MAGIC: u32 = 0x7371_7368;
/// Size of the superblock the image starts with.
pub const SUPERBLOCK_SIZE: u64 = 96;
/// Longest name: Linux's `NAME_MAX`. The format allows 256 (`SQUASHFS_NAME_LEN`), but no
/// Linux program could look such a name up.
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target we write (the kernel refuses one longer than a page).
pub const MAX_SYMLINK_LEN: usize = 4095;
/// The image is padded to a multiple of this, as mksquashfs does (loop devices).
pub const PAD: u64 = 4096;
/// Most distinct uids and gids: the superblock counts them in a 16-bit `no_ids`
/// (`u16::MAX`), so inodes index them from 0 to 65534.
pub const MAX_IDS: usize = 65_535;
/// mksquashfs's zstd level when none is given; other levels are recorded in the image.
pub const ZSTD_DEFAULT_LEVEL: i32 = 15;
const ZSTD_ID: u16 = 6;
const GZIP_ID: u16 = 1;
const INVALID_TABLE: u64 = u64::MAX;

// Superblock flags (squashfs-tools' squashfs_fs.h).
const FLAG_NOI: u16 = 1 << 0;
const FLAG_NOD: u16 = 1 << 1;
const FLAG_NOF: u16 = 1 << 3;
const FLAG_NO_FRAG: u16 = 1 << 4;
const FLAG_DUPLICATE: u16 = 1 << 6;
const FLAG_NOX: u16 = 1 << 8;
const FLAG_NO_XATTR: u16 = 1 << 9;
const FLAG_COMP_OPT: u16 = 1 << 10;
const FLAG_NOID: u16 = 1 << 11;

/// How blocks are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Every block stored as it is (recorded as gzip, which every kernel reads).
    None,
    /// zstd at `level` (1 to 22), each block on its own. nixpkgs' ISOs use 19.
    Zstd {
        /// The zstd level.
        level: i32,
    },
}

/// How the filesystem is written: block size, compression, time, packing.
#[derive(Clone, Debug)]
pub struct Options {
    /// Data block size: a power of two from 4 KiB to 1 MiB. mksquashfs defaults to 128 KiB;
    /// nixpkgs' `make-squashfs.nix` passes 1 MiB (`-b 1048576`). Older kernels refuse to
    /// mount blocks smaller than their page size (64 KiB on some aarch64 kernels).
    pub block_size: u32,
    /// How data and metadata blocks are compressed.
    pub compression: Compression,
    /// Seconds since the epoch recorded as the superblock's `mkfs_time`.
    pub mkfs_time: i64,
    /// Pack files smaller than a block into fragment blocks (mksquashfs's default). Off,
    /// each small file is a short block of its own (`-no-fragments`).
    pub fragments: bool,
    /// Store identical files once (mksquashfs's default; `-no-duplicates` off).
    pub dedup: bool,
}

impl Default for Options {
    /// mksquashfs's defaults with `-comp zstd`.
    fn default() -> Self {
        Options {
            block_size: 128 << 10,
            compression: Compression::Zstd {
                level: ZSTD_DEFAULT_LEVEL,
            },
            mkfs_time: 0,
            fragments: true,
            dedup: true,
        }
    }
}

/// Why a tree cannot be written as squashfs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A block size that is not a power of two from 4 KiB to 1 MiB.
    #[error("block size {block_size} is not a power of two from 4 KiB to 1 MiB")]
    BadBlockSize {
        /// The block size given.
        block_size: u32,
    },
    /// A zstd level outside 1 to 22.
    #[error("zstd level {level} is not from 1 to 22")]
    BadZstdLevel {
        /// The level given.
        level: i32,
    },
    /// A name longer than [`MAX_NAME_LEN`].
    #[error("`{path}`: name is {len} bytes long, at most 255 are allowed")]
    NameTooLong {
        /// The entry's path in the tree.
        path: String,
        /// The name's length in bytes.
        len: usize,
    },
    /// A symlink target that is empty or longer than [`MAX_SYMLINK_LEN`].
    #[error("`{path}`: symlink target is {len} bytes long, must be 1 to 4095 bytes")]
    BadSymlink {
        /// The symlink's path in the tree.
        path: String,
        /// The target's length in bytes.
        len: usize,
    },
    /// A directory reached by a second name.
    #[error("`{path}`: a directory may have only one name (it is hard-linked)")]
    DirHardLink {
        /// The second name's path.
        path: String,
    },
    /// A device number squashfs cannot encode.
    #[error("`{path}`: device {major}:{minor} does not fit squashfs's 12-bit major, 20-bit minor")]
    BadDevice {
        /// The device node's path (or inode number).
        path: String,
        /// Its major number.
        major: u32,
        /// Its minor number.
        minor: u32,
    },
    /// More distinct uids and gids than the id table holds.
    #[error("at least {ids} distinct uids and gids, squashfs holds at most {MAX_IDS}")]
    TooManyIds {
        /// Distinct ids counted when the limit was passed.
        ids: usize,
    },
    /// A host file of the tree cannot be read, or is no longer the regular file of the size
    /// the tree records.
    #[error(transparent)]
    Source(#[from] imgbuild_blockio::SourceError),
    /// A table, directory or count beyond squashfs's 32-bit fields.
    #[error("the {what} is larger than squashfs can address")]
    TooBig {
        /// What grew too large (`inode table`, `directory`, ...).
        what: &'static str,
    },
    /// The compressor failed.
    #[error("compressing a block")]
    Compress {
        /// What zstd said.
        #[source]
        source: std::io::Error,
    },
    /// The output refused a write or seek.
    #[error("writing the image")]
    Write {
        /// What the output said.
        #[source]
        source: std::io::Error,
    },
}

/// The result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What [`write()`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The filesystem's size (the superblock's `bytes_used`).
    pub bytes_used: u64,
    /// Bytes written: `bytes_used` padded to a multiple of [`PAD`].
    pub size: u64,
    /// Inodes written.
    pub inodes: u32,
    /// Fragment blocks written.
    pub fragments: u32,
    /// Data and fragment blocks stored.
    pub blocks: u64,
    /// Regular files whose bytes an earlier file already holds.
    pub duplicate_files: u64,
}

fn show(p: &[u8]) -> String {
    if p.is_empty() {
        "/".into()
    } else {
        String::from_utf8_lossy(p).into_owned()
    }
}

/// Seconds as squashfs's unsigned 32-bit time, clamped.
fn secs(t: i64) -> u32 {
    u32::try_from(t.clamp(0, i64::from(u32::MAX))).expect("clamped to u32's range")
}

fn check_options(o: &Options) -> Result<Codec> {
    if !o.block_size.is_power_of_two() || !(4096..=1 << 20).contains(&o.block_size) {
        return Err(Error::BadBlockSize {
            block_size: o.block_size,
        });
    }
    match o.compression {
        Compression::None => Ok(Codec::None),
        Compression::Zstd { level } if (1..=22).contains(&level) => Ok(Codec::Zstd(level)),
        Compression::Zstd { level } => Err(Error::BadZstdLevel { level }),
    }
}

/// The tree checked and numbered.
struct Numbered {
    /// Inode number of each node (0: unreachable).
    numbers: Vec<u32>,
    count: u32,
    /// Distinct uids and gids in order of first use, and each one's index.
    ids: Vec<u32>,
    id_index: HashMap<u32, u16>,
    /// Regular files in number order.
    files: Vec<NodeId>,
}

fn number(tree: &Tree) -> Result<Numbered> {
    let mut n = Numbered {
        numbers: vec![0; tree.len()],
        count: 0,
        ids: Vec::new(),
        id_index: HashMap::new(),
        files: Vec::new(),
    };
    for (path, id) in tree.walk() {
        let node = tree.node(id);
        let name_len = path.len() - path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        if name_len > MAX_NAME_LEN {
            return Err(Error::NameTooLong {
                path: show(&path),
                len: name_len,
            });
        }
        if n.numbers[id as usize] != 0 {
            if node.is_dir() {
                return Err(Error::DirHardLink { path: show(&path) });
            }
            continue;
        }
        n.count = n.count.checked_add(1).ok_or(Error::TooBig {
            what: "inode count",
        })?;
        n.numbers[id as usize] = n.count;
        match &node.kind {
            Kind::Symlink(t) if t.is_empty() || t.len() > MAX_SYMLINK_LEN => {
                return Err(Error::BadSymlink {
                    path: show(&path),
                    len: t.len(),
                })
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor }
                if inode::encode_dev(*major, *minor).is_none() =>
            {
                return Err(Error::BadDevice {
                    path: show(&path),
                    major: *major,
                    minor: *minor,
                })
            }
            Kind::File(_) => n.files.push(id),
            _ => {}
        }
        for v in [node.meta.uid, node.meta.gid] {
            if !n.id_index.contains_key(&v) {
                // Refused here, before any byte is written: the superblock's `no_ids` is
                // 16 bits, so indexes stop at MAX_IDS - 1.
                if n.ids.len() >= MAX_IDS {
                    return Err(Error::TooManyIds {
                        ids: n.ids.len() + 1,
                    });
                }
                let idx =
                    u16::try_from(n.ids.len()).expect("fewer than MAX_IDS ids, checked above");
                n.id_index.insert(v, idx);
                n.ids.push(v);
            }
        }
    }
    Ok(n)
}

/// A table of fixed-size entries as metadata blocks, then the positions of those blocks
/// (where the superblock points). `at` is the table's position in the filesystem.
fn indexed_table(codec: Codec, entries: &[u8], at: u64) -> Result<(Vec<u8>, u64)> {
    let mut w = MetaWriter::new(codec);
    w.push(entries)?;
    let (mut bytes, starts) = w.finish()?;
    let index_at = at + bytes.len() as u64;
    for s in starts {
        bytes.extend_from_slice(&(at + s).to_le_bytes());
    }
    Ok((bytes, index_at))
}

struct Super {
    inodes: u32,
    mkfs_time: u32,
    block_size: u32,
    fragments: u32,
    compression: u16,
    flags: u16,
    no_ids: u16,
    root: u64,
    bytes_used: u64,
    id_table: u64,
    inode_table: u64,
    directory_table: u64,
    fragment_table: u64,
}

impl Super {
    fn encode(&self) -> [u8; 96] {
        let mut b = Vec::with_capacity(96);
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&self.inodes.to_le_bytes());
        b.extend_from_slice(&self.mkfs_time.to_le_bytes());
        b.extend_from_slice(&self.block_size.to_le_bytes());
        b.extend_from_slice(&self.fragments.to_le_bytes());
        b.extend_from_slice(&self.compression.to_le_bytes());
        let block_log =
            u16::try_from(self.block_size.trailing_zeros()).expect("log2 of a u32 fits");
        b.extend_from_slice(&block_log.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.no_ids.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes()); // s_major
        b.extend_from_slice(&0u16.to_le_bytes()); // s_minor
        for v in [
            self.root,
            self.bytes_used,
            self.id_table,
            INVALID_TABLE, // xattr_id_table_start: no xattrs
            self.inode_table,
            self.directory_table,
            self.fragment_table,
            INVALID_TABLE, // lookup_table_start: not exportable
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.try_into().expect("the superblock is 96 bytes")
    }
}

/// Writes the compressor options (zstd at a level other than the default: one uncompressed
/// metadata block holding it) at `pos`; returns the superblock's compression id and flags.
fn compressor<W: Write>(
    codec: Codec,
    opts: &Options,
    out: &mut W,
    pos: &mut u64,
) -> Result<(u16, u16)> {
    let mut flags = FLAG_NO_XATTR;
    let compression = match codec {
        Codec::None => {
            flags |= FLAG_NOI | FLAG_NOD | FLAG_NOF | FLAG_NOX | FLAG_NOID;
            GZIP_ID
        }
        Codec::Zstd(level) => {
            if level != ZSTD_DEFAULT_LEVEL {
                let mut b = Vec::new();
                b.extend_from_slice(&(4u16 | 0x8000).to_le_bytes());
                b.extend_from_slice(&level.to_le_bytes());
                out.write_all(&b)
                    .map_err(|source| Error::Write { source })?;
                *pos += b.len() as u64;
                flags |= FLAG_COMP_OPT;
            }
            ZSTD_ID
        }
    };
    if !opts.fragments {
        flags |= FLAG_NO_FRAG;
    }
    if opts.dedup {
        flags |= FLAG_DUPLICATE;
    }
    Ok((compression, flags))
}

/// Writes an [`indexed_table`] of `entries` at `pos` (advanced past it); returns where its
/// index is, for the superblock.
fn put_table<W: Write>(codec: Codec, entries: &[u8], out: &mut W, pos: &mut u64) -> Result<u64> {
    let (bytes, index_at) = indexed_table(codec, entries, *pos)?;
    out.write_all(&bytes)
        .map_err(|source| Error::Write { source })?;
    *pos += bytes.len() as u64;
    Ok(index_at)
}

/// Writes `tree` as a squashfs filesystem into `out`, starting at its current position.
pub fn write<W: Write + Seek>(tree: &Tree, opts: &Options, out: W) -> Result<Summary> {
    let codec = check_options(opts)?;
    let n = number(tree)?;
    let wr = |source| Error::Write { source };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let base = out.stream_position().map_err(wr)?;

    // Superblock (written last) and compressor options.
    out.write_all(&[0; 96]).map_err(wr)?;
    let mut pos = SUPERBLOCK_SIZE;
    let (compression, flags) = compressor(codec, opts, &mut out, &mut pos)?;

    // Data.
    let files: Vec<(NodeId, &fstree::FileData)> = n
        .files
        .iter()
        .map(|&id| match &tree.node(id).kind {
            Kind::File(d) => (id, d),
            _ => unreachable!("only regular files are listed"),
        })
        .collect();
    let mut plan = data::plan(&files, opts.block_size, opts.fragments, opts.dedup)?;
    let written = data::write(&mut plan, codec, &mut out, &mut pos)?;

    // Inodes and directories.
    let mut t = Tables {
        tree,
        n: &n,
        links: tree.link_counts(),
        plan: &plan,
        inodes: MetaWriter::new(codec),
        dirs: MetaWriter::new(codec),
        refs: vec![None; tree.len()],
    };
    let root = t.write_all()?;
    let (inode_bytes, _) = t.inodes.finish()?;
    let (dir_bytes, _) = t.dirs.finish()?;
    let inode_table = pos;
    let directory_table = inode_table + inode_bytes.len() as u64;
    out.write_all(&inode_bytes).map_err(wr)?;
    out.write_all(&dir_bytes).map_err(wr)?;
    pos = directory_table + dir_bytes.len() as u64;

    // Fragment table, then ids.
    let mut frag_entries = Vec::with_capacity(written.fragments.len() * 16);
    for f in &written.fragments {
        frag_entries.extend_from_slice(&f.start.to_le_bytes());
        frag_entries.extend_from_slice(&f.size.to_le_bytes());
        frag_entries.extend_from_slice(&0u32.to_le_bytes());
    }
    let fragment_table = put_table(codec, &frag_entries, &mut out, &mut pos)?;
    let id_entries: Vec<u8> = n.ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    let id_table = put_table(codec, &id_entries, &mut out, &mut pos)?;
    let bytes_used = pos;
    let size = bytes_used.div_ceil(PAD) * PAD;
    out.write_all(&vec![0; imgbuild_blockio::to_usize(size - bytes_used)])
        .map_err(wr)?;

    let sb = Super {
        inodes: n.count,
        mkfs_time: secs(opts.mkfs_time),
        block_size: opts.block_size,
        fragments: plan.fragments,
        compression,
        flags,
        no_ids: u16::try_from(n.ids.len()).expect("`number` refuses more than MAX_IDS ids"),
        root: root.encode(),
        bytes_used,
        id_table,
        inode_table,
        directory_table,
        fragment_table,
    };
    out.seek(SeekFrom::Start(base)).map_err(wr)?;
    out.write_all(&sb.encode()).map_err(wr)?;
    out.seek(SeekFrom::Start(base + size)).map_err(wr)?;
    out.flush().map_err(wr)?;
    Ok(Summary {
        bytes_used,
        size,
        inodes: n.count,
        fragments: plan.fragments,
        blocks: written.blocks,
        duplicate_files: plan.duplicates,
    })
}

#[cfg(test)]
mod tests;
