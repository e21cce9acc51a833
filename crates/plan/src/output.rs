//! Stage 5, the sinks: the disk's extent map streamed once into every output (the raw sparse
//! image or the compressed one, the disk's SHA-256, the bmap), then the manifest, and every
//! file renamed into place only when all are complete.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use imgbuild_blockio::{OutputFile, Region};
use imgbuild_diskmap::sinks::{Bmap, RawFile, Sha256Sink};
use imgbuild_diskmap::{Map, Sink, StreamOptions};
use sha2::{Digest, Sha256};

use crate::disk::Plan;
use crate::format::{Compression, TableType};
use crate::layout::SECTOR;
use crate::manifest::{Manifest, ManifestPartition};
use crate::options::Context;
use crate::{add, error::output_full, Error, Inputs, Reporter, Result};

/// The raw image's path when the output is compressed: `foo.img.zst` -> `foo.img`.
pub(crate) fn raw_path_for(output: &Path) -> PathBuf {
    let s = output.as_os_str().to_string_lossy();
    match s.strip_suffix(".zst") {
        Some(base) => PathBuf::from(base),
        None => PathBuf::from(format!("{s}.raw")),
    }
}

/// Stream the map into every output, write the bmap and the manifest, rename all into place.
pub(crate) fn write(
    cx: &Context,
    inputs: &Inputs,
    plan: &Plan,
    map: &Map,
    notes: TreeNotes,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<Manifest> {
    let outs = Outputs::of(cx);
    let disk_size = map.len();
    let full = |p: &Path| {
        let tmp = OutputFile::tmp_path(p);
        move |e| output_full(&tmp)(e)
    };
    let create = |p: &Path, len: u64| {
        OutputFile::create(p, len)
            .map_err(Error::from)
            .map_err(full(p))
    };

    let raw = match &outs.raw {
        Some(r) => Some(create(r, disk_size)?),
        None => None,
    };
    let compressed = match cx.compression {
        Compression::None => None,
        Compression::Zstd => Some(create(&outs.image, 0)?),
    };
    let mut sha = Sha256Sink::new();
    let mut bmap = Bmap::new(map);
    let mut raw_sink = raw.as_ref().map(|f| {
        RawFile::new(
            f.file(),
            disk_size,
            format!("writing `{}`", f.tmp().display()),
        )
    });
    let mut zstd = match &compressed {
        Some(f) => Some(imgbuild_compress::Zstd::new(
            HashingWriter {
                inner: BufWriter::with_capacity(1 << 20, f.file()),
                hash: Sha256::new(),
                len: 0,
            },
            disk_size,
            &imgbuild_compress::Options {
                level: cx.opts.output.level,
                workers: u32::try_from(cx.opts.threads.max(1)).unwrap_or(u32::MAX),
                checksum: true,
            },
        )?),
        None => None,
    };
    let mut sinks: Vec<&mut dyn Sink> = vec![&mut sha, &mut bmap];
    if let Some(s) = raw_sink.as_mut() {
        sinks.push(s);
    }
    if let Some(z) = zstd.as_mut() {
        sinks.push(z);
    }
    let name = outs.image.file_name().map_or_else(
        || outs.image.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    reporter.phase(&format!("writing {name}"), disk_size);
    imgbuild_diskmap::stream(
        map,
        &mut sinks,
        &StreamOptions {
            readers: cx.opts.threads.max(1),
        },
        reporter,
        cancel,
    )
    .map_err(Error::from)
    .map_err(full(&outs.image))?;
    drop(sinks);
    reporter.done();

    let disk_sha256 = sha.hex().expect("a finished stream finishes its sinks");
    let (image_size, sha256) = match zstd.map(|z| z.into_inner()) {
        Some(Some((w, summary))) => (summary.output_bytes, hex(&w.hash.finalize())),
        Some(None) => unreachable!("a finished stream finishes its sinks"),
        None => (disk_size, disk_sha256.clone()),
    };
    let bmap_file = text_file(&outs.bmap, bmap.xml().expect("finished"))?;

    let manifest = manifest(
        cx,
        inputs,
        plan,
        &outs,
        Hashes {
            image_size,
            sha256,
            disk_sha256,
        },
        notes,
    );
    let json = serde_json::to_string_pretty(&manifest).expect("the manifest is plain data") + "\n";
    let json = text_file(&outs.manifest, &json)?;
    // Nothing is renamed into place before every file is complete: a failure up to here
    // leaves no file at the output paths. The manifest goes last.
    for f in [compressed, raw, Some(bmap_file), Some(json)]
        .into_iter()
        .flatten()
    {
        let tmp = f.tmp().to_path_buf();
        f.persist()
            .map_err(Error::from)
            .map_err(output_full(&tmp))?;
    }
    Ok(manifest)
}

/// What building the trees did, for the manifest.
pub(crate) struct TreeNotes {
    pub added: Vec<add::Added>,
    pub dedup: crate::DedupReport,
}

/// What the stream found out about the outputs.
struct Hashes {
    image_size: u64,
    sha256: String,
    disk_sha256: String,
}

fn manifest(
    cx: &Context,
    inputs: &Inputs,
    plan: &Plan,
    outs: &Outputs,
    h: Hashes,
    notes: TreeNotes,
) -> Manifest {
    let Hashes {
        image_size,
        sha256,
        disk_sha256,
    } = h;
    let lay = &plan.layout;
    let partitions = cx
        .format
        .partitions
        .iter()
        .zip(&plan.parts)
        .zip(&plan.table.guids)
        .map(|((p, part), guid)| {
            let pl = &part.layout;
            let uuid = match &part.fs {
                crate::disk::Fs::Ext4(_) => cx.ids.ext4_uuid(&p.name).to_string(),
                crate::disk::Fs::Fat(_) => {
                    crate::ids::fat_volume_id_string(cx.ids.fat_volume_id(&p.name))
                }
            };
            ManifestPartition {
                number: pl.number,
                name: p.name.clone(),
                start: pl.start,
                size: pl.size,
                first_lba: pl.start / SECTOR,
                last_lba: (pl.start + pl.size) / SECTOR - 1,
                type_id: p.type_id.to_string(),
                guid: guid.clone(),
                bootable: p.bootable,
                filesystem: part.fs.kind(),
                fs_size: pl.fs_size,
                label: p.label.clone(),
                uuid,
                mount_point: p.mount_point.clone(),
            }
        })
        .collect();
    Manifest {
        imgbuild_version: env!("CARGO_PKG_VERSION").to_string(),
        format: cx.format.name.clone(),
        system: cx.format.system.clone(),
        toplevel: inputs.toplevel.to_string(),
        closure_source: inputs.source,
        store_paths: inputs.closure.paths.len(),
        nar_size: inputs.closure.total_nar_size(),
        table: match cx.format.table.kind {
            TableType::Gpt => "gpt".into(),
            TableType::Mbr => "dos".into(),
        },
        disk_id: plan.table.disk_id.clone(),
        disk_size: lay.disk_size,
        disk_sha256,
        partitions,
        image: outs.image.display().to_string(),
        image_size,
        sha256,
        compression: cx.compression,
        raw_image: match cx.compression {
            Compression::Zstd => outs.raw.as_ref().map(|r| r.display().to_string()),
            Compression::None => None,
        },
        bmap: outs.bmap.display().to_string(),
        source_date_epoch: cx.time,
        dedup: notes.dedup,
        added: notes.added,
    }
}

fn hex(b: &[u8]) -> String {
    imgbuild_diskmap::sinks::hex(b)
}

/// A writer that hashes what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Everything a build may create: the image, the raw image when compressing, the manifest,
/// and their temporary files.
fn output_paths(cx: &Context) -> Vec<PathBuf> {
    Outputs::of(cx).all()
}

/// The files a build writes.
struct Outputs {
    image: PathBuf,
    /// The raw disk: the image itself, or beside a compressed image with --keep-raw.
    raw: Option<PathBuf>,
    bmap: PathBuf,
    manifest: PathBuf,
}

impl Outputs {
    fn of(cx: &Context) -> Outputs {
        let image = cx.opts.output.path.clone();
        let raw_name = match cx.compression {
            Compression::None => image.clone(),
            Compression::Zstd => raw_path_for(&image),
        };
        let raw = match cx.compression {
            Compression::None => Some(image.clone()),
            Compression::Zstd => cx.opts.output.keep_raw.then(|| raw_name.clone()),
        };
        Outputs {
            bmap: suffixed(&raw_name, ".bmap"),
            manifest: suffixed(&image, ".json"),
            image,
            raw,
        }
    }

    fn all(&self) -> Vec<PathBuf> {
        let mut finals = vec![self.image.clone()];
        finals.extend(self.raw.clone().filter(|r| *r != self.image));
        finals.push(self.bmap.clone());
        finals.push(self.manifest.clone());
        let mut all = Vec::new();
        for f in finals {
            let tmp = OutputFile::tmp_path(&f);
            all.push(f);
            all.push(tmp);
        }
        all
    }
}

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
    let out = &opts.output.path;
    let bad = |reason: String| {
        Err(Error::BadOutput {
            path: out.to_path_buf(),
            reason,
        })
    };
    if out.is_dir() {
        return bad("is a directory".into());
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
    for p in output_paths(cx) {
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

/// `path` with `suffix` appended (`nixos.img` -> `nixos.img.json`).
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `text` to `dest.tmp`; the caller renames it into place.
fn text_file(dest: &Path, text: &str) -> Result<OutputFile> {
    let tmp = OutputFile::tmp_path(dest);
    let out = OutputFile::create(dest, 0)
        .map_err(Error::from)
        .map_err(output_full(&tmp))?;
    Region::new(out.file(), "text", 0, text.len() as u64)
        .write_at(0, text.as_bytes())
        .map_err(Error::from)
        .map_err(output_full(&tmp))?;
    Ok(out)
}
