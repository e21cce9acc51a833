//! `raw`: the disk's bytes as a sparse file, or zstd-compressed (`compress = "zstd"`).

use super::kind::{ImageWriter, Levels, OutputKind, WriterInput};
use super::Compression;
use crate::Result;

/// The raw disk; compressed, it is the [`super::zstd`] stream of it.
pub(crate) struct Raw;

impl OutputKind for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }
    fn extension(&self) -> &'static str {
        "img"
    }
    fn suffix(&self, compression: Compression) -> &'static str {
        match compression {
            Compression::None => "",
            Compression::Zstd => ".zst",
        }
    }
    fn takes_compress(&self) -> bool {
        true
    }
    fn levels(&self) -> Option<Levels> {
        Some(super::zstd::LEVELS)
    }
    fn compressed(&self, compression: Compression) -> bool {
        compression != Compression::None
    }
    fn is_raw_disk(&self, compression: Compression) -> bool {
        compression == Compression::None
    }
    fn bmap(&self) -> bool {
        true
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        // Uncompressed, the image is the raw disk, written by the raw disk's own sink.
        debug_assert_eq!(w.compression, Compression::Zstd);
        super::zstd::writer(w)
    }
}
