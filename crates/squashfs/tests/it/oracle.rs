//! The big test tree through unsquashfs (listing, extraction) and the kernel (loop mount),
//! with each option set; and the same bytes whatever the thread count.

use std::collections::HashSet;
use std::process::Command;

use imgbuild_fstree::{Kind, Tree};
use imgbuild_squashfs::{write, Compression, Options};

use crate::common::*;

/// Regular files (nodes) whose bytes an earlier file has: what dedup must find.
fn expected_duplicates(tree: &Tree) -> u64 {
    let mut seen_nodes = HashSet::new();
    let mut contents = HashSet::new();
    let mut dups = 0;
    for (_, id) in tree.walk() {
        if let Kind::File(d) = &tree.node(id).kind {
            if !seen_nodes.insert(id) || d.size() == 0 {
                continue;
            }
            let b = match d {
                imgbuild_fstree::FileData::Bytes(b) => b.to_vec(),
                imgbuild_fstree::FileData::Host { path, .. } => std::fs::read(path).unwrap(),
            };
            if !contents.insert(b) {
                dups += 1;
            }
        }
    }
    dups
}

fn variants() -> Vec<(&'static str, Options)> {
    vec![
        ("default", Options::default()),
        (
            "4k-blocks",
            Options {
                block_size: 4096,
                ..Options::default()
            },
        ),
        (
            "no-fragments",
            Options {
                block_size: 4096,
                fragments: false,
                ..Options::default()
            },
        ),
        (
            "uncompressed-1m",
            Options {
                block_size: 1 << 20,
                compression: Compression::None,
                dedup: false,
                ..Options::default()
            },
        ),
        (
            "zstd-19",
            Options {
                compression: Compression::Zstd { level: 19 },
                ..Options::default()
            },
        ),
    ]
}

#[test]
fn unsquashfs_reads_every_variant() {
    let dir = tempfile::tempdir().unwrap();
    for (name, o) in variants() {
        let block = o.block_size as usize;
        let host = dir.path().join(format!("host-{name}"));
        std::fs::create_dir(&host).unwrap();
        let tree = big_tree(block, &host);
        let (img, s) = image(&tree, &o, dir.path(), &format!("{name}.sqsh"));
        eprintln!("{name}: {s:?}");
        let want_dups = if o.dedup {
            expected_duplicates(&tree)
        } else {
            0
        };
        assert!(want_dups >= 3 || !o.dedup);
        assert_eq!(s.duplicate_files, want_dups, "{name}");
        assert_eq!(s.fragments > 0, o.fragments, "{name}");
        check_listing(&tree, &img);
        let out = extract(&img, dir.path());
        compare(
            &tree,
            &out,
            Check {
                owners: is_root(),
                symlink_times: false,
                links: false,
            },
        );
        // unsquashfs -s agrees with the superblock we meant to write.
        let stat = run(Command::new("unsquashfs").arg("-s").arg(&img));
        assert!(stat.contains(&format!("Block size {block}")), "{stat}");
        assert!(
            stat.contains(&format!("Number of inodes {}", s.inodes)),
            "{stat}"
        );
    }
}

#[test]
fn kernel_mount_reads_the_tree() {
    if !is_root() {
        eprintln!("SKIPPED kernel_mount_reads_the_tree: loop mounts need root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, o) in variants() {
        let host = dir.path().join(format!("host-{name}"));
        std::fs::create_dir(&host).unwrap();
        let tree = big_tree(o.block_size as usize, &host);
        let (img, _) = image(&tree, &o, dir.path(), &format!("{name}.sqsh"));
        let m = Mount::new(&img);
        compare(
            &tree,
            m.dir.path(),
            Check {
                owners: true,
                symlink_times: true,
                links: true,
            },
        );
        // Inode numbers follow the tree: the root is 1, depth first in name order.
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &str| {
            std::fs::symlink_metadata(m.dir.path().join(p))
                .unwrap()
                .ino()
        };
        assert_eq!(ino(""), 1, "{name}");
        assert_eq!(ino("big"), 2, "{name}");
        assert_eq!(ino("big/entry-00000-"), 3, "{name}");
        // Lookups of names in every part of the 700-entry directory (its index).
        for i in [0, 1, 255, 256, 300, 511, 512, 699] {
            let n = format!("big/entry-{i:05}-{}", "x".repeat(i % 40));
            assert!(m.dir.path().join(&n).exists(), "{name}: {n}");
        }
        assert!(!m.dir.path().join("big/entry-00700-").exists());
        assert!(!m.dir.path().join("big/a").exists());
        assert!(!m.dir.path().join("big/zzz").exists());
    }
}

fn bytes_with_threads(tree: &Tree, o: &Options, threads: usize) -> Vec<u8> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut img = std::io::Cursor::new(Vec::new());
    pool.install(|| write(tree, o, &mut img)).unwrap();
    img.into_inner()
}

#[test]
fn same_bytes_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        block_size: 4096,
        ..Options::default()
    };
    let tree = big_tree(4096, dir.path());
    let one = bytes_with_threads(&tree, &o, 1);
    let four = bytes_with_threads(&tree, &o, 4);
    let again = bytes_with_threads(&tree, &o, 4);
    assert!(one == four, "-j1 and -j4 differ");
    assert!(four == again, "two runs differ");
    // And the bytes depend on what they should: the time in the superblock.
    let later = bytes_with_threads(
        &tree,
        &Options {
            mkfs_time: 5,
            ..o.clone()
        },
        2,
    );
    assert_eq!(one.len(), later.len());
    assert_ne!(one, later);
}

#[test]
fn a_changed_source_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let tree = big_tree(4096, dir.path());
    std::fs::write(dir.path().join("h3"), b"shorter now").unwrap();
    let e = write(&tree, &Options::default(), std::io::Cursor::new(Vec::new())).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("h3` changed since it was scanned"), "{msg}");
}

/// A directory whose listing is over 64 KiB (an extended inode with a 32-bit size and an
/// index of many blocks), siblings whose inode numbers are more than 32767 apart (a
/// directory header per such jump), 255-byte and non-ASCII names.
#[test]
fn wide_directories_and_distant_numbers() {
    use imgbuild_fstree::{Meta, Node};
    let m = Meta::new(0o755, 0, 0, 3);
    let mut t = Tree::new(m);
    let a = t.mkdir_p(b"/a", m).unwrap();
    for i in 0..33_000u32 {
        t.insert(a, format!("{i:06}").as_bytes(), Node::bytes(m, &b""[..]))
            .unwrap();
    }
    t.insert_path(b"/b", Node::bytes(m, &b"after the gap"[..]))
        .unwrap();
    t.insert_path("/\u{e9}t\u{e9}".as_bytes(), Node::bytes(m, &b"accents"[..]))
        .unwrap();
    t.insert_path(
        &[&b"/"[..], &[b'n'; 255]].concat(),
        Node::bytes(m, &b"long"[..]),
    )
    .unwrap();
    let w = t.mkdir_p(b"/wide", m).unwrap();
    for i in 0..2_500u32 {
        let name = format!("wide-entry-number-{i:05}-{}", "y".repeat((i % 7) as usize));
        t.insert(w, name.as_bytes(), Node::symlink(m, name.as_bytes()))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, s) = image(&t, &Options::default(), dir.path(), "wide.sqsh");
    assert_eq!(s.inodes, 1 + 1 + 33_000 + 3 + 1 + 2_500);
    check_listing(&t, &img);
    let out = extract(&img, dir.path());
    let c = Check {
        owners: is_root(),
        symlink_times: false,
        links: false,
    };
    compare(&t, &out, c);
    if is_root() {
        let mnt = Mount::new(&img);
        compare(
            &t,
            mnt.dir.path(),
            Check {
                owners: true,
                symlink_times: true,
                links: true,
            },
        );
    } else {
        eprintln!("SKIPPED the loop mount: needs root (CI runs as root)");
    }
}

/// The same host directory through our writer and through mksquashfs: `unsquashfs -lln`
/// lists the same names, modes, owners, sizes, times and targets for both (directory sizes
/// aside: they depend on how each writer splits listings), and both extract to the same
/// bytes.
#[test]
fn same_listing_as_mksquashfs() {
    use imgbuild_fstree::{Mtime, Owner, Perms, ScanOptions, Scanner};
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    for i in 0..300u64 {
        let len = (i * 977) % 20_000;
        std::fs::write(
            src.join(format!("sub/f{i}")),
            imgbuild_testutil::noise(i % 50, len as usize),
        )
        .unwrap();
    }
    std::fs::write(src.join("big"), imgbuild_testutil::noise(7, 1_000_000)).unwrap();
    std::fs::write(src.join("big-copy"), imgbuild_testutil::noise(7, 1_000_000)).unwrap();
    std::fs::write(src.join("sub/deeper/text"), b"hello\n".repeat(50_000)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::set_permissions(src.join("empty"), std::fs::Permissions::from_mode(0o4710)).unwrap();
    symlink("sub/deeper/text", src.join("link")).unwrap();
    let tree = Scanner::new(ScanOptions {
        owner: Owner::Preserve,
        perms: Perms::Preserve,
        mtime: Mtime::Host,
        hardlinks: true,
    })
    .scan(&src)
    .unwrap();
    let (ours, _) = image(&tree, &Options::default(), dir.path(), "ours.sqsh");
    let theirs = dir.path().join("theirs.sqsh");
    run(Command::new("mksquashfs").arg(&src).arg(&theirs).args([
        "-comp",
        "zstd",
        "-noappend",
        "-no-progress",
        "-quiet",
    ]));
    let listing = |img: &std::path::Path| -> Vec<String> {
        run(Command::new("unsquashfs")
            .env("TZ", "UTC")
            .arg("-lln")
            .arg(img))
        .lines()
        .filter(|l| l.contains("squashfs-root"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let size = if l.starts_with('d') { "-" } else { f[2] };
            format!("{} {} {} {}", f[0], f[1], size, f[3..].join(" "))
        })
        .collect()
    };
    let (a, b) = (listing(&ours), listing(&theirs));
    assert_eq!(a.len(), 3 + 300 + 5);
    assert_eq!(a, b);
    for d in ["a", "b"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let ea = extract(&ours, &dir.path().join("a"));
    let eb = extract(&theirs, &dir.path().join("b"));
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&ea)
        .arg(&eb));
}

/// Device nodes (a 20-bit minor too), a FIFO and a socket: listed by unsquashfs with their
/// types, and as root read back by the kernel with their numbers.
#[test]
fn special_files() {
    use imgbuild_fstree::{Meta, Node};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = Meta::new(0o640, 0, 6, 5);
    let mut t = Tree::new(Meta::new(0o755, 0, 0, 5));
    let node = |kind| Node { meta: m, kind };
    t.insert_path(b"/null", node(Kind::CharDev { major: 1, minor: 3 }))
        .unwrap();
    t.insert_path(b"/sda1", node(Kind::BlockDev { major: 8, minor: 1 }))
        .unwrap();
    t.insert_path(
        b"/wide-minor",
        node(Kind::CharDev {
            major: 4095,
            minor: 0xF_FFFF,
        }),
    )
    .unwrap();
    t.insert_path(b"/fifo", node(Kind::Fifo)).unwrap();
    t.insert_path(b"/sock", node(Kind::Socket)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = image(&t, &Options::default(), dir.path(), "special.sqsh");
    let listing = run(Command::new("unsquashfs").arg("-lln").arg(&img));
    for (name, typ) in [
        ("null", 'c'),
        ("sda1", 'b'),
        ("wide-minor", 'c'),
        ("fifo", 'p'),
        ("sock", 's'),
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"));
        assert!(line.starts_with(&format!("{typ}rw-r-----")), "{line}");
        assert!(line.contains(" 0/6 "), "{line}");
    }
    if !is_root() {
        eprintln!("SKIPPED the loop mount: needs root (CI runs as root)");
        return;
    }
    let mnt = Mount::new(&img);
    let md = |n: &str| std::fs::symlink_metadata(mnt.dir.path().join(n)).unwrap();
    let dev = |n: &str| {
        let r = md(n).rdev();
        (libc::major(r), libc::minor(r))
    };
    assert!(md("null").file_type().is_char_device());
    assert_eq!(dev("null"), (1, 3));
    assert!(md("sda1").file_type().is_block_device());
    assert_eq!(dev("sda1"), (8, 1));
    assert_eq!(dev("wide-minor"), (4095, 0xF_FFFF));
    assert!(md("fifo").file_type().is_fifo());
    assert!(md("sock").file_type().is_socket());
    for n in ["null", "sda1", "fifo", "sock"] {
        let x = md(n);
        assert_eq!(
            (x.mode() & 0o7777, x.uid(), x.gid(), x.mtime()),
            (0o640, 0, 6, 5),
            "{n}"
        );
    }
}
