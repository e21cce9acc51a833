//! Where an image's bytes go (`imgbuild inspect --sizes`): per store path of the closure,
//! per top-level directory outside it, per file of the other partitions, and the filesystem
//! metadata, all in bytes actually allocated (as `du` counts them), each inode counted once.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::bytes::to_usize;
use crate::fs::Allocation;
use crate::{Image, Result};

/// Largest directories or files kept per store path (for the treemap).
const TOP_PER_PATH: usize = 8;
/// Files listed per non-root partition.
const MAX_FILES: usize = 1000;

/// What fills an image.
#[derive(Clone, Debug, Serialize)]
pub struct Sizes {
    /// The image file, as given.
    pub image: String,
    /// The disk's size in bytes.
    pub disk_size: u64,
    /// Where the list of the closure's store paths was read (the Nix database, nixpkgs'
    /// registration file, or, when neither is there, the entries of `/nix/store`).
    pub closure_from: String,
    /// Partition number of the root filesystem, or of an appliance's store partition: the
    /// one holding the store paths (0: none found).
    pub root_partition: u32,
    /// Store paths of the closure, largest first.
    pub store_paths: Vec<StorePathSize>,
    /// Bytes of the closure, every inode once.
    pub closure_total: u64,
    /// Bytes in inodes that more than one store path links (deduplicated files), counted
    /// once in `closure_total` and in each sharing path's `bytes`.
    pub shared: u64,
    /// Every partition: size, use and what fills it.
    pub partitions: Vec<PartitionUse>,
    /// What could not be read (a closure list that failed, before the next was tried).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One store path.
#[derive(Clone, Debug, Serialize)]
pub struct StorePathSize {
    /// The store path.
    pub path: String,
    /// The name without the hash (`hello-2.12.1`).
    pub name: String,
    /// Bytes it holds (`du -s` of the path alone).
    pub bytes: u64,
    /// Bytes no other store path links: what dropping it from the closure saves.
    pub exclusive: u64,
    /// Files, directories and links.
    pub entries: u64,
    /// Its largest entries one level down, largest first.
    pub top: Vec<Named>,
}

/// A name and a size.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Named {
    /// What it is: a directory, a store path, a category (`free`, `/nix/store (not in the closure)`).
    pub name: String,
    /// Its bytes, allocated (as `du` counts).
    pub bytes: u64,
}

/// One partition's filesystem, and what fills it.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionUse {
    /// The partition number.
    pub number: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The partition's label, if any.
    pub label: Option<String>,
    /// The filesystem kind (`ext4`, `vfat`, ...).
    pub kind: String,
    /// The filesystem's size in bytes.
    pub size: u64,
    /// Bytes in use, from the filesystem's own counters: ext4 blocks (metadata included),
    /// FAT data clusters (as `fsck.fat` counts; the reserved sectors and FATs are outside).
    pub used: u64,
    /// Bytes free for new data.
    pub free: u64,
    /// What the used bytes are, largest first; the last line, `metadata`, is what no file
    /// holds (ext4: superblocks, bitmaps, inode tables, the journal; FAT: directories).
    pub parts: Vec<Named>,
    /// Files outside `/nix/store`, largest first (at most 1000): the boot partition's
    /// contents, `/boot` of an extlinux root.
    pub files: Vec<Named>,
}

impl Image {
    /// Measures what fills the image: walks every readable filesystem once.
    pub fn sizes(&self) -> Result<Sizes> {
        // Any image is measured; one without a NixOS root has no closure.
        let root = self.root_filesystem().ok();
        let mut warnings = Vec::new();
        let (closure_from, closure) = match root {
            Some(fs) => crate::nixos::closure(fs, self.temp_dir.as_deref(), &mut warnings)?,
            None => ("nothing: no root filesystem".into(), Vec::new()),
        };
        let mut sizes = Sizes {
            image: self.path.display().to_string(),
            disk_size: self.disk_size(),
            closure_from,
            root_partition: 0,
            store_paths: Vec::new(),
            closure_total: 0,
            shared: 0,
            partitions: Vec::new(),
            warnings: Vec::new(),
        };
        // The partition whose walk meets the store paths: an appliance's store partition
        // (its tree holds `nix/store/…`), else the root's.
        let store_part = root.and_then(|r| self.root_partitions(r).last().copied());
        for part in &self.parts {
            let (Some(fs), Some(info)) = (&part.fs, &part.info) else {
                continue;
            };
            let is_root = store_part == Some(part.partition.entry.number);
            let mut walk = Walk::new(if is_root { &closure[..] } else { &[] });
            fs.allocations(b"/", |a| walk.visit(a))?;
            let used = info.used;
            let mut parts = walk.categories();
            let counted: u64 = parts.iter().map(|p| p.bytes).sum();
            parts.push(Named {
                name: "metadata".into(),
                bytes: used.saturating_sub(counted),
            });
            if is_root {
                sizes.root_partition = part.partition.entry.number;
                let (paths, total, shared) = walk.store_paths();
                sizes.store_paths = paths;
                sizes.closure_total = total;
                sizes.shared = shared;
            }
            walk.files
                .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
            sizes.partitions.push(PartitionUse {
                number: part.partition.entry.number,
                label: info.summary.label.clone(),
                kind: info.summary.kind.clone(),
                size: info.summary.size,
                used,
                free: info.free,
                parts,
                files: walk.files,
            });
        }
        sizes.warnings = warnings;
        Ok(sizes)
    }
}

/// `hello-2.12.1` from `/nix/store/<32 chars>-hello-2.12.1`.
pub fn store_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.split_once('-') {
        Some((hash, name)) if hash.len() == 32 => name,
        _ => base,
    }
}

/// Who links an inode, and its size.
struct Inode {
    bytes: u64,
    /// Store paths (indices) linking it, in walk order, each once.
    paths: Vec<u32>,
    /// The category of the first link.
    category: u32,
}

/// One filesystem's walk.
struct Walk {
    /// Closure store path -> index.
    closure: HashMap<Vec<u8>, u32>,
    names: Vec<Vec<u8>>,
    inodes: HashMap<u64, Inode>,
    categories: Vec<String>,
    category_ids: HashMap<String, u32>,
    /// Per store path: entries visited, and bytes by entry one level down.
    entries: Vec<u64>,
    top: Vec<HashMap<Vec<u8>, u64>>,
    files: Vec<Named>,
}

const STORE: &[u8] = b"/nix/store/";

impl Walk {
    fn new(closure: &[Vec<u8>]) -> Self {
        let names: Vec<Vec<u8>> = closure
            .iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        Walk {
            closure: (0u32..).zip(&names).map(|(i, n)| (n.clone(), i)).collect(),
            entries: vec![0; names.len()],
            top: vec![HashMap::new(); names.len()],
            names,
            inodes: HashMap::new(),
            categories: Vec::new(),
            category_ids: HashMap::new(),
            files: Vec::new(),
        }
    }

    /// The category of a path outside the closure: the store's other entries, `/nix/X`,
    /// or the top-level directory; the directories above them count as `/`.
    fn category(&mut self, path: &[u8]) -> u32 {
        let comps: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        let name = match comps.as_slice() {
            [] | [b"nix"] | [b"nix", b"store"] => "/".to_string(),
            [b"nix", b"store", n, ..] if *n == b".links" => "/nix/store/.links".to_string(),
            [b"nix", b"store", ..] => "/nix/store (not in the closure)".to_string(),
            [b"nix", x, ..] => format!("/nix/{}", String::from_utf8_lossy(x)),
            [x, ..] => format!("/{}", String::from_utf8_lossy(x)),
        };
        if let Some(&i) = self.category_ids.get(&name) {
            return i;
        }
        let i = u32::try_from(self.categories.len()).unwrap_or(u32::MAX);
        self.categories.push(name.clone());
        self.category_ids.insert(name, i);
        i
    }

    /// The closure store path `path` lies in, and its entry one level down.
    fn store_path<'p>(&self, path: &'p [u8]) -> Option<(u32, Option<&'p [u8]>)> {
        let rest = path.strip_prefix(STORE)?;
        let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
        let idx = *self.closure.get(&path[..STORE.len() + end])?;
        let below = rest.get(end + 1..).filter(|r| !r.is_empty()).map(|r| {
            let e = r.iter().position(|&b| b == b'/').unwrap_or(r.len());
            &r[..e]
        });
        Some((idx, below))
    }

    fn visit(&mut self, a: &Allocation<'_>) {
        let owner = self.store_path(a.path);
        let category = match owner {
            Some(_) => u32::MAX,
            None => self.category(a.path),
        };
        if owner.is_none() && !a.dir && !a.path.starts_with(STORE) && self.files.len() < MAX_FILES {
            self.files.push(Named {
                name: String::from_utf8_lossy(a.path).into_owned(),
                bytes: a.bytes,
            });
        }
        let inode = self.inodes.entry(a.id).or_insert(Inode {
            bytes: a.bytes,
            paths: Vec::new(),
            category,
        });
        let Some((idx, below)) = owner else {
            return;
        };
        let i = to_usize(u64::from(idx));
        self.entries[i] += 1;
        if inode.paths.contains(&idx) {
            return;
        }
        inode.paths.push(idx);
        if inode.category != u32::MAX && inode.paths.len() == 1 {
            // First met outside the closure (e.g. in .links): the closure owns it.
            inode.category = u32::MAX;
        }
        if let Some(b) = below {
            *self.top[i].entry(b.to_vec()).or_default() += inode.bytes;
        }
    }

    /// Bytes per category (the closure as one line), largest first.
    fn categories(&self) -> Vec<Named> {
        let mut sums = vec![0u64; self.categories.len()];
        let mut closure = 0u64;
        for n in self.inodes.values() {
            match sums.get_mut(to_usize(u64::from(n.category))) {
                Some(s) => *s += n.bytes,
                None => closure += n.bytes,
            }
        }
        let mut out: Vec<Named> = self
            .categories
            .iter()
            .zip(sums)
            .map(|(name, bytes)| Named {
                name: name.clone(),
                bytes,
            })
            .collect();
        if !self.names.is_empty() {
            out.push(Named {
                name: "closure".into(),
                bytes: closure,
            });
        }
        out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        out
    }

    /// Per store path sizes (largest first), the closure total and the shared bytes.
    fn store_paths(&mut self) -> (Vec<StorePathSize>, u64, u64) {
        let mut bytes = vec![0u64; self.names.len()];
        let mut exclusive = vec![0u64; self.names.len()];
        let (mut total, mut shared) = (0u64, 0u64);
        for n in self.inodes.values().filter(|n| !n.paths.is_empty()) {
            total += n.bytes;
            if n.paths.len() > 1 {
                shared += n.bytes;
            } else {
                exclusive[to_usize(u64::from(n.paths[0]))] += n.bytes;
            }
            for &p in &n.paths {
                bytes[to_usize(u64::from(p))] += n.bytes;
            }
        }
        let mut out: Vec<StorePathSize> = (0..self.names.len())
            .filter(|&i| self.entries[i] > 0)
            .map(|i| {
                let path = String::from_utf8_lossy(&self.names[i]).into_owned();
                let mut top: Vec<Named> = std::mem::take(&mut self.top[i])
                    .into_iter()
                    .map(|(n, bytes)| Named {
                        name: String::from_utf8_lossy(&n).into_owned(),
                        bytes,
                    })
                    .collect();
                top.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
                top.truncate(TOP_PER_PATH);
                StorePathSize {
                    name: store_name(&path).to_string(),
                    path,
                    bytes: bytes[i],
                    exclusive: exclusive[i],
                    entries: self.entries[i],
                    top,
                }
            })
            .collect();
        out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
        (out, total, shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_hash() {
        assert_eq!(
            store_name("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12.1"),
            "hello-2.12.1"
        );
        assert_eq!(store_name("/nix/store/short-name"), "short-name");
    }

    fn alloc(path: &[u8], id: u64, bytes: u64, dir: bool) -> Allocation<'_> {
        Allocation {
            path,
            depth: 0,
            id,
            bytes,
            dir,
        }
    }

    #[test]
    fn shared_inodes_count_once_in_the_total_and_fully_in_each_path() {
        let a = b"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a".to_vec();
        let b = b"/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b".to_vec();
        let mut w = Walk::new(&[a.clone(), b.clone()]);
        w.visit(&alloc(b"/", 2, 4096, true));
        w.visit(&alloc(&a, 10, 4096, true));
        w.visit(&alloc(&[&a[..], b"/lib"].concat(), 11, 8192, false));
        w.visit(&alloc(&b, 20, 4096, true));
        w.visit(&alloc(&[&b[..], b"/lib"].concat(), 11, 8192, false));
        w.visit(&alloc(&[&b[..], b"/own"].concat(), 21, 4096, false));
        w.visit(&alloc(b"/nix/store/.links/xyz", 11, 8192, false));
        w.visit(&alloc(b"/etc/x", 30, 4096, false));
        let cats = w.categories();
        let (paths, total, shared) = w.store_paths();
        assert_eq!((total, shared), (4096 + 8192 + 4096 + 4096, 8192));
        assert_eq!(paths[0].name, "b");
        assert_eq!((paths[0].bytes, paths[0].exclusive), (16384, 8192));
        assert_eq!((paths[1].bytes, paths[1].exclusive), (12288, 4096));
        assert_eq!(paths[0].top[0].name, "lib");
        let get = |n: &str| cats.iter().find(|c| c.name == n).map(|c| c.bytes);
        assert_eq!(get("closure"), Some(total));
        assert_eq!(get("/etc"), Some(4096));
        assert_eq!(get("/"), Some(4096));
        assert_eq!(w.files.len(), 1);
    }
}
