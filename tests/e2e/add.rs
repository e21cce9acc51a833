//! `--add`, `--add-tree`, `--add-boot`: host files placed at build time, with exactly the
//! mode given, listed in the manifest by path, mode and size (no hash of a secret); checked in the image through the
//! kernel (loop mount, as root) and debugfs/mtools.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn added_files_land_with_the_mode_given() {
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("key");
    std::fs::write(&key, b"-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        tree.join("sub/run.sh"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::fs::write(tree.join("a.txt"), b"a\n").unwrap();
    std::os::unix::fs::symlink("sub/run.sh", tree.join("link")).unwrap();
    let img = t.path().join("a.img");
    let m = run_demo(
        "raw-efi",
        &img,
        &[
            "--add",
            &format!("{}:/etc/ssh/ssh_host_ed25519_key:0600", key.display()),
            "--add",
            &format!("{}:/var/lib/token:0640:1000:100", key.display()),
            "--add-tree",
            &format!("{}:/srv/site", tree.display()),
            "--add-boot",
            &format!("{}:/EFI/extra/key.bin", key.display()),
        ],
    );
    let added = m["added"].as_array().unwrap();
    let find = |p: &str| {
        added
            .iter()
            .find(|a| a["path"] == p)
            .unwrap_or_else(|| panic!("{p} in {added:?}"))
    };
    assert_eq!(find("/etc/ssh/ssh_host_ed25519_key")["mode"], "0600");
    let k = find("/etc/ssh/ssh_host_ed25519_key");
    assert_eq!(k["size"], 36);
    assert!(k.get("sha256").is_none(), "{k}");
    assert_eq!(find("/var/lib/token")["uid"], 1000);
    assert_eq!(find("/srv/site/sub/run.sh")["mode"], "0755");
    assert_eq!(find("/srv/site/a.txt")["mode"], "0644");
    assert_eq!(find("/EFI/extra/key.bin")["target"], "boot");

    // Through the kernel: loop-mount the root read-only (CI runs as root).
    let root = &m["partitions"][1];
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    ok(Command::new("mount")
        .args(["-t", "ext4", "-o"])
        .arg(format!("loop,ro,offset={}", root["start"]))
        .arg(&img)
        .arg(&mnt));
    let check = (|| -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::symlink_metadata(mnt.join("etc/ssh/ssh_host_ed25519_key"))
            .map_err(|e| e.to_string())?;
        if md.mode() & 0o7777 != 0o600 || md.uid() != 0 || md.gid() != 0 {
            return Err(format!(
                "key mode {:o} {}:{}",
                md.mode(),
                md.uid(),
                md.gid()
            ));
        }
        let tok =
            std::fs::symlink_metadata(mnt.join("var/lib/token")).map_err(|e| e.to_string())?;
        if tok.mode() & 0o7777 != 0o640 || tok.uid() != 1000 || tok.gid() != 100 {
            return Err(format!(
                "token mode {:o} {}:{}",
                tok.mode(),
                tok.uid(),
                tok.gid()
            ));
        }
        if std::fs::read(mnt.join("srv/site/sub/run.sh")).map_err(|e| e.to_string())?
            != b"#!/bin/sh\n"
        {
            return Err("run.sh content".into());
        }
        let l = std::fs::read_link(mnt.join("srv/site/link")).map_err(|e| e.to_string())?;
        if l != std::path::Path::new("sub/run.sh") {
            return Err(format!("link -> {}", l.display()));
        }
        Ok(())
    })();
    ok(Command::new("umount").arg(&mnt));
    check.unwrap();

    // On the ESP, with mtools.
    let esp = t.path().join("esp.img");
    extract(
        &img,
        m["partitions"][0]["start"].as_u64().unwrap(),
        m["partitions"][0]["size"].as_u64().unwrap(),
        &esp,
    );
    let out = stdout(
        Command::new("mtype")
            .arg("-i")
            .arg(&esp)
            .arg("::/EFI/extra/key.bin"),
    );
    assert_eq!(out.as_bytes(), std::fs::read(&key).unwrap());
}

#[test]
fn add_into_the_store_or_over_existing_files_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    for (dest, want) in [
        ("/nix/store/evil", "inside /nix/store"),
        ("/etc/NIXOS", "already has it"),
        ("/nix/var/nix/profiles/system", "already has it"),
    ] {
        let img = t.path().join("x.img");
        let mut args = demo_args("raw-efi", &img);
        args.push("--add".into());
        args.push(format!("{}:{dest}", f.display()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&mut imgbuild(&refs));
        assert!(err.contains(dest) && err.contains(want), "{dest}: {err}");
        assert!(!img.exists() && !t.path().join("x.img.tmp").exists());
    }
}
