//! Every id in an image (GPT disk and partition GUIDs, the MBR disk signature, ext4 UUIDs and
//! hash seeds, FAT volume ids) derives from one seed, in this one place.
//!
//! The seed is `--seed` or `imgbuild:<format>:<toplevel>`. Each id is [`derive_id`] of the
//! seed and a purpose string; the purpose strings below are part of the output's definition:
//! renaming one changes every image.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A 16-byte id derived from `seed` and a purpose string `what`.
///
/// Definition (stable; changing it changes every image):
/// 1. `h = SHA-256( u64_le(seed.len()) || seed || what )` (the length prefix makes the
///    split between `seed` and `what` unambiguous);
/// 2. take `h[0..16]`;
/// 3. set the version nibble to 4 (`b[6] = b[6] & 0x0f | 0x40`) and the RFC 4122 variant
///    (`b[8] = b[8] & 0x3f | 0x80`), the same "v4-shaped" form systemd uses for its
///    hash-derived partition UUIDs.
///
/// The result is in RFC 4122 (big-endian, string) byte order.
pub fn derive_id(seed: &[u8], what: &str) -> [u8; 16] {
    let digest = derive_bytes32(seed, what);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// 32 bytes derived from `seed` and a purpose string `what`, for what is not an id (a
/// dm-verity salt).
///
/// Definition (stable): `SHA-256( u64_le(seed.len()) || seed || what )`, all 32 bytes, no
/// bits changed (the same hash [`derive_id`] takes its first 16 bytes of).
pub fn derive_bytes32(seed: &[u8], what: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((seed.len() as u64).to_le_bytes());
    hasher.update(seed);
    hasher.update(what.as_bytes());
    hasher.finalize().into()
}

/// The owner GUID of the EFI signature lists enrolling a Secure Boot certificate: derived
/// from the certificate's SHA-256 (not the image's seed), so every image signed with one key
/// enrols the same lists.
pub fn secure_boot_owner(cert_sha256: &[u8; 32]) -> Uuid {
    Uuid::from_bytes(derive_id(cert_sha256, "secure-boot-owner"))
}

/// The ids of one build.
#[derive(Clone, Debug)]
pub struct Ids {
    seed: Vec<u8>,
}

fn u32_of(id: [u8; 16]) -> u32 {
    u32::from_le_bytes([id[0], id[1], id[2], id[3]])
}

impl Ids {
    /// Ids from `seed` (`--seed`), or from the format name and the toplevel.
    pub fn new(seed: Option<&str>, format: &str, toplevel: &str) -> Ids {
        let seed = match seed {
            Some(s) => s.as_bytes().to_vec(),
            None => format!("imgbuild:{format}:{toplevel}").into_bytes(),
        };
        Ids { seed }
    }

    /// Ids from raw seed bytes.
    pub fn from_seed(seed: Vec<u8>) -> Ids {
        Ids { seed }
    }

    /// The seed every id derives from.
    pub fn seed(&self) -> &[u8] {
        &self.seed
    }

    fn id(&self, what: &str) -> [u8; 16] {
        derive_id(&self.seed, what)
    }

    /// The UUID of a filesystem `imgbuild ext4` makes, whose seed is its label and tree
    /// (`ext4_image::tree_seed`).
    pub fn ext4_image_uuid(&self) -> [u8; 16] {
        self.id("ext4-uuid")
    }

    /// The directory hash seed of a filesystem `imgbuild ext4` makes.
    pub fn ext4_image_hash_seed(&self) -> [u8; 16] {
        self.id("ext4-hash-seed")
    }

    /// The GPT disk GUID.
    pub fn gpt_disk_guid(&self) -> Uuid {
        Uuid::from_bytes(self.id("gpt-disk-guid"))
    }

    /// The GPT partition GUID of the partition named `partition`.
    pub fn gpt_partition_guid(&self, partition: &str) -> Uuid {
        Uuid::from_bytes(self.id(&format!("gpt-partition-guid:{partition}")))
    }

    /// The MBR disk signature, when `--disk-id` does not give one.
    pub fn mbr_disk_id(&self) -> u32 {
        u32_of(self.id("mbr-disk-id"))
    }

    /// The ext4 UUID of the filesystem in `partition`.
    pub fn ext4_uuid(&self, partition: &str) -> Uuid {
        Uuid::from_bytes(self.id(&format!("ext4-uuid:{partition}")))
    }

    /// The ext4 directory hash seed of the filesystem in `partition`.
    pub fn ext4_hash_seed(&self, partition: &str) -> [u8; 16] {
        self.id(&format!("ext4-hash-seed:{partition}"))
    }

    /// The container's own id (VHD unique id).
    pub fn container_id(&self) -> [u8; 16] {
        self.id("container-id")
    }

    /// The dm-verity salt of the hash area protecting `partition` (the data partition's
    /// name): 32 bytes, as systemd-repart's salts are.
    pub fn verity_salt(&self, partition: &str) -> [u8; 32] {
        derive_bytes32(&self.seed, &format!("verity-salt:{partition}"))
    }

    /// The UUID in the verity superblock of the hash area protecting `partition`.
    pub fn verity_superblock_uuid(&self, partition: &str) -> Uuid {
        Uuid::from_bytes(self.id(&format!("verity-uuid:{partition}")))
    }

    /// The FAT volume id of the filesystem in `partition`.
    pub fn fat_volume_id(&self, partition: &str) -> u32 {
        u32_of(self.id(&format!("fat-volume-id:{partition}")))
    }
}

/// A FAT volume id as blkid and fstab write it: `B3EC-AA3A`.
pub fn fat_volume_id_string(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_v4_shaped_and_separated() {
        let a = derive_id(b"seed", "esp");
        assert_eq!(a, derive_id(b"seed", "esp"));
        assert_ne!(a, derive_id(b"seed", "root"));
        assert_ne!(a, derive_id(b"seed2", "esp"));
        // The length prefix keeps `seed || what` splits apart.
        assert_ne!(derive_id(b"ab", "c"), derive_id(b"a", "bc"));
        let u = Uuid::from_bytes(a);
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn matches_an_external_sha256() {
        // printf '\x04\0\0\0\0\0\0\0seedesp' | sha256sum
        //   = 6568a149f4592681302b581772c70961475bf82f...
        // with the version nibble (0x26 -> 0x46) and variant bits (0x30 -> 0xb0) set:
        let got = Uuid::from_bytes(derive_id(b"seed", "esp"));
        assert_eq!(got.to_string(), "6568a149-f459-4681-b02b-581772c70961");
    }

    #[test]
    fn bytes32_is_the_whole_hash_derive_id_starts_from() {
        let b = derive_bytes32(b"seed", "esp");
        // The same SHA-256 as `matches_an_external_sha256`, unmasked.
        assert_eq!(b[..6], [0x65, 0x68, 0xa1, 0x49, 0xf4, 0x59]);
        assert_eq!(b[6], 0x26);
        let ids = Ids::from_seed(b"s".to_vec());
        assert_ne!(ids.verity_salt("store"), ids.verity_salt("other"));
        assert_ne!(
            ids.verity_salt("store")[..16],
            ids.verity_superblock_uuid("store").as_bytes()[..]
        );
    }

    #[test]
    fn default_seed_is_format_and_toplevel() {
        let a = Ids::new(None, "raw-efi", "/nix/store/x");
        let b = Ids::new(Some("imgbuild:raw-efi:/nix/store/x"), "other", "other");
        assert_eq!(a.seed(), b.seed());
        assert_eq!(fat_volume_id_string(0xB3EC_AA3A), "B3EC-AA3A");
    }
}
