//! The size-independent part of a plan: inodes numbered, host files scanned, directories built.

use std::path::Path;

use fstree::{FileData, Kind, Meta, Tree};
use imgbuild_blockio::PlannedSource;
use imgbuild_fstree as fstree;
use rayon::prelude::*;

use crate::fit::Layouter;
use crate::walk::{file_type, new_ino, show, walk, Walked};
use crate::{csum, dir, hash, Error, Ino, Options, Plan, Result, Size, Type};
use crate::{BLOCK_SIZE, JOURNAL_INO, LPF_BLOCKS, LPF_INO, MAX_BLOCKS, MAX_SIZE, ROOT_INO};

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
    check_options(opts)?;
    let mut walked = walk(tree, opts.timestamp)?;
    let mut inos = std::mem::take(&mut walked.inos);
    let fs_seed = csum::fs_seed(&opts.uuid);
    let dirs = Dirs {
        tree,
        walked: &walked,
        seed: hash::seed_words(&opts.hash_seed),
        fs_seed,
    };
    // Scan host files and build directories, in parallel; results are per inode, so the
    // order of work does not matter.
    inos.par_iter_mut().try_for_each(|i| -> Result<()> {
        match i.typ {
            Type::Reg => fill_file(i, tree),
            Type::Dir => dirs.fill(i),
            _ => Ok(()),
        }
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

/// Refuses options no filesystem can be made with.
fn check_options(opts: &Options) -> Result<()> {
    if opts.label.len() > 16 {
        return Err(Error::LabelTooLong {
            label: opts.label.clone(),
            len: opts.label.len(),
        });
    }
    // s_volume_name is NUL-padded: a NUL inside cuts the label for every reader.
    if opts.label.contains('\0') {
        return Err(Error::LabelHasNul {
            label: opts.label.clone(),
        });
    }
    if opts.reserved_percent > 50 {
        return Err(Error::ReservedTooHigh {
            percent: opts.reserved_percent,
        });
    }
    if opts.inode_ratio < 1024 {
        return Err(Error::InodeRatioTooLow {
            ratio: opts.inode_ratio,
        });
    }
    Ok(())
}

/// Sets a regular file's data runs: a host file's scanned for holes, bytes in memory whole.
fn fill_file(i: &mut Ino, tree: &Tree) -> Result<()> {
    let Some(node) = i.node else { return Ok(()) };
    let Kind::File(data) = &tree.node(node).kind else {
        unreachable!("a Reg inode comes from a File node")
    };
    i.runs = match data {
        FileData::Host { path, size } => scan_host(path, *size)?,
        FileData::Bytes(b) if b.is_empty() => Vec::new(),
        FileData::Bytes(b) => vec![(0, (b.len() as u64).div_ceil(BLOCK_SIZE))],
    };
    Ok(())
}

/// What building a directory's blocks needs: the walk's numbering and the hash seeds.
struct Dirs<'a> {
    tree: &'a Tree,
    walked: &'a Walked,
    /// The htree hash seed, as words.
    seed: [u32; 4],
    /// The metadata checksum seed.
    fs_seed: u32,
}

impl Dirs<'_> {
    /// Builds directory `i`'s blocks (entries in name order, lost+found added to the root
    /// when the tree has none) and sets its size and data run.
    fn fill(&self, i: &mut Ino) -> Result<()> {
        let Walked {
            node_ino,
            dir_paths,
            parent,
            own_lpf,
            ..
        } = self.walked;
        let tree = self.tree;
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
        if *own_lpf && i.ino == ROOT_INO {
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
        let dseed = csum::inode_seed(self.fs_seed, i.ino, 0);
        let built =
            dir::build(i.ino, parent_ino, &entries, &self.seed, dseed, spare).map_err(|_| {
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
        Ok(())
    }
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

/// Block runs of a host file's data (holes left out); the file must still be a regular file
/// of its planned size.
fn scan_host(path: &Path, planned: u64) -> Result<Vec<(u64, u64)>> {
    let src = PlannedSource::open(path, planned)?;
    // Enough blocks allocated to cover the size: no holes, no need to look for them.
    if src.allocated_bytes() >= planned {
        return Ok(block_runs(&[(0, planned)]));
    }
    Ok(block_runs(&src.data_ranges()?))
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
