//! Store paths, paths inside them, and the mapping from logical to host paths.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::encoding::nix32_digit;
use crate::{io_err, Error, Result};

/// The logical store directory. Only the default store location is supported.
pub const STORE_DIR: &str = "/nix/store";

/// Length of the hash part of a store path (160 bits in nix-base32).
pub(crate) const HASH_PART_LEN: usize = 32;

/// Nix's limit on the name part (`checkName` in libstore/path.cc).
const MAX_NAME_LEN: usize = 211;

/// Symlinks followed while resolving one path (Linux's `MAXSYMLINKS` is 40).
const MAX_SYMLINKS: usize = 40;

/// A validated store path `/nix/store/<32 nix-base32 chars>-<name>`.
///
/// Ordering is by the full path string, which is the order of Nix's `StorePathSet` (and so of
/// `nix-store --dump-db`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    full: String,
}

impl StorePath {
    /// Parses `/nix/store/<hash>-<name>` (nothing after the name).
    pub fn parse(text: &str) -> Result<Self> {
        let base = text
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| Error::InvalidStorePath {
                path: text.to_owned(),
                reason: "does not start with /nix/store/",
            })?;
        Self::from_base_name(base).map_err(|e| match e {
            Error::InvalidStorePath { reason, .. } => Error::InvalidStorePath {
                path: text.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// Parses a logical path that must be exactly a store path.
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = path.to_str().ok_or_else(|| Error::InvalidStorePath {
            path: path.display().to_string(),
            reason: "not valid UTF-8",
        })?;
        Self::parse(text)
    }

    /// Parses the base name `<hash>-<name>` (a directory entry of `/nix/store`).
    pub fn from_base_name(base: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidStorePath {
            path: base.to_owned(),
            reason,
        };
        let bytes = base.as_bytes();
        if bytes.len() < HASH_PART_LEN + 2 {
            return Err(bad("too short for <32-char hash>-<name>"));
        }
        if !bytes[..HASH_PART_LEN]
            .iter()
            .all(|&c| nix32_digit(c).is_some())
        {
            return Err(bad("hash part is not 32 nix-base32 characters"));
        }
        if bytes[HASH_PART_LEN] != b'-' {
            return Err(bad("no '-' after the 32-character hash part"));
        }
        let name = &bytes[HASH_PART_LEN + 1..];
        if name.len() > MAX_NAME_LEN {
            return Err(bad("name longer than 211 characters"));
        }
        if name == b"." || name == b".." {
            return Err(bad("name is '.' or '..'"));
        }
        let allowed = |c: &u8| c.is_ascii_alphanumeric() || b"+-._?=".contains(c);
        if !name.iter().all(allowed) {
            return Err(bad("name has a character outside [A-Za-z0-9+-._?=]"));
        }
        Ok(Self {
            full: format!("{STORE_DIR}/{base}"),
        })
    }

    /// `/nix/store/<hash>-<name>`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.full[STORE_DIR.len() + 1..]
    }

    /// The 32-character nix-base32 hash part.
    pub fn hash_part(&self) -> &str {
        &self.base_name()[..HASH_PART_LEN]
    }

    /// The name after the hash part.
    pub fn name(&self) -> &str {
        &self.base_name()[HASH_PART_LEN + 1..]
    }

    /// The logical path.
    pub fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(&self.full)
    }

    /// The logical path `<self>/<rel>`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.to_path_buf().join(rel)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({})", self.full)
    }
}

impl AsRef<Path> for StorePath {
    fn as_ref(&self) -> &Path {
        Path::new(&self.full)
    }
}

/// A logical path at or below a store path: `/nix/store/<hash>-<name>[/<subpath>]`, e.g. a
/// bootspec kernel `/nix/store/<h>-linux-6.1/bzImage`. The subpath has only normal components.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreSubpath {
    store_path: StorePath,
    subpath: PathBuf,
}

impl StoreSubpath {
    /// Parses an absolute logical path inside the store (no `.` or `..` components).
    pub fn parse(path: &Path) -> Result<Self> {
        let bad = |reason| Error::InvalidStorePath {
            path: path.display().to_string(),
            reason,
        };
        let mut comps = path.components();
        let prefix: Vec<Component> = comps.by_ref().take(3).collect();
        let expected = [
            Component::RootDir,
            Component::Normal(OsStr::new("nix")),
            Component::Normal(OsStr::new("store")),
        ];
        if prefix != expected {
            return Err(bad("does not start with /nix/store/"));
        }
        let base = match comps.next() {
            Some(Component::Normal(b)) => b.to_str().ok_or_else(|| bad("not valid UTF-8"))?,
            _ => return Err(bad("names no store path below /nix/store")),
        };
        let store_path = StorePath::from_base_name(base).map_err(|e| match e {
            Error::InvalidStorePath { reason, .. } => bad(reason),
            other => other,
        })?;
        let mut subpath = PathBuf::new();
        for c in comps {
            match c {
                Component::Normal(n) => subpath.push(n),
                _ => return Err(bad("has '.' or '..' components")),
            }
        }
        Ok(Self {
            store_path,
            subpath,
        })
    }

    /// Builds `<store_path>/<subpath>`; `subpath` must be relative with normal components only.
    pub fn new(store_path: StorePath, subpath: impl Into<PathBuf>) -> Result<Self> {
        let subpath = subpath.into();
        if !subpath
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(Error::InvalidStorePath {
                path: store_path.join(&subpath).display().to_string(),
                reason: "subpath must be relative without '.' or '..'",
            });
        }
        Ok(Self {
            store_path,
            subpath,
        })
    }

    /// The store path containing this path.
    pub fn store_path(&self) -> &StorePath {
        &self.store_path
    }

    /// The path below the store path (empty for the store path itself).
    pub fn subpath(&self) -> &Path {
        &self.subpath
    }

    /// The logical path.
    pub fn to_path_buf(&self) -> PathBuf {
        if self.subpath.as_os_str().is_empty() {
            self.store_path.to_path_buf()
        } else {
            self.store_path.join(&self.subpath)
        }
    }
}

impl fmt::Display for StoreSubpath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_path_buf().display())
    }
}

impl fmt::Debug for StoreSubpath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreSubpath({self})")
    }
}

/// Where the logical `/nix` tree lives on the host: `<root>/nix/store/...`. The default root
/// `/` is the host's own store; `nix-build --store DIR` makes a store with root `DIR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRoot {
    root: PathBuf,
}

impl Default for StoreRoot {
    fn default() -> Self {
        Self::new("/")
    }
}

impl StoreRoot {
    /// A store rooted at `root` (the directory containing `nix/store`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host directory holding the logical `/nix/store`.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("nix/store")
    }

    /// The host path of a store path.
    pub fn host_path(&self, path: &StorePath) -> PathBuf {
        self.store_dir().join(path.base_name())
    }

    /// The host path of a logical path inside the store.
    pub fn host_subpath(&self, path: &StoreSubpath) -> PathBuf {
        let p = self.host_path(path.store_path());
        if path.subpath().as_os_str().is_empty() {
            p
        } else {
            p.join(path.subpath())
        }
    }

    /// Resolves a logical absolute path that may point into a store path through symlinks to
    /// its final logical location. Symlinks are read on the host but interpreted logically: an
    /// absolute target `/nix/store/...` is mapped through this root; a target (or `..`) leaving
    /// `/nix/store` is refused. The final component is resolved too.
    pub fn canonicalize_logical(&self, logical: &Path) -> Result<StoreSubpath> {
        if !logical.is_absolute() {
            return Err(Error::NotInStore {
                path: logical.to_owned(),
                store: PathBuf::from(STORE_DIR),
            });
        }
        // Components still to walk, last element next.
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, logical);
        let mut resolved: Vec<OsString> = Vec::new();
        let mut links = 0usize;
        let escape = |detail: String| Error::EscapesStore {
            path: logical.to_owned(),
            detail,
        };
        while let Some(c) = pending.pop() {
            if c == "." {
                continue;
            }
            if c == ".." {
                if resolved.len() <= 2 {
                    return Err(escape("'..' above /nix/store".into()));
                }
                resolved.pop();
                continue;
            }
            let depth = resolved.len();
            resolved.push(c);
            if depth < 2 {
                let want = if depth == 0 { "nix" } else { "store" };
                if resolved[depth] != want {
                    return Err(if links == 0 {
                        Error::NotInStore {
                            path: logical.to_owned(),
                            store: PathBuf::from(STORE_DIR),
                        }
                    } else {
                        escape(format!("resolves to {}", join_logical(&resolved).display()))
                    });
                }
                continue;
            }
            if depth == 2 {
                let base = resolved[2].to_str().unwrap_or("");
                StorePath::from_base_name(base).map_err(|_| Error::InvalidStorePath {
                    path: join_logical(&resolved).display().to_string(),
                    reason: "not a valid store path name",
                })?;
            }
            let current = join_logical(&resolved);
            let host = self
                .root
                .join(current.strip_prefix("/").unwrap_or(&current));
            let md = std::fs::symlink_metadata(&host).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Error::NotFound {
                        path: current.clone(),
                    }
                } else {
                    io_err("reading", host.clone())(e)
                }
            })?;
            if md.file_type().is_symlink() {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::SymlinkLoop {
                        path: logical.to_owned(),
                    });
                }
                let target = std::fs::read_link(&host).map_err(io_err("reading link", &host))?;
                resolved.pop();
                if target.is_absolute() {
                    if !target.starts_with(STORE_DIR) {
                        return Err(escape(format!(
                            "{} points to {}",
                            current.display(),
                            target.display()
                        )));
                    }
                    resolved.clear();
                }
                push_components(&mut pending, &target);
            } else if !pending.is_empty() && !md.is_dir() {
                // Only a problem if a later component is a real name.
                if pending.iter().any(|c| c != ".") {
                    return Err(Error::NotADirectory {
                        path: logical.to_owned(),
                        component: current,
                    });
                }
            }
        }
        if resolved.len() < 3 {
            return Err(escape("resolves to /nix/store itself".into()));
        }
        StoreSubpath::parse(&join_logical(&resolved))
    }

    /// [`Self::canonicalize_logical`], then mapped to the host path.
    pub fn resolve_in_store(&self, logical: &Path) -> Result<PathBuf> {
        Ok(self.host_subpath(&self.canonicalize_logical(logical)?))
    }
}

/// Pushes the components of `path` onto a stack so that the first component is popped first.
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    let comps: Vec<OsString> = path
        .as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| OsStr::from_bytes(c).to_owned())
        .collect();
    stack.extend(comps.into_iter().rev());
}

fn join_logical(comps: &[OsString]) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in comps {
        p.push(c);
    }
    p
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    const H1: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    const H2: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";

    #[test]
    fn parses_and_splits() {
        let p = StorePath::parse(&format!("/nix/store/{H1}-hello-2.12.1")).unwrap();
        assert_eq!(p.hash_part(), H1);
        assert_eq!(p.name(), "hello-2.12.1");
        assert_eq!(p.base_name(), format!("{H1}-hello-2.12.1"));
        assert_eq!(p.to_string(), format!("/nix/store/{H1}-hello-2.12.1"));
        assert_eq!(
            StoreRoot::new("/tmp/x").host_path(&p),
            PathBuf::from(format!("/tmp/x/nix/store/{H1}-hello-2.12.1"))
        );
        assert_eq!(
            StoreRoot::default().host_path(&p),
            PathBuf::from(p.as_str())
        );
    }

    #[test]
    fn rejects_bad_paths_naming_them() {
        let long = "a".repeat(212);
        for bad in [
            "/nix/store/".to_owned(),
            format!("/nix/stor/{H1}-x"),
            format!("/nix/store/{H1}"),
            format!("/nix/store/{H1}-"),
            format!("/nix/store/{H1}_x"),
            format!("/nix/store/{}-x", &H1[..31]),
            format!("/nix/store/{}e-x", &H1[..31]),
            format!("/nix/store/{H1}-a/b"),
            format!("/nix/store/{H1}-a b"),
            format!("/nix/store/{H1}-.."),
            format!("/nix/store/{H1}-{long}"),
        ] {
            let err = StorePath::parse(&bad).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        assert!(StorePath::parse(&format!("/nix/store/{H1}-{}", "a".repeat(211))).is_ok());
        assert!(StorePath::parse(&format!("/nix/store/{H1}-a+b-1.0_x?y=z")).is_ok());
    }

    #[test]
    fn subpaths() {
        let s = StoreSubpath::parse(Path::new(&format!("/nix/store/{H1}-linux/bzImage"))).unwrap();
        assert_eq!(s.store_path().name(), "linux");
        assert_eq!(s.subpath(), Path::new("bzImage"));
        let top = StoreSubpath::parse(Path::new(&format!("/nix/store/{H1}-linux"))).unwrap();
        assert_eq!(top.subpath(), Path::new(""));
        assert_eq!(
            top.to_path_buf(),
            PathBuf::from(format!("/nix/store/{H1}-linux"))
        );
        assert!(StoreSubpath::parse(Path::new(&format!("/nix/store/{H1}-l/../x"))).is_err());
        assert!(StoreSubpath::parse(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn resolve_in_store_follows_links_inside_the_store_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = StoreRoot::new(dir.path());
        let store = root.store_dir();
        let a = store.join(format!("{H1}-linux"));
        let b = store.join(format!("{H2}-top"));
        std::fs::create_dir_all(a.join("lib")).unwrap();
        std::fs::write(a.join("bzImage"), b"k").unwrap();
        std::fs::create_dir_all(&b).unwrap();
        symlink(format!("/nix/store/{H1}-linux/bzImage"), b.join("kernel")).unwrap();
        symlink(format!("/nix/store/{H1}-linux"), b.join("kdir")).unwrap();
        symlink("../not-a-store-path", b.join("bad-name")).unwrap();
        symlink("/etc/passwd", b.join("escape")).unwrap();
        symlink("../../..", b.join("dotdot-escape")).unwrap();
        symlink("loop", b.join("loop")).unwrap();
        symlink("kdir/bzImage", b.join("rel")).unwrap();

        let top = format!("/nix/store/{H2}-top");
        let k = root
            .canonicalize_logical(Path::new(&format!("{top}/kernel")))
            .unwrap();
        assert_eq!(
            k.to_path_buf(),
            PathBuf::from(format!("/nix/store/{H1}-linux/bzImage"))
        );
        assert_eq!(
            root.resolve_in_store(Path::new(&format!("{top}/kernel")))
                .unwrap(),
            a.join("bzImage")
        );
        assert_eq!(
            root.resolve_in_store(Path::new(&format!("{top}/kdir/bzImage")))
                .unwrap(),
            a.join("bzImage")
        );
        assert_eq!(
            root.resolve_in_store(Path::new(&format!("{top}/rel")))
                .unwrap(),
            a.join("bzImage")
        );
        let err = root
            .resolve_in_store(Path::new(&format!("{top}/escape")))
            .unwrap_err();
        assert!(matches!(err, Error::EscapesStore { .. }), "{err}");
        let err = root
            .resolve_in_store(Path::new(&format!("{top}/dotdot-escape")))
            .unwrap_err();
        assert!(matches!(err, Error::EscapesStore { .. }), "{err}");
        let err = root
            .resolve_in_store(Path::new(&format!("{top}/loop")))
            .unwrap_err();
        assert!(matches!(err, Error::SymlinkLoop { .. }), "{err}");
        let err = root
            .resolve_in_store(Path::new(&format!("{top}/missing")))
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let err = root
            .resolve_in_store(Path::new(&format!("{top}/kernel/x")))
            .unwrap_err();
        assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
        let err = root.resolve_in_store(Path::new("/etc/passwd")).unwrap_err();
        assert!(matches!(err, Error::NotInStore { .. }), "{err}");
        // A relative link to a /nix/store entry that is not a store path name.
        let err = root
            .resolve_in_store(Path::new(&format!("{top}/bad-name")))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidStorePath { .. }), "{err}");
    }
}
