//! The tar formats (`volume = "tar"`): a container's root file system, its LXD/Incus
//! metadata, or both, as one tar archive, no disk at all. The stages, in the order a disk's
//! run:
//!
//! 1. the system check (`system_check`, its `container` part): the toplevel is a container system;
//! 2. the tree ([`tree`]): what the format's `[tar] layout` asks for;
//! 3. the archive planned by `tar` (every member and the length fixed) and mapped: headers
//!    in memory, store files as ranges of the host files, never read into memory;
//! 4. the output, as a disk's: the map streamed once into the output kind (`xz`, or raw,
//!    optionally zstd), SHA-256, the manifest.
//!
//! The root file system is what nixpkgs' `make-system-tarball.nix` makes for
//! `lxc-container.nix` and `proxmox-lxc.nix`: the closure under `nix/store`,
//! `nix-path-registration` at the top (Nix's registration of the closure, which the
//! container loads with `nix-store --load-db` on its first boot and then deletes:
//! `boot.postBootCommands` of nixpkgs' container profile), `sbin/init` (a link to the
//! toplevel's `init`, the link NixOS's activation remakes), the format's empty directories
//! (`dev`, `proc`, `sys` for LXC), and for LXC `etc/os-release` (a link to the toplevel's).
//! Members are named without a leading `./` (`tar -c *`), every owner 0:0; store files keep
//! Nix's modes and mtime 1; what imgbuild makes has mode 0755/0644 and the build's time
//! (`SOURCE_DATE_EPOCH`; nixpkgs gives every member mtime 1).

mod tree;

use imgbuild_tar as tar;

use crate::format::TarOptions;
use crate::options::Context;
use crate::output::{self, Layout, TreeNotes};
use crate::{BootNote, DedupReport, DryRun, Error, Manifest, Result, Stages};

/// The archive planned and mapped.
struct Planned {
    map: imgbuild_diskmap::Map,
    members: usize,
}

/// Build the tarball: plan, map, then write it as a disk is written.
pub(crate) fn build(s: &Stages) -> Result<Manifest> {
    let cx = s.context()?;
    output::check(&cx, s.inputs)?;
    let p = plan(s, &cx)?;
    let layout = Layout {
        table: "none".into(),
        disk_id: String::new(),
        disk_size: p.map.len(),
        partitions: Vec::new(),
        iso: None,
    };
    let notes = TreeNotes {
        added: Vec::new(),
        dedup: DedupReport::default(),
        boot: BootNote {
            release: String::new(),
            release_from: "none",
            assumed: Some(format!(
                "a container boots no kernel: no boot files ({} tar members)",
                p.members
            )),
            entry: None,
            boot_counting: None,
            uki: None,
            secure_boot: None,
        },
        verity: None,
        sysupdate: None,
    };
    crate::pool(cx.threads)?
        .install(|| output::write(&cx, s.inputs, layout, &p.map, notes, s.reporter, s.cancel))
}

/// What [`build`] would write.
pub(crate) fn dry_run(s: &Stages) -> Result<DryRun> {
    let cx = s.context()?;
    let p = plan(s, &cx)?;
    Ok(DryRun::of_volume(s.format, &p.map))
}

/// The format's `[tar]` (validation made sure a tar format has one).
fn options<'a>(cx: &Context<'a>) -> &'a TarOptions {
    cx.format
        .tar
        .as_ref()
        .expect("validate() checked that a tar format has [tar]")
}

/// Stages 2 and 3: the tree, the archive, its map.
fn plan(s: &Stages, cx: &Context) -> Result<Planned> {
    s.reporter.phase("reading the closure", 0);
    let t = tree::build(cx, s.inputs, options(cx), s.cancel)?;
    s.reporter.phase("planning", 0);
    let opts = tar::Options {
        root: tar::RootEntry::Omitted,
        sparse: false,
    };
    let archive = tar::Archive::new(&t, opts).map_err(Error::from)?;
    s.reporter.phase("mapping", 0);
    let map = archive.map(&cx.format.name).map_err(Error::from)?;
    Ok(Planned {
        map,
        members: archive.members(),
    })
}
