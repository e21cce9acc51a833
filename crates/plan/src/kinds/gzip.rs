//! `gzip`: the image's bytes as one gzip member (the kexec tarball's `.tar.gz`), deflated in
//! parallel with the same bytes for any thread count (`compress::Gzip`).

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
        "gz"
    }
    fn levels(&self) -> Option<super::kind::Levels> {
        Some(DEFLATE)
    }
    fn compressed(&self, _: Compression) -> bool {
        true
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        let path = w.file.tmp().to_path_buf();
        let gz = imgbuild_compress::Gzip::new(hashing(w.file), w.level.unsigned_abs(), w.workers)
            .map_err(|source| Error::Io {
            op: "writing",
            path: path.clone(),
            source,
        })?;
        Ok(Box::new(Writer { gz, path }))
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
