//! What the tar readers (OVA, GCE) share: number fields, a member's name and type.

/// A tar number field: octal ASCII, or GNU base-256 (first byte 0x80).
pub(super) fn number(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|&b| b & 0x80 != 0) {
        return f[1..]
            .iter()
            .try_fold(0u64, |n, &b| n.checked_mul(256).map(|n| n | u64::from(b)));
    }
    let s: String = f
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| char::from(b))
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_numbers() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(number(b"9\0"), None);
    }
}
