//! Partition placement: pure arithmetic over the format file and the filesystems' sizes.

use crate::format::{Format, PartSize, TableType};
use crate::{Error, Result};

/// The sector size every table and offset uses.
pub const SECTOR: u64 = 512;
/// Blocks of the filesystems whose size we choose (ext4's block size).
pub const FS_BLOCK: u64 = 4096;

/// Where one partition lies on the disk.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLayout {
    /// 1-based, as in the table.
    pub number: usize,
    /// The format's partition name.
    pub name: String,
    /// Byte offset of the first sector.
    pub start: u64,
    /// Partition length in bytes.
    pub size: u64,
    /// Length of the filesystem in it (at most `size`).
    pub fs_size: u64,
}

/// The whole disk.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    /// The whole disk's size in bytes.
    pub disk_size: u64,
    /// The partitions, in table order.
    pub partitions: Vec<PartitionLayout>,
}

/// `x` rounded up to a multiple of `a`.
pub fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Bytes the table needs before the first partition and after the last.
pub fn table_overhead(kind: TableType) -> (u64, u64) {
    match kind {
        // Protective MBR + header + 128 entries of 128 bytes; backup entries + header.
        TableType::Gpt => (34 * SECTOR, 33 * SECTOR),
        TableType::Mbr => (SECTOR, 0),
    }
}

/// The largest disk imgbuild builds: 16 TiB. Planning holds a little state per ext4 block
/// group (128 MiB each), so this bounds the plan's memory (under 100 MiB at 16 TiB; `cargo
/// test` checks it, see `tests/e2e/bounds.rs`); ext4 itself, GPT and our writers go further.
pub const MAX_DISK_SIZE: u64 = 16 << 40;

/// An MBR addresses 2^32 sectors of 512 bytes: 2 TiB.
pub const MBR_MAX_SIZE: u64 = (1 << 32) * SECTOR;

/// The largest disk of a table type, and the limit's name for errors.
pub fn max_disk_size(kind: TableType) -> (u64, &'static str) {
    match kind {
        TableType::Gpt => (MAX_DISK_SIZE, "the largest disk imgbuild builds, 16 TiB"),
        TableType::Mbr => (
            MBR_MAX_SIZE,
            "what an MBR partition table addresses (2^32 sectors of 512 bytes, 2 TiB)",
        ),
    }
}

/// Refuses `size` (of `what`) above the table's limit.
fn check_max(kind: TableType, what: &str, size: u64) -> Result<()> {
    let (max, limit) = max_disk_size(kind);
    if size > max {
        return Err(Error::DiskTooBig {
            what: what.to_string(),
            size,
            max,
            limit,
        });
    }
    Ok(())
}

/// What the `auto` partition's filesystem needs.
pub trait AutoSize {
    /// The exact minimum filesystem size with `free` bytes of free space.
    fn min_size(&mut self, free: u64) -> Result<u64>;
}

impl<F: FnMut(u64) -> Result<u64>> AutoSize for F {
    fn min_size(&mut self, free: u64) -> Result<u64> {
        self(free)
    }
}

/// Refuses, before anything is planned, a `--size` or `--free` past the limits, or a
/// `--size` that is not whole sectors or not a multiple of the container's size-multiple.
fn check_disk_size(format: &Format, disk_size: Option<u64>, free: u64) -> Result<()> {
    let kind = format.table.kind;
    if let Some(d) = disk_size {
        check_max(kind, "--size", d)?;
    }
    check_max(kind, "--free", free)?;
    if let Some(d) = disk_size.filter(|d| d % SECTOR != 0) {
        return Err(Error::SizeNotSectors {
            size: d,
            sector: SECTOR,
        });
    }
    if let (Some(d), Some(m)) = (disk_size, format.container.size_multiple) {
        if !d.is_multiple_of(m.0) {
            return Err(Error::SizeNotContainerMultiple {
                size: d,
                multiple: m.0,
                format: format.name.clone(),
                container: format.container.kind.name(),
            });
        }
    }
    Ok(())
}

/// A partition's fixed start, refused when it overlaps what comes before or is not aligned.
fn fixed_start(p: &crate::format::Partition, start: u64, cursor: u64, align: u64) -> Result<u64> {
    if start < cursor {
        return Err(Error::PartitionOverlaps {
            name: p.name.clone(),
            start,
            free_from: cursor,
        });
    }
    if !start.is_multiple_of(align) {
        return Err(Error::PartitionUnaligned {
            name: p.name.clone(),
            start,
            align,
        });
    }
    Ok(start)
}

/// Place every partition. `size_of(i)` gives fixed partitions' sizes (format value or
/// command-line override); the `auto` partition (always last) fills the rest of a disk of
/// `disk_size` bytes, or, without one, gets its filesystem's minimum plus `free`.
pub fn compute(
    format: &Format,
    size_of: &dyn Fn(usize) -> Option<u64>,
    disk_size: Option<u64>,
    free: u64,
    auto: &mut dyn AutoSize,
) -> Result<Layout> {
    let align = format.table.align.0;
    // The whole disk's size: a multiple of the container's size-multiple (validated to be a
    // multiple of `align`), else of `align`.
    let disk_align = format.container.size_multiple.map_or(align, |m| m.0);
    let kind = format.table.kind;
    check_disk_size(format, disk_size, free)?;
    let (head, tail) = table_overhead(format.table.kind);
    let mut cursor = head;
    let mut parts = Vec::new();
    for (i, p) in format.partitions.iter().enumerate() {
        let start = match p.start {
            Some(s) => fixed_start(p, s.0, cursor, align)?,
            None => align_up(cursor, align),
        };
        let size = match p.size {
            PartSize::Auto if !p.sized_by_contents() => {
                let (disk, part) = match disk_size {
                    Some(d) => {
                        let min = auto.min_size(0)?;
                        let needed = align_up(start + min + tail, disk_align);
                        if d < needed {
                            return Err(Error::DiskTooSmall {
                                needed,
                                available: d,
                            });
                        }
                        (d, d - tail - start)
                    }
                    None => {
                        let min = auto.min_size(free)?;
                        let d = align_up(start + min + tail, disk_align);
                        check_max(kind, "the disk", d)?;
                        (d, d - tail - start)
                    }
                };
                parts.push(PartitionLayout {
                    number: i + 1,
                    name: p.name.clone(),
                    start,
                    size: part,
                    fs_size: part / FS_BLOCK * FS_BLOCK,
                });
                return Ok(Layout {
                    disk_size: disk,
                    partitions: parts,
                });
            }
            // Fixed, or a store or verity partition's `auto`: its contents' size, given as a
            // fixed one by `size_of`.
            _ => {
                let n = size_of(i).unwrap_or(0);
                check_max(kind, &format!("partition `{}`", p.name), n)?;
                if n == 0 || !n.is_multiple_of(SECTOR) {
                    return Err(Error::PartitionSize {
                        name: p.name.clone(),
                        size: n,
                    });
                }
                n
            }
        };
        parts.push(PartitionLayout {
            number: i + 1,
            name: p.name.clone(),
            start,
            size,
            fs_size: size,
        });
        cursor = start + size;
    }
    let needed = align_up(cursor + tail, disk_align);
    let disk = match disk_size {
        Some(d) if d < needed => {
            return Err(Error::DiskTooSmall {
                needed,
                available: d,
            })
        }
        Some(d) => d,
        None => needed,
    };
    check_max(kind, "the disk", disk)?;
    Ok(Layout {
        disk_size: disk,
        partitions: parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(name: &str) -> Format {
        Format::load(name).unwrap()
    }

    fn fixed(f: &Format) -> impl Fn(usize) -> Option<u64> + '_ {
        move |i| match f.partitions[i].size {
            PartSize::Fixed(n) => Some(n),
            PartSize::Auto => None,
        }
    }

    #[test]
    fn raw_efi_auto() {
        let f = fmt("raw-efi");
        let mut auto = |free: u64| Ok(100 * 4096 + free);
        let l = compute(&f, &fixed(&f), None, 1 << 20, &mut auto).unwrap();
        let esp = &l.partitions[0];
        assert_eq!((esp.start, esp.size), (8 << 20, 512 << 20));
        let root = &l.partitions[1];
        assert_eq!(root.start, 520 << 20);
        assert_eq!(l.disk_size % (1 << 20), 0);
        assert_eq!(root.start + root.size + 33 * 512, l.disk_size);
        assert!(root.fs_size >= 100 * 4096 + (1 << 20));
        assert_eq!(root.fs_size % 4096, 0);
    }

    #[test]
    fn explicit_disk_size_and_too_small() {
        let f = fmt("sd-aarch64");
        let mut auto = |free: u64| Ok((64 << 20) + free);
        let l = compute(&f, &fixed(&f), Some(200 << 20), 0, &mut auto).unwrap();
        assert_eq!(l.disk_size, 200 << 20);
        assert_eq!(l.partitions[1].start, 38 << 20);
        assert_eq!(l.partitions[1].size, (200 - 38) << 20);
        let e = compute(&f, &fixed(&f), Some(100 << 20), 0, &mut auto).unwrap_err();
        match e {
            Error::DiskTooSmall { needed, available } => {
                assert_eq!(needed, 102 << 20);
                assert_eq!(available, 100 << 20);
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn container_size_multiple() {
        let f = fmt("gce");
        let mut auto = |free: u64| Ok((100 << 20) + free);
        let l = compute(&f, &fixed(&f), None, 0, &mut auto).unwrap();
        assert_eq!(l.disk_size, 1 << 30);
        let root = &l.partitions[1];
        assert_eq!(root.start + root.size + 33 * 512, 1 << 30);
        let e = compute(&f, &fixed(&f), Some(3 << 29), 0, &mut auto).unwrap_err();
        assert!(
            e.to_string()
                .contains("not a multiple of 1.0 GiB, which format `gce`"),
            "{e}"
        );
        assert!(compute(&f, &fixed(&f), Some(2 << 30), 0, &mut auto).is_ok());
    }

    #[test]
    fn sizes_above_the_table_or_imgbuild_limit_are_refused() {
        let mut auto = |free: u64| Ok((64 << 20) + free);
        let refused = |e: Error, what: &str, limit: &str| match e {
            Error::DiskTooBig {
                what: w, limit: l, ..
            } => {
                assert_eq!(w, what);
                assert!(l.contains(limit), "{l}");
            }
            e => panic!("{e}"),
        };
        let mbr = fmt("sd-aarch64");
        assert!(compute(&mbr, &fixed(&mbr), Some(MBR_MAX_SIZE), 0, &mut auto).is_ok());
        let e = compute(
            &mbr,
            &fixed(&mbr),
            Some(MBR_MAX_SIZE + (1 << 20)),
            0,
            &mut auto,
        );
        refused(e.unwrap_err(), "--size", "MBR");
        let gpt = fmt("raw-efi");
        assert!(compute(&gpt, &fixed(&gpt), Some(MAX_DISK_SIZE), 0, &mut auto).is_ok());
        let e = compute(
            &gpt,
            &fixed(&gpt),
            Some(MAX_DISK_SIZE + (1 << 20)),
            0,
            &mut auto,
        );
        refused(e.unwrap_err(), "--size", "16 TiB");
        let e = compute(&gpt, &fixed(&gpt), Some(1_000_000 << 40), 0, &mut auto);
        refused(e.unwrap_err(), "--size", "16 TiB");
        let e = compute(&gpt, &fixed(&gpt), None, MAX_DISK_SIZE + 1, &mut auto);
        refused(e.unwrap_err(), "--free", "16 TiB");
        // Free space just under the limit still makes a disk over it.
        let e = compute(
            &gpt,
            &fixed(&gpt),
            None,
            MAX_DISK_SIZE - (1 << 20),
            &mut auto,
        );
        refused(e.unwrap_err(), "the disk", "16 TiB");
        let big_esp = |i: usize| (i == 0).then_some(MAX_DISK_SIZE + 512);
        let e = compute(&gpt, &big_esp, None, 0, &mut auto);
        refused(e.unwrap_err(), "partition `ESP`", "16 TiB");
    }

    #[test]
    fn overrides_move_the_root() {
        let f = fmt("raw-efi");
        let sizes = |i: usize| if i == 0 { Some(100 << 20) } else { None };
        let mut auto = |_free: u64| Ok(1 << 20);
        let l = compute(&f, &sizes, None, 0, &mut auto).unwrap();
        assert_eq!(l.partitions[1].start, 108 << 20);
    }
}
