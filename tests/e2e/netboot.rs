//! `netboot` and `kexec` (issue 23 item 4), judged by other people's tools: the initrd is the
//! closure's (a zstd-compressed cpio here, so `zstd -t` checks it) followed by an archive that
//! GNU cpio and bsdtar list and extract, holding a store image `unsquashfs` lists; the kexec
//! tarball passes `gzip -t` and `tar -tvf`; two builds with different thread counts give the
//! same bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{closure_args, demo, fails, imgbuild, ok, sh, stdout};

/// The demo's toplevel (the store path `result` points at).
fn toplevel() -> String {
    std::fs::read_link(demo().join("result"))
        .unwrap()
        .display()
        .to_string()
}

/// The demo closure copied to `dir`, its initrd replaced by a real one: a newc cpio holding
/// `/init`, zstd-compressed, of a length that is not a multiple of 4 (so the appended archive
/// needs padding, as Linux wants it 4-aligned).
fn demo_with_zstd_initrd(dir: &Path) -> PathBuf {
    let copy = dir.join("demo");
    ok(Command::new("cp").arg("-a").arg(demo()).arg(&copy));
    let initrd = copy
        .join("nix/store/0xahwmqz3qh563b87lnxp9h11sj124lm-initrd-linux-6.1.0-imgbuild-demo/initrd");
    ok(sh(r#"
        cd "$1" && chmod u+w "$2"
        for n in 1 2 3 4 5 6 7 8; do
          mkdir -p root && head -c $((n * 1000)) /dev/zero | tr '\0' x > root/init
          (cd root && echo init | cpio -o -H newc --reproducible --quiet) | zstd -q -19 -f -o "$2"
          [ $(( $(stat -c %s "$2") % 4 )) -ne 0 ] && exit 0
        done
        exit 1
    "#)
    .arg("sh")
    .arg(dir)
    .arg(&initrd));
    copy
}

/// Builds `format` from `closure` into `out` with `-j threads`; the manifest.
fn build(format: &str, closure: &Path, out: &Path, threads: &str) -> serde_json::Value {
    let mut args = closure_args(format, closure, out);
    args.extend(["--no-system-check", "--json", "-j", threads].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = ok(imgbuild(&refs).env("SOURCE_DATE_EPOCH", "1700000000"));
    serde_json::from_slice(&o.stdout).expect("--json prints the manifest")
}

/// The archive Linux unpacks after the closure's initrd: from the first multiple of 4 after
/// it.
fn appended(initrd: &Path, closure_initrd_size: u64, dest: &Path) {
    let bytes = std::fs::read(initrd).unwrap();
    let start = closure_initrd_size.next_multiple_of(4) as usize;
    assert!(bytes[closure_initrd_size as usize..start]
        .iter()
        .all(|&b| b == 0));
    std::fs::write(dest, &bytes[start..]).unwrap();
}

#[test]
fn netboot_directory_is_kernel_initrd_and_ipxe() {
    let t = tempfile::tempdir().unwrap();
    let closure = demo_with_zstd_initrd(t.path());
    let a = t.path().join("a/nixos.netboot");
    let b = t.path().join("b/nixos.netboot");
    std::fs::create_dir_all(a.parent().unwrap()).unwrap();
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    let m = build("netboot", &closure, &a, "1");
    let m3 = build("netboot", &closure, &b, "3");
    assert_eq!(m, m3, "same manifest for -j1 and -j3");
    let mut names: Vec<String> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bzImage", "initrd", "netboot.ipxe"]);
    for n in &names {
        ok(Command::new("cmp").arg(a.join(n)).arg(b.join(n)));
    }
    assert!(!t.path().join("a/nixos.netboot.tmp").exists());
    assert!(!t.path().join("a/nixos.netboot.store.tmp").exists());

    // The kernel is the closure's, byte for byte.
    ok(Command::new("cmp").arg(a.join("bzImage")).arg(
        closure
            .join("nix/store/knh4j0zphbwpnpgrplpd6q9j2r59d4wa-linux-6.1.0-imgbuild-demo/bzImage"),
    ));
    // The iPXE script boots it with init= and the kernel parameters, as netboot.nix writes it.
    let top = toplevel();
    let ipxe = std::fs::read_to_string(a.join("netboot.ipxe")).unwrap();
    let lines: Vec<&str> = ipxe.lines().collect();
    assert_eq!(lines[0], "#!ipxe");
    assert_eq!(
        lines[2],
        format!(
            "kernel bzImage init={top}/init initrd=initrd console=ttyS0,115200 panic=1 \
             loglevel=4 ${{cmdline}}"
        )
    );
    assert_eq!(&lines[3..], ["initrd initrd", "boot"]);

    // The initrd: the closure's (a valid zstd frame), then the archive.
    let nb = &m["netboot"];
    let first = nb["closure_initrd_size"].as_u64().unwrap();
    assert_ne!(first % 4, 0, "the test's initrd needs padding");
    let initrd = a.join("initrd");
    assert_eq!(
        std::fs::metadata(&initrd).unwrap().len(),
        nb["initrd_size"].as_u64().unwrap()
    );
    ok(&mut sh(&format!(
        "head -c {first} {} | zstd -t -q",
        initrd.display()
    )));
    ok(&mut sh(&format!(
        "head -c {first} {} | zstd -d -q | cpio -t --quiet | grep -qx init",
        initrd.display()
    )));
    let archive = t.path().join("appended.cpio");
    appended(&initrd, first, &archive);
    let listing = stdout(
        Command::new("cpio")
            .args(["-t", "-v", "--quiet", "-F"])
            .arg(&archive),
    );
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(listing.starts_with("-r--r--r--"), "{listing}");
    assert!(
        listing.trim_end().ends_with(" nix-store.squashfs"),
        "{listing}"
    );
    let bsd = stdout(Command::new("bsdtar").arg("-tf").arg(&archive));
    assert_eq!(bsd, "nix-store.squashfs\n");

    // The store image extracted from it: the closure's store paths and the registration.
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    ok(sh(&format!("cpio -i --quiet < {}", archive.display())).current_dir(&x));
    let image = x.join("nix-store.squashfs");
    assert_eq!(
        std::fs::metadata(&image).unwrap().len(),
        nb["store_image_size"].as_u64().unwrap()
    );
    let l = stdout(
        Command::new("unsquashfs")
            .args(["-l", "-d", ""])
            .arg(&image),
    );
    let top_name = top.rsplit('/').next().unwrap();
    for want in [
        format!("/{top_name}/init"),
        "/nix-path-registration".into(),
        "/knh4j0zphbwpnpgrplpd6q9j2r59d4wa-linux-6.1.0-imgbuild-demo/bzImage".into(),
    ] {
        assert!(l.lines().any(|line| line == want), "{want} not in\n{l}");
    }
    let store_paths = l
        .lines()
        .filter(|p| p.len() > 1 && p[1..].find('/').is_none())
        .count();
    assert_eq!(
        store_paths,
        11 + 1,
        "11 store paths and the registration:\n{l}"
    );

    // The manifest lists the files with their hashes.
    let files = nb["files"].as_array().unwrap();
    for (f, name) in files.iter().zip(["bzImage", "initrd", "netboot.ipxe"]) {
        assert_eq!(f["name"], name);
        assert_eq!(f["sha256"], crate::common::sha256(&a.join(name)));
    }
}

#[test]
fn netboot_replaces_its_own_directory_only() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("nb");
    build("netboot", &demo(), &out, "2");
    let before = std::fs::read(out.join("initrd")).unwrap();
    // Rebuilt in place: the same files, nothing left beside them.
    build("netboot", &demo(), &out, "2");
    assert_eq!(std::fs::read(out.join("initrd")).unwrap(), before);
    let left: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["nb", "nb.json"]);
    // A directory holding anything else is not ours to replace.
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let mut args = closure_args("netboot", &demo(), &out);
    args.push("--no-system-check".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(&mut imgbuild(&refs));
    assert!(
        err.contains("holds files a netboot build does not write"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn kexec_tarball_is_nixpkgs_tree_for_nixos_anywhere() {
    let t = tempfile::tempdir().unwrap();
    let closure = demo_with_zstd_initrd(t.path());
    let a = t.path().join("a.kexec.tar.gz");
    let b = t.path().join("b.kexec.tar.gz");
    let m = build("kexec", &closure, &a, "1");
    build("kexec", &closure, &b, "3");
    ok(Command::new("cmp").arg(&a).arg(&b));
    ok(Command::new("gzip").arg("-t").arg(&a));
    let listing = stdout(Command::new("tar").arg("-tvzf").arg(&a));
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let summary: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[0], r[1], r[5])).collect();
    assert_eq!(
        summary,
        [
            ("drwxr-xr-x", "0/0", "kexec/"),
            ("-rw-r--r--", "0/0", "kexec/bzImage"),
            ("-rw-r--r--", "0/0", "kexec/initrd.gz"),
            ("-rwxr-xr-x", "0/0", "kexec/kexec-boot"),
            ("lrwxrwxrwx", "0/0", "kexec/run"),
        ],
        "{listing}"
    );
    assert!(listing.contains("kexec/run -> kexec-boot"), "{listing}");
    assert!(rows.iter().all(|r| r[3] == "2023-11-14"), "{listing}");
    // The uncompressed tar is what the manifest hashes.
    let tar = t.path().join("a.tar");
    ok(&mut sh(&format!(
        "gzip -dc {} > {}",
        a.display(),
        tar.display()
    )));
    assert_eq!(m["disk_sha256"], crate::common::sha256(&tar));
    assert_eq!(m["disk_size"], std::fs::metadata(&tar).unwrap().len());

    // Unpacked as nixos-anywhere does: the same initrd and kernel as the netboot build's.
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    ok(Command::new("tar").arg("-C").arg(&x).arg("-xzf").arg(&a));
    let nb = t.path().join("nb");
    build("netboot", &closure, &nb, "2");
    ok(Command::new("cmp")
        .arg(x.join("kexec/initrd.gz"))
        .arg(nb.join("initrd")));
    ok(Command::new("cmp")
        .arg(x.join("kexec/bzImage"))
        .arg(nb.join("bzImage")));
    let script = std::fs::read_to_string(x.join("kexec/run")).unwrap();
    assert!(script.starts_with("#!/usr/bin/env bash\n"));
    assert!(script.contains("kexec --load ${SCRIPT_DIR}/bzImage \\\n"));
    assert!(script.contains("--initrd=${SCRIPT_DIR}/initrd.gz \\\n"));
    let top = toplevel();
    assert!(
        script.contains(&format!(
            "--command-line \"init={top}/init console=ttyS0,115200 panic=1 loglevel=4\"\n"
        )),
        "{script}"
    );
    ok(Command::new("bash").arg("-n").arg(x.join("kexec/run")));
    let files: Vec<&str> = m["netboot"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "kexec/bzImage",
            "kexec/initrd.gz",
            "kexec/kexec-boot",
            "kexec/run"
        ]
    );
}

#[test]
fn netboot_refuses_what_it_would_ignore() {
    let t = tempfile::tempdir().unwrap();
    for (extra, option) in [
        (&["--compress", "zstd"][..], "--compress"),
        (&["--level", "5"], "--level"),
        (&["--keep-raw"], "--keep-raw"),
    ] {
        let mut args = closure_args("netboot", &demo(), &t.path().join("nb"));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&mut imgbuild(&refs));
        assert!(
            err.contains(&format!(
                "{option}: format `netboot` writes the kernel and the initrd as they are"
            )),
            "{err}"
        );
    }
    assert!(std::fs::read_dir(t.path()).unwrap().next().is_none());
}

#[test]
fn netboot_formats_refuse_disk_keys() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("nb.toml");
    std::fs::write(
        &f,
        "base = \"netboot\"\nname = \"x\"\n[bootloader]\ntype = \"systemd-boot\"\n",
    )
    .unwrap();
    let mut args = closure_args(f.to_str().unwrap(), &demo(), &t.path().join("o"));
    args.push("--no-system-check".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(&mut imgbuild(&refs));
    assert!(
        err.contains("volume `netboot` has no boot loader of its own: no `bootloader`"),
        "{err}"
    );
}
