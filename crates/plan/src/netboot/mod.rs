//! The netboot formats (`volume = "netboot"`, `volume = "kexec"`): the closure as nixpkgs'
//! `nixos/modules/installer/netboot/netboot.nix` ships it over the network or through kexec.
//!
//! 1. the store image (`store_image`): the closure as squashfs, written to `OUT.store.tmp`
//!    (a dry run: to a temporary directory) and removed after;
//! 2. the initrd ([`initrd`]): the closure's initrd unchanged, then an uncompressed newc cpio
//!    holding `nix-store.squashfs`, as a map of file ranges and header bytes (Linux unpacks
//!    concatenated initramfs archives; nothing is recompressed);
//! 3. the output: `netboot` ([`dir`]) a directory `OUT` holding the kernel under its own name
//!    (`bzImage`, `Image`), `initrd` and `netboot.ipxe`, made as `OUT.tmp/` and renamed;
//!    `kexec` ([`kexec`]) a gzip-compressed tar of `kexec/{bzImage,initrd.gz,kexec-boot,run}`
//!    streamed through the `gzip` output kind. The manifest `OUT.json` beside either, with
//!    its `netboot` part.

mod dir;
mod initrd;
mod kexec;

use std::path::PathBuf;
use std::sync::Arc;

use imgbuild_diskmap::{Map, SourceFile};

use crate::format::Volume;
use crate::manifest::NetbootManifest;
use crate::options::Context;
use crate::output::{Layout, TreeNotes};
use crate::store_image::{self, StoreImage};
use crate::{DryRun, Error, Inputs, Manifest, Result, Stages};

/// The store image's name in the initrd, where netboot.nix's fstab finds it
/// (`../nix-store.squashfs` from stage 1's `/mnt-root`).
pub(crate) const STORE_IMAGE: &str = "nix-store.squashfs";

/// A host file the output reads: its path and size when planned.
pub(crate) struct HostFile {
    pub source: Arc<SourceFile>,
}

impl HostFile {
    /// The store file `logical` (a path in the toplevel's store), resolved on the host.
    fn of(inputs: &Inputs, logical: &std::path::Path) -> Result<HostFile> {
        let host = crate::trees::resolve(&inputs.store, logical)?;
        let md = std::fs::metadata(&host).map_err(|source| Error::Io {
            op: "reading metadata of",
            path: host.clone(),
            source,
        })?;
        if !md.is_file() {
            return Err(Error::NotAFile { path: host });
        }
        Ok(HostFile {
            source: SourceFile::new(host, md.len()),
        })
    }
}

/// Everything planned: the initrd's map and what the outputs need besides.
pub(crate) struct Planned {
    /// The netboot initrd.
    pub initrd: Map,
    /// The kernel file.
    pub kernel: HostFile,
    /// The kernel's name in the netboot directory (`bzImage`, `Image`).
    pub kernel_name: String,
    /// The closure's boot entry (toplevel, kernel parameters).
    pub entry: imgbuild_boot::BootEntry,
    /// The manifest's `netboot` part (its `files` filled in by the output).
    pub manifest: NetbootManifest,
    /// Holds the store image file the initrd's map reads: dropping this removes it.
    pub _store: StoreImage,
}

/// Build the netboot directory or the kexec tarball.
pub(crate) fn build(s: &Stages) -> Result<Manifest> {
    let cx = context(s)?;
    if s.format.volume == Volume::Netboot {
        dir::check(&cx, s.inputs)?;
    } else {
        crate::output::check(&cx, s.inputs)?;
    }
    let store_path = store_image::temp_path(&cx.output.path);
    let planned = crate::pool(cx.threads)?.install(|| plan(s, &cx, &store_path))?;
    let manifest = crate::pool(cx.threads)?.install(|| match s.format.volume {
        Volume::Netboot => dir::write(&cx, s, &planned),
        _ => kexec::write(&cx, s, &planned),
    })?;
    // The outputs read the store image; it is no longer needed.
    drop(planned);
    Ok(manifest)
}

/// What [`build`] would write, its store image written to a temporary directory (its size
/// decides the initrd's) and removed.
pub(crate) fn dry_run(s: &Stages) -> Result<DryRun> {
    let cx = context(s)?;
    let tmp = tempfile::tempdir().map_err(|source| Error::Io {
        op: "creating a temporary directory for",
        path: std::env::temp_dir(),
        source,
    })?;
    let p = crate::pool(cx.threads)?.install(|| plan(s, &cx, &tmp.path().join(STORE_IMAGE)))?;
    let map = match s.format.volume {
        Volume::Netboot => p.initrd.clone(),
        _ => kexec::tar_map(&cx, &p)?,
    };
    Ok(DryRun::of_volume(s.format, &map))
}

/// The context (which refuses the options these formats cannot take) and the system check.
fn context<'a>(s: &Stages<'a>) -> Result<Context<'a>> {
    let out = &s.opts.output;
    if s.format.volume == Volume::Netboot {
        // The directory's files are written as they are: nothing to compress or keep raw.
        for (given, option) in [
            (out.compression.is_some(), "--compress"),
            (out.level.is_some(), "--level"),
            (out.keep_raw, "--keep-raw"),
        ] {
            if given {
                return Err(Error::OptionNotApplicable {
                    option,
                    format: s.format.name.clone(),
                    reason: "writes the kernel and the initrd as they are (a directory)",
                });
            }
        }
    }
    s.context()
}

/// The store image written, the initrd mapped.
fn plan(s: &Stages, cx: &Context, store_path: &std::path::Path) -> Result<Planned> {
    let spec = &s.inputs.bootspec;
    let entry = crate::inputs::boot_entry(cx.format, spec, None)?;
    let Some(closure_initrd) = &spec.initrd else {
        return Err(Error::Boot(imgbuild_boot::Error::MissingInitrd {
            toplevel: entry.toplevel,
        }));
    };
    let closure_initrd = HostFile::of(s.inputs, &closure_initrd.to_path_buf())?;
    let kernel = HostFile::of(
        s.inputs,
        &crate::inputs::kernel(cx.format, spec)?.to_path_buf(),
    )?;
    let kernel_name = imgbuild_boot::netboot_kernel_name(&entry)?.to_string();
    // Both scripts check the command line; the manifest shows it.
    imgbuild_boot::ipxe_script(&entry)?;
    s.reporter.phase("reading the closure", 0);
    let store = store_image::write(cx, s.inputs, store_path, s.reporter, s.cancel)?;
    s.reporter.phase("mapping", 0);
    let image = SourceFile::new(store.path.clone(), store.size);
    let initrd = initrd::map(&closure_initrd.source, &image, cx.time)?;
    let manifest = NetbootManifest {
        command_line: command_line(&entry),
        store_image_size: store.size,
        store_image_inodes: store.summary.inodes,
        closure_initrd_size: closure_initrd.source.size,
        initrd_size: initrd.len(),
        files: Vec::new(),
    };
    Ok(Planned {
        initrd,
        kernel,
        kernel_name,
        entry,
        manifest,
        _store: store,
    })
}

/// `init=<toplevel>/init` and the kernel parameters, as both scripts pass them.
fn command_line(entry: &imgbuild_boot::BootEntry) -> String {
    let mut parts = vec![format!("init={}/init", entry.toplevel)];
    parts.extend(entry.kernel_params.iter().cloned());
    parts.join(" ")
}

/// What the manifest says of the layout: no table, the "disk" is the file streamed (the
/// initrd, or the uncompressed tar).
fn layout(size: u64) -> Layout {
    Layout {
        table: "none".into(),
        disk_id: String::new(),
        disk_size: size,
        partitions: Vec::new(),
        iso: None,
    }
}

/// What building the trees did: nothing added, no dedup, the closure's release. No boot
/// loader files are written (the firmware's iPXE or the running kernel loads the system), so
/// nothing was assumed of the boot loader settings.
fn notes(cx: &Context, inputs: &Inputs) -> Result<TreeNotes> {
    let mut note = crate::bootloader::choose(cx.format, &inputs.bootspec)?.note;
    note.assumed = None;
    Ok(TreeNotes {
        added: Vec::new(),
        dedup: crate::DedupReport::default(),
        boot: note,
        verity: None,
        sysupdate: None,
    })
}

/// `dir/name` for an output's member.
fn member(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[cfg(test)]
mod tests {
    use crate::format::{Format, Volume};

    fn refusal(text: &str) -> String {
        imgbuild_units::error_chain(&Format::parse("x", text).unwrap_err())
    }

    #[test]
    fn formats_take_only_their_own_keys() {
        let netboot = Format::load("netboot").unwrap();
        assert_eq!(netboot.volume, Volume::Netboot);
        assert_eq!(netboot.extension, "netboot");
        let kexec = Format::load("kexec").unwrap();
        assert_eq!(
            (kexec.volume, kexec.container.kind.name()),
            (Volume::Kexec, "gzip")
        );
        assert_eq!(
            refusal("base = \"netboot\"\n[container]\ntype = \"qcow2\"\n"),
            "format `netboot`: netboot files are written raw, not as `qcow2`"
        );
        assert_eq!(
            refusal("base = \"kexec\"\n[container]\ntype = \"raw\"\n"),
            "format `kexec`: a kexec tarball is written as `gzip`, not as `raw`"
        );
        assert_eq!(
            refusal("base = \"netboot\"\ncompress = \"zstd\"\n"),
            "format `netboot`: netboot files are written raw: no `compress`"
        );
        assert_eq!(
            refusal("base = \"kexec\"\n[table]\ntype = \"gpt\"\nalign = \"1MiB\"\n"),
            "format `x`: volume `kexec` has no partition table: no `table`"
        );
        // A disk format still needs its boot loader.
        let raw = crate::format::BUILTIN[0].1;
        let cut = raw.find("[bootloader]").unwrap();
        assert_eq!(
            refusal(&raw[..cut]),
            "format `x`: missing field `bootloader`"
        );
    }
}
