//! Errors name the path and the reason, and come before anything is written.

use imgbuild_ext4 as ext4;
use imgbuild_fstree::{Kind, Meta, Mtime, Node, Owner, Perms, ScanOptions, Scanner, Tree};

use crate::common::*;

fn m() -> Meta {
    Meta::new(0o755, 0, 0, 1)
}

#[test]
fn name_too_long_names_the_path() {
    let mut t = Tree::new(m());
    t.mkdir_p(b"/a/b", m()).unwrap();
    let name = vec![b'n'; 256];
    t.insert(
        t.lookup(b"/a/b").unwrap(),
        &name,
        Node::bytes(m(), &b""[..]),
    )
    .unwrap();
    let e = ext4::plan(&t, &opts()).unwrap_err();
    match &e {
        ext4::Error::NameTooLong { path, len } => {
            assert_eq!(*len, 256);
            assert!(path.starts_with("/a/b/nnnn"), "{path}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(e.to_string().contains("255"), "{e}");
}

#[test]
fn bad_symlinks_and_dir_hard_links() {
    let mut t = Tree::new(m());
    t.insert_path(b"/empty", Node::symlink(m(), Vec::new()))
        .unwrap();
    let e = ext4::plan(&t, &opts()).unwrap_err();
    assert!(
        matches!(&e, ext4::Error::BadSymlink { path, len: 0 } if path == "/empty"),
        "{e}"
    );

    let mut t = Tree::new(m());
    t.insert_path(b"/huge", Node::symlink(m(), vec![b'x'; 4096]))
        .unwrap();
    let e = ext4::plan(&t, &opts()).unwrap_err();
    assert!(
        matches!(&e, ext4::Error::BadSymlink { len: 4096, .. }),
        "{e}"
    );

    let mut t = Tree::new(m());
    let d = t.mkdir_p(b"/d", m()).unwrap();
    let e2 = t.mkdir_p(b"/e", m()).unwrap();
    t.link(e2, b"again", d).unwrap();
    let e = ext4::plan(&t, &opts()).unwrap_err();
    assert!(
        matches!(&e, ext4::Error::DirHardLink { path } if path == "/e/again"),
        "{e}"
    );

    let mut t = Tree::new(m());
    t.insert_path(b"/lost+found", Node::bytes(m(), &b""[..]))
        .unwrap();
    assert!(matches!(
        ext4::plan(&t, &opts()),
        Err(ext4::Error::LostFoundNotDir)
    ));
}

#[test]
fn lost_found_from_the_tree_is_used() {
    let mut t = Tree::new(m());
    t.mkdir_p(b"/lost+found", Meta::new(0o700, 0, 0, 5))
        .unwrap();
    t.insert_path(b"/lost+found/kept", Node::bytes(m(), &b"x"[..]))
        .unwrap();
    let img = build(&t, &opts());
    fsck(&img.path);
    compare_ext4_view(&t, &img.path);
    let st = debugfs(&img.path, "stat /lost+found");
    assert!(st.starts_with("Inode: 11 "), "{st}");
}

#[test]
fn host_file_problems_name_the_host_path() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"12345").unwrap();
    std::fs::write(src.path().join("gone"), b"x").unwrap();
    let scan = || {
        Scanner::new(ScanOptions {
            owner: Owner::Fixed(0, 0),
            perms: Perms::Preserve,
            mtime: Mtime::Fixed(1),
            hardlinks: true,
        })
        .scan(src.path())
        .unwrap()
    };
    // Removed after the scan: unreadable, with the reason.
    let t = scan();
    std::fs::remove_file(src.path().join("gone")).unwrap();
    let e = ext4::plan(&t, &opts()).unwrap_err();
    match &e {
        ext4::Error::Source(imgbuild_blockio::SourceError::Unreadable { path, source }) => {
            assert_eq!(path, &src.path().join("gone"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            // The cause is chained, not repeated in the message.
            assert_eq!(
                e.to_string(),
                format!("`{}`: cannot read it", path.display())
            );
            assert!(std::error::Error::source(&e).is_some());
        }
        other => panic!("unexpected {other}"),
    }
    // Grown after the scan: caught by plan.
    let t = scan();
    std::fs::write(src.path().join("f"), b"123456").unwrap();
    let e = ext4::plan(&t, &opts()).unwrap_err();
    assert!(
        matches!(&e, ext4::Error::Source(imgbuild_blockio::SourceError::Changed { path, planned: 5, found: 6 }) if path.ends_with("f")),
        "{e}"
    );
    // Shrunk between plan and write: caught when the map is streamed.
    let t = scan();
    let plan = ext4::plan(&t, &opts()).unwrap();
    let map = plan.map(&t).unwrap();
    std::fs::write(src.path().join("f"), b"12").unwrap();
    let out = tempfile::tempfile().unwrap();
    out.set_len(plan.size_bytes()).unwrap();
    let e = imgbuild_diskmap::write_file(&map, &out).unwrap_err();
    assert!(
        matches!(
            &e,
            imgbuild_diskmap::Error::Source(imgbuild_blockio::SourceError::Changed {
                planned: 6,
                found: 2,
                ..
            })
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains(&*src.path().join("f").to_string_lossy()),
        "{e}"
    );
}

#[test]
fn does_not_fit_is_reported_before_writing() {
    let mut t = Tree::new(m());
    t.insert_path(b"/blob", Node::bytes(m(), vec![1u8; 20 << 20]))
        .unwrap();
    let auto = ext4::plan(&t, &opts()).unwrap();
    let o = ext4::Options {
        size: ext4::Size::Exact(16 << 20),
        ..opts()
    };
    match ext4::plan(&t, &o) {
        Err(ext4::Error::DoesNotFit { needed, available }) => {
            assert_eq!(needed, auto.min_size_bytes());
            assert_eq!(available, 16 << 20);
            assert!(needed > 20 << 20);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_map_covers_the_filesystem() {
    let mut t = Tree::new(m());
    t.insert_path(b"/blob", Node::bytes(m(), vec![1u8; 1 << 20]))
        .unwrap();
    let plan = ext4::plan(&t, &opts()).unwrap();
    let map = plan.map(&t).unwrap();
    assert_eq!(map.len(), plan.size_bytes());
    // Metadata, the unused inode table and the journal are mapped, free blocks are not.
    assert!(map.mapped_bytes() > 1 << 20);
    assert!(map.mapped_bytes() < plan.size_bytes());
}

#[test]
fn bad_options() {
    let t = Tree::new(m());
    let o = ext4::Options {
        label: "seventeen-bytes!!".into(),
        ..opts()
    };
    assert!(matches!(
        ext4::plan(&t, &o),
        Err(ext4::Error::LabelTooLong { len: 17, .. })
    ));
    // NUL would cut the label for every reader; 16 bytes without NUL fit.
    let o = ext4::Options {
        label: "nix\0os".into(),
        ..opts()
    };
    match ext4::plan(&t, &o) {
        Err(e @ ext4::Error::LabelHasNul { .. }) => assert!(e.to_string().contains("NUL"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
    let o = ext4::Options {
        label: "0123456789abcdef".into(),
        ..opts()
    };
    assert!(ext4::plan(&t, &o).is_ok());
    let o = ext4::Options {
        reserved_percent: 51,
        ..opts()
    };
    assert!(matches!(
        ext4::plan(&t, &o),
        Err(ext4::Error::ReservedTooHigh { percent: 51 })
    ));
    let o = ext4::Options {
        inode_ratio: 1023,
        ..opts()
    };
    assert!(matches!(
        ext4::plan(&t, &o),
        Err(ext4::Error::InodeRatioTooLow { ratio: 1023 })
    ));
    // A tree node kind we never write must not exist: every Kind maps to an inode type.
    let mut t = Tree::new(m());
    t.insert_path(
        b"/s",
        Node {
            meta: m(),
            kind: Kind::Socket,
        },
    )
    .unwrap();
    let img = build(&t, &opts());
    fsck(&img.path);
}

#[test]
fn sizes_above_the_writer_limit_are_refused_before_planning() {
    let t = Tree::new(m());
    for size in [
        ext4::Size::Exact(ext4::MAX_SIZE + ext4::BLOCK_SIZE),
        ext4::Size::Exact(u64::MAX),
        ext4::Size::Auto {
            extra_free: ext4::MAX_SIZE + 1,
        },
        // Free space just under the limit makes a filesystem just over it.
        ext4::Size::Auto {
            extra_free: ext4::MAX_SIZE - ext4::BLOCK_SIZE,
        },
    ] {
        let o = ext4::Options { size, ..opts() };
        let e = ext4::plan(&t, &o).unwrap_err();
        assert!(matches!(e, ext4::Error::TooBig { .. }), "{size:?}: {e}");
        assert!(e.to_string().contains("16 TiB"), "{e}");
    }
    let o = ext4::Options {
        size: ext4::Size::Exact(ext4::MAX_SIZE),
        ..opts()
    };
    let p = ext4::plan(&t, &o).unwrap();
    assert_eq!(p.size_bytes(), ext4::MAX_SIZE);
}
