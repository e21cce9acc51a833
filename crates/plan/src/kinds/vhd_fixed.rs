//! `vhd-fixed`: the raw disk, sparse, and a VHD footer after it (Azure).

use imgbuild_blockio::Region;
use imgbuild_container::vhd;
use imgbuild_diskmap::sinks::{hex, RawFile, Sha256Sink};
use imgbuild_diskmap::Sink;

use super::kind::{ImageWriter, OutputKind, WriterInput, Written};
use super::Compression;
use crate::Result;

/// A fixed VHD: the raw disk at the start of the file; the footer follows at the end.
pub(crate) struct VhdFixed;

impl OutputKind for VhdFixed {
    fn name(&self) -> &'static str {
        "vhd-fixed"
    }
    fn extension(&self) -> &'static str {
        "vhd"
    }
    fn compressed(&self, _: Compression) -> bool {
        false
    }
    fn initial_len(&self, disk_size: u64) -> u64 {
        disk_size + vhd::FOOTER as u64
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        // Refuse a size VHD cannot describe before writing anything.
        vhd::fixed_footer(w.params)?;
        Ok(Box::new(Writer {
            raw: RawFile::new(
                w.file.file(),
                w.map.len(),
                format!("writing `{}`", w.file.tmp().display()),
            ),
            file: w.file.file(),
            params: w.params.clone(),
        }))
    }
}

struct Writer<'f> {
    raw: RawFile<'f>,
    file: &'f std::fs::File,
    params: imgbuild_container::Params,
}

impl ImageWriter for Writer<'_> {
    fn sink(&mut self) -> &mut dyn Sink {
        &mut self.raw
    }
    fn finish(self: Box<Self>, disk: &Sha256Sink) -> Result<Written> {
        let footer = vhd::fixed_footer(&self.params)?;
        let end = self.params.disk_size;
        Region::new(self.file, "VHD footer", end, footer.len() as u64).write_at(0, &footer)?;
        let sum = disk
            .digest_with_suffix(&footer)
            .expect("a finished stream finishes its sinks");
        Ok(Written {
            size: end + footer.len() as u64,
            sha256: hex(&sum),
        })
    }
}
