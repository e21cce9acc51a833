//! The container tarballs (`lxc`, `lxc-metadata`, `proxmox-lxc`, `incus`) judged by GNU tar,
//! bsdtar, xz, zstd, PyYAML and Debian's LXC tools (`lxc-create -t local`, `lxc-ls`,
//! `lxc-info`), and unpacked against the closure. The demo closure is a disk
//! system, so each test copies it and makes its toplevel what NixOS builds for
//! `boot.isContainer` (no boot.json, kernel, initrd, kernel-params or kernel-modules) with the
//! `imgbuild.json` imgbuild's NixOS module adds (`"org.imgbuild.v1".container`).

use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// 2023-11-14 22:13:20 UTC.
const EPOCH: &str = "1700000000";
const EPOCH_TEXT: &str = "2023-11-14 22:13:20";

fn toplevel_link(root: &Path) -> String {
    let link = std::fs::read_link(root.join("result")).unwrap();
    link.to_str().unwrap().to_string()
}

/// A copy of the demo at `dir`: `container`, when given, as `<toplevel>/imgbuild.json`'s
/// `"org.imgbuild.v1".container`; the toplevel's boot files (boot.json, kernel, initrd,
/// kernel-params, kernel-modules) removed, as in a real container toplevel, unless `keep` names
/// `boot.json`: then they stay (the demo's disk system) and only boot.json's systemd-boot
/// entry goes, unless `keep` names `systemd-boot` too.
fn patched(dir: &Path, container: Option<Value>, keep: &[&str]) -> PathBuf {
    let root = dir.join("closure");
    std::fs::create_dir_all(dir).unwrap();
    ok(Command::new("cp").arg("-a").arg(demo()).arg(&root));
    let top = root.join(toplevel_link(&root).trim_start_matches('/'));
    ok(Command::new("chmod").arg("-R").arg("u+w").arg(&top));
    let path = top.join("boot.json");
    if keep.contains(&"boot.json") {
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if !keep.contains(&"systemd-boot") {
            spec.as_object_mut()
                .unwrap()
                .remove("org.nixos.systemd-boot");
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    } else {
        for f in [
            "boot.json",
            "kernel",
            "initrd",
            "kernel-params",
            "kernel-modules",
        ] {
            std::fs::remove_file(top.join(f)).unwrap();
        }
    }
    if let Some(c) = container {
        let doc = json!({ "org.imgbuild.v1": { "container": c } });
        std::fs::write(top.join("imgbuild.json"), serde_json::to_vec(&doc).unwrap()).unwrap();
    }
    root
}

fn marker() -> Value {
    json!({
        "isContainer": true,
        "description": "NixOS Uakari 24.05.20240601.b3b2b28 x86_64-linux",
        "os": "nixos",
        "release": "Uakari",
    })
}

fn build(format: &str, root: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = closure_args(format, root, out);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--json".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = imgbuild(&refs);
    c.env("SOURCE_DATE_EPOCH", EPOCH);
    serde_json::from_slice(&ok(&mut c).stdout).unwrap()
}

/// GNU tar's verbose listing: (mode, owner, time, name) of every member.
fn gnu_listing(archive: &Path) -> Vec<(String, String, String, String)> {
    let text = stdout(
        Command::new("tar")
            .env("TZ", "UTC")
            .args(["--numeric-owner", "--full-time", "-tvf"])
            .arg(archive),
    );
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f[5].to_string();
            (f[0].into(), f[1].into(), format!("{} {}", f[3], f[4]), name)
        })
        .collect()
}

/// bsdtar's verbose listing: (mode, uid gid, name) of every member.
fn bsd_listing(archive: &Path) -> Vec<(String, String, String)> {
    let text = stdout(
        Command::new("bsdtar")
            .env("TZ", "UTC")
            .args(["--numeric-owner", "-tvf"])
            .arg(archive),
    );
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].into(), format!("{} {}", f[2], f[3]), f[8].into())
        })
        .collect()
}

fn same_file(a: &Path, b: &Path) {
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "{} differs from {}",
        a.display(),
        b.display()
    );
}

/// Unpacked with GNU tar into `dest` (as root: owners and modes kept).
fn unpack(archive: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    ok(Command::new("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(archive)
        .arg("-C")
        .arg(dest));
}

/// The unpacked root file system at `fs` holds the closure (diff -r against the store), the
/// registration, `sbin/init`; `dirs` are empty directories there.
fn rootfs_is_the_closure(fs: &Path, root: &Path, dirs: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(fs.join("nix/store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, closure_names(root));
    for n in &names {
        ok(Command::new("diff")
            .arg("-r")
            .arg("--no-dereference")
            .arg(root.join("nix/store").join(n))
            .arg(fs.join("nix/store").join(n)));
    }
    // Nix's registration format (`nix-store --load-db`): per path its name, NAR hash, NAR
    // size, deriver line, reference count and references; every closure path registered.
    let reg = std::fs::read_to_string(fs.join("nix-path-registration")).unwrap();
    let mut lines = reg.lines();
    let mut registered = Vec::new();
    while let Some(path) = lines.next() {
        let hash = lines.next().unwrap();
        assert!(
            hash.len() == 64 || hash.starts_with("sha256:"),
            "{path}: {hash}"
        );
        lines.next().unwrap().parse::<u64>().unwrap();
        lines.next().unwrap(); // deriver
        let refs: usize = lines.next().unwrap().parse().unwrap();
        for _ in 0..refs {
            assert!(lines.next().unwrap().starts_with("/nix/store/"));
        }
        registered.push(path.trim_start_matches("/nix/store/").to_string());
    }
    registered.sort();
    assert_eq!(registered, names);
    let init = std::fs::read_link(fs.join("sbin/init")).unwrap();
    assert_eq!(init, PathBuf::from(toplevel_link(root)).join("init"));
    for d in dirs {
        let entries = std::fs::read_dir(fs.join(d)).unwrap().count();
        assert_eq!(entries, 0, "{d} is an empty directory");
    }
}

#[test]
fn lxc_listed_by_gnu_tar_and_bsdtar_unpacked_equals_the_closure_same_for_any_j() {
    let dir = tempfile::tempdir().unwrap();
    let root = patched(dir.path(), Some(marker()), &[]);
    let a = dir.path().join("a.tar.xz");
    let b = dir.path().join("b.tar.xz");
    let m = build("lxc", &root, &a, &["-j", "1"]);
    build("lxc", &root, &b, &["-j", "2"]);
    same_file(&a, &b);
    assert_eq!(m["container"], "xz");
    assert_eq!(m["sha256"].as_str().unwrap(), sha256(&a));
    ok(Command::new("xz").arg("-t").arg(&a));

    let gnu = gnu_listing(&a);
    let store_paths = closure_names(&root).len();
    // Every store path, its files, and what imgbuild adds.
    assert!(gnu.len() > store_paths + 8, "{} members", gnu.len());
    for (mode, owner, time, name) in &gnu {
        assert_eq!(owner, "0/0", "{name}");
        assert!(time.as_str() <= EPOCH_TEXT, "{name}: {time}");
        assert!(!name.starts_with('/') && !name.starts_with("./"), "{name}");
        if let Some(rest) = name.strip_prefix("nix/store/") {
            if !rest.is_empty() {
                // Nix's canonical store: no write bits, mtime 1.
                assert!(
                    !mode[1..].contains('w') || mode.starts_with('l'),
                    "{name} {mode}"
                );
                assert_eq!(time, "1970-01-01 00:00:01", "{name}");
            }
        }
    }
    let find = |n: &str| {
        gnu.iter()
            .find(|g| g.3 == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    for d in [
        "dev/",
        "proc/",
        "sys/",
        "sbin/",
        "nix/",
        "nix/store/",
        "etc/",
    ] {
        assert_eq!(find(d).0, "drwxr-xr-x", "{d}");
        assert_eq!(find(d).2, EPOCH_TEXT, "{d}");
    }
    assert_eq!(find("nix-path-registration").0, "-rw-r--r--");
    assert_eq!(find("sbin/init").0, "lrwxrwxrwx");
    assert_eq!(find("etc/os-release").0, "lrwxrwxrwx");

    let bsd = bsd_listing(&a);
    assert_eq!(bsd.len(), gnu.len());
    for ((mode, owner, name), g) in bsd.iter().zip(&gnu) {
        assert_eq!(owner, "0 0", "{name}");
        assert_eq!(mode, &g.0, "{name}");
        assert_eq!(name, &g.3);
    }

    let fs = dir.path().join("unpacked");
    unpack(&a, &fs);
    rootfs_is_the_closure(&fs, &root, &["dev", "proc", "sys"]);
    let os = std::fs::read_link(fs.join("etc/os-release")).unwrap();
    assert_eq!(
        os,
        PathBuf::from(toplevel_link(&root)).join("etc/os-release")
    );
}

#[test]
fn proxmox_lxc_has_proxmox_directories_and_a_zstd_variant_tests_clean() {
    let dir = tempfile::tempdir().unwrap();
    let root = patched(dir.path(), Some(marker()), &[]);
    let out = dir.path().join("p.tar.xz");
    build("proxmox-lxc", &root, &out, &[]);
    ok(Command::new("xz").arg("-t").arg(&out));
    let names: Vec<String> = gnu_listing(&out).into_iter().map(|g| g.3).collect();
    for want in [
        "root/",
        "etc/",
        "etc/systemd/",
        "etc/systemd/network/",
        "sbin/init",
    ] {
        assert!(names.iter().any(|n| n == want), "{want}");
    }
    for absent in ["dev/", "proc/", "sys/", "etc/os-release"] {
        assert!(!names.iter().any(|n| n == absent), "{absent}");
    }
    let fs = dir.path().join("unpacked");
    unpack(&out, &fs);
    rootfs_is_the_closure(&fs, &root, &["root", "etc/systemd/network"]);

    // The same tree uncompressed and zstd-compressed: a format file on top of proxmox-lxc.
    let fmt = dir.path().join("pz.toml");
    std::fs::write(
        &fmt,
        "base = \"proxmox-lxc\"\nname = \"pz\"\nextension = \"tar\"\ncompress = \"zstd\"\n\
         [container]\ntype = \"raw\"\n",
    )
    .unwrap();
    let z = dir.path().join("p.tar.zst");
    build(fmt.to_str().unwrap(), &root, &z, &["--compress", "zstd"]);
    ok(Command::new("zstd").arg("-t").arg(&z));
    let plain = dir.path().join("p.tar");
    ok(Command::new("xz")
        .args(["-dc"])
        .arg(&out)
        .stdout(std::fs::File::create(&plain).unwrap()));
    let unz = dir.path().join("pz.tar");
    ok(Command::new("zstd").arg("-dqo").arg(&unz).arg(&z));
    // Different names (the seed), same tree: the same archive.
    same_file(&plain, &unz);
}

#[test]
fn lxc_metadata_and_incus_unified_image_parse() {
    let dir = tempfile::tempdir().unwrap();
    let root = patched(dir.path(), Some(marker()), &[]);
    let meta = dir.path().join("m.tar.xz");
    build("lxc-metadata", &root, &meta, &[]);
    ok(Command::new("xz").arg("-t").arg(&meta));
    let names: Vec<String> = gnu_listing(&meta).into_iter().map(|g| g.3).collect();
    assert_eq!(names, ["metadata.yaml", "templates/"]);
    let check_yaml = |archive: &Path| {
        let yaml = stdout(
            Command::new("tar")
                .args(["-xOf"])
                .arg(archive)
                .arg("metadata.yaml"),
        );
        let script = "import sys, yaml, json; print(json.dumps(yaml.safe_load(sys.stdin)))";
        let mut py = Command::new("python3");
        py.args(["-c", script]).stdin(std::process::Stdio::piped());
        let mut child = py.stdout(std::process::Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["architecture"], "x86_64");
        assert_eq!(v["creation_date"], 1_700_000_000);
        assert_eq!(v["properties"]["os"], "nixos");
        assert_eq!(v["properties"]["release"], "Uakari");
        assert_eq!(v["properties"]["description"], marker()["description"]);
        assert_eq!(v["templates"], json!({}));
    };
    check_yaml(&meta);

    let incus = dir.path().join("i.tar.xz");
    build("incus", &root, &incus, &[]);
    ok(Command::new("xz").arg("-t").arg(&incus));
    check_yaml(&incus);
    let names: Vec<String> = gnu_listing(&incus).into_iter().map(|g| g.3).collect();
    assert_eq!(names[..3], ["metadata.yaml", "rootfs/", "rootfs/dev/"]);
    assert!(names.iter().any(|n| n == "templates/"));
    assert!(names
        .iter()
        .all(|n| n == "metadata.yaml" || n == "templates/" || n.starts_with("rootfs/")));
    let fs = dir.path().join("unpacked");
    unpack(&incus, &fs);
    rootfs_is_the_closure(&fs.join("rootfs"), &root, &["dev", "proc", "sys"]);

    // Without the properties, the metadata is refused naming the key.
    let bare = patched(
        &dir.path().join("bare"),
        Some(json!({"isContainer": true})),
        &[],
    );
    let mut args = closure_args("lxc-metadata", &bare, &dir.path().join("x.tar.xz"));
    args.push("--no-system-check".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(&mut imgbuild(&refs));
    assert!(
        err.contains("\"org.imgbuild.v1\".container.description"),
        "{err}"
    );
}

#[test]
fn a_system_not_built_as_a_container_is_refused_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    let no_system_check = "--no-system-check";
    for (case, container, keep, want) in [
        // A container toplevel without imgbuild's module: not even a toplevel imgbuild knows.
        (
            "no marker file",
            None,
            &[][..],
            "nor init with a kernel (a container system has init and the imgbuild.json",
        ),
        // The demo's disk system: boot.json and a kernel, no imgbuild.json.
        (
            "disk system",
            None,
            &["boot.json"][..],
            "no imgbuild.json with \"org.imgbuild.v1\".container.isContainer = true",
        ),
        ("kernel", Some(marker()), &["boot.json"][..], "has a kernel"),
        (
            "loader",
            Some(marker()),
            &["boot.json", "systemd-boot"][..],
            "installs systemd-boot",
        ),
        (
            "not a container",
            Some(json!({ "isContainer": false })),
            &[][..],
            "container.isContainer = true",
        ),
    ] {
        let d = dir.path().join(case.replace(' ', "-"));
        let root = patched(&d, container, keep);
        let out = d.join("a.tar.xz");
        let args = closure_args("lxc", &root, &out);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&mut imgbuild(&refs));
        assert!(err.contains(want), "{case}: {err}");
        if case != "no marker file" {
            assert!(err.contains("imgbuild.format = \"lxc\""), "{case}: {err}");
        }
        assert!(!out.exists(), "{case}");
    }
    // The old way, where it still makes sense: the demo's disk system with the marker file and
    // the system check off is archived like a container's (its kernel is only a store path).
    let d = dir.path().join("disk-unchecked");
    let root = patched(&d, Some(marker()), &["boot.json", "systemd-boot"]);
    let out = d.join("a.tar.xz");
    build("lxc", &root, &out, &[no_system_check]);
    ok(Command::new("xz").arg("-t").arg(&out));
}

#[test]
fn bootable_formats_refuse_a_container_toplevel_naming_what_it_lacks() {
    // A container toplevel has no kernel: every disk, ISO and netboot format refuses it
    // before planning, with or without the system check.
    let dir = tempfile::tempdir().unwrap();
    let root = patched(dir.path(), Some(marker()), &[]);
    for format in ["raw-efi", "qemu-efi", "raw", "iso", "netboot", "kexec"] {
        for extra in [&[][..], &["--no-system-check"][..]] {
            let out = dir.path().join(format!("{format}.out"));
            let mut args = closure_args(format, &root, &out);
            args.extend(extra.iter().map(|s| s.to_string()));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let err = fails(&mut imgbuild(&refs));
            let want = format!(
                "format `{format}` boots a kernel, but /nix/store/{} has none: no boot.json and \
                 no kernel link",
                toplevel_link(&root).trim_start_matches("/nix/store/")
            );
            assert!(err.contains(&want), "{format} {extra:?}: {err}");
            assert!(err.contains("container system (boot.isContainer)"), "{err}");
            assert!(!out.exists(), "{format}");
        }
    }
}

/// Whether Debian's LXC tools (`lxc-create`, `lxc-ls`, `lxc-info`; package `lxc`, 5.0 in
/// bookworm) can run here: installed, and as root (an unprivileged lxc-create needs an id
/// map). `.ci/run` installs them and CI runs as root.
fn have_lxc() -> bool {
    let have = Command::new("lxc-create").arg("--version").output();
    if have.map(|o| !o.status.success()).unwrap_or(true) || !is_root() {
        eprintln!("skipped: lxc-create not installed (apt-get install lxc) or not root");
        return false;
    }
    true
}

#[test]
fn lxc_create_imports_the_rootfs_with_the_local_template() {
    // LXC's `local` template (lxc-create -t local -- --metadata M --fstree R) unpacks the
    // rootfs tarball itself (`tar --numeric-owner -xpJf`) into the container's rootfs. Its
    // metadata is LXC's own image format (a `config` file, as the download template's images
    // carry), not the LXD/Incus `metadata.yaml` that nixpkgs' lxc-metadata variant (and so
    // ours) holds: lxc-local refuses ours naming the missing file, and takes a classic one
    // made here.
    if !have_lxc() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = patched(dir.path(), Some(marker()), &[]);
    let rootfs = dir.path().join("rootfs.tar.xz");
    build("lxc", &root, &rootfs, &[]);
    let ours = dir.path().join("meta.tar.xz");
    build("lxc-metadata", &root, &ours, &[]);
    let lxcpath = dir.path().join("lxc");
    std::fs::create_dir_all(&lxcpath).unwrap();
    let create = |name: &str, meta: &Path| {
        let mut c = Command::new("lxc-create");
        c.args(["-n", name, "-t", "local", "-P"])
            .arg(&lxcpath)
            .arg("--")
            .arg("--metadata")
            .arg(meta)
            .arg("--fstree")
            .arg(&rootfs);
        c
    };
    let out = create("lxd-meta", &ours).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("meta tarball is missing the configuration file"),
        "{text}"
    );

    // A classic LXC metadata tarball: the distribution's config and no templates.
    let classic = dir.path().join("classic");
    std::fs::create_dir_all(&classic).unwrap();
    std::fs::write(
        classic.join("config"),
        "lxc.include = /usr/share/lxc/config/common.conf\nlxc.arch = x86_64\n",
    )
    .unwrap();
    let meta = dir.path().join("classic.tar.xz");
    ok(Command::new("tar")
        .arg("-cJf")
        .arg(&meta)
        .arg("-C")
        .arg(&classic)
        .arg("config"));
    ok(&mut create("nixos", &meta));
    let fs = lxcpath.join("nixos/rootfs");
    rootfs_is_the_closure(&fs, &root, &["proc", "sys"]);
    // lxc-local makes dev/pts in the (empty) dev.
    let dev: Vec<_> = std::fs::read_dir(fs.join("dev"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(dev, ["pts"]);
    let config = std::fs::read_to_string(lxcpath.join("nixos/config")).unwrap();
    assert!(config.contains("lxc.uts.name = nixos"), "{config}");
    assert!(config.contains("lxc.arch = x86_64"), "{config}");
    let ls = stdout(Command::new("lxc-ls").arg("-P").arg(&lxcpath));
    assert_eq!(ls.split_whitespace().collect::<Vec<_>>(), ["nixos"], "{ls}");
    let info = stdout(
        Command::new("lxc-info")
            .args(["-n", "nixos", "-P"])
            .arg(&lxcpath),
    );
    assert!(info.contains("STOPPED"), "{info}");
    ok(Command::new("lxc-destroy")
        .args(["-n", "nixos", "-P"])
        .arg(&lxcpath));
    assert!(!lxcpath.join("nixos").exists());
}

#[test]
fn lxc_create_accepts_the_unpacked_rootfs_with_no_template() {
    // The rootfs unpacked by GNU tar into a container lxc-create made with the `none`
    // template; lxc-info reads it back.
    if !have_lxc() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = patched(dir.path(), Some(marker()), &[]);
    let a = dir.path().join("a.tar.xz");
    build("lxc", &root, &a, &[]);
    let lxcpath = dir.path().join("lxc");
    std::fs::create_dir_all(&lxcpath).unwrap();
    ok(Command::new("lxc-create")
        .args(["-n", "imgbuild-test", "-t", "none", "-P"])
        .arg(&lxcpath));
    let fs = lxcpath.join("imgbuild-test/rootfs");
    std::fs::create_dir_all(&fs).unwrap();
    unpack(&a, &fs);
    rootfs_is_the_closure(&fs, &root, &["dev", "proc", "sys"]);
    let info = stdout(
        Command::new("lxc-info")
            .args(["-n", "imgbuild-test", "-P"])
            .arg(&lxcpath),
    );
    assert!(info.contains("STOPPED"), "{info}");
}

fn is_root() -> bool {
    stdout(Command::new("id").arg("-u")).trim() == "0"
}
