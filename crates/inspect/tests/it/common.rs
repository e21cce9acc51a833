//! Helpers: the demo closure, classic-tool images, running oracle tools.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/inspect is two levels below the workspace root")
        .to_path_buf()
}

pub fn demo() -> PathBuf {
    workspace().join("fixtures/demo")
}

pub use imgbuild_testutil::run;

/// `classic-image.sh KIND demo OUT` with optional mkfs.ext4 -O features.
pub fn classic(kind: &str, out: &Path, ext4_features: Option<&str>) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/classic-image.sh");
    let mut c = Command::new("bash");
    c.arg(script).arg(kind).arg(demo()).arg(out);
    if let Some(f) = ext4_features {
        c.env("EXT4_FEATURES", f);
    }
    run(&mut c);
    out.to_path_buf()
}

/// A bare FAT image (no partition table) of `size_kib` KiB, filled with nested directories,
/// long and short names, and files of several sizes (mkfs.vfat + mtools).
pub fn bare_fat(
    dir: &Path,
    size_kib: u64,
    fat_bits: Option<u32>,
    sectors_per_cluster: Option<u32>,
) -> PathBuf {
    let img = dir.join(format!("fat-{size_kib}.img"));
    let tree = dir.join(format!("fat-tree-{size_kib}"));
    std::fs::create_dir_all(tree.join("Deep/er/still/A Long Directory Name")).unwrap();
    std::fs::write(tree.join("README.TXT"), b"short name file\n").unwrap();
    std::fs::write(tree.join("a rather long file name.conf"), vec![b'x'; 5000]).unwrap();
    std::fs::write(tree.join("Deep/er/mixedCase.Txt"), b"mixed\n").unwrap();
    std::fs::write(
        tree.join("Deep/er/still/A Long Directory Name/ünïcödé file.txt"),
        b"utf\n",
    )
    .unwrap();
    std::fs::write(tree.join("Deep/er/still/empty"), b"").unwrap();
    for i in 0..40 {
        std::fs::write(
            tree.join(format!("Deep/file-number-{i:03}.dat")),
            vec![i as u8; 700 * i],
        )
        .unwrap();
    }
    let mut mk = Command::new("mkfs.vfat");
    mk.args(["-C", "-n", "BARE", "-i", "0badcafe"]);
    if let Some(b) = fat_bits {
        mk.args(["-F", &b.to_string()]);
    }
    if let Some(s) = sectors_per_cluster {
        mk.args(["-s", &s.to_string()]);
    }
    let _ = std::fs::remove_file(&img);
    run(mk.arg(&img).arg(size_kib.to_string()));
    let entries: Vec<PathBuf> = std::fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-i"])
        .arg(&img)
        .args(&entries)
        .arg("::/"));
    img
}

/// Writes `data` at `root/rel` (parents made) with permission bits `mode`.
pub fn write_mode(root: &Path, rel: &str, data: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The start every generated tree shares: small files, an empty one, a script, setuid.
pub fn small_files(root: &Path) {
    write_mode(root, "hello.txt", b"hello\n", 0o644);
    write_mode(root, "empty", b"", 0o600);
    write_mode(root, "bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    write_mode(root, "bin/setuid", b"x", 0o4711);
}
