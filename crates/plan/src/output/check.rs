//! Preflight: the output paths refused before anything is read or written.

use std::path::{Path, PathBuf};

use super::paths::Outputs;
use crate::options::Context;
use crate::{Error, Inputs, Result};

/// Where the directory entry `p` is, with every directory above it resolved but not `p`
/// itself (a rename replaces the entry, whatever it points to).
fn entry_path(p: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(p).ok()?;
    let Some(name) = abs.file_name() else {
        return std::fs::canonicalize(&abs).ok();
    };
    // Directories that do not exist yet are taken as written.
    let mut missing = vec![name];
    let mut dir = abs.parent()?;
    loop {
        if let Ok(real) = std::fs::canonicalize(dir) {
            return Some(missing.iter().rev().fold(real, |p, c| p.join(c)));
        }
        missing.push(dir.file_name()?);
        dir = dir.parent()?;
    }
}

/// `access(dir, W_OK | X_OK)`: can this user create files in `dir`?
fn check_writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; access() only
    // reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Refuse, before anything is read or written, an output that could not be written or that
/// would replace an input: a directory, a directory that does not exist or is not writable, a
/// read-only existing file, or any path the build writes (image, raw image, manifest, their
/// `.tmp`) that is or lies inside the closure argument, closureInfo, firmware directory, an
/// `--add` source, or the store root's `nix/` directory.
pub(crate) fn check(cx: &Context, inputs: &Inputs) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let opts = cx.opts;
    let out = &cx.output.path;
    let bad = |reason: String| {
        Err(Error::BadOutput {
            path: out.to_path_buf(),
            reason,
        })
    };
    if out.is_dir() {
        return bad("is a directory".into());
    }
    if !cx.format.empty_slots().is_empty() {
        crate::sysupdate::check_dir(out)?;
    }
    let spec = &inputs.spec;
    let mut sources: Vec<(&str, &Path)> = vec![("--closure", &spec.closure)];
    if let Some(ci) = &spec.closure_info {
        sources.push(("--closure-info", ci));
    }
    if let Some(fw) = &opts.firmware {
        sources.push(("--firmware", fw));
    }
    for a in &opts.adds {
        sources.push(("--add source", &a.src));
    }
    let nix_dir = inputs.store.root().join("nix");
    let nix_real = std::fs::canonicalize(&nix_dir).ok();
    for p in Outputs::of(&cx.output).all() {
        let what = |why: String| {
            if p == *out {
                why
            } else {
                format!("would need `{}`, which {why}", p.display())
            }
        };
        if p != *out && p.is_dir() {
            return bad(what("is a directory".into()));
        }
        let Some(at) = entry_path(&p) else { continue };
        if nix_real.as_ref().is_some_and(|n| at.starts_with(n)) {
            return bad(what(format!(
                "is inside `{}`, the Nix store being read",
                nix_dir.display()
            )));
        }
        for (flag, src) in &sources {
            for form in [entry_path(src), std::fs::canonicalize(src).ok()]
                .into_iter()
                .flatten()
            {
                if at == form {
                    return bad(what(format!("is the input {flag} `{}`", src.display())));
                }
                if at.starts_with(&form) {
                    return bad(what(format!(
                        "is inside the input {flag} `{}`",
                        src.display()
                    )));
                }
            }
        }
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return bad(format!(
                "cannot be created: `{}` is not a directory",
                dir.display()
            ))
        }
        Err(e) => return bad(format!("cannot be created in `{}`: {e}", dir.display())),
    }
    if let Err(e) = check_writable(dir) {
        return bad(format!(
            "cannot be created: its directory `{}` is not writable ({e})",
            dir.display()
        ));
    }
    if let Ok(md) = std::fs::symlink_metadata(out) {
        let mode = md.permissions().mode();
        if md.is_file() && mode & 0o222 == 0 {
            return bad(format!(
                "exists and is read-only (mode {:04o}); remove it or choose another path",
                mode & 0o7777
            ));
        }
    }
    Ok(())
}
