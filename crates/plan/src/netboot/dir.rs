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
use crate::output::{self, dir as out_dir, Hashes, Outputs};
use crate::{error::output_full, Error, Inputs, Result, Stages};

/// The files a netboot directory holds for `kernel_name`.
fn names(kernel_name: &str) -> BTreeSet<String> {
    [kernel_name, NETBOOT_INITRD, NETBOOT_IPXE]
        .into_iter()
        .map(String::from)
        .collect()
}

/// What a netboot directory may hold: `allowed` names and their `.tmp` files.
fn netboot_file(allowed: &BTreeSet<String>) -> impl Fn(&std::fs::DirEntry) -> bool + '_ {
    |e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        allowed.contains(name.strip_suffix(".tmp").unwrap_or(&name))
    }
}

/// What the refusals call this build.
const WHAT: &str = "a netboot build";

/// Preflight: `OUT` is absent (then the common output checks apply) or a netboot directory
/// this format wrote, holding nothing else.
pub(crate) fn check(cx: &Context, inputs: &Inputs) -> Result<()> {
    let out = &cx.output.path;
    let entry = crate::inputs::boot_entry(cx.format, &inputs.bootspec, None)?;
    let allowed = names(imgbuild_boot::netboot_kernel_name(&entry)?);
    match std::fs::symlink_metadata(out) {
        Ok(md) if md.is_dir() => match out_dir::stranger(out, &netboot_file(&allowed))?.is_none() {
            true => Ok(()),
            false => Err(Error::BadOutputDir {
                path: out.clone(),
                reason: format!(
                    "holds files a netboot build does not write (only {})",
                    allowed
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
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
        out_dir::remove(&tmp, &netboot_file(&allowed), WHAT)?;
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
            let _ = out_dir::remove(&tmp, &netboot_file(&allowed), WHAT);
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
    out_dir::put_in_place(&tmp, &out, &netboot_file(&allowed), WHAT)?;
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
    out_dir::sync(dir)?;
    Ok(files)
}

fn sha2_of(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}
