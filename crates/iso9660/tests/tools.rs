//! The ISO 9660 writer checked by other readers: xorriso, isoinfo (genisoimage), 7-Zip
//! (`7zz`) and bsdtar (libarchive). These tools must be installed (CI installs xorriso,
//! genisoimage, 7zip and libarchive-tools); a missing tool fails the test.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use imgbuild_blockio::NoProgress;
use imgbuild_diskmap::sinks::RawFile;
use imgbuild_diskmap::{stream, StreamOptions};
use imgbuild_fstree::{FileData, Kind, Meta, Node, Tree};
use imgbuild_iso9660::{plan, BiosBoot, EfiBoot, Extent, Options, Plan};
use imgbuild_testutil::{noise, run};

const T0: i64 = 1_700_000_001; // 2023-11-14 22:13:21 UTC

fn meta(perm: u16, mtime: i64) -> Meta {
    Meta::new(perm, 1000, 100, mtime)
}

fn add(tree: &mut Tree, path: &str, node: Node) {
    let (parent, _) = imgbuild_fstree::split_parent(path.as_bytes());
    tree.mkdir_p(parent, meta(0o755, T0)).unwrap();
    tree.insert_path(path.as_bytes(), node).unwrap();
}

/// A FAT image holding `EFI/BOOT/BOOTX64.EFI`, made by the `imgbuild-fat` crate.
fn efi_image(dir: &Path) -> PathBuf {
    let mut t = Tree::new(meta(0o755, T0));
    add(
        &mut t,
        "EFI/BOOT/BOOTX64.EFI",
        Node::bytes(meta(0o644, T0), noise(7, 70_000)),
    );
    let p = imgbuild_fat::plan(&t, 2 << 20, &imgbuild_fat::Options::default()).unwrap();
    let path = dir.join("efi.img");
    let f = File::create(&path).unwrap();
    f.set_len(p.fs_bytes()).unwrap();
    imgbuild_diskmap::write_file(&p.map(&t).unwrap(), &f).unwrap();
    path
}

fn long_name(prefix: &str, len: usize) -> String {
    let mut s = prefix.to_owned();
    while s.len() < len {
        s.push(char::from(b'a' + (s.len() % 26) as u8));
    }
    s
}

/// A tree with long names, colliding ISO names, deep directories, symlinks, an empty
/// file, a hard link, a host file, a directory of several blocks, and boot files.
fn test_tree(dir: &Path) -> Tree {
    let mut t = Tree::new(Meta::new(0o755, 0, 0, T0));
    add(
        &mut t,
        "hello.txt",
        Node::bytes(meta(0o644, T0 + 1), b"hello\n".to_vec()),
    );
    add(
        &mut t,
        "empty",
        Node::bytes(meta(0o600, T0 + 2), Vec::new()),
    );
    add(
        &mut t,
        "bin/run.sh",
        Node::bytes(meta(0o755, T0), b"#!/bin/sh\n".to_vec()),
    );
    add(
        &mut t,
        "bin/setuid",
        Node::bytes(Meta::new(0o4711, 0, 0, T0), b"x".to_vec()),
    );
    for name in ["README", "readme", "ReadMe.md", "readme.MD", "read me.md"] {
        let body = format!("{name}\n").into_bytes();
        add(
            &mut t,
            &format!("collide/{name}"),
            Node::bytes(meta(0o644, T0), body),
        );
    }
    let long = long_name("a very long name, well past ISO's thirty characters ", 255);
    add(
        &mut t,
        &format!("names/{long}"),
        Node::bytes(meta(0o644, T0), b"long\n".to_vec()),
    );
    add(
        &mut t,
        "names/ünïcödé.txt",
        Node::bytes(meta(0o644, T0), b"utf8\n".to_vec()),
    );
    let deep: Vec<String> = (0..12).map(|i| format!("level{i}")).collect();
    add(
        &mut t,
        &format!("{}/leaf.txt", deep.join("/")),
        Node::bytes(meta(0o444, T0), b"deep\n".to_vec()),
    );
    add(
        &mut t,
        "links/abs",
        Node::symlink(meta(0o777, T0), b"/nix/store/abc-hello/bin/hello".to_vec()),
    );
    add(
        &mut t,
        "links/rel",
        Node::symlink(meta(0o777, T0), b"../collide/./README".to_vec()),
    );
    let far = format!("../{}/{}/x", "d".repeat(300), "e".repeat(250));
    add(
        &mut t,
        "links/far",
        Node::symlink(meta(0o777, T0), far.into_bytes()),
    );
    // Two names of one node: stored once.
    let blob_path = dir.join("blob.bin");
    fs::write(&blob_path, noise(1, 3 << 20)).unwrap();
    let blob = t.add(Node::file(
        meta(0o644, T0),
        FileData::Host {
            path: blob_path,
            size: 3 << 20,
        },
    ));
    t.mkdir_p(b"data", meta(0o755, T0)).unwrap();
    let data = t.lookup(b"data").unwrap();
    t.link(data, b"blob.bin", blob).unwrap();
    t.link(data, b"blob-again.bin", blob).unwrap();
    // A directory of several blocks whose names need continuation areas.
    for i in 0..120 {
        let name = long_name(&format!("entry-{i:03}-"), 200);
        add(
            &mut t,
            &format!("many/{name}"),
            Node::bytes(meta(0o644, T0 + i), format!("{i}\n").into_bytes()),
        );
    }
    add_boot_files(&mut t, dir);
    t
}

/// isolinux.bin (noise), the catalog placeholder and an ESP image.
fn add_boot_files(t: &mut Tree, dir: &Path) {
    add(
        t,
        "isolinux/isolinux.bin",
        Node::bytes(meta(0o444, T0), noise(3, 20_000)),
    );
    add(
        t,
        "isolinux/boot.cat",
        Node::bytes(meta(0o444, T0), vec![0u8; 2048]),
    );
    let efi = efi_image(dir);
    let size = fs::metadata(&efi).unwrap().len();
    add(
        t,
        "boot/efi.img",
        Node::file(meta(0o644, T0), FileData::Host { path: efi, size }),
    );
}

fn options() -> Options {
    Options {
        volume_id: "nixos-test-25.11-x86_64".into(),
        system_id: "LINUX".into(),
        publisher_id: "imgbuild".into(),
        preparer_id: String::new(),
        application_id: "imgbuild tests".into(),
        time: T0,
        bios: Some(BiosBoot {
            image: b"isolinux/isolinux.bin".to_vec(),
            load_sectors: 4,
            boot_info_table: true,
        }),
        efi: Some(EfiBoot {
            image: b"boot/efi.img".to_vec(),
            load_sectors: None,
        }),
        catalog: Some(b"isolinux/boot.cat".to_vec()),
    }
}

/// Writes the volume into `path`, streamed by `readers` threads.
fn write(p: &Plan, tree: &Tree, path: &Path, readers: usize) {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    file.set_len(p.bytes()).unwrap();
    let map = p.map(tree, &[]).unwrap();
    let mut raw = RawFile::new(&file, p.bytes(), "test image");
    stream(
        &map,
        &mut [&mut raw],
        &StreamOptions { readers },
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
}

/// What a reader must find: path -> (mode with type bits, uid, gid, content or target).
#[derive(Debug, PartialEq, Eq)]
enum Want {
    Dir,
    File(Vec<u8>),
    Link(Vec<u8>),
}

/// Path -> (mode with type bits, uid, gid, content or target).
type Entries = BTreeMap<String, (u32, u32, u32, Want)>;

fn expected(tree: &Tree) -> Entries {
    let mut out = BTreeMap::new();
    for (path, id) in tree.walk().into_iter().skip(1) {
        let n = tree.node(id);
        let (bits, want) = match &n.kind {
            Kind::Dir(_) => (0o040_000, Want::Dir),
            Kind::File(FileData::Bytes(b)) => (0o100_000, Want::File(b.to_vec())),
            Kind::File(FileData::Host { path, .. }) => {
                (0o100_000, Want::File(fs::read(path).unwrap()))
            }
            Kind::Symlink(t) => (0o120_000, Want::Link(t.clone())),
            other => panic!("unexpected {other:?}"),
        };
        let path = String::from_utf8(path).unwrap();
        out.insert(
            path,
            (bits | u32::from(n.meta.perm), n.meta.uid, n.meta.gid, want),
        );
    }
    out
}

/// Compares an unpacked tree with `want`: names, contents and targets always, modes and
/// owners when `modes`.
fn compare_unpacked(
    root: &Path,
    want: &Entries,
    modes: bool,
    tool: &str,
    skip: impl Fn(&str) -> bool,
) {
    let mut got = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = format!("/{}", p.strip_prefix(root).unwrap().to_str().unwrap());
            let m = fs::symlink_metadata(&p).unwrap();
            let w = if m.file_type().is_symlink() {
                Want::Link(
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                Want::Dir
            } else {
                Want::File(fs::read(&p).unwrap())
            };
            if !skip(&rel) {
                got.insert(rel, (m.mode(), m.uid(), m.gid(), w));
            }
        }
    }
    let want: BTreeMap<_, _> = want.iter().filter(|(p, _)| !skip(p)).collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().copied().collect::<Vec<_>>(),
        "{tool}: the names differ"
    );
    for (path, (mode, uid, gid, w)) in want {
        let path = path.as_str();
        let g = &got[path];
        // 7-Zip extracts an absolute symlink as one into its output directory.
        let w = match w {
            Want::Link(t) if tool == "7zz" && t.starts_with(b"/") => {
                let mut moved = root.as_os_str().as_encoded_bytes().to_vec();
                moved.extend_from_slice(t);
                &Want::Link(moved)
            }
            w => w,
        };
        assert!(
            g.3 == *w,
            "{tool}: {path}: content or target differs{}",
            match (&g.3, w) {
                (Want::Link(a), Want::Link(b)) => format!(
                    ": {:?} instead of {:?}",
                    String::from_utf8_lossy(a),
                    String::from_utf8_lossy(b)
                ),
                _ => String::new(),
            }
        );
        if modes && !matches!(w, Want::Link(_)) {
            assert_eq!(
                (g.0, g.1, g.2),
                (*mode, *uid, *gid),
                "{tool}: {path}: mode and owner"
            );
        }
    }
}

/// `ls -l`'s mode column for `mode`.
fn ls_mode(mode: u32) -> String {
    let kind = match mode & 0o170_000 {
        0o040_000 => 'd',
        0o120_000 => 'l',
        _ => '-',
    };
    let mut s = String::from(kind);
    for (shift, special, set) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => set,
            (true, false) => set.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Reads one shell word (`'...'` runs and `"..."` runs glued together) from `s`.
fn shell_word(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut rest = s;
    loop {
        let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            return (out, rest);
        };
        let end = rest[1..].find(q).unwrap() + 1;
        out.push_str(&rest[1..end]);
        rest = &rest[end + 1..];
    }
}

/// `xorriso -find / -exec lsdl`: path -> (mode column, uid, gid, size, link target).
fn xorriso_lsdl(iso: &str) -> BTreeMap<String, (String, u32, u32, u64, Option<String>)> {
    let out = run(Command::new("xorriso").args(["-indev", iso, "-find", "/", "-exec", "lsdl"]));
    let mut got = BTreeMap::new();
    for line in out.lines().filter(|l| l.contains(" '/")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let quote = line.find(" '/").unwrap() + 1;
        let (path, rest) = shell_word(&line[quote..]);
        let target = rest.strip_prefix(" -> ").map(|t| shell_word(t).0);
        got.insert(
            path,
            (
                f[0].to_owned(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
                target,
            ),
        );
    }
    got
}

/// `image` with the boot information table isolinux expects, computed here independently.
fn with_boot_info_table(mut image: Vec<u8>, lba: u32) -> Vec<u8> {
    let mut sum = 0u32;
    for i in (64..image.len()).step_by(4) {
        let mut w = [0u8; 4];
        let end = (i + 4).min(image.len());
        w[..end - i].copy_from_slice(&image[i..end]);
        sum = sum.wrapping_add(u32::from_le_bytes(w));
    }
    let len = image.len() as u32;
    for (at, v) in [(8, 16u32), (12, lba), (16, len), (20, sum)] {
        image[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    image[24..64].fill(0);
    image
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(&File::open(path).unwrap(), &mut buf, offset)
        .unwrap();
    buf
}

/// The catalog, checked field by field; its bytes (which replace the placeholder's).
fn check_catalog(iso: &Path, catalog: u32, bios: Extent, efi: Extent) -> Vec<u8> {
    // The catalog, checked field by field (its bytes replace the placeholder's).
    let cat = read_at(iso, u64::from(catalog) * 2048, 2048);
    let sum = cat[..32].chunks(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    assert_eq!(
        (cat[0], cat[1], cat[30], cat[31], sum),
        (1, 0, 0x55, 0xAA, 0)
    );
    assert_eq!(&cat[32..34], &[0x88, 0]);
    assert_eq!(u16::from_le_bytes([cat[38], cat[39]]), 4);
    assert_eq!(
        u32::from_le_bytes(cat[40..44].try_into().unwrap()),
        bios.lba
    );
    assert_eq!(&cat[64..68], &[0x91, 0xEF, 1, 0]);
    assert_eq!(&cat[96..98], &[0x88, 0]);
    assert_eq!(
        u32::from_le_bytes(cat[104..108].try_into().unwrap()),
        efi.lba
    );
    cat
}

/// `xorriso -report_el_torito plain` and `-find / -exec lsdl`.
fn check_xorriso(iso_s: &str, want: &Entries, catalog: u32, bios: Extent, efi: Extent) {
    let report = run(Command::new("xorriso").args(["-indev", iso_s, "-report_el_torito", "plain"]));
    let lines: Vec<String> = report
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for needle in [
        format!("El Torito catalog : {catalog} 1"),
        "El Torito cat path : /isolinux/boot.cat".to_owned(),
        format!(
            "El Torito boot img : 1 BIOS y none 0x0000 0x00 4 {}",
            bios.lba
        ),
        format!(
            "El Torito boot img : 2 UEFI y none 0x0000 0x00 {} {}",
            efi.bytes / 512,
            efi.lba
        ),
        "El Torito img path : 1 /isolinux/isolinux.bin".to_owned(),
        "El Torito img opts : 1 boot-info-table".to_owned(),
        "El Torito img path : 2 /boot/efi.img".to_owned(),
    ] {
        assert!(
            lines.contains(&needle),
            "xorriso -report_el_torito lacks {needle:?}:\n{report}"
        );
    }

    let lsdl = xorriso_lsdl(iso_s);
    assert_eq!(
        lsdl.len(),
        want.len() + 1,
        "xorriso lists the root and every entry"
    );
    for (path, (mode, uid, gid, w)) in want {
        let (m, u, g, size, target) = &lsdl[path];
        let m = if path == "/isolinux/boot.cat" {
            m.replacen('e', "-", 1)
        } else {
            m.clone()
        };
        assert_eq!((m, *u, *g), (ls_mode(*mode), *uid, *gid), "xorriso: {path}");
        match w {
            Want::File(b) => assert_eq!(*size, b.len() as u64, "xorriso: {path}"),
            Want::Link(t) => assert_eq!(
                target.as_deref(),
                Some(std::str::from_utf8(t).unwrap()),
                "xorriso: {path}"
            ),
            Want::Dir => {}
        }
    }
}

/// `isoinfo -d`, `-l` and `-x`, with Rock Ridge.
fn check_isoinfo(iso_s: &str, want: &Entries, p: &Plan, catalog: u32, bios: Extent) {
    let d = run(Command::new("isoinfo").args(["-d", "-R", "-i", iso_s]));
    for needle in [
        "Volume id: nixos-test-25.11-x86_64".to_owned(),
        "Rock Ridge signatures version 1 found".to_owned(),
        format!("El Torito VD version 1 found, boot catalog is in sector {catalog}"),
        format!("Bootoff {:X} {}", bios.lba, bios.lba),
        format!("Volume size is: {}", p.blocks()),
    ] {
        assert!(d.contains(&needle), "isoinfo -d lacks {needle:?}:\n{d}");
    }
    let l = run(Command::new("isoinfo").args(["-R", "-l", "-i", iso_s]));
    for path in want.keys() {
        let base = path.rsplit('/').next().unwrap();
        assert!(
            l.contains(&format!("]  {base} ")),
            "isoinfo -R -l lacks {path}"
        );
    }
    for path in ["/hello.txt", "/data/blob.bin", "/collide/read me.md"] {
        let out = imgbuild_testutil::run_output(
            Command::new("isoinfo").args(["-R", "-i", iso_s, "-x", path]),
        );
        assert!(Want::File(out.stdout) == want[path].3, "isoinfo -x {path}");
    }
}

/// `7zz x` and `7zz l`.
fn check_7zz(dir: &Path, iso_s: &str, want: &Entries) {
    let z = dir.join("7zz");
    run(Command::new("7zz")
        .args(["x", "-snl", "-snld", iso_s])
        .arg(format!("-o{}", z.display())));
    // 7-Zip shows the boot images as files of `[BOOT]` and reads no continuation areas:
    // names longer than a record holds show as their ISO 9660 names, and the symlink
    // whose target needed one is not a symlink there.
    let beyond_7zz = |p: &str| {
        p.starts_with("/[BOOT]")
            || p == "/links/far"
            || p.starts_with("/many/")
            || p.starts_with("/names/a very long name")
            || p == "/names/A_VERY_LONG_NAME__WELL_PAST_I"
    };
    compare_unpacked(&z, want, false, "7zz", beyond_7zz);
    let listing = run(Command::new("7zz").args(["l", iso_s]));
    assert!(
        listing.contains("Volume: nixos-test-25.11-x86_64"),
        "{listing}"
    );
}

/// `bsdtar -xpf` and `-tvf`.
fn check_bsdtar(dir: &Path, iso_s: &str, want: &Entries) {
    let x = dir.join("bsdtar");
    fs::create_dir(&x).unwrap();
    run(Command::new("bsdtar").args(["-xpf", iso_s, "-C"]).arg(&x));
    fs::set_permissions(&x, fs::Permissions::from_mode(0o755)).unwrap();
    compare_unpacked(&x, want, true, "bsdtar", |_| false);
    let tv = run(Command::new("bsdtar").args(["-tvf", iso_s]));
    assert!(tv.contains("-rws--x--x  1 0      0           1 "), "{tv}");
}

#[test]
fn tools_read_back_names_modes_links_and_boot_entries() {
    let dir = tempfile::tempdir().unwrap();
    let tree = test_tree(dir.path());
    let p = plan(&tree, &options()).unwrap();
    let iso = dir.path().join("test.iso");
    write(&p, &tree, &iso, 4);
    let iso_s = iso.to_str().unwrap();
    let bios = p.bios_image().unwrap();
    let efi = p.efi_image().unwrap();
    let catalog = p.catalog_lba().unwrap();
    assert_eq!(p.extent(&tree, b"isolinux/boot.cat").unwrap().lba, catalog);
    assert_eq!(p.extent(&tree, b"boot/efi.img"), Some(efi));

    let mut want = expected(&tree);
    let isolinux = match &mut want.get_mut("/isolinux/isolinux.bin").unwrap().3 {
        Want::File(b) => b,
        _ => unreachable!(),
    };
    *isolinux = with_boot_info_table(std::mem::take(isolinux), bios.lba);
    let cat = check_catalog(&iso, catalog, bios, efi);
    want.get_mut("/isolinux/boot.cat").unwrap().3 = Want::File(cat);

    check_xorriso(iso_s, &want, catalog, bios, efi);
    check_isoinfo(iso_s, &want, &p, catalog, bios);
    check_7zz(dir.path(), iso_s, &want);
    check_bsdtar(dir.path(), iso_s, &want);

    // Same bytes: one reader thread, and a tree built again from other host files.
    let again = dir.path().join("again");
    fs::create_dir(&again).unwrap();
    let tree2 = test_tree(&again);
    let p2 = plan(&tree2, &options()).unwrap();
    let iso2 = dir.path().join("test2.iso");
    write(&p2, &tree2, &iso2, 1);
    assert!(
        fs::read(&iso).unwrap() == fs::read(&iso2).unwrap(),
        "two builds differ"
    );
}

/// A sparse host file of 4 GiB + 4 KiB: two extents, the boundary inside written data.
#[test]
fn file_over_4_gib_is_multi_extent() {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = (4 << 30) + 4096;
    let boundary: u64 = imgbuild_iso9660::MAX_EXTENT;
    let marks: [(u64, Vec<u8>); 3] = [
        (0, noise(11, 4096)),
        (boundary - 3000, noise(12, 6000)),
        (size - 100, noise(13, 100)),
    ];
    let big = dir.path().join("big");
    let f = File::create(&big).unwrap();
    f.set_len(size).unwrap();
    for (at, data) in &marks {
        f.write_all_at(data, *at).unwrap();
    }
    let mut tree = Tree::new(meta(0o755, T0));
    add(
        &mut tree,
        "store/big.img",
        Node::file(meta(0o444, T0), FileData::Host { path: big, size }),
    );
    add(
        &mut tree,
        "store/after",
        Node::bytes(meta(0o444, T0), b"after\n".to_vec()),
    );
    let opts = Options {
        volume_id: "BIG".into(),
        time: T0,
        ..Options::default()
    };
    let p = plan(&tree, &opts).unwrap();
    let iso = dir.path().join("big.iso");
    write(&p, &tree, &iso, 4);
    let iso_s = iso.to_str().unwrap();

    let lsdl = xorriso_lsdl(iso_s);
    assert_eq!(
        lsdl["/store/big.img"].3, size,
        "xorriso: the size of the multi-extent file"
    );
    assert_eq!(lsdl["/store/after"].3, 6);
    let l = run(Command::new("7zz").args(["l", iso_s]));
    assert!(
        l.contains(&format!(" {size} ")),
        "7zz l: no entry of {size} bytes:\n{l}"
    );

    // bsdtar streams the file: the marks where they were written, zeros elsewhere.
    let mut child = Command::new("bsdtar")
        .args(["-xOf", iso_s, "store/big.img"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let zeros = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let mut expect = zeros[..n].to_vec();
        for (at, data) in &marks {
            let (s, e) = (*at, at + data.len() as u64);
            let (lo, hi) = (s.max(pos), e.min(pos + n as u64));
            if lo < hi {
                expect[(lo - pos) as usize..(hi - pos) as usize]
                    .copy_from_slice(&data[(lo - s) as usize..(hi - s) as usize]);
            }
        }
        assert!(
            buf[..n] == expect[..],
            "bsdtar: bytes differ in the MiB at {pos}"
        );
        pos += n as u64;
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(pos, size, "bsdtar: the length of the multi-extent file");
}

#[test]
fn errors_are_typed_and_name_the_culprit() {
    use imgbuild_iso9660::Error;
    let base = || {
        let mut t = Tree::new(meta(0o755, T0));
        add(
            &mut t,
            "a/file",
            Node::bytes(meta(0o644, T0), b"x".to_vec()),
        );
        t
    };
    let opts = || Options {
        volume_id: "V".into(),
        time: T0,
        ..Options::default()
    };

    let mut t = base();
    let name = "n".repeat(256);
    add(
        &mut t,
        &format!("a/{name}"),
        Node::bytes(meta(0o644, T0), Vec::new()),
    );
    match plan(&t, &opts()) {
        Err(Error::NameTooLong { path, len }) => {
            assert_eq!((path, len), (format!("/a/{name}"), 256))
        }
        other => panic!("{other:?}"),
    }

    let mut t = base();
    let deep = vec!["d"; imgbuild_iso9660::MAX_DEPTH + 1].join("/");
    t.mkdir_p(deep.as_bytes(), meta(0o755, T0)).unwrap();
    assert!(
        matches!(plan(&t, &opts()), Err(Error::TooDeep { depth, .. }) if depth == imgbuild_iso9660::MAX_DEPTH + 1)
    );

    let mut o = opts();
    o.volume_id = "x".repeat(33);
    assert!(matches!(
        plan(&base(), &o),
        Err(Error::BadIdentifier {
            field: "volume identifier",
            ..
        })
    ));
    let mut o = opts();
    o.publisher_id = "tab\there".into();
    assert!(matches!(
        plan(&base(), &o),
        Err(Error::BadIdentifier {
            field: "publisher identifier",
            ..
        })
    ));

    let mut o = opts();
    o.efi = Some(EfiBoot {
        image: b"a".to_vec(),
        load_sectors: None,
    });
    match plan(&base(), &o) {
        Err(e @ Error::NotAFile { .. }) => assert_eq!(
            e.to_string(),
            "the UEFI boot image `a` is not a regular file in the tree"
        ),
        other => panic!("{other:?}"),
    }
    let mut o = opts();
    o.bios = Some(BiosBoot {
        image: b"a/file".to_vec(),
        load_sectors: 4,
        boot_info_table: true,
    });
    assert!(matches!(
        plan(&base(), &o),
        Err(Error::BootImageTooBig { size: 1, .. })
    ));
    let mut o = opts();
    o.bios = Some(BiosBoot {
        image: b"a/file".to_vec(),
        load_sectors: 4,
        boot_info_table: false,
    });
    o.catalog = Some(b"a/file".to_vec());
    assert!(matches!(
        plan(&base(), &o),
        Err(Error::CatalogSize { size: 1, .. })
    ));

    let mut t = base();
    add(
        &mut t,
        "a/empty-link",
        Node::symlink(meta(0o777, T0), Vec::new()),
    );
    assert!(matches!(
        plan(&t, &opts()),
        Err(Error::BadSymlink { len: 0, .. })
    ));

    let p = plan(&base(), &opts()).unwrap();
    assert!(matches!(
        p.map(&base(), &[0u8; 32769]),
        Err(Error::SystemAreaTooBig { len: 32769 })
    ));

    // A host file that changed size after planning.
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("h");
    fs::write(&host, b"12345").unwrap();
    let mut t = base();
    add(
        &mut t,
        "a/h",
        Node::file(
            meta(0o644, T0),
            FileData::Host {
                path: host.clone(),
                size: 5,
            },
        ),
    );
    let p = plan(&t, &opts()).unwrap();
    fs::write(&host, b"123").unwrap();
    match p.map(&t, &[]) {
        Err(
            e @ Error::Source {
                source:
                    imgbuild_blockio::SourceError::Changed {
                        planned: 5,
                        found: 3,
                        ..
                    },
                ..
            },
        ) => {
            // The entry, then the host file and what changed.
            assert_eq!(
                imgbuild_testutil::error_chain(&e),
                format!(
                    "the source of `/a/h`: `{}` changed since it was scanned: planned 5 bytes, found 3",
                    host.display()
                )
            )
        }
        other => panic!("{other:?}"),
    }
    // Swapped for a FIFO: refused at once (opening it for reading would wait for a writer).
    fs::remove_file(&host).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&host)
        .status()
        .unwrap()
        .success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(p.map(&t, &[]).map(|_| ()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(10)) {
        Ok(Err(Error::Source {
            path,
            source: imgbuild_blockio::SourceError::NotRegular { found, .. },
        })) => assert_eq!((path.as_str(), found), ("/a/h", "a FIFO")),
        other => panic!("not refused at once: {other:?}"),
    }
}

/// UEFI only, the catalog in a block no directory names, a system area from the caller.
#[test]
fn uefi_only_with_hidden_catalog_and_system_area() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::new(meta(0o755, T0));
    let efi = efi_image(dir.path());
    let size = fs::metadata(&efi).unwrap().len();
    add(
        &mut tree,
        "boot/efi.img",
        Node::file(meta(0o644, T0), FileData::Host { path: efi, size }),
    );
    let opts = Options {
        volume_id: "UEFI_ONLY".into(),
        time: T0,
        efi: Some(EfiBoot {
            image: b"boot/efi.img".to_vec(),
            load_sectors: Some(1),
        }),
        ..Options::default()
    };
    let p = plan(&tree, &opts).unwrap();
    let catalog = p.catalog_lba().unwrap();
    let efi = p.efi_image().unwrap();
    assert_eq!(p.files().collect::<Vec<_>>(), [("/boot/efi.img", efi)]);
    let iso = dir.path().join("uefi.iso");
    let system_area = noise(5, 17 * 512);
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&iso)
        .unwrap();
    file.set_len(p.bytes()).unwrap();
    imgbuild_diskmap::write_file(&p.map(&tree, &system_area).unwrap(), &file).unwrap();
    assert!(read_at(&iso, 0, system_area.len()) == system_area);
    assert!(
        read_at(&iso, system_area.len() as u64, 32768 - system_area.len())
            .iter()
            .all(|&b| b == 0)
    );
    let iso_s = iso.to_str().unwrap();
    let report = run(Command::new("xorriso").args(["-indev", iso_s, "-report_el_torito", "plain"]));
    let lines: Vec<String> = report
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for needle in [
        format!("El Torito catalog : {catalog} 1"),
        format!(
            "El Torito boot img : 1 UEFI y none 0x0000 0x00 1 {}",
            efi.lba
        ),
        "El Torito img path : 1 /boot/efi.img".to_owned(),
    ] {
        assert!(
            lines.contains(&needle),
            "xorriso -report_el_torito lacks {needle:?}:\n{report}"
        );
    }
    let cat = read_at(&iso, u64::from(catalog) * 2048, 64);
    assert_eq!(cat[1], 0xEF, "the validation entry names the UEFI platform");
    let d = run(Command::new("isoinfo").args(["-d", "-R", "-i", iso_s]));
    assert!(d.contains("Volume id: UEFI_ONLY"), "{d}");
    assert!(
        d.contains(&format!("boot catalog is in sector {catalog}")),
        "{d}"
    );
}

/// Devices and a FIFO: `PX` file types and `PN` numbers, read back by xorriso and bsdtar.
#[test]
fn devices_and_fifos_keep_their_type_and_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::new(meta(0o755, T0));
    let nodes = [
        (
            "dev/null",
            Kind::CharDev { major: 1, minor: 3 },
            'c',
            0o020_000,
        ),
        (
            "dev/loop0",
            Kind::BlockDev { major: 7, minor: 0 },
            'b',
            0o060_000,
        ),
        (
            "dev/ttyS300",
            Kind::CharDev {
                major: 4,
                minor: 300,
            },
            'c',
            0o020_000,
        ),
        ("run/fifo", Kind::Fifo, 'p', 0o010_000),
    ];
    for (path, kind, ..) in &nodes {
        add(
            &mut tree,
            path,
            Node {
                meta: meta(0o640, T0),
                kind: kind.clone(),
            },
        );
    }
    let p = plan(
        &tree,
        &Options {
            volume_id: "DEV".into(),
            time: T0,
            ..Options::default()
        },
    )
    .unwrap();
    let iso = dir.path().join("dev.iso");
    write(&p, &tree, &iso, 2);
    let iso_s = iso.to_str().unwrap();
    let out = run(Command::new("xorriso").args(["-indev", iso_s, "-find", "/", "-exec", "lsdl"]));
    let x = dir.path().join("x");
    fs::create_dir(&x).unwrap();
    run(Command::new("bsdtar").args(["-xpf", iso_s, "-C"]).arg(&x));
    for (path, kind, c, bits) in &nodes {
        let line = out
            .lines()
            .find(|l| l.ends_with(&format!("'/{path}'")))
            .unwrap();
        assert!(
            line.starts_with(&format!("{c}rw-r-----")),
            "xorriso: {line}"
        );
        let m = fs::symlink_metadata(x.join(path)).unwrap();
        assert_eq!(m.mode(), bits | 0o640, "bsdtar: {path}");
        assert_eq!((m.uid(), m.gid()), (1000, 100), "bsdtar: {path}");
        if let Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } = kind {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f[4], format!("{major},{minor}"), "xorriso: {line}");
            let rdev = m.rdev();
            let got = (
                (rdev >> 8) & 0xfff | ((rdev >> 32) & !0xfff),
                (rdev & 0xff) | ((rdev >> 12) & !0xff),
            );
            assert_eq!(
                got,
                (u64::from(*major), u64::from(*minor)),
                "bsdtar: {path}"
            );
        }
    }
}

/// The EFI image given as a map (`map_with`, as a planner does with a FAT image it never
/// writes) gives the same volume as the image read from a host file; a map of another length,
/// or one for a path the tree lacks, is refused.
#[test]
fn supplied_map_equals_the_host_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut from_file = Tree::new(Meta::new(0o755, 0, 0, T0));
    add_boot_files(&mut from_file, dir.path());
    let p = plan(&from_file, &options()).unwrap();
    let a = dir.path().join("a.iso");
    write(&p, &from_file, &a, 2);

    // The same tree whose efi.img points nowhere: only its size is read.
    let efi = dir.path().join("efi.img");
    let size = fs::metadata(&efi).unwrap().len();
    let mut supplied_tree = from_file.clone();
    let node = supplied_tree.lookup(b"boot/efi.img").unwrap();
    supplied_tree.node_mut(node).kind = Kind::File(FileData::Host {
        path: dir.path().join("not-there"),
        size,
    });
    let p2 = plan(&supplied_tree, &options()).unwrap();
    let fat_map = |len: u64| {
        let mut b = imgbuild_diskmap::MapBuilder::new("efi", len);
        b.file(
            0,
            &imgbuild_diskmap::SourceFile::new(&efi, size),
            0,
            len.min(size),
        )
        .unwrap();
        b.finish().unwrap()
    };
    let map = p2
        .map_with(
            &supplied_tree,
            &[],
            vec![imgbuild_iso9660::Supplied {
                path: b"boot/efi.img".to_vec(),
                map: fat_map(size),
            }],
        )
        .unwrap();
    let b = dir.path().join("b.iso");
    let file = File::create(&b).unwrap();
    file.set_len(map.len()).unwrap();
    imgbuild_diskmap::write_file(&map, &file).unwrap();
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());

    let short = p2.map_with(
        &supplied_tree,
        &[],
        vec![imgbuild_iso9660::Supplied {
            path: b"boot/efi.img".to_vec(),
            map: fat_map(size - 512),
        }],
    );
    let e = short.expect_err("a map shorter than its file is refused");
    assert!(e.to_string().contains("boot/efi.img"), "{e}");
    let missing = p2.map_with(
        &supplied_tree,
        &[],
        vec![imgbuild_iso9660::Supplied {
            path: b"boot/nothing.img".to_vec(),
            map: fat_map(size),
        }],
    );
    let e = missing.expect_err("a map for no file is refused");
    assert!(e.to_string().contains("boot/nothing.img"), "{e}");
}
