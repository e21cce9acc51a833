//! `gce-tar`: `disk.raw` in a sparse GNU tar, gzip-compressed (Google Compute Engine).

use super::gzip::{gzip, Gzipped};
use super::kind::{ImageWriter, OutputKind, WriterInput};
use super::vmdk::DEFLATE;
use super::Compression;
use crate::Result;

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
        let tar = imgbuild_container::GceTar::new(w.map, w.params, gzip(w)?)?;
        Ok(Box::new(Gzipped {
            sink: tar,
            path: w.file.tmp().to_path_buf(),
            inner: imgbuild_container::GceTar::into_inner,
        }))
    }
}
