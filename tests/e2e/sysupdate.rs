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
