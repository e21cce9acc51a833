//! A live ISO as nixpkgs' iso-image.nix lays it out (`/nix-store.squashfs` holding one
//! directory per store path and `nix-path-registration`, `/isolinux/isolinux.cfg` booting
//! `init=<toplevel>/init`), made with xorriso around a store image from `mksquashfs` (as
//! make-squashfs.nix calls it) and from our writer: it reads as the NixOS system it boots,
//! with the store image at `/nix/store`; `inspect`, `--sizes`, `cp` and `diff` see it.

use std::fs;
use std::path::Path;
use std::process::Command;

use imgbuild_fstree::{Mtime, Owner, Perms, ScanOptions, Scanner};
use imgbuild_inspect::{copy_out, diff, Image, Kind};

use crate::common::{run, write_mode};

const TOP: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-live-26.11";
const SW: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-system-path";
const ETC: &str = "cccccccccccccccccccccccccccccccc-etc";
/// The system path of the second ISO `diff` compares with.
const SW2: &str = "dddddddddddddddddddddddddddddddd-system-path";

/// The store paths (in `dir`, one directory each; the system path named `sw`) and the
/// registration file next to them.
fn store(dir: &Path, sw: &str) {
    let hello = format!("hello from {sw}\n");
    let hello = hello.as_bytes();
    let top = dir.join(TOP);
    write_mode(&top, "init", b"#!/bin/sh\n", 0o555);
    write_mode(&top, "nixos-version", b"26.11\n", 0o444);
    write_mode(&top, "system", b"x86_64-linux", 0o444);
    write_mode(&top, "kernel-params", b"root=LABEL=nixos-live-test", 0o444);
    write_mode(&dir.join(sw), "bin/hello", hello, 0o555);
    fs::hard_link(
        dir.join(sw).join("bin/hello"),
        dir.join(sw).join("bin/hello-again"),
    )
    .unwrap();
    write_mode(&dir.join(ETC), "etc/hostname", b"live\n", 0o444);
    let l = |t: &str, at: &Path| std::os::unix::fs::symlink(t, at).unwrap();
    l(&format!("/nix/store/{sw}"), &top.join("sw"));
    l(&format!("../{sw}/bin/hello"), &top.join("hello-rel"));
    l(&format!("/nix/store/{ETC}/etc"), &top.join("etc"));
    // Out of the store image, onto the ISO.
    l("/version.txt", &dir.join(ETC).join("iso-version"));
    let mut reg = String::new();
    for p in [TOP, sw, ETC] {
        reg.push_str(&format!(
            "/nix/store/{p}\nsha256:{}\n1000\n\n0\n",
            "0".repeat(52)
        ));
    }
    write_mode(dir, "nix-path-registration", reg.as_bytes(), 0o444);
}

/// The ISO tree, its store image made by `squash(store dir, image)`.
fn live_iso(t: &Path, name: &str, sw: &str, squash: &dyn Fn(&Path, &Path)) -> std::path::PathBuf {
    let st = t.join(format!("{name}-store"));
    fs::create_dir(&st).unwrap();
    store(&st, sw);
    let iso_dir = t.join(format!("{name}-iso"));
    write_mode(&iso_dir, "version.txt", b"26.11\n", 0o444);
    write_mode(
        &iso_dir,
        "boot/bzImage",
        &imgbuild_testutil::noise(9, 8192),
        0o444,
    );
    write_mode(
        &iso_dir,
        "boot/initrd",
        &imgbuild_testutil::noise(10, 4096),
        0o444,
    );
    let cfg = format!(
        "DEFAULT boot\nTIMEOUT 100\nLABEL boot\nMENU LABEL NixOS 26.11\nLINUX /boot/bzImage\n\
         APPEND init=/nix/store/{TOP}/init root=LABEL=nixos-live-test\nINITRD /boot/initrd\n"
    );
    write_mode(&iso_dir, "isolinux/isolinux.cfg", cfg.as_bytes(), 0o444);
    squash(&st, &iso_dir.join("nix-store.squashfs"));
    let iso = t.join(format!("{name}.iso"));
    run(Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-R",
            "-J",
            "-V",
            "nixos-live-test",
            "-o",
        ])
        .arg(&iso)
        .arg(&iso_dir));
    iso
}

/// make-squashfs.nix: every store path and the registration file, `-keep-as-directory`.
fn mksquashfs(st: &Path, img: &Path) {
    let mut c = Command::new("mksquashfs");
    let mut entries: Vec<_> = fs::read_dir(st)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    c.args(entries);
    run(c.arg(img).args([
        "-quiet",
        "-no-progress",
        "-keep-as-directory",
        "-all-root",
        "-b",
        "1048576",
        "-comp",
        "zstd",
    ]));
}

fn ours(st: &Path, img: &Path) {
    let mut scanner = Scanner::new(ScanOptions {
        owner: Owner::Fixed(0, 0),
        perms: Perms::Preserve,
        mtime: Mtime::Host,
        hardlinks: true,
    });
    let tree = scanner.scan(st).unwrap();
    let opts = imgbuild_squashfs::Options {
        block_size: 1 << 20,
        ..imgbuild_squashfs::Options::default()
    };
    imgbuild_squashfs::write(&tree, &opts, fs::File::create(img).unwrap()).unwrap();
}

/// The program in the first ISO's system path.
const HELLO: &[u8] = b"hello from bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-system-path\n";

fn check(name: &str, squash: &dyn Fn(&Path, &Path)) {
    let t = tempfile::tempdir().unwrap();
    let iso = live_iso(t.path(), name, SW, squash);
    let img = Image::open(&iso).unwrap();
    let fs = img.root_filesystem().unwrap();
    let info = fs.info();
    assert_eq!(info.summary.kind, "iso9660", "{name}");
    let store_info = info.store_image.as_ref().expect("a store image");
    assert_eq!(store_info.summary.kind, "squashfs");
    assert_eq!(store_info.error, None);
    assert!(store_info.features.contains(&"compressor=zstd".to_string()));
    let names = |p: &[u8]| -> Vec<String> {
        fs.read_dir(p)
            .unwrap()
            .iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect()
    };
    let root = names(b"/");
    for n in [
        "nix",
        "nix-store.squashfs",
        "isolinux",
        "boot",
        "version.txt",
    ] {
        assert!(
            root.contains(&n.to_string()),
            "{name}: / lacks {n}: {root:?}"
        );
    }
    assert_eq!(names(b"/nix"), ["store"]);
    assert_eq!(
        names(b"/nix/store"),
        [TOP, SW, ETC, "nix-path-registration"]
    );
    assert_eq!(fs.metadata(b"/nix/store").unwrap().kind, Kind::Dir);
    let read = |p: &str| fs.read_to_vec(p.as_bytes(), 1 << 20).unwrap();
    // Absolute symlinks inside the store, relative ones, and one out onto the ISO.
    assert_eq!(read(&format!("/nix/store/{TOP}/sw/bin/hello")), HELLO);
    assert_eq!(read(&format!("/nix/store/{TOP}/hello-rel")), HELLO);
    assert_eq!(read(&format!("/nix/store/{TOP}/etc/hostname")), b"live\n");
    assert_eq!(read(&format!("/nix/store/{ETC}/iso-version")), b"26.11\n");
    assert_eq!(
        fs.canonicalize(format!("/nix/store/{TOP}/sw/bin/hello").as_bytes())
            .unwrap(),
        format!("/nix/store/{SW}/bin/hello").into_bytes()
    );
    assert_eq!(
        fs.read_link(format!("/nix/store/{TOP}/sw").as_bytes())
            .unwrap(),
        format!("/nix/store/{SW}").into_bytes()
    );
    // `..` above the store image leaves it.
    assert_eq!(
        fs.canonicalize(format!("/nix/store/{TOP}/../../store/{SW}").as_bytes())
            .unwrap(),
        format!("/nix/store/{SW}").into_bytes()
    );
    let i = img.inspect();
    let n = i.nixos.expect("a NixOS system");
    assert_eq!(
        n.toplevel.as_deref(),
        Some(format!("/nix/store/{TOP}").as_str())
    );
    assert_eq!(n.toplevel_from.as_deref(), Some("boot entry"));
    assert_eq!(n.version.as_deref(), Some("26.11"));
    assert_eq!(
        n.kernel_params.as_deref(),
        Some("root=LABEL=nixos-live-test")
    );
    assert_eq!(n.registered.len(), 1, "{:?}", n.registered);
    let r = &n.registered[0];
    assert_eq!(r.source, "/nix/store/nix-path-registration");
    assert_eq!(
        (r.count, r.toplevel_registered, r.missing_from_store),
        (3, Some(true), Some(0))
    );
    let st = n.store.expect("a store");
    assert_eq!((st.paths, st.unregistered), (3, Some(0)));
    let x = &i.boot.extlinux;
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].config, "/isolinux/isolinux.cfg");
    assert!(x[0].entries[0].missing.is_empty(), "{:?}", x[0].entries);
    // --sizes: the closure from the registration file, each store path's files.
    let s = img.sizes().unwrap();
    assert_eq!(s.closure_from, "/nix/store/nix-path-registration");
    assert_eq!(s.store_paths.len(), 3);
    let sw = s.store_paths.iter().find(|p| p.path.ends_with(SW)).unwrap();
    // The hard link counts once.
    assert_eq!(sw.bytes, HELLO.len() as u64, "{name}: {sw:?}");
    // cp out of the store image.
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    copy_out(fs, format!("/nix/store/{SW}").as_bytes(), &out).unwrap();
    assert_eq!(fs::read(out.join(SW).join("bin/hello")).unwrap(), HELLO);
    // diff: another ISO whose system path changed.
    let iso2 = live_iso(t.path(), &format!("{name}-2"), SW2, squash);
    let d = diff(&img, &Image::open(&iso2).unwrap()).unwrap();
    assert!(!d.identical);
    let text = format!("{:?}", d.store);
    assert!(text.contains(SW) && text.contains(SW2), "{name}: {text}");
}

#[test]
fn live_iso_with_mksquashfs_store_image() {
    check("mksquashfs", &mksquashfs);
}

#[test]
fn live_iso_with_our_store_image() {
    check("ours", &ours);
}

#[test]
fn fuzz_live_iso() {
    let t = tempfile::tempdir().unwrap();
    let iso = live_iso(t.path(), "fuzz", SW, &ours);
    crate::fuzz::clean(&iso);
    crate::fuzz::fuzz("live-iso", &iso);
}
