//! A real boot: QEMU's default SeaBIOS runs our boot.img, which loads our core.img, which
//! finds `/boot/grub/grub.cfg` on a FAT partition through the prefix and prints a marker on
//! the serial console. Skips (printing why) without qemu-system-x86_64, Debian's GRUB files,
//! mkfs.fat + mtools or (GPT) sgdisk.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use imgbuild_grub::{boot_sector, installed_files, CoreImage, Install, PartTable, Platform};

const MIB: u64 = 1 << 20;
const DISK_SIZE: u64 = 24 * MIB;
/// `echo` expands the variable: the marker appears only if GRUB ran the config.
const GRUB_CFG: &str = "serial --unit=0 --speed=115200\nterminal_output serial\n\
set who=GRUB\necho \"IMGBUILD-${who}-OK\"\nhalt\n";
const MARKER: &str = "IMGBUILD-GRUB-OK";

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A FAT file system of `size` bytes holding grub.cfg and, in /boot/grub/i386-pc, what
/// [`installed_files`] says grub-install leaves there for `core`.
fn fat_partition(dir: &Path, size: u64, platform: &Platform, core: &CoreImage) -> Vec<u8> {
    let part = dir.join("part.img");
    let cfg = dir.join("grub.cfg");
    let platdir = dir.join("i386-pc");
    std::fs::write(&cfg, GRUB_CFG).unwrap();
    std::fs::create_dir_all(&platdir).unwrap();
    for (name, bytes) in installed_files(platform, core).unwrap() {
        std::fs::write(platdir.join(name), bytes).unwrap();
    }
    std::fs::File::create(&part).unwrap().set_len(size).unwrap();
    let (p, c, g) = (part.display(), cfg.display(), platdir.display());
    sh(&format!("mkfs.fat -i 12345678 -n GRUBTEST {p} >/dev/null"));
    sh(&format!("mmd -i {p} ::/boot ::/boot/grub"));
    sh(&format!("mcopy -i {p} {c} ::/boot/grub/grub.cfg"));
    sh(&format!("mcopy -s -i {p} {g} ::/boot/grub/"));
    std::fs::read(&part).unwrap()
}

/// Boots `disk` with QEMU's defaults (SeaBIOS, TCG) on interface `iface`; returns the
/// serial output up to the marker, or all of it after `secs` seconds.
fn boot(disk: &Path, iface: &str, secs: u64) -> String {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-no-reboot", "-m", "128", "-drive"])
        .arg(format!("file={},format=raw,if={iface}", disk.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend(chunk),
            Err(_) => break,
        }
        if String::from_utf8_lossy(&seen).contains(MARKER) {
            break;
        }
    }
    let _ = child.kill();
    child.wait().unwrap();
    String::from_utf8_lossy(&seen).into_owned()
}

fn tools(extra: &[&str]) -> Option<Platform> {
    let platform = common::platform()?;
    let ok = ["qemu-system-x86_64", "mkfs.fat", "mcopy"]
        .iter()
        .chain(extra)
        .all(|t| {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                eprintln!("skipped: {t} is not installed");
            }
            found
        });
    ok.then_some(platform)
}

/// Sector 0 as a partitioning tool leaves it: disk signature and one active FAT16 (LBA)
/// partition from 1 MiB to the end.
fn msdos_table() -> [u8; 512] {
    let mut mbr = [0u8; 512];
    mbr[0x1b8..0x1bc].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    let e = &mut mbr[0x1be..0x1ce];
    e[0] = 0x80;
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = 0x0e;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    e[12..16].copy_from_slice(&(((DISK_SIZE - MIB) / 512) as u32).to_le_bytes());
    mbr[510..].copy_from_slice(&[0x55, 0xaa]);
    mbr
}

fn write_disk(path: &Path, mbr: &[u8; 512], core_at: u64, core: &[u8], fat_at: u64, fat: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(mbr, 0).unwrap();
    f.write_all_at(core, core_at * 512).unwrap();
    f.write_all_at(fat, fat_at).unwrap();
}

/// The MBR disk's pieces: our core for `(,msdos1)/boot/grub`, boot.img over
/// [`msdos_table`] pointing at sector 1, and the FAT partition.
fn msdos_pieces(platform: &Platform, dir: &Path) -> (CoreImage, [u8; 512], Vec<u8>) {
    // As grub-install asks for it: `(,msdos1)/boot/grub`, fat part_msdos biosdisk.
    let install = Install {
        table: PartTable::Msdos,
        partition: 1,
        fs_module: "fat",
        grub_dir: "/boot/grub",
    };
    let core = install.core_image(platform).unwrap();
    let table = msdos_table();
    let mbr = boot_sector(platform, &table, 1).unwrap();
    // The partition table and signature survive; the core's sector is patched in.
    assert_eq!(mbr[0x1b8..], table[0x1b8..]);
    assert_eq!(mbr[0x5c..0x64], 1u64.to_le_bytes());
    let fat = fat_partition(dir, DISK_SIZE - MIB, platform, &core);
    (core, mbr, fat)
}

#[test]
fn msdos_disk_boots_with_seabios_ide_and_virtio() {
    let Some(platform) = tools(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(DISK_SIZE)
        .unwrap();
    let (core, mbr, fat) = msdos_pieces(&platform, dir.path());
    write_disk(&disk, &mbr, 1, &core.placed_at(1).unwrap(), MIB, &fat);
    for iface in ["ide", "virtio"] {
        let out = boot(&disk, iface, 90);
        assert!(
            out.contains(MARKER),
            "{iface}: no marker on the serial console:\n{out}"
        );
        eprintln!("{iface}: {MARKER} seen");
    }
}

/// grub-bios-setup's default: the core with Reed-Solomon redundancy in the rest of the MBR
/// gap. A sector of its compressed part zeroed (as a tool writing into the gap would)
/// is repaired at boot; without the redundancy the same damage stops the boot.
#[test]
fn reed_solomon_redundancy_repairs_a_zeroed_sector() {
    let Some(platform) = tools(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let (core, mbr, fat) = msdos_pieces(&platform, dir.path());
    let damaged = 20; // a sector of core.img well inside the compressed payload
    assert!(core.sectors() > damaged + 1);
    for (with_rs, boots) in [(true, true), (false, false)] {
        let mut bytes = if with_rs {
            core.embedded(1, 2047).unwrap()
        } else {
            core.placed_at(1).unwrap()
        };
        if with_rs {
            assert_eq!(bytes.len() as u64, 2 * core.sectors() * 512);
        }
        let at = damaged as usize * 512;
        bytes[at..at + 512].fill(0);
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(DISK_SIZE)
            .unwrap();
        write_disk(&disk, &mbr, 1, &bytes, MIB, &fat);
        let out = boot(&disk, "ide", if boots { 90 } else { 15 });
        assert_eq!(out.contains(MARKER), boots, "with_rs={with_rs}:\n{out}");
    }
}

#[test]
fn gpt_disk_with_bios_boot_partition_boots_with_seabios() {
    let Some(platform) = tools(&["sgdisk"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(DISK_SIZE)
        .unwrap();
    let d = disk.display();
    // Partition 1: BIOS boot (ef02), 1 MiB at sector 2048; partition 2: FAT from 2 MiB.
    sh(&format!(
        "sgdisk -n1:2048:4095 -t1:ef02 -n2:4096:0 -t2:0700 {d} >/dev/null"
    ));
    let mut table = [0u8; 512];
    std::fs::File::open(&disk)
        .unwrap()
        .read_exact_at(&mut table, 0)
        .unwrap();
    let install = Install {
        table: PartTable::Gpt,
        partition: 2,
        fs_module: "fat",
        grub_dir: "/boot/grub",
    };
    let core = install.core_image(&platform).unwrap();
    assert!(
        core.sectors() <= 2048,
        "core.img fits the BIOS boot partition"
    );
    let mbr = boot_sector(&platform, &table, 2048).unwrap();
    let fat_size = DISK_SIZE - 2 * MIB - 34 * 512;
    let fat = fat_partition(dir.path(), fat_size, &platform, &core);
    write_disk(
        &disk,
        &mbr,
        2048,
        &core.placed_at(2048).unwrap(),
        2 * MIB,
        &fat,
    );
    sh(&format!("sgdisk -v {d}"));
    let out = boot(&disk, "ide", 90);
    assert!(
        out.contains(MARKER),
        "no marker on the serial console:\n{out}"
    );

    // The same disk with boot.img pointing at the wrong sector (boot.img's default, 1: the
    // GPT header) does not boot: the patched sector is what made it work.
    let wrong = boot_sector(&platform, &table, 1).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .write_all_at(&wrong, 0)
        .unwrap();
    let out = boot(&disk, "ide", 15);
    assert!(
        !out.contains(MARKER),
        "booted with boot.img pointing at sector 1:\n{out}"
    );
}
