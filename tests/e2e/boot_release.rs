//! The boot files follow the closure's own NixOS release: the demo (24.05) keeps generation
//! names; a copy of it made a 26.11 closure (by the module's `org.imgbuild.v1` settings, or
//! by its `nixos-version` alone) gets content-hash entries, with a try counter when boot
//! counting is on, which `imgbuild inspect` shows. The entry's hash is checked with sha256sum.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;

/// A writable copy of the demo closure in `dir`; returns it and its toplevel's directory.
fn demo_copy(dir: &Path) -> (PathBuf, PathBuf) {
    let copy = dir.join("demo");
    ok(Command::new("cp").arg("-a").arg(demo()).arg(&copy));
    ok(Command::new("chmod").args(["-R", "u+w"]).arg(&copy));
    let top = std::fs::read_link(copy.join("result")).unwrap();
    let top = copy.join(top.strip_prefix("/").unwrap());
    (copy, top)
}

/// Builds raw-efi from the closure at `root`: (manifest, stderr).
fn build(root: &Path, out: &Path) -> (Value, String) {
    let mut args = closure_args("raw-efi", root, out);
    args.push("--json".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = ok(&mut imgbuild(&refs));
    (
        serde_json::from_slice(&o.stdout).unwrap(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn cat(img: &Path, path: &str) -> Vec<u8> {
    ok(&mut imgbuild(&["cat", &img.display().to_string(), path])).stdout
}

#[test]
fn the_demo_is_2405_and_says_what_it_assumed() {
    let t = tempfile::tempdir().unwrap();
    let (m, err) = build(&demo(), &t.path().join("a.img"));
    assert_eq!(m["boot"]["release"], "24.05");
    assert_eq!(m["boot"]["release_from"], "nixos-version");
    assert_eq!(m["boot"]["entry"], "loader/entries/nixos-generation-1.conf");
    let assumed = m["boot"]["assumed"].as_str().unwrap();
    assert_eq!(
        assumed,
        "no org.imgbuild.v1.bootloader in boot.json; assuming NixOS 24.05 defaults from \
         nixos-version `24.05.20240601.b3b2b28`"
    );
    assert!(err.contains(&format!("boot: {assumed}\n")), "{err}");
}

#[test]
fn a_2611_closure_gets_a_counted_content_hash_entry() {
    let t = tempfile::tempdir().unwrap();
    let (root, top) = demo_copy(t.path());
    let bj = top.join("boot.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&bj).unwrap()).unwrap();
    doc["org.imgbuild.v1"] = json!({
        "release": "26.11",
        "bootloader": {
            "type": "systemd-boot", "timeout": null, "editor": false, "consoleMode": "keep",
            "rebootForBitlocker": false, "distroName": "NixOS", "installDeviceTree": false,
            "bootCounting": { "enable": true, "tries": 3 }
        }
    });
    // A specialisation: its own entry, counted too, which loader.conf does not prefer.
    let mut alt = json!({
        "org.nixos.bootspec.v1": doc["org.nixos.bootspec.v1"].clone(),
        "org.nixos.specialisation.v1": {}
    });
    let alt_top = "/nix/store/11111111111111111111111111111111-nixos-system-alt";
    alt["org.nixos.bootspec.v1"]["toplevel"] = json!(alt_top);
    alt["org.nixos.bootspec.v1"]["init"] = json!(format!("{alt_top}/init"));
    doc["org.nixos.specialisation.v1"] = json!({ "alt": alt });
    std::fs::write(&bj, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let img = t.path().join("c.img");
    let (m, err) = build(&root, &img);
    assert_eq!(m["boot"]["release"], "26.11");
    assert_eq!(m["boot"]["release_from"], "boot.json");
    assert_eq!(m["boot"]["boot_counting"], 3);
    assert!(m["boot"].get("assumed").is_none(), "{}", m["boot"]);
    assert!(!err.contains("boot: "), "{err}");

    // The entry's name is the SHA-256 of its bytes, plus the counter.
    let entry = m["boot"]["entry"].as_str().unwrap();
    let name = entry.strip_prefix("loader/entries/").unwrap();
    let hash = name
        .strip_prefix("nixos-")
        .and_then(|n| n.strip_suffix("+3.conf"))
        .unwrap_or_else(|| panic!("{name}"));
    let text = cat(&img, &format!("1:/{entry}"));
    assert_eq!(sha256_of(&text), hash);
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.starts_with("title NixOS\nversion Generation 1 ")
            && text.ends_with("\nsort-key nixos"),
        "{text:?}"
    );
    assert_eq!(
        String::from_utf8(cat(&img, "1:/loader/loader.conf")).unwrap(),
        format!(
            "timeout menu-force\npreferred nixos-{hash}.conf\ndefault nixos-*\neditor 0\n\
             console-mode keep\n"
        )
    );

    // inspect: the counter, the id, and the entry systemd-boot picks.
    let o = ok(&mut imgbuild(&[
        "inspect",
        "--json",
        &img.display().to_string(),
    ]));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let sb = &r["boot"]["systemd_boot"][0];
    assert_eq!(sb["preferred"], format!("nixos-{hash}.conf"));
    assert_eq!(sb["default"], "nixos-*");
    let entries = sb["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{sb}");
    let spec = entries.iter().find(|e| e["file"] != name).unwrap();
    assert_eq!(spec["title"], "NixOS (alt)");
    assert_eq!(
        (&spec["tries_left"], &spec["default"]),
        (&json!(3), &json!(false))
    );
    let e = entries.iter().find(|e| e["file"] == name).unwrap();
    assert_eq!(e["file"], name);
    assert_eq!(e["id"], format!("nixos-{hash}.conf"));
    assert_eq!((&e["tries_left"], &e["tries_done"]), (&json!(3), &json!(0)));
    assert_eq!(e["default"], true);
    let text = stdout(&mut imgbuild(&["inspect", &img.display().to_string()]));
    for want in [
        format!("* {name}: NixOS"),
        format!("tries    3 left, 0 done; id nixos-{hash}.conf"),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn a_2611_nixos_version_without_the_module_assumes_its_defaults() {
    let t = tempfile::tempdir().unwrap();
    let (root, top) = demo_copy(t.path());
    std::fs::write(top.join("nixos-version"), "26.11.20261201.abcdef0").unwrap();
    let img = t.path().join("d.img");
    let (m, err) = build(&root, &img);
    assert_eq!(m["boot"]["release"], "26.11");
    assert!(
        err.contains(
            "boot: no org.imgbuild.v1.bootloader in boot.json; assuming NixOS 26.11 defaults \
             from nixos-version `26.11.20261201.abcdef0`"
        ),
        "{err}"
    );
    let entry = m["boot"]["entry"].as_str().unwrap();
    let hash = entry
        .strip_prefix("loader/entries/nixos-")
        .and_then(|n| n.strip_suffix(".conf"))
        .unwrap_or_else(|| panic!("{entry}"));
    assert_eq!(hash.len(), 64, "no counter without the module: {entry}");
    assert_eq!(sha256_of(&cat(&img, &format!("1:/{entry}"))), hash);
    assert_eq!(
        String::from_utf8(cat(&img, "1:/loader/loader.conf")).unwrap(),
        format!("timeout 5\ndefault nixos-{hash}.conf\nconsole-mode keep\n")
    );
}
