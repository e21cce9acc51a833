//! GPT facts of a verity pair: the partition UUIDs derived from the root hash, and the type
//! GUIDs of the Discoverable Partitions Specification (UAPI group).
//!
//! systemd-repart, after formatting a `Verity=hash` partition, sets the data partition's UUID
//! to the first 16 bytes of the root hash and the hash partition's UUID to the last 16 bytes
//! (unless the definition sets a UUID), taken as bytes in RFC 4122 order, which is what the
//! specification asks for ("the first 128 bits of the root hash", "the final 128 bits"), so
//! `systemd-gpt-auto-generator` and `systemd-dissect` can find both from `roothash=` alone.
//! The UUIDs here are [`Uuid`]s in that order; in a GPT entry they are stored mixed-endian
//! (`Uuid::to_bytes_le`), as every partition UUID is.

use uuid::{uuid, Uuid};

use crate::RootHash;

/// The UUIDs of a verity pair's two partitions, derived from the root hash.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PartitionUuids {
    /// The data partition (`root`/`usr`): the root hash's first 16 bytes.
    pub data: Uuid,
    /// The hash partition (`root-verity`/`usr-verity`): the root hash's last 16 bytes.
    pub verity: Uuid,
}

impl RootHash {
    /// The partition UUIDs systemd-repart gives the data and hash partitions of this tree.
    pub fn partition_uuids(&self) -> PartitionUuids {
        let mut data = [0u8; 16];
        let mut verity = [0u8; 16];
        data.copy_from_slice(&self.0[..16]);
        verity.copy_from_slice(&self.0[16..]);
        PartitionUuids {
            data: Uuid::from_bytes(data),
            verity: Uuid::from_bytes(verity),
        }
    }
}

/// The CPU architecture a partition type is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Arch {
    /// x86-64 (`x86-64` in the specification).
    X86_64,
    /// 64-bit ARM (`arm64`, AArch64).
    Arm64,
}

/// What the data partition holds: the whole root file system, or `/usr` alone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Designator {
    /// The root file system (`root`, `roothash=` on the kernel command line).
    Root,
    /// The `/usr` file system (`usr`, `usrhash=`): where a NixOS store image goes.
    Usr,
}

/// The type GUIDs of a data partition and its verity partners, for one designator and one
/// architecture.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PartitionTypes {
    /// The data partition (`root-x86-64`, `usr-arm64`, ...).
    pub data: Uuid,
    /// The hash partition (`...-verity`): a verity superblock followed by the hash levels.
    pub verity: Uuid,
    /// The signature partition (`...-verity-sig`): JSON with the root hash and a PKCS#7
    /// signature of it, zero-padded.
    pub verity_sig: Uuid,
}

/// The Discoverable Partitions Specification's types for `designator` on `arch`.
pub const fn partition_types(designator: Designator, arch: Arch) -> PartitionTypes {
    match (designator, arch) {
        (Designator::Root, Arch::X86_64) => PartitionTypes {
            data: uuid!("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
            verity: uuid!("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"),
            verity_sig: uuid!("41092b05-9fc8-4523-994f-2def0408b176"),
        },
        (Designator::Root, Arch::Arm64) => PartitionTypes {
            data: uuid!("b921b045-1df0-41c3-af44-4c6f280d3fae"),
            verity: uuid!("df3300ce-d69f-4c92-978c-9bfb0f38d820"),
            verity_sig: uuid!("6db69de6-29f4-4758-a7a5-962190f00ce3"),
        },
        (Designator::Usr, Arch::X86_64) => PartitionTypes {
            data: uuid!("8484680c-9521-48c6-9c11-b0720656f69e"),
            verity: uuid!("77ff5f63-e7b6-4633-acf4-1565b864c0e6"),
            verity_sig: uuid!("e7bb33fb-06cf-4e81-8273-e543b413e2e2"),
        },
        (Designator::Usr, Arch::Arm64) => PartitionTypes {
            data: uuid!("b0e01050-ee5f-4390-949a-9101b17104e9"),
            verity: uuid!("6e11a4e7-fbca-4ded-b9e9-e1a512bb664e"),
            verity_sig: uuid!("c23ce4ff-44bd-4b00-b2d4-b41b3419e02a"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_the_halves_of_the_root_hash_in_rfc_order() {
        let mut h = [0u8; 32];
        for (i, b) in h.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap();
        }
        let u = RootHash(h).partition_uuids();
        assert_eq!(u.data.to_string(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(u.verity.to_string(), "10111213-1415-1617-1819-1a1b1c1d1e1f");
        // Concatenated, the two UUIDs' text is the root hash's hex (what repart reverses to
        // find the signature's root hash).
        let text = format!("{}{}", u.data.simple(), u.verity.simple());
        assert_eq!(text, RootHash(h).to_hex());
        // On disk (GPT), mixed-endian like every partition GUID.
        assert_eq!(&u.data.to_bytes_le()[..4], &[3, 2, 1, 0]);
    }

    #[test]
    fn types_are_the_specifications() {
        let all = [
            partition_types(Designator::Root, Arch::X86_64),
            partition_types(Designator::Root, Arch::Arm64),
            partition_types(Designator::Usr, Arch::X86_64),
            partition_types(Designator::Usr, Arch::Arm64),
        ];
        // Twelve distinct GUIDs.
        let mut ids: Vec<Uuid> = all
            .iter()
            .flat_map(|t| [t.data, t.verity, t.verity_sig])
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 12);
        // Spot checks against the table's text (root-x86-64 is also what gpt-auto mounts).
        assert_eq!(
            all[0].data,
            Uuid::parse_str("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709").unwrap()
        );
        assert_eq!(
            all[3].verity_sig.to_string(),
            "c23ce4ff-44bd-4b00-b2d4-b41b3419e02a"
        );
    }
}
