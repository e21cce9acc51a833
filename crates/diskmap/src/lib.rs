//! The disk image as data: an ordered, gap-free list of extents, and one ordered pass over it.
//!
//! A [`Map`] covers `[0, len)` of a disk (or of one filesystem) with [`Extent`]s whose
//! [`Content`] is free space, zeros that matter, bytes held in memory (tables, superblocks,
//! inode tables, directories, FATs), or a range of a host file ([`SourceFile`]: file data is
//! referenced, never loaded whole). Everything but free space is *mapped*: a copy onto a
//! device that is not zeroed (`bmaptool copy`, `imgbuild flash`) must write it, even where
//! it is zeros (an empty bitmap, the end of a directory, a FAT's free entries). Filesystem and partition crates produce maps with a [`MapBuilder`];
//! the planner places them into the map of the whole disk ([`MapBuilder::place`]).
//!
//! [`stream`] then reads the map once, in order, with a bounded window of parallel readers,
//! and hands every [`Piece`] to each [`Sink`] (the raw sparse file, SHA-256, a bmap, a
//! compressor, a container) on a thread of its own. Nothing is read twice and no sink ever
//! reads the output back.
//!
//! This crate knows nothing of filesystems, Nix, clocks or randomness.

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

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

pub mod sinks;

pub use imgbuild_blockio::to_usize;
mod stream;

pub use stream::{stream, Data, Piece, Sink, StreamOptions};

/// A host file that extents read from, with the size it had when it was planned: the stream
/// opens it as an [`imgbuild_blockio::PlannedSource`], refusing a file that is no longer a
/// regular file of that size ([`Error::Source`]).
#[derive(Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Where the file is on the host.
    pub path: PathBuf,
    /// Its size when the plan was made.
    pub size: u64,
}

impl SourceFile {
    /// A source file, shared by the extents that read from it.
    pub fn new(path: impl Into<PathBuf>, size: u64) -> Arc<Self> {
        Arc::new(SourceFile {
            path: path.into(),
            size,
        })
    }
}

/// Where the bytes of an extent come from.
#[derive(Clone, Debug)]
pub enum Content {
    /// Free space: reads as zeros from the image, but nothing depends on it (a hole in a
    /// sparse output, not written when flashing).
    Free,
    /// Zeros that must be there (cleared metadata); still a hole in a sparse output.
    Zero,
    /// `data[start..start + len]`, held in memory (shared: several extents may take ranges of
    /// one buffer).
    Bytes {
        /// The buffer.
        data: Arc<[u8]>,
        /// Where the extent's bytes start in it.
        start: usize,
    },
    /// `file[offset..offset + len]` of a host file.
    File {
        /// The host file.
        file: Arc<SourceFile>,
        /// Where the extent's bytes start in it.
        offset: u64,
    },
}

/// `len` bytes at `offset`.
#[derive(Clone, Debug)]
pub struct Extent {
    /// Where it starts on the disk (or in the file system the map is of).
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Where its bytes come from.
    pub content: Content,
}

impl Extent {
    /// The first byte after it.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Free space: nothing needs to be written there.
    pub fn is_free(&self) -> bool {
        matches!(self.content, Content::Free)
    }

    /// Free space or zeros: no bytes to read.
    pub fn is_zeros(&self) -> bool {
        matches!(self.content, Content::Free | Content::Zero)
    }

    /// The in-memory bytes of a [`Content::Bytes`] extent.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Bytes { data, start } => Some(&data[*start..*start + to_usize(self.len)]),
            _ => None,
        }
    }
}

/// Errors of building a map (a layout bug) and of streaming it (a source, a sink, a stop).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An extent reaches past the end of the map (a bug of the layout that placed it).
    #[error(
        "extent of {len} bytes at offset {offset} lies outside the {map_len}-byte map `{name}`"
    )]
    OutOfBounds {
        /// The map's name.
        name: String,
        /// Where the extent starts.
        offset: u64,
        /// Its length.
        len: u64,
        /// The map's length.
        map_len: u64,
    },
    /// Two extents share bytes (a bug of the layout that placed them).
    #[error(
        "map `{name}`: the extent at {second} overlaps the extent at {first} ({first_len} bytes)"
    )]
    Overlap {
        /// The map's name.
        name: String,
        /// Where the earlier extent starts.
        first: u64,
        /// The earlier extent's length.
        first_len: u64,
        /// Where the overlapping extent starts.
        second: u64,
    },
    /// A planned host file cannot be read, or is no longer the regular file of the planned
    /// size ([`imgbuild_blockio::SourceError`] says which).
    #[error(transparent)]
    Source(#[from] imgbuild_blockio::SourceError),
    /// A sink failed; `source` says why (an I/O error of its output, its encoder...).
    #[error("{sink}")]
    Sink {
        /// What the sink makes ([`Sink::name`]).
        sink: String,
        /// The sink's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The operating system refused a thread.
    #[error("starting the reader threads")]
    Threads(#[source] std::io::Error),
    /// The cancellation flag was set.
    #[error("interrupted")]
    Interrupted,
}

/// Results of building and streaming maps.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The whole content of `[0, len)`: extents sorted by offset, without gaps or overlaps
/// (free space is explicit [`Content::Free`] extents).
#[derive(Clone, Debug, Default)]
pub struct Map {
    len: u64,
    extents: Vec<Extent>,
}

impl Map {
    /// A map of `len` bytes of free space.
    pub fn free(len: u64) -> Map {
        MapBuilder::new("zeros", len)
            .finish()
            .expect("an empty builder has no overlaps")
    }

    /// Its length in bytes (the disk's or file system's size).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its extents in disk order, covering `[0, len)` without gaps.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Bytes that are not free space.
    pub fn mapped_bytes(&self) -> u64 {
        self.extents
            .iter()
            .filter(|e| !e.is_free())
            .map(|e| e.len)
            .sum()
    }

    /// Bytes that come from host files.
    pub fn file_bytes(&self) -> u64 {
        self.extents
            .iter()
            .filter(|e| matches!(e.content, Content::File { .. }))
            .map(|e| e.len)
            .sum()
    }

    /// The `block`-sized blocks that hold anything but free space, as sorted, merged
    /// `[first, last]` block ranges (inclusive, as bmaptool writes them).
    pub fn mapped_blocks(&self, block: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for e in self.extents.iter().filter(|e| !e.is_free()) {
            let first = e.offset / block;
            let last = (e.end() - 1) / block;
            match out.last_mut() {
                Some(r) if r.1 + 1 >= first => r.1 = r.1.max(last),
                _ => out.push((first, last)),
            }
        }
        out
    }

    /// The index of the extent holding byte `offset` (`offset < len`).
    pub fn find(&self, offset: u64) -> usize {
        self.extents.partition_point(|e| e.end() <= offset)
    }

    /// The bytes of `[offset, offset + buf.len())`, for tests and small reads: memory
    /// extents copied, files read, zeros and free space filled with zeros.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        stream::fill(self, offset, buf)
    }
}

/// Collects extents in any order; [`MapBuilder::finish`] sorts them, refuses overlaps and
/// fills the gaps with free space.
#[derive(Debug)]
pub struct MapBuilder {
    name: String,
    len: u64,
    extents: Vec<Extent>,
}

impl MapBuilder {
    /// A map of `len` bytes called `name` in error messages.
    pub fn new(name: impl Into<String>, len: u64) -> Self {
        MapBuilder {
            name: name.into(),
            len,
            extents: Vec::new(),
        }
    }

    /// The length of the map being built.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the map being built has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, offset: u64, len: u64, content: Content) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(Error::OutOfBounds {
                    name: self.name.clone(),
                    offset,
                    len,
                    map_len: self.len,
                })
            }
        }
        self.extents.push(Extent {
            offset,
            len,
            content,
        });
        Ok(())
    }

    /// All of `data` at `offset`.
    pub fn bytes(&mut self, offset: u64, data: impl Into<Arc<[u8]>>) -> Result<()> {
        let data = data.into();
        let len = data.len();
        self.bytes_range(offset, &data, 0..len)
    }

    /// `data[range]` at `offset`.
    pub fn bytes_range(
        &mut self,
        offset: u64,
        data: &Arc<[u8]>,
        range: Range<usize>,
    ) -> Result<()> {
        assert!(range.start <= range.end && range.end <= data.len());
        self.push(
            offset,
            (range.end - range.start) as u64,
            Content::Bytes {
                data: data.clone(),
                start: range.start,
            },
        )
    }

    /// `len` bytes of zeros at `offset` that must be there (cleared metadata).
    pub fn zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        self.push(offset, len, Content::Zero)
    }

    /// `len` bytes of `file` from `file_offset` on, at `offset`.
    pub fn file(
        &mut self,
        offset: u64,
        file: &Arc<SourceFile>,
        file_offset: u64,
        len: u64,
    ) -> Result<()> {
        self.push(
            offset,
            len,
            Content::File {
                file: file.clone(),
                offset: file_offset,
            },
        )
    }

    /// All of `file` at `offset`, as it lies on the host: each of its data ranges `(start,
    /// len)` (sorted and disjoint, as [`imgbuild_blockio::PlannedSource::data_ranges`] gives
    /// them) an extent reading the file, its holes zeros that must be there. For a filesystem's
    /// copy of a host file (fat, iso9660), whose holes are not holes of the volume.
    /// Ranges out of order or past the file's end are not trusted: they overlap an extent
    /// already placed ([`Error::Overlap`] from [`MapBuilder::finish`]) or read past the planned
    /// size (a source error when streamed), never a wrapped length.
    pub fn file_ranges(
        &mut self,
        offset: u64,
        file: &Arc<SourceFile>,
        ranges: &[(u64, u64)],
    ) -> Result<()> {
        let mut pos = 0;
        for &(start, len) in ranges {
            self.zeros(self.at(offset, pos)?, start.saturating_sub(pos))?;
            self.file(self.at(offset, start)?, file, start, len)?;
            pos = start.saturating_add(len);
        }
        self.zeros(self.at(offset, pos)?, file.size.saturating_sub(pos))
    }

    /// `offset + x`, or [`Error::OutOfBounds`] when it overflows.
    fn at(&self, offset: u64, x: u64) -> Result<u64> {
        offset.checked_add(x).ok_or_else(|| Error::OutOfBounds {
            name: self.name.clone(),
            offset,
            len: x,
            map_len: self.len,
        })
    }

    /// Everything `map` holds besides free space, at `offset` (a filesystem into its
    /// partition).
    pub fn place(&mut self, offset: u64, map: Map) -> Result<()> {
        if offset.checked_add(map.len).is_none_or(|end| end > self.len) {
            return Err(Error::OutOfBounds {
                name: self.name.clone(),
                offset,
                len: map.len,
                map_len: self.len,
            });
        }
        self.extents.reserve(map.extents.len());
        for e in map.extents.into_iter().filter(|e| !e.is_free()) {
            self.extents.push(Extent {
                offset: e.offset + offset,
                ..e
            });
        }
        Ok(())
    }

    /// The map: extents sorted, gaps filled with free space. Fails on overlapping extents.
    pub fn finish(mut self) -> Result<Map> {
        self.extents.sort_by_key(|e| e.offset);
        let mut out = Vec::with_capacity(self.extents.len() * 2 + 1);
        let mut pos = 0u64;
        let mut prev: Option<(u64, u64)> = None;
        for e in self.extents {
            if e.offset < pos {
                let (first, first_len) = prev.unwrap_or((0, 0));
                return Err(Error::Overlap {
                    name: self.name,
                    first,
                    first_len,
                    second: e.offset,
                });
            }
            if e.offset > pos {
                out.push(Extent {
                    offset: pos,
                    len: e.offset - pos,
                    content: Content::Free,
                });
            }
            pos = e.end();
            prev = Some((e.offset, e.len));
            out.push(e);
        }
        if pos < self.len {
            out.push(Extent {
                offset: pos,
                len: self.len - pos,
                content: Content::Free,
            });
        }
        Ok(Map {
            len: self.len,
            extents: out,
        })
    }
}

/// Write `map` into `file` (which must read as zeros, e.g. fresh and sparse, and be at least
/// `map.len()` long) with the raw sink: for tests, examples and simple tools.
pub fn write_file(map: &Map, file: &std::fs::File) -> Result<()> {
    let mut raw = sinks::RawFile::new(file, map.len(), "writing the image");
    stream(
        map,
        &mut [&mut raw],
        &StreamOptions::default(),
        &imgbuild_blockio::NoProgress,
        &std::sync::atomic::AtomicBool::new(false),
    )
}

#[cfg(test)]
mod tests;
