//! `gce-tar`: `disk.raw` in a sparse GNU tar, gzip-compressed (Google Compute Engine).

use std::path::PathBuf;

use imgbuild_diskmap::sinks::Sha256Sink;
use imgbuild_diskmap::Sink;

use super::hashing::{hashing, Hashing};
use super::kind::{ImageWriter, OutputKind, WriterInput, Written};
use super::vmdk::DEFLATE;
use super::Compression;
use crate::{Error, Result};

/// The GCE image tarball.
pub(crate) struct GceTar;

impl OutputKind for GceTar {
    fn name(&self) -> &'static str {
        "gce-tar"
    }
    fn extension(&self) -> &'static str {
        "raw.tar.gz"
    }
    fn levels(&self) -> Option<super::kind::Levels> {
        Some(DEFLATE)
    }
    fn compressed(&self, _: Compression) -> bool {
        true
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        let (gz, path) = gzip(w)?;
        let tar = imgbuild_container::GceTar::new(w.map, w.params, gz)?;
        Ok(Box::new(Gzipped {
            sink: tar,
            path,
            inner: imgbuild_container::GceTar::into_inner,
        }))
    }
}

/// The gzip stream an output kind compresses as a whole (GCE's tar, DigitalOcean's qcow2),
/// hashed on the way into the output file, and that file's path for errors.
pub(super) fn gzip<'f>(
    w: &WriterInput<'_, 'f>,
) -> Result<(imgbuild_compress::Gzip<Hashing<'f>>, PathBuf)> {
    let path = w.file.tmp().to_path_buf();
    let gz = imgbuild_compress::Gzip::new(hashing(w.file), w.level.unsigned_abs(), w.workers)
        .map_err(|source| Error::Io {
            op: "writing",
            path: path.clone(),
            source,
        })?;
    Ok((gz, path))
}

/// A container sink writing into [`gzip`]'s stream: finishing it finishes the gzip stream.
pub(super) struct Gzipped<'f, S> {
    pub sink: S,
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
