//! Oracle tests: the boot files imgbuild writes, against what nixpkgs' own builders
//! (`systemd-boot-builder.py`, `extlinux-conf-builder.sh` of 24.05, 25.11 and 26.11) wrote for
//! the same toplevel. The builders' output is golden data under `fixtures/oracle/<release>/<case>/`
//! (made by `cargo xtask oracle`, see `fixtures/oracle/README.md`); each case here builds the
//! image from the same toplevel, reads the ESP (systemd-boot) or `/boot` (extlinux) back with
//! `imgbuild ls -R` / `imgbuild cat`, and requires the same tree: every file and directory,
//! the same names, sizes and SHA-256, except the build date and the `machine-id` line in text
//! files. The build date is made equal anyway: the image is built with `SOURCE_DATE_EPOCH`
//! set to the time the builder dated its entry, because 26.11 names entries by the SHA-256
//! of their text.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The golden data's format, shared with its writer, `cargo xtask oracle`.
#[path = "../../xtask/src/oracle/golden.rs"]
mod golden;

use golden::{is_text, Item};

fn oracle_dir() -> PathBuf {
    workspace().join(golden::DIR)
}

/// Drops `machine-id` lines and replaces `built on YYYY-MM-DD` by `built on DATE`.
fn normalise(text: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with("machine-id ") {
            continue;
        }
        match line.find(", built on ") {
            Some(i) if line.len() >= i + 21 => {
                let date_end = i + ", built on ".len() + 10;
                out.push_str(&line[..i]);
                out.push_str(", built on DATE");
                out.push_str(&line[date_end..]);
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// The demo store plus the case's paths (toplevel, device tree), copied into `dest/nix/store`.
fn assemble_store(base: &str, paths: &[Value], dest: &Path) {
    let store = dest.join("nix/store");
    std::fs::create_dir_all(&store).unwrap();
    let paths: Vec<&str> = paths
        .iter()
        .map(|p| p.as_str().expect("a store path"))
        .collect();
    let sources = golden::store_sources(&workspace(), base, &paths).unwrap();
    ok(Command::new("cp").arg("-a").args(sources).arg(&store));
}

/// The tree imgbuild wrote, read back from the image: path (relative to `root`) -> item, and
/// the text files' contents.
fn read_back(img: &Path, root: &str) -> (BTreeMap<String, Item>, BTreeMap<String, String>) {
    let ls = stdout(&mut imgbuild(&[
        "ls",
        "-R",
        &img.display().to_string(),
        root,
    ]));
    let prefix = root.rsplit_once(':').map_or(root, |(_, p)| p);
    let prefix = prefix.trim_end_matches('/').to_string() + "/";
    let mut items = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for line in ls.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 7, "unexpected ls line {line:?}");
        let path = f[6..].join(" ");
        let Some(rel) = path.strip_prefix(&prefix).filter(|r| !r.is_empty()) else {
            continue; // the root itself
        };
        if f[0].starts_with('d') {
            items.insert(rel.to_string(), Item::Dir);
        } else {
            let spec = format!("{}{rel}", root.trim_end_matches('/').to_string() + "/");
            let o = ok(&mut imgbuild(&["cat", &img.display().to_string(), &spec]));
            let size: u64 = f[3].parse().expect("a size");
            assert_eq!(size, o.stdout.len() as u64, "ls and cat disagree on {spec}");
            if is_text(rel) {
                texts.insert(
                    rel.to_string(),
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                );
            }
            items.insert(
                rel.to_string(),
                Item::File {
                    size,
                    sha256: sha256_of(&o.stdout),
                },
            );
        }
    }
    (items, texts)
}

/// Builds the case's image and lists every difference from the golden tree.
fn differences(id: &str) -> Vec<String> {
    let g = oracle_dir().join(id);
    let meta: Value = serde_json::from_slice(
        &std::fs::read(g.join("meta.json")).unwrap_or_else(|e| panic!("{id}/meta.json: {e}")),
    )
    .unwrap();
    let s = |k: &str| meta[k].as_str().unwrap_or_else(|| panic!("{id}: meta.{k}"));
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let paths = meta["oracle_store_paths"]
        .as_array()
        .unwrap_or_else(|| panic!("{id}: meta.oracle_store_paths"));
    assemble_store(s("base"), paths, &root);
    let img = t.path().join("disk.img");
    let epoch = meta["source_date_epoch"]
        .as_i64()
        .expect("meta.source_date_epoch")
        .to_string();
    let mut build = imgbuild(&[
        s("format"),
        "--closure",
        s("toplevel"),
        "--store-root",
        &root.display().to_string(),
        "--compress",
        "none",
        "-o",
        &img.display().to_string(),
    ]);
    build.env("SOURCE_DATE_EPOCH", &epoch);
    let out = build.output().expect("running imgbuild");
    if !out.status.success() {
        return vec![format!(
            "imgbuild {} failed: {}",
            s("format"),
            String::from_utf8_lossy(&out.stderr)
        )];
    }
    let (mut ours, our_texts) = read_back(&img, s("tree"));
    // Directories imgbuild makes there that the builder does not write (extlinux: the
    // FIRMWARE partition's mount point /boot/firmware), named in meta.json.
    if let Some(skip) = meta["not_from_builder"].as_array() {
        for n in skip.iter().filter_map(Value::as_str) {
            if matches!(ours.get(n), Some(Item::Dir)) {
                ours.retain(|p, _| p != n && !p.starts_with(&format!("{n}/")));
            }
        }
    }
    let theirs =
        golden::parse_listing(&std::fs::read_to_string(g.join("listing.txt")).unwrap()).unwrap();

    let mut diffs = Vec::new();
    for (p, item) in &theirs {
        match (item, ours.get(p)) {
            (_, None) => diffs.push(format!("missing in imgbuild's tree: {p} ({item:?})")),
            (Item::File { .. }, Some(o)) if is_text(p) => {
                let want = std::fs::read_to_string(g.join("tree").join(p))
                    .unwrap_or_else(|e| panic!("{id}/tree/{p}: {e}"));
                let got = our_texts.get(p).cloned().unwrap_or_default();
                if normalise(&want) != normalise(&got) || matches!(o, Item::Dir) {
                    diffs.push(format!(
                        "{p} differs:\n--- nixpkgs' builder\n{want}\n--- imgbuild\n{got}\n---"
                    ));
                }
            }
            (i, Some(o)) if i != o => {
                diffs.push(format!("{p}: builder {i:?}, imgbuild {o:?}"));
            }
            _ => {}
        }
    }
    for p in ours.keys().filter(|p| !theirs.contains_key(*p)) {
        diffs.push(format!("only in imgbuild's tree: {p}"));
    }
    diffs
}

fn check(id: &str) {
    let d = differences(id);
    assert!(
        d.is_empty(),
        "{id}: imgbuild's boot files differ from nixpkgs' builder ({}):\n{}",
        d.len(),
        d.join("\n")
    );
}

macro_rules! oracle_cases {
    ($($test:ident => $id:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check($id);
            }
        )*
        const CASES: &[&str] = &[$($id),*];
    };
}

oracle_cases! {
    oracle_24_05_systemd_boot => "24.05/systemd-boot",
    oracle_24_05_extlinux => "24.05/extlinux",
    oracle_25_11_systemd_boot => "25.11/systemd-boot",
    oracle_25_11_systemd_boot_options => "25.11/systemd-boot-options",
    oracle_25_11_extlinux => "25.11/extlinux",
    oracle_26_11_systemd_boot => "26.11/systemd-boot",
    oracle_26_11_systemd_boot_counting => "26.11/systemd-boot-counting",
    oracle_26_11_systemd_boot_counting_options => "26.11/systemd-boot-counting-options",
    oracle_26_11_extlinux => "26.11/extlinux",
    oracle_25_11_systemd_boot_devicetree => "25.11/systemd-boot-devicetree",
    oracle_26_11_systemd_boot_devicetree => "26.11/systemd-boot-devicetree",
}

/// Every golden directory has its test above, and every test its golden directory.
#[test]
fn oracle_every_golden_case_is_tested() {
    let mut found = Vec::new();
    for rel in std::fs::read_dir(oracle_dir()).unwrap() {
        let rel = rel.unwrap();
        if !rel.file_type().unwrap().is_dir() || rel.file_name() == "nix" {
            continue;
        }
        for case in std::fs::read_dir(rel.path()).unwrap() {
            let case = case.unwrap();
            if case.path().join("meta.json").is_file() {
                found.push(format!(
                    "{}/{}",
                    rel.file_name().to_string_lossy(),
                    case.file_name().to_string_lossy()
                ));
            }
        }
    }
    found.sort();
    let mut listed: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
}

#[test]
fn oracle_normalise_drops_only_date_and_machine_id() {
    let a = "title NixOS\nversion Generation 1 NixOS 26.11 (Linux 6.1.0), built on 2026-12-06\nmachine-id 0123\nsort-key nixos";
    assert_eq!(
        normalise(a),
        "title NixOS\nversion Generation 1 NixOS 26.11 (Linux 6.1.0), built on DATE\nsort-key nixos"
    );
    // Anything else still differs.
    assert_ne!(
        normalise(a),
        normalise(&a.replace("sort-key nixos", "sort-key other"))
    );
    assert_ne!(
        normalise(a),
        normalise(&a.replace("title NixOS", "title NixOS\n"))
    );
}

/// The golden listings read back and written again (by the writer's own `listing_line`) are
/// the same text: reader and writer agree on the format, and no line is lost.
#[test]
fn oracle_listings_round_trip() {
    for id in CASES {
        let text = std::fs::read_to_string(oracle_dir().join(id).join("listing.txt")).unwrap();
        let items = golden::parse_listing(&text).unwrap();
        let mut back: Vec<String> = items
            .iter()
            .map(|(rel, item)| golden::listing_line(rel, item))
            .collect();
        let mut lines: Vec<&str> = text.lines().collect();
        back.sort();
        lines.sort_unstable();
        assert_eq!(back, lines, "{id}");
    }
}
