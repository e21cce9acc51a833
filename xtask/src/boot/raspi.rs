//! sd-aarch64 on QEMU's Raspberry Pi 3 model (`--disk raspi3b-sd`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use super::qemu::run_qemu;
use super::{BootSpec, Outcome};
use crate::fixture::Arch;
use crate::util::{self, cmd};

/// Debian's `u-boot-rpi:arm64`, the Raspberry Pi 3 build (QEMU's raspi3b loads it as the
/// Pi firmware would, as `-kernel`).
pub const UBOOT_RPI3: &str = "/usr/lib/u-boot/rpi_3/u-boot.bin";
/// The Pi 3 device tree U-Boot is started with (the fixture kernel's, upstream name).
const RPI3_DTB: &str = "broadcom/bcm2837-rpi-3-b.dtb";

/// sd-aarch64 on QEMU's raspi3b: the Pi 3 U-Boot as `-kernel` (where the Pi firmware would
/// load it from), the Pi 3 device tree as `-dtb`, the image as the SD card. The first serial
/// port (PL011, `ttyAMA0`) carries the kernel console, the second (mini UART) U-Boot's, which
/// goes to `LOG.uboot`.
pub(super) fn boot_raspi3b(spec: &BootSpec, card: &Path) -> Result<Outcome> {
    util::need_tools(&[("qemu-system-aarch64", "qemu-system-arm")])?;
    if !Path::new(UBOOT_RPI3).is_file() {
        bail!("{UBOOT_RPI3} not found (apt-get install u-boot-rpi:arm64)");
    }
    let info = crate::fixture::FixtureInfo::load(&crate::fixture::default_dir(Arch::Aarch64))
        .context("the Pi 3 device tree comes from the aarch64 fixture's kernel")?;
    let dtbs = info
        .dtbs
        .as_deref()
        .context("the aarch64 fixture has no dtbs")?;
    let dtb = crate::fixture::default_dir(Arch::Aarch64)
        .join(dtbs.trim_start_matches('/'))
        .join(RPI3_DTB);
    if !dtb.is_file() {
        bail!("{} not found", dtb.display());
    }
    let mut uboot_log = spec.log.clone().into_os_string();
    uboot_log.push(".uboot");
    let mut c = cmd("qemu-system-aarch64");
    c.args(["-M", "raspi3b", "-kernel", UBOOT_RPI3, "-dtb"])
        .arg(&dtb)
        .arg("-drive")
        .arg(format!(
            "if=sd,format=raw,file={}",
            card.display().to_string().replace(',', ",,")
        ))
        .args(["-display", "none", "-no-reboot", "-monitor", "none"])
        .args(["-serial", "stdio", "-serial"])
        .arg(format!("file:{}", PathBuf::from(&uboot_log).display()));
    run_qemu(spec, c, "tcg", &[])
}
