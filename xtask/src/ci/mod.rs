//! `cargo xtask ci-boot`: the end-to-end boot tests CI runs.
//!
//! x86_64: fixture -> baseline raw-efi image -> bootctl check -> boot (virtio, NVMe) ->
//! negative control (root label wrong: must FAIL with the initrd's reason); then the same
//! image built by the imgbuild CLI (unless `--baseline-only`), and imgbuild's qemu-efi
//! (qcow2, virtio), azure (fixed VHD, NVMe), amazon (dynamic VHD, virtio), vmware
//! (stream-optimized VMDK, NVMe) and hyperv (VHDX, virtio) images of the same closure, read by QEMU's own drivers;
//! and a 26.11-style copy of the closure with boot counting on, booted writable through its
//! `+3` entry, which systemd-boot must have renamed `+2-1` afterwards (`bootcount.rs`).
//! PC BIOS (`bios.rs`, unless `--skip-bios`): a GRUB disk made without imgbuild, then
//! imgbuild's raw, qemu and digitalocean images of the fixture's GRUB toplevel under SeaBIOS,
//! and hetzner refused by the system check.
//! Live (`live.rs`; only these with `--live-only`): the fixture's ISO and netboot toplevels
//! as imgbuild's hybrid ISO (CD and disk, OVMF and SeaBIOS) and netboot directory, on both
//! architectures, and a netboot negative control.
//! Appliance (`appliance.rs`; only these with `--appliance-only`): the fixture's
//! `result-appliance` as imgbuild's A/B appliance (UKI, dm-verity store), a flipped store byte,
//! and an A->B update to `result-appliance-v2` done as systemd-sysupdate would.
//! aarch64: fixture -> baseline sd-aarch64 .img.zst -> boot; then imgbuild's.
//! Every boot must print exactly the fixture's marker (`IMGBUILD-BOOT-OK toplevel=<its
//! toplevel>`). Ends with an `N passed, N failed` line; exits non-zero on any failure.

mod all;
mod appliance;
mod bios;
mod live;
mod secure_boot;
pub use all::run_all;

use crate::boot::{self, BootSpec, Disk, Firmware, Format};
use crate::fixture::{self, Arch, FixtureInfo};
use crate::util::{self, cmd, Timer};
use crate::{baseline, bootcount, bootctl};
use anyhow::{bail, ensure, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct CiArgs {
    /// Boot only the baseline (shell pipeline) images, not the imgbuild CLI's
    #[arg(long)]
    pub baseline_only: bool,
    /// Skip everything aarch64
    #[arg(long)]
    pub skip_aarch64: bool,
    /// Skip the PC BIOS boots (GRUB: raw, qemu, digitalocean)
    #[arg(long)]
    pub skip_bios: bool,
    /// Only the x86_64 fixture and the PC BIOS boots
    #[arg(long)]
    pub bios_only: bool,
    /// Only the x86_64 fixture and the boot-counting case (26.11 closure, counted entry)
    #[arg(long)]
    pub boot_counting_only: bool,
    /// Only the fixtures and the live boots (ISO, netboot; issue 23)
    #[arg(long)]
    pub live_only: bool,
    /// Only the x86_64 fixture and the Secure Boot boots (enrolment, signed, unsigned)
    #[arg(long)]
    pub secure_boot_only: bool,
    /// Only the x86_64 fixture and the appliance boots (A, flipped store byte, A->B update)
    #[arg(long)]
    pub appliance_only: bool,
    /// Directory for images and console logs (default target/ci)
    #[arg(long)]
    pub out: Option<PathBuf>,
}

struct Row {
    name: String,
    secs: f64,
    result: Result<String>,
}

struct Run {
    rows: Vec<Row>,
    out: PathBuf,
}

impl Run {
    fn step<T>(&mut self, name: &str, f: impl FnOnce() -> Result<(T, String)>) -> Option<T> {
        eprintln!("xtask ci-boot: === {name}");
        let t = Timer::start();
        let r = f();
        let secs = t.secs();
        let (val, result) = match r {
            Ok((v, note)) => (Some(v), Ok(note)),
            Err(e) => {
                eprintln!("xtask ci-boot: FAILED: {name}: {e:#}");
                (None, Err(e))
            }
        };
        self.rows.push(Row {
            name: name.to_string(),
            secs,
            result,
        });
        val
    }

    fn boot(&mut self, name: &str, format: Format, image: &Path, disk: Disk, info: &FixtureInfo) {
        self.boot_with(name, format, image, disk, info, false);
    }

    /// [`Run::boot`]; `writable`: the guest's writes stay in the image (boot counting).
    fn boot_with(
        &mut self,
        name: &str,
        format: Format,
        image: &Path,
        disk: Disk,
        info: &FixtureInfo,
        writable: bool,
    ) {
        let firmware = Firmware::default_for(format);
        self.boot_on(name, (format, firmware, disk), image, info, writable);
    }

    /// Where a boot's serial console goes: `logs/IMAGE.DISK[.uefi|.bios].console.log` (the
    /// firmware named when not the format's own).
    fn console_log(
        &self,
        image: &Path,
        (format, firmware, disk): (Format, Firmware, Disk),
    ) -> PathBuf {
        let name = image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let fw = match firmware {
            _ if firmware == Firmware::default_for(format) => "",
            Firmware::Uefi => ".uefi",
            Firmware::Bios => ".bios",
        };
        self.out
            .join("logs")
            .join(format!("{name}.{}{fw}.console.log", disk.name()))
    }

    /// [`Run::boot_with`] on the given firmware.
    fn boot_on(
        &mut self,
        name: &str,
        (format, firmware, disk): (Format, Firmware, Disk),
        image: &Path,
        info: &FixtureInfo,
        writable: bool,
    ) {
        let spec = BootSpec {
            format,
            image,
            disk,
            timeout: boot::default_timeout(format),
            log: self.console_log(image, (format, firmware, disk)),
            verbose: false,
            writable,
            firmware,
        };
        self.boot_spec(name, &spec, info);
    }

    /// Boots `spec`: the step passes when the console shows exactly `info`'s marker (the
    /// BIOS formats': its GRUB toplevel's).
    fn boot_spec(&mut self, name: &str, spec: &BootSpec, info: &FixtureInfo) {
        self.step(name, || {
            let o = boot::boot(spec)?;
            boot::report(spec, &o)?;
            let want = if spec.format == Format::Qemu {
                info.grub_hybrid.as_ref().map(|g| g.marker.as_str())
            } else if spec.format.bios() {
                info.grub.as_ref().map(|g| g.marker.as_str())
            } else {
                info.marker.as_deref()
            }
            .unwrap_or_default();
            ensure!(
                o.detail == want,
                "booted, but printed {:?} instead of {want:?}",
                o.detail
            );
            Ok(((), format!("{:.1} s to marker, accel={}", o.secs, o.accel)))
        });
    }

    /// Issue 21: a 26.11-style closure with boot counting boots through the entry with the
    /// try counter, and systemd-boot counts the boot (the image is booted writable).
    fn boot_counting(&mut self, fx: &Path, out: &Path) {
        if let Some(c) = self.step(
            "imgbuild raw-efi, 26.11 closure, boot counting on (nixos-<sha256>+3.conf)",
            || {
                let c = bootcount::build(fx, out)?;
                let note = bootcount::inspect_before(&c)?;
                Ok((c, note))
            },
        ) {
            self.boot_with(
                "boot imgbuild raw-efi 26.11 boot counting (virtio, writable)",
                Format::RawEfi,
                &c.image,
                Disk::Virtio,
                &c.info,
                true,
            );
            self.step(
                "boot counting: systemd-boot counted the boot (+2-1), inspect shows it",
                || bootcount::after_boot(&c).map(|n| ((), n)),
            );
        }
    }

    fn expect_fail(&mut self, name: &str, format: Format, image: &Path, reason: &str) {
        let log = self.out.join("logs").join(format!(
            "{}.console.log",
            image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        self.step(name, || {
            let spec = BootSpec {
                format,
                image,
                disk: Disk::Virtio,
                timeout: boot::default_timeout(format),
                log,
                verbose: false,
                writable: false,
                firmware: Firmware::default_for(format),
            };
            let o = boot::boot(&spec)?;
            if o.ok {
                bail!("negative control booted OK: {}", o.detail);
            }
            ensure!(
                o.detail.contains(reason),
                "failed, but for the wrong reason: {}",
                o.detail
            );
            Ok((
                (),
                format!("failed as expected after {:.1} s: {}", o.secs, o.detail),
            ))
        });
    }
}

/// A fixture's step: built (or cached), noted with its size.
fn fixture_step(run: &mut Run, arch: Arch, dir: &Path) -> Option<FixtureInfo> {
    run.step(&format!("fixture {}", arch.name()), || {
        let i = fixture::build(arch, dir)?;
        let note = format!(
            "{} store paths, NAR {:.1} MiB",
            i.store_paths,
            i.total_nar_size as f64 / 1048576.0
        );
        Ok((i, note))
    })
}

/// x86_64's baseline (shell pipeline) image: bootctl, its negative control, both disks, and
/// the wrong-label negative control.
fn x86_baseline(run: &mut Run, fx: &Path, info: &FixtureInfo) {
    let out = run.out.clone();
    let img = out.join("baseline-raw-efi.img");
    if run
        .step("baseline raw-efi image", || {
            Ok((
                (),
                format!("{:.1} s", baseline::build(Format::RawEfi, fx, &img, None)?),
            ))
        })
        .is_some()
    {
        run.step("bootctl on baseline raw-efi", || {
            bootctl::check(&img).map(|()| ((), String::new()))
        });
        run.step(
            "negative control: bootctl without EFI/BOOT/BOOTX64.EFI must FAIL",
            || bootctl_negative(&img, &out.join("baseline-raw-efi-no-fallback.img")),
        );
        run.boot(
            "boot baseline raw-efi (virtio)",
            Format::RawEfi,
            &img,
            Disk::Virtio,
            info,
        );
        run.boot(
            "boot baseline raw-efi (nvme)",
            Format::RawEfi,
            &img,
            Disk::Nvme,
            info,
        );
    }
    let bad = out.join("baseline-raw-efi-wrong-label.img");
    if run
        .step("baseline raw-efi image, root label 'wrong-label'", || {
            Ok((
                (),
                format!(
                    "{:.1} s",
                    baseline::build(Format::RawEfi, fx, &bad, Some("wrong-label"))?
                ),
            ))
        })
        .is_some()
    {
        run.expect_fail(
            "negative control: wrong root label must FAIL",
            Format::RawEfi,
            &bad,
            "IMGBUILD-BOOT-FAIL root filesystem LABEL=nixos not found",
        );
    }
}

/// x86_64's images by the imgbuild CLI: raw-efi (bootctl, both disks), boot counting, and
/// the same disk in each container format.
fn x86_imgbuild(run: &mut Run, fx: &Path, info: &FixtureInfo) {
    if let Some(img) = run.step("imgbuild raw-efi image", || {
        Ok((boot::imgbuild_image(Format::RawEfi)?, String::new()))
    }) {
        run.step("bootctl on imgbuild raw-efi", || {
            bootctl::check(&img).map(|()| ((), String::new()))
        });
        run.boot(
            "boot imgbuild raw-efi (virtio)",
            Format::RawEfi,
            &img,
            Disk::Virtio,
            info,
        );
        run.boot(
            "boot imgbuild raw-efi (nvme)",
            Format::RawEfi,
            &img,
            Disk::Nvme,
            info,
        );
    }
    let out = run.out.clone();
    run.boot_counting(fx, &out);
    appliance::appliance(run, fx);
    // The same disk in the containers hypervisors take, read by QEMU's own drivers.
    for (format, disk) in [
        (Format::QemuEfi, Disk::Virtio),
        (Format::Azure, Disk::Nvme),
        (Format::Amazon, Disk::Virtio),
        (Format::Vmware, Disk::Nvme),
        (Format::Hyperv, Disk::Virtio),
    ] {
        let name = format.name();
        if let Some(img) = run.step(&format!("imgbuild {name} image"), || {
            Ok((boot::imgbuild_image(format)?, String::new()))
        }) {
            run.boot(
                &format!("boot imgbuild {name} ({})", disk.name()),
                format,
                &img,
                disk,
                info,
            );
        }
    }
}

/// aarch64's baseline sd-aarch64 image: booted, and without the MBR bootable flag (U-Boot
/// must give up).
fn aarch64_baseline(run: &mut Run, fa: &Path, info: &FixtureInfo) {
    let out = run.out.clone();
    let img = out.join("baseline-sd-aarch64.img.zst");
    if run
        .step("baseline sd-aarch64 image (.img.zst)", || {
            Ok((
                (),
                format!(
                    "{:.1} s",
                    baseline::build(Format::SdAarch64, fa, &img, None)?
                ),
            ))
        })
        .is_none()
    {
        return;
    }
    run.boot(
        "boot baseline sd-aarch64",
        Format::SdAarch64,
        &img,
        Disk::Virtio,
        info,
    );
    // U-Boot's distro boot scans only partitions flagged bootable: without the
    // flag on p2 it must give up at its `=> ` prompt, and the harness must say so
    let flat = out.join("baseline-sd-aarch64-no-bootable-flag.img");
    if run
        .step("sd-aarch64 image without the MBR bootable flag", || {
            util::run(
                cmd("zstd")
                    .args(["-q", "-d", "-f", "-o"])
                    .arg(&flat)
                    .arg(&img),
            )?;
            util::run(cmd("sfdisk").arg("--activate").arg(&flat).arg("-"))?;
            Ok(((), String::new()))
        })
        .is_some()
    {
        run.expect_fail(
            "negative control: no bootable flag must FAIL (U-Boot prompt)",
            Format::SdAarch64,
            &flat,
            "U-Boot gave up",
        );
    }
    let _ = std::fs::remove_file(&flat);
}

/// aarch64's sd-aarch64 image by the imgbuild CLI: QEMU's virt machine and a Raspberry Pi 3.
fn aarch64_imgbuild(run: &mut Run, info: &FixtureInfo) {
    if let Some(img) = run.step("imgbuild sd-aarch64 image", || {
        Ok((boot::imgbuild_image(Format::SdAarch64)?, String::new()))
    }) {
        run.boot(
            "boot imgbuild sd-aarch64",
            Format::SdAarch64,
            &img,
            Disk::Virtio,
            info,
        );
        // The Pi 3 path: SD card, Pi 3 U-Boot, extlinux, the kernel's mmc root.
        run.boot(
            "boot imgbuild sd-aarch64 on a Raspberry Pi 3 (QEMU raspi3b, SD card)",
            Format::SdAarch64,
            &img,
            Disk::Raspi3bSd,
            info,
        );
    }
}

pub fn run(args: CiArgs) -> Result<()> {
    let out = util::absolute(&args.out.unwrap_or_else(|| util::target_dir().join("ci")))?;
    std::fs::create_dir_all(out.join("logs"))?;
    let total = Timer::start();
    let mut run = Run {
        rows: Vec::new(),
        out: out.clone(),
    };

    // ---- x86_64 / raw-efi -------------------------------------------------------------------
    let fx = fixture::default_dir(Arch::X86_64);
    if args.boot_counting_only {
        if run
            .step("fixture x86_64", || {
                fixture::build(Arch::X86_64, &fx).map(|_| ((), String::new()))
            })
            .is_some()
        {
            run.boot_counting(&fx, &out);
        }
        return summary(&run, &total);
    }
    if args.bios_only {
        if let Some(info) = fixture_step(&mut run, Arch::X86_64, &fx) {
            bios::x86_bios(&mut run, &fx, &info);
        }
        return summary(&run, &total);
    }
    if args.secure_boot_only {
        if fixture_step(&mut run, Arch::X86_64, &fx).is_some() {
            run.secure_boot(&fx);
        }
        return summary(&run, &total);
    }
    if args.appliance_only {
        if fixture_step(&mut run, Arch::X86_64, &fx).is_some() {
            appliance::appliance(&mut run, &fx);
        }
        return summary(&run, &total);
    }
    if args.live_only {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            if arch == Arch::Aarch64 && args.skip_aarch64 {
                continue;
            }
            let dir = fixture::default_dir(arch);
            if fixture_step(&mut run, arch, &dir).is_some() {
                run.live(arch, &dir, !args.baseline_only);
            }
        }
        return summary(&run, &total);
    }
    if let Some(info) = fixture_step(&mut run, Arch::X86_64, &fx) {
        x86_baseline(&mut run, &fx, &info);
        if !args.baseline_only {
            x86_imgbuild(&mut run, &fx, &info);
            if !args.skip_bios {
                bios::x86_bios(&mut run, &fx, &info);
            }
            run.secure_boot(&fx);
        }
        run.live(Arch::X86_64, &fx, !args.baseline_only);
    }

    // ---- aarch64 / sd-aarch64 -----------------------------------------------------------------
    if !args.skip_aarch64 {
        let fa = fixture::default_dir(Arch::Aarch64);
        if let Some(info) = fixture_step(&mut run, Arch::Aarch64, &fa) {
            aarch64_baseline(&mut run, &fa, &info);
            if !args.baseline_only {
                aarch64_imgbuild(&mut run, &info);
            }
            run.live(Arch::Aarch64, &fa, !args.baseline_only);
        }
    }

    summary(&run, &total)
}

/// The summary table and the `ci-boot: N passed, N failed` line; an error if any failed.
fn summary(run: &Run, total: &Timer) -> Result<()> {
    println!("\nxtask ci-boot summary ({:.0} s in all):", total.secs());
    let mut failed = 0;
    for r in &run.rows {
        let (tag, note) = match &r.result {
            Ok(n) => ("ok  ", n.clone()),
            Err(e) => {
                failed += 1;
                (
                    "FAIL",
                    format!("{e:#}")
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                )
            }
        };
        println!("  {tag} {:<68} {:>6.1} s  {note}", r.name, r.secs);
    }
    let passed = run.rows.len() - failed;
    println!("ci-boot: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} boot test step(s) failed");
    }
    Ok(())
}

/// A copy of a good raw-efi image without the removable-media loader must fail the bootctl
/// check, naming the missing file (proves the check can fail).
fn bootctl_negative(good: &Path, broken: &Path) -> Result<((), String)> {
    util::run(cmd("cp").arg("--sparse=always").arg(good).arg(broken))?;
    let off = bootctl::esp_offset(broken)?;
    util::run(
        cmd("mdel")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(format!("{}@@{off}", broken.display()))
            .arg("::/EFI/BOOT/BOOTX64.EFI"),
    )?;
    let res = bootctl::check(broken);
    let _ = std::fs::remove_file(broken);
    match res {
        Ok(()) => bail!("bootctl check passed on an ESP without EFI/BOOT/BOOTX64.EFI"),
        Err(e) => {
            let m = format!("{e:#}");
            ensure!(
                m.contains("/EFI/BOOT/BOOTX64.EFI"),
                "failed for the wrong reason: {m}"
            );
            Ok((
                (),
                "failed as expected: EFI/BOOT/BOOTX64.EFI missing".into(),
            ))
        }
    }
}
