//! Probing a partition for a filesystem and opening it: ISO 9660 (with a live ISO's store
//! image mounted at `/nix/store` when it holds one), squashfs, ext and FAT; an appliance's
//! root and store partitions opened together as the system they make.

use std::cell::Cell;
use std::sync::Arc;

use imgbuild_partition::FsSummary;

use super::{ext4, ext4_sb, fat, fat_bpb, iso9660, live, squashfs, Filesystem, FsInfo, Inner};
use crate::bytes::to_usize;
use crate::io::{Budget, Disk, Slice, BASE_BUDGET};
use crate::table::Partition;
use crate::{Error, Limits, Where};

/// What a partition's first bytes say it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    Iso9660,
    Squashfs,
    Ext,
    Fat,
    /// A dm-verity hash area (`veritysetup format`'s superblock first).
    Verity,
    Other(&'static str),
    Unknown,
}

/// Recognises a filesystem by its magic numbers (only ISO 9660, ext and FAT are read
/// further). ISO 9660 first: an isohybrid image's first block holds an MBR.
pub(crate) fn probe(slice: &mut Slice) -> Probe {
    if iso9660::looks_like_iso(slice) {
        return Probe::Iso9660;
    }
    let mut b = vec![0u8; to_usize(slice.len().min(4096))];
    if slice.read_exact_at(0, &mut b).is_err() {
        return Probe::Unknown;
    }
    if b.len() >= 1082 && b[1080] == 0x53 && b[1081] == 0xef {
        return Probe::Ext;
    }
    if b.len() >= 512 && fat_bpb::looks_like_boot_sector(&b[..512]) {
        return Probe::Fat;
    }
    if b.len() >= 4096 && &b[4086..4096] == b"SWAPSPACE2" {
        return Probe::Other("swap");
    }
    if b.len() >= 8 && &b[..8] == b"verity\0\0" {
        return Probe::Verity;
    }
    if b.len() >= 4 && &b[..4] == b"hsqs" {
        return Probe::Squashfs;
    }
    if b.len() >= 4 && &b[..4] == b"XFSB" {
        return Probe::Other("xfs");
    }
    if b.len() >= 4 && &b[..4] == b"LUKS" {
        return Probe::Other("LUKS");
    }
    let mut sb = [0u8; 8];
    if slice.len() >= 0x10048 && slice.read_exact_at(0x10040, &mut sb).is_ok() && &sb == b"_BHRfS_M"
    {
        return Probe::Other("btrfs");
    }
    if b.iter().all(|&x| x == 0) {
        return Probe::Other(EMPTY);
    }
    Probe::Unknown
}

/// The kind of a partition whose first bytes are all zeros.
const EMPTY: &str = "empty (zeros)";

/// Result of probing one partition.
pub(crate) struct Opened {
    pub info: Option<FsInfo>,
    pub fs: Option<Filesystem>,
    pub error: Option<Error>,
}

/// A filesystem opened: its facts and the reader.
fn opened(at: Where, info: FsInfo, inner: Inner, budget: Budget, limits: &Limits) -> Opened {
    Opened {
        info: Some(info.clone()),
        fs: Some(Filesystem {
            at,
            info,
            inner,
            budget,
            poisoned: Cell::new(false),
            limits: limits.clone(),
        }),
        error: None,
    }
}

/// A filesystem that does not open: the facts read so far (with the reason), and the error.
type Refused = (Option<FsInfo>, Error);

/// The ext filesystem of `part` read through `slice` (its superblock checked first) and its
/// facts; when it does not open, the facts read so far (with the reason) and the error.
fn open_ext(
    disk: &Arc<Disk>,
    part: &Partition,
    mut slice: Slice,
    budget: &Budget,
    at: &Where,
) -> std::result::Result<(ext4::Ext4Fs, FsInfo), Box<Refused>> {
    let sb = ext4_sb::Superblock::read(&mut slice, at).map_err(|e| Box::new((None, e)))?;
    let mut info = sb.info();
    let raw = Slice::new(
        disk.clone(),
        part.entry.start,
        part.entry.size,
        budget.clone(),
    );
    match ext4::Ext4Fs::open(slice, raw, &sb, at) {
        Ok(fs) => Ok((fs, info)),
        Err(e) => {
            info.error = Some(crate::error::chain(&e));
            Err(Box::new((Some(info), e)))
        }
    }
}

/// Probes `part` and opens the filesystem in it, if it is ISO 9660, squashfs, ext or FAT.
pub(crate) fn open(disk: &Arc<Disk>, part: &Partition, at: Where, limits: &Limits) -> Opened {
    let budget = Budget::new(BASE_BUDGET);
    let mut slice = Slice::new(
        disk.clone(),
        part.entry.start,
        part.entry.size,
        budget.clone(),
    );
    let none = |info, error| Opened {
        info,
        fs: None,
        error,
    };
    match probe(&mut slice) {
        Probe::Ext => match open_ext(disk, part, slice, &budget, &at) {
            Ok((fs, info)) => opened(at, info, Inner::Ext4(fs), budget, limits),
            Err(b) => {
                let (info, e) = *b;
                none(info, Some(e))
            }
        },
        Probe::Fat => match fat::FatFs::open(slice, &at) {
            Ok((fs, info)) => opened(at, info, Inner::Fat(Box::new(fs)), budget, limits),
            Err(b) => {
                let (info, e) = *b;
                none(info, Some(e))
            }
        },
        Probe::Iso9660 => match iso9660::IsoFs::open(slice, &at) {
            Ok((fs, info)) => {
                let (inner, info) = with_store_image(fs, info, disk, part, &budget, &at);
                opened(at, info, inner, budget, limits)
            }
            Err(e) => none(
                Some(FsInfo {
                    summary: FsSummary {
                        kind: "iso9660".into(),
                        size: part.entry.size,
                        ..FsSummary::default()
                    },
                    error: Some(crate::error::chain(&e)),
                    ..FsInfo::default()
                }),
                Some(e),
            ),
        },
        Probe::Squashfs => match squashfs::SquashFs::open(slice, b"/", &at) {
            Ok((fs, info)) => opened(at, info, Inner::Squash(Box::new(fs)), budget, limits),
            Err(e) => none(
                Some(FsInfo {
                    summary: FsSummary {
                        kind: "squashfs".into(),
                        size: part.entry.size,
                        ..FsSummary::default()
                    },
                    error: Some(crate::error::chain(&e)),
                    ..FsInfo::default()
                }),
                Some(e),
            ),
        },
        // No filesystem to read files from, and no error: `crate::verity` pairs it with its
        // data partition.
        Probe::Verity => none(Some(crate::verity::fs_info(&mut slice)), None),
        Probe::Other(kind) => none(
            Some(FsInfo {
                summary: FsSummary {
                    kind: kind.to_string(),
                    size: part.entry.size,
                    ..FsSummary::default()
                },
                ..FsInfo::default()
            }),
            // A partition of zeros (an empty A/B slot) holds nothing to read: no error.
            (kind != EMPTY).then(|| Error::NoFilesystem {
                at,
                detail: Some(kind.to_string()),
            }),
        ),
        Probe::Unknown => none(None, Some(Error::NoFilesystem { at, detail: None })),
    }
}

/// An ISO with `/nix-store.squashfs` (one run of blocks): the ISO with the store image
/// mounted at `/nix/store`, its facts in `info.store_image`; a store image that does not
/// open leaves the ISO alone, with the reason there.
fn with_store_image(
    iso: iso9660::IsoFs,
    mut info: FsInfo,
    disk: &Arc<Disk>,
    part: &Partition,
    budget: &Budget,
    at: &Where,
) -> (Inner, FsInfo) {
    let here = at.with_path(live::STORE_IMAGE);
    let file = match iso.open_file(live::STORE_IMAGE, at) {
        Ok((f, _)) => f,
        Err(_) => return (Inner::Iso(Box::new(iso)), info),
    };
    let failed = |e: &Error, size| {
        Box::new(FsInfo {
            summary: FsSummary {
                kind: "squashfs".into(),
                size,
                ..FsSummary::default()
            },
            error: Some(crate::error::chain(e)),
            ..FsInfo::default()
        })
    };
    let Some((start, len)) = file.contiguous() else {
        let e = Error::Unsupported {
            at: here,
            what: "a store image in more than one run of blocks".into(),
        };
        info.store_image = Some(failed(&e, 0));
        return (Inner::Iso(Box::new(iso)), info);
    };
    budget.set(BASE_BUDGET);
    let slice = Slice::new(disk.clone(), part.entry.start + start, len, budget.clone());
    match squashfs::SquashFs::open(slice, live::MOUNT, &here) {
        Ok((store, store_info)) => {
            info.store_image = Some(Box::new(store_info));
            let live = live::LiveFs {
                base: live::Base::Iso(iso),
                store,
                mounts: live::LIVE,
            };
            (Inner::Live(Box::new(live)), info)
        }
        Err(e) => {
            info.store_image = Some(failed(&e, len));
            (Inner::Iso(Box::new(iso)), info)
        }
    }
}

/// An appliance as it boots: the ext root filesystem of `root` with the squashfs of `usr`
/// (holding `nix/store/…`) mounted at `/usr` and its store bound to `/nix/store`
/// ([`live::APPLIANCE`]); `None` when either does not open (each partition is still read on
/// its own, with the reason).
pub(crate) fn open_appliance(
    disk: &Arc<Disk>,
    root: &Partition,
    usr: &Partition,
    at: Where,
    limits: &Limits,
) -> Option<Filesystem> {
    let budget = Budget::new(BASE_BUDGET);
    let slice =
        |p: &Partition| Slice::new(disk.clone(), p.entry.start, p.entry.size, budget.clone());
    let mut s = slice(root);
    if probe(&mut s) != Probe::Ext {
        return None;
    }
    let (base, info) = open_ext(disk, root, s, &budget, &at).ok()?;
    budget.set(BASE_BUDGET);
    let (store, _) = squashfs::SquashFs::open(slice(usr), live::APPLIANCE.mount, &at).ok()?;
    let live = live::LiveFs {
        base: live::Base::Ext4(base),
        store,
        mounts: live::APPLIANCE,
    };
    opened(at, info, Inner::Live(Box::new(live)), budget, limits).fs
}
