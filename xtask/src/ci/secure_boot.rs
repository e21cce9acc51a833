//! ci-boot's Secure Boot boots (issue 26 step 3): the x86_64 fixture as raw-efi signed with a
//! key made now (`openssl req -x509`, in `OUT/secure-boot`, never kept in the repository),
//! `--secure-boot-enroll force`, on QEMU q35 with SMM and Debian's
//! `OVMF_CODE_4M.secboot.fd`, its variables a fresh copy of `OVMF_VARS_4M.fd` (setup mode:
//! no PK). Boot 1: systemd-boot enrols `loader/keys/auto` and resets (the console says
//! "Enrolling secure boot keys"). Boot 2, same variables: Secure Boot is on ("EFI stub: UEFI
//! Secure Boot is enabled.") and the fixture reaches `IMGBUILD-BOOT-OK`. Negative control,
//! same variables: the unsigned raw-efi image of the same fixture is refused by the firmware
//! ("Access Denied"). Under TCG: 7 s, 15 s, and the control's 90 s limit (measured: OVMF
//! waits for a boot option after refusing). Then the UKI (issue 26 steps 2 and 3): the
//! appliance of the fixture's `result-appliance`, signed with the same key, boots with the
//! keys enrolled (its UKI `EFI/Linux/imgbuild-fixture_1.efi` is among the signed files); the
//! same image with one byte of the UKI's `.cmdline` changed (on the ESP, with mtools) is
//! refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use super::Run;
use crate::boot::{self, OVMF_VARS};
use crate::util::{self, cmd};

/// The Secure Boot build of OVMF (SMM, enforces db once a PK is enrolled).
const OVMF_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";

/// Runs QEMU on `image` with the variables `vars` until it exits (the guest resets or
/// powers off: `-no-reboot`) or `limit` passes; the console, escapes removed.
fn qemu(image: &Path, vars: &Path, log: &Path, limit: Duration) -> Result<String> {
    let mut c = cmd("timeout");
    c.arg(limit.as_secs().to_string())
        .arg("qemu-system-x86_64")
        .args(["-machine", "q35,smm=on", "-accel", "tcg", "-cpu", "max"])
        .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
        .args(["-smp", "2", "-m", "1024", "-nographic", "-no-reboot"])
        .args(["-serial", "mon:stdio", "-net", "none"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_SECBOOT}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,snapshot=on",
            image.display()
        ));
    let out = c.output().context("running qemu-system-x86_64")?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    std::fs::write(log, &text)?;
    Ok(text)
}

/// `imgbuild raw-efi` of the fixture `fx` into `out` (more options may follow).
fn raw_efi(fx: &Path, out: &Path) -> Result<std::process::Command> {
    let mut c = cmd(boot::imgbuild_bin()?);
    c.arg("raw-efi")
        .arg("--closure")
        .arg(fx.join("result"))
        .arg("--store-root")
        .arg(fx)
        .arg("-o")
        .arg(out);
    Ok(c)
}

/// The signed appliance image of `fx` (`result-appliance`: a UKI), a copy whose UKI has
/// one `.cmdline` byte changed after signing, and the UKI's path on the ESP.
fn signed_uki(
    fx: &Path,
    dir: &Path,
    key: &Path,
    cert: &Path,
) -> Result<(PathBuf, PathBuf, String)> {
    let image = dir.join("signed-uki.img");
    let mut c = cmd(boot::imgbuild_bin()?);
    c.arg("appliance")
        .arg("--closure")
        .arg(fx.join(boot::Format::Appliance.variant().result()))
        .arg("--store-root")
        .arg(fx)
        .arg("-o")
        .arg(&image)
        .arg("--secure-boot-key")
        .arg(key)
        .arg("--secure-boot-cert")
        .arg(cert)
        .args(["--secure-boot-enroll", "force"]);
    util::run(&mut c)?;
    let m = boot::image_manifest(&image)?;
    let uki = &m["boot"]["uki"];
    let signed = m["boot"]["secure_boot"].to_string();
    let path = uki["path"].as_str().context("manifest: boot.uki.path")?;
    ensure!(
        signed.contains(path),
        "the manifest does not list {path} as signed"
    );
    let cmdline = uki["sections"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == ".cmdline"))
        .and_then(|s| s["offset"].as_u64())
        .context("manifest: boot.uki.sections .cmdline")?;
    let esp = super::appliance::esp_offset(&image)?;
    let tampered = dir.join("tampered-uki.img");
    util::run(cmd("cp").arg("--sparse=always").arg(&image).arg(&tampered))?;
    let efi = dir.join("tampered.efi");
    let fat = format!("{}@@{esp}", tampered.display());
    let on_esp = format!("::/{path}");
    util::run(cmd("mcopy").args(["-n", "-i", &fat, &on_esp]).arg(&efi))?;
    let mut bytes = std::fs::read(&efi)?;
    let at = usize::try_from(cmdline)? + 1;
    ensure!(
        at < bytes.len(),
        "the UKI is shorter than its .cmdline offset"
    );
    bytes[at] ^= 0x01;
    std::fs::write(&efi, &bytes)?;
    util::run(cmd("mcopy").args(["-o", "-i", &fat]).arg(&efi).arg(&on_esp))?;
    Ok((image, tampered, path.to_string()))
}

fn expect(console: &str, want: &str, log: &Path) -> Result<()> {
    ensure!(
        console.contains(want),
        "the console never said `{want}` (see {})",
        log.display()
    );
    Ok(())
}

impl Run {
    /// The Secure Boot steps on the x86_64 fixture `fx`.
    pub(super) fn secure_boot(&mut self, fx: &Path) {
        let dir = self.out.join("secure-boot");
        let logs = self.out.join("logs");
        let built = self.step("secure boot: keys and signed raw-efi image", || {
            util::need_tools(&[
                ("qemu-system-x86_64", "qemu-system-x86"),
                ("openssl", "openssl"),
            ])?;
            if !Path::new(OVMF_SECBOOT).is_file() {
                bail!("{OVMF_SECBOOT} not found (apt-get install ovmf)");
            }
            std::fs::create_dir_all(&dir)?;
            let (key, cert) = imgbuild_testutil::self_signed_keys(&dir, "imgbuild-ci");
            let image = dir.join("signed.img");
            let mut signed = raw_efi(fx, &image)?;
            util::run(
                signed
                    .arg("--secure-boot-key")
                    .arg(&key)
                    .arg("--secure-boot-cert")
                    .arg(&cert)
                    .args(["--secure-boot-enroll", "force"]),
            )?;
            let unsigned = dir.join("unsigned.img");
            util::run(&mut raw_efi(fx, &unsigned)?)?;
            let vars = dir.join("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS, &vars)?;
            Ok(((image, unsigned, vars), String::new()))
        });
        let Some((image, unsigned, vars)) = built else {
            return;
        };
        let enrolled = self.step("secure boot: boot 1, systemd-boot enrols our keys", || {
            let log = logs.join("secure-boot.enrol.console.log");
            let c = qemu(&image, &vars, &log, Duration::from_secs(180))?;
            expect(&c, "Enrolling secure boot keys", &log)?;
            Ok(((), "enrolled from loader/keys/auto".into()))
        });
        if enrolled.is_none() {
            return;
        }
        self.step("secure boot: boot 2, signed image boots", || {
            let log = logs.join("secure-boot.signed.console.log");
            let c = qemu(&image, &vars, &log, Duration::from_secs(600))?;
            expect(&c, "Secure Boot is enabled", &log)?;
            expect(&c, "IMGBUILD-BOOT-OK", &log)?;
            Ok(((), "Secure Boot on, IMGBUILD-BOOT-OK".into()))
        });
        self.secure_boot_uki(fx, &dir, &logs, &vars);
        self.step(
            "secure boot: negative control, unsigned image refused",
            || {
                let log = logs.join("secure-boot.unsigned.console.log");
                // The firmware refuses within seconds, then waits for a boot option.
                let c = qemu(&unsigned, &vars, &log, Duration::from_secs(90))?;
                ensure!(
                    !c.contains("IMGBUILD-BOOT-OK"),
                    "the unsigned image booted under Secure Boot (see {})",
                    log.display()
                );
                expect(&c, "Access Denied", &log)?;
                Ok(((), "failed as expected: Access Denied".into()))
            },
        );
    }

    /// The signed appliance (a UKI) boots with the keys in `vars` enrolled; its tampered
    /// copy is refused.
    fn secure_boot_uki(&mut self, fx: &Path, dir: &Path, logs: &Path, vars: &Path) {
        let uki = self.step(
            "secure boot: signed appliance (UKI) and a tampered copy",
            || {
                // The key pair the first step made (testutil::self_signed_keys' names).
                let key = dir.join("imgbuild-ci.key");
                let cert = dir.join("imgbuild-ci.pem");
                Ok((signed_uki(fx, dir, &key, &cert)?, String::new()))
            },
        );
        if let Some((signed_uki, tampered, path)) = uki {
            self.step("secure boot: signed UKI (appliance) boots", || {
                let log = logs.join("secure-boot.uki.console.log");
                let c = qemu(&signed_uki, vars, &log, Duration::from_secs(600))?;
                expect(&c, "Secure Boot is enabled", &log)?;
                expect(&c, "IMGBUILD-BOOT-OK", &log)?;
                Ok((
                    (),
                    "Secure Boot on, UKI + verity store, IMGBUILD-BOOT-OK".into(),
                ))
            });
            self.step(
                "secure boot: negative control, tampered UKI refused",
                || {
                    let log = logs.join("secure-boot.tampered-uki.console.log");
                    // systemd-boot's menu waits 5 s, then the firmware refuses the image.
                    let c = qemu(&tampered, vars, &log, Duration::from_secs(60))?;
                    ensure!(
                        !c.contains("IMGBUILD-BOOT-OK"),
                        "the tampered UKI booted under Secure Boot (see {})",
                        log.display()
                    );
                    ensure!(
                        !c.contains("Linux version"),
                        "a kernel started from the tampered UKI (see {})",
                        log.display()
                    );
                    // systemd-boot names the file with backslashes
                    let refused =
                        format!("Error loading \\{}: Access Denied", path.replace('/', "\\"));
                    expect(&c, &refused, &log)?;
                    Ok(((), format!("refused: {refused}")))
                },
            );
        }
    }
}
