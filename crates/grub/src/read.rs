//! Reading a BIOS boot setup back from a disk: the core image's sector from `boot.img`, and
//! from the core's sectors what it holds (modules, prefix, embedded config). For `inspect`:
//! every size comes from the disk and is bounded before it is used.

use crate::core_img::{
    BLOCKLIST_ENTRY, COMPRESSED_SIZE_AT, DECOMPRESSOR_HEADER, MODULE_MAGIC, OBJ_CONFIG, OBJ_ELF,
    OBJ_PREFIX, RS_REDUNDANCY_AT, UNCOMPRESSED_SIZE_AT,
};
use crate::elf::to_usize;
use crate::{elf, lzma, Error, SECTOR};

/// What a core image holds, read from its sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreContents {
    /// The sectors `diskboot.img`'s first block list entry loads after itself.
    pub sectors: u16,
    /// The size of the LZMA payload.
    pub compressed_size: u32,
    /// The size the decompressor unpacks.
    pub uncompressed_size: u32,
    /// Bytes of Reed-Solomon redundancy after the image (0: none).
    pub redundancy: u32,
    /// The modules, by their `.modname`, in the image's order.
    pub modules: Vec<String>,
    /// The prefix (`-p`), if any.
    pub prefix: Option<String>,
    /// The embedded config (`-c`), if any, without its NUL padding.
    pub config: Option<Vec<u8>>,
}

fn le32(b: &[u8], at: usize) -> Result<u32, Error> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(Error::BadCore("truncated"))
}

/// The first sector of the core image that a GRUB `boot.img` in sector 0 loads.
pub fn core_sector(sector0: &[u8; SECTOR]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&sector0[0x5c..0x64]);
    u64::from_le_bytes(b)
}

/// Reads a core image from `core`: the bytes of its sectors from its first on (as many as
/// the caller read; at least what `diskboot.img`'s block list names). Only a core whose
/// sectors follow each other (embedded, as `grub-install` leaves it) is read.
pub fn read_core(core: &[u8]) -> Result<CoreContents, Error> {
    let entry = SECTOR - BLOCKLIST_ENTRY;
    let sectors = core
        .get(entry + 8..entry + 10)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(Error::BadCore("shorter than one sector"))?;
    let total = (usize::from(sectors) + 1) * SECTOR;
    let core = core
        .get(..total)
        .ok_or(Error::BadCore("shorter than its block list says"))?;
    let header = core
        .get(SECTOR..SECTOR + DECOMPRESSOR_HEADER)
        .ok_or(Error::BadCore("no decompressor header"))?;
    let compressed_size = le32(header, COMPRESSED_SIZE_AT)?;
    let uncompressed_size = le32(header, UNCOMPRESSED_SIZE_AT)?;
    let redundancy = le32(header, RS_REDUNDANCY_AT)?;
    let compressed = to_usize(compressed_size);
    // Where the image ends: given by the redundancy when there is some; otherwise in the
    // last sector, after its last non-zero byte (the image is padded with zeros), most
    // likely right after it. A candidate is the one when a raw LZMA stream (first byte 0)
    // starts there and unpacks to a well-formed module section.
    let ends: Vec<usize> = if redundancy > 0 {
        vec![total.saturating_sub(to_usize(redundancy))]
    } else {
        let after_data = core.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        (after_data.max(total - (SECTOR - 1))..=total).collect()
    };
    let min_start = SECTOR + DECOMPRESSOR_HEADER;
    for end in ends {
        let Some(start) = end.checked_sub(compressed).filter(|&s| s >= min_start) else {
            continue;
        };
        if core.get(start) != Some(&0) {
            continue;
        }
        let Ok(payload) = lzma::decompress(&core[start..end], to_usize(uncompressed_size)) else {
            continue;
        };
        if let Ok((modules, prefix, config)) = module_section(&payload) {
            return Ok(CoreContents {
                sectors,
                compressed_size,
                uncompressed_size,
                redundancy,
                modules,
                prefix,
                config,
            });
        }
    }
    Err(Error::BadCore("no LZMA payload with a module section"))
}

type Section = (Vec<String>, Option<String>, Option<Vec<u8>>);

/// The module section at the end of the payload: found as the last "gmim" whose size field
/// reaches exactly to the payload's end, then walked object by object.
fn module_section(payload: &[u8]) -> Result<Section, Error> {
    let magic = MODULE_MAGIC.to_le_bytes();
    let at = (0..payload.len().saturating_sub(11))
        .rev()
        .find(|&i| {
            payload[i..i + 4] == magic
                && le32(payload, i + 8).is_ok_and(|size| to_usize(size) == payload.len() - i)
        })
        .ok_or(Error::BadCore("no module section"))?;
    let section = &payload[at..];
    let mut pos = to_usize(le32(section, 4)?);
    let (mut modules, mut prefix, mut config) = (Vec::new(), None, None);
    while pos < section.len() {
        let kind = le32(section, pos)?;
        let size = to_usize(le32(section, pos + 4)?);
        let body = pos
            .checked_add(size)
            .filter(|&end| size >= 8 && end <= section.len())
            .map(|end| &section[pos + 8..end])
            .ok_or(Error::BadCore("a module object past the section's end"))?;
        let text = || body.split(|&b| b == 0).next().unwrap_or_default();
        match kind {
            OBJ_ELF => modules.push(elf::module_name(body).map_err(Error::BadCore)?),
            OBJ_PREFIX => prefix = Some(String::from_utf8_lossy(text()).into_owned()),
            OBJ_CONFIG => config = Some(text().to_vec()),
            _ => {}
        }
        // Objects are 4-byte aligned (FOR_MODULES rounds each size up).
        pos += size.div_ceil(4) * 4;
    }
    Ok((modules, prefix, config))
}
