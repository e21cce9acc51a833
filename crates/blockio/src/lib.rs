//! Bounded positional I/O over an output file.
//!
//! A [`Region`] is a named window `[start, start + len)` of an output file. Every write is
//! bounds-checked against the window and goes through `pwrite`-style positional I/O on `&self`,
//! so disjoint regions can be filled from several threads without locks. Nothing here ever
//! writes a run of zeros on purpose: the output is created sparse with `set_len` and holes stay
//! holes. [`OutputFile`] gives the `OUT.tmp` + rename discipline: the final name only ever holds
//! a complete image.

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

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

mod input;
mod output;
mod source;
pub use input::{
    check_input_dir, excerpt, open_input, open_input_no_follow, read_input, read_input_no_follow,
    Input, InputError, InputKind, InputResult,
};
pub use output::OutputFile;
pub use source::{PlannedSource, SourceError};

/// Size of the buffer used when `copy_file_range` is not available.
pub const COPY_BUF: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "write of {len} bytes at offset {offset} overruns region `{region}` of {region_len} bytes"
    )]
    Overrun {
        region: String,
        offset: u64,
        len: u64,
        region_len: u64,
    },
    #[error("writing region `{region}` at offset {offset}")]
    Write {
        region: String,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("reading `{}` at offset {offset}", path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("`{}` changed while it was being copied: expected {expected} bytes, found only {found}", path.display())]
    SourceShrunk {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("`{}`: {op}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Progress sink: writers report bytes of payload as they write them.
pub trait Progress: Sync {
    fn add(&self, bytes: u64);
}

/// A progress sink that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {
    fn add(&self, _bytes: u64) {}
}

/// Progress by phases: each phase has a name and, when known, a total of bytes that
/// [`Progress::add`] counts towards.
pub trait Reporter: Progress {
    fn phase(&self, name: &str, total: u64);
    fn done(&self) {}
}

impl Reporter for NoProgress {
    fn phase(&self, _name: &str, _total: u64) {}
}

/// A progress sink that just counts.
#[derive(Default)]
pub struct Counter(pub AtomicU64);
impl Progress for Counter {
    fn add(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Cancellation flag checked between units of work (files, chunks).
pub fn check_cancel(flag: &AtomicBool) -> Result<()> {
    if flag.load(Ordering::Relaxed) {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// A named, bounds-checked window of an output file.
#[derive(Clone, Copy, Debug)]
pub struct Region<'f> {
    file: &'f File,
    name: &'f str,
    start: u64,
    len: u64,
}

impl<'f> Region<'f> {
    /// A window `[start, start + len)` of `file`, called `name` in error messages.
    pub fn new(file: &'f File, name: &'f str, start: u64, len: u64) -> Self {
        Region {
            file,
            name,
            start,
            len,
        }
    }

    pub fn name(&self) -> &str {
        self.name
    }
    pub fn start(&self) -> u64 {
        self.start
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn file(&self) -> &'f File {
        self.file
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::Overrun {
                region: self.name.to_string(),
                offset,
                len,
                region_len: self.len,
            }),
        }
    }

    /// A sub-window of this region (same name).
    pub fn sub(&self, offset: u64, len: u64) -> Result<Region<'f>> {
        self.check(offset, len)?;
        Ok(Region {
            file: self.file,
            name: self.name,
            start: self.start + offset,
            len,
        })
    }

    /// Write all of `buf` at `offset` (relative to the region).
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check(offset, buf.len() as u64)?;
        self.file
            .write_all_at(buf, self.start + offset)
            .map_err(|source| Error::Write {
                region: self.name.to_string(),
                offset,
                source,
            })
    }

    /// Write `buf` at `offset`, skipping every `block`-sized chunk that is all zeros, so that
    /// the output stays sparse. `offset` and `buf.len()` need not be block-aligned; chunks are
    /// cut at multiples of `block` relative to the region.
    pub fn write_nonzero_at(&self, offset: u64, buf: &[u8], block: usize) -> Result<()> {
        self.check(offset, buf.len() as u64)?;
        let block = block.max(1);
        let mut pos = 0usize;
        // Start of a pending run of non-zero chunks, written in one syscall.
        let mut run: Option<usize> = None;
        while pos < buf.len() {
            let abs = offset + pos as u64;
            // Below `block`, a usize.
            let to_boundary = block - usize::try_from(abs % block as u64).unwrap_or(0);
            let end = (pos + to_boundary).min(buf.len());
            let zero = buf[pos..end].iter().all(|&b| b == 0);
            match (zero, run) {
                (true, Some(s)) => {
                    self.write_at(offset + s as u64, &buf[s..pos])?;
                    run = None;
                }
                (false, None) => run = Some(pos),
                _ => {}
            }
            pos = end;
        }
        if let Some(s) = run {
            self.write_at(offset + s as u64, &buf[s..])?;
        }
        Ok(())
    }

    /// Read into `buf` from `offset` (relative to the region); used by tests and readers.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, self.start + offset)
            .map_err(|source| Error::Write {
                region: self.name.to_string(),
                offset,
                source,
            })
    }

    /// Copy `len` bytes of `src` starting at `src_offset` to `offset` in this region, with
    /// `copy_file_range` where the kernel supports it and big positional reads and writes
    /// otherwise. Fails with [`Error::SourceShrunk`] when the source ends early.
    pub fn copy_from(
        &self,
        offset: u64,
        src: &File,
        src_path: &Path,
        src_offset: u64,
        len: u64,
    ) -> Result<()> {
        self.check(offset, len)?;
        let mut done = 0u64;
        let mut use_cfr = true;
        let mut buf: Vec<u8> = Vec::new();
        while done < len {
            let want = len - done;
            if use_cfr {
                let werr = |source| Error::Write {
                    region: self.name.to_string(),
                    offset: offset + done,
                    source,
                };
                let mut off_in = off_t(src_offset + done).map_err(werr)?;
                let mut off_out = off_t(self.start + offset + done).map_err(werr)?;
                let chunk = usize::try_from(want.min(1 << 30)).unwrap_or(1 << 30);
                // SAFETY: both file descriptors are valid for the duration of the call (borrowed
                // `File`s), and `off_in`/`off_out` are valid, exclusively borrowed locals that the
                // kernel reads and updates; no memory buffer is passed.
                let n = unsafe {
                    libc::copy_file_range(
                        src.as_raw_fd(),
                        &mut off_in,
                        self.file.as_raw_fd(),
                        &mut off_out,
                        chunk,
                        0,
                    )
                };
                if n > 0 {
                    done += n.unsigned_abs() as u64;
                    continue;
                }
                if n == 0 {
                    return Err(Error::SourceShrunk {
                        path: src_path.to_path_buf(),
                        expected: src_offset + len,
                        found: src_offset + done,
                    });
                }
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(
                        libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::EBADF,
                    ) => {
                        use_cfr = false;
                        continue;
                    }
                    _ => {
                        return Err(Error::Write {
                            region: self.name.to_string(),
                            offset: offset + done,
                            source: err,
                        })
                    }
                }
            }
            if buf.is_empty() {
                buf = vec![0u8; COPY_BUF];
            }
            let n = usize::try_from(want).map_or(buf.len(), |w| w.min(buf.len()));
            let got = read_full_at(src, &mut buf[..n], src_offset + done).map_err(|source| {
                Error::Read {
                    path: src_path.to_path_buf(),
                    offset: src_offset + done,
                    source,
                }
            })?;
            if got < n {
                return Err(Error::SourceShrunk {
                    path: src_path.to_path_buf(),
                    expected: src_offset + len,
                    found: src_offset + done + got as u64,
                });
            }
            self.write_at(offset + done, &buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Read as much of `buf` as the file has at `offset`; returns the count (short only at EOF).
pub fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A `u64` that sizes or indexes something held in memory (a buffer, a piece, a block) as
/// `usize`. Such a value is below the address space, so this cannot fail where the memory
/// exists; the check is kept rather than a silent `as` truncation on 32-bit hosts.
#[inline]
#[allow(clippy::cast_possible_truncation)] // checked on the line before
pub const fn to_usize(n: u64) -> usize {
    assert!(
        n <= usize::MAX as u64,
        "an in-memory length or index fits the address space"
    );
    n as usize
}

/// A file offset as the kernel's signed `off_t`; offsets past `i64::MAX` are refused.
fn off_t(x: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(x).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The data ranges `(offset, len)` of a possibly sparse file of `size` bytes, found with
/// `SEEK_DATA`/`SEEK_HOLE`. Filesystems without hole reporting give one range for the whole
/// file. Ranges are sorted, disjoint and clipped to `size`.
pub fn data_ranges(f: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        // SAFETY: lseek on a valid borrowed fd has no memory-safety preconditions.
        let data = unsafe { libc::lseek(fd, off_t(pos)?, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // No data after pos: the rest is a hole.
                Some(libc::ENXIO) => break,
                Some(libc::EINVAL | libc::EOPNOTSUPP) => {
                    return Ok(if size > 0 { vec![(0, size)] } else { vec![] })
                }
                _ => return Err(err),
            }
        }
        let data = data.unsigned_abs();
        if data >= size {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, off_t(data)?, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let hole = hole.unsigned_abs().min(size);
        if hole > data {
            out.push((data, hole - data));
        }
        pos = hole.max(data + 1);
    }
    Ok(out)
}

/// The bytes `[start, end)` of blocks `first..=last` of `block` bytes in an image of
/// `image_size` bytes (the last block may be partial): `None` when the range is reversed,
/// empty, starts past the image's end or its arithmetic would overflow, never a wrapped value.
/// The one place a bmap's block ranges become bytes: diskmap writes them, flash reads them.
pub fn block_range_bytes(first: u64, last: u64, block: u64, image_size: u64) -> Option<(u64, u64)> {
    if block == 0 || last < first {
        return None;
    }
    let start = first.checked_mul(block)?;
    // `last + 1` blocks may pass u64 (a range ending in the image's last partial block of a
    // disk near 16 EiB): the end is clamped to the image anyway.
    let end = last
        .checked_add(1)
        .and_then(|n| n.checked_mul(block))
        .unwrap_or(u64::MAX)
        .min(image_size);
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn range_arithmetic_is_checked_at_the_edges() {
        const MAX: u64 = u64::MAX;
        // Ordinary ranges; the last block partial.
        assert_eq!(block_range_bytes(0, 0, 4096, 10_000), Some((0, 4096)));
        assert_eq!(block_range_bytes(1, 2, 4096, 10_000), Some((4096, 10_000)));
        assert_eq!(
            block_range_bytes(2, 2, 4096, 8192),
            None,
            "starts at the end"
        );
        assert_eq!(block_range_bytes(3, 2, 4096, MAX), None, "reversed");
        assert_eq!(block_range_bytes(0, 0, 0, MAX), None, "block size 0");
        // `first * block` past u64: refused, not wrapped to a small offset.
        assert_eq!(block_range_bytes(1 << 52, 1 << 52, 4096, MAX), None);
        assert_eq!(block_range_bytes(MAX, MAX, 4096, MAX), None);
        assert_eq!(block_range_bytes(MAX / 2 + 1, MAX / 2 + 1, 2, MAX), None);
        // `(last + 1) * block` past u64 while `first * block` fits: clamped to the image.
        let last_block = MAX / 4096;
        assert_eq!(
            block_range_bytes(last_block, last_block, 4096, MAX),
            Some((last_block * 4096, MAX))
        );
        assert_eq!(block_range_bytes(0, MAX, 4096, MAX), Some((0, MAX)));
        assert_eq!(block_range_bytes(0, MAX, 1, 5), Some((0, 5)));
    }

    #[test]
    fn overrun_is_refused_and_named() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        let r = Region::new(&f, "esp", 1024, 1024);
        assert!(r.write_at(1000, &[1; 24]).is_ok());
        let e = r.write_at(1000, &[1; 25]).unwrap_err();
        assert!(e.to_string().contains("region `esp`"), "{e}");
        assert!(r.sub(512, 513).is_err());
        let mut b = [0u8; 24];
        f.read_exact_at(&mut b, 2024).unwrap();
        assert_eq!(b, [1; 24]);
    }

    #[test]
    fn nonzero_writes_leave_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        f.set_len(16 << 20).unwrap();
        let r = Region::new(&f, "x", 0, 16 << 20);
        let mut buf = vec![0u8; 8 << 20];
        buf[10] = 1;
        buf[(4 << 20) + 5] = 2;
        r.write_nonzero_at(0, &buf, 4096).unwrap();
        let ranges = data_ranges(&f, 16 << 20).unwrap();
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        assert!(total <= 2 * 4096 * 16, "{ranges:?}");
        let mut back = vec![0u8; 8 << 20];
        r.read_at(0, &mut back).unwrap();
        assert_eq!(back, buf);
    }

    #[test]
    fn copy_from_copies_and_detects_short_source() {
        let dir = tempfile::tempdir().unwrap();
        let src_p = dir.path().join("src");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src_p, &data).unwrap();
        let src = File::open(&src_p).unwrap();
        let out = tempfile::tempfile().unwrap();
        out.set_len(4 << 20).unwrap();
        let r = Region::new(&out, "root", 4096, (4 << 20) - 4096);
        r.copy_from(10, &src, &src_p, 5, data.len() as u64 - 5)
            .unwrap();
        let mut back = vec![0u8; data.len() - 5];
        out.read_exact_at(&mut back, 4096 + 10).unwrap();
        assert_eq!(back, data[5..]);
        let e = r
            .copy_from(0, &src, &src_p, 0, data.len() as u64 + 1)
            .unwrap_err();
        assert!(matches!(e, Error::SourceShrunk { .. }), "{e}");
    }

    #[test]
    fn data_ranges_finds_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[1; 4096], 8 << 20).unwrap();
        f.write_all_at(&[1; 4096], 32 << 20).unwrap();
        let r = data_ranges(&f, 64 << 20).unwrap();
        let total: u64 = r.iter().map(|x| x.1).sum();
        assert!((8192..=2 << 20).contains(&total), "{r:?}");
        assert!(r.iter().any(|&(o, l)| o <= 8 << 20 && o + l > 8 << 20));
        assert!(data_ranges(&f, 0).unwrap().is_empty());
    }
}
