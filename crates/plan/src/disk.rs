//! Stages 3 and 4: the filesystems planned in full, the partitions placed, the partition
//! table encoded ([`Plan::new`]), and the whole disk as one extent map ([`Plan::map`]).

use std::sync::atomic::AtomicBool;

use std::sync::Arc;

use imgbuild_diskmap::{Map, MapBuilder, SourceFile};
use imgbuild_ext4 as ext4;
use imgbuild_fat as fat;
use imgbuild_fstree::Tree;
use imgbuild_partition as partition;

use crate::format::{Contents, Filesystem, TableType};
use crate::layout::{self, Layout, PartitionLayout, SECTOR};
use crate::options::{Context, DiskSize};
use crate::verity::{VerityInfo, VerityStore};
use crate::{Error, Result};

/// A filesystem planned to the block.
pub(crate) enum Fs {
    Fat(Box<fat::Plan>),
    Ext4(Box<ext4::Plan>),
    /// Raw sectors (a BIOS boot partition): what is written there is the plan's boot code.
    None,
    /// The store image (squashfs, a file `crate::verity` wrote and padded with a hole to
    /// the protected size), then zeros to that size: every byte of it is covered by the hash
    /// tree. The rest of the partition (room for a later version) is left unmapped.
    Store {
        image: Arc<SourceFile>,
        image_size: u64,
        partition_size: u64,
    },
    /// A dm-verity hash area: superblock and hash levels, in memory.
    Hash(Arc<[u8]>),
}

impl Fs {
    /// `ext4`, `fat16`, `fat32`: the manifest's name of the filesystem.
    pub fn kind(&self) -> String {
        match self {
            Fs::Ext4(_) => "ext4".into(),
            Fs::None => "none".into(),
            Fs::Store { .. } => "squashfs".into(),
            Fs::Hash(_) => "verity".into(),
            Fs::Fat(f) => f.fat_type().to_string().to_lowercase(),
        }
    }

    /// Bytes the filesystem spans (a FAT volume may end a few sectors before its partition).
    pub fn size(&self) -> u64 {
        match self {
            Fs::Ext4(p) => p.size_bytes(),
            Fs::Fat(f) => f.fs_bytes(),
            Fs::None => 0,
            Fs::Store { image, .. } => image.size,
            Fs::Hash(h) => h.len() as u64,
        }
    }

    /// `None` for raw sectors.
    fn map(&self, name: &str, tree: &Tree) -> Result<Option<Map>> {
        Ok(Some(match self {
            Fs::None => return Ok(None),
            Fs::Ext4(p) => p.map(tree).map_err(|source| Error::Ext4 {
                name: name.to_string(),
                source,
            })?,
            Fs::Fat(p) => p.map(tree).map_err(|source| Error::Fat {
                name: name.to_string(),
                source,
            })?,
            Fs::Store {
                image,
                image_size,
                partition_size,
            } => {
                let mut b = MapBuilder::new(name, *partition_size);
                b.file(0, image, 0, *image_size)?;
                // Hashed as zeros: they must read as zeros on a reused device too.
                b.zeros(*image_size, image.size - image_size)?;
                b.finish()?
            }
            Fs::Hash(h) => {
                let mut b = MapBuilder::new(name, h.len() as u64);
                b.bytes(0, h.clone())?;
                b.finish()?
            }
        }))
    }
}

/// One partition: its tree, its filesystem's plan, where it lies.
pub(crate) struct Part {
    pub tree: Tree,
    pub fs: Fs,
    pub layout: PartitionLayout,
}

/// The partition table's bytes and ids.
pub(crate) struct Table {
    pub writes: Vec<partition::Write>,
    /// GPT disk GUID or MBR disk signature (`0x1234abcd`), as the manifest shows it.
    pub disk_id: String,
    /// The entries as written, in the shape `inspect` reads them back.
    pub entries: Vec<partition::Entry>,
}

/// The image, planned to the byte: every partition's tree and filesystem, the layout, the
/// table. Owns the trees; computed once.
pub(crate) struct Plan {
    pub layout: Layout,
    pub parts: Vec<Part>,
    pub table: Table,
    /// GRUB's core image where `grub-bios-setup` puts it (sector 0 is patched in `table`).
    pub boot_code: Option<partition::Write>,
}

fn ext4_options(cx: &Context, i: usize) -> ext4::Options {
    let p = &cx.format.partitions[i];
    ext4::Options {
        label: p.label.clone(),
        uuid: *cx.ids.ext4_uuid(&p.name).as_bytes(),
        hash_seed: cx.ids.ext4_hash_seed(&p.name),
        timestamp: cx.time,
        ..Default::default()
    }
}

fn fat_options(cx: &Context, i: usize) -> fat::Options {
    let p = &cx.format.partitions[i];
    fat::Options {
        label: p.label.clone(),
        volume_id: cx.ids.fat_volume_id(&p.name),
        fat_type: if p.filesystem == Filesystem::Fat32 {
            fat::FatType::Fat32
        } else {
            fat::FatType::Auto
        },
        ..Default::default()
    }
}

impl Plan {
    /// Plan every filesystem in full (the root's tree is scanned once), place the partitions
    /// and encode the table. A `--size` too small is refused here, before any output exists.
    pub fn new(
        cx: &Context,
        trees: Vec<Tree>,
        grub: Option<&crate::trees::grub::GrubSetup>,
        verity: Option<&VerityStore>,
        cancel: &AtomicBool,
    ) -> Result<Plan> {
        let format = cx.format;
        let root = format
            .partitions
            .iter()
            .position(|p| p.contents == Contents::Root)
            .expect("validate() checked there is exactly one root partition");
        let ext4_err = |i: usize| {
            let name = format.partitions[i].name.clone();
            move |source| Error::Ext4 { name, source }
        };
        let mut prepared =
            Some(ext4::prepare(&trees[root], &ext4_options(cx, root)).map_err(ext4_err(root))?);
        imgbuild_blockio::check_cancel(cancel).map_err(|_| Error::Interrupted)?;

        let size_of = |i: usize| {
            verity
                .and_then(|v| v.info.size_of(&format.partitions[i]))
                .or(cx.partition_sizes[i])
        };
        let disk_size = match cx.opts.size {
            DiskSize::Exact(n) => Some(n),
            DiskSize::Auto { .. } => None,
        };
        let mut auto = |free: u64| -> Result<u64> {
            prepared
                .as_mut()
                .expect("the root is planned after the layout")
                .min_size(free)
                .map_err(ext4_err(root))
        };
        let layout = layout::compute(format, &size_of, disk_size, cx.root_free, &mut auto)?;

        let mut parts = Vec::with_capacity(trees.len());
        for (i, (tree, pl)) in trees.into_iter().zip(&layout.partitions).enumerate() {
            let fs = match format.partitions[i].filesystem {
                Filesystem::Ext4 => {
                    let prep = match prepared.take().filter(|_| i == root) {
                        Some(p) => p,
                        None => ext4::prepare(&tree, &ext4_options(cx, i)).map_err(ext4_err(i))?,
                    };
                    let plan = prep
                        .plan(ext4::Size::Exact(pl.fs_size))
                        .map_err(ext4_err(i))?;
                    Fs::Ext4(Box::new(plan))
                }
                Filesystem::Fat | Filesystem::Fat32 => {
                    let plan =
                        fat::plan(&tree, pl.fs_size, &fat_options(cx, i)).map_err(|source| {
                            Error::Fat {
                                name: format.partitions[i].name.clone(),
                                source,
                            }
                        })?;
                    Fs::Fat(Box::new(plan))
                }
                Filesystem::None | Filesystem::Squashfs => raw_fs(format, i, pl, verity),
            };
            parts.push(Part {
                tree,
                fs,
                layout: pl.clone(),
            });
        }
        let mut table = table(cx, &layout, verity.map(|v| &v.info))?;
        let boot_code = grub
            .map(|g| g.patch(cx, &layout, &mut table.writes))
            .transpose()?;
        Ok(Plan {
            layout,
            parts,
            table,
            boot_code,
        })
    }

    /// The bytes of the generated file at `path` on the ESP (the UKI, as signed).
    pub fn esp_file(&self, cx: &Context, path: &str) -> Result<std::sync::Arc<[u8]>> {
        let esp = cx
            .format
            .partitions
            .iter()
            .position(|p| p.contents == Contents::Esp);
        let tree = esp.and_then(|i| self.parts.get(i)).map(|p| &p.tree);
        let node = tree.and_then(|t| t.lookup(path.as_bytes()).map(|id| t.node(id)));
        match node.map(|n| &n.kind) {
            Some(imgbuild_fstree::Kind::File(imgbuild_fstree::FileData::Bytes(b))) => Ok(b.clone()),
            _ => Err(Error::Tree {
                what: format!("the ESP's {path}"),
                source: imgbuild_fstree::Error::NotFound { path: path.into() },
            }),
        }
    }

    /// The whole disk as an extent map: the table, then every filesystem at its place.
    pub fn map(&self, cx: &Context) -> Result<Map> {
        let mut b = MapBuilder::new("disk", self.layout.disk_size);
        for w in &self.table.writes {
            b.bytes(w.offset, w.bytes.clone())?;
        }
        if let Some(w) = &self.boot_code {
            b.bytes(w.offset, w.bytes.clone())?;
        }
        for (part, p) in self.parts.iter().zip(&cx.format.partitions) {
            if let Some(fs) = part.fs.map(&p.name, &part.tree)? {
                b.place(part.layout.start, fs)?;
            }
        }
        Ok(b.finish()?)
    }
}

/// What a partition without a file system of ours holds: the verity store's image or hash
/// area, or raw sectors (BIOS boot).
fn raw_fs(
    format: &crate::format::Format,
    i: usize,
    pl: &PartitionLayout,
    verity: Option<&VerityStore>,
) -> Fs {
    match (format.partitions[i].contents, verity) {
        (Contents::Store, Some(v)) => Fs::Store {
            image: SourceFile::new(&v.image.path, v.info.data_size),
            image_size: v.image.size,
            partition_size: pl.size,
        },
        (Contents::Verity, Some(v)) => Fs::Hash(v.hash_area.clone()),
        _ => Fs::None,
    }
}

/// The partition table; the verity pair's partition UUIDs are the root hash's halves, and
/// with B slots the pair's GPT names are slot A's (`crate::sysupdate`).
fn table(cx: &Context, lay: &Layout, verity: Option<&VerityInfo>) -> Result<Table> {
    let format = cx.format;
    let align = Some(format.table.align.0);
    match format.table.kind {
        TableType::Gpt => {
            let disk_guid = cx.ids.gpt_disk_guid();
            let mut parts = Vec::new();
            for (p, pl) in format.partitions.iter().zip(&lay.partitions) {
                let g = verity
                    .and_then(|v| v.partition(p))
                    .map(|(uuid, _)| uuid)
                    .unwrap_or_else(|| cx.ids.gpt_partition_guid(&p.name));
                let Some(crate::format::PartType::Gpt(type_guid)) = p.type_id else {
                    return Err(Error::WrongPartitionType {
                        name: p.name.clone(),
                        table: "a GPT",
                    });
                };
                parts.push(partition::GptPartition {
                    name: verity
                        .and_then(|v| v.gpt_name(p))
                        .unwrap_or_else(|| p.name.clone()),
                    type_guid,
                    part_guid: g,
                    first_lba: pl.start / SECTOR,
                    last_lba: (pl.start + pl.size) / SECTOR - 1,
                    attributes: 0,
                });
            }
            let l = partition::GptLayout {
                disk_size: lay.disk_size,
                disk_guid,
                require_alignment: align,
                partitions: parts,
            };
            Ok(Table {
                writes: partition::encode_gpt(&l)?,
                disk_id: disk_guid.to_string().to_uppercase(),
                entries: numbered(&l.partitions, partition::Entry::gpt),
            })
        }
        TableType::Mbr => {
            let id = cx.mbr_disk_id;
            let parts = format
                .partitions
                .iter()
                .zip(&lay.partitions)
                .map(|(p, pl)| match p.type_id {
                    Some(crate::format::PartType::Mbr(type_byte)) => Ok(partition::MbrPartition {
                        first_lba: pl.start / SECTOR,
                        sectors: pl.size / SECTOR,
                        type_byte,
                        bootable: p.bootable,
                    }),
                    _ => Err(Error::WrongPartitionType {
                        name: p.name.clone(),
                        table: "an MBR",
                    }),
                })
                .collect::<Result<_>>()?;
            let l = partition::MbrLayout {
                disk_size: lay.disk_size,
                disk_id: id,
                require_alignment: align,
                partitions: parts,
            };
            Ok(Table {
                writes: partition::encode_mbr(&l)?,
                disk_id: format!("0x{id:08x}"),
                entries: numbered(&l.partitions, partition::Entry::mbr),
            })
        }
        // The one file system is the disk: no table to write, and the entry `inspect` reads
        // back for it (partition 0, the whole image).
        TableType::None => Ok(Table {
            writes: Vec::new(),
            disk_id: String::new(),
            entries: vec![partition::Entry::whole_image(lay.disk_size)],
        }),
    }
}

/// Describes entries in table order, numbered from 1.
fn numbered<P>(parts: &[P], describe: fn(u32, &P) -> partition::Entry) -> Vec<partition::Entry> {
    (1u32..).zip(parts).map(|(n, p)| describe(n, p)).collect()
}
