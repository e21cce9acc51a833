//! Certificates and RSA keys from PEM (or DER) text, checked before use.

use der::{Decode, Encode};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{SignatureEncoding, Signer as _, Verifier as _};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;

/// The largest key or certificate file read, in bytes (a 16384-bit key's PEM is below 13 KiB).
pub const MAX_PEM: usize = 1 << 20;

/// Why a key or certificate cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// More than [`MAX_PEM`] bytes.
    #[error("a {what} of {len} bytes is longer than the {MAX_PEM} bytes read")]
    TooBig {
        /// `certificate` or `private key`.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// Not a PEM `CERTIFICATE` nor a DER X.509 certificate.
    #[error("not an X.509 certificate (PEM CERTIFICATE or DER)")]
    Certificate(#[source] der::Error),
    /// Not an unencrypted PKCS#8 `PRIVATE KEY` nor a PKCS#1 `RSA PRIVATE KEY`.
    #[error(
        "not an unencrypted RSA private key (PEM PRIVATE KEY or RSA PRIVATE KEY; an encrypted \
         key must be decrypted first, e.g. `openssl pkey -in KEY -out PLAIN`)"
    )]
    PrivateKey(#[source] pkcs8::Error),
    /// A PEM `RSA PRIVATE KEY` (PKCS#1) that does not parse.
    #[error("not a valid PKCS#1 RSA PRIVATE KEY")]
    Pkcs1Key(#[source] pkcs1::Error),
    /// The certificate's public key is not RSA.
    #[error("the certificate's public key is not an RSA key")]
    NotRsa(#[source] spki::Error),
    /// The key is not the certificate's.
    #[error("the private key does not belong to the certificate (their public keys differ)")]
    Mismatch,
    /// A signature that the certificate's key did not make.
    #[error("the signature does not verify with the certificate's public key")]
    BadSignature(#[source] rsa::signature::Error),
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .is_some_and(|i| bytes[i..].starts_with(b"-----BEGIN"))
}

/// An X.509 certificate, its DER bytes and RSA public key.
#[derive(Clone, Debug)]
pub struct Cert {
    cert: Certificate,
    der: Vec<u8>,
    public: RsaPublicKey,
}

impl Cert {
    /// Reads a certificate: PEM (`-----BEGIN CERTIFICATE-----`) or DER.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Cert, KeyError> {
        if bytes.len() > MAX_PEM {
            return Err(KeyError::TooBig {
                what: "certificate",
                len: bytes.len(),
            });
        }
        let cert = if is_pem(bytes) {
            use der::DecodePem;
            Certificate::from_pem(bytes)
        } else {
            Certificate::from_der(bytes)
        }
        .map_err(KeyError::Certificate)?;
        Cert::new(cert)
    }

    /// The certificate `cert`, with its RSA key.
    pub fn new(cert: Certificate) -> Result<Cert, KeyError> {
        let der = cert.to_der().map_err(KeyError::Certificate)?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(KeyError::Certificate)?;
        let public = {
            use rsa::pkcs8::DecodePublicKey;
            RsaPublicKey::from_public_key_der(&spki).map_err(KeyError::NotRsa)?
        };
        Ok(Cert { cert, der, public })
    }

    /// The parsed certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// Its DER encoding (what an EFI signature list and a PKCS#7 carry).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 of its DER encoding (`openssl x509 -fingerprint -sha256`).
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }

    /// Checks that `signature` is its key's RSASSA-PKCS1-v1_5 SHA-256 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let sig = Signature::try_from(signature).map_err(KeyError::BadSignature)?;
        VerifyingKey::<Sha256>::new(self.public.clone())
            .verify(message, &sig)
            .map_err(KeyError::BadSignature)
    }
}

/// A certificate and its RSA private key: what signs. PKCS#1 v1.5 signatures are
/// deterministic, so the same inputs give the same bytes.
pub struct Signer {
    cert: Cert,
    key: SigningKey<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Signer").field("cert", &self.cert).finish()
    }
}

impl Signer {
    /// Reads the private key (PEM PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`, or DER
    /// PKCS#8) and checks it belongs to `cert`.
    pub fn new(key: &[u8], cert: Cert) -> Result<Signer, KeyError> {
        if key.len() > MAX_PEM {
            return Err(KeyError::TooBig {
                what: "private key",
                len: key.len(),
            });
        }
        let key = read_key(key)?;
        if key.to_public_key() != cert.public {
            return Err(KeyError::Mismatch);
        }
        Ok(Signer {
            cert,
            key: SigningKey::<Sha256>::new(key),
        })
    }

    /// The certificate.
    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// The RSASSA-PKCS1-v1_5 SHA-256 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_vec()
    }
}

fn read_key(bytes: &[u8]) -> Result<RsaPrivateKey, KeyError> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    if !is_pem(bytes) {
        return RsaPrivateKey::from_pkcs8_der(bytes).map_err(KeyError::PrivateKey);
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| KeyError::PrivateKey(pkcs8::Error::KeyMalformed))?;
    if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        return RsaPrivateKey::from_pkcs1_pem(text).map_err(KeyError::Pkcs1Key);
    }
    RsaPrivateKey::from_pkcs8_pem(text).map_err(KeyError::PrivateKey)
}
