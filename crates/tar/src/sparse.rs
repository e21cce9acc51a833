//! Sparse members: data regions by content and the GNU sparse 1.0 map (rules in the crate
//! docs, "Sparse members").

use crate::blockio::{self, PlannedSource};
use crate::header::padding;
use crate::Result;

/// Granularity at which zeros are left out.
pub(crate) const GRAIN: u64 = 4096;
/// How much is read at a time.
const PIECE: u64 = 1 << 20;

/// The data regions `(offset, length)` of `src` by content (see the module's docs).
pub(crate) fn regions(src: &PlannedSource) -> Result<Vec<(u64, u64)>> {
    let size = src.size();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut buf = vec![0u8; blockio::to_usize(PIECE)];
    // The first offset not yet looked at: grains are looked at once, in order.
    let mut next = 0u64;
    for (o, l) in src.data_ranges()? {
        let mut at = (o / GRAIN * GRAIN).max(next);
        let end = (o + l).next_multiple_of(GRAIN).min(size);
        while at < end {
            let n = PIECE.min(end - at);
            let piece = &mut buf[..blockio::to_usize(n)];
            src.read_exact_at(at, piece)?;
            for (i, grain) in piece.chunks(blockio::to_usize(GRAIN)).enumerate() {
                if grain.iter().any(|&b| b != 0) {
                    let start = at + i as u64 * GRAIN;
                    let len = grain.len() as u64;
                    match out.last_mut() {
                        Some((ro, rl)) if *ro + *rl == start => *rl += len,
                        _ => out.push((start, len)),
                    }
                }
            }
            at += n;
        }
        next = next.max(end);
    }
    if out.last().is_none_or(|&(o, l)| o + l < size) {
        out.push((size, 0));
    }
    Ok(out)
}

/// Whether `regions` leave out anything of a file of `size` bytes (else it is stored whole).
pub(crate) fn has_holes(regions: &[(u64, u64)], size: u64) -> bool {
    size > 0 && regions != [(0, size)]
}

/// The map text, padded to a block.
pub(crate) fn map(regions: &[(u64, u64)]) -> Vec<u8> {
    let mut text = format!("{}\n", regions.len());
    for (o, l) in regions {
        text.push_str(&format!("{o}\n{l}\n"));
    }
    let mut bytes = text.into_bytes();
    let pad = padding(bytes.len() as u64);
    bytes.resize(bytes.len() + blockio::to_usize(pad), 0);
    bytes
}

/// The member's data length: the map, then the regions' bytes.
pub(crate) fn stored_size(regions: &[(u64, u64)]) -> u64 {
    map(regions).len() as u64 + regions.iter().map(|r| r.1).sum::<u64>()
}

/// Writes the map and the regions of `src`.
pub(crate) fn write(
    src: &PlannedSource,
    regions: &[(u64, u64)],
    mut put: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    put(&map(regions))?;
    let mut buf = vec![0u8; blockio::to_usize(PIECE)];
    for &(o, l) in regions {
        let mut at = o;
        while at < o + l {
            let n = PIECE.min(o + l - at);
            let piece = &mut buf[..blockio::to_usize(n)];
            src.read_exact_at(at, piece)?;
            put(piece)?;
            at += n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_text_and_size() {
        let r = [(0, 4096), (8192, 10), (10_000, 0)];
        let m = map(&r);
        assert_eq!(m.len(), 512);
        assert!(m.starts_with(b"3\n0\n4096\n8192\n10\n10000\n0\n\0"));
        assert_eq!(stored_size(&r), 512 + 4106);
        assert!(has_holes(&r, 10_000));
        assert!(!has_holes(&[(0, 5)], 5));
        assert!(!has_holes(&[(0, 0)], 0));
    }

    #[test]
    fn regions_by_content_not_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        // Written in full (no holes): zeros at 4 KiB..12 KiB and at the end are left out.
        let mut bytes = vec![0u8; 5 * 4096 + 100];
        bytes[1] = 1;
        bytes[3 * 4096] = 2;
        std::fs::write(&p, &bytes).unwrap();
        let src = PlannedSource::open(&p, bytes.len() as u64).unwrap();
        let r = regions(&src).unwrap();
        assert_eq!(r, [(0, 4096), (3 * 4096, 4096), (5 * 4096 + 100, 0)]);
        // The same bytes with real holes: the same regions.
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(bytes.len() as u64).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[1], 1).unwrap();
        f.write_all_at(&[2], 3 * 4096).unwrap();
        let src = PlannedSource::open(&p, bytes.len() as u64).unwrap();
        assert_eq!(regions(&src).unwrap(), r);
    }
}
