//! The kernel takes our images read-write: create, append, delete, rename (also in big
//! htree directories and deep extent trees), unmount, and e2fsck is still clean.

use std::fs::{self, OpenOptions};
use std::io::Write;

use imgbuild_ext4 as ext4;
use imgbuild_fstree::{Meta, Node, Tree};

use crate::adversarial::noise;
use crate::common::*;

#[test]
fn kernel_read_write_keeps_it_clean() {
    let m = Meta::new(0o755, 0, 0, 1_600_000_000);
    let mut t = Tree::new(m);
    let big = t.insert_path(b"/big", Node::dir(m)).unwrap();
    for i in 0..5000u32 {
        t.insert(
            big,
            format!("name-{i}").as_bytes(),
            Node::bytes(m, noise(i as u64, 10)),
        )
        .unwrap();
    }
    t.insert_path(b"/frag", Node::bytes(m, noise(1, 3 << 20)))
        .unwrap();
    t.mkdir_p(b"/a/b/c", m).unwrap();
    t.insert_path(b"/a/b/c/file", Node::bytes(m, &b"hello"[..]))
        .unwrap();
    t.insert_path(b"/a/link", Node::symlink(m, "b/c/file"))
        .unwrap();
    let img = build(
        &t,
        &ext4::Options {
            size: ext4::Size::Auto {
                extra_free: 64 << 20,
            },
            ..opts()
        },
    );
    fsck(&img.path);
    {
        let mnt = Mount::new(&img.path, true);
        let r = mnt.path();
        // Create and append.
        fs::write(r.join("new"), noise(9, 1 << 20)).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(r.join("a/b/c/file"))
            .unwrap();
        f.write_all(&noise(3, 100_000)).unwrap();
        drop(f);
        let mut f = OpenOptions::new()
            .append(true)
            .open(r.join("frag"))
            .unwrap();
        f.write_all(&noise(4, 5 << 20)).unwrap();
        drop(f);
        // Insert into and delete from the htree directory.
        for i in 0..2000 {
            fs::write(r.join(format!("big/added-{i}")), b"x").unwrap();
        }
        for i in (0..5000).step_by(3) {
            fs::remove_file(r.join(format!("big/name-{i}"))).unwrap();
        }
        for i in (1..5000).step_by(3) {
            fs::rename(
                r.join(format!("big/name-{i}")),
                r.join(format!("a/moved-{i}")),
            )
            .unwrap();
        }
        fs::rename(r.join("a/b"), r.join("b-moved")).unwrap();
        fs::create_dir(r.join("b-moved/sub")).unwrap();
        fs::remove_file(r.join("a/link")).unwrap();
        assert_eq!(fs::read(r.join("b-moved/c/file")).unwrap().len(), 100_005);
        assert_eq!(
            fs::read_dir(r.join("big")).unwrap().count(),
            2000 + 5000 / 3
        );
        let out = std::process::Command::new("sync").status().unwrap();
        assert!(out.success());
    }
    fsck(&img.path);
    let mnt = Mount::new(&img.path, false);
    assert_eq!(fs::read(mnt.path().join("new")).unwrap(), noise(9, 1 << 20));
    let frag = fs::read(mnt.path().join("frag")).unwrap();
    assert_eq!(frag.len(), (3 << 20) + (5 << 20));
    assert_eq!(&frag[..3 << 20], &noise(1, 3 << 20)[..]);
}
