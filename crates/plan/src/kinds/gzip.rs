//! `gzip`: the image's bytes as one gzip member (the kexec tarball's `.tar.gz`, Linode's
//! `.img.gz`), deflated in parallel with the same bytes for any thread count
//! (`compress::Gzip`).

use std::io::Write;
use std::path::PathBuf;

use imgbuild_diskmap::sinks::Sha256Sink;
use imgbuild_diskmap::{Piece, Sink};

use super::hashing::{hashing, Hashing};
use super::kind::{ImageWriter, OutputKind, WriterInput, Written};
use super::vmdk::DEFLATE;
use super::Compression;
use crate::{Error, Result};

/// Zeros handed to the compressor at a time for a piece of zeros.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// The image, gzip-compressed.
pub(crate) struct Gzip;

impl OutputKind for Gzip {
    fn name(&self) -> &'static str {
        "gzip"
    }
    fn extension(&self) -> &'static str {
        "img.gz"
    }
    fn levels(&self) -> Option<super::kind::Levels> {
        Some(DEFLATE)
    }
    fn compressed(&self, _: Compression) -> bool {
        true
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        let gz = gzip(w)?;
        let path = w.file.tmp().to_path_buf();
        Ok(Box::new(Writer { gz, path }))
    }
}

/// A gzip stream into the hashed image file at `w`'s level and worker count (this kind's, the
/// GCE tarball's and the gzip'd qcow2's).
pub(crate) fn gzip<'f>(w: &WriterInput<'_, 'f>) -> Result<imgbuild_compress::Gzip<Hashing<'f>>> {
    imgbuild_compress::Gzip::new(hashing(w.file), w.level.unsigned_abs(), w.workers).map_err(
        |source| Error::Io {
            op: "writing",
            path: w.file.tmp().to_path_buf(),
            source,
        },
    )
}

/// A container sink writing into [`gzip`]'s stream (GCE's tar, DigitalOcean's qcow2):
/// finishing it finishes the gzip stream.
pub(super) struct Gzipped<'f, S> {
    /// The container's writer.
    pub sink: S,
    /// The output file, for errors.
    pub path: PathBuf,
    /// The container's writer, back (`into_inner`).
    pub inner: fn(S) -> imgbuild_compress::Gzip<Hashing<'f>>,
}

impl<S: Sink> ImageWriter for Gzipped<'_, S> {
    fn sink(&mut self) -> &mut dyn Sink {
        &mut self.sink
    }
    fn finish(self: Box<Self>, _disk: &Sha256Sink) -> Result<Written> {
        let Gzipped { sink, path, inner } = *self;
        let w = inner(sink).finish().map_err(|source| Error::Io {
            op: "writing",
            path,
            source,
        })?;
        Ok(w.written())
    }
}

struct Writer<'f> {
    gz: imgbuild_compress::Gzip<Hashing<'f>>,
    path: PathBuf,
}

impl Sink for Writer<'_> {
    fn name(&self) -> String {
        format!("writing `{}`", self.path.display())
    }
    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match p.bytes() {
            Some(b) => self.gz.write_all(b)?,
            None => {
                let mut left = p.len;
                while left > 0 {
                    let n = left.min(ZEROS.len() as u64);
                    self.gz.write_all(&ZEROS[..imgbuild_blockio::to_usize(n)])?;
                    left -= n;
                }
            }
        }
        Ok(())
    }
}

impl ImageWriter for Writer<'_> {
    fn sink(&mut self) -> &mut dyn Sink {
        self
    }
    fn finish(self: Box<Self>, _disk: &Sha256Sink) -> Result<Written> {
        let Writer { gz, path } = *self;
        let w = gz.finish().map_err(|source| Error::Io {
            op: "writing",
            path,
            source,
        })?;
        Ok(w.written())
    }
}
