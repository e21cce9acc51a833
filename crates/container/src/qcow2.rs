//! qcow2 version 3 (QEMU's `docs/interop/qcow2.txt`): 64 KiB clusters, 16-bit refcounts, no
//! backing file, snapshots, compression, encryption or header extensions.
//!
//! Layout, every table computed from the map's allocation before the first byte is written:
//! cluster 0 the header; the L1 table; the refcount table; the refcount blocks; the L2 tables
//! (one for each 512 MiB of the disk that holds data, in disk order); then the data clusters
//! in disk order. Clusters not stored read as zeros (there is no backing file). Every stored
//! cluster has refcount 1, so L1 and L2 entries carry `OFLAG_COPIED`, as `qemu-img check`
//! expects of an image without snapshots.

use std::io::Write;

use imgbuild_diskmap::{Map, Piece, Sink};

use crate::blocks::{Allocation, Stored};
use crate::{put, to_usize, Out, Params, Result};

const CLUSTER_BITS: u32 = 16;
/// Cluster size: 64 KiB, qemu-img's default.
pub const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// 8-byte entries per L1/L2 table cluster.
const ENTRIES: u64 = CLUSTER / 8;
/// 16-bit refcounts per refcount block.
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
const OFLAG_COPIED: u64 = 1 << 63;
const MAGIC: &[u8; 4] = b"QFI\xfb";
/// A version 3 header without the optional compression-type field.
const HEADER_LENGTH: u32 = 104;
const REFCOUNT_ORDER: u32 = 4;

/// Where everything goes, in clusters.
#[derive(Debug)]
struct Layout {
    l1_entries: u64,
    l1: u64,
    l1_clusters: u64,
    refcount_table: u64,
    refcount_table_clusters: u64,
    refcount_blocks: u64,
    refcount_block_count: u64,
    l2: u64,
    /// The L1 slots that have an L2 table, in order.
    l2_slots: Vec<u64>,
    data: u64,
    total: u64,
}

impl Layout {
    fn of(disk_size: u64, alloc: &Allocation) -> Layout {
        let l1_entries = disk_size.div_ceil(CLUSTER).div_ceil(ENTRIES).max(1);
        let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER);
        let mut l2_slots: Vec<u64> = Vec::new();
        for &(a, b) in &alloc.ranges {
            for s in a / ENTRIES..=b / ENTRIES {
                if l2_slots.last() != Some(&s) {
                    l2_slots.push(s);
                }
            }
        }
        let others = 1 + l1_clusters + l2_slots.len() as u64 + alloc.count();
        // The refcount structures count themselves: find the fixed point.
        let (mut blocks, mut table) = (1, 1);
        loop {
            let b = (others + blocks + table).div_ceil(REFCOUNTS_PER_BLOCK);
            let t = (b * 8).div_ceil(CLUSTER);
            if (b, t) == (blocks, table) {
                break;
            }
            (blocks, table) = (b, t);
        }
        let l1 = 1;
        let refcount_table = l1 + l1_clusters;
        let refcount_blocks = refcount_table + table;
        let l2 = refcount_blocks + blocks;
        let data = l2 + l2_slots.len() as u64;
        Layout {
            l1_entries,
            l1,
            l1_clusters,
            refcount_table,
            refcount_table_clusters: table,
            refcount_blocks,
            refcount_block_count: blocks,
            l2,
            data,
            total: data + alloc.count(),
            l2_slots,
        }
    }
}

/// A qcow2 image of the map's disk, written front to back into `W`.
pub struct Qcow2<W: Write>(Stored<W>);

impl<W: Write + Send> Qcow2<W> {
    /// Writes the header and every table into `w` at once; the data clusters follow as the
    /// disk streams in.
    pub fn new(map: &Map, params: &Params, w: W) -> Result<Self> {
        let alloc = Allocation::of(map, CLUSTER);
        let lay = Layout::of(params.disk_size, &alloc);
        let mut out = Out::new(w, "qcow2");
        out.put(&header(params.disk_size, &lay))?;
        out.zeros(CLUSTER - u64::from(HEADER_LENGTH))?;

        let mut l1 = vec![0u8; to_usize(lay.l1_clusters * CLUSTER)];
        for (i, &slot) in lay.l2_slots.iter().enumerate() {
            let at = (lay.l2 + i as u64) * CLUSTER;
            put(
                &mut l1,
                to_usize(slot * 8),
                &(at | OFLAG_COPIED).to_be_bytes(),
            );
        }
        out.put(&l1)?;

        let mut table = vec![0u8; to_usize(lay.refcount_table_clusters * CLUSTER)];
        for i in 0..lay.refcount_block_count {
            let at = (lay.refcount_blocks + i) * CLUSTER;
            put(&mut table, to_usize(i * 8), &at.to_be_bytes());
        }
        out.put(&table)?;

        let mut refcounts = vec![0u8; to_usize(lay.refcount_block_count * CLUSTER)];
        for c in 0..lay.total {
            put(&mut refcounts, to_usize(c * 2), &1u16.to_be_bytes());
        }
        out.put(&refcounts)?;

        // L2 tables, one slot at a time, as the stored clusters come in disk order.
        let mut l2 = vec![0u8; to_usize(CLUSTER)];
        let mut slot = None;
        for (n, b) in alloc.blocks().enumerate() {
            let s = b / ENTRIES;
            if slot.is_some_and(|x| x != s) {
                out.put(&l2)?;
                l2.fill(0);
            }
            slot = Some(s);
            let at = (lay.data + n as u64) * CLUSTER;
            put(
                &mut l2,
                to_usize(b % ENTRIES * 8),
                &(at | OFLAG_COPIED).to_be_bytes(),
            );
        }
        if slot.is_some() {
            out.put(&l2)?;
        }
        debug_assert_eq!(out.pos, lay.data * CLUSTER);
        Ok(Qcow2(Stored::new(out, alloc, params.disk_size)))
    }

    /// The writer, once the stream has finished the sink.
    pub fn into_inner(self) -> W {
        self.0.out.w
    }
}

fn header(size: u64, lay: &Layout) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LENGTH as usize];
    put(&mut h, 0, MAGIC);
    put(&mut h, 4, &3u32.to_be_bytes());
    put(&mut h, 20, &CLUSTER_BITS.to_be_bytes());
    put(&mut h, 24, &size.to_be_bytes());
    let l1_entries = u32::try_from(lay.l1_entries).unwrap_or(u32::MAX);
    put(&mut h, 36, &l1_entries.to_be_bytes());
    put(&mut h, 40, &(lay.l1 * CLUSTER).to_be_bytes());
    put(&mut h, 48, &(lay.refcount_table * CLUSTER).to_be_bytes());
    let rt = u32::try_from(lay.refcount_table_clusters).unwrap_or(u32::MAX);
    put(&mut h, 56, &rt.to_be_bytes());
    put(&mut h, 96, &REFCOUNT_ORDER.to_be_bytes());
    put(&mut h, 100, &HEADER_LENGTH.to_be_bytes());
    h
}

impl<W: Write + Send> Sink for Qcow2<W> {
    fn name(&self) -> String {
        "writing the qcow2 image".into()
    }

    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.piece(p)?)
    }

    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.finish()?)
    }
}
