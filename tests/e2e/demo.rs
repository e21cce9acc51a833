//! raw-efi from the committed demo closure, checked with sgdisk, sfdisk, fsck.fat, mtools,
//! e2fsck and debugfs; reproducibility across threads, copies, umask and users.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn part(m: &Value, i: usize) -> &Value {
    &m["partitions"][i]
}

fn u(v: &Value) -> u64 {
    v.as_u64().expect("a number")
}

#[test]
fn raw_efi_demo_is_valid_by_every_tool() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("demo.img");
    let m = run_demo("raw-efi", &img, &[]);

    // Manifest beside the image equals what --json printed.
    let side: Value =
        serde_json::from_slice(&std::fs::read(t.path().join("demo.img.json")).unwrap()).unwrap();
    assert_eq!(side, m);
    assert_eq!(m["format"], "raw-efi");
    assert_eq!(m["sha256"], sha256(&img));
    assert!(!t.path().join("demo.img.tmp").exists());

    // Partition table.
    let v = stdout(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(v.contains("No problems found"), "{v}");
    let sf: Value =
        serde_json::from_str(&stdout(Command::new("sfdisk").arg("--json").arg(&img))).unwrap();
    let pt = &sf["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    assert_eq!(pt["id"], m["disk_id"]);
    let esp = &pt["partitions"][0];
    assert_eq!(esp["start"], 16384);
    assert_eq!(esp["size"], (512u64 << 20) / 512);
    assert_eq!(esp["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(esp["name"], "ESP");
    assert_eq!(esp["uuid"], part(&m, 0)["guid"]);
    let root = &pt["partitions"][1];
    assert_eq!(root["type"], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    assert_eq!(root["start"], u(&part(&m, 1)["start"]) / 512);
    assert_eq!(u(&root["start"]) % 2048, 0, "1 MiB aligned");
    assert_eq!(root["uuid"], part(&m, 1)["guid"]);

    // ESP: fsck.fat clean, files read back equal to their sources.
    let esp_img = t.path().join("esp.img");
    extract(
        &img,
        u(&part(&m, 0)["start"]),
        u(&part(&m, 0)["size"]),
        &esp_img,
    );
    let f = ok(Command::new("fsck.fat").arg("-n").arg(&esp_img));
    assert!(!String::from_utf8_lossy(&f.stdout).contains("differ"));
    let espdir = t.path().join("espdir");
    std::fs::create_dir(&espdir).unwrap();
    ok(Command::new("mcopy")
        .args(["-s", "-n", "-i"])
        .arg(&esp_img)
        .arg("::/EFI")
        .arg("::/loader")
        .arg(&espdir));
    let store = demo().join("nix/store");
    let systemd = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("-systemd-"))
        .unwrap();
    let efi = std::fs::read(systemd.join("lib/systemd/boot/efi/systemd-bootx64.efi")).unwrap();
    assert_eq!(
        std::fs::read(espdir.join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
        efi
    );
    assert_eq!(
        std::fs::read(espdir.join("EFI/systemd/systemd-bootx64.efi")).unwrap(),
        efi
    );
    let entry =
        std::fs::read_to_string(espdir.join("loader/entries/nixos-generation-1.conf")).unwrap();
    let toplevel = m["toplevel"].as_str().unwrap();
    assert!(entry.starts_with("title NixOS\n"), "{entry}");
    assert!(
        entry.contains(&format!("options init={toplevel}/init ")),
        "{entry}"
    );
    assert!(entry.contains("built on 1980-01-01"), "{entry}");
    for line in entry
        .lines()
        .filter(|l| l.starts_with("linux ") || l.starts_with("initrd "))
    {
        let rel = line.split_once(' ').unwrap().1.trim_start_matches('/');
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        // <hash>-<name>-<file>.efi: the source is /nix/store/<hash>-<name>/<file>.
        let base = name.trim_end_matches(".efi");
        let (dir, file) = base.rsplit_once('-').unwrap();
        let src = store.join(dir).join(file);
        assert_eq!(
            std::fs::read(espdir.join(rel)).unwrap(),
            std::fs::read(&src).unwrap(),
            "{rel}"
        );
    }
    let loader = std::fs::read_to_string(espdir.join("loader/loader.conf")).unwrap();
    assert!(
        loader.contains("default nixos-generation-1.conf\n"),
        "{loader}"
    );
    assert_eq!(
        std::fs::read_to_string(espdir.join("loader/entries.srel")).unwrap(),
        "type1\n"
    );
    assert!(!espdir.join("loader/random-seed").exists());

    // Root: e2fsck clean; the store, profile and Nix state as NixOS has them.
    let root_img = t.path().join("root.img");
    extract(
        &img,
        u(&part(&m, 1)["start"]),
        u(&part(&m, 1)["filesystem"]["size"]),
        &root_img,
    );
    ok(Command::new("e2fsck").arg("-fn").arg(&root_img));
    let label = stdout(Command::new("e2label").arg(&root_img));
    assert_eq!(label.trim(), "nixos");
    let dbg = |req: &str| stdout(Command::new("debugfs").arg("-R").arg(req).arg(&root_img));
    let st = dbg("stat /nix/store");
    assert!(st.contains("Mode:  01775"), "{st}");
    assert!(st.contains("Group: 30000"), "{st}");
    let var = t.path().join("var");
    std::fs::create_dir(&var).unwrap();
    dbg(&format!("rdump /nix/var {}", var.display()));
    let link = |p: &str| std::fs::read_link(var.join(p)).unwrap();
    assert_eq!(link("var/nix/profiles/system"), Path::new("system-1-link"));
    assert_eq!(link("var/nix/profiles/system-1-link"), Path::new(toplevel));
    assert_eq!(
        link("var/nix/gcroots/profiles"),
        Path::new("/nix/var/nix/profiles")
    );
    assert_eq!(std::fs::read(var.join("var/nix/db/schema")).unwrap(), b"10");
    assert!(dbg("stat /etc/NIXOS").contains("Type: regular"));
    assert!(dbg("stat /nix/var/nix/db/db.sqlite").contains("Type: regular"));
    assert!(dbg("stat /boot").contains("Type: directory"));

    // Every store file read back equals the closure (content, symlink targets, exec bits).
    let back = t.path().join("back");
    std::fs::create_dir(&back).unwrap();
    dbg(&format!("rdump /nix/store {}", back.display()));
    ok(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&store)
        .arg(back.join("store")));
}

#[test]
fn same_bytes_for_any_threads_copy_umask_and_user() {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let a = t.path().join("a.img");
    let ma = run_demo("raw-efi", &a, &["-j", "1"]);
    let b = t.path().join("b.img");
    let mb = run_demo("raw-efi", &b, &["-j", "2"]);
    assert_eq!(ma["sha256"], mb["sha256"]);

    // A copy of the closure made with another umask, in another directory, built by an
    // unprivileged user: same image.
    let copy = t.path().join("copy");
    ok(&mut sh(&format!(
        "umask 077; cp -r --no-dereference {} {}",
        demo().display(),
        copy.display()
    )));
    ok(&mut sh(&format!("chmod -R a+rX {}", copy.display())));
    let c = t.path().join("c.img");
    let args = [
        "raw-efi",
        "--closure",
        &copy.join("result").display().to_string(),
        "--store-root",
        &copy.display().to_string(),
        "--closure-info",
        &copy.join("closure-info").display().to_string(),
        "-o",
        &c.display().to_string(),
    ]
    .map(|s| s.to_string());
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(bin())
        .args(&args)
        .env_remove("SOURCE_DATE_EPOCH")
        .current_dir(t.path());
    ok(&mut cmd);
    assert_eq!(sha256(&c), ma["sha256"].as_str().unwrap());
}

#[test]
fn source_date_epoch_changes_times_only_where_generated() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a.img");
    let mut args = demo_args("raw-efi", &a);
    args.push("--json".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = ok(imgbuild(&refs).env("SOURCE_DATE_EPOCH", "1700000000"));
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["source_date_epoch"], 1700000000);
    let d = run_demo("raw-efi", &t.path().join("d.img"), &[]);
    assert_ne!(m["sha256"], d["sha256"]);
}

/// ISSUE #14.5: on a terminal, reading and planning show a spinner (no empty `0 B/0 B` bar),
/// and the writing bar moves while the disk is hashed (4 GiB, mostly holes).
#[test]
fn progress_on_a_terminal_tells_the_truth() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("p.img");
    let cmd = format!(
        "{} {} --size 4GiB",
        bin().display(),
        demo_args("raw-efi", &out).join(" ")
    );
    let o = ok(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    let text = String::from_utf8_lossy(&o.stdout).replace('\r', "\n");
    assert!(!text.contains("0 B/0 B"), "an empty bar was drawn:\n{text}");
    assert!(text.contains("reading the closure"), "{text}");
    let positions: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.contains("writing p.img ["))
        .filter_map(|l| l.split("] ").nth(1))
        .filter_map(|l| l.split('/').next())
        .collect();
    assert!(
        positions.len() >= 5,
        "the writing bar did not move: {positions:?}\n{text}"
    );
}

/// The README's second demo command: sd-aarch64 from the committed aarch64 demo closure.
/// The card is a valid MBR disk with a clean FAT firmware partition and ext4 root.
#[test]
fn the_aarch64_demo_builds_an_sd_card() {
    let t = tempfile::tempdir().unwrap();
    let zst = t.path().join("demo.img.zst");
    let m = run_demo("sd-aarch64", &zst, &["--keep-raw"]);
    assert_eq!(m["system"], "aarch64-linux");
    ok(Command::new("zstd").arg("-tq").arg(&zst));
    let raw = t.path().join("demo.img");
    let sf = stdout(Command::new("sfdisk").arg("--json").arg(&raw));
    assert!(
        sf.contains("\"label\":\"dos\"") || sf.contains("\"label\": \"dos\""),
        "{sf}"
    );
    for p in m["partitions"].as_array().unwrap() {
        let part = t.path().join(format!("p{}", p["number"]));
        extract(
            &raw,
            p["start"].as_u64().unwrap(),
            p["filesystem"]["size"].as_u64().unwrap(),
            &part,
        );
        if p["filesystem"]["kind"] == "ext4" {
            ok(Command::new("e2fsck").arg("-fn").arg(&part));
        } else {
            ok(Command::new("fsck.fat").arg("-n").arg(&part));
        }
    }
    let cfg = stdout(&mut imgbuild(&[
        "cat",
        &zst.display().to_string(),
        "FIRMWARE:/config.txt",
    ]));
    assert!(cfg.starts_with("kernel=u-boot.bin"), "{cfg}");
}

/// ISSUE #14.3: `imgbuild ext4` is reproducible by default: file times are clamped to
/// SOURCE_DATE_EPOCH (default 1980-01-01), so touching a file changes nothing;
/// `--preserve-times` keeps host times (and then a touch does change the image).
#[test]
fn ext4_images_do_not_depend_on_when_files_were_touched() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"contents\n").unwrap();
    let build = |name: &str, extra: &[&str]| -> String {
        let out = t.path().join(name);
        let mut args = vec!["ext4", src.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        ok(&mut imgbuild(&args));
        ok(Command::new("e2fsck").arg("-fn").arg(&out));
        sha256(&out)
    };
    let a = build("a.img", &[]);
    let pa = build("pa.img", &["--preserve-times"]);
    ok(Command::new("touch")
        .args(["-d", "2031-01-02 03:04:05"])
        .arg(src.join("d/f"))
        .arg(src.join("d")));
    assert_eq!(build("b.img", &[]), a, "a touch changed the default image");
    assert_ne!(
        build("pb.img", &["--preserve-times"]),
        pa,
        "--preserve-times ignored the new times"
    );
}
