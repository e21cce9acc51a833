//! Tests of the tree: inserting, looking up, walking, host scans.

use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};

fn m() -> Meta {
    Meta::new(0o755, 0, 0, 1)
}

#[test]
fn paths_and_order() {
    let mut t = Tree::new(m());
    t.mkdir_p(b"/nix/store", m()).unwrap();
    t.insert_path(b"/nix/store/b", Node::bytes(m(), &b"x"[..]))
        .unwrap();
    t.insert_path(b"/nix/store/a", Node::symlink(m(), "b"))
        .unwrap();
    assert!(t.insert_path(b"/nix/store/a", Node::dir(m())).is_err());
    assert!(t.insert_path(b"/nope/x", Node::dir(m())).is_err());
    let names: Vec<_> = t.walk().into_iter().map(|(p, _)| show(&p)).collect();
    assert_eq!(
        names,
        ["", "/nix", "/nix/store", "/nix/store/a", "/nix/store/b"]
    );
    assert!(t.lookup(b"nix/store/b").is_some());
    assert_eq!(split_parent(b"/a/b/c/"), (&b"/a/b"[..], &b"c"[..]));
    assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
    assert!(t.insert(ROOT, b"a/b", Node::dir(m())).is_err());
    assert!(t.insert(ROOT, b"..", Node::dir(m())).is_err());
}

#[test]
fn scan_keeps_links_and_never_follows_symlinks() {
    let d = tempfile::tempdir().unwrap();
    let s = d.path();
    std::fs::create_dir(s.join("sub")).unwrap();
    std::fs::write(s.join("sub/f"), b"hello").unwrap();
    std::fs::hard_link(s.join("sub/f"), s.join("g")).unwrap();
    symlink("/etc", s.join("escape")).unwrap();
    std::fs::set_permissions(s.join("g"), std::fs::Permissions::from_mode(0o4751)).unwrap();
    let mut sc = Scanner::new(ScanOptions {
        owner: Owner::Fixed(0, 0),
        perms: Perms::Preserve,
        mtime: Mtime::Fixed(7),
        hardlinks: true,
    });
    let t = sc.scan(s).unwrap();
    let g = t.lookup(b"g").unwrap();
    assert_eq!(t.lookup(b"sub/f"), Some(g));
    assert_eq!(t.link_counts()[g as usize], 2);
    assert_eq!(t.node(g).meta, Meta::new(0o4751, 0, 0, 7));
    let e = t.lookup(b"escape").unwrap();
    assert_eq!(t.node(e).kind, Kind::Symlink(b"/etc".to_vec()));
    let mut sc = Scanner::new(ScanOptions {
        owner: Owner::Fixed(0, 0),
        perms: Perms::NixStore,
        mtime: Mtime::Fixed(1),
        hardlinks: false,
    });
    let t = sc.scan(s).unwrap();
    assert_eq!(t.node(t.lookup(b"g").unwrap()).meta.perm, 0o555);
    assert_ne!(t.lookup(b"g"), t.lookup(b"sub/f"));
    assert_eq!(t.node(t.lookup(b"sub").unwrap()).meta.perm, 0o555);
    std::fs::write(s.join("plain"), b"x").unwrap();
    std::fs::set_permissions(s.join("plain"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut sc = Scanner::new(ScanOptions {
        owner: Owner::Fixed(5, 6),
        perms: Perms::Normalized,
        mtime: Mtime::Fixed(1),
        hardlinks: false,
    });
    let t = sc.scan(s).unwrap();
    let perm = |p: &[u8]| t.node(t.lookup(p).unwrap()).meta.perm;
    assert_eq!(perm(b"g"), 0o755, "an executable, setuid dropped");
    assert_eq!(perm(b"plain"), 0o644, "readable whatever the host mode");
    assert_eq!(perm(b"sub"), 0o755);
    assert_eq!(perm(b"escape"), 0o777);
}
