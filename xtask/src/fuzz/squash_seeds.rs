//! The `squashfs` target's seeds, with their own stamp: one generated tree (files of zero,
//! one and several blocks, holes, a big directory, hard links, symlinks, a FIFO) as a
//! squashfs by our writer (`imgbuild-squashfs`, 4 KiB blocks) and by `mksquashfs` (zstd
//! with 4 KiB blocks; xz; gzip with every table uncompressed, so byte mutations reach
//! inodes and listings), and a live ISO (xorriso) holding our image as
//! `/nix-store.squashfs`, which inspect mounts at `/nix/store`.

use std::path::Path;

use anyhow::{Context, Result};
use imgbuild_fstree::{Mtime, Owner, Perms, ScanOptions, Scanner};

use super::quiet;
use crate::util::cmd;

/// The seed files.
pub const SEEDS: &[&str] = &[
    "squashfs-ours.sqfs",
    "squashfs-zstd.sqfs",
    "squashfs-xz.sqfs",
    "squashfs-flat.sqfs",
    "squashfs-live.iso",
];
const STAMP: &str = "v1\n";

/// Builds the seeds unless their stamp says they are there.
pub fn build(dir: &Path) -> Result<()> {
    let stamp = dir.join("stamp-squashfs");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == STAMP) {
        return Ok(());
    }
    let tree = dir.join("squashfs-tree");
    let _ = std::fs::remove_dir_all(&tree);
    host_tree(&tree).context("the squashfs seed tree")?;
    ours(&tree, &dir.join(SEEDS[0])).context("our squashfs seed")?;
    for (seed, args) in [
        (SEEDS[1], &["-comp", "zstd", "-b", "4096"][..]),
        (SEEDS[2], &["-comp", "xz", "-b", "8192"][..]),
        (
            SEEDS[3],
            &["-comp", "gzip", "-noI", "-noD", "-noF", "-noX"][..],
        ),
    ] {
        quiet(
            cmd("mksquashfs")
                .arg(&tree)
                .arg(dir.join(seed))
                .args(["-quiet", "-no-progress", "-noappend"])
                .args(args),
        )
        .with_context(|| format!("mksquashfs's seed {seed}"))?;
    }
    let iso = dir.join("squashfs-iso-tree");
    let _ = std::fs::remove_dir_all(&iso);
    std::fs::create_dir_all(iso.join("isolinux"))?;
    std::fs::copy(dir.join(SEEDS[0]), iso.join("nix-store.squashfs"))?;
    std::fs::write(
        iso.join("isolinux/isolinux.cfg"),
        "LABEL boot\nLINUX /boot/bzImage\nAPPEND init=/nix/store/top/init\n",
    )?;
    quiet(
        cmd("xorriso")
            .args(["-as", "mkisofs", "-R", "-V", "FUZZ-LIVE", "-o"])
            .arg(dir.join(SEEDS[4]))
            .arg(&iso),
    )
    .context("the live ISO seed")?;
    std::fs::remove_dir_all(&iso)?;
    std::fs::remove_dir_all(&tree)?;
    std::fs::write(&stamp, STAMP)?;
    Ok(())
}

fn host_tree(root: &Path) -> Result<()> {
    let write = |p: &str, data: &[u8], mode: u32| super::iso_seeds::write_mode(root, p, data, mode);
    write("README", b"a squashfs seed\n", 0o644)?;
    write("empty", b"", 0o600)?;
    write("bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755)?;
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write("blocks/noise", &noise, 0o644)?;
    let mut holes = vec![0u8; 12_288];
    holes.extend_from_slice(&noise[..5000]);
    write("blocks/holes", &holes, 0o644)?;
    for i in 0..300 {
        write(
            &format!("many/entry-{i:03}"),
            &vec![b'a' + (i % 26) as u8; i],
            0o644,
        )?;
    }
    let deep: String = (0..10).map(|i| format!("level{i}/")).collect();
    write(&format!("{deep}leaf"), b"deep\n", 0o600)?;
    std::fs::create_dir_all(root.join("empty-dir"))?;
    std::fs::hard_link(root.join("README"), root.join("bin/hard-readme"))?;
    std::os::unix::fs::symlink("/bin/run.sh", root.join("absolute-link"))?;
    std::os::unix::fs::symlink("../README", root.join("bin/up-link"))?;
    std::os::unix::fs::symlink("bin", root.join("dir-link"))?;
    quiet(cmd("mkfifo").arg(root.join("fifo")))?;
    Ok(())
}

fn ours(src: &Path, out: &Path) -> Result<()> {
    let tree = Scanner::new(ScanOptions {
        owner: Owner::Fixed(0, 0),
        perms: Perms::Preserve,
        mtime: Mtime::Fixed(1_700_000_000),
        hardlinks: true,
    })
    .scan(src)?;
    let opts = imgbuild_squashfs::Options {
        block_size: 4096,
        ..imgbuild_squashfs::Options::default()
    };
    imgbuild_squashfs::write(&tree, &opts, std::fs::File::create(out)?)?;
    Ok(())
}
