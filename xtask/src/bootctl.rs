//! `cargo xtask bootctl IMAGE`: copies the image's ESP out with mtools into a tmpfs and runs
//! Debian's `bootctl` (from the systemd-boot .deb, unpacked, never installed) against it:
//! `status`, `list`, `is-installed`. Passes only if systemd-boot is installed both as
//! EFI/systemd/systemd-bootx64.efi and EFI/BOOT/BOOTX64.EFI and the default entry is
//! nixos-generation-1.conf.

use crate::debs::Debs;
use crate::util::{self, cmd};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// Byte offset of the first EFI System Partition (from `sfdisk --json`).
pub fn esp_offset(image: &Path) -> Result<u64> {
    let j: serde_json::Value =
        serde_json::from_str(&util::output_quiet(cmd("sfdisk").arg("--json").arg(image))?)
            .context("parsing sfdisk --json")?;
    let table = &j["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let parts = table["partitions"].as_array().context("no partitions")?;
    let esp = parts
        .iter()
        .find(|p| {
            p["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case(ESP_TYPE))
        })
        .with_context(|| {
            format!(
                "{} has no EFI System Partition ({ESP_TYPE})",
                image.display()
            )
        })?;
    Ok(esp["start"].as_u64().context("ESP start")? * sector)
}

/// bootctl from the systemd-boot .deb, plus the directory of its private libsystemd-shared
/// (from the matching libsystemd-shared .deb, so the host's systemd version does not matter).
fn bootctl() -> Result<(PathBuf, PathBuf)> {
    let debs = Debs::new()?;
    let sb = debs.extract(&debs.fetch("systemd-boot", "amd64")?)?;
    let sd = debs.extract(&debs.fetch("libsystemd-shared", "amd64")?)?;
    let bin = sb.join("usr/bin/bootctl");
    ensure!(
        bin.is_file(),
        "no usr/bin/bootctl in the systemd-boot package"
    );
    let lib = sd.join("usr/lib/x86_64-linux-gnu/systemd");
    ensure!(
        lib.is_dir(),
        "no {} in the libsystemd-shared package",
        lib.display()
    );
    Ok((bin, lib))
}

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("xtask-esp-").tempdir()?;
        util::run(
            cmd("mount")
                .args(["-t", "tmpfs", "-o", "size=1g,mode=0755", "tmpfs"])
                .arg(dir.path()),
        )
        .context("mounting a tmpfs for the ESP copy (needs root)")?;
        Ok(Tmpfs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn run_bootctl(bin: &Path, lib: &Path, esp: &Path, verb: &str) -> Result<(bool, String)> {
    let out = Command::new(bin)
        .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
        .env("SYSTEMD_RELAX_XBOOTLDR_CHECKS", "1")
        .env("LD_LIBRARY_PATH", lib)
        .env("SYSTEMD_PAGER", "cat")
        .env("SYSTEMD_COLORS", "0")
        .arg(format!("--esp-path={}", esp.display()))
        .arg(format!("--boot-path={}", esp.display()))
        .arg("--no-variables")
        .arg("--no-pager")
        .arg(verb)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

pub fn check(image: &Path) -> Result<()> {
    util::need_tools(&[("mcopy", "mtools"), ("sfdisk", "fdisk"), ("mount", "mount")])?;
    let offset = esp_offset(image)?;
    let (bin, lib) = bootctl()?;
    let esp = Tmpfs::mount()?;
    util::run(
        cmd("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-s", "-p", "-n", "-i"])
            .arg(format!("{}@@{offset}", image.display()))
            .arg("::/*")
            .arg(esp.path()),
    )
    .context("copying the ESP out with mcopy")?;
    let mut problems = Vec::new();
    for verb in ["status", "list", "is-installed"] {
        let (ok, text) = run_bootctl(&bin, &lib, esp.path(), verb)?;
        println!(
            "=== bootctl {verb} (exit {})\n{}",
            if ok { "0" } else { "non-zero" },
            text.trim_end()
        );
        match verb {
            "status" => {
                for f in ["/EFI/systemd/systemd-bootx64.efi", "/EFI/BOOT/BOOTX64.EFI"] {
                    if !text
                        .lines()
                        .any(|l| l.contains(f) && l.contains("(systemd-boot "))
                    {
                        problems.push(format!("bootctl status does not show systemd-boot at {f}"));
                    }
                }
            }
            "list" => {
                if !default_entry_is(&text, "nixos-generation-1.conf") {
                    problems.push(
                        "bootctl list does not show nixos-generation-1.conf as the default entry"
                            .to_string(),
                    );
                }
            }
            _ => {
                if !ok || text.trim() != "yes" {
                    problems.push(format!("bootctl is-installed said {:?}", text.trim()));
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "bootctl check of {} failed:\n  {}",
            image.display(),
            problems.join("\n  ")
        );
    }
    println!("PASS: bootctl: systemd-boot installed (EFI/systemd + EFI/BOOT), default entry nixos-generation-1.conf");
    Ok(())
}

/// In `bootctl list` output, entries are blocks of `key: value` lines separated by blank
/// lines; the default one has `(default)` after its title.
fn default_entry_is(list: &str, id: &str) -> bool {
    list.split("\n\n").any(|block| {
        block.lines().any(|l| l.contains("(default)"))
            && block
                .lines()
                .any(|l| l.trim().strip_prefix("id:").is_some_and(|v| v.trim() == id))
    })
}

#[cfg(test)]
mod tests {
    use super::default_entry_is;

    #[test]
    fn finds_the_default_entry() {
        let list = "Boot Loader Entries:\n         type: Boot Loader Specification Type #1 (.conf)\n        title: NixOS (default)\n           id: nixos-generation-1.conf\n\n        title: Other\n           id: other.conf\n";
        assert!(default_entry_is(list, "nixos-generation-1.conf"));
        assert!(!default_entry_is(list, "other.conf"));
    }
}
