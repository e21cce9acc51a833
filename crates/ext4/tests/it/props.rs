//! Property tests: random trees (names of any bytes, sizes around block boundaries, deep
//! and wide directories, symlinks, hard links, special files, odd owners, modes and times)
//! must pass e2fsck, read back equal through ext4-view and the kernel, and be reproducible.

use imgbuild_ext4 as ext4;
use imgbuild_fstree::{Kind, Meta, Node, NodeId, Tree, ROOT};
use proptest::prelude::*;

use crate::adversarial::noise;
use crate::common::*;

#[derive(Debug, Clone)]
enum Op {
    Dir,
    File {
        size: usize,
        seed: u64,
    },
    /// A host file of `size` bytes with data only at `segments` (offset in thousandths of
    /// the size, length): holes anywhere, including at the start and the end.
    HostFile {
        size: u64,
        segments: Vec<(u64, u64)>,
    },
    Symlink {
        len: usize,
    },
    Link {
        target: usize,
    },
    Special {
        which: u8,
        major: u32,
        minor: u32,
    },
    /// Many small files at once (to grow htree directories).
    Many {
        count: usize,
    },
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        8 => prop::sample::select(b"abcdefghijklmnopqrstuvwxyz0123456789._-".to_vec()),
        1 => (1u8..=255).prop_filter("no slash", |b| *b != b'/'),
    ];
    prop_oneof![
        10 => prop::collection::vec(byte.clone(), 1..12),
        1 => prop::collection::vec(byte, 200..=255),
    ]
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(4095),
        Just(4096),
        Just(4097),
        Just(8192),
        0usize..20_000,
        0usize..300_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Dir),
        6 => (size(), any::<u64>()).prop_map(|(size, seed)| Op::File { size, seed }),
        3 => (
            prop_oneof![0u64..20_000, 0u64..600_000, Just(4096u64 * 100)],
            prop::collection::vec((0u64..1000, 1u64..70_000), 0..6),
        )
            .prop_map(|(size, segments)| Op::HostFile { size, segments }),
        2 => prop_oneof![1usize..70, Just(4095usize), 59usize..62].prop_map(|len| Op::Symlink { len }),
        2 => any::<usize>().prop_map(|target| Op::Link { target }),
        1 => (0u8..4, 0u32..1000, 0u32..300_000).prop_map(|(which, major, minor)| Op::Special { which, major, minor }),
        1 => (50usize..1500).prop_map(|count| Op::Many { count }),
    ]
}

fn meta() -> impl Strategy<Value = Meta> {
    (
        0u16..0o10000,
        prop_oneof![Just(0u32), any::<u32>()],
        prop_oneof![Just(0u32), any::<u32>()],
        prop_oneof![
            Just(1_700_000_000i64),
            -(1i64 << 31)..(3i64 << 32) - (1i64 << 31)
        ],
    )
        .prop_map(|(p, u, g, t)| Meta::new(p, u, g, t))
}

fn build_tree(ops: &[(usize, Vec<u8>, Op, Meta)], host: &std::path::Path) -> Tree {
    let mut t = Tree::new(Meta::new(0o755, 0, 0, 1));
    let mut dirs: Vec<NodeId> = vec![ROOT];
    let mut leaves: Vec<NodeId> = Vec::new();
    for (parent, name, op, meta) in ops {
        let dir = dirs[parent % dirs.len()];
        if t.lookup_in(dir, name).is_some() {
            continue;
        }
        match op {
            Op::Dir => {
                // Directories need to be enterable by root only; any mode is fine.
                dirs.push(t.insert(dir, name, Node::dir(*meta)).unwrap());
            }
            Op::File { size, seed } => {
                leaves.push(
                    t.insert(dir, name, Node::bytes(*meta, noise(*seed, *size)))
                        .unwrap(),
                );
            }
            Op::HostFile { size, segments } => {
                use std::os::unix::fs::FileExt;
                let p = host.join(format!("h{}", leaves.len()));
                let f = std::fs::File::create(&p).unwrap();
                f.set_len(*size).unwrap();
                for &(permille, len) in segments {
                    let off = *size * permille / 1000;
                    let len = len.min(*size - off);
                    f.write_all_at(&noise(off, len as usize), off).unwrap();
                }
                let data = imgbuild_fstree::FileData::Host {
                    path: p,
                    size: *size,
                };
                leaves.push(t.insert(dir, name, Node::file(*meta, data)).unwrap());
            }
            Op::Symlink { len } => {
                let target: Vec<u8> = noise(*len as u64, *len)
                    .iter()
                    .map(|b| b'!' + b % 90)
                    .collect();
                leaves.push(t.insert(dir, name, Node::symlink(*meta, target)).unwrap());
            }
            Op::Link { target } => {
                if !leaves.is_empty() {
                    let id = leaves[target % leaves.len()];
                    t.link(dir, name, id).unwrap();
                }
            }
            Op::Special {
                which,
                major,
                minor,
            } => {
                let kind = match which {
                    0 => Kind::CharDev {
                        major: *major,
                        minor: *minor,
                    },
                    1 => Kind::BlockDev {
                        major: *major,
                        minor: *minor,
                    },
                    2 => Kind::Fifo,
                    _ => Kind::Socket,
                };
                leaves.push(t.insert(dir, name, Node { meta: *meta, kind }).unwrap());
            }
            Op::Many { count } => {
                let d = t.insert(dir, name, Node::dir(*meta)).unwrap();
                for i in 0..*count {
                    let n = format!(
                        "{}-{i}",
                        String::from_utf8_lossy(&name[..name.len().min(20)])
                    );
                    let n = n.replace('/', "_");
                    if t.lookup_in(d, n.as_bytes()).is_none() {
                        t.insert(d, n.as_bytes(), Node::bytes(*meta, noise(i as u64, i % 50)))
                            .unwrap();
                    }
                }
            }
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_trees_pass_every_oracle(
        ops in prop::collection::vec((any::<usize>(), name(), op(), meta()), 0..60),
        seed in any::<[u8; 16]>(),
        extra in prop_oneof![Just(0u64), Just(3 << 20)],
    ) {
        let host = tempfile::tempdir().unwrap();
        let tree = build_tree(&ops, host.path());
        let o = ext4::Options {
            hash_seed: seed,
            size: ext4::Size::Auto { extra_free: extra },
            ..opts()
        };
        let img = build(&tree, &o);
        fsck(&img.path);
        compare_ext4_view(&tree, &img.path);
        let m = Mount::new(&img.path, false);
        compare_mounted(&tree, m.path());
        // One thread gives the same bytes as the default pool.
        let again = img.dir.path().join("one-thread.img");
        rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| {
            let plan = ext4::plan(&tree, &o).unwrap();
            write_to(&plan, &tree, &again);
        });
        prop_assert_eq!(sha_file(&again), sha_file(&img.path));
    }
}
