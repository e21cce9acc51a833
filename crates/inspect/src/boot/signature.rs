//! Secure Boot signatures of the EFI binaries `inspect` lists (systemd-boot, the fallback
//! loader, unified kernel images): the first Authenticode signature of each, checked by
//! `imgbuild-secureboot` against the binary's Authenticode hash and the signer's RSA key. No
//! trust decision is made here: the signer is named, and the firmware's `db` decides.

use serde::Serialize;

use imgbuild_secureboot::authenticode::hex;
use imgbuild_secureboot::{verify, SignError};

/// The Authenticode signature of an EFI binary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Signature {
    /// Whether it signs this binary and the signer's key verifies it.
    pub valid: bool,
    /// The signer certificate's subject (RFC 4514), for a valid signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// SHA-256 of the signer's certificate in hex (`openssl x509 -fingerprint -sha256`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
    /// Why it is not valid, or why it was not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Signature {
    /// A signature that could not be checked, and why.
    pub(crate) fn unchecked(why: String) -> Self {
        Self {
            error: Some(why),
            ..Self::default()
        }
    }
}

/// Whether the PE headers at the start of `prefix` declare a certificate table (a signed
/// image's do); not for what does not parse as PE.
pub(crate) fn declared(prefix: &[u8]) -> bool {
    imgbuild_secureboot::pe::declares_certificates(prefix).unwrap_or(false)
}

/// The signature of the PE image `bytes`; `None` when its headers declare none (or it is no
/// PE image: the firmware would not start it either).
pub(crate) fn signature(bytes: &[u8]) -> Option<Signature> {
    if !declared(bytes) {
        return None;
    }
    match verify(bytes, None) {
        Ok(v) => Some(Signature {
            valid: true,
            signer: Some(v.signer_subject),
            certificate_sha256: Some(hex(&v.signer_fingerprint)),
            error: None,
        }),
        Err(SignError::Unsigned) => None,
        Err(e) => Some(Signature::unchecked(imgbuild_units::error_chain(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pe_or_no_certificate_table_is_unsigned() {
        assert_eq!(signature(b"not a PE image"), None);
        assert_eq!(signature(&imgbuild_testutil::tiny_pe(0)), None);
    }

    #[test]
    fn a_declared_table_that_holds_no_signature_is_reported() {
        // the Certificate Table entry of a PE32+ pointing past the end of the image
        let mut pe = imgbuild_testutil::tiny_pe(0);
        let at = cert_entry(&pe);
        let end = u32::try_from(pe.len()).unwrap().to_le_bytes();
        pe[at..at + 4].copy_from_slice(&end);
        pe[at + 4..at + 8].copy_from_slice(&64u32.to_le_bytes());
        let s = signature(&pe).expect("a signature to report");
        assert!(!s.valid && s.error.is_some(), "{s:?}");
    }

    /// Where a PE32+'s Certificate Table entry is.
    fn cert_entry(pe: &[u8]) -> usize {
        let lfanew = u32::from_le_bytes(pe[0x3c..0x40].try_into().unwrap()) as usize;
        lfanew + 4 + 20 + 112 + 4 * 8
    }
}
