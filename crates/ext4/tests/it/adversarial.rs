//! The fixed adversarial tree: boundary sizes, long and non-UTF-8 names, big htree
//! directories (one and two index levels), deep nesting, hard links across directories,
//! fast and slow symlinks, every permission bit, owners past 16 bits, times before 1970
//! and after 2038, special files, a sparse file over 4 GiB with a two-level extent tree and
//! a 200 MiB file. Also checks that 1 and 2 threads give the same bytes.

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileExt, PermissionsExt};
use std::path::Path;

use imgbuild_ext4 as ext4;
use imgbuild_fstree::{Kind, Meta, Mtime, Node, Owner, Perms, ScanOptions, Scanner, Tree};

use crate::common::*;

pub use imgbuild_testutil::noise;

pub const SPARSE_SIZE: u64 = (5 << 30) + 123;
pub const SPARSE_CHUNKS: u64 = 1500;

fn make_source(root: &Path) {
    let w = |p: &str, data: &[u8]| fs::write(root.join(p), data).expect("write source file");
    for (i, n) in [0usize, 1, 4095, 4096, 4097, 8191, 8192, 8193, 65536 + 7]
        .into_iter()
        .enumerate()
    {
        w(&format!("size-{n}"), &noise(i as u64, n));
    }
    // Names: 255 bytes, non-UTF-8, odd characters.
    fs::create_dir(root.join("names")).expect("mkdir");
    let long = "L".repeat(255);
    w(&format!("names/{long}"), b"long");
    for (i, raw) in [
        &b"\xff\xfe-x\x80"[..],
        b"\xc3\x28",
        b"new\nline",
        b" space ",
        b"back\\slash*?",
    ]
    .iter()
    .enumerate()
    {
        let mut p = root.join("names").into_os_string().into_encoded_bytes();
        p.push(b'/');
        p.extend_from_slice(raw);
        fs::write(
            std::ffi::OsStr::from_bytes(&p),
            noise(100 + i as u64, i * 1000),
        )
        .expect("write");
    }
    // 60-deep nesting.
    let mut deep = root.join("deep");
    for i in 0..60 {
        deep = deep.join(format!("d{i}"));
    }
    fs::create_dir_all(&deep).expect("mkdir -p");
    fs::write(deep.join("bottom"), b"at the bottom").expect("write");
    // Hard-link groups across directories.
    fs::create_dir_all(root.join("hl/a")).expect("mkdir");
    fs::create_dir_all(root.join("hl/b/c")).expect("mkdir");
    fs::write(root.join("hl/a/one"), noise(7, 5000)).expect("write");
    fs::hard_link(root.join("hl/a/one"), root.join("hl/b/one-again")).expect("link");
    fs::hard_link(root.join("hl/a/one"), root.join("hl/b/c/one-thrice")).expect("link");
    fs::hard_link(root.join("hl/a/one"), deep.join("one-deep")).expect("link");
    fs::write(root.join("hl/two"), b"").expect("write");
    fs::hard_link(root.join("hl/two"), root.join("hl/a/two-again")).expect("link");
    // Symlinks of 59, 60, 61 and 4095 bytes (fast up to 59).
    fs::create_dir(root.join("sym")).expect("mkdir");
    for n in [1usize, 59, 60, 61, 4095] {
        let target: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        symlink(&target, root.join(format!("sym/s{n}"))).expect("symlink");
    }
    symlink("../size-1", root.join("sym/rel")).expect("symlink");
    // Permission bits.
    fs::create_dir(root.join("perm")).expect("mkdir");
    for mode in [0o4755u32, 0o2755, 0o7777, 0o0000, 0o644, 0o1777] {
        let p = root.join(format!("perm/m{mode:o}"));
        fs::write(&p, b"p").expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    fs::create_dir(root.join("perm/sticky-dir")).expect("mkdir");
    fs::set_permissions(
        root.join("perm/sticky-dir"),
        fs::Permissions::from_mode(0o1777),
    )
    .expect("chmod");
    // Small files with holes at the end, at the start, in the middle, and all hole.
    for (name, data_at, len) in [
        ("holes/tail", 0u64, 200_000u64),
        ("holes/head", 100_000, 120_000),
        ("holes/middle", 0, 150_000),
        ("holes/none", 0, 3_000),
        ("holes/all", 0, 0),
    ] {
        std::fs::create_dir_all(root.join("holes")).expect("mkdir");
        let f = File::create(root.join(name)).expect("create");
        f.set_len(len.max(50_000)).expect("set_len");
        if len > 0 {
            f.write_all_at(&noise(data_at + len, 5000), data_at)
                .expect("pwrite");
        }
        if name == "holes/middle" {
            f.write_all_at(b"end", len - 3).expect("pwrite");
        }
    }
    // Right after holes/tail on disk: a file too big to be batched with it.
    fs::write(root.join("holes/tz-big"), noise(77, 300_000)).expect("write");
    // A sparse file over 4 GiB with SPARSE_CHUNKS data blocks far apart, ending in data.
    let f = File::create(root.join("sparse")).expect("create");
    f.set_len(SPARSE_SIZE).expect("set_len");
    let step = (SPARSE_SIZE / SPARSE_CHUNKS) / 4096 * 4096;
    for i in 0..SPARSE_CHUNKS {
        f.write_all_at(&noise(1000 + i, 4096), i * step)
            .expect("pwrite");
    }
    f.write_all_at(b"tail", SPARSE_SIZE - 4).expect("pwrite");
    // 200 MiB of data.
    let f = File::create(root.join("big")).expect("create");
    let chunk = noise(42, 1 << 20);
    for i in 0..200u64 {
        let mut c = chunk.clone();
        c[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all_at(&c, i << 20).expect("pwrite");
    }
}

/// Source on disk plus tree-only additions.
pub fn adversarial_tree(src: &Path) -> Tree {
    let mut sc = Scanner::new(ScanOptions {
        owner: Owner::Preserve,
        perms: Perms::Preserve,
        mtime: Mtime::Host,
        hardlinks: true,
    });
    let mut t = sc.scan(src).expect("scan");
    let m = |perm, uid, gid, mtime| Meta::new(perm, uid, gid, mtime);
    // htree directories: one index level, and two (8000 names of 255 bytes).
    let many = t
        .insert_path(b"/many", Node::dir(m(0o755, 0, 0, 1)))
        .expect("insert");
    for i in 0..20_000u32 {
        let node = Node::bytes(
            m(0o644, i, i, i as i64),
            noise(i as u64, (i % 5) as usize * 300),
        );
        t.insert(many, format!("entry-{i:05}").as_bytes(), node)
            .expect("insert");
    }
    let long = t
        .insert_path(b"/long", Node::dir(m(0o755, 0, 0, 1)))
        .expect("insert");
    for i in 0..8_000u32 {
        let mut name = format!("{i:06}-").into_bytes();
        name.resize(255, b'x' + (i % 3) as u8);
        t.insert(long, &name, Node::bytes(m(0o600, 0, 0, 2), Vec::new()))
            .expect("insert");
    }
    // Special files, owners past 16 bits, times outside 1970..2038.
    t.mkdir_p(b"/dev", m(0o755, 0, 0, 0)).expect("mkdir");
    let dev = |kind| Node {
        meta: m(0o660, 0, 6, 1_600_000_000),
        kind,
    };
    t.insert_path(b"/dev/null", dev(Kind::CharDev { major: 1, minor: 3 }))
        .expect("insert");
    t.insert_path(
        b"/dev/big",
        dev(Kind::CharDev {
            major: 300,
            minor: 70_000,
        }),
    )
    .expect("insert");
    t.insert_path(b"/dev/sda", dev(Kind::BlockDev { major: 8, minor: 0 }))
        .expect("insert");
    t.insert_path(b"/dev/fifo", dev(Kind::Fifo))
        .expect("insert");
    t.insert_path(b"/dev/sock", dev(Kind::Socket))
        .expect("insert");
    t.insert_path(
        b"/owned",
        Node::bytes(m(0o640, 100_000, 70_000, -1_000_000), &b"old"[..]),
    )
    .expect("insert");
    t.insert_path(
        b"/future",
        Node::bytes(m(0o640, 65_536, 65_535, (1 << 31) + 1000), &b"new"[..]),
    )
    .expect("insert");
    t.insert_path(
        b"/far-future",
        Node::bytes(m(0o640, 1, 1, 1 << 33), &b"far"[..]),
    )
    .expect("insert");
    t
}

#[test]
fn adversarial_tree_passes_every_oracle() {
    let src = tempfile::tempdir().expect("tempdir");
    make_source(src.path());
    let tree = adversarial_tree(src.path());
    let img = build(&tree, &opts());

    let out = fsck(&img.path);
    eprintln!("{out}");

    // The structures the tree is meant to exercise are really there.
    let ex = debugfs(&img.path, "dump_extents /sparse");
    assert!(
        ex.contains(" 0/ 2 "),
        "sparse file should have a depth-2 extent tree:\n{ex}"
    );
    let leaves = ex
        .lines()
        .filter(|l| l.trim_start().starts_with("2/ 2"))
        .count();
    assert!(leaves as u64 >= SPARSE_CHUNKS, "{leaves} extents:\n{ex}");
    let ht = debugfs(&img.path, "htree_dump /long");
    assert!(
        ht.contains("Indirect levels: 1"),
        "two-level htree expected"
    );
    let ht = debugfs(&img.path, "htree_dump /many");
    assert!(
        ht.contains("Indirect levels: 0"),
        "one-level htree expected"
    );
    let st = debugfs(&img.path, "stat /sym/s59");
    assert!(
        st.contains("Fast link dest"),
        "59-byte symlink should be fast:\n{st}"
    );
    let st = debugfs(&img.path, "stat /sym/s60");
    assert!(
        !st.contains("Fast link dest"),
        "60-byte symlink should be slow:\n{st}"
    );

    compare_ext4_view(&tree, &img.path);
    {
        let m = Mount::new(&img.path, false);
        compare_mounted(&tree, m.path());
    }

    // The same plan written on one thread and on two gives the same bytes.
    let one = img.dir.path().join("one.img");
    let two = img.dir.path().join("two.img");
    for (threads, path) in [(1, &one), (2, &two)] {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool")
            .install(|| {
                let plan = ext4::plan(&tree, &opts()).expect("plan");
                write_to(&plan, &tree, path);
            });
    }
    assert_eq!(sha_file(&one), sha_file(&two), "1 and 2 threads differ");
    assert_eq!(sha_file(&one), sha_file(&img.path), "default pool differs");
}
