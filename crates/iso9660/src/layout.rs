//! Planning: names, records, Rock Ridge entries, then every block.

use std::collections::HashMap;

use imgbuild_fstree::{Kind, NodeId, Tree, ROOT};

use crate::encode::{self, record_base, BLOCK, FLAG_DIR, FLAG_MULTI_EXTENT};
use crate::names::{IsoName, Namer};
use crate::susp::{self, Split};
use crate::{Error, Extent, Options, Result, MAX_DEPTH, MAX_DIRS, MAX_EXTENT, MAX_NAME};
use crate::{MAX_PATCHED_IMAGE, MAX_SYMLINK};

/// What a directory record points at.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// A directory (index in [`Plan::dirs`]).
    Dir(usize),
    /// Extent `part` of a file (index in [`Plan::files`]).
    File { file: usize, part: u32 },
    /// Nothing: an empty file, a symlink, a device, a FIFO or a socket.
    Nothing,
}

/// One directory record besides `.` and `..`.
#[derive(Debug)]
pub(crate) struct Rec {
    pub ident: Vec<u8>,
    /// The recording date: the node's mtime.
    pub mtime: i64,
    pub target: Target,
    pub su: Split,
    /// Continuation chunk positions: (block relative to the first continuation block, offset).
    pub ce: Vec<(u32, u32)>,
}

#[derive(Debug)]
pub(crate) struct Dir {
    pub node: NodeId,
    pub parent: usize,
    pub ident: Vec<u8>,
    /// `.`, `..`, then the entries in identifier order.
    pub recs: Vec<Rec>,
    pub blocks: u32,
    pub lba: u32,
}

#[derive(Debug)]
pub(crate) struct File {
    pub node: NodeId,
    pub path: String,
    pub size: u64,
    pub lba: u32,
}

/// Every block of the volume, decided.
#[derive(Debug)]
pub struct Plan {
    pub(crate) opts: Options,
    pub(crate) dirs: Vec<Dir>,
    pub(crate) files: Vec<File>,
    pub(crate) path_table_len: u32,
    pub(crate) path_table_l: u32,
    pub(crate) path_table_m: u32,
    pub(crate) catalog_lba: Option<u32>,
    /// File index of the catalog placeholder, of the BIOS and of the UEFI image.
    pub(crate) catalog_file: Option<usize>,
    pub(crate) bios_file: Option<usize>,
    pub(crate) efi_file: Option<usize>,
    pub(crate) ce_lba: u32,
    pub(crate) ce_blocks: u32,
    pub(crate) data_lba: u32,
    pub(crate) blocks: u32,
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check_id(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.len() > max || !value.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return Err(Error::BadIdentifier {
            field,
            value: value.to_owned(),
            max,
        });
    }
    Ok(())
}

struct Entry {
    iso: IsoName,
    name: Vec<u8>,
    node: NodeId,
}

/// Walks the tree breadth first: directories in path table order, records named and
/// sorted, files numbered in order of first appearance.
struct Walk<'t> {
    tree: &'t Tree,
    links: Vec<u32>,
    dirs: Vec<Dir>,
    dir_paths: Vec<Vec<u8>>,
    dir_depth: Vec<usize>,
    files: Vec<File>,
    file_of: HashMap<NodeId, usize>,
}

impl Walk<'_> {
    fn rr(&self, node: NodeId, name: Option<&[u8]>) -> Vec<Vec<u8>> {
        let n = self.tree.node(node);
        let nlink = match &n.kind {
            Kind::Dir(_) => {
                let subdirs = self
                    .tree
                    .children(node)
                    .filter(|(_, c)| self.tree.node(*c).is_dir());
                let count = u32::try_from(subdirs.count()).unwrap_or(u32::MAX);
                count.saturating_add(2)
            }
            _ => self.links.get(node as usize).copied().unwrap_or(1).max(1),
        };
        susp::rock_ridge(n, name, nlink)
    }

    /// The `.` and `..` records of directory `me` (node `node`) whose parent is `parent`;
    /// the root's `.` starts with `SP` and ends with `ER`.
    fn dot_records(&self, node: NodeId, me: usize, parent: usize) -> Vec<Rec> {
        let room = 254 - record_base(1);
        let root = me == 0;
        let mut dot_entries = Vec::new();
        if root {
            dot_entries.push(susp::sp());
        }
        dot_entries.extend(self.rr(node, None));
        if root {
            dot_entries.push(susp::er());
        }
        let parent_node = if root { node } else { self.dirs[parent].node };
        let dot = Rec {
            ident: vec![0],
            mtime: self.tree.node(node).meta.mtime,
            target: Target::Dir(me),
            su: susp::split(dot_entries, room),
            ce: Vec::new(),
        };
        let dotdot = Rec {
            ident: vec![1],
            mtime: self.tree.node(parent_node).meta.mtime,
            target: Target::Dir(parent),
            su: susp::split(self.rr(parent_node, None), room),
            ce: Vec::new(),
        };
        vec![dot, dotdot]
    }

    fn visit(&mut self, d: usize) -> Result<()> {
        let node = self.dirs[d].node;
        let mut namer = Namer::default();
        let mut entries = Vec::new();
        for (name, child) in self.tree.children(node) {
            let is_dir = self.tree.node(child).is_dir();
            entries.push(Entry {
                iso: namer.name(name, is_dir),
                name: name.to_vec(),
                node: child,
            });
        }
        entries.sort_by(|a, b| a.iso.cmp(&b.iso));
        for e in entries {
            let mut path = self.dir_paths[d].clone();
            path.push(b'/');
            path.extend_from_slice(&e.name);
            if e.name.len() > MAX_NAME {
                return Err(Error::NameTooLong {
                    path: show(&path),
                    len: e.name.len(),
                });
            }
            let ident = e.iso.identifier();
            let room = 254 - record_base(ident.len());
            let su = susp::split(self.rr(e.node, Some(&e.name)), room);
            let n = self.tree.node(e.node);
            let targets = match &n.kind {
                Kind::Dir(_) => vec![Target::Dir(self.add_dir(e.node, d, ident.clone(), path)?)],
                Kind::File(data) if data.size() > 0 => {
                    let size = data.size();
                    let next = self.files.len();
                    let file = *self.file_of.entry(e.node).or_insert(next);
                    if file == next {
                        self.files.push(File {
                            node: e.node,
                            path: show(&path),
                            size,
                            lba: 0,
                        });
                    }
                    let parts = u32::try_from(size.div_ceil(MAX_EXTENT))
                        .expect("at most 2^32 extents of 4 GiB");
                    (0..parts).map(|part| Target::File { file, part }).collect()
                }
                Kind::Symlink(t) if t.is_empty() || t.len() > MAX_SYMLINK => {
                    return Err(Error::BadSymlink {
                        path: show(&path),
                        len: t.len(),
                    })
                }
                _ => vec![Target::Nothing],
            };
            for target in targets {
                self.dirs[d].recs.push(Rec {
                    ident: ident.clone(),
                    mtime: n.meta.mtime,
                    target,
                    su: su.clone(),
                    ce: Vec::new(),
                });
            }
        }
        Ok(())
    }

    fn add_dir(
        &mut self,
        node: NodeId,
        parent: usize,
        ident: Vec<u8>,
        path: Vec<u8>,
    ) -> Result<usize> {
        let depth = self.dir_depth[parent] + 1;
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep {
                path: show(&path),
                depth,
            });
        }
        if self.dirs.len() >= MAX_DIRS {
            return Err(Error::TooManyDirs);
        }
        let recs = self.dot_records(node, self.dirs.len(), parent);
        self.dirs.push(Dir {
            node,
            parent,
            ident,
            recs,
            blocks: 0,
            lba: 0,
        });
        self.dir_paths.push(path);
        self.dir_depth.push(depth);
        Ok(self.dirs.len() - 1)
    }
}

/// Blocks a directory's records take: a record never crosses a block boundary.
fn dir_blocks(recs: &[Rec]) -> u64 {
    let mut blocks = 1u64;
    let mut at = 0usize;
    for r in recs {
        let len = record_len(r);
        if at + len > 2048 {
            blocks += 1;
            at = 0;
        }
        at += len;
    }
    blocks
}

pub(crate) fn record_len(r: &Rec) -> usize {
    let n = record_base(r.ident.len()) + r.su.inline_len();
    n + n % 2
}

fn find_file(
    plan_files: &HashMap<NodeId, usize>,
    tree: &Tree,
    path: &[u8],
    what: &'static str,
) -> Result<usize> {
    let not_a_file = || Error::NotAFile {
        what,
        path: show(path),
    };
    let node = tree.lookup(path).ok_or_else(not_a_file)?;
    match &tree.node(node).kind {
        Kind::File(_) => plan_files.get(&node).copied().ok_or_else(not_a_file),
        _ => Err(not_a_file()),
    }
}

fn check_options(opts: &Options) -> Result<()> {
    check_id("volume identifier", &opts.volume_id, 32)?;
    check_id("system identifier", &opts.system_id, 32)?;
    check_id("publisher identifier", &opts.publisher_id, 128)?;
    check_id("data preparer identifier", &opts.preparer_id, 128)?;
    check_id("application identifier", &opts.application_id, 128)
}

pub(crate) fn plan(tree: &Tree, opts: &Options) -> Result<Plan> {
    check_options(opts)?;
    let mut w = Walk {
        tree,
        links: tree.link_counts(),
        dirs: Vec::new(),
        dir_paths: vec![Vec::new()],
        dir_depth: vec![0],
        files: Vec::new(),
        file_of: HashMap::new(),
    };
    let root = Dir {
        node: ROOT,
        parent: 0,
        ident: vec![0],
        recs: Vec::new(),
        blocks: 0,
        lba: 0,
    };
    w.dirs.push(root);
    w.dirs[0].recs = w.dot_records(ROOT, 0, 0);
    let mut d = 0;
    while d < w.dirs.len() {
        w.visit(d)?;
        d += 1;
    }
    let (catalog_file, bios_file, efi_file) = boot_files(&w, opts)?;
    let mut p = Plan {
        opts: opts.clone(),
        dirs: w.dirs,
        files: w.files,
        path_table_len: 0,
        path_table_l: 0,
        path_table_m: 0,
        catalog_lba: None,
        catalog_file,
        bios_file,
        efi_file,
        ce_lba: 0,
        ce_blocks: 0,
        data_lba: 0,
        blocks: 0,
    };
    p.place()?;
    Ok(p)
}

type BootFiles = (Option<usize>, Option<usize>, Option<usize>);

fn boot_files(w: &Walk<'_>, opts: &Options) -> Result<BootFiles> {
    let catalog = match &opts.catalog {
        Some(path) => {
            let f = find_file(&w.file_of, w.tree, path, "boot catalog")?;
            if w.files[f].size != BLOCK {
                return Err(Error::CatalogSize {
                    path: show(path),
                    size: w.files[f].size,
                });
            }
            Some(f)
        }
        None => None,
    };
    let bios = match &opts.bios {
        Some(b) => {
            let f = find_file(&w.file_of, w.tree, &b.image, "BIOS boot image")?;
            let max = if b.boot_info_table {
                MAX_PATCHED_IMAGE
            } else {
                MAX_EXTENT
            };
            let size = w.files[f].size;
            if size > max || (b.boot_info_table && size < 64) {
                return Err(Error::BootImageTooBig {
                    what: "BIOS boot image",
                    path: show(&b.image),
                    size,
                    max,
                });
            }
            Some(f)
        }
        None => None,
    };
    let efi = match &opts.efi {
        Some(e) => {
            let f = find_file(&w.file_of, w.tree, &e.image, "UEFI boot image")?;
            if w.files[f].size > MAX_EXTENT {
                return Err(Error::BootImageTooBig {
                    what: "UEFI boot image",
                    path: show(&e.image),
                    size: w.files[f].size,
                    max: MAX_EXTENT,
                });
            }
            Some(f)
        }
        None => None,
    };
    Ok((catalog, bios, efi))
}

impl Plan {
    /// Gives every directory, continuation chunk and file its blocks.
    fn place(&mut self) -> Result<()> {
        let booting = self.opts.bios.is_some() || self.opts.efi.is_some();
        let mut next: u64 = 16 + 1 + u64::from(booting) + 1;
        self.path_table_len =
            u32::try_from(self.path_table(false).len()).map_err(|_| Error::TooManyDirs)?;
        let pt_blocks = u64::from(self.path_table_len).div_ceil(BLOCK);
        self.path_table_l = lba(next)?;
        next += pt_blocks;
        self.path_table_m = lba(next)?;
        next += pt_blocks;
        if booting && self.catalog_file.is_none() {
            self.catalog_lba = Some(lba(next)?);
            next += 1;
        }
        for d in &mut self.dirs {
            let blocks = dir_blocks(&d.recs);
            d.lba = lba(next)?;
            d.blocks = lba(blocks)?;
            next += blocks;
        }
        // Continuation chunks, packed into blocks in record order.
        self.ce_lba = lba(next)?;
        let (mut block, mut off) = (0u64, 0usize);
        let mut any = false;
        for d in &mut self.dirs {
            for r in &mut d.recs {
                let n = r.su.chunks.len();
                for (i, c) in r.su.chunks.iter().enumerate() {
                    let len = c.len() + if i + 1 < n { susp::CE_LEN } else { 0 };
                    if off + len > susp::BLOCK {
                        block += 1;
                        off = 0;
                    }
                    any = true;
                    r.ce.push((lba(block)?, u32::try_from(off).expect("within a block")));
                    off += len;
                }
            }
        }
        self.ce_blocks = if any { lba(block + 1)? } else { 0 };
        next += u64::from(self.ce_blocks);
        self.data_lba = lba(next)?;
        for f in &mut self.files {
            f.lba = lba(next)?;
            next += f.size.div_ceil(BLOCK);
        }
        self.blocks = lba(next)?;
        if let Some(f) = self.catalog_file {
            self.catalog_lba = Some(self.files[f].lba);
        }
        Ok(())
    }

    /// A path table: little-endian, or big-endian when `big`.
    pub(crate) fn path_table(&self, big: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for d in &self.dirs {
            let parent = u16::try_from(d.parent + 1).expect("at most MAX_DIRS directories");
            encode::path_record(&mut out, &d.ident, d.lba, parent, big);
        }
        out
    }

    /// Grows the volume so that at least `tail` bytes follow its last file, then up to a
    /// multiple of `align` bytes (a multiple of [`BLOCK`]; 0 for none): room the volume
    /// covers (its primary volume descriptor counts it) and the caller fills, e.g. an
    /// isohybrid image's backup GPT, as xorriso pads its volumes. The room is free space in
    /// the map.
    pub fn reserve_tail(&mut self, tail: u64, align: u64) -> Result<()> {
        let mut end = u64::from(self.blocks) * BLOCK + tail.next_multiple_of(BLOCK);
        if align > 0 {
            end = end.next_multiple_of(align.next_multiple_of(BLOCK));
        }
        self.blocks = lba(end / BLOCK)?;
        Ok(())
    }

    /// Blocks of the volume.
    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    /// Bytes of the volume.
    pub fn bytes(&self) -> u64 {
        u64::from(self.blocks) * BLOCK
    }

    /// Every stored file (a node named several times once, by its first path) with its
    /// extent, in block order: for partition entries that point into the volume.
    pub fn files(&self) -> impl Iterator<Item = (&str, Extent)> {
        self.files.iter().map(|f| {
            (
                f.path.as_str(),
                Extent {
                    lba: f.lba,
                    bytes: f.size,
                },
            )
        })
    }

    /// The extent of the file at `path` in the tree (`None` for a directory, a symlink, an
    /// empty file or a missing path).
    pub fn extent(&self, tree: &Tree, path: &[u8]) -> Option<Extent> {
        let node = tree.lookup(path)?;
        let f = self.files.iter().find(|f| f.node == node)?;
        Some(Extent {
            lba: f.lba,
            bytes: f.size,
        })
    }

    /// The boot catalog's block, when there are boot entries.
    pub fn catalog_lba(&self) -> Option<u32> {
        self.catalog_lba
    }

    /// The BIOS boot image's extent.
    pub fn bios_image(&self) -> Option<Extent> {
        self.bios_file.map(|f| self.file_extent(f))
    }

    /// The UEFI boot image's extent (an isohybrid GPT points its ESP entry here).
    pub fn efi_image(&self) -> Option<Extent> {
        self.efi_file.map(|f| self.file_extent(f))
    }

    fn file_extent(&self, f: usize) -> Extent {
        Extent {
            lba: self.files[f].lba,
            bytes: self.files[f].size,
        }
    }
}

fn lba(n: u64) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::TooBig { blocks: n })
}

impl Rec {
    /// The extent and flags this record gives.
    pub(crate) fn extent(&self, plan: &Plan) -> (u32, u32, u8) {
        match self.target {
            Target::Dir(i) => {
                let d = &plan.dirs[i];
                let len = u32::try_from(u64::from(d.blocks) * BLOCK).unwrap_or(u32::MAX);
                (d.lba, len, FLAG_DIR)
            }
            Target::File { file, part } => {
                let f = &plan.files[file];
                let start = u64::from(part) * MAX_EXTENT;
                let len = (f.size - start).min(MAX_EXTENT);
                let lba = f.lba + u32::try_from(start / BLOCK).expect("within the volume");
                let flags = if start + len < f.size {
                    FLAG_MULTI_EXTENT
                } else {
                    0
                };
                (lba, u32::try_from(len).expect("at most MAX_EXTENT"), flags)
            }
            Target::Nothing => (0, 0, 0),
        }
    }
}
