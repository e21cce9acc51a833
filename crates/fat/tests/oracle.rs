//! The FAT writer checked by other readers: fsck.fat (dosfstools), mtools and the `fatfs`
//! crate, and its geometry against mkfs.fat itself. These tools must be installed (CI
//! installs dosfstools and mtools); a missing tool fails the test.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use imgbuild_blockio::NoProgress;
use imgbuild_diskmap::sinks::RawFile;
use imgbuild_diskmap::{stream, MapBuilder, StreamOptions};
use imgbuild_fat::{min_size, plan, Error, FatType, Options, Plan};
use imgbuild_fstree::{FileData, Meta, Node, Tree, ROOT};
use proptest::prelude::*;

const T0: i64 = 1_700_000_001; // 2023-11-14 22:13:21 UTC, an odd second
const FAT_EPOCH: i64 = 315_532_800; // 1980-01-01
const FAT_END: i64 = 4_354_819_199; // 2107-12-31 23:59:59

fn meta(mtime: i64) -> Meta {
    Meta::new(0o644, 0, 0, mtime)
}

use imgbuild_testutil::noise;

fn add_bytes(tree: &mut Tree, path: &str, data: Vec<u8>, mtime: i64) {
    let (parent, _) = imgbuild_fstree::split_parent(path.as_bytes());
    tree.mkdir_p(parent, meta(T0)).unwrap();
    tree.insert_path(path.as_bytes(), Node::bytes(meta(mtime), data))
        .unwrap();
}

fn add_host(tree: &mut Tree, path: &str, host: &Path, mtime: i64) {
    let size = fs::metadata(host).unwrap().len();
    let (parent, _) = imgbuild_fstree::split_parent(path.as_bytes());
    tree.mkdir_p(parent, meta(T0)).unwrap();
    let data = FileData::Host {
        path: host.to_path_buf(),
        size,
    };
    tree.insert_path(path.as_bytes(), Node::file(meta(mtime), data))
        .unwrap();
}

#[derive(Debug, PartialEq, Eq)]
enum Want {
    Dir,
    /// Content source, and the modification and creation times FAT should give back.
    File(Source, i64, i64),
}

#[derive(Debug, PartialEq, Eq)]
enum Source {
    Bytes(Arc<[u8]>),
    Host(PathBuf, u64),
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::Host(_, n) => *n,
        }
    }
    fn read_at(&self, buf: &mut [u8], off: u64) {
        match self {
            Source::Bytes(b) => buf.copy_from_slice(&b[off as usize..off as usize + buf.len()]),
            Source::Host(p, _) => File::open(p).unwrap().read_exact_at(buf, off).unwrap(),
        }
    }
}

/// The mtime FAT stores for `t`: clamped to 1980..2107, rounded down to even seconds.
fn fat_mtime(t: i64) -> i64 {
    let t = t.clamp(FAT_EPOCH, FAT_END);
    t - t.rem_euclid(2)
}

/// The creation time FAT stores for `t`: clamped, to the second (10 ms field).
fn fat_ctime(t: i64) -> i64 {
    t.clamp(FAT_EPOCH, FAT_END)
}

fn expected(tree: &Tree) -> BTreeMap<String, Want> {
    tree.walk()
        .into_iter()
        .filter(|(p, _)| !p.is_empty())
        .map(|(p, id)| {
            let node = tree.node(id);
            let want = match &node.kind {
                imgbuild_fstree::Kind::Dir(_) => Want::Dir,
                imgbuild_fstree::Kind::File(FileData::Bytes(b)) => Want::File(
                    Source::Bytes(b.clone()),
                    fat_mtime(node.meta.mtime),
                    fat_ctime(node.meta.mtime),
                ),
                imgbuild_fstree::Kind::File(FileData::Host { path, size }) => Want::File(
                    Source::Host(path.clone(), *size),
                    fat_mtime(node.meta.mtime),
                    fat_ctime(node.meta.mtime),
                ),
                k => panic!("unexpected kind {k:?}"),
            };
            (String::from_utf8(p).unwrap(), want)
        })
        .collect()
}

/// Compare a stream of `len` bytes with `want`, in chunks.
fn same_content(mut got: impl Read, len: u64, want: &Source, what: &str) {
    assert_eq!(len, want.len(), "size of {what}");
    let mut a = vec![0u8; 1 << 20];
    let mut b = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(a.len() as u64) as usize;
        got.read_exact(&mut a[..n]).unwrap();
        want.read_at(&mut b[..n], off);
        assert!(
            a[..n] == b[..n],
            "content of {what} differs near offset {off}"
        );
        off += n as u64;
    }
    let mut rest = Vec::new();
    got.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{what} is longer than {len} bytes");
}

struct Img {
    _dir: tempfile::TempDir,
    path: PathBuf,
    plan: Plan,
}

/// Write the volume `p` maps into `file` at `offset`, streamed by `readers` threads.
fn write_at(p: &Plan, tree: &Tree, file: &File, offset: u64, readers: usize) {
    let len = file.metadata().unwrap().len();
    let mut b = MapBuilder::new("disk", len);
    b.place(offset, p.map(tree).unwrap()).unwrap();
    let map = b.finish().unwrap();
    let mut raw = RawFile::new(file, len, "test image");
    stream(
        &map,
        &mut [&mut raw],
        &StreamOptions { readers },
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
}

fn write_image(tree: &Tree, size: u64, opts: &Options) -> Img {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fat.img");
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.set_len(size).unwrap();
    let plan = plan(tree, size, opts).unwrap();
    write_at(&plan, tree, &file, 0, 2);
    Img {
        _dir: dir,
        path,
        plan,
    }
}

/// Lines fsck.fat -n -v prints for a clean volume. Any other line is a finding.
fn fsck_line_ok(line: &str) -> bool {
    let l = line.trim();
    l.starts_with("fsck.fat 4.")
        || l == "Checking we can access the last sector of the filesystem"
        || l == "Boot sector contents:"
        || l.starts_with("System ID \"")
        || l == "Media byte 0xf8 (hard disk)"
        || l.ends_with(" bytes per logical sector")
        || l.ends_with(" bytes per cluster")
        || l.ends_with(" reserved sectors")
        || l.ends_with(" reserved sector")
        || l.starts_with("First FAT starts at byte")
        || (l.contains(" FATs, ") && l.ends_with(" bit entries"))
        || l.contains(" bytes per FAT (= ")
        || l == "Root directory start at cluster 2 (arbitrary size)"
        || l.starts_with("Root directory starts at byte")
        || l.ends_with(" root directory entries")
        || l.starts_with("Data area starts at byte")
        || l.contains(" data clusters (")
        || (l.contains(" sectors/track, ") && l.ends_with(" heads"))
        || l.ends_with(" hidden sectors")
        || l.ends_with(" sectors total")
        || l == "Checking for unused clusters."
        || l == "Checking free cluster summary."
        || (l.contains(" files, ") && l.ends_with(" clusters"))
}

/// Run fsck.fat -n -v; it must exit 0 and report nothing. Returns (files, used clusters,
/// total clusters) from its summary line.
fn fsck(img: &Path) -> (u64, u64, u64) {
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg("-v")
        .arg(img)
        .output()
        .expect("fsck.fat (dosfstools) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "fsck.fat failed:\n{text}");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(fsck_line_ok(line), "fsck.fat reported {line:?}:\n{text}");
    }
    let summary = text
        .lines()
        .find(|l| l.contains(" files, "))
        .expect("fsck.fat prints a summary");
    let tail = summary.rsplit(": ").next().unwrap();
    let files: u64 = tail.split(' ').next().unwrap().parse().unwrap();
    let frac = tail
        .split(", ")
        .nth(1)
        .unwrap()
        .trim_end_matches(" clusters");
    let (used, total) = frac.split_once('/').unwrap();
    (files, used.parse().unwrap(), total.parse().unwrap())
}

fn mtools(cmd: &str) -> Command {
    let mut c = Command::new(cmd);
    c.env("LC_ALL", "C.UTF-8").env("TZ", "UTC");
    c.env_remove("MTOOLS_SKIP_CHECK");
    c
}

fn run(mut c: Command) -> String {
    let out = imgbuild_testutil::run_output(&mut c);
    // mtools reports inconsistencies it works around on stderr.
    assert!(
        out.stderr.is_empty(),
        "{c:?} complained:
{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn walk_host(root: &Path, rel: &str, out: &mut BTreeMap<String, (bool, PathBuf)>) {
    for e in fs::read_dir(root.join(rel.trim_start_matches('/'))).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let p = format!("{rel}/{name}");
        let is_dir = e.file_type().unwrap().is_dir();
        out.insert(p.clone(), (is_dir, e.path()));
        if is_dir {
            walk_host(root, &p, out);
        }
    }
}

/// Extract everything with `mcopy -s -m` and compare names, kinds, contents, file mtimes.
fn check_mtools(img: &Path, tree: &Tree) {
    let want = expected(tree);
    let dir = tempfile::tempdir().unwrap();
    if !want.is_empty() {
        let mut c = mtools("mcopy");
        c.args(["-s", "-m", "-n", "-i"])
            .arg(img)
            .arg("::*")
            .arg(dir.path());
        run(c);
    }
    let mut got = BTreeMap::new();
    walk_host(dir.path(), "", &mut got);
    let got_names: Vec<&String> = got.keys().collect();
    let want_names: Vec<&String> = want.keys().collect();
    assert_eq!(got_names, want_names, "names read back by mtools");
    for (p, w) in &want {
        let (is_dir, host) = &got[p];
        match w {
            Want::Dir => assert!(is_dir, "{p} should be a directory"),
            Want::File(src, mtime, _) => {
                assert!(!is_dir, "{p} should be a file");
                let f = File::open(host).unwrap();
                let md = f.metadata().unwrap();
                same_content(f, md.len(), src, &format!("mtools {p}"));
                let m = md
                    .modified()
                    .unwrap()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                // mtools 4.0.32 takes 2100 for a leap year: from 2100-03-01 on, its dates
                // are one day late.
                let mtools_bug = if *mtime >= 4_107_542_400 { 86_400 } else { 0 };
                assert_eq!(m, *mtime + mtools_bug, "mtime of {p} read by mtools");
            }
        }
    }
    // mdir must list every directory without complaint.
    let mut c = mtools("mdir");
    c.args(["-/", "-a", "-i"]).arg(img).arg("::");
    let listing = run(c);
    assert!(listing.contains("Directory for ::/"), "{listing}");
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

fn fatfs_epoch(dt: fatfs::DateTime) -> i64 {
    let d = dt.date;
    let t = dt.time;
    days_from_civil(i64::from(d.year), i64::from(d.month), i64::from(d.day)) * 86_400
        + i64::from(t.hour) * 3600
        + i64::from(t.min) * 60
        + i64::from(t.sec)
}

type Fs = fatfs::FileSystem<File>;

fn fatfs_walk(
    dir: fatfs::Dir<'_, File>,
    rel: &str,
    want: &BTreeMap<String, Want>,
    seen: &mut Vec<String>,
) {
    for e in dir.iter() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let p = format!("{rel}/{name}");
        seen.push(p.clone());
        match want.get(&p) {
            Some(Want::Dir) => {
                assert!(e.is_dir(), "{p} should be a directory (fatfs)");
                fatfs_walk(e.to_dir(), &p, want, seen);
            }
            Some(Want::File(src, mtime, ctime)) => {
                assert!(e.is_file(), "{p} should be a file (fatfs)");
                same_content(e.to_file(), e.len(), src, &format!("fatfs {p}"));
                assert_eq!(fatfs_epoch(e.modified()), *mtime, "mtime of {p} (fatfs)");
                // Creation time keeps the odd second in the 10 ms field.
                assert_eq!(fatfs_epoch(e.created()), *ctime, "ctime of {p} (fatfs)");
                assert_eq!(e.created().time.millis, 0);
                let a = e.accessed();
                assert_eq!(
                    (a.year, a.month, a.day),
                    (
                        e.modified().date.year,
                        e.modified().date.month,
                        e.modified().date.day
                    )
                );
            }
            None => panic!("fatfs found unexpected {p:?}"),
        }
    }
}

/// Read everything back with the fatfs crate.
fn check_fatfs(img: &Path, tree: &Tree, opts: &Options, fat_type: FatType) -> Fs {
    let fs = fatfs::FileSystem::new(File::open(img).unwrap(), fatfs::FsOptions::new()).unwrap();
    let ft = match fs.fat_type() {
        fatfs::FatType::Fat12 => FatType::Fat12,
        fatfs::FatType::Fat16 => FatType::Fat16,
        fatfs::FatType::Fat32 => FatType::Fat32,
    };
    assert_eq!(
        ft, fat_type,
        "fatfs determines the type from the cluster count"
    );
    assert_eq!(fs.volume_id(), opts.volume_id);
    let want = expected(tree);
    let mut seen = Vec::new();
    fatfs_walk(fs.root_dir(), "", &want, &mut seen);
    seen.sort();
    assert_eq!(seen, want.keys().cloned().collect::<Vec<_>>());
    let label = opts.label.to_ascii_uppercase();
    let root_label = fs.read_volume_label_from_root_dir().unwrap();
    if label.is_empty() {
        assert_eq!(fs.volume_label(), "NO NAME");
        assert_eq!(root_label, None);
    } else {
        assert_eq!(fs.volume_label(), label);
        assert_eq!(root_label.as_deref(), Some(label.as_str()));
    }
    fs
}

/// Every oracle on one image.
fn check_all(img: &Img, tree: &Tree, opts: &Options) {
    let (files, used, total) = fsck(&img.path);
    let entries = expected(tree).len() as u64;
    let label = u64::from(!opts.label.is_empty());
    assert_eq!(files, entries + label, "files counted by fsck.fat");
    assert_eq!(used, u64::from(img.plan.used_clusters()));
    assert_eq!(total, u64::from(img.plan.clusters()));
    check_mtools(&img.path, tree);
    let fs = check_fatfs(&img.path, tree, opts, img.plan.fat_type());
    let stats = fs.stats().unwrap();
    assert_eq!(
        u64::from(stats.free_clusters()),
        total - used,
        "free clusters counted by fatfs"
    );
}

fn opts(label: &str, fat_type: FatType) -> Options {
    Options {
        label: label.into(),
        volume_id: 0x1234_abcd,
        fat_type,
        ..Options::default()
    }
}

/// A Raspberry Pi firmware partition's worth of files.
fn firmware_tree() -> Tree {
    let mut t = Tree::new(meta(T0));
    add_bytes(&mut t, "/bootcode.bin", noise(1, 52_456), T0);
    add_bytes(&mut t, "/start4.elf", noise(2, 2_253_728), T0 + 2);
    add_bytes(&mut t, "/fixup4.dat", noise(3, 5_448), T0);
    add_bytes(
        &mut t,
        "/config.txt",
        b"arm_64bit=1\nenable_uart=1\n".to_vec(),
        T0,
    );
    add_bytes(
        &mut t,
        "/cmdline.txt",
        b"console=ttyS0,115200\n".to_vec(),
        T0,
    );
    add_bytes(&mut t, "/README.md", b"firmware\n".to_vec(), T0);
    add_bytes(&mut t, "/Makefile", Vec::new(), T0);
    for (i, n) in [
        "bcm2711-rpi-4-b",
        "bcm2711-rpi-400",
        "bcm2711-rpi-cm4",
        "bcm2710-rpi-3-b-plus",
    ]
    .iter()
    .enumerate()
    {
        add_bytes(
            &mut t,
            &format!("/{n}.dtb"),
            noise(10 + i as u64, 50_000 + i),
            T0,
        );
    }
    // More than one 2 KiB cluster of directory entries, long names with tails past ~9.
    for i in 0..180u64 {
        add_bytes(
            &mut t,
            &format!("/overlays/overlay-number-{i:03}.dtbo"),
            noise(100 + i, (i as usize * 37) % 3000),
            T0 + i as i64,
        );
    }
    add_bytes(&mut t, "/overlays/README", b"overlays\n".to_vec(), T0);
    // Exactly one cluster, one byte more, one byte less.
    add_bytes(&mut t, "/sizes/one.bin", noise(5, 2048), T0);
    add_bytes(&mut t, "/sizes/one+1.bin", noise(6, 2049), T0);
    add_bytes(&mut t, "/sizes/one-1.bin", noise(7, 2047), T0);
    add_bytes(&mut t, "/sizes/empty", Vec::new(), T0);
    add_bytes(
        &mut t,
        "/extlinux/extlinux.conf",
        b"DEFAULT nixos\n".to_vec(),
        T0,
    );
    t.mkdir_p(b"/empty-dir", meta(T0 + 100)).unwrap();
    add_bytes(
        &mut t,
        "/a/b/c/d/e/f/g/deep file.txt",
        b"deep\n".to_vec(),
        T0,
    );
    add_bytes(
        &mut t,
        "/unicode/Grüße aus Köln.txt",
        b"hallo\n".to_vec(),
        T0,
    );
    add_bytes(
        &mut t,
        "/unicode/日本語のファイル名.txt",
        b"nihongo\n".to_vec(),
        T0,
    );
    add_bytes(&mut t, "/times/before-1980", b"old\n".to_vec(), 0);
    add_bytes(
        &mut t,
        "/times/negative",
        b"older\n".to_vec(),
        -5_000_000_000,
    );
    add_bytes(
        &mut t,
        "/times/after-2107",
        b"future\n".to_vec(),
        9_000_000_000,
    );
    add_bytes(&mut t, "/times/odd-second", b"odd\n".to_vec(), T0 + 2);
    add_bytes(&mut t, "/.hidden-dotfile", b"dot\n".to_vec(), T0);
    add_bytes(&mut t, "/with space.tar.gz", b"gz\n".to_vec(), T0);
    add_bytes(&mut t, "/x+y=z[1]", b"plus\n".to_vec(), T0);
    t
}

#[test]
fn fat16_firmware_partition_reads_back_everywhere() {
    let tree = firmware_tree();
    let o = Options {
        hidden_sectors: 16384,
        volume_id: 0x2178_694e,
        ..opts("FIRMWARE", FatType::Auto)
    };
    let img = write_image(&tree, 30 << 20, &o);
    assert_eq!(img.plan.fat_type(), FatType::Fat16);
    assert_eq!(img.plan.cluster_size(), 2048);
    check_all(&img, &tree, &o);
    let mut c = mtools("minfo");
    c.arg("-i").arg(&img.path).arg("::");
    let info = run(c);
    for want in [
        "disk label=\"FIRMWARE   \"",
        "disk type=\"FAT16   \"",
        "serial number: 2178694E",
        "hidden sectors: 16384",
        "sectors per track: 32",
        "heads: 4",
    ] {
        assert!(info.contains(want), "minfo lacks {want:?}:\n{info}");
    }
}

fn esp_tree(dir: &Path) -> Tree {
    let mut t = Tree::new(meta(T0));
    let kernel = dir.join("bzImage");
    fs::write(&kernel, noise(20, 12 << 20)).unwrap();
    // A sparse host file: holes must come back as zeros.
    let initrd = dir.join("initrd");
    {
        let f = File::create(&initrd).unwrap();
        f.set_len(20 << 20).unwrap();
        f.write_all_at(&noise(21, 100_000), 3 << 20).unwrap();
        f.write_all_at(&noise(22, 5000), (20 << 20) - 5000).unwrap();
    }
    add_bytes(&mut t, "/EFI/BOOT/BOOTX64.EFI", noise(23, 110_000), T0);
    add_bytes(
        &mut t,
        "/EFI/systemd/systemd-bootx64.efi",
        noise(23, 110_000),
        T0,
    );
    add_host(
        &mut t,
        "/EFI/nixos/0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d-linux-6.6.1-bzImage.efi",
        &kernel,
        T0,
    );
    add_host(
        &mut t,
        "/EFI/nixos/9f8e7d6c5b4a39281706f5e4d3c2b1a0-initrd-linux-6.6.1-initrd.efi",
        &initrd,
        T0,
    );
    add_bytes(
        &mut t,
        "/loader/loader.conf",
        b"timeout 3\ndefault nixos-*\n".to_vec(),
        T0,
    );
    add_bytes(
        &mut t,
        "/loader/entries/nixos-generation-1.conf",
        b"title NixOS\nlinux /EFI/nixos/x.efi\n".to_vec(),
        T0,
    );
    add_bytes(&mut t, "/loader/random-seed", noise(24, 32), T0);
    t
}

#[test]
fn fat32_esp_reads_back_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let tree = esp_tree(dir.path());
    let o = opts("esp", FatType::Auto);
    let img = write_image(&tree, 512 << 20, &o);
    assert_eq!(img.plan.fat_type(), FatType::Fat32);
    assert_eq!(img.plan.cluster_size(), 4096);
    check_all(&img, &tree, &o);
    let mut c = mtools("minfo");
    c.arg("-i").arg(&img.path).arg("::");
    let info = run(c);
    assert!(info.contains("disk label=\"ESP        \""), "{info}");
    assert!(info.contains("disk type=\"FAT32   \""), "{info}");
    // The output stays sparse: what is allocated is about what is used.
    let f = File::open(&img.path).unwrap();
    let allocated: u64 = imgbuild_blockio::data_ranges(&f, 512 << 20)
        .unwrap()
        .iter()
        .map(|r| r.1)
        .sum();
    assert!(
        allocated < img.plan.used_bytes() - (15 << 20),
        "{allocated} bytes allocated for {} used (the initrd's holes must stay holes)",
        img.plan.used_bytes()
    );
}

#[test]
fn forced_fat32_at_64_mib() {
    let tree = firmware_tree();
    let o = opts("SMALL32", FatType::Fat32);
    let img = write_image(&tree, 64 << 20, &o);
    assert_eq!(img.plan.fat_type(), FatType::Fat32);
    assert_eq!(img.plan.cluster_size(), 512);
    check_all(&img, &tree, &o);
}

#[test]
fn fat12_small_volume() {
    let mut tree = Tree::new(meta(T0));
    add_bytes(&mut tree, "/a.txt", b"a".to_vec(), T0);
    add_bytes(&mut tree, "/dir/Long File Name.bin", noise(1, 70_000), T0);
    let o = opts("", FatType::Auto);
    let img = write_image(&tree, 2 << 20, &o);
    assert_eq!(img.plan.fat_type(), FatType::Fat12);
    check_all(&img, &tree, &o);
}

#[test]
fn hundred_mib_host_file() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    {
        let f = File::create(&big).unwrap();
        for i in 0..26u64 {
            f.write_all_at(&noise(1000 + i, 4 << 20), i * (4 << 20))
                .unwrap();
        }
        f.write_all_at(b"tail", 104 << 20).unwrap();
    }
    let mut tree = Tree::new(meta(T0));
    add_host(&mut tree, "/EFI/nixos/big-initrd.efi", &big, T0);
    add_bytes(&mut tree, "/after.txt", b"after\n".to_vec(), T0);
    let o = opts("ESP", FatType::Auto);
    let img = write_image(&tree, 512 << 20, &o);
    check_all(&img, &tree, &o);
}

/// Parse the short entry at `off` of the image: (name, attr, first cluster).
fn raw_entry(img: &[u8], off: usize) -> ([u8; 11], u8, u32) {
    let e = &img[off..off + 32];
    let hi = u32::from(u16::from_le_bytes([e[20], e[21]]));
    let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
    (e[..11].try_into().unwrap(), e[11], (hi << 16) | lo)
}

#[test]
fn dot_entries_follow_the_fat_rules() {
    for (size, ft) in [(30u64 << 20, FatType::Auto), (64 << 20, FatType::Fat32)] {
        let mut tree = Tree::new(meta(T0));
        add_bytes(&mut tree, "/level1/level2/file.txt", b"x".to_vec(), T0);
        let img = write_image(&tree, size, &opts("", ft));
        let bytes = fs::read(&img.path).unwrap();
        let bpb = |o: usize| u32::from(u16::from_le_bytes([bytes[o], bytes[o + 1]]));
        let spc = u32::from(bytes[13]);
        let reserved = bpb(14);
        let root_entries = bpb(17);
        let fat_len = if bpb(22) != 0 {
            bpb(22)
        } else {
            u32::from_le_bytes(bytes[36..40].try_into().unwrap())
        };
        let data = (reserved + 2 * fat_len + root_entries * 32 / 512) as usize * 512;
        let cluster = |c: u32| data + (c as usize - 2) * spc as usize * 512;
        // Find level1 in the root directory.
        let root = if root_entries > 0 {
            (reserved + 2 * fat_len) as usize * 512
        } else {
            cluster(2)
        };
        let (name, attr, l1) = raw_entry(&bytes, root);
        assert_eq!(&name, b"LEVEL1     ");
        assert_eq!(attr, 0x10);
        // `.` and `..` come first, short entries only; `..` of a child of the root is 0.
        let (dot, a1, c1) = raw_entry(&bytes, cluster(l1));
        let (dotdot, a2, c2) = raw_entry(&bytes, cluster(l1) + 32);
        assert_eq!((&dot, a1, c1), (b".          ", 0x10, l1));
        assert_eq!((&dotdot, a2, c2), (b"..         ", 0x10, 0));
        let (name, _, l2) = raw_entry(&bytes, cluster(l1) + 64);
        assert_eq!(&name, b"LEVEL2     ");
        let (_, _, c1) = raw_entry(&bytes, cluster(l2));
        let (_, _, c2) = raw_entry(&bytes, cluster(l2) + 32);
        assert_eq!((c1, c2), (l2, l1));
        // Lower-case 8.3 names use the NT case bits instead of a long name.
        assert_eq!(bytes[root + 12], 0x08);
    }
}

#[test]
fn same_tree_same_bytes_whatever_the_insertion_order() {
    let a = firmware_tree();
    // Same content, inserted in reverse order.
    let mut b = Tree::new(meta(T0));
    let mut items = Vec::new();
    for (path, id) in a.walk() {
        let node = a.node(id);
        items.push((path, node.clone()));
    }
    for (path, node) in items.into_iter().rev() {
        if path.is_empty() {
            continue;
        }
        if node.is_dir() {
            let d = b.mkdir_p(&path, node.meta).unwrap();
            b.node_mut(d).meta = node.meta;
        } else {
            let (parent, _) = imgbuild_fstree::split_parent(&path);
            b.mkdir_p(parent, meta(0)).unwrap();
            b.insert_path(&path, node).unwrap();
        }
    }
    // Directories created as parents got mtime 0 first, then their own when walked.
    assert_eq!(expected(&a), expected(&b));
    let o = opts("FIRMWARE", FatType::Auto);
    let x = write_image(&a, 30 << 20, &o);
    let y = write_image(&b, 30 << 20, &o);
    let z = write_image(&a, 30 << 20, &o);
    let bx = fs::read(&x.path).unwrap();
    assert!(
        bx == fs::read(&y.path).unwrap(),
        "insertion order changed the bytes"
    );
    assert!(bx == fs::read(&z.path).unwrap(), "two runs differ");

    // Inside a bigger file at an offset (a partition), the bytes are the same.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let f = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    f.set_len((1 << 20) + (30 << 20) + (1 << 20)).unwrap();
    let p = plan(&a, 30 << 20, &o).unwrap();
    write_at(&p, &a, &f, 1 << 20, 2);
    let mut part = vec![0u8; 30 << 20];
    f.read_exact_at(&mut part, 1 << 20).unwrap();
    assert!(part == bx, "writing at an offset changed the bytes");

    // Streamed by one reader or by several, the bytes are the same too.
    for readers in [1, 3] {
        let out = tempfile::tempfile().unwrap();
        out.set_len(30 << 20).unwrap();
        write_at(&p, &a, &out, 0, readers);
        let mut par = vec![0u8; 30 << 20];
        out.read_exact_at(&mut par, 0).unwrap();
        assert!(par == bx, "{readers} readers changed the bytes");
    }
}

#[test]
fn names_outside_the_bmp_round_trip_through_fatfs() {
    // Surrogate pairs in long names: fsck.fat and fatfs (like Linux and Windows) read them;
    // mtools 4.0.32 shows each surrogate as `_`, so it is not used as an oracle here.
    let mut tree = Tree::new(meta(T0));
    add_bytes(&mut tree, "/😀 smile.txt", b"smile".to_vec(), T0);
    add_bytes(&mut tree, "/music/a𝄞b", b"clef".to_vec(), T0);
    let o = opts("", FatType::Auto);
    let img = write_image(&tree, 30 << 20, &o);
    let (files, _, _) = fsck(&img.path);
    assert_eq!(files, 3);
    check_fatfs(&img.path, &tree, &o, FatType::Fat16);
}

#[test]
fn hard_links_become_copies() {
    let mut tree = Tree::new(meta(T0));
    let id = tree
        .insert(ROOT, b"one.bin", Node::bytes(meta(T0), noise(3, 5000)))
        .unwrap();
    let d = tree.mkdir_p(b"/sub", meta(T0)).unwrap();
    tree.link(d, b"two.bin", id).unwrap();
    let o = opts("", FatType::Auto);
    let img = write_image(&tree, 8 << 20, &o);
    assert_eq!(img.plan.file_count(), 2);
    assert_eq!(img.plan.data_bytes(), 10_000);
    check_all(&img, &tree, &o);
}

#[test]
fn errors_are_typed_and_name_the_culprit() {
    let o = opts("", FatType::Auto);
    // Too big.
    let mut tree = Tree::new(meta(T0));
    add_bytes(&mut tree, "/big", vec![1; 31 << 20], T0);
    match plan(&tree, 30 << 20, &o) {
        Err(Error::DoesNotFit { needed, available }) => {
            assert_eq!(needed, 31 << 20);
            assert_eq!(available, 15321 * 2048);
        }
        other => panic!("{other:?}"),
    }
    // FAT32 forced on the firmware partition size.
    match plan(&Tree::new(meta(T0)), 30 << 20, &opts("", FatType::Fat32)) {
        Err(Error::TooSmallForFat32 { clusters, .. }) => assert!(clusters < 65525),
        other => panic!("{other:?}"),
    }
    // Names.
    for (name, why) in [
        ("a:b", "not allowed"),
        ("trailing.", "cannot end"),
        ("trailing ", "cannot end"),
        ("ctl\u{1}", "not allowed"),
    ] {
        let mut tree = Tree::new(meta(T0));
        add_bytes(&mut tree, &format!("/dir/{name}"), vec![], T0);
        match plan(&tree, 30 << 20, &o) {
            Err(e @ Error::BadName { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("/dir/{name}")), "{msg}");
                assert!(msg.contains(why), "{msg}");
            }
            other => panic!("{name:?}: {other:?}"),
        }
    }
    let mut tree = Tree::new(meta(T0));
    add_bytes(&mut tree, "/EFI/Boot", vec![], T0);
    add_bytes(&mut tree, "/EFI/BOOT", vec![], T0);
    match plan(&tree, 30 << 20, &o) {
        Err(e @ Error::BadName { .. }) => {
            let Error::BadName { path, reason } = &e else {
                unreachable!()
            };
            assert_eq!(path, "/EFI/Boot");
            assert_eq!(
                reason,
                &imgbuild_fat::NameProblem::CaseClash {
                    other: "BOOT".into()
                }
            );
            let msg = e.to_string();
            assert!(msg.contains("`BOOT`") && msg.contains("case"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    let mut tree = Tree::new(meta(T0));
    tree.insert(ROOT, b"bad\xffutf8", Node::bytes(meta(T0), vec![]))
        .unwrap();
    assert!(matches!(
        plan(&tree, 30 << 20, &o),
        Err(Error::BadName { .. })
    ));
    // Kinds FAT cannot hold.
    let mut tree = Tree::new(meta(T0));
    tree.mkdir_p(b"/d", meta(T0)).unwrap();
    tree.insert_path(b"/d/link", Node::symlink(meta(T0), "target"))
        .unwrap();
    match plan(&tree, 30 << 20, &o) {
        Err(Error::Unsupported { path, kind }) => {
            assert_eq!((path.as_str(), kind), ("/d/link", "symbolic link"))
        }
        other => panic!("{other:?}"),
    }
    let mut tree = Tree::new(meta(T0));
    let dev = Node {
        meta: meta(T0),
        kind: imgbuild_fstree::Kind::CharDev { major: 1, minor: 3 },
    };
    tree.insert(ROOT, b"null", dev).unwrap();
    assert!(matches!(
        plan(&tree, 30 << 20, &o),
        Err(Error::Unsupported {
            kind: "character device",
            ..
        })
    ));
    // A directory named twice.
    let mut tree = Tree::new(meta(T0));
    let d = tree.mkdir_p(b"/d", meta(T0)).unwrap();
    tree.link(ROOT, b"e", d).unwrap();
    assert!(matches!(
        plan(&tree, 30 << 20, &o),
        Err(Error::Unsupported { .. })
    ));
    // Files over 4 GiB.
    let mut tree = Tree::new(meta(T0));
    let data = FileData::Host {
        path: "/nonexistent".into(),
        size: 4 << 30,
    };
    tree.insert(ROOT, b"huge", Node::file(meta(T0), data))
        .unwrap();
    assert!(matches!(
        plan(&tree, 30 << 20, &o),
        Err(Error::FileTooLarge { size, .. }) if size == 4 << 30
    ));
    // The FAT16 root directory holds 512 entries.
    let mut tree = Tree::new(meta(T0));
    for i in 0..300 {
        add_bytes(&mut tree, &format!("/long name {i}"), vec![], T0);
    }
    assert!(matches!(
        plan(&tree, 30 << 20, &o),
        Err(Error::RootDirFull {
            entries: 600,
            capacity: 512
        })
    ));
    // Other directories hold 65536 entries.
    let mut tree = Tree::new(meta(T0));
    for i in 0..3400 {
        add_bytes(
            &mut tree,
            &format!("/d/{i:04}{}", "x".repeat(240)),
            vec![],
            T0,
        );
    }
    assert!(matches!(
        plan(&tree, 30 << 20, &o),
        Err(Error::DirTooLarge { ref path, .. }) if path == "/d"
    ));
    // Labels.
    assert!(matches!(
        plan(
            &Tree::new(meta(T0)),
            30 << 20,
            &opts("TOO LONG LABEL", FatType::Auto)
        ),
        Err(Error::BadLabel { .. })
    ));
}

#[test]
fn source_changes_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::write(&src, noise(1, 100_000)).unwrap();
    let mut tree = Tree::new(meta(T0));
    add_host(&mut tree, "/kernel", &src, T0);
    let o = opts("", FatType::Auto);
    let size = 8u64 << 20;
    let p = plan(&tree, size, &o).unwrap();
    fs::write(&src, noise(1, 90_000)).unwrap();
    match p.map(&tree) {
        Err(
            e @ Error::Source {
                source:
                    imgbuild_blockio::SourceError::Changed {
                        planned: 100_000,
                        found: 90_000,
                        ..
                    },
                ..
            },
        ) => {
            // What a user reads: the entry, then the host file and what changed.
            let chain = imgbuild_testutil::error_chain(&e);
            assert!(chain.starts_with("the source of `/kernel`: `"), "{chain}");
            assert!(
                chain.ends_with("planned 100000 bytes, found 90000"),
                "{chain}"
            );
        }
        other => panic!("{other:?}"),
    }
    // An empty source file that grew.
    let empty = dir.path().join("empty");
    fs::write(&empty, b"").unwrap();
    let mut t2 = Tree::new(meta(T0));
    add_host(&mut t2, "/empty", &empty, T0);
    let p2 = plan(&t2, size, &o).unwrap();
    fs::write(&empty, b"grown").unwrap();
    assert!(matches!(
        p2.map(&t2),
        Err(Error::Source {
            source: imgbuild_blockio::SourceError::Changed {
                planned: 0,
                found: 5,
                ..
            },
            ..
        })
    ));
    // A different tree than the planned one.
    let mut other = Tree::new(meta(T0));
    add_bytes(&mut other, "/kernel", vec![0; 5], T0);
    assert!(matches!(p.map(&other), Err(Error::TreeChanged { .. })));
    // Changed after the map was made: the stream notices.
    fs::write(&src, noise(1, 100_000)).unwrap();
    let map = p.map(&tree).unwrap();
    fs::write(&src, noise(1, 90_000)).unwrap();
    let out = tempfile::tempfile().unwrap();
    out.set_len(size).unwrap();
    assert!(matches!(
        imgbuild_diskmap::write_file(&map, &out),
        Err(imgbuild_diskmap::Error::Source(
            imgbuild_blockio::SourceError::Changed {
                planned: 100_000,
                found: 90_000,
                ..
            }
        ))
    ));
}

#[test]
fn min_size_is_tight() {
    let tree = firmware_tree();
    for ft in [FatType::Auto, FatType::Fat16, FatType::Fat32] {
        let o = opts("X", ft);
        let min = min_size(&tree, &o).unwrap();
        assert_eq!(min % 512, 0);
        plan(&tree, min, &o).unwrap();
        assert!(plan(&tree, min - 512, &o).is_err(), "{ft}: {min}");
    }
    // The smallest FAT32 mkfs.fat makes without warning is the smallest we accept.
    let empty = Tree::new(meta(0));
    let o = opts("", FatType::Fat32);
    let min = min_size(&empty, &o).unwrap();
    let warns = |bytes: u64| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.img");
        File::create(&p).unwrap().set_len(bytes).unwrap();
        let out = Command::new("mkfs.fat")
            .args(["--invariant", "-F", "32"])
            .arg(&p)
            .output()
            .expect("mkfs.fat (dosfstools) must be installed");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).contains("less th")
    };
    assert!(!warns(min), "mkfs.fat warns at {min}");
    assert!(warns(min - 512), "mkfs.fat does not warn at {}", min - 512);
    assert!(min < 34 << 20, "{min}");
}

/// Run mkfs.fat on a file of `bytes` bytes and return the first `keep` bytes of the image.
fn mkfs(bytes: u64, args: &[&str], keep: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.img");
    File::create(&p).unwrap().set_len(bytes).unwrap();
    let out = Command::new("mkfs.fat")
        .arg("--invariant")
        .args(args)
        .arg(&p)
        .output()
        .expect("mkfs.fat (dosfstools) must be installed");
    assert!(
        out.status.success(),
        "mkfs.fat {args:?} on {bytes}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut buf = vec![0u8; keep];
    File::open(&p).unwrap().read_exact_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn geometry_matches_mkfs_fat() {
    let cases: &[(u64, FatType)] = &[
        (60 << 10, FatType::Auto),
        (100 << 10, FatType::Auto),
        (1000 << 10, FatType::Auto),
        (2 << 20, FatType::Auto),
        (4100 << 10, FatType::Auto),
        (8 << 20, FatType::Auto),
        (16 << 20, FatType::Auto),
        (30 << 20, FatType::Auto),
        (33000 << 10, FatType::Auto),
        (64 << 20, FatType::Auto),
        (128 << 20, FatType::Auto),
        ((256 << 20) - 1024, FatType::Auto),
        (256 << 20, FatType::Auto),
        ((512 << 20) - 1024, FatType::Auto),
        ((512 << 20) - 512, FatType::Auto),
        (512 << 20, FatType::Auto),
        ((512 << 20) + 777 * 512, FatType::Auto),
        (1 << 30, FatType::Auto),
        (2 << 30, FatType::Auto),
        (4 << 30, FatType::Auto),
        (9 << 30, FatType::Auto),
        (17 << 30, FatType::Auto),
        (33 << 30, FatType::Auto),
        (34000 << 10, FatType::Fat32),
        (64 << 20, FatType::Fat32),
        (260 << 20, FatType::Fat32),
        ((260 << 20) + 512 * 1024, FatType::Fat32),
        (300 << 20, FatType::Fat32),
        (600 << 20, FatType::Fat16),
        (1 << 30, FatType::Fat16),
        (2 << 30, FatType::Fat16),
        (8 << 20, FatType::Fat12),
        (20 << 20, FatType::Fat12),
        (100 << 20, FatType::Fat16),
    ];
    // mkfs.fat --invariant dates the label entry 2015-03-14 09:26:53 UTC.
    let empty = Tree::new(meta(1_426_325_213));
    for &(bytes, ft) in cases {
        for label in ["", "ESP"] {
            let mut args = vec!["-h", "2048"];
            if !label.is_empty() {
                args.extend(["-n", label]);
            }
            match ft {
                FatType::Fat12 => args.extend(["-F", "12"]),
                FatType::Fat16 => args.extend(["-F", "16"]),
                FatType::Fat32 => args.extend(["-F", "32"]),
                FatType::Auto => {}
            }
            let o = Options {
                hidden_sectors: 2048,
                ..opts(label, ft)
            };
            let p = plan(&empty, bytes, &o).unwrap_or_else(|e| panic!("{bytes} {ft}: {e}"));
            let out = tempfile::tempfile().unwrap();
            out.set_len(bytes).unwrap();
            write_at(&p, &empty, &out, 0, 2);
            // Everything up to the end of the root directory (FAT32: its cluster).
            let meta_end = p.used_bytes() as usize;
            let mut ours = vec![0u8; meta_end];
            out.read_exact_at(&mut ours, 0).unwrap();
            let mut theirs = mkfs(bytes, &args, meta_end);
            // Only the boot code differs (ours is not mkfs.fat's message stub).
            let code = if p.fat_type() == FatType::Fat32 {
                0x5A
            } else {
                0x3E
            };
            for img in [&mut ours, &mut theirs] {
                img[code..510].fill(0);
                if p.fat_type() == FatType::Fat32 {
                    img[6 * 512 + code..6 * 512 + 510].fill(0);
                }
            }
            if let Some(i) = (0..meta_end).find(|&i| ours[i] != theirs[i]) {
                panic!(
                    "{bytes} bytes, {ft}, label {label:?}: first difference at byte {i} (sector {}, offset {:#x}): ours {:#04x}, mkfs.fat {:#04x}",
                    i / 512,
                    i % 512,
                    ours[i],
                    theirs[i]
                );
            }
        }
    }
}

/// Random file names: 8.3 in every case, long, unicode, odd characters.
fn name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Z0-9_]{1,8}(\\.[A-Z0-9]{1,3})?",
        "[a-z0-9]{1,8}(\\.[a-z]{1,3})?",
        "[a-zA-Z0-9]{1,8}\\.[a-zA-Z]{1,3}",
        "[a-zA-Z0-9 ._+,;=\\[\\]~-]{0,60}[a-zA-Z0-9_]",
        "[a-z]{1,20}[éüßøÆ日本語ñÑ]{1,5}[a-z.]{0,10}[a-z]",
        "[.][a-z]{1,12}",
        "[A-Za-z]{200,254}",
    ]
}

#[derive(Debug, Clone)]
enum Gen {
    File(u64, i64, u64),
    Dir(i64, Vec<(String, Gen)>),
}

fn gen_strategy() -> impl Strategy<Value = Gen> {
    let file = (
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(511),
            Just(512),
            Just(2047),
            Just(2048),
            Just(2049),
            0u64..9000
        ],
        -2_000_000_000i64..6_000_000_000,
        any::<u64>(),
    )
        .prop_map(|(size, t, seed)| Gen::File(size, t, seed));
    file.prop_recursive(5, 120, 40, |inner| {
        (
            -2_000_000_000i64..6_000_000_000,
            prop::collection::vec((name_strategy(), inner), 0..40),
        )
            .prop_map(|(t, kids)| Gen::Dir(t, kids))
    })
}

/// Build a tree; names equal up to case within a directory are dropped (see the
/// `errors_are_typed_and_name_the_culprit` test for what happens to them).
fn build(tree: &mut Tree, dir: u32, kids: &[(String, Gen)]) {
    let mut seen = std::collections::HashSet::new();
    for (name, g) in kids {
        let fold: String = name.chars().flat_map(char::to_uppercase).collect();
        if !seen.insert(fold) {
            continue;
        }
        match g {
            Gen::File(size, t, seed) => {
                let data = noise(*seed, *size as usize);
                tree.insert(dir, name.as_bytes(), Node::bytes(meta(*t), data))
                    .unwrap();
            }
            Gen::Dir(t, sub) => {
                let d = tree
                    .insert(dir, name.as_bytes(), Node::dir(meta(*t)))
                    .unwrap();
                build(tree, d, sub);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_read_back(
        root in prop::collection::vec((name_strategy(), gen_strategy()), 0..60),
        fat32 in any::<bool>(),
        many in 0usize..300,
    ) {
        let mut tree = Tree::new(meta(T0));
        build(&mut tree, ROOT, &root);
        // Many entries in one directory: several clusters of entries, long tails.
        let d = tree.mkdir_p(b"/many", meta(T0)).unwrap();
        for i in 0..many {
            tree.insert(d, format!("Same Long Prefix {i}.txt").as_bytes(), Node::bytes(meta(T0), vec![i as u8]))
                .unwrap();
        }
        let (size, ft) = if fat32 { (64u64 << 20, FatType::Fat32) } else { (30 << 20, FatType::Auto) };
        let o = opts("PROP", ft);
        match plan(&tree, size, &o) {
            Err(Error::RootDirFull { .. }) if !fat32 => return Ok(()),
            Err(e) => panic!("{e}"),
            Ok(_) => {}
        }
        let img = write_image(&tree, size, &o);
        check_all(&img, &tree, &o);
    }
}
