//! UEFI Secure Boot at image time, as bytes: Authenticode signatures of PE images and the EFI
//! authenticated variables that enrol a key.
//!
//! * [`pe`]: the PE/COFF facts Authenticode needs, read from untrusted bytes with every
//!   offset checked ([`pe::Layout`]); the SHA-256 image hash ([`pe::image_hash`]: the
//!   headers without the CheckSum and the Certificate Table entry, the sections in file
//!   order, the rest of the file, an unsigned file zero-padded to 8 bytes as `sbsign` and
//!   `osslsigncode` pad it); a signature embedded as the one `WIN_CERTIFICATE` (revision
//!   2.0, `WIN_CERT_TYPE_PKCS_SIGNED_DATA`, 8-byte aligned) with the Certificate Table entry
//!   and the CheckSum updated ([`pe::embed`]).
//! * [`authenticode`]: the PKCS#7 SignedData of an `SpcIndirectDataContent` /
//!   `SpcPeImageData` as `sbsign` and `osslsigncode` make it, RSA PKCS#1 v1.5 with SHA-256
//!   (deterministic: no signing time unless the caller gives one); one step
//!   ([`authenticode::sign`]) or two ([`authenticode::Prepared`]: the DER to be signed, or
//!   its digest, goes out; a detached signature comes back), or a detached PKCS#7 made
//!   elsewhere (`sbsign --detached`, [`authenticode::embed_detached`]);
//!   [`authenticode::verify`] checks an embedded one.
//! * [`efivar`]: `EFI_SIGNATURE_LIST`s and `PK.auth` / `KEK.auth` / `db.auth` as efitools'
//!   `cert-to-efi-sig-list` and `sign-efi-sig-list` write them.
//! * [`keys`]: certificates and RSA keys from PEM or DER.
//!
//! Nothing here reads a clock, the environment or randomness: times, owner GUIDs and keys
//! come from the caller. It knows nothing of Nix, partitions or file systems.

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
// Casts that may truncate, lose a sign or wrap are spelled out (`try_from` with a reason);
// tests may cast freely.
#![cfg_attr(
    not(test),
    warn(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )
)]

pub mod authenticode;
pub mod efivar;
pub mod keys;
pub mod pe;
mod pkcs7;

pub use authenticode::{sign, verify, Prepared, SignError, Verified};
pub use efivar::{key_files, EfiTime, KeyVar, VarError};
pub use keys::{Cert, KeyError, Signer};
pub use pe::PeError;

#[cfg(test)]
mod tests;
