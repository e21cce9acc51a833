//! `linode` (a gzip'd ext4 file system without a partition table, grub.cfg for Linode's own
//! GRUB: `boot.loader.grub.device = "nodev"`) and `cloudstack` (the raw disk as qcow2), from
//! the GRUB test closure of `bios.rs`, judged by e2fsck, Debian's `grub-fstest`, `qemu-img`
//! and 7-Zip.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::bios::{args, build, fstest, grub_closure, GRUB_PATH};
use crate::common::*;

const KERNEL: &str =
    "/nix/store/knh4j0zphbwpnpgrplpd6q9j2r59d4wa-linux-6.1.0-imgbuild-demo/bzImage";
const INITRD: &str =
    "/nix/store/0xahwmqz3qh563b87lnxp9h11sj124lm-initrd-linux-6.1.0-imgbuild-demo/initrd";

/// The raw disk of a `.img.gz`.
fn gunzip(gz: &Path, raw: &Path) {
    ok(&mut sh(&format!(
        "gzip -dc {} > {}",
        gz.display(),
        raw.display()
    )));
}

/// A store file of the test closure `closure`, as the host holds it.
fn store_file(closure: &Path, path: &str) -> Vec<u8> {
    std::fs::read(closure.join(path.trim_start_matches('/'))).unwrap()
}

#[test]
fn linode_is_a_bare_ext4_disk_whose_grub_cfg_grub_reads() {
    let t = tempfile::tempdir().unwrap();
    // As imgbuild's module sets it for linode (linode-config.nix's 10 s for Lish).
    let record = json!({"devices": ["nodev"], "timeout": 10});
    let Some(closure) = grub_closure(t.path(), record) else {
        return;
    };
    let gz = t.path().join("l.img.gz");
    let m = build("linode", &closure, &gz, &[]);
    assert_eq!(m["table"], "none");
    assert_eq!(m["container"], "gzip");
    let root = &m["partitions"][0];
    assert_eq!(
        (root["number"].as_u64(), root["start"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(root["filesystem"]["kind"], "ext4");
    assert_eq!(root["filesystem"]["label"], "nixos");
    let disk_size = m["disk_size"].as_u64().unwrap();
    assert_eq!(root["size"].as_u64(), Some(disk_size));
    assert_eq!(root["filesystem"]["size"].as_u64(), Some(disk_size));
    let uuid = root["filesystem"]["uuid"].as_str().unwrap();
    assert_eq!(sha256(&gz), m["sha256"].as_str().unwrap());

    // gzip's own reader, then the disk: one ext4 file system from byte 0 to the end.
    ok(Command::new("gzip").arg("-t").arg(&gz));
    // inspect reads the .img.gz as it is: the bare ext4 disk, the NixOS system on it.
    let j = inspect_json(&gz);
    assert_eq!(
        (&j["compression"], &j["container"]),
        (&json!("gzip"), &json!("raw"))
    );
    assert_eq!(j["disk_size"].as_u64(), Some(disk_size));
    assert_eq!(j["nixos"]["partition"], 0, "{}", j["nixos"]);
    let img = t.path().join("l.img");
    gunzip(&gz, &img);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), disk_size);
    assert_eq!(sha256(&img), m["disk_sha256"].as_str().unwrap());
    ok(Command::new("e2fsck").arg("-fn").arg(&img));
    let blkid = stdout(Command::new("blkid").args(["-p", "-o", "export"]).arg(&img));
    assert!(blkid.contains("TYPE=ext4\n"), "{blkid}");
    assert!(!blkid.contains("PTTYPE"), "no partition table: {blkid}");
    // No boot code: sector 0 is the file system's (zeros before the superblock).
    assert!(crate::bios::read(&img, 0, 1024).iter().all(|&b| b == 0));

    // /boot/grub as install-grub.pl leaves it for `nodev`: no grub-install, so no
    // i386-pc/, fonts/ or grubenv.
    let ls = fstest(&img, &["ls", "(loop0)/boot/grub/"]);
    let mut names: Vec<&str> = ls.split_whitespace().collect();
    names.sort();
    assert_eq!(names, ["grub.cfg", "state"]);
    assert_eq!(
        fstest(&img, &["cat", "(loop0)/boot/grub/state"]),
        "grub\n2.06\nno\nnodev\n/boot\n{\"extraGrubInstallArgs\":[]}\n"
    );
    let cfg = fstest(&img, &["cat", "(loop0)/boot/grub/grub.cfg"]);
    assert!(
        cfg.contains(&format!("\n    search --set=drive1 --fs-uuid {uuid}\n")),
        "{cfg}"
    );
    assert!(cfg.contains("\n      set timeout=10\n"), "{cfg}");
    assert!(
        cfg.contains(&format!("  linux ($drive2){KERNEL} init=")),
        "{cfg}"
    );
    assert!(
        cfg.contains(&format!("  initrd ($drive2){INITRD}\n")),
        "{cfg}"
    );
    // GRUB reads the kernel and initrd where grub.cfg points it.
    for f in [KERNEL, INITRD] {
        let got = ok(Command::new("grub-fstest")
            .arg(&img)
            .args(["cat", &format!("(loop0){f}")]))
        .stdout;
        assert_eq!(got, store_file(&closure, f), "{f}");
    }
    // imgbuild's own reader takes the table-less disk as partition 0.
    let inspect = inspect_json(&img);
    assert_eq!(inspect["table"]["kind"], "none", "{inspect}");
    // 7-Zip lists the gzip member and, unpacked, the ext4 file system's tree.
    let l = stdout(Command::new("7zz").arg("l").arg(&gz));
    assert!(l.contains("l.img"), "{l}");
    let l = stdout(Command::new("7zz").arg("l").arg(&img));
    assert!(l.contains("Type = Ext"), "{l}");
    assert!(l.contains("grub.cfg"), "{l}");
}

#[test]
fn linode_with_copy_kernels_and_labels_has_grub_load_the_copies() {
    let t = tempfile::tempdir().unwrap();
    let record = json!({"devices": ["nodev"], "copyKernels": true, "fsIdentifier": "label"});
    let Some(closure) = grub_closure(t.path(), record) else {
        return;
    };
    let gz = t.path().join("l.img.gz");
    build("linode", &closure, &gz, &[]);
    let img = t.path().join("l.img");
    gunzip(&gz, &img);
    ok(Command::new("e2fsck").arg("-fn").arg(&img));
    let cfg = fstest(&img, &["cat", "(loop0)/boot/grub/grub.cfg"]);
    // copyToKernelsDir: /nix/store/<hash>-<name>/<file> as /boot/kernels/<hash>-<name>-<file>,
    // found by label; the store is not searched.
    let copied = |f: &str| {
        format!(
            "/boot/kernels/{}",
            f["/nix/store/".len()..].replace('/', "-")
        )
    };
    assert!(
        cfg.contains("\n    search --set=drive1 --label nixos\n"),
        "{cfg}"
    );
    assert!(!cfg.contains("drive2"), "{cfg}");
    assert!(
        cfg.contains(&format!("  linux ($drive1){} init=", copied(KERNEL))),
        "{cfg}"
    );
    assert!(
        cfg.contains(&format!("  initrd ($drive1){}\n", copied(INITRD))),
        "{cfg}"
    );
    for f in [KERNEL, INITRD] {
        let got = ok(Command::new("grub-fstest")
            .arg(&img)
            .args(["cat", &format!("(loop0){}", copied(f))]))
        .stdout;
        assert_eq!(got, store_file(&closure, f), "{f}");
    }
}

#[test]
fn linode_same_bytes_twice_and_for_any_threads() {
    let t = tempfile::tempdir().unwrap();
    let Some(closure) = grub_closure(t.path(), json!({"devices": ["nodev"]})) else {
        return;
    };
    let a = build("linode", &closure, &t.path().join("a.img.gz"), &["-j", "1"]);
    let b = build("linode", &closure, &t.path().join("b.img.gz"), &["-j", "3"]);
    assert_eq!(a["sha256"], b["sha256"]);
    assert_eq!(a["disk_sha256"], b["disk_sha256"]);
    assert_eq!(
        sha256(&t.path().join("a.img.gz")),
        sha256(&t.path().join("b.img.gz"))
    );
}

#[test]
fn linode_refuses_grub_on_a_disk_and_raw_refuses_nodev() {
    let t = tempfile::tempdir().unwrap();
    // The test closure's default record installs GRUB on /dev/vda.
    for d in ["vda", "nodev"] {
        std::fs::create_dir(t.path().join(d)).unwrap();
    }
    let Some(vda) = grub_closure(&t.path().join("vda"), json!({})) else {
        return;
    };
    let a = args("linode", &vda, &t.path().join("l.img.gz"), &[]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = fails(&mut imgbuild(&refs));
    assert!(
        err.contains("names /dev/vda") && err.contains("device = \"nodev\""),
        "{err}"
    );
    assert!(!t.path().join("l.img.gz").exists());
    let nodev = grub_closure(&t.path().join("nodev"), json!({"devices": ["nodev"]})).unwrap();
    let a = args("raw", &nodev, &t.path().join("r.img"), &[]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = fails(&mut imgbuild(&refs));
    assert!(err.contains("names nodev"), "{err}");
    // Even past the system check, a disk with a table gets GRUB's boot code or nothing.
    let a = args(
        "raw",
        &nodev,
        &t.path().join("r.img"),
        &["--no-system-check"],
    );
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = fails(&mut imgbuild(&refs));
    assert!(err.contains("devices = [\"nodev\"]"), "{err}");
}

#[test]
fn cloudstack_is_the_raw_disk_as_qcow2() {
    let t = tempfile::tempdir().unwrap();
    let Some(closure) = grub_closure(t.path(), json!({})) else {
        return;
    };
    let raw = build("raw", &closure, &t.path().join("r.img"), &[]);
    let out = t.path().join("c.qcow2");
    let cs = build("cloudstack", &closure, &out, &[]);
    let again = build(
        "cloudstack",
        &closure,
        &t.path().join("c2.qcow2"),
        &["-j", "1"],
    );
    assert_eq!(cs["container"], "qcow2");
    assert_eq!(cs["table"], "dos");
    // Same seed: the raw format's disk, and the same file twice.
    assert_eq!(cs["disk_sha256"], raw["disk_sha256"]);
    assert_eq!(cs["sha256"], again["sha256"]);
    assert_eq!(sha256(&out), sha256(&t.path().join("c2.qcow2")));
    ok(Command::new("qemu-img").arg("check").arg(&out));
    let disk = t.path().join("c.raw");
    ok(Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&out)
        .arg(&disk));
    assert_eq!(sha256(&disk), raw["disk_sha256"].as_str().unwrap());
    let l = stdout(Command::new("7zz").arg("l").arg(&out));
    assert!(l.contains("Type = QCOW"), "{l}");
    let state = ok(&mut imgbuild(&[
        "cat",
        &out.display().to_string(),
        "/boot/grub/state",
    ]))
    .stdout;
    let grub = GRUB_PATH.rsplit('-').next().unwrap();
    assert_eq!(
        String::from_utf8(state).unwrap(),
        format!("grub\n{grub}\nno\n/dev/vda\n/boot\n{{\"extraGrubInstallArgs\":[]}}\n")
    );
}
