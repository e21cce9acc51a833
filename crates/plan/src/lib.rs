//! The planner: closure + format file -> byte-exact disk layout -> image.
//!
//! [`build`] reads the inputs ([`Inputs::load`]: toplevel, closure, bootspec), builds every
//! partition's file tree (`trees`), plans every filesystem up front (so the exact image size
//! is known, and a too-small `--size` is refused before anything is written), lays the
//! partitions out ([`layout`]), then writes the filesystems in parallel into a sparse
//! `OUT.tmp`, the partition table last, compresses if asked, and renames into place. This is
//! the only crate that decides times, seeds and threads; the format crates below only take
//! them as parameters.

pub mod add;
pub mod format;
pub mod layout;
mod manifest;
mod trees;
mod write;

pub use format::{Compression, Format};
pub use layout::{Layout, PartitionLayout};
pub use manifest::{Manifest, ManifestPartition};

use imgbuild_blockio::{self as blockio, Progress};
use imgbuild_boot as boot;
use imgbuild_ext4 as ext4;
use imgbuild_fat as fat;
use imgbuild_fstree::Tree;
use imgbuild_nix::{BootSpec, Closure, StorePath, StoreRoot};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Images built without `SOURCE_DATE_EPOCH` carry this time: 1980-01-01 00:00:00 UTC, the
/// first instant every format involved (FAT included) can represent.
pub const DEFAULT_EPOCH: i64 = 315_532_800;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Format(#[from] format::FormatError),
    #[error("{what}")]
    Nix {
        what: String,
        #[source]
        source: imgbuild_nix::Error,
    },
    #[error("store path {path} of the closure cannot be read at `{}`", host.display())]
    StorePath {
        path: String,
        host: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the tree at `{what}`")]
    Tree {
        what: String,
        #[source]
        source: imgbuild_fstree::Error,
    },
    #[error("{op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("`{}`: directories nest too deep", path.display())]
    TooDeep { path: PathBuf },
    #[error("the toplevel is built for `{found}`, but format `{format}` is for `{expected}`")]
    WrongSystem {
        format: String,
        expected: String,
        found: String,
    },
    #[error("no Raspberry Pi firmware directory: set `\"org.imgbuild.v1\": {{\"firmware\": \"/nix/store/...\"}}` in the toplevel's boot.json (the imgbuild NixOS module does), or pass --firmware DIR")]
    NoFirmware,
    #[error("no systemd-boot in the closure: looked for `{0}`")]
    NoSystemdBoot(String),
    #[error(
        "the image needs at least {needed} bytes ({}), but --size is {available} bytes ({}); \
         nothing was written",
        human_size(*.needed),
        human_size(*.available)
    )]
    DiskTooSmall { needed: u64, available: u64 },
    #[error("partition `{name}`: {source}")]
    Ext4 {
        name: String,
        #[source]
        source: ext4::Error,
    },
    #[error("partition `{name}`: {source}")]
    Fat {
        name: String,
        #[source]
        source: fat::Error,
    },
    #[error("boot loader files: {0}")]
    Boot(#[from] boot::Error),
    #[error("partition table: {0}")]
    Partition(#[from] imgbuild_partition::Error),
    #[error(transparent)]
    Block(#[from] blockio::Error),
    #[error("compressing: {0}")]
    Compress(#[from] imgbuild_compress::Error),
    #[error("the output `{}` {reason}", path.display())]
    BadOutput { path: PathBuf, reason: String },
    /// The output could not be grown or written: its file system is full, or a file size
    /// limit (`ulimit -f`) or quota was hit.
    #[error("cannot write the output `{}`: {reason}", path.display())]
    OutputFull {
        path: PathBuf,
        reason: &'static str,
        #[source]
        source: Box<Error>,
    },
    #[error("--add to `{dest}`: {reason}")]
    AddClash { dest: String, reason: String },
    #[error("--add source `{}` {reason}", src.display())]
    AddSource { src: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `529 MiB`, `2.1 GiB`: a size for people, next to the exact byte count.
pub fn human_size(n: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let m = n as f64 / MIB;
    if m >= 1024.0 {
        format!("{:.1} GiB", m / 1024.0)
    } else if m >= 1.0 {
        format!("{m:.1} MiB")
    } else {
        format!("{n} B")
    }
}

/// Wraps an error whose cause is a full file system (`ENOSPC`), a file size limit (`EFBIG`,
/// e.g. `ulimit -f`) or a quota (`EDQUOT`) as [`Error::OutputFull`] naming `path`; other
/// errors pass through unchanged.
pub(crate) fn output_full(path: &Path) -> impl FnOnce(Error) -> Error + '_ {
    move |e| {
        let mut errno = None;
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cur {
            if let Some(n) = c
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.raw_os_error())
            {
                errno = Some(n);
                break;
            }
            cur = c.source();
        }
        let reason = match errno {
            Some(libc::ENOSPC) => "its file system is full (ENOSPC)",
            Some(libc::EFBIG) => {
                "the file would exceed the file size limit (`ulimit -f`) or the file system's \
                 largest file (EFBIG)"
            }
            Some(libc::EDQUOT) => "the disk quota is exhausted (EDQUOT)",
            _ => return e,
        };
        Error::OutputFull {
            path: path.to_path_buf(),
            reason,
            source: Box::new(e),
        }
    }
}

/// Where the closure comes from.
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// `./result` or a store path.
    pub closure: PathBuf,
    /// Where `/nix/store` lives on this host (`/` normally).
    pub store_root: PathBuf,
    /// nixpkgs `closureInfo` output, if any.
    pub closure_info: Option<PathBuf>,
}

/// How the closure was enumerated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClosureSource {
    ClosureInfo,
    Database,
    Scan,
}

/// The loaded inputs: toplevel, its closure and its boot spec.
pub struct Inputs {
    /// What was asked for (paths as given), so the output can be checked against them.
    pub spec: InputSpec,
    pub store: StoreRoot,
    pub toplevel: StorePath,
    pub closure: Closure,
    pub bootspec: BootSpec,
    pub source: ClosureSource,
}

fn nix(what: impl Into<String>) -> impl FnOnce(imgbuild_nix::Error) -> Error {
    let what = what.into();
    move |source| Error::Nix { what, source }
}

impl Inputs {
    /// Resolve the toplevel and enumerate its closure: closureInfo if given, else the Nix
    /// database under the store root, else a scan of the store like Nix's reference scanner.
    pub fn load(spec: &InputSpec) -> Result<Inputs> {
        let store = StoreRoot::new(&spec.store_root);
        let toplevel = imgbuild_nix::resolve_toplevel(&spec.closure, &spec.store_root)
            .map_err(nix(format!("--closure `{}`", spec.closure.display())))?;
        let db = spec.store_root.join(imgbuild_nix::DB_PATH);
        let (closure, source) = if let Some(ci) = &spec.closure_info {
            let c = Closure::from_closure_info(ci, &toplevel)
                .map_err(nix(format!("--closure-info `{}`", ci.display())))?;
            (c, ClosureSource::ClosureInfo)
        } else if db.exists() {
            let c = Closure::from_db(&spec.store_root, &toplevel)
                .map_err(nix("reading the closure from the Nix database"))?;
            (c, ClosureSource::Database)
        } else {
            let c = Closure::from_scan(&spec.store_root, &toplevel)
                .map_err(nix(format!("scanning the closure of {toplevel}")))?;
            (c, ClosureSource::Scan)
        };
        closure
            .check_present(&spec.store_root)
            .map_err(nix("checking the closure"))?;
        let bootspec = BootSpec::read(&spec.store_root, &toplevel)
            .map_err(nix(format!("boot spec of {toplevel}")))?;
        Ok(Inputs {
            spec: spec.clone(),
            store,
            toplevel,
            closure,
            bootspec,
            source,
        })
    }
}

/// Everything one build needs besides the inputs.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub output: PathBuf,
    /// Seed for every GUID, UUID, volume id and hash seed; default: toplevel + format.
    pub seed: Option<String>,
    /// Size of the whole disk; default: the minimum plus the root partition's `free`.
    pub size: Option<u64>,
    /// Free space in the `auto`-sized root filesystem (overrides the format's `free`).
    pub free: Option<u64>,
    /// Partition size overrides by flag name (`esp-size`).
    pub part_sizes: Vec<(String, u64)>,
    pub compress: Option<Compression>,
    pub level: i32,
    pub keep_raw: bool,
    pub threads: usize,
    /// Raspberry Pi firmware directory on the host (when boot.json does not name one).
    pub firmware: Option<PathBuf>,
    pub disk_id: Option<u32>,
    /// Time for everything generated (SOURCE_DATE_EPOCH).
    pub epoch: i64,
    /// Ship `/nix-path-registration` (overrides the format's default).
    pub nix_path_registration: Option<bool>,
    /// Host files to add (`--add`, `--add-tree`, `--add-boot`).
    pub adds: Vec<add::Add>,
}

/// Progress reporting for the CLI: named phases with a byte total, then byte counts.
pub trait Reporter: Progress {
    fn phase(&self, name: &str, total: u64);
    fn done(&self) {}
}

/// A reporter that shows nothing.
pub struct Quiet;
impl Progress for Quiet {
    fn add(&self, _bytes: u64) {}
}
impl Reporter for Quiet {
    fn phase(&self, _name: &str, _total: u64) {}
}

/// The seed that everything random-looking in the image derives from.
pub fn seed_bytes(opts: &BuildOptions, format: &Format, toplevel: &StorePath) -> Vec<u8> {
    match &opts.seed {
        Some(s) => s.as_bytes().to_vec(),
        None => format!("imgbuild:{}:{}", format.name, toplevel).into_bytes(),
    }
}

/// The ext4 UUID of partition `name`.
pub(crate) fn ext4_uuid(seed: &[u8], name: &str) -> [u8; 16] {
    derive_id(seed, &format!("ext4-uuid:{name}"))
}

/// The FAT volume id of partition `name`.
pub(crate) fn fat_volume_id(seed: &[u8], name: &str) -> u32 {
    let v = derive_id(seed, &format!("fat-volume-id:{name}"));
    u32::from_le_bytes([v[0], v[1], v[2], v[3]])
}

/// A 16-byte id (GUID, UUID, volume id, hash seed) derived from the seed and its purpose.
pub fn derive_id(seed: &[u8], what: &str) -> [u8; 16] {
    imgbuild_partition::guid_from_seed(seed, what)
}

/// The build-time date as `YYYY-MM-DD` (UTC), for systemd-boot's "built on".
pub fn date_of(epoch: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = epoch.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

fn boot_entry(spec: &BootSpec, dtbs: Option<String>) -> boot::BootEntry {
    boot::BootEntry {
        toplevel: spec.toplevel.to_string(),
        init: spec.init.to_path_buf().display().to_string(),
        kernel: spec.kernel.to_path_buf().display().to_string(),
        initrd: spec
            .initrd
            .as_ref()
            .map(|i| i.to_path_buf().display().to_string()),
        kernel_params: spec.kernel_params.clone(),
        label: spec.label.clone(),
        system: spec.system.clone(),
        dtbs,
        devicetree: None,
    }
}

/// The `dtbs` store directory of the toplevel (`<toplevel>/dtbs`), resolved logically.
fn toplevel_dtbs(inputs: &Inputs) -> Result<Option<String>> {
    let link = inputs.toplevel.join("dtbs");
    let host = inputs
        .store
        .root()
        .join(link.strip_prefix("/").unwrap_or(&link));
    if std::fs::symlink_metadata(&host).is_err() {
        return Ok(None);
    }
    let sub = inputs
        .store
        .canonicalize_logical(&link)
        .map_err(nix(format!("resolving {}", link.display())))?;
    Ok(Some(sub.to_path_buf().display().to_string()))
}

/// Plan and build the image. Returns the manifest (also written beside the image).
pub fn build(
    format: &Format,
    inputs: &Inputs,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<Manifest> {
    if inputs.bootspec.system != format.system {
        return Err(Error::WrongSystem {
            format: format.name.clone(),
            expected: format.system.clone(),
            found: inputs.bootspec.system.clone(),
        });
    }
    check_output(format, opts, inputs)?;
    let seed = seed_bytes(opts, format, &inputs.toplevel);
    let time = opts.epoch;
    let interrupted = |_| Error::Interrupted;

    // 1. Every partition's file tree.
    reporter.phase("reading the closure", 0);
    let entry = boot_entry(&inputs.bootspec, toplevel_dtbs(inputs)?);
    let mut trees_by_part = Vec::new();
    let mut added = Vec::new();
    for p in &format.partitions {
        let mut tree = match p.contents {
            format::Contents::Esp => esp_tree(format, inputs, &entry, time)?,
            format::Contents::Firmware => firmware_tree(inputs, opts, time)?,
            format::Contents::Root => root_tree(format, inputs, opts, &entry, time, cancel)?,
        };
        let target = match p.contents {
            format::Contents::Root => add::AddTarget::Root,
            _ => add::AddTarget::Boot,
        };
        let mine: Vec<&add::Add> = opts.adds.iter().filter(|a| a.target == target).collect();
        let fat = p.filesystem != format::Filesystem::Ext4;
        added.extend(add::apply(&mut tree, &mine, time, fat)?);
        trees_by_part.push(tree);
        blockio::check_cancel(cancel).map_err(interrupted)?;
    }
    if opts.adds.iter().any(|a| a.target == add::AddTarget::Boot)
        && !format
            .partitions
            .iter()
            .any(|p| p.contents != format::Contents::Root)
    {
        return Err(Error::Invalid(format!(
            "--add-boot: format `{}` has no boot partition",
            format.name
        )));
    }

    // 2. Sizes and placement; the filesystems are planned in full before anything is written.
    reporter.phase("planning", 0);
    let root_index = format
        .partitions
        .iter()
        .position(|p| p.contents == format::Contents::Root)
        .expect("validate() checked there is exactly one root partition");
    let size_of = |i: usize| part_size(format, opts, i);
    let free = opts
        .free
        .or(format.root_partition().free.map(|b| b.0))
        .unwrap_or(0);
    let mut auto = |free: u64| -> Result<u64> {
        let plan = plan_ext4(
            format,
            root_index,
            &trees_by_part[root_index],
            &seed,
            time,
            ext4::Size::Auto { extra_free: free },
        )?;
        Ok(plan.size_bytes())
    };
    let lay = layout::compute(format, &size_of, opts.size, free, &mut auto)?;
    let mut planned = Vec::new();
    for (i, pl) in lay.partitions.iter().enumerate() {
        let tree = &trees_by_part[i];
        planned.push(match format.partitions[i].filesystem {
            format::Filesystem::Ext4 => {
                let plan = plan_ext4(format, i, tree, &seed, time, ext4::Size::Exact(pl.fs_size))?;
                Fs::Ext4(Box::new(plan))
            }
            format::Filesystem::Fat | format::Filesystem::Fat32 => {
                Fs::Fat(Box::new(plan_fat(format, i, tree, pl.fs_size, &seed)?))
            }
        });
    }
    blockio::check_cancel(cancel).map_err(interrupted)?;

    // 3. Write.
    let parts: Vec<Part> = planned
        .into_iter()
        .zip(trees_by_part)
        .zip(lay.partitions.iter())
        .map(|((fs, tree), pl)| Part {
            fs,
            tree,
            layout: pl,
        })
        .collect();
    write::write(
        format, inputs, opts, &lay, &parts, &seed, added, reporter, cancel,
    )
}

/// A partition ready to be written.
pub(crate) struct Part<'a> {
    pub fs: Fs,
    pub tree: Tree,
    pub layout: &'a PartitionLayout,
}

pub(crate) enum Fs {
    Fat(Box<fat::Plan>),
    Ext4(Box<ext4::Plan>),
}

fn part_size(format: &Format, opts: &BuildOptions, i: usize) -> Option<u64> {
    let p = &format.partitions[i];
    if let Some(flag) = &p.size_flag {
        if let Some((_, n)) = opts.part_sizes.iter().find(|(f, _)| f == flag) {
            return Some(*n);
        }
    }
    match p.size {
        format::PartSize::Fixed(n) => Some(n),
        format::PartSize::Auto => None,
    }
}

fn root_tree(
    format: &Format,
    inputs: &Inputs,
    opts: &BuildOptions,
    entry: &boot::BootEntry,
    time: i64,
    cancel: &AtomicBool,
) -> Result<Tree> {
    let db = if format.root.database {
        Some(write_db_bytes(&inputs.closure, time)?)
    } else {
        None
    };
    let registration = opts
        .nix_path_registration
        .unwrap_or(format.root.nix_path_registration)
        .then(|| inputs.closure.registration_text());
    let extras = trees::RootExtras {
        db,
        registration,
        mount_points: format
            .partitions
            .iter()
            .map(|p| p.mount_point.clone())
            .collect(),
    };
    let mut tree = trees::root_tree(inputs, &extras, time, cancel)?;
    if format.bootloader.kind == format::Bootloader::Extlinux {
        let o = boot::ExtlinuxOptions {
            timeout: format.bootloader.timeout.map(|t| t as i32),
            ..Default::default()
        };
        let files = boot::extlinux_boot(entry, &o)?;
        trees::add_boot_files(&mut tree, "/boot", &files, &inputs.store, time)?;
    }
    Ok(tree)
}

fn plan_ext4(
    format: &Format,
    index: usize,
    tree: &Tree,
    seed: &[u8],
    time: i64,
    size: ext4::Size,
) -> Result<ext4::Plan> {
    let p = &format.partitions[index];
    let opts = ext4::Options {
        label: p.label.clone(),
        uuid: ext4_uuid(seed, &p.name),
        hash_seed: derive_id(seed, &format!("ext4-hash-seed:{}", p.name)),
        timestamp: time,
        size,
        ..Default::default()
    };
    ext4::plan(tree, &opts).map_err(|source| Error::Ext4 {
        name: p.name.clone(),
        source,
    })
}

fn plan_fat(
    format: &Format,
    index: usize,
    tree: &Tree,
    size: u64,
    seed: &[u8],
) -> Result<fat::Plan> {
    let p = &format.partitions[index];
    let opts = fat::Options {
        label: p.label.clone(),
        volume_id: fat_volume_id(seed, &p.name),
        fat_type: if p.filesystem == format::Filesystem::Fat32 {
            fat::FatType::Fat32
        } else {
            fat::FatType::Auto
        },
        ..Default::default()
    };
    fat::plan(tree, size, &opts).map_err(|source| Error::Fat {
        name: p.name.clone(),
        source,
    })
}

/// Everything a build may create: the image, the raw image when compressing, the manifest,
/// and their temporary files.
fn output_paths(format: &Format, opts: &BuildOptions) -> Vec<PathBuf> {
    let mut finals = vec![opts.output.clone()];
    if opts.compress.unwrap_or(format.compress) == Compression::Zstd {
        finals.push(write::raw_path_for(&opts.output));
    }
    finals.push(write::manifest_path(&opts.output));
    let mut all = Vec::new();
    for f in finals {
        let tmp = blockio::OutputFile::tmp_path(&f);
        all.push(f);
        all.push(tmp);
    }
    all
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
fn check_output(format: &Format, opts: &BuildOptions, inputs: &Inputs) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let out = &opts.output;
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
    for p in output_paths(format, opts) {
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

fn write_db_bytes(closure: &Closure, time: i64) -> Result<Arc<[u8]>> {
    let dir = tempdir()?;
    let p = dir.0.join("db.sqlite");
    let r = imgbuild_nix::write_db(closure, time, &p)
        .map_err(nix("writing the Nix database"))
        .and_then(|()| {
            std::fs::read(&p).map_err(|source| Error::Io {
                op: "reading",
                path: p.clone(),
                source,
            })
        });
    drop(dir);
    Ok(r?.into())
}

/// A private temporary directory removed on drop.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn tempdir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    for i in 0..1000u32 {
        let p = base.join(format!("imgbuild-{}-{i}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(TempDir(p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(Error::Io {
                    op: "creating a temporary directory in",
                    path: base,
                    source,
                })
            }
        }
    }
    Err(Error::Invalid("cannot create a temporary directory".into()))
}

fn esp_tree(format: &Format, inputs: &Inputs, entry: &boot::BootEntry, time: i64) -> Result<Tree> {
    let arch = if inputs.bootspec.system.starts_with("aarch64") {
        "aa64"
    } else {
        "x64"
    };
    let efi_rel = format!("systemd/lib/systemd/boot/efi/systemd-boot{arch}.efi");
    let link = inputs.toplevel.join(&efi_rel);
    let efi = inputs
        .store
        .canonicalize_logical(&link)
        .map_err(|_| Error::NoSystemdBoot(link.display().to_string()))?;
    let sort_key = inputs
        .bootspec
        .extensions
        .get("org.nixos.systemd-boot")
        .and_then(|v| v.get("sortKey"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let o = boot::SdBootOptions {
        timeout: format.bootloader.timeout,
        build_date: date_of(time),
        sort_key,
        ..Default::default()
    };
    let files = boot::systemd_boot_esp(entry, efi.to_path_buf().display().to_string(), &o)?;
    let mut tree = Tree::new(trees::dir_meta(time));
    trees::add_boot_files(&mut tree, "/", &files, &inputs.store, time)?;
    Ok(tree)
}

fn firmware_tree(inputs: &Inputs, opts: &BuildOptions, time: i64) -> Result<Tree> {
    let mut tree = Tree::new(trees::dir_meta(time));
    let root = imgbuild_fstree::ROOT;
    let dir: PathBuf = match (
        inputs
            .bootspec
            .imgbuild
            .as_ref()
            .and_then(|e| e.firmware.as_ref()),
        &opts.firmware,
    ) {
        (_, Some(host)) => host.clone(),
        (Some(sub), None) => {
            trees::resolve(&inputs.store, &sub.to_path_buf().display().to_string())?
        }
        (None, None) => return Err(Error::NoFirmware),
    };
    let md = std::fs::metadata(&dir).map_err(|source| Error::Io {
        op: "reading the firmware directory",
        path: dir.clone(),
        source,
    })?;
    if !md.is_dir() {
        return Err(Error::Io {
            op: "reading the firmware directory",
            path: dir.clone(),
            source: std::io::Error::other("not a directory"),
        });
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(|source| Error::Io {
            op: "reading the firmware directory",
            path: dir.clone(),
            source,
        })?;
    names.sort();
    // A --firmware directory's own symlinks may point inside it; a store one's stay in the store.
    let base = match &opts.firmware {
        Some(_) => Some(std::fs::canonicalize(&dir).map_err(|source| Error::Io {
            op: "reading the firmware directory",
            path: dir.clone(),
            source,
        })?),
        None => None,
    };
    for n in &names {
        use std::os::unix::ffi::OsStrExt;
        trees::copy_resolved(
            &mut tree,
            root,
            n.as_bytes(),
            &dir.join(n),
            &inputs.store,
            base.as_deref(),
            time,
            0,
        )?;
    }
    if tree.lookup(b"config.txt").is_none() {
        tree.insert(
            root,
            b"config.txt",
            imgbuild_fstree::Node::bytes(trees::file_meta(time), boot::rpi_config_txt().as_bytes()),
        )
        .map_err(|source| Error::Tree {
            what: "config.txt".into(),
            source,
        })?;
    }
    Ok(tree)
}
