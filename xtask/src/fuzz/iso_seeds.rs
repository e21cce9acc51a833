//! The `iso9660` target's seeds, with their own stamp: one generated tree (long names,
//! symlinks, deep directories, modes, a directory of several blocks, boot files) as an ISO
//! by our writer (`imgbuild-iso9660`, Rock Ridge, El Torito BIOS and UEFI entries) and by
//! `xorriso -as mkisofs -R -J` (with El Torito and an appended GPT partition: isohybrid).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use imgbuild_fstree::{Mtime, Owner, Perms, ScanOptions, Scanner};
use imgbuild_iso9660::{BiosBoot, EfiBoot, Options};

use super::quiet;
use crate::util::cmd;

/// The seed files.
pub const SEEDS: &[&str] = &["iso-ours.iso", "iso-xorriso.iso"];
const STAMP: &str = "v1\n";

/// Builds the seeds unless their stamp says they are there.
pub fn build(dir: &Path) -> Result<()> {
    let stamp = dir.join("stamp-iso9660");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == STAMP) {
        return Ok(());
    }
    let tree = dir.join("iso-tree");
    let _ = std::fs::remove_dir_all(&tree);
    host_tree(&tree).context("the ISO seed tree")?;
    ours(&tree, &dir.join(SEEDS[0])).context("our ISO seed")?;
    let efi = tree.join("boot/efi.img");
    quiet(
        cmd("xorriso")
            .args(["-as", "mkisofs", "-R", "-J", "-V", "FUZZ-ISO"])
            .args([
                "-b",
                "isolinux/isolinux.bin",
                "-no-emul-boot",
                "-boot-load-size",
                "4",
            ])
            .args(["-eltorito-alt-boot", "-e", "boot/efi.img", "-no-emul-boot"])
            .args(["-append_partition", "2", "0xef"])
            .arg(&efi)
            .arg("-appended_part_as_gpt")
            .arg("-o")
            .arg(dir.join(SEEDS[1]))
            .arg(&tree),
    )
    .context("xorriso's ISO seed")?;
    std::fs::remove_dir_all(&tree)?;
    std::fs::write(&stamp, STAMP)?;
    Ok(())
}

/// Writes `data` at `root/rel` (parents made) with permission bits `mode`.
pub fn write_mode(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<()> {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().context("a parent")?)?;
    std::fs::write(&path, data)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn host_tree(root: &Path) -> Result<()> {
    let write = |p: &str, data: &[u8], mode: u32| write_mode(root, p, data, mode);
    write("README", b"an ISO seed\n", 0o644)?;
    write("bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755)?;
    write(&"long-name-".repeat(20), b"long\n", 0o640)?;
    write("isolinux/isolinux.bin", &[0x90; 4096], 0o444)?;
    write("boot/efi.img", &[0u8; 64 << 10], 0o444)?;
    let deep: String = (0..10).map(|i| format!("level{i}/")).collect();
    write(&format!("{deep}leaf"), b"deep\n", 0o600)?;
    for i in 0..80 {
        write(
            &format!("many/entry-{i:03}-with-a-name-long-enough-for-a-continuation"),
            &vec![b'a' + (i % 26) as u8; 100 * i],
            0o644,
        )?;
    }
    let far: Vec<String> = (0..20).map(|i| format!("component-{i:02}")).collect();
    std::os::unix::fs::symlink(far.join("/"), root.join("long-link"))?;
    std::os::unix::fs::symlink("/bin/run.sh", root.join("absolute-link"))?;
    std::os::unix::fs::symlink("bin", root.join("dir-link"))?;
    Ok(())
}

fn ours(src: &Path, out: &Path) -> Result<()> {
    let tree = Scanner::new(ScanOptions {
        owner: Owner::Fixed(0, 0),
        perms: Perms::Preserve,
        mtime: Mtime::Fixed(1_700_000_000),
        hardlinks: false,
    })
    .scan(src)?;
    let plan = imgbuild_iso9660::plan(
        &tree,
        &Options {
            volume_id: "FUZZ-ISO".into(),
            time: 1_700_000_000,
            bios: Some(BiosBoot {
                image: b"isolinux/isolinux.bin".to_vec(),
                load_sectors: 4,
                boot_info_table: true,
            }),
            efi: Some(EfiBoot {
                image: b"boot/efi.img".to_vec(),
                load_sectors: None,
            }),
            ..Options::default()
        },
    )?;
    let f = std::fs::File::create(out)?;
    f.set_len(plan.bytes())?;
    imgbuild_diskmap::write_file(&plan.map(&tree, &[])?, &f)?;
    Ok(())
}
