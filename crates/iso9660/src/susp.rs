//! System Use Sharing Protocol (IEEE P1281) and Rock Ridge (IEEE P1282, RRIP 1.10 as
//! identified by `RRIP_1991A`) entries, and how a record's entries are split between its
//! System Use field and continuation areas.
//!
//! Every entry here is free of addresses; only `CE` (written when the directory is encoded)
//! names a block, so the whole layout can be decided from sizes before any address is known.

use crate::encode::{both32, dir_date};
use imgbuild_fstree::{Kind, Node};

/// Bytes of a `CE` entry.
pub const CE_LEN: usize = 28;
/// Bytes of one continuation block (entries never cross one: Linux reads one block).
pub const BLOCK: usize = 2048;
/// Largest name part in one `NM` entry (an entry is at most 255 bytes).
const NM_CHUNK: usize = 250;
/// Largest component area of one `SL` entry.
const SL_BODY: usize = 250;

const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DESCRIPTOR: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SOURCE: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

fn entry(sig: &[u8; 2], body: &[u8]) -> Vec<u8> {
    let len = u8::try_from(4 + body.len()).expect("entries are built under 255 bytes");
    let mut e = Vec::with_capacity(4 + body.len());
    e.extend_from_slice(sig);
    e.push(len);
    e.push(1);
    e.extend_from_slice(body);
    e
}

/// `SP`: SUSP is in use, no bytes skipped (the first entry of the root's `.` record).
pub fn sp() -> Vec<u8> {
    entry(b"SP", &[0xBE, 0xEF, 0])
}

/// `ER`: the extension is Rock Ridge.
pub fn er() -> Vec<u8> {
    let mut body = Vec::new();
    for part in [ER_ID, ER_DESCRIPTOR, ER_SOURCE] {
        body.push(u8::try_from(part.len()).expect("constant texts are short"));
    }
    body.push(1);
    for part in [ER_ID, ER_DESCRIPTOR, ER_SOURCE] {
        body.extend_from_slice(part);
    }
    entry(b"ER", &body)
}

/// `CE`: the rest of the entries are `len` bytes at `offset` in block `block`.
pub fn ce(block: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(24);
    for v in [block, offset, len] {
        body.extend_from_slice(&both32(v));
    }
    entry(b"CE", &body)
}

/// The POSIX file type bits of `node`.
fn type_bits(node: &Node) -> u32 {
    match node.kind {
        Kind::Dir(_) => 0o040_000,
        Kind::File(_) => 0o100_000,
        Kind::Symlink(_) => 0o120_000,
        Kind::CharDev { .. } => 0o020_000,
        Kind::BlockDev { .. } => 0o060_000,
        Kind::Fifo => 0o010_000,
        Kind::Socket => 0o140_000,
    }
}

/// The Rock Ridge entries of a record naming `node` as `name` (`None` for `.` and `..`),
/// with `nlink` links: `PX`, `TF`, `NM`, then `PN` or `SL`. The name comes before the
/// symlink target so that it stays in the record when the target goes to a continuation
/// area: 7-Zip reads no continuation areas.
pub fn rock_ridge(node: &Node, name: Option<&[u8]>, nlink: u32) -> Vec<Vec<u8>> {
    let m = &node.meta;
    let mut out = Vec::new();
    let mut px = Vec::with_capacity(32);
    for v in [type_bits(node) | u32::from(m.perm), nlink, m.uid, m.gid] {
        px.extend_from_slice(&both32(v));
    }
    out.push(entry(b"PX", &px));
    // Modification, access and attribute change: all the node's mtime.
    let mut tf = vec![0x0E];
    for _ in 0..3 {
        tf.extend_from_slice(&dir_date(m.mtime));
    }
    out.push(entry(b"TF", &tf));
    if let Some(name) = name {
        let chunks: Vec<&[u8]> = name.chunks(NM_CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut body = vec![u8::from(i + 1 < chunks.len())];
            body.extend_from_slice(chunk);
            out.push(entry(b"NM", &body));
        }
    }
    match &node.kind {
        Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
            // The device number as Linux's 64-bit dev_t, split in high and low halves:
            // what libarchive and libisofs read; Linux reads both this and major/minor.
            let (major, minor) = (u64::from(*major), u64::from(*minor));
            let dev = ((major & 0xFFFF_F000) << 32)
                | ((major & 0xFFF) << 8)
                | ((minor & 0xFFFF_FF00) << 12)
                | (minor & 0xFF);
            let mut pn = Vec::with_capacity(16);
            for half in [dev >> 32, dev & 0xFFFF_FFFF] {
                pn.extend_from_slice(&both32(u32::try_from(half).expect("32 bits")));
            }
            out.push(entry(b"PN", &pn));
        }
        Kind::Symlink(target) => out.extend(sl(target)),
        _ => {}
    }
    out
}

/// `SL` entries for a symlink target: component records (root, `.`, `..`, names) packed
/// into entries of at most 255 bytes. When a target needs several entries, a name that does
/// not fit is split, its first part continued, so an entry ends inside a component: then
/// readers that add no separator at an entry boundary (libarchive) and those that add one
/// after a complete component (Linux) read the same target. Empty components (`//`, a
/// trailing `/`) are not recorded.
fn sl(target: &[u8]) -> Vec<Vec<u8>> {
    let mut comps: Vec<(u8, &[u8])> = Vec::new();
    if target.first() == Some(&b'/') {
        comps.push((0x08, &[]));
    }
    for comp in target.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        comps.push(match comp {
            b"." => (0x02, &[]),
            b".." => (0x04, &[]),
            name => (0, name),
        });
    }
    let mut bodies: Vec<Vec<u8>> = vec![Vec::new()];
    for (flags, mut rest) in comps {
        loop {
            let cur = bodies.last_mut().expect("never empty");
            let room = SL_BODY - cur.len();
            if 2 + rest.len() <= room {
                cur.push(flags);
                cur.push(u8::try_from(rest.len()).expect("fits an entry"));
                cur.extend_from_slice(rest);
                break;
            }
            if flags == 0 && room >= 3 {
                let (part, tail) = rest.split_at(room - 2);
                cur.push(1);
                cur.push(u8::try_from(part.len()).expect("fits an entry"));
                cur.extend_from_slice(part);
                rest = tail;
            }
            bodies.push(Vec::new());
        }
    }
    let n = bodies.len();
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let mut body = vec![u8::from(i + 1 < n)];
            body.extend_from_slice(&b);
            entry(b"SL", &body)
        })
        .collect()
}

/// A record's entries, placed: those in the record itself, then continuation chunks (each
/// at most one block, each but the last followed by a `CE` to the next).
#[derive(Clone, Debug, Default)]
pub struct Split {
    /// Entries in the System Use field (before the `CE`, if there are chunks).
    pub inline: Vec<u8>,
    /// Continuation chunks, in order.
    pub chunks: Vec<Vec<u8>>,
}

impl Split {
    /// Bytes of the System Use field.
    pub fn inline_len(&self) -> usize {
        self.inline.len() + if self.chunks.is_empty() { 0 } else { CE_LEN }
    }
}

/// Splits `entries` between a System Use field of `room` bytes and continuation chunks.
pub fn split(entries: Vec<Vec<u8>>, room: usize) -> Split {
    let total: usize = entries.iter().map(Vec::len).sum();
    let mut s = Split::default();
    if total <= room {
        s.inline = entries.concat();
        return s;
    }
    let mut rest = entries.into_iter().peekable();
    while let Some(e) = rest.next_if(|e| s.inline.len() + e.len() + CE_LEN <= room) {
        s.inline.extend_from_slice(&e);
    }
    let mut remaining: usize = rest.clone().map(|e| e.len()).sum();
    let mut chunk = Vec::new();
    for e in rest {
        // Room for a CE unless everything left fits in this chunk.
        let fits_all = chunk.len() + remaining <= BLOCK;
        if !fits_all && chunk.len() + e.len() + CE_LEN > BLOCK {
            s.chunks.push(std::mem::take(&mut chunk));
        }
        remaining -= e.len();
        chunk.extend_from_slice(&e);
    }
    s.chunks.push(chunk);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_components() {
        let e = sl(b"/nix/store/../a");
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0],
            [
                b"SL".as_slice(),
                &[5 + 2 + 5 + 7 + 2 + 3, 1, 0],
                &[8, 0],
                &[0, 3],
                b"nix",
                &[0, 5],
                b"store",
                &[4, 0],
                &[0, 1],
                b"a"
            ]
            .concat()
        );
        // A 600-byte component: three records, the first two continued, over three entries.
        let long = sl(&[b'x'; 600]);
        assert_eq!(long.len(), 3);
        assert_eq!(long[0][4], 1);
        assert_eq!(long[2][4], 0);
        assert!(long
            .iter()
            .all(|e| e.len() <= 255 && usize::from(e[2]) == e.len()));
    }

    #[test]
    fn split_keeps_order_and_bounds() {
        let entries: Vec<Vec<u8>> = (0..40).map(|i| vec![i; 200]).collect();
        let s = split(entries.clone(), 180);
        assert!(s.inline.is_empty());
        assert!(s.chunks.iter().all(|c| c.len() + CE_LEN <= BLOCK));
        let joined: Vec<u8> = s.chunks.concat();
        assert_eq!(joined, entries.concat());
        let small = split(vec![vec![1; 50], vec![2; 50]], 100);
        assert_eq!(small.inline.len(), 100);
        assert!(small.chunks.is_empty());
    }
}
