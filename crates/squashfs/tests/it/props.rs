//! Random trees, written and read back by unsquashfs (and the kernel as root).

use imgbuild_fstree::{Meta, Node, NodeId, Tree};
use imgbuild_squashfs::Options;
use proptest::prelude::*;

use crate::common::*;

#[derive(Clone, Debug)]
enum Item {
    Dir,
    File { len: usize, seed: u64 },
    Symlink(String),
    HardLink(usize),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        2 => Just(Item::Dir),
        5 => (prop_oneof![Just(0usize), 0usize..300, 4090usize..4100, 0usize..20_000], 0u64..4)
            .prop_map(|(len, seed)| Item::File { len, seed }),
        1 => "[a-z/.]{1,40}".prop_map(Item::Symlink),
        1 => (0usize..1000).prop_map(Item::HardLink),
    ]
}

fn build(items: &[(u8, String, Item, u16, u32, u32)]) -> Tree {
    let mut t = Tree::new(Meta::new(0o755, 0, 0, 1));
    let mut dirs: Vec<NodeId> = vec![0];
    let mut files: Vec<NodeId> = Vec::new();
    for (parent, name, it, perm, owner, mtime) in items {
        let dir = dirs[*parent as usize % dirs.len()];
        if name == "." || name == ".." || t.lookup_in(dir, name.as_bytes()).is_some() {
            continue;
        }
        // Without root, unsquashfs can extract only what its user may write and link.
        let perm = match (is_root(), it) {
            (true, _) => *perm,
            (false, Item::Dir) => perm | 0o700,
            (false, _) => perm | 0o600,
        };
        let m = Meta::new(perm, owner % 5, owner % 3, i64::from(*mtime));
        match it {
            Item::Dir => dirs.push(t.insert(dir, name.as_bytes(), Node::dir(m)).unwrap()),
            Item::File { len, seed } => {
                // Seeds repeat on purpose: some files are identical.
                let data = imgbuild_testutil::noise(*seed, *len);
                files.push(
                    t.insert(dir, name.as_bytes(), Node::file(m, bytes(data)))
                        .unwrap(),
                );
            }
            Item::Symlink(target) => {
                t.insert(dir, name.as_bytes(), Node::symlink(m, target.as_bytes()))
                    .unwrap();
            }
            Item::HardLink(i) if !files.is_empty() => {
                let f = files[i % files.len()];
                t.link(dir, name.as_bytes(), f).unwrap();
            }
            Item::HardLink(_) => {}
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_trees_read_back(
        items in prop::collection::vec(
            (any::<u8>(), "[a-zA-Z0-9._-]{1,12}", item(), 0u16..0o7777, any::<u32>(), any::<u32>()),
            1..120,
        ),
        fragments in any::<bool>(),
    ) {
        let t = build(&items);
        let dir = tempfile::tempdir().unwrap();
        let o = Options { block_size: 4096, fragments, ..Options::default() };
        let (img, _) = image(&t, &o, dir.path(), "p.sqsh");
        let out = extract(&img, dir.path());
        compare(&t, &out, Check { owners: is_root(), symlink_times: false, links: false });
        if is_root() {
            let m = Mount::new(&img);
            compare(&t, m.dir.path(), Check { owners: true, symlink_times: true, links: true });
        }
    }
}
