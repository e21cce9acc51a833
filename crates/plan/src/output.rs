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
use crate::format::{Compression, ContainerType, TableType};
use crate::manifest::{Manifest, ManifestPartition};
use crate::options::Context;
use crate::{add, error::output_full, Error, Inputs, Reporter, Result};
use imgbuild_container::vhd;

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
    // An image holding a file its owner kept from others is readable by its owner only, and
    // so is its bmap (whose range hashes cover that file).
    let mode = if notes.added.iter().any(|a| a.private) {
        0o600
    } else {
        0o666
    };
    let full = |p: &Path| {
        let tmp = OutputFile::tmp_path(p);
        move |e| output_full(&tmp)(e)
    };
    let create = |p: &Path, len: u64| {
        OutputFile::create_with_mode(p, len, mode)
            .map_err(Error::from)
            .map_err(full(p))
    };

    let raw = match &outs.raw {
        Some(r) => Some(create(r, disk_size)?),
        None => None,
    };
    let kind = cx.format.container.kind;
    // The image file, unless it is the raw disk: sequential containers grow as written; a
    // fixed VHD is the sparse raw disk and its footer.
    let image = match (kind, cx.compression) {
        (ContainerType::Raw, Compression::None) => None,
        (ContainerType::VhdFixed, _) => Some(create(&outs.image, disk_size + vhd::FOOTER as u64)?),
        _ => Some(create(&outs.image, 0)?),
    };
    let params = imgbuild_container::Params {
        disk_size,
        id: cx.ids.container_id(),
        time: cx.time,
    };
    let mut sha = Sha256Sink::new();
    let mut bmap = outs.bmap.as_ref().map(|_| Bmap::new(map));
    let mut raw_sink = raw.as_ref().map(|f| {
        RawFile::new(
            f.file(),
            disk_size,
            format!("writing `{}`", f.tmp().display()),
        )
    });
    let mut image_sink = match &image {
        None => ImageSink::Raw,
        Some(f) => ImageSink::new(cx, &inputs.toplevel.to_string(), kind, map, &params, f)?,
    };
    let mut sinks: Vec<&mut dyn Sink> = vec![&mut sha];
    if let Some(b) = bmap.as_mut() {
        sinks.push(b);
    }
    if let Some(s) = raw_sink.as_mut() {
        sinks.push(s);
    }
    if let Some(s) = image_sink.sink() {
        sinks.push(s);
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

    let disk_sha256 = sha.hex().expect("a finished stream finishes its sinks");
    let (image_size, sha256) = match image_sink.finish(&sha, &params, image.as_ref()) {
        Ok(Some(done)) => done,
        Ok(None) => (disk_size, disk_sha256.clone()),
        Err(e) => return Err(full(&outs.image)(e)),
    };
    reporter.done();
    let bmap_file = match (&outs.bmap, &bmap) {
        (Some(path), Some(b)) => Some(text_file(path, b.xml().expect("finished"), mode)?),
        _ => None,
    };

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
    let json = text_file(&outs.manifest, &json, 0o666)?;
    // Nothing is renamed into place before every file is complete: a failure up to here
    // leaves no file at the output paths. The manifest goes last.
    for f in [image, raw, bmap_file, Some(json)].into_iter().flatten() {
        let tmp = f.tmp().to_path_buf();
        f.persist()
            .map_err(Error::from)
            .map_err(output_full(&tmp))?;
    }
    Ok(manifest)
}

/// The image file written sequentially from `pos` on (positional writes: an OVA's front is
/// written last).
struct At<'f> {
    file: &'f std::fs::File,
    pos: u64,
}

impl Write for At<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::write_all_at(self.file, buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The image file written sequentially and hashed on the way.
type Hashing<'f> = HashingWriter<BufWriter<At<'f>>>;

fn hashing(f: &OutputFile) -> Hashing<'_> {
    hashing_at(f, 0)
}

fn hashing_at(f: &OutputFile, pos: u64) -> Hashing<'_> {
    HashingWriter {
        inner: BufWriter::with_capacity(
            1 << 20,
            At {
                file: f.file(),
                pos,
            },
        ),
        hash: Sha256::new(),
        len: 0,
    }
}

/// The file's SHA-256, read back: only for an OVA, whose first blocks are written last.
fn sha256_of(f: &OutputFile) -> std::io::Result<String> {
    use std::io::Read;
    let mut h = Sha256::new();
    let mut r = std::io::BufReader::with_capacity(1 << 20, f.file());
    std::io::Seek::seek(&mut r, std::io::SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// The sink writing the image file, when it is not the raw disk itself.
enum ImageSink<'f> {
    /// The image is the raw file (its sink is the raw one).
    Raw,
    Zstd(imgbuild_compress::Zstd<Hashing<'f>>),
    Qcow2(imgbuild_container::Qcow2<Hashing<'f>>),
    Vhd(imgbuild_container::Vhd<Hashing<'f>>),
    /// The raw disk at the start of the file; the footer follows at the end.
    VhdFixed(RawFile<'f>),
    Gce(imgbuild_container::GceTar<imgbuild_compress::Gzip<Hashing<'f>>>),
    Vhdx(imgbuild_container::Vhdx<Hashing<'f>>),
    Vmdk(imgbuild_container::Vmdk<Hashing<'f>>),
    /// The VMDK written at its place in the OVA; the rest of the package after.
    Ova(
        imgbuild_container::Vmdk<Hashing<'f>>,
        imgbuild_container::Ova,
    ),
}

impl<'f> ImageSink<'f> {
    fn new(
        cx: &Context,
        toplevel: &str,
        kind: ContainerType,
        map: &Map,
        params: &imgbuild_container::Params,
        f: &'f OutputFile,
    ) -> Result<Self> {
        let workers = cx.opts.threads.max(1);
        let deflate_level = cx.opts.output.level.unwrap_or(GZIP_LEVEL).unsigned_abs();
        Ok(match kind {
            ContainerType::Raw => ImageSink::Zstd(imgbuild_compress::Zstd::new(
                hashing(f),
                map.len(),
                &imgbuild_compress::Options {
                    level: cx.opts.output.level.unwrap_or(ZSTD_LEVEL),
                    workers: u32::try_from(workers).unwrap_or(u32::MAX),
                    checksum: true,
                },
            )?),
            ContainerType::Qcow2 => {
                ImageSink::Qcow2(imgbuild_container::Qcow2::new(map, params, hashing(f))?)
            }
            ContainerType::Vhd => {
                ImageSink::Vhd(imgbuild_container::Vhd::new(map, params, hashing(f))?)
            }
            ContainerType::VhdFixed => {
                // Refuse a size VHD cannot describe before writing anything.
                vhd::fixed_footer(params)?;
                ImageSink::VhdFixed(RawFile::new(
                    f.file(),
                    map.len(),
                    format!("writing `{}`", f.tmp().display()),
                ))
            }
            ContainerType::GceTar => {
                let level = cx.opts.output.level.unwrap_or(GZIP_LEVEL);
                let gz = imgbuild_compress::Gzip::new(hashing(f), level.unsigned_abs(), workers)
                    .map_err(|source| Error::Io {
                        op: "writing",
                        path: f.tmp().to_path_buf(),
                        source,
                    })?;
                ImageSink::Gce(imgbuild_container::GceTar::new(map, params, gz)?)
            }
            ContainerType::Vhdx => {
                ImageSink::Vhdx(imgbuild_container::Vhdx::new(map, params, hashing(f))?)
            }
            ContainerType::Vmdk => ImageSink::Vmdk(imgbuild_container::Vmdk::new(
                map,
                params,
                hashing(f),
                workers,
                deflate_level,
            )?),
            ContainerType::Ova => {
                let ova = imgbuild_container::Ova::new(params, &machine_name(toplevel))?;
                let w = hashing_at(f, ova.vmdk_offset());
                let vmdk = imgbuild_container::Vmdk::new(map, params, w, workers, deflate_level)?;
                ImageSink::Ova(vmdk, ova)
            }
        })
    }

    fn sink(&mut self) -> Option<&mut dyn Sink> {
        match self {
            ImageSink::Raw => None,
            ImageSink::Zstd(s) => Some(s),
            ImageSink::Qcow2(s) => Some(s),
            ImageSink::Vhd(s) => Some(s),
            ImageSink::VhdFixed(s) => Some(s),
            ImageSink::Gce(s) => Some(s),
            ImageSink::Vhdx(s) => Some(s),
            ImageSink::Vmdk(s) => Some(s),
            ImageSink::Ova(s, _) => Some(s),
        }
    }

    /// After the stream: the image file's size and SHA-256 (`None` when it is the raw disk).
    fn finish(
        self,
        disk: &Sha256Sink,
        params: &imgbuild_container::Params,
        f: Option<&OutputFile>,
    ) -> Result<Option<(u64, String)>> {
        let io = |source| Error::Io {
            op: "writing",
            path: f.map_or_else(PathBuf::new, |f| f.tmp().to_path_buf()),
            source,
        };
        let done = |w: Hashing<'_>| (w.len, hex(&w.hash.finalize()));
        Ok(match self {
            ImageSink::Raw => None,
            ImageSink::Zstd(z) => {
                let (w, summary) = z
                    .into_inner()
                    .expect("a finished stream finishes its sinks");
                Some((summary.output_bytes, hex(&w.hash.finalize())))
            }
            ImageSink::Qcow2(q) => Some(done(q.into_inner())),
            ImageSink::Vhd(v) => Some(done(v.into_inner())),
            ImageSink::Gce(t) => Some(done(t.into_inner().finish().map_err(io)?)),
            ImageSink::Vhdx(v) => Some(done(v.into_inner())),
            ImageSink::Vmdk(v) => Some(done(v.into_inner())),
            ImageSink::Ova(v, ova) => {
                let w = v.into_inner();
                let (vmdk_len, vmdk_sha) = (w.len, w.hash.finalize());
                let f = f.expect("an OVA has its own file");
                let len = ova.finish(f.file(), vmdk_len, &vmdk_sha)?;
                Some((len, sha256_of(f).map_err(io)?))
            }
            ImageSink::VhdFixed(_) => {
                let footer = vhd::fixed_footer(params)?;
                let f = f.expect("a fixed VHD has its own file");
                Region::new(
                    f.file(),
                    "VHD footer",
                    params.disk_size,
                    footer.len() as u64,
                )
                .write_at(0, &footer)?;
                let sum = disk
                    .digest_with_suffix(&footer)
                    .expect("a finished stream finishes its sinks");
                Some((params.disk_size + footer.len() as u64, hex(&sum)))
            }
        })
    }
}

/// The virtual machine's name in an OVA: the toplevel's host name
/// (`nixos-system-HOST-VERSION`), else `nixos`.
fn machine_name(toplevel: &str) -> String {
    let base = toplevel.rsplit('/').next().unwrap_or_default();
    let name = base.split_once('-').map_or("", |(_, n)| n);
    let host = name.strip_prefix("nixos-system-").and_then(|rest| {
        let cut = rest
            .char_indices()
            .filter(|&(i, c)| c == '-' && rest[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
            .map(|(i, _)| i)
            .next_back()?;
        Some(&rest[..cut])
    });
    match host {
        Some(h)
            if !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            h.to_string()
        }
        _ => "nixos".to_string(),
    }
}

#[cfg(test)]
#[test]
fn machine_names_come_from_the_toplevel() {
    let n = |t: &str| machine_name(t);
    assert_eq!(
        n("/nix/store/f5irh71dz347dzz5siijm85f1sbgmawj-nixos-system-web-2-24.05.20240601.b3b2b28"),
        "web-2"
    );
    assert_eq!(n("/nix/store/aaaa-nixos-system-x-25.11pre"), "x");
    assert_eq!(n("/nix/store/aaaa-something-else"), "nixos");
    assert_eq!(n("/nix/store/aaaa-nixos-system-25.11"), "nixos");
}

/// Levels when `--level` is not given.
const ZSTD_LEVEL: i32 = 3;
const GZIP_LEVEL: i32 = 6;

/// What building the trees did, for the manifest.
pub(crate) struct TreeNotes {
    pub added: Vec<add::Added>,
    pub dedup: crate::DedupReport,
    pub boot: crate::BootNote,
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
        .zip(&plan.table.entries)
        .map(|((p, part), entry)| {
            let uuid = match &part.fs {
                crate::disk::Fs::Ext4(_) => cx.ids.ext4_uuid(&p.name).to_string(),
                crate::disk::Fs::Fat(_) => {
                    crate::ids::fat_volume_id_string(cx.ids.fat_volume_id(&p.name))
                }
            };
            ManifestPartition {
                entry: entry.clone(),
                filesystem: imgbuild_partition::FsSummary {
                    kind: part.fs.kind(),
                    label: (!p.label.is_empty()).then(|| p.label.clone()),
                    uuid: Some(uuid),
                    size: part.fs.size(),
                },
                mount_point: p.mount_point.clone(),
            }
        })
        .collect();
    // With files added from the host, a hash of the disk or the image would let anyone
    // holding the manifest test guesses of their contents (same closure, same seed: a 4-digit
    // PIN is 10 000 builds): withheld.
    let withhold = !notes.added.is_empty();
    let (sha256, disk_sha256, hashes) = if withhold {
        (None, None, HASHES_WITHHELD)
    } else {
        (Some(sha256), Some(disk_sha256), HASHES_COVER)
    };
    // So is the size of a compressed image: it depends on what the added files hold.
    let compressed =
        cx.compression != Compression::None || cx.format.container.kind.size_depends_on_content();
    let image_size = (!(withhold && compressed)).then_some(image_size);
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
        image: file_name(&outs.image),
        image_size,
        sha256,
        container: cx.format.container.kind,
        compression: cx.compression,
        raw_image: outs
            .raw
            .as_ref()
            .filter(|r| **r != outs.image)
            .map(|r| file_name(r)),
        bmap: outs.bmap.as_ref().map(|b| file_name(b)),
        hashes: hashes.to_string(),
        source_date_epoch: cx.time,
        dedup: notes.dedup,
        added: notes.added,
        boot: notes.boot,
    }
}

/// What the manifest's hashes cover.
const HASHES_COVER: &str = "sha256: the image file as written; disk_sha256: the raw disk \
     (the uncompressed image, or the first disk_size bytes of a device it was written to); the \
     bmap's ranges: the raw disk's mapped blocks";

/// Why they are left out.
const HASHES_WITHHELD: &str = "withheld: the image holds files added from the host (`added`), \
     and a hash of it (or the size of a compressed image) would let anyone holding this \
     manifest test guesses of their contents; \
     verify a copy by comparing `sha256sum` of it with that of the file on the build host. The \
     bmap holds a hash of every mapped range, those files' included: keep it with the image";

/// `dir/nixos.img` -> `nixos.img`: the manifest names the outputs beside it, not the host's
/// directories.
fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
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
    /// The raw disk: the image itself, or beside a compressed image or a container with
    /// --keep-raw.
    raw: Option<PathBuf>,
    /// The raw disk's block map: beside a raw or zstd image (bmaptool writes either), or
    /// beside the raw disk kept next to a container.
    bmap: Option<PathBuf>,
    manifest: PathBuf,
}

impl Outputs {
    fn of(cx: &Context) -> Outputs {
        let image = cx.opts.output.path.clone();
        let is_raw = cx.format.container.kind == ContainerType::Raw;
        let raw_name = match (is_raw, cx.compression) {
            (true, Compression::None) => image.clone(),
            _ => raw_path_for(&image),
        };
        let raw = match (is_raw, cx.compression) {
            (true, Compression::None) => Some(image.clone()),
            _ => cx.opts.output.keep_raw.then(|| raw_name.clone()),
        };
        Outputs {
            bmap: (is_raw || raw.is_some()).then(|| suffixed(&raw_name, ".bmap")),
            manifest: suffixed(&image, ".json"),
            image,
            raw,
        }
    }

    fn all(&self) -> Vec<PathBuf> {
        let mut finals = vec![self.image.clone()];
        finals.extend(self.raw.clone().filter(|r| *r != self.image));
        finals.extend(self.bmap.clone());
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
fn text_file(dest: &Path, text: &str, mode: u32) -> Result<OutputFile> {
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
