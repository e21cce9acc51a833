//! The LZMA compression of `core.img`'s payload.

use liblzma::stream::{Action, Filters, LzmaOptions, MatchFinder, Mode, Status, Stream};

use crate::Error;

/// Compresses `input` as a raw LZMA1 stream (no header: `lzma_decompress.img` knows the
/// properties and both sizes) with `grub-mkimage`'s parameters: a 64 KiB dictionary, lc=3,
/// lp=0, pb=2, and the LZMA SDK's level-5 search (normal mode, BT4, nice length 32, depth
/// 16 + 32/2). xz's raw LZMA1 encoder ends the stream with an end marker, which the
/// decompressor never reaches: it stops after the uncompressed size.
pub fn compress(input: &[u8]) -> Result<Vec<u8>, Error> {
    let mut opts = LzmaOptions::new_preset(6).map_err(Error::Lzma)?;
    opts.dict_size(1 << 16)
        .literal_context_bits(3)
        .literal_position_bits(0)
        .position_bits(2)
        .mode(Mode::Normal)
        .nice_len(32)
        .match_finder(MatchFinder::BinaryTree4)
        .depth(0);
    let mut filters = Filters::new();
    filters.lzma1(&opts);
    let mut stream = Stream::new_raw_encoder(&filters).map_err(Error::Lzma)?;
    let mut out = Vec::with_capacity(input.len() / 2 + 4096);
    loop {
        let consumed = usize::try_from(stream.total_in()).unwrap_or(input.len());
        let rest = input.get(consumed..).unwrap_or_default();
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(4096));
        }
        if stream
            .process_vec(rest, &mut out, Action::Finish)
            .map_err(Error::Lzma)?
            == Status::StreamEnd
        {
            return Ok(out);
        }
    }
}

/// The largest payload [`decompress`] unpacks: far above any real core image (GRUB's own
/// limits keep it under 1 MiB), low enough that a corrupt size field cannot exhaust memory.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// Unpacks the first `size` bytes of a core image's raw LZMA1 payload (i386-pc's
/// properties: lc=3, lp=0, pb=2, 64 KiB dictionary), stopping there as GRUB's decompressor
/// does, with or without an end marker after them. For readers of core images (ours or
/// `grub-mkimage`'s): `size` is the decompressor's uncompressed size field, at most
/// [`MAX_PAYLOAD`]; corrupt data is an error.
pub fn decompress(data: &[u8], size: usize) -> Result<Vec<u8>, Error> {
    if size > MAX_PAYLOAD {
        return Err(Error::TooBig {
            what: "the uncompressed core",
            size: u64::try_from(size).unwrap_or(u64::MAX),
            limit: u64::try_from(MAX_PAYLOAD).unwrap_or(u64::MAX),
        });
    }
    let mut opts = LzmaOptions::new();
    opts.dict_size(1 << 16)
        .literal_context_bits(3)
        .literal_position_bits(0)
        .position_bits(2);
    let mut filters = Filters::new();
    filters.lzma1(&opts);
    let mut stream = Stream::new_raw_decoder(&filters).map_err(Error::Lzma)?;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let consumed = usize::try_from(stream.total_in()).unwrap_or(data.len());
        let before = (consumed, out.len());
        let rest = data.get(consumed..).unwrap_or_default();
        let status = stream
            .process_vec(rest, &mut out, Action::Run)
            .map_err(Error::Lzma)?;
        let now = (
            usize::try_from(stream.total_in()).unwrap_or(data.len()),
            out.len(),
        );
        if status == Status::StreamEnd || now == before {
            break;
        }
    }
    if out.len() == size {
        Ok(out)
    } else {
        Err(Error::ShortPayload {
            got: out.len(),
            size,
        })
    }
}
