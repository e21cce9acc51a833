//! The dm-verity protected store of a format with a `store` partition (`appliance`): the
//! closure's store image, its hash tree, and what the rest of the plan needs of them.
//!
//! `prepare` runs before any other partition is planned, because the ESP's boot entry and
//! the GPT depend on the root hash: it writes the store image (squashfs, the closure under
//! `nix/store`) to a temporary file beside the output, then reads that file once, in order,
//! into `imgbuild_verity::Hasher` (the partition's padding to the table's alignment hashed as
//! zeros, never read), so the whole data partition is covered, as systemd-repart covers it.
//! The hash area (about 1/128 of the data) goes into the disk map as bytes; the store image
//! as ranges of the temporary file, read once more by the output stream.
//!
//! [`cmdline_args`] is the one place that turns the root hash into kernel command line
//! arguments (`usrhash=`): the systemd-boot entry uses it, and so will a UKI's `.cmdline`.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use imgbuild_verity::{self as verity, Hasher, Params, RootHash, Salt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::format::Partition;
use crate::layout::{align_up, Layout};
use crate::options::Context;
use crate::store_image::{self, StoreImage};
use crate::{Error, Inputs, Reporter, Result};

/// The GPT name systemd-sysupdate gives (and looks for on) an empty slot.
pub const EMPTY_LABEL: &str = "_empty";

/// Bytes read from the store image at a time while hashing it.
const READ_CHUNK: usize = 2 << 20;

/// What the plan knows of a verity-protected store once it is hashed: enough for the boot
/// entry (the root hash), the partition table (sizes, UUIDs) and the manifest.
#[derive(Clone, Debug)]
pub struct VerityInfo {
    /// The data partition's name in the format (`store`).
    pub data_partition: String,
    /// The hash partition's name in the format (`store-verity`).
    pub hash_partition: String,
    /// The root hash: `usrhash=` on the kernel command line, and the partition UUIDs.
    pub root_hash: RootHash,
    /// The salt hashed before every block.
    pub salt: Salt,
    /// The UUID in the hash area's superblock.
    pub superblock_uuid: Uuid,
    /// Bytes of the store image (squashfs) at the data partition's start.
    pub store_image_size: u64,
    /// Bytes of the data partition protected: the store image, then zeros to the table's
    /// alignment (the `.usr.raw` sysupdate artifact).
    pub data_size: u64,
    /// SHA-256 of those bytes.
    pub data_sha256: [u8; 32],
    /// Bytes of the hash area.
    pub hash_size: u64,
    /// Bytes of the data partition: `data_size` plus the format's `free` room for a later
    /// version, aligned.
    pub data_partition_size: u64,
    /// Bytes of the hash partition: `hash_size` plus its `free` room, aligned.
    pub hash_partition_size: u64,
    /// The GPT names of slot A, data and hash (`<id>_<version>`, `<id>_<version>_verity`),
    /// for a format with B slots; else the format's partition names.
    pub slot_labels: Option<(String, String)>,
}

impl VerityInfo {
    /// The data and hash partitions' GPT UUIDs, the root hash's halves (systemd-repart's).
    pub fn partition_uuids(&self) -> verity::partition::PartitionUuids {
        self.root_hash.partition_uuids()
    }

    /// Of the format's partition `p`, when it is one of the pair: its GPT partition UUID and
    /// its size.
    pub(crate) fn partition(&self, p: &Partition) -> Option<(Uuid, u64)> {
        let u = self.partition_uuids();
        if p.name == self.data_partition {
            Some((u.data, self.data_partition_size))
        } else if p.name == self.hash_partition {
            Some((u.verity, self.hash_partition_size))
        } else {
            None
        }
    }

    /// The size of `p` when the verity store decides it: one of the pair, or the B slot of
    /// one (as large as its A slot).
    pub(crate) fn size_of(&self, p: &Partition) -> Option<u64> {
        let a = match (p.contents, p.slot_of.as_deref()) {
            (crate::format::Contents::Empty, Some(of)) => of,
            _ => p.name.as_str(),
        };
        if a == self.data_partition {
            Some(self.data_partition_size)
        } else if a == self.hash_partition {
            Some(self.hash_partition_size)
        } else {
            None
        }
    }

    /// The GPT name of `p`: slot A's names from the image id and version, `_empty` for a B
    /// slot, else the format's name.
    pub(crate) fn gpt_name(&self, p: &Partition) -> Option<String> {
        let (data, hash) = self.slot_labels.as_ref()?;
        if p.contents == crate::format::Contents::Empty {
            Some(EMPTY_LABEL.into())
        } else if p.name == self.data_partition {
            Some(data.clone())
        } else if p.name == self.hash_partition {
            Some(hash.clone())
        } else {
            None
        }
    }
}

/// The kernel command line arguments that have the initrd open the verity store: one,
/// `usrhash=<root hash in hex>` (systemd's `systemd-veritysetup-generator` finds the `usr`
/// partition and its `usr-verity` partner by the UUIDs the root hash gives). Every boot path
/// that names the store (the systemd-boot entry, a UKI's `.cmdline`) takes its arguments from
/// here.
pub fn cmdline_args(info: &VerityInfo) -> Vec<String> {
    vec![format!("usrhash={}", info.root_hash)]
}

/// The manifest's `verity` object: the tree's parameters and where its two partitions lie.
#[derive(Clone, Debug, Serialize)]
pub struct VerityManifest {
    /// The root hash, 64 hex digits (`veritysetup verify DATA HASH ROOT_HASH`).
    pub root_hash: String,
    /// The salt, in hex (as `veritysetup --salt=` takes it).
    pub salt: String,
    /// The hash algorithm: `sha256`.
    pub hash_algorithm: String,
    /// Bytes per data block and per hash block (4096).
    pub block_size: u64,
    /// Data blocks protected: the whole data partition.
    pub data_blocks: u64,
    /// The UUID in the hash area's superblock.
    pub superblock_uuid: String,
    /// Bytes of the store image at the data partition's start (the rest of it is zeros).
    pub store_image_size: u64,
    /// The kernel command line arguments the boot entry carries ([`cmdline_args`]).
    pub command_line: Vec<String>,
    /// The data partition (the store image).
    pub data: VerityPartition,
    /// The hash partition (superblock and hash levels).
    pub hash: VerityPartition,
}

/// One partition of a verity pair in the manifest.
#[derive(Clone, Debug, Serialize)]
pub struct VerityPartition {
    /// The partition's (GPT) name.
    pub name: String,
    /// Its number in the table, from 1.
    pub number: usize,
    /// Its first byte on the disk.
    pub offset: u64,
    /// Its length in bytes.
    pub size: u64,
    /// Its GPT partition UUID, derived from the root hash.
    pub uuid: String,
}

impl VerityManifest {
    /// The manifest's account of `info`, its partitions placed by `layout`.
    pub(crate) fn new(info: &VerityInfo, layout: &Layout) -> VerityManifest {
        let uuids = info.partition_uuids();
        let part = |name: &str, uuid: Uuid| {
            let pl = layout
                .partitions
                .iter()
                .find(|p| p.name == name)
                .expect("the layout places every partition of the format");
            VerityPartition {
                name: name.to_string(),
                number: pl.number,
                offset: pl.start,
                size: pl.size,
                uuid: uuid.to_string(),
            }
        };
        VerityManifest {
            root_hash: info.root_hash.to_hex(),
            salt: info.salt.to_hex(),
            hash_algorithm: "sha256".into(),
            block_size: verity::BLOCK_SIZE,
            data_blocks: info.data_size / verity::BLOCK_SIZE,
            superblock_uuid: info.superblock_uuid.to_string(),
            store_image_size: info.store_image_size,
            command_line: cmdline_args(info),
            data: part(&info.data_partition, uuids.data),
            hash: part(&info.hash_partition, uuids.verity),
        }
    }
}

/// The verity store of a build: the store image (its temporary file removed when this is
/// dropped), the hash area's bytes and what the plan reads of them.
pub(crate) struct VerityStore {
    pub image: StoreImage,
    pub hash_area: Arc<[u8]>,
    pub info: VerityInfo,
}

/// For a format with a `store` partition: the store image written to `path`, hashed in one
/// ordered read, and its hash tree; `slot_labels`, slot A's GPT names (data, hash) of a
/// format with B slots. `None` for every other format.
pub(crate) fn prepare(
    cx: &Context,
    inputs: &Inputs,
    path: &Path,
    slot_labels: Option<(String, String)>,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<Option<VerityStore>> {
    let format = cx.format;
    let (Some((_, data)), Some((_, hash))) = (format.store_partition(), format.verity_partition())
    else {
        return Ok(None);
    };
    let tree = store_image::usr_tree(cx, inputs, cancel)?;
    let image = store_image::write_tree(cx, &tree, path, reporter, cancel)?;
    drop(tree);
    let verity_err = |source| Error::Verity {
        partition: data.name.clone(),
        source,
    };
    // The whole partition is protected: the image, then zeros to the alignment.
    let data_size = align_up(
        align_up(image.size, verity::BLOCK_SIZE),
        format.table.align.0,
    );
    let params = Params {
        salt: Salt::new(&cx.ids.verity_salt(&data.name)).map_err(verity_err)?,
        uuid: cx.ids.verity_superblock_uuid(&data.name),
    };
    let mut hasher = Hasher::with_data_size(params.clone(), data_size);
    let mut sha = Sha256::new();
    reporter.phase("hashing the store (dm-verity)", data_size);
    read_into(&image, &mut hasher, &mut sha, reporter, cancel)?;
    let pad = data_size - image.size;
    hasher.push_zeros(pad);
    sha_zeros(&mut sha, pad);
    // The file becomes the partition's protected bytes (the `.usr.raw` artifact): the zeros
    // after the image, as a hole.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image.path)
        .and_then(|f| f.set_len(data_size))
        .map_err(|source| Error::Io {
            op: "padding the store image",
            path: image.path.clone(),
            source,
        })?;
    let tree = hasher.finish().map_err(verity_err)?;
    let align = format.table.align.0;
    let room = |p: &Partition| p.free.map_or(0, |b| b.0);
    let info = VerityInfo {
        data_partition: data.name.clone(),
        hash_partition: hash.name.clone(),
        root_hash: tree.root_hash(),
        salt: params.salt,
        superblock_uuid: params.uuid,
        store_image_size: image.size,
        data_size,
        data_sha256: sha.finalize().into(),
        hash_size: tree.len(),
        data_partition_size: align_up(data_size + room(data), align),
        hash_partition_size: align_up(tree.len() + room(hash), align),
        slot_labels,
    };
    Ok(Some(VerityStore {
        hash_area: tree.to_bytes().into(),
        image,
        info,
    }))
}

/// Pushes the store image's bytes into `hasher`, front to back, in one read of the file;
/// refuses a file that is not the size it was written with.
fn read_into(
    image: &StoreImage,
    hasher: &mut Hasher,
    sha: &mut Sha256,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<()> {
    let io_err = |source| Error::Io {
        op: "reading the store image",
        path: image.path.clone(),
        source,
    };
    let mut file = std::fs::File::open(&image.path).map_err(io_err)?;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        imgbuild_blockio::check_cancel(cancel).map_err(|_| Error::Interrupted)?;
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        hasher.push(&buf[..n]);
        sha.update(&buf[..n]);
        reporter.add(n as u64);
        total += n as u64;
    }
    if total != image.size {
        return Err(io_err(std::io::Error::other(format!(
            "{total} bytes read, {} written",
            image.size
        ))));
    }
    Ok(())
}

/// Feeds `n` zero bytes to `sha`.
fn sha_zeros(sha: &mut Sha256, mut n: u64) {
    let zeros = [0u8; 64 << 10];
    while n > 0 {
        let k = n.min(zeros.len() as u64);
        sha.update(&zeros[..k as usize]);
        n -= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;

    fn info() -> VerityInfo {
        let mut h = [0u8; 32];
        h[0] = 0xab;
        h[31] = 0x01;
        VerityInfo {
            data_partition: "store".into(),
            hash_partition: "store-verity".into(),
            root_hash: RootHash(h),
            salt: Salt::new(&[1; 32]).unwrap(),
            superblock_uuid: Uuid::nil(),
            store_image_size: 5 * 4096,
            data_size: 1 << 20,
            data_sha256: [0; 32],
            hash_size: 3 * 4096,
            data_partition_size: 1 << 20,
            hash_partition_size: 1 << 20,
            slot_labels: None,
        }
    }

    #[test]
    fn the_command_line_carries_the_root_hash_as_usrhash() {
        let args = cmdline_args(&info());
        assert_eq!(args.len(), 1);
        let hex = args[0].strip_prefix("usrhash=").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("ab00") && hex.ends_with("0001"), "{hex}");
    }

    #[test]
    fn the_pair_gets_the_root_hash_halves_and_its_sizes() {
        let f = Format::load("appliance").unwrap();
        let i = info();
        let (data, hash) = (
            f.store_partition().unwrap().1,
            f.verity_partition().unwrap().1,
        );
        let (du, ds) = i.partition(data).unwrap();
        let (hu, hs) = i.partition(hash).unwrap();
        assert_eq!((ds, hs), (1 << 20, 1 << 20));
        assert_eq!(du.as_bytes()[0], 0xab);
        assert_eq!(hu.as_bytes()[15], 0x01);
        assert!(i.partition(f.root_partition()).is_none());
    }
}
