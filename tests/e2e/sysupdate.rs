//! A/B updates (issue 26 step 4): `appliance` writes, beside the image, the version's
//! systemd-sysupdate artifacts (`OUT.sysupdate/`): each listed in `SHA256SUMS` and matching
//! it (`sha256sum -c`), the partition artifacts named with the partition UUIDs (what
//! sysupdate's `@u` sets) and passing `veritysetup verify`, each byte for byte what the image
//! holds in slot A (and the UKI on the ESP); the B slots empty; another version gets other
//! names and another root hash; a toplevel that is no appliance, and an artifacts directory
//! holding foreign files, are refused with nothing written.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::*;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn build(root: &Path, out: &Path) -> Value {
    let mut args = closure_args("appliance", root, out);
    args.push("--json".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_slice(&ok(&mut imgbuild(&refs)).stdout).unwrap()
}

/// `len` bytes of `file` at `offset`.
fn bytes_at(file: &Path, offset: u64, len: u64) -> Vec<u8> {
    let f = std::fs::File::open(file).unwrap();
    let mut b = vec![0u8; usize::try_from(len).unwrap()];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, offset).unwrap();
    b
}

#[test]
fn a_version_s_artifacts_match_sha256sums_verity_and_the_image() {
    let t = tempfile::tempdir().unwrap();
    let root = demo_appliance(t.path(), "1");
    let img = t.path().join("app.img");
    let m = build(&root, &img);
    let v = &m["verity"];
    let s = &m["sysupdate"];
    assert_eq!(
        (s["image_id"].as_str(), s["version"].as_str()),
        (Some("demo"), Some("1"))
    );
    assert_eq!(s["directory"], "app.img.sysupdate");
    let dir = t.path().join("app.img.sysupdate");

    // The names: sysupdate's patterns `demo_@v_@u.usr.raw`, `demo_@v_@u.usr-verity.raw`,
    // `demo_@v.efi`, the UUIDs those of slot A's partitions (the root hash's halves).
    let (data_uuid, hash_uuid) = (
        v["data"]["uuid"].as_str().unwrap(),
        v["hash"]["uuid"].as_str().unwrap(),
    );
    let usr = format!("demo_1_{data_uuid}.usr.raw");
    let usr_verity = format!("demo_1_{hash_uuid}.usr-verity.raw");
    let mut listed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let mut want = vec![
        "SHA256SUMS".to_string(),
        "demo_1.efi".into(),
        usr.clone(),
        usr_verity.clone(),
    ];
    want.sort();
    assert_eq!(listed, want);

    // SHA256SUMS: what sha256sum checks, and what the manifest lists.
    let c = ok(Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&dir));
    let out = String::from_utf8_lossy(&c.stdout);
    assert_eq!(out.matches(": OK").count(), 3, "{out}");
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    for a in s["artifacts"].as_array().unwrap() {
        let name = a["name"].as_str().unwrap();
        assert_eq!(
            sha256(&dir.join(name)),
            a["sha256"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            std::fs::metadata(dir.join(name)).unwrap().len(),
            u(&a["size"])
        );
        assert!(sums.contains(&format!("{}  {name}\n", a["sha256"].as_str().unwrap())));
    }

    // dm-verity: the pair verifies with the root hash, and is slot A's bytes.
    let root_hash = v["root_hash"].as_str().unwrap();
    ok(Command::new("veritysetup")
        .arg("verify")
        .arg(dir.join(&usr))
        .arg(dir.join(&usr_verity))
        .arg(root_hash));
    let data = std::fs::read(dir.join(&usr)).unwrap();
    assert_eq!(data.len() as u64, u(&v["data_blocks"]) * 4096);
    assert!(data == bytes_at(&img, u(&v["data"]["offset"]), data.len() as u64));
    let hash = std::fs::read(dir.join(&usr_verity)).unwrap();
    assert!(hash == bytes_at(&img, u(&v["hash"]["offset"]), hash.len() as u64));
    // The UKI: the ESP's, carrying this root hash.
    let esp = m["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ESP")
        .unwrap();
    let esp_img = t.path().join("esp.img");
    extract(&img, u(&esp["start"]), u(&esp["size"]), &esp_img);
    let on_esp = ok(Command::new("mtype")
        .arg("-i")
        .arg(&esp_img)
        .arg("::/EFI/Linux/demo_1.efi"))
    .stdout;
    assert!(on_esp == std::fs::read(dir.join("demo_1.efi")).unwrap());
    // loader.conf defaults to every version's UKI (the newest boots), not to this one's
    // name: sysupdate adds UKIs and never edits loader.conf.
    let conf = stdout(
        Command::new("mtype")
            .arg("-i")
            .arg(&esp_img)
            .arg("::/loader/loader.conf"),
    );
    assert!(conf.lines().any(|l| l == "default demo_*"), "{conf}");

    // The B slots: after their A slots, the same sizes, `_empty`, all zeros.
    let table = sfdisk_partitions(&img);
    let slots = s["empty_slots"].as_array().unwrap();
    let of: Vec<(&str, &str)> = slots
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["of"].as_str().unwrap()))
        .collect();
    assert_eq!(
        of,
        [("store-verity-b", "store-verity"), ("store-b", "store")]
    );
    for e in slots {
        let n = usize::try_from(u(&e["number"])).unwrap();
        assert_eq!(table[n - 1]["name"], "_empty");
        assert_eq!(u(&table[n - 1]["start"]) * 512, u(&e["offset"]));
        assert_eq!(table[n - 1]["type"], e["type"]);
        let first = bytes_at(&img, u(&e["offset"]), 1 << 20);
        assert!(first.iter().all(|&b| b == 0), "{} is not empty", e["name"]);
    }

    // Version 2 of the same system: other names, another root hash, other UUIDs.
    let t2 = tempfile::tempdir().unwrap();
    let root2 = demo_appliance(t2.path(), "2");
    let m2 = build(&root2, &t2.path().join("app.img"));
    assert_ne!(m2["verity"]["root_hash"], v["root_hash"]);
    let names2: Vec<&str> = m2["sysupdate"]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names2[0], "demo_2.efi");
    assert!(names2
        .iter()
        .any(|n| n.starts_with("demo_2_") && n.ends_with(".usr.raw")));
    assert!(!names2.iter().any(|n| n.contains(data_uuid)));

    // A rebuild replaces the directory of artifacts.
    let again = build(&root, &img);
    assert_eq!(again["sysupdate"]["artifacts"], s["artifacts"]);
}

#[test]
fn no_appliance_toplevel_or_a_foreign_directory_is_refused_with_nothing_written() {
    let t = tempfile::tempdir().unwrap();
    // The demo as committed: a systemd-boot system, but no appliance.
    let img = t.path().join("a.img");
    let args = demo_args("appliance", &img);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = fails(&mut imgbuild(&refs));
    assert!(e.contains("no \"org.imgbuild.v1\".appliance record"), "{e}");
    assert!(e.contains("imgbuild.format = \"appliance\""), "{e}");
    assert!(!img.exists() && !t.path().join("a.img.sysupdate").exists());

    // An appliance whose initrd cannot open the store.
    let root = demo_appliance(t.path(), "1");
    let top = std::fs::read_link(root.join("result")).unwrap();
    let bj = root.join(top.strip_prefix("/").unwrap()).join("boot.json");
    let text = std::fs::read_to_string(&bj).unwrap();
    std::fs::write(
        &bj,
        text.replace("\"dmVerity\": true", "\"dmVerity\": false"),
    )
    .unwrap();
    let args = closure_args("appliance", &root, &img);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = fails(&mut imgbuild(&refs));
    assert!(
        e.contains("boot.initrd.systemd.dmVerity.enable = true"),
        "{e}"
    );
    std::fs::write(&bj, text).unwrap();

    // OUT.sysupdate holding a file of the user's: refused before anything is written.
    let dir = t.path().join("a.img.sysupdate");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let e = fails(&mut imgbuild(&refs));
    assert!(
        e.contains("notes.txt") && e.contains("not a sysupdate artifact"),
        "{e}"
    );
    assert!(!img.exists() && dir.join("notes.txt").exists());
}

/// Version 2's artifacts (in `art`) installed into the empty B slots of `img` (version 1,
/// manifest `m1`) as systemd-sysupdate installs them: the bytes, then the slot's GPT name and
/// GUID (sgdisk), and the UKI on the ESP with its boot counter (mtools).
fn install_v2(img: &Path, m1: &Value, m2: &Value, art: &Path) {
    let slots = m1["sysupdate"]["empty_slots"].as_array().unwrap();
    let v2 = &m2["verity"];
    for (of, side, suffix, label) in [
        ("store", "data", "usr.raw", "demo_2"),
        ("store-verity", "hash", "usr-verity.raw", "demo_2_verity"),
    ] {
        let slot = slots.iter().find(|e| e["of"] == of).unwrap();
        let uuid = v2[side]["uuid"].as_str().unwrap();
        let bytes = std::fs::read(art.join(format!("demo_2_{uuid}.{suffix}"))).unwrap();
        assert!(bytes.len() as u64 <= u(&slot["size"]));
        let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes, u(&slot["offset"])).unwrap();
        let n = u(&slot["number"]);
        ok(Command::new("sgdisk")
            .arg(format!("--change-name={n}:{label}"))
            .arg(format!("--partition-guid={n}:{uuid}"))
            .arg(img));
    }
    let esp = m1["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ESP")
        .unwrap();
    ok(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", img.display(), u(&esp["start"])))
        .arg(art.join("demo_2.efi"))
        .arg("::/EFI/Linux/demo_2+3-0.efi"));
}

/// The `(hash, data)` partition numbers of the appliance's verity pair (slot A) and of the
/// B slots (from the manifest).
fn slots(m: &Value) -> ((u64, u64), (u64, u64)) {
    let v = &m["verity"];
    let b = m["sysupdate"]["empty_slots"].as_array().unwrap();
    let of = |name: &str| u(&b.iter().find(|e| e["of"] == name).unwrap()["number"]);
    (
        (u(&v["hash"]["number"]), u(&v["data"]["number"])),
        (of("store-verity"), of("store")),
    )
}

#[test]
fn inspect_reads_the_appliance_as_it_boots_before_and_after_an_a_b_update() {
    let t = tempfile::tempdir().unwrap();
    let (d1, d2) = (t.path().join("v1"), t.path().join("v2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let img = d1.join("app.img");
    let m1 = build(&demo_appliance(&d1, "1"), &img);
    let m2 = build(&demo_appliance(&d2, "2"), &d2.join("app.img"));
    let ((hash_a, data_a), (hash_b, data_b)) = slots(&m1);
    let root_part = m1["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "root")
        .map(|p| u(&p["number"]))
        .unwrap();

    // Version 1: the ext4 root with slot A's store at /usr and /nix/store, its Nix database
    // (on the root) registering the store (on slot A).
    let j = inspect_json(&img);
    let n = &j["nixos"];
    assert_eq!(
        (u(&n["partition"]), u(&n["store_partition"])),
        (root_part, data_a),
        "{n}"
    );
    assert_eq!(n["toplevel_from"], "profile", "{n}");
    let reg = &n["registered"][0];
    assert_eq!(reg["source"], "/nix/var/nix/db/db.sqlite", "{n}");
    assert!(
        u(&reg["count"]) > 10 && reg["toplevel_registered"] == true,
        "{n}"
    );
    assert_eq!(u(&reg["missing_from_store"]), 0, "{n}");
    assert_eq!(u(&n["store"]["paths"]), u(&reg["count"]), "{n}");
    let text = stdout(&mut imgbuild(&["inspect", &img.display().to_string()]));
    assert!(
        text.contains(&format!(
            "nixos (partition {root_part}, its store on partition {data_a} mounted at /usr)"
        )),
        "{text}"
    );
    // Paths through the root's symlinks into the store, and the mount points.
    let version = stdout(&mut imgbuild(&[
        "cat",
        &img.display().to_string(),
        "/nix/var/nix/profiles/system/nixos-version",
    ]));
    assert_eq!(version, n["version"].as_str().unwrap());
    let usr = stdout(&mut imgbuild(&["ls", &img.display().to_string(), "/usr"]));
    assert!(usr.trim_end().ends_with(" nix"), "{usr}");

    // After the update, the B slots hold version 2 (the newest): inspect reads its store,
    // and pairs each verity partition with its own slot.
    let art = d2.join("app.img.sysupdate");
    install_v2(&img, &m1, &m2, &art);
    let j = inspect_json(&img);
    assert_eq!(u(&j["nixos"]["store_partition"]), data_b, "{}", j["nixos"]);
    let pairs = j["verity"].as_array().unwrap();
    let got: Vec<(u64, u64)> = pairs
        .iter()
        .map(|p| (u(&p["hash_partition"]), u(&p["data_partition"])))
        .collect();
    assert_eq!(got, [(hash_a, data_a), (hash_b, data_b)]);
    let roots = [&m1["verity"]["root_hash"], &m2["verity"]["root_hash"]];
    for (p, want) in pairs.iter().zip(roots) {
        assert_eq!(&p["root_hash"], want, "{p}");
        assert_eq!(p["hash_area"], "matches", "{p}");
        // the partition UUIDs and the one UKI naming this slot, each matching
        let claims = p["claims"].as_array().unwrap();
        assert_eq!(claims.len(), 2, "{p}");
        assert!(claims.iter().all(|c| c["matches"] == true), "{p}");
    }
}
