//! Squashfs images read back: `mksquashfs` (zstd, gzip, xz; 4 KiB and 1 MiB blocks;
//! fragments off, always on; uncompressed metadata; `-keep-as-directory`; hard links) and
//! our writer (`imgbuild-squashfs`), made from one generated host tree, must list as
//! `unsquashfs -lln` lists them, read as `unsquashfs` extracts them, and match the tree;
//! lz4 is refused by name; corrupt images fail bounded (the corruption fuzz harness).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use imgbuild_fstree::{Mtime, Owner, Perms, ScanOptions, Scanner};
use imgbuild_inspect::{Image, Kind};
use imgbuild_testutil::noise;

use crate::common::run;

/// What a path holds: `ls -l` mode, `uid/gid`, size, symlink target.
type Attrs = BTreeMap<String, (String, String, u64, String)>;
/// Content of every regular file (and symlink target), and mtime, by path.
type Data = BTreeMap<String, (Vec<u8>, i64)>;

/// The host tree every producer gets.
fn host_tree(root: &Path) {
    let w = |p: &str, data: &[u8], mode: u32| crate::common::write_mode(root, p, data, mode);
    crate::common::small_files(root);
    w("blocks/exact-4k", &noise(1, 4096), 0o644);
    w("blocks/4k-plus-1", &noise(2, 4097), 0o644);
    w("blocks/noise-3m", &noise(3, 3 << 20), 0o644);
    w("blocks/zeros", &vec![0u8; (1 << 20) * 2 + 100], 0o644);
    let mut mixed = noise(4, 300_000);
    mixed.extend(vec![0u8; 200_000]);
    mixed.extend(noise(5, 70_000));
    w("blocks/mixed", &mixed, 0o644);
    w(&"n".repeat(255), b"long name\n", 0o640);
    for i in 0..300 {
        w(
            &format!("many/entry-number-{i:03}"),
            format!("{i}\n").as_bytes(),
            0o644,
        );
    }
    let mut deep = String::new();
    for i in 0..20 {
        deep.push_str(&format!("d{i}/"));
    }
    w(&format!("{deep}leaf"), b"deep\n", 0o644);
    fs::create_dir(root.join("empty-dir")).unwrap();
    fs::hard_link(root.join("hello.txt"), root.join("bin/hard-hello")).unwrap();
    let l = |target: &str, at: &str| std::os::unix::fs::symlink(target, root.join(at)).unwrap();
    l("hello.txt", "link-to-hello");
    l("/bin/run.sh", "absolute-link");
    l("bin", "link-to-dir");
    l("../../hello.txt", "bin/up-link");
    l("nowhere/at/all", "dangling");
    let fifo = root.join("fifo");
    run(Command::new("mkfifo").arg(&fifo));
    fs::set_permissions(root.join("many"), fs::Permissions::from_mode(0o750)).unwrap();
}

/// `unsquashfs -lln`: every path but the root, relative to the root, with its attributes.
fn unsquashfs_attrs(img: &Path) -> Attrs {
    let out = Command::new("unsquashfs")
        .env("TZ", "UTC")
        .arg("-lln")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut a = Attrs::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        // mode uid/gid size date time path[ -> target]
        let mut rest = line;
        let mut f = Vec::new();
        for _ in 0..5 {
            let t = rest.trim_start();
            let end = t.find(' ').unwrap_or(t.len());
            f.push(&t[..end]);
            rest = &t[end..];
        }
        let rest = rest.trim_start();
        let Some(path) = rest.strip_prefix("squashfs-root/") else {
            continue;
        };
        let (path, target) = match path.split_once(" -> ") {
            Some((p, t)) => (p, t.to_string()),
            None => (path, String::new()),
        };
        a.insert(
            format!("/{path}"),
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].parse().unwrap(),
                target,
            ),
        );
    }
    a
}

/// The same through our reader, and every file's bytes.
fn reader_view(img: &Path) -> (Attrs, Data) {
    let image = Image::open(img).unwrap();
    let fs = image.root_filesystem().unwrap();
    assert_eq!(fs.info().summary.kind, "squashfs");
    let (mut a, mut d) = (Attrs::new(), Data::new());
    fs.walk(b"/", |path, e, depth| {
        if depth == 0 {
            return Ok(true);
        }
        let key = String::from_utf8(path.to_vec()).unwrap();
        let target = e
            .target
            .as_ref()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default();
        a.insert(
            key.clone(),
            (
                e.mode_string(),
                format!("{}/{}", e.uid, e.gid),
                e.size,
                target.clone(),
            ),
        );
        let data = match e.kind {
            Kind::File => {
                let mut v = Vec::new();
                assert_eq!(fs.copy_file(path, &mut v)?, e.size);
                v
            }
            Kind::Symlink => target.into_bytes(),
            _ => Vec::new(),
        };
        d.insert(key, (data, e.mtime));
        Ok(true)
    })
    .unwrap();
    (a, d)
}

/// The host tree's files and links, with mtimes, below `prefix` of the image.
fn host_data(root: &Path, prefix: &str) -> Data {
    let mut out = Data::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = format!("{prefix}/{}", p.strip_prefix(root).unwrap().display());
            let data = if m.is_dir() {
                stack.push(p.clone());
                Vec::new()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.insert(rel, (data, m.mtime()));
        }
    }
    out
}

/// Files `unsquashfs` extracts, by path.
fn extracted(img: &Path, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    run(Command::new("unsquashfs")
        .args(["-quiet", "-no-progress", "-no-xattrs", "-d"])
        .arg(dir)
        .arg(img));
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let rel = format!("/{}", p.strip_prefix(dir).unwrap().display());
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Builds the tree, the image (`make(src, img)`), and checks the reader against
/// `unsquashfs` and the tree (below `prefix` in the image).
fn check(name: &str, prefix: &str, make: impl Fn(&Path, &Path)) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    host_tree(&src);
    let img = t.path().join(format!("{name}.sqfs"));
    make(&src, &img);
    let (attrs, data) = reader_view(&img);
    let want = unsquashfs_attrs(&img);
    assert_eq!(attrs.len(), want.len(), "{name}: entries");
    for (p, w) in &want {
        assert_eq!(
            attrs.get(p),
            Some(w),
            "{name}: {p}: as unsquashfs -lln lists it"
        );
    }
    let files = extracted(&img, &t.path().join("out"));
    let regular = data.iter().filter(|(p, _)| attrs[*p].0.starts_with('-'));
    assert_eq!(regular.clone().count(), files.len(), "{name}: files");
    for (p, (bytes, _)) in regular {
        assert!(
            files.get(p) == Some(bytes),
            "{name}: {p}: bytes as extracted"
        );
    }
    let host = host_data(&src, prefix);
    for (p, (bytes, mtime)) in &host {
        let got = data.get(p).unwrap_or_else(|| panic!("{name}: {p} missing"));
        assert!(got.0 == *bytes, "{name}: {p}: bytes as on the host");
        assert_eq!(got.1, *mtime, "{name}: {p}: mtime");
    }
    // Hard links share an inode: one id in a walk's allocations.
    let image = Image::open(&img).unwrap();
    let fs = image.root_filesystem().unwrap();
    let mut ids = BTreeMap::new();
    fs.allocations(b"/", |a| {
        ids.insert(String::from_utf8_lossy(a.path).into_owned(), a.id);
    })
    .unwrap();
    assert_eq!(
        ids[&format!("{prefix}/hello.txt")],
        ids[&format!("{prefix}/bin/hard-hello")],
        "{name}: hard link"
    );
    assert_ne!(
        ids[&format!("{prefix}/hello.txt")],
        ids[&format!("{prefix}/empty")]
    );
    // Symlinks resolve inside the image: absolute ones from its root, `..` stops there.
    assert_eq!(
        fs.canonicalize(format!("{prefix}/link-to-dir/run.sh").as_bytes())
            .unwrap(),
        format!("{prefix}/bin/run.sh").into_bytes()
    );
    if prefix.is_empty() {
        let mut v = Vec::new();
        fs.copy_file(b"/bin/up-link", &mut v).unwrap();
        assert_eq!(v, b"hello\n");
    } else {
        let e = fs.canonicalize(format!("{prefix}/bin/up-link").as_bytes());
        assert!(
            e.is_err_and(|e| e.is_not_found()),
            "{name}: ../../ past the root"
        );
    }
}

fn mksquashfs(args: &'static [&'static str]) -> impl Fn(&Path, &Path) {
    move |src, img| {
        run(Command::new("mksquashfs")
            .arg(src)
            .arg(img)
            .args(["-quiet", "-no-progress", "-noappend"])
            .args(args));
    }
}

#[test]
fn mksquashfs_zstd_4k_blocks() {
    check("zstd-4k", "", mksquashfs(&["-comp", "zstd", "-b", "4096"]));
}

#[test]
fn mksquashfs_gzip_no_fragments() {
    check(
        "gzip-nofrag",
        "",
        mksquashfs(&["-comp", "gzip", "-no-fragments"]),
    );
}

#[test]
fn mksquashfs_xz_1m_always_fragments() {
    check(
        "xz-1m",
        "",
        mksquashfs(&["-comp", "xz", "-b", "1M", "-always-use-fragments"]),
    );
}

#[test]
fn mksquashfs_uncompressed_metadata_and_data() {
    check(
        "uncompressed",
        "",
        mksquashfs(&["-comp", "zstd", "-noI", "-noD", "-noF", "-noX"]),
    );
}

#[test]
fn mksquashfs_keep_as_directory() {
    check(
        "keep-dir",
        "/src",
        mksquashfs(&["-comp", "zstd", "-keep-as-directory", "-b", "64K"]),
    );
}

fn ours(block_size: u32, fragments: bool) -> impl Fn(&Path, &Path) {
    move |src, img| {
        let mut scanner = Scanner::new(ScanOptions {
            owner: Owner::Preserve,
            perms: Perms::Preserve,
            mtime: Mtime::Host,
            hardlinks: true,
        });
        let tree = scanner.scan(src).unwrap();
        let opts = imgbuild_squashfs::Options {
            block_size,
            fragments,
            ..imgbuild_squashfs::Options::default()
        };
        imgbuild_squashfs::write(&tree, &opts, fs::File::create(img).unwrap()).unwrap();
    }
}

#[test]
fn our_writer_default() {
    check("ours", "", ours(128 << 10, true));
}

#[test]
fn our_writer_1m_no_fragments() {
    check("ours-1m", "", ours(1 << 20, false));
}

#[test]
fn lz4_is_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("f"), b"x").unwrap();
    let img = t.path().join("lz4.sqfs");
    mksquashfs(&["-comp", "lz4"])(t.path(), &img);
    let image = Image::open(&img).unwrap();
    let e = image.root_filesystem().unwrap_err();
    let msg = imgbuild_units::error_chain(&e);
    assert!(msg.contains("squashfs compressed with lz4"), "{msg}");
}

/// The tree (without its biggest file), as `make` writes it, fuzzed.
fn fuzz(name: &str, make: impl Fn(&Path, &Path)) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    host_tree(&src);
    fs::remove_file(src.join("blocks/noise-3m")).unwrap();
    let img = t.path().join("fuzz.sqfs");
    make(&src, &img);
    crate::fuzz::clean(&img);
    crate::fuzz::fuzz(name, &img);
}

#[test]
fn fuzz_mksquashfs_image() {
    fuzz(
        "squashfs-mksquashfs",
        mksquashfs(&["-comp", "zstd", "-b", "4096"]),
    );
}

#[test]
fn fuzz_our_image() {
    fuzz("squashfs-ours", ours(4096, true));
}
