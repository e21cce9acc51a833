//! The boot-counting case of `cargo xtask ci-boot` (issue 21): an image of a 26.11-style
//! closure with `boot.loader.systemd-boot.bootCounting` on boots in QEMU (OVMF) through the
//! entry that carries a try counter, and `imgbuild inspect` shows the counter.
//!
//! The toplevel is the realistic x86_64 fixture's, copied under a new store path with
//! `nixos-version` 26.11 and `"org.imgbuild.v1": {"release": "26.11", "bootloader": {...,
//! "bootCounting": {"enable": true, "tries": 3}}}` (CONTRACT.md), in a store of hard links
//! to the fixture's paths. Before the boot the ESP must hold exactly one entry,
//! `loader/entries/nixos-<sha256 of its text>+3.conf`, and loader.conf `preferred
//! nixos-<hash>.conf` + `default nixos-*` (what nixpkgs' 26.11 builder writes, see
//! fixtures/oracle). The image is booted writable: systemd-boot renames the entry it boots
//! to `+2-1` before starting the kernel, so afterwards the ESP proves which entry was booted
//! and that the counter was honoured, and `imgbuild inspect` must show 2 tries left, 1 done.

use crate::fixture::FixtureInfo;
use crate::oracle::{self, Loader};
use crate::util::{self, cmd};
use anyhow::{bail, ensure, Context, Result};
use imgbuild_inspect::boot_counters;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

pub const TRIES: u32 = 3;

/// The image and what must be in it.
pub struct Counted {
    pub image: PathBuf,
    /// `nixos-<sha256 hex>`: the entry's id without counters or `.conf`.
    pub id: String,
    /// The fixture info with this toplevel's boot marker.
    pub info: FixtureInfo,
    bin: PathBuf,
}

fn ls_names(bin: &Path, image: &Path, dir: &str) -> Result<Vec<String>> {
    let out = util::output_quiet(cmd(bin).arg("ls").arg(image).arg(dir))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(6).map(str::to_string))
        .collect())
}

fn cat(bin: &Path, image: &Path, path: &str) -> Result<Vec<u8>> {
    let out = cmd(bin)
        .arg("cat")
        .arg(image)
        .arg(path)
        .output()
        .with_context(|| format!("running imgbuild cat {path}"))?;
    ensure!(
        out.status.success(),
        "imgbuild cat {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// A `loader/entries` file: its name, its id without `.conf`, and (tries left, tries done)
/// when it is counted (read by inspect's own [`boot_counters`]).
struct Entry {
    file: String,
    id: String,
    counters: Option<(u32, u32)>,
}

/// The one NixOS entry on the ESP.
fn the_entry(bin: &Path, image: &Path) -> Result<Entry> {
    let names = ls_names(bin, image, "ESP:/loader/entries")?;
    let nixos: Vec<&String> = names.iter().filter(|n| n.starts_with("nixos-")).collect();
    let [name] = nixos.as_slice() else {
        bail!("expected exactly one nixos-* entry on the ESP, found {names:?}");
    };
    let (conf_id, counters) = match boot_counters(name) {
        Some((id, left, done)) => (id, Some((left, done))),
        None => ((*name).clone(), None),
    };
    let id = conf_id
        .strip_suffix(".conf")
        .with_context(|| format!("entry name {name} is not <id>[+N[-M]].conf"))?;
    let hash = id
        .strip_prefix("nixos-")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("entry {name} is not named nixos-<sha256>: not 26.11-style"))?;
    let text = cat(bin, image, &format!("ESP:/loader/entries/{name}"))?;
    let sum = Sha256::digest(&text);
    let sum: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    ensure!(
        sum == hash,
        "entry {name}: the SHA-256 of its text is {sum}, not the hash in its name"
    );
    Ok(Entry {
        file: (*name).clone(),
        id: id.to_string(),
        counters,
    })
}

/// `imgbuild inspect` must show the entry's counter. `--json`: in `boot.systemd_boot[].entries`,
/// the entry whose `id` is `<id>.conf` has `tries_left` and `tries_done` equal to the counter.
/// Text: the entry's block
/// (its line and the indented lines under it) says `tries`.
fn inspect_shows(bin: &Path, image: &Path, id: &str, left: u64, done: u64) -> Result<()> {
    let text = util::output_quiet(cmd(bin).arg("inspect").arg(image))?;
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let block_says_tries = lines.iter().enumerate().any(|(i, l)| {
        l.contains(id)
            && std::iter::once(*l)
                .chain(
                    lines[i + 1..]
                        .iter()
                        .copied()
                        .take_while(|n| indent(n) > indent(l)),
                )
                .any(|b| b.to_ascii_lowercase().contains("tries"))
    });
    ensure!(
        block_says_tries,
        "imgbuild inspect does not say 'tries' for entry {id}:\n{text}"
    );
    let json: Value = serde_json::from_str(&util::output_quiet(
        cmd(bin).arg("inspect").arg("--json").arg(image),
    )?)
    .context("parsing imgbuild inspect --json")?;
    ensure!(
        shows_counter(&json, id, left, done),
        "imgbuild inspect --json has no object for {id} with {left} tries left and {done} done"
    );
    Ok(())
}

fn shows_counter(v: &Value, id: &str, left: u64, done: u64) -> bool {
    let conf_id = format!("{id}.conf");
    let Some(loaders) = v.pointer("/boot/systemd_boot").and_then(Value::as_array) else {
        return false;
    };
    loaders
        .iter()
        .filter_map(|sb| sb.get("entries").and_then(Value::as_array))
        .flatten()
        .filter(|e| e.get("id").and_then(Value::as_str) == Some(conf_id.as_str()))
        .any(|e| {
            e.get("tries_left").and_then(Value::as_u64) == Some(left)
                && e.get("tries_done").and_then(Value::as_u64) == Some(done)
        })
}

/// Builds the image (needs the x86_64 fixture in `fx`).
pub fn build(fx: &Path, out: &Path) -> Result<Counted> {
    let info = FixtureInfo::load(fx)?;
    let name = info
        .toplevel
        .strip_prefix("/nix/store/")
        .context("fixture toplevel is not a store path")?;
    let root = out.join("bootcount-store");
    util::remove_tree(&root)?;
    fs::create_dir_all(root.join("nix"))?;
    // Hard links: the fixture's store paths, unchanged, without copying 130 MiB.
    util::run(
        cmd("cp")
            .arg("-al")
            .arg(fx.join("nix/store"))
            .arg(root.join("nix/store")),
    )
    .context("linking the fixture store (target/ci and target/fixtures on one filesystem)")?;
    let ext = json!({
        "release": "26.11",
        "bootloader": oracle::bootloader_settings(
            Loader::SystemdBoot,
            Some(5),
            true,
            "keep",
            Some((true, TRIES)),
        ),
    });
    let toplevel = oracle::write_variant_toplevel(
        &fx.join("nix/store").join(name),
        &root.join("nix/store"),
        oracle::release_version("26.11")?,
        "Zokor",
        &json!({ "org.imgbuild.v1": ext }),
    )?;
    let repo = util::repo_root();
    util::run(
        cmd("cargo")
            .current_dir(&repo)
            .args(["build", "--release", "--bin", "imgbuild"]),
    )?;
    let bin = util::target_dir().join("release/imgbuild");
    let image = out.join("imgbuild-raw-efi-26.11-bootcount.img");
    util::run(
        cmd(&bin)
            .arg("raw-efi")
            .arg("--closure")
            .arg(&toplevel)
            .arg("--store-root")
            .arg(&root)
            .arg("-o")
            .arg(&image),
    )?;
    let info = FixtureInfo {
        marker: Some(format!("{} toplevel={toplevel}", crate::fixture::BOOT_OK)),
        toplevel: toplevel.clone(),
        ..info
    };
    let Entry { file, id, .. } = the_entry(&bin, &image)?;
    ensure!(
        file == format!("{id}+{TRIES}.conf"),
        "the new entry is {file}, not {id}+{TRIES}.conf (boot counting on, {TRIES} tries)"
    );
    let conf = String::from_utf8(cat(&bin, &image, "ESP:/loader/loader.conf")?)?;
    for want in [
        format!("preferred {id}.conf"),
        "default nixos-*".to_string(),
    ] {
        ensure!(
            conf.lines().any(|l| l == want),
            "loader.conf has no line {want:?}:\n{conf}"
        );
    }
    Ok(Counted {
        image,
        id,
        info,
        bin,
    })
}

/// Before the boot: inspect shows 3 tries left, 0 done.
pub fn inspect_before(c: &Counted) -> Result<String> {
    inspect_shows(&c.bin, &c.image, &c.id, TRIES.into(), 0)?;
    Ok(format!(
        "{}+{TRIES}.conf: inspect shows {TRIES} tries left",
        c.id
    ))
}

/// After the boot: systemd-boot renamed the entry to `+2-1` (it booted the counted entry),
/// and inspect shows it.
pub fn after_boot(c: &Counted) -> Result<String> {
    let Entry { file, id, counters } = the_entry(&c.bin, &c.image)?;
    ensure!(id == c.id, "the entry id changed from {} to {id}", c.id);
    ensure!(
        counters == Some((TRIES - 1, 1)),
        "after one boot the entry is {file}, not {id}+{}-1.conf: systemd-boot did not count \
         the boot through it",
        TRIES - 1
    );
    inspect_shows(&c.bin, &c.image, &c.id, (TRIES - 1).into(), 1)?;
    Ok(format!(
        "systemd-boot renamed it to {file}; inspect shows it"
    ))
}

#[cfg(test)]
mod tests {
    use super::shows_counter;
    use serde_json::json;

    #[test]
    fn counter_in_inspect_json() {
        let j = json!({"boot": {"systemd_boot": [{"preferred": "nixos-ab.conf", "entries": [
            {"file": "nixos-cd+3.conf", "id": "nixos-cd.conf", "tries_left": 3, "tries_done": 0},
            {"file": "nixos-ab+2-1.conf", "id": "nixos-ab.conf", "tries_left": 2, "tries_done": 1}
        ]}]}});
        assert!(shows_counter(&j, "nixos-ab", 2, 1));
        assert!(
            !shows_counter(&j, "nixos-ab", 3, 0),
            "another entry's counter"
        );
        assert!(shows_counter(&j, "nixos-cd", 3, 0));
        assert!(!shows_counter(&j, "nixos-cd", 2, 1));
        assert!(!shows_counter(&j, "nixos-ef", 2, 1));
        // The id only named elsewhere (preferred, a file name) is not the entry.
        let elsewhere = json!({"boot": {"systemd_boot": [{"preferred": "nixos-ab.conf",
            "tries_left": 2, "tries_done": 1, "entries": [
            {"file": "nixos-ab+2-1.conf", "id": "nixos-x.conf", "tries_left": 2, "tries_done": 1}
        ]}]}});
        assert!(!shows_counter(&elsewhere, "nixos-ab", 2, 1));
        // No counter fields (an uncounted entry): not shown, not even for 0 done.
        let none = json!({"boot": {"systemd_boot": [{"entries": [
            {"file": "nixos-ab.conf", "id": "nixos-ab.conf"}
        ]}]}});
        assert!(!shows_counter(&none, "nixos-ab", 3, 0));
        assert!(!shows_counter(&json!({"entries": []}), "nixos-ab", 3, 0));
    }
}
