//! [`NarHash`]: the SHA-256 digest of a path's NAR serialisation.

use std::fmt;

use crate::encoding::{
    base16_decode, base16_encode, base64_decode, base64_encode, nix32_decode, nix32_encode,
};
use crate::Error;

/// SHA-256 of a NAR serialisation (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NarHash(pub [u8; 32]);

impl NarHash {
    /// Parses every encoding Nix accepts for a SHA-256 NAR hash: `sha256:<base16|nix32|base64>`,
    /// SRI `sha256-<base64>`, or a bare base16 (64 chars), nix32 (52) or base64 (44/43) digest.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |reason: &'static str| Error::InvalidHash {
            input: text.to_owned(),
            reason,
        };
        let (digest, sri) = if let Some(rest) = text.strip_prefix("sha256:") {
            (rest, false)
        } else if let Some(rest) = text.strip_prefix("sha256-") {
            (rest, true)
        } else if let Some((algo, _)) = text.split_once([':', '-']) {
            if ["md5", "sha1", "sha512"].contains(&algo) {
                return Err(bad("only sha256 NAR hashes are supported"));
            }
            (text, false)
        } else {
            (text, false)
        };
        let bytes = match digest.len() {
            _ if sri => {
                base64_decode(digest, 32).ok_or_else(|| bad("invalid SRI base64 digest"))?
            }
            64 => base16_decode(digest, 32).ok_or_else(|| bad("invalid base16 digest"))?,
            52 => nix32_decode(digest, 32).ok_or_else(|| bad("invalid nix-base32 digest"))?,
            43 | 44 => base64_decode(digest, 32).ok_or_else(|| bad("invalid base64 digest"))?,
            _ => {
                return Err(bad(
                    "a sha256 digest has 64 (base16), 52 (nix32) or 44 (base64) chars",
                ))
            }
        };
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        Ok(Self(out))
    }

    /// Lower-case hex, no prefix (what `nix-store --dump-db` prints).
    pub fn to_base16(&self) -> String {
        base16_encode(&self.0)
    }

    /// nix-base32, no prefix (what `nix-hash --type sha256 --base32` prints).
    pub fn to_nix32(&self) -> String {
        nix32_encode(&self.0)
    }

    /// SRI form `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", base64_encode(&self.0))
    }

    /// `sha256:<base16>`, the form stored in the `ValidPaths.hash` column.
    pub fn to_db_string(&self) -> String {
        format!("sha256:{}", self.to_base16())
    }
}

/// Displays as `sha256:<base16>`.
impl fmt::Display for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_base16())
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NarHash(sha256:{})", self.to_base16())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn parses_every_encoding_of_the_same_digest() {
        let digest: [u8; 32] = Sha256::digest(b"imgbuild").into();
        let h = NarHash(digest);
        let forms = [
            h.to_base16(),
            h.to_base16().to_uppercase(),
            format!("sha256:{}", h.to_base16()),
            h.to_nix32(),
            format!("sha256:{}", h.to_nix32()),
            h.to_sri(),
            format!("sha256:{}", &h.to_sri()["sha256-".len()..]),
            h.to_sri()["sha256-".len()..]
                .trim_end_matches('=')
                .to_owned(),
            h.to_db_string(),
            h.to_string(),
        ];
        for form in &forms {
            assert_eq!(NarHash::parse(form).unwrap(), h, "form {form}");
        }
        assert_eq!(h.to_sri().len(), "sha256-".len() + 44);
        assert_eq!(h.to_nix32().len(), 52);
    }

    #[test]
    fn rejects_garbage_and_names_it() {
        for bad in [
            "",
            "sha256:",
            "sha256:xyz",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256-notbase64!!",
            &"e".repeat(52), // e is not nix32
            &"g".repeat(64), // g is not hex
        ] {
            let err = NarHash::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }
}
