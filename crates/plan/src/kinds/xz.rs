//! `xz`: the image's bytes in one `.xz` stream (liblzma's multithreaded encoder, the same
//! bytes for any `-j`): what nixpkgs' container tarballs are (`.tar.xz`).

use imgbuild_diskmap::sinks::{hex, Sha256Sink};
use imgbuild_diskmap::Sink;

use super::hashing::{hashing, Hashing};
use super::kind::{ImageWriter, Levels, OutputKind, WriterInput, Written};
use super::Compression;
use crate::Result;

/// xz's presets 1 to 9; 6 by default, as `xz` and `pixz`.
const LEVELS: Levels = Levels {
    codec: "xz",
    min: 1,
    max: 9,
    default: 6,
};

/// The xz-compressed image.
pub(crate) struct Xz;

impl OutputKind for Xz {
    fn name(&self) -> &'static str {
        "xz"
    }
    fn extension(&self) -> &'static str {
        "img.xz"
    }
    fn levels(&self) -> Option<Levels> {
        Some(LEVELS)
    }
    fn compressed(&self, _: Compression) -> bool {
        true
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        let level = w.level.unsigned_abs();
        let threads = u32::try_from(w.workers).unwrap_or(u32::MAX);
        Ok(Box::new(Writer(imgbuild_compress::Xz::new(
            hashing(w.file),
            level,
            threads,
        )?)))
    }
}

struct Writer<'f>(imgbuild_compress::Xz<Hashing<'f>>);

impl ImageWriter for Writer<'_> {
    fn sink(&mut self) -> &mut dyn Sink {
        &mut self.0
    }
    fn finish(self: Box<Self>, _disk: &Sha256Sink) -> Result<Written> {
        let (w, summary) = self
            .0
            .into_inner()
            .expect("a finished stream finishes its sinks");
        let (_, sum) = w.digest();
        Ok(Written {
            size: summary.output_bytes,
            sha256: hex(&sum),
        })
    }
}
