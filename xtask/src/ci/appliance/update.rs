//! ci-boot's A->B update of the appliance (issue 26 step 4), done by hand as
//! systemd-sysupdate does it (Debian bookworm has no systemd-sysupdate): imgbuild builds
//! version 2 of the appliance (`result-appliance-v2`), whose `OUT.sysupdate/` holds the
//! artifacts sysupdate downloads; they are checked (`sha256sum -c SHA256SUMS`, `veritysetup
//! verify` with version 2's root hash), then written into version 1's empty B slots (from
//! its manifest's `sysupdate.empty_slots`), the slots renamed `<id>_2` / `<id>_2_verity` and
//! given the UUIDs the artifact names carry (sysupdate's `@u`), and `<id>_2.efi` copied into
//! the ESP's `EFI/Linux` beside `<id>_1.efi` as `<id>_2+3-0.efi` (the name sysupdate gives it
//! from the module's UKI transfer: three boot tries). Booted under OVMF (writable), systemd-boot
//! must pick the newest UKI (version 2), whose `usrhash=` the initrd finds on the B pair, and
//! count the try (`+2-1`).

use super::{Expect, Facts, Run};
use crate::boot;
use crate::fixture::FixtureInfo;
use crate::util::{self, cmd, output};
use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use std::fs;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// DPS `usr-x86-64`: the store partition (sysupdate's `MatchPartitionType=usr`).
const USR_TYPE: Uuid = uuid::uuid!("8484680C-9521-48C6-9C11-B0720656F69E");
/// DPS `usr-x86-64-verity`: its hash partition (`MatchPartitionType=usr-verity`).
const USR_VERITY_TYPE: Uuid = uuid::uuid!("77FF5F63-E7B6-4633-ACF4-1565B864C0E6");
/// The GPT name of a slot no version occupies (sysupdate's `_empty`).
const EMPTY: &str = "_empty";
/// The boot counter sysupdate puts in a new UKI's name: the module's UKI transfer has
/// `TriesLeft=3`, `TriesDone=0`, and its first target pattern `<id>_@v+@l-@d.efi` is the one
/// sysupdate formats the name from.
const NEW_UKI_TRIES: &str = "+3-0";
/// The counter after one try, as systemd-boot renames the file before booting it.
const TRIED_ONCE: &str = "+2-1";

/// The manifest's `sysupdate` section.
#[derive(Debug, Clone, Deserialize)]
pub(in crate::ci) struct Sysupdate {
    image_id: String,
    version: String,
    /// The file name of `OUT.sysupdate`, beside the image.
    directory: String,
    artifacts: Vec<Artifact>,
    empty_slots: Vec<EmptySlot>,
}

/// One file of `OUT.sysupdate`.
#[derive(Debug, Clone, Deserialize)]
struct Artifact {
    name: String,
    /// `usr`, `usr-verity` or `uki`.
    kind: String,
    size: u64,
}

/// One empty B slot of the image.
#[derive(Debug, Clone, Deserialize)]
struct EmptySlot {
    number: u32,
    offset: u64,
    size: u64,
    /// Its GPT type GUID.
    #[serde(rename = "type")]
    type_guid: String,
}

/// One partition write of the update: `artifact` (`size` bytes, at most the slot's) into
/// slot `number` at `offset`, which then gets the GPT name `label` and unique GUID `uuid`.
#[derive(Debug, PartialEq)]
struct SlotWrite {
    artifact: String,
    size: u64,
    number: u32,
    offset: u64,
    label: String,
    uuid: Uuid,
}

/// What sysupdate does to install a version.
#[derive(Debug, PartialEq)]
struct Plan {
    /// The store partition's write.
    usr: SlotWrite,
    /// Its hash partition's.
    verity: SlotWrite,
    /// The UKI artifact's file name (`<id>_<version>.efi`).
    uki: String,
}

impl Plan {
    /// The UKI's path on the ESP with the counter `tries` (`+3-0`):
    /// `EFI/Linux/<id>_<version>+3-0.efi`.
    fn uki_on_esp(&self, tries: &str) -> String {
        let stem = self.uki.strip_suffix(".efi").unwrap_or(&self.uki);
        format!("EFI/Linux/{stem}{tries}.efi")
    }
}

/// What sysupdate would do to image `a` (its empty slots) to install `b` (its artifacts,
/// `b_root` its root hash).
fn plan(a: &Sysupdate, b: &Sysupdate, b_root: &str) -> Result<Plan> {
    ensure!(
        a.image_id == b.image_id,
        "image ids differ: {} and {}",
        a.image_id,
        b.image_id
    );
    ensure!(
        a.version != b.version,
        "both images are version {}",
        a.version
    );
    let id_v = format!("{}_{}", b.image_id, b.version);
    ensure!(
        b_root.len() == 64 && b_root.bytes().all(|c| c.is_ascii_hexdigit()),
        "root hash {b_root:?} is not 64 hex digits"
    );
    let mut writes = Vec::new();
    for (kind, ty, suffix, label, half) in [
        ("usr", USR_TYPE, ".usr.raw", id_v.clone(), &b_root[..32]),
        (
            "usr-verity",
            USR_VERITY_TYPE,
            ".usr-verity.raw",
            format!("{id_v}_verity"),
            &b_root[32..],
        ),
    ] {
        let art = one(b.artifacts.iter().filter(|x| x.kind == kind), kind)?;
        let uuid_text = art
            .name
            .strip_prefix(&format!("{id_v}_"))
            .and_then(|r| r.strip_suffix(suffix))
            .with_context(|| format!("artifact {} is not named {id_v}_<uuid>{suffix}", art.name))?;
        let uuid = Uuid::parse_str(uuid_text)
            .with_context(|| format!("the UUID in artifact name {}", art.name))?;
        ensure!(
            uuid.simple().to_string() == half.to_ascii_lowercase(),
            "artifact {}'s UUID is not the root hash's {} half {half}",
            art.name,
            if kind == "usr" { "first" } else { "second" }
        );
        let slots = a
            .empty_slots
            .iter()
            .filter(|s| Uuid::parse_str(&s.type_guid).is_ok_and(|t| t == ty));
        let slot = one(slots, &format!("empty slot of type {ty}"))?;
        ensure!(
            art.size <= slot.size,
            "artifact {} ({} bytes) does not fit slot {} ({} bytes)",
            art.name,
            art.size,
            slot.number,
            slot.size
        );
        writes.push(SlotWrite {
            artifact: art.name.clone(),
            size: art.size,
            number: slot.number,
            offset: slot.offset,
            label,
            uuid,
        });
    }
    let uki = one(b.artifacts.iter().filter(|x| x.kind == "uki"), "uki")?;
    ensure!(
        uki.name == format!("{id_v}.efi"),
        "the UKI artifact is {}, not {id_v}.efi",
        uki.name
    );
    let verity = writes.pop().context("two writes")?;
    let usr = writes.pop().context("two writes")?;
    Ok(Plan {
        usr,
        verity,
        uki: uki.name.clone(),
    })
}

/// The only item of `it`.
fn one<'a, T>(mut it: impl Iterator<Item = &'a T>, what: &str) -> Result<&'a T> {
    match (it.next(), it.next()) {
        (Some(x), None) => Ok(x),
        (None, _) => bail!("no {what}"),
        (Some(_), Some(_)) => bail!("more than one {what}"),
    }
}

/// `sgdisk -i N IMAGE`'s partition name and unique GUID.
fn gpt_entry(img: &Path, number: u32) -> Result<(String, Uuid)> {
    let text = output(cmd("sgdisk").arg(format!("-i{number}")).arg(img))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .with_context(|| format!("sgdisk -i{number} printed no `{key}`"))
    };
    let name = field("Partition name:")?.trim_matches('\'').to_string();
    let guid = Uuid::parse_str(field("Partition unique GUID:")?).context("sgdisk's GUID")?;
    Ok((name, guid))
}

/// Builds version 2 of the appliance (`fx/result-appliance-v2`) into `dir`; its
/// `OUT.sysupdate` directory and manifest facts (the image itself is removed: only the
/// artifacts are needed).
fn build_v2(fx: &Path, dir: &Path) -> Result<(PathBuf, Facts, Sysupdate)> {
    let img = dir.join("appliance-v2.img");
    util::run(
        cmd(boot::imgbuild_bin()?)
            .arg("appliance")
            .arg("--closure")
            .arg(fx.join("result-appliance-v2"))
            .arg("--store-root")
            .arg(fx)
            .arg("-o")
            .arg(&img),
    )?;
    let facts = Facts::of(&img)?;
    let _ = fs::remove_file(&img);
    let su = facts
        .sysupdate
        .clone()
        .context("version 2's manifest has no `sysupdate`")?;
    Ok((dir.join(&su.directory), facts, su))
}

/// `sha256sum -c SHA256SUMS` in `art`, and `veritysetup verify` of its usr pair with `root`.
fn check_artifacts(art: &Path, su: &Sysupdate, root: &str) -> Result<String> {
    util::need_tools(&[
        ("sha256sum", "coreutils"),
        ("veritysetup", "cryptsetup-bin"),
    ])?;
    let sums = output(
        cmd("sha256sum")
            .arg("-c")
            .arg("SHA256SUMS")
            .current_dir(art),
    )?;
    let ok = sums.lines().filter(|l| l.ends_with(": OK")).count();
    ensure!(
        ok == su.artifacts.len() && ok == sums.lines().count(),
        "sha256sum -c: {ok} OK of {} artifacts: {sums}",
        su.artifacts.len()
    );
    let by_kind = |k: &str| -> Result<PathBuf> {
        let a = one(su.artifacts.iter().filter(|a| a.kind == k), k)?;
        Ok(art.join(&a.name))
    };
    util::run(
        cmd("veritysetup")
            .arg("verify")
            .arg(by_kind("usr")?)
            .arg(by_kind("usr-verity")?)
            .arg(root),
    )
    .context("veritysetup verify of version 2's usr pair")?;
    Ok(format!(
        "sha256sum -c: {ok} OK; veritysetup verify: root hash {root}"
    ))
}

/// Writes version 2 (`art`, its sysupdate directory) into a copy of image `a_img`, as
/// sysupdate would; returns the updated image.
fn install(a_img: &Path, a: &Facts, art: &Path, p: &Plan, out: &Path) -> Result<(PathBuf, String)> {
    util::need_tools(&[("sgdisk", "gdisk"), ("mcopy", "mtools")])?;
    let img = out.join("appliance-ab-updated.img");
    util::run(cmd("cp").arg("--sparse=always").arg(a_img).arg(&img))?;
    for w in [&p.usr, &p.verity] {
        let (name, _) = gpt_entry(&img, w.number)?;
        ensure!(
            name == EMPTY,
            "slot {} is named {name:?}, not {EMPTY:?}",
            w.number
        );
        let mut from = fs::File::open(art.join(&w.artifact))?;
        let mut to = fs::OpenOptions::new().write(true).open(&img)?;
        to.seek(SeekFrom::Start(w.offset))?;
        let n = std::io::copy(&mut from, &mut to)
            .with_context(|| format!("writing {} into slot {}", w.artifact, w.number))?;
        ensure!(
            n == w.size,
            "{} has {n} bytes, its manifest says {}",
            w.artifact,
            w.size
        );
        util::run(
            cmd("sgdisk")
                .arg(format!("--change-name={}:{}", w.number, w.label))
                .arg(format!("--partition-guid={}:{}", w.number, w.uuid))
                .arg(&img),
        )?;
        ensure!(
            gpt_entry(&img, w.number)? == (w.label.clone(), w.uuid),
            "sgdisk did not rename slot {}",
            w.number
        );
    }
    let fat = format!("{}@@{}", img.display(), a.esp_offset);
    util::run(
        cmd("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &fat])
            .arg(art.join(&p.uki))
            .arg(format!("::/{}", p.uki_on_esp(NEW_UKI_TRIES))),
    )?;
    // A stays bootable: its UKI is still on the ESP and its pair keeps its names.
    let a_uki = a.uki.as_deref().context("version 1 has no UKI")?;
    ukis_on_esp(&img, a.esp_offset, &[a_uki, &p.uki_on_esp(NEW_UKI_TRIES)])?;
    let a_usr = gpt_entry(&img, a.verity.data.number)?;
    // sysupdate leaves loader.conf alone: its `default` decides whether systemd-boot takes
    // the newest UKI (none, or a glob matching it) or keeps booting version 1.
    let conf = output(cmd("mtype").env("MTOOLS_SKIP_CHECK", "1").args([
        "-i",
        &fat,
        "::/loader/loader.conf",
    ]))?;
    let default = conf
        .lines()
        .find(|l| l.starts_with("default"))
        .unwrap_or("no default");
    Ok((
        img,
        format!(
            "slots {}={} {}={} and {} written; A ({} {:?}) and {a_uki} kept; loader.conf: {default}",
            p.usr.number,
            p.usr.label,
            p.verity.number,
            p.verity.label,
            p.uki_on_esp(NEW_UKI_TRIES),
            a.verity.data.number,
            a_usr.0
        ),
    ))
}

/// Checks that each of `paths` (`EFI/Linux/...`) is on the ESP of `img` at `esp`.
fn ukis_on_esp(img: &Path, esp: u64, paths: &[&str]) -> Result<()> {
    let listing = output(
        cmd("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-b")
            .arg("-i")
            .arg(format!("{}@@{esp}", img.display()))
            .arg("::/EFI/Linux"),
    )?;
    for p in paths {
        let want = format!("::/{p}");
        ensure!(
            listing.lines().any(|l| l.trim() == want),
            "{want} is not on the ESP: {listing}"
        );
    }
    Ok(())
}

/// The A->B update steps: `a` is version 1's image and facts, `info2` version 2's toplevel.
/// `imgbuild inspect --json` of the updated disk: the NixOS system's store is slot B's (the
/// newest version), and each verity pair is checked on its own slot, every claim matching
/// (the GPT UUIDs, and the UKI naming that slot).
fn inspect_updated(img: &Path, a: &Facts, p: &Plan, b_root: &str) -> Result<String> {
    let out = output(
        cmd(boot::imgbuild_bin()?)
            .arg("inspect")
            .arg("--json")
            .arg(img),
    )?;
    let j: serde_json::Value = serde_json::from_str(&out).context("inspect --json")?;
    let store = j["nixos"]["store_partition"].as_u64();
    ensure!(
        store == Some(u64::from(p.usr.number)),
        "inspect reads the store from partition {store:?}, not slot B's {}",
        p.usr.number
    );
    let pairs = j["verity"].as_array().context("inspect: no verity pairs")?;
    let slots = [
        (
            a.verity.hash.number,
            a.verity.data.number,
            a.verity.root_hash.as_str(),
        ),
        (p.verity.number, p.usr.number, b_root),
    ];
    for (hash, data, root) in slots {
        let pair = pairs
            .iter()
            .find(|v| v["hash_partition"].as_u64() == Some(u64::from(hash)))
            .with_context(|| format!("inspect: no verity pair of hash partition {hash}"))?;
        ensure!(
            pair["data_partition"].as_u64() == Some(u64::from(data))
                && pair["root_hash"].as_str() == Some(root)
                && pair["hash_area"] == "matches",
            "inspect: hash partition {hash} is not checked against data partition {data} with \
             root hash {root}: {pair}"
        );
        let claims = pair["claims"].as_array().context("inspect: no claims")?;
        ensure!(
            !claims.is_empty() && claims.iter().all(|c| c["matches"] == true),
            "inspect: a claim on pair {hash}/{data} does not match: {pair}"
        );
    }
    Ok(format!(
        "nixos on partition {} with its store on {}; pairs {}->{} and {}->{} match",
        j["nixos"]["partition"],
        p.usr.number,
        a.verity.hash.number,
        a.verity.data.number,
        p.verity.number,
        p.usr.number
    ))
}

pub(super) fn ab_update(
    run: &mut Run,
    fx: &Path,
    (a_img, a): (&Path, &Facts),
    info2: &FixtureInfo,
) {
    let dir = run.out.join("appliance-update");
    let built = run.step(
        "A->B: imgbuild appliance version 2 (sysupdate artifacts)",
        || {
            fs::create_dir_all(&dir)?;
            let (art, facts, su) = build_v2(fx, &dir)?;
            let a_su = a
                .sysupdate
                .as_ref()
                .context("version 1's manifest has no `sysupdate`")?;
            let p = plan(a_su, &su, &facts.verity.root_hash)?;
            let note = format!("{} artifacts in {}", su.artifacts.len(), art.display());
            Ok(((art, facts, su, p), note))
        },
    );
    let Some((art, b, su, p)) = built else {
        return;
    };
    let checked = run.step(
        "A->B: version 2's artifacts: sha256sum -c SHA256SUMS, veritysetup verify",
        || Ok(((), check_artifacts(&art, &su, &b.verity.root_hash)?)),
    );
    if checked.is_none() {
        return;
    }
    let Some(img) = run.step(
        "A->B: version 2 written into version 1's empty B slots (as sysupdate would)",
        || install(a_img, a, &art, &p, &dir),
    ) else {
        return;
    };
    run.step(
        "A->B: imgbuild inspect reads the updated disk as it boots (store from slot B)",
        || Ok(((), inspect_updated(&img, a, &p, &b.verity.root_hash)?)),
    );
    let want = [
        format!(
            "verity: data /dev/vda{}, hash /dev/vda{}",
            p.usr.number, p.verity.number
        ),
        "is not registered in /nix/var/nix/db/db.sqlite (the store was updated".to_string(),
    ];
    // Writable: systemd-boot's boot counting renames the new UKI on the ESP.
    let booted = run.boot_appliance(
        "A->B: boot the updated appliance: systemd-boot picks version 2, store pair B",
        &img,
        info2,
        Expect {
            root_hash: &b.verity.root_hash,
            console: &want,
            writable: true,
        },
    );
    if booted.is_some() {
        run.step(
            "A->B: systemd-boot counted the try of version 2 (+3-0 -> +2-1), version 1 kept",
            || {
                let a_uki = a.uki.as_deref().context("version 1 has no UKI")?;
                let tried = p.uki_on_esp(TRIED_ONCE);
                ukis_on_esp(&img, a.esp_offset, &[a_uki, &tried])?;
                Ok(((), format!("{tried} and {a_uki} on the ESP")))
            },
        );
    }
    let _ = fs::remove_file(&img);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT2: &str = "0123456789abcdef0123456789abcdeffedcba9876543210fedcba9876543210";

    fn sysupdate(version: &str, artifacts: serde_json::Value) -> Sysupdate {
        serde_json::from_value(serde_json::json!({
            "image_id": "imgbuild-fixture",
            "version": version,
            "directory": "appliance.img.sysupdate",
            "artifacts": artifacts,
            "empty_slots": [
                {"name": "store-verity-b", "number": 4, "offset": 700, "size": 100,
                 "type": "77ff5f63-e7b6-4633-acf4-1565b864c0e6", "of": "store-verity"},
                {"name": "store-b", "number": 5, "offset": 800, "size": 1000,
                 "type": "8484680C-9521-48C6-9C11-B0720656F69E", "of": "store"}
            ]
        }))
        .expect("the contract's sysupdate section parses")
    }

    fn v2_artifacts(usr_size: u64) -> serde_json::Value {
        serde_json::json!([
            {"name": "imgbuild-fixture_2_01234567-89ab-cdef-0123-456789abcdef.usr.raw",
             "kind": "usr", "size": usr_size, "sha256": "aa"},
            {"name": "imgbuild-fixture_2_fedcba98-7654-3210-fedc-ba9876543210.usr-verity.raw",
             "kind": "usr-verity", "size": 100, "sha256": "bb"},
            {"name": "imgbuild-fixture_2.efi", "kind": "uki", "size": 5, "sha256": "cc"}
        ])
    }

    #[test]
    fn plan_writes_the_b_slots_as_sysupdate_names_them() {
        let a = sysupdate("1", serde_json::json!([]));
        let b = sysupdate("2", v2_artifacts(1000));
        let p = plan(&a, &b, ROOT2).expect("plan");
        assert_eq!(
            p,
            Plan {
                usr: SlotWrite {
                    artifact: "imgbuild-fixture_2_01234567-89ab-cdef-0123-456789abcdef.usr.raw"
                        .into(),
                    size: 1000,
                    number: 5,
                    offset: 800,
                    label: "imgbuild-fixture_2".into(),
                    uuid: uuid::uuid!("01234567-89ab-cdef-0123-456789abcdef"),
                },
                verity: SlotWrite {
                    artifact:
                        "imgbuild-fixture_2_fedcba98-7654-3210-fedc-ba9876543210.usr-verity.raw"
                            .into(),
                    size: 100,
                    number: 4,
                    offset: 700,
                    label: "imgbuild-fixture_2_verity".into(),
                    uuid: uuid::uuid!("fedcba98-7654-3210-fedc-ba9876543210"),
                },
                uki: "imgbuild-fixture_2.efi".into(),
            }
        );
        assert_eq!(
            p.uki_on_esp(NEW_UKI_TRIES),
            "EFI/Linux/imgbuild-fixture_2+3-0.efi"
        );
    }

    #[test]
    fn plan_refuses_what_sysupdate_could_not_install() {
        let a = sysupdate("1", serde_json::json!([]));
        let err =
            |b: &Sysupdate, root: &str| format!("{:#}", plan(&a, b, root).expect_err("refused"));
        // too big for its slot
        let e = err(&sysupdate("2", v2_artifacts(1001)), ROOT2);
        assert!(e.contains("does not fit slot 5"), "{e}");
        // the same version
        assert!(err(&sysupdate("1", v2_artifacts(10)), ROOT2).contains("both images are version 1"));
        // UUIDs that are not the root hash's halves
        let other = "f".repeat(64);
        assert!(err(&sysupdate("2", v2_artifacts(10)), &other).contains("first half"));
        // a usr artifact named without a UUID
        let mut arts = v2_artifacts(10);
        arts[0]["name"] = "imgbuild-fixture_2.usr.raw".into();
        let e = err(&sysupdate("2", arts), ROOT2);
        assert!(
            e.contains("is not named imgbuild-fixture_2_<uuid>.usr.raw"),
            "{e}"
        );
        // no UKI
        let mut arts = v2_artifacts(10);
        arts.as_array_mut().expect("array").pop();
        assert!(err(&sysupdate("2", arts), ROOT2).contains("no uki"));
        // a root hash that is not one
        let e = err(&sysupdate("2", v2_artifacts(10)), &"é".repeat(32));
        assert!(e.contains("is not 64 hex digits"), "{e}");
        // another image id
        let mut b = sysupdate("2", v2_artifacts(10));
        b.image_id = "other".into();
        assert!(err(&b, ROOT2).contains("image ids differ"));
    }
}
