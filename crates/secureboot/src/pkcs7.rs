//! PKCS#7 SignedData as OpenSSL's `PKCS7_sign` encodes it (version 1, SHA-256 with NULL
//! parameters, `rsaEncryption` with NULL parameters, the signer by issuer and serial number,
//! the certificate included), built with the `cms` types; and the small DER pieces
//! Authenticode adds.

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier,
    SignerInfo, SignerInfos,
};
use der::asn1::{Any, ObjectIdentifier, OctetString, SetOfVec};
use der::Encode;
use spki::AlgorithmIdentifierOwned;

use crate::keys::Cert;

/// `id-signedData`.
pub const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// `id-data`.
pub const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// `id-sha256`.
pub const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// `rsaEncryption`.
pub const ID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `sha256WithRSAEncryption` (accepted when reading).
pub const ID_SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
/// PKCS#9 `contentType`.
pub const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// PKCS#9 `messageDigest`.
pub const ID_MESSAGE_DIGEST: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// PKCS#9 `signingTime`.
pub const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");

/// An algorithm identifier with NULL parameters, as OpenSSL writes SHA-256 and RSA.
pub fn alg(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: Some(Any::null()),
    }
}

/// One DER TLV with a one-byte tag.
pub fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len.to_be_bytes()[std::mem::size_of::<usize>() - 1]);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let n = bytes.len() - skip;
        out.push(0x80 | n.to_be_bytes()[std::mem::size_of::<usize>() - 1]);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(body);
    out
}

/// What a SignedData is made of besides the certificate.
pub struct Parts {
    /// The encapsulated content's type.
    pub content_type: ObjectIdentifier,
    /// The encapsulated content, or none for a detached signature.
    pub content: Option<Any>,
    /// The signed attributes (none: the signature covers the content itself).
    pub signed_attrs: Option<SignedAttributes>,
    /// The signature value.
    pub signature: Vec<u8>,
}

/// The SignedData of one signer holding `cert`.
pub fn signed_data(cert: &Cert, parts: Parts) -> Result<SignedData, der::Error> {
    let c = cert.certificate();
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: c.tbs_certificate.issuer.clone(),
        serial_number: c.tbs_certificate.serial_number.clone(),
    });
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid,
        digest_alg: alg(ID_SHA256),
        signed_attrs: parts.signed_attrs,
        signature_algorithm: alg(ID_RSA),
        signature: OctetString::new(parts.signature)?,
        unsigned_attrs: None,
    };
    let certs: SetOfVec<cms::cert::CertificateChoices> =
        SetOfVec::try_from(vec![cms::cert::CertificateChoices::Certificate(c.clone())])?;
    Ok(SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![alg(ID_SHA256)])?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: parts.content_type,
            econtent: parts.content,
        },
        certificates: Some(CertificateSet(certs)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer])?),
    })
}

/// `sd` in a ContentInfo, DER-encoded (what a PE's `WIN_CERTIFICATE` holds).
pub fn content_info(sd: &SignedData) -> Result<Vec<u8>, der::Error> {
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(sd)?,
    }
    .to_der()
}
