//! `gce-tar`: `disk.raw` in a sparse GNU tar, gzip-compressed (Google Compute Engine).

use std::path::PathBuf;

use imgbuild_diskmap::sinks::Sha256Sink;
use imgbuild_diskmap::Sink;

use super::hashing::Hashing;
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
        let path = w.file.tmp().to_path_buf();
        let gz = super::gzip::gzip(w)?;
        let tar = imgbuild_container::GceTar::new(w.map, w.params, gz)?;
        Ok(Box::new(Writer { tar, path }))
    }
}

struct Writer<'f> {
    tar: imgbuild_container::GceTar<imgbuild_compress::Gzip<Hashing<'f>>>,
    path: PathBuf,
}

impl ImageWriter for Writer<'_> {
    fn sink(&mut self) -> &mut dyn Sink {
        &mut self.tar
    }
    fn finish(self: Box<Self>, _disk: &Sha256Sink) -> Result<Written> {
        let Writer { tar, path } = *self;
        let w = tar.into_inner().finish().map_err(|source| Error::Io {
            op: "writing",
            path,
            source,
        })?;
        Ok(w.written())
    }
}
