//! The raw disk as a sparse file: the file is created at its full length beforehand
//! (`set_len`), zeros are never written, file data goes with `copy_file_range` when a piece
//! is one range of one host file, everything else with positional writes.

use std::fs::File;

use imgbuild_blockio::Region;

use crate::{Data, Piece, Sink};

/// Blocks of this size that are all zeros are left as holes.
const SPARSE_BLOCK: usize = 4096;

/// A sink that writes the disk into a file (or a region of one), leaving zeros as holes.
pub struct RawFile<'f> {
    region: Region<'f>,
    what: String,
}

impl<'f> RawFile<'f> {
    /// A sink writing the disk into `file`, which must read as zeros (fresh, sparse) and be
    /// at least as long as the map. `what` names it in errors (`writing nixos.img.tmp`).
    pub fn new(file: &'f File, len: u64, what: impl Into<String>) -> Self {
        RawFile {
            region: Region::new(file, "disk", 0, len),
            what: what.into(),
        }
    }
}

impl Sink for RawFile<'_> {
    fn name(&self) -> String {
        self.what.clone()
    }

    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match (&p.data, &p.source) {
            (Data::Zero, _) => {}
            (_, Some((file, source, offset))) => {
                self.region
                    .copy_from(p.offset, file, &source.path, *offset, p.len)?;
            }
            (_, None) => {
                let bytes = p.bytes().unwrap_or_default();
                self.region
                    .write_nonzero_at(p.offset, bytes, SPARSE_BLOCK)?;
            }
        }
        Ok(())
    }
}
