//! The BIOS boot report: disks with GRUB for i386-pc put there without `grub-install` (our
//! `imgbuild-grub`'s `Install` with Debian's grub-pc-bin modules, and a core image made by
//! Debian's own `grub-mkimage`), on an MBR (core in the gap after it) and on a GPT (core in
//! the BIOS boot partition). `inspect` must name the core's place, its modules and prefix,
//! and GRUB's version from the `modinfo.sh` in the prefix's directory.
//!
//! Debian's `grub-bios-setup` is not used: it insists on finding the device of its `-d`
//! directory, which needs a mounted file system (root and a loop device), not a plain file.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use imgbuild_grub::{boot_sector, Install, PartTable, Platform};
use imgbuild_inspect::{GrubBios, Image};

use crate::common::run;

const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";

fn platform() -> Platform {
    let dir = Path::new(GRUB_DIR);
    assert!(
        dir.join("kernel.img").exists(),
        "{GRUB_DIR} is missing: install Debian's grub-pc-bin"
    );
    let mut p = Platform::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            p.insert(
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    p
}

/// `grub_package_version` of Debian's modinfo.sh, read here independently.
fn debian_version() -> String {
    let text = std::fs::read_to_string(Path::new(GRUB_DIR).join("modinfo.sh")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("grub_package_version="))
        .unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

/// An 8 MiB disk with `table` (sfdisk script) and a 4 MiB FAT file system at `fat_lba` holding
/// `grub_dir/i386-pc/modinfo.sh`.
fn disk(dir: &Path, name: &str, table: &str, fat_lba: u64, grub_dir: &str) -> std::path::PathBuf {
    let img = dir.join(name);
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let mut c = Command::new("sfdisk");
    c.args(["-q", img.to_str().unwrap()]);
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), table.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let fat = dir.join(format!("{name}.fat"));
    // 4 MiB: inside the partition on both tables (sfdisk aligns the GPT's last one to MiB).
    run(Command::new("mkfs.vfat").arg("-C").arg(&fat).arg("4096"));
    let mut parts = String::new();
    for c in grub_dir
        .trim_start_matches('/')
        .split('/')
        .chain(["i386-pc"])
    {
        parts.push('/');
        parts.push_str(c);
        run(Command::new("mmd")
            .arg("-i")
            .arg(&fat)
            .arg(format!("::{parts}")));
    }
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&fat)
        .arg(Path::new(GRUB_DIR).join("modinfo.sh"))
        .arg(format!("::{parts}/modinfo.sh")));
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&std::fs::read(&fat).unwrap(), fat_lba * 512)
        .unwrap();
    img
}

/// Writes `core` at sector `at` and GRUB's boot sector (pointing there) over sector 0,
/// keeping the table.
fn install(img: &Path, platform: &Platform, core: &[u8], at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut s0 = [0u8; 512];
    f.read_exact_at(&mut s0, 0).unwrap();
    f.write_all_at(core, at * 512).unwrap();
    f.write_all_at(&boot_sector(platform, &s0, at).unwrap(), 0)
        .unwrap();
}

fn report(img: &Path) -> GrubBios {
    let i = Image::open(img).unwrap().inspect();
    i.boot.grub_bios.expect("GRUB for BIOS found")
}

/// An MBR disk with GRUB as `grub-install` leaves it: the core embedded after the MBR
/// (with Reed-Solomon redundancy), GRUB's directory `/boot/grub` on partition 1 (FAT).
/// Returns the disk, the embedded sectors and the core's modules.
fn mbr_gap_disk(dir: &Path, name: &str) -> (std::path::PathBuf, Vec<u8>, Vec<String>) {
    let p = platform();
    let img = disk(
        dir,
        name,
        "label: dos\nstart=2048, type=c, bootable\n",
        2048,
        "/boot/grub",
    );
    let inst = Install {
        table: PartTable::Msdos,
        partition: 1,
        fs_module: "fat",
        grub_dir: "/boot/grub",
    };
    let core = inst.core_image(&p).unwrap();
    let embedded = core.embedded(1, 2047).unwrap();
    install(&img, &p, &embedded, 1);
    (img, embedded, core.modules().to_vec())
}

#[test]
fn mbr_gap_core_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let (img, embedded, modules) = mbr_gap_disk(t.path(), "mbr.img");
    let g = report(&img);
    assert_eq!(g.error, None);
    assert_eq!(g.core_sector, 1);
    assert_eq!(g.core_location, "MBR gap (before partition 1 at LBA 2048)");
    assert_eq!(g.core_sectors, Some(embedded.len() as u64 / 512));
    assert_eq!(g.modules, modules);
    assert!(g.modules.iter().any(|m| m == "fat") && g.modules.iter().any(|m| m == "biosdisk"));
    assert_eq!(g.prefix.as_deref(), Some("(,msdos1)/boot/grub"));
    assert!(g.redundancy.is_some_and(|r| r > 0), "{g:?}");
    assert_eq!(g.version.as_deref(), Some(debian_version().as_str()));
    assert_eq!(
        g.version_from.as_deref(),
        Some("partition 1: /boot/grub/i386-pc/modinfo.sh")
    );

    // The core's sectors wiped: boot.img is still reported, with why the core is not.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&vec![0u8; embedded.len()], 512).unwrap();
    let g = report(&img);
    assert_eq!((g.core_sector, g.modules.len()), (1, 0));
    assert!(g.error.is_some(), "{g:?}");
}

#[test]
fn bios_boot_partition_core_is_reported() {
    let p = platform();
    let t = tempfile::tempdir().unwrap();
    let table = format!(
        "label: gpt\nstart=2048, size=2048, type={BIOS_BOOT}\nstart=4096, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
    );
    let img = disk(t.path(), "gpt.img", &table, 4096, "/grub");
    let inst = Install {
        table: PartTable::Gpt,
        partition: 2,
        fs_module: "fat",
        grub_dir: "/grub",
    };
    let core = inst.core_image(&p).unwrap();
    install(&img, &p, &core.embedded(2048, 2048).unwrap(), 2048);
    let g = report(&img);
    assert_eq!(g.error, None);
    assert_eq!(g.core_sector, 2048);
    assert_eq!(g.core_location, "BIOS boot partition 1");
    assert_eq!(g.modules, core.modules());
    assert!(g.modules.iter().any(|m| m == "part_gpt"));
    assert_eq!(g.prefix.as_deref(), Some("(,gpt2)/grub"));
    assert_eq!(g.version.as_deref(), Some(debian_version().as_str()));
}

/// A core image from Debian's `grub-mkimage` (placed after the MBR by hand, as
/// `grub-bios-setup --no-rs-codes` would): its modules and prefix read back.
#[test]
fn debian_grub_mkimage_core_is_read() {
    let p = platform();
    let t = tempfile::tempdir().unwrap();
    let img = disk(
        t.path(),
        "deb.img",
        "label: dos\nstart=2048, type=c\n",
        2048,
        "/boot/grub",
    );
    let core_path = t.path().join("core.img");
    run(Command::new("grub-mkimage")
        .args([
            "-O",
            "i386-pc",
            "-d",
            GRUB_DIR,
            "-p",
            "(,msdos1)/boot/grub",
            "-o",
        ])
        .arg(&core_path)
        .args(["fat", "part_msdos", "biosdisk", "echo"]));
    let core = std::fs::read(&core_path).unwrap();
    install(&img, &p, &core, 1);
    let g = report(&img);
    assert_eq!(g.error, None, "{g:?}");
    assert_eq!(g.core_location, "MBR gap (before partition 1 at LBA 2048)");
    assert_eq!(g.core_sectors, Some(core.len().div_ceil(512) as u64));
    for m in ["fat", "part_msdos", "biosdisk", "echo"] {
        assert!(g.modules.iter().any(|x| x == m), "{m} in {:?}", g.modules);
    }
    assert_eq!(g.prefix.as_deref(), Some("(,msdos1)/boot/grub"));
    assert_eq!(g.redundancy, Some(0));
}

/// A disk without GRUB's boot sector has no BIOS report.
#[test]
fn no_boot_img_no_report() {
    let t = tempfile::tempdir().unwrap();
    let img = disk(
        t.path(),
        "plain.img",
        "label: dos\nstart=2048, type=c\n",
        2048,
        "/boot/grub",
    );
    let i = Image::open(&img).unwrap().inspect();
    assert!(i.boot.grub_bios.is_none());
}

/// The MBR-gap disk fuzzed: sector 0 and the core's sectors are read metadata.
#[test]
fn fuzz_bios_disk() {
    let t = tempfile::tempdir().unwrap();
    let (img, _, _) = mbr_gap_disk(t.path(), "fuzz.img");
    // The clean disk: a report with the core read, and files to read for the harness.
    assert_eq!(report(&img).error, None);
    crate::fuzz::fuzz("bios-grub", &img);
}
