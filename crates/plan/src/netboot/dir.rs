//! The netboot directory, as nixpkgs' netboot build leaves it (`system.build.netboot` in
//! `nixos/release.nix`: the kernel under its own name, `initrd`, `netboot.ipxe`), with the
//! manifest `OUT.json` beside it.
//!
//! Made as `OUT.tmp/`: each file streamed into it (the kernel and the initrd as maps, through
//! the raw-file and SHA-256 sinks, file ranges copied with `copy_file_range`), the directory
//! synced, then renamed to `OUT`; a previous netboot directory at `OUT` (holding nothing but
//! these files) is swapped out atomically (`RENAME_EXCHANGE`) and removed. A failure before
//! the rename leaves `OUT` as it was.

use std::collections::BTreeSet;
use std::path::Path;

use imgbuild_blockio::OutputFile;
use imgbuild_boot::{NETBOOT_INITRD, NETBOOT_IPXE};
use imgbuild_diskmap::sinks::{RawFile, Sha256Sink};
use imgbuild_diskmap::{Map, MapBuilder, Sink, StreamOptions};

use super::{member, Planned};
use crate::manifest::{Manifest, NetbootFile};
use crate::options::Context;
use crate::output::{self, Hashes, Outputs};
use crate::{error::output_full, Error, Inputs, Result, Stages};

/// The files a netboot directory holds for `kernel_name`.
fn names(kernel_name: &str) -> BTreeSet<String> {
    [kernel_name, NETBOOT_INITRD, NETBOOT_IPXE]
        .into_iter()
        .map(String::from)
        .collect()
}

/// Whether `dir` holds nothing but `allowed` names (and their `.tmp` files): a netboot
/// directory a build may replace or clear.
fn only(dir: &Path, allowed: &BTreeSet<String>) -> Result<bool> {
    let io = |source| Error::Io {
        op: "listing",
        path: dir.to_path_buf(),
        source,
    };
    for e in std::fs::read_dir(dir).map_err(io)? {
        let name = e.map_err(io)?.file_name();
        let name = name.to_string_lossy();
        let base = name.strip_suffix(".tmp").unwrap_or(&name);
        if !allowed.contains(base) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Preflight: `OUT` is absent (then the common output checks apply) or a netboot directory
/// this format wrote, holding nothing else.
pub(crate) fn check(cx: &Context, inputs: &Inputs) -> Result<()> {
    let out = &cx.output.path;
    let entry = crate::inputs::boot_entry(cx.format, &inputs.bootspec, None)?;
    let allowed = names(imgbuild_boot::netboot_kernel_name(&entry)?);
    match std::fs::symlink_metadata(out) {
        Ok(md) if md.is_dir() => match only(out, &allowed)? {
            true => Ok(()),
            false => Err(Error::BadOutputDir {
                path: out.clone(),
                reason: format!(
                    "holds files a netboot build does not write (only {})",
                    allowed.into_iter().collect::<Vec<_>>().join(", ")
                ),
            }),
        },
        Ok(_) => Err(Error::BadOutputDir {
            path: out.clone(),
            reason: "exists and is not a directory (a netboot build writes a directory)".into(),
        }),
        Err(_) => output::check(cx, inputs),
    }
}

/// Removes `dir`, which holds only files a netboot build writes.
fn remove(dir: &Path, allowed: &BTreeSet<String>) -> Result<()> {
    if !only(dir, allowed)? {
        return Err(Error::BadOutputDir {
            path: dir.to_path_buf(),
            reason: "holds files a netboot build does not write: not removed".into(),
        });
    }
    std::fs::remove_dir_all(dir).map_err(|source| Error::Io {
        op: "removing",
        path: dir.to_path_buf(),
        source,
    })
}

/// Streams `map` into the new file `dest`; its SHA-256.
fn stream_file(cx: &Context, s: &Stages, map: &Map, dest: &Path) -> Result<String> {
    let tmp = OutputFile::tmp_path(dest);
    let full = |e| output_full(&tmp)(e);
    let f = OutputFile::create(dest, map.len())
        .map_err(Error::from)
        .map_err(full)?;
    let mut sha = Sha256Sink::new();
    let mut raw = RawFile::new(
        f.file(),
        map.len(),
        format!("writing `{}`", f.tmp().display()),
    );
    let mut sinks: Vec<&mut dyn Sink> = vec![&mut sha, &mut raw];
    s.reporter
        .phase(&format!("writing {}", output::file_name(dest)), map.len());
    let opts = StreamOptions {
        readers: cx.threads,
    };
    imgbuild_diskmap::stream(map, &mut sinks, &opts, s.reporter, s.cancel)
        .map_err(Error::from)
        .map_err(full)?;
    drop(sinks);
    drop(raw);
    f.persist().map_err(Error::from).map_err(full)?;
    Ok(sha.hex().expect("a finished stream finishes its sinks"))
}

/// Write the directory and its manifest.
pub(crate) fn write(cx: &Context, s: &Stages, p: &Planned) -> Result<Manifest> {
    let out = cx.output.path.clone();
    let tmp = OutputFile::tmp_path(&out);
    let allowed = names(&p.kernel_name);
    if std::fs::symlink_metadata(&tmp).is_ok() {
        remove(&tmp, &allowed)?;
    }
    std::fs::create_dir(&tmp).map_err(|source| Error::Io {
        op: "creating",
        path: tmp.clone(),
        source,
    })?;
    let written = fill(cx, s, p, &tmp);
    let files = match written {
        Ok(f) => f,
        Err(e) => {
            let _ = remove(&tmp, &allowed);
            return Err(e);
        }
    };
    let initrd = files
        .iter()
        .find(|f| f.name == NETBOOT_INITRD)
        .and_then(|f| f.sha256.clone())
        .unwrap_or_default();
    let outs = Outputs {
        image: out.clone(),
        raw: None,
        bmap: None,
        manifest: Some(output::suffixed(&out, ".json")),
    };
    let hashes = Hashes {
        image_size: p.initrd.len(),
        sha256: initrd.clone(),
        disk_sha256: initrd,
    };
    let parts = output::Parts {
        layout: super::layout(p.initrd.len()),
        notes: super::notes(cx, s.inputs)?,
        sysupdate: None,
    };
    let mut manifest = output::manifest(cx, s.inputs, parts, &outs, hashes);
    let mut netboot = p.manifest.clone();
    netboot.files = files;
    manifest.netboot = Some(netboot);
    let json = serde_json::to_string_pretty(&manifest).expect("the manifest is plain data") + "\n";
    let manifest_path = outs.manifest.as_ref().expect("set above");
    let manifest_file = output::text_file(manifest_path, &json, 0o666)?;
    put_in_place(&tmp, &out, &allowed)?;
    manifest_file
        .persist()
        .map_err(Error::from)
        .map_err(output_full(&OutputFile::tmp_path(manifest_path)))?;
    Ok(manifest)
}

/// The kernel, the initrd and `netboot.ipxe` in `dir`, synced; what the manifest lists.
fn fill(cx: &Context, s: &Stages, p: &Planned, dir: &Path) -> Result<Vec<NetbootFile>> {
    let kernel = {
        let mut b = MapBuilder::new("kernel", p.kernel.source.size);
        b.file(0, &p.kernel.source, 0, p.kernel.source.size)?;
        b.finish()?
    };
    let mut files = Vec::new();
    for (name, map) in [
        (p.kernel_name.as_str(), &kernel),
        (NETBOOT_INITRD, &p.initrd),
    ] {
        let sha = stream_file(cx, s, map, &member(dir, name))?;
        files.push(NetbootFile {
            name: name.into(),
            size: map.len(),
            sha256: Some(sha),
        });
    }
    let ipxe = imgbuild_boot::ipxe_script(&p.entry)?;
    let path = member(dir, NETBOOT_IPXE);
    output::text_file(&path, &ipxe, 0o666)?
        .persist()
        .map_err(Error::from)
        .map_err(output_full(&OutputFile::tmp_path(&path)))?;
    files.push(NetbootFile {
        name: NETBOOT_IPXE.into(),
        size: ipxe.len() as u64,
        sha256: Some(imgbuild_diskmap::sinks::hex(&sha2_of(ipxe.as_bytes()))),
    });
    sync_dir(dir)?;
    Ok(files)
}

fn sha2_of(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            op: "syncing",
            path: dir.to_path_buf(),
            source,
        })
}

/// `tmp` renamed to `out`; a previous netboot directory at `out` exchanged with it atomically,
/// then removed.
fn put_in_place(tmp: &Path, out: &Path, allowed: &BTreeSet<String>) -> Result<()> {
    let io = |op, source| Error::Io {
        op,
        path: out.to_path_buf(),
        source,
    };
    if std::fs::symlink_metadata(out).is_err() {
        return std::fs::rename(tmp, out).map_err(|e| io("renaming into place", e));
    }
    exchange(tmp, out).map_err(|e| io("exchanging the previous directory with", e))?;
    // `tmp` is now the previous directory.
    remove(tmp, allowed)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: `a` and `b` swap names in one step.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b): (std::ffi::CString, std::ffi::CString) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated strings that outlive the call, which only reads
    // them; AT_FDCWD makes them relative to the working directory as `rename` would.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}
