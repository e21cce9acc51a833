//! The `grub` target: a disk's first sectors holding an i386-pc GRUB setup (boot sector,
//! then the core image at the sector it names), read back with `core_sector`, `read_core`
//! and `decompress`.
//!
//! Mutations: the boot sector's core sector field; `diskboot.img`'s block list (sector count,
//! start, load segment, the entry below it); the decompressor's size fields (compressed,
//! uncompressed, Reed-Solomon redundancy, unprotected length); bytes of the LZMA stream;
//! the input cut at a sector; and, a third of the time, the uncompressed payload's module
//! section (its header, an object's type and size, a module's ELF header and section
//! headers, the prefix text, objects appended or cut), recompressed with the seed's LZMA
//! parameters and the size fields and sector count recomputed, so the case reaches past the
//! decompression into the module walk.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use anyhow::Context as _;
use imgbuild_grub::{compress, core_sector, decompress, read_core, MAX_PAYLOAD, SECTOR};
use imgbuild_testutil::harness::Rng;

use super::{get, pick, put, raw, value};

/// In `lzma_decompress.img` (the sector after `diskboot.img`): its size fields.
const COMPRESSED_AT: usize = SECTOR + 0x08;
const UNCOMPRESSED_AT: usize = SECTOR + 0x0c;
const REDUNDANCY_AT: usize = SECTOR + 0x10;
const NO_RS_AT: usize = SECTOR + 0x14;
/// `diskboot.img`'s last block list entry: start (u64), sector count (u16), segment (u16).
const ENTRY_AT: usize = SECTOR - 12;
/// The decompressor must end before the kernel at 0x9000; it starts at 0x8200.
const MAX_DECOMPRESSOR: usize = 0x9000 - 0x8200;
/// "gmim", the module section's magic.
const MODULE_MAGIC: &[u8; 4] = b"mimg";
/// Module object types: ELF, config, prefix (and 1, the memdisk).
const OBJ_ELF: u64 = 0;

/// Where a seed's parts are: the core's offset, the decompressor's length, the payload.
struct Layout {
    core_at: usize,
    decompressor: usize,
    payload: Vec<u8>,
}

/// The layouts of the seeds, found once per worker (by seed name).
static LAYOUTS: Mutex<BTreeMap<String, Option<std::sync::Arc<Layout>>>> =
    Mutex::new(BTreeMap::new());

fn layout_of(name: &str, seed: &[u8]) -> Option<std::sync::Arc<Layout>> {
    let mut map = LAYOUTS.lock().unwrap_or_else(PoisonError::into_inner);
    map.entry(name.to_string())
        .or_insert_with(|| find_layout(seed).map(std::sync::Arc::new))
        .clone()
}

/// The seed's layout: the decompressor's length is where a raw LZMA stream of the
/// compressed size starts that unpacks to the uncompressed size with a module section.
fn find_layout(seed: &[u8]) -> Option<Layout> {
    let s0: &[u8; SECTOR] = seed.get(..SECTOR)?.try_into().ok()?;
    let core_at = usize::try_from(core_sector(s0)).ok()?.checked_mul(SECTOR)?;
    let core = seed.get(core_at..)?;
    let compressed = usize::try_from(get(core, COMPRESSED_AT, 4)).ok()?;
    let uncompressed = usize::try_from(get(core, UNCOMPRESSED_AT, 4)).ok()?;
    (NO_RS_AT + 2 - SECTOR..MAX_DECOMPRESSOR).find_map(|d| {
        let start = SECTOR + d;
        let stream = core.get(start..start + compressed)?;
        if stream.first() != Some(&0) {
            return None;
        }
        let payload = decompress(stream, uncompressed).ok()?;
        section_at(&payload)?;
        Some(Layout {
            core_at,
            decompressor: d,
            payload,
        })
    })
}

/// The module section: the last "gmim" whose size field reaches the payload's end.
fn section_at(p: &[u8]) -> Option<usize> {
    (0..p.len().saturating_sub(11))
        .rev()
        .find(|&i| &p[i..i + 4] == MODULE_MAGIC && get(p, i + 8, 4) == (p.len() - i) as u64)
}

/// The objects of the module section at `at`: (offset, type, size), while they parse.
fn objects(p: &[u8], at: usize) -> Vec<(usize, u64, usize)> {
    let mut out = Vec::new();
    let mut pos = at + get(p, at + 4, 4) as usize;
    while pos + 8 <= p.len() && out.len() < 64 {
        let size = get(p, pos + 4, 4) as usize;
        out.push((pos, get(p, pos, 4), size));
        if size < 8 {
            break;
        }
        pos += size.div_ceil(4) * 4;
    }
    out
}

/// A mutated disk prefix from the seed `name`, and the field kinds changed.
pub(super) fn mutate(name: &str, rng: &mut Rng, seed: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut b = seed.to_vec();
    let mut kinds = Vec::new();
    let layout = layout_of(name, seed);
    if let Some(l) = &layout {
        if rng.next_u64().is_multiple_of(3) {
            if let Some(k) = repack(rng, l, &mut b) {
                kinds.push(k);
            }
        }
    }
    let n = pick(rng, 3) + usize::from(kinds.is_empty());
    for _ in 0..n {
        kinds.push(field(rng, layout.as_deref(), &mut b));
    }
    (b, kinds)
}

/// One field of the boot sector, the block list or the decompressor, LZMA bytes, or raw.
fn field(rng: &mut Rng, l: Option<&Layout>, b: &mut Vec<u8>) -> String {
    let core_at = l.map_or(SECTOR, |l| l.core_at);
    let sectors = get(b, core_at + ENTRY_AT + 8, 2);
    let len_sectors = (b.len() / SECTOR) as u64;
    let kind = match rng.next_u64() % 8 {
        0 => {
            let first = (core_at / SECTOR) as u64;
            let v = [0, 1, first, len_sectors, value(rng, first)][pick(rng, 5)];
            put(b, 0x5c, 8, v);
            "boot: core sector"
        }
        1 => {
            let v = [0, 1, 0xffff, len_sectors, value(rng, sectors)][pick(rng, 5)];
            put(b, core_at + ENTRY_AT + 8, 2, v);
            "diskboot: sector count"
        }
        2 => {
            // The entry's start or segment, or the entry below it (no longer a terminator).
            let (at, w) = [(0, 8), (10, 2), (-12, 8), (-4, 2)][pick(rng, 4)];
            let at = (core_at + ENTRY_AT).saturating_add_signed(at);
            let v = value(rng, get(b, at, w));
            put(b, at, w, v);
            "diskboot: block list entry"
        }
        3 => {
            let (at, w, kind) = [
                (COMPRESSED_AT, 4, "decompressor: compressed size"),
                (UNCOMPRESSED_AT, 4, "decompressor: uncompressed size"),
                (REDUNDANCY_AT, 4, "decompressor: redundancy"),
                (NO_RS_AT, 2, "decompressor: unprotected length"),
            ][pick(rng, 4)];
            let old = get(b, core_at + at, w);
            let v = match rng.next_u64() % 4 {
                0 => [MAX_PAYLOAD as u64, MAX_PAYLOAD as u64 + 1, b.len() as u64][pick(rng, 3)],
                1 => old.wrapping_add(SECTOR as u64),
                _ => value(rng, old),
            };
            put(b, core_at + at, w, v);
            kind
        }
        4 | 5 => return lzma_bytes(rng, l, b),
        6 => {
            let keep = core_at + SECTOR * pick(rng, usize::try_from(sectors).unwrap_or(0) + 2);
            b.truncate(keep);
            "input: cut at a sector"
        }
        _ => raw(rng, b),
    };
    kind.to_string()
}

/// Bytes of the compressed stream: its first byte (0 in a raw LZMA1 stream), bits inside
/// it, a span of it duplicated over a later one.
fn lzma_bytes(rng: &mut Rng, l: Option<&Layout>, b: &mut [u8]) -> String {
    let Some(l) = l else {
        return "lzma: no layout".into();
    };
    let start = l.core_at + SECTOR + l.decompressor;
    let len = usize::try_from(get(b, l.core_at + COMPRESSED_AT, 4)).unwrap_or(0);
    let end = (start + len).min(b.len());
    if start >= end {
        return "lzma: empty".into();
    }
    match rng.next_u64() % 4 {
        0 => {
            b[start] = [1, 0x5d, 0xff][pick(rng, 3)];
            "lzma: first byte".into()
        }
        1 => {
            let (from, to) = (
                start + pick(rng, end - start),
                start + pick(rng, end - start),
            );
            let n = pick(rng, 256).min(end - from).min(end - to);
            b.copy_within(from..from + n, to);
            "lzma: span copied".into()
        }
        _ => {
            for _ in 0..1 + pick(rng, 3) {
                let i = start + pick(rng, end - start);
                b[i] ^= 1 << pick(rng, 8);
            }
            "lzma: bits".into()
        }
    }
}

/// The payload's module section mutated, recompressed and put back: the core rebuilt from
/// its `diskboot.img` and decompressor (size fields recomputed, no redundancy) and padded to
/// whole sectors, its sector count recomputed.
fn repack(rng: &mut Rng, l: &Layout, b: &mut Vec<u8>) -> Option<String> {
    let mut p = l.payload.clone();
    let at = section_at(&p)?;
    let kind = section_mutate(rng, &mut p, at);
    rebuild(l, &p, b)?;
    Some(kind)
}

/// `b` with its core rebuilt around payload `p` (see [`repack`]).
fn rebuild(l: &Layout, p: &[u8], b: &mut Vec<u8>) -> Option<()> {
    let z = compress(p).ok()?;
    let head = SECTOR + l.decompressor;
    let mut core = b.get(l.core_at..l.core_at + head)?.to_vec();
    put(&mut core, COMPRESSED_AT, 4, z.len() as u64);
    put(&mut core, UNCOMPRESSED_AT, 4, p.len() as u64);
    put(&mut core, REDUNDANCY_AT, 4, 0);
    core.extend_from_slice(&z);
    let sectors = core.len().div_ceil(SECTOR);
    core.resize(sectors * SECTOR, 0);
    put(&mut core, ENTRY_AT + 8, 2, sectors as u64 - 1);
    b.truncate(l.core_at);
    b.extend_from_slice(&core);
    Some(())
}

/// One edit of the module section at `at` of payload `p`.
fn section_mutate(rng: &mut Rng, p: &mut Vec<u8>, at: usize) -> String {
    let objs = objects(p, at);
    let obj = objs.get(pick(rng, objs.len())).copied();
    let elf = objs
        .iter()
        .filter(|o| o.1 == OBJ_ELF)
        .nth(pick(rng, objs.len()))
        .map(|o| o.0 + 8);
    let kind = match (rng.next_u64() % 9, obj, elf) {
        (0, ..) => {
            p[at + pick(rng, 4)] ^= 1 << pick(rng, 8);
            "module section: magic"
        }
        (1, ..) => {
            let v = value(rng, get(p, at + 4, 4));
            put(p, at + 4, 4, v);
            "module section: objects offset"
        }
        (2, ..) => {
            let v = value(rng, get(p, at + 8, 4));
            put(p, at + 8, 4, v);
            "module section: size"
        }
        (3, Some((pos, kind, _)), _) => {
            let v = [0, 1, 2, 3, 4, value(rng, kind)][pick(rng, 6)];
            put(p, pos, 4, v);
            "module object: type"
        }
        (4, Some((pos, _, size)), _) => {
            let v = [0, 7, 8, (p.len() - pos) as u64, value(rng, size as u64)][pick(rng, 5)];
            put(p, pos + 4, 4, v);
            "module object: size"
        }
        (5, _, Some(body)) => {
            // e_ident's class, e_version, e_shoff, e_shentsize, e_shnum, e_shstrndx.
            let (off, w) = [(4, 1), (20, 4), (32, 4), (46, 2), (48, 2), (50, 2)][pick(rng, 6)];
            let v = value(rng, get(p, body + off, w));
            put(p, body + off, w, v);
            "module ELF: header"
        }
        (6, _, Some(body)) => {
            let shoff = get(p, body + 32, 4) as usize;
            let (entsize, count) = (get(p, body + 46, 2) as usize, get(p, body + 48, 2));
            let i = pick(rng, usize::try_from(count).unwrap_or(0).max(1));
            let h = body + shoff + i * entsize;
            // sh_name, sh_type, sh_offset, sh_size.
            let off = [0, 4, 16, 20][pick(rng, 4)];
            let v = value(rng, get(p, h + off, 4));
            put(p, h + off, 4, v);
            "module ELF: section header"
        }
        (7, Some((pos, _, size)), _) => {
            // The object's text without its NUL, or not UTF-8.
            let end = (pos + size).min(p.len());
            let fill = [b'A', 0xff][pick(rng, 2)];
            if pos + 8 < end {
                p[pos + 8..end].fill(fill);
            }
            "module object: text"
        }
        _ => return section_resize(rng, p, at),
    };
    kind.to_string()
}

/// Objects appended (of any type and size) or the section cut, its size field kept
/// consistent with the payload's end so that the section is still found.
fn section_resize(rng: &mut Rng, p: &mut Vec<u8>, at: usize) -> String {
    let kind = if rng.next_u64().is_multiple_of(2) {
        let body = 4 * pick(rng, 64);
        let size = [body as u64 + 8, 0, 4, 0xffff_ffff][pick(rng, 4)];
        let t = pick(rng, 5) as u64;
        let mut obj = Vec::new();
        obj.extend_from_slice(&(t as u32).to_le_bytes());
        obj.extend_from_slice(&(size as u32).to_le_bytes());
        obj.resize(8 + body, b'x');
        p.extend_from_slice(&obj);
        "module section: object appended"
    } else {
        let keep = at + 12 + pick(rng, p.len() - at - 12);
        p.truncate(keep);
        "module section: cut"
    };
    let len = (p.len() - at) as u64;
    put(p, at + 8, 4, len);
    kind.to_string()
}

/// The reader path of `inspect`: the core's sector from the boot sector, the core read
/// from there, and `decompress` on the bytes after the decompressor's header with its
/// uncompressed size field (whatever it says). An accepted core must fit what it read.
pub(super) fn read(input: &[u8]) -> anyhow::Result<()> {
    let s0: &[u8; SECTOR] = input
        .get(..SECTOR)
        .and_then(|s| s.try_into().ok())
        .context("shorter than a boot sector")?;
    let first = core_sector(s0);
    let at = usize::try_from(first)
        .ok()
        .and_then(|s| s.checked_mul(SECTOR))
        .filter(|&a| a < input.len())
        .with_context(|| format!("the core's sector {first} is past the input's end"))?;
    let core = &input[at..];
    let size = usize::try_from(get(core, UNCOMPRESSED_AT, 4)).unwrap_or(usize::MAX);
    let _ = decompress(core.get(NO_RS_AT + 2..).unwrap_or_default(), size);
    let c = read_core(core).context("read_core")?;
    let total = (usize::from(c.sectors) + 1) * SECTOR;
    assert!(
        total <= core.len(),
        "accepted {total} bytes of a {}-byte core",
        core.len()
    );
    assert!(
        (c.compressed_size as usize) < total && (c.uncompressed_size as usize) <= MAX_PAYLOAD,
        "accepted sizes {} / {} for a {total}-byte core",
        c.compressed_size,
        c.uncompressed_size
    );
    assert!(
        c.modules.iter().all(|m| !m.is_empty()),
        "accepted an empty module name: {:?}",
        c.modules
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every GRUB seed (made from Debian's files, skipped without them) has its layout
    /// found, and its payload recompressed unchanged by the fuzzer's own path reads back as
    /// the same modules, prefix and config: the repacked cases reach the module walk.
    #[test]
    fn seeds_have_layouts_and_repack_reads_back() {
        if !std::path::Path::new("/usr/lib/grub/i386-pc/kernel.img").exists() {
            eprintln!("skipped: /usr/lib/grub/i386-pc is absent (apt-get install grub-pc-bin)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        super::super::seeds::build(dir.path()).unwrap();
        let mut found = 0;
        for name in super::super::seeds::GRUB {
            let Ok(seed) = std::fs::read(dir.path().join(name)) else {
                eprintln!("{name}: not made (its tool is missing)");
                continue;
            };
            read(&seed).unwrap();
            let l = find_layout(&seed).unwrap_or_else(|| panic!("{name}: no layout"));
            let s0: &[u8; SECTOR] = seed[..SECTOR].try_into().unwrap();
            let core_at = usize::try_from(core_sector(s0)).unwrap() * SECTOR;
            let before = read_core(&seed[core_at..]).unwrap();
            let mut b = seed.clone();
            rebuild(&l, &l.payload, &mut b).unwrap();
            read(&b).unwrap();
            let after = read_core(&b[core_at..]).unwrap();
            assert_eq!(
                (&before.modules, &before.prefix, &before.config),
                (&after.modules, &after.prefix, &after.config),
                "{name}"
            );
            assert!(!after.modules.is_empty(), "{name}");
            found += 1;
        }
        assert!(found >= 2, "only {found} grub seeds");
    }
}
