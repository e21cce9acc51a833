//! The hash tree: streamed level 0, upper levels at the end, the hash area's bytes.

use std::io::{self, Write};

use imgbuild_blockio::to_usize;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::{Error, Params, RootHash, Superblock, BLOCK_SIZE, DIGEST_SIZE, SUPERBLOCK_SIZE};

const BLOCK: usize = to_usize(BLOCK_SIZE);

/// Whole blocks below this count in one push are hashed on the calling thread: spreading a
/// few blocks over rayon costs more than it saves.
const PARALLEL_MIN_BLOCKS: usize = 16;

/// Size in bytes of the hash area (superblock block and every level) for `data_size` bytes of
/// data, computed from the size alone; equal to [`Tree::len`] of the same data.
pub fn hash_area_size(data_size: u64) -> Result<u64, Error> {
    let blocks = data_blocks(data_size)?;
    let hash_blocks = level_sizes(blocks)
        .iter()
        .try_fold(1u64, |sum, &n| sum.checked_add(n))
        .and_then(|n| n.checked_mul(BLOCK_SIZE))
        .ok_or(Error::TooLarge { size: data_size })?;
    Ok(hash_blocks)
}

/// The number of data blocks of `data_size` bytes, refusing none or a partial last block.
fn data_blocks(data_size: u64) -> Result<u64, Error> {
    if data_size == 0 {
        return Err(Error::Empty);
    }
    let tail = data_size % BLOCK_SIZE;
    if tail != 0 {
        return Err(Error::PartialBlock {
            size: data_size,
            tail,
        });
    }
    Ok(data_size / BLOCK_SIZE)
}

/// Blocks per level for `blocks` data blocks, level 0 first: `ceil(blocks / 128^(i + 1))`
/// down to the single top block; none for a single data block.
fn level_sizes(blocks: u64) -> Vec<u64> {
    let per = crate::HASHES_PER_BLOCK;
    let mut sizes = Vec::new();
    let mut n = blocks;
    while n > 1 {
        n = n.div_ceil(per);
        sizes.push(n);
    }
    sizes
}

/// Computes a hash tree from the data, pushed in order in pieces of any size.
///
/// Memory: the level-0 hashes (32 bytes per 4 KiB block of data, 1/128 of it) and at most one
/// partial block; the data is never kept or read twice.
pub struct Hasher {
    params: Params,
    /// `SHA-256` with the salt already absorbed, cloned for every block.
    salted: Sha256,
    /// Level 0 so far: one digest per whole data block, in order.
    level0: Vec<u8>,
    /// Bytes of a block not yet complete (fewer than 4096).
    partial: Vec<u8>,
    /// Whole data blocks hashed so far.
    blocks: u64,
}

impl Hasher {
    /// A hasher for data to be protected with `params`' salt and superblock UUID.
    pub fn new(params: Params) -> Self {
        let salted = Sha256::new_with_prefix(params.salt.as_bytes());
        Self {
            params,
            salted,
            level0: Vec::new(),
            partial: Vec::with_capacity(BLOCK),
            blocks: 0,
        }
    }

    /// A hasher whose level-0 storage is reserved up front for `data_size` bytes.
    pub fn with_data_size(params: Params, data_size: u64) -> Self {
        let mut h = Self::new(params);
        let digests = data_size / BLOCK_SIZE * DIGEST_SIZE as u64;
        h.level0.reserve(to_usize(digests));
        h
    }

    /// Bytes of data pushed so far.
    pub fn data_len(&self) -> u64 {
        self.blocks * BLOCK_SIZE + self.partial.len() as u64
    }

    /// Takes the next `data` bytes (any length; blocks may straddle pushes). Whole blocks are
    /// hashed on rayon's current pool when there are enough of them; the digests are stored in
    /// data order whatever the pool's size.
    pub fn push(&mut self, mut data: &[u8]) {
        if !self.partial.is_empty() {
            let take = (BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < BLOCK {
                return;
            }
            let digest = hash_block(&self.salted, &self.partial);
            self.level0.extend_from_slice(&digest);
            self.blocks += 1;
            self.partial.clear();
        }
        let whole = data.len() / BLOCK * BLOCK;
        let (blocks, rest) = data.split_at(whole);
        let start = self.level0.len();
        self.level0.resize(start + whole / BLOCK * DIGEST_SIZE, 0);
        hash_blocks_into(&self.salted, blocks, &mut self.level0[start..]);
        self.blocks += (whole / BLOCK) as u64;
        self.partial.extend_from_slice(rest);
    }

    /// Takes the next `len` bytes as zeros without their being in memory (a hole or a free
    /// range of the disk map): the same tree as [`Hasher::push`] of `len` zero bytes, each
    /// whole zero block's digest computed once.
    pub fn push_zeros(&mut self, len: u64) {
        const ZEROS: [u8; BLOCK] = [0; BLOCK];
        let mut len = len;
        if !self.partial.is_empty() {
            let take = (BLOCK - self.partial.len()).min(to_usize(len));
            self.push(&ZEROS[..take]);
            len -= take as u64;
        }
        let whole = len / BLOCK_SIZE;
        if whole > 0 {
            let digest = hash_block(&self.salted, &ZEROS);
            self.level0.reserve(to_usize(whole * DIGEST_SIZE as u64));
            for _ in 0..whole {
                self.level0.extend_from_slice(&digest);
            }
            self.blocks += whole;
        }
        self.push(&ZEROS[..to_usize(len % BLOCK_SIZE)]);
    }

    /// The tree of everything pushed: upper levels, superblock and root hash. Refuses no data
    /// and a partial last block.
    pub fn finish(self) -> Result<Tree, Error> {
        let size = self.data_len();
        let blocks = data_blocks(size)?;
        let superblock = Superblock::new(&self.params, blocks);
        if blocks == 1 {
            // No level at all: the root hash is the one block's hash.
            let mut root = [0u8; DIGEST_SIZE];
            root.copy_from_slice(&self.level0);
            return Ok(Tree {
                superblock,
                levels: Vec::new(),
                root_hash: RootHash(root),
            });
        }
        let mut levels = vec![pad_to_block(self.level0)];
        while let Some(level) = levels.last().filter(|l| l.len() > BLOCK) {
            let up = pad_to_block(hash_blocks(&self.salted, level));
            levels.push(up);
        }
        let top = levels.last().map_or(&[][..], Vec::as_slice);
        let root_hash = RootHash(hash_block(&self.salted, top));
        levels.reverse();
        Ok(Tree {
            superblock,
            levels,
            root_hash,
        })
    }
}

/// `SHA-256(salt || block)`, from the salted state.
fn hash_block(salted: &Sha256, block: &[u8]) -> [u8; DIGEST_SIZE] {
    salted.clone().chain_update(block).finalize().into()
}

/// The digests of every whole block of `blocks` (a multiple of 4096 bytes), concatenated in
/// order.
fn hash_blocks(salted: &Sha256, blocks: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; blocks.len() / BLOCK * DIGEST_SIZE];
    hash_blocks_into(salted, blocks, &mut out);
    out
}

/// Writes the digest of each whole block of `blocks` into the matching 32 bytes of `out`; on
/// rayon's current pool when there are many, each digest in its own place whatever the pool.
fn hash_blocks_into(salted: &Sha256, blocks: &[u8], out: &mut [u8]) {
    if blocks.len() / BLOCK >= PARALLEL_MIN_BLOCKS {
        out.par_chunks_exact_mut(DIGEST_SIZE)
            .zip(blocks.par_chunks_exact(BLOCK))
            .for_each(|(d, b)| d.copy_from_slice(&hash_block(salted, b)));
    } else {
        for (d, b) in out
            .chunks_exact_mut(DIGEST_SIZE)
            .zip(blocks.chunks_exact(BLOCK))
        {
            d.copy_from_slice(&hash_block(salted, b));
        }
    }
}

/// `level` with zeros up to a whole number of blocks.
fn pad_to_block(mut level: Vec<u8>) -> Vec<u8> {
    let len = level.len().div_ceil(BLOCK) * BLOCK;
    level.resize(len, 0);
    level
}

/// A finished hash tree: the hash area's contents and the root hash.
#[derive(Clone, Debug)]
pub struct Tree {
    superblock: Superblock,
    /// In storage order: the top level first, level 0 last; each a whole number of blocks.
    levels: Vec<Vec<u8>>,
    root_hash: RootHash,
}

impl Tree {
    /// The root hash, which the kernel command line carries and the partition UUIDs derive from.
    pub fn root_hash(&self) -> RootHash {
        self.root_hash
    }

    /// The superblock at the start of the hash area.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// Size of the hash area in bytes: equal to [`hash_area_size`] of the data's size.
    pub fn len(&self) -> u64 {
        BLOCK_SIZE + self.levels.iter().map(|l| l.len() as u64).sum::<u64>()
    }

    /// Never true: a hash area always holds its superblock's block.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the hash area, front to back: the superblock's block, then the levels.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut first = [0u8; BLOCK];
        first[..SUPERBLOCK_SIZE].copy_from_slice(&self.superblock.encode());
        out.write_all(&first)?;
        for level in &self.levels {
            out.write_all(level)?;
        }
        Ok(())
    }

    /// The hash area as one buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(to_usize(self.len()));
        // Writing into a Vec cannot fail.
        let _ = self.write_to(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Salt;
    use uuid::Uuid;

    fn params(salt: &[u8]) -> Params {
        Params {
            salt: Salt::new(salt).unwrap(),
            uuid: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        }
    }

    fn tree_of(data: &[u8], salt: &[u8]) -> Tree {
        let mut h = Hasher::new(params(salt));
        h.push(data);
        h.finish().unwrap()
    }

    fn sha(parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    }

    #[test]
    fn level_sizes_follow_cryptsetup() {
        // levels = smallest L with (n - 1) >> 7L == 0; level i = ceil(n / 128^(i + 1)).
        for n in [
            1u64,
            2,
            127,
            128,
            129,
            16_384,
            16_385,
            2_097_152,
            2_097_153,
            1 << 40,
        ] {
            let mut levels = 0;
            while levels * 7 < 64 && (n - 1) >> (levels * 7) != 0 {
                levels += 1;
            }
            let want: Vec<u64> = (0..levels)
                .map(|i| n.div_ceil(1u64 << (7 * (i + 1))))
                .collect();
            assert_eq!(level_sizes(n), want, "{n} blocks");
        }
        assert_eq!(hash_area_size(4096), Ok(4096));
        assert_eq!(hash_area_size(128 * 4096), Ok(2 * 4096));
        assert_eq!(hash_area_size(129 * 4096), Ok(4 * 4096));
        assert_eq!(hash_area_size(0), Err(Error::Empty));
        assert_eq!(
            hash_area_size(4097),
            Err(Error::PartialBlock {
                size: 4097,
                tail: 1
            })
        );
        // The largest block count still has a size (about 1/127 of the data).
        let max = u64::MAX / 4096 * 4096;
        assert!(hash_area_size(max).unwrap() > max / 128);
    }

    proptest::proptest! {
        /// The size the planner is given before any byte is hashed is the size written.
        #[test]
        fn hash_area_size_is_the_trees_len(blocks in 1u64..40_000) {
            let mut h = Hasher::new(params(b"p"));
            h.push_zeros(blocks * BLOCK_SIZE);
            let tree = h.finish().unwrap();
            proptest::prop_assert_eq!(hash_area_size(blocks * BLOCK_SIZE), Ok(tree.len()));
            proptest::prop_assert_eq!(tree.to_bytes().len() as u64, tree.len());
        }
    }

    #[test]
    fn one_block_has_no_level_and_hashes_directly() {
        let data = imgbuild_testutil::noise(1, 4096);
        let t = tree_of(&data, b"salt");
        assert_eq!(t.root_hash().0, sha(&[b"salt", &data]));
        assert_eq!(t.len(), 4096);
        assert_eq!(t.to_bytes().len(), 4096);
    }

    #[test]
    fn two_levels_hash_blocks_of_hashes_salt_first() {
        let data = imgbuild_testutil::noise(2, 129 * 4096);
        let t = tree_of(&data, b"s");
        let bytes = t.to_bytes();
        assert_eq!(
            bytes.len() as u64,
            hash_area_size(data.len() as u64).unwrap()
        );
        // Superblock block, level 1 (one block), level 0 (two blocks).
        assert_eq!(bytes.len(), 4 * 4096);
        let level0 = &bytes[2 * 4096..];
        for (i, block) in data.chunks(4096).enumerate() {
            assert_eq!(
                &level0[i * 32..i * 32 + 32],
                &sha(&[b"s", block]),
                "block {i}"
            );
        }
        assert!(level0[129 * 32..].iter().all(|&b| b == 0));
        let level1 = &bytes[4096..2 * 4096];
        assert_eq!(&level1[..32], &sha(&[b"s", &level0[..4096]]));
        assert_eq!(&level1[32..64], &sha(&[b"s", &level0[4096..]]));
        assert!(level1[64..].iter().all(|&b| b == 0));
        assert_eq!(t.root_hash().0, sha(&[b"s", level1]));
        assert_eq!(Superblock::parse(&bytes).unwrap(), *t.superblock());
        assert!(bytes[SUPERBLOCK_SIZE..4096].iter().all(|&b| b == 0));
    }

    #[test]
    fn any_chunking_and_any_pool_give_the_same_bytes() {
        let data = imgbuild_testutil::noise(3, 300 * 4096);
        let whole = tree_of(&data, &[7; 32]).to_bytes();
        for cut in [1usize, 7, 4095, 4096, 4097, 65_536 + 3, 1 << 20] {
            let mut h = Hasher::new(params(&[7; 32]));
            for piece in data.chunks(cut) {
                h.push(piece);
            }
            h.push(&[]);
            assert_eq!(h.finish().unwrap().to_bytes(), whole, "pieces of {cut}");
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let bytes = pool.install(|| tree_of(&data, &[7; 32]).to_bytes());
            assert_eq!(bytes, whole, "{threads} threads");
        }
    }

    #[test]
    fn zeros_pushed_by_length_hash_as_zero_bytes() {
        let noise = imgbuild_testutil::noise(5, 3 * 4096 + 100);
        let mut data = noise.clone();
        data.resize(data.len() + 200 * 4096 + 3996, 0);
        data.extend_from_slice(&noise);
        let tail = 4096 - data.len() % 4096;
        data.resize(data.len() + tail, 0);
        let want = tree_of(&data, b"z").to_bytes();
        for split in [1u64, 96, 4096, 4097, 50_000] {
            let mut h = Hasher::new(params(b"z"));
            h.push(&noise);
            let mut zeros = 200 * 4096 + 3996;
            while zeros > 0 {
                let n = split.min(zeros);
                h.push_zeros(n);
                zeros -= n;
            }
            h.push(&noise);
            h.push_zeros(tail as u64);
            h.push_zeros(0);
            assert_eq!(h.data_len(), data.len() as u64);
            assert_eq!(
                h.finish().unwrap().to_bytes(),
                want,
                "zeros in pieces of {split}"
            );
        }
    }

    #[test]
    fn refuses_no_data_and_a_partial_block() {
        assert!(matches!(
            Hasher::new(params(b"")).finish(),
            Err(Error::Empty)
        ));
        let mut h = Hasher::new(params(b""));
        h.push(&[1; 6000]);
        assert_eq!(h.data_len(), 6000);
        assert_eq!(
            h.finish().unwrap_err(),
            Error::PartialBlock {
                size: 6000,
                tail: 1904
            }
        );
    }

    #[test]
    fn salt_and_uuid_change_what_they_should() {
        let data = imgbuild_testutil::noise(4, 3 * 4096);
        let a = tree_of(&data, b"a");
        let b = tree_of(&data, b"b");
        assert_ne!(a.root_hash(), b.root_hash());
        let mut h = Hasher::with_data_size(
            Params {
                uuid: Uuid::from_u128(1),
                ..params(b"a")
            },
            data.len() as u64,
        );
        h.push(&data);
        let c = h.finish().unwrap();
        assert_eq!(c.root_hash(), a.root_hash());
        assert_ne!(c.to_bytes(), a.to_bytes());
        assert_eq!(c.to_bytes()[4096..], a.to_bytes()[4096..]);
    }
}
