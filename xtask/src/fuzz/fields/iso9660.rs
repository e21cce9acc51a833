//! The ISO 9660 fields of a seed: the primary volume descriptor (volume size, block size,
//! the root's record), the El Torito boot record and catalog entries, every directory
//! record of the first directories (length, extent, data length, flags, name length) and
//! their SUSP entries (entry lengths, `CE` pointers, `NM`/`SL`/`TF` flags, `PX` modes, `CL`
//! links), continuation areas included.

use std::fs::File;

use super::{le16, le32, read, Endian, Map};

const BLOCK: u64 = 2048;
/// Directories whose records are mapped.
const MAX_DIRS: usize = 200;

/// An ISO 9660 volume at byte 0 of the seed.
pub fn iso9660(f: &File, len: u64, m: &mut Map) {
    let pvd_at = 16 * BLOCK;
    let mut suspects = 0;
    for n in 16..32u64 {
        let d = read(f, n * BLOCK, BLOCK as usize);
        if d.len() < BLOCK as usize || &d[1..6] != b"CD001" {
            return;
        }
        match d[0] {
            255 => break,
            1 if n * BLOCK == pvd_at => {
                m.push(
                    n * BLOCK,
                    &[
                        (80, 4, "iso9660.pvd.volume_space_size"),
                        (128, 2, "iso9660.pvd.block_size"),
                    ],
                    Endian::Both,
                );
                record(n * BLOCK + 156, m);
            }
            0 if d[7..30].starts_with(b"EL TORITO SPECIFICATION") => {
                m.push(
                    n * BLOCK,
                    &[(0x47, 4, "iso9660.boot.catalog_lba")],
                    Endian::Le,
                );
                catalog(f, u64::from(le32(&d, 0x47)) * BLOCK, len, m);
            }
            _ => suspects += 1,
        }
    }
    let _ = suspects;
    let pvd = read(f, pvd_at, BLOCK as usize);
    if pvd.len() < 190 {
        return;
    }
    let root = &pvd[156..190];
    let extent = u64::from(le32(root, 2)) * BLOCK;
    let size = u64::from(le32(root, 10));
    // SUSP: the root's `.` starts with `SP` when Rock Ridge is there.
    let first = read(f, extent, 256);
    let rr = first.len() > 40 && {
        let su = 34usize;
        first.get(su..su + 2) == Some(b"SP")
    };
    let mut todo = vec![(extent, size)];
    let mut seen = std::collections::HashSet::new();
    while let Some((at, size)) = todo.pop() {
        if seen.len() >= MAX_DIRS || !seen.insert(at) || at + size > len || size > 1 << 20 {
            continue;
        }
        let data = read(f, at, size as usize);
        for (b, block) in data.chunks(BLOCK as usize).enumerate() {
            let base = at + b as u64 * BLOCK;
            let mut i = 0usize;
            while i + 34 <= block.len() && block[i] != 0 {
                let rl = usize::from(block[i]);
                if rl < 34 || i + rl > block.len() {
                    break;
                }
                let r = &block[i..i + rl];
                record(base + i as u64, m);
                let id_len = usize::from(r[32]);
                let is_sub = r[25] & 2 != 0 && !(id_len == 1 && r[33] <= 1);
                if is_sub {
                    todo.push((u64::from(le32(r, 2)) * BLOCK, u64::from(le32(r, 10))));
                }
                if rr {
                    let su = 33 + id_len + usize::from(id_len % 2 == 0);
                    if su < rl {
                        susp(f, base + (i + su) as u64, &r[su..], len, m, 0);
                    }
                }
                i += rl;
            }
        }
    }
}

/// One directory record's fields at `at`.
fn record(at: u64, m: &mut Map) {
    m.push(
        at,
        &[
            (0, 1, "iso9660.dirrec.len"),
            (1, 1, "iso9660.dirrec.ear_len"),
            (25, 1, "iso9660.dirrec.flags"),
            (32, 1, "iso9660.dirrec.name_len"),
        ],
        Endian::Le,
    );
    m.push(
        at,
        &[
            (2, 4, "iso9660.dirrec.extent"),
            (10, 4, "iso9660.dirrec.data_len"),
        ],
        Endian::Both,
    );
}

/// The SUSP entries of one area at `at` (bytes `area`), following `CE` one level.
fn susp(f: &File, at: u64, area: &[u8], len: u64, m: &mut Map, depth: u32) {
    let mut i = 0usize;
    while i + 4 <= area.len() && area[i] != 0 {
        let e = &area[i..];
        let el = usize::from(e[2]);
        if el < 4 || el > e.len() {
            break;
        }
        let here = at + i as u64;
        m.push(here, &[(2, 1, "iso9660.susp.len")], Endian::Le);
        match &e[..2] {
            b"CE" if el >= 28 => {
                m.push(
                    here,
                    &[
                        (4, 4, "iso9660.susp.ce.block"),
                        (12, 4, "iso9660.susp.ce.offset"),
                        (20, 4, "iso9660.susp.ce.len"),
                    ],
                    Endian::Both,
                );
                let ce = u64::from(le32(e, 4)) * BLOCK + u64::from(le32(e, 12));
                let cl = u64::from(le32(e, 20)).min(BLOCK);
                if depth < 2 && ce + cl <= len {
                    let area = read(f, ce, cl as usize);
                    susp(f, ce, &area, len, m, depth + 1);
                }
            }
            b"PX" if el >= 36 => {
                m.push(here, &[(4, 4, "iso9660.rr.px.mode")], Endian::Both);
            }
            b"NM" | b"SL" | b"TF" if el >= 5 => {
                m.push(here, &[(4, 1, "iso9660.rr.flags")], Endian::Le);
                if &e[..2] == b"SL" && el >= 7 {
                    m.push(here, &[(6, 1, "iso9660.rr.sl.component_len")], Endian::Le);
                }
            }
            b"CL" if el >= 12 => {
                m.push(here, &[(4, 4, "iso9660.rr.cl.block")], Endian::Both);
            }
            _ => {}
        }
        i += el;
    }
}

/// The boot catalog's validation entry, default entry and first section's entries.
fn catalog(f: &File, at: u64, len: u64, m: &mut Map) {
    if at + BLOCK > len {
        return;
    }
    let c = read(f, at, BLOCK as usize);
    m.push(at, &[(0, 1, "iso9660.catalog.header_id")], Endian::Le);
    let entry = |m: &mut Map, e: u64| {
        m.push(
            e,
            &[
                (0, 1, "iso9660.catalog.boot_indicator"),
                (1, 1, "iso9660.catalog.media"),
                (6, 2, "iso9660.catalog.sectors"),
                (8, 4, "iso9660.catalog.load_rba"),
            ],
            Endian::Le,
        );
    };
    entry(m, at + 32);
    let mut o = 64usize;
    while o + 32 <= c.len() && matches!(c[o], 0x90 | 0x91) {
        m.push(
            at + o as u64,
            &[(2, 2, "iso9660.catalog.section_entries")],
            Endian::Le,
        );
        let n = usize::from(le16(&c, o + 2)).min(8);
        for k in 0..n {
            entry(m, at + (o + 32 * (k + 1)) as u64);
        }
        let last = c[o] == 0x91;
        o += 32 * (n + 1);
        if last {
            break;
        }
    }
}
