//! `appliance` from a copy of the committed demo closure made an appliance
//! ([`demo_appliance`]: a UKI stub and the module's record): the dm-verity store checked with
//! `veritysetup verify` on the partitions cut out of the image (and failing once a byte is
//! flipped), the table with sgdisk and sfdisk, the store with unsquashfs, the root with
//! e2fsck and debugfs, the ESP with fsck.fat and mtools; the same bytes for any thread count
//! and working directory; the A/B layout (slot A named for systemd-sysupdate, empty B slots)
//! and the version's sysupdate artifacts beside the image.

use crate::common::*;
use imgbuild_verity::RootHash;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn u(v: &Value) -> u64 {
    v.as_u64().expect("a number")
}

/// The manifest's partition named `name`.
fn part<'a>(m: &'a Value, name: &str) -> &'a Value {
    m["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no partition `{name}` in the manifest"))
}

/// `veritysetup verify DATA HASH ROOT` (its exit status, its output).
fn verify(data: &Path, hash: &Path, root: &str) -> (bool, String) {
    let o = Command::new("veritysetup")
        .arg("verify")
        .arg(data)
        .arg(hash)
        .arg(root)
        .output()
        .expect("veritysetup runs (apt-get install cryptsetup-bin)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// A copy of `src` with the byte at `at` inverted.
fn flipped(src: &Path, at: u64, dest: &Path) {
    let mut bytes = std::fs::read(src).unwrap();
    let i = usize::try_from(at).unwrap();
    bytes[i] = !bytes[i];
    std::fs::write(dest, bytes).unwrap();
}

fn root_hash_bytes(hex: &str) -> [u8; 32] {
    assert_eq!(hex.len(), 64, "{hex}");
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// `imgbuild appliance` of the closure at `root` to `out`, with `extra`: the manifest.
fn build_app(root: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = closure_args("appliance", root, out);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--json".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_slice(&ok(&mut imgbuild(&refs)).stdout).expect("--json prints the manifest")
}

#[test]
fn appliance_demo_verifies_and_every_tool_accepts_it() {
    let t = tempfile::tempdir().unwrap();
    let root_dir = demo_appliance(t.path(), "1");
    let img = t.path().join("app.img");
    let m = build_app(&root_dir, &img, &["-j", "1"]);
    let v = &m["verity"];
    let root = v["root_hash"].as_str().unwrap();
    assert_eq!(v["hash_algorithm"], "sha256");
    assert_eq!(v["salt"].as_str().unwrap().len(), 64, "a 32-byte salt");
    assert_eq!(v["command_line"][0], format!("usrhash={root}"));

    // The table: valid, the DPS types, the pair's UUIDs the root hash's halves (what
    // systemd-repart derives; imgbuild-verity's own test checks that against repart).
    let sg = stdout(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(sg.contains("No problems found"), "{sg}");
    let table = sfdisk_partitions(&img);
    let names: Vec<&str> = table.iter().map(|p| p["name"].as_str().unwrap()).collect();
    // Slot A named as systemd-sysupdate names a version's partitions, B slots `_empty`.
    assert_eq!(
        names,
        ["ESP", "demo_1_verity", "demo_1", "_empty", "_empty", "root"]
    );
    let types: Vec<&str> = table.iter().map(|p| p["type"].as_str().unwrap()).collect();
    let (usr, usr_verity) = (
        "8484680C-9521-48C6-9C11-B0720656F69E",
        "77FF5F63-E7B6-4633-ACF4-1565B864C0E6",
    );
    assert_eq!(
        types,
        [
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            usr_verity,
            usr,
            usr_verity,
            usr,
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        ]
    );
    // Each B slot is as large as its A slot.
    assert_eq!(table[3]["size"], table[1]["size"]);
    assert_eq!(table[4]["size"], table[2]["size"]);
    let uuids = RootHash(root_hash_bytes(root)).partition_uuids();
    let upper = |u: uuid::Uuid| u.to_string().to_uppercase();
    assert_eq!(table[2]["uuid"], upper(uuids.data));
    assert_eq!(table[1]["uuid"], upper(uuids.verity));
    assert_eq!(v["data"]["uuid"], uuids.data.to_string());
    assert_eq!(v["hash"]["uuid"], uuids.verity.to_string());
    for (side, name) in [("data", "store"), ("hash", "store-verity")] {
        assert_eq!(v[side]["name"], name);
        let p = &m["partitions"][usize::try_from(u(&v[side]["number"])).unwrap() - 1];
        assert_eq!(v[side]["offset"], p["start"]);
        assert_eq!(v[side]["size"], p["size"]);
        let n = usize::try_from(u(&v[side]["number"])).unwrap();
        assert_eq!(u(&table[n - 1]["start"]) * 512, u(&p["start"]));
    }
    // Sizes: the protected data is the store image to 4 KiB, then to the 1 MiB alignment;
    // the data partition has 512 MiB more (the format's `free`: room for a later version),
    // the hash partition the hash area and 8 MiB, to the alignment.
    let image_size = u(&v["store_image_size"]);
    let data_size = u(&v["data_blocks"]) * 4096;
    assert_eq!(
        data_size,
        (image_size.div_ceil(4096) * 4096).div_ceil(1 << 20) << 20
    );
    assert_eq!(u(&v["data"]["size"]), data_size + (512 << 20));
    let area = imgbuild_verity::hash_area_size(data_size).unwrap();
    assert_eq!(
        u(&v["hash"]["size"]),
        (area + (8 << 20)).div_ceil(1 << 20) << 20
    );

    // veritysetup verify on the partitions cut out of the image.
    let data = t.path().join("data.img");
    let hash = t.path().join("hash.img");
    extract(&img, u(&v["data"]["offset"]), data_size, &data);
    extract(&img, u(&v["hash"]["offset"]), area, &hash);
    let (ok_, out) = verify(&data, &hash, root);
    assert!(ok_, "veritysetup verify refused our partitions: {out}");
    let dump = stdout(Command::new("veritysetup").arg("dump").arg(&hash));
    assert!(dump.contains(v["salt"].as_str().unwrap()), "{dump}");
    assert!(
        dump.contains(v["superblock_uuid"].as_str().unwrap()),
        "{dump}"
    );
    // One flipped byte, in the store image or in the zeros after it: refused.
    let bad = t.path().join("bad.img");
    for at in [100, image_size, data_size - 1] {
        flipped(&data, at, &bad);
        let (ok_, out) = verify(&bad, &hash, root);
        assert!(
            !ok_,
            "a flipped byte at {at} passed veritysetup verify: {out}"
        );
    }

    // The store: exactly the closure under nix/store.
    let l = stdout(Command::new("unsquashfs").arg("-l").arg(&data));
    let mut top: Vec<&str> = l
        .lines()
        .filter_map(|p| p.strip_prefix("squashfs-root/nix/store/"))
        .filter(|p| !p.contains('/'))
        .collect();
    top.sort_unstable();
    assert_eq!(top, closure_names(&demo()));
    assert!(
        l.lines()
            .filter(|p| p
                .strip_prefix("squashfs-root/")
                .is_some_and(|r| !r.contains('/')))
            .eq(["squashfs-root/nix"]),
        "only nix/ at the top: {l}"
    );

    // The root: clean, an empty /nix/store, the database and the profile.
    let r = part(&m, "root");
    let rootfs = t.path().join("root.img");
    extract(&img, u(&r["start"]), u(&r["size"]), &rootfs);
    ok(Command::new("e2fsck").arg("-fn").arg(&rootfs));
    let ls = stdout(
        Command::new("debugfs")
            .args(["-R", "ls -p /nix/store"])
            .arg(&rootfs),
    );
    let entries: Vec<&str> = ls
        .lines()
        .filter_map(|l| l.split('/').nth(5))
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(entries, [".", ".."], "/nix/store holds no store path: {ls}");
    for path in [
        "/nix/var/nix/db/db.sqlite",
        "/nix/var/nix/profiles/system-1-link",
        "/usr",
    ] {
        let s = stdout(
            Command::new("debugfs")
                .args(["-R", &format!("stat {path}")])
                .arg(&rootfs),
        );
        assert!(s.contains("Inode:"), "{path}: {s}");
    }

    // The ESP: clean, no type #1 entry, the UKI named for sysupdate, whose .cmdline ends
    // in usrhash=.
    let e = part(&m, "ESP");
    let esp = t.path().join("esp.img");
    extract(&img, u(&e["start"]), u(&e["size"]), &esp);
    ok(Command::new("fsck.fat").arg("-n").arg(&esp));
    assert!(m["boot"]["entry"].is_null(), "{}", m["boot"]);
    assert_eq!(m["boot"]["uki"]["path"], "EFI/Linux/demo_1.efi");
    let uki = ok(Command::new("mtype")
        .arg("-i")
        .arg(&esp)
        .arg("::/EFI/Linux/demo_1.efi"))
    .stdout;
    let needle = format!(" usrhash={root}");
    assert!(
        uki.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "the UKI's .cmdline has no `{needle}`"
    );
}

/// `imgbuild inspect --json IMG`'s only verity pair.
fn inspected_pair(img: &Path) -> Value {
    let o = ok(&mut imgbuild(&[
        "inspect",
        "--json",
        &img.display().to_string(),
    ]));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let pairs = r["verity"].as_array().expect("a verity list").clone();
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    pairs[0].clone()
}

/// A copy of `img` with the byte at `at` inverted, in place of a whole-image read.
fn flipped_image(img: &Path, at: u64, dest: &Path) {
    std::fs::copy(img, dest).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(dest)
        .unwrap();
    let mut b = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, at).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[!b[0]], at).unwrap();
}

#[test]
fn inspect_recomputes_the_root_hash_and_checks_the_disks_claims() {
    let t = tempfile::tempdir().unwrap();
    let root_dir = demo_appliance(t.path(), "1");
    let img = t.path().join("app.img");
    let m = build_app(&root_dir, &img, &[]);
    let v = &m["verity"];
    let root = v["root_hash"].as_str().unwrap();
    let p = inspected_pair(&img);
    assert_eq!(p["designator"], "usr");
    assert_eq!(p["hash_partition"], v["hash"]["number"]);
    assert_eq!(p["data_partition"], v["data"]["number"]);
    assert_eq!(
        p["root_hash"], root,
        "the recomputed root hash is the manifest's"
    );
    assert_eq!(p["hash_area"], "matches");
    let sb = &p["superblock"];
    assert_eq!(sb["salt"], v["salt"]);
    assert_eq!(sb["uuid"], v["superblock_uuid"]);
    assert_eq!(sb["data_blocks"], v["data_blocks"]);
    assert_eq!(
        (sb["hash_type"].as_u64(), sb["algorithm"].as_str()),
        (Some(1), Some("sha256"))
    );
    let claims: Vec<(&str, bool)> = p["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["source"].as_str().unwrap(),
                c["matches"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        claims,
        [("partition UUIDs", true), ("boot entry usrhash=", true)]
    );
    let text = stdout(&mut imgbuild(&["inspect", &img.display().to_string()]));
    assert!(
        text.contains(&format!("root hash   {root} (recomputed from the data)")),
        "{text}"
    );

    // A flipped byte in the store: another root hash, every claim now differs.
    let bad = t.path().join("bad.img");
    flipped_image(&img, u(&v["data"]["offset"]) + 100, &bad);
    let p = inspected_pair(&bad);
    assert_ne!(p["root_hash"], root);
    assert_eq!(
        p["hash_area"].as_str().unwrap().split(" at ").next(),
        Some("differs from the recomputed one")
    );
    assert!(
        p["claims"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["matches"] == false),
        "{p}"
    );
    // A flipped byte in the hash area's levels: the data's root hash, the area differs.
    let hash_at = u(&v["hash"]["offset"]) + 4096 + 5;
    flipped_image(&img, hash_at, &bad);
    let p = inspected_pair(&bad);
    assert_eq!(p["root_hash"], root);
    assert_eq!(
        p["hash_area"],
        "differs from the recomputed one at byte 4101"
    );
}

#[test]
fn appliance_is_the_same_for_any_threads_and_working_directory() {
    let t = tempfile::tempdir().unwrap();
    let root_dir = demo_appliance(t.path(), "1");
    let a = t.path().join("a.img");
    let ma = build_app(&root_dir, &a, &["-j", "1"]);
    // Three threads, a relative output path from another working directory.
    let other = t.path().join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    let mut args = closure_args("appliance", &root_dir, Path::new("b.img"));
    args.extend(["-j", "3", "--json"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = ok(imgbuild(&refs).current_dir(&other));
    let mb: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ma["verity"], mb["verity"]);
    assert_eq!(ma["sha256"], mb["sha256"]);
    assert_eq!(sha256(&other.join("b.img")), ma["sha256"].as_str().unwrap());
    // The store image was a temporary file beside the output: gone.
    let mut left: Vec<_> = std::fs::read_dir(&other)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["b.img", "b.img.bmap", "b.img.json", "b.img.sysupdate"]
    );
    assert_eq!(ma["sysupdate"]["artifacts"], mb["sysupdate"]["artifacts"]);
    // A dry run hashes the same store (its image in a temporary directory) and writes
    // nothing at the output path.
    let d = t.path().join("dry.img");
    let dry = build_app(&root_dir, &d, &["--dry-run"]);
    assert_eq!(dry["verity"], ma["verity"]);
    assert_eq!(dry["disk_size"], ma["disk_size"]);
    assert_eq!(
        dry["sysupdate"]["empty_slots"],
        ma["sysupdate"]["empty_slots"]
    );
    assert_eq!(dry["sysupdate"]["artifacts"], serde_json::json!([]));
    assert!(!d.exists() && !t.path().join("dry.img.store.tmp").exists());
    assert!(!t.path().join("dry.img.sysupdate").exists());
    // Another seed: another salt, so another root hash and other partition UUIDs.
    let c = t.path().join("c.img");
    let mc = build_app(&root_dir, &c, &["--seed", "other"]);
    assert_ne!(mc["verity"]["salt"], ma["verity"]["salt"]);
    assert_ne!(mc["verity"]["root_hash"], ma["verity"]["root_hash"]);
    assert_ne!(mc["verity"]["data"]["uuid"], ma["verity"]["data"]["uuid"]);
}

#[test]
fn store_level_sets_the_store_image_compression_and_only_where_there_is_one() {
    let t = tempfile::tempdir().unwrap();
    let root_dir = demo_appliance(t.path(), "1");
    let fast = build_app(
        &root_dir,
        &t.path().join("fast.img"),
        &["--store-level", "1"],
    );
    let best = build_app(&root_dir, &t.path().join("best.img"), &[]);
    // Another level, other bytes: another root hash; both verify (the artifacts).
    assert_ne!(fast["verity"]["root_hash"], best["verity"]["root_hash"]);
    for (m, name) in [(&fast, "fast.img"), (&best, "best.img")] {
        let dir = t.path().join(format!("{name}.sysupdate"));
        let art = |kind: &str| {
            let a = m["sysupdate"]["artifacts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["kind"] == kind)
                .unwrap()
                .clone();
            dir.join(a["name"].as_str().unwrap())
        };
        let (ok_, out) = verify(
            &art("usr"),
            &art("usr-verity"),
            m["verity"]["root_hash"].as_str().unwrap(),
        );
        assert!(ok_, "{name}: {out}");
    }
    // A format without a store image refuses it.
    let mut args = demo_args("raw-efi", &t.path().join("r.img"));
    args.extend(["--store-level", "3"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = fails(&mut imgbuild(&refs));
    assert!(
        e.contains("--store-level: format `raw-efi` has no store image"),
        "{e}"
    );
}
