//! ISSUE #8: nothing in a build needs root, a loop device, `/dev/kvm` or the network. Both
//! formats are built from the real fixture closures (real Nix chroot stores, ~320 store paths,
//! closure from their Nix database) by uid/gid 65534 with no supplementary groups, no
//! capabilities and a network namespace without interfaces (`unshare -n`), and the images are
//! byte for byte the ones root builds: reproducible across users.
//!
//! Needs the fixtures (`cargo xtask fixtures --arch x86_64` and `--arch aarch64`), root (to
//! create the namespace and switch users: CI runs as root), `unshare` and `setpriv`.

use crate::common::*;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(arch: &str) -> PathBuf {
    let d = workspace().join("target/fixtures").join(arch);
    assert!(
        std::fs::symlink_metadata(d.join("result")).is_ok()
            && d.join("nix/var/nix/db/db.sqlite").exists(),
        "the {arch} fixture is missing at {}: run `cargo xtask fixtures --arch {arch}` first",
        d.display()
    );
    d
}

const SANDBOX: &[&str] = &[
    "-n",
    "setpriv",
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
    "--no-new-privs",
    "--inh-caps=-all",
    "--bounding-set=-all",
];

/// `program args` as uid/gid 65534, no groups, no capabilities, no network interfaces.
fn sandboxed(program: &Path, args: &[String]) -> Command {
    let mut c = Command::new("unshare");
    c.args(SANDBOX)
        .arg(program)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

fn args(format: &str, fixture: &Path, out: &Path) -> Vec<String> {
    vec![
        format.to_string(),
        "--closure".into(),
        fixture.join("result").display().to_string(),
        "--store-root".into(),
        fixture.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--json".into(),
    ]
}

/// The sandbox is what it claims: the user, no groups, no capabilities, no network interface
/// but loopback, no loop device.
#[test]
fn the_sandbox_has_no_privileges_and_no_network() {
    let script = "id -u; id -g; id -G; grep CapEff /proc/self/status; \
                  tail -n +3 /proc/self/net/dev | cut -d: -f1; \
                  (: < /dev/loop-control) 2>/dev/null && echo loop-control-open; true";
    let o = ok(&mut sandboxed(
        Path::new("/bin/sh"),
        &["-c".to_string(), script.to_string()],
    ));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0..3], ["65534", "65534", "65534"], "{out}");
    assert_eq!(lines[3], "CapEff:\t0000000000000000", "{out}");
    assert_eq!(lines[4..], ["lo"], "only loopback, no loop device: {out}");
}

fn build_both_ways(format: &str, arch: &str, name: &str) {
    let fx = fixture(arch);
    let t = tempfile::tempdir().expect("a temporary directory");
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777))
        .expect("making the output directory writable by everyone");
    let root_img = t.path().join(format!("root-{name}"));
    let user_img = t.path().join(format!("user-{name}"));

    let o = ok(&mut imgbuild(
        &args(format, &fx, &root_img)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    let root_m: Value = serde_json::from_slice(&o.stdout).expect("--json prints the manifest");
    let mut c = sandboxed(&bin(), &args(format, &fx, &user_img));
    c.current_dir(t.path());
    let o = ok(&mut c);
    let user_m: Value = serde_json::from_slice(&o.stdout).expect("--json prints the manifest");

    let md = std::fs::metadata(&user_img).expect("the user's image exists");
    assert_eq!(md.uid(), 65534);
    assert_eq!(user_m["closure_source"], "database");
    assert!(user_m["store_paths"].as_u64() > Some(300), "{user_m}");
    let sum = sha256(&user_img);
    assert_eq!(
        sum,
        sha256(&root_img),
        "{format}: root and user images differ"
    );
    assert_eq!(user_m["sha256"], sum);
    // The manifests differ only in the paths of the image and its bmap.
    let (mut a, mut b) = (root_m, user_m);
    for k in ["image", "bmap"] {
        a[k] = Value::Null;
        b[k] = Value::Null;
    }
    assert_eq!(a, b);
    eprintln!("{format} ({arch} fixture): root and uid 65534 (no network) give sha256 {sum}");
}

#[test]
fn raw_efi_from_the_x86_64_fixture_as_an_unprivileged_user_without_network() {
    build_both_ways("raw-efi", "x86_64", "raw-efi.img");
}

#[test]
fn sd_aarch64_from_the_aarch64_fixture_as_an_unprivileged_user_without_network() {
    build_both_ways("sd-aarch64", "aarch64", "sd.img.zst");
}
