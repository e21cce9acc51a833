//! PC BIOS boots: QEMU's default `pc` machine with its default firmware (SeaBIOS), the disk on
//! IDE (PIIX) or virtio-blk; and `cargo xtask grub-disk`, a BIOS disk made without imgbuild's
//! image code (the `grub` crate for boot.img and core.img, `mkfs.ext4 -d` for the root, an MBR
//! written here) from the fixture's GRUB toplevel, which proves this harness on its own.

use super::{Format, Machine};
use crate::fixture::{FixtureInfo, GrubSystem};
use crate::util::{self, cmd, Timer};
use anyhow::{bail, ensure, Context, Result};
use imgbuild_grub::{boot_sector, installed_files, Install, PartTable, Platform};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The firmware a PC boots the image with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    /// QEMU's default SeaBIOS on its `pc` machine.
    Bios,
    /// OVMF on `q35`.
    Uefi,
}

impl Firmware {
    /// What a format boots with unless told otherwise.
    pub fn default_for(format: Format) -> Firmware {
        if format.bios() {
            Firmware::Bios
        } else {
            Firmware::Uefi
        }
    }
}

/// The root file system's UUID on the `grub-disk` disk (grub.cfg searches for it).
const ROOT_UUID: &str = "8e4c2d10-7a4b-4f8e-9c61-3d2b1a0f5e77";
/// The disk id of its MBR.
const DISK_ID: u32 = 0x1b10_5b00;
const MIB: u64 = 1 << 20;
/// Free space on the root beyond the files (ext4 metadata, the journal).
const ROOT_SLACK: u64 = 96 * MIB;

/// QEMU's default PC machine (i440FX + PIIX, SeaBIOS), KVM when usable. No give-up lines:
/// SeaBIOS and GRUB's own messages go to the screen, not the serial console, so a failed
/// BIOS boot ends with the timeout (the grub.cfg of `grub-disk` puts GRUB on the serial
/// console too).
/// The grub.cfg of the CD standing for Linode's "GRUB 2" boot mode: GRUB's console on the
/// serial port, then the first disk's `/boot/grub/grub.cfg` (a disk without a partition
/// table: `(hd0)` is its file system).
const LINODE_CD_CFG: &str = "serial --unit=0 --speed=115200\nterminal_input serial console\n\
terminal_output serial console\necho \"linode GRUB 2 mode: (hd0)/boot/grub/grub.cfg\"\n\
insmod ext2\nset root=(hd0)\nconfigfile (hd0)/boot/grub/grub.cfg\n";

/// QEMU's arguments for a GRUB CD made in `work` with Debian's `grub-mkrescue` (i386-pc
/// modules from grub-pc-bin) that boots the disk's own grub.cfg, as Linode's "GRUB 2" boot
/// mode does for a disk image without boot code; the machine boots from it (`-boot d`).
pub(super) fn linode_grub_cd(work: &Path) -> Result<Vec<std::ffi::OsString>> {
    util::need_tools(&[
        ("grub-mkrescue", "grub-common"),
        ("xorriso", "xorriso"),
        ("mformat", "mtools"),
    ])?;
    let i386 = Path::new("/usr/lib/grub/i386-pc");
    ensure!(
        i386.join("kernel.img").is_file(),
        "{} not found (apt-get install grub-pc-bin)",
        i386.display()
    );
    let tree = work.join("linode-cd");
    fs::create_dir_all(tree.join("boot/grub"))?;
    fs::write(tree.join("boot/grub/grub.cfg"), LINODE_CD_CFG)?;
    let iso = work.join("linode-grub.iso");
    util::run(
        cmd("grub-mkrescue")
            .arg("-d")
            .arg(i386)
            .arg("-o")
            .arg(&iso)
            .arg(&tree),
    )
    .context("making the GRUB CD (grub-mkrescue)")?;
    Ok(vec![
        "-cdrom".into(),
        iso.into_os_string(),
        "-boot".into(),
        "d".into(),
    ])
}

pub(super) fn pc_machine() -> Result<Machine> {
    util::need_tools(&[("qemu-system-x86_64", "qemu-system-x86")])?;
    let kvm = super::kvm_usable();
    let accel = if kvm { "kvm" } else { "tcg" };
    let mut c = cmd("qemu-system-x86_64");
    c.args(["-machine", "pc", "-accel", accel, "-cpu"])
        .arg(if kvm { "host" } else { "max" })
        .args(["-smp", "2", "-m", "1024"]);
    Ok((
        c,
        accel,
        &[("grub rescue>", "GRUB dropped to its rescue shell")],
    ))
}

/// The i386-pc directory of the fixture's GRUB package, as the `grub` crate reads it.
fn platform(fixture: &Path, grub: &GrubSystem) -> Result<Platform> {
    let dir = fixture
        .join(grub.package.trim_start_matches('/'))
        .join("lib/grub/i386-pc");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut p = Platform::new();
    for n in names {
        p.insert(n.clone(), fs::read(dir.join(&n))?);
    }
    Ok(p)
}

/// A grub.cfg booting generation 1 of `grub`'s toplevel: the fixture's kernel and initrd,
/// found on the root by its UUID, with GRUB on the serial console too.
fn grub_cfg(info: &FixtureInfo, grub: &GrubSystem) -> String {
    format!(
        "serial --unit=0 --speed=115200\nterminal_input serial console\n\
         terminal_output serial console\nset timeout=1\nset default=0\n\
         menuentry \"NixOS - Default\" {{\n  search --set=drive1 --fs-uuid {ROOT_UUID}\n  \
         linux ($drive1){} init={} {}\n  initrd ($drive1){}\n}}\n",
        info.kernel, grub.init, info.kernel_params, info.initrd
    )
}

/// The root tree in `dir`: the GRUB toplevel's closure, the fixture's Nix database (it
/// registers that toplevel), /boot/grub with grub.cfg and what grub-install copies.
fn stage_root(fixture: &Path, dir: &Path, cfg: &str, files: &[(String, &[u8])]) -> Result<()> {
    let store = dir.join("nix/store");
    fs::create_dir_all(&store)?;
    let paths = fs::read_to_string(fixture.join("closure-info-grub/store-paths"))
        .context("the fixture has no closure-info-grub (rebuild it: cargo xtask fixtures)")?;
    for p in paths.lines().filter(|l| !l.is_empty()) {
        util::run(
            cmd("cp")
                .arg("-a")
                .arg(fixture.join(p.trim_start_matches('/')))
                .arg(&store),
        )?;
    }
    let db = dir.join("nix/var/nix/db");
    fs::create_dir_all(&db)?;
    fs::copy(
        fixture.join("nix/var/nix/db/db.sqlite"),
        db.join("db.sqlite"),
    )?;
    let grub_dir = dir.join("boot/grub");
    fs::create_dir_all(grub_dir.join("i386-pc"))?;
    fs::write(grub_dir.join("grub.cfg"), cfg)?;
    for (name, bytes) in files {
        fs::write(grub_dir.join("i386-pc").join(name), bytes)?;
    }
    fs::create_dir_all(dir.join("etc"))?;
    fs::write(dir.join("etc/NIXOS"), b"")?;
    Ok(())
}

/// Sector 0 before boot.img: the disk id and one active Linux partition from 1 MiB.
fn mbr_table(sectors: u64) -> Result<[u8; 512]> {
    let mut mbr = [0u8; 512];
    mbr[0x1b8..0x1bc].copy_from_slice(&DISK_ID.to_le_bytes());
    let e = &mut mbr[0x1be..0x1ce];
    e[0] = 0x80;
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = 0x83;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    let n = u32::try_from(sectors).context("the root partition is over 2 TiB")?;
    e[12..16].copy_from_slice(&n.to_le_bytes());
    mbr[510..].copy_from_slice(&[0x55, 0xaa]);
    Ok(mbr)
}

/// `cargo xtask grub-disk`: an MBR disk at `out` booting the fixture's GRUB toplevel through
/// GRUB (boot.img + core.img with Reed-Solomon redundancy in the MBR gap, as grub-bios-setup
/// leaves them), the root ext4 (label `nixos`) made by `mkfs.ext4 -d`.
pub fn grub_disk(fixture: &Path, out: &Path) -> Result<()> {
    util::need_tools(&[("mkfs.ext4", "e2fsprogs")])?;
    let t = Timer::start();
    let info = FixtureInfo::load(fixture)?;
    let Some(grub) = info.grub.as_ref() else {
        bail!(
            "{} has no GRUB toplevel (rebuild it: cargo xtask fixtures)",
            fixture.display()
        );
    };
    let platform = platform(fixture, grub)?;
    let install = Install {
        table: PartTable::Msdos,
        partition: 1,
        fs_module: "ext2",
        grub_dir: "/boot/grub",
    };
    let core = install.core_image(&platform)?;
    let files = installed_files(&platform, &core)?;
    let work = tempfile::Builder::new()
        .prefix("xtask-grub-disk-")
        .tempdir_in(util::target_dir())?;
    let root = work.path().join("root");
    stage_root(fixture, &root, &grub_cfg(&info, grub), &files)?;

    let used: u64 = util::output(cmd("du").args(["-sb", "--apparent-size"]).arg(&root))?
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du printed no size")?;
    let part = (used + ROOT_SLACK).div_ceil(MIB) * MIB;
    let tmp = out.with_extension("tmp");
    let f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.set_len(MIB + part)?;
    util::run(
        cmd("mkfs.ext4")
            .args(["-q", "-F", "-L", "nixos", "-U", ROOT_UUID, "-E"])
            .arg(format!("offset={MIB}"))
            .arg("-d")
            .arg(&root)
            .arg(&tmp)
            .arg(format!("{}k", part / 1024)),
    )
    .context("mkfs.ext4 -d of the root")?;
    let mbr = boot_sector(&platform, &mbr_table(part / 512)?, 1)?;
    let gap = MIB / 512 - 1;
    let embedded = core.embedded(1, gap)?;
    ensure!(
        embedded.len() as u64 <= gap * 512,
        "core.img does not fit the MBR gap"
    );
    f.write_all_at(&mbr, 0)?;
    f.write_all_at(&embedded, 512)?;
    f.sync_all()?;
    fs::rename(&tmp, out)?;
    eprintln!(
        "xtask: grub-disk {}: {} MiB, core.img {} sectors ({} with redundancy), modules {}, \
         toplevel {} ({:.1} s)",
        out.display(),
        (MIB + part) / MIB,
        core.sectors(),
        embedded.len() / 512,
        core.modules().join(" "),
        grub.toplevel,
        t.secs()
    );
    Ok(())
}
