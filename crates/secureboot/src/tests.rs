//! The crate against the conventional tools: `sbsign`/`sbverify` (sbsigntool),
//! `osslsigncode`, efitools (`cert-to-efi-sig-list`, `sign-efi-sig-list`,
//! `sig-list-to-certs`), with keys made by `openssl` at test time. A test whose tool is
//! missing says so and returns; CI installs them all (`.ci/run`).

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn have(tool: &str) -> bool {
    imgbuild_testutil::have_tool(tool, "apt install sbsigntool osslsigncode efitools openssl")
}

/// A key and self-signed certificate made with `openssl req -x509`, in a temporary directory.
struct Keys {
    dir: tempfile::TempDir,
    key: PathBuf,
    cert: PathBuf,
}

impl Keys {
    fn new(cn: &str) -> Option<Keys> {
        if !have("openssl") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = imgbuild_testutil::self_signed_keys(dir.path(), cn);
        Some(Keys { dir, key, cert })
    }
    fn key(&self) -> PathBuf {
        self.key.clone()
    }
    fn cert(&self) -> PathBuf {
        self.cert.clone()
    }
    fn signer(&self) -> Signer {
        let cert = Cert::from_pem_or_der(&std::fs::read(self.cert()).unwrap()).unwrap();
        Signer::new(&std::fs::read(self.key()).unwrap(), cert).unwrap()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn tiny_pe(tail: usize) -> Vec<u8> {
    imgbuild_testutil::tiny_pe(tail)
}

/// The real systemd-boot of the fixture closure, when it was built (`cargo xtask fixtures`).
fn real_efi() -> Option<Vec<u8>> {
    let store =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures/x86_64/nix/store");
    let dirs = std::fs::read_dir(&store).ok()?;
    dirs.flatten()
        .map(|e| e.path().join("lib/systemd/boot/efi/systemd-bootx64.efi"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::read(p).ok())
}

fn images() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = vec![
        ("tiny PE, tail 5", tiny_pe(5)),
        ("tiny PE, tail 0", tiny_pe(0)),
    ];
    match real_efi() {
        Some(b) => v.push(("fixture systemd-bootx64.efi", b)),
        None => eprintln!("note: no fixture systemd-boot (cargo xtask fixtures); tiny PEs only"),
    }
    v
}

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

fn hex_of(b: &[u8]) -> String {
    authenticode::hex(b)
}

/// `sbverify --cert CERT FILE`: whether it accepts, and what it said.
fn sbverify(keys: &Keys, file: &Path) -> (bool, String) {
    imgbuild_testutil::output(
        Command::new("sbverify")
            .arg("--cert")
            .arg(keys.cert())
            .arg(file),
    )
}

/// `osslsigncode verify -CAfile CERT -in FILE`: whether it accepts, and what it said.
fn ossl_verify(keys: &Keys, file: &Path) -> (bool, String) {
    imgbuild_testutil::output(
        Command::new("osslsigncode")
            .args(["verify", "-CAfile"])
            .arg(keys.cert())
            .arg("-in")
            .arg(file),
    )
}

/// `sbsign` of `input` into `out` (`--detached`: the PKCS#7 alone).
fn sbsign(keys: &Keys, input: &Path, out: &Path, detached: bool) {
    let mut c = Command::new("sbsign");
    c.arg("--key")
        .arg(keys.key())
        .arg("--cert")
        .arg(keys.cert());
    if detached {
        c.arg("--detached");
    }
    imgbuild_testutil::run(c.arg("--output").arg(out).arg(input));
}

#[test]
fn sbverify_and_osslsigncode_accept_ours_and_refuse_a_flipped_byte() {
    let Some(keys) = Keys::new("imgbuild test") else {
        return;
    };
    if !have("sbverify") || !have("osslsigncode") {
        return;
    }
    let signer = keys.signer();
    for (name, image) in images() {
        let signed = sign(&image, &signer).unwrap();
        // Deterministic.
        assert_eq!(signed, sign(&image, &signer).unwrap(), "{name}");
        let v = verify(&signed, Some(signer.cert())).unwrap();
        assert_eq!(v.image_hash, pe::image_hash(&signed).unwrap(), "{name}");
        let f = write(&keys.path("signed.efi"), &signed);
        let (ok, out) = sbverify(&keys, &f);
        assert!(ok, "{name}: sbverify refused ours:\n{out}");
        let (ok, out) = ossl_verify(&keys, &f);
        assert!(ok, "{name}: osslsigncode refused ours:\n{out}");
        // A byte of the first section flipped: every judge refuses.
        let layout = pe::Layout::parse(&signed).unwrap();
        let mut bad = signed.clone();
        bad[layout.sections[0].0 + 3] ^= 0x40;
        let f = write(&keys.path("bad.efi"), &bad);
        let (ok, out) = sbverify(&keys, &f);
        assert!(!ok, "{name}: sbverify accepted a flipped byte:\n{out}");
        let (ok, out) = ossl_verify(&keys, &f);
        assert!(!ok, "{name}: osslsigncode accepted a flipped byte:\n{out}");
        assert!(matches!(
            verify(&bad, None),
            Err(SignError::OtherImage { .. })
        ));
    }
}

/// The image hash `osslsigncode verify` prints for a signed file ("Calculated message
/// digest"), lower-case hex.
fn ossl_digest(file: &Path, keys: &Keys) -> String {
    let (ok, out) = ossl_verify(keys, file);
    assert!(ok, "osslsigncode refused:\n{out}");
    let line = out
        .lines()
        .find(|l| l.contains("Calculated message digest"))
        .unwrap_or_else(|| panic!("no calculated digest in:\n{out}"));
    line.rsplit(':').next().unwrap().trim().to_ascii_lowercase()
}

#[test]
fn our_image_hash_is_sbsigns_and_osslsigncodes() {
    let Some(keys) = Keys::new("hash judge") else {
        return;
    };
    if !have("sbsign") || !have("osslsigncode") {
        return;
    }
    for (name, image) in images() {
        let ours = hex_of(&pe::image_hash(&image).unwrap());
        let input = write(&keys.path("in.efi"), &image);
        // sbsign's signature (with its own signing time) covers the same image hash.
        let sb = keys.path("sb.efi");
        sbsign(&keys, &input, &sb, false);
        let sb_signed = std::fs::read(&sb).unwrap();
        let v = verify(&sb_signed, None).unwrap();
        assert_eq!(hex_of(&v.image_hash), ours, "{name}: sbsign's hash");
        assert_eq!(
            ossl_digest(&sb, &keys),
            ours,
            "{name}: osslsigncode on sbsign's"
        );
        let os = keys.path("os.efi");
        let _ = std::fs::remove_file(&os);
        imgbuild_testutil::run(
            Command::new("osslsigncode")
                .args(["sign", "-h", "sha256", "-key"])
                .arg(keys.key())
                .arg("-certs")
                .arg(keys.cert())
                .arg("-in")
                .arg(&input)
                .arg("-out")
                .arg(&os),
        );
        let v = verify(&std::fs::read(&os).unwrap(), None).unwrap();
        assert_eq!(hex_of(&v.image_hash), ours, "{name}: osslsigncode's hash");
        // And the image signed by either hashes as the unsigned one.
        assert_eq!(hex_of(&pe::image_hash(&sb_signed).unwrap()), ours, "{name}");
    }
}

#[test]
fn two_step_signing_with_openssl_and_a_detached_sbsign_pkcs7() {
    let Some(keys) = Keys::new("offline") else {
        return;
    };
    if !have("sbsign") || !have("sbverify") {
        return;
    }
    let signer = keys.signer();
    let image = tiny_pe(3);
    // Step 1: what must be signed goes out; openssl signs it with the key we never see.
    let p = Prepared::new(&image, None).unwrap();
    let tbs = write(&keys.path("tbs.der"), &p.to_be_signed().unwrap());
    let sig = keys.path("tbs.sig");
    imgbuild_testutil::run(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(keys.key())
            .arg("-out")
            .arg(&sig)
            .arg(&tbs),
    );
    // Step 2: the detached signature comes back; the result is the one-step image.
    let sig = std::fs::read(&sig).unwrap();
    let two = p.clone().finish(signer.cert(), &sig).unwrap();
    assert_eq!(two, sign(&image, &signer).unwrap());
    // A signature of something else is refused, naming why.
    let mut wrong = sig.clone();
    wrong[10] ^= 1;
    let e = p.finish(signer.cert(), &wrong).unwrap_err();
    assert!(
        matches!(e, SignError::Key(KeyError::BadSignature(_))),
        "{e:?}"
    );

    // sbsign --detached: its PKCS#7 embedded by us verifies with sbverify.
    let input = write(&keys.path("in.efi"), &image);
    let det = keys.path("in.p7");
    sbsign(&keys, &input, &det, true);
    let embedded =
        authenticode::embed_detached(&image, &std::fs::read(&det).unwrap(), Some(signer.cert()))
            .unwrap();
    let f = write(&keys.path("emb.efi"), &embedded);
    let (ok, out) = sbverify(&keys, &f);
    assert!(
        ok,
        "sbverify refused the embedded detached signature:\n{out}"
    );
    // A detached signature of another image is refused.
    let e =
        authenticode::embed_detached(&tiny_pe(4), &std::fs::read(&det).unwrap(), None).unwrap_err();
    assert!(matches!(e, SignError::OtherImage { .. }), "{e:?}");
}

#[test]
fn auth_files_are_sign_efi_sig_lists() {
    let Some(keys) = Keys::new("PK") else { return };
    if !have("cert-to-efi-sig-list") || !have("sign-efi-sig-list") || !have("sig-list-to-certs") {
        return;
    }
    let signer = keys.signer();
    let owner = uuid::uuid!("11111111-2222-3333-4444-555566667777");
    let esl = efivar::signature_list(signer.cert(), owner).unwrap();
    let theirs = keys.path("theirs.esl");
    imgbuild_testutil::run(
        Command::new("cert-to-efi-sig-list")
            .arg("-g")
            .arg(owner.to_string())
            .arg(keys.cert())
            .arg(&theirs),
    );
    assert_eq!(
        esl,
        std::fs::read(&theirs).unwrap(),
        "the ESL differs from efitools'"
    );
    // 2026-12-06 12:34:56 UTC.
    let t = 1_796_560_496;
    let time = EfiTime::from_unix(t);
    assert_eq!(
        (
            time.year,
            time.month,
            time.day,
            time.hour,
            time.minute,
            time.second
        ),
        (2026, 12, 6, 12, 34, 56)
    );
    let files = key_files(&signer, owner, time).unwrap();
    for (var, ours) in &files {
        let out = keys.path(&format!("{}.auth", var.name()));
        imgbuild_testutil::run(
            Command::new("sign-efi-sig-list")
                .args(["-t", "2026-12-06 12:34:56", "-k"])
                .arg(keys.key())
                .arg("-c")
                .arg(keys.cert())
                .arg(var.name())
                .arg(&theirs)
                .arg(&out),
        );
        let theirs_auth = std::fs::read(&out).unwrap();
        assert_eq!(
            hex_of(ours),
            hex_of(&theirs_auth),
            "{}.auth differs from sign-efi-sig-list's",
            var.name()
        );
        // The ESL at the end lists the certificate again (efitools reads it back).
        let tail = write(&keys.path("tail.esl"), &ours[ours.len() - esl.len()..]);
        imgbuild_testutil::run(
            Command::new("sig-list-to-certs")
                .arg(&tail)
                .arg(keys.path("back")),
        );
        let back = std::fs::read(keys.path("back-0.der")).unwrap();
        assert_eq!(back, signer.cert().der());
    }
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let (Some(a), Some(b)) = (Keys::new("a"), Keys::new("b")) else {
        return;
    };
    let cert = Cert::from_pem_or_der(&std::fs::read(a.cert()).unwrap()).unwrap();
    let e = Signer::new(&std::fs::read(b.key()).unwrap(), cert).unwrap_err();
    assert!(matches!(e, KeyError::Mismatch), "{e:?}");
}

#[test]
fn hostile_headers_are_typed_errors() {
    let good = tiny_pe(5);
    assert!(matches!(
        pe::Layout::parse(b"MZ"),
        Err(PeError::Truncated { .. })
    ));
    let mut b = good.clone();
    b[0x3c..0x40].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    assert!(matches!(
        pe::Layout::parse(&b),
        Err(PeError::Truncated { .. })
    ));
    let mut b = good.clone();
    b[0x44 + 2..0x44 + 4].copy_from_slice(&500u16.to_le_bytes());
    assert!(matches!(
        pe::Layout::parse(&b),
        Err(PeError::TooManySections { count: 500 })
    ));
    let mut b = good.clone();
    let s = 0x44 + 20 + 240 + 40; // second section's PointerToRawData -> inside the first
    b[s + 20..s + 24].copy_from_slice(&0x300u32.to_le_bytes());
    assert!(matches!(
        pe::Layout::parse(&b),
        Err(PeError::Overlap { .. })
    ));
    let mut b = good;
    let dir = 0x44 + 20 + 112 + 32;
    b[dir..dir + 4].copy_from_slice(&0x100u32.to_le_bytes());
    b[dir + 4..dir + 8].copy_from_slice(&8u32.to_le_bytes());
    assert!(matches!(
        pe::Layout::parse(&b),
        Err(PeError::CertTable { .. })
    ));
    // Every truncation of a signed image is an error or a verdict, never a panic.
    let signed = pe::embed(&tiny_pe(5), &[0x30, 0x03, 0x02, 0x01, 0x00]).unwrap();
    for n in 0..signed.len() {
        let _ = verify(&signed[..n], None);
    }
}

#[test]
fn checksum_matches_the_known_algorithm() {
    // Sum of LE words with carries folded, plus the length: 0x0201 + 0x0403 + len 4.
    assert_eq!(pe::checksum(&[1, 2, 3, 4], 100), 0x0604 + 4);
    // The CheckSum field itself counts as zero.
    assert_eq!(
        pe::checksum(&[1, 2, 0xff, 0xff, 0xff, 0xff, 3, 4], 2),
        0x0604 + 8
    );
    // Carries fold back into the low 16 bits.
    assert_eq!(pe::checksum(&[0xff, 0xff, 0x02, 0x00], 100), 0x0002 + 4);
}
