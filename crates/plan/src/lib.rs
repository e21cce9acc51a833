//! The planner: closure + format file -> a byte-exact plan of the disk -> one pass into every
//! output.
//!
//! [`build`] runs the stages in order, one file each:
//! 1. [`inputs`]: the toplevel, its closure and boot spec ([`Inputs::load`], run by the CLI);
//! 2. `trees`: every partition's file tree (store, Nix state, profile, boot files, `--add`s);
//! 3. `disk` ([`layout`]): every filesystem planned in full (so the exact image size is known
//!    and a too-small `--size` is refused before anything is written), the partitions
//!    placed, the table encoded;
//! 4. `disk`: the whole disk as one [`imgbuild_diskmap::Map`] of extents (zeros, metadata in
//!    memory, ranges of store files);
//! 5. `output`: that map streamed once into every sink (raw sparse image or zstd, SHA-256,
//!    bmap), the manifest written, everything renamed into place.
//!
//! A [`options::Context`] made once holds what every stage reads: the format, the ids
//! ([`ids`]), the time and the typed [`Options`]. This is the only crate that decides times,
//! seeds and thread counts; the format crates below take them as parameters.

#![warn(missing_docs)]

pub mod add;
mod bootloader;
mod dedup;
mod disk;
mod error;
mod ext4_image;
pub mod format;
pub mod ids;
pub mod inputs;
mod iso;
mod kinds;
pub mod layout;
mod manifest;
mod netboot;
pub mod options;
mod output;
pub mod secure_boot;
mod store_image;
mod system_check;
pub mod sysupdate;
mod tarball;
mod trees;
pub mod verity;

pub use bootloader::BootNote;
pub use dedup::DedupReport;
pub use error::{human_size, Error, Result};
pub use ext4_image::{ext4_image, tree_seed, Ext4Image, Ext4ImageOptions, Ext4Size};
pub use format::{Compression, ContainerType, Format, FormatError};
pub use ids::derive_id;
pub use imgbuild_blockio::Progress;
pub use inputs::{ClosureSource, InputSpec, Inputs};
pub use layout::{Layout, PartitionLayout};
pub use manifest::{
    ElToritoEntry, IsoManifest, Manifest, ManifestPartition, NetbootFile, NetbootManifest,
};
pub use options::threads;
pub use options::{Dedup, DiskSize, Options, Output, OutputOptions};
pub use verity::{cmdline_args, VerityInfo, VerityManifest};

use std::sync::atomic::AtomicBool;

/// Images built without `SOURCE_DATE_EPOCH` carry this time: 1980-01-01 00:00:00 UTC, the
/// first instant every format involved (FAT included) can represent.
pub const DEFAULT_EPOCH: i64 = 315_532_800;

/// The latest time every filesystem written can hold: 2107-12-31 23:59:58 UTC (FAT's last).
pub const MAX_EPOCH: i64 = 4_354_819_198;

/// Accepts a `SOURCE_DATE_EPOCH` every filesystem can represent: 1970-01-01 to 2107-12-31
/// (FAT, which starts in 1980, stores earlier times as 1980-01-01).
pub fn check_epoch(t: i64) -> std::result::Result<i64, String> {
    if (0..=MAX_EPOCH).contains(&t) {
        Ok(t)
    } else {
        Err(format!(
            "{t} is outside the times the image's filesystems can hold (0 = 1970-01-01 to \
             {MAX_EPOCH} = 2107-12-31)"
        ))
    }
}

/// Progress reporting for the CLI: named phases with a byte total, then byte counts.
pub use imgbuild_blockio::Reporter;

/// At most this many characters of a user's text are quoted in an error message.
pub(crate) const QUOTE_MAX: usize = 48;

/// `s` for an error message: control characters escaped, at most [`QUOTE_MAX`] characters
/// (then `…`).
pub(crate) fn quote(s: &str) -> String {
    imgbuild_blockio::excerpt(s, QUOTE_MAX)
}

/// A reporter that shows nothing.
pub struct Quiet;
impl Progress for Quiet {
    fn add(&self, _bytes: u64) {}
}
impl Reporter for Quiet {
    fn phase(&self, _name: &str, _total: u64) {}
}

/// Plan and build the image. Returns the manifest (also written beside the image).
pub fn build(
    format: &Format,
    inputs: &Inputs,
    opts: &Options,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<Manifest> {
    let s = Stages {
        format,
        inputs,
        opts,
        reporter,
        cancel,
    };
    if format.volume != format::Volume::Tar {
        // A container system's toplevel has no kernel: refused before anything is planned.
        inputs::kernel(format, &inputs.bootspec)?;
    }
    match format.volume {
        format::Volume::Iso9660 => return iso::build(&s),
        format::Volume::Netboot | format::Volume::Kexec => return netboot::build(&s),
        format::Volume::Tar => return tarball::build(&s),
        format::Volume::Disk => {}
    }
    s.run(true, |cx, plan, map, notes, sysupdate| {
        let parts = output::Parts {
            layout: output::disk_layout(cx, plan),
            notes,
            sysupdate,
        };
        output::write_with(cx, inputs, parts, map, reporter, cancel, |_| {})
    })
}

/// What a build would write, from [`dry_run`]: the disk planned to the byte and mapped, with
/// nothing written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DryRun {
    /// The format's name.
    pub format: String,
    /// The disk's size in bytes.
    pub disk_size: u64,
    /// Bytes a copy onto a device must write (everything but free space).
    pub mapped_bytes: u64,
    /// Of those, bytes read from host files (the store, `--add`s).
    pub file_bytes: u64,
    /// Extents of the disk's map (a measure of the plan's memory).
    pub extents: usize,
    /// Where each partition would lie.
    pub partitions: Vec<PartitionLayout>,
    /// The verity store's root hash and partitions (a format with a `store` partition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verity: Option<VerityManifest>,
    /// The image id, version and empty B slots of an A/B format (no artifacts: a dry run
    /// writes none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sysupdate: Option<sysupdate::SysupdateManifest>,
}

impl DryRun {
    /// What a format without partitions (ISO, netboot, kexec, tar) would write: `map`.
    pub(crate) fn of_volume(format: &Format, map: &imgbuild_diskmap::Map) -> Self {
        DryRun {
            format: format.name.clone(),
            disk_size: map.len(),
            mapped_bytes: map.mapped_bytes(),
            file_bytes: map.file_bytes(),
            extents: map.extents().len(),
            partitions: Vec::new(),
            verity: None,
            sysupdate: None,
        }
    }
}

/// Plan and map the image as [`build`] does, then stop: no output is created or checked.
/// Shows what a size costs before anything is written (memory and time of the plan).
pub fn dry_run(
    format: &Format,
    inputs: &Inputs,
    opts: &Options,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<DryRun> {
    let s = Stages {
        format,
        inputs,
        opts,
        reporter,
        cancel,
    };
    if format.volume != format::Volume::Tar {
        // A container system's toplevel has no kernel: refused before anything is planned.
        inputs::kernel(format, &inputs.bootspec)?;
    }
    match format.volume {
        format::Volume::Iso9660 => return iso::dry_run(&s),
        format::Volume::Netboot | format::Volume::Kexec => return netboot::dry_run(&s),
        format::Volume::Tar => return tarball::dry_run(&s),
        format::Volume::Disk => {}
    }
    s.run(false, |_, plan, map, notes, _| {
        Ok(DryRun {
            format: format.name.clone(),
            disk_size: map.len(),
            mapped_bytes: map.mapped_bytes(),
            file_bytes: map.file_bytes(),
            extents: map.extents().len(),
            partitions: plan.layout.partitions.clone(),
            verity: notes.verity,
            sysupdate: notes.sysupdate,
        })
    })
}

/// The arguments of [`build`] and [`dry_run`].
pub(crate) struct Stages<'a> {
    format: &'a Format,
    inputs: &'a Inputs,
    opts: &'a Options,
    reporter: &'a dyn Reporter,
    cancel: &'a AtomicBool,
}

impl<'a> Stages<'a> {
    /// The one [`options::Context`] of a build, after the system check (unless turned off):
    /// what every volume's path starts from.
    pub(crate) fn context(&self) -> Result<options::Context<'a>> {
        let cx = options::Context::new(self.format, self.inputs, self.opts)?;
        if self.opts.check_system {
            system_check::check(self.format, &cx.ids, self.inputs)?;
        }
        Ok(cx)
    }

    /// Stages 1 to 4 (the output paths checked first when `check_output`), then `last` with
    /// the plan and the map, on the pool.
    fn run<T: Send>(
        &self,
        check_output: bool,
        last: impl FnOnce(
                &options::Context,
                &disk::Plan,
                &imgbuild_diskmap::Map,
                output::TreeNotes,
                Option<sysupdate::Pending>,
            ) -> Result<T>
            + Send,
    ) -> Result<T> {
        let cx = self.context()?;
        if check_output {
            output::check(&cx, self.inputs)?;
        }
        pool(cx.threads)?.install(|| {
            self.reporter.phase("reading the closure", 0);
            // The verity store first: the ESP's entry and the GPT depend on its root hash.
            let (store, _dir) = self.verity_store(&cx, check_output)?;
            let info = store.as_ref().map(|s| &s.info);
            let params = info.map(verity::cmdline_args).unwrap_or_default();
            let trees = trees::build(&cx, self.inputs, &params, self.cancel)?;
            self.reporter.phase("planning", 0);
            let plan = disk::Plan::new(
                &cx,
                trees.trees,
                trees.grub.as_ref(),
                store.as_ref(),
                self.cancel,
            )?;
            self.reporter.phase("mapping", 0);
            let map = plan.map(&cx)?;
            let (sysupdate, pending) = self.sysupdate(&cx, &plan, store.as_ref(), check_output)?;
            let notes = output::TreeNotes {
                added: trees.added,
                dedup: trees.dedup,
                boot: trees.boot,
                verity: info.map(|i| VerityManifest::new(i, &plan.layout)),
                sysupdate,
            };
            // The map reads the store image: it is removed (dropped) after `last`.
            let done = last(&cx, &plan, &map, notes, pending);
            drop(store);
            done
        })
    }
}

impl Stages<'_> {
    /// For a format with B slots: the manifest's `sysupdate` part, and (`write`: a build,
    /// not a dry run) the version's artifacts written beside the output.
    fn sysupdate(
        &self,
        cx: &options::Context,
        plan: &disk::Plan,
        store: Option<&verity::VerityStore>,
        write: bool,
    ) -> Result<(
        Option<sysupdate::SysupdateManifest>,
        Option<sysupdate::Pending>,
    )> {
        let (Some(rec), Some(store)) = (
            sysupdate::record_for(cx.format, &self.inputs.bootspec)?,
            store,
        ) else {
            return Ok((None, None));
        };
        let mut m = sysupdate::manifest(cx.format, &rec, &plan.layout);
        if !write {
            return Ok((Some(m), None));
        }
        let uki = plan.esp_file(cx, &format!("EFI/Linux/{}", rec.uki_file()))?;
        let pending = sysupdate::write(&cx.output.path, &rec, store, &uki, &mut m)?;
        Ok((Some(m), Some(pending)))
    }

    /// The verity store of a format with a `store` partition, its image written beside the
    /// output (`OUT.store.tmp`), or, for a dry run (`!beside_output`), in a temporary
    /// directory, returned too so that it lives as long as the store.
    fn verity_store(
        &self,
        cx: &options::Context,
        beside_output: bool,
    ) -> Result<(Option<verity::VerityStore>, Option<tempfile::TempDir>)> {
        if cx.format.store_partition().is_none() {
            return Ok((None, None));
        }
        let (path, dir) = if beside_output {
            (store_image::temp_path(&cx.output.path), None)
        } else {
            let dir = tempfile::tempdir().map_err(|source| Error::Io {
                op: "creating a temporary directory for",
                path: std::env::temp_dir(),
                source,
            })?;
            (dir.path().join("store.squashfs"), Some(dir))
        };
        let labels = sysupdate::record_for(cx.format, &self.inputs.bootspec)?
            .map(|r| (r.store_label(), r.verity_label()));
        let store = verity::prepare(cx, self.inputs, &path, labels, self.reporter, self.cancel)?;
        Ok((store, dir))
    }
}

/// The rayon pool the format crates' data parallelism runs on: `threads` workers (the
/// stream's readers and sinks are threads of their own).
pub(crate) fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|source| Error::Threads { threads, source })
}
