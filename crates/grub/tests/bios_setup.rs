//! Our boot sector and embedded core against GRUB's own `grub-bios-setup` (shipped in
//! grub-pc-bin as /usr/lib/grub/i386-pc/grub-bios-setup): given our core.img, it writes the
//! same sector 0 and the same sectors after it, byte for byte, with its default
//! Reed-Solomon codes and with `--no-rs-codes`.
//!
//! grub-bios-setup insists on finding the device of its `-d` directory, so that directory is
//! put on an ext2 file system mounted from a loop device; the test skips, saying why, when
//! not root or when loop devices or the tools are missing.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild_grub::{boot_sector, Install, PartTable};

const SETUP: &str = "/usr/lib/grub/i386-pc/grub-bios-setup";
const DISK_SIZE: u64 = 8 << 20;

fn run(cmd: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!("{cmd}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// A loop device with an ext2 file system mounted at `mnt`; unmounted and detached on drop.
struct Mounted {
    dev: String,
    mnt: PathBuf,
    mounted: bool,
}

impl Mounted {
    fn new(backing: &Path, mnt: &Path) -> Result<Self, String> {
        std::fs::File::create(backing)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let dev = run(&format!("losetup -f --show {}", backing.display()))?;
        let mut m = Self {
            dev,
            mnt: mnt.to_owned(),
            mounted: false,
        };
        run(&format!("mkfs.ext2 -q {}", m.dev))?;
        std::fs::create_dir_all(mnt).unwrap();
        run(&format!("mount {} {}", m.dev, mnt.display()))?;
        m.mounted = true;
        Ok(m)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run(&format!("umount {}", self.mnt.display()));
        }
        let _ = run(&format!("losetup -d {}", self.dev));
    }
}

#[test]
fn boot_sector_and_embedded_core_match_grub_bios_setup() {
    let Some(platform) = common::platform() else {
        return;
    };
    if !Path::new(SETUP).exists() {
        eprintln!("skipped: {SETUP} is absent");
        return;
    }
    if run("id -u").as_deref() != Ok("0") {
        eprintln!("skipped: grub-bios-setup's directory must be on a mounted file system (root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = match Mounted::new(&dir.path().join("fs.img"), &dir.path().join("mnt")) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: no loop-mounted ext2: {why}");
            return;
        }
    };
    let grubdir = mounted.mnt.join("g");
    std::fs::create_dir(&grubdir).unwrap();
    let install = Install {
        table: PartTable::Msdos,
        partition: 1,
        fs_module: "ext2",
        grub_dir: "/boot/grub",
    };
    let core = install.core_image(&platform).unwrap();
    std::fs::write(grubdir.join("core.img"), core.mkimage_bytes()).unwrap();
    std::fs::write(grubdir.join("boot.img"), platform.get("boot.img").unwrap()).unwrap();

    for rs in [true, false] {
        let disk = dir.path().join(format!("disk-{rs}.img"));
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(DISK_SIZE)
            .unwrap();
        run(&format!(
            "printf 'label: dos\\nlabel-id: 0x12345678\\nstart=2048, type=83, bootable\\n' | sfdisk -q {}",
            disk.display()
        ))
        .unwrap();
        let f = std::fs::File::open(&disk).unwrap();
        let mut table = [0u8; 512];
        f.read_exact_at(&mut table, 0).unwrap();
        let map = dir.path().join("device.map");
        std::fs::write(&map, format!("(hd0) {}\n", disk.display())).unwrap();
        run(&format!(
            "{SETUP} {} -d {} -m {} -s {}",
            if rs { "" } else { "--no-rs-codes" },
            grubdir.display(),
            map.display(),
            disk.display()
        ))
        .unwrap();
        let mut theirs = vec![0u8; 2048 * 512];
        f.read_exact_at(&mut theirs, 0).unwrap();

        let ours_mbr = boot_sector(&platform, &table, 1).unwrap();
        assert_eq!(theirs[..512], ours_mbr[..], "sector 0 (rs={rs})");
        let ours_core = if rs {
            core.embedded(1, 2047).unwrap()
        } else {
            core.placed_at(1).unwrap()
        };
        let end = 512 + ours_core.len();
        assert_eq!(theirs[512..end], ours_core[..], "core sectors (rs={rs})");
        assert!(
            theirs[end..].iter().all(|&b| b == 0),
            "nothing else written (rs={rs})"
        );
        eprintln!(
            "rs={rs}: sector 0 and {} core sectors equal",
            ours_core.len() / 512
        );
    }
}
