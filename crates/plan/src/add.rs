//! Host files added at build time (`--add`, `--add-tree`, `--add-boot`): secrets, host keys,
//! tokens that stay out of the Nix store. The mode is exactly what the user gives (default
//! 0644 for files, 0755 for directories; trees keep a file's execute bits), the owner root:root
//! unless given; nothing is guessed from names. Every added file is listed in the manifest by
//! path, mode, owner and size, never by a hash of its contents (a published manifest must not
//! let anyone test guesses of a secret).

use crate::{Error, Result};
use imgbuild_fstree::{
    FileData, Kind, Meta, Mtime, Node, NodeId, Owner, Perms, ScanOptions, Scanner, Tree,
};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where an addition goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddTarget {
    /// The root filesystem.
    Root,
    /// The boot partition (ESP or Pi firmware).
    Boot,
}

/// One `--add`/`--add-tree`/`--add-boot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Add {
    /// The host file or directory to copy.
    pub src: PathBuf,
    /// Absolute path inside the target filesystem.
    pub dest: String,
    /// Permission bits for a single file (`--add ...:MODE`).
    pub mode: Option<u16>,
    /// uid, gid (`--add ...:MODE:UID:GID`).
    pub owner: Option<(u32, u32)>,
    /// A whole directory tree (`--add-tree`).
    pub tree: bool,
    /// The filesystem it goes into.
    pub target: AddTarget,
}

impl Add {
    /// Parse `SRC:DEST[:MODE[:UID:GID]]` (`tree`: `DIR:DEST`).
    pub fn parse(spec: &str, tree: bool, target: AddTarget) -> Result<Add, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let bad = |why: &str| format!("`{spec}`: {why}");
        let (src, dest) = match parts.as_slice() {
            [s, d, ..] if !s.is_empty() && !d.is_empty() => (*s, *d),
            _ => return Err(bad("expected SRC:DEST")),
        };
        if target == AddTarget::Boot && parts.len() > 2 {
            return Err(bad(
                "the boot partition is FAT, which keeps no modes or owners: give SRC:DEST",
            ));
        }
        let max = if tree { 2 } else { 5 };
        if parts.len() > max || parts.len() == 4 {
            return Err(bad(if tree {
                "expected DIR:DEST"
            } else {
                "expected SRC:DEST[:MODE[:UID:GID]]"
            }));
        }
        let mode = match parts.get(2) {
            Some(m) => Some(
                u16::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| bad(&format!("mode `{m}` is not an octal mode like 0600")))?,
            ),
            None => None,
        };
        let owner = match (parts.get(3), parts.get(4)) {
            (Some(u), Some(g)) => Some((
                u.parse()
                    .map_err(|_| bad(&format!("uid `{u}` is not a number")))?,
                g.parse()
                    .map_err(|_| bad(&format!("gid `{g}` is not a number")))?,
            )),
            _ => None,
        };
        let dest = normalize_dest(dest).map_err(|why| bad(&why))?;
        Ok(Add {
            src: PathBuf::from(src),
            dest,
            mode,
            owner,
            tree,
            target,
        })
    }
}

/// `/a/b/c`: absolute, no `.`/`..`/empty components, not the root itself.
fn normalize_dest(d: &str) -> Result<String, String> {
    if !d.starts_with('/') {
        return Err(format!("destination `{d}` must be absolute"));
    }
    let comps: Vec<&str> = d.split('/').filter(|c| !c.is_empty()).collect();
    if comps.is_empty() {
        return Err("the destination cannot be `/` itself".into());
    }
    if comps.iter().any(|c| *c == "." || *c == "..") {
        return Err(format!("destination `{d}` must not contain `.` or `..`"));
    }
    Ok(format!("/{}", comps.join("/")))
}

/// What the manifest records of an added file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Added {
    /// The filesystem it went into.
    pub target: AddTarget,
    /// Its path in that filesystem.
    pub path: String,
    /// Its permission bits, octal (`0644`).
    pub mode: String,
    /// Its owner's uid in the image.
    pub uid: u32,
    /// Its group's gid in the image.
    pub gid: u32,
    /// Its size in bytes.
    pub size: u64,
    /// Not for everyone's eyes: the host file is not world-readable, the image mode is not,
    /// or it goes to the FAT boot partition (which keeps no modes: anyone holding the image
    /// reads it). An image holding such a file is written 0600 (and its bmap with it).
    #[serde(skip)]
    pub private: bool,
}

/// An `--add` source: read in pieces when the image is written, so no bound but the disk's.
const ADD_SOURCE: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "--add source",
    max_bytes: u64::MAX,
};

/// Whether a file is kept from others: on FAT (no modes at all), or when its host mode or
/// its image mode is not world-readable.
fn is_private(fat: bool, host_mode: u32, image_mode: u16) -> bool {
    fat || host_mode & 0o004 == 0 || image_mode & 0o004 == 0
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Apply `adds` to `tree`. Refuses destinations in the Nix store, clashes with anything
/// already there, sources that are symlinks (`--add`) and trees holding symlinks that leave
/// the tree. Returns the manifest records, in the order given.
pub fn apply(tree: &mut Tree, adds: &[&Add], time: i64, fat: bool) -> Result<Vec<Added>> {
    let mut out = Vec::new();
    for a in adds {
        let clash = |why: String| Error::AddClash {
            dest: a.dest.clone(),
            reason: why,
        };
        if !fat && (a.dest == "/nix/store" || a.dest.starts_with("/nix/store/")) {
            return Err(clash(
                "it is inside /nix/store, which holds only the closure".into(),
            ));
        }
        if tree.lookup(a.dest.as_bytes()).is_some() {
            return Err(clash("the image already has it".into()));
        }
        let (parent, name) = imgbuild_fstree::split_parent(a.dest.as_bytes());
        let parent_s = String::from_utf8_lossy(parent).into_owned();
        if let Some(p) = tree.lookup(parent) {
            if !tree.node(p).is_dir() {
                return Err(clash(format!("`{parent_s}` is not a directory")));
            }
        }
        let dir = tree
            .mkdir_p(parent, Meta::new(0o755, 0, 0, time))
            .map_err(|source| Error::Tree {
                what: parent_s.clone(),
                source,
            })?;
        let md = std::fs::symlink_metadata(&a.src).map_err(io("reading --add source", &a.src))?;
        let (uid, gid) = a.owner.unwrap_or((0, 0));
        if a.tree {
            if !md.is_dir() {
                return Err(Error::AddSource {
                    src: a.src.clone(),
                    reason: "--add-tree needs a directory".into(),
                });
            }
            // The one host-directory scanner (never follows symlinks), with the modes,
            // owner and time --add-tree promises; then what it found is checked and listed.
            let mut scanner = Scanner::new(ScanOptions {
                owner: Owner::Fixed(uid, gid),
                perms: Perms::Normalized,
                mtime: Mtime::Fixed(time),
                hardlinks: false,
            });
            let id = scanner
                .graft(tree, dir, name, &a.src)
                .map_err(|source| Error::Tree {
                    what: a.dest.clone(),
                    source,
                })?;
            let cx = TreeAdd {
                base: &a.src,
                fat,
                target: a.target,
            };
            check_added(&cx, tree, id, Path::new(""), &a.dest, &mut out)?;
        } else {
            if md.file_type().is_symlink() {
                return Err(Error::AddSource {
                    src: a.src.clone(),
                    reason: "is a symlink (give the file it points to)".into(),
                });
            }
            if !md.is_file() {
                return Err(Error::AddSource {
                    src: a.src.clone(),
                    reason: "is not a regular file (use --add-tree for directories)".into(),
                });
            }
            // Opened without blocking and checked on the descriptor; a /proc or /sys file,
            // whose size says nothing of its content, is refused instead of being added empty.
            let input = imgbuild_blockio::open_input(&a.src, ADD_SOURCE)?;
            input.check_size()?;
            let mode = a.mode.unwrap_or(0o644);
            add_file(
                tree,
                dir,
                name,
                &a.src,
                md.len(),
                Meta::new(mode, uid, gid, time),
            )?;
            out.push(Added {
                target: a.target,
                path: a.dest.clone(),
                mode: format!("{mode:04o}"),
                uid,
                gid,
                size: md.len(),
                private: is_private(fat, md.permissions().mode(), mode),
            });
        }
    }
    Ok(out)
}

fn add_file(
    tree: &mut Tree,
    dir: NodeId,
    name: &[u8],
    src: &Path,
    size: u64,
    meta: Meta,
) -> Result<()> {
    tree.insert(
        dir,
        name,
        Node::file(
            meta,
            FileData::Host {
                path: src.to_path_buf(),
                size,
            },
        ),
    )
    .map(|_| ())
    .map_err(|source| Error::Tree {
        what: String::from_utf8_lossy(name).into_owned(),
        source,
    })
}

/// What stays the same while one `--add-tree` is checked.
struct TreeAdd<'a> {
    /// The tree's top on the host (relative symlinks must stay below it).
    base: &'a Path,
    /// The target is FAT: symlinks cannot be kept.
    fat: bool,
    target: AddTarget,
}

/// Checks the scanned tree under `dir` (host directory `base/rel`, image path `dest`): only
/// files, directories and (not on FAT) symlinks that stay inside the added tree; lists every
/// file for the manifest, in name order.
fn check_added(
    cx: &TreeAdd,
    tree: &Tree,
    dir: NodeId,
    rel: &Path,
    dest: &str,
    out: &mut Vec<Added>,
) -> Result<()> {
    let children: Vec<(Vec<u8>, NodeId)> =
        tree.children(dir).map(|(n, id)| (n.to_vec(), id)).collect();
    for (n, id) in children {
        let name = std::ffi::OsStr::from_bytes(&n);
        let rel = rel.join(name);
        let host = cx.base.join(&rel);
        let d = format!("{dest}/{}", name.to_string_lossy());
        let node = tree.node(id);
        match &node.kind {
            Kind::Dir(_) => check_added(cx, tree, id, &rel, &d, out)?,
            Kind::File(f) => {
                // A size-0 file that holds something (a /proc or /sys file) would be added
                // empty: refused. Other sizes are checked as they are copied.
                if f.size() == 0 {
                    let kind = imgbuild_blockio::InputKind {
                        what: "--add-tree file",
                        ..ADD_SOURCE
                    };
                    imgbuild_blockio::open_input(&host, kind)?.check_size()?;
                }
                // The scan normalized the modes; the host's own says whether it was secret.
                let host_md = std::fs::symlink_metadata(&host)
                    .map_err(io("reading --add-tree file", &host))?;
                out.push(Added {
                    target: cx.target,
                    path: d,
                    mode: format!("{:04o}", node.meta.perm),
                    uid: node.meta.uid,
                    gid: node.meta.gid,
                    size: f.size(),
                    private: is_private(cx.fat, host_md.permissions().mode(), node.meta.perm),
                })
            }
            Kind::Symlink(t) if !cx.fat => {
                let t = Path::new(std::ffi::OsStr::from_bytes(t));
                // A relative link must stay inside the added tree.
                if t.is_relative() {
                    let mut depth = i64::try_from(rel.components().count()).unwrap_or(i64::MAX) - 1;
                    for c in t.components() {
                        match c {
                            std::path::Component::ParentDir => depth -= 1,
                            std::path::Component::Normal(_) => depth += 1,
                            _ => {}
                        }
                        if depth < 0 {
                            return Err(Error::AddSource {
                                src: host,
                                reason: format!(
                                    "symlink to `{}` leaves the added tree",
                                    t.display()
                                ),
                            });
                        }
                    }
                }
            }
            _ => {
                return Err(Error::AddSource {
                    src: host,
                    reason: if cx.fat {
                        "only files and directories can go on a FAT partition".into()
                    } else {
                        "is not a file, directory or symlink".into()
                    },
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        let a = Add::parse("key:/etc/ssh/key:0600", false, AddTarget::Root).unwrap();
        assert_eq!(a.dest, "/etc/ssh/key");
        assert_eq!(a.mode, Some(0o600));
        assert_eq!(a.owner, None);
        let a = Add::parse("t:/var/lib//x/:0640:1000:100", false, AddTarget::Root).unwrap();
        assert_eq!(
            (a.dest.as_str(), a.owner),
            ("/var/lib/x", Some((1000, 100)))
        );
        assert!(Add::parse("k:etc/x", false, AddTarget::Root).is_err());
        assert!(Add::parse("k:/etc/../x", false, AddTarget::Root).is_err());
        assert!(Add::parse("k:/x:9999", false, AddTarget::Root).is_err());
        assert!(Add::parse("k:/x:0600:1", false, AddTarget::Root).is_err());
        assert!(Add::parse("d:/x:0600", true, AddTarget::Root).is_err());
        assert!(Add::parse("k", false, AddTarget::Root).is_err());
    }

    #[test]
    fn apply_refuses_clashes_and_escapes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"secret").unwrap();
        let mut t = Tree::new(Meta::new(0o755, 0, 0, 0));
        t.mkdir_p(b"/nix/store", Meta::new(0o755, 0, 0, 0)).unwrap();
        let a = Add::parse(
            &format!("{}:/etc/wpa.conf:0600", f.display()),
            false,
            AddTarget::Root,
        )
        .unwrap();
        let r = apply(&mut t, &[&a], 5, false).unwrap();
        assert_eq!(r[0].mode, "0600");
        assert_eq!(r[0].size, 6);
        // No hash of a secret's contents in the manifest.
        let json = serde_json::to_string(&r[0]).unwrap();
        assert!(!json.contains("sha256"), "{json}");
        // FAT keeps no modes or owners: --add-boot takes SRC:DEST only.
        let e = Add::parse("/k:/boot/k:0600:0:0", false, AddTarget::Boot).unwrap_err();
        assert!(e.contains("FAT"), "{e}");
        assert!(Add::parse("/k:/boot/k", false, AddTarget::Boot).is_ok());
        let n = t.node(t.lookup(b"/etc/wpa.conf").unwrap());
        assert_eq!(n.meta, Meta::new(0o600, 0, 0, 5));
        let e = apply(&mut t, &[&a], 5, false).unwrap_err();
        assert!(e.to_string().contains("already has it"), "{e}");
        let s = Add::parse(
            &format!("{}:/nix/store/x", f.display()),
            false,
            AddTarget::Root,
        )
        .unwrap();
        assert!(apply(&mut t, &[&s], 5, false)
            .unwrap_err()
            .to_string()
            .contains("/nix/store"));
        let tree_dir = d.path().join("tree");
        std::fs::create_dir(&tree_dir).unwrap();
        std::os::unix::fs::symlink("../f", tree_dir.join("up")).unwrap();
        let ta = Add::parse(
            &format!("{}:/srv", tree_dir.display()),
            true,
            AddTarget::Root,
        )
        .unwrap();
        let e = apply(&mut t, &[&ta], 5, false).unwrap_err();
        assert!(e.to_string().contains("leaves the added tree"), "{e}");
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let la = Add::parse(&format!("{}:/etc/l", l.display()), false, AddTarget::Root).unwrap();
        assert!(apply(&mut t, &[&la], 5, false)
            .unwrap_err()
            .to_string()
            .contains("symlink"));
    }
}
