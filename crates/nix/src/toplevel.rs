//! Finding the NixOS system toplevel from what the user passes (`./result`, a store path).

use std::io;
use std::path::{Path, PathBuf};

use crate::{io_err, Error, Result, StorePath, StoreRoot, STORE_DIR};

/// Symlinks outside the store followed before giving up (`result -> /nix/store/...` is one).
const MAX_OUTSIDE_LINKS: usize = 8;

/// Resolves `closure_arg` to the toplevel store path of a NixOS system in the store at
/// `store_root`.
///
/// `closure_arg` is a symlink as `nix build` leaves it (`./result -> /nix/store/...`; the target
/// is logical and is looked up under `store_root`; up to 8 such links are followed), a logical
/// store path `/nix/store/...`, or the host path `<store_root>/nix/store/...`. Once inside the
/// store, symlinks are followed only within it. The result must be a store path (not a path
/// inside one) that looks like a toplevel: it has `boot.json`, or `init` and `kernel`, or (a
/// container system, `boot.isContainer`, for which NixOS writes neither boot.json nor a
/// kernel) `init` and the `imgbuild.json` imgbuild's NixOS module writes.
pub fn resolve_toplevel(closure_arg: &Path, store_root: &Path) -> Result<StorePath> {
    let root = StoreRoot::new(store_root);
    let store_host =
        std::path::absolute(root.store_dir()).map_err(io_err("resolving", root.store_dir()))?;
    let mut cur = std::path::absolute(closure_arg).map_err(io_err("resolving", closure_arg))?;
    let mut hops = 0;
    let logical = loop {
        if let Ok(rest) = cur.strip_prefix(&store_host) {
            break Path::new(STORE_DIR).join(rest);
        }
        if cur.starts_with(STORE_DIR) {
            break cur;
        }
        let md = std::fs::symlink_metadata(&cur).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound { path: cur.clone() }
            } else {
                io_err("reading", cur.clone())(e)
            }
        })?;
        if !md.file_type().is_symlink() {
            return Err(Error::NotInStore {
                path: closure_arg.to_owned(),
                store: store_host,
            });
        }
        hops += 1;
        if hops > MAX_OUTSIDE_LINKS {
            return Err(Error::SymlinkLoop {
                path: closure_arg.to_owned(),
            });
        }
        let target = std::fs::read_link(&cur).map_err(io_err("reading link", &cur))?;
        cur = if target.is_absolute() {
            target
        } else {
            cur.parent().unwrap_or(Path::new("/")).join(target)
        };
    };
    let resolved = root.canonicalize_logical(&logical).map_err(|e| match e {
        Error::NotFound { path } => Error::NotToplevel {
            path: closure_arg.to_owned(),
            reason: format!(
                "{} does not exist under {}",
                path.display(),
                store_host.display()
            ),
        },
        other => other,
    })?;
    if !resolved.subpath().as_os_str().is_empty() {
        return Err(Error::NotToplevel {
            path: closure_arg.to_owned(),
            reason: format!("{resolved} is inside store path {}", resolved.store_path()),
        });
    }
    let toplevel = resolved.store_path().clone();
    let host = root.host_path(&toplevel);
    let exists = |name: &str| -> Result<bool> {
        let p: PathBuf = host.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("reading", p)(e)),
        }
    };
    let md = std::fs::symlink_metadata(&host).map_err(io_err("reading", &host))?;
    if !md.is_dir() {
        return Err(Error::NotToplevel {
            path: closure_arg.to_owned(),
            reason: format!("{toplevel} is not a directory"),
        });
    }
    if exists("boot.json")?
        || (exists("init")? && (exists("kernel")? || exists(crate::IMGBUILD_JSON)?))
    {
        Ok(toplevel)
    } else {
        Err(Error::NotToplevel {
            path: closure_arg.to_owned(),
            reason: format!(
                "{toplevel} has neither boot.json nor init with a kernel (a container system \
                 has init and the {} imgbuild's NixOS module writes)",
                crate::IMGBUILD_JSON
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    const T: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    const L: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";

    #[test]
    fn resolves_result_links_and_store_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let store = root.join("nix/store");
        let top = store.join(format!("{T}-nixos-system-x"));
        let lib = store.join(format!("{L}-lib"));
        std::fs::create_dir_all(&top).unwrap();
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(top.join("init"), b"").unwrap();
        symlink("/nix/store/x/bzImage", top.join("kernel")).unwrap();
        let logical = format!("/nix/store/{T}-nixos-system-x");
        let want = StorePath::parse(&logical).unwrap();

        let result = dir.path().join("result");
        symlink(&logical, &result).unwrap();
        assert_eq!(resolve_toplevel(&result, &root).unwrap(), want);
        // A chain: result2 -> result (relative) -> logical.
        symlink("result", dir.path().join("result2")).unwrap();
        assert_eq!(
            resolve_toplevel(&dir.path().join("result2"), &root).unwrap(),
            want
        );
        assert_eq!(resolve_toplevel(Path::new(&logical), &root).unwrap(), want);
        assert_eq!(resolve_toplevel(&top, &root).unwrap(), want);

        let not_top = dir.path().join("lib-link");
        symlink(format!("/nix/store/{L}-lib"), &not_top).unwrap();
        let err = resolve_toplevel(&not_top, &root).unwrap_err();
        assert!(err.to_string().contains("neither boot.json"), "{err}");
        assert!(err.to_string().contains("lib-link"), "{err}");

        let dangling = dir.path().join("dangling");
        symlink(format!("/nix/store/{T}-gone"), &dangling).unwrap();
        let err = resolve_toplevel(&dangling, &root).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");

        let inside = dir.path().join("inside");
        symlink(format!("{logical}/init"), &inside).unwrap();
        let err = resolve_toplevel(&inside, &root).unwrap_err();
        assert!(err.to_string().contains("inside store path"), "{err}");

        let plain = dir.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        let err = resolve_toplevel(&plain, &root).unwrap_err();
        assert!(matches!(err, Error::NotInStore { .. }), "{err}");

        let err = resolve_toplevel(&dir.path().join("missing"), &root).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");

        symlink("loop", dir.path().join("loop")).unwrap();
        let err = resolve_toplevel(&dir.path().join("loop"), &root).unwrap_err();
        assert!(matches!(err, Error::SymlinkLoop { .. }), "{err}");
    }
}
