//! Deterministic GUIDs from a seed.

use sha2::{Digest, Sha256};

/// Derives a GUID/UUID deterministically from `seed` and a purpose string `what`
/// (e.g. `"esp-partition"`, `"root-filesystem"`).
///
/// Definition (stable; changing it changes every image):
/// 1. `h = SHA-256( u64_le(seed.len()) || seed || what )` (the length prefix makes the
///    split between `seed` and `what` unambiguous);
/// 2. take `h[0..16]`;
/// 3. set the version nibble to 4 (`b[6] = b[6] & 0x0f | 0x40`) and the RFC 4122 variant
///    (`b[8] = b[8] & 0x3f | 0x80`), the same "v4-shaped" form systemd uses for its
///    hash-derived partition UUIDs.
///
/// The result is in RFC 4122 (big-endian, string) byte order: `Uuid::from_bytes(result)`
/// prints as expected, and [`crate::encode_gpt`] takes care of GPT's mixed-endian storage.
pub fn guid_from_seed(seed: &[u8], what: &str) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update((seed.len() as u64).to_le_bytes());
    hasher.update(seed);
    hasher.update(what.as_bytes());
    let digest = hasher.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn deterministic_v4_shaped_and_separated() {
        let a = guid_from_seed(b"seed", "esp");
        assert_eq!(a, guid_from_seed(b"seed", "esp"));
        assert_ne!(a, guid_from_seed(b"seed", "root"));
        assert_ne!(a, guid_from_seed(b"seed2", "esp"));
        // The length prefix keeps `seed || what` splits apart.
        assert_ne!(guid_from_seed(b"ab", "c"), guid_from_seed(b"a", "bc"));
        let u = Uuid::from_bytes(a);
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn matches_an_external_sha256() {
        // printf '\x04\0\0\0\0\0\0\0seedesp' | sha256sum
        //   = 6568a149f4592681302b581772c70961475bf82f...
        // with the version nibble (0x26 -> 0x46) and variant bits (0x30 -> 0xb0) set:
        let got = Uuid::from_bytes(guid_from_seed(b"seed", "esp"));
        assert_eq!(got.to_string(), "6568a149-f459-4681-b02b-581772c70961");
    }
}
