//! `cargo xtask baseline`: the conventional shell pipeline (xtask/scripts/baseline-*.sh),
//! the benchmark baseline for imgbuild and the reference that proves the boot harness.

use crate::boot::Format;
use crate::util::{self, cmd, Timer};
use anyhow::{Context, Result};
use std::path::Path;

pub fn build(format: Format, fixture: &Path, out: &Path, root_label: Option<&str>) -> Result<f64> {
    let env: Vec<(&str, &str)> = root_label.map(|l| ("ROOT_LABEL", l)).into_iter().collect();
    build_with_env(format, fixture, out, &env)
}

/// [`build`] with extra environment for the script (`ROOT_LABEL`, `BASELINE_OMIT`: the
/// negative controls' deliberate faults).
pub fn build_with_env(
    format: Format,
    fixture: &Path,
    out: &Path,
    env: &[(&str, &str)],
) -> Result<f64> {
    util::need_tools(&[
        ("bash", "bash"),
        ("mkfs.vfat", "dosfstools"),
        ("fsck.vfat", "dosfstools"),
        ("mmd", "mtools"),
        ("mcopy", "mtools"),
        ("mkfs.ext4", "e2fsprogs"),
        ("resize2fs", "e2fsprogs"),
        ("sgdisk", "gdisk"),
        ("sfdisk", "fdisk"),
        ("nix-store", "nix-bin"),
        ("zstd", "zstd"),
    ])?;
    if format.variant() != crate::fixture::Variant::Disk {
        util::need_tools(&[
            ("mksquashfs", "squashfs-tools"),
            ("xorriso", "xorriso"),
            ("cpio", "cpio"),
        ])?;
    }
    let script = util::xtask_dir()
        .join("scripts")
        .join(format!("baseline-{}.sh", format.cli_name()));
    let t = Timer::start();
    let mut c = cmd("bash");
    c.arg(&script).arg(fixture).arg(out);
    c.envs(env.iter().copied());
    util::run(&mut c).with_context(|| format!("baseline {} image", format.name()))?;
    let secs = t.secs();
    eprintln!(
        "xtask: baseline {} -> {} in {:.1} s",
        format.name(),
        out.display(),
        secs
    );
    Ok(secs)
}
