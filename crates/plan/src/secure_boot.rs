//! Secure Boot at image time (`--secure-boot-key` or the two-step `--secure-boot-signatures`,
//! `--secure-boot-cert`): every PE file the
//! systemd-boot ESP holds is signed in memory (Authenticode, `imgbuild-secureboot`), and
//! `loader/keys/auto/{PK,KEK,db}.auth` enrol the certificate with systemd-boot's
//! `secure-boot-enroll` (a line added to `loader/loader.conf`).
//!
//! Signed: `EFI/systemd/*.efi`, `EFI/BOOT/*.efi` and `EFI/Linux/*.efi` (names compared
//! case-insensitively, as FAT does; each must be a PE image), and the kernels of
//! `EFI/nixos/` (the `*.efi` there that start with `MZ`; their initrds are not PE files and
//! are not verified by the firmware: only a UKI covers the initrd and command line). One key
//! pair: the certificate is PK, KEK and db at once, and each `.auth` is signed by its key
//! (so the PK signs KEK and the KEK signs db). Their timestamp is `SOURCE_DATE_EPOCH`; the owner GUID of the signature lists derives
//! from the certificate ([`crate::ids::secure_boot_owner`]), so every image signed with one
//! key enrols the same lists. The private key is read, used and dropped: only the
//! certificate enters the image, and the manifest records its SHA-256 and the files signed.
//!
//! systemd-boot's `secure-boot-enroll` (loader.conf(5), `src/boot/efi/boot.c`): systemd 252
//! knows `off`, `manual` and `force`; 253 added `if-safe` (auto-enrol only where it is known
//! to be safe: in a virtual machine). With `if-safe` or `force` the `auto` key directory is
//! enrolled without asking when the firmware is in setup mode. `force` on real hardware can
//! lock out option ROMs signed by Microsoft's keys, which these lists do not hold.

use std::path::PathBuf;

use imgbuild_fstree::{FileData, Kind, Meta, Node, NodeId, Tree};
use imgbuild_secureboot as sb;
use serde::Serialize;

use crate::{Error, Result};

/// How systemd-boot enrols the keys in `loader/keys/auto` (its `secure-boot-enroll`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enroll {
    /// No line: systemd-boot's default (`manual` in 252, `if-safe` from 253 on).
    Default,
    /// `off`: no key entries in the menu.
    Off,
    /// `manual`: a menu entry per key directory, enrolled when chosen.
    Manual,
    /// `if-safe` (systemd 253 and later): enrolled without asking in a virtual machine.
    IfSafe,
    /// `force`: enrolled without asking, after a countdown, on any machine in setup mode.
    Force,
}

impl Enroll {
    /// The loader.conf value, or none for [`Enroll::Default`].
    pub fn value(self) -> Option<&'static str> {
        match self {
            Enroll::Default => None,
            Enroll::Off => Some("off"),
            Enroll::Manual => Some("manual"),
            Enroll::IfSafe => Some("if-safe"),
            Enroll::Force => Some("force"),
        }
    }
}

/// The key and certificate that sign the ESP's PE files, and how the keys are enrolled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecureBootOptions {
    /// What signs: the private key, or signatures made elsewhere.
    pub signing: Signing,
    /// Its X.509 certificate (PEM or DER).
    pub cert: PathBuf,
    /// systemd-boot's `secure-boot-enroll`.
    pub enroll: Enroll,
}

/// Where the signatures come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signing {
    /// The RSA private key (PEM: PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    Key(PathBuf),
    /// The offline two-step mode: a directory where each thing to sign is written as
    /// `NAME.tbs` (the DER to sign: `openssl dgst -sha256 -sign KEY -out NAME.sig NAME.tbs`)
    /// and its detached RSASSA-PKCS1-v1_5 SHA-256 signature is read from `NAME.sig`. A build
    /// missing any signature writes the `.tbs` files and fails, naming them.
    Detached(PathBuf),
}

/// What the manifest says of the signing (never the key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecureBootNote {
    /// SHA-256 of the certificate's DER (`openssl x509 -noout -fingerprint -sha256`).
    pub certificate_sha256: String,
    /// The owner GUID of the enrolled signature lists.
    pub owner: String,
    /// The PE files signed (ESP paths), each with its Authenticode image hash.
    pub signed: Vec<SignedFile>,
    /// The enrolment files written (`loader/keys/auto/PK.auth`, ...).
    pub enrol_files: Vec<String>,
    /// The `secure-boot-enroll` written to loader.conf (absent: systemd-boot's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enroll: Option<&'static str>,
}

/// One signed PE file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignedFile {
    /// Its path on the ESP.
    pub path: String,
    /// Its Authenticode SHA-256 image hash (what `sbverify` and `osslsigncode` check).
    pub image_hash: String,
}

/// A key file or certificate (a few KiB): read whole, so bounded.
const KEY_FILE: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "Secure Boot key or certificate",
    max_bytes: sb::keys::MAX_PEM as u64,
};

/// A PE file signed in memory: systemd-boot is ~100 KiB, a UKI tens of MiB.
const PE_FILE: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "EFI executable",
    max_bytes: sb::pe::MAX_IMAGE as u64,
};

fn sb_err(what: String) -> impl FnOnce(sb::SignError) -> Error {
    move |source| Error::SecureBoot {
        what,
        source: Box::new(source),
    }
}

/// What makes the signatures: the key, or the signatures directory of the two-step mode.
enum Signer {
    Key(Box<sb::Signer>),
    Detached {
        cert: Box<sb::Cert>,
        dir: PathBuf,
        /// The `.tbs` files written for want of their `.sig`.
        missing: Vec<String>,
    },
}

impl Signer {
    /// The signer of `opts`: the certificate read (and checked against the key).
    fn new(opts: &SecureBootOptions) -> Result<Signer> {
        let cert_bytes = imgbuild_blockio::read_input(&opts.cert, KEY_FILE)?;
        let what = || format!("the certificate `{}`", opts.cert.display());
        let cert = sb::Cert::from_pem_or_der(&cert_bytes).map_err(|e| sb_err(what())(e.into()))?;
        Ok(match &opts.signing {
            Signing::Key(path) => {
                let key = imgbuild_blockio::read_input(path, KEY_FILE)?;
                let what = format!("the key `{}` and {}", path.display(), what());
                let signer = sb::Signer::new(&key, cert).map_err(|e| sb_err(what)(e.into()))?;
                Signer::Key(Box::new(signer))
            }
            Signing::Detached(dir) => Signer::Detached {
                cert: Box::new(cert),
                dir: dir.clone(),
                missing: Vec::new(),
            },
        })
    }

    fn cert(&self) -> &sb::Cert {
        match self {
            Signer::Key(s) => s.cert(),
            Signer::Detached { cert, .. } => cert,
        }
    }

    /// The signature of `tbs`, known as `name` in the two-step mode: made with the key, or
    /// read from `NAME.sig`; none when that is missing (then `NAME.tbs` is written).
    fn sign(&mut self, name: &str, tbs: &[u8]) -> Result<Option<Vec<u8>>> {
        let (dir, missing) = match self {
            Signer::Key(s) => return Ok(Some(s.sign(tbs))),
            Signer::Detached { dir, missing, .. } => (dir, missing),
        };
        let sig = dir.join(format!("{name}.sig"));
        if sig.exists() {
            return Ok(Some(imgbuild_blockio::read_input(&sig, KEY_FILE)?));
        }
        let path = dir.join(format!("{name}.tbs"));
        std::fs::write(&path, tbs).map_err(|source| Error::Io {
            op: "writing",
            path: path.clone(),
            source,
        })?;
        missing.push(path.display().to_string());
        Ok(None)
    }
}

/// The name of an ESP file in the two-step mode's directory (`EFI_BOOT_BOOTX64.EFI`).
fn detached_name(path: &str) -> String {
    path.trim_start_matches('/').replace('/', "_")
}

/// The first number of a systemd store path's version (`…-systemd-252.39` -> 252).
fn systemd_major(efi: &str) -> Option<u32> {
    let name = efi.split('/').find(|c| c.contains("-systemd-"))?;
    let ver = name.split_once("-systemd-")?.1;
    let digits: String = ver.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Which of the ESP's files are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sign {
    /// Not a file the firmware or systemd-boot loads as an executable.
    No,
    /// A boot loader or UKI: must be a PE image.
    Always,
    /// `EFI/nixos/*.efi`: the kernels (PE images with the EFI stub) are signed, so that
    /// systemd-boot may start them under Secure Boot; the initrds beside them (same suffix,
    /// not PE) are left as they are.
    IfPe,
}

/// What is signed of a path of the ESP.
fn sign_kind(path: &str) -> Sign {
    let lower = path.to_ascii_lowercase();
    let in_dir = |d: &str| {
        lower
            .strip_prefix(d)
            .is_some_and(|rest| !rest.contains('/'))
    };
    if !lower.ends_with(".efi") {
        Sign::No
    } else if ["/efi/systemd/", "/efi/boot/", "/efi/linux/"]
        .iter()
        .any(|d| in_dir(d))
    {
        Sign::Always
    } else if in_dir("/efi/nixos/") {
        Sign::IfPe
    } else {
        Sign::No
    }
}

/// Any file, opened only to look at its first two bytes.
const SNIFF: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "EFI file",
    max_bytes: u64::MAX,
};

/// The bytes of a file of the ESP to sign, or none when `kind` is [`Sign::IfPe`] and it does
/// not start with `MZ`.
fn pe_bytes(data: &FileData, kind: Sign) -> Result<Option<Vec<u8>>> {
    let host = match data {
        FileData::Bytes(b) if kind == Sign::Always || b.starts_with(b"MZ") => {
            return Ok(Some(b.to_vec()))
        }
        FileData::Bytes(_) => return Ok(None),
        FileData::Host { path, .. } => path,
    };
    if kind == Sign::IfPe {
        use std::os::unix::fs::FileExt;
        let input = imgbuild_blockio::open_input(host, SNIFF)?;
        let mut magic = [0u8; 2];
        let n = input
            .file()
            .read_at(&mut magic, 0)
            .map_err(|source| Error::Io {
                op: "reading",
                path: host.clone(),
                source,
            })?;
        if n < 2 || magic != *b"MZ" {
            return Ok(None);
        }
    }
    Ok(Some(imgbuild_blockio::read_input(host, PE_FILE)?))
}

/// Every file of `tree` with its path, directories first, in tree order.
fn files(tree: &Tree) -> Vec<(String, NodeId)> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), imgbuild_fstree::ROOT)];
    while let Some((dir, id)) = stack.pop() {
        for (name, child) in tree.children(id) {
            let path = format!("{dir}/{}", String::from_utf8_lossy(name));
            match tree.node(child).kind {
                Kind::Dir(_) => stack.push((path, child)),
                Kind::File(_) => out.push((path, child)),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Signs the ESP's PE files, adds the enrolment files and the loader.conf line. `efi` is the
/// logical path of the closure's systemd-boot (its systemd version decides what
/// `secure-boot-enroll` values exist); `time` is `SOURCE_DATE_EPOCH`.
pub(crate) fn apply(
    time: i64,
    opts: &SecureBootOptions,
    tree: &mut Tree,
    efi: &str,
) -> Result<SecureBootNote> {
    let major = systemd_major(efi);
    if opts.enroll == Enroll::IfSafe && major.is_some_and(|m| m < 253) {
        return Err(Error::EnrollNotKnown {
            value: "if-safe",
            systemd: major.unwrap_or(0),
        });
    }
    let mut signer = Signer::new(opts)?;
    let mut signed = Vec::new();
    for (path, id) in files(tree) {
        let kind = sign_kind(&path);
        let Kind::File(data) = &tree.node(id).kind else {
            continue;
        };
        if kind == Sign::No {
            continue;
        }
        let Some(bytes) = pe_bytes(data, kind)? else {
            continue;
        };
        let err = || sb_err(format!("signing `{path}`"));
        let prepared = sb::Prepared::new(&bytes, None).map_err(err())?;
        let tbs = prepared.to_be_signed().map_err(err())?;
        let Some(sig) = signer.sign(&detached_name(&path), &tbs)? else {
            continue;
        };
        let out = prepared.finish(signer.cert(), &sig).map_err(err())?;
        let hash = sb::pe::image_hash(&out).map_err(|e| sb_err(format!("`{path}`"))(e.into()))?;
        tree.node_mut(id).kind = Kind::File(FileData::Bytes(out.into()));
        signed.push(SignedFile {
            path,
            image_hash: sb::authenticode::hex(&hash),
        });
    }
    let fingerprint = signer.cert().fingerprint();
    let owner = crate::ids::secure_boot_owner(&fingerprint);
    let auth = auth_files(&mut signer, owner, time)?;
    if let Signer::Detached { dir, missing, .. } = signer {
        if !missing.is_empty() {
            return Err(Error::SignaturesNeeded { dir, missing });
        }
    }
    let dir = tree
        // As `trees` makes the ESP's directories and files (FAT keeps no modes or owners).
        .mkdir_p(b"/loader/keys/auto", Meta::new(0o755, 0, 0, time))
        .map_err(|source| Error::Tree {
            what: "/loader/keys/auto".into(),
            source,
        })?;
    let mut enrol_files = Vec::new();
    for (var, bytes) in auth {
        let name = format!("{}.auth", var.name());
        let meta = Meta::new(0o644, 0, 0, time);
        tree.insert(dir, name.as_bytes(), Node::bytes(meta, bytes))
            .map_err(|source| Error::Tree {
                what: format!("/loader/keys/auto/{name}"),
                source,
            })?;
        enrol_files.push(format!("/loader/keys/auto/{name}"));
    }
    if let Some(v) = opts.enroll.value() {
        add_loader_line(tree, &format!("secure-boot-enroll {v}\n"))?;
    }
    Ok(SecureBootNote {
        certificate_sha256: sb::authenticode::hex(&fingerprint),
        owner: owner.to_string(),
        signed,
        enrol_files,
        enroll: opts.enroll.value(),
    })
}

/// `PK.auth`, `KEK.auth`, `db.auth` (those whose signature is there, in the two-step mode).
fn auth_files(
    signer: &mut Signer,
    owner: uuid::Uuid,
    time: i64,
) -> Result<Vec<(sb::KeyVar, Vec<u8>)>> {
    let err = |source: sb::VarError| Error::SecureBoot {
        what: "writing the key enrolment files".into(),
        source: Box::new(source),
    };
    let esl = sb::efivar::signature_list(signer.cert(), owner).map_err(err)?;
    let mut out = Vec::new();
    for var in sb::KeyVar::ALL {
        let v = sb::efivar::AuthVar {
            var,
            data: &esl,
            time: sb::EfiTime::from_unix(time),
        };
        let name = format!("{}.auth", var.name());
        if let Some(sig) = signer.sign(&name, &v.to_be_signed())? {
            out.push((var, v.auth_file_signed(signer.cert(), &sig).map_err(err)?));
        }
    }
    Ok(out)
}

/// Appends `line` to `loader/loader.conf` (written by the boot crate, in memory).
fn add_loader_line(tree: &mut Tree, line: &str) -> Result<()> {
    let id = tree
        .lookup(b"/loader/loader.conf")
        .ok_or(Error::NoLoaderConf)?;
    let Kind::File(FileData::Bytes(text)) = &tree.node(id).kind else {
        return Err(Error::NoLoaderConf);
    };
    let mut text = text.to_vec();
    text.extend_from_slice(line.as_bytes());
    tree.node_mut(id).kind = Kind::File(FileData::Bytes(text.into()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_paths_are_the_loaders_ukis_and_kernels() {
        for p in [
            "/EFI/systemd/systemd-bootx64.efi",
            "/EFI/BOOT/BOOTX64.EFI",
            "/EFI/Linux/nixos-1.efi",
            "/efi/boot/bootaa64.efi",
        ] {
            assert_eq!(sign_kind(p), Sign::Always, "{p}");
        }
        for p in [
            "/EFI/nixos/abc-linux-bzImage.efi",
            "/EFI/nixos/abc-initrd-linux-initrd.efi",
        ] {
            assert_eq!(sign_kind(p), Sign::IfPe, "{p}");
        }
        for p in [
            "/EFI/nixos/.extra-files/x.efi",
            "/EFI/Linux/sub/x.efi",
            "/loader/loader.conf",
            "/EFI/BOOT/notes.txt",
        ] {
            assert_eq!(sign_kind(p), Sign::No, "{p}");
        }
        let text = FileData::Bytes(b"initrd".as_slice().into());
        assert_eq!(pe_bytes(&text, Sign::IfPe).unwrap(), None);
        let pe = FileData::Bytes(b"MZ..".as_slice().into());
        assert_eq!(pe_bytes(&pe, Sign::IfPe).unwrap(), Some(b"MZ..".to_vec()));
    }

    #[test]
    fn systemd_version_from_the_store_path() {
        let p = "/nix/store/ic5i-systemd-252.39/lib/systemd/boot/efi/systemd-bootx64.efi";
        assert_eq!(systemd_major(p), Some(252));
        assert_eq!(systemd_major("/nix/store/x-systemd-257.5/lib"), Some(257));
        assert_eq!(systemd_major("/nix/store/x-sd/b.efi"), None);
    }
}
