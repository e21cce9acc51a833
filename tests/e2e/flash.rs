//! `imgbuild flash`: onto a disk full of 0xFF (a regular file, and a loop device) only the
//! bmap's ranges are written, and the partitions pass fsck.fat and e2fsck; the disk holding
//! `/`, a mounted device and a too-small device are refused, each by name. (Loop devices need
//! root, as CI runs the tests.)

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn dirty(path: &Path, size: u64) {
    ok(&mut sh(&format!(
        "head -c {size} /dev/zero | tr '\\0' '\\377' > {}",
        path.display()
    )));
}

/// Every partition of the disk in `target` passes its checker.
fn fsck_partitions(m: &serde_json::Value, target: &Path, t: &Path) {
    for p in m["partitions"].as_array().unwrap() {
        let part = t.join(format!("p{}", p["number"]));
        extract(
            target,
            p["start"].as_u64().unwrap(),
            p["filesystem"]["size"].as_u64().unwrap(),
            &part,
        );
        let (tool, flag) = if p["filesystem"]["kind"] == "ext4" {
            ("e2fsck", "-fn")
        } else {
            ("fsck.fat", "-n")
        };
        ok(Command::new(tool).arg(flag).arg(&part));
    }
}

struct Loop(String);
impl Loop {
    fn new(file: &Path) -> Loop {
        let lo = stdout(Command::new("losetup").args(["-f", "--show"]).arg(file));
        Loop(lo.trim().to_string())
    }
}
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn flash_writes_the_mapped_ranges_onto_a_dirty_disk() {
    let t = tempfile::tempdir().unwrap();
    for (format, name) in [("sd-aarch64", "sd.img.zst"), ("raw-efi", "efi.img")] {
        let img = t.path().join(name);
        let m = run_demo(format, &img, &[]);
        let size = m["disk_size"].as_u64().unwrap();
        let target = t.path().join(format!("{format}.disk"));
        dirty(&target, size);
        let out = stdout(&mut imgbuild(&[
            "flash",
            "--json",
            img.to_str().unwrap(),
            target.to_str().unwrap(),
        ]));
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["verified"], true, "{out}");
        assert!(r["bmap"].as_str().unwrap().ends_with(".bmap"), "{out}");
        assert!(
            r["written"].as_u64().unwrap() < size,
            "only the mapped ranges: {out}"
        );
        let bytes = std::fs::read(&target).unwrap();
        assert!(
            bytes.iter().filter(|&&b| b == 0xFF).count() > 4096,
            "unmapped left alone"
        );
        fsck_partitions(&m, &target, t.path());
        if format == "raw-efi" {
            let v = stdout(Command::new("sgdisk").arg("-v").arg(&target));
            assert!(v.contains("No problems found"), "{v}");
        }
    }

    // The same onto a loop device, without the bmap: every byte, read back.
    let img = t.path().join("sd.img.zst");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("sd.img.zst.json")).unwrap()).unwrap();
    let size = m["disk_size"].as_u64().unwrap();
    let backing = t.path().join("loop.disk");
    dirty(&backing, size + (1 << 20));
    let lo = Loop::new(&backing);
    let out = stdout(&mut imgbuild(&[
        "flash",
        "--no-bmap",
        "--json",
        img.to_str().unwrap(),
        &lo.0,
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["written"].as_u64().unwrap(), size, "{out}");
    drop(lo);
    fsck_partitions(&m, &backing, t.path());
}

#[test]
fn flash_refuses_the_system_disk_a_mounted_disk_and_a_small_one() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("sd.img.zst");
    run_demo("sd-aarch64", &img, &[]);
    let flash = |dev: &str| fails(&mut imgbuild(&["flash", img.to_str().unwrap(), dev]));

    // The disk `/` is on, found through sysfs.
    let root = stdout(&mut sh("findmnt -n -o SOURCE / || true"));
    let root = root.trim();
    if root.starts_with("/dev/") {
        let disk = stdout(&mut sh(&format!("lsblk -n -d -o PKNAME {root} || true")));
        let dev = match disk.trim() {
            "" => root.to_string(),
            d => format!("/dev/{d}"),
        };
        let e = flash(&dev);
        assert!(e.contains("root file system `/`"), "{dev}: {e}");
    } else {
        eprintln!("`/` is on `{root}`, not a block device: the root-disk refusal is untested here");
    }

    let small = t.path().join("small.disk");
    std::fs::write(&small, vec![0u8; 8 << 20]).unwrap();
    let lo = Loop::new(&small);
    let e = flash(&lo.0);
    assert!(e.contains("it holds 8388608 bytes"), "{e}");

    ok(Command::new("mkfs.ext4").args(["-q", &lo.0]));
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    ok(Command::new("mount").arg(&lo.0).arg(&mnt));
    let e = flash(&lo.0);
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(e.contains("is mounted at"), "{e}");

    let e = flash("/dev/no-such-disk");
    assert!(e.contains("no such device"), "{e}");
    drop(lo);
}

/// The bytes of `path` at `offset` (a whole sector).
fn sector(path: &Path, offset: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; 512];
    let f = std::fs::File::open(path).unwrap();
    let n = f.read_at(&mut b, offset).unwrap_or(0);
    b.truncate(n);
    b
}

#[test]
fn a_failed_flash_says_what_the_target_now_holds() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("efi.img");
    let m = run_demo("raw-efi", &img, &[]);
    let size = m["disk_size"].as_u64().unwrap();
    let bmap = t.path().join("efi.img.bmap");
    // Damage the image inside the bmap's last range: the earlier ranges are written first.
    let text = std::fs::read_to_string(&bmap).unwrap();
    let last = text
        .lines()
        .rfind(|l| l.contains("<Range"))
        .unwrap()
        .to_string();
    let first_block: u64 = last
        .split('>')
        .nth(1)
        .unwrap()
        .split(['-', '<'])
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let bad = t.path().join("bad.img");
    ok(Command::new("cp")
        .args(["--sparse=always"])
        .arg(&img)
        .arg(&bad));
    std::fs::copy(&bmap, t.path().join("bad.img.bmap")).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&bad).unwrap();
        f.write_all_at(b"damaged", first_block * 4096).unwrap();
    }

    // A disk (here a file as large as the image): what is on it now, and what to do.
    let disk = t.path().join("vm.disk");
    dirty(&disk, size);
    let e = fails(&mut imgbuild(&[
        "flash",
        bad.to_str().unwrap(),
        disk.to_str().unwrap(),
    ]));
    assert_eq!(
        e.matches("do not match its checksum").count(),
        1,
        "said once: {e}"
    );
    assert!(e.contains("now holds a partial image"), "{e}");
    assert!(e.contains("run `imgbuild flash` again"), "{e}");
    assert_ne!(
        sector(&disk, 0),
        vec![0xFF; 512],
        "the first range was written"
    );
    // The retry with the good image finishes the job.
    ok(&mut imgbuild(&[
        "flash",
        img.to_str().unwrap(),
        disk.to_str().unwrap(),
    ]));

    // A new file: nothing is left behind, and the retry is not blocked.
    let new = t.path().join("new.disk");
    let e = fails(&mut imgbuild(&[
        "flash",
        bad.to_str().unwrap(),
        new.to_str().unwrap(),
    ]));
    assert!(e.contains("nothing was written at"), "{e}");
    assert!(!new.exists());
    assert!(!t.path().join("new.disk.tmp").exists());
    // A stale `.tmp` (a flash killed with SIGKILL) does not block it either.
    std::fs::write(t.path().join("new.disk.tmp"), b"stale").unwrap();
    ok(&mut imgbuild(&[
        "flash",
        img.to_str().unwrap(),
        new.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::metadata(&new).unwrap().len(), size);
    assert!(!t.path().join("new.disk.tmp").exists());

    // An empty file is emptied again.
    let empty = t.path().join("empty.disk");
    std::fs::write(&empty, b"").unwrap();
    let e = fails(&mut imgbuild(&[
        "flash",
        bad.to_str().unwrap(),
        empty.to_str().unwrap(),
    ]));
    assert!(e.contains("is empty again"), "{e}");
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
}

#[test]
fn an_interrupted_flash_exits_130_or_143_and_says_the_disk_is_partial() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("efi.img");
    let m = run_demo("raw-efi", &img, &["--size", "3GiB"]);
    let size = m["disk_size"].as_u64().unwrap();
    for (sig, code) in [("INT", 130), ("TERM", 143)] {
        let disk = t.path().join("vm.disk");
        ok(Command::new("truncate")
            .arg(format!("--size={size}"))
            .arg(&disk));
        // Every byte (no bmap), so the flash lasts long enough to be interrupted.
        let child = imgbuild(&[
            "flash",
            "--no-bmap",
            img.to_str().unwrap(),
            disk.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        // Signal it once the first write (the protective MBR) is on the disk.
        let start = std::time::Instant::now();
        while sector(&disk, 0).iter().all(|&b| b == 0) {
            assert!(start.elapsed().as_secs() < 60, "the flash never wrote");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        ok(Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string()));
        let out = child.wait_with_output().unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "SIG{sig}: {e}");
        assert!(e.contains("interrupted"), "{e}");
        assert!(e.contains("now holds a partial image"), "{e}");
        assert!(e.contains("or wipe it"), "{e}");
        std::fs::remove_file(&disk).unwrap();
    }
}
