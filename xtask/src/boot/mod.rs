//! `cargo xtask boot`: boots a disk image in QEMU and watches the serial console for the
//! fixture initrd's verdict (`IMGBUILD-BOOT-OK` / `IMGBUILD-BOOT-FAIL`), failing fast when
//! the firmware or kernel gives up.
//!
//! raw-efi: `qemu-system-x86_64 -M q35` with OVMF (code + a scratch copy of the vars), the
//! disk as virtio-blk or NVMe, `snapshot=on` (unless `writable`); systemd-boot must pick its entry by itself.
//! sd-aarch64: `qemu-system-aarch64 -M virt -cpu cortex-a57` with Debian's U-Boot as `-bios`,
//! or (`--disk raspi3b-sd`) QEMU's Raspberry Pi 3 model booting the image from its SD card
//! through Debian's Pi 3 U-Boot
//! (U-Boot's distro boot finds extlinux.conf on the bootable partition), always TCG.
//! raw, qemu, digitalocean, hetzner (GRUB, PC BIOS): QEMU's default `pc` machine and its
//! SeaBIOS, the disk on IDE or virtio-blk (`bios.rs`); `--firmware uefi` boots the hybrid
//! `qemu` image with OVMF instead.

pub mod bios;
mod qemu;

pub use bios::Firmware;

use crate::fixture::{self, Arch};
use crate::util::{self, cmd, Timer};
use anyhow::{bail, Context, Result};
use qemu::run_qemu;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
pub const UBOOT_QEMU_ARM64: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// Debian's `u-boot-rpi:arm64`, the Raspberry Pi 3 build (QEMU's raspi3b loads it as the
/// Pi firmware would, as `-kernel`).
pub const UBOOT_RPI3: &str = "/usr/lib/u-boot/rpi_3/u-boot.bin";
/// The Pi 3 device tree U-Boot is started with (the fixture kernel's, upstream name).
const RPI3_DTB: &str = "broadcom/bcm2837-rpi-3-b.dtb";

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
            Format::Raw => "raw",
            Format::Qemu => "qemu",
            Format::Digitalocean => "digitalocean",
            Format::Hetzner => "hetzner",
        }
    }
    /// Whether the format's disk boots with GRUB from a PC BIOS (the fixture's GRUB
    /// toplevel, `result-grub`).
    pub fn bios(self) -> bool {
        matches!(
            self,
            Format::Raw | Format::Qemu | Format::Digitalocean | Format::Hetzner
        )
    }
    pub fn arch(self) -> Arch {
        match self {
            Format::RawEfi
            | Format::QemuEfi
            | Format::Amazon
            | Format::Azure
            | Format::Vmware
            | Format::Hyperv => Arch::X86_64,
            Format::SdAarch64 => Arch::Aarch64,
            Format::Raw | Format::Qemu | Format::Digitalocean | Format::Hetzner => Arch::X86_64,
        }
    }
    fn default_timeout(self) -> u64 {
        match self {
            Format::Raw | Format::Qemu | Format::Digitalocean | Format::Hetzner => 240,
            Format::RawEfi
            | Format::QemuEfi
            | Format::Amazon
            | Format::Azure
            | Format::Vmware
            | Format::Hyperv => 240,
            Format::SdAarch64 => 300,
        }
    }
    /// The image file imgbuild writes for the boot tests.
    fn file_name(self) -> &'static str {
        match self {
            Format::RawEfi => "imgbuild-raw-efi.img",
            Format::SdAarch64 => "imgbuild-sd-aarch64.img.zst",
            Format::QemuEfi => "imgbuild-qemu-efi.qcow2",
            Format::Amazon => "imgbuild-amazon.vhd",
            Format::Azure => "imgbuild-azure.vhd",
            Format::Vmware => "imgbuild-vmware.vmdk",
            Format::Hyperv => "imgbuild-hyperv.vhdx",
            Format::Raw => "imgbuild-raw.img",
            Format::Qemu => "imgbuild-qemu.qcow2",
            Format::Digitalocean => "imgbuild-digitalocean.qcow2.gz",
            Format::Hetzner => "imgbuild-hetzner.img",
        }
    }
}

/// QEMU's name for the image's container, from its extension.
fn drive_format(image: &Path) -> &'static str {
    match image.extension().and_then(|e| e.to_str()) {
        Some("qcow2") => "qcow2",
        Some("vhd") => "vpc",
        Some("vmdk") => "vmdk",
        Some("vhdx") => "vhdx",
        _ => "raw",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Disk {
    Virtio,
    Nvme,
    /// PIIX IDE of QEMU's `pc` machine (BIOS boots).
    Ide,
    /// sd-aarch64 only: QEMU's `raspi3b` machine, the image as its SD card, booted by the Pi 3
    /// U-Boot through the card's extlinux.conf.
    Raspi3bSd,
}

impl Disk {
    pub fn name(self) -> &'static str {
        match self {
            Disk::Virtio => "virtio",
            Disk::Nvme => "nvme",
            Disk::Ide => "ide",
            Disk::Raspi3bSd => "raspi3b-sd",
        }
    }
}

#[derive(clap::Args)]
pub struct BootArgs {
    #[arg(value_enum)]
    pub format: Format,
    /// Image to boot (.img, .img.zst, .qcow2, .vhd). Default: build the fixture and an image with
    /// target/release/imgbuild
    pub image: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "virtio")]
    pub disk: Disk,
    /// x86_64: SeaBIOS (`pc` machine) or OVMF (`q35`); default: bios for raw, qemu,
    /// digitalocean and hetzner, uefi for the others
    #[arg(long, value_enum)]
    pub firmware: Option<Firmware>,
    /// Seconds before giving up (default 240 raw-efi, 300 sd-aarch64)
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Serial console log (default `target/boot-logs/IMAGE.DISK.console.log`)
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Stream the serial console to stderr while booting
    #[arg(long, short)]
    pub verbose: bool,
    /// Boot without `snapshot=on`: the guest's writes (systemd-boot's boot counting
    /// renames) stay in the image (raw images)
    #[arg(long)]
    pub writable: bool,
}

/// What the guest did.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    /// The marker line on success, else why it failed.
    pub detail: String,
    pub secs: f64,
    pub accel: &'static str,
    pub log: PathBuf,
}

pub struct BootSpec<'a> {
    pub format: Format,
    pub image: &'a Path,
    pub disk: Disk,
    pub timeout: Duration,
    pub log: PathBuf,
    pub verbose: bool,
    /// Let the guest write to the image (no `snapshot=on`): what systemd-boot's boot
    /// counting does to the ESP is then in the image afterwards (raw images only).
    pub writable: bool,
    /// x86_64: SeaBIOS or OVMF.
    pub firmware: Firmware,
}

pub fn default_log(image: &Path, disk: Disk) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    util::target_dir()
        .join("boot-logs")
        .join(format!("{name}.{}.console.log", disk.name()))
}

pub(super) fn kvm_usable() -> bool {
    match std::env::var("IMGBUILD_ACCEL").as_deref() {
        Ok("tcg") => return false,
        Ok("kvm") => return true,
        _ => {}
    }
    // /dev/kvm alone is not enough: nested KVM without vmx/svm (e.g. inside Firecracker)
    // opens fine and then dies with "KVM internal error" as soon as OVMF runs.
    let dev = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let flag = fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    });
    dev && flag
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The image as QEMU will read it: absolute, and decompressed into `work` when `.zst`.
fn local_image(spec: &BootSpec, work: &Path) -> Result<PathBuf> {
    let image = util::absolute(spec.image)?;
    if !image.is_file() {
        bail!("no such image: {}", image.display());
    }
    if image.extension().is_some_and(|e| e == "gz") {
        // DigitalOcean's `.qcow2.gz`: QEMU reads the qcow2 inside.
        let inner = work.join(image.file_stem().context("image name")?);
        let f = fs::File::create(&inner)?;
        util::run(cmd("gzip").arg("-dc").arg(&image).stdout(f))
            .context("decompressing the image")?;
        return Ok(inner);
    }
    if image.extension().is_none_or(|e| e != "zst") {
        return Ok(image);
    }
    let raw = work.join("disk.img");
    util::run(
        cmd("zstd")
            .args(["-q", "-d", "-f", "-o"])
            .arg(&raw)
            .arg(&image),
    )
    .context("decompressing the image")?;
    Ok(raw)
}

/// QEMU's arguments for the disk: virtio-blk or NVMe, `snapshot=on` unless writable.
fn disk_args(spec: &BootSpec, image: &Path) -> Vec<String> {
    let snapshot = if spec.writable { "" } else { ",snapshot=on" };
    let drive = |extra: &str| {
        format!(
            "file={},format={}{snapshot}{extra}",
            image.display().to_string().replace(',', ",,"),
            drive_format(image)
        )
    };
    match spec.disk {
        Disk::Virtio | Disk::Raspi3bSd => vec!["-drive".into(), drive(",if=virtio")],
        Disk::Ide => vec!["-drive".into(), drive(",if=ide")],
        Disk::Nvme => vec![
            "-drive".into(),
            drive(",if=none,id=d0"),
            "-device".into(),
            "nvme,drive=d0,serial=imgbuild".into(),
        ],
    }
}

/// A QEMU machine: the command so far, its accelerator, and the console lines that mean the
/// firmware gave up (each with what to say).
pub(super) type Machine = (
    std::process::Command,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// x86_64: q35 with OVMF (code, and a scratch copy of the vars in `work`), KVM when usable.
fn x86_machine(work: &Path) -> Result<Machine> {
    util::need_tools(&[("qemu-system-x86_64", "qemu-system-x86")])?;
    for f in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(f).is_file() {
            bail!("{f} not found (apt-get install ovmf)");
        }
    }
    let vars = work.join("OVMF_VARS.fd");
    fs::copy(OVMF_VARS, &vars)?;
    let kvm = kvm_usable();
    let accel = if kvm { "kvm" } else { "tcg" };
    let mut c = cmd("qemu-system-x86_64");
    c.args(["-machine", "q35", "-accel", accel, "-cpu"])
        .arg(if kvm { "host" } else { "max" })
        .args(["-smp", "2", "-m", "1024"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ));
    Ok((
        c,
        accel,
        &[
            ("Shell> ", "OVMF dropped to the UEFI shell"),
            (
                "No bootable option or device was found",
                "OVMF found nothing bootable",
            ),
        ],
    ))
}

/// aarch64: QEMU's virt machine, cortex-a57, Debian's U-Boot as `-bios`, TCG.
fn aarch64_machine() -> Result<Machine> {
    util::need_tools(&[("qemu-system-aarch64", "qemu-system-arm")])?;
    if !Path::new(UBOOT_QEMU_ARM64).is_file() {
        bail!("{UBOOT_QEMU_ARM64} not found (apt-get install u-boot-qemu)");
    }
    let mut c = cmd("qemu-system-aarch64");
    c.args([
        "-M",
        "virt",
        "-accel",
        "tcg",
        "-cpu",
        "cortex-a57",
        "-smp",
        "2",
        "-m",
        "1024",
        "-bios",
        UBOOT_QEMU_ARM64,
    ]);
    Ok((
        c,
        "tcg",
        &[("\n=> ", "U-Boot gave up and dropped to its `=> ` prompt")],
    ))
}

/// Boots `spec.image` and reports what happened. Errors mean the harness itself failed.
pub fn boot(spec: &BootSpec) -> Result<Outcome> {
    let work = tempfile::Builder::new()
        .prefix("xtask-boot-")
        .tempdir_in(util::target_dir())
        .or_else(|_| tempfile::tempdir())
        .context("creating a scratch directory")?;
    let image = local_image(spec, work.path())?;
    if spec.disk == Disk::Raspi3bSd {
        if spec.format != Format::SdAarch64 {
            bail!("--disk raspi3b-sd boots sd-aarch64 images only");
        }
        // QEMU's SD card model wants a power-of-two size: boot a resized copy (MBR images
        // do not mind extra space at the end).
        let copy = work.path().join("sd-card.img");
        util::run(cmd("cp").arg("--sparse=always").arg(&image).arg(&copy))?;
        let len = fs::metadata(&copy)?.len();
        let f = fs::OpenOptions::new().write(true).open(&copy)?;
        f.set_len(len.next_power_of_two())?;
        return boot_raspi3b(spec, &copy);
    }
    let disk_args = disk_args(spec, &image);
    let (mut c, accel, giveup) = match spec.format {
        _ if spec.format.arch() == Arch::X86_64 && spec.firmware == Firmware::Bios => {
            bios::pc_machine()?
        }
        Format::Raw | Format::Qemu | Format::Digitalocean | Format::Hetzner => {
            x86_machine(work.path())?
        }
        Format::RawEfi
        | Format::QemuEfi
        | Format::Amazon
        | Format::Azure
        | Format::Vmware
        | Format::Hyperv => x86_machine(work.path())?,
        Format::SdAarch64 => aarch64_machine()?,
    };
    c.args([
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        "stdio",
    ])
    .args(&disk_args);
    run_qemu(spec, c, accel, giveup)
}

/// sd-aarch64 on QEMU's raspi3b: the Pi 3 U-Boot as `-kernel` (where the Pi firmware would
/// load it from), the Pi 3 device tree as `-dtb`, the image as the SD card. The first serial
/// port (PL011, `ttyAMA0`) carries the kernel console, the second (mini UART) U-Boot's, which
/// goes to `LOG.uboot`.
fn boot_raspi3b(spec: &BootSpec, card: &Path) -> Result<Outcome> {
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

/// Prints the outcome like a test runner; Ok only for a good boot.
pub fn report(spec: &BootSpec, o: &Outcome) -> Result<()> {
    if o.ok {
        println!("PASS: {}", o.detail);
        println!(
            "boot-time: {:.1} s ({} {} {:?}, accel={}) log: {}",
            o.secs,
            spec.format.name(),
            spec.disk.name(),
            spec.firmware,
            o.accel,
            o.log.display()
        );
        Ok(())
    } else {
        let text = fs::read(&o.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        eprintln!("--- last 40 console lines of {}:", o.log.display());
        eprintln!("{}", tail(&text, 40));
        bail!(
            "boot of {} ({}, {}) FAILED after {:.1} s: {}; serial log: {}",
            spec.image.display(),
            spec.format.name(),
            spec.disk.name(),
            o.secs,
            o.detail,
            o.log.display()
        )
    }
}

/// The imgbuild CLI the boot tests run: `$IMGBUILD_BIN` when set (e.g. a debug build while
/// iterating), else target/release/imgbuild, built first.
pub fn imgbuild_bin() -> Result<PathBuf> {
    if let Some(b) = std::env::var_os("IMGBUILD_BIN").filter(|b| !b.is_empty()) {
        return util::absolute(Path::new(&b));
    }
    let root = util::repo_root();
    util::run(
        cmd("cargo")
            .current_dir(&root)
            .args(["build", "--release", "--bin", "imgbuild"]),
    )
    .context("building the imgbuild CLI (target/release/imgbuild)")?;
    Ok(util::target_dir().join("release/imgbuild"))
}

/// Builds the fixture (if needed) and an image of `format` from it with the imgbuild CLI.
pub fn imgbuild_image(format: Format) -> Result<PathBuf> {
    let fix = fixture::default_dir(format.arch());
    fixture::ensure_built(format.arch(), &fix)?;
    let bin = imgbuild_bin()?;
    let out_dir = util::target_dir().join("boot");
    fs::create_dir_all(&out_dir)?;
    let out = out_dir.join(format.file_name());
    let t = Timer::start();
    // The BIOS formats image the fixture's GRUB toplevel.
    let result = if format.bios() {
        "result-grub"
    } else {
        "result"
    };
    util::run(
        cmd(&bin)
            .arg(format.name())
            .arg("--closure")
            .arg(fix.join(result))
            .arg("--store-root")
            .arg(&fix)
            .arg("-o")
            .arg(&out),
    )?;
    eprintln!(
        "xtask: imgbuild {} -> {} in {:.1} s",
        format.name(),
        out.display(),
        t.secs()
    );
    Ok(out)
}

pub fn cmd_boot(args: BootArgs) -> Result<()> {
    let image = match &args.image {
        Some(i) => i.clone(),
        None => imgbuild_image(args.format)?,
    };
    let spec = BootSpec {
        format: args.format,
        image: &image,
        disk: args.disk,
        timeout: Duration::from_secs(args.timeout.unwrap_or(args.format.default_timeout())),
        log: args
            .log
            .clone()
            .unwrap_or_else(|| default_log(&image, args.disk)),
        verbose: args.verbose,
        writable: args.writable,
        firmware: args
            .firmware
            .unwrap_or_else(|| Firmware::default_for(args.format)),
    };
    let o = boot(&spec)?;
    report(&spec, &o)
}

pub fn default_timeout(format: Format) -> Duration {
    Duration::from_secs(format.default_timeout())
}
