//! The tar header encoder: POSIX ustar blocks, numbers in octal or GNU base-256, the header
//! checksum, and pax extended headers for what ustar cannot hold.
//!
//! A ustar header is one 512-byte block. Its fields (offset, width): name (0, 100), mode
//! (100, 8), uid (108, 8), gid (116, 8), size (124, 12), mtime (136, 12), checksum (148, 8),
//! typeflag (156, 1), linkname (157, 100), magic `ustar\0` (257, 6), version `00` (263, 2),
//! uname (265, 32), gname (297, 32), devmajor (329, 8), devminor (337, 8), prefix (345, 155).
//! Numbers are zero-padded octal ending in a NUL; a number too large for its field is
//! written in GNU's base-256 form (first byte 0x80, the value big-endian in the remaining
//! bytes), which GNU tar and libarchive read. A path longer than 100 bytes is split at a `/`
//! into prefix and name when it can be.
//!
//! What ustar cannot hold (a longer path or link target, a size of 8 GiB or more, an id of
//! 2^21 or more, a time before 1970 or after 2242) goes into a pax extended header (typeflag
//! `x`) in front of the entry: records `LEN key=value\n` in key order (`gid`, `hdrcharset`,
//! `linkpath`, `mtime`, `path`, `size`, `uid`, after the `GNU.sparse.*` ones of a sparse
//! member), `hdrcharset=BINARY` when a path or link target is not UTF-8. The pax header's own name is `PaxHeaders/` and the entry's last
//! name component (cut to fit), its mode 0644, owner 0, time the entry's, so it is as
//! deterministic as the entry. No atime or ctime is ever written.

use std::io::Write;

/// The size of a tar block: headers take one, data is padded to a multiple of it.
pub const BLOCK: usize = 512;

/// Largest value an octal field of `width` bytes holds (`width - 1` digits and a NUL).
fn octal_max(width: usize) -> u64 {
    let digits = width - 1;
    if digits * 3 >= 64 {
        u64::MAX
    } else {
        (1u64 << (digits * 3)) - 1
    }
}

/// Writes `n` into the numeric field `field`: zero-padded octal digits and a NUL when it
/// fits, else GNU's base-256 form: 0x80, then `n` big-endian in the remaining bytes (7 in
/// an 8-byte field, 11 in a 12-byte one), which GNU tar and libarchive read.
///
/// # Panics
///
/// When `field` is shorter than 8 bytes (no tar numeric field is), or `n` does not fit the
/// base-256 form (2^56 or more in an 8-byte field: ids and device numbers are 32-bit).
pub fn number(field: &mut [u8], n: u64) {
    let width = field.len();
    assert!(width >= 8, "tar numeric fields are 8 or 12 bytes");
    let digits = width - 1;
    if n <= octal_max(width) {
        let s = format!("{n:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        let be = n.to_be_bytes();
        let kept = digits.min(8);
        assert!(
            be[..8 - kept].iter().all(|&b| b == 0),
            "{n} does not fit a {width}-byte tar field"
        );
        field.fill(0);
        field[0] = 0x80;
        field[width - kept..].copy_from_slice(&be[8 - kept..]);
    }
}

/// Whether `n` fits the octal form of a numeric field of `width` bytes.
pub fn fits_octal(n: u64, width: usize) -> bool {
    n <= octal_max(width)
}

/// Fills in the checksum field (offset 148) of a finished header block: the sum of all its
/// bytes with the field counted as spaces, as six octal digits, a NUL and a space.
pub fn set_checksum(block: &mut [u8; BLOCK]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// What an entry is: its typeflag byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryType {
    /// A regular file (`0`), its bytes following the header.
    Regular,
    /// A hard link (`1`) to the earlier entry named by the link target.
    HardLink,
    /// A symbolic link (`2`).
    Symlink,
    /// A character device (`3`).
    CharDev,
    /// A block device (`4`).
    BlockDev,
    /// A directory (`5`).
    Dir,
    /// A FIFO (`6`).
    Fifo,
    /// A pax extended header (`x`) for the entry that follows.
    PaxExtended,
}

impl EntryType {
    /// The typeflag byte.
    pub fn flag(self) -> u8 {
        match self {
            EntryType::Regular => b'0',
            EntryType::HardLink => b'1',
            EntryType::Symlink => b'2',
            EntryType::CharDev => b'3',
            EntryType::BlockDev => b'4',
            EntryType::Dir => b'5',
            EntryType::Fifo => b'6',
            EntryType::PaxExtended => b'x',
        }
    }
}

/// One archive member's header, as the caller wants it: the encoder decides what goes into
/// ustar fields and what needs a pax extended header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The member's path in the archive, as stored (a directory's ends in `/` by convention).
    pub path: &'a [u8],
    /// The link target of a symlink or hard link; empty otherwise.
    pub link: &'a [u8],
    /// What the member is.
    pub kind: EntryType,
    /// Permission bits, setuid, setgid and sticky included (`0o7777` at most is kept).
    pub mode: u32,
    /// Numeric owner; no user or group names are written.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// The number of data bytes after the header (0 but for regular files).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Device numbers of a character or block device, `(major, minor)`.
    pub dev: (u32, u32),
    /// For a sparse member (GNU format 1.0): the file's real path and size. `path` is then a
    /// stand-in name and `size` the stored length (map and data regions).
    pub sparse: Option<SparseOf<'a>>,
}

/// The file a sparse member stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseOf<'a> {
    /// The file's path (`GNU.sparse.name`).
    pub name: &'a [u8],
    /// The file's length, holes included (`GNU.sparse.realsize`).
    pub real_size: u64,
}

/// Largest time a 12-byte octal field holds.
fn time_fits(t: i64) -> Option<u64> {
    u64::try_from(t).ok().filter(|&t| fits_octal(t, 12))
}

/// Copies `value` into `field`, cut to the field's width (NUL-padded when shorter).
fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// `(prefix, name)` when `path` fits ustar's name field, or its prefix and name fields split
/// at a `/` (the shortest prefix that leaves a name of at most 100 bytes).
pub fn split_ustar_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&path[..0], path));
    }
    let min_cut = path.len() - 101;
    (min_cut..path.len().min(156))
        .find(|&i| path[i] == b'/' && i + 1 < path.len() && path[i + 1] != b'/')
        .map(|i| (&path[..i], &path[i + 1..]))
}

/// One pax record, `LEN key=value\n`, where LEN counts the whole record, its own digits
/// included.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    let mut r = Vec::with_capacity(len);
    // Infallible: writing into a Vec.
    let _ = write!(r, "{len} {key}=");
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl Header<'_> {
    /// The pax records this header needs, in key order; empty when ustar holds everything.
    pub fn pax_records(&self) -> Vec<u8> {
        let mut recs = Vec::new();
        let mut add = |k: &str, v: &[u8]| recs.extend_from_slice(&pax_record(k, v));
        if let Some(sp) = self.sparse {
            add("GNU.sparse.major", b"1");
            add("GNU.sparse.minor", b"0");
            add("GNU.sparse.name", sp.name);
            add("GNU.sparse.realsize", sp.real_size.to_string().as_bytes());
        }
        let big_id = |id: u32| !fits_octal(u64::from(id), 8);
        let long_path = split_ustar_path(self.path).is_none();
        let long_link = self.link.len() > 100;
        if big_id(self.gid) {
            add("gid", self.gid.to_string().as_bytes());
        }
        let binary = |s: &[u8]| std::str::from_utf8(s).is_err();
        let sparse_name = self.sparse.is_some_and(|sp| binary(sp.name));
        if (long_path && binary(self.path)) || (long_link && binary(self.link)) || sparse_name {
            add("hdrcharset", b"BINARY");
        }
        if long_link {
            add("linkpath", self.link);
        }
        if time_fits(self.mtime).is_none() {
            add("mtime", self.mtime.to_string().as_bytes());
        }
        if long_path {
            add("path", self.path);
        }
        if !fits_octal(self.size, 12) {
            add("size", self.size.to_string().as_bytes());
        }
        if big_id(self.uid) {
            add("uid", self.uid.to_string().as_bytes());
        }
        recs
    }

    /// The ustar block alone. Fields a pax header carries get a stand-in: the path and link
    /// target cut to 100 bytes, ids and sizes in base-256, a time out of range 0 (before
    /// 1970) or base-256 (after 2242).
    pub fn ustar_block(&self) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        match split_ustar_path(self.path) {
            Some((prefix, name)) => {
                put(&mut h[..100], name);
                put(&mut h[345..500], prefix);
            }
            None => put(&mut h[..100], self.path),
        }
        number(&mut h[100..108], u64::from(self.mode & 0o7777));
        number(&mut h[108..116], u64::from(self.uid));
        number(&mut h[116..124], u64::from(self.gid));
        number(&mut h[124..136], self.size);
        number(&mut h[136..148], u64::try_from(self.mtime).unwrap_or(0));
        h[156] = self.kind.flag();
        put(&mut h[157..257], self.link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if matches!(self.kind, EntryType::CharDev | EntryType::BlockDev) {
            number(&mut h[329..337], u64::from(self.dev.0));
            number(&mut h[337..345], u64::from(self.dev.1));
        }
        set_checksum(&mut h);
        h
    }

    /// The pax header's own name: `PaxHeaders/` and the entry's last component, cut so the
    /// whole fits ustar's 100-byte name field.
    fn pax_name(&self) -> Vec<u8> {
        let trimmed = self.path.strip_suffix(b"/").unwrap_or(self.path);
        let base = trimmed.rsplit(|&b| b == b'/').next().unwrap_or(trimmed);
        let mut name = b"PaxHeaders/".to_vec();
        name.extend_from_slice(&base[..base.len().min(100 - name.len())]);
        name
    }

    /// Every byte of the header: a pax extended header and its records padded to a block
    /// when needed, then the ustar block. Its length is always a multiple of [`BLOCK`].
    pub fn encode(&self) -> Vec<u8> {
        let recs = self.pax_records();
        let mut out = Vec::new();
        if !recs.is_empty() {
            let name = self.pax_name();
            let pax = Header {
                path: &name,
                link: b"",
                kind: EntryType::PaxExtended,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: recs.len() as u64,
                mtime: time_fits(self.mtime).map_or(0, |_| self.mtime),
                dev: (0, 0),
                sparse: None,
            };
            out.extend_from_slice(&pax.ustar_block());
            out.extend_from_slice(&recs);
            out.resize(out.len().next_multiple_of(BLOCK), 0);
        }
        out.extend_from_slice(&self.ustar_block());
        out
    }
}

/// Zeros that pad `len` data bytes to a whole block.
pub fn padding(len: u64) -> u64 {
    len.next_multiple_of(BLOCK as u64) - len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_octal_then_base_256() {
        let mut f = [0u8; 12];
        number(&mut f, 0o644);
        assert_eq!(&f, b"00000000644\0");
        number(&mut f, (8 << 30) - 1);
        assert_eq!(&f, b"77777777777\0");
        number(&mut f, 8 << 30);
        assert_eq!(f[..4], [0x80, 0, 0, 0]);
        assert_eq!(u64::from_be_bytes(f[4..].try_into().unwrap()), 8 << 30);
        let mut m = [0u8; 8];
        number(&mut m, 0o7_777_777);
        assert_eq!(&m, b"7777777\0");
        number(&mut m, 0o10_000_000);
        assert_eq!(m[0], 0x80);
        assert_eq!(u64::from_be_bytes(m) & !(0x80 << 56), 0o10_000_000);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        // 7 + 90 + 3 = 100 bytes with a 3-digit length: 103.
        let r = pax_record("path", &[b'x'; 93]);
        assert_eq!(r.len(), 103);
        assert!(r.starts_with(b"103 path="));
        // A record whose length crosses 9 -> 10 digits counted right.
        let r = pax_record("k", &[b'y'; 4]);
        assert_eq!(r, b"9 k=yyyy\n");
        let r = pax_record("k", &[b'y'; 5]);
        assert_eq!(r, b"11 k=yyyyy\n");
    }

    #[test]
    fn paths_split_at_a_slash_or_go_to_pax() {
        let long = [&[b'a'; 120][..], b"/", &[b'b'; 90]].concat();
        let (p, n) = split_ustar_path(&long).unwrap();
        assert_eq!((p.len(), n.len()), (120, 90));
        let no_slash = vec![b'c'; 101];
        assert!(split_ustar_path(&no_slash).is_none());
        let prefix_too_long = [&[b'a'; 160][..], b"/b"].concat();
        assert!(split_ustar_path(&prefix_too_long).is_none());
    }

    fn header<'a>(path: &'a [u8], link: &'a [u8]) -> Header<'a> {
        Header {
            path,
            link,
            kind: EntryType::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 1,
            dev: (0, 0),
            sparse: None,
        }
    }

    #[test]
    fn checksum_matches_the_block() {
        let h = header(b"x", b"").ustar_block();
        let mut spaced = h;
        spaced[148..156].fill(b' ');
        let sum: u32 = spaced.iter().map(|&b| u32::from(b)).sum();
        let field = std::str::from_utf8(&h[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(field, 8).unwrap(), sum);
        assert_eq!(&h[154..156], b"\0 ");
    }

    #[test]
    fn pax_only_for_what_ustar_cannot_hold() {
        assert!(header(b"short", b"").pax_records().is_empty());
        let mut h = header(b"f", b"");
        h.size = 8 << 30;
        h.uid = 1 << 21;
        h.mtime = -1;
        let recs = h.pax_records();
        assert_eq!(recs, b"12 mtime=-1\n19 size=8589934592\n15 uid=2097152\n");
        let bin = [&[0xffu8; 200][..]].concat();
        let h = header(&bin, b"");
        let recs = String::from_utf8_lossy(&h.pax_records()).into_owned();
        assert!(recs.starts_with("21 hdrcharset=BINARY\n"), "{recs}");
        let enc = h.encode();
        assert_eq!(enc.len(), 3 * BLOCK);
        assert_eq!(enc[156], b'x');
        assert!(enc.starts_with(b"PaxHeaders/"));
    }
}
