//! ci-boot's appliance steps (issue 26): the A/B appliance of the fixture's
//! `result-appliance` boots its UKI with the store pair read through dm-verity; with one
//! store byte flipped it must not; and after an A->B update to `result-appliance-v2` done as
//! systemd-sysupdate would (`update.rs`), systemd-boot boots version 2 from the B slots.

mod update;

use super::Run;
use crate::boot::{self, BootSpec, Disk, Firmware, Format};
use crate::fixture::{FixtureInfo, Variant};
use crate::util::{self, cmd};
use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The GPT type of an EFI System Partition.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// One partition of a store pair, as the manifest's `verity.data` / `verity.hash` name it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct VerityPart {
    /// Its number in the table, from 1.
    number: u32,
    /// Its first byte.
    offset: u64,
    /// Its length in bytes.
    size: u64,
}

/// The manifest's `verity`: the root hash and the store pair (slot A).
#[derive(Debug, Clone, Deserialize)]
struct Verity {
    root_hash: String,
    /// Bytes of the store image at the data partition's start: the protected bytes are these
    /// (and the zeros to the next block); the rest of the partition is room for later
    /// versions.
    store_image_size: u64,
    data: VerityPart,
    hash: VerityPart,
}

/// One partition of the manifest's `partitions`.
#[derive(Debug, Deserialize)]
struct Partition {
    start: u64,
    #[serde(rename = "type")]
    type_guid: String,
}

/// What the appliance steps read from an image's manifest (`IMAGE.json`).
#[derive(Debug)]
pub(super) struct Facts {
    verity: Verity,
    /// The ESP's first byte (mtools' `-i IMAGE@@OFFSET`).
    esp_offset: u64,
    /// The UKI's path on the ESP (`boot.uki.path`), when the image has one.
    uki: Option<String>,
    /// `sysupdate`: the artifacts beside the image and its empty B slots.
    sysupdate: Option<update::Sysupdate>,
}

impl Facts {
    /// Reads the manifest imgbuild wrote beside `img`.
    pub(super) fn of(img: &Path) -> Result<Facts> {
        Self::from_manifest(&boot::image_manifest(img)?)
            .with_context(|| format!("the manifest of {}", img.display()))
    }

    fn from_manifest(m: &serde_json::Value) -> Result<Facts> {
        let verity: Verity =
            serde_json::from_value(m["verity"].clone()).context("its `verity` section")?;
        ensure!(
            verity.store_image_size <= verity.data.size,
            "its store image ({} bytes) is larger than its data partition ({} bytes)",
            verity.store_image_size,
            verity.data.size
        );
        let parts: Vec<Partition> =
            serde_json::from_value(m["partitions"].clone()).context("its `partitions`")?;
        let esp = parts
            .iter()
            .find(|p| p.type_guid.eq_ignore_ascii_case(ESP_TYPE))
            .context("no EFI System Partition among its partitions")?;
        let sysupdate = match m.get("sysupdate") {
            None | Some(serde_json::Value::Null) => None,
            Some(s) => Some(serde_json::from_value(s.clone()).context("its `sysupdate`")?),
        };
        Ok(Facts {
            verity,
            esp_offset: esp.start,
            uki: m["boot"]["uki"]["path"].as_str().map(str::to_string),
            sysupdate,
        })
    }

    /// The console line the fixture initrd prints for the store pair it opened.
    fn verity_line(&self, disk: &str) -> String {
        format!(
            "verity: data /dev/{disk}{}, hash /dev/{disk}{}",
            self.verity.data.number, self.verity.hash.number
        )
    }
}

/// The ESP's first byte in `img`, from its manifest (the Secure Boot step edits its UKI).
pub(super) fn esp_offset(img: &Path) -> Result<u64> {
    Ok(Facts::of(img)?.esp_offset)
}

/// The value of `key=` on the kernel command line the fixture initrd printed
/// (`imgbuild-initrd: ... cmdline: ARGS`), if it printed one.
fn cmdline_arg<'a>(console: &'a str, key: &str) -> Option<&'a str> {
    let line = console.lines().find(|l| l.contains("; cmdline: "))?;
    let args = line.split_once("; cmdline: ")?.1;
    args.split_whitespace()
        .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
}

/// Issue 26: the appliance (image version 1) boots from its UKI, the initrd mapping store
/// pair A from `usrhash=` and reading every block through dm-verity; with one byte of the
/// store partition flipped (at its middle), the kernel refuses the block. Then the A->B
/// update to version 2.
pub(super) fn appliance(run: &mut Run, fx: &Path) {
    let infos = run.step("appliance fixture toplevels (image versions 1, 2)", || {
        let v1 = FixtureInfo::load_variant(fx, Variant::Appliance)?;
        let v2 = FixtureInfo::load_variant(fx, Variant::ApplianceV2)?;
        let note = format!("{} and {}", v1.toplevel, v2.toplevel);
        Ok(((v1, v2), note))
    });
    let Some((info, info2)) = infos else {
        return;
    };
    let Some((img, facts)) = run.step(
        "imgbuild appliance image (UKI, A/B slots, dm-verity store)",
        || {
            let img = boot::imgbuild_image(Format::Appliance)?;
            let facts = Facts::of(&img)?;
            let note = format!(
                "root hash {}, UKI {}",
                facts.verity.root_hash,
                facts.uki.as_deref().unwrap_or("none")
            );
            Ok(((img, facts), note))
        },
    ) else {
        return;
    };
    let want = [
        facts.verity_line("vda"),
        "is registered in /nix/var/nix/db/db.sqlite".to_string(),
    ];
    run.boot_appliance(
        "boot imgbuild appliance (virtio, UKI + verity store A)",
        &img,
        &info,
        Expect {
            root_hash: &facts.verity.root_hash,
            console: &want,
            writable: false,
        },
    );
    flipped_store_byte(run, &img, &facts.verity);
    update::ab_update(run, fx, (&img, &facts), &info2);
}

/// The negative control: one byte of the store image (in the middle of it) flipped must
/// FAIL (dm-verity).
fn flipped_store_byte(run: &mut Run, img: &Path, verity: &Verity) {
    let bad = run.out.join("appliance-flipped-store-byte.img");
    let made = run.step(
        "appliance with one store byte flipped (negative control)",
        || {
            util::run(cmd("cp").arg("--sparse=always").arg(img).arg(&bad))?;
            let at = verity.data.offset + verity.store_image_size / 2;
            let mut f = fs::OpenOptions::new().read(true).write(true).open(&bad)?;
            let mut b = [0u8; 1];
            f.seek(SeekFrom::Start(at))?;
            f.read_exact(&mut b)?;
            b[0] ^= 0xff;
            f.seek(SeekFrom::Start(at))?;
            f.write_all(&b)?;
            Ok(((), format!("byte {at} flipped")))
        },
    );
    if made.is_some() {
        run.expect_fail(
            "negative control: a flipped store byte must FAIL (dm-verity)",
            Format::Appliance,
            &bad,
            "dm-verity refused a block",
        );
    }
    let _ = fs::remove_file(&bad);
}

/// What an appliance boot must show besides its toplevel's marker.
struct Expect<'a> {
    /// The kernel command line's `usrhash=`.
    root_hash: &'a str,
    /// Lines the console must contain.
    console: &'a [String],
    /// Boot without `snapshot=on`: what systemd-boot writes to the ESP stays.
    writable: bool,
}

impl Run {
    /// Boots the appliance image `img` (virtio, OVMF): the step passes when the console
    /// shows exactly `info`'s marker and what `expect` says. None when it failed.
    fn boot_appliance(
        &mut self,
        name: &str,
        img: &Path,
        info: &FixtureInfo,
        expect: Expect,
    ) -> Option<()> {
        let Expect {
            root_hash,
            console: want,
            writable,
        } = expect;
        let how = (Format::Appliance, Firmware::Uefi, Disk::Virtio);
        let spec = BootSpec {
            format: Format::Appliance,
            image: img,
            disk: Disk::Virtio,
            timeout: boot::default_timeout(Format::Appliance),
            log: self.console_log(img, how),
            verbose: false,
            writable,
            firmware: Firmware::Uefi,
        };
        self.step(name, || {
            let o = boot::boot(&spec)?;
            boot::report(&spec, &o)?;
            let marker = info.marker.as_deref().unwrap_or_default();
            ensure!(
                o.detail == marker,
                "booted, but printed {:?} instead of {marker:?}",
                o.detail
            );
            // (the firmware's escape sequences are not all UTF-8)
            let console = String::from_utf8_lossy(
                &fs::read(&o.log).with_context(|| format!("reading {}", o.log.display()))?,
            )
            .into_owned();
            let usrhash = cmdline_arg(&console, "usrhash");
            ensure!(
                usrhash == Some(root_hash),
                "the kernel command line's usrhash= is {usrhash:?}, not {root_hash} (see {})",
                o.log.display()
            );
            for w in want {
                ensure!(
                    console.contains(w.as_str()),
                    "the console never said `{w}` (see {})",
                    o.log.display()
                );
            }
            Ok((
                (),
                format!(
                    "{:.1} s to marker, accel={}, usrhash={}..",
                    o.secs,
                    o.accel,
                    root_hash.get(..12).unwrap_or(root_hash)
                ),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_arg_reads_the_initrds_cmdline_line() {
        let console = "BdsDxe: loading Boot0001\n\
            imgbuild-initrd: x86_64 kernel 6.1.0; cmdline: init=/nix/store/x/init console=ttyS0 usrhash=ab12 panic=1\n\
            imgbuild-initrd: boot mode: verity\n";
        assert_eq!(cmdline_arg(console, "usrhash"), Some("ab12"));
        assert_eq!(cmdline_arg(console, "init"), Some("/nix/store/x/init"));
        assert_eq!(cmdline_arg(console, "usr"), None);
        assert_eq!(cmdline_arg("no initrd here\n", "usrhash"), None);
    }

    #[test]
    fn facts_from_a_manifest() {
        let m = serde_json::json!({
            "partitions": [
                {"number": 1, "start": 8388608, "type": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"},
                {"number": 2, "start": 545259520, "type": "77FF5F63-E7B6-4633-ACF4-1565B864C0E6"}
            ],
            "boot": {"uki": {"path": "EFI/Linux/imgbuild-fixture_1.efi"}},
            "verity": {
                "root_hash": "891c",
                "store_image_size": 95129600,
                "data": {"name": "store", "number": 3, "offset": 546308096, "size": 95420416},
                "hash": {"name": "store-verity", "number": 2, "offset": 545259520, "size": 761856}
            }
        });
        let f = Facts::from_manifest(&m).expect("facts");
        assert_eq!(f.esp_offset, 8388608);
        assert_eq!(f.uki.as_deref(), Some("EFI/Linux/imgbuild-fixture_1.efi"));
        assert!(f.sysupdate.is_none());
        assert_eq!(
            f.verity_line("vda"),
            "verity: data /dev/vda3, hash /dev/vda2"
        );

        let mut no_esp = m.clone();
        no_esp["partitions"] = serde_json::json!([]);
        let e = format!("{:#}", Facts::from_manifest(&no_esp).expect_err("no ESP"));
        assert!(e.contains("no EFI System Partition"), "{e}");
        let mut too_big = m.clone();
        too_big["verity"]["store_image_size"] = 95420417.into();
        let e = format!("{:#}", Facts::from_manifest(&too_big).expect_err("too big"));
        assert!(e.contains("larger than its data partition"), "{e}");
        let mut no_verity = m;
        no_verity["verity"] = serde_json::Value::Null;
        let e = format!(
            "{:#}",
            Facts::from_manifest(&no_verity).expect_err("no verity")
        );
        assert!(e.contains("`verity`"), "{e}");
    }
}
