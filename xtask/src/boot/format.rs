//! The image kinds `cargo xtask boot` boots ([`Format`]) and how QEMU attaches them
//! ([`Disk`]).

use crate::fixture::{Arch, Variant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[value(name = "raw-efi")]
    RawEfi,
    #[value(name = "sd-aarch64")]
    SdAarch64,
    /// The raw-efi disk in a qcow2 file, booted as raw-efi.
    #[value(name = "qemu-efi")]
    QemuEfi,
    /// The raw-efi disk in a dynamic VHD, booted as raw-efi.
    #[value(name = "amazon")]
    Amazon,
    /// The raw-efi disk as a fixed VHD (raw disk + footer), booted as raw-efi.
    #[value(name = "azure")]
    Azure,
    /// The raw-efi disk as a dynamic VHDX, booted as raw-efi.
    #[value(name = "hyperv")]
    Hyperv,
    /// The raw-efi disk as a stream-optimized VMDK, booted as raw-efi.
    #[value(name = "vmware")]
    Vmware,
    /// The A/B appliance (issue 26) of the fixture's `result-appliance`: OVMF, systemd-boot
    /// boots its UKI (`EFI/Linux/<imageId>_<imageVersion>.efi`), whose .cmdline carries
    /// `usrhash=`; the initrd maps the store pair with veritysetup and reads every block.
    #[value(name = "appliance")]
    Appliance,
    /// MBR, GRUB on the MBR gap: booted with SeaBIOS.
    #[value(name = "raw")]
    Raw,
    /// GPT with a BIOS boot partition and an ESP, in qcow2: SeaBIOS (or OVMF, `--firmware
    /// uefi`).
    #[value(name = "qemu")]
    Qemu,
    /// The raw disk as a gzip'd qcow2 (`.qcow2.gz`): SeaBIOS.
    #[value(name = "digitalocean")]
    Digitalocean,
    /// The raw disk for Hetzner Cloud: SeaBIOS.
    #[value(name = "hetzner")]
    Hetzner,
    /// Linode's ext4 disk without a partition table (`.img.gz`), as Linode's "GRUB 2" boot
    /// mode boots it: SeaBIOS starts a GRUB CD (Debian's `grub-mkrescue`, made at boot
    /// time) that reads the disk's `/boot/grub/grub.cfg`.
    #[value(name = "linode")]
    Linode,
    /// The x86_64 live ISO (hybrid): a CD or a disk, OVMF or (`--firmware bios`) SeaBIOS.
    #[value(name = "iso")]
    Iso,
    /// The aarch64 live ISO, UEFI only (edk2 on `virt`).
    #[value(name = "iso-aarch64")]
    IsoAarch64,
    /// An x86_64 netboot directory (kernel, initrd with the store, netboot.ipxe).
    #[value(name = "netboot")]
    Netboot,
    /// An aarch64 netboot directory.
    #[value(name = "netboot-aarch64")]
    NetbootAarch64,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::RawEfi => "raw-efi",
            Format::SdAarch64 => "sd-aarch64",
            Format::QemuEfi => "qemu-efi",
            Format::Amazon => "amazon",
            Format::Azure => "azure",
            Format::Vmware => "vmware",
            Format::Hyperv => "hyperv",
            Format::Appliance => "appliance",
            Format::Raw => "raw",
            Format::Qemu => "qemu",
            Format::Digitalocean => "digitalocean",
            Format::Hetzner => "hetzner",
            Format::Linode => "linode",
            Format::Iso => "iso",
            Format::IsoAarch64 => "iso-aarch64",
            Format::Netboot => "netboot",
            Format::NetbootAarch64 => "netboot-aarch64",
        }
    }
    /// imgbuild's name of the format (the same for both architectures).
    pub fn cli_name(self) -> &'static str {
        match self {
            Format::IsoAarch64 => "iso",
            Format::NetbootAarch64 => "netboot",
            f => f.name(),
        }
    }
    /// Which of the fixture's toplevels the format is built from: the BIOS formats image
    /// the GRUB one (`result-grub`), the hybrid `qemu` the one with GRUB for UEFI too
    /// (`result-grub-hybrid`), the appliance its own (`result-appliance`, image version 1).
    pub fn variant(self) -> Variant {
        match self {
            Format::Appliance => Variant::Appliance,
            Format::Iso | Format::IsoAarch64 => Variant::Iso,
            Format::Netboot | Format::NetbootAarch64 => Variant::Netboot,
            Format::Qemu => Variant::GrubHybrid,
            f if f.bios() => Variant::Grub,
            _ => Variant::Disk,
        }
    }
    /// How the image is attached unless `--disk` says otherwise.
    pub fn default_disk(self) -> Disk {
        match self {
            Format::Iso | Format::IsoAarch64 => Disk::Cdrom,
            _ => Disk::Virtio,
        }
    }
    /// Whether the format's disk boots with GRUB from a PC BIOS (the fixture's GRUB
    /// toplevel, `result-grub`).
    pub fn bios(self) -> bool {
        matches!(
            self,
            Format::Raw | Format::Qemu | Format::Digitalocean | Format::Hetzner | Format::Linode
        )
    }
    /// What `imgbuild` is given besides the closure: linode skips the system check, since
    /// the fixture's GRUB toplevel installs GRUB on `/dev/vda` and linode wants `nodev`
    /// (only `/boot/grub/state` and grubenv differ: grub.cfg is the same).
    pub(super) fn imgbuild_args(self) -> &'static [&'static str] {
        match self {
            Format::Linode => &["--no-system-check"],
            _ => &[],
        }
    }
    pub fn arch(self) -> Arch {
        match self {
            Format::RawEfi
            | Format::QemuEfi
            | Format::Amazon
            | Format::Azure
            | Format::Vmware
            | Format::Hyperv
            | Format::Appliance
            | Format::Iso
            | Format::Netboot => Arch::X86_64,
            Format::SdAarch64 | Format::IsoAarch64 | Format::NetbootAarch64 => Arch::Aarch64,
            Format::Raw
            | Format::Qemu
            | Format::Digitalocean
            | Format::Hetzner
            | Format::Linode => Arch::X86_64,
        }
    }
    /// Seconds a boot may take unless `--timeout` says otherwise.
    pub(super) fn default_timeout(self) -> u64 {
        match self.arch() {
            Arch::X86_64 => 240,
            Arch::Aarch64 => 300,
        }
    }
    /// The image file imgbuild writes for the boot tests.
    pub(super) fn file_name(self) -> &'static str {
        match self {
            Format::RawEfi => "imgbuild-raw-efi.img",
            Format::SdAarch64 => "imgbuild-sd-aarch64.img.zst",
            Format::QemuEfi => "imgbuild-qemu-efi.qcow2",
            Format::Amazon => "imgbuild-amazon.vhd",
            Format::Azure => "imgbuild-azure.vhd",
            Format::Vmware => "imgbuild-vmware.vmdk",
            Format::Hyperv => "imgbuild-hyperv.vhdx",
            Format::Appliance => "imgbuild-appliance.img",
            Format::Raw => "imgbuild-raw.img",
            Format::Qemu => "imgbuild-qemu.qcow2",
            Format::Digitalocean => "imgbuild-digitalocean.qcow2.gz",
            Format::Hetzner => "imgbuild-hetzner.img",
            Format::Linode => "imgbuild-linode.img.gz",
            Format::Iso => "imgbuild-iso.iso",
            Format::IsoAarch64 => "imgbuild-iso-aarch64.iso",
            Format::Netboot => "imgbuild-netboot",
            Format::NetbootAarch64 => "imgbuild-netboot-aarch64",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Disk {
    Virtio,
    Nvme,
    /// PIIX IDE of QEMU's `pc` machine: a BIOS disk, or an ISO as a hard disk.
    Ide,
    /// sd-aarch64 only: QEMU's `raspi3b` machine, the image as its SD card, booted by the Pi 3
    /// U-Boot through the card's extlinux.conf.
    Raspi3bSd,
    /// ISOs: a CD on QEMU's `pc` machine's PIIX IDE (`-cdrom`); on aarch64 the same as
    /// scsi-cd.
    Cdrom,
    /// ISOs: a CD on virtio-scsi (`scsi-cd`).
    ScsiCd,
}

impl Disk {
    pub fn name(self) -> &'static str {
        match self {
            Disk::Virtio => "virtio",
            Disk::Nvme => "nvme",
            Disk::Ide => "ide",
            Disk::Raspi3bSd => "raspi3b-sd",
            Disk::Cdrom => "cdrom",
            Disk::ScsiCd => "scsi-cd",
        }
    }
}
