//! A raw disk compressed with zstd (seekable-friendly frames, with checksums).

use imgbuild_diskmap::sinks::{hex, Sha256Sink};
use imgbuild_diskmap::Sink;

use super::hashing::{hashing, Hashing};
use super::kind::{ImageWriter, Levels, WriterInput, Written};
use crate::Result;

/// zstd's levels: 1 (fastest) to 22 (smallest), 3 by default.
pub(crate) const LEVELS: Levels = Levels {
    codec: "zstd",
    min: 1,
    max: 22,
    default: 3,
};

struct Zstd<'f>(imgbuild_compress::Zstd<Hashing<'f>>);

/// The zstd stream of the disk into `w.file`.
pub(crate) fn writer<'f>(w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
    Ok(Box::new(Zstd(imgbuild_compress::Zstd::new(
        hashing(w.file),
        w.map.len(),
        &imgbuild_compress::Options {
            level: w.level,
            workers: u32::try_from(w.workers).unwrap_or(u32::MAX),
            checksum: true,
        },
    )?)))
}

impl ImageWriter for Zstd<'_> {
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
