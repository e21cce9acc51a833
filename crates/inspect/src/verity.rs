//! dm-verity pairs: every partition that starts with a verity superblock (read by
//! `imgbuild-verity`'s bounded parser), the data partition it protects (its Discoverable
//! Partitions partner: `usr-verity` -> `usr`, `root-verity` -> `root`, same architecture;
//! with A/B slots the Nth of one kind with the Nth of the other),
//! and the root hash recomputed from the data.
//!
//! A superblock holds no root hash, so the root hash shown is always the one recomputed from
//! the data partition (`root_hash`); the on-disk hash area is compared with the recomputed
//! one byte for byte (`hash_area`), and the root hash with what the disk itself claims: the
//! data and hash partitions' GPT UUIDs (systemd-repart makes them the root hash's halves) and
//! a boot entry's `usrhash=`/`roothash=`. A manifest is not read here: compare `root_hash`
//! with its `verity.root_hash`.
//!
//! Bounds: the data read is the superblock's block count, refused past the data partition
//! or [`Limits::max_verity_data`]; the recomputed tree holds 1/128 of that in memory.

use std::sync::Arc;

use imgbuild_partition::Entry;
use imgbuild_verity::partition::{partition_types, Arch, Designator};
use imgbuild_verity::{Hasher, Params, Superblock, SUPERBLOCK_SIZE};
use serde::Serialize;

use crate::bytes::to_usize;
use crate::io::{Budget, Disk, Slice, BASE_BUDGET};
use crate::table::Partition;
use crate::Limits;

/// Bytes read at a time while hashing the data and comparing the hash area.
const CHUNK: u64 = 1 << 20;

/// A verity hash partition, its data partition and the root hash they give.
#[derive(Clone, Debug, Serialize)]
pub struct VerityPair {
    /// The partition holding the hash area.
    pub hash_partition: u32,
    /// The partition holding the data, when its DPS partner was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_partition: Option<u32>,
    /// `usr` or `root`, from the hash partition's DPS type (none for another type).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub designator: Option<&'static str>,
    /// The superblock's fields.
    pub superblock: VeritySuperblock,
    /// The root hash recomputed from the data partition, when it could be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
    /// `matches` when the on-disk hash area is the recomputed one byte for byte, else where
    /// they first differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_area: Option<String>,
    /// What the disk says the root hash is, and whether the recomputed one agrees.
    pub claims: Vec<RootHashClaim>,
    /// Why the root hash was not recomputed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A verity superblock as read.
#[derive(Clone, Debug, Serialize)]
pub struct VeritySuperblock {
    /// 0 (Chrome OS: salt after the block) or 1 (the salt first).
    pub hash_type: u32,
    /// The UUID `veritysetup format` stored.
    pub uuid: String,
    /// The hash algorithm's name.
    pub algorithm: String,
    /// Bytes per data block.
    pub data_block_size: u32,
    /// Bytes per hash block.
    pub hash_block_size: u32,
    /// Data blocks the tree covers.
    pub data_blocks: u64,
    /// The salt, in hex (`-` for none).
    pub salt: String,
}

/// A root hash the disk claims, from `source`.
#[derive(Clone, Debug, Serialize)]
pub struct RootHashClaim {
    /// `partition UUIDs` or `boot entry usrhash=` (`roothash=`).
    pub source: String,
    /// The claimed root hash, in hex.
    pub root_hash: String,
    /// Whether it is the recomputed one (false when none was recomputed).
    pub matches: bool,
}

/// The DPS architectures and designators whose types pair a hash with its data.
const KINDS: [(Designator, &str, Arch); 4] = [
    (Designator::Usr, "usr", Arch::X86_64),
    (Designator::Usr, "usr", Arch::Arm64),
    (Designator::Root, "root", Arch::X86_64),
    (Designator::Root, "root", Arch::Arm64),
];

/// Every verity pair of the disk; `cmdlines` are the boot entries' kernel command lines.
pub(crate) fn pairs(
    disk: &Arc<Disk>,
    parts: &[&Partition],
    cmdlines: &[&str],
    limits: &Limits,
) -> Vec<VerityPair> {
    parts
        .iter()
        .filter_map(|p| {
            let sb = superblock(disk, &p.entry)?;
            Some(pair(disk, p, &sb, parts, cmdlines, limits))
        })
        .collect()
}

/// The superblock at the start of `entry`, when there is one.
fn superblock(disk: &Arc<Disk>, entry: &Entry) -> Option<Superblock> {
    if entry.size < SUPERBLOCK_SIZE as u64 {
        return None;
    }
    let mut slice = Slice::new(disk.clone(), entry.start, entry.size, Budget::new(1 << 20));
    let mut b = [0u8; SUPERBLOCK_SIZE];
    slice.read_exact_at(0, &mut b).ok()?;
    Superblock::parse(&b).ok()
}

fn pair(
    disk: &Arc<Disk>,
    hash: &Partition,
    sb: &Superblock,
    parts: &[&Partition],
    cmdlines: &[&str],
    limits: &Limits,
) -> VerityPair {
    let kind = KINDS
        .iter()
        .find(|(d, _, a)| uuid_eq(&hash.entry.type_id, partition_types(*d, *a).verity));
    // With A/B slots there are several pairs of one kind: the Nth hash partition of the kind
    // protects the Nth data partition (the slots' order, as systemd-repart and imgbuild lay
    // them out).
    let data = kind.and_then(|(d, _, a)| {
        let types = partition_types(*d, *a);
        let rank = parts
            .iter()
            .filter(|p| uuid_eq(&p.entry.type_id, types.verity))
            .position(|p| p.entry.number == hash.entry.number)?;
        parts
            .iter()
            .filter(|p| uuid_eq(&p.entry.type_id, types.data))
            .nth(rank)
    });
    let mut out = VerityPair {
        hash_partition: hash.entry.number,
        data_partition: data.map(|p| p.entry.number),
        designator: kind.map(|(_, name, _)| *name),
        superblock: VeritySuperblock {
            hash_type: sb.hash_type(),
            uuid: sb.uuid().to_string(),
            algorithm: sb.algorithm().to_string(),
            data_block_size: sb.data_block_size(),
            hash_block_size: sb.hash_block_size(),
            data_blocks: sb.data_blocks(),
            salt: sb.salt().to_hex(),
        },
        root_hash: None,
        hash_area: None,
        claims: Vec::new(),
        error: None,
    };
    match data {
        None => {
            out.error = Some(
                "no data partition: the hash partition's type has no Discoverable Partitions \
                 data partner on this disk"
                    .into(),
            )
        }
        Some(d) => match recompute(disk, &d.entry, &hash.entry, sb, limits) {
            Ok((root, area)) => {
                out.root_hash = Some(root);
                out.hash_area = Some(area);
            }
            Err(why) => out.error = Some(why),
        },
    }
    // The data GUIDs of the kind's other slots: a boot entry naming one of them (another
    // version's UKI) claims nothing about this pair.
    let other_slots: Vec<String> = kind
        .map(|(d, _, a)| {
            parts
                .iter()
                .filter(|p| uuid_eq(&p.entry.type_id, partition_types(*d, *a).data))
                .filter(|p| data.is_none_or(|d| d.entry.number != p.entry.number))
                .filter_map(|p| simple_guid(&p.entry.guid))
                .collect()
        })
        .unwrap_or_default();
    out.claims = claims(
        data.map(|p| &p.entry),
        &hash.entry,
        out.designator,
        cmdlines,
    )
    .into_iter()
    .filter(|(source, h)| {
        source == PARTITION_UUIDS || !other_slots.iter().any(|g| h.starts_with(g.as_str()))
    })
    .map(|(source, root_hash)| RootHashClaim {
        matches: out.root_hash.as_deref() == Some(root_hash.as_str()),
        source,
        root_hash,
    })
    .collect();
    out
}

/// Whether a table's type text is `want`.
fn uuid_eq(type_id: &str, want: uuid::Uuid) -> bool {
    uuid::Uuid::parse_str(type_id).is_ok_and(|u| u == want)
}

/// The root hash the data partition gives with this superblock, and how the on-disk hash
/// area compares with the recomputed one; or why it is not recomputed.
fn recompute(
    disk: &Arc<Disk>,
    data: &Entry,
    hash: &Entry,
    sb: &Superblock,
    limits: &Limits,
) -> Result<(String, String), String> {
    let supported = sb.hash_type() == 1
        && sb.algorithm() == "sha256"
        && u64::from(sb.data_block_size()) == imgbuild_verity::BLOCK_SIZE
        && u64::from(sb.hash_block_size()) == imgbuild_verity::BLOCK_SIZE;
    if !supported {
        return Err(format!(
            "not recomputed: only hash type 1, sha256 and 4096-byte blocks are (this is type \
             {}, {}, {} and {})",
            sb.hash_type(),
            sb.algorithm(),
            sb.data_block_size(),
            sb.hash_block_size()
        ));
    }
    let len = sb
        .data_blocks()
        .checked_mul(imgbuild_verity::BLOCK_SIZE)
        .filter(|&n| n <= data.size)
        .ok_or_else(|| {
            format!(
                "the superblock covers {} blocks of 4096 bytes, more than partition {} holds \
                 ({} bytes)",
                sb.data_blocks(),
                data.number,
                data.size
            )
        })?;
    if len > limits.max_verity_data {
        return Err(format!(
            "not recomputed: {len} bytes of data, more than the {} bytes inspect hashes",
            limits.max_verity_data
        ));
    }
    let area = imgbuild_verity::hash_area_size(len).map_err(|e| crate::error::chain(&e))?;
    if area > hash.size {
        return Err(format!(
            "the hash area of {len} bytes of data takes {area} bytes, more than partition {} \
             holds ({} bytes)",
            hash.number, hash.size
        ));
    }
    let read_err = |e: std::io::Error| format!("reading the partitions: {e}");
    let params = Params {
        salt: sb.salt().clone(),
        uuid: sb.uuid(),
    };
    let mut hasher = Hasher::with_data_size(params, len);
    let mut slice = Slice::new(
        disk.clone(),
        data.start,
        len,
        Budget::new(len + BASE_BUDGET),
    );
    let mut buf = vec![0u8; to_usize(CHUNK)];
    let mut at = 0;
    while at < len {
        let n = to_usize((len - at).min(CHUNK));
        slice.read_exact_at(at, &mut buf[..n]).map_err(read_err)?;
        hasher.push(&buf[..n]);
        at += CHUNK.min(len - at);
    }
    let tree = hasher.finish().map_err(|e| crate::error::chain(&e))?;
    let want = tree.to_bytes();
    let mut on_disk = Slice::new(
        disk.clone(),
        hash.start,
        area,
        Budget::new(area + BASE_BUDGET),
    );
    let mut compared = "matches".to_string();
    for (i, chunk) in want.chunks(to_usize(CHUNK)).enumerate() {
        let off = (i as u64) * CHUNK;
        let got = &mut buf[..chunk.len()];
        on_disk.read_exact_at(off, got).map_err(read_err)?;
        if let Some(j) = got.iter().zip(chunk).position(|(a, b)| a != b) {
            compared = format!("differs from the recomputed one at byte {}", off + j as u64);
            break;
        }
    }
    Ok((tree.root_hash().to_hex(), compared))
}

/// A claim's source: the GPT UUIDs of the pair.
const PARTITION_UUIDS: &str = "partition UUIDs";

/// A GPT GUID as 32 lowercase hex digits.
fn simple_guid(g: &Option<String>) -> Option<String> {
    g.as_deref()
        .and_then(|g| uuid::Uuid::parse_str(g).ok())
        .map(|u| u.simple().to_string())
}

/// The root hashes the disk claims: the GPT UUIDs' (data's, then hash's, 32 hex digits each)
/// and each boot command line's `usrhash=`/`roothash=` for the designator (the caller drops
/// those naming another slot).
fn claims(
    data: Option<&Entry>,
    hash: &Entry,
    designator: Option<&str>,
    cmdlines: &[&str],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let (Some(d), Some(h)) = (
        data.and_then(|d| simple_guid(&d.guid)),
        simple_guid(&hash.guid),
    ) {
        out.push((PARTITION_UUIDS.to_string(), format!("{d}{h}")));
    }
    if let Some(name) = designator {
        let key = format!("{name}hash=");
        for line in cmdlines {
            for arg in line.split_whitespace() {
                if let Some(v) = arg.strip_prefix(&key) {
                    let claim = (format!("boot entry {key}"), v.to_ascii_lowercase());
                    if !out.contains(&claim) {
                        out.push(claim);
                    }
                }
            }
        }
    }
    out
}

/// A verity hash partition's line in the partition list: kind `verity`, the superblock's
/// UUID, the hash area's size; or why its superblock is refused.
pub(crate) fn fs_info(slice: &mut Slice) -> crate::FsInfo {
    let mut b = [0u8; SUPERBLOCK_SIZE];
    let sb = slice
        .read_exact_at(0, &mut b)
        .map_err(|e| e.to_string())
        .and_then(|()| Superblock::parse(&b).map_err(|e| crate::error::chain(&e)));
    let mut info = crate::FsInfo {
        summary: imgbuild_partition::FsSummary {
            kind: "verity".into(),
            size: slice.len(),
            ..Default::default()
        },
        block_size: imgbuild_verity::BLOCK_SIZE,
        ..Default::default()
    };
    match sb {
        Ok(sb) => {
            info.summary.uuid = Some(sb.uuid().to_string());
            let area = sb
                .data_blocks()
                .checked_mul(u64::from(sb.data_block_size()))
                .and_then(|n| imgbuild_verity::hash_area_size(n).ok());
            if let Some(a) = area.filter(|&a| a <= slice.len()) {
                info.summary.size = a;
                info.used = a;
            }
        }
        Err(why) => info.error = Some(format!("a verity superblock that does not parse: {why}")),
    }
    info
}
