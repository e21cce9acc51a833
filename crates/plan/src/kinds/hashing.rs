//! The image file written sequentially and hashed on the way, shared by every writer.

use std::io::{BufWriter, Write};

use imgbuild_blockio::OutputFile;
use imgbuild_diskmap::sinks::{hex, Sha256Sink};
use imgbuild_diskmap::Sink;
use sha2::{Digest, Sha256};

use super::kind::{ImageWriter, Written};
use crate::Result;

/// The image file written sequentially from `pos` on (positional writes: an OVA's front is
/// written last).
pub(crate) struct At<'f> {
    file: &'f std::fs::File,
    pos: u64,
}

impl Write for At<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::write_all_at(self.file, buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that hashes what passes through it.
pub(crate) struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// The bytes written and their SHA-256, raw.
    pub fn digest(self) -> (u64, sha2::digest::Output<Sha256>) {
        (self.len, self.hash.finalize())
    }

    /// The bytes written and their SHA-256, in hex.
    pub fn written(self) -> Written {
        let (size, sum) = self.digest();
        Written {
            size,
            sha256: hex(&sum),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The image file written sequentially and hashed on the way.
pub(crate) type Hashing<'f> = HashingWriter<BufWriter<At<'f>>>;

/// `f` written from its start.
pub(crate) fn hashing(f: &OutputFile) -> Hashing<'_> {
    hashing_at(f, 0)
}

/// `f` written from `pos` on.
pub(crate) fn hashing_at(f: &OutputFile, pos: u64) -> Hashing<'_> {
    HashingWriter {
        inner: BufWriter::with_capacity(
            1 << 20,
            At {
                file: f.file(),
                pos,
            },
        ),
        hash: Sha256::new(),
        len: 0,
    }
}

/// The file's SHA-256, read back: only for an OVA, whose first blocks are written last.
pub(crate) fn sha256_of(f: &OutputFile) -> std::io::Result<String> {
    use std::io::Read;
    let mut h = Sha256::new();
    let mut r = std::io::BufReader::with_capacity(1 << 20, f.file());
    std::io::Seek::seek(&mut r, std::io::SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// A container that writes straight into the hashed image file: what it wrote is the image.
pub(crate) struct Straight<'f, S> {
    pub sink: S,
    /// The container's `into_inner`, handing the file's writer back.
    pub inner: fn(S) -> Hashing<'f>,
}

impl<'f, S: Sink + 'f> ImageWriter for Straight<'f, S> {
    fn sink(&mut self) -> &mut dyn Sink {
        &mut self.sink
    }
    fn finish(self: Box<Self>, _disk: &Sha256Sink) -> Result<Written> {
        Ok((self.inner)(self.sink).written())
    }
}

/// The image's writer, boxed, for a container that writes straight into the file.
pub(crate) fn straight<'f, S: Sink + 'f>(
    sink: S,
    inner: fn(S) -> Hashing<'f>,
) -> Box<dyn ImageWriter + 'f> {
    Box::new(Straight { sink, inner })
}
