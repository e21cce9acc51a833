//! The file trees of each partition: the root filesystem (store, Nix state, profiles, boot
//! files) and the boot partitions (ESP, Pi firmware), built as [`fstree::Tree`]s from the
//! closure and the bootloader crate's file lists.

use crate::bootloader::{self, BootNote, Choice};
use crate::dedup::DedupReport;
use crate::error::nix;
use crate::format::{self, Contents, Filesystem};
use crate::options::Context;
use crate::{add, Error, Inputs, Result};
use imgbuild_boot as boot;
use imgbuild_boot::{BootFile, Content};
use imgbuild_fstree::{
    self as fstree, FileData, Kind, Meta, Mtime, Node, NodeId, Owner, Perms, ScanOptions, Scanner,
    Tree,
};
use imgbuild_nix::{BootSpec, Closure, StateEntryKind, StoreRoot};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// nixbld's gid: NixOS has `/nix/store` as root:nixbld 1775.
pub const NIXBLD_GID: u32 = 30000;
/// Nix canonicalises every store file's mtime to 1.
pub const STORE_MTIME: i64 = 1;

pub(crate) fn dir_meta(time: i64) -> Meta {
    Meta::new(0o755, 0, 0, time)
}

pub(crate) fn file_meta(time: i64) -> Meta {
    Meta::new(0o644, 0, 0, time)
}

fn tree_err(what: String) -> impl FnOnce(fstree::Error) -> Error {
    move |source| Error::Tree { what, source }
}

/// Scanner for store contents: root-owned, Nix's canonical modes and mtime, no hard links
/// (a NAR has none, so any copy of the closure gives the same tree).
pub(crate) fn store_scanner() -> Scanner {
    Scanner::new(ScanOptions {
        owner: Owner::Fixed(0, 0),
        perms: Perms::NixStore,
        mtime: Mtime::Fixed(STORE_MTIME),
        hardlinks: false,
    })
}

/// Every partition's file tree, in the format's order, with the host files added to them.
pub(crate) struct Trees {
    pub trees: Vec<Tree>,
    pub added: Vec<add::Added>,
    pub dedup: DedupReport,
    /// The release and settings the boot files follow (for the manifest).
    pub boot: BootNote,
    /// GRUB's boot code, for a `grub` format.
    pub grub: Option<grub::GrubSetup>,
}

/// Build the tree of every partition: the root filesystem (store, Nix state, profile, boot
/// files for extlinux), the ESP (systemd-boot) or the Pi firmware partition, plus `--add`s.
/// `extra_params` go on every boot entry's command line (a verity store's `usrhash=`).
pub(crate) fn build(
    cx: &Context,
    inputs: &Inputs,
    extra_params: &[String],
    cancel: &AtomicBool,
) -> Result<Trees> {
    let (mut choice, mut entry) = choice_and_entry(cx, inputs)?;
    entry.kernel_params.extend(extra_params.iter().cloned());
    let mut trees = Vec::new();
    let mut added = Vec::new();
    let mut dedup = DedupReport::default();
    let mut grub = None;
    for p in &cx.format.partitions {
        let mut tree = match p.contents {
            // GRUB for BIOS and UEFI: the ESP is /boot, GRUB's directory and BOOTX64.EFI.
            Contents::Esp if cx.format.bootloader.kind == format::Bootloader::Grub => {
                let mut tree = Tree::new(dir_meta(cx.time));
                grub = grub::install(cx, inputs, &choice, &entry, &mut tree)?;
                tree
            }
            Contents::Esp => esp_tree(cx, inputs, &entry, extra_params, &mut choice)?,
            Contents::Firmware => firmware_tree(cx, inputs)?,
            // Raw sectors: GRUB's core image, placed by the disk plan; the store image and
            // its hash area, which `crate::verity` made; an empty B slot (zeros).
            Contents::BiosBoot | Contents::Store | Contents::Verity | Contents::Empty => {
                trees.push(Tree::new(dir_meta(cx.time)));
                continue;
            }
            Contents::Root => {
                let (mut tree, report) = root(cx, inputs, &entry, &choice, cancel)?;
                dedup = report;
                if cx.format.bootloader.kind == format::Bootloader::Grub
                    && !cx.format.bootloader.efi
                {
                    grub = grub::install(cx, inputs, &choice, &entry, &mut tree)?;
                }
                tree
            }
        };
        let target = match p.contents {
            Contents::Root => add::AddTarget::Root,
            _ => add::AddTarget::Boot,
        };
        let mine: Vec<&add::Add> = cx.opts.adds.iter().filter(|a| a.target == target).collect();
        let fat = p.filesystem != Filesystem::Ext4;
        added.extend(add::apply(&mut tree, &mine, cx.time, fat)?);
        trees.push(tree);
        imgbuild_blockio::check_cancel(cancel).map_err(|_| Error::Interrupted)?;
    }
    Ok(Trees {
        trees,
        added,
        dedup,
        boot: choice.note,
        grub,
    })
}

/// The boot loader settings and the generation's boot entry.
fn choice_and_entry(cx: &Context, inputs: &Inputs) -> Result<(Choice, boot::BootEntry)> {
    let choice = bootloader::choose(cx.format, &inputs.bootspec)?;
    let dtbs = crate::inputs::toplevel_dtbs(inputs)?;
    let mut entry = crate::inputs::boot_entry(cx.format, &inputs.bootspec, dtbs)?;
    entry.devicetree = devicetree(&inputs.bootspec, &choice)?;
    Ok((choice, entry))
}

/// The systemd-boot ESP of the system alone (an ISO's EFI boot image), with the boot loader
/// settings it follows.
pub(crate) fn esp_alone(cx: &Context, inputs: &Inputs) -> Result<(Tree, Choice)> {
    let (mut choice, entry) = choice_and_entry(cx, inputs)?;
    let tree = esp_tree(cx, inputs, &entry, &[], &mut choice)?;
    Ok((tree, choice))
}

/// The bootspec's `org.nixos.systemd-boot.sortKey` (`None`: the builder's default, `nixos`).
fn sort_key_of(spec: &BootSpec) -> Option<String> {
    spec.extensions
        .get("org.nixos.systemd-boot")
        .and_then(|v| v.get("sortKey"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// The bootspec's `org.nixos.systemd-boot.devicetree` (what the systemd-boot builder copies
/// and names in the entry), unless the module recorded `installDeviceTree = false`.
fn devicetree(spec: &BootSpec, choice: &Choice) -> Result<Option<String>> {
    if choice.install_device_tree == Some(false) {
        return Ok(None);
    }
    match spec
        .extensions
        .get("org.nixos.systemd-boot")
        .and_then(|v| v.get("devicetree"))
    {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::BadBootSpec {
            toplevel: spec.toplevel.to_string(),
            reason: "\"org.nixos.systemd-boot\".devicetree is not a string".into(),
        }),
    }
}

/// Everything the root filesystem holds besides the boot loader's files.
pub(crate) struct RootExtras {
    /// Nix database bytes (`db.sqlite`), when written at build time.
    pub db: Option<Arc<[u8]>>,
    /// closureInfo registration text for `/nix-path-registration`.
    pub registration: Option<String>,
    /// Mount points of the other partitions (`/boot`, `/boot/firmware`).
    pub mount_points: Vec<String>,
    /// Whether `/nix/store` holds the closure (`[root] store`); else it is an empty mount
    /// point for the store partition.
    pub store: bool,
}

/// Every store path of the closure grafted under `dir` by its base name, with Nix's canonical
/// owners, modes and mtime (the root filesystem's `/nix/store`, the store image's top).
pub(crate) fn graft_closure(
    tree: &mut Tree,
    dir: NodeId,
    inputs: &Inputs,
    cancel: &AtomicBool,
) -> Result<()> {
    let mut scanner = store_scanner();
    for info in &inputs.closure.paths {
        imgbuild_blockio::check_cancel(cancel).map_err(|_| Error::Interrupted)?;
        let host = inputs.store.host_path(&info.path);
        if let Err(source) = std::fs::symlink_metadata(&host) {
            return Err(Error::StorePath {
                path: info.path.to_string(),
                host,
                source,
            });
        }
        scanner
            .graft(tree, dir, info.path.base_name().as_bytes(), &host)
            .map_err(tree_err(info.path.to_string()))?;
    }
    Ok(())
}

/// The root filesystem's tree: `/nix/store` with the closure, Nix's state directory with the
/// database, the system profile generation 1 and its GC root, `/etc/NIXOS`, mount points.
pub(crate) fn root_tree(
    inputs: &Inputs,
    extras: &RootExtras,
    time: i64,
    cancel: &AtomicBool,
) -> Result<Tree> {
    let mut tree = Tree::new(dir_meta(time));
    let store = tree
        .mkdir_p(b"/nix/store", dir_meta(time))
        .map_err(tree_err("/nix/store".into()))?;
    tree.node_mut(store).meta = Meta::new(0o1775, 0, NIXBLD_GID, time);
    if extras.store {
        graft_closure(&mut tree, store, inputs, cancel)?;
    }

    // Nix's state directory, as LocalStore creates it.
    for e in imgbuild_nix::nix_state_files() {
        let path = format!("/{}", e.path);
        let meta = Meta::new(e.mode as u16, 0, 0, time);
        let node = match e.kind {
            StateEntryKind::Dir => {
                tree.mkdir_p(path.as_bytes(), meta)
                    .map_err(tree_err(path.clone()))?;
                continue;
            }
            StateEntryKind::File { contents } => Node::bytes(meta, contents),
            StateEntryKind::Symlink { target } => {
                Node::symlink(Meta::new(0o777, 0, 0, time), target)
            }
        };
        tree.insert_path(path.as_bytes(), node)
            .map_err(tree_err(path.clone()))?;
    }
    if let Some(db) = &extras.db {
        let path = format!("/{}", imgbuild_nix::DB_PATH);
        tree.insert_path(path.as_bytes(), Node::bytes(file_meta(time), db.clone()))
            .map_err(tree_err(path))?;
    }
    // The system profile: `system -> system-1-link -> <toplevel>`, as `nix-env --set` leaves
    // it; `gcroots/profiles` (from nix_state_files) makes it a GC root.
    let link = Meta::new(0o777, 0, 0, time);
    for (path, target) in [
        ("/nix/var/nix/profiles/system", "system-1-link".to_string()),
        (
            "/nix/var/nix/profiles/system-1-link",
            inputs.closure.toplevel.to_string(),
        ),
    ] {
        tree.insert_path(path.as_bytes(), Node::symlink(link, target))
            .map_err(tree_err(path.into()))?;
    }
    let etc = tree
        .mkdir_p(b"/etc", dir_meta(time))
        .map_err(tree_err("/etc".into()))?;
    tree.insert(etc, b"NIXOS", Node::bytes(file_meta(time), &b""[..]))
        .map_err(tree_err("/etc/NIXOS".into()))?;
    if let Some(reg) = &extras.registration {
        tree.insert_path(
            b"/nix-path-registration",
            Node::bytes(file_meta(time), reg.as_bytes()),
        )
        .map_err(tree_err("/nix-path-registration".into()))?;
    }
    for mp in &extras.mount_points {
        if mp != "/" {
            tree.mkdir_p(mp.as_bytes(), dir_meta(time))
                .map_err(tree_err(mp.clone()))?;
        }
    }
    Ok(tree)
}

/// Add the boot loader's files under `base` (a directory path in `tree`, e.g. `/` of an ESP or
/// `/boot` of a root filesystem). Store files are resolved inside the store, never outside.
pub(crate) fn add_boot_files(
    tree: &mut Tree,
    base: &str,
    files: &[BootFile],
    store: &StoreRoot,
    time: i64,
) -> Result<()> {
    tree.mkdir_p(base.as_bytes(), dir_meta(time))
        .map_err(tree_err(base.into()))?;
    for f in files {
        let full = join(base, &f.path);
        let (parent, name) = fstree::split_parent(full.as_bytes());
        let parent = String::from_utf8_lossy(parent).into_owned();
        let dir = tree
            .mkdir_p(parent.as_bytes(), dir_meta(time))
            .map_err(tree_err(parent.clone()))?;
        match &f.content {
            Content::Dir => {
                tree.mkdir_p(full.as_bytes(), dir_meta(time))
                    .map_err(tree_err(full.clone()))?;
            }
            Content::Text(bytes) => {
                tree.insert(dir, name, Node::bytes(file_meta(time), bytes.clone()))
                    .map_err(tree_err(full.clone()))?;
            }
            Content::StoreFile(logical) => {
                let host = resolve(store, logical)?;
                let node = host_file_node(&host, time)?;
                tree.insert(dir, name, node)
                    .map_err(tree_err(full.clone()))?;
            }
            Content::StoreTree(logical) => {
                let host = resolve(store, logical)?;
                let cx = Resolve {
                    store,
                    base: None,
                    time,
                };
                copy_resolved(&cx, tree, dir, name, &host, 0)?;
            }
        }
    }
    Ok(())
}

fn join(base: &str, rel: &str) -> String {
    let b = base.trim_end_matches('/');
    format!("{b}/{}", rel.trim_start_matches('/'))
}

pub(crate) fn resolve(store: &StoreRoot, logical: &Path) -> Result<PathBuf> {
    store
        .resolve_in_store(logical)
        .map_err(|source| Error::Nix {
            what: format!("resolving `{}`", logical.display()),
            source,
        })
}

/// A copy of a store file, with the mode `cp` gives a copy of it: 0444, or 0555 when
/// executable (store files are never writable).
fn host_file_node(host: &Path, time: i64) -> Result<Node> {
    let md = std::fs::metadata(host).map_err(|source| Error::Io {
        op: "reading metadata of",
        path: host.to_path_buf(),
        source,
    })?;
    if !md.is_file() {
        return Err(Error::NotAFile {
            path: host.to_path_buf(),
        });
    }
    let perm = if md.mode() & 0o111 != 0 { 0o555 } else { 0o444 };
    Ok(Node::file(
        Meta::new(perm, 0, 0, time),
        FileData::Host {
            path: host.to_path_buf(),
            size: md.len(),
        },
    ))
}

const MAX_DEPTH: usize = 64;

/// Where [`copy_resolved`] may follow symlinks to, and the time copies get.
#[derive(Clone, Copy)]
pub(crate) struct Resolve<'a> {
    pub store: &'a StoreRoot,
    /// The canonical path of a directory given on the command line (its own links may point
    /// inside it).
    pub base: Option<&'a Path>,
    pub time: i64,
}

/// Copy a host file or directory into `tree` like `cp -rL` confined to the store: symlinks are
/// dereferenced, but only to targets inside the store (or inside `base`, the canonical path of
/// a directory given on the command line). Used for trees that end up on FAT, which has no
/// symlinks, and for the extlinux `dtbs` copy.
pub(crate) fn copy_resolved(
    cx: &Resolve,
    tree: &mut Tree,
    dir: NodeId,
    name: &[u8],
    host: &Path,
    depth: usize,
) -> Result<()> {
    let Resolve { store, base, time } = *cx;
    if depth > MAX_DEPTH {
        return Err(Error::TooDeep {
            path: host.to_path_buf(),
        });
    }
    let lmd = std::fs::symlink_metadata(host).map_err(|source| Error::Io {
        op: "reading metadata of",
        path: host.to_path_buf(),
        source,
    })?;
    let real = if lmd.file_type().is_symlink() {
        let target = std::fs::read_link(host).map_err(|source| Error::Io {
            op: "reading symlink",
            path: host.to_path_buf(),
            source,
        })?;
        let logical = if target.is_absolute() {
            target.clone()
        } else {
            host.parent().unwrap_or(Path::new("/")).join(&target)
        };
        let inside_base = base.and_then(|b| {
            std::fs::canonicalize(&logical)
                .ok()
                .filter(|real| real.starts_with(b))
        });
        // Absolute targets name logical store paths; relative ones were made absolute above
        // against the host path, which resolve_in_store maps back if it lies in the store.
        // Path operations, not strings: a name that is not UTF-8 keeps its bytes.
        let mapped = match logical.strip_prefix(store.root()) {
            Ok(rest) if store.root() != Path::new("/") => Path::new("/").join(rest),
            _ => logical.clone(),
        };
        match inside_base {
            Some(real) => real,
            None => store
                .resolve_in_store(&mapped)
                .map_err(|source| Error::Nix {
                    what: format!(
                        "symlink `{}` -> `{}`{}",
                        host.display(),
                        target.display(),
                        base.map(|b| format!(" (neither in `{}` nor in the store)", b.display()))
                            .unwrap_or_default()
                    ),
                    source,
                })?,
        }
    } else {
        host.to_path_buf()
    };
    let md = std::fs::metadata(&real).map_err(|source| Error::Io {
        op: "reading metadata of",
        path: real.clone(),
        source,
    })?;
    if md.is_dir() {
        let id = tree
            .insert(dir, name, Node::dir(Meta::new(0o755, 0, 0, time)))
            .map_err(tree_err(real.display().to_string()))?;
        let mut names: Vec<_> = std::fs::read_dir(&real)
            .map_err(|source| Error::Io {
                op: "reading directory",
                path: real.clone(),
                source,
            })?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|source| Error::Io {
                op: "reading directory",
                path: real.clone(),
                source,
            })?;
        names.sort();
        for n in names {
            use std::os::unix::ffi::OsStrExt;
            copy_resolved(cx, tree, id, n.as_bytes(), &real.join(&n), depth + 1)?;
        }
    } else if md.is_file() {
        let node = host_file_node(&real, time)?;
        tree.insert(dir, name, node)
            .map_err(tree_err(real.display().to_string()))?;
    } else {
        return Err(Error::NotAFile { path: real });
    }
    Ok(())
}

/// The root filesystem's tree, boot files included for extlinux formats, identical store files
/// stored once unless dedup is off.
fn root(
    cx: &Context,
    inputs: &Inputs,
    entry: &boot::BootEntry,
    choice: &Choice,
    cancel: &AtomicBool,
) -> Result<(Tree, DedupReport)> {
    let (format, time) = (cx.format, cx.time);
    let db = if format.root.database {
        Some(write_db_bytes(&inputs.closure, time)?)
    } else {
        None
    };
    let registration = cx
        .nix_path_registration
        .then(|| inputs.closure.registration_text());
    let extras = RootExtras {
        db,
        registration,
        mount_points: format
            .partitions
            .iter()
            .filter(|p| !p.mount_point.is_empty())
            .map(|p| p.mount_point.clone())
            .collect(),
        store: format.root.store,
    };
    let mut tree = root_tree(inputs, &extras, time, cancel)?;
    let store = tree
        .lookup(b"/nix/store")
        .expect("root_tree makes /nix/store");
    let report = crate::dedup::dedup(
        &mut tree,
        store,
        &inputs.store.root().join("nix/store"),
        cx.opts.dedup,
        time,
        cancel,
    )?;
    if format.bootloader.kind == format::Bootloader::Extlinux {
        let timeout = choice
            .timeout
            .map(|t| i32::try_from(t).map_err(|_| Error::TimeoutOutOfRange { seconds: t }))
            .transpose()?;
        let o = boot::ExtlinuxOptions {
            timeout,
            dtb_name: choice.device_tree_name.clone(),
            use_generation_device_tree: choice.use_generation_device_tree,
            style: choice.facts.extlinux,
        };
        let files = boot::extlinux_boot(entry, &o)?;
        add_boot_files(&mut tree, "/boot", &files, &inputs.store, time)?;
    }
    Ok((tree, report))
}

fn write_db_bytes(closure: &Closure, time: i64) -> Result<Arc<[u8]>> {
    let dir = tempfile::tempdir().map_err(|source| Error::Io {
        op: "creating a temporary directory in",
        path: std::env::temp_dir(),
        source,
    })?;
    let p = dir.path().join("db.sqlite");
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

mod boot_parts;
pub(crate) mod grub;
pub(crate) mod uki;
use boot_parts::{esp_tree, firmware_tree};
