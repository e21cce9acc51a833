//! `vmdk`: a stream-optimized VMDK (VMware), its grains deflate-compressed.

use super::hashing::{hashing, straight};
use super::kind::{ImageWriter, Levels, OutputKind, WriterInput};
use super::Compression;
use crate::Result;

/// deflate's levels (gzip, VMDK grains): 1 to 9, 6 by default.
pub(crate) const DEFLATE: Levels = Levels {
    codec: "deflate",
    min: 1,
    max: 9,
    default: 6,
};

/// A stream-optimized VMDK.
pub(crate) struct Vmdk;

impl OutputKind for Vmdk {
    fn name(&self) -> &'static str {
        "vmdk"
    }
    fn extension(&self) -> &'static str {
        "vmdk"
    }
    fn levels(&self) -> Option<Levels> {
        Some(DEFLATE)
    }
    fn compressed(&self, _: Compression) -> bool {
        true
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        let level = w.level.unsigned_abs();
        let c = imgbuild_container::Vmdk::new(w.map, w.params, hashing(w.file), w.workers, level)?;
        Ok(straight(c, imgbuild_container::Vmdk::into_inner))
    }
}
