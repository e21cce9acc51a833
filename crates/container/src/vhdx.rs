//! VHDX (Microsoft's "[MS-VHDX] Virtual Hard Disk v2 (VHDX) File Format", version 1):
//! Hyper-V's disk format, written as a dynamic disk without log entries.
//!
//! Layout, every structure computed from the map's allocation before the first byte:
//! the file type identifier (64 KiB, creator `imgbuild`), two headers (4 KiB each, CRC-32C,
//! sequence numbers 1 and 2, no log to replay), two copies of the region table (BAT and
//! metadata regions, CRC-32C), an empty 1 MiB log, the metadata region (file parameters:
//! 2 MiB blocks; virtual size; disk id; 512-byte logical and 4096-byte physical sectors), the
//! block allocation table (payload entries, a sector-bitmap entry after every chunk of
//! 2048), then the 2 MiB blocks holding data, in disk order, each `FULLY_PRESENT` at its
//! MiB offset. Blocks not stored are `NOT_PRESENT`, which a dynamic disk reads as zeros.
//! The ids (disk id, file and data write GUIDs) derive from the id parameter; VHDX records
//! no time.

use std::io::Write;

use imgbuild_diskmap::{Map, Piece, Sink};
use uuid::{uuid, Uuid};

use crate::blocks::{Allocation, Stored};
use crate::{put, to_usize, DiskLimits, Out, Params, Result};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Payload block size.
pub const BLOCK: u64 = 2 * MIB;
const LOGICAL_SECTOR: u64 = 512;
const PHYSICAL_SECTOR: u32 = 4096;
/// Payload blocks per sector-bitmap block: 2^23 sectors of the logical size.
const CHUNK_RATIO: u64 = (1 << 23) * LOGICAL_SECTOR / BLOCK;
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u64 = MIB;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u64 = MIB;
const BAT_OFFSET: u64 = 3 * MIB;
const PAYLOAD_BLOCK_FULLY_PRESENT: u64 = 6;
/// The largest virtual disk VHDX describes: 64 TiB.
const MAX_DISK: u64 = 64 << 40;

// GUIDs as the specification writes them; stored in Microsoft's mixed-endian form
// (`Uuid::to_bytes_le`).
const BAT_REGION: Uuid = uuid!("2DC27766-F623-4200-9D64-115E9BFD4A08");
const METADATA_REGION: Uuid = uuid!("8B7CA206-4790-4B9A-B8FE-575F050F886E");
const FILE_PARAMETERS: Uuid = uuid!("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
const VIRTUAL_DISK_SIZE: Uuid = uuid!("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
const VIRTUAL_DISK_ID: Uuid = uuid!("BECA12AB-B2E6-4523-93EF-C309E000C746");
const LOGICAL_SECTOR_SIZE: Uuid = uuid!("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
const PHYSICAL_SECTOR_SIZE: Uuid = uuid!("CDA348C7-445D-4471-9CC9-E9885251C556");

/// A GUID of its own for each use of the id parameter.
fn id_for(params: &Params, what: u8) -> [u8; 16] {
    let mut g = params.id;
    g[15] ^= what;
    // RFC 4122 variant and a "random" version, as Windows makes them.
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

fn crc_into(buf: &mut [u8], at: usize) {
    let sum = crc32c::crc32c(buf);
    put(buf, at, &sum.to_le_bytes());
}

fn header(params: &Params, sequence: u64) -> Vec<u8> {
    let mut h = vec![0u8; to_usize(4 * KIB)];
    put(&mut h, 0, b"head");
    put(&mut h, 8, &sequence.to_le_bytes());
    put(&mut h, 16, &id_for(params, 1)); // FileWriteGuid
    put(&mut h, 32, &id_for(params, 2)); // DataWriteGuid
                                         // LogGuid zero: no log to replay. LogVersion 0, Version 1.
    put(&mut h, 66, &1u16.to_le_bytes());
    put(
        &mut h,
        68,
        &u32::try_from(LOG_LENGTH).expect("1 MiB").to_le_bytes(),
    );
    put(&mut h, 72, &LOG_OFFSET.to_le_bytes());
    crc_into(&mut h, 4);
    h
}

fn region_table(bat_length: u64) -> Vec<u8> {
    let mut r = vec![0u8; to_usize(64 * KIB)];
    put(&mut r, 0, b"regi");
    put(&mut r, 8, &2u32.to_le_bytes());
    for (i, (g, offset, len)) in [
        (BAT_REGION, BAT_OFFSET, bat_length),
        (METADATA_REGION, METADATA_OFFSET, METADATA_LENGTH),
    ]
    .into_iter()
    .enumerate()
    {
        let at = 16 + i * 32;
        put(&mut r, at, &g.to_bytes_le());
        put(&mut r, at + 16, &offset.to_le_bytes());
        put(
            &mut r,
            at + 24,
            &u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes(),
        );
        put(&mut r, at + 28, &1u32.to_le_bytes()); // required
    }
    crc_into(&mut r, 4);
    r
}

fn metadata(params: &Params) -> Vec<u8> {
    let mut m = vec![0u8; to_usize(METADATA_LENGTH)];
    put(&mut m, 0, b"metadata");
    let mut params_item = [0u8; 8];
    params_item[..4].copy_from_slice(&u32::try_from(BLOCK).expect("2 MiB").to_le_bytes());
    let items: [(Uuid, Vec<u8>, u32); 5] = [
        // IsRequired.
        (FILE_PARAMETERS, params_item.to_vec(), 0b100),
        // IsVirtualDisk | IsRequired.
        (
            VIRTUAL_DISK_SIZE,
            params.disk_size.to_le_bytes().to_vec(),
            0b110,
        ),
        (VIRTUAL_DISK_ID, id_for(params, 3).to_vec(), 0b110),
        (
            LOGICAL_SECTOR_SIZE,
            u32::try_from(LOGICAL_SECTOR)
                .expect("512")
                .to_le_bytes()
                .to_vec(),
            0b110,
        ),
        (
            PHYSICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR.to_le_bytes().to_vec(),
            0b110,
        ),
    ];
    put(
        &mut m,
        10,
        &u16::try_from(items.len()).expect("5 items").to_le_bytes(),
    );
    let mut data_at = 64 * to_usize(KIB);
    for (i, (g, data, flags)) in items.iter().enumerate() {
        let at = 32 + i * 32;
        put(&mut m, at, &g.to_bytes_le());
        // Offsets and lengths inside the 1 MiB metadata region.
        let fit = |n: usize| u32::try_from(n).expect("inside the metadata region");
        put(&mut m, at + 16, &fit(data_at).to_le_bytes());
        put(&mut m, at + 20, &fit(data.len()).to_le_bytes());
        put(&mut m, at + 24, &flags.to_le_bytes());
        put(&mut m, data_at, data);
        data_at += data.len().next_multiple_of(8);
    }
    m
}

/// A dynamic VHDX of the map's disk, written front to back into `W`.
pub struct Vhdx<W: Write>(Stored<W>);

impl<W: Write + Send> Vhdx<W> {
    /// Writes every structure before the payload into `w` at once; the blocks follow as the
    /// disk streams in.
    pub fn new(map: &Map, params: &Params, w: W) -> Result<Self> {
        DiskLimits {
            format: "vhdx",
            sector: LOGICAL_SECTOR,
            max: MAX_DISK,
            hint: "",
        }
        .check(params.disk_size)?;
        let alloc = Allocation::of(map, BLOCK);
        let payload = params.disk_size.div_ceil(BLOCK);
        let entries = payload + payload.saturating_sub(1) / CHUNK_RATIO;
        let bat_length = (entries * 8).next_multiple_of(MIB);
        let mut bat = vec![0u8; to_usize(bat_length)];
        let first = BAT_OFFSET + bat_length;
        for (n, b) in alloc.blocks().enumerate() {
            let offset = first + n as u64 * BLOCK;
            // Payload entry `b` sits after b / CHUNK_RATIO sector-bitmap entries.
            let index = b + b / CHUNK_RATIO;
            let entry = offset | PAYLOAD_BLOCK_FULLY_PRESENT;
            put(&mut bat, to_usize(index * 8), &entry.to_le_bytes());
        }

        let mut out = Out::new(w, "vhdx");
        let mut ident = vec![0u8; to_usize(64 * KIB)];
        put(&mut ident, 0, b"vhdxfile");
        let creator: Vec<u8> = "imgbuild"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        put(&mut ident, 8, &creator);
        out.put(&ident)?;
        out.put(&header(params, 1))?;
        out.zeros(60 * KIB)?;
        out.put(&header(params, 2))?;
        out.zeros(60 * KIB)?;
        let regions = region_table(bat_length);
        out.put(&regions)?;
        out.put(&regions)?;
        out.zeros(LOG_OFFSET - out.pos)?;
        out.zeros(LOG_LENGTH)?;
        out.put(&metadata(params))?;
        out.put(&bat)?;
        debug_assert_eq!(out.pos, first);
        Ok(Vhdx(Stored::new(out, alloc, params.disk_size)))
    }

    /// The writer, once the stream has finished the sink.
    pub fn into_inner(self) -> W {
        self.0.out.w
    }
}

impl<W: Write + Send> Sink for Vhdx<W> {
    fn name(&self) -> String {
        "writing the VHDX image".into()
    }

    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.piece(p)?)
    }

    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.finish()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stored_mixed_endian() {
        let g = BAT_REGION.to_bytes_le();
        assert_eq!(
            g,
            [
                0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD,
                0x4A, 0x08
            ]
        );
    }

    #[test]
    fn headers_and_region_tables_carry_their_crc32c() {
        let p = Params {
            disk_size: 1 << 30,
            id: [9; 16],
            time: 0,
        };
        let mut h = header(&p, 1);
        let sum = u32::from_le_bytes(h[4..8].try_into().unwrap());
        h[4..8].fill(0);
        assert_eq!(sum, crc32c::crc32c(&h));
        let mut r = region_table(MIB);
        let sum = u32::from_le_bytes(r[4..8].try_into().unwrap());
        r[4..8].fill(0);
        assert_eq!(sum, crc32c::crc32c(&r));
    }
}
