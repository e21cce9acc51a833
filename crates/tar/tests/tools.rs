//! GNU tar and bsdtar judge the archives: they list the expected members (names, owners,
//! modes, sizes, times, link targets) and extract them back into the same tree (contents,
//! modes, owners, times, symlink targets, hard links, devices).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use imgbuild_fstree::{
    FileData, Kind, Meta, Mtime, Node, Owner, Perms, ScanOptions, Scanner, Tree, ROOT,
};
use imgbuild_tar::{Archive, Options, RootEntry};
use imgbuild_testutil::{noise, run};

const T: i64 = 1_700_000_000;
const DOT: Options = Options {
    root: RootEntry::DotSlash,
    sparse: false,
};

fn meta(perm: u16) -> Meta {
    Meta::new(perm, 0, 0, T)
}

/// A tree with every case: long names (> 100, > 255 bytes), a long symlink target, deep
/// directories, unicode and odd bytes, an empty file, a host file, hard links, devices, a
/// FIFO, ids and times that need pax.
fn generated(host: &Path) -> Tree {
    let mut t = Tree::new(meta(0o755));
    let d = |t: &mut Tree, p: &[u8]| {
        t.mkdir_p(p, meta(0o755)).unwrap();
    };
    d(&mut t, b"bin");
    let sh = t
        .insert_path(
            b"bin/sh",
            Node::bytes(meta(0o755), &b"#!/bin/sh\necho hi\n"[..]),
        )
        .unwrap();
    t.insert_path(b"empty", Node::bytes(meta(0o644), &b""[..]))
        .unwrap();
    let data = noise(7, 3 * (1 << 20) + 5);
    std::fs::write(host, &data).unwrap();
    let old = Meta::new(0o444, 1000, 100, T - 400 * 86_400);
    t.insert_path(
        b"host.bin",
        Node::file(
            old,
            FileData::Host {
                path: host.to_path_buf(),
                size: data.len() as u64,
            },
        ),
    )
    .unwrap();
    t.insert_path(b"setuid", Node::bytes(meta(0o4755), &b"s"[..]))
        .unwrap();
    let before_1970 = Meta::new(0o644, 0, 0, -365 * 86_400 - 1);
    t.insert_path(b"before-1970", Node::bytes(before_1970, &b"pax mtime"[..]))
        .unwrap();
    let big = Meta::new(0o640, 3_000_000, 2_500_000, 0);
    t.insert_path(b"bigid", Node::bytes(big, &b"ids need pax"[..]))
        .unwrap();
    d(&mut t, b"long");
    let long_name = [&b"long/"[..], &[b'n'; 150]].concat();
    t.insert_path(&long_name, Node::bytes(meta(0o644), &b"150"[..]))
        .unwrap();
    let split = [&b"split/"[..], &[b'p'; 90], b"/", &[b'q'; 90]].concat();
    d(&mut t, &split[..96]);
    t.insert_path(
        &split,
        Node::bytes(meta(0o600), &b"fits ustar's prefix"[..]),
    )
    .unwrap();
    let mut deep = b"deep".to_vec();
    for i in 0..30 {
        deep.extend_from_slice(format!("/level-{i:02}").as_bytes());
    }
    d(&mut t, &deep);
    deep.extend_from_slice(b"/leaf.txt");
    assert!(deep.len() > 255);
    t.insert_path(&deep, Node::bytes(meta(0o644), &b"deep"[..]))
        .unwrap();
    d(&mut t, b"links");
    let target: Vec<u8> = [&b"/"[..], &[b'x'; 60]].concat().repeat(5);
    t.insert_path(b"links/long-target", Node::symlink(meta(0o777), target))
        .unwrap();
    t.insert_path(b"links/short", Node::symlink(meta(0o777), "../bin/sh"))
        .unwrap();
    let links = t.lookup(b"links").unwrap();
    t.link(links, b"hard", sh).unwrap();
    d(&mut t, b"unicode");
    t.insert_path(
        "unicode/héllo wörld 世界.txt".as_bytes(),
        Node::bytes(meta(0o644), &b"u"[..]),
    )
    .unwrap();
    d(&mut t, b"odd");
    t.insert_path(
        b"odd/\x01ctl\xff\xfe\\x",
        Node::bytes(meta(0o644), &b"o"[..]),
    )
    .unwrap();
    let odd_long = [&b"odd/"[..], &[0xff; 120]].concat();
    t.insert_path(&odd_long, Node::bytes(meta(0o644), &b"binary pax path"[..]))
        .unwrap();
    d(&mut t, b"dev");
    let node = |kind| Node {
        meta: meta(0o660),
        kind,
    };
    t.insert_path(b"dev/null", node(Kind::CharDev { major: 1, minor: 3 }))
        .unwrap();
    t.insert_path(b"dev/loop9", node(Kind::BlockDev { major: 7, minor: 9 }))
        .unwrap();
    t.insert_path(b"dev/fifo", node(Kind::Fifo)).unwrap();
    t
}

fn write(tree: &Tree, opts: Options) -> Vec<u8> {
    let a = Archive::new(tree, opts).unwrap();
    let mut out = Vec::new();
    let n = a.write(&mut out).unwrap();
    assert_eq!(n, a.size(), "the computed size is the written size");
    assert_eq!(out.len() as u64, n);
    out
}

/// A tree as comparable lines: path, mode, owner, time, and what it is (contents, target,
/// device numbers, the first path of a node that several paths share).
fn describe(t: &Tree) -> Vec<String> {
    let counts = t.link_counts();
    let mut first = std::collections::HashMap::new();
    t.walk()
        .into_iter()
        .map(|(path, id)| {
            let n = t.node(id);
            let shown = String::from_utf8_lossy(&path).into_owned();
            let what = match &n.kind {
                _ if counts[id as usize] > 1 && !n.is_dir() && first.contains_key(&id) => {
                    format!("hard link to {}", first[&id])
                }
                Kind::Dir(_) => "dir".into(),
                Kind::File(FileData::Bytes(b)) => format!("file {:?}", imgbuild_testutil::crc32(b)),
                Kind::File(FileData::Host { path, .. }) => {
                    format!(
                        "file {:?}",
                        imgbuild_testutil::crc32(&std::fs::read(path).unwrap())
                    )
                }
                Kind::Symlink(s) => format!("symlink {}", String::from_utf8_lossy(s)),
                other => format!("{other:?}"),
            };
            first.entry(id).or_insert_with(|| shown.clone());
            let m = n.meta;
            format!(
                "{shown:?} {:o} {}:{} {} {what}",
                m.perm, m.uid, m.gid, m.mtime
            )
        })
        .collect()
}

/// What `tar -tv` prints as a mode: type letter and `rwx` with setuid/setgid/sticky.
fn mode_string(n: &Node) -> String {
    let c = match n.kind {
        Kind::Dir(_) => 'd',
        Kind::Symlink(_) => 'l',
        Kind::CharDev { .. } => 'c',
        Kind::BlockDev { .. } => 'b',
        Kind::Fifo => 'p',
        _ => '-',
    };
    let p = n.meta.perm;
    let mut s = String::from(c);
    for (i, (r, w)) in [(0o400, 0o200), (0o40, 0o20), (0o4, 0o2)]
        .into_iter()
        .enumerate()
    {
        s.push(if p & r != 0 { 'r' } else { '-' });
        s.push(if p & w != 0 { 'w' } else { '-' });
        let x = p & (0o100 >> (3 * i)) != 0;
        let special = p & (0o4000 >> i) != 0;
        let (on, off) = if i == 2 { ('t', 'T') } else { ('s', 'S') };
        s.push(match (special, x) {
            (true, true) => on,
            (true, false) => off,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// A name as both tools print it in the C locale: printable ASCII as is, a backslash
/// doubled, every other byte as `\ooo`.
fn escaped(name: &[u8]) -> String {
    let mut s = String::new();
    for &b in name {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s
}

/// One member as a listing shows it.
#[derive(Debug, PartialEq)]
struct Listed {
    mode: String,
    uid: u32,
    gid: u32,
    /// The size, or `major,minor` of a device.
    size: String,
    mtime: i64,
    /// The name and, for links, ` -> target` or ` link to first-name`.
    name: String,
}

/// Every member as the tree says the tools should list it (names in the C locale's escapes).
fn expected_listing(t: &Tree) -> Vec<Listed> {
    let counts = t.link_counts();
    let mut first = std::collections::HashMap::new();
    t.walk()
        .into_iter()
        .map(|(path, id)| {
            let n = t.node(id);
            let mut name = escaped(&[b".", &path[..]].concat());
            if n.is_dir() {
                name.push('/');
            }
            let hard = counts[id as usize] > 1 && !n.is_dir();
            let earlier = if hard { first.get(&id).cloned() } else { None };
            first.entry(id).or_insert_with(|| name.clone());
            let size = match &n.kind {
                Kind::File(d) if earlier.is_none() => d.size().to_string(),
                Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                    format!("{major},{minor}")
                }
                _ => "0".into(),
            };
            let mut mode = mode_string(n);
            if let Some(to) = &earlier {
                mode.replace_range(0..1, "h");
                name = format!("{name} link to {to}");
            } else if let Kind::Symlink(target) = &n.kind {
                name = format!("{name} -> {}", escaped(target));
            }
            Listed {
                mode,
                uid: n.meta.uid,
                gid: n.meta.gid,
                size,
                mtime: n.meta.mtime,
                name,
            }
        })
        .collect()
}

fn tool(name: &str) -> Command {
    let mut c = Command::new(name);
    c.env("LC_ALL", "C").env("TZ", "UTC");
    c
}

/// The first `n` whitespace-separated fields of `line`, and the rest after one space.
fn fields(line: &str, n: usize) -> (Vec<&str>, &str) {
    let mut rest = line;
    let mut out = Vec::new();
    for _ in 0..n {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or(rest.len());
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    (out, rest.strip_prefix(' ').unwrap_or(rest))
}

fn archive_of(dir: &Path, tree: &Tree) -> std::path::PathBuf {
    let tar = dir.join("a.tar");
    let bytes = write(tree, DOT);
    assert_eq!(bytes, write(tree, DOT), "two writes, same bytes");
    std::fs::write(&tar, bytes).unwrap();
    tar
}

#[test]
fn gnu_tar_lists_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let tree = generated(&dir.path().join("host.bin"));
    let tar = archive_of(dir.path(), &tree);
    let out = run(tool("tar")
        .args(["--numeric-owner", "--full-time", "-tvf"])
        .arg(&tar));
    let want = expected_listing(&tree);
    let got: Vec<Listed> = out
        .lines()
        .map(|l| {
            let (f, name) = fields(l, 5);
            let (uid, gid) = f[1].split_once('/').unwrap();
            let time = format!("{} {}", f[3], f[4]);
            let mtime = want.iter().map(|w| w.mtime).find(|&t| full_time(t) == time);
            Listed {
                mode: f[0].into(),
                uid: uid.parse().unwrap(),
                gid: gid.parse().unwrap(),
                size: f[2].into(),
                mtime: mtime.unwrap_or_else(|| panic!("unexpected time {time} in {l}")),
                name: name.into(),
            }
        })
        .collect();
    same_listing(&got, &want, &out);
}

#[test]
fn bsdtar_lists_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let tree = generated(&dir.path().join("host.bin"));
    let tar = archive_of(dir.path(), &tree);
    let out = run(tool("bsdtar").args(["--numeric-owner", "-tvf"]).arg(&tar));
    let want = expected_listing(&tree);
    let got: Vec<Listed> = out
        .lines()
        .map(|l| {
            // mode, links, uid, gid, size, month, day, year (times over 6 months old), name.
            let (f, name) = fields(l, 8);
            let day = format!("{} {} {}", f[5], f[6], f[7]);
            let mtime = want.iter().map(|w| w.mtime).find(|&t| ls_day(t) == day);
            Listed {
                mode: f[0].into(),
                uid: f[2].parse().unwrap(),
                gid: f[3].parse().unwrap(),
                size: f[4].into(),
                mtime: mtime.unwrap_or_else(|| panic!("unexpected date {day} in {l}")),
                name: name.into(),
            }
        })
        .collect();
    // bsdtar shows days, not seconds: a time is checked to the day here, to the second by
    // the extraction test.
    let want: Vec<Listed> = want
        .into_iter()
        .map(|mut l| {
            l.mtime = got
                .iter()
                .map(|g| g.mtime)
                .find(|&t| ls_day(t) == ls_day(l.mtime))
                .unwrap_or(l.mtime);
            l
        })
        .collect();
    same_listing(&got, &want, &out);
}

/// `YYYY-MM-DD HH:MM:SS` (UTC), GNU tar's `--full-time`.
fn full_time(t: i64) -> String {
    let (y, mo, d, h, mi, s) = imgbuild_units::utc(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// `Mon D YYYY`, what bsdtar shows for a time more than six months ago.
fn ls_day(t: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, ..) = imgbuild_units::utc(t);
    format!("{} {d} {y}", MONTHS[mo as usize - 1])
}

/// Member by member, so that a failure shows the one that differs.
fn same_listing(got: &[Listed], want: &[Listed], out: &str) {
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w);
    }
    assert_eq!(got.len(), want.len(), "{out}");
}

/// Extracts `tar` with `cmd` (as root: owners, modes, times, devices restored) and compares
/// the result with `tree`, path by path. bsdtar leaves the time of the directory it
/// extracts into (the `./` member) alone: `dot_time` false skips that one time.
fn extracted_equals(tree: &Tree, tar: &Path, cmd: &str, args: &[&str], dot_time: bool) {
    let into = tempfile::tempdir().unwrap();
    run(tool(cmd).args(args).arg(tar).arg("-C").arg(into.path()));
    let back = Scanner::new(ScanOptions {
        owner: Owner::Preserve,
        perms: Perms::Preserve,
        mtime: Mtime::Host,
        hardlinks: true,
    })
    .scan(into.path())
    .unwrap();
    let mut back = back;
    if !dot_time {
        back.node_mut(ROOT).meta.mtime = tree.node(ROOT).meta.mtime;
    }
    let (want, got) = (describe(tree), describe(&back));
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "{cmd} extracted something else");
    }
    assert_eq!(got.len(), want.len(), "{cmd}: {got:#?}");
}

#[test]
fn gnu_tar_and_bsdtar_extract_the_same_tree() {
    assert!(
        is_root(),
        "extraction restores owners and devices only as root; run the tests as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let tree = generated(&dir.path().join("host.bin"));
    let tar = archive_of(dir.path(), &tree);
    extracted_equals(&tree, &tar, "tar", &["--numeric-owner", "-xpf"], true);
    extracted_equals(&tree, &tar, "bsdtar", &["--numeric-owner", "-xpf"], false);
}

/// Whether this process runs as root (`id -u`).
fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

#[test]
fn without_a_root_member_paths_are_bare() {
    let dir = tempfile::tempdir().unwrap();
    let tree = generated(&dir.path().join("host.bin"));
    let tar = dir.path().join("bare.tar");
    let bytes = write(
        &tree,
        Options {
            root: RootEntry::Omitted,
            sparse: false,
        },
    );
    std::fs::write(&tar, &bytes).unwrap();
    let names = run(tool("tar").arg("-tf").arg(&tar));
    let mut lines = names.lines();
    assert_eq!(lines.next(), Some("before-1970"));
    assert_eq!(lines.next(), Some("bigid"));
    assert_eq!(lines.next(), Some("bin/"));
    assert_eq!(
        names.lines().count(),
        tree.walk().len() - 1,
        "every node but the root"
    );
    assert!(names
        .lines()
        .all(|l| !l.starts_with("./") && !l.starts_with('/')));
}

#[test]
fn a_changed_host_file_or_a_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host.bin");
    let tree = generated(&host);
    let archive = Archive::new(&tree, DOT).unwrap();
    std::fs::write(&host, b"shorter").unwrap();
    let err = archive.write(std::io::sink()).unwrap_err();
    let chain = imgbuild_testutil::error_chain(&err);
    assert!(
        chain.contains("changed since it was scanned") && chain.contains("found 7"),
        "{chain}"
    );
    let mut t = Tree::new(meta(0o755));
    t.insert(
        ROOT,
        b"sock",
        Node {
            meta: meta(0o755),
            kind: Kind::Socket,
        },
    )
    .unwrap();
    let err = Archive::new(&t, DOT).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`/sock` is a socket: a tar archive cannot hold one"
    );
}

#[test]
fn a_sparse_file_over_8_gib_is_listed_and_extracted_by_both_tools() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("big.img");
    let size: u64 = (8 << 30) + 4097;
    let f = std::fs::File::create(&host).unwrap();
    f.set_len(size).unwrap();
    let marks: [(u64, &[u8]); 3] = [(0, b"head"), (5 << 30, b"middle"), (size - 4, b"tail")];
    for (at, b) in marks {
        f.write_all_at(b, at).unwrap();
    }
    let mut t = Tree::new(meta(0o755));
    let name = [&b"sparse-"[..], &[b's'; 120]].concat();
    let data = FileData::Host {
        path: host.clone(),
        size,
    };
    t.insert(ROOT, &name, Node::file(meta(0o644), data.clone()))
        .unwrap();
    let opts = Options {
        root: RootEntry::DotSlash,
        sparse: true,
    };
    let bytes = write(&t, opts);
    assert!(bytes.len() < 64 << 10, "{} bytes", bytes.len());
    assert_eq!(bytes, write(&t, opts), "two writes, same bytes");
    // Stored whole, the same tree would take the whole size (pax `size`).
    let whole = Archive::new(&t, DOT).unwrap().size();
    assert!(whole > size, "{whole}");
    let tar = dir.path().join("s.tar");
    std::fs::write(&tar, &bytes).unwrap();
    let shown = format!("./{}", String::from_utf8_lossy(&name));
    let gnu = run(tool("tar").args(["--numeric-owner", "-tvf"]).arg(&tar));
    assert!(
        gnu.contains(&format!(" {size} 2023-11-14 22:13 {shown}\n")),
        "{gnu}"
    );
    let bsd = run(tool("bsdtar").args(["--numeric-owner", "-tvf"]).arg(&tar));
    assert!(
        bsd.contains(&format!(" {size} Nov 14  2023 {shown}\n")),
        "{bsd}"
    );
    for cmd in ["tar", "bsdtar"] {
        let into = tempfile::tempdir().unwrap();
        run(tool(cmd).arg("-xpf").arg(&tar).arg("-C").arg(into.path()));
        let out = into
            .path()
            .join(std::ffi::OsStr::new(std::str::from_utf8(&name).unwrap()));
        let md = std::fs::metadata(&out).unwrap();
        assert_eq!(md.len(), size, "{cmd}");
        assert!(
            md.blocks() * 512 < 1 << 20,
            "{cmd} extracted it sparse: {}",
            md.blocks()
        );
        let back = std::fs::File::open(&out).unwrap();
        for (at, b) in marks {
            let mut got = vec![0u8; b.len() + 8];
            let start = at.saturating_sub(4);
            back.read_exact_at(
                &mut got[..(size - start).min(b.len() as u64 + 8) as usize],
                start,
            )
            .unwrap();
            let off = (at - start) as usize;
            assert_eq!(&got[off..off + b.len()], b, "{cmd} at {at}");
            assert!(got[..off].iter().all(|&x| x == 0), "{cmd} before {at}");
        }
        let mut zeros = vec![1u8; 4096];
        back.read_exact_at(&mut zeros, 3 << 30).unwrap();
        assert!(
            zeros.iter().all(|&x| x == 0),
            "{cmd}: a hole reads as zeros"
        );
    }
}

#[test]
fn sparse_members_extract_to_the_same_tree() {
    // The generated tree with sparse on: the noise file has no zero grain and stays whole;
    // a file of mostly zeros, written in full (no holes on the host), becomes sparse.
    let dir = tempfile::tempdir().unwrap();
    let mut tree = generated(&dir.path().join("host.bin"));
    let zeros = dir.path().join("zeros");
    let mut b = vec![0u8; 1 << 20];
    b[300_000] = 9;
    b[(1 << 20) - 1] = 7;
    std::fs::write(&zeros, &b).unwrap();
    let data = FileData::Host {
        path: zeros,
        size: b.len() as u64,
    };
    tree.insert(ROOT, b"zeros", Node::file(meta(0o600), data))
        .unwrap();
    let opts = Options {
        root: RootEntry::DotSlash,
        sparse: true,
    };
    let bytes = write(&tree, opts);
    assert!(bytes.windows(15).any(|w| w == b"GNU.sparse.name"));
    let tar = dir.path().join("s.tar");
    std::fs::write(&tar, &bytes).unwrap();
    extracted_equals(&tree, &tar, "tar", &["--numeric-owner", "-xpf"], true);
    extracted_equals(&tree, &tar, "bsdtar", &["--numeric-owner", "-xpf"], false);
}

#[test]
fn the_map_holds_the_written_bytes() {
    // Every member kind, host files whole and sparse, both root conventions: the map read
    // back is the archive `write` writes, and it references the host files (not copies).
    let dir = tempfile::tempdir().unwrap();
    let mut tree = generated(&dir.path().join("host.bin"));
    let zeros = dir.path().join("zeros");
    let mut b = vec![0u8; 1 << 20];
    b[300_000] = 9;
    std::fs::write(&zeros, &b).unwrap();
    let data = FileData::Host {
        path: zeros,
        size: b.len() as u64,
    };
    tree.insert(ROOT, b"zeros", Node::file(meta(0o600), data))
        .unwrap();
    for root in [RootEntry::DotSlash, RootEntry::Omitted] {
        for sparse in [false, true] {
            let opts = Options { root, sparse };
            let written = write(&tree, opts);
            let map = Archive::new(&tree, opts).unwrap().map("t").unwrap();
            assert_eq!(map.len(), written.len() as u64);
            let mut back = vec![0u8; written.len()];
            map.read_at(0, &mut back).unwrap();
            assert!(back == written, "{root:?} sparse {sparse}");
            let host = if sparse {
                3 * (1 << 20) + 5 + 4096
            } else {
                4 << 20
            };
            assert!(map.file_bytes() >= host, "{}", map.file_bytes());
        }
    }
}
