//! ISO 9660 volume descriptors (ECMA-119 8) and the El Torito boot catalog: parsed from
//! bytes, every number checked against the block it lies in.

use serde::Serialize;

use crate::bytes::{be32, le16, le32};

/// Logical block size read (ECMA-119 allows others; every CD and ISO file uses 2048).
pub(crate) const BLOCK: u64 = 2048;
/// The first volume descriptor's block.
pub(crate) const FIRST_VD: u64 = 16;
/// Volume descriptors read before giving up on a terminator.
pub(crate) const MAX_VDS: u64 = 64;

/// What the image's ISO 9660 volume says, for `inspect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IsoFacts {
    /// Rock Ridge found (an `SP` on the root and an `ER` naming RRIP): names, modes,
    /// owners, symlinks and times come from it.
    pub rock_ridge: bool,
    /// A Joliet supplementary volume descriptor is present (not read: Rock Ridge or the
    /// ISO 9660 names are).
    pub joliet: bool,
    /// The El Torito boot catalog's entries, in catalog order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub el_torito: Vec<ElTorito>,
    /// Why the boot catalog the boot record points at could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub el_torito_error: Option<String>,
}

/// One El Torito boot entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ElTorito {
    /// `x86` (BIOS), `UEFI`, `PowerPC`, `Mac` or the platform id in hex.
    pub platform: String,
    /// Whether the entry is marked bootable (0x88).
    pub bootable: bool,
    /// `no emulation`, `1.2M floppy`, `1.44M floppy`, `2.88M floppy`, `hard disk`.
    pub media: String,
    /// First 2048-byte block of the boot image.
    pub load_lba: u32,
    /// 512-byte sectors loaded (0 is what some tools write for "the whole image").
    pub sectors: u16,
}

/// The primary volume descriptor's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pvd {
    /// Volume identifier, trailing spaces removed.
    pub volume_id: String,
    /// Blocks in the volume.
    pub blocks: u32,
    /// The root directory's record (34 bytes).
    pub root: [u8; 34],
}

/// Why the descriptors are not believed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VdError {
    /// A descriptor without `CD001`, or of an unknown version.
    #[error("volume descriptor {0} has no CD001 signature")]
    Signature(u64),
    /// Both-endian fields whose halves differ.
    #[error("primary volume descriptor: {what} is {le} little-endian but {be} big-endian")]
    Endian {
        /// The field.
        what: &'static str,
        /// Little-endian value.
        le: u32,
        /// Big-endian value.
        be: u32,
    },
    /// A logical block size other than 2048.
    #[error("logical block size {0} (only 2048 is read)")]
    BlockSize(u32),
    /// No primary volume descriptor before the terminator.
    #[error("no primary volume descriptor")]
    NoPrimary,
}

/// Reads a both-endian 32-bit field (ECMA-119 7.3.3), refusing halves that disagree.
pub(crate) fn both32(b: &[u8], what: &'static str) -> Result<u32, VdError> {
    let (le, be) = (le32(b, 0), be32(b, 4));
    if le == be {
        Ok(le)
    } else {
        Err(VdError::Endian { what, le, be })
    }
}

/// What one descriptor block is.
pub(crate) enum Descriptor {
    /// Type 255.
    Terminator,
    /// Type 1.
    Primary(Pvd),
    /// Type 0 with the El Torito identifier: the catalog's block.
    ElTorito(u32),
    /// Type 2 with a Joliet escape sequence.
    Joliet,
    /// Anything else.
    Other,
}

/// Parses the descriptor in `b` (one block), number `n` for messages.
pub(crate) fn descriptor(b: &[u8; 2048], n: u64) -> Result<Descriptor, VdError> {
    if &b[1..6] != b"CD001" {
        return Err(VdError::Signature(n));
    }
    Ok(match b[0] {
        255 => Descriptor::Terminator,
        1 => {
            let blocks = both32(&b[80..88], "volume space size")?;
            let (bs_le, bs_be) = (le16(b, 128), le16(b, 130).swap_bytes());
            if bs_le != bs_be {
                return Err(VdError::Endian {
                    what: "logical block size",
                    le: u32::from(bs_le),
                    be: u32::from(bs_be),
                });
            }
            if u64::from(bs_le) != BLOCK {
                return Err(VdError::BlockSize(u32::from(bs_le)));
            }
            let mut root = [0u8; 34];
            root.copy_from_slice(&b[156..190]);
            let volume_id = String::from_utf8_lossy(&b[40..72])
                .trim_end_matches([' ', '\0'])
                .to_string();
            Descriptor::Primary(Pvd {
                volume_id,
                blocks,
                root,
            })
        }
        0 if b[7..30].starts_with(b"EL TORITO SPECIFICATION") => {
            Descriptor::ElTorito(le32(b, 0x47))
        }
        2 if b[88..90] == [0x25, 0x2f] && matches!(b[90], 0x40 | 0x43 | 0x45) => Descriptor::Joliet,
        _ => Descriptor::Other,
    })
}

fn platform(id: u8) -> String {
    match id {
        0 => "x86".into(),
        1 => "PowerPC".into(),
        2 => "Mac".into(),
        0xef => "UEFI".into(),
        x => format!("0x{x:02x}"),
    }
}

fn entry(e: &[u8], platform_id: u8) -> ElTorito {
    ElTorito {
        platform: platform(platform_id),
        bootable: e[0] == 0x88,
        media: match e[1] & 0x0f {
            0 => "no emulation".into(),
            1 => "1.2M floppy".into(),
            2 => "1.44M floppy".into(),
            3 => "2.88M floppy".into(),
            4 => "hard disk".into(),
            x => format!("unknown media {x}"),
        },
        sectors: le16(e, 6),
        load_lba: le32(e, 8),
    }
}

/// The entries of a boot catalog (one block): the validation entry checked (header id 1,
/// key 55 AA, words summing to 0), the default entry, then every section's entries.
pub(crate) fn catalog(b: &[u8; 2048]) -> Result<Vec<ElTorito>, String> {
    let v = &b[..32];
    if v[0] != 1 || v[30..32] != [0x55, 0xaa] {
        return Err("the boot catalog has no validation entry".into());
    }
    let sum = v
        .chunks_exact(2)
        .fold(0u16, |s, w| s.wrapping_add(le16(w, 0)));
    if sum != 0 {
        return Err(format!(
            "the boot catalog's validation entry checksum is off by {sum:#06x}"
        ));
    }
    let mut out = vec![entry(&b[32..64], v[1])];
    let mut records = b[64..].chunks_exact(32);
    while let Some(h) = records.next() {
        if !matches!(h[0], 0x90 | 0x91) {
            break;
        }
        let n = le16(h, 2);
        let mut left = n;
        while left > 0 {
            let Some(e) = records.next() else {
                return Err(format!(
                    "a boot catalog section announces {n} entries past the catalog's block"
                ));
            };
            // Extension entries (0x44) continue the previous entry's selection criteria.
            if e[0] == 0x44 {
                continue;
            }
            out.push(entry(e, h[1]));
            left -= 1;
        }
        if h[0] == 0x91 {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_checks_its_validation_entry_and_sections() {
        let mut b = [0u8; 2048];
        b[0] = 1;
        b[30] = 0x55;
        b[31] = 0xaa;
        // Checksum word makes the sum zero.
        let sum = b[..32].chunks_exact(2).fold(0u16, |s, w| {
            s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        b[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
        b[32] = 0x88;
        b[38] = 4;
        b[40] = 30;
        b[64] = 0x91;
        b[65] = 0xef;
        b[66] = 1;
        b[96] = 0x88;
        b[102] = 0x40;
        b[104] = 40;
        let c = catalog(&b).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].platform.as_str(), c[0].load_lba, c[0].sectors),
            ("x86", 30, 4)
        );
        assert_eq!(
            (c[1].platform.as_str(), c[1].load_lba, c[1].sectors),
            ("UEFI", 40, 64)
        );
        b[66] = 200;
        assert!(catalog(&b).unwrap_err().contains("past the catalog"));
        b[28] ^= 1;
        assert!(catalog(&b).unwrap_err().contains("checksum"));
    }
}
