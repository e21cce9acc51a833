//! Narrowing integers into on-disk fields without `as`.
//!
//! ext4 splits wide values into `_lo` and `_hi` fields: [`lo16`], [`lo32`], [`hi16`],
//! [`hi32`] take those halves (truncation is the point). Every other narrowing goes through
//! [`narrow`], which states why the value fits and panics with that reason if it ever does not
//! (a planning bug, never bad input: inputs are refused with errors before encoding).

/// The low 16 bits of a 32-bit value.
pub(crate) fn lo16(v: u32) -> u16 {
    let [a, b, _, _] = v.to_le_bytes();
    u16::from_le_bytes([a, b])
}

/// The high 16 bits of a 32-bit value.
pub(crate) fn hi16(v: u32) -> u16 {
    let [_, _, a, b] = v.to_le_bytes();
    u16::from_le_bytes([a, b])
}

/// The low 32 bits of a 64-bit value.
pub(crate) fn lo32(v: u64) -> u32 {
    let [a, b, c, d, ..] = v.to_le_bytes();
    u32::from_le_bytes([a, b, c, d])
}

/// The high 32 bits of a 64-bit value.
pub(crate) fn hi32(v: u64) -> u32 {
    let [.., a, b, c, d] = v.to_le_bytes();
    u32::from_le_bytes([a, b, c, d])
}

/// `v` in a narrower type; `why` says why it always fits.
#[track_caller]
pub(crate) fn narrow<T: TryFrom<U>, U: Copy + std::fmt::Display>(v: U, why: &str) -> T {
    T::try_from(v).unwrap_or_else(|_| panic!("{v} does not fit its field ({why})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves() {
        assert_eq!(lo16(0x1234_5678), 0x5678);
        assert_eq!(hi16(0x1234_5678), 0x1234);
        assert_eq!(lo32(0x0123_4567_89AB_CDEF), 0x89AB_CDEF);
        assert_eq!(hi32(0x0123_4567_89AB_CDEF), 0x0123_4567);
        assert_eq!(narrow::<u16, usize>(4096, "a block"), 4096);
    }
}
