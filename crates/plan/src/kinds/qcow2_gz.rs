//! `qcow2-gz`: a qcow2 image, gzip-compressed as a whole (`nixos.qcow2.gz`, what
//! DigitalOcean's custom images take).

use super::gzip::{gzip, Gzipped};
use super::kind::{ImageWriter, OutputKind, WriterInput};
use super::vmdk::DEFLATE;
use super::Compression;
use crate::Result;

/// qcow2 v3 inside gzip.
pub(crate) struct Qcow2Gz;

impl OutputKind for Qcow2Gz {
    fn name(&self) -> &'static str {
        "qcow2-gz"
    }
    fn extension(&self) -> &'static str {
        "qcow2.gz"
    }
    fn levels(&self) -> Option<super::kind::Levels> {
        Some(DEFLATE)
    }
    fn compressed(&self, _: Compression) -> bool {
        true
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        let qcow2 = imgbuild_container::Qcow2::new(w.map, w.params, gzip(w)?)?;
        Ok(Box::new(Gzipped {
            sink: qcow2,
            path: w.file.tmp().to_path_buf(),
            inner: imgbuild_container::Qcow2::into_inner,
        }))
    }
}
