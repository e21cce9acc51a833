//! The tar volume's tree: the root file system, the metadata, or both (`[tar] layout`).

use std::sync::atomic::AtomicBool;

use imgbuild_fstree::{Meta, Node, NodeId, Tree, ROOT};

use crate::format::{TarLayout, TarOptions};
use crate::options::Context;
use crate::trees::{dir_meta, file_meta, graft_closure};
use crate::{Error, Inputs, Result};

/// Where the unified image keeps the root file system.
const ROOTFS: &str = "rootfs";

/// The archive's tree, every generated member root-owned at the build's time.
pub(super) fn build(
    cx: &Context,
    inputs: &Inputs,
    opts: &TarOptions,
    cancel: &AtomicBool,
) -> Result<Tree> {
    let mut t = Tree::new(dir_meta(cx.time));
    if opts.layout != TarLayout::Rootfs {
        let yaml = metadata_yaml(cx, inputs)?;
        insert(
            &mut t,
            ROOT,
            "metadata.yaml",
            Node::bytes(file_meta(cx.time), yaml),
        )?;
        insert(&mut t, ROOT, "templates", Node::dir(dir_meta(cx.time)))?;
    }
    match opts.layout {
        TarLayout::Metadata => {}
        TarLayout::Rootfs => rootfs(&mut t, ROOT, cx, inputs, opts, cancel)?,
        TarLayout::Unified => {
            let dir = insert(&mut t, ROOT, ROOTFS, Node::dir(dir_meta(cx.time)))?;
            rootfs(&mut t, dir, cx, inputs, opts, cancel)?;
        }
    }
    Ok(t)
}

fn insert(t: &mut Tree, dir: NodeId, name: &str, node: Node) -> Result<NodeId> {
    t.insert(dir, name.as_bytes(), node)
        .map_err(|source| Error::Tree {
            what: name.into(),
            source,
        })
}

/// `dir/a/b/...`: each directory made when missing.
fn mkdir(t: &mut Tree, dir: NodeId, path: &str, meta: Meta) -> Result<NodeId> {
    let mut at = dir;
    for c in path.split('/') {
        at = match t.lookup_in(at, c.as_bytes()) {
            Some(n) => n,
            None => insert(t, at, c, Node::dir(meta))?,
        };
    }
    Ok(at)
}

/// The container's root file system under `dir`.
fn rootfs(
    t: &mut Tree,
    dir: NodeId,
    cx: &Context,
    inputs: &Inputs,
    opts: &TarOptions,
    cancel: &AtomicBool,
) -> Result<()> {
    let time = cx.time;
    let store = mkdir(t, dir, "nix/store", dir_meta(time))?;
    graft_closure(t, store, inputs, cancel)?;
    let reg = inputs.closure.registration_text().into_bytes();
    insert(
        t,
        dir,
        "nix-path-registration",
        Node::bytes(file_meta(time), reg),
    )?;
    let link = |target: String| Node::symlink(Meta::new(0o777, 0, 0, time), target);
    let sbin = mkdir(t, dir, "sbin", dir_meta(time))?;
    let init = inputs.toplevel.join("init");
    insert(t, sbin, "init", link(init.display().to_string()))?;
    if opts.os_release {
        let os_release = inputs.toplevel.join("etc/os-release");
        // Only when the closure has one (every NixOS toplevel does; a stand-in may not).
        if inputs.store.resolve_in_store(&os_release).is_ok() {
            let etc = mkdir(t, dir, "etc", dir_meta(time))?;
            insert(t, etc, "os-release", link(os_release.display().to_string()))?;
        }
    }
    for d in &opts.directories {
        mkdir(t, dir, d, dir_meta(time))?;
    }
    Ok(())
}

/// LXD/Incus' `metadata.yaml` as nixpkgs writes it (`lib.generators.toYAML`, which writes
/// JSON, a subset of YAML): `architecture` (the system's CPU), `creation_date` (the build's
/// time; nixpkgs writes 1), `properties` (`description`, `os`, `release`: from the
/// toplevel's imgbuild.json, `"org.imgbuild.v1".container`, which imgbuild's NixOS module
/// fills from `system.nixos`), `templates` (none).
fn metadata_yaml(cx: &Context, inputs: &Inputs) -> Result<Vec<u8>> {
    let container = inputs.bootspec.container.as_ref();
    let text = |key: &'static str| -> Result<String> {
        match container.and_then(|c| c.get(key)) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            None | Some(serde_json::Value::Null) => Err(Error::ContainerSettingMissing {
                key,
                format: cx.format.name.clone(),
            }),
            Some(_) => Err(Error::ContainerSettingInvalid {
                key,
                reason: "is not a string".into(),
            }),
        }
    };
    let system = &inputs.bootspec.system;
    let architecture = system.split('-').next().unwrap_or(system);
    let doc = serde_json::json!({
        "architecture": architecture,
        "creation_date": cx.time,
        "properties": {
            "description": text("description")?,
            "os": text("os")?,
            "release": text("release")?,
        },
        "templates": {},
    });
    Ok(serde_json::to_vec(&doc).expect("plain data"))
}
