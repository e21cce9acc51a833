//! Streaming, parallel, reproducible zstd compression of a (possibly sparse) image file.
//!
//! [`compress`] reads `len` bytes of a file with positional reads in [`CHUNK`]-sized pieces
//! and feeds them to libzstd's multithreaded streaming encoder (`ZSTD_c_nbWorkers`). Memory
//! is bounded by the chunk buffer plus zstd's per-worker job buffers, whatever the input size.
//!
//! Reproducibility: with `nbWorkers >= 1` libzstd produces the same bytes for any worker
//! count (its jobs are cut at fixed positions), while `nbWorkers == 0` (single-threaded mode)
//! produces a different encoding. [`Options::workers`] is therefore clamped to at least 1, so
//! the output depends only on the input bytes, the level, the checksum flag and the libzstd
//! version (which the workspace pins through `zstd-sys`).
//!
//! The frame records the content size (pledged up front) and, by default, a content checksum
//! (XXH64), so `zstd -t`/`zstd -l` can verify it.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes read from the source per step (and the granularity of progress and cancellation).
pub const CHUNK: usize = 4 << 20;

/// Compression settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// zstd level (1..=19 useful; 22 max; negative = fast modes). Default 3.
    pub level: i32,
    /// Worker threads. Values below 1 are treated as 1 (see the crate docs: the output is the
    /// same for every count >= 1). Default 1.
    pub workers: u32,
    /// Store a content checksum (XXH64) at the end of the frame. Default true.
    pub checksum: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            level: 3,
            workers: 1,
            checksum: true,
        }
    }
}

/// What [`compress`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Bytes read from the source (= `len`).
    pub input_bytes: u64,
    /// Bytes written to the destination.
    pub output_bytes: u64,
}

/// Compression failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// libzstd rejected a parameter (level, worker count, pledged size).
    #[error("cannot set up the zstd encoder ({what})")]
    Setup {
        /// The parameter being set.
        what: &'static str,
        /// libzstd's error.
        #[source]
        source: io::Error,
    },
    /// Reading the source failed.
    #[error("reading {len} bytes of the source at offset {offset}")]
    Read {
        /// Offset of the failed read.
        offset: u64,
        /// Length of the failed read.
        len: usize,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The source ended before `len` bytes.
    #[error("the source ends before {len} bytes (short read at offset {offset})")]
    ShortSource {
        /// Offset where data ran out.
        offset: u64,
        /// Bytes requested in total.
        len: u64,
    },
    /// Compressing or writing the output failed.
    #[error("compressing/writing output after {input_done} input bytes ({output_done} written)")]
    Write {
        /// Input bytes consumed so far.
        input_done: u64,
        /// Output bytes written so far.
        output_done: u64,
        /// The I/O or libzstd error.
        #[source]
        source: io::Error,
    },
    /// The cancellation flag was set; the output is an incomplete frame.
    #[error("interrupted after {input_done} of {len} input bytes")]
    Interrupted {
        /// Input bytes consumed before stopping.
        input_done: u64,
        /// Bytes requested in total.
        len: u64,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Counts the bytes passed through to the destination.
struct Counting<'a, W: Write + ?Sized> {
    inner: &'a mut W,
    written: u64,
}

impl<W: Write + ?Sized> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses bytes `[0, len)` of `src` into one zstd frame written to `dst`.
///
/// `progress` is called with the cumulative number of input bytes consumed after every
/// chunk. `cancel` is checked before every chunk; when set, compression stops with
/// [`Error::Interrupted`] (the destination then holds an incomplete frame: discard it).
/// `dst` is flushed at the end but not synced.
pub fn compress<W: Write + ?Sized>(
    src: &File,
    len: u64,
    dst: &mut W,
    opts: &Options,
    progress: &dyn Fn(u64),
    cancel: &AtomicBool,
) -> Result<Summary> {
    let setup = |what| move |source| Error::Setup { what, source };
    let mut out = Counting {
        inner: dst,
        written: 0,
    };
    let mut encoder =
        zstd::stream::write::Encoder::new(&mut out, opts.level).map_err(setup("level"))?;
    encoder
        .multithread(opts.workers.max(1))
        .map_err(setup("worker count"))?;
    encoder
        .include_checksum(opts.checksum)
        .map_err(setup("checksum flag"))?;
    encoder
        .include_contentsize(true)
        .map_err(setup("content size flag"))?;
    encoder
        .set_pledged_src_size(Some(len))
        .map_err(setup("pledged size"))?;

    let chunk_len = usize::try_from(len).map_or(CHUNK, |l| l.min(CHUNK));
    let mut buf = vec![0u8; chunk_len];
    let mut done = 0u64;
    while done < len {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted {
                input_done: done,
                len,
            });
        }
        let n = usize::try_from(len - done).map_or(chunk_len, |rest| rest.min(chunk_len));
        let piece = &mut buf[..n];
        read_exact_at(src, piece, done, len)?;
        encoder.write_all(piece).map_err(|source| Error::Write {
            input_done: done,
            output_done: encoder.get_ref().written,
            source,
        })?;
        done += n as u64;
        progress(done);
    }
    let out = encoder.finish().map_err(|source| Error::Write {
        input_done: done,
        output_done: 0,
        source,
    })?;
    out.flush().map_err(|source| Error::Write {
        input_done: done,
        output_done: out.written,
        source,
    })?;
    Ok(Summary {
        input_bytes: len,
        output_bytes: out.written,
    })
}

fn read_exact_at(src: &File, buf: &mut [u8], offset: u64, len: u64) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let at = offset + got as u64;
        match src.read_at(&mut buf[got..], at) {
            Ok(0) => return Err(Error::ShortSource { offset: at, len }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Read {
                    offset: at,
                    len: buf.len() - got,
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
