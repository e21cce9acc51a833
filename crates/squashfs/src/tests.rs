//! Unit tests of the superblock and the whole-image layout (the oracle tests, against
//! unsquashfs and the kernel, are in tests/it).

use super::*;
use crate::meta::METADATA_SIZE;
use fstree::{Meta, Node, ROOT};
use std::collections::HashMap;

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
        assert!(
            matches!(
                e,
                Error::BadBlockSize { .. } | Error::BadZstdLevel { level: 23 }
            ),
            "{e}"
        );
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
            .chain(&[b'n'; 256])
            .copied()
            .collect::<Vec<u8>>(),
        Node::dir(m()),
    )
    .unwrap();
    let e = write(&t, &Options::default(), std::io::Cursor::new(Vec::new())).unwrap_err();
    assert!(matches!(e, Error::NameTooLong { len: 256, .. }), "{e}");

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

/// An uncompressed metadata table read back: its bytes, and the uncompressed position of
/// each stored block position.
fn read_table(img: &[u8], start: usize, end: usize) -> (Vec<u8>, HashMap<u64, usize>) {
    let mut out = Vec::new();
    let mut at = HashMap::new();
    let mut p = start;
    while p < end {
        let h = u16::from_le_bytes([img[p], img[p + 1]]);
        assert_eq!(h & 0x8000, 0x8000, "stored uncompressed");
        let len = usize::from(h & 0x7FFF);
        at.insert((p - start) as u64, out.len());
        out.extend_from_slice(&img[p + 2..p + 2 + len]);
        p += 2 + len;
    }
    (out, at)
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// A parsed directory entry: name, inode block, offset, number.
type ParsedEntry = (Vec<u8>, u32, u16, u32);

/// A directory listing parsed: its entries, and the listing offset of each header.
fn parse_listing(dirs: &[u8], from: usize, len: usize) -> (Vec<ParsedEntry>, Vec<usize>) {
    let (mut entries, mut headers) = (Vec::new(), Vec::new());
    let mut p = from;
    while p < from + len {
        headers.push(p - from);
        let (count, block, base) = (le32(dirs, p) + 1, le32(dirs, p + 4), le32(dirs, p + 8));
        assert!(count <= 256);
        p += 12;
        for _ in 0..count {
            let off = le16(dirs, p);
            let delta = le16(dirs, p + 2) as i16;
            let size = usize::from(le16(dirs, p + 6)) + 1;
            let name = dirs[p + 8..p + 8 + size].to_vec();
            entries.push((
                name,
                block,
                off,
                (i64::from(base) + i64::from(delta)) as u32,
            ));
            p += 8 + size;
        }
    }
    assert_eq!(p, from + len);
    (entries, headers)
}

/// The structures the kernel test relies on, checked in the bytes: a listing header per
/// jump of more than 32767 inode numbers, and a wide directory as an extended inode whose
/// index points at headers in later metadata blocks, each with its first name.
#[test]
fn headers_and_directory_index_in_the_bytes() {
    let m = Meta::new(0o755, 0, 0, 3);
    let mut t = Tree::new(m);
    let a = t.mkdir_p(b"/a", m).unwrap();
    for i in 0..33_000u32 {
        t.insert(a, format!("{i:06}").as_bytes(), Node::bytes(m, &b""[..]))
            .unwrap();
    }
    t.insert_path(b"/b", Node::bytes(m, &b"x"[..])).unwrap();
    let w = t.mkdir_p(b"/wide", m).unwrap();
    for i in 0..2_500u32 {
        let name = format!("wide-entry-number-{i:05}");
        t.insert(w, name.as_bytes(), Node::symlink(m, "t")).unwrap();
    }
    let mut img = std::io::Cursor::new(Vec::new());
    let o = Options {
        compression: Compression::None,
        ..Options::default()
    };
    write(&t, &o, &mut img).unwrap();
    let img = img.into_inner();
    let u64_at = |o: usize| u64::from_le_bytes(img[o..o + 8].try_into().unwrap()) as usize;
    let (root_ref, inode_start, dir_start, frag_start) =
        (u64_at(32), u64_at(64), u64_at(72), u64_at(80));
    let (inodes, iat) = read_table(&img, inode_start, dir_start);
    // The fragment table's blocks follow the directory table: find where they start.
    let frag_blocks = u64_at(frag_start);
    let (dirs, dat) = read_table(&img, dir_start, frag_blocks);
    let inode_at = |block: u64, off: u16| iat[&block] + usize::from(off);

    // The root: a basic directory; its listing splits between /a (2) and /b (33003).
    let r = inode_at(root_ref as u64 >> 16, (root_ref & 0xFFFF) as u16);
    assert_eq!(le16(&inodes, r), 1);
    assert_eq!(le32(&inodes, r + 12), 1, "root is inode 1");
    let (start, size, off) = (
        le32(&inodes, r + 16),
        le16(&inodes, r + 24),
        le16(&inodes, r + 26),
    );
    let (entries, headers) = parse_listing(
        &dirs,
        dat[&u64::from(start)] + usize::from(off),
        usize::from(size) - 3,
    );
    let names: Vec<&[u8]> = entries.iter().map(|e| &e.0[..]).collect();
    assert_eq!(names, [&b"a"[..], b"b", b"wide"]);
    assert_eq!(entries[0].3, 2);
    assert_eq!(entries[1].3, 33_003);
    assert!(
        headers.len() >= 2,
        "b's number is too far from a's: a header of its own"
    );

    // /wide: extended (type 8), a 32-bit size over 64 KiB, an index.
    let (_, wb, wo, wn) = entries[2].clone();
    assert_eq!(wn, 33_004);
    let i = inode_at(u64::from(wb), wo);
    assert_eq!(le16(&inodes, i), 8);
    let file_size = le32(&inodes, i + 20) as usize;
    assert!(file_size > 65_535);
    let (start, count, off) = (
        le32(&inodes, i + 24),
        le16(&inodes, i + 32),
        le16(&inodes, i + 34),
    );
    let listing_at = dat[&u64::from(start)] + usize::from(off);
    let (entries, headers) = parse_listing(&dirs, listing_at, file_size - 3);
    assert_eq!(entries.len(), 2_500);
    assert!(entries
        .iter()
        .enumerate()
        .all(|(k, e)| e.3 == 33_005 + k as u32));
    assert!(
        usize::from(count) >= file_size / METADATA_SIZE - 1,
        "{count} index entries"
    );
    let mut p = i + 40;
    let mut last_block = listing_at / METADATA_SIZE;
    for _ in 0..count {
        let (index, block, size) = (
            le32(&inodes, p) as usize,
            le32(&inodes, p + 4),
            le32(&inodes, p + 8),
        );
        let name = &inodes[p + 12..p + 12 + size as usize + 1];
        p += 12 + size as usize + 1;
        assert!(headers.contains(&index), "index {index} points at a header");
        let upos = listing_at + index;
        assert!(
            upos / METADATA_SIZE > last_block,
            "one entry per new metadata block"
        );
        last_block = upos / METADATA_SIZE;
        assert_eq!(dat[&u64::from(block)], upos / METADATA_SIZE * METADATA_SIZE);
        let first_len = usize::from(le16(&dirs, upos + 12 + 6)) + 1;
        assert_eq!(
            &dirs[upos + 20..upos + 20 + first_len],
            name,
            "the header's first name"
        );
    }
}

/// A root (uid and gid 0) and `files` empty files with uids 1, 2, ...: `files + 1` ids.
fn tree_with_ids(files: u32) -> Tree {
    let mut t = Tree::new(m());
    let empty = fstree::FileData::Bytes(std::sync::Arc::from(&b""[..]));
    for i in 1..=files {
        t.insert_path(
            format!("/f{i}").as_bytes(),
            Node::file(Meta::new(0o644, i, 0, 1), empty.clone()),
        )
        .unwrap();
    }
    t
}

#[test]
fn more_ids_than_the_superblock_counts_are_refused_before_writing() {
    let mut img = std::io::Cursor::new(Vec::new());
    let e = write(&tree_with_ids(65_535), &Options::default(), &mut img).unwrap_err();
    assert!(matches!(e, Error::TooManyIds { ids: 65_536 }), "{e}");
    assert_eq!(
        e.to_string(),
        "at least 65536 distinct uids and gids, squashfs holds at most 65535"
    );
    assert!(img.get_ref().is_empty(), "nothing written");

    // One fewer fits: no_ids (offset 26) is 65535.
    let mut img = std::io::Cursor::new(Vec::new());
    write(&tree_with_ids(65_534), &Options::default(), &mut img).unwrap();
    let img = img.into_inner();
    assert_eq!(u16::from_le_bytes([img[26], img[27]]), 65_535);
}

/// The three ways a host file is read: data blocks and a short one; a fragment; hashed
/// first as a duplicate candidate (named twice).
const SOURCE_CASES: [(u64, bool); 3] = [(200_000, false), (5_000, false), (200_000, true)];

/// Writes `size` bytes to `path` and returns a tree holding it as a host file, named twice
/// when `twice`.
fn host_tree(path: &std::path::Path, size: u64, twice: bool) -> Tree {
    std::fs::write(path, vec![9u8; imgbuild_blockio::to_usize(size)]).unwrap();
    let mut t = Tree::new(m());
    let data = fstree::FileData::Host {
        path: path.to_path_buf(),
        size,
    };
    t.insert_path(b"/a", Node::file(m(), data.clone())).unwrap();
    if twice {
        t.insert_path(b"/b", Node::file(m(), data)).unwrap();
    }
    t
}

#[test]
fn a_source_that_shrank_since_the_tree_was_built_is_named_with_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    for (size, twice) in SOURCE_CASES {
        let t = host_tree(&path, size, twice);
        std::fs::write(&path, vec![9u8; 3_000]).unwrap();
        let e = write(&t, &Options::default(), std::io::Cursor::new(Vec::new())).unwrap_err();
        assert!(
            matches!(&e, Error::Source(imgbuild_blockio::SourceError::Changed { planned, found: 3_000, path: p })
                if *planned == size && *p == path),
            "{e}"
        );
    }
}

#[test]
fn a_fifo_swapped_in_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    for (size, twice) in SOURCE_CASES {
        let t = host_tree(&path, size, twice);
        std::fs::remove_file(&path).unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = write(&t, &Options::default(), std::io::Cursor::new(Vec::new()));
            let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
        });
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("writing returns instead of waiting on the FIFO")
            .unwrap_err();
        assert!(e.contains("is a FIFO, not a regular file"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
