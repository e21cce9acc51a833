//! The sinks every build uses: the raw sparse file, the SHA-256 of the disk, and its bmap.
//! (Compressors and containers live in their own crates and implement [`crate::Sink`] too.)

use crate::to_usize;

mod bmap;
mod hash;
mod raw;

pub use bmap::Bmap;
pub use hash::Sha256Sink;
pub use raw::RawFile;

/// Zeros to feed hashers and encoders for runs of [`crate::Data::Zero`].
pub static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Call `f` with slices of zeros adding up to `len` bytes.
pub fn for_zeros(mut len: u64, mut f: impl FnMut(&[u8])) {
    while len > 0 {
        let n = to_usize(len.min(ZEROS.len() as u64));
        f(&ZEROS[..n]);
        len -= n as u64;
    }
}

/// Lower-case hex of a digest.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}
