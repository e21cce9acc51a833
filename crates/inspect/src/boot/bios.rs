//! GRUB for BIOS (i386-pc) on a disk: `boot.img` in sector 0, the core image it loads (where
//! it lies: a BIOS boot partition, the gap after the MBR, or inside a partition), what the
//! core holds (modules, prefix, embedded config, Reed-Solomon redundancy; read by
//! `imgbuild-grub`'s bounded readers), and which GRUB: the version in `modinfo.sh`, which
//! `grub-install` copies next to the modules in the prefix's directory (the core image
//! itself holds no version string).

use serde::Serialize;

use crate::bytes::to_usize;
use crate::error::chain;
use crate::fs::Filesystem;
use crate::io::Disk;
use crate::table::{Partition, TableKind, SECTOR};

/// GPT's type of a BIOS boot partition.
const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
/// The most sectors a core image takes (GRUB loads it below 0x78000, from 0x8000).
const MAX_CORE_SECTORS: u64 = (0x78000 - 0x8000) / 512;
/// The bytes of `boot.img`'s messages, at 0x180: how sector 0 is recognised as GRUB's.
const BOOT_IMG_MARK: &[u8] = b"GRUB \0Geom\0Hard Disk\0Read\0 Error";

/// GRUB for BIOS, as sector 0 and the core image show it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GrubBios {
    /// The sector `boot.img` loads the core image from.
    pub core_sector: u64,
    /// Where that is: `BIOS boot partition 1`, `MBR gap (before partition 1 at LBA 2048)`,
    /// `inside partition 2` (a block list install), or outside every partition.
    pub core_location: String,
    /// Sectors of the core image (its first included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_sectors: Option<u64>,
    /// The modules in the core, in their order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
    /// The prefix (`(,msdos1)/boot/grub`): where GRUB finds its modules and `grub.cfg`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The embedded config, if the core has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Bytes of Reed-Solomon redundancy after the core (0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redundancy: Option<u32>,
    /// GRUB's version (`grub_package_version` of `modinfo.sh` in the prefix's directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where the version was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_from: Option<String>,
    /// Why the core image could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// GRUB's `boot.img` in sector 0 of `disk`, and its core; `None` when sector 0 is not GRUB's.
pub(crate) fn grub_bios<'a>(
    disk: &Disk,
    table: TableKind,
    partitions: &[&Partition],
    filesystem: &dyn Fn(u32) -> Option<&'a Filesystem>,
) -> Option<GrubBios> {
    let mut s0 = [0u8; 512];
    disk.read_exact_at(0, &mut s0).ok()?;
    let is_grub = s0[510..] == [0x55, 0xaa]
        && s0.get(0x180..0x180 + BOOT_IMG_MARK.len()) == Some(BOOT_IMG_MARK);
    if !is_grub {
        return None;
    }
    let sector = imgbuild_grub::core_sector(&s0);
    let mut g = GrubBios {
        core_sector: sector,
        core_location: location(sector, table, partitions),
        ..GrubBios::default()
    };
    match read_core(disk, sector) {
        Ok((n, c)) => {
            g.core_sectors = Some(n);
            g.modules = c.modules;
            g.redundancy = Some(c.redundancy);
            g.config = c.config.map(|b| String::from_utf8_lossy(&b).into_owned());
            g.prefix = c.prefix;
        }
        Err(e) => g.error = Some(e),
    }
    if let Some(p) = &g.prefix {
        if let Some((v, from)) = version(p, filesystem) {
            g.version = Some(v);
            g.version_from = Some(from);
        }
    }
    Some(g)
}

/// Where sector `sector` lies on the disk.
fn location(sector: u64, table: TableKind, partitions: &[&Partition]) -> String {
    let lba = |p: &Partition| (p.entry.first_lba, p.entry.last_lba);
    if let Some(p) = partitions.iter().find(|p| {
        let (a, b) = lba(p);
        p.entry.number != 0 && (a..=b).contains(&sector)
    }) {
        return if table == TableKind::Gpt && p.entry.type_id.eq_ignore_ascii_case(BIOS_BOOT) {
            format!("BIOS boot partition {}", p.entry.number)
        } else {
            format!("inside partition {} (a block list install)", p.entry.number)
        };
    }
    let first = partitions
        .iter()
        .filter(|p| p.entry.number != 0)
        .map(|p| (p.entry.first_lba, p.entry.number))
        .min();
    match (table, first) {
        (TableKind::Mbr, Some((start, n))) if sector > 0 && sector < start => {
            format!("MBR gap (before partition {n} at LBA {start})")
        }
        (TableKind::None, _) => "no partition table".into(),
        _ => "outside every partition".into(),
    }
}

/// The core image's sector count and contents, read from `sector` (bounded by
/// [`MAX_CORE_SECTORS`]).
fn read_core(disk: &Disk, sector: u64) -> Result<(u64, imgbuild_grub::CoreContents), String> {
    let at = sector
        .checked_mul(SECTOR)
        .filter(|&a| a < disk.size())
        .ok_or_else(|| format!("the core image's sector {sector} is past the disk's end"))?;
    let mut first = vec![0u8; 512];
    disk.read_exact_at(at, &mut first)
        .map_err(|e| format!("reading the core image: {}", chain(&e)))?;
    // diskboot.img's block list entry (the last 12 bytes): its sector count at byte 8.
    let more = u64::from(u16::from_le_bytes([first[508], first[509]]));
    let n = (more + 1).min(MAX_CORE_SECTORS);
    let len = (n * SECTOR).min(disk.size() - at);
    let mut core = vec![0u8; to_usize(len)];
    disk.read_exact_at(at, &mut core)
        .map_err(|e| format!("reading the core image: {}", chain(&e)))?;
    let c = imgbuild_grub::read_core(&core).map_err(|e| chain(&e))?;
    Ok((u64::from(c.sectors) + 1, c))
}

/// `grub_package_version` (else `grub_version`) of `<dir>/i386-pc/modinfo.sh` on the
/// partition the prefix names (`(,msdos1)/boot/grub`, `(hd0,gpt2)/grub`), and that path.
fn version<'a>(
    prefix: &str,
    filesystem: &dyn Fn(u32) -> Option<&'a Filesystem>,
) -> Option<(String, String)> {
    let rest = prefix.strip_prefix('(')?;
    let (dev, dir) = rest.split_once(')')?;
    let part = dev.rsplit(',').next()?;
    let number: u32 = part
        .trim_start_matches(|c: char| c.is_ascii_alphabetic())
        .parse()
        .ok()?;
    let fs = filesystem(number)?;
    let path = format!("{}/i386-pc/modinfo.sh", dir.trim_end_matches('/'));
    let text = fs.read_to_vec(path.as_bytes(), 1 << 20).ok()?;
    let text = String::from_utf8_lossy(&text);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_matches(['"', '\'']).to_string())
            .filter(|v| !v.is_empty())
    };
    let v = value("grub_package_version").or_else(|| value("grub_version"))?;
    Some((v, format!("partition {number}: {path}")))
}
