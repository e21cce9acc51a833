//! The xz sink: liblzma's multithreaded `.xz` encoder, same bytes for any thread count.
//!
//! liblzma's multithreaded encoder cuts the input into blocks of a fixed size and compresses
//! each on its own, so the stream it writes depends on the input, the preset and the block
//! size, never on how many threads did the work (its single-threaded encoder writes one
//! block with no sizes in its header: a different encoding, so it is never used here, even
//! for one thread). The block size is fixed from the preset alone ([`block_size`]). Memory
//! is about 3 block sizes per thread, whatever the input size. The stream carries a CRC64
//! of each block, as `xz` writes it by default, so `xz -t` verifies it.

use std::io::{self, Write};

use imgbuild_diskmap::{self as diskmap, Data, Piece, Sink};
use liblzma::stream::{Check, MtStreamBuilder};
use liblzma::write::XzEncoder;

use crate::{Counting, Error, Result, Summary};

/// xz's presets: 0 (fastest) to 9 (smallest).
pub const LEVELS: std::ops::RangeInclusive<u32> = 0..=9;

/// The LZMA2 dictionary size of each preset, as xz(1) documents them.
const DICT: [u64; 10] = [
    256 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
    4 << 20,
    8 << 20,
    8 << 20,
    16 << 20,
    32 << 20,
    64 << 20,
];

/// The uncompressed size of every block at `level`: three dictionaries, at least 1 MiB
/// (what liblzma and `xz -T` pick by default, written out so that no liblzma default can
/// change the output).
pub fn block_size(level: u32) -> u64 {
    let dict = DICT[usize::try_from(level.min(9)).unwrap_or(9)];
    (3 * dict).max(1 << 20)
}

/// The xz sink: one `.xz` stream of every piece, in order, written to `W`.
pub struct Xz<W: Write + Send> {
    encoder: Option<XzEncoder<Counting<W>>>,
    done: Option<Counting<W>>,
    input_done: u64,
}

impl<W: Write + Send> Xz<W> {
    /// An encoder at preset `level` (0 to 9) on `threads` threads (at least 1) writing to
    /// `dst`.
    pub fn new(dst: W, level: u32, threads: u32) -> Result<Self> {
        if !LEVELS.contains(&level) {
            return Err(Error::Setup {
                what: "xz preset",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("level {level} is not 0 to 9"),
                ),
            });
        }
        let stream = MtStreamBuilder::new()
            .preset(level)
            .threads(threads.max(1))
            .block_size(block_size(level))
            .check(Check::Crc64)
            .timeout_ms(0)
            .encoder()
            .map_err(|e| Error::Setup {
                what: "xz encoder",
                source: io::Error::other(e),
            })?;
        let out = Counting {
            inner: dst,
            written: 0,
        };
        Ok(Xz {
            encoder: Some(XzEncoder::new_stream(out, stream)),
            done: None,
            input_done: 0,
        })
    }

    fn write_err(&self, source: io::Error) -> Error {
        Error::Write {
            input_done: self.input_done,
            output_done: self.encoder.as_ref().map_or(0, |e| e.get_ref().written),
            source,
        }
    }

    /// After the stream has finished the sink: the destination (flushed, not synced) and
    /// what was done. `None` if the sink was not finished.
    pub fn into_inner(self) -> Option<(W, Summary)> {
        let c = self.done?;
        Some((
            c.inner,
            Summary {
                input_bytes: self.input_done,
                output_bytes: c.written,
            },
        ))
    }
}

impl<W: Write + Send> Sink for Xz<W> {
    fn name(&self) -> String {
        "compressing (xz)".into()
    }

    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let enc = self.encoder.as_mut().ok_or("the encoder is finished")?;
        let r = match &p.data {
            Data::Zero => {
                let mut r = Ok(());
                diskmap::sinks::for_zeros(p.len, |z| {
                    if r.is_ok() {
                        r = enc.write_all(z);
                    }
                });
                r
            }
            _ => enc.write_all(p.bytes().unwrap_or_default()),
        };
        r.map_err(|e| self.write_err(e))?;
        self.input_done += p.len;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let enc = self.encoder.take().ok_or("the encoder is finished")?;
        let input_done = self.input_done;
        let mut out = enc.finish().map_err(|source| Error::Write {
            input_done,
            output_done: 0,
            source,
        })?;
        out.flush().map_err(|source| Error::Write {
            input_done,
            output_done: out.written,
            source,
        })?;
        self.done = Some(out);
        Ok(())
    }
}
