//! Stage 5, the outputs: the disk's extent map streamed once into every file (the image in
//! its output kind, the raw disk, its SHA-256, the bmap), then the manifest, and every file
//! renamed into place only when all are complete.
//!
//! One file per job: [`kind`] (the trait every output kind implements), the `kinds!`
//! registration list below (one line per kind), a file per kind (`raw`, `zstd`, `qcow2`,
//! `vhd`, `vhd_fixed`, `gce`, `vhdx`, `vmdk`, `ova`), [`paths`] (which files a build
//! writes), [`check`] (the preflight of those paths), [`manifest`], and here the one
//! create -> stream -> persist sequence, which `imgbuild ext4` runs too.

mod check;
pub(crate) mod dir;
mod manifest;
mod paths;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use imgbuild_blockio::{OutputFile, Region};
use imgbuild_diskmap::sinks::{Bmap, RawFile, Sha256Sink};
use imgbuild_diskmap::{Map, Sink, StreamOptions};

pub(crate) use check::check;
pub(crate) use manifest::{disk_layout, Hashes, Layout, TreeNotes};
pub(crate) use paths::{file_name, suffixed, Outputs};

use crate::kinds::Compression;
use crate::kinds::{ContainerType, ImageWriter, WriterInput, Written};
use crate::manifest::Manifest;
use crate::options::Context;
use crate::{error::output_full, Error, Inputs, Reporter, Result};

/// Stream the map into every output, write the bmap and the manifest, rename all into place.
pub(crate) fn write(
    cx: &Context,
    inputs: &Inputs,
    layout: Layout,
    map: &Map,
    notes: TreeNotes,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<Manifest> {
    let parts = Parts {
        layout,
        notes,
        sysupdate: None,
    };
    write_with(cx, inputs, parts, map, reporter, cancel, |_| {})
}

/// What the manifest says besides the hashes: the layout and what building the trees did;
/// and the sysupdate artifacts written beside the image, renamed into place with it.
pub(crate) struct Parts {
    pub layout: Layout,
    pub notes: TreeNotes,
    pub sysupdate: Option<crate::sysupdate::Pending>,
}

/// [`write`], with `more` adding to the manifest before it is written (a format's own part).
pub(crate) fn write_with(
    cx: &Context,
    inputs: &Inputs,
    parts: Parts,
    map: &Map,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
    more: impl FnOnce(&mut Manifest),
) -> Result<Manifest> {
    let Parts {
        layout,
        notes,
        sysupdate,
    } = parts;
    let outs = Outputs::of(&cx.output);
    // An image holding a file its owner kept from others is readable by its owner only, and
    // so is its bmap (whose range hashes cover that file).
    let mode = if notes.added.iter().any(|a| a.private) {
        0o600
    } else {
        0o666
    };
    let toplevel = inputs.toplevel.to_string();
    let job = Job {
        outs: &outs,
        container: cx.output.container,
        compression: cx.output.compression,
        level: cx.output.level,
        threads: cx.threads,
        mode,
        params: imgbuild_container::Params {
            disk_size: map.len(),
            id: cx.ids.container_id(),
            time: cx.time,
        },
        toplevel: &toplevel,
        phase: format!("writing {}", paths::file_name(&outs.image)),
    };
    run(&job, map, reporter, cancel, sysupdate, |hashes| {
        let mut manifest = manifest::manifest(cx, inputs, layout, &outs, hashes, notes);
        more(&mut manifest);
        let json =
            serde_json::to_string_pretty(&manifest).expect("the manifest is plain data") + "\n";
        let path = outs.manifest.as_ref().expect("a disk image has a manifest");
        Ok((Some(text_file(path, &json, 0o666)?), manifest))
    })
}

/// The manifest of a build that wrote `outs` (a netboot directory, which is no one stream).
pub(crate) fn manifest(
    cx: &Context,
    inputs: &Inputs,
    parts: Parts,
    outs: &Outputs,
    hashes: Hashes,
) -> Manifest {
    manifest::manifest(cx, inputs, parts.layout, outs, hashes, parts.notes)
}

/// How one output is written: every value final.
pub(crate) struct Job<'a> {
    pub outs: &'a Outputs,
    pub container: ContainerType,
    pub compression: Compression,
    /// The compression level (the kind's default when none was given).
    pub level: i32,
    /// Reader and compressor threads (at least 1).
    pub threads: usize,
    /// The permission bits of the image, the raw disk and the bmap.
    pub mode: u32,
    pub params: imgbuild_container::Params,
    /// The toplevel's store path (empty for `imgbuild ext4`).
    pub toplevel: &'a str,
    /// The progress phase of the stream (`writing nixos.img`).
    pub phase: String,
}

/// Create every file of `job`, stream `map` into them, finish them, let `last` add its file
/// (the manifest) from the hashes, then rename everything into place (`dir`, a directory
/// written before, after the image), `last`'s file last. Nothing is renamed before every
/// file is complete: a failure leaves no file at the output paths.
pub(crate) fn run<T>(
    job: &Job,
    map: &Map,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
    dir: Option<crate::sysupdate::Pending>,
    last: impl FnOnce(Hashes) -> Result<(Option<OutputFile>, T)>,
) -> Result<T> {
    let outs = job.outs;
    let disk_size = map.len();
    let kind = job.container.kind();
    let full = |p: &Path| {
        let tmp = OutputFile::tmp_path(p);
        move |e| output_full(&tmp)(e)
    };
    let create = |p: &Path, len: u64| {
        OutputFile::create_with_mode(p, len, job.mode)
            .map_err(Error::from)
            .map_err(full(p))
    };
    let raw = outs
        .raw
        .as_deref()
        .map(|r| create(r, disk_size))
        .transpose()?;
    // The image file, unless it is the raw disk.
    let image = match kind.is_raw_disk(job.compression) {
        true => None,
        false => Some(create(&outs.image, kind.initial_len(disk_size))?),
    };
    let mut sha = Sha256Sink::new();
    let mut bmap = outs.bmap.as_ref().map(|_| Bmap::new(map));
    let mut raw_sink = raw.as_ref().map(|f| {
        let name = format!("writing `{}`", f.tmp().display());
        RawFile::new(f.file(), disk_size, name)
    });
    let mut writer: Option<Box<dyn ImageWriter + '_>> = match &image {
        None => None,
        Some(file) => Some(kind.writer(&WriterInput {
            map,
            params: &job.params,
            file,
            compression: job.compression,
            level: job.level,
            workers: job.threads,
            toplevel: job.toplevel,
        })?),
    };
    let mut sinks: Vec<&mut dyn Sink> = vec![&mut sha];
    sinks.extend(bmap.as_mut().map(|b| b as &mut dyn Sink));
    sinks.extend(raw_sink.as_mut().map(|s| s as &mut dyn Sink));
    sinks.extend(writer.as_mut().map(|w| w.sink()));
    reporter.phase(&job.phase, disk_size);
    let readers = job.threads;
    imgbuild_diskmap::stream(
        map,
        &mut sinks,
        &StreamOptions { readers },
        reporter,
        cancel,
    )
    .map_err(Error::from)
    .map_err(full(&outs.image))?;
    drop(sinks);

    let disk_sha256 = sha.hex().expect("a finished stream finishes its sinks");
    let written = writer.map(|w| w.finish(&sha)).transpose();
    let Written { size, sha256 } = written.map_err(full(&outs.image))?.unwrap_or(Written {
        size: disk_size,
        sha256: disk_sha256.clone(),
    });
    reporter.done();
    let bmap_file = match (&outs.bmap, &bmap) {
        (Some(path), Some(b)) => Some(text_file(path, b.xml().expect("finished"), job.mode)?),
        _ => None,
    };
    let (last_file, done) = last(Hashes {
        image_size: size,
        sha256,
        disk_sha256,
    })?;
    let persist = |f: OutputFile| {
        let tmp = f.tmp().to_path_buf();
        f.persist().map_err(Error::from).map_err(output_full(&tmp))
    };
    for f in [image, raw, bmap_file].into_iter().flatten() {
        persist(f)?;
    }
    if let Some(d) = dir {
        d.persist()?;
    }
    if let Some(f) = last_file {
        persist(f)?;
    }
    Ok(done)
}

/// Writes `text` to `dest.tmp`; the caller renames it into place.
pub(crate) fn text_file(dest: &Path, text: &str, mode: u32) -> Result<OutputFile> {
    let tmp = OutputFile::tmp_path(dest);
    let out = OutputFile::create_with_mode(dest, 0, mode)
        .map_err(Error::from)
        .map_err(output_full(&tmp))?;
    Region::new(out.file(), "text", 0, text.len() as u64)
        .write_at(0, text.as_bytes())
        .map_err(Error::from)
        .map_err(output_full(&tmp))?;
    Ok(out)
}
