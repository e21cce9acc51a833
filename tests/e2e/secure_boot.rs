//! `--secure-boot-key` / `--secure-boot-cert`: the ESP's systemd-boot signed (checked by
//! `sbverify` and `osslsigncode` with the certificate; a flipped byte refused), the key
//! enrolment files and the loader.conf line, nothing of the key in the manifest, two builds
//! identical. The signed build uses the fixture closure (a real systemd-boot; `cargo xtask
//! fixtures`); keys are made by `openssl req -x509` at test time. A missing judge (sbsigntool,
//! osslsigncode, efitools) skips with a message; CI installs them.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL: &str = "apt install sbsigntool osslsigncode efitools openssl";

fn have(tool: &str) -> bool {
    imgbuild_testutil::have_tool(tool, INSTALL)
}

fn keys(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    imgbuild_testutil::self_signed_keys(dir, cn)
}

/// The x86_64 fixture closure (a real systemd-boot and kernel), which must be built.
fn fixture() -> PathBuf {
    let fix = workspace().join("target/fixtures/x86_64");
    assert!(
        fix.join("fixture.json").exists(),
        "{}: build the fixture first with `cargo xtask fixtures --arch x86_64`",
        fix.display()
    );
    fix
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `raw-efi` of the fixture `fix` into `out`, enrolment `force`, with `signer` (the key's
/// or the signatures directory's options).
fn args(fix: &Path, out: &Path, signer: [&str; 2], cert: &Path) -> Vec<String> {
    [
        "raw-efi",
        "--closure",
        &s(&fix.join("result")),
        "--store-root",
        &s(fix),
        "-o",
        &s(out),
        "--json",
        signer[0],
        signer[1],
        "--secure-boot-cert",
        &s(cert),
        "--secure-boot-enroll",
        "force",
    ]
    .map(str::to_string)
    .to_vec()
}

fn build(fix: &Path, out: &Path, key: &Path, cert: &Path) -> Value {
    let args = args(fix, out, ["--secure-boot-key", &s(key)], cert);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_slice(&ok(&mut imgbuild(&refs)).stdout).unwrap()
}

#[test]
fn signed_systemd_boot_verifies_and_two_builds_are_identical() {
    if !["openssl", "sbverify", "osslsigncode", "sig-list-to-certs"]
        .iter()
        .all(|t| have(t))
    {
        return;
    }
    let fix = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (key, cert) = keys(d, "imgbuild-e2e");
    let (a, b) = (d.join("a.img"), d.join("b.img"));
    let ma = build(&fix, &a, &key, &cert);
    let mb = build(&fix, &b, &key, &cert);
    assert_eq!(ma["sha256"], mb["sha256"], "two signed builds differ");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let sb = &ma["boot"]["secure_boot"];
    let signed: Vec<&str> = sb["signed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    // The boot loader's two copies and the kernel (a PE with the EFI stub), not the initrd.
    assert_eq!(signed.len(), 3, "{signed:?}");
    assert_eq!(signed[0], "/EFI/BOOT/BOOTX64.EFI");
    assert!(signed[1].starts_with("/EFI/nixos/") && signed[1].ends_with("-bzImage.efi"));
    assert_eq!(signed[2], "/EFI/systemd/systemd-bootx64.efi");
    // The certificate's fingerprint, as openssl computes it; nothing of the key.
    let fp = fingerprint(&cert);
    assert_eq!(sb["certificate_sha256"], fp.as_str());
    let manifest = std::fs::read_to_string(d.join("a.img.json")).unwrap();
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_line = key_text.lines().nth(1).unwrap();
    assert!(!manifest.contains(key_line) && !manifest.contains("PRIVATE"));

    for path in signed {
        let efi = d.join("x.efi");
        std::fs::write(
            &efi,
            ok(&mut imgbuild(&["cat", &s(&a), &format!("ESP:{path}")])).stdout,
        )
        .unwrap();
        let (good, out) =
            imgbuild_testutil::output(Command::new("sbverify").arg("--cert").arg(&cert).arg(&efi));
        assert!(good, "sbverify refused {path}:\n{out}");
        let (good, out) = imgbuild_testutil::output(
            Command::new("osslsigncode")
                .args(["verify", "-CAfile"])
                .arg(&cert)
                .arg("-in")
                .arg(&efi),
        );
        assert!(good, "osslsigncode refused {path}:\n{out}");
        // Another key's certificate does not verify it; a flipped byte does not verify.
        let (_, other) = keys(d, "other");
        let (good, _) =
            imgbuild_testutil::output(Command::new("sbverify").arg("--cert").arg(&other).arg(&efi));
        assert!(!good, "sbverify accepted {path} with another certificate");
        let mut bytes = std::fs::read(&efi).unwrap();
        bytes[0x1000] ^= 1;
        std::fs::write(&efi, bytes).unwrap();
        let (good, _) =
            imgbuild_testutil::output(Command::new("sbverify").arg("--cert").arg(&cert).arg(&efi));
        assert!(!good, "sbverify accepted {path} with a flipped byte");
    }

    let conf = ok(&mut imgbuild(&["cat", &s(&a), "ESP:/loader/loader.conf"])).stdout;
    assert!(String::from_utf8(conf)
        .unwrap()
        .ends_with("secure-boot-enroll force\n"));
    for var in ["PK", "KEK", "db"] {
        let auth = ok(&mut imgbuild(&[
            "cat",
            &s(&a),
            &format!("ESP:/loader/keys/auto/{var}.auth"),
        ]))
        .stdout;
        // EFI_VARIABLE_AUTHENTICATION_2: the time (16 bytes), then dwLength; the signature
        // list follows the WIN_CERTIFICATE_UEFI_GUID it measures.
        let len = u32::from_le_bytes(auth[16..20].try_into().unwrap()) as usize;
        let esl = d.join(format!("{var}.esl"));
        std::fs::write(&esl, &auth[16 + len..]).unwrap();
        stdout(Command::new("sig-list-to-certs").arg(&esl).arg(d.join(var)));
        let der = std::fs::read(d.join(format!("{var}-0.der"))).unwrap();
        stdout(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&cert)
                .arg("-out")
                .arg(d.join("cert.der")),
        );
        assert_eq!(
            der,
            std::fs::read(d.join("cert.der")).unwrap(),
            "{var}.auth"
        );
    }
}

#[test]
fn refusals_name_the_problem() {
    if !have("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (key, cert) = keys(d, "a");
    let (other_key, _) = keys(d, "b");
    let out = d.join("x.img");
    let mut args = demo_args("raw-efi", &out);
    args.extend(["--secure-boot-key".into(), s(&other_key)]);
    args.extend(["--secure-boot-cert".into(), s(&cert)]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = fails(&mut imgbuild(&refs));
    assert!(
        e.contains("does not belong to the certificate"),
        "a key of another certificate: {e}"
    );
    // The demo closure's systemd-boot is a text placeholder, not a PE image.
    let mut args = demo_args("raw-efi", &out);
    args.extend(["--secure-boot-key".into(), s(&key)]);
    args.extend(["--secure-boot-cert".into(), s(&cert)]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = fails(&mut imgbuild(&refs));
    assert!(
        e.contains("signing `/EFI/BOOT/BOOTX64.EFI`") && e.contains("not a PE image"),
        "{e}"
    );
    assert!(!out.exists());
    // if-safe needs systemd 253; the demo's is 252.
    args.extend(["--secure-boot-enroll".into(), "if-safe".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = fails(&mut imgbuild(&refs));
    assert!(e.contains("if-safe came with 253"), "{e}");
    // A format without systemd-boot refuses the option (through `imgbuild build`, which
    // takes every format's options).
    let mut args = closure_args("sd-aarch64", &demo_aarch64(), &d.join("sd.img.zst"));
    assert_eq!(args[0], "sd-aarch64");
    args.splice(
        0..1,
        ["build".into(), "--format".into(), "sd-aarch64".into()],
    );
    args.extend(["--secure-boot-key".into(), s(&key)]);
    args.extend(["--secure-boot-cert".into(), s(&cert)]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = fails(&mut imgbuild(&refs));
    assert!(
        e.contains(
            "--secure-boot-key: format `sd-aarch64` has no systemd-boot EFI system partition"
        ),
        "{e}"
    );
}

/// The two-step mode: a build without the key writes what must be signed and fails naming
/// it; signed by `openssl dgst` (standing for an HSM), the second build is byte for byte the
/// build with the key.
#[test]
fn two_step_signing_gives_the_image_the_key_gives() {
    if !have("openssl") {
        return;
    }
    let fix = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (key, cert) = keys(d, "offline");
    let sigs = d.join("sigs");
    std::fs::create_dir(&sigs).unwrap();
    let out = d.join("two.img");
    let args = args(&fix, &out, ["--secure-boot-signatures", &s(&sigs)], &cert);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = fails(&mut imgbuild(&refs));
    assert!(e.contains("6 signature(s) missing"), "{e}");
    assert!(!out.exists());
    let mut tbs: Vec<PathBuf> = std::fs::read_dir(&sigs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    tbs.sort();
    assert_eq!(tbs.len(), 6, "{tbs:?}");
    for t in &tbs {
        stdout(
            Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key)
                .arg("-out")
                .arg(t.with_extension("sig"))
                .arg(t),
        );
    }
    let two: Value = serde_json::from_slice(&ok(&mut imgbuild(&refs)).stdout).unwrap();
    let one = build(&fix, &d.join("one.img"), &key, &cert);
    assert_eq!(two["sha256"], one["sha256"]);
    // A signature of something else is refused, naming the file.
    let first = tbs[0].with_extension("sig");
    let mut bad = std::fs::read(&first).unwrap();
    bad[5] ^= 1;
    std::fs::write(&first, bad).unwrap();
    let e = fails(&mut imgbuild(&refs));
    assert!(e.contains("does not verify"), "{e}");
}

/// The certificate's SHA-256 fingerprint as openssl computes it, lowercase hex.
fn fingerprint(cert: &Path) -> String {
    let fp = stdout(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(cert),
    );
    fp.rsplit('=')
        .next()
        .unwrap()
        .trim()
        .replace(':', "")
        .to_ascii_lowercase()
}

/// The ESP's offset in a manifest.
fn esp_offset(m: &Value) -> u64 {
    m["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ESP")
        .and_then(|p| p["start"].as_u64())
        .unwrap()
}

/// `imgbuild inspect --json IMG`'s systemd-boot.
fn inspected_systemd_boot(img: &Path) -> Value {
    inspect_json(img)["boot"]["systemd_boot"][0].clone()
}

#[test]
fn inspect_names_the_signer_of_each_binary_and_sees_a_tampered_one() {
    if !["openssl", "mcopy"].iter().all(|t| have(t)) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (key, cert) = keys(d, "imgbuild-inspect-e2e");
    let fp = fingerprint(&cert);
    let signed_by_us = |sig: &Value| {
        sig["valid"] == true
            && sig["signer"] == "CN=imgbuild-inspect-e2e"
            && sig["certificate_sha256"] == fp.as_str()
    };

    // A signed raw-efi: both systemd-boot copies signed by our certificate.
    let img = d.join("a.img");
    let m = build(&fixture(), &img, &key, &cert);
    let sd = inspected_systemd_boot(&img);
    let bins = sd["binaries"].as_array().unwrap();
    assert_eq!(bins.len(), 2, "{sd}");
    assert!(bins.iter().all(|b| signed_by_us(&b["signature"])), "{sd}");
    let text = stdout(&mut imgbuild(&["inspect", &s(&img)]));
    assert!(
        text.contains(&format!(
            "signed   by CN=imgbuild-inspect-e2e (certificate sha256 {}…), valid for this binary",
            &fp[..16]
        )),
        "{text}"
    );
    // One copy with a byte changed after signing: that one's signature no longer holds.
    let efi = d.join("x.efi");
    let path = "/EFI/systemd/systemd-bootx64.efi";
    let mut bytes = ok(&mut imgbuild(&["cat", &s(&img), &format!("ESP:{path}")])).stdout;
    bytes[0x1000] ^= 1;
    std::fs::write(&efi, bytes).unwrap();
    ok(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-o")
        .arg("-i")
        .arg(format!("{}@@{}", img.display(), esp_offset(&m)))
        .arg(&efi)
        .arg(format!("::{path}")));
    let sd = inspected_systemd_boot(&img);
    for b in sd["binaries"].as_array().unwrap() {
        let sig = &b["signature"];
        if b["path"] == path {
            assert!(sig["valid"] == false, "{b}");
            let why = sig["error"].as_str().unwrap();
            assert!(why.contains("the signature is of image hash"), "{why}");
        } else {
            assert!(signed_by_us(sig), "{b}");
        }
    }
    let text = stdout(&mut imgbuild(&["inspect", &s(&img)]));
    assert!(text.contains("signed   INVALID: "), "{text}");

    // An unsigned image: no signature on any binary.
    let plain = d.join("plain.img");
    let args = closure_args("appliance", &demo_appliance(d, "1"), &plain);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&mut imgbuild(&refs));
    let sd = inspected_systemd_boot(&plain);
    assert!(
        sd["binaries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b.get("signature").is_none()),
        "{sd}"
    );
    assert!(sd["ukis"][0].get("signature").is_none(), "{sd}");

    // The fixture's appliance signed: its UKI (read whole, since its headers declare a
    // certificate table) signed by our certificate.
    let fix = fixture();
    let app = d.join("app.img");
    ok(Command::new(bin())
        .arg("appliance")
        .arg("--closure")
        .arg(fix.join("result-appliance"))
        .arg("--store-root")
        .arg(&fix)
        .arg("-o")
        .arg(&app)
        .arg("--secure-boot-key")
        .arg(&key)
        .arg("--secure-boot-cert")
        .arg(&cert));
    let sd = inspected_systemd_boot(&app);
    let uki = &sd["ukis"][0];
    assert_eq!(uki["path"], "/EFI/Linux/imgbuild-fixture_1.efi", "{sd}");
    assert!(signed_by_us(&uki["signature"]), "{uki}");
}
