//! ISO 9660 volumes read back: ours (`imgbuild-iso9660`), `xorriso -as mkisofs -R -J` and
//! `genisoimage -R`, all made from one generated host tree (long names, symlinks, deep
//! directories, modes, a directory of several blocks, El Torito entries), must list and
//! read as that tree; truncated and corrupted volumes fail bounded (the corruption fuzz
//! harness runs on ours and on xorriso's).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild_fstree::{Mtime, Owner, Perms, ScanOptions, Scanner};
use imgbuild_inspect::{Image, Kind};
use imgbuild_iso9660::{BiosBoot, EfiBoot, Options};
use imgbuild_testutil::{harness, noise};

use crate::common::run;

/// What a path holds: type letter, permission bits, uid, content or symlink target.
type Listing = BTreeMap<String, (char, u32, u32, Vec<u8>)>;

fn long(prefix: &str, len: usize) -> String {
    let mut s = prefix.to_string();
    while s.len() < len {
        s.push(char::from(b'a' + (s.len() % 26) as u8));
    }
    s
}

/// The host tree every producer gets.
fn host_tree(root: &Path) {
    let w = |p: &str, data: &[u8], mode: u32| crate::common::write_mode(root, p, data, mode);
    crate::common::small_files(root);
    w(
        &long("a-file-with-a-very-long-name-", 200),
        b"long\n",
        0o640,
    );
    w(
        &format!("{}/inside", long("a-long-directory-", 150)),
        b"in\n",
        0o644,
    );
    w("isolinux/isolinux.bin", &noise(3, 4096), 0o444);
    w("boot/efi.img", &noise(4, 64 << 10), 0o444);
    w("data/noise.bin", &noise(5, 3 << 20), 0o644);
    let mut deep = String::new();
    for i in 0..12 {
        deep.push_str(&format!("level{i}/"));
    }
    w(&format!("{deep}leaf.txt"), b"deep\n", 0o644);
    for i in 0..300 {
        w(
            &format!("many/entry-number-{i:03}-of-a-big-directory"),
            i.to_string().as_bytes(),
            0o644,
        );
    }
    let l = |target: &str, at: &str| std::os::unix::fs::symlink(target, root.join(at)).unwrap();
    l("hello.txt", "link-to-hello");
    l("/bin/run.sh", "absolute-link");
    l("bin", "link-to-dir");
    // Over 255 bytes in components of at most 255 (xorriso refuses longer components).
    let far: Vec<String> = (0..25).map(|i| format!("component-{i:02}")).collect();
    l(&format!("dangling/{}", far.join("/")), "long-dangling-link");
    fs::set_permissions(root.join("many"), fs::Permissions::from_mode(0o750)).unwrap();
}

/// Every path below `root` on the host.
fn host_listing(root: &Path) -> Listing {
    let mut out = Listing::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            let (t, data) = if m.is_dir() {
                stack.push(p.clone());
                ('d', Vec::new())
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                ('l', t.into_os_string().into_encoded_bytes())
            } else {
                ('-', fs::read(&p).unwrap())
            };
            out.insert(rel, (t, m.mode() & 0o7777, m.uid(), data));
        }
    }
    out
}

/// Every path of the image's root filesystem, as `ls -lR` plus `cat` through the reader.
fn image_listing(iso: &Path) -> Listing {
    let img = Image::open(iso).unwrap();
    let fs = img.root_filesystem().unwrap();
    assert_eq!(fs.info().summary.kind, "iso9660");
    let mut out = Listing::new();
    fs.walk(b"/", |path, e, depth| {
        if depth == 0 {
            return Ok(true);
        }
        let data = match e.kind {
            Kind::Dir => Vec::new(),
            Kind::Symlink => {
                let t = fs.read_link(path)?;
                assert_eq!(e.target.as_ref(), Some(&t));
                assert_eq!(e.size, t.len() as u64);
                t
            }
            _ => {
                let mut v = Vec::new();
                fs.copy_file(path, &mut v)?;
                assert_eq!(e.size, v.len() as u64);
                v
            }
        };
        let key = String::from_utf8(path.to_vec()).unwrap();
        out.insert(key, (e.kind.letter(), u32::from(e.mode), e.uid, data));
        Ok(true)
    })
    .unwrap();
    // genisoimage's relocation directory, empty once its `RE` entries are hidden.
    if out.get("/rr_moved").is_some_and(|e| e.0 == 'd')
        && !out.keys().any(|k| k.starts_with("/rr_moved/"))
    {
        out.remove("/rr_moved");
    }
    out
}

fn ours(src: &Path, iso: &Path) {
    let mut scanner = Scanner::new(ScanOptions {
        owner: Owner::Preserve,
        perms: Perms::Preserve,
        mtime: Mtime::Host,
        hardlinks: false,
    });
    let tree = scanner.scan(src).unwrap();
    let opts = Options {
        volume_id: "ISOREAD-TEST".into(),
        time: 1_700_000_000,
        bios: Some(BiosBoot {
            image: b"isolinux/isolinux.bin".to_vec(),
            load_sectors: 4,
            boot_info_table: false,
        }),
        efi: Some(EfiBoot {
            image: b"boot/efi.img".to_vec(),
            load_sectors: None,
        }),
        ..Options::default()
    };
    let plan = imgbuild_iso9660::plan(&tree, &opts).unwrap();
    let f = fs::File::create(iso).unwrap();
    f.set_len(plan.bytes()).unwrap();
    imgbuild_diskmap::write_file(&plan.map(&tree, &[]).unwrap(), &f).unwrap();
}

fn xorriso(src: &Path, iso: &Path) {
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-R", "-J", "-V", "ISOREAD-TEST"])
        .args(EL_TORITO)
        .args(["-o", iso.to_str().unwrap(), src.to_str().unwrap()]));
}

/// The El Torito entries every xorriso ISO here gets: isolinux for BIOS, the EFI image.
const EL_TORITO: [&str; 9] = [
    "-b",
    "isolinux/isolinux.bin",
    "-no-emul-boot",
    "-boot-load-size",
    "4",
    "-eltorito-alt-boot",
    "-e",
    "boot/efi.img",
    "-no-emul-boot",
];

fn genisoimage(src: &Path, iso: &Path) {
    run(Command::new("genisoimage").args([
        "-quiet",
        "-R",
        "-V",
        "ISOREAD-TEST",
        "-o",
        iso.to_str().unwrap(),
        src.to_str().unwrap(),
    ]));
}

fn built(make: impl Fn(&Path, &Path), name: &str) -> (tempfile::TempDir, PathBuf, Listing) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    host_tree(&src);
    let iso = t.path().join(name);
    make(&src, &iso);
    let want = host_listing(&src);
    (t, iso, want)
}

fn check_same(name: &str, want: &Listing, got: &Listing) {
    let mut got = got.clone();
    // xorriso shows its boot catalog as a file.
    if let Some(c) = got.remove("/boot.catalog") {
        assert_eq!((c.0, c.3.len()), ('-', 2048), "{name}");
    }
    for (p, w) in want {
        let g = got.get(p).unwrap_or_else(|| panic!("{name}: {p} missing"));
        assert_eq!(
            (w.0, w.1, w.2),
            (g.0, g.1, g.2),
            "{name}: {p}: type, mode, uid"
        );
        assert!(w.3 == g.3, "{name}: {p}: content or target differs");
    }
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "{name}: not in the tree: {extra:?}");
}

#[test]
fn our_iso_reads_as_its_tree_with_el_torito() {
    let (_t, iso, want) = built(ours, "ours.iso");
    check_same("ours", &want, &image_listing(&iso));
    let img = Image::open(&iso).unwrap();
    let r = img.inspect();
    let fs = r.partitions[0].filesystem.as_ref().unwrap();
    assert_eq!(fs.summary.label.as_deref(), Some("ISOREAD-TEST"));
    assert_eq!(fs.summary.size, fs::metadata(&iso).unwrap().len());
    let facts = fs.iso9660.as_ref().unwrap();
    assert!(facts.rock_ridge && !facts.joliet, "{facts:?}");
    let e: Vec<(&str, u16)> = facts
        .el_torito
        .iter()
        .map(|e| (e.platform.as_str(), e.sectors))
        .collect();
    assert_eq!(e, [("x86", 4), ("UEFI", 128)]);
    // The entries point at the boot files' data.
    let root = img.root_filesystem().unwrap();
    let bios = root
        .read_to_vec(b"/isolinux/isolinux.bin", 1 << 20)
        .unwrap();
    let raw = fs::read(&iso).unwrap();
    let at = facts.el_torito[0].load_lba as usize * 2048;
    assert_eq!(&raw[at..at + bios.len()], &bios[..]);
}

#[test]
fn xorriso_iso_reads_as_its_tree() {
    let (_t, iso, want) = built(xorriso, "xorriso.iso");
    check_same("xorriso", &want, &image_listing(&iso));
    let img = Image::open(&iso).unwrap();
    let facts = img
        .root_filesystem()
        .unwrap()
        .info()
        .iso9660
        .clone()
        .unwrap();
    assert!(facts.rock_ridge && facts.joliet, "{facts:?}");
    let p: Vec<&str> = facts
        .el_torito
        .iter()
        .map(|e| e.platform.as_str())
        .collect();
    assert_eq!(p, ["x86", "UEFI"]);
}

#[test]
fn genisoimage_iso_reads_as_its_tree() {
    let (_t, iso, mut want) = built(genisoimage, "genisoimage.iso");
    let mut got = image_listing(&iso);
    // genisoimage cuts a symlink target at what fits its record (xorriso and isoinfo read
    // the same cut target): a prefix of the real one.
    let (w, g) = (
        want.remove("/long-dangling-link").unwrap(),
        got.remove("/long-dangling-link").unwrap(),
    );
    assert!(
        g.3.len() > 60 && w.3.starts_with(&g.3),
        "{:?}",
        String::from_utf8_lossy(&g.3)
    );
    check_same("genisoimage", &want, &got);
}

fn xorriso_hybrid(src: &Path, iso: &Path, gpt: bool) {
    let efi = src.join("boot/efi.img");
    let mut args = vec!["-as", "mkisofs", "-R", "-V", "ISOREAD-TEST"];
    args.extend(["-append_partition", "2", "0xef", efi.to_str().unwrap()]);
    if gpt {
        args.push("-appended_part_as_gpt");
    }
    args.extend(["-o", iso.to_str().unwrap(), src.to_str().unwrap()]);
    run(Command::new("xorriso").args(args));
}

/// An isohybrid image with a GPT (xorriso's partitions start past the system area): the
/// volume is partition 0 and the root filesystem, the table's partitions follow.
#[test]
fn hybrid_gpt_reads_as_iso_and_keeps_its_partitions() {
    let (_t, iso, want) = built(|s, i| xorriso_hybrid(s, i, true), "hybrid-gpt.iso");
    let img = Image::open(&iso).unwrap();
    assert_eq!(img.table().kind, imgbuild_inspect::TableKind::Gpt);
    let numbers: Vec<u32> = img.partitions().map(|p| p.entry.number).collect();
    assert_eq!(numbers, [0, 1, 2, 3]);
    check_same("hybrid-gpt", &want, &image_listing(&iso));
}

/// xorriso's hybrid MBR has entry 1 at LBA 0: that entry is the volume, read as partition 1
/// (no partition 0, no warning); the appended EFI partition follows.
#[test]
fn hybrid_mbr_reads_as_iso() {
    let (_t, iso, want) = built(|s, i| xorriso_hybrid(s, i, false), "hybrid-mbr.iso");
    let img = Image::open(&iso).unwrap();
    assert_eq!(img.table().kind, imgbuild_inspect::TableKind::Mbr);
    assert!(img.warnings().is_empty(), "{:?}", img.warnings());
    let parts: Vec<(u32, u64)> = img
        .partitions()
        .map(|p| (p.entry.number, p.entry.start))
        .collect();
    assert_eq!(parts.first(), Some(&(1, 0)), "{parts:?}");
    assert!(parts.iter().all(|&(n, _)| n != 0), "{parts:?}");
    check_same("hybrid-mbr", &want, &image_listing(&iso));
}

/// Truncated images are refused at open or fail reads with errors; byte flips in the
/// metadata never panic or hang (the harness checks both, and allocations).
#[test]
fn truncated_and_corrupt_volumes_fail_bounded() {
    let (t, iso, _) = built(ours, "ours.iso");
    let raw = fs::read(&iso).unwrap();
    let cut = t.path().join("cut.iso");
    for len in [40_000, 100_000, 300_000, raw.len() / 2, raw.len() - 2048] {
        fs::write(&cut, &raw[..len]).unwrap();
        let img = Image::open(&cut).unwrap();
        let e = img.root_filesystem().unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("truncated") || msg.contains("past the end"),
            "{len}: {msg}"
        );
        let o = harness::exercise(&cut, std::time::Duration::from_secs(30)).unwrap();
        assert_eq!(o.files, 0, "{len}");
    }
}

#[test]
fn fuzz_our_iso() {
    let (_t, iso, _) = built(ours, "ours.iso");
    crate::fuzz::clean(&iso);
    crate::fuzz::fuzz("iso-ours", &iso);
}

#[test]
fn fuzz_xorriso_iso() {
    let (_t, iso, _) = built(xorriso, "xorriso.iso");
    crate::fuzz::clean(&iso);
    crate::fuzz::fuzz("iso-xorriso", &iso);
}

/// A continuation area rewritten into a `CE` pointing at itself: the walk stops with the
/// loop named, it does not spin.
#[test]
fn continuation_loops_are_refused() {
    let (t, iso, _) = built(ours, "ours.iso");
    let mut raw = fs::read(&iso).unwrap();
    let at = raw
        .windows(4)
        .position(|w| w == b"CE\x1c\x01")
        .expect("a record with a continuation area");
    let le = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().unwrap()) as usize;
    let (area, area_len) = (le(at + 4) * 2048 + le(at + 12), le(at + 20));
    let mut ce = raw[at..at + 28].to_vec();
    ce[20..24].copy_from_slice(&28u32.to_le_bytes());
    ce[24..28].copy_from_slice(&28u32.to_be_bytes());
    raw[area..area + area_len].fill(0);
    raw[area..area + 28].copy_from_slice(&ce);
    let bad = t.path().join("ce-loop.iso");
    fs::write(&bad, &raw).unwrap();
    // The first `CE` is the root's `.` (its `ER`): the volume does not open.
    let img = Image::open(&bad).unwrap();
    let e = img
        .root_filesystem()
        .and_then(|fs| fs.walk(b"/", |_, _, _| Ok(true)))
        .unwrap_err();
    assert!(format!("{e:#}").contains("chain loops"), "{e:#}");
    // A loop in a file's record: the walk stops there.
    let raw = fs::read(&iso).unwrap();
    let mut patched = raw.clone();
    let mut hits = raw
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"CE\x1c\x01")
        .map(|(i, _)| i);
    let (_, second) = (hits.next().unwrap(), hits.next().expect("a second CE"));
    let le = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().unwrap()) as usize;
    let area = le(second + 4) * 2048 + le(second + 12);
    let mut ce = raw[second..second + 28].to_vec();
    ce[20..24].copy_from_slice(&28u32.to_le_bytes());
    ce[24..28].copy_from_slice(&28u32.to_be_bytes());
    patched[area..area + le(second + 20)].fill(0);
    patched[area..area + 28].copy_from_slice(&ce);
    fs::write(&bad, &patched).unwrap();
    let img = Image::open(&bad).unwrap();
    let e = img
        .root_filesystem()
        .unwrap()
        .walk(b"/", |_, _, _| Ok(true))
        .unwrap_err();
    assert!(format!("{e:#}").contains("chain loops"), "{e:#}");
}

/// A file over 4 GiB (sparse on the host) is written by our writer as two extents: one
/// entry of the whole size, read back whole, the bytes around the boundary included.
#[test]
fn multi_extent_file_reads_whole() {
    use imgbuild_fstree::{FileData, Meta, Node, Tree};
    use std::os::unix::fs::FileExt;
    let t = tempfile::tempdir().unwrap();
    let size: u64 = (4 << 30) + 4096;
    let boundary = imgbuild_iso9660::MAX_EXTENT;
    let marks = [
        (0, noise(11, 4096)),
        (boundary - 3000, noise(12, 6000)),
        (size - 100, noise(13, 100)),
    ];
    let big = t.path().join("big");
    let f = fs::File::create(&big).unwrap();
    f.set_len(size).unwrap();
    for (at, data) in &marks {
        f.write_all_at(data, *at).unwrap();
    }
    let meta = Meta::new(0o444, 0, 0, 1_700_000_000);
    let mut tree = Tree::new(meta);
    tree.insert_path(
        b"big.img",
        Node::file(meta, FileData::Host { path: big, size }),
    )
    .unwrap();
    tree.insert_path(b"after", Node::bytes(meta, b"after\n".to_vec()))
        .unwrap();
    let plan = imgbuild_iso9660::plan(&tree, &Options::default()).unwrap();
    let iso = t.path().join("big.iso");
    let out = fs::File::create(&iso).unwrap();
    out.set_len(plan.bytes()).unwrap();
    imgbuild_diskmap::write_file(&plan.map(&tree, &[]).unwrap(), &out).unwrap();
    let img = Image::open(&iso).unwrap();
    let fs = img.root_filesystem().unwrap();
    let names: Vec<(Vec<u8>, u64)> = fs
        .read_dir(b"/")
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.size))
        .collect();
    assert_eq!(names, [(b"after".to_vec(), 6), (b"big.img".to_vec(), size)]);
    let mut r = fs.open(b"/big.img").unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let mut pos = 0u64;
    let mut checked = 0;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (at, data) in &marks {
            let end = at + data.len() as u64;
            // Each chunk's part of each mark.
            let (lo, hi) = ((*at).max(pos), end.min(pos + n as u64));
            if lo < hi {
                let got = &buf[(lo - pos) as usize..(hi - pos) as usize];
                assert_eq!(
                    got,
                    &data[(lo - at) as usize..(hi - at) as usize],
                    "at {lo}"
                );
                checked += hi - lo;
            }
        }
        pos += n as u64;
    }
    assert_eq!((pos, checked), (size, 4096 + 6000 + 100));
    assert_eq!(fs.read_to_vec(b"/after", 100).unwrap(), b"after\n");
}

/// syslinux's isohybrid MBR code, from Debian's `isolinux` package.
const ISOHDPFX: &str = "/usr/lib/ISOLINUX/isohdpfx.bin";

/// As nixpkgs' iso-image.nix calls xorriso: syslinux's `isohdpfx.bin` as the MBR, El Torito
/// BIOS and EFI entries, and with `gpt` the EFI image as a GPT partition too
/// (`-isohybrid-gpt-basdat`). `boot/efi.img` becomes a FAT image holding `EFI/BOOT/hello`.
fn xorriso_isohybrid(src: &Path, iso: &Path, gpt: bool) {
    assert!(
        Path::new(ISOHDPFX).exists(),
        "{ISOHDPFX} is missing: install Debian's isolinux package"
    );
    let efi = src.join("boot/efi.img");
    fs::remove_file(&efi).unwrap();
    run(Command::new("mkfs.vfat")
        .args(["-C", "-n", "EFIBOOT"])
        .arg(&efi)
        .arg("1024"));
    let hello = src.join("hello.txt");
    run(Command::new("mmd")
        .arg("-i")
        .arg(&efi)
        .args(["::EFI", "::EFI/BOOT"]));
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&efi)
        .arg(&hello)
        .arg("::EFI/BOOT/hello"));
    let mut args = vec![
        "-as",
        "mkisofs",
        "-R",
        "-J",
        "-V",
        "ISOREAD-TEST",
        "-isohybrid-mbr",
        ISOHDPFX,
        "-c",
        "isolinux/boot.cat",
    ];
    args.extend(EL_TORITO);
    if gpt {
        args.push("-isohybrid-gpt-basdat");
    }
    args.extend(["-o", iso.to_str().unwrap(), src.to_str().unwrap()]);
    run(Command::new("xorriso").args(args));
}

/// The listing of a syslinux-hybrid ISO, without its boot catalog.
fn isohybrid_listing(iso: &Path) -> Listing {
    let mut got = image_listing(iso);
    let cat = got.remove("/isolinux/boot.cat").expect("the boot catalog");
    assert_eq!((cat.0, cat.3.len()), ('-', 2048));
    got
}

/// `-isohybrid-mbr` alone: MBR entry 1 (type 0x17, bootable) starts at LBA 0 and spans the
/// ISO: it is the ISO volume itself, read once, no warning.
#[test]
fn syslinux_isohybrid_mbr_reads_as_its_iso() {
    let (_t, iso, want) = built(|s, i| xorriso_isohybrid(s, i, false), "isohybrid-mbr.iso");
    let img = Image::open(&iso).unwrap();
    assert_eq!(img.table().kind, imgbuild_inspect::TableKind::Mbr);
    assert!(img.warnings().is_empty(), "{:?}", img.warnings());
    let parts: Vec<(u32, u64, String)> = img
        .partitions()
        .map(|p| (p.entry.number, p.entry.start, p.entry.type_id.clone()))
        .collect();
    assert_eq!(parts, [(1, 0, "0x17".to_string())], "{parts:?}");
    check_same("isohybrid-mbr", &want, &isohybrid_listing(&iso));
    let i = img.inspect();
    assert_eq!(i.partitions.len(), 1);
    assert_eq!(
        i.partitions[0]
            .filesystem
            .as_ref()
            .map(|f| f.summary.kind.as_str()),
        Some("iso9660")
    );
}

/// `-isohybrid-mbr` with `-isohybrid-gpt-basdat`: the GPT's entry 1 is the ISO, its EFI
/// partition (the El Torito EFI image, inside the ISO) reads as FAT, without warnings.
#[test]
fn syslinux_isohybrid_gpt_reads_as_iso_and_esp() {
    let (_t, iso, want) = built(|s, i| xorriso_isohybrid(s, i, true), "isohybrid-gpt.iso");
    let img = Image::open(&iso).unwrap();
    check_same("isohybrid-gpt", &want, &isohybrid_listing(&iso));
    // GPT entry 1 from LBA 0 is the volume (xorriso names it ISOHybrid); entry 2, inside
    // it, the EFI image (ISOHybrid1, typed basic data).
    let parts: Vec<(u32, u64, Option<String>)> = img
        .partitions()
        .map(|p| (p.entry.number, p.entry.first_lba, p.entry.name.clone()))
        .collect();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0], (1, 0, Some("ISOHybrid".to_string())));
    assert_eq!(parts[1].2.as_deref(), Some("ISOHybrid1"));
    let root = img.root_filesystem().unwrap();
    assert_eq!(root.info().summary.kind, "iso9660");
    assert!(root
        .location()
        .partition
        .as_deref()
        .is_some_and(|p| p.starts_with('1')));
    let fat = img.filesystem("2").unwrap();
    assert_eq!(fat.info().summary.kind.get(..3), Some("fat"));
    assert_eq!(
        fat.read_to_vec(b"/EFI/BOOT/hello", 100).unwrap(),
        b"hello\n"
    );
    assert!(img.warnings().is_empty(), "{:?}", img.warnings());
}
