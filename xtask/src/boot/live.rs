//! Live boots (issue 23): the ISO as a CD or as a disk, under OVMF or SeaBIOS on x86_64 and
//! under edk2 on aarch64's `virt`; netboot as QEMU's direct kernel boot (`-kernel`, `-initrd`,
//! `-append` with the command line of the directory's `netboot.ipxe`).

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

use super::qemu::run_qemu;
use super::{console_only, disk_args, x86_machine_on, BootSpec, Disk, Firmware, Format, Outcome};
use crate::fixture::Arch;
use crate::util;

/// Debian's `qemu-efi-aarch64`: edk2 for QEMU's `virt`, loadable with `-bios`.
pub const AAVMF_BIOS: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";

/// The console lines that mean SeaBIOS or isolinux gave up.
const SEABIOS_GIVEUP: &[(&str, &str)] = &[
    ("No bootable device", "SeaBIOS found nothing bootable"),
    ("\nboot: ", "isolinux stopped at its boot: prompt"),
];

/// The console lines that mean edk2 on aarch64 gave up.
const AAVMF_GIVEUP: &[(&str, &str)] = &[
    ("Shell> ", "edk2 dropped to the UEFI shell"),
    (
        "No bootable option or device was found",
        "edk2 found nothing bootable",
    ),
];

/// QEMU's arguments for an ISO: a CD on the `pc` machine's PIIX IDE (`-cdrom`), a CD on
/// virtio-scsi, or the hybrid image as a hard disk (IDE or virtio-blk). x86_64 ISOs boot on
/// `pc` under both firmwares: the cloud kernel has PIIX but no AHCI (q35's CD controller).
fn iso_args(spec: &BootSpec, image: &Path) -> Vec<String> {
    let file = image.display().to_string().replace(',', ",,");
    let cd = |id: &str| format!("if=none,id={id},file={file},format=raw,media=cdrom,readonly=on");
    match spec.disk {
        Disk::Cdrom if spec.format.arch() == Arch::X86_64 => {
            vec![
                "-drive".into(),
                format!("file={file},format=raw,media=cdrom,readonly=on"),
            ]
        }
        Disk::Cdrom | Disk::ScsiCd => vec![
            "-device".into(),
            "virtio-scsi-pci,id=scsi0".into(),
            "-drive".into(),
            cd("cd0"),
            "-device".into(),
            "scsi-cd,drive=cd0,bus=scsi0.0".into(),
        ],
        Disk::Ide => vec![
            "-drive".into(),
            format!("file={file},format=raw,if=ide,snapshot=on"),
        ],
        Disk::Virtio | Disk::Nvme | Disk::Raspi3bSd => disk_args(spec, image),
    }
}

/// x86_64 with SeaBIOS: QEMU's `pc` machine (PIIX IDE), no flash, the BIOS disks' machine
/// (KVM when usable); its command and accelerator.
fn seabios_machine() -> Result<(std::process::Command, &'static str)> {
    let (c, accel, _) = super::bios::pc_machine()?;
    Ok((c, accel))
}

/// aarch64's `virt` with edk2 as `-bios` (or none: direct kernel boot), TCG.
fn aarch64_virt(firmware: bool) -> Result<std::process::Command> {
    let mut c = super::aarch64_virt()?;
    if firmware {
        if !Path::new(AAVMF_BIOS).is_file() {
            bail!("{AAVMF_BIOS} not found (apt-get install qemu-efi-aarch64)");
        }
        c.arg("-bios").arg(AAVMF_BIOS);
    }
    Ok(c)
}

/// Boots an ISO image.
pub(super) fn boot_iso(spec: &BootSpec, image: &Path, work: &Path) -> Result<Outcome> {
    let args = iso_args(spec, image);
    let (mut c, accel, giveup) = match (spec.format.arch(), spec.firmware) {
        (Arch::X86_64, Firmware::Uefi) => x86_machine_on("pc", work)?,
        (Arch::X86_64, Firmware::Bios) => {
            let (c, accel) = seabios_machine()?;
            (c, accel, SEABIOS_GIVEUP)
        }
        (Arch::Aarch64, Firmware::Uefi) => (aarch64_virt(true)?, "tcg", AAVMF_GIVEUP),
        (Arch::Aarch64, Firmware::Bios) => {
            bail!("aarch64 ISOs boot with UEFI only (no --firmware bios)")
        }
    };
    console_only(&mut c);
    c.args(&args);
    run_qemu(spec, c, accel, giveup)
}

/// A netboot directory: its kernel, its initrd and the command line of `netboot.ipxe`.
struct Netboot {
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: String,
}

/// The kernel command line of a `netboot.ipxe`: its `kernel` line without the command and
/// the kernel's file name, and without iPXE's own `${...}` settings.
fn ipxe_cmdline(text: &str) -> Option<(String, String)> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kernel "))?;
    let mut words = line.split_whitespace().skip(1);
    let kernel = words.next()?.to_string();
    let params: Vec<&str> = words.filter(|w| !w.contains("${")).collect();
    Some((kernel, params.join(" ")))
}

fn read_netboot(dir: &Path) -> Result<Netboot> {
    let ipxe = dir.join("netboot.ipxe");
    let text = fs::read_to_string(&ipxe).with_context(|| format!("reading {}", ipxe.display()))?;
    let (kernel, cmdline) =
        ipxe_cmdline(&text).with_context(|| format!("no `kernel` line in {}", ipxe.display()))?;
    // the file name after `kernel` may be a URL (`${url}bzImage`, `http://.../bzImage`)
    let name = kernel.rsplit(['/', '}']).next().unwrap_or(&kernel);
    let n = Netboot {
        kernel: dir.join(name),
        initrd: dir.join("initrd"),
        cmdline,
    };
    for f in [&n.kernel, &n.initrd] {
        if !f.is_file() {
            bail!("netboot directory {} has no {}", dir.display(), f.display());
        }
    }
    Ok(n)
}

/// Boots a netboot directory (kernel, initrd, netboot.ipxe) by QEMU's direct kernel boot.
pub(super) fn boot_netboot(spec: &BootSpec) -> Result<Outcome> {
    let dir = util::absolute(spec.image)?;
    let n = read_netboot(&dir)?;
    let (mut c, accel) = match spec.format.arch() {
        Arch::X86_64 => seabios_machine()?,
        Arch::Aarch64 => (aarch64_virt(false)?, "tcg"),
    };
    console_only(&mut c);
    c.arg("-kernel")
        .arg(&n.kernel)
        .arg("-initrd")
        .arg(&n.initrd)
        .arg("-append")
        .arg(&n.cmdline);
    run_qemu(spec, c, accel, &[])
}

/// The live formats: booted by this file, not as a disk with a boot loader.
pub(super) fn is_live(format: Format) -> bool {
    matches!(
        format,
        Format::Iso | Format::IsoAarch64 | Format::Netboot | Format::NetbootAarch64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipxe_kernel_line() {
        let text = "#!ipxe\n# comment\nkernel bzImage init=/nix/store/x-nixos/init initrd=initrd console=ttyS0,115200 ${cmdline}\ninitrd initrd\nboot\n";
        let (k, c) = ipxe_cmdline(text).expect("has a kernel line");
        assert_eq!(k, "bzImage");
        assert_eq!(
            c,
            "init=/nix/store/x-nixos/init initrd=initrd console=ttyS0,115200"
        );
        assert!(ipxe_cmdline("#!ipxe\ninitrd initrd\n").is_none());
    }
}
