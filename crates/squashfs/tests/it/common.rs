//! Helpers: trees to write, images, unsquashfs, loop mounts, and the comparison of a
//! directory on the host (extracted or mounted) with the tree.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgbuild_fstree::{FileData, Kind, Meta, Node, NodeId, Tree};
use imgbuild_squashfs as squashfs;
pub use imgbuild_testutil::run;

pub fn os(p: &[u8]) -> &OsStr {
    OsStr::from_bytes(p)
}

pub fn bytes(b: Vec<u8>) -> FileData {
    FileData::Bytes(Arc::from(b))
}

/// Writes `tree` to `dir/name`; the image path and what `write` said.
pub fn image(
    tree: &Tree,
    o: &squashfs::Options,
    dir: &Path,
    name: &str,
) -> (PathBuf, squashfs::Summary) {
    let path = dir.join(name);
    let f = fs::File::create(&path).unwrap();
    let s = squashfs::write(tree, o, f).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), s.size);
    (path, s)
}

/// `unsquashfs -d` into a fresh directory below `dir`.
pub fn extract(img: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("extracted");
    let _ = fs::remove_dir_all(&out);
    run(Command::new("unsquashfs")
        .args(["-no-progress", "-quiet", "-d"])
        .arg(&out)
        .arg(img));
    out
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A read-only loop mount by the kernel's squashfs driver, unmounted on drop.
pub struct Mount {
    pub dir: tempfile::TempDir,
}

impl Mount {
    pub fn new(img: &Path) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(img)
            .arg(dir.path()));
        Mount { dir }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        for _ in 0..20 {
            let ok = Command::new("umount")
                .arg(self.dir.path())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn file_bytes(d: &FileData) -> Vec<u8> {
    match d {
        FileData::Bytes(b) => b.to_vec(),
        FileData::Host { path, .. } => fs::read(path).unwrap(),
    }
}

/// What to compare.
#[derive(Clone, Copy)]
pub struct Check {
    /// Owners and setuid/setgid/sticky bits (an extraction keeps them only as root).
    pub owners: bool,
    /// Symlink times (unsquashfs does not set them).
    pub symlink_times: bool,
    /// Hard links are one inode (the kernel) rather than copies.
    pub links: bool,
}

/// Compares the host directory `root` with `tree`: every name, type, permission bits,
/// owner, mtime, file bytes, symlink target; and that nothing else is there.
pub fn compare(tree: &Tree, root: &Path, c: Check) {
    let mut seen_ino: HashMap<NodeId, u64> = HashMap::new();
    let links = tree.link_counts();
    let mut count = 0;
    for (path, id) in tree.walk() {
        count += 1;
        let p = root.join(os(&path[path.len().min(1)..]));
        let shown = String::from_utf8_lossy(&path).into_owned();
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{shown}: {e}"));
        let node = tree.node(id);
        let ft = md.file_type();
        match &node.kind {
            Kind::Dir(m) => {
                assert!(ft.is_dir(), "{shown}: not a directory");
                let mut names: Vec<Vec<u8>> = fs::read_dir(&p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().as_bytes().to_vec())
                    .collect();
                names.sort();
                let want: Vec<Vec<u8>> = m.keys().cloned().collect();
                assert_eq!(names, want, "{shown}: entries");
            }
            Kind::File(d) => {
                assert!(ft.is_file(), "{shown}: not a file");
                assert_eq!(md.len(), d.size(), "{shown}: size");
                assert!(
                    fs::read(&p).unwrap() == file_bytes(d),
                    "{shown}: bytes differ"
                );
            }
            Kind::Symlink(t) => {
                assert!(ft.is_symlink(), "{shown}: not a symlink");
                assert_eq!(
                    fs::read_link(&p).unwrap().as_os_str().as_bytes(),
                    &t[..],
                    "{shown}: target"
                );
            }
            other => panic!("{shown}: unexpected kind {other:?} in the test tree"),
        }
        let want = node.meta;
        if !ft.is_symlink() {
            // Without root, unsquashfs drops setuid, setgid and sticky bits and applies the
            // umask (group and other write bits are then not compared).
            let bits = if c.owners { 0o7777 } else { 0o755 };
            assert_eq!(
                md.mode() & bits,
                u32::from(want.perm) & bits,
                "{shown}: mode"
            );
        }
        if c.owners {
            assert_eq!((md.uid(), md.gid()), (want.uid, want.gid), "{shown}: owner");
        }
        if !ft.is_symlink() || c.symlink_times {
            assert_eq!(
                md.mtime(),
                want.mtime.clamp(0, u32::MAX.into()),
                "{shown}: mtime"
            );
        }
        if c.links && !ft.is_dir() {
            assert_eq!(md.nlink(), u64::from(links[id as usize]), "{shown}: nlink");
            let ino = *seen_ino.entry(id).or_insert(md.ino());
            assert_eq!(ino, md.ino(), "{shown}: a hard link is one inode");
        }
    }
    assert!(count > 0);
}

/// Parses `unsquashfs -lln` (TZ=UTC) and checks every line against the tree: mode string,
/// numeric owner, size of files and symlinks, mtime to the minute, symlink target.
pub fn check_listing(tree: &Tree, img: &Path) {
    let out = run(Command::new("unsquashfs")
        .env("TZ", "UTC")
        .arg("-lln")
        .arg(img));
    let mut lines: HashMap<String, String> = HashMap::new();
    for l in out.lines().filter(|l| l.contains("squashfs-root")) {
        // "drwxr-xr-x 0/0   27 2020-01-01 00:00 squashfs-root/a -> b"
        let at = l.find("squashfs-root").unwrap();
        let name = l[at + "squashfs-root".len()..]
            .split(" -> ")
            .next()
            .unwrap()
            .to_string();
        lines.insert(name, l.to_string());
    }
    let walk = tree.walk();
    assert_eq!(lines.len(), walk.len(), "one line per name:\n{out}");
    for (path, id) in walk {
        let name = String::from_utf8(path).expect("test trees have UTF-8 names");
        let line = &lines[&name];
        let f: Vec<&str> = line.split_whitespace().collect();
        let node = tree.node(id);
        let m = node.meta;
        let (typ, size) = match &node.kind {
            Kind::Dir(_) => ('d', None),
            Kind::File(d) => ('-', Some(d.size())),
            Kind::Symlink(t) => ('l', Some(t.len() as u64)),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(f[0], mode_string(typ, m.perm), "{line}");
        assert_eq!(f[1], format!("{}/{}", m.uid, m.gid), "{line}");
        if let Some(s) = size {
            assert_eq!(f[2], s.to_string(), "{line}");
        }
        let (y, mo, d, h, mi, _) = imgbuild_units::utc(m.mtime.clamp(0, u32::MAX.into()));
        assert_eq!(
            format!("{} {}", f[3], f[4]),
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}"),
            "{line}"
        );
        if let Kind::Symlink(t) = &node.kind {
            let target = line.split(" -> ").nth(1).unwrap();
            assert_eq!(target.as_bytes(), &t[..], "{line}");
        }
    }
}

fn mode_string(typ: char, perm: u16) -> String {
    let mut s = String::from(typ);
    let bit = |b: u16| perm & b != 0;
    for (r, w, x, special, lower, upper) in [
        (0o400, 0o200, 0o100, 0o4000, 's', 'S'),
        (0o040, 0o020, 0o010, 0o2000, 's', 'S'),
        (0o004, 0o002, 0o001, 0o1000, 't', 'T'),
    ] {
        s.push(if bit(r) { 'r' } else { '-' });
        s.push(if bit(w) { 'w' } else { '-' });
        s.push(match (bit(x), bit(special)) {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// The tree the oracle tests write: many files, a directory of more than 256 entries (and
/// more than one metadata block of listing), deep paths, symlinks, empty files, files of
/// exactly one block, large files of several blocks, a file with a hole, identical files,
/// hard links, several owners; some files from the host (`host`), the rest in memory.
pub fn big_tree(block: usize, host: &Path) -> Tree {
    let mut t = Tree::new(Meta::new(0o755, 0, 0, 1_600_000_000));
    let m = |perm: u16, uid: u32, mtime: i64| Meta::new(perm, uid, uid + 100, mtime);
    let big = t.mkdir_p(b"/big", m(0o755, 0, 7)).unwrap();
    for i in 0..700u32 {
        let name = format!("entry-{i:05}-{}", "x".repeat((i % 40) as usize));
        let data = imgbuild_testutil::noise(u64::from(i), (i as usize * 37) % 3000);
        t.insert(
            big,
            name.as_bytes(),
            Node::file(m(0o644, i % 3, i64::from(i)), bytes(data)),
        )
        .unwrap();
    }
    let mut deep = b"/deep".to_vec();
    for i in 0..40 {
        deep.extend_from_slice(format!("/level{i}").as_bytes());
    }
    let d = t.mkdir_p(&deep, m(0o700, 1, 9)).unwrap();
    t.insert(
        d,
        b"bottom",
        Node::file(m(0o600, 1, 10), bytes(b"deep\n".to_vec())),
    )
    .unwrap();
    let f = t.mkdir_p(b"/files", m(0o755, 0, 11)).unwrap();
    let add = |t: &mut Tree, name: &str, data: Vec<u8>| {
        t.insert(f, name.as_bytes(), Node::file(m(0o644, 0, 12), bytes(data)))
            .unwrap()
    };
    add(&mut t, "empty", Vec::new());
    add(&mut t, "empty2", Vec::new());
    add(&mut t, "one-block", imgbuild_testutil::noise(1, block));
    add(&mut t, "one-block-text", b"abcdefgh".repeat(block / 8));
    add(
        &mut t,
        "block-plus-one",
        imgbuild_testutil::noise(2, block + 1),
    );
    add(
        &mut t,
        "several-blocks",
        imgbuild_testutil::noise(3, 5 * block + 123),
    );
    add(&mut t, "same-a", imgbuild_testutil::noise(4, 3 * block + 5));
    add(&mut t, "same-b", imgbuild_testutil::noise(4, 3 * block + 5));
    add(&mut t, "small-same-a", b"tiny and repeated".to_vec());
    add(&mut t, "small-same-b", b"tiny and repeated".to_vec());
    let mut holey = vec![0u8; 2 * block];
    holey.extend(imgbuild_testutil::noise(5, 10));
    holey.extend(vec![0u8; block]);
    add(&mut t, "holey", holey);
    add(&mut t, "zeros", vec![0u8; 3 * block]);
    let h = add(&mut t, "hard", b"two names".to_vec());
    t.link(f, b"hard-too", h).unwrap();
    let x = t
        .insert(
            f,
            b"suid",
            Node::file(m(0o4755, 0, 13), bytes(b"#!/bin/sh\n".to_vec())),
        )
        .unwrap();
    let _ = x;
    t.insert(f, b"link", Node::symlink(m(0o777, 0, 14), "one-block"))
        .unwrap();
    t.insert(
        f,
        b"abs-link",
        Node::symlink(m(0o777, 2, 15), "/nix/store/".repeat(300)),
    )
    .unwrap();
    t.insert(f, b"dangling", Node::symlink(m(0o777, 0, 16), "nowhere"))
        .unwrap();
    t.mkdir_p(b"/empty-dir", m(0o1777, 0, 17)).unwrap();
    t.mkdir_p(b"/future", m(0o755, 0, i64::from(u32::MAX)))
        .unwrap();
    // Host files: read from disk by the writer.
    let hd = t.mkdir_p(b"/host", m(0o755, 0, 18)).unwrap();
    for (i, len) in [0usize, 1, 4095, block, 3 * block + 7, 100_000]
        .into_iter()
        .enumerate()
    {
        let p = host.join(format!("h{i}"));
        fs::write(&p, imgbuild_testutil::noise(100 + i as u64, len)).unwrap();
        t.insert(
            hd,
            format!("h{i}").as_bytes(),
            Node::file(
                m(0o444, 0, 19),
                FileData::Host {
                    path: p,
                    size: len as u64,
                },
            ),
        )
        .unwrap();
    }
    // A copy of a host file, in memory: stored once.
    t.insert(
        hd,
        b"h4-copy",
        Node::file(
            m(0o444, 0, 19),
            bytes(imgbuild_testutil::noise(104, 3 * block + 7)),
        ),
    )
    .unwrap();
    t
}
