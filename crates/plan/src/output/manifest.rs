//! The manifest: what was built, from what, and the hashes that cover it.

use super::paths::{file_name, Outputs};
use crate::format::TableType;
use crate::manifest::{Manifest, ManifestPartition};
use crate::options::Context;
use crate::{add, disk::Plan, Inputs};

/// What building the trees did, for the manifest.
pub(crate) struct TreeNotes {
    /// The `--add`s, as written.
    pub added: Vec<add::Added>,
    pub dedup: crate::DedupReport,
    pub boot: crate::BootNote,
    /// The verity store's root hash and partitions, for a format with a `store` partition.
    pub verity: Option<crate::VerityManifest>,
    /// The version's sysupdate artifacts and the empty B slots (a format with B slots).
    pub sysupdate: Option<crate::sysupdate::SysupdateManifest>,
}

/// What the stream found out about the outputs.
pub(crate) struct Hashes {
    pub image_size: u64,
    pub sha256: String,
    pub disk_sha256: String,
}

/// What the manifest says of the image's layout: the table and partitions of a disk, or the
/// ISO 9660 volume.
pub(crate) struct Layout {
    /// `gpt` or `dos` (an ISO: its isohybrid GPT's).
    pub table: String,
    /// GPT disk GUID or MBR disk signature.
    pub disk_id: String,
    pub disk_size: u64,
    pub partitions: Vec<ManifestPartition>,
    pub iso: Option<crate::manifest::IsoManifest>,
}

/// The manifest's layout of a planned disk.
pub(crate) fn disk_layout(cx: &Context, plan: &Plan) -> Layout {
    let partitions = cx
        .format
        .partitions
        .iter()
        .zip(&plan.parts)
        .zip(&plan.table.entries)
        .map(|((p, part), entry)| {
            let uuid = match &part.fs {
                crate::disk::Fs::Ext4(_) => Some(cx.ids.ext4_uuid(&p.name).to_string()),
                crate::disk::Fs::Fat(_) => Some(crate::ids::fat_volume_id_string(
                    cx.ids.fat_volume_id(&p.name),
                )),
                crate::disk::Fs::None | crate::disk::Fs::Store { .. } => None,
                // The hash area's superblock UUID, which blkid reports.
                crate::disk::Fs::Hash(_) => p
                    .verity_of
                    .as_ref()
                    .map(|of| cx.ids.verity_superblock_uuid(of).to_string()),
            };
            ManifestPartition {
                entry: entry.clone(),
                filesystem: imgbuild_partition::FsSummary {
                    kind: part.fs.kind(),
                    label: (!p.label.is_empty()).then(|| p.label.clone()),
                    uuid,
                    size: part.fs.size(),
                },
                mount_point: p.mount_point.clone(),
            }
        })
        .collect();
    Layout {
        table: match cx.format.table.kind {
            TableType::Gpt => "gpt".into(),
            TableType::Mbr => "dos".into(),
            TableType::None => "none".into(),
        },
        disk_id: plan.table.disk_id.clone(),
        disk_size: plan.layout.disk_size,
        partitions,
        iso: None,
    }
}

/// The manifest of a build whose stream found `h`.
pub(crate) fn manifest(
    cx: &Context,
    inputs: &Inputs,
    layout: Layout,
    outs: &Outputs,
    h: Hashes,
    notes: TreeNotes,
) -> Manifest {
    let Hashes {
        image_size,
        sha256,
        disk_sha256,
    } = h;
    // With files added from the host, a hash of the disk or the image would let anyone
    // holding the manifest test guesses of their contents (same closure, same seed: a 4-digit
    // PIN is 10 000 builds): withheld.
    let withhold = !notes.added.is_empty();
    let (sha256, disk_sha256, hashes) = if withhold {
        (None, None, HASHES_WITHHELD)
    } else {
        (Some(sha256), Some(disk_sha256), HASHES_COVER)
    };
    // So is the size of a compressed image: it depends on what the added files hold.
    let compressed = cx.output.container.compressed(cx.output.compression);
    let image_size = (!(withhold && compressed)).then_some(image_size);
    Manifest {
        imgbuild_version: env!("CARGO_PKG_VERSION").to_string(),
        format: cx.format.name.clone(),
        system: inputs.bootspec.system.clone(),
        toplevel: inputs.toplevel.to_string(),
        closure_source: inputs.source,
        store_paths: inputs.closure.paths.len(),
        nar_size: inputs.closure.total_nar_size(),
        table: layout.table,
        disk_id: layout.disk_id,
        disk_size: layout.disk_size,
        disk_sha256,
        partitions: layout.partitions,
        iso: layout.iso,
        netboot: None,
        image: file_name(&outs.image),
        image_size,
        sha256,
        container: cx.output.container,
        compression: cx.output.compression,
        raw_image: outs
            .raw
            .as_ref()
            .filter(|r| **r != outs.image)
            .map(|r| file_name(r)),
        bmap: outs.bmap.as_ref().map(|b| file_name(b)),
        hashes: hashes.to_string(),
        source_date_epoch: cx.time,
        dedup: notes.dedup,
        added: notes.added,
        boot: notes.boot,
        verity: notes.verity,
        sysupdate: notes.sysupdate,
    }
}

/// What the manifest's hashes cover.
const HASHES_COVER: &str = "sha256: the image file as written; disk_sha256: the raw disk \
     (the uncompressed image, or the first disk_size bytes of a device it was written to); the \
     bmap's ranges: the raw disk's mapped blocks";

/// Why they are left out.
const HASHES_WITHHELD: &str = "withheld: the image holds files added from the host (`added`), \
     and a hash of it (or the size of a compressed image) would let anyone holding this \
     manifest test guesses of their contents; \
     verify a copy by comparing `sha256sum` of it with that of the file on the build host. The \
     bmap holds a hash of every mapped range, those files' included: keep it with the image";
