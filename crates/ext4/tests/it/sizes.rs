//! Sizing (auto, extra free space, exact sizes), reproducibility across creation orders
//! and thread counts, and a structural comparison with what mke2fs makes.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use imgbuild_ext4 as ext4;
use imgbuild_fstree::{Meta, Mtime, Node, Owner, Perms, ScanOptions, Scanner, Tree};

use crate::adversarial::noise;
use crate::common::*;

/// A host tree of a few thousand entries, created in forward or reverse order.
fn make_host_tree(root: &Path, reverse: bool) {
    let mut ops: Vec<Box<dyn Fn()>> = Vec::new();
    for d in 0..20 {
        let dir = root.join(format!("dir{d:02}"));
        ops.push(Box::new(move || fs::create_dir_all(&dir).unwrap()));
        for f in 0..(if d == 3 { 3000 } else { 40 }) {
            let p = root.join(format!("dir{d:02}/f{f}"));
            let len = (f * 997 + d * 13) % 20_000;
            ops.push(Box::new(move || {
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, noise((d * 10_000 + f) as u64, len)).unwrap();
            }));
        }
    }
    if reverse {
        ops.reverse();
    }
    for op in ops {
        op();
    }
    let l = root.join("dir01/link");
    if l.exists() {
        fs::remove_file(&l).unwrap();
    }
    fs::hard_link(root.join("dir00/f1"), root.join("dir01/link")).unwrap();
}

fn scan(root: &Path) -> Tree {
    Scanner::new(ScanOptions {
        owner: Owner::Fixed(0, 0),
        perms: Perms::NixStore,
        mtime: Mtime::Fixed(1),
        hardlinks: true,
    })
    .scan(root)
    .unwrap()
}

#[test]
fn same_bytes_for_any_creation_order_and_thread_count() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    make_host_tree(a.path(), false);
    make_host_tree(b.path(), true);
    let ta = scan(a.path());
    let tb = scan(b.path());
    let out = tempfile::tempdir().unwrap();
    let mut hashes = Vec::new();
    for (tree, threads) in [(&ta, 1), (&tb, 2), (&ta, 2), (&tb, 1)] {
        let p = out.path().join(format!("{threads}-{}.img", hashes.len()));
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let plan = ext4::plan(tree, &opts()).unwrap();
                write_to(&plan, tree, &p);
            });
        hashes.push(sha_file(&p));
        if hashes.len() == 1 {
            fsck(&p);
        }
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "images differ");
}

#[test]
fn extra_free_and_exact_sizes() {
    let mut t = Tree::new(Meta::new(0o755, 0, 0, 1));
    for i in 0..50 {
        let path = format!("/f{i}");
        t.insert_path(
            path.as_bytes(),
            Node::bytes(Meta::new(0o644, 0, 0, 1), noise(i, 100_000)),
        )
        .unwrap();
    }
    let auto = build(&t, &opts());
    assert_eq!(auto.plan.size_bytes(), auto.plan.min_size_bytes());
    assert_eq!(auto.plan.free_bytes(), 0);
    fsck(&auto.path);

    // Free space is what was asked for, also when the filesystem grows past groups that
    // carry superblock backups (groups 1, 3, 5, 7, 9: 128 MiB apart).
    for extra in [10u64 << 20, 300 << 20, 1 << 30] {
        let roomy = build(
            &t,
            &ext4::Options {
                size: ext4::Size::Auto { extra_free: extra },
                ..opts()
            },
        );
        assert!(
            roomy.plan.free_bytes() >= extra,
            "{extra}: {}",
            roomy.plan.free_bytes()
        );
        assert!(
            roomy.plan.free_bytes() < extra + (1 << 20),
            "{extra}: {}",
            roomy.plan.free_bytes()
        );
        fsck(&roomy.path);
        let df = debugfs(&roomy.path, "stats");
        assert!(
            df.contains(&format!(
                "Free blocks:              {}",
                roomy.plan.free_bytes() / 4096
            )),
            "{df}"
        );
    }

    // Exact: the minimum fits exactly; odd sizes round down to blocks; sizes with a tiny
    // last group drop that group.
    for size in [
        auto.plan.min_size_bytes(),
        auto.plan.min_size_bytes() + 4096 * 3 + 5,
        64 << 20,
        (128 << 20) + 4096 * 2,
        (256 << 20) + (1 << 20),
    ] {
        let img = build(
            &t,
            &ext4::Options {
                size: ext4::Size::Exact(size),
                ..opts()
            },
        );
        assert!(img.plan.size_bytes() <= size);
        assert!(img.plan.size_bytes() + (128 << 20) > size);
        fsck(&img.path);
        compare_ext4_view(&t, &img.path);
    }
}

#[test]
fn data_bytes_count_every_data_byte() {
    let mut t = Tree::new(Meta::new(0o755, 0, 0, 1));
    let mut total = 0u64;
    for i in 0..20u64 {
        let len = (i * 12_345) as usize;
        total += len as u64;
        t.insert_path(
            format!("/f{i}").as_bytes(),
            Node::bytes(Meta::new(0o644, 0, 0, 1), noise(i, len)),
        )
        .unwrap();
    }
    let img = build(&t, &opts());
    assert_eq!(img.plan.data_bytes(), total);
    fsck(&img.path);
    compare_ext4_view(&t, &img.path);
}

/// `dumpe2fs -h` as a map.
fn dumpe2fs(img: &Path) -> BTreeMap<String, String> {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(img));
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn structurally_like_mke2fs() {
    let src = tempfile::tempdir().unwrap();
    make_host_tree(src.path(), false);
    let tree = scan(src.path());
    let ours = build(&tree, &opts());
    let theirs = ours.dir.path().join("mke2fs.img");
    let f = fs::File::create(&theirs).unwrap();
    f.set_len(ours.plan.size_bytes() * 2).unwrap();
    drop(f);
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-T", "default", "-d"])
        .arg(src.path())
        .arg(&theirs)
        .env("MKE2FS_CONFIG", "/etc/mke2fs.conf"));
    let a = dumpe2fs(&ours.path);
    let b = dumpe2fs(&theirs);
    // Same features except resize_inode, which we leave out on purpose.
    assert_eq!(
        a["Filesystem features"],
        b["Filesystem features"].replace(" resize_inode", "")
    );
    for key in [
        "Filesystem flags",
        "Default mount options",
        "Filesystem state",
        "Errors behavior",
        "Filesystem OS type",
        "Block size",
        "Group descriptor size",
        "Blocks per group",
        "Flex block group size",
        "First inode",
        "Inode size",
        "Required extra isize",
        "Desired extra isize",
        "Journal inode",
        "Default directory hash",
        "Journal backup",
        "Checksum type",
        "Journal features",
        "Journal start",
        "Journal sequence",
        "Maximum mount count",
        "Mount count",
    ] {
        assert_eq!(a.get(key), b.get(key), "{key}");
    }
    assert_eq!(a.get("Reserved GDT blocks"), None);
    fsck(&theirs);
}

#[test]
fn auto_size_just_past_a_group_boundary() {
    // Grow a tree until the minimal filesystem ends a few blocks into group 3, which starts
    // with a superblock backup: the last group then holds the backup and a few data blocks.
    let m = Meta::new(0o755, 0, 0, 1);
    let mib: std::sync::Arc<[u8]> = noise(5, 1 << 20).into();
    let block: std::sync::Arc<[u8]> = noise(6, 4096).into();
    let start = 3 * 32768u64;
    let mut t = Tree::new(m);
    let mut blocks = 0;
    for n in 0..10_000 {
        blocks = ext4::plan(&t, &opts()).unwrap().size_bytes() / 4096;
        if blocks > start {
            break;
        }
        let data = if blocks + 300 < start {
            mib.clone()
        } else {
            block.clone()
        };
        t.insert_path(format!("/f{n}").as_bytes(), Node::bytes(m, data))
            .unwrap();
    }
    assert!(
        blocks > start && blocks <= start + 64,
        "ended at block {blocks}"
    );
    let img = build(&t, &opts());
    fsck(&img.path);
    let mnt = Mount::new(&img.path, false);
    compare_mounted(&t, mnt.path());
}

#[test]
fn dir_nlink_past_65000_subdirectories() {
    // 64998 subdirectories: 65000 links, still counted; 64999: past the limit, count 1.
    let m = Meta::new(0o755, 0, 0, 1);
    let mut t = Tree::new(m);
    for (name, n) in [("/counted", 64_998u32), ("/over", 64_999)] {
        let d = t.insert_path(name.as_bytes(), Node::dir(m)).unwrap();
        for i in 0..n {
            t.insert(d, format!("{i}").as_bytes(), Node::dir(m))
                .unwrap();
        }
    }
    let img = build(&t, &opts());
    fsck(&img.path);
    let st = debugfs(&img.path, "stat /counted");
    assert!(st.contains("Links: 65000 "), "{st}");
    let st = debugfs(&img.path, "stat /over");
    assert!(st.contains("Links: 1 "), "{st}");
    let mnt = Mount::new(&img.path, false);
    assert_eq!(
        fs::read_dir(mnt.path().join("over")).unwrap().count(),
        64_999
    );
}
