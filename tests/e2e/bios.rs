//! PC BIOS formats (`raw`, `hetzner`, `digitalocean`, `qemu`): GRUB installed without running
//! it, judged by Debian's GRUB tools. The closure is a copy of the demo with a GRUB package
//! made at test time from Debian's `grub-pc-bin` files (`lib/grub/i386-pc`, as Nix's grub
//! package lays it out) and boot.json's `org.imgbuild.v1.bootloader` GRUB record (what the
//! NixOS module writes). Skipped, saying so, without grub-pc-bin.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;

pub(crate) const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
pub(crate) const GRUB_PATH: &str = "/nix/store/qwjcdgz3fgnpcm0j1rv8yls9y04pd9b4-grub-2.06";
/// Debian's x86_64-efi GRUB (grub-efi-amd64-bin), the hybrid's `grubEfi`.
const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
const GRUB_EFI_PATH: &str = "/nix/store/qwjcdgz3fgnpcm0j1rv8yls9y04pd9b5-grub-2.06";
const FONT: &str = "/usr/share/grub/unicode.pf2";
const SEED: &str = "bios-test";

/// A copy of the demo closure in `dir` with a GRUB package and the GRUB record (`record`
/// merged over the defaults); `None` when Debian's GRUB files are not installed.
pub(crate) fn grub_closure(dir: &Path, record: Value) -> Option<PathBuf> {
    if !Path::new(GRUB_DIR).join("kernel.img").exists() || !Path::new(FONT).exists() {
        eprintln!(
            "skipped: {GRUB_DIR} or {FONT} is absent (apt-get install grub-pc-bin grub-common)"
        );
        return None;
    }
    let copy = dir.join("demo");
    ok(Command::new("cp").arg("-a").arg(demo()).arg(&copy));
    ok(Command::new("chmod").args(["-R", "u+w"]).arg(&copy));
    // The closure is found by scanning from the toplevel: GRUB is in it through boot.json.
    std::fs::remove_dir_all(copy.join("closure-info")).unwrap();
    let pkg = copy.join(GRUB_PATH.trim_start_matches('/'));
    std::fs::create_dir_all(pkg.join("lib/grub")).unwrap();
    ok(Command::new("cp")
        .arg("-r")
        .arg(GRUB_DIR)
        .arg(pkg.join("lib/grub")));
    // The font NixOS's GRUB package has (grub-common's here): grub-install copies it to
    // /boot/grub/fonts, install-grub.pl (boot.loader.grub.font) to /boot/converted-font.pf2.
    std::fs::create_dir_all(pkg.join("share/grub")).unwrap();
    std::fs::copy(FONT, pkg.join("share/grub/unicode.pf2")).unwrap();
    // The hybrid's GRUB built with EFI support (nixpkgs' grub2_efi): lib/grub/x86_64-efi.
    if record.get("grubEfi").is_some() {
        if !Path::new(GRUB_EFI_DIR).join("kernel.img").exists() {
            eprintln!("skipped: {GRUB_EFI_DIR} is absent (apt-get install grub-efi-amd64-bin)");
            return None;
        }
        let efi = copy.join(GRUB_EFI_PATH.trim_start_matches('/'));
        std::fs::create_dir_all(efi.join("lib/grub")).unwrap();
        ok(Command::new("cp")
            .arg("-r")
            .arg(GRUB_EFI_DIR)
            .arg(efi.join("lib/grub")));
    }
    let top = std::fs::read_link(copy.join("result")).unwrap();
    let bj = copy.join(top.strip_prefix("/").unwrap()).join("boot.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&bj).unwrap()).unwrap();
    let doc_obj = doc.as_object_mut().unwrap();
    doc_obj.remove("org.nixos.systemd-boot");
    let mut bl = json!({
        "type": "grub", "timeout": 5, "devices": ["/dev/vda"], "grub": GRUB_PATH,
        "efiSupport": false, "fsIdentifier": "uuid", "configurationLimit": 100,
        "distroName": "NixOS", "font": format!("{GRUB_PATH}/share/grub/unicode.pf2"),
        "extraConfig": "serial --unit=0 --speed=115200\nterminal_input --append serial\n\
                        terminal_output --append serial",
    });
    for (k, v) in record.as_object().unwrap() {
        bl[k] = v.clone();
    }
    doc_obj.insert(
        "org.imgbuild.v1".into(),
        json!({"release": "24.05", "bootloader": bl}),
    );
    std::fs::write(&bj, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    Some(copy)
}

pub(crate) fn args(format: &str, closure: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        format.to_string(),
        "--closure".into(),
        closure.join("result").display().to_string(),
        "--store-root".into(),
        closure.display().to_string(),
        "--seed".into(),
        SEED.into(),
        "-o".into(),
        out.display().to_string(),
        "--json".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

pub(crate) fn build(format: &str, closure: &Path, out: &Path, extra: &[&str]) -> Value {
    let a = args(format, closure, out, extra);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    serde_json::from_slice(&ok(&mut imgbuild(&refs)).stdout).unwrap()
}

pub(crate) fn fstest(img: &Path, args: &[&str]) -> String {
    stdout(Command::new("grub-fstest").arg(img).args(args))
}

/// `grub-file --is-x86-bios-bootsector` on sector 0 (it takes a file of exactly 512 bytes).
fn is_bios_boot_sector(img: &Path, dir: &Path) {
    let sector = dir.join("sector0");
    std::fs::write(&sector, read(img, 0, 512)).unwrap();
    ok(Command::new("grub-file")
        .arg("--is-x86-bios-bootsector")
        .arg(&sector));
}

pub(crate) fn read(img: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(std::io::SeekFrom::Start(offset)).unwrap();
    let mut b = vec![0; len];
    f.read_exact(&mut b).unwrap();
    b
}

/// The uncompressed payload of a core image (`diskboot.img`, `lzma_decompress.img` with its
/// size fields at 8 and 12, then the LZMA stream).
fn payload(core: &[u8]) -> Vec<u8> {
    let dec = std::fs::metadata(Path::new(GRUB_DIR).join("lzma_decompress.img"))
        .unwrap()
        .len() as usize;
    let field = |at: usize| u32::from_le_bytes(core[512 + at..516 + at].try_into().unwrap());
    let (compressed, size) = (field(8) as usize, field(12) as usize);
    let start = 512 + dec;
    imgbuild_grub::decompress(&core[start..start + compressed], size).unwrap()
}

/// Our core image (read from the disk at `sector`) against `grub-mkimage` run on the same
/// platform files with the modules and prefix `grub-install` passes: the same uncompressed
/// payload byte for byte (kernel, modules in the same order, prefix). The LZMA bytes differ
/// (another encoder, see the grub crate's docs), and so do the block list and Reed-Solomon
/// fields grub-bios-setup patches.
fn same_core_as_grub_mkimage(
    img: &Path,
    sector: u64,
    (prefix, fs, partmap): (&str, &str, &str),
    dir: &Path,
) {
    let ours = read(img, sector * 512, 1024 * 512);
    let contents = imgbuild_grub::read_core(&ours).unwrap();
    assert_eq!(contents.prefix.as_deref(), Some(prefix));
    assert!(
        contents.modules.iter().any(|m| m == partmap),
        "{:?}",
        contents.modules
    );
    assert!(
        contents.redundancy > 0,
        "grub-bios-setup's Reed-Solomon codes"
    );
    let theirs = dir.join("core.img");
    ok(Command::new("grub-mkimage")
        .args(["-O", "i386-pc", "-d", GRUB_DIR, "-p", prefix, "-o"])
        .arg(&theirs)
        .args([fs, partmap, "biosdisk"]));
    let theirs = std::fs::read(&theirs).unwrap();
    assert!(payload(&ours) == payload(&theirs), "payloads differ");
}

#[test]
fn raw_is_an_mbr_disk_with_grub_that_debians_tools_read() {
    let t = tempfile::tempdir().unwrap();
    let Some(closure) = grub_closure(t.path(), json!({})) else {
        return;
    };
    let img = t.path().join("raw.img");
    let m = build("raw", &closure, &img, &[]);
    assert_eq!(m["table"], "dos");
    let root = &m["partitions"][0];
    assert_eq!(
        (root["start"].as_u64(), &root["flags"]),
        (Some(1 << 20), &json!(["boot"]))
    );
    let uuid = root["filesystem"]["uuid"].as_str().unwrap();

    // Sector 0: GRUB's boot sector pointing at sector 1, with the table kept.
    is_bios_boot_sector(&img, t.path());
    let mbr = read(&img, 0, 512);
    assert_eq!(&mbr[0x5c..0x64], &1u64.to_le_bytes());
    let sfdisk = stdout(Command::new("sfdisk").arg("-d").arg(&img));
    assert!(sfdisk.contains("start=        2048, "), "{sfdisk}");
    assert!(sfdisk.contains("type=83, bootable"), "{sfdisk}");
    same_core_as_grub_mkimage(
        &img,
        1,
        ("(,msdos1)/boot/grub", "ext2", "part_msdos"),
        t.path(),
    );

    // /boot/grub as GRUB itself reads it.
    let ls = fstest(&img, &["ls", "(loop0,msdos1)/boot/grub/"]);
    let mut names: Vec<&str> = ls.split_whitespace().collect();
    names.sort();
    assert_eq!(
        names,
        ["fonts/", "grub.cfg", "grubenv", "i386-pc/", "state"]
    );
    let modules = fstest(&img, &["ls", "(loop0,msdos1)/boot/grub/i386-pc/"]);
    for m in [
        "core.img",
        "boot.img",
        "ext2.mod",
        "biosdisk.mod",
        "moddep.lst",
        "normal.mod",
    ] {
        assert!(
            modules.split_whitespace().any(|n| n == m),
            "{m} in {modules}"
        );
    }
    let cfg = fstest(&img, &["cat", "(loop0,msdos1)/boot/grub/grub.cfg"]);
    assert!(cfg.starts_with("# Automatically generated.  DO NOT EDIT THIS FILE!\n"));
    assert!(
        cfg.contains(&format!("\n    search --set=drive1 --fs-uuid {uuid}\n")),
        "{cfg}"
    );
    assert!(cfg.contains(
        "menuentry \"NixOS\" --class nixos --unrestricted {\nsearch --set=drive1 --fs-uuid"
    ));
    assert!(cfg.contains(
        "  linux ($drive2)/nix/store/knh4j0zphbwpnpgrplpd6q9j2r59d4wa-linux-6.1.0-imgbuild-demo/\
         bzImage init=/nix/store/8sh42grrp97g1hvw61j2m0kzh8d1mw1i-nixos-system-demo-24.05.\
         20240601.b3b2b28/init console=ttyS0,115200 panic=1 loglevel=4\n"
    ));
    assert!(cfg.contains(
        "menuentry \"NixOS - Configuration 1 (1980-01-01 - 24.05.20240601.b3b2b28)\" --class nixos"
    ));
    assert_eq!(
        fstest(&img, &["cat", "(loop0,msdos1)/boot/grub/state"]),
        "grub\n2.06\nno\n/dev/vda\n/boot\n{\"extraGrubInstallArgs\":[]}\n"
    );
    // grubenv as grub-editenv creates it.
    let env = t.path().join("grubenv");
    ok(Command::new("grub-editenv").arg(&env).arg("create"));
    let ours = ok(&mut imgbuild(&[
        "cat",
        &img.display().to_string(),
        "/boot/grub/grubenv",
    ]))
    .stdout;
    assert_eq!(ours, std::fs::read(&env).unwrap());
    // The module files are the package's, byte for byte.
    let ours = ok(&mut imgbuild(&[
        "cat",
        &img.display().to_string(),
        "/boot/grub/i386-pc/ext2.mod",
    ]))
    .stdout;
    assert_eq!(
        ours,
        std::fs::read(Path::new(GRUB_DIR).join("ext2.mod")).unwrap()
    );

    let part = t.path().join("root.img");
    extract(&img, 1 << 20, root["size"].as_u64().unwrap(), &part);
    ok(Command::new("e2fsck").args(["-fn"]).arg(&part));
}

/// The hybrid: core.img in the BIOS boot partition with its prefix on the ESP (`/boot`, FAT),
/// grub.cfg there, and EFI/BOOT/BOOTX64.EFI equal to what `grub-mkimage -O x86_64-efi`
/// makes from the modules, prefix and early config `grub-install --removable` passes.
#[test]
fn qemu_is_hybrid_bios_and_uefi_with_grub_on_the_esp() {
    let t = tempfile::tempdir().unwrap();
    let record = json!({"fsIdentifier": "label", "efiSupport": true,
        "efiInstallAsRemovable": true, "grubEfi": GRUB_EFI_PATH, "efiSysMountPoint": "/boot"});
    let Some(closure) = grub_closure(t.path(), record) else {
        return;
    };
    let out = t.path().join("q.qcow2");
    let m = build("qemu", &closure, &out, &[]);
    let img = t.path().join("q.raw");
    ok(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&out)
        .arg(&img));
    ok(Command::new("sgdisk").arg("-v").arg(&img));
    let bios = &m["partitions"][0];
    assert_eq!(bios["type"], "21686148-6449-6E6F-744E-656564454649");
    assert_eq!(bios["filesystem"]["kind"], "none");
    assert_eq!(bios.get("mount_point"), None, "not mounted");
    let esp = &m["partitions"][1];
    assert_eq!(esp["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(esp["mount_point"], "/boot");
    let first = bios["first_lba"].as_u64().unwrap();
    assert_eq!(&read(&img, 0x5c, 8), &first.to_le_bytes());
    is_bios_boot_sector(&img, t.path());
    same_core_as_grub_mkimage(&img, first, ("(,gpt2)/grub", "fat", "part_gpt"), t.path());
    let cfg = fstest(&img, &["cat", "(loop0,gpt2)/grub/grub.cfg"]);
    assert!(
        cfg.contains("\n    search --set=drive1 --label ESP\n"),
        "{cfg}"
    );
    assert!(cfg.contains("search --set=drive2 --label nixos"), "{cfg}");
    let state = fstest(&img, &["cat", "(loop0,gpt2)/grub/state"]);
    assert!(
        state.starts_with("grub\n2.06\nboth\n/dev/vda\n/boot\n"),
        "{state}"
    );
    for f in [
        "i386-pc/core.img",
        "x86_64-efi/core.efi",
        "x86_64-efi/fat.mod",
    ] {
        fstest(&img, &["ls", &format!("(loop0,gpt2)/grub/{f}")]);
    }
    // BOOTX64.EFI against grub-mkimage with grub-install's modules, prefix and load.cfg.
    let ours = t.path().join("BOOTX64.EFI");
    ok(Command::new("grub-fstest")
        .arg(&img)
        .args(["cp", "(loop0,gpt2)/EFI/BOOT/BOOTX64.EFI"])
        .arg(&ours));
    let uuid = esp["filesystem"]["uuid"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase();
    let cfg_file = t.path().join("load.cfg");
    std::fs::write(
        &cfg_file,
        format!("search.fs_uuid {uuid} root \nset prefix=($root)'/grub'\n"),
    )
    .unwrap();
    let theirs = t.path().join("grubx64.efi");
    ok(Command::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-d", GRUB_EFI_DIR, "-p", "/grub", "-c"])
        .arg(&cfg_file)
        .arg("-o")
        .arg(&theirs)
        .args(["fat", "part_gpt", "search_fs_uuid"]));
    assert!(
        std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
        "BOOTX64.EFI differs from grub-mkimage's"
    );
    assert_eq!(sha256(&img), m["disk_sha256"].as_str().unwrap());
}

#[test]
fn digitalocean_and_hetzner_hold_the_raw_disk() {
    let t = tempfile::tempdir().unwrap();
    let Some(closure) = grub_closure(t.path(), json!({})) else {
        return;
    };
    let raw = build("raw", &closure, &t.path().join("r.img"), &[]);
    // The test closure's GRUB record names /dev/vda; Hetzner's disk is /dev/sda, which the
    // system check insists on (system_check/grub.rs): the bytes are the
    // same disk either way.
    let het = build(
        "hetzner",
        &closure,
        &t.path().join("h.img"),
        &["--no-system-check"],
    );
    let out = t.path().join("d.qcow2.gz");
    let dig = build("digitalocean", &closure, &out, &[]);
    assert_eq!(dig["container"], "qcow2-gz");
    // Same seed: the same disk bytes in every one.
    assert_eq!(raw["disk_sha256"], het["disk_sha256"]);
    assert_eq!(raw["disk_sha256"], dig["disk_sha256"]);
    let qcow = t.path().join("d.qcow2");
    ok(&mut sh(&format!(
        "gzip -dc {} > {}",
        out.display(),
        qcow.display()
    )));
    let disk = t.path().join("d.raw");
    ok(Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&qcow)
        .arg(&disk));
    assert_eq!(sha256(&disk), raw["disk_sha256"].as_str().unwrap());
    // inspect reads the .qcow2.gz as it is: gzip, then qcow2, then the NixOS system.
    let j = inspect_json(&out);
    assert_eq!(
        (&j["compression"], &j["container"]),
        (&json!("gzip"), &json!("qcow2"))
    );
    assert_eq!(j["disk_size"], raw["disk_size"]);
    assert!(j["nixos"]["toplevel"].is_string(), "{}", j["nixos"]);
}

#[test]
fn same_bytes_for_any_threads_and_cwd() {
    let t = tempfile::tempdir().unwrap();
    let Some(closure) = grub_closure(t.path(), json!({})) else {
        return;
    };
    let a = build("raw", &closure, &t.path().join("a.img"), &["-j", "1"]);
    let other = t.path().join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    let b_args = args("raw", &closure, &t.path().join("b.img"), &["-j", "2"]);
    let refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let b: Value = serde_json::from_slice(&ok(imgbuild(&refs).current_dir(&other)).stdout).unwrap();
    assert_eq!(a["sha256"], b["sha256"]);
    assert_eq!(
        sha256(&t.path().join("a.img")),
        sha256(&t.path().join("b.img"))
    );
}

#[test]
fn a_closure_without_the_grub_record_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("x.img");
    // The demo: no org.imgbuild.v1 at all (and systemd-boot's extension).
    let mut a = args("raw", &demo(), &out, &["--no-system-check"]);
    a.extend([
        "--closure-info".into(),
        demo().join("closure-info").display().to_string(),
    ]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = fails(&mut imgbuild(&refs));
    assert!(err.contains("org.imgbuild.v1.bootloader.type"), "{err}");
    assert!(err.contains("imgbuild.format = \"raw\""), "{err}");
    // The GRUB record without the package.
    let Some(closure) = grub_closure(t.path(), json!({"grub": null})) else {
        return;
    };
    // The builder's own refusal (the system check, run first, refuses it too: tested in
    // system_check/grub.rs).
    let a = args("raw", &closure, &out, &["--no-system-check"]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = fails(&mut imgbuild(&refs));
    assert!(err.contains("org.imgbuild.v1.bootloader.grub"), "{err}");
    assert!(!out.exists());
}

#[test]
fn an_mbr_gap_too_small_for_core_img_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let Some(closure) = grub_closure(t.path(), json!({})) else {
        return;
    };
    // The root partition at 4 KiB leaves 7 sectors after the MBR.
    let f = t.path().join("tight.toml");
    std::fs::write(
        &f,
        "base = \"raw\"\nname = \"tight\"\n[table]\ntype = \"mbr\"\nalign = \"4KiB\"\n",
    )
    .unwrap();
    let out = t.path().join("t.img");
    let a = args(&f.display().to_string(), &closure, &out, &[]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = fails(&mut imgbuild(&refs));
    assert!(
        err.contains("GRUB: embedding core.img: core.img needs "),
        "{err}"
    );
    assert!(err.contains("sectors, only 7 are available"), "{err}");
    assert!(!out.exists());
}

#[test]
fn raw_boots_to_grubs_menu_under_seabios() {
    let t = tempfile::tempdir().unwrap();
    let Some(closure) = grub_closure(t.path(), json!({"timeout": 1})) else {
        return;
    };
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: qemu-system-x86_64 is not installed");
        return;
    }
    let img = t.path().join("raw.img");
    build("raw", &closure, &img, &[]);
    // The demo kernel is a placeholder: GRUB shows its menu on the serial console (the
    // record's extraConfig), boots the default entry, loads the file and refuses it.
    let log = t.path().join("serial.log");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-no-reboot", "-m", "256", "-drive"])
        .arg(format!("file={},format=raw,if=ide", img.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut out = String::new();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        out = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
        if out.contains("you need to load the kernel first") {
            break;
        }
    }
    qemu.kill().unwrap();
    qemu.wait().unwrap();
    for want in [
        "NixOS - All configurations",
        "Booting `NixOS'",
        "error: invalid magic number",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
}
