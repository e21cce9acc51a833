//! `vhdx`: Dynamic VHDX (Hyper-V).

use super::hashing::{hashing, straight};
use super::kind::{ImageWriter, OutputKind, WriterInput};
use super::Compression;
use crate::Result;

/// Dynamic VHDX (Hyper-V).
pub(crate) struct Vhdx;

impl OutputKind for Vhdx {
    fn name(&self) -> &'static str {
        "vhdx"
    }
    fn extension(&self) -> &'static str {
        "vhdx"
    }
    fn compressed(&self, _: Compression) -> bool {
        false
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        let c = imgbuild_container::Vhdx::new(w.map, w.params, hashing(w.file))?;
        Ok(straight(c, imgbuild_container::Vhdx::into_inner))
    }
}
