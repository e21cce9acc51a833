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
//! `qemu` image with OVMF instead. linode (no partition table, no boot code): the same
//! machine booting a GRUB CD that reads the disk's grub.cfg, as Linode's "GRUB 2" mode.
//! iso / iso-aarch64 / netboot / netboot-aarch64: see `live.rs`.

pub mod bios;
mod format;
mod live;
mod qemu;
mod raspi;

pub use bios::Firmware;
pub use format::{Disk, Format};

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

#[derive(clap::Args)]
pub struct BootArgs {
    #[arg(value_enum)]
    pub format: Format,
    /// Image to boot (.img, .img.zst, .qcow2, .vhd, .iso; a directory for netboot). Default:
    /// build the fixture and an image with target/release/imgbuild
    pub image: Option<PathBuf>,
    /// How the image is attached (default: virtio; cdrom for ISOs)
    #[arg(long, value_enum)]
    pub disk: Option<Disk>,
    /// x86_64: SeaBIOS (`pc` machine) or OVMF; default: bios for raw, qemu, digitalocean,
    /// hetzner and linode, uefi for the others (an x86_64 ISO boots with either)
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

impl BootSpec<'_> {
    /// [`how`] of this boot.
    pub fn how(&self) -> String {
        how(self.format, self.disk, self.firmware)
    }
}

/// `iso cdrom seabios`: the format, how it is attached, and the firmware when not the
/// format's usual one.
pub fn how(format: Format, disk: Disk, firmware: Firmware) -> String {
    let fw = match firmware {
        f if f == Firmware::default_for(format) => "",
        Firmware::Bios => " seabios",
        Firmware::Uefi => " ovmf",
    };
    match format {
        Format::Netboot | Format::NetbootAarch64 => format!("{} -kernel", format.name()),
        f => format!("{} {}{fw}", f.name(), disk.name()),
    }
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
        // (the CD kinds are the ISO's: live.rs attaches those)
        Disk::Cdrom | Disk::ScsiCd => vec!["-drive".into(), drive(",if=virtio")],
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
    x86_machine_on("q35", work)
}

/// [`x86_machine`] on QEMU's `machine` (`q35`, `pc`).
fn x86_machine_on(machine: &str, work: &Path) -> Result<Machine> {
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
    c.args(["-machine", machine, "-accel", accel, "-cpu"])
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

/// aarch64: QEMU's virt machine, cortex-a57, 2 CPUs, 1 GiB, TCG; no firmware yet.
fn aarch64_virt() -> Result<std::process::Command> {
    util::need_tools(&[("qemu-system-aarch64", "qemu-system-arm")])?;
    let mut c = cmd("qemu-system-aarch64");
    c.args(["-M", "virt", "-accel", "tcg", "-cpu", "cortex-a57"])
        .args(["-smp", "2", "-m", "1024"]);
    Ok(c)
}

/// aarch64: [`aarch64_virt`] with Debian's U-Boot as `-bios`.
fn aarch64_machine() -> Result<Machine> {
    if !Path::new(UBOOT_QEMU_ARM64).is_file() {
        bail!("{UBOOT_QEMU_ARM64} not found (apt-get install u-boot-qemu)");
    }
    let mut c = aarch64_virt()?;
    c.arg("-bios").arg(UBOOT_QEMU_ARM64);
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
    if matches!(spec.format, Format::Netboot | Format::NetbootAarch64) {
        return live::boot_netboot(spec);
    }
    if spec.firmware == Firmware::Bios && spec.format.arch() != Arch::X86_64 {
        bail!("--firmware bios: x86_64 only");
    }
    let image = local_image(spec, work.path())?;
    if live::is_live(spec.format) {
        return live::boot_iso(spec, &image, work.path());
    }
    if matches!(spec.disk, Disk::Cdrom | Disk::ScsiCd) {
        bail!("--disk {} boots ISOs only", spec.disk.name());
    }
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
        return raspi::boot_raspi3b(spec, &copy);
    }
    if spec.format == Format::Linode && spec.firmware != Firmware::Bios {
        bail!("linode boots with SeaBIOS only (Linode's GRUB 2 mode)");
    }
    let disk_args = disk_args(spec, &image);
    let (mut c, accel, giveup) = match spec.format {
        _ if spec.format.arch() == Arch::X86_64 && spec.firmware == Firmware::Bios => {
            bios::pc_machine()?
        }
        Format::Raw | Format::Qemu | Format::Digitalocean | Format::Hetzner | Format::Linode => {
            x86_machine(work.path())?
        }
        Format::RawEfi
        | Format::QemuEfi
        | Format::Amazon
        | Format::Azure
        | Format::Vmware
        | Format::Hyperv
        | Format::Appliance => x86_machine(work.path())?,
        Format::SdAarch64 => aarch64_machine()?,
        Format::Iso | Format::IsoAarch64 | Format::Netboot | Format::NetbootAarch64 => {
            bail!("{} is a live format", spec.format.name())
        }
    };
    console_only(&mut c);
    if spec.format == Format::Linode {
        // Linode's own GRUB, not the disk's (it has none), boots it.
        c.args(bios::linode_grub_cd(work.path())?);
    }
    c.args(&disk_args);
    run_qemu(spec, c, accel, giveup)
}

/// `-nodefaults ... -serial stdio`: no devices but the ones asked for, no display, the
/// serial console on stdout (every machine's common tail).
fn console_only(c: &mut std::process::Command) {
    c.args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-monitor", "none", "-serial", "stdio"]);
}

/// Prints the outcome like a test runner; Ok only for a good boot.
pub fn report(spec: &BootSpec, o: &Outcome) -> Result<()> {
    if o.ok {
        println!("PASS: {}", o.detail);
        println!(
            "boot-time: {:.1} s ({}, accel={}) log: {}",
            o.secs,
            spec.how(),
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
            "boot of {} ({}) FAILED after {:.1} s: {}; serial log: {}",
            spec.image.display(),
            spec.how(),
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

/// The manifest imgbuild wrote beside `image` (`IMAGE.json`), parsed.
pub fn image_manifest(image: &Path) -> Result<serde_json::Value> {
    let mut name = image.as_os_str().to_owned();
    name.push(".json");
    let name = PathBuf::from(name);
    let bytes = fs::read(&name).with_context(|| format!("reading {}", name.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", name.display()))
}

/// Builds the fixture (if needed) and an image of `format` from it with the imgbuild CLI.
pub fn imgbuild_image(format: Format) -> Result<PathBuf> {
    let fix = fixture::default_dir(format.arch());
    fixture::ensure_built(format.arch(), &fix)?;
    let closure = fix.join(format.variant().result());
    let bin = imgbuild_bin()?;
    let out_dir = util::target_dir().join("boot");
    fs::create_dir_all(&out_dir)?;
    let out = out_dir.join(format.file_name());
    let t = Timer::start();
    util::run(
        cmd(&bin)
            .arg(format.cli_name())
            .arg("--closure")
            .arg(&closure)
            .arg("--store-root")
            .arg(&fix)
            .args(format.imgbuild_args())
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
    let disk = args.disk.unwrap_or(args.format.default_disk());
    let firmware = args
        .firmware
        .unwrap_or_else(|| Firmware::default_for(args.format));
    let mut log = default_log(&image, disk);
    if firmware != Firmware::default_for(args.format) {
        log.set_extension(format!("{firmware:?}.log").to_lowercase());
    }
    let spec = BootSpec {
        format: args.format,
        image: &image,
        disk,
        timeout: Duration::from_secs(args.timeout.unwrap_or(args.format.default_timeout())),
        log: args.log.clone().unwrap_or(log),
        verbose: args.verbose,
        writable: args.writable,
        firmware,
    };
    let o = boot(&spec)?;
    report(&spec, &o)
}

pub fn default_timeout(format: Format) -> Duration {
    Duration::from_secs(format.default_timeout())
}
