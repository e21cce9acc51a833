//! The PC BIOS part of `ci-boot` (issue 24): the harness proven on a disk made without
//! imgbuild's image code (`xtask grub-disk`), then imgbuild's raw (IDE, virtio),
//! digitalocean (`.qcow2.gz`, virtio) and linode (no partition table, `.img.gz`, virtio,
//! through a GRUB CD standing for Linode's) images of the fixture's GRUB toplevel and the
//! hybrid qemu (GPT + BIOS boot partition + ESP, qcow2, virtio) of its hybrid GRUB toplevel
//! under QEMU's default SeaBIOS, and the hybrid again under OVMF (GRUB x86_64-efi from
//! EFI/BOOT/BOOTX64.EFI), each through GRUB (the kernel's `BOOT_IMAGE=(hd0,...)` is GRUB's);
//! and the system check refusing hetzner (the fixture's GRUB is for /dev/vda) and raw of the
//! systemd-boot toplevel. About 4 minutes with TCG.

use super::Run;
use crate::boot::{self, Disk, Firmware, Format};
use crate::fixture::FixtureInfo;
use crate::util::{self, cmd};
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

/// What GRUB puts first on the kernel command line of an entry it boots from a disk:
/// `(hd0,msdos1)`, `(hd0,gpt2)`, or `(hd0)` for linode's disk without a table.
const GRUB_BOOT_IMAGE: &str = "BOOT_IMAGE=(hd0";

impl Run {
    /// [`Run::boot_on`] with SeaBIOS, then: the console shows the kernel was loaded by GRUB.
    fn boot_bios(
        &mut self,
        name: &str,
        (format, image, disk): (Format, &Path, Disk),
        info: &FixtureInfo,
    ) {
        self.boot_grub(name, (format, Firmware::Bios, disk), image, info);
    }

    /// [`Run::boot_on`], then: the console shows the kernel was loaded by GRUB.
    fn boot_grub(
        &mut self,
        name: &str,
        (format, firmware, disk): (Format, Firmware, Disk),
        image: &Path,
        info: &FixtureInfo,
    ) {
        let before = self.rows.len();
        self.boot_on(name, (format, firmware, disk), image, info, false);
        let booted = self.rows.get(before).is_some_and(|r| r.result.is_ok());
        if !booted {
            return;
        }
        let log = self.console_log(image, (format, firmware, disk));
        self.step(&format!("{name}: loaded by GRUB"), || {
            let text = String::from_utf8_lossy(
                &std::fs::read(&log).with_context(|| format!("reading {}", log.display()))?,
            )
            .into_owned();
            let line = text
                .lines()
                .find(|l| l.contains(GRUB_BOOT_IMAGE))
                .with_context(|| format!("no {GRUB_BOOT_IMAGE}...) on the kernel command line"))?;
            let at = line.find(GRUB_BOOT_IMAGE).unwrap_or_default();
            let word = line[at..].split_whitespace().next().unwrap_or_default();
            Ok(((), word.chars().take(40).collect()))
        });
    }
}

/// The BIOS boots of the x86_64 fixture (needs its GRUB toplevels, `result-grub` and
/// `result-grub-hybrid`).
pub(super) fn x86_bios(run: &mut Run, fx: &Path, info: &FixtureInfo) {
    if info.grub.is_none() || info.grub_hybrid.is_none() {
        run.step("BIOS boots", || -> Result<((), String)> {
            bail!("the x86_64 fixture has no GRUB toplevel (rebuild it: cargo xtask fixtures)")
        });
        return;
    }
    let disk = run.out.join("grub-disk.img");
    if run
        .step("grub-disk: GRUB + mkfs.ext4 -d, no imgbuild", || {
            boot::bios::grub_disk(fx, &disk).map(|()| ((), String::new()))
        })
        .is_some()
    {
        run.boot_bios(
            "boot grub-disk (SeaBIOS, ide)",
            (Format::Raw, &disk, Disk::Ide),
            info,
        );
    }
    for (format, disks) in [
        (Format::Raw, &[Disk::Ide, Disk::Virtio][..]),
        (Format::Qemu, &[Disk::Virtio][..]),
        (Format::Digitalocean, &[Disk::Virtio][..]),
        (Format::Linode, &[Disk::Virtio][..]),
    ] {
        let name = format.name();
        let Some(img) = run.step(&format!("imgbuild {name} image"), || {
            Ok((boot::imgbuild_image(format)?, String::new()))
        }) else {
            continue;
        };
        for &d in disks {
            run.boot_bios(
                &format!("boot imgbuild {name} (SeaBIOS, {})", d.name()),
                (format, &img, d),
                info,
            );
        }
        // The hybrid boots with UEFI too: OVMF starts EFI/BOOT/BOOTX64.EFI (GRUB x86_64-efi).
        if format == Format::Qemu {
            run.boot_grub(
                &format!("boot imgbuild {name} (OVMF, virtio)"),
                (format, Firmware::Uefi, Disk::Virtio),
                &img,
                info,
            );
        }
    }
    // The system check: GRUB on the wrong disk, systemd-boot only.
    run.step(
        "imgbuild hetzner refuses GRUB for /dev/vda (system check)",
        || {
            refused(
                fx,
                "hetzner",
                "result-grub",
                &["names /dev/vda", "(/dev/sda)"],
            )
        },
    );
    run.step(
        "imgbuild raw refuses a systemd-boot system (system check)",
        || {
            refused(
                fx,
                "raw",
                "result",
                &["systemd-boot only", "imgbuild.format = \"raw\""],
            )
        },
    );
}

/// `imgbuild FORMAT` of the fixture's toplevel `result` must fail in the system check, its
/// message holding every one of `wants`, and leave no image.
fn refused(fx: &Path, format: &str, result: &str, wants: &[&str]) -> Result<((), String)> {
    let bin = boot::imgbuild_bin()?;
    let out = util::target_dir().join(format!("boot/imgbuild-{format}-refused.img"));
    let o = cmd(&bin)
        .arg(format)
        .arg("--closure")
        .arg(fx.join(result))
        .arg("--store-root")
        .arg(fx)
        .arg("-o")
        .arg(&out)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(!o.status.success(), "imgbuild {format} succeeded");
    ensure!(
        wants.iter().all(|w| err.contains(w)) && !out.exists(),
        "failed, but not saying {wants:?}: {err}"
    );
    Ok(((), format!("refused: {}", wants.join(" ... "))))
}
