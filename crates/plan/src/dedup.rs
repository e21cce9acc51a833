//! Identical store files stored once, as `nix-store --optimise` leaves a store: regular files
//! with equal contents and executable bit become one node (one ext4 inode, its data stored
//! once, its link count raised). Files are grouped by the SHA-256 of their NAR
//! serialisation, the hash Nix itself links by, never by host hard links: the image does not
//! depend on whether the host's store was optimised.
//!
//! With [`Dedup::OptimiseStore`], symlinks are linked too and `/nix/store/.links/<hash>` names
//! every linked node under Nix's own name for it, so that `nix-store --optimise` (or
//! `auto-optimise-store`) on the booted system finds the store already optimised.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use imgbuild_fstree::{FileData, Kind, Meta, NodeId, Tree};
use rayon::prelude::*;
use serde::Serialize;

use crate::options::Dedup;
use crate::{Error, Result};

/// Most names one inode gets (ext4 allows 65000).
const MAX_NAMES: usize = 65000;

/// What deduplication did (reported in the manifest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DedupReport {
    /// Files that became another name of an identical file.
    pub files_linked: u64,
    /// Their apparent size: what `nix-store --optimise` reports as freed.
    pub bytes_saved: u64,
    /// 4 KiB blocks of file data no longer stored.
    pub blocks_saved: u64,
    /// Entries in `/nix/store/.links` (with `--optimise-store`).
    pub links: u64,
}

/// One name of a candidate under the store: `(directory, name, node)`.
struct Entry {
    dir: NodeId,
    name: Vec<u8>,
    node: NodeId,
}

/// Every regular file (and, for `with_symlinks`, symlink) below `store`, in depth-first name
/// order (ext4 numbers inodes in this order, so a group's first name keeps the lowest).
fn entries(tree: &Tree, store: NodeId, with_symlinks: bool) -> Vec<Entry> {
    let mut out = Vec::new();
    let kids = |d: NodeId| -> Vec<(Vec<u8>, NodeId)> {
        tree.children(d).map(|(n, c)| (n.to_vec(), c)).collect()
    };
    let mut stack = vec![(store, kids(store), 0usize)];
    while let Some((dir, list, i)) = stack.last_mut() {
        let Some((name, c)) = list.get(*i).cloned() else {
            stack.pop();
            continue;
        };
        *i += 1;
        let dir = *dir;
        match &tree.node(c).kind {
            Kind::Dir(_) => stack.push((c, kids(c), 0)),
            Kind::File(FileData::Host { .. }) => out.push(Entry { dir, name, node: c }),
            Kind::Symlink(_) if with_symlinks => out.push(Entry { dir, name, node: c }),
            _ => {}
        }
    }
    out
}

/// Where the candidate's bytes are on the host (for hashing).
fn host_path(
    tree: &Tree,
    node: NodeId,
    store_host: &std::path::Path,
    path_of: &[u8],
) -> std::path::PathBuf {
    match &tree.node(node).kind {
        Kind::File(FileData::Host { path, .. }) => path.clone(),
        _ => {
            use std::os::unix::ffi::OsStrExt;
            store_host.join(std::ffi::OsStr::from_bytes(path_of))
        }
    }
}

/// Every file's and symlink's path below `store`, by node (symlinks have no host path in
/// the tree).
fn relative_paths(tree: &Tree, store: NodeId) -> Vec<Vec<u8>> {
    let mut rel = vec![Vec::new(); tree.len()];
    let mut stack = vec![(store, Vec::new())];
    while let Some((dir, path)) = stack.pop() {
        for (name, c) in tree.children(dir) {
            let mut p = path.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            if tree.node(c).is_dir() {
                stack.push((c, p));
            } else {
                rel[c as usize] = p;
            }
        }
    }
    rel
}

/// The NAR hash of every entry of `todo`, in parallel.
fn nar_hashes(
    tree: &Tree,
    todo: &[&Entry],
    store_host: &std::path::Path,
    rel: &[Vec<u8>],
    cancel: &AtomicBool,
) -> Result<Vec<[u8; 32]>> {
    todo.par_iter()
        .map(|e| -> Result<[u8; 32]> {
            imgbuild_blockio::check_cancel(cancel).map_err(|_| Error::Interrupted)?;
            let p = host_path(
                tree,
                e.node,
                store_host,
                rel.get(e.node as usize).map_or(&[][..], |v| v),
            );
            let (h, _) = imgbuild_nix::nar_hash(&p).map_err(|source| Error::Nix {
                what: format!("hashing `{}` to store it once", p.display()),
                source,
            })?;
            Ok(h.0)
        })
        .collect()
}

/// Link identical store files below `store` (the tree's `/nix/store`; `store_host` is where it
/// lives on the host). Runs on rayon's current pool.
pub(crate) fn dedup(
    tree: &mut Tree,
    store: NodeId,
    store_host: &std::path::Path,
    mode: Dedup,
    time: i64,
    cancel: &AtomicBool,
) -> Result<DedupReport> {
    let mut report = DedupReport::default();
    if mode == Dedup::Off {
        return Ok(report);
    }
    let optimise = mode == Dedup::OptimiseStore;
    let all = entries(tree, store, optimise);
    // Relative paths below the store (for symlinks, which have no host path in the tree).
    let rel = if optimise {
        relative_paths(tree, store)
    } else {
        Vec::new()
    };

    // Only files that share their size and executable bit with another can be equal, unless
    // every file needs its hash for `.links`.
    let key = |e: &Entry| -> (u8, u64, bool) {
        let n = tree.node(e.node);
        match &n.kind {
            Kind::File(d) => (0, d.size(), n.meta.perm & 0o111 != 0),
            Kind::Symlink(t) => (1, t.len() as u64, false),
            _ => unreachable!("entries() gives files and symlinks"),
        }
    };
    let mut by_key: BTreeMap<(u8, u64, bool), usize> = BTreeMap::new();
    for e in &all {
        *by_key.entry(key(e)).or_default() += 1;
    }
    let todo: Vec<&Entry> = all
        .iter()
        .filter(|e| optimise || by_key[&key(e)] > 1)
        .collect();
    let hashes = nar_hashes(tree, &todo, store_host, &rel, cancel)?;

    // Groups in tree order: the first name keeps its node, the others become its names.
    let mut groups: BTreeMap<([u8; 32], bool), Vec<&Entry>> = BTreeMap::new();
    for (e, h) in todo.iter().zip(&hashes) {
        groups.entry((*h, key(e).2)).or_default().push(e);
    }
    let mut ordered: Vec<(&[u8; 32], Vec<&Entry>)> =
        groups.iter().map(|((h, _), v)| (h, v.clone())).collect();
    // Deterministic and independent of hashing order: by the first name's position.
    let pos: std::collections::HashMap<NodeId, usize> =
        all.iter().enumerate().map(|(i, e)| (e.node, i)).collect();
    ordered.sort_by_key(|(_, v)| pos[&v[0].node]);

    let links_dir = if optimise {
        let meta = Meta::new(0o755, 0, 0, time);
        Some(
            tree.insert(store, b".links", imgbuild_fstree::Node::dir(meta))
                .map_err(|source| Error::Tree {
                    what: "/nix/store/.links".into(),
                    source,
                })?,
        )
    } else {
        None
    };
    for (hash, names) in ordered {
        // With `.links`, one name of each inode goes there.
        let per_inode = MAX_NAMES - usize::from(optimise);
        for chunk in names.chunks(per_inode) {
            let keep = chunk[0].node;
            for e in &chunk[1..] {
                tree.relink(e.dir, &e.name, keep)
                    .map_err(|source| Error::Tree {
                        what: String::from_utf8_lossy(&e.name).into_owned(),
                        source,
                    })?;
                report.files_linked += 1;
                if let Kind::File(d) = &tree.node(keep).kind {
                    report.bytes_saved += d.size();
                    report.blocks_saved += d.size().div_ceil(4096);
                }
            }
            if let Some(links) = links_dir {
                // Only the first inode of a group can have Nix's name for the content.
                let name = imgbuild_nix::NarHash(*hash).to_nix32();
                if chunk.as_ptr() == names.as_ptr()
                    && tree.lookup_in(links, name.as_bytes()).is_none()
                {
                    tree.link(links, name.as_bytes(), keep)
                        .map_err(|source| Error::Tree {
                            what: format!("/nix/store/.links/{name}"),
                            source,
                        })?;
                    report.links += 1;
                }
            }
        }
    }
    Ok(report)
}
