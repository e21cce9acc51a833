//! Our directory hash agrees with e2fsprogs, and hash collisions that straddle two leaf
//! blocks are indexed so that e2fsck, the kernel and ext4-view all find both names.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use imgbuild_ext4 as ext4;
use imgbuild_fstree::{Meta, Node, Tree};

use crate::common::*;

fn uuid_string(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[test]
fn hash_matches_debugfs() {
    let mut t = Tree::new(Meta::new(0o755, 0, 0, 1));
    t.insert_path(b"/x", Node::bytes(Meta::new(0o644, 0, 0, 1), &b"x"[..]))
        .unwrap();
    let img = build(&t, &opts());
    let seed = opts().hash_seed;
    let names: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        b"hello".to_vec(),
        b"exactly-32-bytes-long-name-00000".to_vec(),
        b"a-name-longer-than-thirty-two-bytes-to-need-two-rounds".to_vec(),
        vec![b'z'; 255],
        b"caf\xc3\xa9-\xff\xfe\x80".to_vec(),
        vec![0xe9; 40],
    ];
    for n in &names {
        let mut req = format!("dx_hash -h half_md4 -s {} ", uuid_string(&seed)).into_bytes();
        req.extend_from_slice(n);
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(std::ffi::OsStr::from_bytes(&req))
            .arg(&img.path)
            .output()
            .expect("debugfs");
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text
            .split("is 0x")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("debugfs said {text}"));
        let want = u32::from_str_radix(hex, 16).unwrap();
        assert_eq!(
            ext4::dir_hash(n, &seed),
            want,
            "{}",
            String::from_utf8_lossy(n)
        );
    }
}

#[test]
fn collision_across_leaf_blocks() {
    let seed = opts().hash_seed;
    // Find two names with the same hash, in the upper half so that many names sort below.
    let mut seen: HashMap<u32, String> = HashMap::new();
    let (a, b, h) = (0u64..)
        .find_map(|i| {
            let n = format!("collision-candidate-{i:08}");
            let h = ext4::dir_hash(n.as_bytes(), &seed);
            if h < 1 << 31 {
                return None;
            }
            seen.insert(h, n.clone()).map(|prev| (prev, n, h))
        })
        .unwrap();
    // Entries sort by (hash, minor hash, name): the pair sits together. Put fillers of
    // 16-byte records with smaller hashes in front so that the first leaf (4084 bytes of
    // entries) ends between the two.
    let rec = |n: &str| (8 + n.len()).div_ceil(4) * 4;
    let first_len = rec(&a).max(rec(&b));
    let fillers_needed = (4084 - first_len) / 16;
    let mut fillers = Vec::new();
    let mut later = Vec::new();
    for i in 0u32.. {
        let n = format!("f{i:07}");
        assert_eq!(rec(&n), 16);
        let hn = ext4::dir_hash(n.as_bytes(), &seed);
        if hn < h && fillers.len() < fillers_needed {
            fillers.push(n);
        } else if hn > h && later.len() < 300 {
            later.push(n);
        }
        if fillers.len() == fillers_needed && later.len() == 300 {
            break;
        }
    }
    let m = Meta::new(0o755, 0, 0, 1);
    let mut t = Tree::new(m);
    let d = t.insert_path(b"/d", Node::dir(m)).unwrap();
    for n in fillers.iter().chain(&later).chain([&a, &b]) {
        t.insert(d, n.as_bytes(), Node::bytes(m, n.as_bytes().to_vec()))
            .unwrap();
    }
    let img = build(&t, &opts());
    fsck(&img.path);
    // The second leaf's index entry carries the collision bit.
    let dump = debugfs(&img.path, "htree_dump /d");
    let flagged = format!("Hash: 0x{:08x}", h | 1);
    let flagged_alt = format!("0x{:08x}", h | 1);
    assert!(
        dump.contains(&flagged) || dump.contains(&flagged_alt),
        "index entry with hash {:#x} expected:\n{}",
        h | 1,
        &dump[..dump.len().min(3000)]
    );
    // ext4-view 1.0.0 does not follow the collision bit into the next leaf when looking a
    // name up, so only its listing is checked; the kernel checks lookups.
    let fs = ext4_view::Ext4::load_from_path(&img.path).unwrap();
    let listed = fs.read_dir("/d").unwrap().count();
    assert_eq!(listed, 2 + fillers.len() + later.len() + 2);
    let mnt = Mount::new(&img.path, false);
    compare_mounted(&t, mnt.path());
    for n in [&a, &b] {
        assert_eq!(
            std::fs::read(mnt.path().join("d").join(n)).unwrap(),
            n.as_bytes()
        );
    }
}
