//! Images from the closures built by real Nix (`cargo xtask fixtures`, in target/fixtures):
//! the database checked by real Nix, the root read back through the kernel, the sd-aarch64
//! layout and extlinux tree, compression, and reproducibility. `cargo xtask ci` builds the
//! fixtures before the tests; without them these tests fail (they never skip).

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(arch: &str) -> (PathBuf, Value) {
    let dir = workspace().join("target/fixtures").join(arch);
    let info = std::fs::read(dir.join("fixture.json")).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build the fixture first with `cargo xtask fixtures --arch {arch}`",
            dir.display()
        )
    });
    (dir, serde_json::from_slice(&info).unwrap())
}

fn build(format: &str, fix: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        format.to_string(),
        "--closure".into(),
        fix.join("result").display().to_string(),
        "--store-root".into(),
        fix.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_slice(&ok(&mut imgbuild(&refs)).stdout).unwrap()
}

fn store_paths(fix: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(fix.join("closure-info/store-paths"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Loop-mounts a partition of `img` (read-write on a copy) and unmounts on drop.
struct Mount(PathBuf);
impl Mount {
    fn new(img: &Path, offset: u64, at: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        ok(Command::new("mount")
            .args(["-t", "ext4", "-o"])
            .arg(format!("loop,{opts},offset={offset}"))
            .arg(img)
            .arg(at));
        Mount(at.to_path_buf())
    }

    /// Unmounts now, retrying while busy (a process of a parallel test may still hold it
    /// for a moment), so what follows reads the file system as the kernel left it.
    fn unmount(self) {
        for _ in 0..100 {
            let st = Command::new("umount").arg(&self.0).status().unwrap();
            if st.success() {
                std::mem::forget(self);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("umount {} kept failing", self.0.display());
    }
}
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn raw_efi_root_is_accepted_by_real_nix_and_the_kernel() {
    let (fix, info) = fixture("x86_64");
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("raw.img");
    let m = build("raw-efi", &fix, &img, &[]);
    assert_eq!(m["closure_source"], "database");
    assert_eq!(m["toplevel"], info["toplevel"]);
    let root = &m["partitions"][1];
    let root_img = t.path().join("root.img");
    extract(
        &img,
        root["start"].as_u64().unwrap(),
        root["filesystem"]["size"].as_u64().unwrap(),
        &root_img,
    );
    ok(Command::new("e2fsck").arg("-fn").arg(&root_img));

    // Read-only through the kernel: the store equals the closure, byte for byte.
    {
        let mnt = Mount::new(
            &img,
            root["start"].as_u64().unwrap(),
            &t.path().join("ro"),
            "ro",
        );
        let mut listed: Vec<String> = std::fs::read_dir(mnt.0.join("nix/store"))
            .unwrap()
            .map(|e| format!("/nix/store/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        listed.sort();
        assert_eq!(listed, store_paths(&fix));
        for p in store_paths(&fix) {
            let rel = p.trim_start_matches('/');
            ok(Command::new("diff")
                .arg("-r")
                .arg("--no-dereference")
                .arg(fix.join(rel))
                .arg(mnt.0.join(rel)));
        }
    }

    // Real Nix on the image's root (mounted read-write on the extracted copy): the database
    // verifies, contents included, and the closure of the profile is the closure.
    let mnt = Mount::new(&root_img, 0, &t.path().join("rw"), "rw");
    let v = ok(Command::new("nix-store")
        .arg("--store")
        .arg(&mnt.0)
        .args(["--verify", "--check-contents"])
        .env("NIX_CONFIG", "sandbox = false\nbuild-users-group =\n"));
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(
        !err.contains("error") && !err.contains("warning") && !err.contains("modified"),
        "{err}"
    );
    let toplevel = std::fs::read_link(mnt.0.join("nix/var/nix/profiles/system-1-link")).unwrap();
    assert_eq!(
        toplevel.to_str().unwrap(),
        info["toplevel"].as_str().unwrap()
    );
    let q = stdout(
        Command::new("nix-store")
            .arg("--store")
            .arg(&mnt.0)
            .arg("-qR")
            .arg(&toplevel)
            .env("NIX_CONFIG", "sandbox = false\nbuild-users-group =\n"),
    );
    let mut q: Vec<String> = q.lines().map(str::to_string).collect();
    q.sort();
    assert_eq!(q, store_paths(&fix));

    // The kernel takes it read-write: create, append, rename, delete; still fsck-clean.
    ok(&mut sh(&format!(
        "cd {0} && echo new > etc/new && echo more >> etc/NIXOS && mv etc/new etc/renamed \
         && mkdir -p var/tmp/d && cp -r nix/store/*-linux-* var/tmp/d/ && rm -r var/tmp/d/* \
         && rm etc/renamed && sync",
        mnt.0.display()
    )));
    mnt.unmount();
    ok(Command::new("e2fsck").arg("-fn").arg(&root_img));
}

#[test]
fn closure_info_and_scan_give_the_same_image() {
    // closureInfo (no derivers) and a scan of the store (NAR hashes and references computed
    // in Rust) describe the same closure, so the images are identical.
    let (fix, _) = fixture("x86_64");
    let t = tempfile::tempdir().unwrap();
    let a = build(
        "raw-efi",
        &fix,
        &t.path().join("a.img"),
        &[
            "--closure-info",
            &fix.join("closure-info").display().to_string(),
        ],
    );
    assert_eq!(a["closure_source"], "closure-info");
    // A copy of the store without its database forces the scan.
    let copy = t.path().join("copy");
    std::fs::create_dir_all(copy.join("nix")).unwrap();
    ok(Command::new("cp")
        .arg("-a")
        .arg(fix.join("nix/store"))
        .arg(copy.join("nix/")));
    ok(Command::new("cp")
        .arg("-a")
        .arg(fix.join("result"))
        .arg(&copy));
    let b = build("raw-efi", &copy, &t.path().join("b.img"), &[]);
    assert_eq!(b["closure_source"], "scan");
    assert_eq!(a["store_paths"], b["store_paths"]);
    assert_eq!(a["sha256"], b["sha256"]);
}

/// The fixture is a 24.05 system: 24.05's extlinux-conf-builder.sh wrote `MENU TITLE`
/// before `TIMEOUT` (nixpkgs PR #318778 swapped them after 24.05).
fn expected_extlinux(info: &Value) -> String {
    let clean = |p: &str| p.trim_start_matches("/nix/store/").replace('/', "-");
    format!(
        "# Generated file, all changes will be lost on nixos-rebuild!\n\n\
         # Change this to e.g. nixos-42 to temporarily boot to an older configuration.\n\
         DEFAULT nixos-default\n\nMENU TITLE {dashes}\nTIMEOUT 50\n\n\
         LABEL nixos-default\n  MENU LABEL NixOS - Default\n  LINUX ../nixos/{kernel}\n  \
         INITRD ../nixos/{initrd}\n  APPEND init={toplevel}/init {params}\n  FDTDIR ../nixos/{dtbs}\n",
        dashes = "-".repeat(60),
        kernel = clean(info["kernel"].as_str().unwrap()),
        initrd = clean(info["initrd"].as_str().unwrap()),
        toplevel = info["toplevel"].as_str().unwrap(),
        params = info["kernelParams"].as_str().unwrap(),
        dtbs = clean(info["dtbs"].as_str().unwrap()),
    )
}

#[test]
fn sd_aarch64_layout_firmware_extlinux_and_compression() {
    let (fix, info) = fixture("aarch64");
    let t = tempfile::tempdir().unwrap();
    let zst = t.path().join("sd.img.zst");
    let m = build("sd-aarch64", &fix, &zst, &["--keep-raw", "-j", "1"]);
    let raw = t.path().join("sd.img");
    // Names beside the manifest, not host paths.
    assert_eq!(m["raw_image"], "sd.img");
    assert_eq!(m["image"], "sd.img.zst");
    assert!(raw.exists());
    assert_eq!(m["sha256"], sha256(&zst));

    // zstd accepts it and decompresses to the raw image.
    ok(Command::new("zstd").arg("-tq").arg(&zst));
    let back = t.path().join("back.img");
    ok(Command::new("zstd")
        .arg("-dqf")
        .arg(&zst)
        .arg("-o")
        .arg(&back));
    assert_eq!(sha256(&back), sha256(&raw));

    // MBR as nixpkgs' sd-image lays it out.
    let sf: Value =
        serde_json::from_str(&stdout(Command::new("sfdisk").arg("--json").arg(&raw))).unwrap();
    let pt = &sf["partitiontable"];
    assert_eq!(pt["label"], "dos");
    assert_eq!(pt["id"], m["disk_id"]);
    let p = &pt["partitions"];
    assert_eq!(
        (p[0]["start"].as_u64(), p[0]["size"].as_u64()),
        (Some(16384), Some(61440))
    );
    assert_eq!(p[0]["type"], "b");
    assert!(p[0].get("bootable").is_none());
    assert_eq!(p[1]["start"], 77824);
    assert_eq!(p[1]["type"], "83");
    assert_eq!(p[1]["bootable"], true);
    let disk = std::fs::metadata(&raw).unwrap().len();
    assert_eq!(
        p[1]["start"].as_u64().unwrap() + p[1]["size"].as_u64().unwrap(),
        disk / 512
    );

    // Firmware partition: FAT16 (30 MiB cannot hold FAT32), the firmware dir verbatim plus
    // nixpkgs' config.txt.
    let fw = t.path().join("fw.img");
    extract(&raw, 8 << 20, 30 << 20, &fw);
    ok(Command::new("fsck.fat").arg("-n").arg(&fw));
    assert!(stdout(Command::new("minfo").arg("-i").arg(&fw).arg("::")).contains("FAT16"));
    assert_eq!(m["partitions"][0]["filesystem"]["kind"], "fat16");
    let fwdir = t.path().join("fwdir");
    std::fs::create_dir(&fwdir).unwrap();
    ok(Command::new("mcopy")
        .args(["-s", "-n", "-i"])
        .arg(&fw)
        .arg("::/*")
        .arg(&fwdir));
    let src = fix.join(info["firmware"].as_str().unwrap().trim_start_matches('/'));
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let got = std::fs::read(fwdir.join(e.file_name())).unwrap();
        assert_eq!(got, std::fs::read(e.path()).unwrap(), "{:?}", e.file_name());
    }
    let cfg = std::fs::read_to_string(fwdir.join("config.txt")).unwrap();
    assert!(
        cfg.contains("kernel=u-boot.bin") && cfg.contains("arm_64bit=1"),
        "{cfg}"
    );

    // Root: fsck-clean, extlinux.conf exactly as the builder writes it, /boot/nixos names.
    let root = &m["partitions"][1];
    let root_img = t.path().join("root.img");
    extract(
        &raw,
        root["start"].as_u64().unwrap(),
        root["filesystem"]["size"].as_u64().unwrap(),
        &root_img,
    );
    ok(Command::new("e2fsck").arg("-fn").arg(&root_img));
    let dbg = |req: &str| stdout(Command::new("debugfs").arg("-R").arg(req).arg(&root_img));
    assert_eq!(
        dbg("cat /boot/extlinux/extlinux.conf"),
        expected_extlinux(&info)
    );
    let ls = dbg("ls /boot/nixos");
    let clean = |k: &str| {
        info[k]
            .as_str()
            .unwrap()
            .trim_start_matches("/nix/store/")
            .replace('/', "-")
    };
    for k in ["kernel", "initrd", "dtbs"] {
        assert!(ls.contains(&clean(k)), "{k}: {ls}");
    }
    assert!(dbg("stat /nix-path-registration").contains("Type: regular"));
    assert!(dbg("stat /nix/var/nix/db/db.sqlite").contains("Type: regular"));
    assert!(dbg("stat /boot/firmware").contains("Type: directory"));
    let kernel_back = t.path().join("kernel");
    dbg(&format!(
        "dump /boot/nixos/{} {}",
        clean("kernel"),
        kernel_back.display()
    ));
    assert_eq!(
        sha256(&kernel_back),
        sha256(&fix.join(info["kernel"].as_str().unwrap().trim_start_matches('/')))
    );

    // Same bytes with 2 threads and on a second run.
    let zst2 = t.path().join("sd2.img.zst");
    let m2 = build("sd-aarch64", &fix, &zst2, &["-j", "2"]);
    assert_eq!(m2["sha256"], m["sha256"]);
}

/// Identical store files share one inode (`--optimise-store`: and `/nix/store/.links` holds
/// them under Nix's names): checked against real Nix, whose `nix-store --optimise` on the
/// image's own store then finds nothing left to link, and against an optimised copy of the
/// closure made by Nix itself.
#[test]
fn optimise_store_is_what_nix_optimise_leaves() {
    let (fix, _) = fixture("x86_64");
    let t = tempfile::tempdir().unwrap();
    let nix_env = "sandbox = false\nbuild-users-group =\nsubstituters =\n";

    // Nix's own optimisation of exactly the closure.
    let copy = t.path().join("copy");
    std::fs::create_dir_all(copy.join("nix/store")).unwrap();
    for p in store_paths(&fix) {
        let rel = p.trim_start_matches('/');
        ok(Command::new("cp")
            .arg("-a")
            .arg(fix.join(rel))
            .arg(copy.join(rel)));
    }
    let reg = std::fs::File::open(fix.join("closure-info/registration")).unwrap();
    ok(Command::new("nix-store")
        .arg("--store")
        .arg(&copy)
        .arg("--load-db")
        .stdin(reg)
        .env("NIX_CONFIG", nix_env));
    let o = ok(Command::new("nix-store")
        .arg("--store")
        .arg(&copy)
        .arg("--optimise")
        .env("NIX_CONFIG", nix_env));
    eprintln!(
        "nix on a copy: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    );
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let nix_links = names(&copy.join("nix/store/.links"));

    let img = t.path().join("opt.img");
    let m = build("raw-efi", &fix, &img, &["--optimise-store"]);
    let d = &m["dedup"];
    assert_eq!(d["links"].as_u64(), Some(nix_links.len() as u64), "{d}");
    assert!(d["files_linked"].as_u64() > Some(0), "{d}");
    let root = &m["partitions"][1];
    let root_img = t.path().join("root.img");
    extract(
        &img,
        root["start"].as_u64().unwrap(),
        root["filesystem"]["size"].as_u64().unwrap(),
        &root_img,
    );
    ok(Command::new("e2fsck").arg("-fn").arg(&root_img));
    let mnt = Mount::new(&root_img, 0, &t.path().join("rw"), "rw");
    assert_eq!(names(&mnt.0.join("nix/store/.links")), nix_links);

    // Every name of a linked inode is in .links once; link counts add up.
    use std::os::unix::fs::MetadataExt;
    let mut by_ino: std::collections::HashMap<u64, (u64, u64)> = Default::default();
    for e in walkdir(&mnt.0.join("nix/store")) {
        let md = std::fs::symlink_metadata(&e).unwrap();
        if !md.is_dir() {
            let c = by_ino.entry(md.ino()).or_insert((md.nlink(), 0));
            c.1 += 1;
        }
    }
    for (ino, (nlink, seen)) in &by_ino {
        assert_eq!(nlink, seen, "inode {ino}: link count {nlink}, {seen} names");
    }
    assert_eq!(
        by_ino.values().filter(|(n, _)| *n > 1).count(),
        nix_links.len(),
        "every linked inode has exactly one .links name"
    );

    // Real Nix: contents verify, and optimising again links nothing.
    let v = ok(Command::new("nix-store")
        .arg("--store")
        .arg(&mnt.0)
        .args(["--verify", "--check-contents"])
        .env("NIX_CONFIG", nix_env));
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(
        !err.contains("error") && !err.contains("warning") && !err.contains("modified"),
        "{err}"
    );
    let o = ok(Command::new("nix-store")
        .arg("--store")
        .arg(&mnt.0)
        .arg("--optimise")
        .env("NIX_CONFIG", nix_env));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("by hard-linking 0 files"), "{said}");
    mnt.unmount();
    ok(Command::new("e2fsck").arg("-fn").arg(&root_img));

    // Default dedup: the same sharing without .links; --no-dedup: every file its own inode.
    let plain = t.path().join("plain.img");
    let pm = build("raw-efi", &fix, &plain, &[]);
    assert_eq!(pm["dedup"]["links"], 0);
    assert!(pm["dedup"]["bytes_saved"].as_u64() > Some(0));
    let none = t.path().join("none.img");
    let nm = build("raw-efi", &fix, &none, &["--no-dedup"]);
    assert!(nm.get("dedup").is_none(), "{nm}");
    assert!(
        nm["partitions"][1]["filesystem"]["size"].as_u64()
            >= pm["partitions"][1]["filesystem"]["size"].as_u64()
    );
}

/// Every path below `dir` (not following symlinks).
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// The bmap beside an sd-aarch64 `.img.zst`: `bmaptool copy` onto a device full of 0xFF
/// (a loop device: bmaptool truncates regular files) writes only the mapped ranges, and the
/// partitions pass fsck.fat and e2fsck, so everything a filesystem needs is mapped, zeros
/// included; a byte flipped inside a mapped range makes bmaptool fail its checksum.
#[test]
fn bmaptool_copies_onto_a_dirty_device() {
    let (fix, _) = fixture("aarch64");
    let t = tempfile::tempdir().unwrap();
    let zst = t.path().join("sd.img.zst");
    let m = build("sd-aarch64", &fix, &zst, &["--keep-raw"]);
    let raw = t.path().join("sd.img");
    let bmap = t.path().join("sd.img.bmap");
    assert_eq!(m["bmap"], "sd.img.bmap");
    let size = m["disk_size"].as_u64().unwrap();
    let xml = std::fs::read_to_string(&bmap).unwrap();
    assert!(
        xml.contains(&format!("<ImageSize> {size} </ImageSize>")),
        "{xml}"
    );

    let target = t.path().join("dirty.bin");
    ok(&mut sh(&format!(
        "head -c {size} /dev/zero | tr '\\0' '\\377' > {}",
        target.display()
    )));
    let lo = stdout(Command::new("losetup").args(["-f", "--show"]).arg(&target));
    let lo = lo.trim().to_string();
    let copied = Command::new("bmaptool")
        .arg("copy")
        .arg(&zst)
        .arg(&lo)
        .output()
        .unwrap();
    let _ = Command::new("losetup").args(["-d", &lo]).status();
    assert!(
        copied.status.success(),
        "bmaptool copy: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let said = String::from_utf8_lossy(&copied.stderr);
    assert!(
        said.contains("sd.img.bmap"),
        "bmaptool found our bmap: {said}"
    );
    // Unmapped blocks are still 0xFF: only mapped ranges were written.
    let bytes = std::fs::read(&target).unwrap();
    assert!(
        bytes.iter().filter(|&&b| b == 0xFF).count() > 4096,
        "nothing left unwritten"
    );
    for p in m["partitions"].as_array().unwrap() {
        let part = t.path().join(format!("p{}", p["number"]));
        extract(
            &target,
            p["start"].as_u64().unwrap(),
            p["filesystem"]["size"].as_u64().unwrap(),
            &part,
        );
        let tool = if p["filesystem"]["kind"] == "ext4" {
            "e2fsck"
        } else {
            "fsck.fat"
        };
        let o = Command::new(tool)
            .arg(if tool == "e2fsck" { "-fn" } else { "-n" })
            .arg(&part)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{tool} on partition {} after bmaptool copy onto 0xFF:\n{}{}",
            p["number"],
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // A flipped byte in a mapped range of the image: bmaptool refuses it.
    let bad = t.path().join("bad.img");
    std::fs::copy(&raw, &bad).unwrap();
    let first = xml
        .lines()
        .find(|l| l.contains("<Range"))
        .and_then(|l| l.split('>').nth(1))
        .and_then(|r| r.split('<').next())
        .map(|r| r.trim().split('-').next().unwrap().parse::<u64>().unwrap())
        .unwrap();
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bad)
        .unwrap();
    let at = first * 4096 + 100;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x55], at).unwrap();
    drop(f);
    let out = t.path().join("out.bin");
    std::fs::write(&out, b"").unwrap();
    let o = Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(&bmap)
        .arg(&bad)
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "bmaptool accepted a corrupted image");
    assert!(err.contains("checksum mismatch"), "{err}");
}
