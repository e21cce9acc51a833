//! Sizing: the block count at which the inodes, laid out, fit.

use crate::extent;
use crate::journal;
use crate::layout::{Alloc, GeoError, Geometry};
use crate::{Error, Ino, Result, Type, BLOCKS_PER_GROUP, BLOCK_SIZE, JOURNAL_INO};
use crate::{MAX_BLOCKS, MIN_BLOCKS};

/// Lays the inodes out on filesystems of a given size.
#[derive(Debug)]
pub(crate) struct Layouter {
    /// Every inode, the journal included (its runs are set per layout).
    pub inos: Vec<Ino>,
    /// Inodes the filesystem must have at least.
    pub min_inodes: u64,
    /// One inode per this many bytes (`inode_ratio`).
    pub ratio: u64,
}

impl Layouter {
    /// Lay out everything on `blocks` blocks; returns the geometry and the end of the used
    /// blocks (which may exceed `blocks`: then it does not fit).
    pub(crate) fn layout(&mut self, blocks: u64) -> Result<(Geometry, u64), GeoError> {
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
    pub(crate) fn fit_exact(&mut self, mut n: u64) -> Option<u64> {
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
    pub(crate) fn smallest(&mut self, extra: u64) -> Result<u64> {
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
