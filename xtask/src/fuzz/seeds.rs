//! The seed corpus, built once: images of every format by imgbuild (the demo fixtures), the
//! same disk by the conventional tools (mkfs via `classic-image.sh`, `qemu-img convert`), a
//! FAT12 floppy by mkfs.vfat and mtools, and the text inputs (format files, registrations,
//! boot.json); the GRUB and verity seeds have their own stamp ([`super::blob::seeds`]).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{quiet, SEEDS_VERSION};
use crate::util::{self, cmd};

/// Builds the seeds once (a stamp file says which version is there).
pub(super) fn seeds(root: &Path) -> Result<PathBuf> {
    let dir = util::target_dir().join("fuzz/seeds");
    let stamp = dir.join("stamp");
    let want = format!("v{SEEDS_VERSION}\n");
    if !std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        imgbuild_seeds(root, &dir)?;
        classic_seeds(root, &dir)?;
        fat12_seed(&dir)?;
        text_seeds(root, &dir)?;
        std::fs::write(&stamp, want)?;
    }
    super::blob::seeds::build(&dir)?;
    super::blob::authenticode::build(&dir)?;
    super::iso_seeds::build(&dir)?;
    super::squash_seeds::build(&dir)?;
    Ok(dir)
}

/// A copy of the demo in `dir` made an appliance (the sample UKI stub in its systemd, the
/// `"org.imgbuild.v1"` record of imgbuild's module in its boot.json), and a format file of
/// `appliance` without the slots' `free` room: (closure root, format file).
fn appliance_demo(demo: &Path, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let copy = dir.join("demo-appliance");
    let _ = std::fs::remove_dir_all(&copy);
    util::run(cmd("cp").arg("-a").arg(demo).arg(&copy))?;
    util::run(cmd("chmod").args(["-R", "u+w"]).arg(&copy))?;
    crate::fixture::make_appliance(&copy, "demo")?;
    let text = imgbuild_plan::format::BUILTIN
        .iter()
        .find(|(n, _)| *n == "appliance")
        .map(|(_, t)| *t)
        .ok_or_else(|| anyhow::anyhow!("no built-in appliance format"))?;
    let small: String = text
        .lines()
        .filter(|l| !l.starts_with("free = \"512MiB\"") && !l.starts_with("free = \"8MiB\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let format = dir.join("appliance-seed.toml");
    std::fs::write(&format, small)?;
    Ok((copy, format))
}

/// Every format's image of the demo fixtures, by the release imgbuild.
fn imgbuild_seeds(root: &Path, dir: &Path) -> Result<()> {
    util::run(
        cmd("cargo")
            .current_dir(root)
            .args(["build", "--release", "-p", "imgbuild"]),
    )?;
    let bin = util::target_dir().join("release/imgbuild");
    let demo = root.join("fixtures/demo");
    let demo64 = root.join("fixtures/demo-aarch64");
    let build = |format: &str, fix: &Path, out: &str, extra: &[&str]| -> Result<()> {
        quiet(
            Command::new(&bin)
                .arg(format)
                .arg("--closure")
                .arg(fix.join("result"))
                .arg("--store-root")
                .arg(fix)
                .arg("--closure-info")
                .arg(fix.join("closure-info"))
                .args(["--seed", "fuzz", "-o"])
                .arg(dir.join(out))
                .args(extra),
        )
    };
    build("raw-efi", &demo, "demo-efi.img", &[])?;
    // A dm-verity store with A/B slots: inspect's pairing and root hash recomputation read
    // its superblock, data and hash area (hot ranges of the `gpt` target). The demo made an
    // appliance (a UKI stub, the module's record) in a copy, built without the slots' room
    // for later versions, so the seed stays small.
    let (app, format) = appliance_demo(&demo, dir)?;
    build(
        &format.display().to_string(),
        &app,
        "demo-appliance.img",
        &[],
    )?;
    std::fs::remove_dir_all(&app)?;
    let _ = std::fs::remove_dir_all(dir.join("demo-appliance.img.sysupdate"));
    build(
        "sd-aarch64",
        &demo64,
        "demo-sd.img",
        &["--compress", "none"],
    )?;
    for (f, out) in [
        ("qemu-efi", "demo.qcow2"),
        ("amazon", "demo.vhd"),
        ("azure", "demo-fixed.vhd"),
        ("hyperv", "demo.vhdx"),
        ("vmware", "demo.vmdk"),
        ("virtualbox", "demo.ova"),
        ("gce", "demo.raw.tar.gz"),
    ] {
        build(f, &demo, out, &[])?;
    }
    // DigitalOcean's shape (a gzipped qcow2), from the demo's qcow2: the demo closure has no
    // GRUB for the digitalocean format itself.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &std::fs::read(dir.join("demo.qcow2"))?)?;
    std::fs::write(dir.join("demo.qcow2.gz"), gz.finish()?)?;
    build("proxmox", &demo, "demo.vma.zst", &[])?;
    quiet(
        cmd("zstd")
            .args(["-q", "-d", "--rm"])
            .arg(dir.join("demo.vma.zst"))
            .arg("-o")
            .arg(dir.join("demo.vma")),
    )?;
    Ok(())
}

/// The demo disk by the conventional tools (`classic-image.sh`: mkfs, sfdisk), and its
/// containers by `qemu-img convert`.
fn classic_seeds(root: &Path, dir: &Path) -> Result<()> {
    let demo = root.join("fixtures/demo");
    let classic = root.join("crates/inspect/tests/classic-image.sh");
    for (kind, out, features) in [
        ("efi", "classic-efi.img", None),
        ("sd", "classic-sd.img", None),
        (
            "efi",
            "classic-efi-nocsum.img",
            Some("^metadata_csum,^has_journal"),
        ),
    ] {
        let mut c = cmd("bash");
        c.arg(&classic).arg(kind).arg(&demo).arg(dir.join(out));
        if let Some(f) = features {
            c.env("EXT4_FEATURES", f);
        }
        quiet(&mut c)?;
    }
    for (fmt, opts, out) in [
        ("qcow2", &[][..], "classic.qcow2"),
        ("qcow2", &["-c"][..], "classic-compressed.qcow2"),
        ("vpc", &[][..], "classic.vhd"),
        ("vhdx", &[][..], "classic.vhdx"),
        ("vmdk", &[][..], "classic.vmdk"),
        (
            "vmdk",
            &["-o", "subformat=streamOptimized"][..],
            "classic-stream.vmdk",
        ),
    ] {
        quiet(
            cmd("qemu-img")
                .args(["convert", "-O", fmt])
                .args(opts)
                .arg(dir.join("classic-efi.img"))
                .arg(dir.join(out)),
        )?;
    }
    Ok(())
}

/// A bare FAT12 floppy (mkfs.vfat + mtools): nested directories, long names.
fn fat12_seed(dir: &Path) -> Result<()> {
    let fat = dir.join("fat12.img");
    quiet(
        cmd("mkfs.vfat")
            .args(["-C", "-F", "12", "-n", "FUZZ"])
            .arg(&fat)
            .arg("1440"),
    )?;
    let tree = dir.join("fat-tree");
    std::fs::create_dir_all(tree.join("Deep/er/A Long Directory Name"))?;
    std::fs::write(tree.join("README.TXT"), b"short\n")?;
    std::fs::write(tree.join("a rather long file name.conf"), vec![b'x'; 5000])?;
    for i in 0..30 {
        std::fs::write(
            tree.join(format!("Deep/file-{i:02}.dat")),
            vec![i as u8; 700 * i],
        )?;
    }
    quiet(
        cmd("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-s")
            .arg("-i")
            .arg(&fat)
            .arg(tree.join("README.TXT"))
            .arg(tree.join("a rather long file name.conf"))
            .arg(tree.join("Deep"))
            .arg("::"),
    )?;
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

/// The text inputs: format files, the fixtures' registrations and boot.json, and a boot.json
/// with boot counting on.
fn text_seeds(root: &Path, dir: &Path) -> Result<()> {
    for f in [
        "raw-efi",
        "sd-aarch64",
        "qemu-efi",
        "gce",
        "virtualbox",
        "raw",
        "qemu",
    ] {
        std::fs::copy(
            root.join(format!("formats/{f}.toml")),
            dir.join(format!("{f}.toml")),
        )?;
    }
    let demo = root.join("fixtures/demo");
    let demo64 = root.join("fixtures/demo-aarch64");
    for (fix, name) in [(&demo, "demo"), (&demo64, "demo-aarch64")] {
        std::fs::copy(
            fix.join("closure-info/registration"),
            dir.join(format!("{name}.registration")),
        )?;
        let top = std::fs::read_link(fix.join("result"))?;
        let rel = top.strip_prefix("/").unwrap_or(&top);
        std::fs::copy(
            fix.join(rel).join("boot.json"),
            dir.join(format!("{name}.boot.json")),
        )?;
    }
    // A boot.json with the imgbuild module's release and boot loader settings (boot counting
    // on): the first such toplevel of the oracle fixtures, in name order.
    let mut counted: Vec<PathBuf> = std::fs::read_dir(root.join("fixtures/oracle/nix/store"))?
        .map(|e| e.map(|e| e.path().join("boot.json")))
        .collect::<std::io::Result<_>>()?;
    counted.sort();
    let counted = counted
        .into_iter()
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"bootCounting\"")))
        .context("no boot.json with bootCounting under fixtures/oracle/nix/store")?;
    std::fs::copy(&counted, dir.join("oracle-26.11-counting.boot.json"))?;
    // The demo's boot.json with a GRUB record (`org.imgbuild.v1.bootloader`, type grub).
    let text = std::fs::read(dir.join("demo.boot.json"))?;
    let mut doc: serde_json::Value = serde_json::from_slice(&text)?;
    doc["org.imgbuild.v1"] = serde_json::json!({"release": "24.05", "bootloader": {
        "type": "grub", "timeout": 5, "devices": ["/dev/vda"],
        "grub": "/nix/store/qwjcdgz3fgnpcm0j1rv8yls9y04pd9b4-grub-2.06",
        "efiSupport": false, "fsIdentifier": "uuid", "configurationLimit": 100,
        "default": 0, "extraConfig": "serial --unit=0\nterminal_output --append serial",
        "font": "/nix/store/qwjcdgz3fgnpcm0j1rv8yls9y04pd9b4-grub-2.06/share/grub/unicode.pf2",
        "splashImage": null, "users": {}, "extraGrubInstallArgs": []}});
    std::fs::write(
        dir.join("demo-grub.boot.json"),
        serde_json::to_vec_pretty(&doc)?,
    )?;
    Ok(())
}
