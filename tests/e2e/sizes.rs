//! `inspect --sizes` and `diff` on two demo closures that differ by known store paths: one
//! added, one removed, one changed in version and size. Sizes are checked against `du` of the
//! loop-mounted root and `dumpe2fs`; the treemap against a real browser when one is there.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::*;

const HELLO_OLD: &str = "5n1pps77w9rn9xxav4sqblz2avfg5m94-hello-2.12.1";
const HELLO_NEW: &str = "4r3wc5k7l2fsx0v3mn9q8d1a6jbyzh2p-hello-2.12.2";
const UNIT: &str = "91nqxkvkkbw06w96yiaxzpa370vzknd7-unit-hello.service";
const EXTRA: &str = "2b7fn4yq0k8c1m3x9v5sdj6wglrhz0pa-extra-tool-1.0";
const TOPLEVEL: &str = "8sh42grrp97g1hvw61j2m0kzh8d1mw1i-nixos-system-demo-24.05.20240601.b3b2b28";

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A copy of the demo closure; `changed` applies the three known changes.
fn closure(dir: &Path, changed: bool) -> PathBuf {
    let root = dir.join(if changed { "new" } else { "old" });
    ok(Command::new("cp").arg("-a").arg(demo()).arg(&root));
    ok(Command::new("chmod").arg("-R").arg("u+w").arg(&root));
    std::fs::remove_dir_all(root.join("closure-info")).unwrap();
    if !changed {
        return root;
    }
    let store = root.join("nix/store");
    // Removed: the hello unit, and the /etc link to it.
    std::fs::remove_dir_all(store.join(UNIT)).unwrap();
    std::fs::remove_file(
        store.join("ngk4y1czspjkndbbiga0p5j97fqsyg16-etc/etc/systemd/system/hello.service"),
    )
    .unwrap();
    // Changed: hello 2.12.1 -> 2.12.2, 200 kB bigger.
    std::fs::rename(store.join(HELLO_OLD), store.join(HELLO_NEW)).unwrap();
    std::fs::create_dir_all(store.join(HELLO_NEW).join("share")).unwrap();
    std::fs::write(
        store.join(HELLO_NEW).join("share/hello.dat"),
        pattern(200_000, 1),
    )
    .unwrap();
    let bin = store.join("bmh22801333sifz35ja4282p4pvfjc7a-system-path/bin/hello");
    std::fs::remove_file(&bin).unwrap();
    symlink(format!("/nix/store/{HELLO_NEW}/bin/hello"), &bin).unwrap();
    // Added: a tool the toplevel links.
    std::fs::create_dir_all(store.join(EXTRA).join("bin")).unwrap();
    std::fs::write(
        store.join(EXTRA).join("bin/extra-tool"),
        pattern(300_000, 2),
    )
    .unwrap();
    // A file the new hello has too: stored once (dedup), shared by two store paths.
    std::fs::create_dir_all(store.join(EXTRA).join("share")).unwrap();
    std::fs::write(
        store.join(EXTRA).join("share/same.dat"),
        pattern(200_000, 1),
    )
    .unwrap();
    symlink(
        format!("/nix/store/{EXTRA}"),
        store.join(TOPLEVEL).join("extra-tool"),
    )
    .unwrap();
    root
}

fn build(root: &Path, out: &Path) {
    build_with(root, out, &[]);
}

fn build_with(root: &Path, out: &Path, extra: &[&str]) {
    let (closure, store, out) = (
        root.join("result").display().to_string(),
        root.display().to_string(),
        out.display().to_string(),
    );
    let mut args = vec!["raw-efi", "--closure", &closure, "--store-root", &store];
    args.extend_from_slice(extra);
    args.extend(["-o", &out]);
    ok(&mut imgbuild(&args));
}

/// `diff --json OLD NEW` of two images that differ: exit 1, the JSON.
fn diff_json(old: &Path, new: &Path) -> Value {
    let o = imgbuild(&[
        "diff",
        "--json",
        &old.display().to_string(),
        &new.display().to_string(),
    ])
    .output()
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn json(args: &[&str]) -> Value {
    let o = ok(&mut imgbuild(args));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn diff_names_exactly_what_changed_and_sizes_match_du() {
    let t = tempfile::tempdir().unwrap();
    let (old, new) = (closure(t.path(), false), closure(t.path(), true));
    let (a, b) = (t.path().join("a.img"), t.path().join("b.img"));
    build(&old, &a);
    build(&new, &b);
    let zst = t.path().join("b.img.zst");
    ok(Command::new("zstd").arg("-q").arg(&b).arg("-o").arg(&zst));

    // Identical images: exit 0 and "identical".
    let same = imgbuild(&["diff", &a.display().to_string(), &a.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(same.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&same.stdout).contains("identical"));

    // Different: exit 1, and exactly the three changes (the .zst reads the same).
    let d = diff_json(&a, &zst);
    assert_eq!(d["identical"], false);
    assert_eq!(names(&d["store"]["added"]), ["extra-tool-1.0"]);
    assert_eq!(names(&d["store"]["removed"]), ["unit-hello.service"]);
    assert_eq!(names(&d["store"]["changed"]), ["hello"]);
    let hello = &d["store"]["changed"][0];
    assert_eq!(hello["old_version"], "2.12.1");
    assert_eq!(hello["new_version"], "2.12.2");
    let grew = hello["delta"].as_i64().unwrap();
    assert!((200_000..200_000 + 3 * 4096).contains(&grew), "{hello}");
    assert!(d["toplevel"].is_null(), "same toplevel path: {d}");
    let md = imgbuild(&[
        "diff",
        "--markdown",
        &a.display().to_string(),
        &b.display().to_string(),
    ])
    .output()
    .unwrap();
    assert_eq!(md.status.code(), Some(1));
    let md = String::from_utf8(md.stdout).unwrap();
    assert!(md.contains("| ~ | hello | 2.12.1 -> 2.12.2 |"), "{md}");

    // Sizes against du of the mounted root, path by path, and dumpe2fs's used blocks.
    let s = json(&["inspect", "--sizes", "--json", &b.display().to_string()]);
    let root_part = s["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"] == s["root_partition"])
        .unwrap()
        .clone();
    let m: Value =
        serde_json::from_slice(&std::fs::read(b.with_extension("img.json")).unwrap()).unwrap();
    let mp = &m["partitions"][1];
    let root_img = t.path().join("root.ext4");
    extract(
        &b,
        mp["start"].as_u64().unwrap(),
        mp["filesystem"]["size"].as_u64().unwrap(),
        &root_img,
    );
    let dump =
        String::from_utf8(ok(Command::new("dumpe2fs").arg("-h").arg(&root_img)).stdout).unwrap();
    let field = |k: &str| -> u64 {
        dump.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let used = (field("Block count:") - field("Free blocks:")) * field("Block size:");
    assert_eq!(root_part["used"], used);
    let parts = root_part["parts"].as_array().unwrap();
    let sum: u64 = parts.iter().map(|p| p["bytes"].as_u64().unwrap()).sum();
    assert_eq!(sum, used, "the lines add up to the used blocks: {parts:?}");
    let meta = parts.iter().find(|p| p["name"] == "metadata").unwrap()["bytes"]
        .as_u64()
        .unwrap();
    let journal = field("Total journal blocks:") * field("Block size:");
    assert!(
        meta >= journal && meta < used,
        "metadata {meta}, journal {journal}"
    );

    // The ESP against fsck.fat: clusters in use and free.
    let esp = s["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "fat32")
        .unwrap()
        .clone();
    let mesp = &m["partitions"][0];
    let esp_img = t.path().join("esp.fat");
    extract(
        &b,
        mesp["start"].as_u64().unwrap(),
        mesp["filesystem"]["size"].as_u64().unwrap(),
        &esp_img,
    );
    let v = String::from_utf8(ok(Command::new("fsck.fat").args(["-n", "-v"]).arg(&esp_img)).stdout)
        .unwrap();
    let num = |line: &str, word: &str| -> u64 {
        line.split_whitespace()
            .take_while(|w| *w != word)
            .last()
            .unwrap()
            .parse()
            .unwrap()
    };
    let cluster = num(
        v.lines().find(|l| l.contains("bytes per cluster")).unwrap(),
        "bytes",
    );
    let counts = v.lines().find(|l| l.contains(" files, ")).unwrap();
    let (in_use, total) = counts
        .rsplit(' ')
        .nth(1)
        .unwrap()
        .split_once('/')
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()))
        .unwrap();
    assert_eq!(esp["used"], in_use * cluster, "{v}");
    assert_eq!(esp["free"], (total - in_use) * cluster, "{v}");
    let files: u64 = esp["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["bytes"].as_u64().unwrap())
        .sum();
    assert!(files > 0 && files <= in_use * cluster);

    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    ok(Command::new("mount")
        .args(["-t", "ext4", "-o", "loop,ro"])
        .arg(&root_img)
        .arg(&mnt));
    let du = |p: &str| -> u64 {
        let out = ok(Command::new("du")
            .args(["-s", "--block-size=1"])
            .arg(mnt.join(p.trim_start_matches('/'))))
        .stdout;
        String::from_utf8(out)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut checked = 0;
    for p in s["store_paths"].as_array().unwrap() {
        let path = p["path"].as_str().unwrap();
        let ours = p["bytes"].as_u64().unwrap();
        let theirs = du(path);
        assert!(
            ours.abs_diff(theirs) <= 4096,
            "{path}: {ours} vs du {theirs}"
        );
        checked += 1;
    }
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(checked, 11, "11 store paths measured");
    // The shared file: in both paths' sizes (as du counts each), once in the total.
    let shared = s["shared"].as_u64().unwrap();
    assert!(
        (200_000..200_000 + 4096).contains(&shared),
        "shared {shared}"
    );
    let paths = s["store_paths"].as_array().unwrap();
    let exclusive: u64 = paths.iter().map(|p| p["exclusive"].as_u64().unwrap()).sum();
    assert_eq!(exclusive + shared, s["closure_total"].as_u64().unwrap());
    let top = &s["store_paths"][0];
    assert_eq!(top["name"], "extra-tool-1.0", "largest first: {top}");

    // The treemap: a self-contained SVG with the top store paths labelled.
    let svg = t.path().join("b.svg");
    ok(&mut imgbuild(&[
        "inspect",
        "--sizes",
        "--svg",
        &svg.display().to_string(),
        &b.display().to_string(),
    ]));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(!text.contains("http://") || text.matches("http://").count() == 1);
    for name in ["extra-tool-1.0", "hello-2.12.2"] {
        assert!(
            text.contains(&format!("<title>{name} — ")),
            "{name} has a box"
        );
    }
    // A real browser renders it (CI installs Debian's chromium; .ci/run lists it).
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {c}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is installed (apt-get install chromium), to render the treemap");
    {
        let png = t.path().join("shot.png");
        let flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ];
        ok(Command::new(chromium)
            .args(flags)
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=1600,1024")
            .arg(&svg));
        let shot = std::fs::read(&png).unwrap();
        assert!(
            shot.starts_with(b"\x89PNG") && shot.len() > 10_000,
            "{} bytes",
            shot.len()
        );
        let dom = String::from_utf8(
            ok(Command::new(chromium)
                .args(flags)
                .arg("--dump-dom")
                .arg(&svg))
            .stdout,
        )
        .unwrap();
        for name in ["extra-tool-1.0", "hello-2.12.2", "metadata", "free"] {
            assert!(dom.contains(name), "the rendered DOM holds {name}");
        }
    }
}

/// Boot and layout changes: new kernel parameters and another initrd in the same store
/// paths, and a bigger ESP. `diff` names each, and no store path.
#[test]
fn diff_names_boot_and_layout_changes() {
    let t = tempfile::tempdir().unwrap();
    let (da, db) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir(&da).unwrap();
    std::fs::create_dir(&db).unwrap();
    let (old, new) = (closure(&da, false), closure(&db, false));
    let top = new.join("nix/store").join(TOPLEVEL);
    for f in ["boot.json", "kernel-params"] {
        let p = top.join(f);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("loglevel=4"), "{f}: {text}");
        std::fs::write(&p, text.replace("loglevel=4", "loglevel=7 quiet")).unwrap();
    }
    // The link is absolute (/nix/store/...): the file is under the copy.
    let target = std::fs::read_link(top.join("initrd")).unwrap();
    let initrd = new.join(target.strip_prefix("/").unwrap());
    let mut bytes = std::fs::read(&initrd).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&initrd, bytes).unwrap();

    let (a, b) = (t.path().join("a.img"), t.path().join("b.img"));
    build(&old, &a);
    build_with(&new, &b, &["--esp-size", "600MiB"]);
    let d = diff_json(&a, &b);
    let store = &d["store"];
    for k in ["added", "removed", "changed"] {
        assert_eq!(store[k].as_array().map(Vec::len), Some(0), "{k}: {store}");
    }
    let boot = d["boot"].as_array().unwrap();
    let whats: Vec<&str> = boot.iter().map(|f| f["what"].as_str().unwrap()).collect();
    let params = boot
        .iter()
        .find(|f| f["what"] == "nixos.kernel-params")
        .unwrap_or_else(|| panic!("kernel parameters in {whats:?}"));
    assert!(params["old"].as_str().unwrap().contains("loglevel=4"));
    assert!(params["new"].as_str().unwrap().contains("loglevel=7 quiet"));
    assert!(
        whats
            .iter()
            .any(|w| w.starts_with("file ") && w.contains("initrd")),
        "the initrd on the ESP: {whats:?}"
    );
    assert!(
        whats
            .iter()
            .any(|w| w.starts_with("file ") && w.ends_with(".conf")),
        "the boot entry (options line): {whats:?}"
    );
    let parts = d["partitions"].as_array().unwrap();
    assert!(
        parts
            .iter()
            .any(|f| f["what"].as_str().unwrap().starts_with("partition 1")),
        "the ESP's size: {parts:?}"
    );

    let text = String::from_utf8(
        imgbuild(&["diff", &a.display().to_string(), &b.display().to_string()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(text.contains("loglevel=7 quiet"), "{text}");
}
