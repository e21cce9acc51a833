//! The root filesystem of an appliance (imgbuild's `appliance` format; nixpkgs'
//! verity-store images): an ext root partition whose `/nix/store` is an empty mount point,
//! and a Discoverable Partitions `usr` partition holding the store as a squashfs
//! (`nix/store/…`), read together as the booted system sees them ([`crate::fs::open_appliance`]).
//!
//! With A/B slots, two `usr` partitions may hold a store: the one whose GPT name carries the
//! newest version (`<id>_<version>`, compared as systemd compares versions) is taken, the
//! one systemd-boot's default entry boots (`default <id>_*` picks the newest UKI, whose
//! `usrhash=` names that slot).

use imgbuild_verity::partition::{partition_types, Arch, Designator};

use crate::fs::{open_appliance, Filesystem, Kind};
use crate::table::Partition;
use crate::{Part, Where};

/// An appliance's system: the composed filesystem and the partitions it is made of.
pub(crate) struct System {
    pub fs: Filesystem,
    /// The ext root partition's number.
    pub root: u32,
    /// The `usr` partition's number (the store).
    pub store: u32,
}

const ARCHES: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

/// Whether `p` is a Discoverable Partitions data partition of this designator (any
/// architecture imgbuild writes).
fn has_type(p: &Partition, d: Designator) -> bool {
    uuid::Uuid::parse_str(&p.entry.type_id)
        .is_ok_and(|t| ARCHES.iter().any(|&a| partition_types(d, a).data == t))
}

fn is_dir(fs: &Filesystem, path: &[u8]) -> bool {
    matches!(fs.metadata(path), Ok(m) if m.kind == Kind::Dir)
}

/// The appliance among `parts`, if they make one.
pub(crate) fn appliance(
    image: &std::path::Path,
    disk: &std::sync::Arc<crate::io::Disk>,
    parts: &[Part],
    limits: &crate::Limits,
) -> Option<System> {
    let root = parts.iter().find(|p| {
        p.fs.as_ref().is_some_and(|fs| {
            let nixos_label = fs
                .info()
                .summary
                .label
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case("nixos"));
            fs.info().summary.kind.starts_with("ext")
                && (has_type(&p.partition, Designator::Root) || nixos_label)
                && is_dir(fs, b"/usr")
                && fs.read_dir(b"/nix/store").is_ok_and(|v| v.is_empty())
        })
    })?;
    let usr = parts
        .iter()
        .filter(|p| {
            has_type(&p.partition, Designator::Usr)
                && p.fs.as_ref().is_some_and(|fs| {
                    fs.info().summary.kind == "squashfs" && is_dir(fs, b"/nix/store")
                })
        })
        .max_by(|a, b| {
            crate::boot::version_cmp(
                a.partition.entry.name.as_deref(),
                b.partition.entry.name.as_deref(),
            )
        })?;
    let (r, u) = (root.partition.entry.number, usr.partition.entry.number);
    let label = root
        .fs
        .as_ref()
        .and_then(|f| f.info().summary.label.clone());
    let at = Where {
        image: image.to_path_buf(),
        partition: Some(format!(
            "{} with partition {u} at /usr",
            root.partition.describe(label.as_deref())
        )),
        path: None,
    };
    let fs = open_appliance(disk, &root.partition, &usr.partition, at, limits)?;
    Some(System {
        fs,
        root: r,
        store: u,
    })
}
