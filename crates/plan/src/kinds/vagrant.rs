//! `vagrant-box`: a Vagrant box for VirtualBox (box format v1): the OVF package of `ova`
//! under the names Vagrant imports (`box.ovf`, `box.mf`), plus `Vagrantfile` and
//! `metadata.json`, in one uncompressed tar (`vagrant box add` takes tar, tar.gz or zip).

use super::kind::{ImageWriter, Levels, OutputKind, WriterInput};
use super::ova::package_writer;
use super::vmdk::DEFLATE;
use super::Compression;
use crate::Result;

/// The Vagrant box.
pub(crate) struct VagrantBox;

impl OutputKind for VagrantBox {
    fn name(&self) -> &'static str {
        "vagrant-box"
    }
    fn extension(&self) -> &'static str {
        "box"
    }
    fn levels(&self) -> Option<Levels> {
        Some(DEFLATE)
    }
    fn compressed(&self, _: Compression) -> bool {
        true
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        package_writer(w, imgbuild_container::Members::vagrant_virtualbox())
    }
}
