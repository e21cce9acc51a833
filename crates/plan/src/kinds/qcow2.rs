//! `qcow2`: qcow2 version 3 (QEMU, libvirt, OpenStack).

use super::hashing::{hashing, straight};
use super::kind::{ImageWriter, OutputKind, WriterInput};
use super::Compression;
use crate::Result;

/// qcow2 version 3 (QEMU, libvirt, OpenStack).
pub(crate) struct Qcow2;

impl OutputKind for Qcow2 {
    fn name(&self) -> &'static str {
        "qcow2"
    }
    fn extension(&self) -> &'static str {
        "qcow2"
    }
    fn compressed(&self, _: Compression) -> bool {
        false
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        let c = imgbuild_container::Qcow2::new(w.map, w.params, hashing(w.file))?;
        Ok(straight(c, imgbuild_container::Qcow2::into_inner))
    }
}
