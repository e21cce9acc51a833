//! Unit tests of the superblock and the whole-image layout (the oracle tests, against
//! unsquashfs and the kernel, are in tests/it).

use super::*;
use fstree::Node;

fn m() -> Meta {
    Meta::new(0o755, 0, 0, 1)
}

#[test]
fn options_are_checked() {
    let t = Tree::new(m());
    for o in [
        Options {
            block_size: 3000,
            ..Options::default()
        },
        Options {
            block_size: 2 << 20,
            ..Options::default()
        },
        Options {
            compression: Compression::Zstd { level: 23 },
            ..Options::default()
        },
    ] {
        let e = write(&t, &o, std::io::Cursor::new(Vec::new())).unwrap_err();
        assert!(matches!(e, Error::BadOption(_)), "{e}");
    }
}

#[test]
fn empty_tree_superblock() {
    let t = Tree::new(Meta::new(0o755, 1000, 100, 5));
    let mut img = std::io::Cursor::new(Vec::new());
    let s = write(
        &t,
        &Options {
            mkfs_time: 1_700_000_000,
            ..Options::default()
        },
        &mut img,
    )
    .unwrap();
    let img = img.into_inner();
    assert_eq!(img.len() as u64, s.size);
    assert_eq!(s.size, 4096);
    let u32_at = |o: usize| u32::from_le_bytes(img[o..o + 4].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(img[o..o + 2].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(img[o..o + 8].try_into().unwrap());
    assert_eq!(&img[..4], b"hsqs");
    assert_eq!(u32_at(4), 1, "one inode");
    assert_eq!(u32_at(8), 1_700_000_000);
    assert_eq!(u32_at(12), 128 << 10);
    assert_eq!(u32_at(16), 0, "no fragments");
    assert_eq!(u16_at(20), 6, "zstd");
    assert_eq!(u16_at(22), 17, "block_log");
    assert_eq!(u16_at(24), FLAG_NO_XATTR | FLAG_DUPLICATE);
    assert_eq!(u16_at(26), 2, "uid 1000 and gid 100");
    assert_eq!((u16_at(28), u16_at(30)), (4, 0));
    assert_eq!(u64_at(32), 0, "root inode: first block, offset 0");
    assert_eq!(u64_at(40), s.bytes_used);
    assert_eq!(u64_at(56), u64::MAX, "no xattrs");
    assert_eq!(u64_at(64), 96, "inode table right after the superblock");
    assert_eq!(u64_at(88), u64::MAX, "no export table");
    // Tables in order: inodes < directories <= fragments < ids < end.
    assert!(u64_at(64) < u64_at(72));
    assert!(u64_at(72) <= u64_at(80));
    assert!(u64_at(80) <= u64_at(48));
    // The id index holds one position, of the id block just before it.
    let id_index = u64_at(48) as usize;
    assert_eq!(id_index + 8, s.bytes_used as usize);
    let id_block = u64_at(id_index) as usize;
    assert_eq!(u16_at(id_block), 8 | 0x8000, "8 bytes of ids, stored");
    assert_eq!((u32_at(id_block + 2), u32_at(id_block + 6)), (1000, 100));
    assert!(img[s.bytes_used as usize..].iter().all(|&b| b == 0));
}

#[test]
fn compression_options_block_when_not_default() {
    let t = Tree::new(m());
    let mut img = std::io::Cursor::new(Vec::new());
    write(
        &t,
        &Options {
            compression: Compression::Zstd { level: 19 },
            ..Options::default()
        },
        &mut img,
    )
    .unwrap();
    let img = img.into_inner();
    assert_eq!(
        u16::from_le_bytes([img[24], img[25]]) & FLAG_COMP_OPT,
        FLAG_COMP_OPT
    );
    assert_eq!(&img[96..102], &[4, 0x80, 19, 0, 0, 0]);
}

#[test]
fn refusals_name_the_path() {
    let mut t = Tree::new(m());
    t.insert_path(
        &[b'/'; 1]
            .iter()
            .chain(&[b'n'; 257])
            .copied()
            .collect::<Vec<u8>>(),
        Node::dir(m()),
    )
    .unwrap();
    let e = write(&t, &Options::default(), std::io::Cursor::new(Vec::new())).unwrap_err();
    assert!(matches!(e, Error::NameTooLong { len: 257, .. }), "{e}");

    let mut t = Tree::new(m());
    t.insert_path(b"/l", Node::symlink(m(), "")).unwrap();
    let e = write(&t, &Options::default(), std::io::Cursor::new(Vec::new())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`/l`: symlink target is 0 bytes long, must be 1 to 4095 bytes"
    );

    let mut t = Tree::new(m());
    let d = t.insert_path(b"/d", Node::dir(m())).unwrap();
    t.link(ROOT, b"e", d).unwrap();
    let e = write(&t, &Options::default(), std::io::Cursor::new(Vec::new())).unwrap_err();
    assert!(matches!(e, Error::DirHardLink { .. }), "{e}");

    let mut t = Tree::new(m());
    t.insert_path(
        b"/f",
        Node::file(
            m(),
            fstree::FileData::Host {
                path: "/nonexistent/imgbuild-squashfs".into(),
                size: 3,
            },
        ),
    )
    .unwrap();
    let e = write(&t, &Options::default(), std::io::Cursor::new(Vec::new())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`/nonexistent/imgbuild-squashfs`: cannot read it"
    );
}
