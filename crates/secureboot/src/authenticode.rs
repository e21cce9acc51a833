//! Authenticode signatures of PE images: the `SpcIndirectDataContent` (an `SpcPeImageData`
//! with the obsolete file link and the SHA-256 image hash) in a PKCS#7 SignedData, as
//! `sbsign` and `osslsigncode` make it, embedded in the image; signed in one step
//! ([`sign`]) or in two ([`Prepared`]: the attributes to be signed out, a detached RSA
//! signature in), or with a detached PKCS#7 made elsewhere ([`embed_detached`], e.g.
//! `sbsign --detached`). [`verify`] checks an embedded signature.

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedAttributes, SignedData, SignerIdentifier};
use der::asn1::{Any, ObjectIdentifier, OctetString, SetOfVec, UtcTime};
use der::{Decode, Encode, Reader, SliceReader};
use sha2::{Digest, Sha256};
use x509_cert::attr::Attribute;

use crate::keys::{Cert, KeyError, Signer};
use crate::pe::{self, PeError};
use crate::pkcs7::{self, tlv, Parts};

/// `SPC_INDIRECT_DATA_OBJID`.
pub const SPC_INDIRECT_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
/// `SPC_PE_IMAGE_DATAOBJ`.
pub const SPC_PE_IMAGE_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");
/// `SPC_SP_OPUS_INFO_OBJID` (an empty one, as signtool and osslsigncode add).
pub const SPC_SP_OPUS_INFO: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.12");

/// The largest PKCS#7 read from a file or an image, in bytes.
pub const MAX_PKCS7: usize = 1 << 20;

/// Why an image cannot be signed, or a signature not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// Not a PE image this crate can sign.
    #[error("reading the PE image")]
    Pe(#[from] PeError),
    /// A key, certificate or signature that does not fit.
    #[error("checking the signature")]
    Key(#[from] KeyError),
    /// DER that cannot be encoded or decoded.
    #[error("encoding or decoding the PKCS#7 signature")]
    Der(#[from] der::Error),
    /// A PKCS#7 larger than [`MAX_PKCS7`].
    #[error("a PKCS#7 signature of {len} bytes is longer than the {MAX_PKCS7} bytes read")]
    TooBig {
        /// Its length.
        len: usize,
    },
    /// A PKCS#7 that is not an Authenticode signature of one signer.
    #[error("not an Authenticode signature: {what}")]
    NotAuthenticode {
        /// What is missing or unexpected.
        what: &'static str,
    },
    /// A signature of another image (or another version of it).
    #[error("the signature is of image hash {signed}, the image's is {image}")]
    OtherImage {
        /// The hash the signature covers, hex.
        signed: String,
        /// The image's hash, hex.
        image: String,
    },
    /// An image without a signature.
    #[error("the image is not signed")]
    Unsigned,
    /// The signer's certificate is not the expected one.
    #[error("the signature was made with another certificate")]
    OtherSigner,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The DER `SpcIndirectDataContent` of an image hash.
pub fn indirect_data(hash: &[u8; 32]) -> Vec<u8> {
    let obsolete: Vec<u8> = "<<<Obsolete>>>"
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    // SpcPeImageData: flags (an empty BIT STRING), file [0] SpcLink: file [2] SpcString:
    // unicode [0] IMPLICIT BMPString.
    let link = tlv(0xa0, &tlv(0xa2, &tlv(0x80, &obsolete)));
    let pe_data = tlv(0x30, &[&[0x03, 0x01, 0x00][..], &link].concat());
    let oid = SPC_PE_IMAGE_DATA.to_der().expect("a constant OID encodes");
    let attr = tlv(0x30, &[oid, pe_data].concat());
    let sha = pkcs7::alg(pkcs7::ID_SHA256)
        .to_der()
        .expect("a constant algorithm encodes");
    let digest = tlv(0x30, &[sha, tlv(0x04, hash)].concat());
    tlv(0x30, &[attr, digest].concat())
}

/// The value bytes of a DER TLV (Authenticode's messageDigest covers the indirect data's
/// value, not its tag and length).
fn value_of(der: &[u8]) -> Result<&[u8], der::Error> {
    let mut r = SliceReader::new(der)?;
    let header = der::Header::decode(&mut r)?;
    // The value: the bytes after the header, checked to be all there (whatever follows).
    r.read_slice(header.length)
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, der::Error> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value])?,
    })
}

/// An image ready to be signed: its Authenticode hash and the signed attributes whose DER
/// the signer signs. The two-step mode: [`Prepared::to_be_signed`] out (or its
/// [`Prepared::digest`] for a signer that takes digests), the RSA signature into
/// [`Prepared::finish`].
#[derive(Clone, Debug)]
pub struct Prepared {
    image: Vec<u8>,
    hash: [u8; 32],
    indirect: Vec<u8>,
    attrs: SignedAttributes,
}

impl Prepared {
    /// Prepares `image` (any existing signature is replaced). `signing_time`, Unix seconds,
    /// adds a signingTime attribute (none by default: the same image, the same bytes).
    pub fn new(image: &[u8], signing_time: Option<u64>) -> Result<Prepared, SignError> {
        let (image, _) = pe::unsigned(image)?;
        let hash = pe::image_hash(&image)?;
        let indirect = indirect_data(&hash);
        let digest: [u8; 32] = Sha256::digest(value_of(&indirect)?).into();
        let mut attrs = vec![
            attribute(
                pkcs7::ID_CONTENT_TYPE,
                Any::encode_from(&SPC_INDIRECT_DATA)?,
            )?,
            attribute(
                pkcs7::ID_MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(digest.to_vec())?)?,
            )?,
            attribute(SPC_SP_OPUS_INFO, Any::from_der(&[0x30, 0x00])?)?,
        ];
        if let Some(t) = signing_time {
            let t = UtcTime::from_unix_duration(std::time::Duration::from_secs(t))?;
            attrs.push(attribute(pkcs7::ID_SIGNING_TIME, Any::encode_from(&t)?)?);
        }
        Ok(Prepared {
            image,
            hash,
            indirect,
            attrs: SetOfVec::try_from(attrs)?,
        })
    }

    /// The Authenticode SHA-256 image hash.
    pub fn image_hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The DER the signature covers: the signed attributes as a SET.
    pub fn to_be_signed(&self) -> Result<Vec<u8>, SignError> {
        Ok(self.attrs.to_der()?)
    }

    /// SHA-256 of [`Prepared::to_be_signed`].
    pub fn digest(&self) -> Result<[u8; 32], SignError> {
        Ok(Sha256::digest(self.to_be_signed()?).into())
    }

    /// The signed image: `signature` (RSASSA-PKCS1-v1_5 SHA-256 of
    /// [`Prepared::to_be_signed`], checked against `cert`) in a SignedData holding `cert`,
    /// embedded.
    pub fn finish(self, cert: &Cert, signature: &[u8]) -> Result<Vec<u8>, SignError> {
        cert.verify(&self.to_be_signed()?, signature)?;
        let sd = pkcs7::signed_data(
            cert,
            Parts {
                content_type: SPC_INDIRECT_DATA,
                content: Some(Any::from_der(&self.indirect)?),
                signed_attrs: Some(self.attrs),
                signature: signature.to_vec(),
            },
        )?;
        Ok(pe::embed(&self.image, &pkcs7::content_info(&sd)?)?)
    }
}

/// `image` signed by `signer` (no signing time: deterministic).
pub fn sign(image: &[u8], signer: &Signer) -> Result<Vec<u8>, SignError> {
    let p = Prepared::new(image, None)?;
    let sig = signer.sign(&p.to_be_signed()?);
    p.finish(signer.cert(), &sig)
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The image hash the signature covers (equal to the image's).
    pub image_hash: [u8; 32],
    /// SHA-256 of the signer's certificate.
    pub signer_fingerprint: [u8; 32],
    /// The signer certificate's subject (RFC 4514, e.g. `CN=Fleet db`).
    pub signer_subject: String,
}

/// Reads one DER ContentInfo from `bytes`, ignoring what follows it (a `WIN_CERTIFICATE`'s
/// padding).
fn read_content_info(bytes: &[u8]) -> Result<SignedData, SignError> {
    if bytes.len() > MAX_PKCS7 {
        return Err(SignError::TooBig { len: bytes.len() });
    }
    let mut r = SliceReader::new(bytes)?;
    let ci = ContentInfo::decode(&mut r)?;
    if ci.content_type != pkcs7::ID_SIGNED_DATA {
        return Err(SignError::NotAuthenticode {
            what: "content type is not signedData",
        });
    }
    Ok(ci.content.decode_as::<SignedData>()?)
}

fn not(what: &'static str) -> SignError {
    SignError::NotAuthenticode { what }
}

/// Checks a PKCS#7 Authenticode signature against an image hash: the indirect data's hash,
/// the messageDigest attribute, and the signer's RSA signature, made by the certificate of
/// the SignedData that the signer names (which must be `expect`, when given).
fn check(sd: &SignedData, hash: &[u8; 32], expect: Option<&Cert>) -> Result<Verified, SignError> {
    if sd.encap_content_info.econtent_type != SPC_INDIRECT_DATA {
        return Err(not("content is not SpcIndirectDataContent"));
    }
    let content = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or(not("no content"))?
        .to_der()?;
    let signed_hash = indirect_hash(&content)?;
    if signed_hash != *hash {
        return Err(SignError::OtherImage {
            signed: hex(&signed_hash),
            image: hex(hash),
        });
    }
    let [signer] = sd.signer_infos.0.as_slice() else {
        return Err(not("not exactly one signer"));
    };
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or(not("no signed attributes"))?;
    let digest = attrs
        .iter()
        .find(|a| a.oid == pkcs7::ID_MESSAGE_DIGEST)
        .and_then(|a| a.values.iter().next())
        .ok_or(not("no messageDigest"))?
        .decode_as::<OctetString>()?;
    if digest.as_bytes() != Sha256::digest(value_of(&content)?).as_slice() {
        return Err(not("messageDigest is not the content's"));
    }
    let SignerIdentifier::IssuerAndSerialNumber(id) = &signer.sid else {
        return Err(not("signer not named by issuer and serial number"));
    };
    let cert = sd
        .certificates
        .iter()
        .flat_map(|s| s.0.iter())
        .find_map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c)
                if c.tbs_certificate.issuer == id.issuer
                    && c.tbs_certificate.serial_number == id.serial_number =>
            {
                Some(c)
            }
            _ => None,
        })
        .ok_or(not("the signer's certificate is not included"))?;
    let cert = Cert::new(cert.clone())?;
    if expect.is_some_and(|e| e.der() != cert.der()) {
        return Err(SignError::OtherSigner);
    }
    if ![pkcs7::ID_RSA, pkcs7::ID_SHA256_RSA].contains(&signer.signature_algorithm.oid)
        || signer.digest_alg.oid != pkcs7::ID_SHA256
    {
        return Err(not("not an RSA SHA-256 signature"));
    }
    cert.verify(&attrs.to_der()?, signer.signature.as_bytes())?;
    Ok(Verified {
        image_hash: signed_hash,
        signer_fingerprint: cert.fingerprint(),
        signer_subject: cert.certificate().tbs_certificate.subject.to_string(),
    })
}

/// The image hash inside a DER SpcIndirectDataContent.
fn indirect_hash(content: &[u8]) -> Result<[u8; 32], SignError> {
    let mut r = SliceReader::new(value_of(content)?)?;
    let data = Any::decode(&mut r)?;
    let mut d = SliceReader::new(data.value())?;
    let oid = ObjectIdentifier::decode(&mut d)?;
    if oid != SPC_PE_IMAGE_DATA {
        return Err(not("indirect data is not SpcPeImageData"));
    }
    let info = Any::decode(&mut r)?;
    let mut i = SliceReader::new(info.value())?;
    let alg = spki::AlgorithmIdentifierOwned::decode(&mut i)?;
    if alg.oid != pkcs7::ID_SHA256 {
        return Err(not("image hash is not SHA-256"));
    }
    let digest = OctetString::decode(&mut i)?;
    <[u8; 32]>::try_from(digest.as_bytes()).map_err(|_| not("image hash is not 32 bytes"))
}

/// Checks the first signature embedded in `image` against the image (and, when `expect` is
/// given, that `expect` made it).
pub fn verify(image: &[u8], expect: Option<&Cert>) -> Result<Verified, SignError> {
    let sigs = pe::signatures(image)?;
    let first = sigs.first().ok_or(SignError::Unsigned)?;
    let sd = read_content_info(first)?;
    check(&sd, &pe::image_hash(image)?, expect)
}

/// `image` with `pkcs7` (a detached DER PKCS#7 Authenticode signature of it, as
/// `sbsign --detached` writes) embedded, after checking that it signs this image (and was
/// made by `expect`, when given).
pub fn embed_detached(
    image: &[u8],
    pkcs7: &[u8],
    expect: Option<&Cert>,
) -> Result<Vec<u8>, SignError> {
    let (unsigned, _) = pe::unsigned(image)?;
    let sd = read_content_info(pkcs7)?;
    check(&sd, &pe::image_hash(&unsigned)?, expect)?;
    let der = pkcs7::content_info(&sd)?;
    Ok(pe::embed(&unsigned, &der)?)
}
