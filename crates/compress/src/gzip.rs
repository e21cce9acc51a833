//! Parallel, reproducible gzip (RFC 1952), for containers that must be gzip (GCE's
//! `.tar.gz`).
//!
//! The input is cut into 1 MiB chunks at fixed positions; each chunk is deflated on its own
//! (raw deflate, no shared dictionary) and ends with a sync flush, so the chunks' outputs
//! concatenate into one deflate stream, closed by a final block at [`Gzip::finish`]. That is
//! how pigz works, without its dictionary carry-over (about 0.1% larger). Chunks are deflated
//! by a pool of `workers` threads; the output depends only on the input, the level and the deflate
//! implementation (miniz_oxide, pinned in the workspace), never on the worker count. The
//! header records no name and no time.

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::pool::Ordered;

/// Input bytes per independently deflated chunk.
const CHUNK: usize = 1 << 20;

/// A gzip member written to `W` as input arrives through [`Write`]. Full chunks go to a pool
/// of deflate threads while the caller goes on filling the next; their outputs are written
/// in order by the caller's thread.
pub struct Gzip<W: Write> {
    inner: W,
    level: u32,
    current: Vec<u8>,
    pool: Ordered<Vec<u8>, Vec<u8>>,
    crc: crc32fast::Hasher,
    input: u64,
    written: u64,
}

impl<W: Write> Gzip<W> {
    /// A gzip stream at `level` (1..=9) deflated by `workers` threads, written to `inner`.
    pub fn new(mut inner: W, level: u32, workers: usize) -> io::Result<Self> {
        // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=3 (Unix).
        let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        inner.write_all(&header)?;
        let level = level.clamp(1, 9);
        Ok(Gzip {
            inner,
            level,
            current: Vec::with_capacity(CHUNK),
            pool: Ordered::new(workers, move |chunk: Vec<u8>| {
                deflate(&chunk, level, FlushCompress::Sync)
            }),
            crc: crc32fast::Hasher::new(),
            input: 0,
            written: header.len() as u64,
        })
    }

    /// Bytes written to `W` so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Deflate what is left, close the stream with the CRC-32 and length; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let (inner, written) = (&mut self.inner, &mut self.written);
        self.pool.finish(|out| {
            *written += out.len() as u64;
            inner.write_all(&out)
        })?;
        let last = std::mem::take(&mut self.current);
        let out = deflate(&last, self.level, FlushCompress::Finish)?;
        self.inner.write_all(&out)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // ISIZE: the input length modulo 2^32, by definition.
        trailer[4..].copy_from_slice(&((self.input & 0xFFFF_FFFF) as u32).to_le_bytes());
        self.inner.write_all(&trailer)?;
        self.written += (out.len() + trailer.len()) as u64;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// `input` as one zlib stream (RFC 1950: deflate with a header and an Adler-32), as VMDK
/// stores each grain.
pub fn zlib(input: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let c = Compress::new(Compression::new(level.clamp(1, 9)), true);
    run(c, input, FlushCompress::Finish)
}

/// One chunk as raw deflate, ending with `flush` (a sync flush, or the final block).
fn deflate(input: &[u8], level: u32, flush: FlushCompress) -> io::Result<Vec<u8>> {
    run(Compress::new(Compression::new(level), false), input, flush)
}

fn run(mut c: Compress, input: &[u8], flush: FlushCompress) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 2 + 1024);
    loop {
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let status = c
            .compress_vec(&input[consumed.min(input.len())..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done = c.total_in() == input.len() as u64;
        match status {
            Status::StreamEnd => return Ok(out),
            _ if done && out.len() < out.capacity() && flush != FlushCompress::Finish => {
                return Ok(out)
            }
            _ => out.reserve(out.capacity().max(64 << 10)),
        }
    }
}

impl<W: Write> Write for Gzip<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        self.crc.update(buf);
        self.input += n as u64;
        while !buf.is_empty() {
            let take = (CHUNK - self.current.len()).min(buf.len());
            self.current.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.current.len() == CHUNK {
                let chunk = std::mem::replace(&mut self.current, Vec::with_capacity(CHUNK));
                let (inner, written) = (&mut self.inner, &mut self.written);
                self.pool.submit(chunk, |out| {
                    *written += out.len() as u64;
                    inner.write_all(&out)
                })?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are cut at fixed positions: flushing does not deflate a partial one.
        self.inner.flush()
    }
}
