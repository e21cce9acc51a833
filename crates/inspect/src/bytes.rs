//! Integers read from on-disk structures: little-endian (and the few big-endian) fields at a
//! byte offset of a buffer.
//!
//! Every reader is bounds-checked: a field that does not lie wholly inside the buffer reads
//! as 0, never a panic. Callers check the buffer's length first wherever a missing field must
//! be an error. Each reader returns the field's own type; callers widen with `u64::from`, and
//! turn on-disk numbers into in-memory lengths with [`to_usize`].

/// The `N` bytes at `o`, or zeros when they are not all inside `b`.
fn field<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    o.checked_add(N)
        .and_then(|end| b.get(o..end))
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}

/// The little-endian `u16` at `o`.
pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(field(b, o))
}

/// The little-endian `u32` at `o`.
pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(field(b, o))
}

/// The little-endian `u64` at `o`.
pub(crate) fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(field(b, o))
}

/// The big-endian `u32` at `o` (qcow2, VHD).
pub(crate) fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(field(b, o))
}

/// The big-endian `u64` at `o` (qcow2, VHD).
pub(crate) fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(field(b, o))
}

/// `n` as an in-memory length or index. Callers bound `n` first (by a buffer's length, a
/// partition's size or a limit); on a 64-bit target the conversion is exact, and elsewhere a
/// value past `usize::MAX` saturates, so the read, slice or allocation it sizes fails instead
/// of wrapping to a small number.
pub(crate) fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// An in-memory length or count as a `u64` (exact: `usize` is at most 64 bits wide).
pub(crate) fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_inside_read_and_outside_are_zero() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(le16(&b, 0), 0x0201);
        assert_eq!(le32(&b, 1), 0x0504_0302);
        assert_eq!(le64(&b, 1), 0x0908_0706_0504_0302);
        assert_eq!(be32(&b, 0), 0x0102_0304);
        assert_eq!(be64(&b, 0), 0x0102_0304_0506_0708);
        assert_eq!(le16(&b, 8), 0, "one byte short");
        assert_eq!(le32(&b, 6), 0);
        assert_eq!(le64(&b, 2), 0);
        assert_eq!(be32(&b, usize::MAX), 0, "offset overflow");
    }
}
