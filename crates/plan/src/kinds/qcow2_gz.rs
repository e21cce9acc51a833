//! `qcow2-gz`: a qcow2 image, gzip-compressed as a whole (`nixos.qcow2.gz`, what
//! DigitalOcean's custom images take).

use std::path::PathBuf;

use imgbuild_diskmap::sinks::Sha256Sink;
use imgbuild_diskmap::Sink;

use super::hashing::{hashing, Hashing};
use super::kind::{ImageWriter, OutputKind, WriterInput, Written};
use super::vmdk::DEFLATE;
use super::Compression;
use crate::{Error, Result};

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
        let path = w.file.tmp().to_path_buf();
        let gz = imgbuild_compress::Gzip::new(hashing(w.file), w.level.unsigned_abs(), w.workers)
            .map_err(|source| Error::Io {
            op: "writing",
            path: path.clone(),
            source,
        })?;
        let qcow2 = imgbuild_container::Qcow2::new(w.map, w.params, gz)?;
        Ok(Box::new(Writer { qcow2, path }))
    }
}

struct Writer<'f> {
    qcow2: imgbuild_container::Qcow2<imgbuild_compress::Gzip<Hashing<'f>>>,
    path: PathBuf,
}

impl ImageWriter for Writer<'_> {
    fn sink(&mut self) -> &mut dyn Sink {
        &mut self.qcow2
    }
    fn finish(self: Box<Self>, _disk: &Sha256Sink) -> Result<Written> {
        let Writer { qcow2, path } = *self;
        let w = qcow2.into_inner().finish().map_err(|source| Error::Io {
            op: "writing",
            path,
            source,
        })?;
        Ok(w.written())
    }
}
