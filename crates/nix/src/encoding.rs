//! Nix's text encodings of binary digests: nix-base32, base16 and base64.
//!
//! nix-base32 is not RFC 4648 base32: it uses the alphabet [`NIX32_ALPHABET`] (no `e o u t`) and
//! emits the 5-bit groups starting from the *last* one, so the first character holds the most
//! significant bits of the final byte (`printHash32` / `parseHash32` in libutil/hash.cc).

/// The 32 characters of nix-base32, in digit order.
pub const NIX32_ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the nix-base32 text for `n` bytes.
pub const fn nix32_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n * 8 - 1) / 5 + 1
    }
}

/// The digit value of a nix-base32 character.
pub fn nix32_digit(c: u8) -> Option<u8> {
    // The alphabet is sorted, so a binary search finds the digit.
    NIX32_ALPHABET.binary_search(&c).ok().map(|d| d as u8)
}

/// Encodes bytes as nix-base32.
pub fn nix32_encode(bytes: &[u8]) -> String {
    let len = nix32_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let lo = u16::from(bytes[i]) >> j;
        let hi = match bytes.get(i + 1) {
            Some(&b) => u16::from(b) << (8 - j),
            None => 0,
        };
        out.push(char::from(NIX32_ALPHABET[usize::from((lo | hi) & 0x1f)]));
    }
    out
}

/// Decodes nix-base32 text into exactly `out_len` bytes. Fails on a wrong length, a character
/// outside the alphabet, or bits beyond `out_len` bytes.
pub fn nix32_decode(text: &str, out_len: usize) -> Option<Vec<u8>> {
    if text.len() != nix32_len(out_len) {
        return None;
    }
    let mut out = vec![0u8; out_len];
    for (n, c) in text.bytes().rev().enumerate() {
        let digit = u16::from(nix32_digit(c)?);
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        // Truncation intended: the low 8 bits land in byte i, the rest carry into byte i + 1.
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        match out.get_mut(i + 1) {
            Some(next) => *next |= carry as u8,
            None if carry != 0 => return None,
            None => {}
        }
    }
    Some(out)
}

/// Lower-case hexadecimal.
pub fn base16_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Hexadecimal (either case) into exactly `out_len` bytes.
pub fn base16_decode(text: &str, out_len: usize) -> Option<Vec<u8>> {
    if text.len() != out_len * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with `=` padding (as in SRI hashes).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(B64[((v >> (18 - 6 * k)) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 into exactly `out_len` bytes; padding is optional, the unused low bits of the
/// last character must be zero (canonical encoding).
pub fn base64_decode(text: &str, out_len: usize) -> Option<Vec<u8>> {
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 {
        return None;
    }
    let padded = body.len().div_ceil(4) * 4;
    if text.len() != body.len() && text.len() != padded {
        return None;
    }
    let mut out = Vec::with_capacity(out_len);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in body.bytes() {
        let d = B64.iter().position(|&x| x == c)? as u32;
        acc = acc << 6 | d;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (out.len() == out_len && acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nix32_known_vectors() {
        // Worked by hand from the algorithm: a single byte 0x1f is "0" then digit 31 ("z") for
        // the low 5 bits, the high 3 bits (0) come first.
        assert_eq!(nix32_encode(&[0x1f]), "0z");
        assert_eq!(nix32_encode(&[0xff]), "7z");
        // The most significant character carries the *last* byte's top bits.
        assert_eq!(nix32_encode(&[0, 0x80]), "1000");
        assert_eq!(nix32_len(20), 32);
        assert_eq!(nix32_len(32), 52);
        assert_eq!(nix32_decode("7z", 1), Some(vec![0xff]));
        // "8z" would need a ninth bit.
        assert_eq!(nix32_decode("8z", 1), None);
        assert_eq!(nix32_decode("0e", 1), None, "e is not in the alphabet");
        assert_eq!(nix32_decode("0", 1), None, "wrong length");
    }

    #[test]
    fn base64_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_decode("Zg==", 1).as_deref(), Some(&b"f"[..]));
        assert_eq!(base64_decode("Zg", 1).as_deref(), Some(&b"f"[..]));
        assert_eq!(
            base64_decode("Zh==", 1),
            None,
            "non-canonical trailing bits"
        );
        assert_eq!(base64_decode("Zm8=", 1), None, "wrong length");
    }

    proptest! {
        #[test]
        fn roundtrips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let n = bytes.len();
            prop_assert_eq!(nix32_decode(&nix32_encode(&bytes), n), Some(bytes.clone()));
            prop_assert_eq!(base16_decode(&base16_encode(&bytes), n), Some(bytes.clone()));
            prop_assert_eq!(base64_decode(&base64_encode(&bytes), n), Some(bytes.clone()));
            prop_assert!(nix32_encode(&bytes).bytes().all(|c| NIX32_ALPHABET.contains(&c)));
        }
    }
}
