//! `vhd`: Dynamic VHD (AWS EC2 import, Hyper-V, VirtualBox).

use super::hashing::{hashing, straight};
use super::kind::{ImageWriter, OutputKind, WriterInput};
use super::Compression;
use crate::Result;

/// Dynamic VHD (AWS EC2 import, Hyper-V, VirtualBox).
pub(crate) struct Vhd;

impl OutputKind for Vhd {
    fn name(&self) -> &'static str {
        "vhd"
    }
    fn extension(&self) -> &'static str {
        "vhd"
    }
    fn compressed(&self, _: Compression) -> bool {
        false
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        let c = imgbuild_container::Vhd::new(w.map, w.params, hashing(w.file))?;
        Ok(straight(c, imgbuild_container::Vhd::into_inner))
    }
}
