//! Directory listings (`squashfs_dir_header` + `squashfs_dir_entry` runs). A header gives
//! the stored position of one inode-table metadata block and a base inode number; each of
//! its entries gives the inode's offset in that block and its number as a signed 16-bit
//! difference from the base. So a new header starts when 256 entries are reached
//! (`SQUASHFS_DIR_COUNT`), when the next inode is in another metadata block, or when its
//! number is too far from the base.

/// Most entries under one header.
pub(crate) const DIR_COUNT: usize = 256;

/// One name of a directory, in name order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry<'a> {
    pub name: &'a [u8],
    /// Stored position of the inode's metadata block, relative to the inode table.
    pub block: u32,
    /// Offset of the inode in that block, uncompressed.
    pub offset: u16,
    pub number: u32,
    /// Basic inode type.
    pub typ: u16,
}

/// A directory's encoded listing.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub bytes: Vec<u8>,
    /// Each header's offset in `bytes` and the index of its first entry.
    pub headers: Vec<(usize, usize)>,
}

/// Whether `e` can go under the header that `first` opened, holding `count` entries.
fn fits(first: &Entry, e: &Entry, count: usize) -> bool {
    count < DIR_COUNT
        && e.block == first.block
        && i16::try_from(i64::from(e.number) - i64::from(first.number)).is_ok()
}

/// The listing of `entries` (non-empty names of at most 256 bytes, in name order).
pub(crate) fn listing(entries: &[Entry]) -> Listing {
    let mut l = Listing::default();
    let out = &mut l.bytes;
    let mut i = 0;
    while i < entries.len() {
        let first = &entries[i];
        let mut n = 1;
        while i + n < entries.len() && fits(first, &entries[i + n], n) {
            n += 1;
        }
        l.headers.push((out.len(), i));
        let count = u32::try_from(n - 1).expect("at most 256 entries per header");
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&first.block.to_le_bytes());
        out.extend_from_slice(&first.number.to_le_bytes());
        for e in &entries[i..i + n] {
            let delta = i16::try_from(i64::from(e.number) - i64::from(first.number))
                .expect("checked by fits");
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&delta.to_le_bytes());
            out.extend_from_slice(&e.typ.to_le_bytes());
            let size = u16::try_from(e.name.len() - 1).expect("names are 1 to 256 bytes");
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(e.name);
        }
        i += n;
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &'static [u8], block: u32, number: u32) -> Entry<'static> {
        Entry {
            name,
            block,
            offset: 0x40,
            number,
            typ: 2,
        }
    }

    #[test]
    fn one_header_encoding() {
        let l = listing(&[e(b"a", 7, 10), e(b"bc", 7, 9)]);
        assert_eq!(l.headers, [(0, 0)]);
        #[rustfmt::skip]
        let want = [
            1, 0, 0, 0, 7, 0, 0, 0, 10, 0, 0, 0, // count - 1, start block, base number
            0x40, 0, 0, 0, 2, 0, 0, 0, b'a', // offset, delta 0, type, size - 1, name
            0x40, 0, 0xFF, 0xFF, 2, 0, 1, 0, b'b', b'c', // delta -1
        ];
        assert_eq!(l.bytes, want);
    }

    #[test]
    fn splits_on_block_count_and_distance() {
        // Another inode block: a new header.
        let l = listing(&[e(b"a", 0, 1), e(b"b", 0, 2), e(b"c", 99, 3)]);
        assert_eq!(l.headers, [(0, 0), (12 + 2 * 9, 2)]);
        // Numbers 32767 above the base still fit; 32768 does not, nor -32769.
        let l = listing(&[e(b"a", 0, 40_000), e(b"b", 0, 72_767), e(b"c", 0, 72_768)]);
        assert_eq!(l.headers.len(), 2);
        assert_eq!(l.headers[1].1, 2);
        let l = listing(&[e(b"a", 0, 40_000), e(b"b", 0, 7_232), e(b"c", 0, 7_231)]);
        assert_eq!(l.headers.iter().map(|h| h.1).collect::<Vec<_>>(), [0, 2]);
        // 256 entries per header at most: 600 entries make 256 + 256 + 88.
        let names: Vec<Vec<u8>> = (0..600).map(|i| format!("{i:04}").into_bytes()).collect();
        let entries: Vec<Entry> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Entry {
                name: n,
                block: 0,
                offset: 0,
                number: 1 + i as u32,
                typ: 2,
            })
            .collect();
        let l = listing(&entries);
        let firsts: Vec<usize> = l.headers.iter().map(|h| h.1).collect();
        assert_eq!(firsts, [0, 256, 512]);
        assert_eq!(l.bytes.len(), 3 * 12 + 600 * (8 + 4));
        let count = |h: usize| u32::from_le_bytes(l.bytes[h..h + 4].try_into().unwrap());
        assert_eq!(count(l.headers[0].0), 255);
        assert_eq!(count(l.headers[2].0), 87);
    }
}
