//! Inode records (`squashfs_fs.h`: `squashfs_base_inode` and the per-type structs that
//! extend it), all little-endian and packed.

/// Basic inode types; the extended ("long") type of each is 7 more. Directory entries always
/// carry the basic type.
pub(crate) const DIR: u16 = 1;
pub(crate) const REG: u16 = 2;
pub(crate) const SYMLINK: u16 = 3;
pub(crate) const BLKDEV: u16 = 4;
pub(crate) const CHRDEV: u16 = 5;
pub(crate) const FIFO: u16 = 6;
pub(crate) const SOCKET: u16 = 7;
const EXTENDED: u16 = 7;

/// No xattrs (`SQUASHFS_INVALID_XATTR`).
const NO_XATTR: u32 = 0xFFFF_FFFF;

/// The fields every inode starts with (16 bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Base {
    /// Basic type; the encoders below add 7 for the extended forms.
    pub typ: u16,
    /// Permission bits only: the type is the inode's (mksquashfs stores `st_mode & 07777`,
    /// and the kernel refuses an inode whose mode carries type bits).
    pub perm: u16,
    /// Indexes into the id table.
    pub uid: u16,
    pub gid: u16,
    pub mtime: u32,
    pub number: u32,
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn base(out: &mut Vec<u8>, b: &Base, extended: bool) {
    put16(out, if extended { b.typ + EXTENDED } else { b.typ });
    put16(out, b.perm & 0o7777);
    put16(out, b.uid);
    put16(out, b.gid);
    put32(out, b.mtime);
    put32(out, b.number);
}

/// Where a directory's listing is, and what it links to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DirInfo {
    /// Stored position of the listing's first metadata block, relative to the directory
    /// table.
    pub start_block: u32,
    /// Offset of the listing in that block, uncompressed.
    pub offset: u16,
    /// Listing bytes + 3 (the `.` and `..` the kernel invents count as 3).
    pub file_size: u32,
    pub nlink: u32,
    pub parent: u32,
}

/// One entry of an extended directory's index: a directory header that starts in a new
/// metadata block, with its first name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Offset of the header in the listing.
    pub index: u32,
    /// Stored position of the metadata block holding it, relative to the directory table.
    pub start_block: u32,
    pub name: Vec<u8>,
}

/// A basic directory inode (32 bytes) when the listing fits its 16-bit size and needs no
/// index, else an extended one with the index.
pub(crate) fn dir(out: &mut Vec<u8>, b: &Base, d: &DirInfo, index: &[IndexEntry]) {
    match u16::try_from(d.file_size) {
        Ok(size) if index.is_empty() => {
            base(out, b, false);
            put32(out, d.start_block);
            put32(out, d.nlink);
            put16(out, size);
            put16(out, d.offset);
            put32(out, d.parent);
        }
        _ => {
            base(out, b, true);
            put32(out, d.nlink);
            put32(out, d.file_size);
            put32(out, d.start_block);
            put32(out, d.parent);
            put16(
                out,
                u16::try_from(index.len()).expect("the caller keeps the index under 65536"),
            );
            put16(out, d.offset);
            put32(out, NO_XATTR);
            for e in index {
                put32(out, e.index);
                put32(out, e.start_block);
                put32(
                    out,
                    u32::try_from(e.name.len() - 1).expect("names are at most 256 bytes"),
                );
                out.extend_from_slice(&e.name);
            }
        }
    }
}

/// Where a regular file's data is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FileInfo {
    /// Byte position of the first data block in the filesystem.
    pub start: u64,
    pub size: u64,
    /// Fragment index and offset in the fragment, or `None`.
    pub fragment: Option<(u32, u32)>,
    /// One entry per data block: stored size, bit 24 set when stored uncompressed, 0 for a
    /// block of zeros that is not stored.
    pub blocks: Vec<u32>,
    /// Bytes of the file in blocks of zeros that are not stored.
    pub sparse: u64,
}

/// A basic file inode when start and size fit 32 bits, the file has one name and no
/// sparse blocks; else an extended one.
pub(crate) fn file(out: &mut Vec<u8>, b: &Base, f: &FileInfo, nlink: u32) {
    let (frag, frag_off) = f.fragment.unwrap_or((0xFFFF_FFFF, 0));
    match (u32::try_from(f.start), u32::try_from(f.size)) {
        (Ok(start), Ok(size)) if nlink == 1 && f.sparse == 0 => {
            base(out, b, false);
            put32(out, start);
            put32(out, frag);
            put32(out, frag_off);
            put32(out, size);
        }
        _ => {
            base(out, b, true);
            put64(out, f.start);
            put64(out, f.size);
            put64(out, f.sparse);
            put32(out, nlink);
            put32(out, frag);
            put32(out, frag_off);
            put32(out, NO_XATTR);
        }
    }
    for &s in &f.blocks {
        put32(out, s);
    }
}

pub(crate) fn symlink(out: &mut Vec<u8>, b: &Base, nlink: u32, target: &[u8]) {
    base(out, b, false);
    put32(out, nlink);
    put32(
        out,
        u32::try_from(target.len()).expect("targets are checked to be at most 4095 bytes"),
    );
    out.extend_from_slice(target);
}

/// Block or character device; `rdev` as the kernel's `new_encode_dev`.
pub(crate) fn device(out: &mut Vec<u8>, b: &Base, nlink: u32, rdev: u32) {
    base(out, b, false);
    put32(out, nlink);
    put32(out, rdev);
}

/// FIFO or socket.
pub(crate) fn ipc(out: &mut Vec<u8>, b: &Base, nlink: u32) {
    base(out, b, false);
    put32(out, nlink);
}

/// `major:minor` as the kernel's `new_encode_dev` (12-bit major, 20-bit minor), or `None`.
pub(crate) fn encode_dev(major: u32, minor: u32) -> Option<u32> {
    (major <= 0xFFF && minor <= 0xF_FFFF)
        .then_some((minor & 0xFF) | (major << 8) | ((minor & !0xFF) << 12))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(typ: u16) -> Base {
        Base {
            typ,
            perm: 0o755,
            uid: 1,
            gid: 2,
            mtime: 0x0102_0304,
            number: 9,
        }
    }

    #[test]
    fn basic_and_extended_dirs() {
        let d = DirInfo {
            start_block: 0x10,
            offset: 0x20,
            file_size: 3,
            nlink: 2,
            parent: 12,
        };
        let mut out = Vec::new();
        dir(&mut out, &b(DIR), &d, &[]);
        assert_eq!(out.len(), 32);
        assert_eq!(&out[..4], &[1, 0, 0xED, 0x01]); // type 1, mode 0755
        assert_eq!(&out[4..16], &[1, 0, 2, 0, 4, 3, 2, 1, 9, 0, 0, 0]);
        assert_eq!(
            &out[16..],
            &[0x10, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0x20, 0, 12, 0, 0, 0]
        );
        // Too big for 16 bits: extended, with the index after the fixed part.
        let big = DirInfo {
            file_size: 70_000,
            ..d
        };
        let idx = [IndexEntry {
            index: 8200,
            start_block: 0x1234,
            name: b"zz".to_vec(),
        }];
        let mut out = Vec::new();
        dir(&mut out, &b(DIR), &big, &idx);
        assert_eq!(u16::from_le_bytes([out[0], out[1]]), 8);
        assert_eq!(out.len(), 40 + 12 + 2);
        assert_eq!(&out[20..24], &70_000u32.to_le_bytes());
        assert_eq!(&out[32..36], &[1, 0, 0x20, 0]); // i_count 1, offset 0x20
        assert_eq!(&out[36..40], &[0xFF; 4]);
        assert_eq!(&out[40..52], &[8, 32, 0, 0, 0x34, 0x12, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&out[52..], b"zz");
    }

    #[test]
    fn files() {
        let f = FileInfo {
            start: 96,
            size: 5000,
            fragment: Some((3, 100)),
            blocks: vec![0x0100_1000],
            sparse: 0,
        };
        let mut out = Vec::new();
        file(&mut out, &b(REG), &f, 1);
        assert_eq!(out.len(), 32 + 4);
        assert_eq!(
            &out[16..],
            &[96, 0, 0, 0, 3, 0, 0, 0, 100, 0, 0, 0, 0x88, 0x13, 0, 0, 0, 0x10, 0, 1]
        );
        // Two names: extended, with the link count.
        let mut out = Vec::new();
        file(
            &mut out,
            &b(REG),
            &FileInfo {
                fragment: None,
                ..f.clone()
            },
            2,
        );
        assert_eq!(u16::from_le_bytes([out[0], out[1]]), 9);
        assert_eq!(out.len(), 56 + 4);
        assert_eq!(&out[40..44], &2u32.to_le_bytes());
        assert_eq!(&out[44..48], &[0xFF; 4]);
        assert_eq!(&out[48..52], &0u32.to_le_bytes());
        // Data past 4 GiB, a size over 4 GiB, or holes: extended, 64-bit fields.
        for g in [
            FileInfo {
                start: 1 << 32,
                ..f.clone()
            },
            FileInfo {
                size: 5 << 30,
                ..f.clone()
            },
            FileInfo {
                sparse: 4096,
                ..f.clone()
            },
        ] {
            let mut out = Vec::new();
            file(&mut out, &b(REG), &g, 1);
            assert_eq!(u16::from_le_bytes([out[0], out[1]]), 9);
            assert_eq!(&out[16..24], &g.start.to_le_bytes());
            assert_eq!(&out[24..32], &g.size.to_le_bytes());
            assert_eq!(&out[32..40], &g.sparse.to_le_bytes());
            assert_eq!(&out[44..52], &[3, 0, 0, 0, 100, 0, 0, 0]);
        }
    }

    #[test]
    fn devices() {
        assert_eq!(encode_dev(8, 1), Some(0x801));
        assert_eq!(
            encode_dev(259, 0x12345),
            Some(0x45 | (259 << 8) | (0x12300 << 12))
        );
        assert_eq!(encode_dev(4096, 0), None);
        let mut out = Vec::new();
        symlink(&mut out, &b(SYMLINK), 1, b"target");
        assert_eq!(&out[..4], &[3, 0, 0xED, 0x01]);
        assert_eq!(&out[16..24], &[1, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(&out[24..], b"target");
    }
}
