//! ci-boot's Secure Boot boots (issue 26 step 3): the x86_64 fixture as raw-efi signed with a
//! key made now (`openssl req -x509`, in `OUT/secure-boot`, never kept in the repository),
//! `--secure-boot-enroll force`, on QEMU q35 with SMM and Debian's
//! `OVMF_CODE_4M.secboot.fd`, its variables a fresh copy of `OVMF_VARS_4M.fd` (setup mode:
//! no PK). Boot 1: systemd-boot enrols `loader/keys/auto` and resets (the console says
//! "Enrolling secure boot keys"). Boot 2, same variables: Secure Boot is on ("EFI stub: UEFI
//! Secure Boot is enabled.") and the fixture reaches `IMGBUILD-BOOT-OK`. Negative control,
//! same variables: the unsigned raw-efi image of the same fixture is refused by the firmware
//! ("Access Denied"). Under TCG: 7 s, 15 s, and the control's 90 s limit (measured: OVMF
//! waits for a boot option after refusing).

use std::path::Path;
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
}
