//! EFI authenticated variables: an `EFI_SIGNATURE_LIST` of one X.509 certificate (as
//! efitools' `cert-to-efi-sig-list` writes it) and the time-based authenticated write of it
//! (`EFI_VARIABLE_AUTHENTICATION_2` + the list, as `sign-efi-sig-list` writes `PK.auth`,
//! `KEK.auth`, `db.auth`): what systemd-boot enrols from `loader/keys/<name>/`.
//!
//! The authentication is a PKCS#7 SignedData without signed attributes (OpenSSL's
//! `PKCS7_NOATTR`), detached (content type `data`, no content), encoded without the
//! ContentInfo around it, over `VariableName (UTF-16LE, no NUL) || VendorGuid ||
//! Attributes || TimeStamp || Data` (UEFI 2.x, 8.2.2).

use uuid::Uuid;

use crate::keys::{Cert, Signer};
use crate::pkcs7::{self, Parts};

/// `EFI_CERT_X509_GUID`.
pub const EFI_CERT_X509: Uuid = uuid::uuid!("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
/// `EFI_CERT_TYPE_PKCS7_GUID`.
pub const EFI_CERT_TYPE_PKCS7: Uuid = uuid::uuid!("4aafd29d-68df-49ee-8aa9-347d375665a7");
/// `EFI_GLOBAL_VARIABLE`: the vendor of `PK` and `KEK`.
pub const EFI_GLOBAL_VARIABLE: Uuid = uuid::uuid!("8be4df61-93ca-11d2-aa0d-00e098032b8c");
/// `EFI_IMAGE_SECURITY_DATABASE_GUID`: the vendor of `db` and `dbx`.
pub const EFI_IMAGE_SECURITY_DATABASE: Uuid = uuid::uuid!("d719b2cb-3d3a-4596-a3bc-dad00e67656f");
/// `WIN_CERT_TYPE_EFI_GUID`.
pub const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0ef1;

/// `NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS`,
/// `sign-efi-sig-list`'s attributes.
pub const AUTH_ATTRIBUTES: u32 = 0x01 | 0x02 | 0x04 | 0x20;

/// One of the Secure Boot key variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyVar {
    /// The platform key.
    Pk,
    /// The key exchange keys.
    Kek,
    /// The signature database (allowed signers and hashes).
    Db,
}

impl KeyVar {
    /// Every one, in the order their files are named: `PK`, `KEK`, `db`.
    pub const ALL: [KeyVar; 3] = [KeyVar::Pk, KeyVar::Kek, KeyVar::Db];

    /// The variable's name (and its `.auth` file's stem).
    pub fn name(self) -> &'static str {
        match self {
            KeyVar::Pk => "PK",
            KeyVar::Kek => "KEK",
            KeyVar::Db => "db",
        }
    }

    /// The variable's vendor GUID.
    pub fn vendor(self) -> Uuid {
        match self {
            KeyVar::Pk | KeyVar::Kek => EFI_GLOBAL_VARIABLE,
            KeyVar::Db => EFI_IMAGE_SECURITY_DATABASE,
        }
    }
}

/// `EFI_TIME`, with the fields `sign-efi-sig-list` leaves zero (nanoseconds, time zone,
/// daylight, padding) zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EfiTime {
    /// Year (1900..=9999).
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day, 1..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
}

impl EfiTime {
    /// The UTC time of `secs` Unix seconds (negative: before 1970), proleptic Gregorian.
    pub fn from_unix(secs: i64) -> EfiTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Howard Hinnant's days-to-civil.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let small = |v: i64| u8::try_from(v).expect("a day, month, hour, minute or second");
        EfiTime {
            year: u16::try_from(year.clamp(1900, 9999)).expect("clamped to 1900..=9999"),
            month: small(month),
            day: small(day),
            hour: small(rem / 3600),
            minute: small(rem / 60 % 60),
            second: small(rem % 60),
        }
    }

    /// The 16 bytes of `EFI_TIME`.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&self.year.to_le_bytes());
        b[2] = self.month;
        b[3] = self.day;
        b[4] = self.hour;
        b[5] = self.minute;
        b[6] = self.second;
        b
    }
}

/// Why a variable cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VarError {
    /// The certificate does not fit the list's 32-bit sizes.
    #[error("a certificate of {len} bytes does not fit an EFI signature list")]
    TooBig {
        /// Its DER length.
        len: usize,
    },
    /// DER that cannot be encoded.
    #[error("encoding the PKCS#7 signature")]
    Der(#[from] der::Error),
    /// A detached signature the certificate's key did not make.
    #[error("checking the detached signature")]
    Key(#[from] crate::keys::KeyError),
}

fn le32(v: usize) -> Result<[u8; 4], VarError> {
    u32::try_from(v)
        .map(u32::to_le_bytes)
        .map_err(|_| VarError::TooBig { len: v })
}

/// The `EFI_SIGNATURE_LIST` holding `cert` owned by `owner` (`cert-to-efi-sig-list -g
/// OWNER`): type `EFI_CERT_X509_GUID`, no header, one `EFI_SIGNATURE_DATA` (owner + DER).
pub fn signature_list(cert: &Cert, owner: Uuid) -> Result<Vec<u8>, VarError> {
    let der = cert.der();
    let sig_size = 16 + der.len();
    let list_size = 28 + sig_size;
    let mut out = Vec::with_capacity(list_size);
    out.extend_from_slice(&EFI_CERT_X509.to_bytes_le());
    out.extend_from_slice(&le32(list_size)?);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&le32(sig_size)?);
    out.extend_from_slice(&owner.to_bytes_le());
    out.extend_from_slice(der);
    Ok(out)
}

/// What one authenticated write of a key variable needs.
pub struct AuthVar<'a> {
    /// Which variable.
    pub var: KeyVar,
    /// Its new content (an `EFI_SIGNATURE_LIST`, see [`signature_list`]).
    pub data: &'a [u8],
    /// The write's timestamp (from the caller: `SOURCE_DATE_EPOCH`).
    pub time: EfiTime,
}

impl AuthVar<'_> {
    /// The bytes the signature covers.
    pub fn to_be_signed(&self) -> Vec<u8> {
        let mut m: Vec<u8> = self
            .var
            .name()
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        m.extend_from_slice(&self.var.vendor().to_bytes_le());
        m.extend_from_slice(&AUTH_ATTRIBUTES.to_le_bytes());
        m.extend_from_slice(&self.time.to_bytes());
        m.extend_from_slice(self.data);
        m
    }

    /// The `.auth` file signed by `signer`: `EFI_VARIABLE_AUTHENTICATION_2` (the time, a
    /// `WIN_CERTIFICATE_UEFI_GUID` of type PKCS#7 holding the SignedData) then the data.
    pub fn auth_file(&self, signer: &Signer) -> Result<Vec<u8>, VarError> {
        self.auth_file_signed(signer.cert(), &signer.sign(&self.to_be_signed()))
    }

    /// The `.auth` file with a detached `signature` (RSASSA-PKCS1-v1_5 SHA-256 of
    /// [`AuthVar::to_be_signed`], e.g. `openssl dgst -sha256 -sign KEY`), checked against
    /// `cert`: the offline two-step mode.
    pub fn auth_file_signed(&self, cert: &Cert, signature: &[u8]) -> Result<Vec<u8>, VarError> {
        cert.verify(&self.to_be_signed(), signature)?;
        let signature = signature.to_vec();
        let sd = pkcs7::signed_data(
            cert,
            Parts {
                content_type: pkcs7::ID_DATA,
                content: None,
                signed_attrs: None,
                signature,
            },
        )?;
        let sd = der::Encode::to_der(&sd)?;
        let mut out = Vec::with_capacity(40 + sd.len() + self.data.len());
        out.extend_from_slice(&self.time.to_bytes());
        out.extend_from_slice(&le32(24 + sd.len())?);
        out.extend_from_slice(&crate::pe::WIN_CERT_REVISION_2_0.to_le_bytes());
        out.extend_from_slice(&WIN_CERT_TYPE_EFI_GUID.to_le_bytes());
        out.extend_from_slice(&EFI_CERT_TYPE_PKCS7.to_bytes_le());
        out.extend_from_slice(&sd);
        out.extend_from_slice(self.data);
        Ok(out)
    }
}

/// `PK.auth`, `KEK.auth` and `db.auth` enrolling `signer`'s certificate (owner `owner`) as
/// the platform key, the key exchange key and the one allowed signer, each signed by that
/// same key (one key pair: it is the PK that signs KEK and the KEK that signs db), with
/// timestamp `time`. In file-name order: PK, KEK, db.
pub fn key_files(
    signer: &Signer,
    owner: Uuid,
    time: EfiTime,
) -> Result<Vec<(KeyVar, Vec<u8>)>, VarError> {
    let esl = signature_list(signer.cert(), owner)?;
    KeyVar::ALL
        .into_iter()
        .map(|var| {
            let v = AuthVar {
                var,
                data: &esl,
                time,
            };
            Ok((var, v.auth_file(signer)?))
        })
        .collect()
}
