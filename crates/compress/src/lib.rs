//! Streaming, parallel, reproducible zstd compression of a disk image.
//!
//! [`Zstd`] is a [`Sink`] of the image's extent map: it takes the disk's pieces in order (no
//! raw temporary file, no read-back) and feeds them to libzstd's multithreaded streaming
//! encoder (`ZSTD_c_nbWorkers`), runs of zeros from a static buffer. Reading is done by the
//! stream's own threads, overlapped with compressing. Memory is bounded by the stream's window
//! plus zstd's per-worker job buffers, whatever the input size. [`compress_file`] runs the same
//! sink over one (possibly sparse) file.
//!
//! Reproducibility: with `nbWorkers >= 1` libzstd produces the same bytes for any worker
//! count (its jobs are cut at fixed positions), while `nbWorkers == 0` (single-threaded mode)
//! produces a different encoding. [`Options::workers`] is therefore clamped to at least 1, so
//! the output depends only on the input bytes, the level, the checksum flag and the libzstd
//! version (which the workspace pins through `zstd-sys`).
//!
//! The frame records the content size (pledged up front) and, by default, a content checksum
//! (XXH64), so `zstd -t`/`zstd -l` can verify it.
//!
//! [`Xz`] is the same kind of sink for `.xz` (liblzma's multithreaded encoder, fixed block
//! size: the same bytes for any thread count; see its module).

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

mod gzip;
pub mod pool;
pub mod xz;
pub use gzip::{zlib, Gzip};
pub use xz::Xz;

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use imgbuild_blockio::{self as blockio, Progress};
use imgbuild_diskmap::{self as diskmap, Data, MapBuilder, Piece, Sink, SourceFile, StreamOptions};

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

/// What a [`Zstd`] sink did.
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
    /// Reading the input failed, it changed, or the stream was interrupted.
    #[error(transparent)]
    Stream(#[from] diskmap::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Counts the bytes passed through to the destination.
struct Counting<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The zstd sink: one frame of exactly the pledged length, written to `W`.
///
/// It drives `ZSTD_compressStream2` itself rather than through a `Write` adapter, to end the
/// frame in one way only: the stream's last input byte is held back and given with
/// `ZSTD_e_end`. libzstd's multithreaded encoder otherwise ends a frame whose length is a
/// multiple of its job size in one of two ways, depending on timing: if the last full job was
/// handed to a worker before `ZSTD_e_end` (its job table had room), the frame gets one more,
/// empty, last block (3 bytes); if the table was full, the last job itself carries the end.
/// With the last byte held back, the final job always holds input and the end, whatever the
/// timing (a 256 MiB sd-aarch64 image came out in both forms before).
pub struct Zstd<W: Write + Send> {
    cctx: Option<zstd::zstd_safe::CCtx<'static>>,
    out: Counting<W>,
    done: bool,
    /// Output buffer of libzstd's recommended size.
    buf: Vec<u8>,
    len: u64,
    input_done: u64,
    /// The stream's last byte, given with `ZSTD_e_end` (see the type's docs).
    last: Option<u8>,
}

/// A libzstd error code as an I/O error, for [`Error`]'s sources.
fn zstd_error(code: usize) -> io::Error {
    io::Error::other(zstd::zstd_safe::get_error_name(code))
}

impl<W: Write + Send> Zstd<W> {
    /// An encoder for `len` bytes of input (recorded in the frame header) writing to `dst`.
    pub fn new(dst: W, len: u64, opts: &Options) -> Result<Self> {
        use zstd::zstd_safe::CParameter;
        let setup = |what| {
            move |code| Error::Setup {
                what,
                source: zstd_error(code),
            }
        };
        let mut cctx = zstd::zstd_safe::CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(opts.level))
            .map_err(setup("level"))?;
        cctx.set_parameter(CParameter::NbWorkers(opts.workers.max(1)))
            .map_err(setup("worker count"))?;
        cctx.set_parameter(CParameter::ChecksumFlag(opts.checksum))
            .map_err(setup("checksum flag"))?;
        cctx.set_parameter(CParameter::ContentSizeFlag(true))
            .map_err(setup("content size flag"))?;
        cctx.set_pledged_src_size(Some(len))
            .map_err(setup("pledged size"))?;
        Ok(Zstd {
            cctx: Some(cctx),
            out: Counting {
                inner: dst,
                written: 0,
            },
            done: false,
            buf: vec![0; zstd::zstd_safe::CCtx::out_size()],
            len,
            input_done: 0,
            last: None,
        })
    }

    fn write_err(&self, source: io::Error) -> Error {
        Error::Write {
            input_done: self.input_done,
            output_done: self.out.written,
            source,
        }
    }

    /// Gives `data` to libzstd under `end` until it has taken all of it (and, for
    /// `ZSTD_e_end`, until the frame is wholly written), writing what it produces.
    fn feed(
        &mut self,
        data: &[u8],
        end: zstd::zstd_safe::zstd_sys::ZSTD_EndDirective,
    ) -> io::Result<()> {
        use zstd::zstd_safe::{zstd_sys::ZSTD_EndDirective, InBuffer, OutBuffer};
        let cctx = self
            .cctx
            .as_mut()
            .ok_or_else(|| io::Error::other("the encoder is finished"))?;
        let mut input = InBuffer::around(data);
        loop {
            let mut output = OutBuffer::around(&mut self.buf[..]);
            let left = cctx
                .compress_stream2(&mut output, &mut input, end)
                .map_err(zstd_error)?;
            self.out.write_all(output.as_slice())?;
            let taken = input.pos() == data.len();
            if taken && (end == ZSTD_EndDirective::ZSTD_e_continue || left == 0) {
                return Ok(());
            }
        }
    }

    /// `data`, the next bytes of the stream, to libzstd; the stream's last byte kept back.
    fn take(&mut self, data: &[u8]) -> io::Result<()> {
        use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
        let n = data.len() as u64;
        let (body, last) = match data.split_last() {
            Some((&b, body)) if self.input_done + n == self.len => (body, Some(b)),
            _ => (data, None),
        };
        self.feed(body, ZSTD_EndDirective::ZSTD_e_continue)?;
        if last.is_some() {
            self.last = last;
        }
        self.input_done += n;
        Ok(())
    }

    /// After the stream has finished the sink: the destination (flushed, not synced) and
    /// what was done. `None` if the sink was not finished (an error or interruption).
    pub fn into_inner(self) -> Option<(W, Summary)> {
        self.done.then_some((
            self.out.inner,
            Summary {
                input_bytes: self.len,
                output_bytes: self.out.written,
            },
        ))
    }
}

impl<W: Write + Send> Sink for Zstd<W> {
    fn name(&self) -> String {
        "compressing (zstd)".into()
    }

    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.cctx.is_none() {
            return Err("the encoder is finished".into());
        }
        let r = match &p.data {
            Data::Zero => {
                let mut r = Ok(());
                diskmap::sinks::for_zeros(p.len, |z| {
                    if r.is_ok() {
                        r = self.take(z);
                    }
                });
                r
            }
            _ => self.take(p.bytes().unwrap_or_default()),
        };
        r.map_err(|e| self.write_err(e))?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
        let last: Vec<u8> = self.last.take().into_iter().collect();
        self.feed(&last, ZSTD_EndDirective::ZSTD_e_end)
            .and_then(|()| self.out.flush())
            .map_err(|e| self.write_err(e))?;
        self.cctx = None;
        self.done = true;
        Ok(())
    }
}

/// Compresses bytes `[0, len)` of the file at `path` into one zstd frame written to `dst`:
/// its data ranges are read by `readers` threads while compressing, its holes fed as zeros
/// without reading them. `progress` gets input bytes as they are consumed; `cancel` stops it
/// with [`diskmap::Error::Interrupted`]. A file shorter than `len` is an error.
pub fn compress_file<W: Write + Send>(
    path: &Path,
    len: u64,
    dst: W,
    opts: &Options,
    readers: usize,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<(W, Summary)> {
    let unreadable = |source| {
        diskmap::Error::Source(blockio::SourceError::Unreadable {
            path: path.to_path_buf(),
            source,
        })
    };
    let f = std::fs::File::open(path).map_err(unreadable)?;
    let size = f.metadata().map_err(unreadable)?.len();
    let source = SourceFile::new(path, size.max(len));
    let mut b = MapBuilder::new(path.display().to_string(), len);
    if size < len {
        b.file(0, &source, 0, len)?;
    } else {
        for (start, n) in blockio::data_ranges(&f, len).map_err(unreadable)? {
            b.file(start, &source, start, n)?;
        }
    }
    let map = b.finish()?;
    let mut z = Zstd::new(dst, len, opts)?;
    diskmap::stream(
        &map,
        &mut [&mut z],
        &StreamOptions { readers },
        progress,
        cancel,
    )?;
    Ok(z.into_inner()
        .expect("a finished stream finishes its sinks"))
}

#[cfg(test)]
mod tests;
