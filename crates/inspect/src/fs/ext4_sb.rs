//! The ext2/3/4 superblock (offsets from the kernel's `struct ext4_super_block`), parsed for
//! the facts `ext4-view` does not expose (size, use, inode counts, features) and to refuse
//! what would make `ext4-view` allocate in proportion to a number read from the image rather
//! than to the image (it reserves a vector for every block group descriptor).

use super::FsInfo;
use crate::bytes::{le16, le32};
use crate::error::{Error, Result, Where};
use crate::io::Slice;

/// The fields of the superblock this crate uses.
#[derive(Clone, Debug)]
pub(crate) struct Superblock {
    inodes_count: u64,
    blocks_count: u64,
    free_blocks: u64,
    free_inodes: u64,
    block_size: u64,
    blocks_per_group: u64,
    inodes_per_group: u64,
    first_data_block: u64,
    desc_size: u64,
    pub(super) inode_size: u64,
    compat: u32,
    incompat: u32,
    ro_compat: u32,
    uuid: [u8; 16],
    label: [u8; 16],
    part_size: u64,
}

const COMPAT: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];
const INCOMPAT: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
const RO_COMPAT: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x8000, "verity"),
    (0x10000, "orphan_present"),
];

impl Superblock {
    pub(crate) fn block_size(&self) -> u64 {
        self.block_size
    }
    pub(crate) fn inodes_per_group(&self) -> u64 {
        self.inodes_per_group
    }
    pub(crate) fn desc_size(&self) -> u64 {
        self.desc_size
    }
    pub(crate) fn first_data_block(&self) -> u64 {
        self.first_data_block
    }
    pub(crate) fn is64(&self) -> bool {
        self.incompat & 0x80 != 0
    }

    /// Reads and checks the superblock at byte 1024 of the partition.
    pub(crate) fn read(slice: &mut Slice, at: &Where) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            at: at.clone(),
            reason: format!("ext4 superblock: {reason}"),
        };
        let mut b = [0u8; 1024];
        slice
            .read_exact_at(1024, &mut b)
            .map_err(|source| Error::Io {
                at: at.clone(),
                source,
            })?;
        if le16(&b, 0x38) != 0xef53 {
            return Err(corrupt("no ext2/3/4 magic".into()));
        }
        let incompat = le32(&b, 0x60);
        let is64 = incompat & 0x80 != 0;
        let log = u64::from(le32(&b, 0x18));
        if log > 6 {
            return Err(corrupt(format!(
                "block size 2^{} is above 64 KiB",
                10 + log
            )));
        }
        let block_size = 1024u64 << log;
        let hi = |o| {
            if is64 {
                u64::from(le32(&b, o)) << 32
            } else {
                0
            }
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[0x68..0x78]);
        let mut label = [0u8; 16];
        label.copy_from_slice(&b[0x78..0x88]);
        let sb = Self {
            inodes_count: u64::from(le32(&b, 0x0)),
            blocks_count: u64::from(le32(&b, 0x4)) | hi(0x150),
            free_blocks: u64::from(le32(&b, 0xc)) | hi(0x158),
            free_inodes: u64::from(le32(&b, 0x10)),
            block_size,
            first_data_block: u64::from(le32(&b, 0x14)),
            blocks_per_group: u64::from(le32(&b, 0x20)),
            inodes_per_group: u64::from(le32(&b, 0x28)),
            desc_size: if is64 { u64::from(le16(&b, 0xfe)) } else { 32 },
            // Revision 0 filesystems have 128-byte inodes and no s_inode_size.
            inode_size: if u64::from(le32(&b, 0x4c)) == 0 {
                128
            } else {
                u64::from(le16(&b, 0x58))
            },
            compat: le32(&b, 0x5c),
            incompat,
            ro_compat: le32(&b, 0x64),
            uuid,
            label,
            part_size: slice.len(),
        };
        if sb.blocks_count == 0 || sb.blocks_per_group == 0 || sb.inodes_per_group == 0 {
            return Err(corrupt(format!(
                "{} blocks, {} blocks per group, {} inodes per group",
                sb.blocks_count, sb.blocks_per_group, sb.inodes_per_group
            )));
        }
        if sb.blocks_per_group > 8 * block_size || sb.inodes_per_group > 8 * block_size {
            return Err(corrupt(format!(
                "{} blocks and {} inodes per group do not fit a {block_size}-byte bitmap",
                sb.blocks_per_group, sb.inodes_per_group
            )));
        }
        Ok(sb)
    }

    pub(crate) fn groups(&self) -> u64 {
        self.blocks_count
            .saturating_sub(self.first_data_block)
            .div_ceil(self.blocks_per_group)
    }

    fn size(&self) -> u64 {
        self.blocks_count.saturating_mul(self.block_size)
    }

    /// Label, UUID, size, use and features.
    pub(crate) fn info(&self) -> FsInfo {
        let mut features = Vec::new();
        for (set, names) in [
            (self.compat, COMPAT),
            (self.incompat, INCOMPAT),
            (self.ro_compat, RO_COMPAT),
        ] {
            for &(bit, name) in names {
                if set & bit != 0 {
                    features.push(name.to_string());
                }
            }
        }
        let kind = if self.incompat & (0x40 | 0x80 | 0x200) != 0 {
            "ext4"
        } else if self.compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let label_len = self.label.iter().position(|&c| c == 0).unwrap_or(16);
        let label = String::from_utf8_lossy(&self.label[..label_len]).into_owned();
        FsInfo {
            summary: imgbuild_partition::FsSummary {
                kind: kind.into(),
                label: (!label.is_empty()).then_some(label),
                uuid: Some(uuid::Uuid::from_bytes(self.uuid).hyphenated().to_string()),
                size: self.size(),
            },
            used: self
                .blocks_count
                .saturating_sub(self.free_blocks)
                .saturating_mul(self.block_size),
            free: self.free_blocks.saturating_mul(self.block_size),
            block_size: self.block_size,
            inodes: Some(self.inodes_count),
            inodes_used: Some(self.inodes_count.saturating_sub(self.free_inodes)),
            features,
            iso9660: None,
            store_image: None,
            error: None,
        }
    }

    /// What must hold before `ext4-view` may load the filesystem.
    pub(super) fn check_loadable(&self, at: &Where) -> Result<()> {
        if self.size() > self.part_size {
            return Err(Error::Corrupt {
                at: at.clone(),
                reason: format!(
                    "the ext4 filesystem ({} bytes) is larger than its partition ({} bytes): truncated image?",
                    self.size(),
                    self.part_size
                ),
            });
        }
        // With the filesystem inside the partition, the descriptor table ext4-view allocates
        // is bounded by the partition size.
        let gdt = self.groups().saturating_mul(self.desc_size.max(32));
        if gdt > self.part_size {
            return Err(Error::Corrupt {
                at: at.clone(),
                reason: format!("{} block groups do not fit the partition", self.groups()),
            });
        }
        Ok(())
    }
}
