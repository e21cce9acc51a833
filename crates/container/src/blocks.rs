//! Which fixed-size blocks of a disk a container stores, decided from the extent map before
//! anything is written, and the stream of those blocks' bytes.
//!
//! A block is stored when it overlaps a file range or in-memory bytes that are not all zeros;
//! blocks of free space and zeros read as zeros without being stored. Deciding this from the
//! map, not from the bytes, puts every table before the data: the container is written
//! front to back in one pass (and hashed as it is written).

use imgbuild_diskmap::{Content, Map, Piece};

use crate::{to_usize, Out, Result};

/// The stored blocks of a disk: sorted, disjoint `[first, last]` block ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Allocation {
    pub size: u64,
    pub ranges: Vec<(u64, u64)>,
}

impl Allocation {
    /// The blocks of `size` bytes that overlap a file range, or in-memory bytes that are not
    /// all zeros (metadata such as inode tables and bitmaps is mostly zeros; a block of it
    /// that is all zeros reads the same unstored).
    pub fn of(map: &Map, size: u64) -> Self {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut mark = |first: u64, last: u64| match ranges.last_mut() {
            Some(r) if r.1 + 1 >= first => r.1 = r.1.max(last),
            _ => ranges.push((first, last)),
        };
        for e in map.extents() {
            match &e.content {
                Content::File { .. } => mark(e.offset / size, (e.end() - 1) / size),
                Content::Bytes { data, start } => {
                    let mut at = e.offset;
                    while at < e.end() {
                        let b = at / size;
                        let to = ((b + 1) * size).min(e.end());
                        let from = start + to_usize(at - e.offset);
                        let bytes = &data[from..from + to_usize(to - at)];
                        if bytes.iter().any(|&x| x != 0) {
                            mark(b, b);
                        }
                        at = to;
                    }
                }
                Content::Free | Content::Zero => {}
            }
        }
        Allocation { size, ranges }
    }

    /// Number of stored blocks.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|r| r.1 - r.0 + 1).sum()
    }

    /// Every stored block index, in order.
    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(a, b)| a..=b)
    }
}

/// Collects the bytes of the stored blocks from the ordered stream of the disk.
pub(crate) struct BlockStream {
    alloc: Allocation,
    /// Index into `alloc.ranges` of the range holding or following the current position.
    range: usize,
    buf: Vec<u8>,
    disk_size: u64,
    /// Disk offset reached.
    pos: u64,
}

impl BlockStream {
    pub fn new(alloc: Allocation, disk_size: u64) -> Self {
        BlockStream {
            buf: vec![0; to_usize(alloc.size)],
            alloc,
            range: 0,
            disk_size,
            pos: 0,
        }
    }

    /// Whether block `b` is stored (blocks are asked about in increasing order).
    fn stored(&mut self, b: u64) -> bool {
        while self.range < self.alloc.ranges.len() && self.alloc.ranges[self.range].1 < b {
            self.range += 1;
        }
        self.alloc
            .ranges
            .get(self.range)
            .is_some_and(|r| r.0 <= b && b <= r.1)
    }

    /// Feeds the next piece; calls `emit(block, bytes)` for each stored block it completes
    /// (a last partial block of the disk is completed by [`BlockStream::finish`]).
    pub fn feed(
        &mut self,
        p: &Piece<'_>,
        mut emit: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let size = self.alloc.size;
        let end = p.offset + p.len;
        while self.pos < end {
            let b = self.pos / size;
            let within = self.pos % size;
            let n = (size - within).min(end - self.pos);
            if self.stored(b) {
                let at = to_usize(within);
                let dst = &mut self.buf[at..at + to_usize(n)];
                match p.bytes() {
                    Some(src) => {
                        let from = to_usize(self.pos - p.offset);
                        dst.copy_from_slice(&src[from..from + dst.len()]);
                    }
                    None => dst.fill(0),
                }
                if within + n == size {
                    emit(b, &self.buf)?;
                }
            }
            self.pos += n;
        }
        Ok(())
    }

    /// After the last piece: a stored last block that the disk ends inside, zero-padded.
    pub fn finish(&mut self, mut emit: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        let size = self.alloc.size;
        let within = self.disk_size % size;
        if within != 0 {
            let b = self.disk_size / size;
            if self.stored(b) {
                self.buf[to_usize(within)..].fill(0);
                emit(b, &self.buf)?;
            }
        }
        Ok(())
    }
}

/// The stored blocks written as they are, one after the other, after the container's tables
/// (qcow2 clusters, VHDX payload blocks).
pub(crate) struct Stored<W> {
    pub out: Out<W>,
    stream: BlockStream,
    /// Where the file must end, checked in debug builds.
    end: u64,
}

impl<W: std::io::Write> Stored<W> {
    pub fn new(out: Out<W>, alloc: Allocation, disk_size: u64) -> Self {
        let end = out.pos + alloc.count() * alloc.size;
        Stored {
            out,
            stream: BlockStream::new(alloc, disk_size),
            end,
        }
    }

    pub fn piece(&mut self, p: &Piece<'_>) -> Result<()> {
        let out = &mut self.out;
        self.stream.feed(p, |_, bytes| out.put(bytes))
    }

    pub fn finish(&mut self) -> Result<()> {
        let out = &mut self.out;
        self.stream.finish(|_, bytes| out.put(bytes))?;
        debug_assert_eq!(out.pos, self.end);
        out.flush()
    }
}
